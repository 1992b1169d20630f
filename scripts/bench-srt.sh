#!/usr/bin/env bash
# SRT→UDP relay benchmark: quoll against srt-live-transmit on the same SRT stream, in the
# same run, on loopback. Not part of the test command (it takes a few minutes).
#
#   scripts/bench-srt.sh [-d SECONDS] [--rate 20] [--fanout 4] [--latency 120]
#
# Per case: a paced sender (examples/udp_pace.rs) pushes the generated TS as 1316-byte
# datagrams at an exact bitrate into a feeding srt-live-transmit (UDP in, SRT caller out),
# which calls the relay under test: `srt-live-transmit srt://:PORT?mode=listener udp://OUT`,
# or quoll with one flow (SRT listener input, N UDP outputs). A receiver counts what comes
# out of every output. The feeder is the same program with the same options in every case,
# and only the relay process is measured: CPU time over the sending window (nanoseconds on
# a CPU, summed over the process's threads from /proc/PID/task/*/schedstat: `cpu_ns` in
# scripts/lib.sh), peak RSS (VmHWM at the end), datagrams lost at the receiver.
# CPU s/GB is per GB of input payload.
# Output: a markdown table on stdout and in bench-out/bench-srt-DATE.md (+ latest-srt.md).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

DUR=20
RATE=20
FANOUT=4
LATENCY=120
while [ $# -gt 0 ]; do
    case "$1" in
        -d | --duration) DUR=$2; shift 2 ;;
        --rate) RATE=$2; shift 2 ;;
        --fanout) FANOUT=$2; shift 2 ;;
        --latency) LATENCY=$2; shift 2 ;;
        *) sed -n '2,16p' "$0" >&2; exit 2 ;;
    esac
done

need ffmpeg srt-live-transmit awk

OUT=bench-out
mkdir -p "$OUT"
bench_scratch

echo "building release quoll and udp_pace ..." >&2
cargo build --release -q --bin quoll
cargo build --release -q --example udp_pace
QUOLL=target/release/quoll
PACE=target/release/examples/udp_pace

TS=$TMP/in.ts
echo "generating $TS ..." >&2
make_cbr_ts "$TS"

bound() { # bound PORT: some UDP socket on 127.0.0.1:PORT or *:PORT
    awk -v a="$(printf ':%04X' "$1")" 'substr($2, length($2) - 4) == a { f = 1 } END { exit !f }' \
        /proc/net/udp /proc/net/udp6
}
wait_for() { # wait_for SECONDS CMD...: poll every 50 ms
    local i n=$(($1 * 20))
    shift
    for i in $(seq 1 "$n"); do "$@" && return 0; sleep 0.05; done
    return 1
}

