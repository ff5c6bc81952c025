# shellcheck shell=bash
# Shared helpers for Carrier's local/CI infrastructure (Postgres, Redis, Tansu).
# Source it:  . "$(dirname "$0")/lib.sh"   — safe under `set -euo pipefail`.
#
# Progress lines go to stderr ("carrier: ..."), so functions that print a value
# on stdout (carrier_tansu_bin) can be used in $(...).

CARRIER_TANSU_ROOT="${CARRIER_TANSU_ROOT:-/var/cache/carrier/tansu}"
CARRIER_TANSU_LOCK="${CARRIER_TANSU_LOCK:-/var/cache/carrier/tansu.lock}"

carrier_log() { echo "carrier: $*" >&2; }
# Callers write `... || { carrier_die "msg"; return 1; }` so a failure also
# propagates when the function is called from an `if`/`||` (where set -e is off).
carrier_die() { echo "carrier: ERROR: $*" >&2; return 1; }

# True if process PID is alive: it exists and is not a zombie (a process killed a moment ago can
# linger as a zombie until it is reaped, and `kill -0` still succeeds on it).
carrier_pid_alive() {
    kill -0 "$1" 2>/dev/null || return 1
    case "$(ps -o stat= -p "$1" 2>/dev/null)" in
        Z*|"") return 1 ;;
    esac
}

# True if something accepts TCP connections on 127.0.0.1:PORT.
carrier_port_open() {
    timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null
}

# apt-get install, running `apt-get update` once per shell first.
_carrier_apt_updated=""
carrier_apt_install() {
    if [ -z "$_carrier_apt_updated" ]; then
        carrier_log "apt-get update"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
        _carrier_apt_updated=1
    fi
    carrier_log "apt-get install $*"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >&2
}

# ------------------------------------------------------------- build libraries

# What librdkafka is built against (the root Cargo.toml's rdkafka features): OpenSSL for Kafka
# TLS and SASL SCRAM (`ssl`), libcurl for OAUTHBEARER/OIDC (`curl`), found with pkg-config.
# No libsasl2: Carrier does not enable `gssapi` (Kerberos). Call before any cargo build.
carrier_ensure_build_deps() {
    local missing=() package
    for package in libssl-dev libcurl4-openssl-dev pkg-config; do
        dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "ok installed" ||
            missing+=("$package")
    done
    [ "${#missing[@]}" -eq 0 ] || carrier_apt_install "${missing[@]}"
}

# Prints the path of stunnel (the Kafka TLS tests put it in front of a Tansu broker),
# installing Debian's stunnel4 when missing.
carrier_ensure_stunnel() {
    if [ -n "${CARRIER_TEST_STUNNEL:-}" ] && [ -x "$CARRIER_TEST_STUNNEL" ]; then
        echo "$CARRIER_TEST_STUNNEL"; return
    fi
    if ! command -v stunnel4 >/dev/null 2>&1 && ! command -v stunnel >/dev/null 2>&1; then
        carrier_apt_install stunnel4 || return 1
    fi
    command -v stunnel4 || command -v stunnel
}

# ---------------------------------------------------------------- PostgreSQL

