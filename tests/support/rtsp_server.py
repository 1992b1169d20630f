#!/usr/bin/python3
"""A test RTSP server on loopback: an H.264 + AAC test pattern (GStreamer's RTSP server).

    rtsp_server.py --port 8554 [--path /test] [--bitrate 1000] [--auth basic|digest
                   --user u --password p] [--size 320x240] [--fps 25] [--pattern snow --cbr] [--codec h265]

Prints "READY rtsp://127.0.0.1:PORT/PATH" on stdout once it listens. One pipeline is shared
by every client (like a camera). Runs until killed.
"""
import argparse
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtsp", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtsp, GstRtspServer  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--path", default="/test")
    ap.add_argument("--bitrate", type=int, default=1000, help="H.264 kbit/s")
    ap.add_argument("--size", default="320x240")
    ap.add_argument("--fps", type=int, default=25)
    ap.add_argument("--auth", choices=["none", "basic", "digest"], default="none")
    ap.add_argument("--user", default="user")
    ap.add_argument("--password", default="secret")
    ap.add_argument("--no-audio", action="store_true")
    ap.add_argument("--pattern", default="ball", help="videotestsrc pattern (snow: incompressible)")
    ap.add_argument("--cbr", action="store_true", help="constant bitrate (filler data)")
    ap.add_argument("--codec", choices=["h264", "h265"], default="h264")
    a = ap.parse_args()

    Gst.init(None)
    w, h = a.size.split("x")
    aac = "avenc_aac" if Gst.ElementFactory.find("avenc_aac") else "voaacenc"
    src = (
        f"videotestsrc is-live=true pattern={a.pattern} ! video/x-raw,width={w},height={h},"
        f"framerate={a.fps}/1 ! timeoverlay ! videoconvert ! "
    )
    if a.codec == "h265":
        enc = (
            f"x265enc tune=zerolatency speed-preset=ultrafast key-int-max={a.fps} "
            f"bitrate={a.bitrate} ! video/x-h265 ! rtph265pay name=pay0 pt=96 config-interval=1"
        )
    else:
        enc = (
            f"x264enc tune=zerolatency speed-preset=ultrafast key-int-max={a.fps} "
            f"bitrate={a.bitrate} {'pass=cbr vbv-buf-capacity=1000' if a.cbr else ''} ! "
            "video/x-h264,profile=baseline ! rtph264pay name=pay0 pt=96 config-interval=1"
        )
    video = src + enc
    audio = (
        " audiotestsrc is-live=true wave=sine freq=440 ! audioconvert ! audioresample ! "
        f"audio/x-raw,rate=48000,channels=2 ! {aac} bitrate=64000 ! rtpmp4gpay name=pay1 pt=97"
    )
    launch = "( " + video + ("" if a.no_audio else audio) + " )"

    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(a.port))
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(launch)
    factory.set_shared(True)
    if a.auth != "none":
        auth = GstRtspServer.RTSPAuth()
        token = GstRtspServer.RTSPToken()
        token.set_string(GstRtspServer.RTSP_TOKEN_MEDIA_FACTORY_ROLE, "viewer")
        if a.auth == "basic":
            auth.add_basic(GstRtspServer.RTSPAuth.make_basic(a.user, a.password), token)
            auth.set_supported_methods(GstRtsp.RTSPAuthMethod.BASIC)
        else:
            auth.add_digest(a.user, a.password, token)
            auth.set_supported_methods(GstRtsp.RTSPAuthMethod.DIGEST)
        server.set_auth(auth)
        perms = GstRtspServer.RTSPPermissions()
        perms.add_permission_for_role("viewer", "media.factory.access", True)
        perms.add_permission_for_role("viewer", "media.factory.construct", True)
        factory.set_permissions(perms)
    server.get_mount_points().add_factory(a.path, factory)
    if server.attach(None) == 0:
        print("cannot listen", file=sys.stderr)
        sys.exit(1)
    print(f"READY rtsp://127.0.0.1:{a.port}{a.path}", flush=True)
    GLib.MainLoop().run()


if __name__ == "__main__":
    main()
