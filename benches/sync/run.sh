#!/usr/bin/env bash
# Sync-engine and reconciler benchmark of issue 6; method and results in
# docs/performance.md, "Sync and reconciler". Usage, from anywhere:
#   benches/sync/run.sh            # sync figures (needs rsync; ~10 GiB free disk)
#   LAB10K=1 benches/sync/run.sh   # also the 10,000-VM reconciler (benches/sync/lab10k.sh)
# Every figure is the median of REPS (default 3) runs, warm page cache (the
# cache is not dropped), timed by this script around one process per run.
# Images are fully random (incompressible, no zero blocks, no holes).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$HERE/../.."
REPS="${REPS:-3}"
D="$HERE/.data"; mkdir -p "$D"
export CARGO_TARGET_DIR="$HERE/.target"
cp "$ROOT/Cargo.lock" "$HERE/Cargo.lock"  # the versions failback is built with
cargo build --release --quiet --manifest-path "$HERE/Cargo.toml"
B="$CARGO_TARGET_DIR/release/failback-sync-bench"
command -v rsync >/dev/null || { echo "rsync is needed (apt-get install -y rsync)"; exit 1; }

echo "# $(date -u +%FT%TZ) $(uname -srm), $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "# $(free -g | awk '/Mem:/{print $2" GiB RAM"}'), fs $(findmnt -n -o FSTYPE -T "$D") on $(findmnt -n -o SOURCE -T "$D"); $(rsync --version | head -1)"

now() { date +%s.%N; }
# t NAME PREP CMD: runs PREP (untimed) then CMD, REPS times; prints the median.
declare -A M
t() {
  local name=$1 prep=$2 cmd=$3 i s e all=()
  for ((i = 0; i < REPS; i++)); do
    eval "$prep"
    s=$(now); eval "$cmd"; e=$(now)
    all+=("$(echo "$e - $s" | bc)")
  done
  M[$name]=$(printf '%s\n' "${all[@]}" | sort -g | sed -n "$(((REPS + 1) / 2))p")
  printf '%-28s median %7.3f s  runs: %s\n' "$name" "${M[$name]}" "${all[*]}"
}
ratio() { echo "scale=3; ${M[$1]} / ${M[$2]}" | bc; }

SIZE=2GiB; BLOCKS=$((2 * 1024 * 1024 * 1024 / 4096)); CHANGED=$((BLOCKS / 100))
echo "## 2 GiB, $CHANGED of $BLOCKS 4 KiB blocks (1%) changed at random"
"$B" gen "$D/a.img" $SIZE 1
for f in b r f; do cp "$D/a.img" "$D/$f.img"; done
"$B" mutate "$D/b.img" $CHANGED 42
"$B" digests "$D/b.img" "$D/b.digests"   # the target's digests, for the known-target run
sync
cat "$D/a.img" "$D/b.img" "$D/r.img" >/dev/null   # warm the cache
reset_b='"$B" mutate "$D/b.img" '$CHANGED' 42; sync'
reset_r='"$B" mutate "$D/r.img" '$CHANGED' 42; sync'
t floor-cat 'sync' 'cat "$D/a.img" "$D/b.img" >/dev/null'
t delta_sync "$reset_b" '"$B" delta "$D/a.img" "$D/b.img" 2>/dev/null'
cmp "$D/a.img" "$D/b.img"
t delta_sync-known-target "$reset_b" '"$B" delta-known "$D/a.img" "$D/b.img" "$D/b.digests" 2>/dev/null'
t floor-cat-source-only 'sync' 'cat "$D/a.img" >/dev/null'
t rsync-default "$reset_r" 'rsync --inplace --no-whole-file "$D/a.img" "$D/r.img"'
cmp "$D/a.img" "$D/r.img"
t rsync-B4096 "$reset_r" 'rsync --inplace --no-whole-file -B4096 "$D/a.img" "$D/r.img"'
cmp "$D/a.img" "$D/r.img"
echo "delta_sync / floor-cat            $(ratio delta_sync floor-cat)   (target <= 1.25)"
echo "rsync-default / delta_sync        $(ratio rsync-default delta_sync)   (target >= 10)"
echo "rsync-B4096 / delta_sync          $(ratio rsync-B4096 delta_sync)   (target >= 4.5)"
echo "delta known-target / floor-cat    $(ratio delta_sync-known-target floor-cat)   (target <= 0.7)"

