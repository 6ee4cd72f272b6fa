#!/usr/bin/env bash
# Builds and runs the phase timer on a plan (default: the 10k-VM plan that
# benches/validate/run.sh generates). See docs/performance.md, "Validation".
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PLAN="${1:-$HERE/../data/plan-10k.yaml}"
[[ -f $PLAN ]] || python3 "$HERE/../gen.py"
export CARGO_TARGET_DIR="$HERE/../.tools/target-phases"
cp "$HERE/../../../Cargo.lock" "$HERE/Cargo.lock"  # the versions failback is built with
cargo build --release --quiet --manifest-path "$HERE/Cargo.toml"
"$CARGO_TARGET_DIR/release/failback-validate-phases" "$PLAN" "${2:-15}"
