#!/bin/sh
# Builds the NIF in release mode and installs it as priv/mongoose_native_nif.so.
# CARGO_TARGET_DIR, when set, keeps the build cache outside the checkout.
set -eu
cd "$(dirname "$0")/.."
cargo build --release --quiet -p mongoose_native_nif
target="${CARGO_TARGET_DIR:-target}"
mkdir -p priv
cp "$target/release/libmongoose_native_nif.so" priv/mongoose_native_nif.so.tmp
mv priv/mongoose_native_nif.so.tmp priv/mongoose_native_nif.so
