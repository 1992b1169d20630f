#!/usr/bin/env bash
# RTMP→UDP and TS→HLS benchmark: quoll against ffmpeg doing the same remux, on the same
# source, in the same run, on loopback. Not part of the test command (a few minutes).
#
#   scripts/bench-rtmp-hls.sh [-d SECONDS] [-n REPETITIONS]
#
# Source (generated once, cached in target/bench-rtmp-hls/): 30 s of testsrc2 720p25 H.264
# (x264 ultrafast, 12 Mbit/s, 2 s GOP) + AAC as FLV, and the same streams remuxed to a CBR
# 14 Mbit/s TS. Each case runs SECONDS (< 30, so no source loops), and every case of a
# repetition runs once, interleaved, REPETITIONS times:
#   rtmp→udp: `udp_pace recv` counts what arrives on 127.0.0.1:OUT; the relay is quoll (one
#     flow: rtmp input, udp output) or `ffmpeg -listen 1 -i rtmp://… -c copy -f mpegts udp://…`;
#     the publisher is `ffmpeg -re -i SRC.flv -c copy -f flv rtmp://…`, stopped after SECONDS.
#     CPU s/GB is per GB of UDP payload received (the TS carried).
#   ts→hls: nginx with WebDAV PUT/DELETE (as tests/hls_output.rs runs it) takes the uploads;
#     the relay is quoll (udp input, hls output) or `ffmpeg -i udp://… -c copy -f hls
#     -method PUT …`; `udp_pace send` pushes the TS at 14 Mbit/s (its mux rate: real time).
#     CPU s/GB is per GB of TS sent in.
# Measured on the relay process only: CPU time over the window (first field of
# /proc/PID/task/*/schedstat, nanoseconds, all threads: `cpu_ns` in scripts/lib.sh) and peak
# RSS (VmHWM), both read while it still runs. Reported: every case, then the median of the
# repetitions and the quoll/ffmpeg ratio of the medians (target <= 0.5, issue #16).
# Output: markdown on stdout and in bench-out/bench-rtmp-hls-DATE.md (+ latest-rtmp-hls.md).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

DUR=12
REPS=3
while [ $# -gt 0 ]; do
    case "$1" in
        -d | --duration) DUR=$2; shift 2 ;;
        -n | --reps) REPS=$2; shift 2 ;;
        *) sed -n '2,22p' "$0" >&2; exit 2 ;;
    esac
done
[ "$DUR" -lt 30 ] || { echo "-d must be under 30 s (the source is 30 s, not looped)" >&2; exit 2; }

need ffmpeg nginx awk

OUT=bench-out
mkdir -p "$OUT"
bench_scratch

echo "building release quoll and udp_pace ..." >&2
# Two builds, as in bench-udp.sh: the measured binary is the product one.
cargo build --release -q --bin quoll
cargo build --release -q --example udp_pace
QUOLL=target/release/quoll
PACE=target/release/examples/udp_pace

SRC=target/bench-rtmp-hls
FLV=$SRC/src-720p25-12M.flv
TS=$SRC/src-720p25-12M-cbr14M.ts
TS_RATE=14
mkdir -p "$SRC"
if [ ! -s "$FLV" ] || [ ! -s "$TS" ]; then
    echo "generating $FLV and $TS (once) ..." >&2
    ffmpeg -nostdin -hide_banner -loglevel error -y \
        -f lavfi -i testsrc2=size=1280x720:rate=25 -f lavfi -i sine=frequency=1000:sample_rate=48000 \
        -t 30 -c:v libx264 -preset ultrafast -b:v 12M -maxrate 12M -bufsize 6M \
        -g 50 -keyint_min 50 -sc_threshold 0 -pix_fmt yuv420p -c:a aac -b:a 128k \
        -f flv "$FLV.tmp"
    ffmpeg -nostdin -hide_banner -loglevel error -y -i "$FLV.tmp" -c copy \
        -f mpegts -muxrate ${TS_RATE}M "$TS.tmp"
    mv "$FLV.tmp" "$FLV"
    mv "$TS.tmp" "$TS"
fi

