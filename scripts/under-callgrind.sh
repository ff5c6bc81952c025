#!/usr/bin/env bash
# Runs one service under valgrind's callgrind, for `bash scripts/bench.sh instructions` (up.sh's
# CARRIER_SERVICE_WRAPPER): its dumps go to $CARRIER_CALLGRIND_DIR/<service>.<pid>.<n>
# (carrier-bench's instructions.rs zeroes and dumps them around each measured span). exec keeps
# the pid the service's.
set -euo pipefail
name="$(basename "$1")"
exec valgrind --tool=callgrind --callgrind-out-file="$CARRIER_CALLGRIND_DIR/${name#carrier-}.%p" "$@"
