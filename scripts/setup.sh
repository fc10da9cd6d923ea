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
for p in erlang-dev erlang-common-test erlang-eunit erlang-inets erlang-ssl erlang-crypto \
         erlang-public-key erlang-tools erlang-runtime-tools erlang-syntax-tools; do
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
log "ready"
