#!/usr/bin/env bash
# `make up`: infrastructure, build, the four services and a sample receiver in the background,
# then one sample message end to end. Logs: .run/logs/. Running it again while up is harmless.
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
source "$REPO/scripts/lib.sh"
cd "$REPO"

RUN_DIR="${CARRIER_RUN_DIR:-$REPO/.run}"
LOG_DIR="$RUN_DIR/logs"
PID_DIR="$RUN_DIR/pids"
mkdir -p "$LOG_DIR" "$PID_DIR"

command -v curl >/dev/null || carrier_apt_install curl
carrier_ensure_build_deps
bash "$REPO/scripts/infra-up.sh"

# CARRIER_BUILD=release (used by `make bench`) runs optimised builds.
BUILD="${CARRIER_BUILD:-debug}"
carrier_log "building Carrier ($BUILD; the first build takes a few minutes)"
if [ "$BUILD" = release ]; then
    cargo build --release --workspace --bins
else
    cargo build --workspace --bins
fi
BIN="${CARGO_TARGET_DIR:-$REPO/target}/$BUILD"

export CARRIER_PROFILE=dev
export CARRIER_KAFKA__BROKERS="127.0.0.1:${CARRIER_KAFKA_PORT:-9092}"
# Tansu 0.6 panics on idempotent producers that outlive a broker restart (see KafkaSettings).
export CARRIER_KAFKA__ENABLE_IDEMPOTENCE=false
# Tansu 0.6 answers a fetch only after its whole wait: partitions nothing was written to for 2 s
# are left out of fetches, woken by their producers' doorbells (docs/production.md, "Tansu").
# Without it the idle broker spends a core; `0` fetches always (`make bench` part `idle`).
export CARRIER_KAFKA__IDLE_AFTER_MS="${CARRIER_KAFKA__IDLE_AFTER_MS:-2000}"
# Two glibc malloc arenas per process, as the image sets it (Dockerfile): delivery's peak
# memory with a large backlog is 12 % lower (docs/benchmarks.md, "Delivery memory").
export MALLOC_ARENA_MAX="${MALLOC_ARENA_MAX:-2}"
export CARRIER_DATABASE_URL="${CARRIER_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/carrier}"
# Delivery (and the notifier's Slack webhooks) refuse loopback in production; the sample
# receiver is on 127.0.0.1.
export CARRIER_OUTBOUND__ALLOW_LOOPBACK=true
# The rate limiter runs (the benchmark pays its Redis round trip) but the benchmark is one client
# on one address, far past 7,500 requests in 5 minutes.
export CARRIER_RATE_LIMIT__LIMIT="${CARRIER_RATE_LIMIT__LIMIT:-1000000}"

# start NAME PORT COMMAND...: starts a background process unless its pid is alive.
start() {
    local name="$1" port="$2"
    shift 2
    local pidfile="$PID_DIR/$name.pid"
    if [ -f "$pidfile" ] && carrier_pid_alive "$(cat "$pidfile")"; then
        carrier_log "$name already running (pid $(cat "$pidfile"))"
        return
    fi
    if carrier_port_open "$port"; then
        carrier_die "port $port (for $name) is taken by another process"
    fi
    setsid "$@" </dev/null >>"$LOG_DIR/$name.log" 2>&1 &
    echo $! >"$pidfile"
    carrier_log "started $name (pid $!, log $LOG_DIR/$name.log)"
}

# CARRIER_SERVICE_WRAPPER: a command the four services run under, given the binary and its
# arguments; it must exec it, so the pid is the service's (`make bench`'s instruction counts run
# them under callgrind: scripts/under-callgrind.sh).
read -ra WRAPPER <<<"${CARRIER_SERVICE_WRAPPER:-}"
start router 8081 "${WRAPPER[@]}" "$BIN/carrier-router"
start notifier 8083 "${WRAPPER[@]}" "$BIN/carrier-notifier"
start delivery 8082 "${WRAPPER[@]}" "$BIN/carrier-delivery"
start ingress 8080 "${WRAPPER[@]}" "$BIN/carrier-ingress"
RECEIVER_ADDR=127.0.0.1:9000 start sample-receiver 9000 "$BIN/carrier-sample-receiver"

# Probes: router, notifier and delivery on their HTTP port; ingress on its operator port (8084),
# not its public one.
for port in 8081 8083 8082 8084; do
    ready=""
    for _ in $(seq 1 120); do
        if curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1; then ready=1; break; fi
        sleep 0.5
    done
    [ -n "$ready" ] || carrier_die "service on port $port not ready; see $LOG_DIR"
done
carrier_log "all services ready"

"$BIN/carrier-demo"
cat <<MSG

Carrier is up.
  ingress          http://127.0.0.1:8080   (admin token: dev-admin-token)
  console          http://127.0.0.1:8080/console/   (sign in with the admin token, or a source's client ID and secret)
  metrics          http://127.0.0.1:{8084,8081,8082,8083}/metrics  (8084: ingress's operator port)
  sample receiver  http://127.0.0.1:9000   (what it received: $LOG_DIR/sample-receiver.log)
  logs             $LOG_DIR/
  operator CLI     $BIN/carrierctl   (CARRIER_TOKEN=dev-admin-token $BIN/carrierctl --help)
Stop everything with: make down
MSG
