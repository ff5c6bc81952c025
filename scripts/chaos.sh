#!/usr/bin/env bash
# `make chaos`: the fault matrix. Builds the release binaries, makes sure Postgres, Redis and
# Tansu are installed (each scenario starts instances of its own on free ports, so nothing
# else on the machine is disturbed), runs every scenario and writes .run/chaos/results.md
# (each scenario's logs in .run/chaos/<scenario>/). Takes about an hour.
#   CHAOS_ARGS  arguments for carrier-chaos, e.g. "--short" (the shortened matrix, written to
#               .run/chaos/results-short.md) or "--only kill-router,broker-drop"
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
source "$REPO/scripts/lib.sh"
cd "$REPO"

carrier_ensure_chaos_deps

carrier_ensure_build_deps
carrier_log "building release binaries"
cargo build --release --workspace --bins
BIN="${CARGO_TARGET_DIR:-$REPO/target}/release"
RUN_DIR="${CARRIER_RUN_DIR:-$REPO/.run}/chaos"

# shellcheck disable=SC2086 # CHAOS_ARGS is a list of arguments
CARRIER_CHAOS_COMMAND="make chaos${CHAOS_ARGS:+ CHAOS_ARGS=\"$CHAOS_ARGS\"}" \
    "$BIN/carrier-chaos" --bin-dir "$BIN" --run-dir "$RUN_DIR" ${CHAOS_ARGS:-}
