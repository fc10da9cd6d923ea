#!/usr/bin/env bash
# Starts, on loopback, the Redis topologies redis_cluster_SUITE needs, from
# Debian's redis-server package (a sentinel is `redis-server --sentinel`),
# without systemd, as the invoking user, with their files under
# _build/redis/:
#
#   a Redis Cluster of three masters with one replica each, ports 7000-7005
#   a master (7100) and its replica (7101) watched by three sentinels
#   (26400-26402) under the name "mymaster"
#
# Idempotent: what answers is reused; a node that does not is started again
# (a cluster node with its nodes.conf, so it rejoins; a sentinel-group node
# as a replica of the master the sentinels name). scripts/setup.sh runs this,
# and so does the suite before its tests. Prints "nothing to do" when all
# was up.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
base=${MN_REDIS_DIR:-$root/_build/redis}
CLUSTER_PORTS=(7000 7001 7002 7003 7004 7005)
SENTINEL_DATA_PORTS=(7100 7101)
SENTINEL_PORTS=(26400 26401 26402)
MASTER_NAME=mymaster

log() { printf '[redis] %s\n' "$*"; }
changed=0
act() { changed=1; log "$*"; }
fail() {
  printf '[redis] %s\n' "$1" >&2
  if [ -n "${2:-}" ] && [ -r "$2" ]; then tail -n 15 "$2" | sed 's/^/    /' >&2; fi
  exit 1
}
cli() { local port=$1; shift; timeout 5 redis-cli -h 127.0.0.1 -p "$port" "$@" 2>/dev/null; }
up() { [ "$(cli "$1" ping)" = PONG ]; }
wait_until() { # SECONDS COMMAND...
  local tries=$(($1 * 5)); shift
  for _ in $(seq "$tries"); do "$@" && return 0; sleep 0.2; done
  return 1
}

# server PORT DIR EXTRA...: a redis-server daemon with nothing saved to disk.
server() {
  local port=$1 dir=$2; shift 2
  mkdir -p "$dir"
  redis-server --port "$port" --bind 127.0.0.1 --dir "$dir" --daemonize yes \
    --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" --save '' --appendonly no "$@" ||
    fail "redis-server on $port did not start" "$dir/redis.log"
  wait_until 10 up "$port" || fail "redis-server on $port does not answer" "$dir/redis.log"
}

# --- the cluster -------------------------------------------------------------
for port in "${CLUSTER_PORTS[@]}"; do
  up "$port" && continue
  act "starting cluster node 127.0.0.1:$port"
  # A short node timeout: a killed master's replica takes over in seconds.
  server "$port" "$base/cluster/$port" --cluster-enabled yes \
    --cluster-config-file nodes.conf --cluster-node-timeout 2000
done
cluster_ok() { cli 7000 cluster info | grep -q '^cluster_state:ok'; }
known_nodes() { cli 7000 cluster info | sed -n 's/^cluster_known_nodes:\([0-9]*\).*/\1/p'; }
if [ "$(known_nodes)" = 1 ]; then
  act "creating the cluster: 3 masters, 1 replica each"
  redis-cli --cluster create $(printf '127.0.0.1:%s ' "${CLUSTER_PORTS[@]}") \
    --cluster-replicas 1 --cluster-yes >"$base/cluster/create.log" 2>&1 ||
    fail "redis-cli --cluster create failed" "$base/cluster/create.log"
fi
wait_until 30 cluster_ok || fail "the cluster on 7000-7005 is not in state ok: $(cli 7000 cluster info | head -1);
  to start afresh, stop its nodes and remove $base/cluster"
# Every node must agree, or a client reads a stale slot map from one of them.
all_agree() {
  local port
  for port in "${CLUSTER_PORTS[@]}"; do
    cli "$port" cluster info | grep -q '^cluster_state:ok' || return 1
    [ "$(cli "$port" cluster info | sed -n 's/^cluster_known_nodes:\([0-9]*\).*/\1/p')" = 6 ] || return 1
  done
}
wait_until 30 all_agree || fail "the cluster's nodes do not agree on its state"

# --- the sentinel group --------------------------------------------------------
sentinel_master_port() {
  local port
  for port in "${SENTINEL_PORTS[@]}"; do
    if up "$port"; then
      cli "$port" sentinel get-master-addr-by-name "$MASTER_NAME" | sed -n 2p
      return 0
    fi
  done
  echo "${SENTINEL_DATA_PORTS[0]}"
}
master=$(sentinel_master_port)
for port in "${SENTINEL_DATA_PORTS[@]}"; do
  up "$port" && continue
  if [ "$port" = "$master" ]; then
    act "starting the sentinel group's master 127.0.0.1:$port"
    server "$port" "$base/sentinel/$port"
  else
    act "starting the sentinel group's replica 127.0.0.1:$port (of $master)"
    server "$port" "$base/sentinel/$port" --replicaof 127.0.0.1 "$master"
  fi
done
for port in "${SENTINEL_PORTS[@]}"; do
  up "$port" && continue
  act "starting sentinel 127.0.0.1:$port watching $MASTER_NAME at 127.0.0.1:$master"
  dir=$base/sentinel/s$port
  mkdir -p "$dir"
  # A sentinel rewrites its file with what it learns: a fresh one each start.
  cat >"$dir/sentinel.conf" <<EOF
port $port
bind 127.0.0.1
daemonize yes
pidfile $dir/sentinel.pid
logfile $dir/sentinel.log
dir $dir
sentinel monitor $MASTER_NAME 127.0.0.1 $master 2
sentinel down-after-milliseconds $MASTER_NAME 2000
sentinel failover-timeout $MASTER_NAME 10000
sentinel parallel-syncs $MASTER_NAME 1
EOF
  redis-server "$dir/sentinel.conf" --sentinel || fail "sentinel on $port did not start" "$dir/sentinel.log"
  wait_until 10 up "$port" || fail "sentinel on $port does not answer" "$dir/sentinel.log"
done
quorum() { cli "${SENTINEL_PORTS[0]}" sentinel ckquorum "$MASTER_NAME" | grep -q '^OK'; }
wait_until 30 quorum || fail "the sentinels do not reach their quorum: $(cli "${SENTINEL_PORTS[0]}" sentinel ckquorum "$MASTER_NAME")"

if [ "$changed" = 0 ]; then log "cluster and sentinel group: nothing to do"; else log "cluster and sentinel group ready"; fi
