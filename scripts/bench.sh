#!/usr/bin/env bash
# `make bench`: builds the reference ceiling (../shared/bench/ceiling) outside the repo, restarts
# the stack from release builds and runs carrier-bench against both on the same broker; then
# restarts the stack again and runs `carrier-bench delivery` (isolation, drain rate, memory;
# CARRIER_BENCH_BACKLOG sets the parked backlog, 100,000 by default); `carrier-bench logs`
# (log-store write throughput and search latency on 1,000,000 logs; Postgres only, in a database
# of its own: CARRIER_BENCH_LOGS sets the size); and `carrier-bench protection` (ingress
# throughput with and without the rate limiter, with Idempotency-Key, and authentication's CPU
# cost); and `carrier-bench idle` (the idle stack's CPU and the first message after a quiet
# spell, with idle partitions fetched always and left out); and `carrier-bench records` (broker
# records written, fetch requests and CPU per delivered message, at fan-out 1 and 10); the same
# with the services under callgrind (`instructions`: instructions per message); and
# `carrier-bench sustained` (the highest rate the pipeline keeps up with, and 2× that for 60 s).
# Results: .run/bench/results.md, records.md, instructions.md, sustained.md, idle.md,
# delivery.md, logs.md and protection.md.
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
source "$REPO/scripts/lib.sh"
cd "$REPO"

# `make bench` runs every part; `bash scripts/bench.sh delivery` (or `records`, `instructions`, `sustained`,
# `idle`, `logs`, `protection`) only that part.
PARTS="${1:-ingress records instructions sustained idle delivery logs protection}"
RUN_DIR="${CARRIER_RUN_DIR:-$REPO/.run}"
BENCH_BIN="${CARGO_TARGET_DIR:-$REPO/target}/${CARRIER_BENCH_BUILD:-release}/carrier-bench"
# The benchmark client is one IP sending millions of requests: the limiter stays on (its Redis
# round trip is part of what is measured) with a limit it never reaches.
export CARRIER_RATE_LIMIT__LIMIT="${CARRIER_RATE_LIMIT__LIMIT:-1000000000}"

# Each part starts a fresh stack on empty data: a broker directory and a database of the
# benchmark's own ($STACK_DIR, carrier_bench), deleted before each part, so one part's load
# (and the memory a process keeps from it) does not carry into the next. Empty data matters: a
# "fresh" delivery worker started on the records earlier runs left was 64-86 MiB, 37 MiB of it
# librdkafka's prefetched fetch buffers (valgrind massif, 2026-12-04), and 29 MiB on empty data.
# `make up`'s stack is stopped first (same ports); its data is kept. The benchmark's stack is
# stopped and its data deleted when the script ends; the results stay in $RUN_DIR/bench.
# CARRIER_BENCH_BUILD=debug measures debug builds instead (quicker to build; slower code).
BUILD="${CARRIER_BENCH_BUILD:-release}"
STACK_DIR="$RUN_DIR/bench-stack"
BENCH_DATABASE=carrier_bench
export CARRIER_DATABASE_URL="postgres://postgres@127.0.0.1:5432/$BENCH_DATABASE"
stop_bench_stack() {
    CARRIER_RUN_DIR="$STACK_DIR" bash "$REPO/scripts/down.sh"
    rm -rf "$STACK_DIR/tansu"
    carrier_port_open 5432 && dropdb -h 127.0.0.1 -U postgres --if-exists --force "$BENCH_DATABASE"
    return 0
}
fresh_stack() {
    bash "$REPO/scripts/down.sh"
    stop_bench_stack
    CARRIER_RUN_DIR="$STACK_DIR" CARRIER_BUILD="$BUILD" bash "$REPO/scripts/up.sh"
}
trap stop_bench_stack EXIT

# A second ingress on the stack (NAME PORT ADMIN_PORT [VAR=value ...]): the stack's settings and
# those given. Its pid goes to $STACK_DIR/pids/ingress-NAME.pid.
start_extra_ingress() {
    local name="$1" port="$2" admin_port="$3"
    shift 3
    carrier_port_open "$port" && carrier_die "port $port is taken"
    carrier_port_open "$admin_port" && carrier_die "port $admin_port is taken"
    env CARRIER_PROFILE=dev CARRIER_HTTP_ADDR="127.0.0.1:$port" CARRIER_ADMIN_ADDR="127.0.0.1:$admin_port" \
        CARRIER_KAFKA__BROKERS="127.0.0.1:${CARRIER_KAFKA_PORT:-9092}" CARRIER_KAFKA__ENABLE_IDEMPOTENCE=false \
        CARRIER_DATABASE_URL="$CARRIER_DATABASE_URL" \
        "$@" setsid "${CARGO_TARGET_DIR:-$REPO/target}/$BUILD/carrier-ingress" </dev/null \
        >>"$STACK_DIR/logs/ingress-$name.log" 2>&1 &
    echo $! >"$STACK_DIR/pids/ingress-$name.pid"
    for _ in $(seq 1 60); do
        curl -fsS "http://127.0.0.1:$admin_port/readyz" >/dev/null 2>&1 && return 0
        sleep 0.5
    done
    carrier_die "the $name ingress did not become ready (see $STACK_DIR/logs/ingress-$name.log)"
}

