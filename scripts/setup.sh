#!/usr/bin/env bash
# Installs and starts what the tests and the demo need, on Debian 12.
#
# Each server is started the way its package starts it, minus systemd (which
# containers, chroots and CI images lack): as its own user, with its runtime
# directory and its own log file. Each is checked by connecting to it; on
# failure the server's last log lines are printed.
#
# Idempotent: whatever already answers on its port is reused. A run that had
# nothing to start or change ends with "[setup] ready: nothing to do".
#
#   scripts/setup.sh                 install what is missing, then start
#   scripts/setup.sh --install-only  only install (e.g. before going offline)
set -euo pipefail

log() { printf '[setup] %s\n' "$*"; }
changed=0
act() { changed=1; log "$*"; }

# fail MESSAGE [LOGFILE]: say what failed and show the server's own words.
fail() {
  printf '[setup] %s\n' "$1" >&2
  if [ -n "${2:-}" ] && [ -r "$2" ]; then
    printf '[setup] last lines of %s:\n' "$2" >&2
    tail -n 15 "$2" | sed 's/^/    /' >&2
  fi
  exit 1
}

# wait_for SECONDS PID COMMAND...: retry COMMAND every 0.2 s while PID (a
# server we started, or - for none) is alive.
wait_for() {
  local tries=$(($1 * 5)) pid=$2; shift 2
  for _ in $(seq "$tries"); do
    "$@" >/dev/null 2>&1 && return 0
    [ "$pid" = - ] || kill -0 "$pid" 2>/dev/null || return 1
    sleep 0.2
  done
  return 1
}

# Probes give up after 5 s: a port that accepts and never answers is a failure.
export PGCONNECT_TIMEOUT=5

need_pkgs=()
have() { command -v "$1" >/dev/null 2>&1; }
have erl || need_pkgs+=(erlang-base)
have rebar3 || need_pkgs+=(rebar3)
have redis-server || need_pkgs+=(redis-server)
have redis-cli || need_pkgs+=(redis-tools)
have openssl || need_pkgs+=(openssl)
[ -x /usr/bin/python3 ] && dpkg -s python3-venv >/dev/null 2>&1 || need_pkgs+=(python3 python3-venv)
have psql && have pg_lsclusters || need_pkgs+=(postgresql postgresql-client)
have mariadb && [ -x /usr/sbin/mariadbd ] || need_pkgs+=(mariadb-server mariadb-client)
# ODBC: the driver manager, its headers (the odbc cargo feature links
# libodbc) and the PostgreSQL and MariaDB drivers.
for p in unixodbc unixodbc-dev odbc-postgresql odbc-mariadb; do
  dpkg -s "$p" >/dev/null 2>&1 || need_pkgs+=("$p")
done
[ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] || need_pkgs+=(rabbitmq-server)
[ -x /usr/sbin/slapd ] || need_pkgs+=(slapd)
have ldapsearch || need_pkgs+=(ldap-utils)
for p in erlang-dev erlang-common-test erlang-eunit erlang-inets erlang-ssl erlang-crypto \
         erlang-public-key erlang-tools erlang-dialyzer erlang-runtime-tools erlang-syntax-tools erlang-eldap; do
  dpkg -s "$p" >/dev/null 2>&1 || need_pkgs+=("$p")
