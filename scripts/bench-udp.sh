#!/usr/bin/env bash
# UDP→UDP relay benchmark: quoll against srt-live-transmit on the same generated TS, in the
# same run, on loopback. Not part of the test command (it takes a few minutes).
#
#   scripts/bench-udp.sh [-d SECONDS] [--rates "20 100"] [--fanout "4 16"] [--fanout-rate 20]
#                        [--no-size] [--no-srt] [--srt-buf BYTES]
#
# Per case: a paced sender (examples/udp_pace.rs) pushes the TS as 1316-byte datagrams at an
# exact bitrate for SECONDS into the relay; a receiver counts what comes out of every output.
# Measured on the relay process: CPU seconds over the sending window (summed over its
# threads from /proc/PID/task/*/schedstat, in nanoseconds), peak RSS (VmHWM at the end),
# drops on its input socket (/proc/net/udp);
# at the receiver: datagrams lost over all outputs, and how many of them its own sockets
# dropped (so lost - relay input drops - receiver drops were lost inside or after the relay). CPU s/GB is per GB of input payload.
# srt-live-transmit gets the same 4 MiB socket buffers quoll asks for (src/net.rs), through
# its `rcvbuf`/`sndbuf` UDP URI options; with its 208 KiB default it drops input on a busy
# machine. Both are capped by net.core.{r,w}mem_max.
# Output: a markdown table on stdout and in bench-out/bench-udp-DATE.md (+ latest.md).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

DUR=20
RATES="20 100"
FANOUT="4 16"
FANOUT_RATE=20
SIZE=1
SRT=1
SRT_BUF=4194304
while [ $# -gt 0 ]; do
    case "$1" in
        -d | --duration) DUR=$2; shift 2 ;;
        --rates) RATES=$2; shift 2 ;;
        --fanout) FANOUT=$2; shift 2 ;;
        --fanout-rate) FANOUT_RATE=$2; shift 2 ;;
        --no-size) SIZE=0; shift ;;
        --no-srt) SRT=0; shift ;;
        --srt-buf) SRT_BUF=$2; shift 2 ;;
        *) sed -n '2,16p' "$0" >&2; exit 2 ;;
    esac
done

need ffmpeg srt-live-transmit awk

OUT=bench-out
mkdir -p "$OUT"
bench_scratch

echo "building release quoll and udp_pace ..." >&2
# Two builds: with the example, dev-dependencies unify features differently, and the quoll
# binary measured must be the product one (the same as scripts/size.sh builds).
cargo build --release -q --bin quoll
cargo build --release -q --example udp_pace
QUOLL=target/release/quoll
PACE=target/release/examples/udp_pace

# A CBR 20 Mbit/s TS, 6 s of 720p25 H.264 + AAC; looped by the sender at whatever rate.
TS=$TMP/in.ts
echo "generating $TS ..." >&2
make_cbr_ts "$TS"

# Drops counted on the UDP socket bound to 127.0.0.1:PORT (last column of /proc/net/udp).
udp_drops() {
    awk -v a="$(printf '0100007F:%04X' "$1")" '$2 == a { d += $NF } END { print d + 0 }' /proc/net/udp
}
wait_bound() { # wait_bound PORT PID
    local i
    for i in $(seq 1 200); do
        awk -v a="$(printf '0100007F:%04X' "$1")" '$2 == a { f = 1 } END { exit !f }' /proc/net/udp && return 0
        kill -0 "$2" 2>/dev/null || return 1
        sleep 0.05
    done
    return 1
}

ROWS=()
declare -A CPUGB RSS
case_no=0
run_case() { # run_case RELAY RATE_MBIT OUTPUTS
    local relay=$1 rate=$2 nout=$3
    case_no=$((case_no + 1))
    local base=$((27000 + case_no * 40))
    local in_port=$base api_port=$((base + 39))
    local outs=() i
    for i in $(seq 1 "$nout"); do outs+=("127.0.0.1:$((base + i))"); done
    local name="$relay ${rate}M x$nout"
    echo "== $name (${DUR}s)" >&2

    : >"$TMP/recv.txt"
    "$PACE" recv 1500 $((DUR + 30)) "${outs[@]}" >"$TMP/recv.txt" &
    local rpid=$!
    PIDS+=("$rpid")
    for i in $(seq 1 100); do grep -q ready "$TMP/recv.txt" && break; sleep 0.05; done

    if [ "$relay" = srt-live-transmit ]; then
        srt-live-transmit -q -chunk 1316 "udp://127.0.0.1:$in_port?rcvbuf=$SRT_BUF" \
            "udp://${outs[0]}?sndbuf=$SRT_BUF" \
            >"$TMP/relay.log" 2>&1 &
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
   "input":{"type":"udp","bind_addr":"127.0.0.1:$in_port"},"outputs":[$o]}]}
