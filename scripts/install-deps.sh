#!/usr/bin/env bash
# Installs what the build, the tests and the cross tests need on a Debian 12 machine
# (root, apt). Idempotent: when everything is present it only checks and says so.
#   scripts/install-deps.sh            CI set: aarch64 cross toolchain, qemu-user, test peers
#   scripts/install-deps.sh --armv7    also the armv7 (armhf) cross toolchain
set -euo pipefail

arches=(arm64)
pkgs=(
    rustc-web                    # Debian's rustc (1.96): has the cross std below
    libstd-rust-web-dev:arm64    # its aarch64 std (same version as rustc-web)
    gcc-aarch64-linux-gnu        # linker for aarch64
    qemu-user                    # qemu-aarch64 / qemu-arm (runner for the cross tests)
    ffmpeg                       # test peer + benchmark input generator
    srt-tools                    # srt-live-transmit: test peer + benchmark reference
    time                         # /usr/bin/time for scripts
    # Bridge tests: GStreamer's RTSP server serving an H.264 + AAC test pattern
    # (tests/support/rtsp_server.py), and a real browser playing the WebSocket stream.
    python3-gi                   # GObject introspection for Debian's /usr/bin/python3
    gir1.2-gst-rtsp-server-1.0   # GstRtspServer (pulls libgstrtspserver and gir1.2-gstreamer)
    gstreamer1.0-plugins-base    # videotestsrc, audiotestsrc, audioconvert
    gstreamer1.0-plugins-good    # rtph264pay, rtpmp4gpay
    gstreamer1.0-plugins-ugly    # x264enc
    gstreamer1.0-plugins-bad     # x265enc, rtph265pay (the H.265 camera)
    gstreamer1.0-libav           # avenc_aac
    chromium                     # headless browser: mpegts.js playback (tests/bridge_browser.rs)
)
if [ "${1:-}" = --armv7 ]; then
    arches+=(armhf)
    pkgs+=(libstd-rust-web-dev:armhf gcc-arm-linux-gnueabihf)
fi

SUDO=
[ "$(id -u)" = 0 ] || SUDO=sudo
export DEBIAN_FRONTEND=noninteractive

missing=()
for p in "${pkgs[@]}"; do
    st=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
    [ "$st" = installed ] || missing+=("$p")
done
for a in "${arches[@]}"; do
    if ! dpkg --print-foreign-architectures | grep -qx "$a"; then
        $SUDO dpkg --add-architecture "$a"
        echo "added dpkg architecture $a"
    fi
done
if [ "${#missing[@]}" -eq 0 ]; then
    echo "all ${#pkgs[@]} packages already installed"
else
    echo "installing: ${missing[*]}"
    log=$(mktemp)
    # One update; a mirror caught mid-sync fails it for a while ("File has unexpected size"),
    # so retry, then try the install with whatever lists there are.
    for try in 1 2 3; do
        $SUDO apt-get update -qq >"$log" 2>&1 && break
        echo "apt-get update failed (try $try/3):" >&2
        grep -E '^(E|W):' "$log" | head -n 5 >&2
        [ "$try" = 3 ] || sleep 15
    done
    if ! $SUDO apt-get install -y -qq "${missing[@]}" >"$log" 2>&1; then
        tail -n 40 "$log"
        echo "apt-get install failed" >&2
        exit 1
    fi
    rm -f "$log"
fi

# The rustup toolchain must have rustfmt and clippy (they cannot be downloaded here).
for c in fmt clippy; do
    cargo "$c" --version >/dev/null 2>&1 || { echo "cargo $c missing from the rust toolchain" >&2; exit 1; }
done
echo "cargo: $(cargo --version)"
echo "rustc: $(rustc --version) (host), $(/usr/bin/rustc --version) (cross)"
echo "nextest: $(cargo nextest --version 2>/dev/null | head -n 1 || echo 'not installed: cargo test is used')"
echo "qemu: $(qemu-aarch64 --version | head -n 1)"
echo "bridge peers: $(/usr/bin/python3 -c "import gi; gi.require_version('Gst', '1.0'); from gi.repository import Gst; Gst.init(None); print(Gst.version_string())"); $(chromium --version 2>/dev/null | head -n 1)"
echo "peers: $(ffmpeg -version | head -n 1 | cut -d' ' -f1-3); $(srt-live-transmit -version 2>&1 | grep -m1 -o 'SRT Library version: [0-9.]*')"