ROWS=()
declare -A CPUGB RSS
case_no=0
run_case() { # run_case RELAY OUTPUTS
    local relay=$1 nout=$2
    case_no=$((case_no + 1))
    local base=$((28000 + case_no * 40))
    local feed=$base srt_port=$((base + 30)) api_port=$((base + 39))
    local outs=() i
    for i in $(seq 1 "$nout"); do outs+=("127.0.0.1:$((base + i))"); done
    local name="$relay ${RATE}M x$nout"
    echo "== $name (${DUR}s)" >&2

    : >"$TMP/recv.txt"
    "$PACE" recv 1500 $((DUR + 30)) "${outs[@]}" >"$TMP/recv.txt" &
    local rpid=$!
    PIDS+=("$rpid")
    wait_for 5 grep -q ready "$TMP/recv.txt"

    if [ "$relay" = srt-live-transmit ]; then
        srt-live-transmit -q -chunk 1316 "srt://:$srt_port?mode=listener&latency=$LATENCY&rcvbuf=12058624" \
            "udp://${outs[0]}?sndbuf=4194304" >"$TMP/relay.log" 2>&1 &
    else
        local cfg=$TMP/quoll-$case_no.json o=""
        for i in $(seq 1 "$nout"); do
            o+="${o:+,}{\"type\":\"udp\",\"id\":\"o$i\",\"name\":\"o$i\",\"dest_addr\":\"${outs[$((i - 1))]}\"}"
        done
        mkdir -p "$TMP/data-$case_no"
        cat >"$cfg" <<EOF
{"version":1,"server":{"listen_addr":"127.0.0.1","listen_port":$api_port},
 "storage":{"data_dir":"$TMP/data-$case_no"},
 "flows":[{"id":"bench","name":"bench","enabled":true,
   "input":{"type":"srt","mode":"listener","local_addr":"127.0.0.1:$srt_port","latency_ms":$LATENCY},
   "outputs":[$o]}]}
EOF
        "$QUOLL" run --config "$cfg" >"$TMP/relay.log" 2>&1 &
    fi
    local pid=$!
    PIDS+=("$pid")
    if ! wait_for 10 bound "$srt_port"; then
        echo "$relay did not bind $srt_port:" >&2
        tail -n 20 "$TMP/relay.log" >&2
        exit 1
    fi
    # The feeder: UDP in, SRT caller out (same for every case).
    srt-live-transmit -q -chunk 1316 "udp://127.0.0.1:$feed?rcvbuf=4194304" \
        "srt://127.0.0.1:$srt_port?mode=caller&latency=$LATENCY" >"$TMP/feed.log" 2>&1 &
    local fpid=$!
    PIDS+=("$fpid")
    wait_for 10 bound "$feed"
    sleep 1 # let the SRT handshake finish before the clock starts
    local c0 c1 hwm sent
    c0=$(cpu_ns "$pid")
    sent=$("$PACE" send "$TS" "127.0.0.1:$feed" "$RATE" "$DUR")
    wait "$rpid"
    c1=$(cpu_ns "$pid")
    hwm=$(vm_hwm_kb "$pid")
    kill "$fpid" "$pid" 2>/dev/null || true
    wait "$fpid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true

    local spk sby smbit rpk lost
    spk=$(sed -n 's/.*sent packets=\([0-9]*\).*/\1/p' <<<"$sent")
    sby=$(sed -n 's/.* bytes=\([0-9]*\).*/\1/p' <<<"$sent")
    smbit=$(sed -n 's/.* mbit=\([0-9.]*\).*/\1/p' <<<"$sent")
    rpk=$(awk '/^recv / { for (i = 1; i <= NF; i++) if ($i ~ /^packets=/) { split($i, a, "="); s += a[2] } } END { print s + 0 }' "$TMP/recv.txt")
    lost=$((spk * nout - rpk))
    local cpu cpugb rss loss
    cpu=$(awk -v a="$c0" -v b="$c1" 'BEGIN { printf "%.3f", (b - a) / 1e9 }')
    cpugb=$(awk -v c="$cpu" -v by="$sby" 'BEGIN { printf "%.2f", c / (by / 1e9) }')
    rss=$(awk -v k="$hwm" 'BEGIN { printf "%.1f", k / 1024 }')
    loss=$(awk -v l="$lost" -v s="$spk" -v n="$nout" 'BEGIN { printf "%.3f", 100 * l / (s * n) }')
    CPUGB["$relay/$nout"]=$cpugb
    RSS["$relay/$nout"]=$rss
    ROWS+=("| $relay | $smbit | $nout | $spk | $(awk -v b="$sby" 'BEGIN { printf "%.3f", b / 1e9 }') | $cpu | $cpugb | $rss | $lost | $loss |")
    echo "   sent $spk pkts ($smbit Mbit/s), cpu ${cpu}s, ${cpugb} s/GB, peak RSS ${rss} MiB, lost $lost" >&2
}

start=$(date -u '+%Y-%m-%d %H:%M UTC')
load0=$(cut -d' ' -f1-3 /proc/loadavg)
run_case srt-live-transmit 1
run_case quoll 1
run_case srt-live-transmit 1
run_case quoll 1
run_case quoll "$FANOUT"

report=$TMP/report.md
{
    echo "## SRT relay benchmark, $start"
    echo
    echo "Machine: $(nproc) cores, $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)," \
        "kernel $(uname -r); load average at start $load0."
    echo "quoll $("$QUOLL" --version | cut -d' ' -f2) (release), $(srt-live-transmit -version 2>&1 | grep -m1 -o 'SRT Library version: [0-9.]*');" \
        "${DUR}s per case, SRT latency ${LATENCY} ms, 1316-byte payloads, loopback. Each relay case ran twice, interleaved."
    echo "Command: \`scripts/bench-srt.sh -d $DUR --rate $RATE --fanout $FANOUT --latency $LATENCY\`"
    echo
    echo "| relay (SRT in → UDP out) | sent Mbit/s | outputs | datagrams sent | GB in | CPU s | CPU s/GB in | peak RSS MiB | datagrams lost (all outputs) | loss % |"
    echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    printf '%s\n' "${ROWS[@]}"
    echo
    q=${CPUGB["quoll/1"]} s=${CPUGB["srt-live-transmit/1"]}
    awk -v q="$q" -v s="$s" 'BEGIN {
        if (s > 0) printf "- one output (last run of each): quoll / srt-live-transmit CPU per GB = %.2f (target <= 1.5: %s)\n", q / s, (q <= 1.5 * s ? "PASS" : "FAIL")
        else printf "- srt-live-transmit used no measurable CPU\n" }'
    awk -v q="${RSS["quoll/1"]}" -v s="${RSS["srt-live-transmit/1"]}" 'BEGIN { printf "- peak RSS, one output: quoll %.1f MiB, srt-live-transmit %.1f MiB\n", q, s }'
} >"$report"

stamp=$(date -u +%Y%m%d-%H%M%S)
cp "$report" "$OUT/bench-srt-$stamp.md"
cp "$report" "$OUT/latest-srt.md"
echo >&2
cat "$report"
echo >&2
echo "written to $OUT/bench-srt-$stamp.md" >&2
