#!/usr/bin/env bash
# Installs what the build, the tests and the cross tests need on a Debian 12 machine (root or
# sudo, apt), then checks what it installed. Idempotent: when everything is present at the
# right versions it runs no apt command at all. scripts/test-all.sh calls it first.
#
#   scripts/install-deps.sh            aarch64 cross toolchain, qemu-user, the test peers
#   scripts/install-deps.sh --armv7    also the armv7 (armhf) cross toolchain, if it can be had
#
# The Rust cross toolchain is Debian's rustc-web with its aarch64 (and armv7) std. They must be
# at least `rust-version` of Cargo.toml and all of one version; otherwise this script stops and
# says which package, which version and why. An armv7 std that cannot be had at rustc-web's
# version does not stop it: the armv7 section is marked skipped, with the reason, in the status
# file that scripts/test-all.sh reads and repeats in its last lines.
#
# A mirror caught mid-sync fails one index ("File has unexpected size ... Mirror sync in
# progress?"), and apt then keeps *all* of that repository's old lists, so a stale candidate
# would be installed. When only an optional architecture's index (armhf) fails, the lists are
# fetched again without it; any other failure is reported and the version checks decide.
#
# Environment (the tests in tests/install_deps.rs set these; nobody else needs to):
#   QUOLL_DEPS_STATUS     status file (default target/install-deps.status)
#   CROSS_RUSTC           Debian's rustc (default /usr/bin/rustc)
#   QUOLL_APT_RETRY_WAIT  seconds between two tries of a failed apt-get update (default 20)
set -euo pipefail
cd "$(dirname "$0")/.."

want_armv7=0
case "${1:-}" in
    "") ;;
    --armv7) want_armv7=1 ;;
    *) echo "usage: $0 [--armv7]" >&2; exit 2 ;;
esac

