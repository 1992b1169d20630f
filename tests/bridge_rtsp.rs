//! The bridge and the rtsp flow input against a real RTSP server (GStreamer's, serving an
//! H.264 + AAC test pattern on 127.0.0.1): remux validity (every packet demuxed and decoded
//! by FFmpeg without an error), session sharing, basic and digest auth, and recovery that
//! keeps the WebSocket clients when the camera dies or hangs (SIGSTOP) and comes back.
//!
//! Each test states its scenario (`Camera`, then `bridge` or `rtsp_flow`) and what differs.
//! Waits are polls with deadlines (`wait_for`, event records); nothing synchronises on a
//! fixed sleep.

#[path = "common/bridge.rs"]
mod bridge_common;
mod common;

use std::time::Duration;

use bridge_common::*;
use common::*;
use serde_json::json;

const SECS: fn(u64) -> Duration = Duration::from_secs;
const H264_AAC: &[&str] = &["h264", "aac"];
const RTSP_CONNECTED: &str = "RTSP connected to";
const RTSP_LOST: &str = "RTSP input disconnected";

#[test]
fn inprocess_bridge_remuxes_shares_and_recovers_keeping_clients() {
    require_peers!(RTSP_SERVER, FFPROBE);
    let mut b = Camera::start("bridge-inproc", &[])
        .bridge(|url| json!({"cam": {"rtsp_url": url}}), FAST_RECOVERY);
    let (va, vb) = (b.viewer("cam", 4_000_000), b.viewer("cam", 0));
    b.wait_media(
        "both viewers get media",
        SECS(20),
        &[(&va, 300_000), (&vb, 0)],
    );
    // The worker found retina's socket and reads it in batches (`net::gate`).
    let log = b.q.log();
    assert!(
        log.contains("batched=true"),
        "the camera's socket is read in batches; log:\n{log}"
    );
    let s = b.session();
    assert_eq!(s["clientCount"], 2, "one session for both clients: {s}");
    assert_eq!(s["state"], "running");
    assert!(s["pid"].is_null(), "in-process worker has no pid");
    let session_id = s["sessionId"].clone();
    b.expect_decodes("inproc.ts", &va, 0, H264_AAC);

    // The camera dies mid-stream, then comes back on the same port.
    b.cam.server.kill();
    wait_for(SECS(20), "a restart after the camera died", || {
        (b.session()["restartCount"].as_u64().unwrap_or(0) >= 1).then_some(())
    });
    // Nothing can arrive while the camera is dead: a frame boundary.
    let before = (va.bytes(), vb.bytes());
    b.cam.server.restart();
    let media = [(&va, before.0 + 200_000), (&vb, before.1 + 100_000)];
    b.wait_media("media again after recovery", SECS(30), &media);
    // The new worker's TS starts clean (PAT, PMT, a key frame): it decodes without an error.
    b.expect_decodes("recovered.ts", &va, before.0, H264_AAC);
    let s = b.session();
    assert_eq!(s["sessionId"], session_id, "recovery is not a new session");
    assert_eq!(s["clientCount"], 2, "recovery kept the clients");
    assert_eq!(s["state"], "running");
    assert!(!va.is_closed() && !vb.is_closed());
    assert!(s["lastRestartAt"].as_u64().is_some());

    // Last client leaving destroys the session.
    va.close();
    wait_for(SECS(10), "one client left", || {
        (b.sessions().first().map(|s| s["clientCount"] == 1) == Some(true)).then_some(())
    });
    vb.close();
    wait_for(SECS(10), "session destroyed", || {
        b.sessions().is_empty().then_some(())
    });
    let (_, h) = b.q.api("GET", "/healthz", None);
    assert_eq!(h["bridge"]["sessions"], 0);
    assert!(h["bridge"]["restarts"].as_u64().unwrap() >= 1);
    let log = b.stop();
    assert!(log.contains("streamId"), "logs carry the stream id");
}

