//! The bridge and the rtsp flow input against a real RTSP server (GStreamer's, serving an
//! H.264 + AAC test pattern on 127.0.0.1): remux validity (every packet demuxed and decoded
//! by FFmpeg without an error), session sharing, basic and digest auth, and recovery that
//! keeps the WebSocket clients when the camera dies or hangs (SIGSTOP) and comes back.
//!
//! Waits are `wait_for` polls with deadlines; nothing synchronises on a fixed sleep.

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
    probe_from(dir, name, v, 0)
}

/// `probe` of what the viewer kept from byte `from` on. `from` must be a frame boundary:
/// the viewer's byte count read while no media could arrive (the camera dead or frozen).
fn probe_from(dir: &std::path::Path, name: &str, v: &WsViewer, from: u64) -> (Vec<String>, String) {
    let kept = v.kept.lock().unwrap();
    assert!(
        kept.len() as u64 > from + 50_000,
        "the viewer kept {} bytes, not enough past {from}",
        kept.len()
    );
    let path = dir.join(name);
    std::fs::write(&path, &kept[from as usize..]).unwrap();
    ffprobe_ts(&path)
}

/// The one session, from `/healthz`.
fn session(q: &Quoll) -> Value {
    let s = sessions(q);
    assert_eq!(s.len(), 1, "one session: {s:?}");
    s[0].clone()
}

/// Every line the bridge logged about a session carries the seed's four fields (docs/bridge.md,
/// "Debugging order").
fn assert_session_lines_have_fields(log: &str) {
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(" quoll::bridge"))
        .collect();
    assert!(lines.len() >= 5, "{log}");
    for line in lines {
        for field in ["streamId=", "sessionId=", "pid=", "reason="] {
            assert!(line.contains(field), "{field} missing: {line}");
        }
    }
}

