//! SRT connection events against real libsrt peers (srt-live-transmit, ffmpeg): encrypted
//! output listeners, wrong passphrases on outputs, callers (input and output) that lose
//! their listener and get it back, and the latching of the seed's messages: one event per
//! connection cycle, never one per retry. Messages are checked with their exact seed text
//! (docs/events.md: ASCII quotes), as event records (`quoll events --json`).
//!
//! Every wait polls events, counters or debug log lines with a deadline; an absence is
//! checked after a positive sync point (a later event, a counter that moved); every child
//! process is killed on drop.

mod common;
#[path = "common/srt.rs"]
mod srt_common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};
use srt_common::*;

const SECS: fn(u64) -> Duration = Duration::from_secs;
const OUT_FAILED: &str = "SRT output 's' connection failed: ";
const OUT_CONNECTED: &str = "SRT output 's' connected";
const OUT_LOST: &str = "SRT output 's' disconnected";

/// Output `s`'s SRT counter `field`.
fn output_srt(f: &Value, field: &str) -> u64 {
    f["outputs"][0]["srt"][field].as_u64().unwrap_or(0)
}

/// A wrong-passphrase caller of output listener `port`, waited (bounded) until the output
/// counted its refusal: the same check of the output raises the event, if any, so the
/// count of events is settled after this (a sync point).
fn rejected_caller(s: &Running, port: u16) {
    let before = output_srt(&s.f1(), "rejected");
    let mut w = slt_reader(port, "&passphrase=wrong-passphrase-x", free_udp_port());
    s.q.wait_flow("f1", SECS(10), "the wrong caller rejected", |f| {
        output_srt(f, "rejected") > before
    });
    w.wait(SECS(10));
}

/// An SRT output listener with a passphrase and no `aes_key_len` (so it takes the caller's):
/// - two srt-live-transmit callers with a wrong passphrase are refused, with exactly one
///   "SRT output 's' connection failed: ..." event (one per failing cycle, not per caller);
/// - a caller with the passphrase (AES-192) reads the stream byte for byte;
/// - once it has come and gone ("disconnected"), a wrong passphrase is a new failing cycle
///   and is reported again, once.
#[test]
fn output_listener_with_passphrase_byte_exact_and_wrong_passphrase_once_per_cycle() {
    require_peers!(FFMPEG, SLT);
    let (in_port, port) = (free_udp_port(), free_udp_port());
    let out = srt_listener(port).with(json!({"passphrase": PASS, "peer_idle_timeout_secs": 5}));
    let s = Scenario::new("srt-out-pass", udp_input(in_port))
        .source(4)
        .output(srt_output(out))
        .start();
    rejected_caller(&s, port);
    rejected_caller(&s, port);
    s.q.assert_events(OUT_FAILED, 1);
    let failed = s.q.wait_event(OUT_FAILED, SECS(1));
    assert!(
        failed["message"]
            .as_str()
            .unwrap()
            .contains("rejected a caller's handshake (wrong or missing passphrase?)"),
        "{failed}"
    );
    s.q.assert_no_event(OUT_CONNECTED);

    // The right passphrase, AES-192 (the listener has no key length of its own).
    let rx = Receiver::new();
    let mut good = slt_reader(
        port,
        &format!("&latency=120&passphrase={PASS}&pbkeylen=24"),
        rx.port,
    );
    s.q.wait_event(OUT_CONNECTED, SECS(10));
    s.expect_relayed(in_port, &rx);
    // The caller leaves (SIGINT: srt-live-transmit closes its socket, a Shutdown).
    signal(&good, "INT");
    assert!(good.wait(SECS(10)));
    s.q.wait_event(OUT_LOST, SECS(10));
    // A new cycle: the next wrong passphrase is reported again, once.
    rejected_caller(&s, port);
    s.q.wait_events(OUT_FAILED, 2, SECS(10));
    let events = s.q.stop_events();
    let listed = events_text(&events);
    assert_eq!(count_matching(&events, None, OUT_FAILED), 2, "{listed}");
    assert_eq!(count_matching(&events, None, OUT_CONNECTED), 1, "{listed}");
    assert_eq!(count_matching(&events, None, OUT_LOST), 1, "{listed}");
}

/// A quoll output caller with the wrong passphrase against a srt-live-transmit listener:
/// every attempt is rejected, the caller keeps retrying, and exactly one
/// "SRT output 's' connection failed: ..." is raised.
#[test]
fn output_caller_with_wrong_passphrase_reports_once() {
    require_peers!(FFMPEG, SLT);
    let (in_port, port) = (free_udp_port(), free_udp_port());
    let _listener = slt_listener_to_udp(port, &format!("&passphrase={PASS}"), free_udp_port());
    let out = srt_caller(port).with(json!({"passphrase": "not-the-right-one"}));
    let s = Scenario::new("srt-out-wrong-pass", udp_input(in_port))
        .output(srt_output(out))
        .debug("quoll::output::srt")
        .start();
    s.q.wait_log("SRT connect failed", 4, 0, SECS(30));
    assert!(!s.q.log().contains("panicked"), "{}", s.q.log());
    let events = s.q.stop_events();
    let listed = events_text(&events);
    assert_eq!(
        count_matching(&events, None, OUT_FAILED),
        1,
        "not once per retry:\n{listed}"
    );
    assert_eq!(count_matching(&events, None, OUT_CONNECTED), 0, "{listed}");
}

