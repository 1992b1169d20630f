//! Tunnels between two quoll processes on loopback, through the stand-in relay
//! (`tests/fake_relay`, written from `shared/spec/relay-protocol.md`) or directly: UDP byte
//! for byte (also as a flow's output and another flow's input), TCP echo with half-close,
//! bind rejection, the relay restarting, failover to the second relay, and a forged and a
//! replayed datagram that never reach the receiver.

mod common;
mod fake_relay;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::Duration;

use common::*;
use fake_relay::{FakeRelay, Options, bind_token};
use serde_json::{Value, json};

const KEY: &str = "1f2e3d4c5b6a79881f2e3d4c5b6a79881f2e3d4c5b6a79881f2e3d4c5b6a7988";
const BIND_SECRET: &str = "a1b2c3d4e5f60718a1b2c3d4e5f60718a1b2c3d4e5f60718a1b2c3d4e5f60718";
const PSK: &str = "0a1b2c3d4e5f60710a1b2c3d4e5f60710a1b2c3d4e5f60710a1b2c3d4e5f6071";
const LIMIT: Duration = Duration::from_secs(30);

/// A tunnel object as the manager pushes it.
fn tunnel(id: &str, direction: &str, protocol: &str, local: SocketAddr, mode: Value) -> Value {
    let mut t = json!({
        "id": id, "name": format!("t-{direction}"), "enabled": true, "protocol": protocol,
        "direction": direction, "local_addr": local.to_string(),
        "tunnel_encryption_key": KEY, "tunnel_bind_secret": BIND_SECRET,
    });
    for (k, v) in mode.as_object().unwrap() {
        t[k] = v.clone();
    }
    t
}

fn relay_mode(relays: &[&FakeRelay]) -> Value {
    let addrs: Vec<String> = relays.iter().map(|r| r.addr.to_string()).collect();
    json!({"mode": "relay", "relay_addrs": addrs})
}

/// The relay knows both ends' tokens, as the manager registers them.
fn binds(id: &str) -> Vec<(String, String, String)> {
    ["egress", "ingress"]
        .iter()
        .map(|d| (id.to_owned(), d.to_string(), bind_token(BIND_SECRET, id, d)))
        .collect()
}

struct Edge {
    q: Quoll,
    _dir: TempDir,
}

/// A quoll with these tunnels (and flows), trusting relays by `tls`.
fn edge(tag: &str, tunnels: Vec<Value>, flows: Vec<Value>, tls: Value) -> Edge {
    let dir = TempDir::new(tag);
    let config = json!({
        "version": 1,
        "server": {"listen_addr": "127.0.0.1", "listen_port": free_tcp_port()},
        "flows": flows, "tunnels": tunnels, "tunnel_tls": tls,
    });
    Edge {
        q: Quoll::start(dir.path(), &config),
        _dir: dir,
    }
}

fn pinned(relay: &FakeRelay) -> Value {
    json!({"cert_fingerprints": [relay.fingerprint()]})
}

impl Edge {
    fn status(&self) -> Value {
        let (code, s) = self.q.api("GET", "/api/v1/stats", None);
        assert_eq!(code, 200, "{s}");
        s["tunnels"][0].clone()
    }

    fn wait_state(&self, state: &str) -> Value {
        poll(LIMIT, || {
            let s = self.status();
            (s["state"] == state).then_some(s)
        })
        .unwrap_or_else(|| {
            panic!(
                "tunnel never {state}: {}\nevents:\n{}\nlog:\n{}",
                self.status(),
                self.q.events_text(),
                self.q.log()
            )
        })
    }

    fn counter(&self, name: &str) -> u64 {
        self.status()["stats"][name].as_u64().unwrap_or(0)
    }
}

/// `n` datagrams of varied sizes up to a 7-packet TS datagram's, each one unique.
fn datagrams(n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            let len = 1 + (i * 97) % 1316;
            (0..len).map(|j| (i * 31 + j * 7) as u8).collect()
        })
        .collect()
}

