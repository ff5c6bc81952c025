#!/usr/bin/env bash
# `make bench`: builds the reference ceiling (../shared/bench/ceiling) outside the repo, restarts
# the stack from release builds and runs carrier-bench against both on the same broker; then
# restarts the stack again and runs `carrier-bench delivery` (isolation, drain rate, memory;
# CARRIER_BENCH_BACKLOG sets the parked backlog, 100,000 by default); then `carrier-bench logs`
# (log-store write throughput and search latency on 1,000,000 logs; Postgres only, in a database
# of its own: CARRIER_BENCH_LOGS sets the size).
# Results: .run/bench/results.md, .run/bench/delivery.md and .run/bench/logs.md.
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
source "$REPO/scripts/lib.sh"
cd "$REPO"

# `make bench` runs every part; `bash scripts/bench.sh delivery` (or `logs`) only that part.
PARTS="${1:-ingress delivery logs}"
RUN_DIR="${CARRIER_RUN_DIR:-$REPO/.run}"
BENCH_BIN="${CARGO_TARGET_DIR:-$REPO/target}/release/carrier-bench"
# The benchmark client is one IP sending millions of requests: the limiter stays on (its Redis
# round trip is part of what is measured) with a limit it never reaches.
export CARRIER_RATE_LIMIT__LIMIT="${CARRIER_RATE_LIMIT__LIMIT:-1000000000}"

# Each part starts from a freshly started stack, so one part's load (and the memory a worker
# keeps from it) does not carry into the next: delivery's "idle" memory is a fresh worker's.
fresh_stack() {
    bash "$REPO/scripts/down.sh"
    CARRIER_BUILD=release bash "$REPO/scripts/up.sh"
}

cargo build --release -p carrier-bench
for part in $PARTS; do
    case "$part" in
    ingress)
        CEILING_DIR="${CARRIER_CEILING_DIR:-$REPO/../shared/bench/ceiling}"
        CEILING_TARGET=/var/cache/carrier/ceiling-target
        [ -f "$CEILING_DIR/Cargo.toml" ] || carrier_die "reference ceiling not found at $CEILING_DIR (set CARRIER_CEILING_DIR)"
        carrier_log "building the reference ceiling"
        CARGO_TARGET_DIR="$CEILING_TARGET" cargo build --release --manifest-path "$CEILING_DIR/Cargo.toml"
        fresh_stack
        CARRIER_BENCH_PAUSE_PIDS="$(cat "$RUN_DIR/pids/delivery.pid" "$RUN_DIR/pids/notifier.pid")" \
            CARRIER_CEILING_BIN="$CEILING_TARGET/release/ceiling" "$BENCH_BIN"
        ;;
    delivery)
        fresh_stack
        CARRIER_BENCH_DELIVERY_PID="$(cat "$RUN_DIR/pids/delivery.pid")" "$BENCH_BIN" delivery
        ;;
    logs)
        # Needs only Postgres (make up's); drops and fills its own database, carrier_bench_logs.
        "$BENCH_BIN" logs
        ;;
    *) carrier_die "unknown benchmark part '$part' (ingress, delivery, logs)" ;;
    esac
done
