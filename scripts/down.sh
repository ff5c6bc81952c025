#!/usr/bin/env bash
# `make down`: stops what `make up` started (services, sample receiver, the dev broker).
# Postgres and Redis are left running: they may serve other things on this machine.
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
source "$REPO/scripts/lib.sh"
RUN_DIR="${CARRIER_RUN_DIR:-$REPO/.run}"
for name in ingress ingress-unlimited ingress-solo sample-receiver delivery notifier router; do
    carrier_stop_pidfile "$RUN_DIR/pids/$name.pid"
    rm -f "$RUN_DIR/pids/$name.pid"
done
carrier_stop_pidfile "$RUN_DIR/tansu/tansu.pid"
carrier_log "stopped"
