# Shared helpers for the scripts in this folder: section headers with timing.
# Source it; it defines `section NAME CMD...` and `print_timings`.

_QUOLL_TIMINGS=()
# Start of the whole run (a caller such as .ci/run may export an earlier one).
export QUOLL_T0=${QUOLL_T0:-$(date +%s)}

# section NAME CMD... — run CMD with a header, record and print its wall time.
# Returns CMD's exit status (the caller decides whether to stop).
section() {
    local name=$1
    shift
    local t0 t1 rc
    printf '\n==> %s  (%s)\n' "$name" "$(date -u +%H:%M:%S)"
    t0=$(date +%s.%N)
    set +e
    "$@"
    rc=$?
    set -e
    t1=$(date +%s.%N)
    local dt
    dt=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
    if [ "$rc" -eq 0 ]; then
        printf '<== %s: ok in %ss\n' "$name" "$dt"
        _QUOLL_TIMINGS+=("$(printf '%-40s %7ss  ok' "$name" "$dt")")
    else
        printf '<== %s: FAILED (exit %s) after %ss\n' "$name" "$rc" "$dt"
        _QUOLL_TIMINGS+=("$(printf '%-40s %7ss  FAILED (exit %s)' "$name" "$dt" "$rc")")
    fi
    return "$rc"
}

# kill_tree PID — PID and everything it started (cargo leaves its rustc children running).
kill_tree() {
    local c kids
    kids=$(pgrep -P "$1" 2>/dev/null || true)
    kill "$1" 2>/dev/null || true
    for c in $kids; do kill_tree "$c"; done
}

print_timings() {
    printf '\n==> timings\n'
    local line
    for line in "${_QUOLL_TIMINGS[@]}"; do
        printf '    %s\n' "$line"
    done
    printf '    %-40s %7ss\n' "total" "$(( $(date +%s) - QUOLL_T0 ))"
}

# ---- shared by the benchmark and footprint scripts ----------------------------------------

# need CMD... — exit with a pointer to install-deps.sh when one is missing.
need() {
    local p
    for p in "$@"; do
        command -v "$p" >/dev/null || { echo "missing $p (scripts/install-deps.sh)" >&2; exit 1; }
    done
}

# bench_scratch — a scratch dir in $TMP, and $PIDS: processes to kill; both go on exit.
bench_scratch() {
    TMP=$(mktemp -d)
    PIDS=()
    trap bench_cleanup EXIT
}
bench_cleanup() {
    local p
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$TMP"
}

# CPU time of a process in nanoseconds, every thread (/proc/PID/task/*/schedstat, first
# field: time on a CPU). utime+stime from /proc/PID/stat counts 10 ms clock ticks, too coarse
# for the half-second totals of a 20 Mbit/s run. 0 for a process that is gone.
cpu_ns() { cat /proc/"$1"/task/*/schedstat 2>/dev/null | awk '{ s += $1 } END { print s + 0 }'; }
rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }
vm_hwm_kb() { awk '/^VmHWM:/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }

# make_cbr_ts FILE — 6 s of 720p25 H.264 + AAC as a CBR 20 Mbit/s TS (null-packet padded);
# the senders loop it at whatever rate they are asked for.
make_cbr_ts() {
    ffmpeg -nostdin -hide_banner -loglevel error \
        -f lavfi -i testsrc2=size=1280x720:rate=25 -f lavfi -i sine=frequency=1000:sample_rate=48000 \
        -t 6 -c:v libx264 -preset ultrafast -tune zerolatency -b:v 12M -maxrate 12M -bufsize 4M \
        -g 25 -pix_fmt yuv420p -c:a aac -b:a 128k -f mpegts -muxrate 20M "$1"
}

# ---- the cross sections scripts/install-deps.sh made runnable (its status file) -----------

# deps_targets STATUS: the cross targets to run, space separated.
deps_targets() { sed -n 's/^run //p' "$1" | tr '\n' ' ' | sed 's/ $//'; }
# deps_skips STATUS: one loud line for each cross section that will not run, with the reason.
deps_skips() { sed -n 's/^skip \([^:]*\): /NOT RUN: the \1 section (qemu tests, size budget): /p' "$1"; }
