#!/usr/bin/env bash
# Validation benchmark: `failback validate` against two JSON Schema
# validators, jsonschema-cli (Rust) and ajv-cli (Node.js), on the same plan.
#
#   benches/validate/run.sh [--runs N] [--warmup N] [--no-doc] [--no-apt] [--no-hostile]
#
# Builds failback in release, installs the peers under benches/validate/.tools
# if missing (pinned versions), generates the data with gen.py, checks that
# every tool accepts it, times each case, prints a table and writes it into
# the "Validation" section of docs/performance.md (--no-doc: print only).
# hyperfine and /usr/bin/time are installed with apt-get when missing and
# this runs as root (--no-apt: never); without them the timing falls back to
# a Python loop and wait4's rusage. Then hostile.sh checks each hostile
# input of tests/hostile.rs against its bounds (1 s, 256 MiB, the right exit
# code) and writes its table into the same section (--no-hostile: skip it).
# See docs/performance.md.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
TOOLS="$HERE/.tools"
DATA="$HERE/data"
OUT="$HERE/results"
SCHEMA="$ROOT/schemas/failback-plan.v1.json"
DOC="$ROOT/docs/performance.md"

JSONSCHEMA_CLI_VERSION="0.60.2"
AJV_CLI_VERSION="5.0.0"
AJV_FORMATS_VERSION="3.0.1"

RUNS=10
WARMUP=2
UPDATE_DOC=1
USE_APT=1
HOSTILE=1
while [[ $# -gt 0 ]]; do
  case "$1" in
    --runs) RUNS="$2"; shift 2 ;;
    --warmup) WARMUP="$2"; shift 2 ;;
    --no-doc) UPDATE_DOC=0; shift ;;
    --no-apt) USE_APT=0; shift ;;
    --no-hostile) HOSTILE=0; shift ;;
    -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 64 ;;
  esac
done

step() { printf '\n==> %s\n' "$*" >&2; }
need() { command -v "$1" >/dev/null 2>&1 || { echo "error: $1 is required ($2)" >&2; exit 1; }; }

need cargo "a Rust toolchain"
need python3 "for gen.py and bench.py"
need npm "Node.js and npm, for ajv-cli"
need node "Node.js, for ajv-cli"

apt_install() { # package...
  [[ $USE_APT == 1 && $(id -u) == 0 ]] && command -v apt-get >/dev/null 2>&1 || return 1
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null 2>&1 && return 0
  apt-get update -qq >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null 2>&1
}

# --- 1. failback, release ----------------------------------------------------
step "building failback (cargo build --release --locked)"
(cd "$ROOT" && cargo build --release --locked)
FAILBACK="${CARGO_TARGET_DIR:-$ROOT/target}/release/failback"
[[ -x $FAILBACK ]] || { echo "error: $FAILBACK was not built" >&2; exit 1; }

# --- 2. peers and timing tools -------------------------------------------------
JSONSCHEMA_CLI="$TOOLS/bin/jsonschema-cli"
if [[ ! -x $JSONSCHEMA_CLI ]] || ! "$JSONSCHEMA_CLI" --version 2>/dev/null | grep -qF "$JSONSCHEMA_CLI_VERSION"; then
  step "installing jsonschema-cli $JSONSCHEMA_CLI_VERSION into $TOOLS (cargo install, a few minutes)"
  cargo install jsonschema-cli --version "=$JSONSCHEMA_CLI_VERSION" --locked --root "$TOOLS"
fi

AJV="$TOOLS/node_modules/.bin/ajv"
if [[ ! -x $AJV ]] || [[ $(node -p "require('$TOOLS/node_modules/ajv-cli/package.json').version" 2>/dev/null) != "$AJV_CLI_VERSION" ]]; then
  step "installing ajv-cli $AJV_CLI_VERSION and ajv-formats $AJV_FORMATS_VERSION into $TOOLS (npm)"
  npm install --prefix "$TOOLS" --no-audit --no-fund --loglevel=error \
    "ajv-cli@$AJV_CLI_VERSION" "ajv-formats@$AJV_FORMATS_VERSION"
fi

if ! command -v hyperfine >/dev/null 2>&1; then
  step "hyperfine is missing: apt-get install hyperfine"
  apt_install hyperfine || echo "  (not installed: timing with a Python loop instead)" >&2