carrier_ensure_postgres() {
    if ! pg_isready -q -h 127.0.0.1 2>/dev/null; then
        if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
            carrier_apt_install postgresql postgresql-client
        fi
        local ver
        ver="$(ls /usr/lib/postgresql | sort -V | tail -n1)"
        # The Debian package normally creates the "main" cluster; make sure.
        if [ ! -d "/etc/postgresql/$ver/main" ]; then
            carrier_log "creating PostgreSQL $ver cluster 'main'"
            pg_createcluster "$ver" main >&2
        fi
        carrier_log "starting PostgreSQL $ver"
        # No systemd here: bypass the systemctl redirect. "already running" is fine.
        pg_ctlcluster --skip-systemctl-redirect "$ver" main start >&2 || true
        local i
        for i in $(seq 1 30); do
            pg_isready -q -h 127.0.0.1 && break
            sleep 1
        done
        pg_isready -q -h 127.0.0.1 || { carrier_die "PostgreSQL did not start on 127.0.0.1:5432"; return 1; }
    fi

    # Password-less TCP access for user postgres (Debian defaults to scram).
    if ! psql -h 127.0.0.1 -U postgres -w -Atqc 'select 1' >/dev/null 2>&1; then
        local hba
        hba="$(su postgres -c "psql -Atqc 'show hba_file'")"
        carrier_log "setting trust auth for 127.0.0.1/::1 in $hba"
        sed -ri 's#^(host\s+\S+\s+\S+\s+(127\.0\.0\.1/32|::1/128)\s+)\S+#\1trust#' "$hba"
        su postgres -c "psql -Atqc 'select pg_reload_conf()'" >/dev/null
        sleep 1
        psql -h 127.0.0.1 -U postgres -w -Atqc 'select 1' >/dev/null ||
            { carrier_die "cannot connect: psql -h 127.0.0.1 -U postgres"; return 1; }
    fi
    carrier_log "PostgreSQL ready on 127.0.0.1:5432"
}

# --------------------------------------------------------------------- Redis

carrier_ensure_redis() {
    if ! redis-cli -h 127.0.0.1 ping >/dev/null 2>&1; then
        if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
            carrier_apt_install redis-server redis-tools
        fi
        # The package's postinst may already have started it.
        if ! redis-cli -h 127.0.0.1 ping >/dev/null 2>&1; then
            carrier_log "starting Redis"
            mkdir -p /var/lib/redis /var/log/redis
            redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 \
                --save "" --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log >&2
        fi
        local i
        for i in $(seq 1 20); do
            redis-cli -h 127.0.0.1 ping >/dev/null 2>&1 && break
            sleep 0.5
        done
        redis-cli -h 127.0.0.1 ping >/dev/null 2>&1 ||
            { carrier_die "Redis did not start (see /var/log/redis/ci.log)"; return 1; }
    fi
    carrier_log "Redis ready on 127.0.0.1:6379"
}

# ------------------------------------------------------- Python + aiosmtpd (tests)

CARRIER_PYTHON_VENV="${CARRIER_PYTHON_VENV:-/var/cache/carrier/python}"

# Creates the virtualenv `$1` (with its pip) unless it exists, installing Debian's python3 and
# venv packages when missing.
carrier_ensure_venv() {
    local venv="$1"
    if ! command -v python3 >/dev/null 2>&1; then
        carrier_apt_install python3 python3-venv
    fi
    [ -x "$venv/bin/python" ] && return 0
    mkdir -p "$(dirname "$venv")"
    carrier_log "creating a Python virtualenv in $venv"
    # Debian splits venv (and its pip) into python3-venv.
    if ! python3 -m venv "$venv" >&2; then
        rm -rf "$venv"
        local minor
        minor="$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
        carrier_apt_install python3-venv "python$minor-venv" || carrier_apt_install python3-venv
        python3 -m venv "$venv" >&2 || { carrier_die "cannot create a virtualenv in $venv"; return 1; }
    fi
}

# Prints the path of a Python interpreter that has aiosmtpd (the SMTP server the alert tests
# send e-mail to), installing it from PyPI into a virtualenv of Carrier's own when missing.
carrier_ensure_aiosmtpd() {
    local py="$CARRIER_PYTHON_VENV/bin/python"
    if [ -n "${CARRIER_TEST_PYTHON:-}" ] && "$CARRIER_TEST_PYTHON" -c 'import aiosmtpd' 2>/dev/null; then
        echo "$CARRIER_TEST_PYTHON"; return
    fi
    if [ -x "$py" ] && "$py" -c 'import aiosmtpd' 2>/dev/null; then
        echo "$py"; return
    fi
    carrier_ensure_venv "$CARRIER_PYTHON_VENV" || return 1
    carrier_log "installing aiosmtpd (PyPI) into $CARRIER_PYTHON_VENV"
    "$py" -m pip install --quiet --disable-pip-version-check aiosmtpd >&2 ||
        { carrier_die "pip install aiosmtpd failed"; return 1; }
    "$py" -c 'import aiosmtpd' || { carrier_die "aiosmtpd is not importable by $py"; return 1; }
    echo "$py"
}

