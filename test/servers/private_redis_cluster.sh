#!/bin/bash
# A private Redis Cluster for tests that kill its nodes (the shared one on
# 7000-7005 of scripts/redis_topologies.sh serves other suites meanwhile):
# N masters, no replicas, on loopback ports PORT..PORT+N-1 (cluster bus on
# port + 10000), each node's files (nodes.conf, its append-only file) in
# DIR/PORT.
#
#   private_redis_cluster.sh start DIR PORT N [ANNOUNCE]
#       starts every node that does not answer; a node that was in the
#       cluster comes back with its nodes.conf and its data. The first
#       start makes the cluster (slots split evenly) and waits until every
#       node is in state ok; a restart only waits for the node to answer.
#       With ANNOUNCE, node PORT+i tells clients (CLUSTER SLOTS, MOVED) it
#       is at ANNOUNCE+i: where a test's proxy in front of it listens.
#   private_redis_cluster.sh kill DIR PORT    kill -9 of one node
#   private_redis_cluster.sh stop DIR         kill -9 of every node
#
# Every write is fsynced to the append-only file before it is acknowledged
# (appendfsync always), so an acknowledged write survives kill -9.
set -eu
cmd=$1 dir=$2

cli() { local port=$1; shift; timeout 5 redis-cli -h 127.0.0.1 -p "$port" "$@" 2>/dev/null; }
up() { [ "$(cli "$1" ping)" = PONG ]; }
wait_until() { # TRIES (of 0.1 s) COMMAND...
    local tries=$1; shift
    for _ in $(seq "$tries"); do "$@" && return 0; sleep 0.1; done
    return 1
}

kill9() { # PIDFILE
    local pid
    pid=$(cat "$1" 2>/dev/null) || return 0
    kill -9 "$pid" 2>/dev/null || true
    wait_until 100 eval "! kill -0 $pid 2>/dev/null"
}

start_node() { # PORT ANNOUNCED
    local port=$1 announced=$2 d=$dir/$1
    mkdir -p "$d"
    local extra=()
    [ -z "$announced" ] || extra=(--cluster-announce-ip 127.0.0.1 --cluster-announce-port "$announced"
                                  --cluster-announce-bus-port $((port + 10000)))
    # A short node timeout: the others see a killed node fail within seconds.
    redis-server --port "$port" --bind 127.0.0.1 --dir "$d" --daemonize yes \
        --pidfile "$d/redis.pid" --logfile "$d/redis.log" --save '' \
        --appendonly yes --appendfsync always \
        --cluster-enabled yes --cluster-config-file nodes.conf --cluster-node-timeout 2000 \
        "${extra[@]}"
    wait_until 100 up "$port" || { echo "redis-server on $port does not answer; see $d/redis.log" >&2; exit 1; }
}

known_nodes() { cli "$1" cluster info | sed -n 's/^cluster_known_nodes:\([0-9]*\).*/\1/p'; }
state_ok() { cli "$1" cluster info | grep -q '^cluster_state:ok'; }
all_ok() { # PORTS...
    local p
    for p in "$@"; do
        state_ok "$p" && [ "$(known_nodes "$p")" = $# ] || return 1
    done
}

# Made by hand rather than `redis-cli --cluster create`: nodes that
# announce another port must be met on their own one.
make_cluster() { # PORTS...
    local n=$# i=0 p first=$1
    for p in "$@"; do
        cli "$p" cluster addslotsrange $((16384 * i / n)) $((16384 * (i + 1) / n - 1)) >/dev/null
        [ "$p" = "$first" ] || cli "$first" cluster meet 127.0.0.1 "$p" $((p + 10000)) >/dev/null
        i=$((i + 1))
    done
    wait_until 300 all_ok "$@" || { echo "the private cluster on $* is not in state ok" >&2; exit 1; }
}

case $cmd in
    start)
        base=$3 n=$4 announce=${5:-}
        ports=()
        for i in $(seq 0 $((n - 1))); do
            port=$((base + i))
            ports+=("$port")
            up "$port" || start_node "$port" "${announce:+$((announce + i))}"
        done
        [ "$(known_nodes "$base")" != 1 ] || make_cluster "${ports[@]}"
        ;;
    kill) kill9 "$dir/$3/redis.pid" ;;
    stop) for f in "$dir"/*/redis.pid; do [ -e "$f" ] && kill9 "$f"; done; true ;;
    *) echo "usage: $0 start DIR PORT N [ANNOUNCE] | kill DIR PORT | stop DIR" >&2; exit 2 ;;
esac