done
if [ ${#need_pkgs[@]} -gt 0 ]; then
  act "installing ${need_pkgs[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # Another setup.sh (or apt) may hold the dpkg lock: wait for it.
  apt_opts=(-qq -o DPkg::Lock::Timeout=600)
  apt-get "${apt_opts[@]}" update
  apt-get "${apt_opts[@]}" install -y "${need_pkgs[@]}" >/dev/null
fi
# promtool (metrics_SUITE validates the Prometheus endpoint's text with it):
# Debian's prometheus package without its recommends (node exporter, ...).
if ! have promtool; then
  act "installing prometheus (for promtool)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get -qq -o DPkg::Lock::Timeout=600 update
  apt-get -qq -o DPkg::Lock::Timeout=600 install -y --no-install-recommends prometheus >/dev/null
fi

# --- Python virtualenv with the official Elasticsearch and Cassandra clients ----
# No Elasticsearch runs here: elastic_SUITE checks its test server with this
# independent client (8.x, as the server presents itself). Outside the clone,
# so a fresh checkout reuses it; Debian's own Python, not a user's pyenv.
# Installed like the packages, so --install-only (before going offline) makes it.
venv=${MN_VENV:-/var/cache/mongoose_native/venv}
es_client='elasticsearch>=8,<9'
if "$venv/bin/python" -c 'import elasticsearch, sys; sys.exit(elasticsearch.__versionstr__[0] != "8")' 2>/dev/null; then
  log "Python virtualenv $venv has the elasticsearch 8 client: reusing it"
else
  act "creating the Python virtualenv $venv with $es_client"
  mkdir -p "$(dirname "$venv")"
  /usr/bin/python3 -m venv "$venv" || fail "python3 -m venv $venv failed"
  "$venv/bin/pip" install -q "$es_client" || fail "pip could not install $es_client into $venv"
fi
# The DataStax Python driver checks cassandra_SUITE's CQL test server the
# same way. pip takes its binary wheel; should it build from source, the
# optional C extensions are left out, so no compiler or libev is needed.
cql_client='cassandra-driver>=3.29,<4'
if "$venv/bin/python" -c 'import cassandra.cluster' 2>/dev/null; then
  log "Python virtualenv $venv has the DataStax cassandra driver: reusing it"
else
  act "installing $cql_client into $venv"
  CASS_DRIVER_NO_EXTENSIONS=1 "$venv/bin/pip" install -q "$cql_client" \
    || fail "pip could not install $cql_client into $venv"
fi

# Basho's Python client for Riak: riak_SUITE checks its Riak test server with
# it (no Riak runs here). Pure Python (its protobuf 2.5 has no C extension);
# riak_client_check.py restores the collections aliases it needs on 3.11.
riak_client='riak==2.7.0'
if "$venv/bin/python" -c 'import importlib.metadata as m, sys; sys.exit(m.version("riak") != "2.7.0")' 2>/dev/null; then
  log "Python virtualenv $venv has the riak 2.7.0 client: reusing it"
else
  act "installing $riak_client into the Python virtualenv $venv"
  "$venv/bin/pip" install -q "$riak_client" || fail "pip could not install $riak_client into $venv"
fi

[ "${1:-}" = --install-only ] && { log "packages installed"; exit 0; }

have cargo || fail "cargo not found: install a Rust toolchain >= 1.85 (rustup) first"

# --- Redis on 127.0.0.1:6379 -------------------------------------------------
# As the package's init script does: user redis, its config, /run/redis.
# Nothing is saved to disk: the suites flush their databases anyway.
redis_ok() { [ "$(timeout 5 redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null)" = PONG ]; }
if redis_ok; then
  log "Redis answers on 127.0.0.1:6379: reusing it"
else
  redis_log=/var/log/redis/redis-server.log
  act "starting redis-server on 127.0.0.1:6379 as user redis"
  install -d -o redis -g redis /run/redis
  runuser -u redis -- redis-server /etc/redis/redis.conf --daemonize yes \
    --bind 127.0.0.1 --port 6379 --save '' --appendonly no \
    --pidfile /run/redis/redis-server.pid --logfile "$redis_log" ||
    fail "redis-server did not start" "$redis_log"
  wait_for 10 - redis_ok || fail "Redis does not answer on 127.0.0.1:6379" "$redis_log"
fi

# --- Redis Cluster (7000-7005) and a sentinel group (7100-7101, 26400-26402) --
# For redis_cluster_SUITE; the Redis on 6379 above is not touched.
topologies=$(bash "$(dirname "$0")/redis_topologies.sh") ||
  fail "could not start the Redis Cluster or the sentinel group"
printf '%s\n' "$topologies"
case "$topologies" in *"nothing to do"*) ;; *) changed=1 ;; esac

# --- PostgreSQL on 127.0.0.1:5432: user postgres, trust on loopback, database test
pg_ok() { psql -h 127.0.0.1 -p 5432 -U postgres -d test -tAc 'SELECT 1' >/dev/null 2>&1; }
# As postgres, from a directory it may enter (not the caller's).
as_postgres() { (cd / && runuser -u postgres -- "$@"); }
if pg_ok; then
  log "PostgreSQL answers on 127.0.0.1:5432: reusing it"