/// Send `sent` to `to`, paced, and receive on `rx` until all came or `limit`: the received
/// datagrams, sorted (QUIC datagrams may be reordered).
fn carry(to: SocketAddr, sent: &[Vec<u8>], rx: &UdpSocket) -> Vec<Vec<u8>> {
    let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
    let rx2 = rx.try_clone().unwrap();
    let n = sent.len();
    let receiver =
        std::thread::spawn(move || receive_until(&rx2, Duration::from_secs(20), |g| g.len() >= n));
    for (i, d) in sent.iter().enumerate() {
        tx.send_to(d, to).unwrap();
        if i % 20 == 19 {
            // ~20 datagrams a millisecond: a stream's pace, not a flood of the buffers.
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    let mut got = receiver.join().unwrap();
    got.sort();
    got
}

fn sorted(mut v: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    v.sort();
    v
}

/// `got == want`, reported as counts (the datagrams themselves are too long to print).
#[track_caller]
fn assert_same(got: Vec<Vec<u8>>, want: Vec<Vec<u8>>, what: &str) {
    if got != want {
        let missing = want.iter().filter(|d| !got.contains(d)).count();
        let extra = got.iter().filter(|d| !want.contains(d)).count();
        panic!(
            "{what}: {} datagrams received of {} sent, {missing} missing, {extra} not sent",
            got.len(),
            want.len()
        );
    }
}

fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// 7 TS packets per datagram on PID 0x100, continuity counters running: what a flow's UDP
/// input and output carry byte for byte.
fn ts_datagrams(n: usize) -> Vec<Vec<u8>> {
    let mut cc = 0u8;
    (0..n)
        .map(|i| {
            let mut d = Vec::with_capacity(1316);
            for p in 0..7 {
                d.extend_from_slice(&[0x47, 0x01, 0x00, 0x10 | cc]);
                cc = (cc + 1) & 0x0f;
                d.extend((0..184).map(|j| (i * 7 + p + j) as u8));
            }
            d
        })
        .collect()
}

#[test]
fn udp_through_the_relay_carries_a_flow_byte_for_byte() {
    let id = "6f1d6c1e-0a6b-4c1e-9d3e-2a1b3c4d5e01";
    let relay = relay_for(id);
    // Site A: a flow's UDP output feeds the tunnel's egress address.
    let (rx, rx_port) = udp_receiver();
    let (a_in, a_tunnel, b_tunnel) = (free_udp_port(), free_udp_port(), free_udp_port());
    let flow_a = json!({"id": "to-tunnel", "name": "", "enabled": true,
        "input": {"type": "udp", "bind_addr": local(a_in).to_string()},
        "outputs": [{"type": "udp", "id": "o", "name": "", "dest_addr": local(a_tunnel).to_string()}]});
    // Site B: the tunnel delivers to a flow's UDP input, whose output is the test's socket.
    let flow_b = json!({"id": "from-tunnel", "name": "", "enabled": true,
        "input": {"type": "udp", "bind_addr": local(b_tunnel).to_string()},
        "outputs": [{"type": "udp", "id": "o", "name": "", "dest_addr": local(rx_port).to_string()}]});
    let a = edge(
        "tun-relay-a",
        vec![tunnel(
            id,
            "egress",
            "udp",
            local(a_tunnel),
            relay_mode(&[&relay]),
        )],
        vec![flow_a],
        pinned(&relay),
    );
    let b = edge(
        "tun-relay-b",
        vec![tunnel(
            id,
            "ingress",
            "udp",
            local(b_tunnel),
            relay_mode(&[&relay]),
        )],
        vec![flow_b],
        pinned(&relay),
    );
    a.wait_state("ready");
    b.wait_state("ready");

    let sent = ts_datagrams(300);
    let got = carry(local(a_in), &sent, &rx);
    assert_eq!(
        got,
        sorted(sent),
        "the TS came through changed or incomplete"
    );
    assert!(b.counter("packets_in") >= 300);
    assert!(a.counter("packets_out") >= 300);
    for e in [&a, &b] {
        e.q.wait_event("Tunnel 't-", LIMIT);
        e.q.wait_event("Tunnel connected to relay", LIMIT);
        assert_eq!(e.counter("auth_failures"), 0);
    }
    let s = relay.state();
    assert!(s.violations.is_empty(), "{:?}", s.violations);
    assert_eq!(s.identified.len(), 2, "each edge identifies itself");
    assert!(
        s.notified.iter().any(|(_, m)| m["type"] == "tunnel_ready"),
        "the first edge learned of the second on a relay-opened stream"
    );
}

#[test]
fn udp_direct_mode_with_a_pinned_peer() {
    let id = "6f1d6c1e-0a6b-4c1e-9d3e-2a1b3c4d5e02";
    let (rx, rx_port) = udp_receiver();
    let (listen, a_tunnel) = (free_udp_port(), free_udp_port());
    // The listening edge makes its certificate at first start, in its data dir.
    let b = edge(
        "tun-direct-b",
        vec![tunnel(
            id,
            "ingress",
            "udp",
            local(rx_port),
            json!({"mode": "direct", "direct_listen_addr": local(listen).to_string(),
                   "tunnel_psk": PSK}),
        )],
        vec![],
        json!({}),
    );
    // Made when the tunnel starts, just after the daemon says it is ready.
    let pem = poll(LIMIT, || {
        std::fs::read_to_string(b.q.data_dir.join("tunnel-cert.pem")).ok()
    })
    .expect("the direct-mode server keeps its certificate in the data dir");
    let a = edge(
        "tun-direct-a",
        vec![tunnel(
            id,
            "egress",
            "udp",
            local(a_tunnel),
            json!({"mode": "direct", "peer_addr": local(listen).to_string(),
                   "tunnel_psk": PSK}),
        )],
        vec![],
        json!({"cert_fingerprints": [pem_fingerprint(&pem)]}),
    );
    a.wait_state("ready");
    b.wait_state("ready");
    let sent = datagrams(200);
    assert_same(carry(local(a_tunnel), &sent, &rx), sorted(sent), "carried");

    // The other edge with a wrong PSK is refused, and nothing it sends arrives.
    drop(a);
    let mut wrong = tunnel(
        id,
        "egress",
        "udp",
        local(a_tunnel),
        json!({"mode": "direct", "peer_addr": local(listen).to_string(),
               "tunnel_psk": PSK.replace('0', "f")}),
    );
    wrong["name"] = "wrong-psk".into();
    let c = edge(
        "tun-direct-c",
        vec![wrong],
        vec![],
        json!({"cert_fingerprints": [pem_fingerprint(&pem)]}),
    );
    poll(LIMIT, || (b.counter("auth_failures") > 0).then_some(()))
        .expect("the listener counts the refused peer");
    assert_ne!(c.status()["state"], "ready");
}

/// SHA-256 of the first certificate of a PEM file, as `AA:BB:…`.
fn pem_fingerprint(pem: &str) -> String {
    let b64: String = pem
        .lines()
        .skip_while(|l| !l.starts_with("-----BEGIN CERTIFICATE"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .collect();
    let der = base64_decode(&b64);
    let d = ring::digest::digest(&ring::digest::SHA256, &der);
    d.as_ref()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        _ => 63,
    };
    let clean: Vec<u8> = s.bytes().filter(|c| *c != b'=').collect();
    let mut out = Vec::new();
    for chunk in clean.chunks(4) {
        let mut n = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            n |= (val(*c) as u32) << (18 - 6 * i);
        }
        out.extend_from_slice(&n.to_be_bytes()[1..chunk.len()]);
    }
    out
}

#[test]
fn tcp_echo_through_the_relay_with_half_close() {
    let id = "6f1d6c1e-0a6b-4c1e-9d3e-2a1b3c4d5e03";
    let relay = relay_for(id);
    // The service behind site B: echoes what it reads, then closes after the client's end.
    let echo = TcpListener::bind("127.0.0.1:0").unwrap();
    let echo_addr = echo.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let (mut s, _) = echo.accept().unwrap();
        s.set_read_timeout(Some(LIMIT)).unwrap();
        let mut all = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    all.extend_from_slice(&buf[..n]);
                    s.write_all(&buf[..n]).unwrap();
                }
                Err(e) => panic!("echo read: {e}"),
            }
        }
        all.len()
    });
    let a_port = free_tcp_port();
    let a = edge(
        "tun-tcp-a",
        vec![tunnel(
            id,
            "egress",
            "tcp",
            local(a_port),
            relay_mode(&[&relay]),
        )],
        vec![],
        pinned(&relay),
    );
    let b = edge(
        "tun-tcp-b",
        vec![tunnel(
            id,
            "ingress",
            "tcp",
            echo_addr,
            relay_mode(&[&relay]),
        )],
        vec![],
        pinned(&relay),
    );
    a.wait_state("ready");
    b.wait_state("ready");

    let mut c = TcpStream::connect(local(a_port)).unwrap();
    c.set_read_timeout(Some(LIMIT)).unwrap();
    let message: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let writer = {
        let mut c = c.try_clone().unwrap();
        let m = message.clone();
        std::thread::spawn(move || {
            c.write_all(&m).unwrap();
            // Half-close: the echo server sees the end, answers the rest, then closes.
            c.shutdown(std::net::Shutdown::Write).unwrap();
        })
    };
    let mut back = Vec::new();
    c.read_to_end(&mut back).expect("read the echo to its end");
    writer.join().unwrap();
    assert_eq!(server.join().unwrap(), message.len());
    assert!(back == message, "echo differs ({} bytes back)", back.len());
    assert_eq!(relay.state().tcp_streams, 1);
    assert!(relay.state().violations.is_empty());
}

