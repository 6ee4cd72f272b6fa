#!/usr/bin/env bash
# The 10,000-VM reconciler part of benches/sync/run.sh (see docs/performance.md,
# "Sync and reconciler"). Creates a lab of 10k VMs with 4 KiB disks, converges
# it once with `apply` (timed, bounded by LAB_APPLY_TIMEOUT seconds), then times
# `plan` and a second, no-op `apply` with peak RSS. Prints "name seconds, peak RSS".
# The lab (~200 MiB of world and disks) is deleted on exit.
set -uo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$HERE/../.."
BIN="$ROOT/target/release/failback"
PLAN="$ROOT/benches/validate/data/plan-10k.yaml"
W="$HERE/.data/lab10k"
OUT="${1:-$W/results.txt}"
(cd "$ROOT" && cargo build --release --quiet)  # the shipped binary, shared target/
[[ -f $PLAN ]] || python3 "$ROOT/benches/validate/gen.py"
rm -rf "$W/lab" "$W/state"; mkdir -p "$W/checks"; : > "$OUT"
trap 'rm -rf "$W/lab" "$W/state"' EXIT
# The plan's verify commands (./checks/health.sh) run from the working
# directory: a check that passes, so that `commit: auto` VMs commit.
printf '#!/bin/sh\nexit 0\n' > "$W/checks/health.sh"; chmod +x "$W/checks/health.sh"
cd "$W"
export FAILBACK_LAB="$W/lab" FAILBACK_STATE_DIR="$W/state"
timed() { # name timeout cmd...
  local name=$1 to=$2; shift 2
  local t0 t1 rc
  t0=$(date +%s.%N)
  /usr/bin/time -f %M -o "$W/$name.rss" timeout "$to" "$@" >"$W/$name.out" 2>"$W/$name.err"; rc=$?
  t1=$(date +%s.%N)
  echo "$name $(echo "$t1 - $t0" | bc) s, peak RSS $(tail -1 "$W/$name.rss") KiB rc=$rc" | tee -a "$OUT"
}
timed lab-init 600 "$BIN" -q lab init "$PLAN" --disk-size 4KiB
timed apply-converge "${LAB_APPLY_TIMEOUT:-660}" "$BIN" -q apply "$PLAN" --approve completion --approve commit
for i in 1 2 3; do timed "plan-$i" 120 "$BIN" -q plan "$PLAN"; done
# A second apply is a no-op only on a converged lab; skip it otherwise.
grep -q '^apply-converge .* rc=0$' "$OUT" || { echo "apply did not converge in time: no-op apply not timed" | tee -a "$OUT"; exit 0; }
for i in 1 2 3; do timed "apply-noop-$i" 120 "$BIN" -q apply "$PLAN" --approve completion --approve commit; done