STATUS=${QUOLL_DEPS_STATUS:-target/install-deps.status}
CROSS_RUSTC=${CROSS_RUSTC:-/usr/bin/rustc}
RETRY_WAIT=${QUOLL_APT_RETRY_WAIT:-20}
RUSTC_PKG=rustc-web
STD64=libstd-rust-web-dev:arm64
STD32=libstd-rust-web-dev:armhf
ARMV7_PKGS=("$STD32" gcc-arm-linux-gnueabihf)
pkgs=(
    gcc-aarch64-linux-gnu        # linker for aarch64
    qemu-user                    # qemu-aarch64 / qemu-arm (runner for the cross tests)
    ffmpeg                       # test peer + benchmark input generator
    srt-tools                    # srt-live-transmit: test peer + benchmark reference
    nginx                        # HLS ingest with WebDAV PUT/DELETE (tests/hls_output.rs)
    time                         # /usr/bin/time for scripts
    python3-venv                 # the Yocto layer's linter runs in a venv (scripts/lint-yocto.sh)
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
required_arches=(arm64)        # its lists must be current: the aarch64 suite always runs
optional_arches=()
[ "$want_armv7" = 0 ] || optional_arches=(armhf)

SUDO=
[ "$(id -u)" = 0 ] || SUDO=sudo
export DEBIAN_FRONTEND=noninteractive

say() { echo "install-deps: $*"; }
die() {
    echo "install-deps: ERROR: $*" >&2
    exit 1
}

rust_version=$(sed -n 's/^rust-version *= *"\([0-9.]*\)".*/\1/p' Cargo.toml | head -n 1)
[ -n "$rust_version" ] || die "no rust-version in Cargo.toml"

# ---- versions -----------------------------------------------------------------------------

# upstream VERSION: the upstream part of a Debian version (1:1.96.0+dfsg1-1~deb12u2 -> 1.96.0).
upstream() { sed -e 's/^[0-9]*://' -e 's/[-+~].*//' <<<"$1"; }
# version_ge A B: upstream version A is B or newer (1.90 counts as 1.90.0).
version_ge() { [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n 1)" = "$2" ]; }
installed_version() {
    { dpkg-query -W -f='${db:Status-Status} ${Version}\n' "$1" 2>/dev/null || true; } | sed -n 's/^installed //p'
}
candidate_version() {
    apt-cache policy "$1" 2>/dev/null | sed -n 's/^ *Candidate: //p' | grep -v '^(none)$' || true
}

# toolchain_problem WHAT RUSTC_VERSION STD_PKG STD_VERSION: why this rustc-web and std cannot
# build Quoll, or nothing when they can. WHAT says where the versions came from.
toolchain_problem() {
    local what=$1 rv=$2 std=$3 sv=$4
    if [ -z "$rv" ]; then
        echo "$RUSTC_PKG is not $what"
    elif ! version_ge "$(upstream "$rv")" "$rust_version"; then
        echo "$RUSTC_PKG $rv ($what) is older than rust-version $rust_version in Cargo.toml"
    elif [ -z "$sv" ]; then
        echo "$std is not $what"
    elif [ "$sv" != "$rv" ]; then
        echo "$std $sv ($what) is not the version of $RUSTC_PKG $rv: a std must match its rustc"
    fi
}

missing_pkgs() { # missing_pkgs PKG...: the ones not installed
    local p
    for p in "$@"; do
        [ -n "$(installed_version "$p")" ] || echo "$p"
    done
}

# ---- package lists ------------------------------------------------------------------------

lists_note=          # what the lists lack, for the armv7 reason
update_log=$(mktemp)
trap 'rm -f "$update_log"' EXIT

# failed_arches LOG: the architectures whose binary index failed to download; "?" for a
# failure that names none (a Release file, the network).
failed_arches() {
    local line
    { grep -E '^([EW]: Failed to fetch|Err:)' "$1" || true; } | while IFS= read -r line; do
        if [[ $line =~ /binary-([a-z0-9]+)/ ]] || [[ $line =~ \ ([a-z0-9]+)\ Packages ]]; then
            echo "${BASH_REMATCH[1]}"
        else
            echo "?"
        fi
    done | sort -u
}

apt_update() { # apt_update [apt options...]: 0 when every index was fetched
    local try
    for try in 1 2; do
        $SUDO apt-get update -qq "$@" >"$update_log" 2>&1 && return 0
        echo "install-deps: apt-get update${*:+ $*} failed (try $try/2):" >&2
        grep -E '^(E|W):' "$update_log" | head -n 6 >&2
        [ "$try" = 2 ] || sleep "$RETRY_WAIT"
    done
    return 1
}

update_lists() {
    apt_update && return 0
    local failed a keep=() bad_required=0
    failed=$(failed_arches "$update_log")
    for a in $failed; do
        if [[ " ${optional_arches[*]} " != *" $a "* ]]; then bad_required=1; fi
    done
    if [ "$bad_required" = 1 ] || [ -z "$failed" ]; then
        # Nothing to leave out: go on with the lists there are. If they are stale for what
        # matters, the toolchain check below says so and stops.
        echo "install-deps: WARNING: the package lists may be stale (failed: ${failed:-unknown})" >&2
        return 0
    fi
    # Only an optional architecture failed. apt kept the old lists of that whole repository,
    # for every architecture, so fetch them again without it.
    lists_note="the $(tr '\n' ' ' <<<"$failed")package lists could not be fetched: $(grep -m 1 -E '^[EW]: Failed to fetch' "$update_log" | sed 's/ *\[IP:.*//')"
    keep=("-o" "APT::Architectures::=$(dpkg --print-architecture)")
    for a in "${required_arches[@]}"; do keep+=("-o" "APT::Architectures::=$a"); done
    say "updating the lists again without ${failed//$'\n'/ }"
    apt_update "${keep[@]}" || echo "install-deps: WARNING: the package lists may be stale" >&2
}

apt_install() { # apt_install PKG...: 0 on success; the log's tail on failure
    local log rc=0
    log=$(mktemp)
    $SUDO apt-get install -y -qq "$@" >"$log" 2>&1 || rc=$?
    [ "$rc" = 0 ] || tail -n 20 "$log" >&2
    rm -f "$log"
    return "$rc"
}

# ---- what is there, what is needed --------------------------------------------------------

for a in "${required_arches[@]}" "${optional_arches[@]}"; do
    # Not a pipe into `grep -q`: under pipefail, dpkg killed by SIGPIPE would read as "absent".
    if ! grep -qx "$a" <<<"$(dpkg --print-foreign-architectures)"; then
        $SUDO dpkg --add-architecture "$a"
        say "added dpkg architecture $a"
    fi
done

rustc_now=$(installed_version "$RUSTC_PKG")
toolchain_ok=1
[ -z "$(toolchain_problem installed "$rustc_now" "$STD64" "$(installed_version "$STD64")")" ] ||
    toolchain_ok=0
armv7_ok=0
if [ "$want_armv7" = 1 ] && [ -z "$(missing_pkgs "${ARMV7_PKGS[@]}")" ] &&
    [ -z "$(toolchain_problem installed "$rustc_now" "$STD32" "$(installed_version "$STD32")")" ]; then
    armv7_ok=1
fi
mapfile -t missing < <(missing_pkgs "${pkgs[@]}")

armv7_skip=
if [ "$toolchain_ok" = 1 ] && [ "${#missing[@]}" = 0 ] && { [ "$want_armv7" = 0 ] || [ "$armv7_ok" = 1 ]; }; then
    say "all packages present; $RUSTC_PKG $rustc_now"
else
    update_lists
    rustc_cand=$(candidate_version "$RUSTC_PKG")
    std64_cand=$(candidate_version "$STD64")
    why=$(toolchain_problem "in the package lists" "$rustc_cand" "$STD64" "$std64_cand")
    [ -z "$why" ] || die "cannot install the Rust cross toolchain: $why${lists_note:+ ($lists_note)}. \
The lists may be stale (see the apt-get update errors above): try again later."
    # Pinned, so the std is the very version of rustc-web.
    say "installing $RUSTC_PKG=$rustc_cand $STD64=$std64_cand${missing[*]:+ ${missing[*]}}"
    apt_install "$RUSTC_PKG=$rustc_cand" "$STD64=$std64_cand" "${missing[@]}" ||
        die "apt-get install failed (the log's tail is above)"
    # Also when armv7 was complete: its std must follow a rustc-web that was just upgraded.
    if [ "$want_armv7" = 1 ]; then
        std32_cand=$(candidate_version "$STD32")
        armv7_skip=$(toolchain_problem "in the package lists" "$rustc_cand" "$STD32" "$std32_cand")
        if [ -z "$armv7_skip" ]; then
            say "installing $STD32=$std32_cand gcc-arm-linux-gnueabihf"
            apt_install "$STD32=$std32_cand" gcc-arm-linux-gnueabihf ||
                armv7_skip="apt-get install $STD32=$std32_cand gcc-arm-linux-gnueabihf failed"
        fi
        [ -z "$armv7_skip" ] || armv7_skip+="${lists_note:+ ($lists_note)}"
    fi
fi

# ---- check what is installed --------------------------------------------------------------

rustc_now=$(installed_version "$RUSTC_PKG")
why=$(toolchain_problem installed "$rustc_now" "$STD64" "$(installed_version "$STD64")")
[ -z "$why" ] || die "$why"
mapfile -t missing < <(missing_pkgs "${pkgs[@]}")
[ "${#missing[@]}" = 0 ] || die "not installed after apt-get install: ${missing[*]}"
# The packages are right; is /usr/bin/rustc theirs, with the std where it looks for it?
rustc_said=$("$CROSS_RUSTC" --version 2>/dev/null || true)
[[ $rustc_said == "rustc $(upstream "$rustc_now")"* ]] ||
    die "$CROSS_RUSTC says '${rustc_said:-nothing}', not the $(upstream "$rustc_now") of $RUSTC_PKG $rustc_now"
sysroot=$("$CROSS_RUSTC" --print sysroot)
has_std() { [ -d "$sysroot/lib/rustlib/$1/lib" ]; }
has_std aarch64-unknown-linux-gnu ||
    die "$STD64 $rustc_now is installed but $sysroot/lib/rustlib/aarch64-unknown-linux-gnu/lib is missing"
if [ "$want_armv7" = 1 ] && [ -z "$armv7_skip" ]; then
    armv7_skip=$(toolchain_problem installed "$rustc_now" "$STD32" "$(installed_version "$STD32")")
    if [ -z "$armv7_skip" ] && ! has_std armv7-unknown-linux-gnueabihf; then
        armv7_skip="$sysroot/lib/rustlib/armv7-unknown-linux-gnueabihf/lib is missing"
    fi
fi

mkdir -p "$(dirname "$STATUS")"
{
    echo "rustc $rustc_now"
    echo "run aarch64-unknown-linux-gnu"
    if [ "$want_armv7" = 0 ]; then
        echo "skip armv7-unknown-linux-gnueabihf: not asked for (scripts/install-deps.sh --armv7)"
    elif [ -n "$armv7_skip" ]; then
        echo "skip armv7-unknown-linux-gnueabihf: $armv7_skip"
    else
        echo "run armv7-unknown-linux-gnueabihf"
    fi
} >"$STATUS"
if [ -n "$armv7_skip" ]; then
    echo "install-deps: WARNING: the armv7 section will NOT run: $armv7_skip" >&2
fi

# ---- report -------------------------------------------------------------------------------

# rustfmt and clippy cannot be downloaded here: the rustup toolchain must have them.
for c in fmt clippy; do
    cargo "$c" --version >/dev/null 2>&1 || die "cargo $c missing from the rust toolchain"
done
rustc_host=$(rustc --version | cut -d' ' -f2)
version_ge "$rustc_host" "$rust_version" ||
    die "the host rustc is $rustc_host, older than rust-version $rust_version in Cargo.toml"
first_line() {
    command -v "$1" >/dev/null || { echo "$1 missing"; return; }
    "$@" 2>/dev/null | head -n 1 || true
}
say "cargo $(cargo --version | cut -d' ' -f2), rustc $rustc_host (host), $rustc_said (cross)"
say "cross sections: $(sed -n 's/^run //p' "$STATUS" | tr '\n' ' ')"
say "qemu: $(first_line qemu-aarch64 --version)"
say "peers: $(first_line ffmpeg -version | cut -d' ' -f1-3); $(first_line chromium --version)"