#[test]
fn bind_rejection_is_raised_once_and_not_retried_in_a_loop() {
    let id = "6f1d6c1e-0a6b-4c1e-9d3e-2a1b3c4d5e04";
    let relay = relay_for(id);
    let mut t = tunnel(
        id,
        "egress",
        "udp",
        local(free_udp_port()),
        relay_mode(&[&relay]),
    );
    t["tunnel_bind_secret"] = "ff".repeat(32).into();
    let a = edge("tun-reject", vec![t], vec![], pinned(&relay));
    a.q.wait_event(
        "Tunnel bind rejected by relay: bind authentication failed",
        LIMIT,
    );
    a.wait_state("rejected");
    // Back off, not a loop: over the next seconds at most one more attempt.
    let first = relay.state().rejected.len();
    std::thread::sleep(Duration::from_secs(3));
    assert!(relay.state().rejected.len() <= first + 1);
    a.q.assert_events("Tunnel bind rejected by relay", 1);
    let severity = a.q.wait_event("Tunnel bind rejected", LIMIT)["severity"].clone();
    assert_eq!(severity, "critical");
}

/// A relay that knows tunnel `id`'s two bind tokens.
fn relay_for(id: &str) -> FakeRelay {
    FakeRelay::start(Options {
        binds: binds(id),
        ..Options::default()
    })
}

