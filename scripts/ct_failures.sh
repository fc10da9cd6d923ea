#!/usr/bin/env bash
# Prints each failed common_test case of the latest run with its reason, so
# that the end of a CI log names what failed (rebar3 prints only a count).
set -u
cd "$(dirname "$0")/.."
run=$(ls -dt _build/test/logs/ct_run.* 2>/dev/null | head -n 1)
[ -n "$run" ] || { echo "[ct_failures] no common_test run found"; exit 0; }
for log in $(find "$run" -name suite.log); do
    awk -v dir="$(dirname "$log")" '
        /^=case/    { name = $2; file = "" }
        /^=logfile/ { file = $2 }
        /^=result/  { failing = ($0 !~ /^=result +(ok|skipped)/) }
        failing && /^===/ { failing = 0; print "    log: " dir "/" file; print "" }
        failing {
            if ($1 == "=result") { print "[ct_failures] " name ":"; sub(/^=result +/, "") }
            if (++lines[name] <= 40) print "    " $0
        }
    ' "$log"
done
