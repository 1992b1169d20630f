//! SRT test helpers shared by tests/srt_*.rs (included with `#[path]`, so the other test
//! binaries do not compile them): peers killed on drop, bounded waits, the fixtures and the
//! checks (byte counts, TS continuity).
#![allow(dead_code)]

use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::*;

pub const PASS: &str = "correct-horse-battery";

/// A child process killed (and reaped) on drop, whatever path the test takes.
pub struct Peer {
    pub name: &'static str,
    pub child: Option<Child>,
}

impl Peer {
    pub fn spawn(name: &'static str, cmd: &mut Command) -> Peer {
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(if std::env::var_os("SRT_TEST_PEER_LOGS").is_some() {
                Stdio::inherit()
            } else {
                Stdio::null()
            })
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        Peer {
            name,
            child: Some(child),
        }
    }

    /// A child spawned elsewhere (e.g. with its stderr to a file), killed on drop too.
    pub fn adopt(name: &'static str, child: Child) -> Peer {
        Peer {
            name,
            child: Some(child),
        }
    }

    /// Waits (bounded) for the process to exit by itself.
    pub fn wait(&mut self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            match self.child.as_mut().map(|c| c.try_wait()) {
                Some(Ok(Some(_))) | None => return true,
                _ => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        eprintln!("{} still running after {limit:?}", self.name);
        false
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Polls `cond` every 20 ms until it holds or `limit` passes.
pub fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether some socket is bound to UDP `port` (IPv4 or IPv6), from /proc/net.
pub fn udp_bound(port: u16) -> bool {
    let needle = format!(":{port:04X} ");
    ["/proc/net/udp", "/proc/net/udp6"].iter().any(|f| {
        std::fs::read_to_string(f)
            .map(|t| {
                t.lines().skip(1).any(|l| {
                    l.split_whitespace()
                        .nth(1)
                        .is_some_and(|a| format!("{a} ").ends_with(&needle))
                })
            })
            .unwrap_or(false)
    })
}

pub fn config(api_port: u16, input: Value, outputs: Value, dir: &TempDir) -> Value {
    json!({
        "version": 1,
        "server": { "listen_addr": "127.0.0.1", "listen_port": api_port },
        "storage": { "data_dir": dir.path().join("data") },
        "flows": [{ "id": "f1", "name": "srt", "enabled": true, "input": input, "outputs": outputs }]
    })
}

/// The peers of the SRT tests: `require_peers!(FFMPEG, SLT)`.
pub const FFMPEG: &str = "ffmpeg";
pub const SLT: &str = "srt-live-transmit";

// ---- the scenario: one flow, its input and outputs, quoll started on it ------------------

/// Field-by-field merge of a JSON object into an input or output: `srt_listener(p).with(
/// json!({"passphrase": PASS}))`.
pub trait With {
    fn with(self, extra: Value) -> Value;
}

impl With for Value {
    fn with(mut self, extra: Value) -> Value {
        for (k, v) in extra.as_object().expect("an object to merge") {
            self[k] = v.clone();
        }
        self
    }
}

/// An SRT listener (input or redundancy leg) on 127.0.0.1:`port`.
pub fn srt_listener(port: u16) -> Value {
    json!({"type": "srt", "mode": "listener", "local_addr": format!("127.0.0.1:{port}")})
}

/// An SRT caller to 127.0.0.1:`port` from an ephemeral port.
pub fn srt_caller(port: u16) -> Value {
    json!({"type": "srt", "mode": "caller", "local_addr": "127.0.0.1:0",
           "remote_addr": format!("127.0.0.1:{port}")})
}

/// SRT rendezvous between 127.0.0.1:`local` and 127.0.0.1:`remote`.
pub fn srt_rendezvous(local: u16, remote: u16) -> Value {
    json!({"type": "srt", "mode": "rendezvous", "local_addr": format!("127.0.0.1:{local}"),
           "remote_addr": format!("127.0.0.1:{remote}")})
}

/// A UDP input bound to 127.0.0.1:`port`.
pub fn udp_input(port: u16) -> Value {
    json!({"type": "udp", "bind_addr": format!("127.0.0.1:{port}")})
}

/// An SRT output: `srt_listener` / `srt_caller` / `srt_rendezvous` with output id `s`.
pub fn srt_output(leg: Value) -> Value {
    leg.with(json!({"id": "s"}))
}

/// A UDP output `u` to 127.0.0.1:`port`.
pub fn udp_output(port: u16) -> Value {
    json!({"type": "udp", "id": "u", "dest_addr": format!("127.0.0.1:{port}")})
}

/// What a test changes of the default scenario: flow `f1` with an input and outputs (none by
/// default), a test TS of some seconds (none by default), more flows, a debug log target.
/// `start` runs quoll on it.
pub struct Scenario {
    tag: String,
    secs: u32,
    input: Value,
    outputs: Vec<Value>,
    flows: Vec<Value>,
    receiver: Option<Receiver>,
    env: Vec<(&'static str, String)>,
}

impl Scenario {
    pub fn new(tag: &str, input: Value) -> Scenario {
        Scenario {
            tag: tag.to_owned(),
            secs: 0,
            input,
            outputs: Vec::new(),
            flows: Vec::new(),
            receiver: None,
            env: Vec::new(),
        }
    }

    /// A test TS of `secs` seconds to send (see [`Running::send_udp`]).
    pub fn source(mut self, secs: u32) -> Scenario {
        self.secs = secs;
        self
    }

    pub fn output(mut self, output: Value) -> Scenario {
        self.outputs.push(output);
        self
    }

    /// A UDP output `u` to a [`Receiver`] the scenario keeps (`Running::rx`).
    pub fn with_receiver(self) -> Scenario {
        let rx = Receiver::new();
        let port = rx.port;
        let mut s = self.output(udp_output(port));
        s.receiver = Some(rx);
        s
    }

    /// Another flow, as given (it needs its own `id`).
    pub fn flow(mut self, flow: Value) -> Scenario {
        self.flows.push(flow);
        self
    }

    /// Debug-level log lines of `target` (`quoll::input::srt`): the retries that raise no
    /// event are only seen there.
    pub fn debug(mut self, target: &str) -> Scenario {
        self.env.push(("QUOLL_LOG", format!("info,{target}=debug")));
        self
    }

    pub fn start(self) -> Running {
        let dir = TempDir::new(&self.tag);
        let source = (self.secs > 0).then(|| make_test_ts(dir.path(), self.secs));
        let mut cfg = config(
            free_tcp_port(),
            self.input,
            Value::Array(self.outputs),
            &dir,
        );
        cfg["flows"].as_array_mut().unwrap().extend(self.flows);
        let env: Vec<(&str, &str)> = self.env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let q = Quoll::start_with_env(dir.path(), &cfg, &env);
        Running {
            q,
            rx: self.receiver,
            reference: dir.path().join("sent.ts"),
            source,
            dir,
        }
    }
}

/// A started [`Scenario`]: quoll, its receiver, the source and its scratch dir (removed
/// after quoll is killed: the fields drop in this order).
pub struct Running {
    pub q: Quoll,
    pub rx: Option<Receiver>,
    pub source: Option<PathBuf>,
    /// Where the senders write the muxed bytes they sent.
    pub reference: PathBuf,
    pub dir: TempDir,
}

impl Running {
    fn source(&self) -> &Path {
        self.source.as_deref().expect("the scenario has a source")
    }

    /// ffmpeg pacing the source to `url` in real time (and to the reference file).
    pub fn send(&self, url: &str) -> Peer {
        ffmpeg_send(self.source(), url, &self.reference)
    }

    /// The source in real time to UDP `ports` (the same datagrams to each) and to the
    /// reference; waits for the end and returns the reference bytes.
    pub fn send_udp(&self, ports: &[u16]) -> Vec<u8> {
        let mut sender = self.send_udp_peer(ports);
        finished_reference(&mut sender, &self.reference)
    }

    /// [`send_udp`](Self::send_udp) without waiting: the sender, to kill or wait for.
    pub fn send_udp_peer(&self, ports: &[u16]) -> Peer {
        let urls: Vec<String> = ports
            .iter()
            .map(|p| format!("udp://127.0.0.1:{p}?pkt_size=1316"))
            .collect();
        self.send(&urls.join("|[f=mpegts]"))
    }

    /// The scenario's receiver.
    pub fn rx(&self) -> &Receiver {
        self.rx
            .as_ref()
            .expect("the scenario has a receiver (with_receiver)")
    }

    /// What the receiver gets is `reference`, byte for byte (with the flow in the message).
    pub fn expect_delivered(&self, reference: &[u8]) -> Vec<u8> {
        self.rx().expect_same(reference, || {
            format!("flow {}\nlog:\n{}", self.q.flow("f1"), self.q.log())
        })
    }

    /// The source sent to UDP `udp_in` (quoll's input) comes out of `rx` (a peer's sink)
    /// byte for byte.
    pub fn expect_relayed(&self, udp_in: u16, rx: &Receiver) -> Vec<u8> {
        let reference = self.send_udp(&[udp_in]);
        rx.expect_same(&reference, || format!("log:\n{}", self.q.log()));
        reference
    }

    /// Output `s` connects (once) and relays the source from UDP `udp_in` to `rx`.
    pub fn expect_one_output_connection_relays(&self, udp_in: u16, rx: &Receiver) {
        const CONNECTED: &str = "SRT output 's' connected";
        self.q.wait_event(CONNECTED, Duration::from_secs(15));
        self.expect_relayed(udp_in, rx);
        self.q.assert_events(CONNECTED, 1);
    }

    /// Flow `f1` from the API.
    pub fn f1(&self) -> Value {
        self.q.flow("f1")
    }

    /// Stop quoll (asserted clean); returns its log.
    pub fn stop(self) -> String {
        self.q.stop()
    }
}

/// A UDP receiver (the sink of a flow's output or of a peer) that collects and compares.
pub struct Receiver {
    pub sock: UdpSocket,
    pub port: u16,
}

impl Receiver {
    pub fn new() -> Receiver {
        let (sock, port) = udp_receiver();
        Receiver { sock, port }
    }

    /// Receives until `reference.len()` bytes came (bounded) and asserts they are the
    /// reference ([`assert_same`]). `context` (the flow, the log) is computed only for a
    /// failure's message.
    pub fn expect_same(&self, reference: &[u8], context: impl Fn() -> String) -> Vec<u8> {
        let out = receive_bytes(&self.sock, reference.len(), Duration::from_secs(10));
        assert_same(&out, reference, context);
        out
    }

    /// Receives until at least `n` datagrams came (bounded), asserted.
    pub fn expect_datagrams(&self, n: usize, what: &str) -> Vec<u8> {
        let got = receive_until(&self.sock, Duration::from_secs(10), |d| d.len() >= n);
        assert!(got.len() >= n, "{what}: {} datagrams", got.len());
        got.concat()
    }

    /// Discards what the socket holds now.
    pub fn drain(&self) {
        self.sock.set_nonblocking(true).unwrap();
        while self.sock.recv(&mut [0u8; 2048]).is_ok() {}
        self.sock.set_nonblocking(false).unwrap();
    }
}

impl Default for Receiver {
    fn default() -> Self {
        Receiver::new()
    }
}

/// `out` is `reference`: the byte count, the bytes, no continuity error (`context` only for
/// a failure's message).
pub fn assert_same(out: &[u8], reference: &[u8], context: impl Fn() -> String) {
    assert_eq!(
        out.len(),
        reference.len(),
        "byte count ({} missing); {}",
        reference.len() as i64 - out.len() as i64,
        context()
    );
    assert!(
        checksum(out) == checksum(reference),
        "delivered bytes differ from the sent ones; {}",
        context()
    );
    assert_eq!(cc_errors(out), 0, "continuity errors; {}", context());
}

/// `input` (or an SRT output) with `leg2` as its 2022-7 redundancy leg.
pub fn redundant(input: Value, leg2: Value) -> Value {
    let mut leg2 = leg2;
    leg2.as_object_mut().unwrap().remove("type");
    input.with(json!({ "redundancy": leg2 }))
}

/// Waits for both legs of a redundant listener input to be connected (their events).
pub fn wait_both_legs(q: &Quoll, limit: Duration) {
    for leg in [1, 2] {
        q.wait_event(
            &format!("SRT input connected (mode=listener, redundant leg {leg})"),
            limit,
        );
    }
}

// ---- srt-live-transmit peers ------------------------------------------------------------

/// srt-live-transmit fed by UDP on `udp_in` (so it never closes), calling quoll's listener on
/// `port` with URL `params` (`&latency=200`...).
pub fn slt_caller_from_udp(udp_in: u16, port: u16, params: &str) -> Peer {
    slt(&[
        &format!("udp://127.0.0.1:{udp_in}?rcvbuf=4194304"),
        &format!("srt://127.0.0.1:{port}?mode=caller{params}"),
    ])
}

/// srt-live-transmit listening on SRT `port` (URL `params`) and writing what it reads to UDP
/// `sink`; returns once the port is bound.
pub fn slt_listener_to_udp(port: u16, params: &str, sink: u16) -> Peer {
    let srt = format!("srt://:{port}?mode=listener{params}");
    slt_bound(
        port,
        &[&srt, &format!("udp://127.0.0.1:{sink}?sndbuf=4194304")],
    )
}

/// srt-live-transmit listening on SRT `port` (URL `params`), fed by UDP on `udp_in`;
/// returns once the port is bound.
pub fn slt_listener_from_udp(udp_in: u16, port: u16, params: &str) -> Peer {
    let srt = format!("srt://:{port}?mode=listener{params}");
    slt_bound(
        port,
        &[&format!("udp://127.0.0.1:{udp_in}?rcvbuf=4194304"), &srt],
    )
}

/// srt-live-transmit with `args`, once it has bound UDP `port`.
fn slt_bound(port: u16, args: &[&str]) -> Peer {
    let p = slt(args);
    assert!(
        wait_until(Duration::from_secs(10), || udp_bound(port)),
        "srt-live-transmit did not bind {port}"
    );
    p
}

/// srt-live-transmit calling quoll's output on `port` (URL `params`), writing to UDP `sink`.
pub fn slt_caller_to_udp(port: u16, params: &str, sink: u16) -> Peer {
    slt(&[
        &format!("srt://127.0.0.1:{port}?mode=caller{params}"),
        &format!("udp://127.0.0.1:{sink}?sndbuf=4194304"),
    ])
}

/// [`slt_caller_to_udp`] with `-a:no`: it gives up (and exits) when its connection is
/// refused.
pub fn slt_reader(port: u16, params: &str, sink: u16) -> Peer {
    slt(&[
        "-a:no",
        &format!("srt://127.0.0.1:{port}?mode=caller{params}"),
        &format!("udp://127.0.0.1:{sink}?sndbuf=4194304"),
    ])
}

/// ffmpeg pacing `source` in real time, stream-copied, to `dest` in the muxer `format`.
pub fn ffmpeg_pace(name: &'static str, source: &Path, format: &str, dest: &str) -> Peer {
    Peer::spawn(
        name,
        Command::new("ffmpeg")
            .args([
                "-hide_banner",
                "-loglevel",
                "error",
                "-nostdin",
                "-re",
                "-i",
            ])
            .arg(source)
            .args(["-map", "0", "-c", "copy", "-f", format])
            .arg(dest),
    )
}

/// ffmpeg pacing `source` in real time to `url` (via the tee muxer) and to a reference file
/// with the very same muxed bytes. `url` may be several, joined by `|[f=mpegts]`.
pub fn ffmpeg_send(source: &Path, url: &str, reference: &Path) -> Peer {
    let tee = format!("[f=mpegts]{url}|[f=mpegts]{}", reference.display());
    ffmpeg_pace("ffmpeg sender", source, "tee", &tee)
}

pub fn slt(args: &[&str]) -> Peer {
    Peer::spawn(
        "srt-live-transmit",
        Command::new("srt-live-transmit")
            .arg(if std::env::var_os("SRT_TEST_PEER_LOGS").is_some() {
                "-v"
            } else {
                "-q"
            })
            .args(args),
    )
}

pub fn count(log: &str, needle: &str) -> usize {
    log.matches(needle).count()
}

pub fn total(d: &[Vec<u8>]) -> usize {
    d.iter().map(Vec::len).sum()
}

/// TS continuity errors (per PID, payload-carrying packets, null PID ignored; one repeat of
/// the same counter is a legal duplicate).
pub fn cc_errors(ts: &[u8]) -> usize {
    let mut last = vec![None::<u8>; 8192];
    let mut errors = 0;
    for p in ts.chunks_exact(188) {
        assert_eq!(p[0], 0x47, "TS sync lost");
        let pid = (usize::from(p[1] & 0x1F) << 8) | usize::from(p[2]);
        let afc = (p[3] >> 4) & 3;
        let cc = p[3] & 0x0F;
        if pid == 0x1FFF || afc & 1 == 0 {
            continue;
        }
        if let Some(prev) = last[pid]
            && cc != (prev + 1) & 0x0F
            && cc != prev
        {
            errors += 1;
        }
        last[pid] = Some(cc);
    }
    errors
}

/// Receives until `want` bytes arrived or `limit` passes.
pub fn receive_bytes(rx: &UdpSocket, want: usize, limit: Duration) -> Vec<u8> {
    receive_until(rx, limit, |d| total(d) >= want).concat()
}

/// Waits (bounded) for the sender to finish and returns the reference bytes.
pub fn finished_reference(sender: &mut Peer, reference: &Path) -> Vec<u8> {
    assert!(
        sender.wait(Duration::from_secs(40)),
        "ffmpeg did not finish"
    );
    let r = std::fs::read(reference).expect("reference file");
    assert!(r.len() > 100_000, "reference too short: {}", r.len());
    r
}

pub struct Fixture {
    pub dir: TempDir,
    pub source: PathBuf,
    pub reference: PathBuf,
}

pub fn fixture(tag: &str, secs: u32) -> Fixture {
    let dir = TempDir::new(tag);
    let source = make_test_ts(dir.path(), secs);
    let reference = dir.path().join("sent.ts");
    Fixture {
        dir,
        source,
        reference,
    }
}

/// Sends `sig` (e.g. "INT", "STOP") to the peer.
pub fn signal(peer: &Peer, sig: &str) {
    let pid = peer.child.as_ref().expect("running").id();
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status();
}

/// A steady TS source for tests that need data flowing but not a particular file: 7-packet
/// datagrams on PID 0x100 with continuous counters (so the output's continuity can be
/// checked), every 2 ms (about 5 Mbit/s) to 127.0.0.1:`port`, until dropped.
pub struct TsPump {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TsPump {
    pub fn start(port: u16) -> TsPump {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
            let mut d = vec![0u8; 7 * 188];
            let mut cc = 0u8;
            let mut next = Instant::now();
            while !flag.load(Ordering::Relaxed) {
                for p in d.chunks_mut(188) {
                    p[..4].copy_from_slice(&[0x47, 0x01, 0x00, 0x10 | cc]);
                    cc = (cc + 1) & 0x0F;
                }
                let _ = tx.send_to(&d, ("127.0.0.1", port));
                next += Duration::from_millis(2);
                std::thread::sleep(next.saturating_duration_since(Instant::now()));
            }
        });
        TsPump {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for TsPump {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Log lines (or events) counted since a mark: `since(log, n)` is the log after its first
/// `n` bytes.
pub fn since(log: &str, mark: usize) -> &str {
    log.get(mark..).unwrap_or("")
}

/// A fake SRT listener for one handshake: answers the caller's induction (HSv5) and returns
/// the conclusion handshake it then sends (the raw datagram), or None after `limit`. Enough
/// to read what a caller puts on the wire (e.g. its stream id) without accepting it.
pub fn capture_conclusion(sock: &UdpSocket, limit: Duration) -> Option<Vec<u8>> {
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let deadline = Instant::now() + limit;
    let mut buf = [0u8; 1500];
    while Instant::now() < deadline {
        let Ok((n, from)) = sock.recv_from(&mut buf) else {
            continue;
        };
        let p = &buf[..n];
        // A handshake control packet: F=1, type 0; CIF from byte 16, type at 36..40.
        if n < 64 || p[0] != 0x80 || p[1] != 0x00 {
            continue;
        }
        match u32::from_be_bytes(p[36..40].try_into().unwrap()) {
            1 => {
                let mut r = p[..64].to_vec();
                r[12..16].copy_from_slice(&p[40..44]); // to the caller's socket id
                r[16..20].copy_from_slice(&5u32.to_be_bytes()); // HSv5
                r[20..22].copy_from_slice(&[0, 0]); // no encryption advertised
                r[22..24].copy_from_slice(&[0x4A, 0x17]); // the HSv5 magic
                r[40..44].copy_from_slice(&0x1234_5678u32.to_be_bytes()); // our socket id
                r[44..48].copy_from_slice(&0x0BAD_F00Du32.to_be_bytes()); // SYN cookie
                let _ = sock.send_to(&r, from);
            }
            0xFFFF_FFFF => return Some(p.to_vec()),
            _ => {}
        }
    }
    None
}

/// The content of handshake extension `kind` (5: stream id) of a conclusion datagram.
pub fn handshake_extension(conclusion: &[u8], kind: u16) -> Option<Vec<u8>> {
    let mut at = 64;
    while at + 4 <= conclusion.len() {
        let t = u16::from_be_bytes([conclusion[at], conclusion[at + 1]]);
        let words = usize::from(u16::from_be_bytes([conclusion[at + 2], conclusion[at + 3]]));
        let end = (at + 4 + words * 4).min(conclusion.len());
        if t == kind {
            return Some(conclusion[at + 4..end].to_vec());
        }
        at = end;
    }
    None
}
