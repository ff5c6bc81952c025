#!/usr/bin/env bash
# Bring up everything Carrier needs locally / in CI: Postgres, Redis, a durable
# Tansu (Kafka) broker with Carrier's topics, and the `carrier` database.
# Idempotent: re-running only starts what is not already up.
#   CARRIER_RUN_DIR     state dir (default: <repo>/.run)
#   CARRIER_KAFKA_PORT  broker port (default: 9092)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
. "$REPO/scripts/lib.sh"

RUN_DIR="${CARRIER_RUN_DIR:-$REPO/.run}"
KAFKA_PORT="${CARRIER_KAFKA_PORT:-9092}"

carrier_ensure_postgres
carrier_ensure_redis
carrier_start_tansu "$RUN_DIR/tansu" "$KAFKA_PORT"
carrier_create_topics "$KAFKA_PORT" "carrier."

if [ "$(psql -h 127.0.0.1 -U postgres -Atqc "select 1 from pg_database where datname = 'carrier'")" != 1 ]; then
    createdb -h 127.0.0.1 -U postgres carrier
    carrier_log "created database carrier"
fi

cat >&2 <<SUMMARY
carrier: infrastructure is up
  postgres  postgres://postgres@127.0.0.1:5432/carrier
  redis     redis://127.0.0.1:6379
  kafka     127.0.0.1:$KAFKA_PORT  (Tansu, sqlite $RUN_DIR/tansu/tansu.db, pid $(cat "$RUN_DIR/tansu/tansu.pid"), log $RUN_DIR/tansu/tansu.log)
  topics    carrier.inbound(16) carrier.deliveries(64) carrier.log-events(16) carrier.notifications(4)
  stop      . scripts/lib.sh && carrier_stop_pidfile $RUN_DIR/tansu/tansu.pid
SUMMARY
