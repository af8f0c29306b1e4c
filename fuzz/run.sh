#!/usr/bin/env bash
# Runs every cargo-fuzz target for SECONDS each (default 60) and prints the executions
# per target. `fuzz/run.sh --smoke` runs each for 5 seconds (the CI smoke run).
#
# Needs cargo-fuzz (`cargo install cargo-fuzz --locked`). Crashes are written to
# fuzz/artifacts/<target>/; the corpus grows in fuzz/corpus/<target>/. The exit status is
# 1 if any target crashed (or timed out, or ran out of memory).
set -euo pipefail

cd "$(dirname "$0")"
seconds="${1:-60}"
if [[ "$seconds" == "--smoke" ]]; then
    seconds=5
fi
if ! [[ "$seconds" =~ ^[0-9]+$ ]]; then
    echo "usage: $0 [SECONDS | --smoke]" >&2
    exit 2
fi

# Sanitizers and libFuzzer need nightly-only compiler flags (-Z). Rather than a second
# toolchain, allow them on the pinned one (rust-toolchain.toml), which CI already has.
# `RUSTUP_TOOLCHAIN=nightly fuzz/run.sh` uses a nightly instead.
export RUSTC_BOOTSTRAP=1

targets=$(cargo fuzz list)
# Build everything first so the per-target time budget is spent fuzzing.
cargo fuzz build >/dev/null

status=0
for target in $targets; do
    mkdir -p "corpus/$target" "logs"
    log="logs/$target.log"
    # -rss_limit_mb bounds allocations a hostile length could provoke; -timeout flags hangs.
    if cargo fuzz run "$target" "corpus/$target" -- \
        -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
        >"$log" 2>&1; then
        result=ok
    else
        result=CRASH
        status=1
    fi
    execs=$(grep -Eo 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -Eo '[0-9]+$' || echo "?")
    printf '%-18s %-6s %12s executions in %ss\n' "$target" "$result" "$execs" "$seconds"
    if [[ "$result" == CRASH ]]; then
        grep -E 'panicked|ERROR: libFuzzer|SUMMARY' "$log" | head -5 || true
        echo "  full log: fuzz/$log; reproducer in fuzz/artifacts/$target/"
    fi
done
exit "$status"