/// A camera asking for `scheme` auth with `password`; bridge streams `good` (in-process,
/// over `transport`) and `bad` (a wrong password).
fn auth_bridge(tag: &str, scheme: &str, password: &str, transport: &str) -> Bridge {
    Camera::with_auth(tag, scheme, password).good_and_bad(
        password,
        json!({ "transport": transport }),
        "wrong",
        json!({}),
    )
}

#[test]
fn digest_auth_and_udp_transport() {
    require_peers!(RTSP_SERVER, FFPROBE);
    let b = auth_bridge("bridge-auth", "digest", "s3cret", "udp");
    let (good, bad) = (b.viewer("good", 0), b.viewer("bad", 0));
    b.wait_media(
        "media with digest auth over UDP",
        SECS(20),
        &[(&good, 100_000)],
    );
    b.wait_session_error("bad");
    assert_eq!(bad.bytes(), 0);
    let (_, cfg_out) = b.q.api("GET", "/api/v1/flows", None);
    assert!(!cfg_out.to_string().contains("s3cret"));
}

#[test]
fn ffmpeg_worker_restarts_after_its_process_is_killed() {
    require_peers!(RTSP_SERVER, FFPROBE, "ffmpeg");
    let mut b = Camera::start("bridge-ffmpeg", &[]).bridge(
        |url| json!({"cam": {"rtsp_url": url, "worker": "ffmpeg"}}),
        FAST_RECOVERY,
    );
    let a = b.viewer("cam", 2_000_000);
    b.wait_media("media from the ffmpeg worker", SECS(30), &[(&a, 300_000)]);
    let pid = b.session()["pid"]
        .as_u64()
        .expect("an ffmpeg worker has a pid");
    b.expect_decodes("ffmpeg.ts", &a, 0, H264_AAC);

    // Kill the worker process behind quoll's back: an unexpected exit. The camera is frozen
    // meanwhile so that the new FFmpeg's TS cannot start before the test marks where it
    // begins (the new FFmpeg waits for the camera's answer).
    b.cam.server.freeze();
    let _ = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status();
    let s = wait_for(SECS(20), "a new ffmpeg", || {
        b.sessions()
            .into_iter()
            .next()
            .filter(|s| s["pid"].as_u64().is_some_and(|p| p != pid) && s["state"] == "running")
    });
    assert_eq!(s["restartCount"], 1);
    assert_eq!(s["lastExitSignal"], 9);
    assert_eq!(s["clientCount"], 1, "the client was kept");
    // The restart line names the stream, the session, the pid it replaced and why.
    let line = log_line_with_fields(&b.q, "starting worker again");
    assert!(line.contains("streamId=cam"), "{line}");
    assert!(
        line.contains(&format!("sessionId={}", s["sessionId"])),
        "{line}"
    );
    assert!(line.contains(&format!("pid={pid} ")), "{line}");
    assert!(line.contains("ffmpeg killed by signal 9"), "{line}");
    assert_eq!(s["lastError"], "ffmpeg killed by signal 9");
    let before = a.bytes();
    b.cam.server.thaw();
    b.wait_media("media again", SECS(20), &[(&a, before + 200_000)]);
    b.expect_decodes("ffmpeg-restarted.ts", &a, before, H264_AAC);
    // The last client leaves: the worker is stopped and the session destroyed.
    a.close();
    wait_for(SECS(10), "session destroyed", || {
        b.sessions().is_empty().then_some(())
    });
    let log = b.stop();
    let exited = format!(
        "worker exited streamId=cam sessionId={} pid={pid} ",
        s["sessionId"]
    );
    assert!(log.contains(&exited), "{log}");
    assert_session_lines_have_fields(&log);
}