tcp_listening() { # tcp_listening PORT: a listening TCP socket on 127.0.0.1:PORT or *:PORT
    awk -v a="$(printf ':%04X' "$1")" '$4 == "0A" && substr($2, length($2) - 4) == a { f = 1 } END { exit !f }' \
        /proc/net/tcp /proc/net/tcp6
}
udp_bound() {
    awk -v a="$(printf ':%04X' "$1")" 'substr($2, length($2) - 4) == a { f = 1 } END { exit !f }' \
        /proc/net/udp /proc/net/udp6
}
wait_for() { # wait_for SECONDS CMD...: poll every 50 ms
    local i n=$(($1 * 20))
    shift
    for i in $(seq 1 "$n"); do "$@" && return 0; sleep 0.05; done
    return 1
}
gone() { [ ! -e "/proc/$1" ] || grep -q '^[0-9]* ([^)]*) Z' "/proc/$1/stat" 2>/dev/null; }
# stop PID: SIGTERM, then SIGKILL after 5 s (ffmpeg can hang in its exit path on a PUT).
stop() {
    kill "$1" 2>/dev/null || true
    if ! wait_for 5 gone "$1"; then
        echo "   (pid $1 ignored SIGTERM for 5 s: SIGKILL)" >&2
        kill -9 "$1" 2>/dev/null || true
    fi
    wait "$1" 2>/dev/null || true
}
fail() { # fail MSG LOG
    echo "$1" >&2
    tail -n 20 "$2" >&2 || true
    exit 1
}

# One nginx for the whole run (WebDAV PUT/DELETE under /live/, as tests/hls_output.rs).
WEB=$TMP/nginx
WEB_PORT=29990
mkdir -p "$WEB/www/live"
cat >"$WEB/nginx.conf" <<EOF
daemon off;
master_process off;
pid $WEB/nginx.pid;
error_log $WEB/error.log;
events { worker_connections 64; }
http {
 access_log off;
 client_body_temp_path $WEB/body;
 proxy_temp_path $WEB/proxy;
 fastcgi_temp_path $WEB/fastcgi;
 uwsgi_temp_path $WEB/uwsgi;
 scgi_temp_path $WEB/scgi;
 server {
  listen 127.0.0.1:$WEB_PORT;
  root $WEB/www;
  client_max_body_size 64m;
  location /live/ { dav_methods PUT DELETE; create_full_put_path on; }
 }
}
EOF
nginx -p "$WEB" -c "$WEB/nginx.conf" >"$WEB/stdout.log" 2>&1 &
PIDS+=($!)
wait_for 10 tcp_listening "$WEB_PORT" || fail "nginx did not listen" "$WEB/error.log"

ROWS=()
declare -A CPUGB RSS
case_no=0

# quoll_start CFG LOG: start quoll; sets PID.
quoll_start() {
    "$QUOLL" run --config "$1" >"$2" 2>&1 &
    PID=$!
    PIDS+=("$PID")
}
quoll_cfg() { # quoll_cfg FILE API_PORT INPUT_JSON OUTPUT_JSON
    mkdir -p "$TMP/data-$case_no"
    cat >"$1" <<EOF
{"version":1,"server":{"listen_addr":"127.0.0.1","listen_port":$2},
 "storage":{"data_dir":"$TMP/data-$case_no"},
 "flows":[{"id":"bench","name":"bench","enabled":true,"input":$3,"outputs":[$4]}]}
EOF
}

# record RELAY CASE CPU_NS_DELTA BYTES HWM_KB EXTRA
record() {
    local relay=$1 kind=$2 dns=$3 bytes=$4 hwm=$5 extra=$6
    local cpu cpugb rss gb mbit
    cpu=$(awk -v d="$dns" 'BEGIN { printf "%.3f", d / 1e9 }')
    gb=$(awk -v b="$bytes" 'BEGIN { printf "%.4f", b / 1e9 }')
    mbit=$(awk -v b="$bytes" -v s="$DUR" 'BEGIN { printf "%.1f", b * 8 / s / 1e6 }')
    cpugb=$(awk -v c="$cpu" -v b="$bytes" 'BEGIN { if (b > 0) printf "%.2f", c / (b / 1e9); else print "nan" }')
    rss=$(awk -v k="$hwm" 'BEGIN { printf "%.1f", k / 1024 }')
    CPUGB["$relay/$kind"]+="$cpugb "
    RSS["$relay/$kind"]+="$rss "
    ROWS+=("| $rep | $kind | $relay | $gb | $mbit | $cpu | $cpugb | $rss | $extra |")
    echo "   $relay $kind: ${gb} GB (${mbit} Mbit/s), cpu ${cpu}s, ${cpugb} s/GB, peak RSS ${rss} MiB, $extra" >&2
}

