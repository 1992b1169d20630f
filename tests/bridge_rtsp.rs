//! The bridge and the rtsp flow input against a real RTSP server (GStreamer's, serving an
//! H.264 + AAC test pattern on 127.0.0.1): remux validity (ffprobe), session sharing, and
//! recovery that keeps the WebSocket clients when the camera goes away and comes back.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};

fn bridge_config(api: u16, streams: Value) -> Value {
    json!({
        "version": 1,
        "server": {"listen_addr": "127.0.0.1", "listen_port": api},
        "flows": [],
        "bridge": {"streams": streams, "max_restarts": 100}
    })
}

const FAST_RECOVERY: &[(&str, &str)] = &[
    ("STREAM_RESTART_DELAY_MS", "300"),
    ("STREAM_SWEEP_INTERVAL_MS", "500"),
    ("STREAM_IDLE_TIMEOUT_MS", "4000"),
];

fn sessions(q: &Quoll) -> Vec<Value> {
    let (status, v) = q.api("GET", "/healthz", None);
    assert_eq!(status, 200);
    v["sessions"].as_array().cloned().unwrap_or_default()
}

fn peers() -> bool {
    have_rtsp_server() && have_peer("ffprobe")
}

/// Writes what a viewer kept to a file and asks ffprobe about it.
fn probe(dir: &std::path::Path, name: &str, v: &WsViewer) -> (Vec<String>, String) {
    let path = dir.join(name);
    std::fs::write(&path, &*v.kept.lock().unwrap()).unwrap();
    ffprobe_ts(&path)
}

#[test]
fn inprocess_bridge_remuxes_shares_and_recovers_keeping_clients() {
    if !peers() {
        return;
    }
    let dir = TempDir::new("bridge-inproc");
    let rtsp_port = free_tcp_port();
    let mut server = RtspServer::start(rtsp_port, &[]);
    let api = free_tcp_port();
    let cfg = bridge_config(api, json!({"cam": {"rtsp_url": server.url}}));
    let q = Quoll::start_with_env(dir.path(), &cfg, FAST_RECOVERY);

    let a = WsViewer::connect(api, "cam", 600_000);
    let b = WsViewer::connect(api, "cam", 0);
    wait_for(Duration::from_secs(20), "both viewers get media", || {
        (a.bytes() > 300_000 && b.bytes() > 0).then_some(())
    });
    // The worker found retina's socket and reads it in batches (`net::gate`).
    assert!(
        q.log().contains("batched=true"),
        "the camera's socket is read in batches; log:\n{}",
        q.log()
    );
    let s = sessions(&q);
    assert_eq!(s.len(), 1, "one session for both clients: {s:?}");
    assert_eq!(s[0]["clientCount"], 2);
    assert_eq!(s[0]["state"], "running");
    assert!(s[0]["pid"].is_null(), "in-process worker has no pid");
    let session_id = s[0]["sessionId"].clone();

    let (codecs, errors) = probe(dir.path(), "inproc.ts", &a);
    assert_eq!(codecs, vec!["h264", "aac"], "ffprobe: {errors}");
    assert!(
        errors.trim().is_empty(),
        "ffprobe reported errors: {errors}"
    );

    // The camera dies mid-stream, then comes back on the same port.
    server.kill();
    wait_for(
        Duration::from_secs(20),
        "a restart after the camera died",
        || {
            let s = sessions(&q);
            (s[0]["restartCount"].as_u64().unwrap_or(0) >= 1).then_some(())
        },
    );
    server.restart();
    let before = (a.bytes(), b.bytes());
    wait_for(
        Duration::from_secs(30),
        "media again after recovery",
        || (a.bytes() > before.0 + 100_000 && b.bytes() > before.1 + 100_000).then_some(()),
    );
    let s = sessions(&q);
    assert_eq!(s.len(), 1);
    assert_eq!(
        s[0]["sessionId"], session_id,
        "recovery is not a new session"
    );
    assert_eq!(s[0]["clientCount"], 2, "recovery kept the clients");
    assert_eq!(s[0]["state"], "running");
    assert!(!a.is_closed() && !b.is_closed());
    assert!(s[0]["lastRestartAt"].as_u64().is_some());

    // Last client leaving destroys the session.
    a.close();
    wait_for(Duration::from_secs(10), "one client left", || {
        (sessions(&q).first().map(|s| s["clientCount"] == 1) == Some(true)).then_some(())
    });
    b.close();
    wait_for(Duration::from_secs(10), "session destroyed", || {
        sessions(&q).is_empty().then_some(())
    });
    let (status, h) = q.api("GET", "/healthz", None);
    assert_eq!(status, 200);
    assert_eq!(h["bridge"]["sessions"], 0);
    assert!(h["bridge"]["restarts"].as_u64().unwrap() >= 1);
    let (st, log) = q.terminate();
    assert!(st.success(), "{log}");
    assert!(log.contains("streamId"), "logs carry the stream id");
}

