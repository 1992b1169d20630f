//! SRT against real libsrt peers (ffmpeg and srt-live-transmit from Debian's srt-tools), over
//! loopback: quoll as listener and as caller, on inputs and outputs, with and without
//! passphrase, a wrong passphrase, a 2022-7 redundant input with one sender killed
//! mid-stream, and a lossy path (a userspace proxy dropping 5 % each way: this machine's
//! kernel has no netem, see docs/srt.md).
//!
//! Every wait polls with a deadline; every child process is killed on drop.

mod common;
#[path = "common/srt.rs"]
mod srt_common;

use std::net::UdpSocket;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};
use srt_common::*;

/// `linger=2`: a closing ffmpeg sends and gets acknowledged what it still holds (see
/// `ffmpeg_into_listener`).
fn srt_url(port: u16, extra: &str) -> String {
    format!("srt://127.0.0.1:{port}?mode=caller&latency=120000&pkt_size=1316&linger=2{extra}")
}

/// ffmpeg as caller into a quoll listener. ffmpeg's libsrt output closes with `linger=0` by
/// default in live mode, discarding what is still in its send buffer; `srt_url` asks it to
/// linger, so the whole file comes out byte for byte.
fn ffmpeg_into_listener(passphrase: Option<(&str, u16)>) {
    let fx = fixture("srt-ffmpeg-listener", 4);
    let (rx, out_port) = udp_receiver();
    let port = free_udp_port();
    let mut input =
        json!({"type": "srt", "mode": "listener", "local_addr": format!("127.0.0.1:{port}")});
    let mut extra = String::new();
    if let Some((p, k)) = passphrase {
        input["passphrase"] = json!(p);
        input["aes_key_len"] = json!(k);
        extra = format!("&passphrase={p}&pbkeylen={k}");
    }
    let q = Quoll::start(
        fx.dir.path(),
        &config(
            free_tcp_port(),
            input,
            json!([{ "type": "udp", "id": "u", "dest_addr": format!("127.0.0.1:{out_port}") }]),
            &fx.dir,
        ),
    );
    let mut sender = ffmpeg_send(&fx.source, &srt_url(port, &extra), &fx.reference);
    let reference = finished_reference(&mut sender, &fx.reference);
    let out = receive_bytes(&rx, reference.len(), Duration::from_secs(10));
    assert!(!out.is_empty(), "nothing came out; log:\n{}", q.log());
    assert_eq!(
        out.len(),
        reference.len(),
        "{} bytes missing at the end",
        reference.len() as i64 - out.len() as i64
    );
    assert_eq!(
        checksum(&out),
        checksum(&reference),
        "delivered bytes differ from the sent ones"
    );
    assert_eq!(cc_errors(&out), 0);
    assert!(wait_until(Duration::from_secs(10), || count(
        &q.log(),
        "SRT input disconnected, reconnecting"
    ) == 1));
    let log = q.log();
    assert_eq!(
        count(&log, "SRT input connected (mode=listener)"),
        1,
        "{log}"
    );
    let (_, f) = q.api("GET", "/api/v1/flows/f1", None);
    assert_eq!(f["input"]["type"], "srt");
    assert_eq!(f["input"]["srt"]["leg1"]["connects"], 1, "{f}");
    assert_eq!(f["input"]["cc_errors"], 0);
    let (status, log) = q.terminate();
    assert!(status.success(), "{log}");
}

#[test]
fn ffmpeg_caller_into_quoll_listener() {
    if peers() {
        ffmpeg_into_listener(None);
    }
}

#[test]
fn ffmpeg_caller_into_quoll_listener_with_aes256_passphrase() {
    if peers() {
        ffmpeg_into_listener(Some((PASS, 32)));
    }
}

/// srt-live-transmit (fed by UDP, so it never closes) as caller, with `slt_params` added to
/// its SRT URL, into a quoll listener input with the `extra` fields: the whole stream comes
/// out byte for byte. With `hostile`, hostile datagrams hit the listener port first.
fn slt_caller_into_quoll_listener(tag: &str, extra: Value, slt_params: &str, hostile: bool) {
    let fx = fixture(tag, 4);
    let (rx, out_port) = udp_receiver();
    let (port, slt_in) = (free_udp_port(), free_udp_port());
    let mut input = json!({"type": "srt", "mode": "listener",
                           "local_addr": format!("127.0.0.1:{port}")});
    for (k, v) in extra.as_object().unwrap() {
        input[k] = v.clone();
    }
    let q = Quoll::start(
        fx.dir.path(),
        &config(
            free_tcp_port(),
            input,
            json!([{ "type": "udp", "id": "u", "dest_addr": format!("127.0.0.1:{out_port}") }]),
            &fx.dir,
        ),
    );
    if hostile {
        // Anyone can send to a listener port: hostile datagrams first (the fuzz finds among
        // them once aborted the process), then the real caller must get through untouched.
        let hostile = UdpSocket::bind("127.0.0.1:0").unwrap();
        for d in hostile_srt_datagrams() {
            hostile.send_to(&d, ("127.0.0.1", port)).unwrap();
        }
        let (code, _) = q.api("GET", "/healthz", None);
        assert_eq!(
            code,
            200,
            "quoll died on hostile datagrams; log:\n{}",
            q.log()
        );
    }
    let _slt = slt(&[
        &format!("udp://127.0.0.1:{slt_in}?rcvbuf=4194304"),
        &format!("srt://127.0.0.1:{port}?mode=caller{slt_params}"),
    ]);
    assert!(
        wait_until(Duration::from_secs(10), || count(
            &q.log(),
            "SRT input connected (mode=listener)"
        ) == 1),
        "srt-live-transmit did not connect; log:\n{}",
        q.log()
    );
    let mut sender = ffmpeg_send(
        &fx.source,
        &format!("udp://127.0.0.1:{slt_in}?pkt_size=1316"),
        &fx.reference,
    );
    let reference = finished_reference(&mut sender, &fx.reference);
    let out = receive_bytes(&rx, reference.len(), Duration::from_secs(10));
    assert_eq!(out.len(), reference.len(), "byte count");
    assert_eq!(checksum(&out), checksum(&reference), "bytes differ");
    let (_, f) = q.api("GET", "/api/v1/flows/f1", None);
    assert_eq!(f["input"]["packets"], (reference.len() / 188) as u64);
    assert_eq!(f["input"]["srt"]["leg1"]["decrypt_errors"], 0, "{f}");
    let (status, log) = q.terminate();
    assert!(status.success(), "{log}");
    assert_eq!(count(&log, "SRT input connection failed"), 0, "{log}");
}