#[test]
fn rtsp_flow_input_feeds_outputs_and_latches_events() {
    require_peers!(RTSP_SERVER, FFPROBE);
    let mut b = Camera::start("rtsp-input", &[])
        .rtsp_flow(json!({"bridge": {"streams": {"tap": {"flow_id": "cam"}}}}));
    let got = receive_until(b.rx(), SECS(20), |d| d.len() >= 400);
    assert!(
        got.len() >= 400,
        "the flow forwards the camera: {} datagrams",
        got.len()
    );
    let path = b.cam.dir.path().join("flow.ts");
    std::fs::write(&path, got.concat()).unwrap();
    expect_ts_decodes(&path, H264_AAC);

    // The flow's output is also a bridge stream.
    let tap = b.viewer("tap", 0);
    b.wait_media("the flow tap feeds a viewer", SECS(10), &[(&tap, 50_000)]);
    drop(tap);

    // Down: one disconnect event however many retries fail.
    b.cam.server.kill();
    b.wait_events(RTSP_LOST, 1, SECS(20));
    // Several retries (1 s apart) fail while the camera is away, silently.
    b.q.wait_log("rtsp connect failed", 3, 0, SECS(20));
    b.q.assert_events(RTSP_LOST, 1);
    b.cam.server.restart();
    b.wait_events(RTSP_CONNECTED, 2, SECS(20));
    b.q.assert_events(RTSP_LOST, 1);
    let flow = b.q.flow("cam");
    assert_eq!(flow["state"], "running");
    assert!(flow["input"]["packets"].as_u64().unwrap() > 1000);
    b.stop();
}

#[test]
fn h265_camera_is_remuxed_in_process() {
    require_peers!(RTSP_SERVER, FFPROBE);
    let b = Camera::start("bridge-h265", &["--codec", "h265"])
        .bridge(|url| json!({"cam": {"rtsp_url": url}}), &[]);
    let a = b.viewer("cam", 400_000);
    b.wait_media("H.265 media", SECS(30), &[(&a, 200_000)]);
    b.expect_decodes("h265.ts", &a, 0, &["hevc", "aac"]);
    drop(a);
    b.stop();
}

/// A camera that hangs (SIGSTOP: its connections stay open, nothing answers) is a stall, not
/// an exit: the in-process worker notices after `timeout_secs` without media, exits with
/// "no media for 2 s", and is restarted after the delay with the clients kept; attempts
/// while the camera hangs time out; once it runs again (SIGCONT) media flows to the same
/// clients, clean from the first byte.
#[test]
fn inprocess_stall_restarts_keeping_clients_and_recovers_when_the_camera_resumes() {
    require_peers!(RTSP_SERVER, FFPROBE);
    // The worker's own stall timer (2 s) acts first; the sweep's idle timeout is a
    // backstop. The 2 s delay leaves the `restarting` state long enough to be seen.
    let env = [
        ("STREAM_RESTART_DELAY_MS", "2000"),
        ("STREAM_SWEEP_INTERVAL_MS", "500"),
        ("STREAM_IDLE_TIMEOUT_MS", "8000"),
    ];
    let mut b = Camera::start("bridge-stall", &[]).bridge(
        |url| json!({"cam": {"rtsp_url": url, "timeout_secs": 2}}),
        &env,
    );
    let (va, vb) = (b.viewer("cam", 4_000_000), b.viewer("cam", 0));
    b.wait_media(
        "both viewers get media",
        SECS(20),
        &[(&va, 200_000), (&vb, 0)],
    );
    let first = b.session();

    b.cam.server.freeze();
    let s = wait_for(SECS(10), "the stall noticed, the restart pending", || {
        Some(b.session()).filter(|s| s["state"] == "restarting")
    });
    assert_eq!(s["lastError"], "no media for 2 s", "{s}");
    assert_eq!(s["clientCount"], 2, "a stall keeps the clients: {s}");
    assert_eq!(s["sessionId"], first["sessionId"]);
    let s = wait_for(SECS(10), "the restart", || {
        Some(b.session()).filter(|s| s["restartCount"].as_u64().unwrap_or(0) >= 1)
    });
    assert_eq!(s["clientCount"], 2, "{s}");
    assert!(s["lastRestartAt"].as_u64().is_some(), "{s}");
    let exited = log_line_with_fields(&b.q, "worker exited");
    assert!(exited.contains("no media for 2 s"), "{exited}");
    let line = log_line_with_fields(&b.q, "starting worker again");
    assert!(line.contains("streamId=cam"), "{line}");
    assert!(line.contains("pid=none"), "in-process: {line}");
    assert!(line.contains("no media for 2 s"), "{line}");
    assert!(!va.is_closed() && !vb.is_closed());

    // Nothing can arrive while the camera is frozen: a frame boundary.
    let before = (va.bytes(), vb.bytes());
    b.cam.server.thaw();
    let media = [(&va, before.0 + 200_000), (&vb, before.1 + 100_000)];
    b.wait_media("media again after the camera resumed", SECS(20), &media);
    let s = b.session();
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
    b.expect_decodes("after-stall.ts", &va, before.0, H264_AAC);
    drop((va, vb));
    let log = b.stop();
    assert_session_lines_have_fields(&log);
}

