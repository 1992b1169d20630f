//! RTMP push output end to end with real FFmpeg: quoll takes a UDP TS from ffmpeg (libx264
//! with B-frames, AAC) and pushes it by RTMP to `ffmpeg -listen 1`, whose FLV recording
//! must decode with ffprobe (video and audio frames counted); when that listener has gone,
//! quoll reconnects to the next one. RTMPS goes through a TLS
//! terminator on loopback (FFmpeg cannot listen on rtmps) with a self-signed certificate
//! made here: pinned by `cert_fingerprint` the push succeeds, without the pin it is refused
//! and counted as a certificate error. The stream key never shows in the log (at debug),
//! the events, or the API's config and stats.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

const KEY: &str = "sekrit-stream-key-42";

/// A child process killed on drop.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Killed {
    /// Waits for the process to exit on its own within `limit`.
    fn wait_exit(&mut self, limit: Duration, what: &str) {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(status) = self.0.try_wait().unwrap() {
                assert!(status.success(), "{what} exited with {status}");
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("{what} did not finish within {limit:?}");
    }
}

/// A live H.264 (B-frames, a key frame a second) + AAC TS to 127.0.0.1:`port`.
fn live_source(port: u16) -> Killed {
    let child = Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-loglevel", "error", "-re"])
        .args(["-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25"])
        .args(["-f", "lavfi", "-i", "sine=frequency=1000:sample_rate=48000"])
        .args(["-c:v", "libx264", "-preset", "ultrafast", "-bf", "2"])
        .args(["-g", "25", "-keyint_min", "25", "-sc_threshold", "0"])
        .args(["-c:a", "aac", "-b:a", "64k", "-f", "mpegts"])
        .arg(format!("udp://127.0.0.1:{port}?pkt_size=1316"))
        .stdin(Stdio::null())
        .spawn()
        .expect("start ffmpeg");
    Killed(child)
}

/// `ffmpeg -listen 1` on 127.0.0.1:`port`, recording `secs` of what is published to
/// `/live/KEY` into `out` (stream copy), then exiting.
fn rtmp_listener(port: u16, out: &Path, secs: u32) -> Killed {
    let child = Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-loglevel", "error", "-y"])
        .args(["-listen", "1", "-i"])
        .arg(format!("rtmp://127.0.0.1:{port}/live/{KEY}"))
        .args(["-c", "copy", "-t", &secs.to_string()])
        .arg(out)
        .stdin(Stdio::null())
        .spawn()
        .expect("start ffmpeg -listen");
    Killed(child)
}

/// Frames of the first stream of `kind` ("v" or "a") that ffprobe decodes from `path`.
fn frames(path: &Path, kind: &str) -> u64 {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", &format!("{kind}:0")])
        .args([
            "-count_frames",
            "-show_entries",
            "stream=codec_name,nb_read_frames",
        ])
        .args(["-of", "csv=p=0"])
        .arg(path)
        .output()
        .expect("run ffprobe");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().next().unwrap_or("");
    let (codec, n) = line.split_once(',').unwrap_or(("", "0"));
    let want = if kind == "v" { "h264" } else { "aac" };
    let errors = String::from_utf8_lossy(&out.stderr);
    assert!(
        errors.trim().is_empty(),
        "ffprobe {kind} decode errors:\n{errors}"
    );
    assert_eq!(
        codec,
        want,
        "ffprobe {kind}: {line:?} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    n.trim().parse().unwrap_or(0)
}

/// The recording's video timing: DTS rising, PTS never before DTS, and B-frames present
/// (some PTS after DTS: the composition time came through).
fn assert_video_timing(path: &Path) {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0", "-show_entries"])
        .args(["packet=pts,dts", "-of", "csv=p=0"])
        .arg(path)
        .output()
        .expect("run ffprobe");
    let packets: Vec<(i64, i64)> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let (p, d) = l.split_once(',')?;
            Some((p.trim().parse().ok()?, d.trim().parse().ok()?))
        })
        .collect();
    assert!(packets.len() > 50, "{} video packets", packets.len());
    assert!(
        packets.windows(2).all(|w| w[0].1 < w[1].1),
        "DTS rising: {packets:?}"
    );
    assert!(
        packets.iter().all(|(p, d)| p >= d),
        "PTS >= DTS: {packets:?}"
    );
    assert!(
        packets.iter().any(|(p, d)| p > d),
        "B-frames reordered: {packets:?}"
    );
}

fn flow(in_port: u16, outputs: Value) -> Value {
    json!({
        "id": "f1", "name": "push", "enabled": true,
        "input": { "type": "udp", "bind_addr": format!("127.0.0.1:{in_port}") },
        "outputs": outputs
    })
}

