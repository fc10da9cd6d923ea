#!/bin/bash
# `make reliability`: the reliability suite (issue 21), then its results
# table. Each part runs even when one before it failed; the table shows
# what was measured and the command fails if any part did.
set -u
cd "$(dirname "$0")/.."
results=$PWD/_build/reliability/results.md
mkdir -p _build/reliability
printf '| part | figures |\n|---|---|\n' >"$results"
export MN_RELIABILITY_RESULTS=$results
failed=()
step() {
    echo "[reliability] $*"
    "$@" || failed+=("$*")
}
step cargo test -p mongoose_native -- --nocapture \
    options::tests gd::transport::frame::tests::random_and_mutated
step rebar3 ct --suite test/bad_input_SUITE --case planted_passwords_of_every_type_stay_hidden
step rebar3 ct --suite test/gd_transport_SUITE --case hostile_peers
step rebar3 ct --suite test/reliability_SUITE
echo
cat "$results"
if [ ${#failed[@]} -gt 0 ]; then
    printf '[reliability] FAILED: %s\n' "${failed[@]}"
    exit 1
fi
echo "[reliability] passed"