else
  if ! pg_isready -q -h 127.0.0.1 -p 5432; then
    # The package made its cluster on 5433 or later if 5432 was busy when it
    # was installed: then the tests get a cluster of their own on 5432.
    log "PostgreSQL clusters: $(pg_lsclusters -h | awk '{printf "%s/%s on %s (%s) ", $1, $2, $3, $4}')"
    ver='' name=''
    read -r ver name < <(pg_lsclusters -h | awk '$3 == 5432 {print $1, $2; exit}') || true
    if [ -z "${ver:-}" ]; then
      ver=$(ls /usr/lib/postgresql | sort -V | tail -1) name=mongoose_native
      act "no cluster is on port 5432: creating cluster $ver/$name there for the tests"
      pg_createcluster --port 5432 "$ver" "$name" >/dev/null
    fi
    pg_log=$(pg_lsclusters -h "$ver" "$name" | awk '{print $7}')
    act "starting PostgreSQL cluster $ver/$name on port 5432"
    pg_ctlcluster --skip-systemctl-redirect "$ver" "$name" start ||
      fail "PostgreSQL cluster $ver/$name did not start" "$pg_log"
    wait_for 10 - pg_isready -q -h 127.0.0.1 -p 5432 ||
      fail "PostgreSQL does not answer on 127.0.0.1:5432" "$pg_log"
  fi
  if ! psql -h 127.0.0.1 -p 5432 -U postgres -d postgres -tAc 'SELECT 1' >/dev/null 2>&1; then
    act "trusting loopback connections in PostgreSQL (a test server)"
    hba=$(as_postgres psql -p 5432 -tAc 'SHOW hba_file')
    sed -i '1i host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust' "$hba"
    as_postgres psql -p 5432 -tAc 'SELECT pg_reload_conf()' >/dev/null
  fi
  if ! psql -h 127.0.0.1 -p 5432 -U postgres -d postgres -tAc \
       "SELECT 1 FROM pg_database WHERE datname = 'test'" | grep -q 1; then
    act "creating PostgreSQL database test"
    psql -h 127.0.0.1 -p 5432 -U postgres -d postgres -c 'CREATE DATABASE test' >/dev/null
  fi
  pg_ok || fail "PostgreSQL is not usable as postgres@127.0.0.1:5432/test"
fi
# Three roles must log in with a password (every other loopback login is
# trusted), so the tests drive PostgreSQL's password exchanges: mn_scram by
# SCRAM-SHA-256, mn_md5 by MD5, mn_clear in clear text. The tests create
# the roles.
pg_su() { psql -h 127.0.0.1 -p 5432 -U postgres -d postgres -tAc "$1"; }
hba_added=''
for rule in 'mn_scram scram-sha-256' 'mn_md5 md5' 'mn_clear password'; do
  read -r role method <<<"$rule"
  if ! pg_su "SELECT 1 FROM pg_hba_file_rules WHERE '$role' = ANY(user_name)" | grep -q 1; then
    act "asking PostgreSQL for the password of role $role ($method)"
    sed -i "1i host all $role 127.0.0.1/32 $method" "$(pg_su 'SHOW hba_file')"
    hba_added=yes
  fi
done
[ -z "$hba_added" ] || pg_su 'SELECT pg_reload_conf()' >/dev/null

# --- MariaDB on 127.0.0.1:3306: root with an empty password, database test ----
my_ok() { mariadb --connect-timeout=5 -h 127.0.0.1 -P 3306 -u root -e 'SELECT 1' test >/dev/null 2>&1; }
# Alive, even if it refuses us (ping succeeds on "access denied").
my_up() { mariadb-admin --connect-timeout=5 --protocol=tcp -h 127.0.0.1 -P 3306 ping >/dev/null 2>&1; }
my_pidfile=/run/mysqld/mysqld.pid my_log=/var/log/mysql/error.log
# The pid file, not the process name: another container's mariadbd may be visible.
my_running() {
  local pid
  pid=$(cat "$my_pidfile" 2>/dev/null) && kill -0 "$pid" 2>/dev/null &&
    [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = mariadbd ]
}
if my_ok; then
  log "MariaDB answers on 127.0.0.1:3306: reusing it"