# ------------------------------------------------------- schemathesis (tests)

# The version the e2e test `openapi_conformance` was verified with (its CLI flags and checks).
CARRIER_SCHEMATHESIS_VERSION="${CARRIER_SCHEMATHESIS_VERSION:-4.32.5}"
CARRIER_SCHEMATHESIS_VENV="${CARRIER_SCHEMATHESIS_VENV:-/var/cache/carrier/schemathesis}"

# Prints the path of schemathesis's `st` (property-based tests of ingress against its own
# /openapi.json), installing the pinned version from PyPI into a virtualenv of its own (its
# dependencies stay apart from aiosmtpd's) when missing or of another version.
carrier_ensure_schemathesis() {
    local st="$CARRIER_SCHEMATHESIS_VENV/bin/st" py="$CARRIER_SCHEMATHESIS_VENV/bin/python"
    local wanted="st, version $CARRIER_SCHEMATHESIS_VERSION"
    if [ -x "$st" ] && [ "$("$st" --version 2>/dev/null)" = "$wanted" ]; then
        echo "$st"; return
    fi
    carrier_ensure_venv "$CARRIER_SCHEMATHESIS_VENV" || return 1
    carrier_log "installing schemathesis $CARRIER_SCHEMATHESIS_VERSION (PyPI) into $CARRIER_SCHEMATHESIS_VENV"
    "$py" -m pip install --quiet --disable-pip-version-check "schemathesis==$CARRIER_SCHEMATHESIS_VERSION" >&2 ||
        { carrier_die "pip install schemathesis failed"; return 1; }
    [ "$("$st" --version 2>/dev/null)" = "$wanted" ] ||
        { carrier_die "$st is not schemathesis $CARRIER_SCHEMATHESIS_VERSION"; return 1; }
    echo "$st"
}

# ------------------------------------------------ Helm SDK (deployment checks)

# scripts/check-deploy.sh lints and renders the Helm chart with Helm's own Go SDK (v4.2.3),
# which helm-python-sdk (PyPI) ships as a prebuilt C library inside its wheel: no helm binary,
# no Go toolchain, no cluster. (helm-sdkpy, the other binding on PyPI, needs Python 3.12 or
# newer, which Debian 12 lacks, and its lint takes no values and it cannot render templates.)
# jsonschema checks values.schema.json; PyYAML reads the rendered manifests.
CARRIER_HELM_SDK_REQUIREMENTS="${CARRIER_HELM_SDK_REQUIREMENTS:-helm-python-sdk==0.2.2 jsonschema==4.26.0 PyYAML==6.0.3}"
CARRIER_HELM_SDK_VENV="${CARRIER_HELM_SDK_VENV:-/var/cache/carrier/helm-sdk}"

# Prints the path of a Python interpreter (3.11 or newer: tomllib) with the pinned
# CARRIER_HELM_SDK_REQUIREMENTS, installing them from PyPI into a virtualenv of their own when
# missing or of other versions. A second call costs one `python -c` (no download, no import of
# the 100 MB library).
carrier_ensure_helm_sdk() {
    local py="$CARRIER_HELM_SDK_VENV/bin/python"
    local check='import importlib.metadata as m, sys
wanted = [r.split("==") for r in sys.argv[1].split()]
sys.exit(0 if sys.version_info >= (3, 11) and all(m.version(n) == v for n, v in wanted) else 1)'
    if [ -x "$py" ] && "$py" -c "$check" "$CARRIER_HELM_SDK_REQUIREMENTS" 2>/dev/null; then
        echo "$py"; return
    fi
    carrier_ensure_venv "$CARRIER_HELM_SDK_VENV" || return 1
    "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
        { carrier_die "$py is Python $("$py" -c 'import sys; print(sys.version.split()[0])'); the deployment checks need 3.11 or newer (remove $CARRIER_HELM_SDK_VENV after installing one)"; return 1; }
    carrier_log "installing $CARRIER_HELM_SDK_REQUIREMENTS (PyPI) into $CARRIER_HELM_SDK_VENV"
    # shellcheck disable=SC2086 # one requirement per word
    "$py" -m pip install --quiet --disable-pip-version-check $CARRIER_HELM_SDK_REQUIREMENTS >&2 ||
        { carrier_die "pip install $CARRIER_HELM_SDK_REQUIREMENTS failed"; return 1; }
    "$py" -c "$check" "$CARRIER_HELM_SDK_REQUIREMENTS" ||
        { carrier_die "$py does not have $CARRIER_HELM_SDK_REQUIREMENTS after installing them"; return 1; }
    echo "$py"
}

