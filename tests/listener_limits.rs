//! Connection limits of the API listener against the real binary (issue 13): connections
//! over the per-source and total caps are closed at once and counted, half-sent requests
//! are closed by the header timeout and a stalled upload by the idle timeout, and the
//! control socket answers while the listener is full. Loopback only (127.0.0.1-3 as three
//! sources), every wait bounded.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{Quoll, TempDir, connect_from, free_tcp_port, quoll};
use serde_json::{Value, json};

/// Half a request: the request line and one header, never the blank line.
fn half_sent(source: &str, port: u16) -> TcpStream {
    let mut s = connect_from(source, port);
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .unwrap();
    s
}

/// Whether the server closed `s` within `limit` (EOF or reset; any bytes it sent first,
/// such as an error response, are read past).
fn closed_within(s: &mut TcpStream, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return false;
            }
            Err(_) => return true,
        }
    }
}

fn ctl_health(dir: &TempDir) -> Value {
    let out = quoll()
        .args(["ctl", "--json", "health"])
        .env("QUOLL_RUNTIME_DIR", dir.path().join("run"))
        .stdin(Stdio::null())
        .output()
        .expect("run quoll ctl");
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("ctl health: {e}: {}", String::from_utf8_lossy(&out.stderr)))
}

/// Timeouts stretch under emulation: a quoll under qemu-user is 10-50x slower.
fn scale() -> u64 {
    let emulated = std::env::var("QUOLL_RUNNER").is_ok_and(|r| !r.trim().is_empty());
    if emulated { 5 } else { 1 }
}

#[test]
fn caps_refuse_at_once_timeouts_free_the_places_and_ctl_still_answers() {
    let dir = TempDir::new("listener-caps");
    let port = free_tcp_port();
    let (header_ms, idle_ms) = (2000 * scale(), 3000 * scale());
    let cfg = json!({
        "version": 1,
        "server": { "listen_addr": "127.0.0.1", "listen_port": port,
                    "max_connections": 8, "max_connections_per_ip": 4,
                    "header_timeout_ms": header_ms, "idle_timeout_ms": idle_ms },
        "storage": { "data_dir": dir.path().join("data") },
        "flows": []
    });
    let q = Quoll::start(dir.path(), &cfg);

    // Four half-sent requests from one source fill its share; the fifth is closed at once
    // (well before any timeout could have closed it).
    let mut held: Vec<TcpStream> = (0..4).map(|_| half_sent("127.0.0.1", port)).collect();
    let mut fifth = half_sent("127.0.0.1", port);
    assert!(
        closed_within(&mut fifth, Duration::from_millis(header_ms / 2)),
        "over the per-source cap, yet kept"
    );
    // Another source has its own share, until the total is reached.
    held.extend((0..4).map(|_| half_sent("127.0.0.2", port)));
    let mut ninth = half_sent("127.0.0.3", port);
    assert!(
        closed_within(&mut ninth, Duration::from_millis(header_ms / 2)),
        "over the total cap, yet kept"
    );
    // The control socket is not the listener's: it answers while the listener is full.
    let h = ctl_health(&dir);
    let c = &h["api_connections"];
    assert_eq!(c["open"], 8, "{h}");
    assert_eq!(c["max_connections"], 8, "{h}");
    assert_eq!(c["refused_max_connections"], 1, "{h}");
    assert_eq!(c["refused_max_connections_per_ip"], 1, "{h}");

    // The header timeout closes every half-sent request, and the places are free again.
    for s in &mut held {
        assert!(
            closed_within(s, Duration::from_millis(header_ms + 5000)),
            "a half-sent request outlived the header timeout"
        );
    }
    let (code, h) = q.api("GET", "/healthz", None);
    assert_eq!(code, 200, "{h}");
    assert_eq!(h["api_connections"]["open"], 1, "only this request: {h}");

    // A request whose body never comes: the header was complete, so the idle timeout
    // (longer than the header timeout) is what closes it.
    let mut stalled = connect_from("127.0.0.1", port);
    stalled
        .write_all(
            format!(
                "POST /api/v1/flows HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {}\r\n\
                 Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{",
                q.token
            )
            .as_bytes(),
        )
        .unwrap();
    let sent = Instant::now();
    assert!(
        closed_within(&mut stalled, Duration::from_millis(idle_ms + 5000)),
        "a stalled upload outlived the idle timeout"
    );
    let waited = sent.elapsed();
    assert!(
        waited >= Duration::from_millis(idle_ms - 500),
        "closed after {waited:?}: before the idle timeout"
    );

    let (status, log) = q.terminate();
    assert!(status.success());
    assert!(
        log.contains("connection refused: over server.max_connections_per_ip"),
        "{log}"
    );
    // Refusals after the first are summarised, not logged one by one.
    assert_eq!(log.matches("connection refused").count(), 1, "{log}");
}

