#!/usr/bin/env bash
# `make bench`: builds the reference ceiling (../shared/bench/ceiling) outside the repo, restarts
# the stack from release builds and runs carrier-bench against both on the same broker; then
# restarts the stack again and runs `carrier-bench delivery` (isolation, drain rate, memory;
# CARRIER_BENCH_BACKLOG sets the parked backlog, 100,000 by default); `carrier-bench logs`
# (log-store write throughput and search latency on 1,000,000 logs; Postgres only, in a database
# of its own: CARRIER_BENCH_LOGS sets the size); and `carrier-bench protection` (ingress
# throughput with and without the rate limiter, with Idempotency-Key, and authentication's CPU
# cost); and `carrier-bench idle` (the idle stack's CPU and the first message after a quiet
# spell, with idle partitions fetched always and left out).
# Results: .run/bench/results.md, idle.md, delivery.md, logs.md and protection.md.
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
source "$REPO/scripts/lib.sh"
cd "$REPO"

# `make bench` runs every part; `bash scripts/bench.sh delivery` (or `logs`, `protection`) only that part.
PARTS="${1:-ingress idle delivery logs protection}"
RUN_DIR="${CARRIER_RUN_DIR:-$REPO/.run}"
BENCH_BIN="${CARGO_TARGET_DIR:-$REPO/target}/${CARRIER_BENCH_BUILD:-release}/carrier-bench"
# The benchmark client is one IP sending millions of requests: the limiter stays on (its Redis
# round trip is part of what is measured) with a limit it never reaches.
export CARRIER_RATE_LIMIT__LIMIT="${CARRIER_RATE_LIMIT__LIMIT:-1000000000}"

# Each part starts from a freshly started stack, so one part's load (and the memory a worker
# keeps from it) does not carry into the next: delivery's "idle" memory is a fresh worker's.
# CARRIER_BENCH_BUILD=debug measures debug builds instead (quicker to build; slower code).
BUILD="${CARRIER_BENCH_BUILD:-release}"
fresh_stack() {
    bash "$REPO/scripts/down.sh"
    CARRIER_BUILD="$BUILD" bash "$REPO/scripts/up.sh"
}

carrier_ensure_build_deps
if [ "${CARRIER_BENCH_BUILD:-release}" = release ]; then cargo build --release -p carrier-bench; else cargo build -p carrier-bench; fi
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
    protection)
        fresh_stack
        # A second ingress, identical but for the rate limiter, on the same stack.
        UNLIMITED_PORT=8090
        carrier_port_open "$UNLIMITED_PORT" && carrier_die "port $UNLIMITED_PORT is taken"
        UNLIMITED_ADMIN_PORT=8091
        carrier_port_open "$UNLIMITED_ADMIN_PORT" && carrier_die "port $UNLIMITED_ADMIN_PORT is taken"
        CARRIER_PROFILE=dev CARRIER_HTTP_ADDR="127.0.0.1:$UNLIMITED_PORT" CARRIER_ADMIN_ADDR="127.0.0.1:$UNLIMITED_ADMIN_PORT" \
            CARRIER_KAFKA__BROKERS="127.0.0.1:${CARRIER_KAFKA_PORT:-9092}" CARRIER_KAFKA__ENABLE_IDEMPOTENCE=false \
            CARRIER_DATABASE_URL="${CARRIER_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/carrier}" \
            CARRIER_RATE_LIMIT__ENABLED=false \
            setsid "${CARGO_TARGET_DIR:-$REPO/target}/release/carrier-ingress" </dev/null \
            >>"$RUN_DIR/logs/ingress-unlimited.log" 2>&1 &
        echo $! >"$RUN_DIR/pids/ingress-unlimited.pid"
        for _ in $(seq 1 60); do
            curl -fsS "http://127.0.0.1:$UNLIMITED_ADMIN_PORT/readyz" >/dev/null 2>&1 && break
            sleep 0.5
        done
        CARRIER_BENCH_PAUSE_PIDS="$(cat "$RUN_DIR/pids/delivery.pid" "$RUN_DIR/pids/notifier.pid")" \
            CARRIER_BENCH_UNLIMITED_URL="http://127.0.0.1:$UNLIMITED_PORT" "$BENCH_BIN" protection
        carrier_stop_pidfile "$RUN_DIR/pids/ingress-unlimited.pid"
        ;;
    idle)
        # Twice: every partition always fetched, then make up's idle partitions left out
        # (kafka.idle_after_ms); the second run writes the comparison, .run/bench/idle.md.
        pids() {
            echo "tansu=$(cat "$RUN_DIR/tansu/tansu.pid")" \
                "ingress=$(cat "$RUN_DIR/pids/ingress.pid")" "router=$(cat "$RUN_DIR/pids/router.pid")" \
                "delivery=$(cat "$RUN_DIR/pids/delivery.pid")" "notifier=$(cat "$RUN_DIR/pids/notifier.pid")"
        }
        CARRIER_KAFKA__IDLE_AFTER_MS=0 fresh_stack
        CARRIER_BENCH_IDLE_PIDS="$(pids)" CARRIER_BENCH_IDLE_LABEL="always fetched (idle_after_ms=0)" \
            CARRIER_BENCH_OUT="$RUN_DIR/bench/idle-always.json" "$BENCH_BIN" idle
        fresh_stack
        CARRIER_BENCH_IDLE_PIDS="$(pids)" CARRIER_BENCH_IDLE_LABEL="idle partitions left out (idle_after_ms=${CARRIER_KAFKA__IDLE_AFTER_MS:-2000})" \
            CARRIER_BENCH_OUT="$RUN_DIR/bench/idle-left-out.json" CARRIER_BENCH_IDLE_COMPARE="$RUN_DIR/bench/idle-always.json" \
            CARRIER_BENCH_REPORT="$RUN_DIR/bench/idle.md" "$BENCH_BIN" idle
        ;;
    logs)
        # Needs only Postgres (make up's); drops and fills its own database, carrier_bench_logs.
        "$BENCH_BIN" logs
        ;;
    *) carrier_die "unknown benchmark part '$part' (ingress, idle, delivery, logs, protection)" ;;
    esac
done