# ------------------------------------------------- promtool (deployment checks)

CARRIER_PROMETHEUS_ROOT="${CARRIER_PROMETHEUS_ROOT:-/var/cache/carrier/prometheus}"

# Prints the path of a promtool (`promtool check rules` / `test rules` on deploy/prometheus/):
# CARRIER_PROMTOOL, one on PATH, or the one unpacked from Debian's `prometheus` package into
# $CARRIER_PROMETHEUS_ROOT. The package is fetched with `apt-get download` and unpacked with
# `dpkg-deb -x`, not installed: its maintainer scripts would create a `prometheus` user and
# start a Prometheus server listening on :9090 (and its dependencies pull in a web UI's
# JavaScript); promtool itself is one binary that needs only libc. Nothing is started, nothing
# stays behind but the unpacked tree; a second call costs one `test -x`.
carrier_ensure_promtool() {
    if [ -n "${CARRIER_PROMTOOL:-}" ] && [ -x "$CARRIER_PROMTOOL" ]; then
        echo "$CARRIER_PROMTOOL"; return
    fi
    local bin="$CARRIER_PROMETHEUS_ROOT/usr/bin/promtool"
    if [ -x "$bin" ]; then echo "$bin"; return; fi
    if command -v promtool >/dev/null 2>&1; then command -v promtool; return; fi
    command -v apt-get >/dev/null 2>&1 ||
        { carrier_die "promtool is missing and there is no apt-get to fetch Debian's prometheus package (set CARRIER_PROMTOOL)"; return 1; }
    local work
    work="$(mktemp -d)"
    # apt-get download runs as the _apt user when it can: let it write here.
    chmod 755 "$work"
    carrier_log "fetching Debian's prometheus package (apt-get download) for its promtool"
    if ! (cd "$work" && apt-get download -qq prometheus >&2); then
        carrier_log "apt-get update"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
        _carrier_apt_updated=1
        (cd "$work" && apt-get download -qq prometheus >&2) ||
            { rm -rf "$work"; carrier_die "apt-get download prometheus failed"; return 1; }
    fi
    carrier_log "unpacking $(basename "$work"/prometheus_*.deb) into $CARRIER_PROMETHEUS_ROOT (dpkg-deb -x: no maintainer script runs, no service starts)"
    mkdir -p "$CARRIER_PROMETHEUS_ROOT"
    dpkg-deb -x "$work"/prometheus_*.deb "$CARRIER_PROMETHEUS_ROOT" ||
        { rm -rf "$work"; carrier_die "dpkg-deb -x failed"; return 1; }
    rm -rf "$work"
    "$bin" --version >/dev/null 2>&1 || { carrier_die "$bin does not run"; return 1; }
    carrier_log "promtool ready: $("$bin" --version 2>&1 | head -n 1)"
    echo "$bin"
}

# ------------------------------------------------------ console browser tests