/// The `rtsp` flow input against a hanging camera: `timeout_secs` without media ends the
/// connection, which raises the disconnect event once; the reconnects that time out while
/// the camera hangs raise nothing more; when it resumes, "RTSP connected" again and the
/// flow forwards media again.
#[test]
fn rtsp_flow_input_stall_raises_one_disconnect_and_reconnects() {
    require_peers!(RTSP_SERVER, FFPROBE);
    let mut b = Camera::start("rtsp-input-stall", &[]).rtsp_flow(json!({}));
    let got = receive_until(b.rx(), SECS(20), |d| d.len() >= 200);
    assert!(got.len() >= 200, "the flow forwards the camera");
    b.q.assert_events(RTSP_CONNECTED, 1);

    b.cam.server.freeze();
    b.wait_events(
        "RTSP input disconnected: no media for 2 s. Reconnecting in 1s",
        1,
        SECS(10),
    );
    // Reconnects (1 s apart, each timing out after 2 s) fail while the camera hangs.
    b.q.wait_log("rtsp connect failed", 2, 0, SECS(15));
    b.q.assert_events(RTSP_LOST, 1);
    // Drain what the output sent before the freeze: nothing new can come while frozen, so
    // this ends (at the receiver's 200 ms read timeout), and what comes later is new.
    let mut buf = [0u8; 2048];
    while b.rx().recv(&mut buf).is_ok() {}
    b.cam.server.thaw();
    b.wait_events(RTSP_CONNECTED, 2, SECS(20));
    let again = receive_until(b.rx(), SECS(10), |d| d.len() >= 100);
    assert!(again.len() >= 100, "media again: {} datagrams", again.len());
    b.q.assert_events(RTSP_LOST, 1);
    assert_eq!(b.q.flow("cam")["state"], "running");
    b.stop();
}

/// The ffmpeg worker gets the camera's password on its stdin, never on its command line
/// (which any local user can read), and FFmpeg's own error lines reach the log with the
/// URL's userinfo redacted.
#[test]
fn ffmpeg_worker_keeps_the_password_off_its_command_line_and_out_of_the_log() {
    require_peers!(RTSP_SERVER, FFPROBE, "ffmpeg");
    let ffmpeg = json!({"worker": "ffmpeg"});
    let b = Camera::with_auth("bridge-ffmpeg-auth", "basic", "ff-s3cret").good_and_bad(
        "ff-s3cret",
        ffmpeg.clone(),
        "ff-wr0ng",
        ffmpeg,
    );
    let (good, bad) = (b.viewer("good", 300_000), b.viewer("bad", 0));
    b.wait_media("media with basic auth", SECS(30), &[(&good, 200_000)]);
    let pid = b
        .sessions()
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
    b.q.wait_log("Impossible to open", 1, 0, SECS(20));
    assert_eq!(bad.bytes(), 0);
    drop((good, bad));
    let log = b.stop();
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
    require_peers!(RTSP_SERVER, FFPROBE);
    let b = auth_bridge("bridge-basic", "basic", "b4sic", "tcp");
    let (good, bad) = (b.viewer("good", 400_000), b.viewer("bad", 0));
    b.wait_media("media with basic auth", SECS(20), &[(&good, 200_000)]);
    b.expect_decodes("basic.ts", &good, 0, H264_AAC);
    let error = b.wait_session_error("bad");
    assert!(error.contains("401"), "{error}");
    assert_eq!(bad.bytes(), 0);
    drop((good, bad));
    let log = b.stop();
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
