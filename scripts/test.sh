#!/usr/bin/env bash
# `make test`: starts what the tests need (Postgres, Redis, a throwaway Tansu broker, Python's
# aiosmtpd for the alert e-mail tests, Prometheus for the monitoring test), builds the binaries the fault tests launch, and runs
# every test with nextest, after `cargo fmt --check` and clippy (warnings are errors). schemathesis (PyPI) runs in the e2e test `openapi_conformance`, chromium with playwright-core (npm) in `console`.
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
source "$REPO/scripts/lib.sh"
cd "$REPO"

RUN_DIR="${CARRIER_RUN_DIR:-$REPO/.run}"
TEST_BROKER_DIR="$RUN_DIR/test-broker"
TEST_BROKER_PORT="${CARRIER_TEST_BROKER_PORT:-19092}"

carrier_ensure_build_deps
carrier_ensure_postgres
carrier_ensure_redis
# The Kafka TLS tests (tests/e2e/tests/it/kafka_tls.rs) put stunnel in front of a Tansu broker.
CARRIER_TEST_STUNNEL="$(carrier_ensure_stunnel)"
export CARRIER_TEST_STUNNEL
export CARRIER_TANSU_BIN="$(carrier_tansu_bin)"
CARRIER_TEST_PYTHON="$(carrier_ensure_aiosmtpd)"
export CARRIER_TEST_PYTHON

CARRIER_TEST_SCHEMATHESIS="$(carrier_ensure_schemathesis)"
export CARRIER_TEST_SCHEMATHESIS
# The monitoring test (tests/e2e/tests/it/monitoring.rs) runs a real Prometheus: Debian's
# package, unpacked beside promtool (which check-deploy uses for the rules).
CARRIER_TEST_PROMETHEUS="$(dirname "$(carrier_ensure_promtool)")/prometheus"
[ -x "$CARRIER_TEST_PROMETHEUS" ] || CARRIER_TEST_PROMETHEUS="$(command -v prometheus || true)"
export CARRIER_TEST_PROMETHEUS

# The console's browser test (tests/e2e/tests/it/console.rs): Debian's chromium driven by
# playwright-core from npm.
CARRIER_TEST_CHROMIUM="$(carrier_ensure_chromium)"
CARRIER_TEST_PLAYWRIGHT_DIR="$(carrier_ensure_playwright)"
CARRIER_TEST_NODE="$(command -v node)"
export CARRIER_TEST_CHROMIUM CARRIER_TEST_PLAYWRIGHT_DIR CARRIER_TEST_NODE

# A fresh broker per run: tests create topics of their own under random prefixes.
carrier_stop_pidfile "$TEST_BROKER_DIR/tansu.pid"
rm -rf "$TEST_BROKER_DIR"
carrier_start_tansu "$TEST_BROKER_DIR" "$TEST_BROKER_PORT"
trap 'carrier_stop_pidfile "$TEST_BROKER_DIR/tansu.pid"' EXIT

export CARRIER_TEST_BROKERS="127.0.0.1:$TEST_BROKER_PORT"
export CARRIER_TEST_POSTGRES="${CARRIER_TEST_POSTGRES:-postgres://postgres@127.0.0.1:5432}"

if ! command -v cargo-nextest >/dev/null 2>&1; then
    carrier_log "installing cargo-nextest"
    cargo install cargo-nextest --locked
fi

carrier_log "checking formatting and lints"
cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings

# The Helm chart and docker-compose.yml (lint, values schema, rendering, compose config).
bash "$REPO/scripts/check-deploy.sh"

carrier_log "building"
cargo build --workspace --bins --tests
profile=default
[ "${CI:-}" = "true" ] && profile=ci
carrier_log "running tests (nextest profile $profile)"
cargo nextest run --workspace --profile "$profile" --no-fail-fast