fn output<'a>(f: &'a Value, id: &str) -> &'a Value {
    f["outputs"]
        .as_array()
        .and_then(|a| a.iter().find(|o| o["id"] == id))
        .unwrap_or_else(|| panic!("no output {id} in {f}"))
}

/// The key shows nowhere: log (at debug), events, config and stats.
fn assert_key_hidden(q: &Quoll) {
    let log = q.log();
    assert!(!log.contains(KEY), "the key is in the log:\n{log}");
    let events = q.events_text();
    assert!(!events.contains(KEY), "the key is in the events:\n{events}");
    for path in ["/api/v1/flows", "/api/v1/flows/f1", "/api/v1/stats"] {
        let (code, v) = q.api("GET", path, None);
        assert_eq!(code, 200);
        assert!(!v.to_string().contains(KEY), "the key is in {path}: {v}");
    }
}

#[test]
fn pushes_to_ffmpeg_listening_and_the_recording_decodes() {
    require_peers!("ffmpeg", "ffprobe");
    let dir = TempDir::new("rtmp-out");
    let (in_port, rtmp_port) = (free_udp_port(), free_tcp_port());
    let rec = dir.path().join("rec.flv");
    let mut listener = rtmp_listener(rtmp_port, &rec, 4);
    let q = Quoll::start_with_env(
        dir.path(),
        &node_config(
            free_tcp_port(),
            &dir.path().join("data"),
            json!([flow(
                in_port,
                json!([{ "type": "rtmp", "id": "push",
                "url": format!("rtmp://127.0.0.1:{rtmp_port}/live/{KEY}") }])
            )]),
        ),
        &[("QUOLL_LOG", "debug")],
    );
    let _source = live_source(in_port);
    listener.wait_exit(Duration::from_secs(40), "ffmpeg -listen (4 s recorded)");
    // 4 s at 25 fps, 48 kHz AAC (46.9 frames a second); the recording starts at a key frame.
    let (v, a) = (frames(&rec, "v"), frames(&rec, "a"));
    assert!(v >= 80, "{v} video frames decoded");
    assert!(a >= 150, "{a} audio frames decoded");
    assert_video_timing(&rec);
    let f = q.flow("f1");
    let o = output(&f, "push");
    assert_eq!(o["type"], "rtmp");
    assert!(o["bytes"].as_u64() > Some(100_000), "{o}");
    assert!(o["rtmp"]["connects"].as_u64() >= Some(1), "{o}");
    assert_eq!(o["rtmp"]["unsupported_streams"], 0, "{o}");
    assert_eq!(
        f["config"]["outputs"][0]["url"],
        json!(format!("rtmp://127.0.0.1:{rtmp_port}/live/***"))
    );
    // The recording ended: the server closed, quoll says so and retries; a new listener on
    // the same port gets a fresh publish (sequence headers again, from a key frame).
    q.wait_log("/live/*** lost:", 1, 0, Duration::from_secs(10));
    let rec2 = dir.path().join("rec2.flv");
    let mut listener = rtmp_listener(rtmp_port, &rec2, 2);
    listener.wait_exit(
        Duration::from_secs(40),
        "the second ffmpeg -listen (2 s recorded)",
    );
    let (v, a) = (frames(&rec2, "v"), frames(&rec2, "a"));
    assert!(
        v >= 30 && a >= 60,
        "{v} video and {a} audio frames after the reconnect"
    );
    let f = q.flow("f1");
    let o = output(&f, "push");
    assert!(o["rtmp"]["reconnects"].as_u64() >= Some(1), "{o}");
    assert_key_hidden(&q);
}