/// The daemon's first log line that contains `what`, with the seed's four fields
/// (`streamId`, `sessionId`, `pid`, `reason`) asserted present. The first: later ones (a
/// further restart while the camera is still away) may already be there.
fn log_line_with_fields(q: &Quoll, what: &str) -> String {
    let log = q.log();
    let line = log
        .lines()
        .find(|l| l.contains(what))
        .unwrap_or_else(|| panic!("no {what:?} line; log:\n{log}"))
        .to_owned();
    for field in ["streamId=", "sessionId=", "pid=", "reason="] {
        assert!(line.contains(field), "{field} missing: {line}");
    }
    line
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

    let a = WsViewer::connect(api, "cam", 4_000_000);
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
    // Nothing can arrive while the camera is dead: a frame boundary.
    let before = (a.bytes(), b.bytes());
    server.restart();
    wait_for(
        Duration::from_secs(30),
        "media again after recovery",
        || (a.bytes() > before.0 + 200_000 && b.bytes() > before.1 + 100_000).then_some(()),
    );
    // The new worker's TS starts clean (PAT, PMT, a key frame): it decodes without an error.
    let (codecs, errors) = probe_from(dir.path(), "recovered.ts", &a, before.0);
    assert_eq!(codecs, vec!["h264", "aac"], "ffprobe: {errors}");
    assert!(
        errors.trim().is_empty(),
        "the TS after recovery has errors: {errors}"
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
    let mut server = RtspServer::start(rtsp_port, &[]);
    let api = free_tcp_port();
    let cfg = bridge_config(
        api,
        json!({"cam": {"rtsp_url": format!("rtsp://127.0.0.1:{rtsp_port}/test"), "worker": "ffmpeg"}}),
    );
    let q = Quoll::start_with_env(dir.path(), &cfg, FAST_RECOVERY);
    let a = WsViewer::connect(api, "cam", 2_000_000);
    wait_for(
        Duration::from_secs(30),
        "media from the ffmpeg worker",
        || (a.bytes() > 300_000).then_some(()),
    );
    let s = session(&q);
    let pid = s["pid"].as_u64().expect("an ffmpeg worker has a pid");
    let (codecs, errors) = probe(dir.path(), "ffmpeg.ts", &a);
    assert_eq!(codecs, vec!["h264", "aac"], "ffprobe: {errors}");
    assert!(
        errors.trim().is_empty(),
        "ffprobe reported errors: {errors}"
    );

    // Kill the worker process behind quoll's back: an unexpected exit. The camera is frozen
    // meanwhile so that the new FFmpeg's TS cannot start before the test marks where it
    // begins (the new FFmpeg waits for the camera's answer).
    server.freeze();
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
    // The restart line names the stream, the session, the pid it replaced and why.
    let line = log_line_with_fields(&q, "starting worker again");
    assert!(line.contains("streamId=cam"), "{line}");
    assert!(
        line.contains(&format!("sessionId={}", s["sessionId"])),
        "{line}"
    );
    assert!(line.contains(&format!("pid={pid} ")), "{line}");
    assert!(line.contains("ffmpeg killed by signal 9"), "{line}");
    assert_eq!(s["lastError"], "ffmpeg killed by signal 9");
    let before = a.bytes();
    server.thaw();
    wait_for(Duration::from_secs(20), "media again", || {
        (a.bytes() > before + 200_000).then_some(())
    });
    let (codecs, errors) = probe_from(dir.path(), "ffmpeg-restarted.ts", &a, before);
    assert_eq!(codecs, vec!["h264", "aac"], "ffprobe: {errors}");
    assert!(
        errors.trim().is_empty(),
        "the new ffmpeg's TS has errors: {errors}"
    );
    // The last client leaves: the worker is stopped and the session destroyed.
    a.close();
    wait_for(Duration::from_secs(10), "session destroyed", || {
        sessions(&q).is_empty().then_some(())
    });
    let (st, log) = q.terminate();
    assert!(st.success(), "{log}");
    assert!(
        log.contains(&format!(
            "worker exited streamId=cam sessionId={} pid={pid} ",
            s["sessionId"]
        )),
        "{log}"
    );
    assert_session_lines_have_fields(&log);
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

/// A camera that hangs (SIGSTOP: its connections stay open, nothing answers) is a stall, not
/// an exit: the in-process worker notices after `timeout_secs` without media, exits with
/// "no media for 2 s", and is restarted after the delay with the clients kept; attempts
/// while the camera hangs time out; once it runs again (SIGCONT) media flows to the same
/// clients, clean from the first byte.
#[test]
fn inprocess_stall_restarts_keeping_clients_and_recovers_when_the_camera_resumes() {
    if !peers() {
        return;
    }
    let dir = TempDir::new("bridge-stall");
    let mut server = RtspServer::start(free_tcp_port(), &[]);
    let api = free_tcp_port();
    let cfg = bridge_config(
        api,
        json!({"cam": {"rtsp_url": server.url, "timeout_secs": 2}}),
    );
    // The worker's own stall timer (2 s) acts first; the sweep's idle timeout is a
    // backstop. The 2 s delay leaves the `restarting` state long enough to be seen.
    let env = [
        ("STREAM_RESTART_DELAY_MS", "2000"),
        ("STREAM_SWEEP_INTERVAL_MS", "500"),
        ("STREAM_IDLE_TIMEOUT_MS", "8000"),
    ];
    let q = Quoll::start_with_env(dir.path(), &cfg, &env);
    let a = WsViewer::connect(api, "cam", 4_000_000);
    let b = WsViewer::connect(api, "cam", 0);
    wait_for(Duration::from_secs(20), "both viewers get media", || {
        (a.bytes() > 200_000 && b.bytes() > 0).then_some(())
    });
    let first = session(&q);

    server.freeze();
    let s = wait_for(
        Duration::from_secs(10),
        "the stall noticed, the restart pending",
        || {
            let s = session(&q);
            (s["state"] == "restarting").then_some(s)
        },
    );
    assert_eq!(s["lastError"], "no media for 2 s", "{s}");
    assert_eq!(s["clientCount"], 2, "a stall keeps the clients: {s}");
    assert_eq!(s["sessionId"], first["sessionId"]);
    let s = wait_for(Duration::from_secs(10), "the restart", || {
        let s = session(&q);
        (s["restartCount"].as_u64().unwrap_or(0) >= 1).then_some(s)
    });
    assert_eq!(s["clientCount"], 2, "{s}");
    assert!(s["lastRestartAt"].as_u64().is_some(), "{s}");
    let exited = log_line_with_fields(&q, "worker exited");
    assert!(exited.contains("no media for 2 s"), "{exited}");
    let line = log_line_with_fields(&q, "starting worker again");
    assert!(line.contains("streamId=cam"), "{line}");
    assert!(line.contains("pid=none"), "in-process: {line}");
    assert!(line.contains("no media for 2 s"), "{line}");
    assert!(!a.is_closed() && !b.is_closed());

    // Nothing can arrive while the camera is frozen: a frame boundary.
    let before = (a.bytes(), b.bytes());
    server.thaw();
    wait_for(
        Duration::from_secs(20),
        "media again after the camera resumed",
        || (a.bytes() > before.0 + 200_000 && b.bytes() > before.1 + 100_000).then_some(()),
    );
    let s = session(&q);
    assert_eq!(
        s["sessionId"], first["sessionId"],
        "recovery is not a new session"
    );
    assert_eq!(s["clientCount"], 2, "recovery kept the clients");
    assert_eq!(s["state"], "running");
    assert!(
        s["lastDataAt"].as_u64() > first["lastDataAt"].as_u64(),
        "{s}"
    );
    let (codecs, errors) = probe_from(dir.path(), "after-stall.ts", &a, before.0);
    assert_eq!(codecs, vec!["h264", "aac"], "ffprobe: {errors}");
    assert!(
        errors.trim().is_empty(),
        "the TS after the stall has errors: {errors}"
    );
    drop((a, b));
    let (st, log) = q.terminate();
    assert!(st.success(), "{log}");
    assert_session_lines_have_fields(&log);
}

/// The `rtsp` flow input against a hanging camera: `timeout_secs` without media ends the
/// connection, which raises the disconnect event once; the reconnects that time out while
/// the camera hangs raise nothing more; when it resumes, "RTSP connected" again and the
/// flow forwards media again.
#[test]
fn rtsp_flow_input_stall_raises_one_disconnect_and_reconnects() {
    if !peers() {
        return;
    }
    let dir = TempDir::new("rtsp-input-stall");
    let mut server = RtspServer::start(free_tcp_port(), &[]);
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
        }]
    });
    let q = Quoll::start(dir.path(), &cfg);
    let got = receive_until(&rx, Duration::from_secs(20), |d| d.len() >= 200);
    assert!(got.len() >= 200, "the flow forwards the camera");
    let connected = "RTSP connected to";
    assert_eq!(q.log().matches(connected).count(), 1);

    server.freeze();
    wait_for(Duration::from_secs(10), "the disconnect event", || {
        q.log()
            .contains("RTSP input disconnected: no media for 2 s. Reconnecting in 1s")
            .then_some(())
    });
    // Reconnects (1 s apart, each timing out after 2 s) fail while the camera hangs.
    wait_for(Duration::from_secs(15), "two failed reconnects", || {
        (q.log().matches("rtsp connect failed").count() >= 2).then_some(())
    });
    let log = q.log();
    assert_eq!(
        log.matches("RTSP input disconnected").count(),
        1,
        "one disconnect event per cycle: {log}"
    );
    // Drain what the output sent before the freeze: nothing new can come while frozen, so
    // this ends (at the receiver's 200 ms read timeout), and what comes later is new.
    let mut buf = [0u8; 2048];
    while rx.recv(&mut buf).is_ok() {}
    server.thaw();
    wait_for(Duration::from_secs(20), "connected again", || {
        (q.log().matches(connected).count() == 2).then_some(())
    });
    let again = receive_until(&rx, Duration::from_secs(10), |d| d.len() >= 100);
    assert!(again.len() >= 100, "media again: {} datagrams", again.len());
    let log = q.log();
    assert_eq!(log.matches("RTSP input disconnected").count(), 1, "{log}");
    let (_, flow) = q.api("GET", "/api/v1/flows/cam", None);
    assert_eq!(flow["state"], "running");
    let (st, log) = q.terminate();
    assert!(st.success(), "{log}");
}

