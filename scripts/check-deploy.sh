#!/usr/bin/env bash
# The deployment checks (`make test` runs them before building; alone: bash scripts/check-deploy.sh).
#  (a) the Helm chart helm/carrier: Helm's lint (strict) with the default values and with every
#      helm/carrier/ci/*.yaml; rendering for two releases in one namespace (the YAML parses,
#      no resource name is shared, restricted pod security, each Secret only in the services
#      that read it, probes on the admin port, hooks, the KEDA bound, TOML config files ...);
#  (b) values.schema.json: the defaults and every ci/*.yaml pass, bad values are refused;
#  (c) docker-compose.yml: Debian's docker-compose resolves it (`config -q`) with the required
#      secrets set and refuses it without them; start-up order and healthchecks; the image's
#      health check script against a local HTTP server;
#  (d) monitoring: `promtool check rules` on deploy/prometheus/carrier-rules.yml and the
#      PrometheusRule's spec, `promtool test rules deploy/prometheus/tests/*.yml`, the generated
#      files up to date, every runbook_url an existing docs/runbooks page, the dashboards' JSON
#      and PromQL, every metric used or registered in the code documented in docs/metrics.md.
# No cluster, Docker engine or helm binary is needed: Helm's Go SDK comes from PyPI
# (helm-python-sdk, see carrier_ensure_helm_sdk in lib.sh), docker-compose from Debian, promtool
# from Debian's prometheus package, unpacked, never run as a service (carrier_ensure_promtool).
# Safe to run again: a second run installs nothing and takes a few seconds.
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
source "$REPO/scripts/lib.sh"
cd "$REPO"

failed=0
step_failed() { echo "check-deploy: FAIL: $*" >&2; failed=1; }

# ------------------------------------------------------------- (a) + (b) the chart
carrier_log "deployment checks: the Helm chart (lint, values schema, rendering)"
py="$(carrier_ensure_helm_sdk)" || { echo "check-deploy: FAIL: cannot install the Helm SDK" >&2; exit 1; }
"$py" scripts/check-deploy.py chart helm/carrier || step_failed "helm/carrier: see the FAIL lines above"

# ---------------------------------------------------------------- (c) docker-compose
carrier_log "deployment checks: docker-compose.yml"
command -v docker-compose >/dev/null 2>&1 || carrier_apt_install docker-compose
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# The secrets compose requires (${VAR:?}); throwaway values.
compose_env=(
    CARRIER_ADMIN_TOKEN=check-deploy-admin-token-0123456789abcdef
    CARRIER_TOKEN_SIGNING_KEY=check-deploy-signing-key-0123456789abcdef0123
    CARRIER_INTERNAL_TOKEN=check-deploy-internal-token-0123456789abcdef01
)
if ! env "${compose_env[@]}" docker-compose -f docker-compose.yml config -q 2>"$work/config.err"; then
    cat "$work/config.err" >&2
    step_failed "docker-compose -f docker-compose.yml config -q refuses the file"
elif ! env "${compose_env[@]}" docker-compose -f docker-compose.yml config >"$work/compose.yaml" 2>"$work/config.err"; then
    cat "$work/config.err" >&2
    step_failed "docker-compose config could not print the resolved file"
else
    carrier_log "ok: docker-compose -f docker-compose.yml config -q ($(docker-compose version --short))"
    "$py" scripts/check-deploy.py compose "$work/compose.yaml" || step_failed "docker-compose.yml: see the FAIL lines above"
fi
# Without each required secret, compose must refuse to start, naming it.
refused=0
for variable in CARRIER_ADMIN_TOKEN CARRIER_TOKEN_SIGNING_KEY CARRIER_INTERNAL_TOKEN; do
    others=()
    for assignment in "${compose_env[@]}"; do
        [ "${assignment%%=*}" = "$variable" ] || others+=("$assignment")
    done
    if env -u "$variable" "${others[@]}" docker-compose -f docker-compose.yml config -q >/dev/null 2>"$work/missing.err"; then
        step_failed "docker-compose.yml accepts a missing $variable"
    elif ! grep -q "$variable" "$work/missing.err"; then
        cat "$work/missing.err" >&2
        step_failed "docker-compose.yml refuses a missing $variable without naming it"
    else
        refused=$((refused + 1))
    fi
done
if [ "$refused" = 3 ]; then
    carrier_log "ok: docker-compose.yml refuses to start without each required secret"
fi

# The image's health check (deploy/carrier-healthcheck) against a local HTTP server: 200 passes,
# 404 and a closed port fail.
mkdir -p "$work/www" && touch "$work/www/readyz"
port="$("$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
"$py" -m http.server "$port" --bind 127.0.0.1 --directory "$work/www" >/dev/null 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 1 50); do carrier_port_open "$port" && break; sleep 0.1; done
if ! bash deploy/carrier-healthcheck "$port" /readyz; then
    step_failed "deploy/carrier-healthcheck fails on a server answering 200"
elif bash deploy/carrier-healthcheck "$port" /missing 2>/dev/null; then
    step_failed "deploy/carrier-healthcheck passes on a 404"
elif bash deploy/carrier-healthcheck 1 /readyz 2>/dev/null; then
    step_failed "deploy/carrier-healthcheck passes with nothing listening"
else
    carrier_log "ok: deploy/carrier-healthcheck passes on 200, fails on 404 and on a closed port"
fi

# ------------------------------------------------------------- (d) monitoring
carrier_log "deployment checks: Prometheus rules, runbooks, Grafana dashboards, docs/metrics.md"
if promtool="$(carrier_ensure_promtool)"; then
    "$py" scripts/check-deploy.py observability "$promtool" || step_failed "monitoring: see the FAIL lines above"
else
    step_failed "cannot get promtool (Debian's prometheus package)"
fi

if [ "$failed" != 0 ]; then
    echo "check-deploy: FAILED (see the FAIL lines above)" >&2
    exit 1
fi
carrier_log "deployment checks passed"