/// An edge with one UDP relay-mode tunnel through `relays` (trusting the first's certificate).
fn udp_edge(tag: &str, id: &str, direction: &str, port: u16, relays: &[&FakeRelay]) -> Edge {
    let t = tunnel(id, direction, "udp", local(port), relay_mode(relays));
    edge(tag, vec![t], vec![], pinned(relays[0]))
}

/// Two edges with a UDP tunnel through `relays`, bound and ready: (egress, ingress, the
/// egress's local port, the ingress's receiving socket).
fn udp_pair(tag: &str, id: &str, relays: &[&FakeRelay]) -> (Edge, Edge, u16, UdpSocket) {
    let (rx, rx_port) = udp_receiver();
    let a_port = free_udp_port();
    let a = udp_edge(&format!("{tag}-a"), id, "egress", a_port, relays);
    let b = udp_edge(&format!("{tag}-b"), id, "ingress", rx_port, relays);
    a.wait_state("ready");
    b.wait_state("ready");
    (a, b, a_port, rx)
}

#[test]
fn a_tunnel_survives_the_relay_restarting() {
    let id = "6f1d6c1e-0a6b-4c1e-9d3e-2a1b3c4d5e05";
    let relay = relay_for(id);
    let (a, b, a_port, rx) = udp_pair("tun-restart", id, &[&relay]);
    let sent = datagrams(50);
    assert_same(
        carry(local(a_port), &sent, &rx),
        sorted(sent),
        "before the restart",
    );

    // The relay restarts on the same port with the same certificate.
    let (port, cert) = (relay.addr.port(), relay.cert.clone());
    relay.stop();
    for e in [&a, &b] {
        e.q.wait_event("Tunnel disconnected from relay", LIMIT);
    }
    let relay = FakeRelay::start(Options {
        port,
        cert: Some(cert),
        binds: binds(id),
    });
    a.wait_state("ready");
    b.wait_state("ready");
    let sent = datagrams(60);
    assert_same(
        carry(local(a_port), &sent, &rx),
        sorted(sent),
        "after the restart",
    );
    for e in [&a, &b] {
        e.q.wait_events("Tunnel connected to relay", 2, LIMIT);
        e.q.assert_events("Tunnel disconnected from relay", 1);
    }
    assert!(relay.state().violations.is_empty());
}

