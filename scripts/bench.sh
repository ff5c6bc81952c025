#!/usr/bin/env bash
# `make bench`: restarts the stack from release builds, builds the reference ceiling
# (../shared/bench/ceiling) outside the repo, and runs carrier-bench against both on the same
# broker, then `carrier-bench delivery` (isolation, drain rate, memory).
# Results: .run/bench/results.md and .run/bench/delivery.md.
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
source "$REPO/scripts/lib.sh"
cd "$REPO"

CEILING_DIR="${CARRIER_CEILING_DIR:-$REPO/../shared/bench/ceiling}"
CEILING_TARGET=/var/cache/carrier/ceiling-target
[ -f "$CEILING_DIR/Cargo.toml" ] || carrier_die "reference ceiling not found at $CEILING_DIR (set CARRIER_CEILING_DIR)"
carrier_log "building the reference ceiling"
CARGO_TARGET_DIR="$CEILING_TARGET" cargo build --release --manifest-path "$CEILING_DIR/Cargo.toml"

bash "$REPO/scripts/down.sh"
CARRIER_BUILD=release bash "$REPO/scripts/up.sh"
cargo build --release -p carrier-bench
RUN_DIR="${CARRIER_RUN_DIR:-$REPO/.run}"
export CARRIER_BENCH_PAUSE_PIDS="$(cat "$RUN_DIR/pids/delivery.pid" "$RUN_DIR/pids/notifier.pid")"
CARRIER_CEILING_BIN="$CEILING_TARGET/release/ceiling" "${CARGO_TARGET_DIR:-$REPO/target}/release/carrier-bench"
CARRIER_BENCH_DELIVERY_PID="$(cat "$RUN_DIR/pids/delivery.pid")" \
    "${CARGO_TARGET_DIR:-$REPO/target}/release/carrier-bench" delivery
