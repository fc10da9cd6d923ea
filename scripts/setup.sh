#!/usr/bin/env bash
# Installs and starts what the tests and the demo need, on Debian 12.
# Idempotent: reuses whatever is already installed and running.
set -euo pipefail

log() { printf '[setup] %s\n' "$*"; }

need_pkgs=()
have() { command -v "$1" >/dev/null 2>&1; }
have erl || need_pkgs+=(erlang-base)
have rebar3 || need_pkgs+=(rebar3)
have redis-server || need_pkgs+=(redis-server)
have redis-cli || need_pkgs+=(redis-tools)
have openssl || need_pkgs+=(openssl)
have psql || need_pkgs+=(postgresql postgresql-client)
have mariadb || need_pkgs+=(mariadb-server mariadb-client)
for p in erlang-dev erlang-common-test erlang-eunit erlang-inets erlang-ssl erlang-crypto \
         erlang-public-key erlang-tools erlang-dialyzer erlang-runtime-tools erlang-syntax-tools; do
  dpkg -s "$p" >/dev/null 2>&1 || need_pkgs+=("$p")
done
if [ ${#need_pkgs[@]} -gt 0 ]; then
  log "installing ${need_pkgs[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
fi

if ! have cargo; then
  echo "[setup] cargo not found: install a Rust toolchain >= 1.85 (rustup) first" >&2
  exit 1
fi

# Redis on 6379: reuse a running one, or start our own (it keeps nothing on disk).
if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  log "starting redis-server on 127.0.0.1:6379"
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/mongoose_native.log
  for _ in $(seq 50); do redis-cli -p 6379 ping >/dev/null 2>&1 && break; sleep 0.1; done
fi
redis-cli -p 6379 ping >/dev/null || { echo "[setup] Redis did not start" >&2; exit 1; }
# PostgreSQL on 5432: user postgres without a password over TCP, database test.
pg_ok() { psql -h 127.0.0.1 -U postgres -d test -tAc 'SELECT 1' >/dev/null 2>&1; }
if ! pg_ok; then
  if ! pg_isready -h 127.0.0.1 -p 5432 >/dev/null 2>&1; then
    log "starting PostgreSQL"
    version=$(ls /etc/postgresql | sort -V | tail -1)
    pg_ctlcluster --skip-systemctl-redirect "$version" main start
    for _ in $(seq 50); do pg_isready -h 127.0.0.1 -p 5432 >/dev/null 2>&1 && break; sleep 0.2; done
  fi
  if ! psql -h 127.0.0.1 -U postgres -d postgres -tAc 'SELECT 1' >/dev/null 2>&1; then
    log "trusting loopback connections in PostgreSQL (a test server)"
    hba=$(su postgres -c "psql -tAc 'SHOW hba_file'")
    sed -i '1i host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust' "$hba"
    su postgres -c "psql -tAc 'SELECT pg_reload_conf()'" >/dev/null
  fi
  psql -h 127.0.0.1 -U postgres -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = 'test'" \
    | grep -q 1 || psql -h 127.0.0.1 -U postgres -d postgres -c 'CREATE DATABASE test' >/dev/null
fi
pg_ok || { echo "[setup] PostgreSQL is not usable as postgres@127.0.0.1/test" >&2; exit 1; }

# MariaDB on 3306: root with an empty password over TCP, database test.
my_ok() { mariadb -h 127.0.0.1 -P 3306 -u root -e 'SELECT 1' test >/dev/null 2>&1; }
if ! my_ok; then
  if ! mariadb-admin -h 127.0.0.1 -P 3306 ping >/dev/null 2>&1 && ! mariadb-admin ping >/dev/null 2>&1; then
    log "starting MariaDB"
    mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld 2>/dev/null || true
    start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd
    for _ in $(seq 50); do mariadb-admin ping >/dev/null 2>&1 && break; sleep 0.2; done
  fi
  log "letting root in over TCP without a password in MariaDB (a test server)"
  mariadb -u root -e "ALTER USER 'root'@'localhost' IDENTIFIED VIA mysql_native_password USING PASSWORD('') OR unix_socket; CREATE USER IF NOT EXISTS 'root'@'127.0.0.1' IDENTIFIED BY ''; GRANT ALL ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION; CREATE DATABASE IF NOT EXISTS test;" || true
fi
my_ok || { echo "[setup] MariaDB is not usable as root@127.0.0.1/test" >&2; exit 1; }
log "ready"
