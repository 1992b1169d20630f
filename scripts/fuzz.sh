#!/usr/bin/env bash
# Run every cargo-fuzz target for a while (not part of the test command: it is open-ended).
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]     default 60 s, every target
#
# Needs cargo-fuzz (`cargo install cargo-fuzz`); runs on the stable toolchain with
# RUSTC_BOOTSTRAP=1 because cargo-fuzz passes -Z sanitizer flags. Corpora grow in
# fuzz/corpus/<target> (gitignored), seeds come from fuzz/seeds/<target>. Prints one line
# per target (executions, corpus size) and exits non-zero if any target found a crash
# (the reproducer is in fuzz/artifacts/<target>/).
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
secs=${1:-60}
shift || true
command -v cargo-fuzz >/dev/null || { echo "cargo-fuzz missing: cargo install cargo-fuzz" >&2; exit 2; }
targets=("$@")
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <(RUSTC_BOOTSTRAP=1 cargo fuzz list)
export RUSTC_BOOTSTRAP=1
cargo fuzz build -O >/dev/null
failed=0
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t" "seeds/$t"
    log=$(mktemp)
    if cargo fuzz run -O "$t" "corpus/$t" "seeds/$t" -- -max_total_time="$secs" -max_len=65536 \
        -print_final_stats=1 >"$log" 2>&1; then
        execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
        echo "$t: ok, ${execs:-?} executions in ${secs}s, corpus $(ls "corpus/$t" | wc -l)"
    else
        failed=1
        echo "$t: FAILED"
        grep -E "panicked|ERROR|SUMMARY|artifact" "$log" | head -n 8 | sed 's/^/    /'
    fi
    rm -f "$log"
done
exit $failed