/// A TLS terminator on 127.0.0.1 (FFmpeg cannot listen on rtmps): each connection's TLS
/// is accepted with `cert`/`key` and its plain bytes relayed to 127.0.0.1:`to`. Stopped
/// on drop.
struct TlsTerminator {
    port: u16,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TlsTerminator {
    fn start(cert: Vec<u8>, key: Vec<u8>, to: u16) -> Self {
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        std_listener.set_nonblocking(true).unwrap();
        let port = std_listener.local_addr().unwrap().port();
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(std_listener).unwrap();
                let config = rustls::ServerConfig::builder_with_provider(Arc::new(
                    rustls::crypto::ring::default_provider(),
                ))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(
                    vec![rustls::pki_types::CertificateDer::from(cert)],
                    rustls::pki_types::PrivateKeyDer::try_from(key).unwrap(),
                )
                .unwrap();
                let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
                loop {
                    tokio::select! {
                        _ = &mut stopped => return,
                        accepted = listener.accept() => {
                            let Ok((tcp, _)) = accepted else { continue };
                            let acceptor = acceptor.clone();
                            tokio::spawn(async move {
                                // A client that refuses the certificate ends here.
                                let Ok(mut tls) = acceptor.accept(tcp).await else { return };
                                let Ok(mut plain) =
                                    tokio::net::TcpStream::connect(("127.0.0.1", to)).await
                                else {
                                    return;
                                };
                                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                            });
                        }
                    }
                }
            });
        });
        TlsTerminator {
            port,
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for TlsTerminator {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn rtmps_is_verified_a_pinned_self_signed_ingest_is_trusted_and_an_unpinned_one_refused() {
    require_peers!("ffmpeg", "ffprobe");
    let dir = TempDir::new("rtmps-out");
    let ck =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    let (cert, key) = (ck.cert.der().to_vec(), ck.signing_key.serialize_der());
    let pin = quoll::net::tls::fingerprint_hex(&quoll::net::tls::sha256(&cert));
    let (in_port, rtmp_port) = (free_udp_port(), free_tcp_port());
    let rec = dir.path().join("rec.flv");
    let mut listener = rtmp_listener(rtmp_port, &rec, 3);
    let tls = TlsTerminator::start(cert, key, rtmp_port);
    let url = format!("rtmps://127.0.0.1:{}/live/{KEY}", tls.port);
    let q = Quoll::start_with_env(
        dir.path(),
        &node_config(
            free_tcp_port(),
            &dir.path().join("data"),
            json!([flow(
                in_port,
                json!([
                    { "type": "rtmp", "id": "pinned", "url": url, "cert_fingerprint": pin },
                    { "type": "rtmp", "id": "unpinned", "url": url },
                ])
            )]),
        ),
        &[("QUOLL_LOG", "debug")],
    );
    let _source = live_source(in_port);
    listener.wait_exit(
        Duration::from_secs(40),
        "ffmpeg -listen behind TLS (3 s recorded)",
    );
    let (v, a) = (frames(&rec, "v"), frames(&rec, "a"));
    assert!(v >= 55, "{v} video frames decoded");
    assert!(a >= 110, "{a} audio frames decoded");
    let f = q.wait_flow(
        "f1",
        Duration::from_secs(10),
        "a refused certificate",
        |f| output(f, "unpinned")["rtmp"]["certificate_errors"].as_u64() >= Some(1),
    );
    let (pinned, unpinned) = (output(&f, "pinned"), output(&f, "unpinned"));
    assert!(pinned["rtmp"]["connects"].as_u64() >= Some(1), "{pinned}");
    assert_eq!(pinned["rtmp"]["certificate_errors"], 0, "{pinned}");
    assert_eq!(unpinned["rtmp"]["connects"], 0, "{unpinned}");
    assert_eq!(unpinned["bytes"], 0, "{unpinned}");
    let log = q.log();
    assert!(
        log.contains("invalid peer certificate"),
        "the refusal is logged:\n{log}"
    );
    assert_key_hidden(&q);
}

#[test]
fn a_destination_outbound_allow_refuses_ends_the_output_with_an_event_that_hides_the_key() {
    let dir = TempDir::new("rtmp-out-denied");
    let mut cfg = node_config(
        free_tcp_port(),
        &dir.path().join("data"),
        json!([flow(
            free_udp_port(),
            json!([{ "type": "rtmp", "id": "push",
            "url": format!("rtmp://localhost:1935/live/{KEY}") }])
        )]),
    );
    // A name is checked when it is resolved: localhost is outside the list.
    cfg["security"] = json!({ "outbound_allow": ["10.99.0.0/16"] });
    let q = Quoll::start_with_env(dir.path(), &cfg, &[("QUOLL_LOG", "debug")]);
    let e = q.wait_event(
        "Output 'push' failed to start on flow 'f1'",
        Duration::from_secs(10),
    );
    let text = e.to_string();
    assert!(text.contains("rtmp://localhost:1935/live/***"), "{text}");
    assert!(text.contains("outbound_allow"), "{text}");
    assert_key_hidden(&q);
}

#[test]
fn an_output_gives_up_after_max_reconnect_attempts() {
    let dir = TempDir::new("rtmp-out-gives-up");
    // Nothing listens on the port: every attempt is refused at once.
    let cfg = node_config(
        free_tcp_port(),
        &dir.path().join("data"),
        json!([flow(
            free_udp_port(),
            json!([{ "type": "rtmp", "id": "push",
                "dest_url": format!("rtmp://127.0.0.1:{}/live", free_tcp_port()),
                "stream_key": KEY, "reconnect_delay_secs": 1, "max_reconnect_attempts": 2 }])
        )]),
    );
    let q = Quoll::start(dir.path(), &cfg);
    let e = q.wait_event(
        "Output 'push' failed to start on flow 'f1'",
        Duration::from_secs(20),
    );
    let text = e.to_string();
    assert!(text.contains("gave up after 2 failed attempts"), "{text}");
    let f = q.flow("f1");
    assert_eq!(output(&f, "push")["rtmp"]["failed_attempts"], 2, "{f}");
    assert_key_hidden(&q);
}
