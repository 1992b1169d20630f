//! SRT connection events against real libsrt peers (srt-live-transmit, ffmpeg): encrypted
//! output listeners, wrong passphrases on outputs, callers (input and output) that lose
//! their listener and get it back, and the latching of the seed's messages: one event per
//! connection cycle, never one per retry. Messages are checked with their exact seed text
//! (docs/events.md: ASCII quotes).
//!
//! Every wait polls with a deadline; every child process is killed on drop.

mod common;
#[path = "common/srt.rs"]
mod srt_common;

use std::time::Duration;

use common::*;
use serde_json::json;
use srt_common::*;

/// Lines of `log` holding `needle` that belong to flow `f1`'s events.
fn events(log: &str, needle: &str) -> usize {
    log.lines()
        .filter(|l| l.contains("quoll::events") && l.contains(needle))
        .count()
}

/// Discards what `rx` holds now.
fn drain(rx: &std::net::UdpSocket) {
    rx.set_nonblocking(true).unwrap();
    while rx.recv(&mut [0u8; 2048]).is_ok() {}
    rx.set_nonblocking(false).unwrap();
}

fn output_srt(q: &Quoll, field: &str) -> u64 {
    let (_, f) = q.api("GET", "/api/v1/flows/f1", None);
    f["outputs"][0]["srt"][field].as_u64().unwrap_or(0)
}

/// A srt-live-transmit caller reading `port` with `params`, writing to UDP `sink`; it gives
/// up (and exits) when its connection is refused.
fn slt_reader(port: u16, params: &str, sink: u16) -> Peer {
    slt(&[
        "-a:no",
        &format!("srt://127.0.0.1:{port}?mode=caller{params}"),
        &format!("udp://127.0.0.1:{sink}?sndbuf=4194304"),
    ])
}