# RTMP in → UDP TS out.
run_rtmp() { # run_rtmp RELAY
    local relay=$1
    case_no=$((case_no + 1))
    local base=$((29000 + case_no * 10))
    local rtmp_port=$base out_port=$((base + 1)) api_port=$((base + 9))
    echo "== rep $rep: rtmp→udp, $relay (${DUR}s)" >&2
    : >"$TMP/recv.txt"
    "$PACE" recv 3000 $((DUR + 40)) "127.0.0.1:$out_port" >"$TMP/recv.txt" &
    local rpid=$!
    PIDS+=("$rpid")
    wait_for 5 grep -q ready "$TMP/recv.txt"
    local log=$TMP/relay-$case_no.log
    if [ "$relay" = ffmpeg ]; then
        ffmpeg -nostdin -hide_banner -loglevel error -listen 1 \
            -i "rtmp://127.0.0.1:$rtmp_port/app/key" -c copy \
            -f mpegts "udp://127.0.0.1:$out_port?pkt_size=1316" >"$log" 2>&1 &
        PID=$!
        PIDS+=("$PID")
    else
        quoll_cfg "$TMP/q-$case_no.json" "$api_port" \
            "{\"type\":\"rtmp\",\"listen_addr\":\"127.0.0.1:$rtmp_port\",\"app\":\"app\",\"stream_key\":\"key\"}" \
            "{\"type\":\"udp\",\"id\":\"o\",\"name\":\"o\",\"dest_addr\":\"127.0.0.1:$out_port\"}"
        quoll_start "$TMP/q-$case_no.json" "$log"
    fi
    wait_for 10 tcp_listening "$rtmp_port" || fail "$relay did not listen on $rtmp_port" "$log"
    local c0 c1 hwm
    c0=$(cpu_ns "$PID")
    ffmpeg -nostdin -hide_banner -loglevel error -re -i "$FLV" -c copy \
        -f flv "rtmp://127.0.0.1:$rtmp_port/app/key" >"$TMP/pub.log" 2>&1 &
    local ppid=$!
    PIDS+=("$ppid")
    sleep "$DUR"
    c1=$(cpu_ns "$PID")
    hwm=$(vm_hwm_kb "$PID")
    stop "$ppid"
    wait "$rpid" || true
    stop "$PID"
    local bytes
    bytes=$(sed -n 's/^recv .* bytes=\([0-9]*\).*/\1/p' "$TMP/recv.txt")
    [ "${bytes:-0}" -gt 0 ] || fail "$relay: nothing arrived on UDP" "$log"
    record "$relay" rtmp-udp $((c1 - c0)) "$bytes" "$hwm" "-"
}