# The console's browser tests (tests/console/, run by tests/e2e/tests/it/console.rs) drive
# Debian's chromium headless with playwright-core from npm (the library alone: it downloads no
# browser of its own). The package is installed once into $CARRIER_PLAYWRIGHT_DIR, outside the
# repository, at the pinned version.
CARRIER_PLAYWRIGHT_VERSION="${CARRIER_PLAYWRIGHT_VERSION:-1.65.2}"
CARRIER_PLAYWRIGHT_DIR="${CARRIER_PLAYWRIGHT_DIR:-/var/cache/carrier/playwright}"

# Prints the path of a chromium binary, installing Debian's package when missing.
carrier_ensure_chromium() {
    if [ -n "${CARRIER_TEST_CHROMIUM:-}" ] && [ -x "$CARRIER_TEST_CHROMIUM" ]; then
        echo "$CARRIER_TEST_CHROMIUM"; return
    fi
    command -v chromium >/dev/null 2>&1 || carrier_apt_install chromium || return 1
    command -v chromium
}

# Prints the directory whose node_modules holds playwright-core $CARRIER_PLAYWRIGHT_VERSION,
# installing Node.js (Debian's) and the package when missing. A second call costs one `node -e`.
carrier_ensure_playwright() {
    command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || carrier_apt_install nodejs npm || return 1
    local dir="$CARRIER_PLAYWRIGHT_DIR" installed
    installed="$(cd "$dir" 2>/dev/null && node -e 'console.log(require("playwright-core/package.json").version)' 2>/dev/null || true)"
    if [ "$installed" != "$CARRIER_PLAYWRIGHT_VERSION" ]; then
        carrier_log "installing playwright-core $CARRIER_PLAYWRIGHT_VERSION (npm) into $dir"
        mkdir -p "$dir"
        [ -f "$dir/package.json" ] || echo '{"name":"carrier-console-tests","private":true}' > "$dir/package.json"
        (cd "$dir" && npm install --silent --no-audit --no-fund --save-exact "playwright-core@$CARRIER_PLAYWRIGHT_VERSION" >&2) ||
            { carrier_die "npm install playwright-core failed"; return 1; }
    fi
    echo "$dir"
}

# --------------------------------------------------------------------- Tansu

# Prints the path of a tansu binary, building it once if needed.
carrier_tansu_bin() {
    if [ -n "${CARRIER_TANSU_BIN:-}" ]; then echo "$CARRIER_TANSU_BIN"; return; fi
    local bin="$CARRIER_TANSU_ROOT/bin/tansu"
    if [ -x "$bin" ]; then echo "$bin"; return; fi
    if command -v tansu >/dev/null 2>&1; then command -v tansu; return; fi

    mkdir -p "$(dirname "$CARRIER_TANSU_LOCK")"
    (
        # Serialize concurrent callers; the loser finds the binary already built.
        flock 9
        if [ ! -x "$bin" ]; then
            carrier_log "installing tansu into $CARRIER_TANSU_ROOT (takes ~20 minutes the first time)"
            # --locked is required (it does not compile otherwise); libsql = sqlite storage.
            cargo install tansu --locked --features libsql --root "$CARRIER_TANSU_ROOT" >&2
        fi
    ) 9>"$CARRIER_TANSU_LOCK"
    [ -x "$bin" ] || { carrier_die "tansu install failed"; return 1; }
    echo "$bin"
}

# What the chaos harness starts for each scenario (scripts/chaos.sh, bench-rolling-restart.sh):
# Postgres and Redis server binaries, and Tansu (exported as CARRIER_TANSU_BIN).
carrier_ensure_chaos_deps() {
    if [ -z "${CARRIER_PG_BIN_DIR:-}" ] && ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
        carrier_apt_install postgresql postgresql-client
    fi
    command -v redis-server >/dev/null || carrier_apt_install redis-server redis-tools
    CARRIER_TANSU_BIN="$(carrier_tansu_bin)" || return 1
    export CARRIER_TANSU_BIN
}

