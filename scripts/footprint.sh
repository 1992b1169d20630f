#!/usr/bin/env bash
# Footprint of the release binary: idle and loaded RSS and thread count, natively and under
# qemu-aarch64. Idle is the embedded default config (one loopback flow, no input); loaded is
# the same config with a 20 Mbit/s TS pushed into it for SECONDS (at least 4).
#   scripts/footprint.sh [-d SECONDS] [--no-qemu]
# "Loaded" is sampled while the sender is still running (once a second from 2 s into the
# load): the RSS of the last sample and the most threads any sample saw, by name from
# /proc/PID/task. Expected are the runtime thread (`quoll`) and the event-log writer.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

DUR=10
QEMU=1
while [ $# -gt 0 ]; do
    case "$1" in
        -d) DUR=$2; shift 2 ;;
        --no-qemu) QEMU=0; shift ;;
        *) sed -n '2,8p' "$0" >&2; exit 2 ;;
    esac
done
[ "$DUR" -ge 4 ] || { echo "-d must be at least 4 seconds" >&2; exit 2; }

need ffmpeg awk
bench_scratch

echo "building release binaries ..." >&2
cargo build --release -q --bin quoll
cargo build --release -q --example udp_pace
if [ "$QEMU" = 1 ]; then
    RUSTC=/usr/bin/rustc CARGO_TARGET_DIR=target-aarch64-release \
        cargo build --release -q --bin quoll --target aarch64-unknown-linux-gnu
fi
PACE=target/release/examples/udp_pace

TS=$TMP/in.ts
make_cbr_ts "$TS"

threads() { # names of the process's threads, sorted, counted
    local t
    for t in /proc/"$1"/task/*; do cat "$t/comm"; done | sort | uniq -c | awk '{ printf "%s%s x%s", sep, $2, $1; sep = ", " }'
}
nthreads() { awk '/^Threads:/ { print $2 }' "/proc/$1/status"; }

measure() { # measure LABEL CMD...
    local label=$1
    shift
    local data=$TMP/data-$label run=$TMP/run-$label
    mkdir -p "$data"
    # The embedded default config, with this run's data dir (cwd) and control socket.
    (cd "$TMP" && mkdir -p "cwd-$label" && cd "cwd-$label" &&
        QUOLL_RUNTIME_DIR=$run exec "$@" run) >"$TMP/$label.log" 2>&1 &
    local pid=$!
    PIDS+=("$pid")
    # Under qemu-user the process is qemu itself: /proc/PID is still the right one.
    local i
    for i in $(seq 1 400); do grep -q "quoll ready" "$TMP/$label.log" && break; sleep 0.05; done
    grep -q "quoll ready" "$TMP/$label.log" || { cat "$TMP/$label.log" >&2; exit 1; }
    sleep 2
    local idle_rss idle_thr idle_names
    idle_rss=$(rss_kb "$pid"); idle_thr=$(nthreads "$pid"); idle_names=$(threads "$pid")
    # The sender runs in the background; the samples are taken while it sends.
    "$PACE" send "$TS" 127.0.0.1:5000 20 "$DUR" >"$TMP/$label.send" &
    local sender=$!
    PIDS+=("$sender")
    local load_rss=0 load_thr=0 load_names="" n t samples=0
    sleep 2
    for n in $(seq 2 $((DUR - 1))); do
        kill -0 "$sender" 2>/dev/null || break
        load_rss=$(rss_kb "$pid")
        t=$(nthreads "$pid")
        if [ "$t" -ge "$load_thr" ]; then load_thr=$t; load_names=$(threads "$pid"); fi
        samples=$((samples + 1))
        sleep 1
    done
    wait "$sender" || { echo "$label: the sender failed" >&2; exit 1; }
    [ "$samples" -gt 0 ] || { echo "$label: no sample taken during the load" >&2; exit 1; }
    local load_hwm
    load_hwm=$(vm_hwm_kb "$pid")
    echo "$label: $samples samples during the load; sender: $(cat "$TMP/$label.send")" >&2
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    printf '| %s | %.1f | %.1f | %.1f | %s (%s) | %s (%s) |\n' "$label" \
        "$(awk -v k="$idle_rss" 'BEGIN { print k / 1024 }')" \
        "$(awk -v k="$load_rss" 'BEGIN { print k / 1024 }')" \
        "$(awk -v k="$load_hwm" 'BEGIN { print k / 1024 }')" \
        "$idle_thr" "$idle_names" "$load_thr" "$load_names"
}

echo "## Footprint, $(date -u '+%Y-%m-%d %H:%M UTC'), quoll $(target/release/quoll --version | cut -d' ' -f2) at $(git rev-parse --short HEAD)"
echo
echo "Embedded default config; loaded = 20 Mbit/s for ${DUR} s into its UDP input (two outputs)."
echo
echo "| run | idle RSS MiB | loaded RSS MiB | peak RSS MiB | idle threads | loaded threads |"
echo "| --- | ---: | ---: | ---: | --- | --- |"
measure native "$PWD/target/release/quoll"
if [ "$QEMU" = 1 ]; then
    measure qemu-aarch64 qemu-aarch64 "$PWD/target-aarch64-release/aarch64-unknown-linux-gnu/release/quoll"
fi
echo
echo "Under qemu-user, RSS includes the emulator and its translated code, and qemu adds one"
echo "thread of its own (its RCU thread); the guest's runtime thread shows as qemu-aarch64."
