#!/usr/bin/env bash
# Bring up everything Carrier needs locally / in CI: Postgres, Redis, a durable
# Tansu (Kafka) broker with Carrier's topics, and the `carrier` database.
# Idempotent: re-running only starts what is not already up.
#   CARRIER_RUN_DIR     state dir (default: <repo>/.run)
#   CARRIER_KAFKA_PORT  broker port (default: 9092)
#   CARRIER_KAFKA__TOPIC_PREFIX  topic prefix (default: carrier.)
#   CARRIER_PARTITIONS  partition counts (default, for this development broker:
#       "inbound:4 deliveries:8 log-events:4 notifications:1"). Tansu's SQLite engine reads
#       every fetched partition on each fetch (about 2 ms per partition measured here), so
#       development uses few; production Kafka uses 16/64/16/4 (see README).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
. "$REPO/scripts/lib.sh"

RUN_DIR="${CARRIER_RUN_DIR:-$REPO/.run}"
KAFKA_PORT="${CARRIER_KAFKA_PORT:-9092}"

carrier_ensure_postgres
carrier_ensure_redis
carrier_start_tansu "$RUN_DIR/tansu" "$KAFKA_PORT"
PREFIX="${CARRIER_KAFKA__TOPIC_PREFIX:-carrier.}"
export CARRIER_PARTITIONS="${CARRIER_PARTITIONS:-inbound:4 deliveries:8 log-events:4 notifications:1}"
carrier_create_topics "$KAFKA_PORT" "$PREFIX"

# The database CARRIER_DATABASE_URL names (`carrier` by default; `make bench` uses its own).
DATABASE_URL="${CARRIER_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/carrier}"
DATABASE="${DATABASE_URL##*/}"
DATABASE="${DATABASE%%\?*}"
if [ "$(psql -h 127.0.0.1 -U postgres -Atqc "select 1 from pg_database where datname = '$DATABASE'")" != 1 ]; then
    createdb -h 127.0.0.1 -U postgres "$DATABASE"
    carrier_log "created database $DATABASE"
fi

cat >&2 <<SUMMARY
carrier: infrastructure is up
  postgres  $DATABASE_URL
  redis     redis://127.0.0.1:6379
  kafka     127.0.0.1:$KAFKA_PORT  (Tansu, sqlite $RUN_DIR/tansu/tansu.db, pid $(cat "$RUN_DIR/tansu/tansu.pid"), log $RUN_DIR/tansu/tansu.log)
  topics    prefix $PREFIX, partitions $CARRIER_PARTITIONS
  stop      . scripts/lib.sh && carrier_stop_pidfile $RUN_DIR/tansu/tansu.pid
SUMMARY
