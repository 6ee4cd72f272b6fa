#!/usr/bin/env bash
# Hostile inputs, measured: each input of tests/hostile.rs (written by
# hostile_gen.py into benches/validate/data/hostile/) is checked by the
# release binary, `failback validate --format json FILE`, under
# `/usr/bin/time -f '%e %M'`, RUNS times (the largest wall time and peak
# RSS are kept). The exit code must be the one the test expects, and each
# input must be checked in under 1 s and 256 MiB.
#
#   benches/validate/hostile.sh [--bin PATH] [--runs N] [--markdown FILE] [--doc FILE]
#
# --bin: the failback binary (default: $CARGO_TARGET_DIR or target,
# /release/failback; built by run.sh, not here). Prints a Markdown table;
# --markdown also writes it to FILE, --doc replaces the block between
# <!-- bench:hostile:begin --> and <!-- bench:hostile:end --> in FILE
# (docs/performance.md). Exits 1 if any input breaks a bound or gives the
# wrong exit code, 2 if it cannot measure.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
DATA="$HERE/data/hostile"

BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/failback"
RUNS=3
MARKDOWN=""
DOC=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --bin) BIN="$2"; shift 2 ;;
    --runs) RUNS="$2"; shift 2 ;;
    --markdown) MARKDOWN="$2"; shift 2 ;;
    --doc) DOC="$2"; shift 2 ;;
    -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 64 ;;
  esac
done

[[ -x $BIN ]] || { echo "error: $BIN is missing (cargo build --release --locked)" >&2; exit 2; }
[[ -x /usr/bin/time ]] || { echo "error: /usr/bin/time is required (apt-get install time)" >&2; exit 2; }
command -v python3 >/dev/null 2>&1 || { echo "error: python3 is required" >&2; exit 2; }

python3 "$HERE/hostile_gen.py" --out "$DATA" >&2

export BIN RUNS MARKDOWN DOC ROOT DATA
python3 - <<'PY'
import datetime, json, os, re, subprocess, sys, tempfile

e = os.environ


def load():
    try:
        with open("/proc/loadavg", encoding="ascii") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "?"


load_before = load()
runs = int(e["RUNS"])
WALL_MS = 1000
RSS_MIB = 256
BEGIN = "<!-- bench:hostile:begin -->"
END = "<!-- bench:hostile:end -->"
VALIDATE_END = "<!-- bench:validate:end -->"

with open(os.path.join(e["DATA"], "cases.json"), encoding="utf-8") as f:
    cases = json.load(f)


def run_once(path):
    """Exit code, wall seconds, peak RSS KiB and CPU seconds of one run under /usr/bin/time."""
    with tempfile.NamedTemporaryFile("r", suffix=".time") as t:
        p = subprocess.run(
            ["/usr/bin/time", "-o", t.name, "-f", "%e %M %U %S", e["BIN"], "validate", "--format", "json", path],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env={k: v for k, v in os.environ.items() if not k.startswith("FAILBACK_")} | {"NO_COLOR": "1"},
        )
        last = [l for l in t.read().splitlines() if l.strip()][-1]
    wall, rss, user, system = last.split()
    panicked = b"panicked" in p.stderr
    return p.returncode, float(wall), int(rss), panicked, float(user) + float(system)


def size(n):
    if n >= 1 << 20:
        return f"{n / (1 << 20):.1f} MiB"
    if n >= 1 << 10:
        return f"{n / (1 << 10):.1f} KiB"
    return f"{n} B"


rows = []
bad = []
for c in cases:
    results = [run_once(c["file"]) for _ in range(runs)]
    codes = sorted({r[0] for r in results})
    wall_ms = max(r[1] for r in results) * 1000
    rss_mib = max(r[2] for r in results) / 1024
    cpu_ms = max(r[4] for r in results) * 1000
    panicked = any(r[3] for r in results)
    code_ok = codes == [c["exit"]] and not panicked
    within = wall_ms < WALL_MS and rss_mib < RSS_MIB
    if not code_ok:
        bad.append(f"{c['name']}: exit {codes}, expected {c['exit']}" + (" (panicked)" if panicked else ""))
    if not within:
        bad.append(f"{c['name']}: {wall_ms:.0f} ms, {rss_mib:.1f} MiB")
    actual = "/".join(str(x) for x in codes)
    rows.append(
        f"| {c['name']} | {size(c['size'])} | {c['exit']} / {actual}{'' if code_ok else ' **wrong**'} "
        f"| {wall_ms:.0f} | {cpu_ms:.0f} | {rss_mib:.1f} | {'yes' if within else '**no**'} |"
    )

def out(*cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""

now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
sha = out("git", "-C", e["ROOT"], "rev-parse", "--short", "HEAD")
dirty = " +local changes" if out("git", "-C", e["ROOT"], "status", "--porcelain", "--", "src", "Cargo.toml", "Cargo.lock") else ""
version = (out(e["BIN"], "--version").split() or ["?"])[-1]
worst_ms = max(float(r.split("|")[4]) for r in rows)
worst_mib = max(float(r.split("|")[6]) for r in rows)
block = "\n".join(
    [
        BEGIN,
        f"Measured {now} with `benches/validate/hostile.sh` (failback {version} ({sha}{dirty}), release build; "
        f"{len(cases)} inputs, {runs} runs each under `/usr/bin/time -f '%e %M %U %S'`, the largest wall time, CPU time (user + system) and peak RSS kept; "
        f"wall time has a 10 ms resolution; load average (1, 5, 15 min) before and after: {load_before}, {load()}). "
        f"Largest: {worst_ms:.0f} ms, {worst_mib:.1f} MiB. "
        f"Bounds: under {WALL_MS:,} ms and {RSS_MIB} MiB, and the exit code tests/hostile.rs expects (65: refused, 0: valid).",
        "",
        "| Input | Size | Exit code (expected / actual) | Wall, max (ms) | CPU, max (ms) | Peak RSS, max (MiB) | Within 1 s and 256 MiB |",
        "| --- | ---: | --- | ---: | ---: | ---: | --- |",
        *rows,
        END,
        "",
    ]
)
print(block)
if e["MARKDOWN"]:
    with open(e["MARKDOWN"], "w", encoding="utf-8") as f:
        f.write(block)
if e["DOC"]:
    path = e["DOC"]
    text = open(path, encoding="utf-8").read() if os.path.exists(path) else "# Performance\n"
    if BEGIN in text and END in text:
        pattern = re.compile(re.escape(BEGIN) + r".*?" + re.escape(END) + r"\n?", re.S)
        text = pattern.sub(lambda _: block, text, count=1)
    elif VALIDATE_END in text:
        # First run: right after the validation results.
        text = text.replace(VALIDATE_END + "\n", VALIDATE_END + "\n\n" + block, 1)
    else:
        text = text.rstrip("\n") + "\n\n" + block
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    print(f"updated {os.path.relpath(path)}", file=sys.stderr)
if bad:
    print("hostile inputs out of bounds or with the wrong exit code:\n  " + "\n  ".join(bad), file=sys.stderr)
    sys.exit(1)
PY