/// An SRT output listener with a passphrase and no `aes_key_len` (so it takes the caller's):
/// - two srt-live-transmit callers with a wrong passphrase are refused, with exactly one
///   "SRT output 's' connection failed: ..." event (one per failing cycle, not per caller);
/// - a caller with the passphrase (AES-192) reads the stream byte for byte;
/// - once it has come and gone ("disconnected"), a wrong passphrase is a new failing cycle
///   and is reported again, once.
#[test]
fn output_listener_with_passphrase_byte_exact_and_wrong_passphrase_once_per_cycle() {
    if !peers() {
        return;
    }
    let fx = fixture("srt-out-pass", 4);
    let (rx, out_port) = udp_receiver();
    let (in_port, port) = (free_udp_port(), free_udp_port());
    let q = Quoll::start(
        fx.dir.path(),
        &config(
            free_tcp_port(),
            json!({"type": "udp", "bind_addr": format!("127.0.0.1:{in_port}")}),
            json!([{ "type": "srt", "id": "s", "mode": "listener",
                     "local_addr": format!("127.0.0.1:{port}"), "passphrase": PASS,
                     "peer_idle_timeout_secs": 5 }]),
            &fx.dir,
        ),
    );
    const FAILED: &str = "SRT output 's' connection failed: ";
    let wrong = "&passphrase=wrong-passphrase-x";
    let mut w1 = slt_reader(port, wrong, free_udp_port());
    assert!(
        wait_until(Duration::from_secs(10), || output_srt(&q, "rejected") >= 1),
        "first wrong caller not rejected; log:\n{}",
        q.log()
    );
    w1.wait(Duration::from_secs(10));
    let rejected = output_srt(&q, "rejected");
    let mut w2 = slt_reader(port, wrong, free_udp_port());
    assert!(
        wait_until(Duration::from_secs(10), || output_srt(&q, "rejected")
            > rejected),
        "second wrong caller not rejected; log:\n{}",
        q.log()
    );
    w2.wait(Duration::from_secs(10));
    // Two ticks of the output's check after the last refusal.
    std::thread::sleep(Duration::from_millis(700));
    let log = q.log();
    assert_eq!(events(&log, FAILED), 1, "once per failing cycle:\n{log}");
    assert!(
        log.contains("rejected a caller's handshake (wrong or missing passphrase?)"),
        "{log}"
    );
    assert_eq!(events(&log, "SRT output 's' connected"), 0, "{log}");

    // The right passphrase, AES-192 (the listener has no key length of its own).
    let mut good = slt_reader(
        port,
        &format!("&latency=120&passphrase={PASS}&pbkeylen=24"),
        out_port,
    );
    assert!(
        wait_until(Duration::from_secs(10), || events(
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
    assert_eq!(out.len(), reference.len(), "byte count; log:\n{}", q.log());
    assert_eq!(checksum(&out), checksum(&reference), "bytes differ");
    // The caller leaves (SIGINT: srt-live-transmit closes its socket, a Shutdown).
    signal(&good, "INT");
    assert!(good.wait(Duration::from_secs(10)));
    assert!(
        wait_until(Duration::from_secs(10), || events(
            &q.log(),
            "SRT output 's' disconnected"
        ) == 1),
        "log:\n{}",
        q.log()
    );
    // A new cycle: the next wrong passphrase is reported again, once.
    let mut w3 = slt_reader(port, wrong, free_udp_port());
    assert!(
        wait_until(Duration::from_secs(10), || events(&q.log(), FAILED) == 2),
        "log:\n{}",
        q.log()
    );
    w3.wait(Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(700));
    let (status, log) = q.terminate();
    assert!(status.success(), "{log}");
    assert_eq!(events(&log, FAILED), 2, "{log}");
    assert_eq!(events(&log, "SRT output 's' connected"), 1, "{log}");
    assert_eq!(events(&log, "SRT output 's' disconnected"), 1, "{log}");
    assert!(!log.contains("panicked"), "{log}");
}

/// A quoll output caller with the wrong passphrase against a srt-live-transmit listener:
/// every attempt is rejected, the caller keeps retrying, and exactly one
/// "SRT output 's' connection failed: ..." is raised.
#[test]
fn output_caller_with_wrong_passphrase_reports_once() {
    if !peers() {
        return;
    }
    let dir = TempDir::new("srt-out-wrong-pass");
    let (in_port, port) = (free_udp_port(), free_udp_port());
    let _listener = slt(&[
        &format!("srt://:{port}?mode=listener&passphrase={PASS}"),
        &format!("udp://127.0.0.1:{}", free_udp_port()),
    ]);
    assert!(wait_until(Duration::from_secs(10), || udp_bound(port)));
    let q = Quoll::start_with_env(
        dir.path(),
        &config(
            free_tcp_port(),
            json!({"type": "udp", "bind_addr": format!("127.0.0.1:{in_port}")}),
            json!([{ "type": "srt", "id": "s", "mode": "caller", "local_addr": "127.0.0.1:0",
                     "remote_addr": format!("127.0.0.1:{port}"),
                     "passphrase": "not-the-right-one" }]),
            &dir,
        ),
        &[("QUOLL_LOG", "info,quoll::output::srt=debug")],
    );
    assert!(
        wait_until(Duration::from_secs(30), || count(
            &q.log(),
            "SRT connect failed"
        ) >= 4),
        "log:\n{}",
        q.log()
    );
    let (status, log) = q.terminate();
    assert!(status.success(), "{log}");
    assert_eq!(
        events(&log, "SRT output 's' connection failed: "),
        1,
        "not once per retry:\n{log}"
    );
    assert_eq!(events(&log, "SRT output 's' connected"), 0, "{log}");
    assert!(!log.contains("panicked"), "{log}");
}

/// A quoll input caller whose srt-live-transmit listener is killed (SIGKILL: no Shutdown,
/// the idle timeout notices) and started again on the same port: exactly one
/// "SRT input disconnected, reconnecting", silent retries while it is away (no
/// "connection failed": the cycle already reported its disconnect), then
/// "SRT input connected (mode=caller)" again and data flows again.
#[test]
fn input_caller_reconnects_after_its_listener_restarts() {
    if !peers() {
        return;
    }
    let dir = TempDir::new("srt-in-reconnect");
    let (rx, out_port) = udp_receiver();
    let (port, slt_in) = (free_udp_port(), free_udp_port());
    let listener = || {
        slt(&[
            &format!("udp://127.0.0.1:{slt_in}?rcvbuf=4194304"),
            &format!("srt://:{port}?mode=listener&latency=120"),
        ])
    };
    let mut first = listener();
    assert!(wait_until(Duration::from_secs(10), || udp_bound(port)));
    let q = Quoll::start_with_env(
        dir.path(),
        &config(
            free_tcp_port(),
            json!({"type": "srt", "mode": "caller", "local_addr": "127.0.0.1:0",
                   "remote_addr": format!("127.0.0.1:{port}"), "peer_idle_timeout_secs": 2}),
            json!([{ "type": "udp", "id": "u", "dest_addr": format!("127.0.0.1:{out_port}") }]),
            &dir,
        ),
        &[("QUOLL_LOG", "info,quoll::input::srt=debug")],
    );
    const CONNECTED: &str = "SRT input connected (mode=caller)";
    const LOST: &str = "SRT input disconnected, reconnecting";
    assert!(
        wait_until(Duration::from_secs(10), || events(&q.log(), CONNECTED) == 1),
        "log:\n{}",
        q.log()
    );
    let _pump = TsPump::start(slt_in);
    let got = receive_until(&rx, Duration::from_secs(10), |d| d.len() >= 100);
    assert!(got.len() >= 100, "no data through the first connection");

    first.kill();
    assert!(
        wait_until(Duration::from_secs(10), || events(&q.log(), LOST) == 1),
        "log:\n{}",
        q.log()
    );
    // Retries while nobody listens: at least three, all silent.
    let mark = q.log().len();
    assert!(
        wait_until(Duration::from_secs(20), || count(
            since(&q.log(), mark),
            "SRT connect failed"
        ) >= 3),
        "log:\n{}",
        q.log()
    );
    let _second = listener();
    assert!(
        wait_until(Duration::from_secs(20), || events(&q.log(), CONNECTED) == 2),
        "log:\n{}",
        q.log()
    );
    // Data again, through the new connection (what the first one left is drained first).
    drain(&rx);
    let got = receive_until(&rx, Duration::from_secs(10), |d| d.len() >= 100);
    assert!(got.len() >= 100, "no data after the reconnect");
    let (status, log) = q.terminate();
    assert!(status.success(), "{log}");
    assert_eq!(events(&log, LOST), 1, "{log}");
    assert_eq!(events(&log, CONNECTED), 2, "{log}");
    assert_eq!(events(&log, "SRT input connection failed"), 0, "{log}");
}

/// A quoll output caller started before its srt-live-transmit listener exists: retries are
/// silent after one "SRT output 's' connection failed: ..." (one per failing cycle). It
/// connects when the listener appears; the listener leaves (SIGINT: a Shutdown) and comes
/// back on the same port: exactly one "SRT output 's' disconnected", silent retries (no
/// second "connection failed": the cycle began with a disconnect), one more "connected",
/// and the new listener gets the stream.
#[test]
fn output_caller_latches_failures_and_reconnects_after_its_listener_restarts() {
    if !peers() {
        return;
    }
    let dir = TempDir::new("srt-out-reconnect");
    let (rx, out_port) = udp_receiver();
    let (in_port, port) = (free_udp_port(), free_udp_port());
    let q = Quoll::start_with_env(
        dir.path(),
        &config(
            free_tcp_port(),
            json!({"type": "udp", "bind_addr": format!("127.0.0.1:{in_port}")}),
            json!([{ "type": "srt", "id": "s", "mode": "caller", "local_addr": "127.0.0.1:0",
                     "remote_addr": format!("127.0.0.1:{port}") }]),
            &dir,
        ),
        &[("QUOLL_LOG", "info,quoll::output::srt=debug")],
    );
    const FAILED: &str = "SRT output 's' connection failed: ";
    const CONNECTED: &str = "SRT output 's' connected";
    const LOST: &str = "SRT output 's' disconnected";
    // Unreachable: several attempts, one event.
    assert!(
        wait_until(Duration::from_secs(30), || count(
            &q.log(),
            "SRT connect failed"
        ) >= 3),
        "log:\n{}",
        q.log()
    );
    assert_eq!(events(&q.log(), FAILED), 1, "{}", q.log());
    let _pump = TsPump::start(in_port);
    let listener = |sink: u16| {
        slt(&[
            &format!("srt://:{port}?mode=listener&latency=120"),
            &format!("udp://127.0.0.1:{sink}?sndbuf=4194304"),
        ])
    };
    let mut first = listener(out_port);
    assert!(
        wait_until(Duration::from_secs(20), || events(&q.log(), CONNECTED) == 1),
        "log:\n{}",
        q.log()
    );
    let got = receive_until(&rx, Duration::from_secs(10), |d| d.len() >= 100);
    assert!(got.len() >= 100, "no data through the first connection");
    signal(&first, "INT");
    assert!(first.wait(Duration::from_secs(10)));
    assert!(
        wait_until(Duration::from_secs(10), || events(&q.log(), LOST) == 1),
        "log:\n{}",
        q.log()
    );
    let mark = q.log().len();
    assert!(
        wait_until(Duration::from_secs(20), || count(
            since(&q.log(), mark),
            "SRT connect failed"
        ) >= 3),
        "log:\n{}",
        q.log()
    );
    let (rx2, out2) = udp_receiver();
    let _second = listener(out2);
    assert!(
        wait_until(Duration::from_secs(20), || events(&q.log(), CONNECTED) == 2),
        "log:\n{}",
        q.log()
    );
    let got = receive_until(&rx2, Duration::from_secs(10), |d| d.len() >= 100);
    assert!(got.len() >= 100, "no data after the reconnect");
    assert_eq!(
        cc_errors(&got.concat()),
        0,
        "continuity after the reconnect"
    );
    let (status, log) = q.terminate();
    assert!(status.success(), "{log}");
    assert_eq!(events(&log, FAILED), 1, "{log}");
    assert_eq!(events(&log, LOST), 1, "{log}");
    assert_eq!(events(&log, CONNECTED), 2, "{log}");
    assert_eq!(
        events(&log, "SRT output 's' stale connection detected"),
        0,
        "{log}"
    );
}
