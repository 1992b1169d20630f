#!/usr/bin/env bash
# The project's test command: installs what is missing (scripts/install-deps.sh), then
# formatting, lints, the native test suite, then the same suite cross-built for aarch64 and
# armv7 with Debian's rustc and run under qemu-user, then the size budget.
#
#   scripts/test-all.sh              everything (what CI runs, via .ci/run)
#   scripts/test-all.sh --native     fmt, the Yocto lint, clippy, native tests only
#   scripts/test-all.sh --cross      cross builds + qemu runs + size budget only
#
# Environment:
#   CROSS_TARGETS  target triples for the cross part (default: what install-deps.sh could
#                  install: aarch64-unknown-linux-gnu always, armv7-unknown-linux-gnueabihf
#                  unless its std of the right version cannot be had, which the last lines
#                  of the run then say)
#   CROSS_TARGET   a single target (overrides CROSS_TARGETS)
#   CROSS_RUSTC    rustc that has those targets' std (default /usr/bin/rustc, Debian's)
#   SIZE_CHECK=0   skip the release builds of the size budget check (they run in the
#                  background from the start, see start_size_build)
#   TEST_RUNNER    nextest | cargo-test (default: nextest when installed)
#   QUOLL_REQUIRE_PEERS=1  tests needing ffmpeg/srt-live-transmit fail instead of skipping
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

do_native=1
do_cross=1
case "${1:-}" in
    "") ;;
    --native) do_cross=0 ;;
    --cross) do_native=0 ;;
    *) echo "usage: $0 [--native|--cross]" >&2; exit 2 ;;
esac

CROSS_RUSTC=${CROSS_RUSTC:-/usr/bin/rustc}
DEPS_STATUS=target/install-deps.status
deps_args=(--armv7)
[ "$do_cross" = 1 ] || deps_args=()
if ! section "install dependencies" env QUOLL_DEPS_STATUS="$DEPS_STATUS" scripts/install-deps.sh "${deps_args[@]}"; then
    print_timings
    echo "FAILED: scripts/install-deps.sh could not set the machine up (its error is above)" >&2
    exit 1
fi
chosen_targets=0
if [ -n "${CROSS_TARGET:-}" ]; then
    CROSS_TARGETS=$CROSS_TARGET
    chosen_targets=1
elif [ -n "${CROSS_TARGETS:-}" ]; then
    chosen_targets=1
else
    CROSS_TARGETS=$(deps_targets "$DEPS_STATUS")
    # Said loudly now and again in the last lines: a section that did not run never passes.
    [ "$do_cross" = 0 ] || deps_skips "$DEPS_STATUS" >&2
fi
export CROSS_TARGETS
set_cross() { # set_cross TARGET: CROSS_TARGET, CROSS_QEMU, CROSS_DIR for it
    CROSS_TARGET=$1
    case "$CROSS_TARGET" in
        aarch64-*) CROSS_QEMU=qemu-aarch64; CROSS_DIR=target-aarch64 ;;
        armv7-*) CROSS_QEMU=qemu-arm; CROSS_DIR=target-armv7 ;;
        *) echo "unsupported cross target $CROSS_TARGET" >&2; exit 2 ;;
    esac
}

if [ -z "${TEST_RUNNER:-}" ]; then
    if cargo nextest --version >/dev/null 2>&1; then TEST_RUNNER=nextest; else TEST_RUNNER=cargo-test; fi
fi
# Whole-section guards on top of the per-test timeouts (.config/nextest.toml).
NATIVE_TIMEOUT=${NATIVE_TIMEOUT:-900}
CROSS_TIMEOUT=${CROSS_TIMEOUT:-1800}

# The event log's test doubles (MemStorage, SlowSync, Counted) are behind the `test-util`
# feature; without it cargo skips tests/events_slow_disk.rs and benches/events.rs silently.
FEATURES=(--features test-util)

logs=$(mktemp -d)
size_build= # the background release builds of the size budget, while they run
trap '[ -z "$size_build" ] || kill_tree "$size_build"; rm -rf "$logs"' EXIT
failed=0

# The size budget's release builds (fat LTO, 3 binaries) cost as much CPU as a qemu run, and
# the test sections leave a core idle much of the time (peers and timeouts run in real time:
# the qemu runs keep the two cores ~60 % busy). So the builds start with the run, at nice 19,
# and take what the tests leave: a nice-0 task that wakes preempts them at once, so the tests
# see an idle machine's scheduling. The size section then waits for what is left.
start_size_build() {
    [ "$do_cross" = 1 ] && [ "${SIZE_CHECK:-1}" = 1 ] || return 0
    echo "size budget: the release builds start now, at nice 19, in the background"
    size_t0=$(date +%s)
    nice -n 19 scripts/size.sh --build-only >"$logs/size-build.log" 2>&1 &
    size_build=$!
}
size_check() {
    local rc=0
    wait "$size_build" || rc=$?
    size_build=
    cat "$logs/size-build.log"
    echo "release builds: $(( $(date +%s) - size_t0 )) s from their start in the background"
    [ "$rc" = 0 ] || { echo "the release builds failed (exit $rc)" >&2; return 1; }
    scripts/size.sh --no-build --check
}