/// srt-live-transmit as caller into a quoll listener with a passphrase and AES-128 on both
/// sides, after hostile datagrams.
#[test]
fn srt_live_transmit_caller_into_quoll_listener_byte_exact() {
    if peers() {
        slt_caller_into_quoll_listener(
            "srt-slt-listener",
            json!({"passphrase": PASS, "aes_key_len": 16, "latency_ms": 200}),
            &format!("&latency=200&passphrase={PASS}&pbkeylen=16"),
            true,
        );
    }
}

/// A listener with a passphrase and no `aes_key_len` takes the caller's key length, as a
/// libsrt listener does (docs/srt.md): an AES-256 srt-live-transmit caller gets through.
#[test]
fn listener_without_key_length_takes_the_callers_aes256() {
    if peers() {
        slt_caller_into_quoll_listener(
            "srt-slt-keylen",
            json!({"passphrase": PASS}),
            &format!("&passphrase={PASS}&pbkeylen=32"),
            false,
        );
    }
}

/// The `srt_packet` fuzz seeds (crashes found in upstream srt-protocol, kept as
/// regressions) and 600 generated control packets: handshakes and SRT extensions (type
/// 0x7FFF, every extension type) with random lengths and bytes, from a fixed seed.
fn hostile_srt_datagrams() -> Vec<Vec<u8>> {
    let seeds = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/srt_packet");
    let mut out: Vec<Vec<u8>> = std::fs::read_dir(&seeds)
        .expect("fuzz seeds")
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect();
    assert!(out.len() >= 2, "seeds missing in {}", seeds.display());
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for i in 0..600u32 {
        let mut d = if i % 2 == 0 {
            vec![0x80, 0x00]
        } else {
            vec![0xFF, 0xFF]
        };
        d.extend_from_slice(&((i % 10) as u16).to_be_bytes());
        let len = 12 + (next() % 80) as usize;
        d.extend((0..len).map(|_| next() as u8));
        out.push(d);
    }
    out
}

/// quoll's input as caller reading a srt-live-transmit listener (whose SRT URL gets
/// `slt_params`). quoll starts first: its attempts fail while the listener is not there,
/// which is reported once, not per retry.
fn quoll_caller_reads_slt_listener(tag: &str, extra: Value, slt_params: &str) {
    let fx = fixture(tag, 4);
    let (rx, out_port) = udp_receiver();
    let (port, slt_in) = (free_udp_port(), free_udp_port());
    let mut input = json!({"type": "srt", "mode": "caller", "local_addr": "127.0.0.1:0",
                           "remote_addr": format!("127.0.0.1:{port}")});
    for (k, v) in extra.as_object().unwrap() {
        input[k] = v.clone();
    }
    let q = Quoll::start_with_env(
        fx.dir.path(),
        &config(
            free_tcp_port(),
            input,
            json!([{ "type": "udp", "id": "u", "dest_addr": format!("127.0.0.1:{out_port}") }]),
            &fx.dir,
        ),
        &[("QUOLL_LOG", "info,quoll::input::srt=debug")],
    );
    // Nobody listens yet: at least three failed attempts, one event.
    assert!(
        wait_until(Duration::from_secs(30), || count(
            &q.log(),
            "SRT connect failed"
        ) >= 3),
        "log:\n{}",
        q.log()
    );
    assert_eq!(
        count(&q.log(), "SRT input connection failed: "),
        1,
        "{}",
        q.log()
    );
    let _slt = slt(&[
        &format!("udp://127.0.0.1:{slt_in}?rcvbuf=4194304"),
        &format!("srt://:{port}?mode=listener&latency=120{slt_params}"),
    ]);
    assert!(
        wait_until(Duration::from_secs(20), || count(
            &q.log(),
            "SRT input connected (mode=caller)"
        ) == 1),
        "log:\n{}",
        q.log()
    );
    let mut sender = ffmpeg_send(
        &fx.source,
        &format!("udp://127.0.0.1:{slt_in}?pkt_size=1316"),
        &fx.reference,
    );
    let reference = finished_reference(&mut sender, &fx.reference);
    let out = receive_bytes(&rx, reference.len(), Duration::from_secs(10));
    let (_, f) = q.api("GET", "/api/v1/flows/f1", None);
    assert_eq!(
        out.len(),
        reference.len(),
        "byte count; {f}\nlog:\n{}",
        q.log()
    );
    assert_eq!(checksum(&out), checksum(&reference), "bytes differ");
    assert_eq!(count(&q.log(), "SRT input connection failed: "), 1);
    assert_eq!(f["input"]["srt"]["leg1"]["decrypt_errors"], 0, "{f}");
    let (status, _) = q.terminate();
    assert!(status.success());
}

#[test]
fn quoll_caller_reads_srt_live_transmit_listener() {
    if peers() {
        quoll_caller_reads_slt_listener("srt-caller-in", json!({"stream_id": "live/quoll"}), "");
    }
}

/// The same with encryption: quoll's caller has the passphrase and AES-256; the
/// srt-live-transmit listener only the passphrase (it takes the caller's key length).
#[test]
fn quoll_caller_with_passphrase_reads_srt_live_transmit_listener() {
    if peers() {
        quoll_caller_reads_slt_listener(
            "srt-caller-in-pass",
            json!({"passphrase": PASS, "aes_key_len": 32}),
            &format!("&passphrase={PASS}"),
        );
    }
}

/// `stream_id` reaches the wire as libsrt writes it: a fake listener takes the conclusion
/// handshake of quoll's input caller and of a srt-live-transmit caller with the same
/// `streamid`, and their stream-id extensions (SRT_CMD_SID, 5) are the same bytes.
#[test]
fn stream_id_is_sent_as_libsrt_sends_it() {
    if !peers() {
        return;
    }
    let dir = TempDir::new("srt-stream-id");
    const SID: &str = "#!::r=live/quoll,m=request";
    let fake_q = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let fake_l = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let (pq, pl) = (
        fake_q.local_addr().unwrap().port(),
        fake_l.local_addr().unwrap().port(),
    );
    let q = Quoll::start(
        dir.path(),
        &config(
            free_tcp_port(),
            json!({"type": "srt", "mode": "caller", "local_addr": "127.0.0.1:0",
                   "remote_addr": format!("127.0.0.1:{pq}"), "stream_id": SID}),
            json!([]),
            &dir,
        ),
    );
    let from_quoll = capture_conclusion(&fake_q, Duration::from_secs(10))
        .unwrap_or_else(|| panic!("no conclusion handshake from quoll; log:\n{}", q.log()));
    let _slt = slt(&[
        &format!("udp://127.0.0.1:{}", free_udp_port()),
        &format!("srt://127.0.0.1:{pl}?mode=caller&streamid={SID}"),
    ]);
    let from_libsrt =
        capture_conclusion(&fake_l, Duration::from_secs(10)).expect("no conclusion from libsrt");
    let libsrt_sid = handshake_extension(&from_libsrt, 5).expect("libsrt sent no stream id");
    // The layout both must share: the string in 32-bit words, each word byte-reversed.
    let decoded: Vec<u8> = libsrt_sid
        .chunks(4)
        .flat_map(|w| w.iter().rev().copied())
        .filter(|&b| b != 0)
        .collect();
    assert_eq!(String::from_utf8_lossy(&decoded), SID);
    assert_eq!(
        handshake_extension(&from_quoll, 5),
        Some(libsrt_sid),
        "quoll's stream id extension differs from libsrt's"
    );
    let (status, _) = q.terminate();
    assert!(status.success());
}

