# Sourced by .ci/run: a throwaway PostgreSQL server for tests/test_sweep.py's many-machine test.
# Installs Debian's postgresql package when no server binaries are found (and apt-get can),
# creates a cluster in a temporary folder on a free local port, exports its URL as
# CORMULT_TEST_POSTGRES_URL and stops and removes it when the calling shell exits. Any failure
# only prints a warning: the test then says why it is skipped.

_pg_warn() { echo "postgres.sh: $*; the PostgreSQL sweep test will be skipped" >&2; }

_pg_bin() {
    local found
    found="$(command -v pg_ctl || ls /usr/lib/postgresql/*/bin/pg_ctl 2>/dev/null | sort -V | tail -n 1 || true)"
    [ -n "$found" ] && dirname "$(readlink -f "$found")"
}

_pg_start() {
    local bin dir port run=()
    bin="$(_pg_bin || true)"
    if [ -z "$bin" ] && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
        echo "postgres.sh: installing Debian's postgresql package" >&2
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y -q postgresql >/dev/null 2>&1 \
            || { apt-get update -q && apt-get install -y -q postgresql; } >/dev/null 2>&1 \
            || true
        bin="$(_pg_bin || true)"
    fi
    [ -n "$bin" ] || { _pg_warn "no PostgreSQL server binaries"; return 0; }
    dir="$(mktemp -d /tmp/cormult-ci-pg-XXXXXX)"
    if [ "$(id -u)" = 0 ]; then  # the server refuses to run as root
        chown postgres "$dir" 2>/dev/null || { _pg_warn "no postgres user"; return 0; }
        run=(runuser -u postgres --)
    fi
    port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
    "${run[@]}" "$bin/initdb" -D "$dir/data" -A trust -U postgres >"$dir/initdb.log" 2>&1 \
        || { _pg_warn "initdb failed ($(tail -n 1 "$dir/initdb.log"))"; return 0; }
    "${run[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w \
        -o "-p $port -k $dir -h 127.0.0.1" start >/dev/null \
        || { _pg_warn "the server did not start ($(tail -n 1 "$dir/server.log"))"; return 0; }
    export CORMULT_TEST_POSTGRES_URL="postgresql+psycopg://postgres@127.0.0.1:$port/postgres"
    _PG_STOP=("${run[@]}" "$bin/pg_ctl" -D "$dir/data" -m fast stop)
    _PG_DIR="$dir"
    trap '"${_PG_STOP[@]}" >/dev/null 2>&1 || true; rm -rf "$_PG_DIR"' EXIT
    echo "postgres.sh: PostgreSQL on 127.0.0.1:$port for the sweep tests" >&2
}

_pg_start