# carrier_start_tansu DIR PORT — durable (sqlite) single broker on 127.0.0.1:PORT.
carrier_start_tansu() {
    local dir="$1" port="$2" bin pid
    mkdir -p "$dir"
    dir="$(cd "$dir" && pwd)"
    local pidfile="$dir/tansu.pid" log="$dir/tansu.log"

    if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null && carrier_port_open "$port"; then
        carrier_log "Tansu already running (pid $(cat "$pidfile")) on 127.0.0.1:$port"
        return 0
    fi
    if carrier_port_open "$port"; then
        carrier_die "port $port is already in use by something other than $pidfile"
        return 1
    fi

    bin="$(carrier_tansu_bin)" || return 1
    carrier_log "starting Tansu on 127.0.0.1:$port (data $dir/tansu.db, log $log)"
    # Tansu resolves sqlite://NAME relative to its working directory, hence the cd.
    # setsid: own session, so the broker outlives the calling job / terminal.
    (
        cd "$dir"
        # NO_COLOR: plain log file.  Default log level is ERROR only.
        NO_COLOR=1 RUST_LOG="${RUST_LOG:-warn}" setsid "$bin" broker \
            --listener-url "tcp://127.0.0.1:$port" \
            --advertised-listener-url "tcp://127.0.0.1:$port" \
            --storage-engine "sqlite://tansu.db" \
            </dev/null >>"$log" 2>&1 &
        echo $! >"$pidfile"
    )
    pid="$(cat "$pidfile")"

    local i
    for i in $(seq 1 60); do
        carrier_port_open "$port" && { carrier_log "Tansu up (pid $pid)"; return 0; }
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.5
    done
    echo "carrier: ERROR: Tansu did not start on port $port; last log lines:" >&2
    tail -n 30 "$log" >&2 || true
    return 1
}

# carrier_create_topics BROKER_PORT [PREFIX] — idempotent.
# Never delete topics on Tansu 0.6 sqlite: DeleteTopics of ONE topic drops ALL
# topics of the cluster. Tests should use their own PREFIX instead.
carrier_create_topics() {
    local port="$1" prefix="${2-carrier.}" bin existing out spec name parts
    local broker="tcp://127.0.0.1:$port"
    bin="$(carrier_tansu_bin)" || return 1
    # `topic list` prints JSON metadata; checking first keeps "already exists"
    # ERROR lines out of the broker log.
    existing="$(NO_COLOR=1 "$bin" topic list --broker "$broker" 2>&1)" ||
        { echo "$existing" >&2; carrier_die "cannot list topics on $broker"; return 1; }
    # NOTE: ${prefix}deliveries keeps its partition count forever: records are
    # partitioned by key, so changing the count after creation re-maps keys to
    # other partitions and breaks per-key ordering. Never alter or re-create it.
    # CARRIER_PARTITIONS overrides the counts (name:count pairs).
    for spec in ${CARRIER_PARTITIONS:-inbound:16 deliveries:64 log-events:16 notifications:4}; do
        name="${prefix}${spec%%:*}" parts="${spec##*:}"
        if grep -qF "\"name\":\"$name\"" <<<"$existing"; then
            carrier_log "topic $name already exists"
        elif out="$(NO_COLOR=1 "$bin" topic create --broker "$broker" \
            --partitions "$parts" "$name" 2>&1)"; then
            carrier_log "created topic $name ($parts partitions)"
        elif grep -q "already exists" <<<"$out"; then # lost a race with another caller
            carrier_log "topic $name already exists"
        else
            echo "$out" >&2
            carrier_die "could not create topic $name"
            return 1
        fi
    done
}

# carrier_stop_pidfile FILE — TERM, wait up to 10s, then KILL.
carrier_stop_pidfile() {
    local file="$1" pid i
    [ -f "$file" ] || return 0
    pid="$(cat "$file")"
    if kill -0 "$pid" 2>/dev/null; then
        carrier_log "stopping pid $pid ($file)"
        kill -TERM "$pid" 2>/dev/null || true
        for i in $(seq 1 20); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.5
        done
        if kill -0 "$pid" 2>/dev/null; then
            carrier_log "pid $pid ignored TERM; sending KILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    rm -f "$file"
}
