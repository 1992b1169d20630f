#!/usr/bin/env bash
# RTSP->WebSocket bridge benchmark: one camera stream (GStreamer's RTSP server, H.264 at
# --rate kbit/s + AAC) to 1, 10 and 50 WebSocket viewers, the in-process worker (retina +
# Quoll's remux) against the FFmpeg `-c copy` worker, in the same run and the same quoll.
# Not part of the test command (it takes a few minutes).
#
#   scripts/bench-bridge.sh [-d SECONDS] [--clients "1 10 50"] [--rate 4000] [--size 640x360]
#                           [--quoll PATH] [--workers "inproc ffmpeg"]
#
# Per case: N viewers (examples/ws_sink.rs) read the stream for SECONDS after a warm-up.
# --quoll runs that binary instead of building target/release/quoll (to compare two builds
# in one run, against the same camera). --workers picks the cases.
# Measured: CPU of quoll (and of its ffmpeg child for the ffmpeg worker), the threads' run
# time in ns from /proc/PID/task/*/schedstat over the window (`cpu_ns`), in % of one core;
# peak RSS sampled every 0.5 s over the window (quoll + ffmpeg child); bytes each viewer got
# (min) as a check that nobody starved.
# The camera (x264 encoding) runs on the same machine: its CPU is not counted.
# Output: a markdown table on stdout and in bench-out/bench-bridge-DATE.md (+ latest).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

DUR=15
CLIENTS="1 10 50"
RATE=4000
SIZE=640x360
QUOLL=
WORKERS="inproc ffmpeg"
while [ $# -gt 0 ]; do
    case "$1" in
        -d | --duration) DUR=$2; shift 2 ;;
        --clients) CLIENTS=$2; shift 2 ;;
        --rate) RATE=$2; shift 2 ;;
        --size) SIZE=$2; shift 2 ;;
        --quoll) QUOLL=$2; shift 2 ;;
        --workers) WORKERS=$2; shift 2 ;;
        *) sed -n '2,18p' "$0" >&2; exit 2 ;;
    esac
done
PY=${QUOLL_GST_PYTHON:-/usr/bin/python3}
need ffmpeg awk "$PY"

OUT=bench-out
mkdir -p "$OUT"
bench_scratch

if [ -z "$QUOLL" ]; then
    echo "building release quoll ..." >&2
    cargo build --release -q --bin quoll
    QUOLL=target/release/quoll
fi
echo "building release ws_sink ..." >&2
cargo build --release -q --example ws_sink
SINK=target/release/examples/ws_sink

free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

RTSP_PORT=$(free_port)
# Snow is incompressible, and CBR pads: the stream really is RATE kbit/s.
"$PY" tests/support/rtsp_server.py --port "$RTSP_PORT" --bitrate "$RATE" --size "$SIZE" \
    --pattern snow --cbr >"$TMP/rtsp.out" &
PIDS+=($!)
for _ in $(seq 100); do grep -q READY "$TMP/rtsp.out" && break; sleep 0.1; done
grep -q READY "$TMP/rtsp.out" || { echo "rtsp server did not start" >&2; exit 1; }
URL="rtsp://127.0.0.1:$RTSP_PORT/test"

API=$(free_port)
# The API token is set in the config, so /healthz (sessions, ffmpeg pid) can be read with it
# from any build; `--quoll` builds from before tokens existed keep it as an unknown field.
TOKEN=$("$PY" -c 'import secrets; print(secrets.token_hex(32))')
AUTH="Authorization: Bearer $TOKEN"
cat >"$TMP/config.json" <<JSON
{"version": 1, "server": {"listen_addr": "127.0.0.1", "listen_port": $API, "api_token": "$TOKEN"},
 "flows": [],
 "bridge": {"streams": {"inproc": {"rtsp_url": "$URL"},
                        "ffmpeg": {"rtsp_url": "$URL", "worker": "ffmpeg"}},
            "max_clients_per_stream": 64, "idle_timeout_ms": 30000}}