/// The ffmpeg worker gets the camera's password on its stdin, never on its command line
/// (which any local user can read), and FFmpeg's own error lines reach the log with the
/// URL's userinfo redacted.
#[test]
fn ffmpeg_worker_keeps_the_password_off_its_command_line_and_out_of_the_log() {
    if !peers() || !have_peer("ffmpeg") {
        return;
    }
    let dir = TempDir::new("bridge-ffmpeg-auth");
    let server = RtspServer::start(
        free_tcp_port(),
        &[
            "--auth",
            "basic",
            "--user",
            "cam",
            "--password",
            "ff-s3cret",
        ],
    );
    let api = free_tcp_port();
    let cfg = bridge_config(
        api,
        json!({
            "good": {"rtsp_url": server.url, "username": "cam", "password": "ff-s3cret",
                     "worker": "ffmpeg"},
            "bad": {"rtsp_url": server.url, "username": "cam", "password": "ff-wr0ng",
                    "worker": "ffmpeg"}
        }),
    );
    let q = Quoll::start_with_env(dir.path(), &cfg, FAST_RECOVERY);
    let good = WsViewer::connect(api, "good", 300_000);
    let bad = WsViewer::connect(api, "bad", 0);
    wait_for(Duration::from_secs(30), "media with basic auth", || {
        (good.bytes() > 200_000).then_some(())
    });
    let pid = sessions(&q)
        .into_iter()
        .find(|s| s["streamId"] == "good")
        .and_then(|s| s["pid"].as_u64())
        .expect("an ffmpeg worker has a pid");
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
    assert!(
        cmdline.contains("-i pipe:0")
            && !cmdline.contains("rtsp://")
            && !cmdline.contains("s3cret"),
        "{cmdline}"
    );
    wait_for(
        Duration::from_secs(20),
        "FFmpeg's refusal in the log",
        || q.log().contains("Impossible to open").then_some(()),
    );
    assert_eq!(bad.bytes(), 0);
    drop((good, bad));
    let (st, log) = q.terminate();
    assert!(st.success(), "{log}");
    assert!(
        !log.contains("ff-s3cret") && !log.contains("ff-wr0ng"),
        "a password in the log:\n{log}"
    );
    assert!(log.contains("Impossible to open 'rtsp://***@"), "{log}");
}