else
  if ! my_up; then
    if my_running; then
      my_pid=$(cat "$my_pidfile")
      log "MariaDB (pid $my_pid) is running but not answering yet: waiting"
    else
      # As the package does: user mysql, runtime directory /run/mysqld.
      install -d -o mysql -g mysql -m 755 /run/mysqld
      install -d -o mysql -g adm -m 2750 /var/log/mysql
      if [ ! -d /var/lib/mysql/mysql ]; then
        act "initialising MariaDB's data directory /var/lib/mysql"
        mariadb-install-db --user=mysql --datadir=/var/lib/mysql >>"$my_log" 2>&1 ||
          fail "mariadb-install-db failed" "$my_log"
      fi
      act "starting MariaDB on 127.0.0.1:3306 as user mysql"
      setsid /usr/sbin/mariadbd --user=mysql --pid-file="$my_pidfile" --log-error="$my_log" \
        --bind-address=127.0.0.1 --port=3306 </dev/null >/dev/null 2>&1 &
      my_pid=$!
    fi
    wait_for 60 "$my_pid" my_up || fail "MariaDB does not answer on 127.0.0.1:3306" "$my_log"
  fi
  if ! my_ok; then
    act "letting root in over TCP without a password in MariaDB (a test server)"
    mariadb -u root -e "ALTER USER 'root'@'localhost' IDENTIFIED VIA mysql_native_password USING PASSWORD('') OR unix_socket;
      CREATE USER IF NOT EXISTS 'root'@'127.0.0.1' IDENTIFIED BY '';
      GRANT ALL ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;
      CREATE DATABASE IF NOT EXISTS test;" ||
      fail "could not open MariaDB to root@127.0.0.1 (mariadb -u root over the socket)" "$my_log"
  fi
  my_ok || fail "MariaDB is not usable as root@127.0.0.1:3306/test" "$my_log"
fi

# --- ODBC data sources for the two servers above, in /etc/odbc.ini ----------
# odbcinst adds a DSN only if it is missing; an existing one is left as is.
odbc_dsn() {
  local name=$1; shift
  odbcinst -q -s -n "$name" >/dev/null 2>&1 && return 0
  act "registering ODBC data source $name"
  { printf '[%s]\n' "$name"; printf '%s\n' "$@"; } | odbcinst -i -s -l -r >/dev/null || fail "odbcinst could not register $name"
}
odbc_dsn mongoose_pgsql 'Driver=PostgreSQL Unicode' Servername=127.0.0.1 Port=5432 \
  Database=test Username=postgres
odbc_dsn mongoose_mysql 'Driver=MariaDB Unicode' Server=127.0.0.1 Port=3306 Database=test User=root

# --- RabbitMQ on 127.0.0.1:5672: guest/guest (allowed from loopback) ---------
# Answers an AMQP 0-9-1 protocol header with a connection.start frame (type 1,
# channel 0).
amqp_ok() {
  timeout 5 bash -c 'exec 3<>/dev/tcp/127.0.0.1/5672; printf "AMQP\0\0\11\1" >&3; head -c 3 <&3' \
    2>/dev/null | od -An -tx1 | grep -q '01 00 00'
}
rabbit_log=/var/log/rabbitmq/rabbitmq-server.log
if amqp_ok; then
  log "RabbitMQ answers on 127.0.0.1:5672: reusing it"
else
  # As the package's systemd unit does: user rabbitmq in /var/lib/rabbitmq.
  act "starting rabbitmq-server on 127.0.0.1:5672 as user rabbitmq"
  install -d -o rabbitmq -g rabbitmq /var/log/rabbitmq /var/lib/rabbitmq
  (cd /var/lib/rabbitmq && HOME=/var/lib/rabbitmq setsid runuser -u rabbitmq -- \
     /usr/lib/rabbitmq/bin/rabbitmq-server </dev/null >>"$rabbit_log" 2>&1 &)
  wait_for 90 - amqp_ok || fail "RabbitMQ does not answer on 127.0.0.1:5672" "$rabbit_log"
fi

# --- OpenLDAP on 127.0.0.1:3389 (LDAPS 3636) -----------------------------------
# A throwaway slapd whose configuration, data and CA live in _build/slapd
# (see scripts/slapd.sh for its directory tree, root DN and users).
slapd_dir="$(cd "$(dirname "$0")/.." && pwd)/_build/slapd"
slapd_ok() {
  timeout 5 ldapsearch -x -H ldap://127.0.0.1:3389 -D cn=admin,dc=example,dc=com -w secret \
    -b dc=example,dc=com -s base dn >/dev/null 2>&1
}
if slapd_ok; then
  log "slapd answers on 127.0.0.1:3389: reusing it"
else
  act "starting slapd on 127.0.0.1:3389 (ldaps 3636) from $slapd_dir"
  bash "$(dirname "$0")/slapd.sh" start "$slapd_dir" 3389 3636 >/dev/null ||
    fail "slapd did not start" "$slapd_dir/slapd.log"
fi

if [ "$changed" = 0 ]; then log "ready: nothing to do"; else log "ready"; fi
