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

pub fn peers() -> bool {
    have_peer("ffmpeg") && have_peer("srt-live-transmit")
}

/// ffmpeg pacing `source` in real time to `url` (via the tee muxer) and to a reference file
/// with the very same muxed bytes.
pub fn ffmpeg_send(source: &Path, url: &str, reference: &Path) -> Peer {
    Peer::spawn(
        "ffmpeg sender",
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
            .args(["-map", "0", "-c", "copy", "-f", "tee"])
            .arg(format!("[f=mpegts]{url}|[f=mpegts]{}", reference.display())),
    )
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
