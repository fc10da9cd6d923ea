#!/bin/bash
# Private PostgreSQL and MariaDB servers for tests that kill them (the
# shared ones of scripts/setup.sh serve other suites meanwhile):
#   private_db.sh start pgsql|mysql DIR PORT   makes DIR's cluster once, starts it
#   private_db.sh kill  pgsql|mysql DIR        kill -9 of the server and its children
#   private_db.sh stop  pgsql|mysql DIR        stops it (kill -9 too, then waits)
# Both listen on 127.0.0.1:PORT only and let any loopback client in without
# a password (postgres trust; mariadbd --skip-grant-tables), with database
# `test`. Every write is flushed at commit (PostgreSQL's defaults;
# innodb_flush_log_at_trx_commit=1), so a committed row survives kill -9.
set -eu
cmd=$1 kind=$2 dir=$3 port=${4:-}

pid_of() {
    case $kind in
        pgsql) head -1 "$dir/data/postmaster.pid" 2>/dev/null || true ;;
        mysql) cat "$dir/pid" 2>/dev/null || true ;;
    esac
}

kill9() {
    local pid
    pid=$(pid_of)
    [ -n "$pid" ] || return 0
    # The server and the processes it forked (PostgreSQL's backends).
    kill -9 $(ps -o pid= --ppid "$pid" 2>/dev/null) "$pid" 2>/dev/null || true
    for _ in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.05
    done
    # PostgreSQL's backends leave once they see their postmaster gone.
    for _ in $(seq 100); do
        pgrep -f -- "$dir/" >/dev/null 2>&1 || break
        sleep 0.05
    done
}

start_pgsql() {
    local bin
    bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
    if [ ! -f "$dir/data/PG_VERSION" ]; then
        mkdir -p "$dir" && chown postgres "$dir"
        runuser -u postgres -- "$bin/initdb" -D "$dir/data" -A trust -U postgres >"$dir/initdb.log" 2>&1
    fi
    runuser -u postgres -- "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
        -o "-p $port -k /tmp -c listen_addresses=127.0.0.1" start >/dev/null
    psql -h 127.0.0.1 -p "$port" -U postgres -tAc "SELECT 1 FROM pg_database WHERE datname = 'test'" \
        | grep -q 1 || createdb -h 127.0.0.1 -p "$port" -U postgres test
}

start_mysql() {
    if [ ! -d "$dir/data/mysql" ]; then
        mkdir -p "$dir" && chown mysql "$dir"
        mariadb-install-db --datadir="$dir/data" --user=mysql --skip-test-db \
            --auth-root-authentication-method=normal >"$dir/install.log" 2>&1
    fi
    setsid mariadbd --no-defaults --datadir="$dir/data" --user=mysql --port="$port" \
        --bind-address=127.0.0.1 --socket="/tmp/mn_private_mysql_$port.sock" --pid-file="$dir/pid" \
        --log-error="$dir/server.log" --skip-grant-tables \
        --innodb-flush-log-at-trx-commit=1 </dev/null >/dev/null 2>&1 &
    for _ in $(seq 300); do
        mariadb -h 127.0.0.1 -P "$port" -u root -e "CREATE DATABASE IF NOT EXISTS test" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "mariadbd did not start; see $dir/server.log" >&2
    return 1
}

case $cmd in
    start) start_$kind ;;
    kill|stop) kill9 ;;
    *) echo "usage: $0 start|kill|stop pgsql|mysql DIR [PORT]" >&2; exit 2 ;;
esac
