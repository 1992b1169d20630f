#!/usr/bin/env bash
# Tunnel benchmark: a 20 Mbit/s TS through a relay-mode tunnel on loopback (quoll egress →
# stand-in relay → quoll ingress) against quoll's own plain UDP relay of the same stream, in
# the same run. Not part of the test command.
#
#   scripts/bench-tunnel.sh [-d SECONDS] [--rate MBIT] [--reps N]
#
# Per repetition, one after the other on the same generated TS (examples/udp_pace.rs, which
# stamps each datagram with its send time):
#   plain:  udp_pace → quoll (a flow, UDP in → UDP out) → udp_pace recv
#   tunnel: udp_pace → quoll A (tunnel egress) → fake_relay → quoll B (tunnel ingress) → recv
# Measured: CPU seconds of each quoll over the run (every thread, /proc/PID/task/*/schedstat),
# per GB of payload sent; peak RSS (VmHWM); one-way latency p50/p99 at the receiver; loss.
# The figure the issue asks for: each edge's CPU per GB / the plain relay's (target <= 2).
# Output: a markdown table on stdout and in bench-out/bench-tunnel-DATE.md.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

DUR=20
RATE=20
REPS=3
while [ $# -gt 0 ]; do
    case "$1" in
        -d | --duration) DUR=$2; shift 2 ;;
        --rate) RATE=$2; shift 2 ;;
        --reps) REPS=$2; shift 2 ;;
        *) sed -n '2,15p' "$0" >&2; exit 2 ;;
    esac
done

need ffmpeg awk curl

OUT=bench-out
mkdir -p "$OUT"
bench_scratch

echo "building release quoll, udp_pace and fake_relay ..." >&2
# Separate builds: the examples unify dev-dependency features; the quoll measured is the
# product binary (the one scripts/size.sh builds).
cargo build --release -q --bin quoll
cargo build --release -q --example udp_pace --example fake_relay
QUOLL=target/release/quoll
PACE=target/release/examples/udp_pace
RELAY=target/release/examples/fake_relay

TS=$TMP/in.ts
echo "generating $TS ..." >&2
make_cbr_ts "$TS"

ID=6f1d6c1e-0a6b-4c1e-9d3e-2a1b3c4d5eb0
KEY=1f2e3d4c5b6a79881f2e3d4c5b6a79881f2e3d4c5b6a79881f2e3d4c5b6a7988
SECRET=a1b2c3d4e5f60718a1b2c3d4e5f60718a1b2c3d4e5f60718a1b2c3d4e5f60718

# start_quoll NAME API_PORT JSON_BODY → sets QPID; the body is the config minus server/storage.
start_quoll() {
    local name=$1 port=$2 body=$3
    mkdir -p "$TMP/$name"
    cat >"$TMP/$name/config.json" <<EOF
{"version":1,"server":{"listen_addr":"127.0.0.1","listen_port":$port},
 "storage":{"data_dir":"$TMP/$name/data"}, $body}
EOF
    QUOLL_RUNTIME_DIR=$TMP/$name/run "$QUOLL" run --config "$TMP/$name/config.json" \
        >"$TMP/$name/log" 2>&1 &
    QPID=$!
    PIDS+=("$QPID")
    local i
    for i in $(seq 1 200); do
        grep -q "quoll ready" "$TMP/$name/log" && return 0
        sleep 0.05
    done
    echo "$name did not start:" >&2
    tail -n 20 "$TMP/$name/log" >&2
    exit 1
}

# wait_ready NAME API_PORT: the tunnel says "ready" in /api/v1/stats.
wait_ready() {
    local name=$1 port=$2 i token
    token=$(cat "$TMP/$name/data/api-token")
    for i in $(seq 1 300); do
        curl -s -H "Authorization: Bearer $token" "http://127.0.0.1:$port/api/v1/stats" |
            grep -q '"state":"ready"' && return 0
        sleep 0.1
    done
    echo "$name: tunnel never ready" >&2
    tail -n 20 "$TMP/$name/log" >&2
    exit 1
}

# measure LABEL IN_PORT OUT_PORT PID... → one row; CPU per GB of each PID.
ROWS=()
declare -A CPUGB
measure() {
    local label=$1 in_port=$2 out_port=$3
    shift 3
    local pids=("$@") c0=() c1=() p
    : >"$TMP/recv.txt"
    "$PACE" recv --stamp 1500 $((DUR + 30)) "127.0.0.1:$out_port" >"$TMP/recv.txt" &
    local rpid=$!
    PIDS+=("$rpid")
    for p in $(seq 1 100); do grep -q ready "$TMP/recv.txt" && break; sleep 0.05; done
    sleep 0.5
    for p in "${pids[@]}"; do c0+=("$(cpu_ns "$p")"); done
    local sent
    sent=$("$PACE" send --stamp "$TS" "127.0.0.1:$in_port" "$RATE" "$DUR")
    wait "$rpid"
    for p in "${pids[@]}"; do c1+=("$(cpu_ns "$p")"); done
    local spk sby rpk p50 p99 i cells=""
    spk=$(sed -n 's/.*sent packets=\([0-9]*\).*/\1/p' <<<"$sent")
    sby=$(sed -n 's/.* bytes=\([0-9]*\).*/\1/p' <<<"$sent")
    rpk=$(sed -n 's/.*packets=\([0-9]*\).*/\1/p' "$TMP/recv.txt" | tail -n1)
    p50=$(sed -n 's/.*lat_p50_us=\([0-9]*\).*/\1/p' "$TMP/recv.txt")
    p99=$(sed -n 's/.*lat_p99_us=\([0-9]*\).*/\1/p' "$TMP/recv.txt")
    for i in "${!pids[@]}"; do
        local cpugb rss
        cpugb=$(awk -v a="${c0[$i]}" -v b="${c1[$i]}" -v by="$sby" 'BEGIN { printf "%.2f", (b - a) / 1e9 / (by / 1e9) }')
        rss=$(awk -v k="$(vm_hwm_kb "${pids[$i]}")" 'BEGIN { printf "%.1f", k / 1024 }')
        CPUGB["$label/$i"]=$cpugb
        cells+="${cells:+ / }$cpugb s/GB, $rss MiB"
    done
    ROWS+=("| $label | $spk | $((spk - rpk)) | $cells | ${p50:-?} | ${p99:-?} |")
    echo "   $label: sent $spk, lost $((spk - rpk)), $cells, latency p50 ${p50}us p99 ${p99}us" >&2
}