fi
if [[ ! -x /usr/bin/time ]]; then
  step "/usr/bin/time is missing: apt-get install time"
  apt_install time || echo "  (not installed: peak RSS from wait4 instead)" >&2
fi

# --- 3. data -------------------------------------------------------------------
step "generating the data (gen.py) into $DATA"
python3 "$HERE/gen.py" --out "$DATA"
PLAN_YAML="$DATA/plan-10k.yaml"
PLAN_JSON="$DATA/plan-10k.json"
SMALL="$DATA/small"
SMALL_JSON="$DATA/small-json"
n_small=$(find "$SMALL" -name '*.yaml' | wc -l)
vms=$(grep -c '^        - name: ' "$PLAN_YAML" || true)
printf '  %s: %s bytes, %s VMs\n  %s: %s bytes\n  %s: %s files\n' \
  "${PLAN_YAML#"$ROOT"/}" "$(wc -c <"$PLAN_YAML")" "$vms" \
  "${PLAN_JSON#"$ROOT"/}" "$(wc -c <"$PLAN_JSON")" "${SMALL#"$ROOT"/}" "$n_small" >&2

# ajv-cli in strict mode refuses the schema's annotation keywords
# (`enumDescriptions`); --strict-schema=false allows unknown keywords only.
# The schema uses no `format`, so ajv-formats is loaded only if that changes.
AJV_ARGS=(validate --spec=draft2020 --strict-schema=false -s "$SCHEMA")
if grep -q '"format"' "$SCHEMA"; then AJV_ARGS+=(-c ajv-formats); fi

# Every tool must accept the data: a benchmark of a failing run measures nothing.
step "checking that every tool accepts the data"
check() { # label command...
  local label="$1"; shift
  local log; log=$(mktemp)
  if "$@" >"$log" 2>&1; then
    printf '  ok: %s\n' "$label" >&2
  else
    printf '  FAILED (exit %s): %s\n' "$?" "$label" >&2
    head -n 20 "$log" >&2
    rm -f "$log"
    exit 1
  fi
  rm -f "$log"
}
check "failback validate plan-10k.yaml" "$FAILBACK" validate --deny-warnings "$PLAN_YAML"
check "failback validate small/ ($n_small files)" "$FAILBACK" validate --deny-warnings "$SMALL"
check "jsonschema-cli plan-10k.json" "$JSONSCHEMA_CLI" validate "$SCHEMA" -i "$PLAN_JSON"
check "jsonschema-cli plan-10k.yaml" "$JSONSCHEMA_CLI" validate "$SCHEMA" -i "$PLAN_YAML"
check "ajv-cli plan-10k.json" "$AJV" "${AJV_ARGS[@]}" -d "$PLAN_JSON"
check "ajv-cli plan-10k.yaml" "$AJV" "${AJV_ARGS[@]}" -d "$PLAN_YAML"
"$FAILBACK" validate "$SMALL" | tail -n 1 | grep -q "^$n_small plan files checked: $n_small valid" \
  || { echo "error: failback did not check all $n_small small plans" >&2; exit 1; }

# --- 4. measure ----------------------------------------------------------------
mkdir -p "$OUT"
export FAILBACK JSONSCHEMA_CLI AJV SCHEMA PLAN_YAML PLAN_JSON SMALL SMALL_JSON TOOLS ROOT \
  JSONSCHEMA_CLI_VERSION AJV_CLI_VERSION