JSON
QUOLL_RUNTIME_DIR="$TMP/run" QUOLL_LOG=warn "$QUOLL" run --config "$TMP/config.json" 2>"$TMP/quoll.log" &
QPID=$!
PIDS+=("$QPID")
for _ in $(seq 100); do curl -sf "127.0.0.1:$API/healthz" >/dev/null && break; sleep 0.1; done

ffmpeg_pid() {
    curl -s -H "$AUTH" "127.0.0.1:$API/healthz" | "$PY" -c 'import json,sys; s=[x for x in json.load(sys.stdin)["sessions"] if x["streamId"]=="ffmpeg" and x["pid"]]; print(s[0]["pid"] if s else 0)'
}

ROWS=()
for worker in $WORKERS; do
    for n in $CLIENTS; do
        # The viewers outlast the window (warm-up 3 s, sampling overshoot) by a margin.
        "$SINK" "ws://127.0.0.1:$API/ws/stream/$worker" "$n" $((DUR + 8)) >"$TMP/sink.out" &
        SPID=$!
        sleep 3 # warm-up: session start, first key frame, ffmpeg probing
        FPID=0
        [ "$worker" = ffmpeg ] && FPID=$(ffmpeg_pid)
        q0=$(cpu_ns "$QPID"); f0=0; [ "$FPID" != 0 ] && f0=$(cpu_ns "$FPID")
        peak=0
        end=$(($(date +%s%N) + DUR * 1000000000))
        while [ "$(date +%s%N)" -lt "$end" ]; do
            r=$(rss_kb "$QPID")
            [ "$FPID" != 0 ] && r=$((r + $(rss_kb "$FPID")))
            [ "$r" -gt "$peak" ] && peak=$r
            sleep 0.5
        done
        q1=$(cpu_ns "$QPID"); f1=0; [ "$FPID" != 0 ] && f1=$(cpu_ns "$FPID")
        wait "$SPID" || true
        read -r _ total minb _ <"$TMP/sink.out" || { total=0; minb=0; }
        qcpu=$(awk -v a="$q0" -v b="$q1" -v d="$DUR" 'BEGIN { printf "%.1f", (b - a) / 1e9 / d * 100 }')
        fcpu=$(awk -v a="$f0" -v b="$f1" -v d="$DUR" 'BEGIN { printf "%.1f", (b - a) / 1e9 / d * 100 }')
        tcpu=$(awk -v a="$qcpu" -v b="$fcpu" 'BEGIN { printf "%.1f", a + b }')
        mbit=$(awk -v b="$minb" -v d="$((DUR + 8))" 'BEGIN { printf "%.2f", b * 8 / d / 1e6 }')
        ROWS+=("| $worker | $n | $qcpu | $fcpu | $tcpu | $((peak / 1024)) | $mbit |")
        echo "${ROWS[-1]}" >&2
        # Let the session end (last client gone) before the next case.
        for _ in $(seq 50); do
            curl -s -H "$AUTH" "127.0.0.1:$API/healthz" | grep -q '"sessions":\[\]' && break
            sleep 0.1
        done
    done
done

{
    echo "## bridge benchmark $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, $(uname -m)"
    echo
    echo "Camera: GStreamer H.264 ${RATE} kbit/s ${SIZE} 25 fps + AAC, RTSP over TCP on loopback; ${DUR} s per case."
    echo
    echo "| worker | clients | quoll CPU % | ffmpeg CPU % | total CPU % | peak RSS MiB | min viewer Mbit/s |"
    echo "|---|---|---|---|---|---|---|"
    printf '%s\n' "${ROWS[@]}"
} | tee "$OUT/bench-bridge-$(date -u +%Y%m%d-%H%M).md" >"$OUT/bench-bridge-latest.md"
cat "$OUT/bench-bridge-latest.md"