# UDP TS in → HLS PUT out.
run_hls() { # run_hls RELAY
    local relay=$1
    case_no=$((case_no + 1))
    local base=$((29000 + case_no * 10))
    local in_port=$base api_port=$((base + 9)) dir=c$case_no
    echo "== rep $rep: ts→hls, $relay (${DUR}s)" >&2
    local log=$TMP/relay-$case_no.log
    local url="http://127.0.0.1:$WEB_PORT/live/$dir/index.m3u8"
    if [ "$relay" = ffmpeg ]; then
        ffmpeg -nostdin -hide_banner -loglevel error \
            -i "udp://127.0.0.1:$in_port?fifo_size=1000000&overrun_nonfatal=1" -c copy \
            -f hls -method PUT -http_persistent 1 -hls_time 2 -hls_list_size 6 \
            -hls_flags delete_segments "$url" >"$log" 2>&1 &
        PID=$!
        PIDS+=("$PID")
    else
        quoll_cfg "$TMP/q-$case_no.json" "$api_port" \
            "{\"type\":\"udp\",\"bind_addr\":\"127.0.0.1:$in_port\"}" \
            "{\"type\":\"hls\",\"id\":\"h\",\"ingest_url\":\"$url\",\"segment_duration_ms\":2000,\"playlist_size\":6}"
        quoll_start "$TMP/q-$case_no.json" "$log"
    fi
    wait_for 10 udp_bound "$in_port" || fail "$relay did not bind $in_port" "$log"
    sleep 0.5
    local c0 c1 hwm sent bytes
    c0=$(cpu_ns "$PID")
    sent=$("$PACE" send "$TS" "127.0.0.1:$in_port" "$TS_RATE" "$DUR")
    sleep 0.5 # the segment being cut and its upload
    c1=$(cpu_ns "$PID")
    hwm=$(vm_hwm_kb "$PID")
    stop "$PID"
    bytes=$(sed -n 's/.* bytes=\([0-9]*\).*/\1/p' <<<"$sent")
    local segs
    segs=$(grep -s '^[^#]' "$WEB/www/live/$dir/index.m3u8" | wc -l)
    [ "$segs" -gt 0 ] || fail "$relay: no playlist with segments on nginx" "$log"
    record "$relay" ts-hls $((c1 - c0)) "$bytes" "$hwm" "$segs segments in the last playlist"
}

start=$(date -u '+%Y-%m-%d %H:%M UTC')
load0=$(cut -d' ' -f1-3 /proc/loadavg)
for rep in $(seq 1 "$REPS"); do
    # Alternate which relay goes first, so a load change during the run hits both.
    if [ $((rep % 2)) = 1 ]; then order="ffmpeg quoll"; else order="quoll ffmpeg"; fi
    for r in $order; do run_rtmp "$r"; done
    for r in $order; do run_hls "$r"; done
done
load1=$(cut -d' ' -f1-3 /proc/loadavg)

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{ a[NR] = $1 } END { if (NR % 2) print a[(NR + 1) / 2]; else printf "%.2f\n", (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }

report=$TMP/report.md
{
    echo "## RTMP→UDP and TS→HLS benchmark, $start"
    echo
    echo "Machine: $(nproc) cores, $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)," \
        "kernel $(uname -r); load average at start $load0, at the end $load1."
    echo "quoll $("$QUOLL" --version | cut -d' ' -f2) (release), $(ffmpeg -version | head -1 | cut -d' ' -f1-3)," \
        "$(nginx -v 2>&1 | sed 's/.*: //'); ${DUR}s per case, $REPS repetitions interleaved, loopback."
    echo "Source: 720p25 H.264 12 Mbit/s (x264 ultrafast, 2 s GOP) + AAC 128k; RTMP published" \
        "with \`ffmpeg -re -c copy -f flv\`, TS sent at its ${TS_RATE} Mbit/s mux rate."
    echo "Command: \`scripts/bench-rtmp-hls.sh -d $DUR -n $REPS\`"
    echo
    echo "| rep | case | relay | GB | Mbit/s | CPU s | CPU s/GB | peak RSS MiB | notes |"
    echo "| ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | --- |"
    printf '%s\n' "${ROWS[@]}"
    echo
    for k in rtmp-udp ts-hls; do
        q=$(median <<<"${CPUGB["quoll/$k"]}")
        f=$(median <<<"${CPUGB["ffmpeg/$k"]}")
        qr=$(median <<<"${RSS["quoll/$k"]}")
        fr=$(median <<<"${RSS["ffmpeg/$k"]}")
        awk -v k="$k" -v q="$q" -v f="$f" -v qr="$qr" -v fr="$fr" 'BEGIN {
            printf "- %s, medians: CPU s/GB quoll %.2f, ffmpeg %.2f, ratio %.2f (target <= 0.5: %s); peak RSS quoll %.1f MiB, ffmpeg %.1f MiB\n",
                k, q, f, q / f, (q <= 0.5 * f ? "PASS" : "FAIL"), qr, fr }'
    done
} >"$report"

stamp=$(date -u +%Y%m%d-%H%M%S)
cp "$report" "$OUT/bench-rtmp-hls-$stamp.md"
cp "$report" "$OUT/latest-rtmp-hls.md"
echo >&2
cat "$report"
echo >&2
echo "written to $OUT/bench-rtmp-hls-$stamp.md" >&2