# The broker's and the services' pids, as `name=pid ...` (the broker first).
pids() {
    echo "tansu=$(cat "$STACK_DIR/tansu/tansu.pid")" \
        "ingress=$(cat "$STACK_DIR/pids/ingress.pid")" "router=$(cat "$STACK_DIR/pids/router.pid")" \
        "delivery=$(cat "$STACK_DIR/pids/delivery.pid")" "notifier=$(cat "$STACK_DIR/pids/notifier.pid")"
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
        # Ingress on its own: a second one writing to solo.inbound, which nothing consumes (the
        # same partitions as carrier.inbound), so the broker takes only its writes, as the
        # ceiling's; routing and auth still go to the stack's router.
        INBOUND_PARTITIONS="$(tr ' ' '\n' <<<"${CARRIER_PARTITIONS:-inbound:4}" | sed -n 's/^inbound://p')"
        CARRIER_PARTITIONS="inbound:${INBOUND_PARTITIONS:-4}" carrier_create_topics "${CARRIER_KAFKA_PORT:-9092}" solo.
        start_extra_ingress solo 8092 8093 CARRIER_KAFKA__TOPIC_PREFIX=solo.
        CARRIER_BENCH_SOLO_URL="http://127.0.0.1:8092" \
            CARRIER_CEILING_BIN="$CEILING_TARGET/release/ceiling" "$BENCH_BIN"
        carrier_stop_pidfile "$STACK_DIR/pids/ingress-solo.pid"
        ;;
    sustained)
        fresh_stack
        "$BENCH_BIN" sustained
        ;;
    records)
        fresh_stack
        CARRIER_BENCH_PIDS="$(pids)" CARRIER_BENCH_RECORDS_SECOND_RATE="${CARRIER_BENCH_RECORDS_SECOND_RATE:-200}" \
            CARRIER_BENCH_DATABASE_URL="$CARRIER_DATABASE_URL" "$BENCH_BIN" records
        ;;
    instructions)
        # The records run again with the four services under callgrind: instructions executed per
        # message, gross and marginal (a span at 10 msg/s, then one as long at 20), which the
        # machine's other load does not move as it moves CPU time. Under valgrind a service runs
        # ~50× slower, hence the few messages.
        command -v valgrind >/dev/null || carrier_apt_install valgrind
        # One directory, named to both: the wrapper writes the dumps there, carrier-bench reads them.
        callgrind_dir="$RUN_DIR/bench/callgrind"
        rm -rf "$callgrind_dir" && mkdir -p "$callgrind_dir"
        CARRIER_CALLGRIND_DIR="$callgrind_dir" CARRIER_SERVICE_WRAPPER="$REPO/scripts/under-callgrind.sh" fresh_stack
        CARRIER_BENCH_PIDS="$(pids)" CARRIER_CALLGRIND_DIR="$callgrind_dir" \
            CARRIER_BENCH_RECORDS_MESSAGES="${CARRIER_BENCH_RECORDS_MESSAGES:-100}" \
            CARRIER_BENCH_RECORDS_RATE="${CARRIER_BENCH_RECORDS_RATE:-10}" \
            CARRIER_BENCH_RECORDS_SECOND_RATE="${CARRIER_BENCH_RECORDS_SECOND_RATE:-20}" \
            CARRIER_BENCH_RECORDS_LABEL="the four services under callgrind" \
            CARRIER_BENCH_OUT="$RUN_DIR/bench/instructions.json" CARRIER_BENCH_REPORT="$RUN_DIR/bench/instructions.md" \
            CARRIER_BENCH_DATABASE_URL="$CARRIER_DATABASE_URL" "$BENCH_BIN" records
        # The next part starts from a plain stack. The dumps stay, for callgrind_annotate (where
        # the instructions go); the next run of this part removes them.
        stop_bench_stack
        ;;
    delivery)
        fresh_stack
        CARRIER_BENCH_DELIVERY_PID="$(cat "$STACK_DIR/pids/delivery.pid")" "$BENCH_BIN" delivery
        ;;
    protection)
        fresh_stack
        # A second ingress, identical but for the rate limiter, on the same stack.
        start_extra_ingress unlimited 8090 8091 CARRIER_RATE_LIMIT__ENABLED=false
        CARRIER_BENCH_PAUSE_PIDS="$(cat "$STACK_DIR/pids/delivery.pid" "$STACK_DIR/pids/notifier.pid")" \
            CARRIER_BENCH_UNLIMITED_URL="http://127.0.0.1:8090" "$BENCH_BIN" protection
        carrier_stop_pidfile "$STACK_DIR/pids/ingress-unlimited.pid"
        ;;
    idle)
        # Twice: every partition always fetched, then make up's idle partitions left out
        # (kafka.idle_after_ms); the second run writes the comparison, .run/bench/idle.md.
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
    *) carrier_die "unknown benchmark part '$part' (ingress, records, instructions, sustained, idle, delivery, logs, protection)" ;;
    esac
done