#[test]
fn digest_auth_and_udp_transport() {
    if !peers() {
        return;
    }
    let dir = TempDir::new("bridge-auth");
    let rtsp_port = free_tcp_port();
    let server = RtspServer::start(
        rtsp_port,
        &["--auth", "digest", "--user", "cam", "--password", "s3cret"],
    );
    let api = free_tcp_port();
    let cfg = bridge_config(
        api,
        json!({
            "good": {"rtsp_url": server.url, "username": "cam", "password": "s3cret", "transport": "udp"},
            "bad": {"rtsp_url": server.url, "username": "cam", "password": "wrong"}
        }),
    );
    let q = Quoll::start_with_env(dir.path(), &cfg, FAST_RECOVERY);
    let good = WsViewer::connect(api, "good", 0);
    let bad = WsViewer::connect(api, "bad", 0);
    wait_for(
        Duration::from_secs(20),
        "media with digest auth over UDP",
        || (good.bytes() > 100_000).then_some(()),
    );
    wait_for(
        Duration::from_secs(20),
        "the bad password is reported",
        || {
            sessions(&q)
                .into_iter()
                .find(|s| s["streamId"] == "bad")
                .filter(|s| s["restartCount"].as_u64().unwrap_or(0) >= 1)
                .and_then(|s| s["lastError"].as_str().map(str::to_owned))
        },
    );
    assert_eq!(bad.bytes(), 0);
    let (_, cfg_out) = q.api("GET", "/api/v1/flows", None);
    assert!(!cfg_out.to_string().contains("s3cret"));
}

#[test]
fn ffmpeg_worker_restarts_after_its_process_is_killed() {
    if !peers() || !have_peer("ffmpeg") {
        return;
    }
    let dir = TempDir::new("bridge-ffmpeg");
    let rtsp_port = free_tcp_port();
    let _server = RtspServer::start(rtsp_port, &[]);
    let api = free_tcp_port();
    let cfg = bridge_config(
        api,
        json!({"cam": {"rtsp_url": format!("rtsp://127.0.0.1:{rtsp_port}/test"), "worker": "ffmpeg"}}),
    );
    let q = Quoll::start_with_env(dir.path(), &cfg, FAST_RECOVERY);
    let a = WsViewer::connect(api, "cam", 600_000);
    wait_for(
        Duration::from_secs(30),
        "media from the ffmpeg worker",
        || (a.bytes() > 300_000).then_some(()),
    );
    let s = sessions(&q);
    let pid = s[0]["pid"].as_u64().expect("an ffmpeg worker has a pid");
    let (codecs, errors) = probe(dir.path(), "ffmpeg.ts", &a);
    assert_eq!(codecs, vec!["h264", "aac"], "ffprobe: {errors}");

    // Kill the worker process behind quoll's back: an unexpected exit.
    let _ = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status();
    let s = wait_for(Duration::from_secs(20), "a new ffmpeg", || {
        sessions(&q)
            .into_iter()
            .next()
            .filter(|s| s["pid"].as_u64().is_some_and(|p| p != pid) && s["state"] == "running")
    });
    assert_eq!(s["restartCount"], 1);
    assert_eq!(s["lastExitSignal"], 9);
    assert_eq!(s["clientCount"], 1, "the client was kept");
    let before = a.bytes();
    wait_for(Duration::from_secs(20), "media again", || {
        (a.bytes() > before + 100_000).then_some(())
    });
    // The last client leaves: the worker is stopped and the session destroyed.
    a.close();
    wait_for(Duration::from_secs(10), "session destroyed", || {
        sessions(&q).is_empty().then_some(())
    });
    let (st, log) = q.terminate();
    assert!(st.success(), "{log}");
}

