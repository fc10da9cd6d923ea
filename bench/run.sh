#!/usr/bin/env bash
# Runs every benchmark and prints its table. Timings never fail anything.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh >/dev/null
rebar3 compile >/dev/null
# The PostgreSQL client alone, for rdbms_bench's ceiling rows.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/cache/mongoose_native/target}"
cargo build --release --quiet --manifest-path bench/pg_ceiling/Cargo.toml
export PG_CEILING="$CARGO_TARGET_DIR/release/pg_ceiling"
mkdir -p _build/bench
erlc -o _build/bench bench/*.erl
# Distributed, for the transport benchmark's second node.
erl -sname "mn_bench_$$" -noshell -pa _build/default/lib/mongoose_native/ebin -pa _build/bench \
    -eval 'bench_all:run(), halt().'
