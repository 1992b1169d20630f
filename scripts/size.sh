#!/usr/bin/env bash
# Stripped size of the quoll release binary: native (rustup toolchain), aarch64 and armv7
# (Debian's rustc, like scripts/test-all.sh), each as the full build (default features) and
# the minimal one (`--no-default-features`: UDP/RTP, SRT, events, manager link, API,
# console). Prints a markdown table.
#   scripts/size.sh [--no-build | --build-only] [--check] [--features]
# --check compares each cross binary (and aarch64's minimal one) with scripts/size-budget
# (bytes, stripped) and fails when one is over: the budget is the measured size plus at most 15 %
# headroom, so growth is a decision, not an accident. --features also builds aarch64 with
# each feature alone on top of the minimal build, for the cost table in docs/benchmarks.md.
# --build-only builds the cross binaries and stops: scripts/test-all.sh runs it in the
# background at nice 19 while the tests run, then `--no-build --check`.
# CROSS_TARGETS (set by scripts/test-all.sh from what scripts/install-deps.sh could
# install) names the targets; by default, those with a std.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

build=1
build_only=0
check=0
per_feature=0
for a in "$@"; do
    case "$a" in
        --no-build) build=0 ;;
        --build-only) build_only=1 ;;
        --check) check=1 ;;
        --features) per_feature=1 ;;
        *) sed -n '2,13p' "$0" >&2; exit 2 ;;
    esac
done
# The features of the default set, each measured alone on the minimal build by --features.
FEATURES=(rtsp rtmp hls tunnels)

have_std() { [ -d "$(/usr/bin/rustc --print sysroot 2>/dev/null)/lib/rustlib/$1/lib" ]; }
TARGETS=()
if [ -n "${CROSS_TARGETS:-}" ]; then
    read -r -a TARGETS <<<"$CROSS_TARGETS"
else
    for t in aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf; do
        if have_std "$t"; then TARGETS+=("$t"); else echo "no std for $t under /usr/bin/rustc: skipped" >&2; fi
    done
fi
# Release builds have target dirs of their own (the qemu tests' debug builds are in
# target-ARCH), so they can run while those are built and tested. The builds run side by
# side: each ends in a single-threaded fat-LTO link, which alone would leave a core idle
# (sharing one target dir and building one after the other took half as long again). Only
# aarch64, the main board class, has a minimal budget.
dir_of() { case "$1" in aarch64-*) echo target-aarch64-release ;; armv7-*) echo target-armv7-release ;; esac; }
min_dir_of() { case "$1" in aarch64-*) echo target-aarch64-minimal ;; armv7-*) echo target-armv7-minimal ;; esac; }
min_bin_of() { echo "$(min_dir_of "$1")/$1/release/quoll"; }
has_minimal() { case "$1" in aarch64-*) true ;; *) false ;; esac; }
strip_of() { case "$1" in aarch64-*) echo aarch64-linux-gnu-strip ;; armv7-*) echo arm-linux-gnueabihf-strip ;; esac; }

if [ "$build" = 1 ]; then
    if [ "$check" = 0 ] && [ "$build_only" = 0 ]; then
        echo "building native release ..." >&2
        cargo build --release -q --bin quoll >&2
    fi
    pids=()
    # Stopped with this script (scripts/test-all.sh ends a background run it no longer needs).
    trap 'for p in "${pids[@]}"; do kill_tree "$p"; done' TERM INT
    for t in "${TARGETS[@]}"; do
        echo "building $t release with /usr/bin/rustc ..." >&2
        RUSTC=/usr/bin/rustc CARGO_TARGET_DIR=$(dir_of "$t") \
            cargo build --release -q --bin quoll --target "$t" >&2 &
        pids+=($!)
        if has_minimal "$t"; then
            echo "building $t minimal release (--no-default-features) ..." >&2
            RUSTC=/usr/bin/rustc CARGO_TARGET_DIR=$(min_dir_of "$t") \
                cargo build --release -q --bin quoll --no-default-features --target "$t" >&2 &
            pids+=($!)
        fi
    done
    failed=0
    for p in "${pids[@]}"; do wait "$p" || failed=1; done
    trap - TERM INT
    [ "$failed" = 0 ] || { echo "a release build failed (its error is above)" >&2; exit 1; }
fi
[ "$build_only" = 0 ] || exit 0

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
stripped_size() { # stripped_size BINARY STRIP
    cp "$1" "$tmp/b"
    "$2" "$tmp/b"
    stat -c %s "$tmp/b"
}
row() { # row LABEL BINARY STRIP
    local label=$1 bin=$2 strip=$3
    if [ ! -f "$bin" ]; then
        printf '| %s | (not built) | | |\n' "$label"
        return
    fi
    local built stripped
    built=$(stat -c %s "$bin")
    stripped=$(stripped_size "$bin" "$strip")
    printf '| %s | %s | %s | %s MiB |\n' "$label" "$built" "$stripped" \
        "$(awk -v b="$stripped" 'BEGIN { printf "%.2f", b / 1048576 }')"
}
echo "| binary | as built (bytes) | stripped (bytes) | stripped |"
echo "| --- | ---: | ---: | ---: |"
[ "$check" = 1 ] || row "x86_64 (native, $(rustc --version | cut -d' ' -f2))" target/release/quoll strip
for t in "${TARGETS[@]}"; do
    v=$(/usr/bin/rustc --version | cut -d' ' -f2)
    row "${t%%-*} ($v, Debian)" "$(dir_of "$t")/$t/release/quoll" "$(strip_of "$t")"
    has_minimal "$t" && row "${t%%-*} minimal ($v, Debian)" "$(min_bin_of "$t")" "$(strip_of "$t")"
done
if [ "$per_feature" = 1 ]; then
    t=aarch64-unknown-linux-gnu
    for f in "${FEATURES[@]}"; do
        RUSTC=/usr/bin/rustc CARGO_TARGET_DIR=target-aarch64-$f \
            cargo build --release -q --bin quoll --no-default-features --features "$f" --target "$t" >&2
        row "aarch64 minimal + $f" "target-aarch64-$f/$t/release/quoll" "$(strip_of "$t")"
    done
fi

if [ "$check" = 1 ]; then
    over=0
    check_one() { # check_one NAME BINARY STRIP
        local budget size
        budget=$(awk -v t="$1" '$1 == t { print $2 }' scripts/size-budget)
        [ -n "$budget" ] || { echo "no budget for $1 in scripts/size-budget" >&2; over=1; return; }
        size=$(stripped_size "$2" "$3")
        if [ "$size" -gt "$budget" ]; then
            echo "size budget exceeded: $1 is $size bytes, budget $budget (scripts/size-budget)" >&2
            over=1
        else
            echo "size budget: $1 $size <= $budget bytes ($(awk -v s="$size" -v b="$budget" 'BEGIN { printf "%.0f", 100 * s / b }') %)"
        fi
    }
    for t in "${TARGETS[@]}"; do
        check_one "$t" "$(dir_of "$t")/$t/release/quoll" "$(strip_of "$t")"
        has_minimal "$t" && check_one "$t:minimal" "$(min_bin_of "$t")" "$(strip_of "$t")"
    done
    exit "$over"
fi