echo "## 2 GiB full copy, durable (fsync)"
t dd-fsync 'rm -f "$D/f.img"; sync' 'dd if="$D/a.img" of="$D/f.img" bs=4M conv=fsync status=none'
t full_sync 'rm -f "$D/f.img"; sync' '"$B" full "$D/a.img" "$D/f.img" 2>/dev/null'
cmp "$D/a.img" "$D/f.img"
echo "full_sync / dd-fsync              $(ratio full_sync dd-fsync)   (target <= 1.1)"
rm -f "$D"/{a,b,r,f}.img "$D/b.digests"

echo "## phase 2: 1 MiB changed after phase 1 (PhaseTwo::new + copy_blocks + PhaseTwo::verify, in process, median of $REPS)"
for s in 256MiB 1GiB 4GiB; do "$B" phase2 "$D" $s 1MiB "$REPS"; done

echo "## the lab's whole delta path: downtime (recovery VM off -> primary VM on) with 1 MiB written after phase 1"
(cd "$ROOT" && cargo build --release --quiet)
L="$D/lab2"; FB="$ROOT/target/release/failback"; P="$L/plan.yaml"
for s in 256MiB 1GiB 4GiB; do
  all=()
  for ((i = 0; i < REPS; i++)); do
    rm -rf "$L"; mkdir -p "$L"
    cat >"$P" <<'YAML'
apiVersion: failback/v1
kind: FailbackPlan
metadata: { name: phase2-bench }
spec:
  primary: { site: dc1, hosts: [{ name: hv-01, vswitches: [Production] }] }
  recovery: { site: azure }
  defaults: { sync: delta, completion: manual, commit: never }
  groups:
    - name: all
      vms: [{ name: vm-01, host: hv-01, networks: [{ vswitch: Production }] }]
YAML
    export FAILBACK_LAB="$L/lab" FAILBACK_STATE_DIR="$L/state"
    "$FB" -q lab init "$P" --disk-size $s --disks 1 --drift 1 >/dev/null
    "$FB" -q apply "$P" >/dev/null 2>&1 || true     # phase 1, then waits at the completion gate
    "$FB" -q lab write vm-01 --blocks 256 >/dev/null  # 1 MiB written by the guest after phase 1
    "$FB" -q approve "$P" --gate completion --vm vm-01 >/dev/null
    "$FB" -q apply "$P" >/dev/null 2>&1 || true     # phase 2: shutdown, copy, verify, power-on
    all+=("$("$FB" status "$P" --format json | python3 -c 'import json,sys; print(json.load(sys.stdin)["vms"][0]["downtimeMs"])')")
  done
  med=$(printf '%s\n' "${all[@]}" | sort -g | sed -n "$(((REPS + 1) / 2))p")
  printf 'lab phase-2 downtime, disk %-6s median %4s ms  runs: %s\n' "$s" "$med" "${all[*]}"
  unset FAILBACK_LAB FAILBACK_STATE_DIR
done
rm -rf "$L"

echo "## the engine alone: 10,000-VM plan, instant in-memory provider (failback-sync-bench engine)"
PLAN10K="$ROOT/benches/validate/data/plan-10k.yaml"
[[ -f $PLAN10K ]] || python3 "$ROOT/benches/validate/gen.py" >/dev/null
/usr/bin/time -f "engine process: %e s wall, peak RSS %M KiB" "$B" engine "$PLAN10K"

if [[ ${LAB10K:-0} == 1 ]]; then
  echo "## 10,000-VM reconciler"
  "$HERE/lab10k.sh"
fi