/// The soft descriptor limit is raised to the hard one at start.
#[test]
fn the_descriptor_limit_is_raised_to_the_hard_limit() {
    let dir = TempDir::new("listener-nofile");
    let cfg = json!({
        "version": 1,
        "server": { "listen_addr": "127.0.0.1", "listen_port": free_tcp_port() },
        "storage": { "data_dir": dir.path().join("data") },
        "flows": []
    });
    let q = Quoll::start(dir.path(), &cfg);
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", q.pid())).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap()
        .to_owned();
    let fields: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(
        fields[3], fields[4],
        "soft limit is not the hard one: {line}"
    );
    drop(q);
}

/// An RTMP input's listener takes its caps from the `server` block too, not the defaults
/// (64 per source, a 10 s handshake time): over `max_connections_per_ip` a publisher is
/// closed at once, and one that never completes the handshake is closed after
/// `header_timeout_ms`.
#[test]
#[cfg(feature = "rtmp")]
fn the_rtmp_listener_takes_the_server_caps() {
    let dir = TempDir::new("listener-caps-rtmp");
    let rtmp_port = free_tcp_port();
    let header_ms = 1500 * scale();
    let cfg = json!({
        "version": 1,
        "server": { "listen_addr": "127.0.0.1", "listen_port": free_tcp_port(),
                    "max_connections": 8, "max_connections_per_ip": 2,
                    "header_timeout_ms": header_ms },
        "storage": { "data_dir": dir.path().join("data") },
        "flows": [{
            "id": "studio", "name": "studio", "enabled": true,
            "input": { "type": "rtmp", "listen_addr": format!("127.0.0.1:{rtmp_port}"),
                       "app": "live", "stream_key": "k" },
            "outputs": [{ "type": "udp", "id": "o", "dest_addr": "127.0.0.1:9" }]
        }]
    });
    let q = Quoll::start(dir.path(), &cfg);
    common::wait_for(Duration::from_secs(10), "the RTMP port", || {
        TcpStream::connect(("127.0.0.1", rtmp_port)).ok()
    });

    // Two silent publishers (no handshake byte) fill the source's share; a third is closed
    // at once, long before the handshake time could have closed it.
    let opened = Instant::now();
    let mut held: Vec<TcpStream> = (0..2)
        .map(|_| connect_from("127.0.0.2", rtmp_port))
        .collect();
    let mut third = connect_from("127.0.0.2", rtmp_port);
    assert!(
        closed_within(&mut third, Duration::from_millis(header_ms / 2)),
        "over server.max_connections_per_ip, yet kept"
    );
    // Another source has its own share.
    let mut other = connect_from("127.0.0.3", rtmp_port);
    // The handshake time is the server's header_timeout_ms, not the 10 s default.
    for s in held.iter_mut().chain(std::iter::once(&mut other)) {
        assert!(
            closed_within(s, Duration::from_millis(header_ms + 3000)),
            "a silent publisher outlived header_timeout_ms"
        );
    }
    let waited = opened.elapsed();
    assert!(
        waited >= Duration::from_millis(header_ms - 300),
        "closed after {waited:?}: before the handshake time"
    );
    let (status, log) = q.terminate();
    assert!(status.success());
    assert!(
        log.contains("connection refused: over server.max_connections_per_ip"),
        "{log}"
    );
}