/// A quoll input caller whose srt-live-transmit listener is killed (SIGKILL: no Shutdown,
/// the idle timeout notices) and started again on the same port: exactly one
/// "SRT input disconnected, reconnecting", silent retries while it is away (no
/// "connection failed": the cycle already reported its disconnect), then
/// "SRT input connected (mode=caller)" again and data flows again.
#[test]
fn input_caller_reconnects_after_its_listener_restarts() {
    require_peers!(FFMPEG, SLT);
    const CONNECTED: &str = "SRT input connected (mode=caller)";
    const LOST: &str = "SRT input disconnected, reconnecting";
    let (port, slt_in) = (free_udp_port(), free_udp_port());
    let listener = || slt_listener_from_udp(slt_in, port, "&latency=120");
    let mut first = listener();
    let input = srt_caller(port).with(json!({"peer_idle_timeout_secs": 2}));
    let s = Scenario::new("srt-in-reconnect", input)
        .with_receiver()
        .debug("quoll::input::srt")
        .start();
    s.q.wait_event(CONNECTED, SECS(10));
    let _pump = TsPump::start(slt_in);
    s.rx()
        .expect_datagrams(100, "data through the first connection");

    first.kill();
    s.q.wait_event(LOST, SECS(10));
    // Retries while nobody listens: at least three, all silent.
    s.q.wait_log("SRT connect failed", 3, s.q.log().len(), SECS(20));
    let _second = listener();
    s.q.wait_events(CONNECTED, 2, SECS(20));
    // Data again, through the new connection (what the first one left is drained first).
    s.rx().drain();
    s.rx().expect_datagrams(100, "data after the reconnect");
    let events = s.q.stop_events();
    let listed = events_text(&events);
    assert_eq!(count_matching(&events, None, LOST), 1, "{listed}");
    assert_eq!(count_matching(&events, None, CONNECTED), 2, "{listed}");
    assert_eq!(
        count_matching(&events, None, "SRT input connection failed"),
        0,
        "{listed}"
    );
}

/// A quoll output caller started before its srt-live-transmit listener exists: retries are
/// silent after one "SRT output 's' connection failed: ..." (one per failing cycle). It
/// connects when the listener appears; the listener leaves (SIGINT: a Shutdown) and comes
/// back on the same port: exactly one "SRT output 's' disconnected", silent retries (no
/// second "connection failed": the cycle began with a disconnect), one more "connected",
/// and the new listener gets the stream.
#[test]
fn output_caller_latches_failures_and_reconnects_after_its_listener_restarts() {
    require_peers!(FFMPEG, SLT);
    let (in_port, port) = (free_udp_port(), free_udp_port());
    let s = Scenario::new("srt-out-reconnect", udp_input(in_port))
        .output(srt_output(srt_caller(port)))
        .debug("quoll::output::srt")
        .start();
    // Unreachable: several attempts, one event.
    s.q.wait_log("SRT connect failed", 3, 0, SECS(30));
    s.q.assert_events(OUT_FAILED, 1);
    let _pump = TsPump::start(in_port);
    let rx = Receiver::new();
    let mut first = slt_listener_to_udp(port, "&latency=120", rx.port);
    s.q.wait_event(OUT_CONNECTED, SECS(20));
    rx.expect_datagrams(100, "data through the first connection");
    signal(&first, "INT");
    assert!(first.wait(SECS(10)));
    s.q.wait_event(OUT_LOST, SECS(10));
    s.q.wait_log("SRT connect failed", 3, s.q.log().len(), SECS(20));
    let rx2 = Receiver::new();
    let _second = slt_listener_to_udp(port, "&latency=120", rx2.port);
    s.q.wait_events(OUT_CONNECTED, 2, SECS(20));
    let got = rx2.expect_datagrams(100, "data after the reconnect");
    assert_eq!(cc_errors(&got), 0, "continuity after the reconnect");
    let events = s.q.stop_events();
    let listed = events_text(&events);
    assert_eq!(count_matching(&events, None, OUT_FAILED), 1, "{listed}");
    assert_eq!(count_matching(&events, None, OUT_LOST), 1, "{listed}");
    assert_eq!(count_matching(&events, None, OUT_CONNECTED), 2, "{listed}");
    let stale = count_matching(&events, None, "SRT output 's' stale connection detected");
    assert_eq!(stale, 0, "{listed}");
}
