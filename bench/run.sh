#!/usr/bin/env bash
# Runs every benchmark and prints its table. Timings never fail anything.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh >/dev/null
rebar3 compile >/dev/null
# The PostgreSQL client alone, for rdbms_bench's ceiling rows; built where
# scripts/build_nif.sh builds the NIF.
target="${CARGO_TARGET_DIR:-target}"
cargo build --release --quiet --manifest-path bench/pg_ceiling/Cargo.toml --target-dir "$target"
PG_CEILING="$(cd "$target" && pwd)/release/pg_ceiling"
export PG_CEILING
mkdir -p _build/bench
erlc -o _build/bench bench/*.erl
# Distributed, for the transport benchmark's second node.
erl -sname "mn_bench_$$" -noshell -pa _build/default/lib/mongoose_native/ebin -pa _build/bench \
    -eval 'bench_all:run(), halt().'