start=$(date -u '+%Y-%m-%d %H:%M UTC')
load0=$(cut -d' ' -f1-3 /proc/loadavg)
RATIOS=()
for rep in $(seq 1 "$REPS"); do
    base=$((28000 + rep * 20))
    echo "== repetition $rep" >&2
    # Plain relay: a flow, UDP in → UDP out.
    start_quoll "plain-$rep" $((base + 1)) "\"flows\":[{\"id\":\"b\",\"name\":\"b\",\"enabled\":true,
        \"input\":{\"type\":\"udp\",\"bind_addr\":\"127.0.0.1:$((base + 2))\"},
        \"outputs\":[{\"type\":\"udp\",\"id\":\"o\",\"name\":\"o\",\"dest_addr\":\"127.0.0.1:$((base + 3))\"}]}]"
    plain=$QPID
    measure "plain relay (rep $rep)" $((base + 2)) $((base + 3)) "$plain"
    kill "$plain"; wait "$plain" 2>/dev/null || true

    # The tunnel: A (egress) → relay → B (ingress).
    exec {RIN}> >("$RELAY" $((base + 4)) "$ID" "$SECRET" >"$TMP/relay-$rep.txt")
    for i in $(seq 1 100); do grep -q fingerprint "$TMP/relay-$rep.txt" && break; sleep 0.05; done
    fp=$(sed -n 's/.*fingerprint=\([0-9A-F:]*\).*/\1/p' "$TMP/relay-$rep.txt")
    tunnel() { # tunnel DIRECTION LOCAL_PORT
        echo "\"tunnel_tls\":{\"cert_fingerprints\":[\"$fp\"]},\"tunnels\":[{\"id\":\"$ID\",\"name\":\"bench\",
            \"protocol\":\"udp\",\"mode\":\"relay\",\"direction\":\"$1\",\"local_addr\":\"127.0.0.1:$2\",
            \"relay_addr\":\"127.0.0.1:$((base + 4))\",\"tunnel_encryption_key\":\"$KEY\",
            \"tunnel_bind_secret\":\"$SECRET\"}]"
    }
    start_quoll "a-$rep" $((base + 5)) "$(tunnel egress $((base + 6)))"
    qa=$QPID
    start_quoll "b-$rep" $((base + 7)) "$(tunnel ingress $((base + 8)))"
    qb=$QPID
    wait_ready "a-$rep" $((base + 5))
    wait_ready "b-$rep" $((base + 7))
    measure "tunnel A / B (rep $rep)" $((base + 6)) $((base + 8)) "$qa" "$qb"
    kill "$qa" "$qb"; wait "$qa" "$qb" 2>/dev/null || true
    exec {RIN}>&-
    RATIOS+=("$(awk -v a="${CPUGB["tunnel A / B (rep $rep)/0"]}" -v b="${CPUGB["tunnel A / B (rep $rep)/1"]}" \
        -v p="${CPUGB["plain relay (rep $rep)/0"]}" 'BEGIN { printf "%.2f %.2f", a / p, b / p }')")
done

report=$TMP/report.md
{
    echo "## Tunnel benchmark, $start"
    echo
    echo "Machine: $(nproc) cores, $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)," \
        "kernel $(uname -r); load average at start $load0."
    echo "quoll $("$QUOLL" --version | cut -d' ' -f2) (release); ${RATE} Mbit/s CBR TS in 1316-byte datagrams for ${DUR}s per case, loopback; the relay is tests/fake_relay as a process."
    echo "Command: \`scripts/bench-tunnel.sh -d $DUR --rate $RATE --reps $REPS\`"
    echo
    echo "| case | datagrams sent | lost | CPU per GB, peak RSS (each quoll) | latency p50 µs | p99 µs |"
    echo "| --- | ---: | ---: | --- | ---: | ---: |"
    printf '%s\n' "${ROWS[@]}"
    echo
    echo "Edge CPU per GB / plain relay CPU per GB, per repetition (egress A, ingress B; target <= 2):"
    echo
    for r in "${!RATIOS[@]}"; do
        read -r ra rb <<<"${RATIOS[$r]}"
        awk -v a="$ra" -v b="$rb" -v n=$((r + 1)) 'BEGIN {
            printf "- rep %d: A %.2f, B %.2f (%s)\n", n, a, b, (a <= 2 && b <= 2 ? "PASS" : "FAIL") }'
    done
} >"$report"

stamp=$(date -u +%Y%m%d-%H%M%S)
cp "$report" "$OUT/bench-tunnel-$stamp.md"
echo >&2
cat "$report"
echo >&2
echo "written to $OUT/bench-tunnel-$stamp.md" >&2