#[test]
fn a_tunnel_survives_the_peer_restarting() {
    let id = "6f1d6c1e-0a6b-4c1e-9d3e-2a1b3c4d5e08";
    let relay = relay_for(id);
    let (a, b, a_port, rx) = udp_pair("tun-peer", id, &[&relay]);
    let rx_port = rx.local_addr().unwrap().port();
    b.q.stop();
    // A clean stop unbinds: the relay tells the other edge why.
    a.q.wait_event("Tunnel peer disconnected: peer unbound", LIMIT);
    a.wait_state("waiting");
    let b = udp_edge("tun-peer-b2", id, "ingress", rx_port, &[&relay]);
    a.wait_state("ready");
    b.wait_state("ready");
    let sent = datagrams(40);
    assert_same(
        carry(local(a_port), &sent, &rx),
        sorted(sent),
        "to the restarted peer",
    );
    assert!(relay.state().violations.is_empty());
}

#[test]
fn the_edges_fail_over_to_the_second_relay() {
    let id = "6f1d6c1e-0a6b-4c1e-9d3e-2a1b3c4d5e07";
    let primary = relay_for(id);
    let backup = FakeRelay::start(Options {
        binds: binds(id),
        cert: Some(primary.cert.clone()),
        ..Options::default()
    });
    let (a, b, a_port, rx) = udp_pair("tun-failover", id, &[&primary, &backup]);
    assert_eq!(backup.state().connections, 0, "the primary is tried first");
    let sent = datagrams(50);
    assert_same(
        carry(local(a_port), &sent, &rx),
        sorted(sent),
        "through the primary",
    );

    // The primary goes away for good: the edges move to the backup.
    primary.stop();
    backup.expect("both edges bound on the backup", LIMIT, |s| {
        s.bound.len() >= 2
    });
    a.wait_state("ready");
    b.wait_state("ready");
    let sent = datagrams(70);
    assert_same(
        carry(local(a_port), &sent, &rx),
        sorted(sent),
        "through the backup",
    );
    for e in [&a, &b] {
        e.q.wait_events("Tunnel connected to relay", 2, LIMIT);
        assert_eq!(e.status()["remote"], backup.addr.to_string());
    }
    assert!(backup.state().violations.is_empty());
}

#[test]
fn forged_and_replayed_datagrams_are_dropped_and_counted() {
    let id = "6f1d6c1e-0a6b-4c1e-9d3e-2a1b3c4d5e06";
    let relay = relay_for(id);
    let (a, b, a_port, rx) = udp_pair("tun-mitm", id, &[&relay]);
    let sent = datagrams(10);
    assert_same(carry(local(a_port), &sent, &rx), sorted(sent), "carried");

    relay.replay_last(id);
    poll(LIMIT, || (b.counter("replays_dropped") == 1).then_some(()))
        .expect("the replay is counted");
    relay.forge_last(id);
    poll(LIMIT, || (b.counter("auth_failures") == 1).then_some(()))
        .expect("the forgery is counted");
    // Neither reached the receiver: one more real datagram is the next thing it reads.
    let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
    tx.send_to(b"after", local(a_port)).unwrap();
    let got = receive_until(&rx, LIMIT, |g| !g.is_empty());
    assert_eq!(got, vec![b"after".to_vec()]);
    assert_eq!(b.counter("packets_in"), 11);

    // A datagram larger than a 1 500-byte path carries is dropped at the sender, and said so.
    tx.send_to(&[0x47; 1450], local(a_port)).unwrap();
    poll(LIMIT, || (a.counter("send_dropped") == 1).then_some(()))
        .expect("the oversize datagram is counted");
    assert_eq!(b.counter("packets_in"), 11);
}
