#!/usr/bin/env bash
# Stripped size of the quoll release binary: native (rustup toolchain) and aarch64 (Debian's
# rustc, like scripts/test-all.sh). Prints a markdown table; `--no-build` uses what is built.
#   scripts/size.sh [--no-build]
set -euo pipefail
cd "$(dirname "$0")/.."

build=1
[ "${1:-}" = --no-build ] && build=0
CROSS_TARGET=aarch64-unknown-linux-gnu
CROSS_DIR=target-aarch64

if [ "$build" = 1 ]; then
    echo "building native release ..." >&2
    cargo build --release -q --bin quoll >&2
    echo "building $CROSS_TARGET release with /usr/bin/rustc ..." >&2
    RUSTC=/usr/bin/rustc CARGO_TARGET_DIR=$CROSS_DIR \
        cargo build --release -q --bin quoll --target "$CROSS_TARGET" >&2
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
row() { # row LABEL BINARY STRIP
    local label=$1 bin=$2 strip=$3
    if [ ! -f "$bin" ]; then
        printf '| %s | (not built) | | |\n' "$label"
        return
    fi
    cp "$bin" "$tmp/b"
    "$strip" "$tmp/b"
    local built stripped
    built=$(stat -c %s "$bin")
    stripped=$(stat -c %s "$tmp/b")
    printf '| %s | %s | %s | %s MiB |\n' "$label" "$built" "$stripped" \
        "$(awk -v b="$stripped" 'BEGIN { printf "%.2f", b / 1048576 }')"
}
echo "| binary | as built (bytes) | stripped (bytes) | stripped |"
echo "| --- | ---: | ---: | ---: |"
row "x86_64 (native, $(rustc --version | cut -d' ' -f2))" target/release/quoll strip
row "aarch64 ($(/usr/bin/rustc --version | cut -d' ' -f2), Debian)" \
    "$CROSS_DIR/$CROSS_TARGET/release/quoll" aarch64-linux-gnu-strip