EOF
        "$QUOLL" run --config "$cfg" >"$TMP/relay.log" 2>&1 &
    fi
    local pid=$!
    PIDS+=("$pid")
    if ! wait_bound "$in_port" "$pid"; then
        echo "$relay did not bind 127.0.0.1:$in_port:" >&2
        tail -n 20 "$TMP/relay.log" >&2
        exit 1
    fi
    sleep 0.5
    local c0 c1 hwm drops sent
    c0=$(cpu_ns "$pid")
    sent=$("$PACE" send "$TS" "127.0.0.1:$in_port" "$rate" "$DUR")
    # The receiver keeps its sockets until 1.5 s after the last datagram: read their drops now.
    sleep 0.5
    local rdrops=0 o
    for o in "${outs[@]}"; do rdrops=$((rdrops + $(udp_drops "${o##*:}"))); done
    wait "$rpid"
    c1=$(cpu_ns "$pid")
    hwm=$(vm_hwm_kb "$pid")
    drops=$(udp_drops "$in_port")
    kill "$pid" 2>/dev/null || true
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
    CPUGB["$relay/$rate/$nout"]=$cpugb
    RSS["$relay/$rate/$nout"]=$rss
    ROWS+=("| $relay | $rate | $smbit | $nout | $spk | $(awk -v b="$sby" 'BEGIN { printf "%.3f", b / 1e9 }') | $cpu | $cpugb | $rss | $lost | $loss | $drops | $rdrops |")
    echo "   sent $spk pkts ($smbit Mbit/s), cpu ${cpu}s, ${cpugb} s/GB, peak RSS ${rss} MiB, lost $lost, relay input drops $drops, receiver drops $rdrops" >&2
}

start=$(date -u '+%Y-%m-%d %H:%M UTC')
load0=$(cut -d' ' -f1-3 /proc/loadavg)
for r in $RATES; do
    [ "$SRT" = 1 ] && run_case srt-live-transmit "$r" 1
    run_case quoll "$r" 1
done
for n in $FANOUT; do run_case quoll "$FANOUT_RATE" "$n"; done

report=$TMP/report.md
{
    echo "## UDP relay benchmark, $start"
    echo
    echo "Machine: $(nproc) cores, $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)," \
        "kernel $(uname -r); load average at start $load0."
    echo "quoll $("$QUOLL" --version | cut -d' ' -f2) (release), $(srt-live-transmit -version 2>&1 | grep -m1 -o 'SRT Library version: [0-9.]*');" \
        "${DUR}s per case, 1316-byte datagrams, loopback;" \
        "srt-live-transmit socket buffers $SRT_BUF bytes; net.core.rmem_max $(cat /proc/sys/net/core/rmem_max)."
    echo "Command: \`scripts/bench-udp.sh -d $DUR --rates \"$RATES\" --fanout \"$FANOUT\" --fanout-rate $FANOUT_RATE --srt-buf $SRT_BUF\`"
    echo
    echo "| relay | target Mbit/s | sent Mbit/s | outputs | datagrams sent | GB in | CPU s | CPU s/GB in | peak RSS MiB | datagrams lost (all outputs) | loss % | relay input socket drops | receiver socket drops |"
    echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    printf '%s\n' "${ROWS[@]}"
    echo
    if [ "$SRT" = 1 ]; then
        for r in $RATES; do
            q=${CPUGB["quoll/$r/1"]} s=${CPUGB["srt-live-transmit/$r/1"]}
            awk -v q="$q" -v s="$s" -v r="$r" 'BEGIN {
                if (s > 0) printf "- %s Mbit/s, one output: quoll / srt-live-transmit CPU per GB = %.2f (target <= 1: %s)\n", r, q / s, (q <= s ? "PASS" : "FAIL")
                else printf "- %s Mbit/s: srt-live-transmit used no measurable CPU\n", r }'
        done
    fi
    if [ -n "${RSS["quoll/20/1"]:-}" ]; then
        awk -v m="${RSS["quoll/20/1"]}" 'BEGIN { printf "- quoll peak RSS, one 20 Mbit/s flow: %.1f MiB (target < 12 MiB: %s)\n", m, (m < 12 ? "PASS" : "FAIL") }'
    fi
    if [ "$SIZE" = 1 ]; then
        echo
        echo "### Release binary size"
        echo
        scripts/size.sh
    fi
} >"$report"

stamp=$(date -u +%Y%m%d-%H%M%S)
cp "$report" "$OUT/bench-udp-$stamp.md"
cp "$report" "$OUT/latest.md"
echo >&2
cat "$report"
echo >&2
echo "written to $OUT/bench-udp-$stamp.md" >&2
