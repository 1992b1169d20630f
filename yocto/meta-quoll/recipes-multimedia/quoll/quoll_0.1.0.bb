SUMMARY = "Quoll live-media edge node"
DESCRIPTION = "MPEG-TS flows (SRT, RTP/UDP, RTSP, ...) fanned out to many outputs, an \
RTSP to WebSocket bridge, and a manager link whose alarms survive power cuts."
LICENSE = "Apache-2.0"
LIC_FILES_CHKSUM = "file://LICENSE;md5=3b83ef96387f14655fc854ddc3c6bd57"

inherit cargo cargo-update-recipe-crates systemd useradd ptest-cargo

# Where the sources come from. Set both in local.conf or your distro config, e.g.
#   QUOLL_GIT_URI = "git://git.example.org/quoll.git;protocol=https;branch=main"
#   QUOLL_SRCREV = "<commit>"
# or build a checkout with externalsrc (EXTERNALSRC:pn-quoll = "/path/to/quoll").
QUOLL_GIT_URI ??= ""
QUOLL_SRCREV ??= ""
SRC_URI = "${QUOLL_GIT_URI} \
           file://quoll.service \
           file://quoll-health.service \
           file://quoll-tmpfiles.conf \
           file://run-ptest \
           file://boards/${QUOLL_BOARD}/60-quoll.conf \
           file://boards/${QUOLL_BOARD}/10-board-watchdog.conf \
           file://boards/${QUOLL_BOARD}/10-quoll-hw-watchdog.conf \
"
SRCREV = "${QUOLL_SRCREV}"
# build.rs records the git revision for `quoll ctl status` and /healthz from this (a fetched
# tree has no .git to ask). Empty with externalsrc and no QUOLL_SRCREV: build.rs then asks
# git in the checkout.
export QUOLL_GIT_REV = "${SRCREV}"

# Skip the recipe, saying why, when no source is set or MACHINE has no board profile
# (base.bbclass skips a recipe whose SKIP_RECIPE[PN] is not empty).
def quoll_skip_reason(d):
    if not d.getVar('QUOLL_GIT_URI') and not d.getVar('EXTERNALSRC'):
        return "set QUOLL_GIT_URI and QUOLL_SRCREV (or EXTERNALSRC) for quoll"
    board = d.getVar('QUOLL_BOARD')
    if board not in (d.getVar('QUOLL_BOARDS') or '').split():
        return ("no quoll board profile for MACHINE %s (QUOLL_BOARD=%s; known: %s)"
                % (d.getVar('MACHINE'), board, d.getVar('QUOLL_BOARDS')))
    return ""
SKIP_RECIPE[quoll] = "${@quoll_skip_reason(d)}"

require quoll-crates.inc

# The board profile (board/*.json in the sources) whose settings are installed. The
# profile name is the MACHINE name except where the BSP names its machine otherwise.
QUOLL_BOARDS = "raspberrypi4-64 raspberrypi5 jetson-orin-nano"
QUOLL_BOARD ??= "${@{'jetson-orin-nano-devkit': 'jetson-orin-nano', \
                     'jetson-orin-nano-devkit-nvme': 'jetson-orin-nano'}.get(d.getVar('MACHINE'), d.getVar('MACHINE'))}"

# Cargo.toml strips the release binary for the small-binary budget; let Yocto strip and
# split debug info itself (the -dbg package stays useful, no already-stripped QA error).
export CARGO_PROFILE_RELEASE_STRIP = "false"
export CARGO_PROFILE_RELEASE_DEBUG = "1"

USERADD_PACKAGES = "${PN}"
USERADD_PARAM:${PN} = "--system --home-dir /data/quoll --no-create-home \
                       --shell /sbin/nologin --user-group quoll"

SYSTEMD_SERVICE:${PN} = "quoll.service quoll-health.service"
SYSTEMD_AUTO_ENABLE = "enable"

do_install:append() {
    install -d ${D}${systemd_system_unitdir}/quoll.service.d
    install -m 0644 ${UNPACKDIR}/quoll.service ${UNPACKDIR}/quoll-health.service \
        ${D}${systemd_system_unitdir}/
    install -m 0644 ${UNPACKDIR}/boards/${QUOLL_BOARD}/10-board-watchdog.conf \
        ${D}${systemd_system_unitdir}/quoll.service.d/
    install -d ${D}${systemd_unitdir}/system.conf.d
    install -m 0644 ${UNPACKDIR}/boards/${QUOLL_BOARD}/10-quoll-hw-watchdog.conf \
        ${D}${systemd_unitdir}/system.conf.d/
    install -d ${D}${sysconfdir}/sysctl.d
    install -m 0644 ${UNPACKDIR}/boards/${QUOLL_BOARD}/60-quoll.conf ${D}${sysconfdir}/sysctl.d/
    install -d ${D}${nonarch_libdir}/tmpfiles.d
    install -m 0644 ${UNPACKDIR}/quoll-tmpfiles.conf ${D}${nonarch_libdir}/tmpfiles.d/quoll.conf
    install -d ${D}${sysconfdir}/quoll
    echo "${QUOLL_BOARD}" > ${D}${sysconfdir}/quoll/board
}

FILES:${PN} += "${systemd_system_unitdir}/quoll.service.d \
                ${systemd_unitdir}/system.conf.d \
                ${sysconfdir}/sysctl.d/60-quoll.conf \
                ${sysconfdir}/quoll/board \
                ${nonarch_libdir}/tmpfiles.d/quoll.conf \
"
CONFFILES:${PN} = "${sysconfdir}/sysctl.d/60-quoll.conf"

# ptest: the unit and integration test binaries run on the target with ptest-runner.
# files/run-ptest (installed by the ptest class) runs them and skips, by name, the tests
# that read the source tree, which is not on the target. Tests that need ffmpeg or
# srt-live-transmit skip when those are not in the image; add them to run those too.
RDEPENDS:${PN}-ptest += "${PN}"
