#!/usr/bin/env bash
# `make bench-rolling`: the rolling-restart benchmark (issue 12 §6). The longest delivery gap of
# the healthy destinations while three delivery replicas are replaced one at a time under load,
# before and after the hand-over work, in one run on this machine.
#
# "Before" is a commit (default cf28176: the lease coordinator with `p % n` shares, no glance)
# built in a worktree of its own; "after" is this checkout. Each side runs its own version of
# the chaos harness (`carrier-chaos`, the same scenarios) with its own binaries, so the figures
# compare the two consumers under the same load, seed and partition counts. Results:
# .run/bench-rolling/results.md (one row per scenario and partition count, median over the runs,
# the ratio after/before), each run's full chaos report beside it.
#
#   BENCH_ROLLING_BEFORE      the "before" commit (default cf28176)
#   BENCH_ROLLING_PARTITIONS  partition counts of carrier.deliveries (default "4 12")
#   BENCH_ROLLING_RUNS        runs of each scenario per side (default 3)
#   BENCH_ROLLING_SEED        the chaos seed (default 1212)
#   BENCH_ROLLING_PROFILE     release (default) or debug
#   BENCH_ROLLING_SCENARIOS   default rolling-restart-delivery,rolling-restart-delivery-static
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
source "$REPO/scripts/lib.sh"
cd "$REPO"

BEFORE="${BENCH_ROLLING_BEFORE:-cf28176}"
PARTITIONS="${BENCH_ROLLING_PARTITIONS:-4 12}"
RUNS="${BENCH_ROLLING_RUNS:-3}"
SEED="${BENCH_ROLLING_SEED:-1212}"
PROFILE="${BENCH_ROLLING_PROFILE:-release}"
SCENARIOS="${BENCH_ROLLING_SCENARIOS:-rolling-restart-delivery,rolling-restart-delivery-static}"
case "$PROFILE" in
    release) profile_flag=(--release) ;;
    debug) profile_flag=() ;;
    *) carrier_die "BENCH_ROLLING_PROFILE is release or debug, not $PROFILE"; exit 2 ;;
esac
OUT="${CARRIER_RUN_DIR:-$REPO/.run}/bench-rolling"
mkdir -p "$OUT"

carrier_ensure_chaos_deps
carrier_ensure_build_deps

after_target="${CARGO_TARGET_DIR:-$REPO/target}"
before_src="$OUT/src-before"
before_target="$OUT/target-before"
before_rev="$(git rev-parse --short "$BEFORE")"
after_rev="$(git rev-parse --short HEAD)$(git diff --quiet HEAD || echo '+changes')"

carrier_log "building the after side ($after_rev, $PROFILE)"
cargo build "${profile_flag[@]}" --workspace --bins

carrier_log "building the before side ($before_rev, $PROFILE) in $before_src"
if [ ! -d "$before_src" ]; then
    git worktree add --detach "$before_src" "$BEFORE" >/dev/null
else
    git -C "$before_src" checkout --quiet --detach "$BEFORE"
fi
# Start from this checkout's build: the dependencies they share are not built again.
if [ ! -d "$before_target" ] && [ -d "$after_target" ]; then
    cp -a "$after_target" "$before_target"
fi
(cd "$before_src" && CARGO_TARGET_DIR="$before_target" cargo build "${profile_flag[@]}" --workspace --bins)

# Each side's binaries copied out, so rebuilding this checkout during the runs changes nothing.
for side in before after; do
    target="$after_target"
    [ "$side" = before ] && target="$before_target"
    rm -rf "$OUT/bin-$side"
    mkdir -p "$OUT/bin-$side"
    find "$target/$PROFILE" -maxdepth 1 -type f -executable -name 'carrier*' -exec cp {} "$OUT/bin-$side/" \;
done

run_side() {
    local side="$1" bin="$2" partitions="$3" run="$4"
    local dir="$OUT/$side-p$partitions-$run"
    rm -rf "$dir"
    carrier_log "$side, $partitions partitions, run $run: $SCENARIOS"
    # A failed verdict (exit 1) still writes its report; the summary shows it.
    "$bin/carrier-chaos" --bin-dir "$bin" --run-dir "$dir" --out "$dir/results.md" \
        --only "$SCENARIOS" --seed "$SEED" --deliveries-partitions "$partitions" \
        >"$dir.log" 2>&1 || carrier_log "$side p$partitions run $run: carrier-chaos exited $? (see $dir.log)"
}

for partitions in $PARTITIONS; do
    for run in $(seq 1 "$RUNS"); do
        # Alternate the sides so a slow spell of the machine does not fall on one side only.
        run_side before "$OUT/bin-before" "$partitions" "$run"
        run_side after "$OUT/bin-after" "$partitions" "$run"
    done
done

python3 "$REPO/scripts/bench-rolling-summary.py" "$OUT" \
    --before "$before_rev" --after "$after_rev" --profile "$PROFILE" --seed "$SEED" \
    --partitions "$PARTITIONS" --runs "$RUNS" >"$OUT/results.md"
cat "$OUT/results.md"
carrier_log "results in $OUT/results.md; remove the before side with: git worktree remove --force $before_src && rm -rf $before_target"