/// A libsrt listener receives quoll's `stream_id`: ffmpeg as SRT listener logs
/// "accept streamid [...]" at debug level (srt-live-transmit shows nothing of it), for
/// quoll's output caller and for quoll's input caller.
#[test]
fn stream_id_reaches_a_libsrt_listener() {
    if !peers() {
        return;
    }
    let fx = fixture("srt-stream-id-ffmpeg", 2);
    const SID: &str = "#!::r=live/quoll,m=publish";
    let (in_port, out_l, in_l) = (free_udp_port(), free_udp_port(), free_udp_port());
    let log_out = fx.dir.path().join("ffmpeg-listener-in.log");
    let log_in = fx.dir.path().join("ffmpeg-listener-out.log");
    let file = |p: &Path| std::fs::File::create(p).unwrap();
    // Reads what quoll's output caller sends.
    let mut reader = Peer::adopt(
        "ffmpeg listener reading",
        Command::new("ffmpeg")
            .args(["-hide_banner", "-loglevel", "debug", "-nostdin", "-i"])
            .arg(format!(
                "srt://127.0.0.1:{out_l}?mode=listener&timeout=5000000"
            ))
            .args(["-f", "null", "-"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(file(&log_out))
            .spawn()
            .unwrap(),
    );
    // Sends to quoll's input caller.
    let mut sender = Peer::adopt(
        "ffmpeg listener sending",
        Command::new("ffmpeg")
            .args([
                "-hide_banner",
                "-loglevel",
                "debug",
                "-nostdin",
                "-re",
                "-i",
            ])
            .arg(&fx.source)
            .args(["-c", "copy", "-f", "mpegts"])
            .arg(format!(
                "srt://127.0.0.1:{in_l}?mode=listener&pkt_size=1316"
            ))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(file(&log_in))
            .spawn()
            .unwrap(),
    );
    assert!(wait_until(Duration::from_secs(10), || udp_bound(out_l)
        && udp_bound(in_l)));
    let dir = &fx.dir;
    let mut cfg = config(
        free_tcp_port(),
        json!({"type": "udp", "bind_addr": format!("127.0.0.1:{in_port}")}),
        json!([{ "type": "srt", "id": "s", "mode": "caller", "local_addr": "127.0.0.1:0",
                 "remote_addr": format!("127.0.0.1:{out_l}"), "stream_id": SID }]),
        dir,
    );
    cfg["flows"].as_array_mut().unwrap().push(json!({
        "id": "f2", "input": {"type": "srt", "mode": "caller", "local_addr": "127.0.0.1:0",
        "remote_addr": format!("127.0.0.1:{in_l}"), "stream_id": SID}
    }));
    let q = Quoll::start(dir.path(), &cfg);
    let accepted = format!("accept streamid [{SID}]");
    let seen = wait_until(Duration::from_secs(15), || {
        [&log_out, &log_in]
            .iter()
            .all(|p| std::fs::read_to_string(p).is_ok_and(|l| l.contains(&accepted)))
    });
    reader.kill();
    sender.kill();
    assert!(
        seen,
        "ffmpeg did not log {accepted:?}; output caller's listener:\n{}\ninput caller's listener:\n{}\nquoll:\n{}",
        std::fs::read_to_string(&log_out).unwrap_or_default(),
        std::fs::read_to_string(&log_in).unwrap_or_default(),
        q.log()
    );
    let (status, _) = q.terminate();
    assert!(status.success());
}

/// A quoll SRT output in listener mode feeding two callers at once: srt-live-transmit
/// (byte-exact) and ffmpeg (remuxes, so checked for size and continuity).
#[test]
fn quoll_output_listener_feeds_srt_live_transmit_and_ffmpeg() {
    if !peers() {
        return;
    }
    let fx = fixture("srt-out-listener", 4);
    let (rx, out_port) = udp_receiver();
    let (in_port, port) = (free_udp_port(), free_udp_port());
    let q = Quoll::start(
        fx.dir.path(),
        &config(
            free_tcp_port(),
            json!({"type": "udp", "bind_addr": format!("127.0.0.1:{in_port}")}),
            json!([{ "type": "srt", "id": "s", "mode": "listener",
                     "local_addr": format!("127.0.0.1:{port}"), "max_connections": 2 }]),
            &fx.dir,
        ),
    );
    let _slt = slt(&[
        &format!("srt://127.0.0.1:{port}?mode=caller&latency=120"),
        &format!("udp://127.0.0.1:{out_port}?sndbuf=4194304"),
    ]);
    let ff_out = fx.dir.path().join("ffmpeg-out.ts");
    let mut ff = Peer::spawn(
        "ffmpeg receiver",
        Command::new("ffmpeg")
            .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-y", "-i"])
            .arg(format!(
                "srt://127.0.0.1:{port}?mode=caller&latency=120000&timeout=8000000"
            ))
            .args(["-map", "0", "-c", "copy", "-f", "mpegts"])
            .arg(&ff_out),
    );
    assert!(
        wait_until(Duration::from_secs(15), || count(
            &q.log(),
            "SRT output 's' connected"
        ) == 2),
        "both callers should be connected; log:\n{}",
        q.log()
    );
    let mut sender = ffmpeg_send(
        &fx.source,
        &format!("udp://127.0.0.1:{in_port}?pkt_size=1316"),
        &fx.reference,
    );
    let reference = finished_reference(&mut sender, &fx.reference);
    let out = receive_bytes(&rx, reference.len(), Duration::from_secs(10));
    assert_eq!(
        out.len(),
        reference.len(),
        "byte count via srt-live-transmit; log:\n{}",
        q.log()
    );
    assert_eq!(checksum(&out), checksum(&reference), "bytes differ");
    let (_, f) = q.api("GET", "/api/v1/flows/f1", None);
    assert_eq!(f["outputs"][0]["srt"]["connections"], 2, "{f}");
    // ffmpeg's input times out 8 s after the stream stops and writes its file.
    assert!(
        ff.wait(Duration::from_secs(30)),
        "ffmpeg receiver did not finish"
    );
    let got = std::fs::read(&ff_out).unwrap_or_default();
    assert!(
        got.len() > reference.len() / 2,
        "ffmpeg got {} bytes",
        got.len()
    );
    assert_eq!(cc_errors(&got), 0);
    let (status, _) = q.terminate();
    assert!(status.success());
}

/// A quoll SRT output as caller into a srt-live-transmit listener, encrypted.
#[test]
fn quoll_output_caller_into_srt_live_transmit_listener_with_passphrase() {
    if !peers() {
        return;
    }
    let fx = fixture("srt-out-caller", 4);
    let (rx, out_port) = udp_receiver();
    let (in_port, port) = (free_udp_port(), free_udp_port());
    let _slt = slt(&[
        &format!("srt://:{port}?mode=listener&latency=120&passphrase={PASS}&pbkeylen=24"),
        &format!("udp://127.0.0.1:{out_port}?sndbuf=4194304"),
    ]);
    assert!(wait_until(Duration::from_secs(10), || udp_bound(port)));
    let q = Quoll::start(
        fx.dir.path(),
        &config(
            free_tcp_port(),
            json!({"type": "udp", "bind_addr": format!("127.0.0.1:{in_port}")}),
            json!([{ "type": "srt", "id": "s", "mode": "caller", "local_addr": "127.0.0.1:0",
                     "remote_addr": format!("127.0.0.1:{port}"), "passphrase": PASS,
                     "aes_key_len": 24 }]),
            &fx.dir,
        ),
    );
    assert!(
        wait_until(Duration::from_secs(15), || count(
            &q.log(),
            "SRT output 's' connected"
        ) == 1),
        "log:\n{}",
        q.log()
    );
    let mut sender = ffmpeg_send(
        &fx.source,
        &format!("udp://127.0.0.1:{in_port}?pkt_size=1316"),
        &fx.reference,
    );
    let reference = finished_reference(&mut sender, &fx.reference);
    let out = receive_bytes(&rx, reference.len(), Duration::from_secs(10));
    assert_eq!(out.len(), reference.len(), "byte count");
    assert_eq!(checksum(&out), checksum(&reference), "bytes differ");
    let (status, _) = q.terminate();
    assert!(status.success());
}

/// Wrong passphrases in both directions are events, never panics, and are reported once per
/// failing cycle however often the peer retries.
#[test]
fn wrong_passphrase_is_rejected_with_an_event() {
    if !peers() {
        return;
    }
    let dir = TempDir::new("srt-wrong-pass");
    let (listen_port, slt_port) = (free_udp_port(), free_udp_port());
    // Quoll listens with one passphrase; srt-live-transmit calls with another (twice).
    let api = free_tcp_port();
    let mut cfg = config(
        api,
        json!({"type": "srt", "mode": "listener", "local_addr": format!("127.0.0.1:{listen_port}"),
               "passphrase": PASS}),
        json!([]),
        &dir,
    );
    // Second flow: quoll calls a srt-live-transmit listener with the wrong passphrase.
    cfg["flows"].as_array_mut().unwrap().push(json!({
        "id": "f2", "input": {"type": "srt", "mode": "caller", "local_addr": "127.0.0.1:0",
        "remote_addr": format!("127.0.0.1:{slt_port}"), "passphrase": "not-the-right-one"}
    }));
    let sink = free_udp_port();
    let _listener = slt(&[
        &format!("srt://:{slt_port}?mode=listener&passphrase={PASS}"),
        &format!("udp://127.0.0.1:{sink}"),
    ]);
    let q = Quoll::start_with_env(
        dir.path(),
        &cfg,
        &[("QUOLL_LOG", "info,quoll::input::srt=debug")],
    );
    for _ in 0..2 {
        let mut caller = slt(&[
            "-a:no",
            &format!("udp://127.0.0.1:{}", free_udp_port()),
            &format!("srt://127.0.0.1:{listen_port}?mode=caller&passphrase=wrong-passphrase-x"),
        ]);
        // srt-live-transmit gives up on a rejected connection and exits.
        caller.wait(Duration::from_secs(10));
    }
    assert!(
        wait_until(Duration::from_secs(15), || {
            let log = q.log();
            log.matches("SRT connect failed").count() >= 3
                && log.contains(r#"SRT input connection failed: "#)
                && log.contains(r#"flow_id=Some("f1")"#)
        }),
        "log:\n{}",
        q.log()
    );
    let log = q.log();
    let failed: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("SRT input connection failed"))
        .collect();
    assert_eq!(
        failed
            .iter()
            .filter(|l| l.contains(r#"Some("f1")"#))
            .count(),
        1,
        "listener side: once per cycle\n{log}"
    );
    assert_eq!(
        failed
            .iter()
            .filter(|l| l.contains(r#"Some("f2")"#))
            .count(),
        1,
        "caller side: once per cycle, not per retry\n{log}"
    );
    assert_eq!(count(&log, "SRT input connected"), 0, "{log}");
    assert!(!log.contains("panicked"), "{log}");
    let (code, _) = q.api("GET", "/api/v1/flows/f1", None);
    assert_eq!(code, 200);
    let (status, log) = q.terminate();
    assert!(status.success(), "{log}");
}

/// 2022-7: two srt-live-transmit senders carry the same UDP datagrams to the two legs of a
/// quoll listener input. One is killed mid-stream: the output has every byte, in order.
#[test]
fn redundant_input_survives_one_sender_killed_mid_stream() {
    if !peers() {
        return;
    }
    let fx = fixture("srt-redundancy", 6);
    let (rx, out_port) = udp_receiver();
    let (leg1, leg2, in1, in2) = (
        free_udp_port(),
        free_udp_port(),
        free_udp_port(),
        free_udp_port(),
    );
    let q = Quoll::start(
        fx.dir.path(),
        &config(
            free_tcp_port(),
            json!({"type": "srt", "mode": "listener", "local_addr": format!("127.0.0.1:{leg1}"),
                   "redundancy": {"mode": "listener", "local_addr": format!("127.0.0.1:{leg2}")}}),
            json!([{ "type": "udp", "id": "u", "dest_addr": format!("127.0.0.1:{out_port}") }]),
            &fx.dir,
        ),
    );
    let mut a = slt(&[
        &format!("udp://127.0.0.1:{in1}?rcvbuf=4194304"),
        &format!("srt://127.0.0.1:{leg1}?mode=caller&latency=120"),
    ]);
    let _b = slt(&[
        &format!("udp://127.0.0.1:{in2}?rcvbuf=4194304"),
        &format!("srt://127.0.0.1:{leg2}?mode=caller&latency=120"),
    ]);
    assert!(
        wait_until(Duration::from_secs(10), || {
            let log = q.log();
            log.contains("SRT input connected (mode=listener, redundant leg 1)")
                && log.contains("SRT input connected (mode=listener, redundant leg 2)")
        }),
        "log:\n{}",
        q.log()
    );
    // One ffmpeg, one mux, the same datagrams to both senders (and to the reference).
    let reference = fx.reference.clone();
    let mut sender = Peer::spawn(
        "ffmpeg sender",
        Command::new("ffmpeg")
            .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-re", "-i"])
            .arg(&fx.source)
            .args(["-map", "0", "-c", "copy", "-f", "tee"])
            .arg(format!(
                "[f=mpegts]udp://127.0.0.1:{in1}?pkt_size=1316|[f=mpegts]udp://127.0.0.1:{in2}?pkt_size=1316|[f=mpegts]{}",
                reference.display()
            )),
    );
    // Mid-stream (2 of 6 s in), kill leg 1's sender.
    let mut got = receive_until(&rx, Duration::from_secs(20), |d| total(d) >= 250_000);
    a.kill();
    let reference = finished_reference(&mut sender, &reference);
    let have = total(&got);
    got.extend(receive_until(&rx, Duration::from_secs(10), |d| {
        have + total(d) >= reference.len()
    }));
    let out = got.concat();
    assert_eq!(cc_errors(&out), 0, "continuity errors in the merged output");
    assert_eq!(out.len(), reference.len(), "byte count; log:\n{}", q.log());
    assert_eq!(checksum(&out), checksum(&reference), "bytes differ");
    assert!(
        wait_until(Duration::from_secs(5), || q
            .log()
            .contains("Redundant leg 1 lost")),
        "log:\n{}",
        q.log()
    );
    let log = q.log();
    assert_eq!(count(&log, "Redundant leg 2 lost"), 0);
    assert_eq!(count(&log, "Both redundant legs lost"), 0);
    let (_, f) = q.api("GET", "/api/v1/flows/f1", None);
    assert!(
        f["input"]["srt"]["duplicates"].as_u64().unwrap() > 100,
        "{f}"
    );
    let (status, _) = q.terminate();
    assert!(status.success());
}

/// 2022-7 with holes: leg 1 leads (SRT latency 60 ms) over a lossy path (5 % loss each way,
/// 30 ms each way), so SRT cannot repair everything in time and drops packets as too late:
/// leg 1 has holes. Leg 2 lags (latency 200 ms) on a clean path. The merge holds what
/// follows each hole until leg 2's copy arrives (the default window: 100 ms plus the
/// 140 ms latency difference) and the output is the source, byte for byte, in order.
#[test]
fn redundant_input_fills_the_leading_legs_holes_from_the_other_leg() {
    if !peers() {
        return;
    }
    let fx = fixture("srt-redundancy-holes", 5);
    let (rx, out_port) = udp_receiver();
    let (leg1, leg2, in1, in2) = (
        free_udp_port(),
        free_udp_port(),
        free_udp_port(),
        free_udp_port(),
    );
    let q = Quoll::start(
        fx.dir.path(),
        &config(
            free_tcp_port(),
            json!({"type": "srt", "mode": "listener", "local_addr": format!("127.0.0.1:{leg1}"),
                   "latency_ms": 60,
                   "redundancy": {"mode": "listener", "local_addr": format!("127.0.0.1:{leg2}"),
                                  "latency_ms": 200}}),
            json!([{ "type": "udp", "id": "u", "dest_addr": format!("127.0.0.1:{out_port}") }]),
            &fx.dir,
        ),
    );
    let proxy = LossyProxy::start(leg1, 50, Duration::from_millis(30));
    let _a = slt(&[
        &format!("udp://127.0.0.1:{in1}?rcvbuf=4194304"),
        &format!("srt://127.0.0.1:{}?mode=caller&latency=60", proxy.port),
    ]);
    let _b = slt(&[
        &format!("udp://127.0.0.1:{in2}?rcvbuf=4194304"),
        &format!("srt://127.0.0.1:{leg2}?mode=caller&latency=200"),
    ]);
    assert!(
        wait_until(Duration::from_secs(15), || {
            let log = q.log();
            log.contains("SRT input connected (mode=listener, redundant leg 1)")
                && log.contains("SRT input connected (mode=listener, redundant leg 2)")
        }),
        "log:\n{}",
        q.log()
    );
    let reference = fx.reference.clone();
    let mut sender = Peer::spawn(
        "ffmpeg sender",
        Command::new("ffmpeg")
            .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-re", "-i"])
            .arg(&fx.source)
            .args(["-map", "0", "-c", "copy", "-f", "tee"])
            .arg(format!(
                "[f=mpegts]udp://127.0.0.1:{in1}?pkt_size=1316|[f=mpegts]udp://127.0.0.1:{in2}?pkt_size=1316|[f=mpegts]{}",
                reference.display()
            )),
    );
    let reference = finished_reference(&mut sender, &reference);
    let out = receive_bytes(&rx, reference.len(), Duration::from_secs(10));
    let (_, f) = q.api("GET", "/api/v1/flows/f1", None);
    let srt = &f["input"]["srt"];
    assert!(
        srt["leg1"]["dropped"].as_u64().unwrap_or(0) > 0,
        "leg 1 had no holes (no packet dropped as too late): {srt}"
    );
    assert_eq!(
        cc_errors(&out),
        0,
        "continuity errors in the merged output: {srt}"
    );
    assert_eq!(out.len(), reference.len(), "byte count: {srt}");
    assert_eq!(checksum(&out), checksum(&reference), "bytes differ: {srt}");
    assert!(srt["filled"].as_u64().unwrap_or(0) > 0, "{srt}");
    assert_eq!(srt["gaps"], 0, "{srt}");
    drop(proxy);
    let (status, _) = q.terminate();
    assert!(status.success());
}

/// Null-packet datagrams to UDP `port` every 10 ms until dropped.
struct NullTail(Arc<AtomicBool>, Option<std::thread::JoinHandle<()>>);

impl NullTail {
    fn start(port: u16) -> NullTail {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let t = std::thread::spawn(move || {
            let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
            let mut d = vec![0xFFu8; 7 * 188];
            for p in d.chunks_mut(188) {
                p[..4].copy_from_slice(&[0x47, 0x1F, 0xFF, 0x10]);
            }
            while !flag.load(Ordering::Relaxed) {
                let _ = tx.send_to(&d, ("127.0.0.1", port));
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        NullTail(stop, Some(t))
    }
}

impl Drop for NullTail {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
        if let Some(t) = self.1.take() {
            let _ = t.join();
        }
    }
}

/// A UDP relay between two endpoints that drops `loss_per_mille` of the datagrams in each
/// direction (deterministically: a xorshift draw) and delays every other one by `delay`
/// (each way, so the path's round trip is twice that). The receiving thread never waits
/// on the data path: it stamps each datagram with its due time and queues it; a timer
/// thread sends the queue's head when it is due (the delay is constant, so the FIFO is in
/// time order; `thread::sleep` is a high-resolution timer, where a socket receive timeout
/// would round to the kernel tick). Stops on drop.
struct LossyProxy {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<(u64, u64)>>,
}

impl LossyProxy {
    fn start(to: u16, loss_per_mille: u32, delay: Duration) -> LossyProxy {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let port = sock.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let server: std::net::SocketAddr = format!("127.0.0.1:{to}").parse().unwrap();
        let out = sock.try_clone().unwrap();
        let (queue, due) = std::sync::mpsc::channel::<(Instant, std::net::SocketAddr, Vec<u8>)>();
        let timer = std::thread::spawn(move || {
            let mut relayed = 0u64;
            // Ends when the receiving thread drops its end of the queue.
            while let Ok((at, dest, d)) = due.recv() {
                std::thread::sleep(at.saturating_duration_since(Instant::now()));
                let _ = out.send_to(&d, dest);
                relayed += 1;
            }
            relayed
        });
        let thread = std::thread::spawn(move || {
            let mut client = None;
            let mut buf = vec![0u8; 65536];
            let mut x = 0x2545_f491_4f6c_dd1du64;
            let mut dropped = 0u64;
            while !flag.load(Ordering::Relaxed) {
                let Ok((n, from)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                if (x % 1000) < u64::from(loss_per_mille) {
                    dropped += 1;
                    continue;
                }
                let dest = if from == server {
                    match client {
                        Some(c) => c,
                        None => continue,
                    }
                } else {
                    client = Some(from);
                    server
                };
                let _ = queue.send((Instant::now() + delay, dest, buf[..n].to_vec()));
            }
            drop(queue);
            (timer.join().unwrap(), dropped)
        });
        LossyProxy {
            port,
            stop,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap()
    }
}

impl Drop for LossyProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// 5 % loss each way at 120 ms latency over a path with a real round trip (20 ms each way
/// through `LossyProxy`: latency three round trips; this kernel has no netem, see
/// docs/srt.md): SRT's retransmissions recover everything, with zero continuity errors and
/// every byte. Null packets follow the file so that a loss among its last datagrams is
/// detected (and repaired) like any other: a lost tail with nothing after it is invisible
/// to any SRT receiver.
#[test]
fn five_percent_loss_at_120_ms_latency_loses_nothing() {
    if !peers() {
        return;
    }
    let fx = fixture("srt-lossy", 4);
    let (rx, out_port) = udp_receiver();
    let (port, slt_in) = (free_udp_port(), free_udp_port());
    let q = Quoll::start(
        fx.dir.path(),
        &config(
            free_tcp_port(),
            json!({"type": "srt", "mode": "listener", "local_addr": format!("127.0.0.1:{port}"),
                   "latency_ms": 120}),
            json!([{ "type": "udp", "id": "u", "dest_addr": format!("127.0.0.1:{out_port}") }]),
            &fx.dir,
        ),
    );
    const DELAY: Duration = Duration::from_millis(20);
    let proxy = LossyProxy::start(port, 50, DELAY);
    let _slt = slt(&[
        &format!("udp://127.0.0.1:{slt_in}?rcvbuf=4194304"),
        &format!("srt://127.0.0.1:{}?mode=caller&latency=120", proxy.port),
    ]);
    assert!(
        wait_until(Duration::from_secs(15), || count(
            &q.log(),
            "SRT input connected"
        ) == 1),
        "log:\n{}",
        q.log()
    );
    let mut sender = ffmpeg_send(
        &fx.source,
        &format!("udp://127.0.0.1:{slt_in}?pkt_size=1316"),
        &fx.reference,
    );
    let reference = finished_reference(&mut sender, &fx.reference);
    let tail = NullTail::start(slt_in);
    let mut out = receive_bytes(&rx, reference.len(), Duration::from_secs(10));
    drop(tail);
    out.truncate(reference.len());
    let (relayed, dropped) = proxy.finish();
    assert!(
        dropped * 100 > (relayed + dropped) * 3,
        "the proxy dropped {dropped} of {}",
        relayed + dropped
    );
    let (_, f) = q.api("GET", "/api/v1/flows/f1", None);
    let leg = &f["input"]["srt"]["leg1"];
    assert_eq!(
        cc_errors(&out),
        0,
        "continuity errors after loss; SRT stats {leg}"
    );
    assert_eq!(out.len(), reference.len(), "byte count; SRT stats {leg}");
    assert_eq!(
        checksum(&out),
        checksum(&reference),
        "bytes differ; SRT stats {leg}"
    );
    let rtt = f["input"]["srt"]["leg1"]["rtt_ms"].as_f64().unwrap_or(0.0);
    let min_rtt = 2.0 * DELAY.as_secs_f64() * 1000.0;
    assert!(
        (min_rtt..200.0).contains(&rtt),
        "the path's RTT is {rtt} ms, not {min_rtt} or a little more: {f}"
    );
    assert!(
        f["input"]["srt"]["leg1"]["retransmits"]
            .as_u64()
            .unwrap_or(0)
            > 0,
        "{f}"
    );
    let (status, _) = q.terminate();
    assert!(status.success());
}

/// Rendezvous with libsrt: both sides connect to each other at once.
#[test]
fn rendezvous_input_with_srt_live_transmit() {
    if !peers() {
        return;
    }
    let fx = fixture("srt-rendezvous", 3);
    let (rx, out_port) = udp_receiver();
    let (local, remote, slt_in) = (free_udp_port(), free_udp_port(), free_udp_port());
    let q = Quoll::start_with_env(
        fx.dir.path(),
        &config(
            free_tcp_port(),
            json!({"type": "srt", "mode": "rendezvous", "local_addr": format!("127.0.0.1:{local}"),
                   "remote_addr": format!("127.0.0.1:{remote}")}),
            json!([{ "type": "udp", "id": "u", "dest_addr": format!("127.0.0.1:{out_port}") }]),
            &fx.dir,
        ),
        &[("QUOLL_LOG", "info,quoll::input::srt=debug")],
    );
    let _slt = slt(&[
        &format!("udp://127.0.0.1:{slt_in}?rcvbuf=4194304"),
        &format!("srt://127.0.0.1:{local}?mode=rendezvous&port={remote}&localport={remote}"),
    ]);
    assert!(
        wait_until(Duration::from_secs(15), || count(
            &q.log(),
            "SRT input connected (mode=rendezvous)"
        ) == 1),
        "log:\n{}",
        q.log()
    );
    let mut sender = ffmpeg_send(
        &fx.source,
        &format!("udp://127.0.0.1:{slt_in}?pkt_size=1316"),
        &fx.reference,
    );
    let reference = finished_reference(&mut sender, &fx.reference);
    let out = receive_bytes(&rx, reference.len(), Duration::from_secs(10));
    assert_eq!(out.len(), reference.len(), "byte count");
    assert_eq!(checksum(&out), checksum(&reference), "bytes differ");
    let (status, _) = q.terminate();
    assert!(status.success());
}

/// Rendezvous on an output: quoll's SRT output and a srt-live-transmit reader (rendezvous,
/// SRT in, UDP out) connect to each other; the stream arrives byte for byte.
#[test]
fn rendezvous_output_with_srt_live_transmit() {
    if !peers() {
        return;
    }
    let fx = fixture("srt-rendezvous-out", 3);
    let (rx, out_port) = udp_receiver();
    let (in_port, local, remote) = (free_udp_port(), free_udp_port(), free_udp_port());
    let q = Quoll::start(
        fx.dir.path(),
        &config(
            free_tcp_port(),
            json!({"type": "udp", "bind_addr": format!("127.0.0.1:{in_port}")}),
            json!([{ "type": "srt", "id": "s", "mode": "rendezvous",
                     "local_addr": format!("127.0.0.1:{local}"),
                     "remote_addr": format!("127.0.0.1:{remote}") }]),
            &fx.dir,
        ),
    );
    let _slt = slt(&[
        &format!("srt://127.0.0.1:{local}?mode=rendezvous&port={remote}&localport={remote}"),
        &format!("udp://127.0.0.1:{out_port}?sndbuf=4194304"),
    ]);
    assert!(
        wait_until(Duration::from_secs(15), || count(
            &q.log(),
            "SRT output 's' connected"
        ) == 1),
        "log:\n{}",
        q.log()
    );
    let mut sender = ffmpeg_send(
        &fx.source,
        &format!("udp://127.0.0.1:{in_port}?pkt_size=1316"),
        &fx.reference,
    );
    let reference = finished_reference(&mut sender, &fx.reference);
    let out = receive_bytes(&rx, reference.len(), Duration::from_secs(10));
    let (_, f) = q.api("GET", "/api/v1/flows/f1", None);
    assert_eq!(
        out.len(),
        reference.len(),
        "byte count; {f}\nlog:\n{}",
        q.log()
    );
    assert_eq!(checksum(&out), checksum(&reference), "bytes differ");
    let (status, _) = q.terminate();
    assert!(status.success());
}

/// A caller that freezes (SIGSTOP: no ACKs, no keepalives, socket still open) is detected
/// as stale and dropped; a third caller beyond `max_connections` is refused; and the
/// listener's port is free again when the flow restarts (srt-tokio kept it bound).
#[test]
fn output_listener_stale_peer_caller_limit_and_restart() {
    if !peers() {
        return;
    }
    let dir = TempDir::new("srt-stale");
    let (in_port, port) = (free_udp_port(), free_udp_port());
    let api = free_tcp_port();
    let q = Quoll::start(
        dir.path(),
        &config(
            api,
            json!({"type": "udp", "bind_addr": format!("127.0.0.1:{in_port}")}),
            json!([{ "type": "srt", "id": "s", "mode": "listener",
                     "local_addr": format!("127.0.0.1:{port}"), "max_connections": 2,
                     "peer_idle_timeout_secs": 60 }]),
            &dir,
        ),
    );
    let caller = |sink: u16| {
        slt(&[
            &format!("srt://127.0.0.1:{port}?mode=caller"),
            &format!("udp://127.0.0.1:{sink}"),
        ])
    };
    let frozen = caller(free_udp_port());
    let _ok = caller(free_udp_port());
    assert!(wait_until(Duration::from_secs(10), || count(
        &q.log(),
        "SRT output 's' connected"
    ) == 2));
    let _third = caller(free_udp_port());
    assert!(
        wait_until(Duration::from_secs(10), || {
            let (_, f) = q.api("GET", "/api/v1/flows/f1", None);
            f["outputs"][0]["srt"]["refused"].as_u64().unwrap_or(0) >= 1
        }),
        "third caller not refused; log:\n{}",
        q.log()
    );
    // Data flows, then one peer freezes.
    let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut chunk = vec![0u8; 1316];
    for p in chunk.chunks_mut(188) {
        p[..4].copy_from_slice(&[0x47, 0x01, 0x00, 0x10]);
    }
    signal(&frozen, "STOP");
    let stale = wait_until(Duration::from_secs(20), || {
        for (i, p) in chunk.chunks_mut(188).enumerate() {
            p[3] = 0x10 | ((p[3] + 1 + i as u8) & 0x0F);
        }
        let _ = tx.send_to(&chunk, ("127.0.0.1", in_port));
        count(&q.log(), "SRT output 's' stale connection detected") == 1
    });
    signal(&frozen, "CONT");
    assert!(
        stale,
        "frozen peer not detected as stale; log:\n{}",
        q.log()
    );
    let (_, f) = q.api("GET", "/api/v1/flows/f1", None);
    assert_eq!(f["outputs"][0]["srt"]["stale"], 1, "{f}");
    // Restart: the SRT port must be free at once.
    let (code, f) = q.api("POST", "/api/v1/flows/f1/restart", None);
    assert_eq!(code, 200, "{f}");
    assert_eq!(f["state"], "running", "{f}; log:\n{}", q.log());
    let (status, log) = q.terminate();
    assert!(status.success(), "{log}");
}

/// An SRT output with a redundancy leg feeds both legs: two srt-live-transmit listeners each
/// get the whole stream.
#[test]
fn redundant_output_feeds_both_legs() {
    if !peers() {
        return;
    }
    let fx = fixture("srt-out-redundant", 3);
    let (rx1, out1) = udp_receiver();
    let (rx2, out2) = udp_receiver();
    let (in_port, l1, l2) = (free_udp_port(), free_udp_port(), free_udp_port());
    let _s1 = slt(&[
        &format!("srt://:{l1}?mode=listener"),
        &format!("udp://127.0.0.1:{out1}?sndbuf=4194304"),
    ]);
    let _s2 = slt(&[
        &format!("srt://:{l2}?mode=listener"),
        &format!("udp://127.0.0.1:{out2}?sndbuf=4194304"),
    ]);
    assert!(wait_until(Duration::from_secs(10), || udp_bound(l1) && udp_bound(l2)));
    let q = Quoll::start(
        fx.dir.path(),
        &config(
            free_tcp_port(),
            json!({"type": "udp", "bind_addr": format!("127.0.0.1:{in_port}")}),
            json!([{ "type": "srt", "id": "s", "mode": "caller", "local_addr": "127.0.0.1:0",
                     "remote_addr": format!("127.0.0.1:{l1}"),
                     "redundancy": {"mode": "caller", "local_addr": "127.0.0.1:0",
                                    "remote_addr": format!("127.0.0.1:{l2}")} }]),
            &fx.dir,
        ),
    );
    assert!(
        wait_until(Duration::from_secs(15), || count(
            &q.log(),
            "SRT output 's' connected"
        ) == 2),
        "log:\n{}",
        q.log()
    );
    let mut sender = ffmpeg_send(
        &fx.source,
        &format!("udp://127.0.0.1:{in_port}?pkt_size=1316"),
        &fx.reference,
    );
    let reference = finished_reference(&mut sender, &fx.reference);
    for rx in [&rx1, &rx2] {
        let out = receive_bytes(rx, reference.len(), Duration::from_secs(10));
        assert_eq!(out.len(), reference.len(), "byte count");
        assert_eq!(checksum(&out), checksum(&reference), "bytes differ");
    }
    let (_, f) = q.api("GET", "/api/v1/flows/f1", None);
    assert_eq!(f["outputs"][0]["srt"]["connections"], 2, "{f}");
    let (status, _) = q.terminate();
    assert!(status.success());
}

/// 2022-7 with RTP inside SRT: one RTP stream (ffmpeg `rtp_mpegts`) duplicated to two
/// srt-live-transmit senders; quoll merges the legs by RTP sequence number and strips the
/// headers. Leg 2's sender is killed mid-stream: the TS out equals the RTP payloads sent.
#[test]
fn redundant_rtp_input_merges_by_sequence_number() {
    if !peers() {
        return;
    }
    let fx = fixture("srt-redundancy-rtp", 5);
    let (rx, out_port) = udp_receiver();
    let (leg1, leg2, in1, in2) = (
        free_udp_port(),
        free_udp_port(),
        free_udp_port(),
        free_udp_port(),
    );
    let q = Quoll::start(
        fx.dir.path(),
        &config(
            free_tcp_port(),
            json!({"type": "srt", "mode": "listener", "local_addr": format!("127.0.0.1:{leg1}"),
                   "redundancy": {"mode": "listener", "local_addr": format!("127.0.0.1:{leg2}")}}),
            json!([{ "type": "udp", "id": "u", "dest_addr": format!("127.0.0.1:{out_port}") }]),
            &fx.dir,
        ),
    );
    let _a = slt(&[
        &format!("udp://127.0.0.1:{in1}?rcvbuf=4194304"),
        &format!("srt://127.0.0.1:{leg1}?mode=caller"),
    ]);
    let mut b = slt(&[
        &format!("udp://127.0.0.1:{in2}?rcvbuf=4194304"),
        &format!("srt://127.0.0.1:{leg2}?mode=caller"),
    ]);
    assert!(wait_until(Duration::from_secs(10), || {
        let log = q.log();
        log.contains("redundant leg 1)") && log.contains("redundant leg 2)")
    }));
    // The duplicator: every RTP datagram to both senders; the TS payloads are the reference.
    let (dup_rx, dup_port) = udp_receiver();
    let mut sender = Peer::spawn(
        "ffmpeg rtp sender",
        Command::new("ffmpeg")
            .args([
                "-hide_banner",
                "-loglevel",
                "error",
                "-nostdin",
                "-re",
                "-i",
            ])
            .arg(&fx.source)
            .args(["-map", "0", "-c", "copy", "-f", "rtp_mpegts"])
            .arg(format!("rtp://127.0.0.1:{dup_port}?pkt_size=1328")),
    );
    let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut reference = Vec::new();
    let mut buf = vec![0u8; 65536];
    let mut forwarded = 0usize;
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut idle_since = Instant::now();
    while Instant::now() < deadline && idle_since.elapsed() < Duration::from_secs(2) {
        let Ok(n) = dup_rx.recv(&mut buf) else {
            continue;
        };
        idle_since = Instant::now();
        let d = &buf[..n];
        assert!(n > 12 && d[0] >> 6 == 2, "not RTP");
        reference.extend_from_slice(&d[12..]);
        let _ = tx.send_to(d, ("127.0.0.1", in1));
        if b.child.is_some() {
            let _ = tx.send_to(d, ("127.0.0.1", in2));
        }
        forwarded += 1;
        if forwarded == 150 {
            b.kill();
        }
    }
    assert!(sender.wait(Duration::from_secs(5)));
    assert!(reference.len() > 100_000);
    let out = receive_bytes(&rx, reference.len(), Duration::from_secs(10));
    assert_eq!(cc_errors(&out), 0);
    assert_eq!(out.len(), reference.len(), "byte count; log:\n{}", q.log());
    assert_eq!(checksum(&out), checksum(&reference), "bytes differ");
    assert!(wait_until(Duration::from_secs(5), || q
        .log()
        .contains("Redundant leg 2 lost")));
    let (_, f) = q.api("GET", "/api/v1/flows/f1", None);
    // The lagging leg's copies are duplicates of what went out; nothing was late or lost.
    let srt = &f["input"]["srt"];
    assert!(srt["duplicates"].as_u64().unwrap() > 100, "{f}");
    assert_eq!((&srt["late"], &srt["gaps"]), (&json!(0), &json!(0)), "{f}");
    let (status, _) = q.terminate();
    assert!(status.success());
}

/// `peer_idle_timeout_secs` is applied: a caller that freezes (SIGSTOP) is dropped after
/// about 2 s, and the input reports the disconnect once.
#[test]
fn input_peer_idle_timeout_drops_a_frozen_caller() {
    if !peers() {
        return;
    }
    let dir = TempDir::new("srt-idle");
    let (port, slt_in) = (free_udp_port(), free_udp_port());
    let q = Quoll::start(
        dir.path(),
        &config(
            free_tcp_port(),
            json!({"type": "srt", "mode": "listener", "local_addr": format!("127.0.0.1:{port}"),
                   "peer_idle_timeout_secs": 2}),
            json!([]),
            &dir,
        ),
    );
    let frozen = slt(&[
        &format!("udp://127.0.0.1:{slt_in}"),
        &format!("srt://127.0.0.1:{port}?mode=caller"),
    ]);
    assert!(wait_until(Duration::from_secs(10), || count(
        &q.log(),
        "SRT input connected (mode=listener)"
    ) == 1));
    let t0 = Instant::now();
    signal(&frozen, "STOP");
    let dropped = wait_until(Duration::from_secs(10), || {
        count(&q.log(), "SRT input disconnected, reconnecting") == 1
    });
    let took = t0.elapsed();
    signal(&frozen, "CONT");
    assert!(dropped, "log:\n{}", q.log());
    assert!(
        took >= Duration::from_millis(1500),
        "dropped after {took:?}, before the idle timeout"
    );
    let (status, _) = q.terminate();
    assert!(status.success());
}
