#!/usr/bin/env bash
# Runs every fuzz target (fuzz/fuzz_targets) for SECONDS each (default 60) with libFuzzer,
# starting from the seed corpus in fuzz/corpus/<target> and adding what it finds there.
# Prints executions and findings per target. Needs the nightly toolchain (rustup) and
# cargo-fuzz, which it installs if missing. Opt-in: CI stays on stable.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-60}"
shift || true
if ! [[ "$seconds" =~ ^[0-9]+$ ]]; then
    echo "usage: scripts/fuzz.sh [SECONDS] [TARGET...]" >&2
    exit 2
fi
if ! rustup toolchain list | grep -q '^nightly'; then
    echo "error: the nightly toolchain is needed (rustup toolchain install nightly)" >&2
    exit 1
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz..." >&2
    cargo install cargo-fuzz --locked
fi

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(cd fuzz && cargo +nightly fuzz list)
fi

cd fuzz
# Build all targets first, so the time budget is spent fuzzing.
cargo +nightly fuzz build
mkdir -p logs
total=0
printf '%-20s %14s %10s %s\n' target executions exec/s result
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t" "artifacts/$t"
    log="logs/$t.log"
    status=ok
    if ! cargo +nightly fuzz run "$t" "corpus/$t" -- \
        -max_total_time="$seconds" -print_final_stats=1 -rss_limit_mb=4096 \
        -artifact_prefix="artifacts/$t/" >"$log" 2>&1; then
        status="CRASH: see fuzz/$log and fuzz/artifacts/$t/"
    fi
    runs=$(grep -E '^stat::number_of_executed_units' "$log" | awk '{print $2}' | tail -1)
    runs=${runs:-0}
    rate=$(( seconds > 0 ? runs / seconds : 0 ))
    total=$(( total + runs ))
    printf '%-20s %14s %10s %s\n' "$t" "$runs" "$rate" "$status"
done
echo "total executions: $total"