#[test]
fn rtsp_flow_input_feeds_outputs_and_latches_events() {
    if !peers() {
        return;
    }
    let dir = TempDir::new("rtsp-input");
    let rtsp_port = free_tcp_port();
    let mut server = RtspServer::start(rtsp_port, &[]);
    let api = free_tcp_port();
    let (rx, out_port) = udp_receiver();
    let cfg = json!({
        "version": 1,
        "server": {"listen_addr": "127.0.0.1", "listen_port": api},
        "flows": [{
            "id": "cam", "name": "camera", "enabled": true,
            "input": {"type": "rtsp", "rtsp_url": server.url, "timeout_secs": 2,
                      "reconnect_delay_secs": 1},
            "outputs": [{"type": "udp", "id": "o", "name": "o",
                         "dest_addr": format!("127.0.0.1:{out_port}")}]
        }],
        "bridge": {"streams": {"tap": {"flow_id": "cam"}}}
    });
    let q = Quoll::start(dir.path(), &cfg);
    let got = receive_until(&rx, Duration::from_secs(20), |d| d.len() >= 400);
    assert!(
        got.len() >= 400,
        "the flow forwards the camera: {} datagrams",
        got.len()
    );
    let ts: Vec<u8> = got.concat();
    let path = dir.path().join("flow.ts");
    std::fs::write(&path, &ts).unwrap();
    let (codecs, errors) = ffprobe_ts(&path);
    assert_eq!(codecs, vec!["h264", "aac"], "ffprobe: {errors}");
    assert!(
        errors.trim().is_empty(),
        "ffprobe reported errors: {errors}"
    );

    // The flow's output is also a bridge stream.
    let tap = WsViewer::connect(api, "tap", 0);
    wait_for(
        Duration::from_secs(10),
        "the flow tap feeds a viewer",
        || (tap.bytes() > 50_000).then_some(()),
    );
    drop(tap);

    // Down: one disconnect event however many retries fail.
    server.kill();
    wait_for(Duration::from_secs(20), "the disconnect event", || {
        q.log().contains("RTSP input disconnected").then_some(())
    });
    // Several retries (1 s apart) fail while the camera is away, silently.
    wait_for(Duration::from_secs(20), "three failed retries", || {
        (q.log().matches("rtsp connect failed").count() >= 3).then_some(())
    });
    let log = q.log();
    assert_eq!(log.matches("RTSP input disconnected").count(), 1, "{log}");
    server.restart();
    wait_for(Duration::from_secs(20), "connected again", || {
        (q.log().matches("RTSP connected to").count() == 2).then_some(())
    });
    let (_, flow) = q.api("GET", "/api/v1/flows/cam", None);
    assert_eq!(flow["state"], "running");
    assert!(flow["input"]["packets"].as_u64().unwrap() > 1000);
    let (st, log) = q.terminate();
    assert!(st.success(), "{log}");
}

#[test]
fn h265_camera_is_remuxed_in_process() {
    if !peers() {
        return;
    }
    let dir = TempDir::new("bridge-h265");
    let rtsp_port = free_tcp_port();
    let server = RtspServer::start(rtsp_port, &["--codec", "h265"]);
    let api = free_tcp_port();
    let cfg = bridge_config(api, json!({"cam": {"rtsp_url": server.url}}));
    let q = Quoll::start(dir.path(), &cfg);
    let a = WsViewer::connect(api, "cam", 400_000);
    wait_for(Duration::from_secs(30), "H.265 media", || {
        (a.bytes() > 200_000).then_some(())
    });
    let (codecs, errors) = probe(dir.path(), "h265.ts", &a);
    assert_eq!(codecs, vec!["hevc", "aac"], "ffprobe: {errors}");
    assert!(
        errors.trim().is_empty(),
        "ffprobe reported errors: {errors}"
    );
    drop(a);
    let (st, log) = q.terminate();
    assert!(st.success(), "{log}");
}