/// Basic auth (the server accepts only Basic), in-process worker over TCP; a wrong password
/// is reported in the snapshot and retried.
#[test]
fn basic_auth_over_tcp() {
    if !peers() {
        return;
    }
    let dir = TempDir::new("bridge-basic");
    let server = RtspServer::start(
        free_tcp_port(),
        &["--auth", "basic", "--user", "cam", "--password", "b4sic"],
    );
    let api = free_tcp_port();
    let cfg = bridge_config(
        api,
        json!({
            "good": {"rtsp_url": server.url, "username": "cam", "password": "b4sic",
                     "transport": "tcp"},
            "bad": {"rtsp_url": server.url, "username": "cam", "password": "wrong"}
        }),
    );
    let q = Quoll::start_with_env(dir.path(), &cfg, FAST_RECOVERY);
    let good = WsViewer::connect(api, "good", 400_000);
    let bad = WsViewer::connect(api, "bad", 0);
    wait_for(Duration::from_secs(20), "media with basic auth", || {
        (good.bytes() > 200_000).then_some(())
    });
    let (codecs, errors) = probe(dir.path(), "basic.ts", &good);
    assert_eq!(codecs, vec!["h264", "aac"], "ffprobe: {errors}");
    assert!(
        errors.trim().is_empty(),
        "ffprobe reported errors: {errors}"
    );
    let error = wait_for(
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
    assert!(error.contains("401"), "{error}");
    assert_eq!(bad.bytes(), 0);
    drop((good, bad));
    let (st, log) = q.terminate();
    assert!(st.success(), "{log}");
    assert!(!log.contains("b4sic"), "the password is not logged");
}

/// A recovery variable the config would refuse (`STREAM_IDLE_TIMEOUT_MS=0`) stops the
/// daemon at startup with an error naming it, as an out-of-range config field does.
#[test]
fn out_of_range_recovery_env_refuses_to_start() {
    let dir = TempDir::new("bridge-env");
    let path = dir.path().join("config.json");
    let mut cfg = bridge_config(
        free_tcp_port(),
        json!({"cam": {"rtsp_url": "rtsp://127.0.0.1:9/x"}}),
    );
    cfg["storage"] = json!({"data_dir": dir.path().join("data")});
    std::fs::write(&path, cfg.to_string()).unwrap();
    for (name, value) in [
        ("STREAM_IDLE_TIMEOUT_MS", "0"),
        ("STREAM_RESTART_DELAY_MS", "0"),
        ("STREAM_SWEEP_INTERVAL_MS", "soon"),
    ] {
        let mut child = Reap(
            quoll()
                .arg("run")
                .arg("--config")
                .arg(&path)
                .env("QUOLL_RUNTIME_DIR", dir.path().join("run"))
                .env(name, value)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("run quoll"),
        );
        // A daemon that started anyway is killed (and the test fails) instead of hanging.
        let status = wait_for(Duration::from_secs(20), "quoll to exit", || {
            child.0.try_wait().unwrap()
        });
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut child.0.stderr.take().unwrap(), &mut stderr).unwrap();
        assert!(!status.success(), "{name}={value} started: {stderr}");
        assert!(
            stderr.contains(&format!("{name}={value:?}")),
            "the error names the variable: {stderr}"
        );
    }
}

/// A child process killed and reaped on drop (a failing assertion leaves nothing running).
struct Reap(std::process::Child);

impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