run_tests() { # run_tests LOG PROFILE [cargo args...]
    local log=$1 profile=$2 to=$3
    shift 3
    if [ "$TEST_RUNNER" = nextest ]; then
        timeout -k 30 "$to" cargo nextest run --profile "$profile" "${FEATURES[@]}" "$@" 2>&1 | tee "$log"
    else
        # libtest has no per-test timeout: the section timeout is the guard.
        timeout -k 30 "$to" cargo test "${FEATURES[@]}" "$@" 2>&1 | tee "$log"
    fi
}

native_tests() {
    # Doctests first (nextest does not run them), so the suite's summary comes last.
    timeout -k 30 "$NATIVE_TIMEOUT" cargo test --doc -q 2>&1 | tail -n 3
    run_tests "$logs/native.log" ci "$NATIVE_TIMEOUT"
}

cross_check_toolchain() {
    local sysroot
    sysroot=$("$CROSS_RUSTC" --print sysroot) || return 1
    if [ ! -d "$sysroot/lib/rustlib/$CROSS_TARGET/lib" ]; then
        echo "no std for $CROSS_TARGET under $sysroot/lib/rustlib (install libstd-rust-web-dev:ARCH)" >&2
        return 1
    fi
    command -v "$CROSS_QEMU" >/dev/null || { echo "$CROSS_QEMU not found (install qemu-user)" >&2; return 1; }
    echo "cargo: $(cargo --version); rustc: $("$CROSS_RUSTC" --version); $("$CROSS_QEMU" --version | head -n 1)"
}

cross_build() {
    cross_check_toolchain &&
        RUSTC=$CROSS_RUSTC CARGO_TARGET_DIR=$CROSS_DIR \
            cargo test "${FEATURES[@]}" --target "$CROSS_TARGET" --no-run -q
}

cross_tests() {
    # The test binaries run under qemu via the runner in .cargo/config.toml; the quoll binary
    # they spawn gets the same emulator through QUOLL_RUNNER (tests/common/mod.rs).
    # No -L / QEMU_LD_PREFIX: see ../shared/toolchain.md.
    unset QEMU_LD_PREFIX
    RUSTC=$CROSS_RUSTC CARGO_TARGET_DIR=$CROSS_DIR QUOLL_RUNNER=$CROSS_QEMU \
        run_tests "$logs/cross-${CROSS_TARGET%%-*}.log" cross "$CROSS_TIMEOUT" --target "$CROSS_TARGET"
}

echo "test runner: $TEST_RUNNER; QUOLL_REQUIRE_PEERS=${QUOLL_REQUIRE_PEERS:-unset}"
start_size_build
if [ "$do_native" = 1 ]; then
    section "fmt" cargo fmt --all --check || failed=1
    section "yocto layer lint (oelint-adv)" scripts/lint-yocto.sh || failed=1
    section "clippy" cargo clippy -q --all-targets "${FEATURES[@]}" -- -D warnings || failed=1
    # The fuzz crate is a workspace of its own, so nothing else builds it: keep its targets
    # compiling against the current API (running them is scripts/fuzz.sh). It shares the
    # main target dir and starts from the main lock file, so the dependencies clippy just
    # checked are not checked again.
    [ -f fuzz/Cargo.lock ] || cp Cargo.lock fuzz/Cargo.lock
    section "fuzz targets (check)" env CARGO_TARGET_DIR="$PWD/target" \
        cargo check -q --manifest-path fuzz/Cargo.toml --bins || failed=1
    section "native build" cargo test "${FEATURES[@]}" --no-run -q || failed=1
    section "native tests" native_tests || failed=1
fi
if [ "$do_cross" = 1 ]; then
    for t in $CROSS_TARGETS; do
        set_cross "$t"
        if section "$CROSS_TARGET build" cross_build; then
            section "$CROSS_TARGET tests (qemu)" cross_tests || failed=1
        else
            failed=1
        fi
    done
    if [ "${SIZE_CHECK:-1}" = 1 ]; then
        section "size budget (stripped release binaries)" size_check || failed=1
    fi
fi

print_timings
# End with the test runners' own closing lines (CI reads the last summary).
printf '\n==> test summary\n'
[ "$do_cross" = 0 ] || [ "$chosen_targets" = 1 ] || deps_skips "$DEPS_STATUS"
for f in native cross-aarch64 cross-armv7; do
    [ -s "$logs/$f.log" ] || continue
    printf '%s:\n' "$f"
    grep -E '^ *Summary \[|^test result:' "$logs/$f.log" || echo "  (no summary line: the run did not finish)"
done
if [ "$failed" != 0 ]; then
    echo "FAILED" >&2
    exit 1
fi