AJV_ARGS_JSON=$(python3 -c 'import json, sys; print(json.dumps(sys.argv[1:]))' "${AJV_ARGS[@]}")
export AJV_ARGS_JSON
python3 - "$OUT/cases.json" <<'PY'
import glob, json, os, sys
e = os.environ
ajv = [e["AJV"]] + json.loads(e["AJV_ARGS_JSON"])
small_json = sorted(glob.glob(os.path.join(e["SMALL_JSON"], "*.json")))
n = len(small_json)
mb = os.path.getsize(e["PLAN_YAML"]) / 1e6
mb_json = os.path.getsize(e["PLAN_JSON"]) / 1e6
small_yaml = sorted(glob.glob(os.path.join(e["SMALL"], "*.yaml")))
mb_small = sum(os.path.getsize(f) for f in small_yaml) / 1e6
mb_small_json = sum(os.path.getsize(f) for f in small_json) / 1e6
js = f"jsonschema-cli {e['JSONSCHEMA_CLI_VERSION']}"
aj = f"ajv-cli {e['AJV_CLI_VERSION']}"
# id: the key bench.py compares by; the table numbers the cases in this order.
cases = [
    {"id": "fb-10k", "tool": "failback validate", "input": f"10k-VM plan, YAML ({mb:.1f} MB)",
     "cmd": [e["FAILBACK"], "validate", e["PLAN_YAML"]]},
    {"id": "js-10k-json", "tool": js, "input": f"10k-VM plan, JSON copy ({mb_json:.1f} MB)",
     "cmd": [e["JSONSCHEMA_CLI"], "validate", e["SCHEMA"], "-i", e["PLAN_JSON"]]},
    {"id": "js-10k-yaml", "tool": js, "input": "10k-VM plan, YAML (serde-saphyr 1)",
     "cmd": [e["JSONSCHEMA_CLI"], "validate", e["SCHEMA"], "-i", e["PLAN_YAML"]]},
    {"id": "ajv-10k-json", "tool": aj, "input": "10k-VM plan, JSON copy",
     "cmd": ajv + ["-d", e["PLAN_JSON"]]},
    {"id": "ajv-10k-yaml", "tool": aj, "input": "10k-VM plan, YAML (js-yaml 3)",
     "cmd": ajv + ["-d", e["PLAN_YAML"]]},
    {"id": "fb-1k", "tool": "failback validate", "input": f"{len(small_yaml):,} small plans, YAML ({mb_small:.1f} MB in all), one directory",
     "cmd": [e["FAILBACK"], "validate", e["SMALL"]]},
    {"id": "js-1k", "tool": js, "input": f"the {n:,} plans as JSON ({mb_small_json:.1f} MB), one `-i` each",
     "cmd": [e["JSONSCHEMA_CLI"], "validate", e["SCHEMA"]] + [a for f in small_json for a in ("-i", f)]},
    {"id": "ajv-1k", "tool": aj, "input": f"the {n:,} plans as JSON, one glob",
     "cmd": ajv + ["-d", os.path.join(e["SMALL_JSON"], "*.json")]},
]
with open(sys.argv[1], "w", encoding="utf-8") as f:
    json.dump(cases, f, indent=1)
PY

python3 - "$OUT/versions.json" <<'PY'
import json, os, subprocess, sys
e = os.environ
def out(*cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""
sha = out("git", "-C", e["ROOT"], "rev-parse", "--short", "HEAD")
dirty = "+local changes" if out("git", "-C", e["ROOT"], "status", "--porcelain", "--", "src", "Cargo.toml", "Cargo.lock") else ""
ajv_core = out("node", "-p", f"require({json.dumps(os.path.join(e['TOOLS'], 'node_modules/ajv/package.json'))}).version")
v = {
    "failback": ((out(e["FAILBACK"], "--version").split() or ["?"])[-1] + (f" ({sha}{' ' + dirty if dirty else ''})" if sha else "")),
    "rustc": (out("rustc", "--version").split() + ["?", "?"])[1],
    "jsonschema-cli": e["JSONSCHEMA_CLI_VERSION"],
    "ajv-cli": f"{e['AJV_CLI_VERSION']} (ajv {ajv_core})",
    "node": out("node", "--version"),
}
hf = out("hyperfine", "--version")
if hf:
    v["hyperfine"] = hf.split()[-1]
with open(sys.argv[1], "w", encoding="utf-8") as f:
    json.dump(v, f, indent=1)
PY

step "timing ($RUNS runs after $WARMUP warm-up runs per case)"
DOC_ARGS=()
if [[ $UPDATE_DOC == 1 ]]; then DOC_ARGS=(--doc "$DOC"); fi
python3 "$HERE/bench.py" --cases "$OUT/cases.json" --versions "$OUT/versions.json" \
  --runs "$RUNS" --warmup "$WARMUP" --results "$OUT/results.json" --markdown "$OUT/results.md" \
  "${DOC_ARGS[@]}"

# --- 5. hostile inputs -----------------------------------------------------------
if [[ $HOSTILE == 1 ]]; then
  step "hostile inputs (hostile.sh): exit codes, under 1 s and 256 MiB each"
  HOSTILE_ARGS=(--bin "$FAILBACK" --markdown "$OUT/hostile.md")
  if [[ $UPDATE_DOC == 1 ]]; then HOSTILE_ARGS+=(--doc "$DOC"); fi
  "$HERE/hostile.sh" "${HOSTILE_ARGS[@]}"
fi
