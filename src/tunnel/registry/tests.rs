//! The registry's tests: `apply`'s diffing without a network, then whole tunnels between
//! two registries on loopback (direct mode, and relay mode through a minimal relay stand-in).

use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};

use super::*;
use crate::events::Events;
use crate::tunnel::cert;
use crate::tunnel::status::TunnelState;

const KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
const SECRET: &str = "ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100";

fn id(n: u8) -> String {
    format!("0192f3a4-5b6c-7d8e-9fa0-b1c2d3e4f5{n:02x}")
}

fn tunnel(v: Value) -> TunnelConfig {
    TunnelConfig::from_value_at(v, "t").unwrap()
}

/// A relay-mode tunnel whose relay is a closed loopback port: it only retries.
fn relay_tunnel(n: u8, name: &str) -> TunnelConfig {
    tunnel(json!({
        "id": id(n), "name": name, "protocol": "udp", "mode": "relay",
        "direction": "ingress", "local_addr": "127.0.0.1:9",
        "relay_addr": "127.0.0.1:9", "tunnel_encryption_key": KEY,
        "tunnel_bind_secret": SECRET,
    }))
}

fn ctx(events: &Events, dir: PathBuf) -> TunnelContext {
    TunnelContext {
        events: events.clone(),
        data_dir: dir,
        edge_id: "edge-test".into(),
        outbound: None,
    }
}

/// The tunnel events raised so far, as (message, tunnel id).
fn tunnel_events(events: &Events) -> Vec<(String, String)> {
    events
        .snapshot()
        .into_iter()
        .filter(|r| r.event.category == crate::events::Category::Tunnel)
        .map(|r| (r.event.message, r.event.flow_id.unwrap_or_default()))
        .collect()
}

fn local<F: Future>(f: F) -> F::Output {
    let rt = crate::testing::rt();
    tokio::task::LocalSet::new().block_on(&rt, f)
}

#[test]
fn apply_diffs_by_id() {
    local(async {
        let events = Events::in_memory(256);
        let tunnels = Tunnels::new(ctx(&events, std::env::temp_dir()));
        let tls = TunnelTlsConfig::default();
        let (a, b) = (relay_tunnel(1, "a"), relay_tunnel(2, "b"));
        let started = |n: &str, i: u8| (format!("Tunnel '{n}' started"), id(i));
        let stopped = |n: &str, i: u8| (format!("Tunnel '{n}' stopped"), id(i));

        tunnels.apply(&[a.clone(), b.clone()], &tls);
        assert_eq!(tunnel_events(&events), [started("a", 1), started("b", 2)]);
        let shared_a = tunnels.entries.borrow()[0]
            .running
            .as_ref()
            .unwrap()
            .shared
            .clone();

        // The same again: nothing restarts.
        tokio::task::yield_now().await;
        tunnels.apply(&[a.clone(), b.clone()], &tls);
        assert_eq!(tunnel_events(&events).len(), 2);
        let same = tunnels.entries.borrow()[0]
            .running
            .as_ref()
            .unwrap()
            .shared
            .clone();
        assert!(
            Rc::ptr_eq(&shared_a, &same),
            "an unchanged tunnel keeps its task"
        );

        // Changed: stopped, then started again.
        let mut a2 = a.clone();
        a2.name = "a2".into();
        tunnels.apply(&[a2.clone(), b.clone()], &tls);
        assert_eq!(
            tunnel_events(&events)[2..],
            [stopped("a", 1), started("a2", 1)]
        );

        // Removed: stopped. Disabled: stopped and reported so.
        let mut b_off = b.clone();
        b_off.enabled = false;
        tunnels.apply(&[b_off.clone()], &tls);
        // In the new config's order, then what was removed.
        assert_eq!(
            tunnel_events(&events)[4..],
            [stopped("b", 2), stopped("a2", 1)]
        );
        let status = tunnels.status(Instant::now());
        assert_eq!(status.len(), 1);
        assert_eq!(status[0].state, TunnelState::Stopped);
        assert!(!status[0].enabled);

        // A disabled tunnel re-pushed unchanged stays quiet; enabling it starts it.
        tunnels.apply(&[b_off.clone()], &tls);
        assert_eq!(tunnel_events(&events).len(), 6);
        tunnels.apply(std::slice::from_ref(&b), &tls);
        assert_eq!(tunnel_events(&events)[6..], [started("b", 2)]);

        // Another trust restarts every tunnel, and insecure says so at each start.
        let insecure = TunnelTlsConfig {
            insecure_skip_verify: true,
            ..TunnelTlsConfig::default()
        };
        tunnels.apply(std::slice::from_ref(&b), &insecure);
        let ev = tunnel_events(&events);
        assert_eq!(ev[7..9], [stopped("b", 2), started("b", 2)]);
        assert_eq!(
            ev[9..],
            [(Event::tunnel_tls_insecure(&id(2), "b").message, id(2))]
        );
        assert_ne!(
            tunnels.status(Instant::now())[0].state,
            TunnelState::Stopped
        );

        tunnels.stop_all().await;
        assert_eq!(tunnel_events(&events)[10..], [stopped("b", 2)]);
        assert!(tunnels.status(Instant::now()).is_empty());
    });
}

#[test]
fn a_local_addr_in_use_fails_the_tunnel() {
    local(async {
        let taken = UdpSocket::bind("127.0.0.1:0").unwrap();
        let events = Events::in_memory(64);
        let tunnels = Tunnels::new(ctx(&events, std::env::temp_dir()));
        let mut t = relay_tunnel(3, "busy");
        t.direction = crate::config::TunnelDirection::Egress;
        t.local_addr = taken.local_addr().unwrap();
        tunnels.apply(&[t], &TunnelTlsConfig::default());
        let done = tunnels.entries.borrow()[0]
            .running
            .as_ref()
            .unwrap()
            .done
            .clone();
        done.wait(Duration::from_secs(5)).await;
        let ev = tunnel_events(&events);
        assert!(
            ev[1]
                .0
                .starts_with("Tunnel 'busy' failed: cannot use local_addr"),
            "{ev:?}"
        );
        let status = &tunnels.status(Instant::now())[0];
        assert_eq!(status.state, TunnelState::Stopped);
        assert!(status.last_error.is_some());
    });
}

/// Trust only the certificate with this SHA-256 (the stand-in relay's, a direct server's).
fn pinned(fingerprint: &[u8; 32]) -> TunnelTlsConfig {
    TunnelTlsConfig {
        cert_fingerprints: vec![crate::net::tls::fingerprint_hex(fingerprint)],
        ..TunnelTlsConfig::default()
    }
}

fn free_udp_port() -> SocketAddr {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// Send datagrams into the tunnel at `entry` until one comes out at `receiver` (both ends
/// are up), then 200 of assorted sizes one at a time, each checked byte for byte. The
/// bytes carried.
async fn carry_udp(receiver: &tokio::net::UdpSocket, entry: SocketAddr, ev: &Events) -> usize {
    let sender = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut buf = vec![0u8; 2048];
    // Datagrams sent before both ends are up are dropped: probe until one arrives.
    let up = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            sender.send_to(b"probe", entry).await.unwrap();
            let got =
                tokio::time::timeout(Duration::from_millis(100), receiver.recv(&mut buf)).await;
            if let Ok(Ok(n)) = got {
                assert_eq!(&buf[..n], b"probe");
                break;
            }
        }
    })
    .await;
    assert!(
        up.is_ok(),
        "no datagram through the tunnel: {:?}",
        tunnel_events(ev)
    );
    // Probes still in flight.
    while let Ok(Ok(_)) =
        tokio::time::timeout(Duration::from_millis(200), receiver.recv(&mut buf)).await
    {}

    let sent: Vec<Vec<u8>> = (0..200u32)
        .map(|i| {
            let len = 1 + (i as usize * 37) % 1200;
            (0..len).map(|j| (i as usize * 7 + j) as u8).collect()
        })
        .collect();
    for d in &sent {
        sender.send_to(d, entry).await.unwrap();
        // One at a time: the test is about bytes, not about loss under load.
        let n = tokio::time::timeout(Duration::from_secs(5), receiver.recv(&mut buf))
            .await
            .expect("datagram delivered")
            .unwrap();
        assert_eq!(&buf[..n], &d[..]);
    }

    sent.iter().map(Vec::len).sum()
}

/// Two registries on loopback, one tunnel in direct mode between them: the egress edge
/// pins the ingress edge's certificate, and UDP datagrams come out byte for byte.
#[test]
fn direct_mode_carries_udp_byte_exact_on_loopback() {
    local(async {
        let dir = cert::tests::Dir::new("direct-loopback");
        let ingress_dir = dir.0.join("ingress");
        let server_cert = cert::load_or_create(&ingress_dir).unwrap();
        let receiver = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let listen = free_udp_port();
        let entry = free_udp_port();
        let psk = "ab".repeat(32);
        let base = json!({
            "id": id(9), "name": "direct", "protocol": "udp", "mode": "direct",
            "tunnel_encryption_key": KEY, "tunnel_psk": psk,
        });
        let mut ingress = base.clone();
        ingress["direction"] = "ingress".into();
        ingress["local_addr"] = receiver.local_addr().unwrap().to_string().into();
        ingress["direct_listen_addr"] = listen.to_string().into();
        let mut egress = base;
        egress["direction"] = "egress".into();
        egress["local_addr"] = entry.to_string().into();
        egress["peer_addr"] = listen.to_string().into();
        let pinned = pinned(&server_cert.fingerprint);

        let (ev_in, ev_out) = (Events::in_memory(64), Events::in_memory(64));
        let edge_in = Tunnels::new(ctx(&ev_in, ingress_dir));
        let edge_out = Tunnels::new(ctx(&ev_out, dir.0.join("egress")));
        let ingress_config = tunnel(ingress);
        edge_in.apply(
            std::slice::from_ref(&ingress_config),
            &TunnelTlsConfig::default(),
        );
        edge_out.apply(&[tunnel(egress)], &pinned);

        let sent = carry_udp(&receiver, entry, &ev_out).await;
        let now = Instant::now();
        let (s_in, s_out) = (&edge_in.status(now)[0], &edge_out.status(now)[0]);
        assert_eq!(s_in.state, TunnelState::Ready);
        assert_eq!(s_out.state, TunnelState::Ready);
        assert!(s_out.stats.packets_out >= 201, "{s_out:?}");
        assert_eq!(s_in.stats.packets_in, s_out.stats.packets_out);
        assert!(s_in.stats.bytes_in >= sent as u64);
        assert_eq!(s_in.stats.replays_dropped + s_in.stats.auth_failures, 0);
        let connected = Event::tunnel_connected(&id(9)).message;
        for ev in [&ev_in, &ev_out] {
            assert!(tunnel_events(ev).iter().any(|(m, _)| *m == connected));
        }

        // The listening edge restarts its tunnel (a changed config): the new task takes
        // the same listen address, and the dialling edge finds it again by itself.
        let mut renamed = ingress_config.clone();
        renamed.name = "direct-2".into();
        edge_in.apply(&[renamed], &TunnelTlsConfig::default());
        carry_udp(&receiver, entry, &ev_out).await;
        let ev = tunnel_events(&ev_out);
        let count = |m: &str| ev.iter().filter(|(e, _)| e.starts_with(m)).count();
        assert_eq!(count("Tunnel connected"), 2, "{ev:?}");
        assert_eq!(count("Tunnel disconnected"), 1, "{ev:?}");
        assert_eq!(edge_out.status(Instant::now())[0].stats.reconnects, 1);

        edge_out.stop_all().await;
        edge_in.stop_all().await;
    });
}

/// A relay stand-in, just enough to drive the relay shell: `hello_ack`, bind tokens
/// checked (a wrong one is "bind authentication failed"), `tunnel_waiting` to the first
/// end, `tunnel_ready` to the second on its control stream and to the first on a new
/// stream it opens (as the spec says peer notifications come), then datagrams copied
/// between the two. (The full stand-in of the integration tests is the lead's.)
mod fake_relay {
    use std::cell::RefCell;
    use std::rc::Rc;

    use quinn::{Connection, Endpoint};

    use crate::config::TunnelDirection;
    use crate::tunnel::run::FrameReader;
    use crate::tunnel::token::bind_token;
    use crate::tunnel::wire::{self, RelayMsg};

    pub struct Relay {
        pub endpoint: Endpoint,
        pub fingerprint: [u8; 32],
        /// Connections accepted.
        pub accepted: Rc<std::cell::Cell<u32>>,
    }

    /// `tamper`: besides each datagram, also send the peer a replay of it and a forgery
    /// (its nonce changed), as a hostile relay could.
    pub fn start(secret: &str, tamper: bool) -> Relay {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = rcgen::CertificateParams::new(vec!["relay".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let der = cert.der().clone();
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![der.clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            )
            .unwrap();
        tls.alpn_protocols = vec![crate::tunnel::quic::ALPN_RELAY.to_vec()];
        let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls).unwrap();
        let mut config = quinn::ServerConfig::with_crypto(std::sync::Arc::new(crypto));
        config.transport_config(crate::tunnel::quic::transport());
        let endpoint = Endpoint::server(config, "127.0.0.1:0".parse().unwrap()).unwrap();
        let bound: Rc<RefCell<Vec<Connection>>> = Rc::default();
        let secret = secret.to_string();
        let ep = endpoint.clone();
        let accepted: Rc<std::cell::Cell<u32>> = Rc::default();
        let count = accepted.clone();
        tokio::task::spawn_local(async move {
            while let Some(incoming) = ep.accept().await {
                let Ok(conn) = incoming.await else { continue };
                count.set(count.get() + 1);
                tokio::task::spawn_local(serve(conn, secret.clone(), bound.clone(), tamper));
            }
        });
        Relay {
            endpoint,
            fingerprint: crate::net::tls::sha256(der.as_ref()),
            accepted,
        }
    }

    async fn serve(
        conn: Connection,
        secret: String,
        bound: Rc<RefCell<Vec<Connection>>>,
        tamper: bool,
    ) {
        let Ok((mut send, recv)) = conn.accept_bi().await else {
            return;
        };
        let mut reader = FrameReader::new(recv);
        let mut out = Vec::new();
        while let Ok(frame) = reader.next().await {
            let reply = match wire::decode::<RelayMsg>(&frame).unwrap() {
                RelayMsg::Hello { .. } => Some(RelayMsg::HelloAck {
                    protocol_version: 2,
                    software_version: "fake".into(),
                }),
                RelayMsg::TunnelBind {
                    tunnel_id,
                    direction,
                    bind_token: token,
                    ..
                } => {
                    let dir = match direction.as_str() {
                        "egress" => TunnelDirection::Egress,
                        _ => TunnelDirection::Ingress,
                    };
                    if token != bind_token(&secret, &tunnel_id, dir) {
                        Some(RelayMsg::TunnelDown {
                            tunnel_id,
                            reason: "bind authentication failed".into(),
                        })
                    } else {
                        let first = bound.borrow().first().cloned();
                        bound.borrow_mut().push(conn.clone());
                        match first {
                            None => Some(RelayMsg::TunnelWaiting { tunnel_id }),
                            Some(other) => {
                                let ready = RelayMsg::TunnelReady {
                                    tunnel_id: tunnel_id.clone(),
                                };
                                let mut note = Vec::new();
                                wire::encode(&ready, &mut note);
                                let mut uni = other.open_uni().await.unwrap();
                                uni.write_all(&note).await.unwrap();
                                uni.finish().unwrap();
                                tokio::task::spawn_local(copy(other.clone(), conn.clone(), tamper));
                                tokio::task::spawn_local(copy(conn.clone(), other, tamper));
                                Some(ready)
                            }
                        }
                    }
                }
                RelayMsg::Ping => Some(RelayMsg::Pong),
                _ => None,
            };
            if let Some(reply) = reply {
                out.clear();
                wire::encode(&reply, &mut out);
                if send.write_all(&out).await.is_err() {
                    return;
                }
            }
        }
    }

    async fn copy(from: Connection, to: Connection, tamper: bool) {
        while let Ok(d) = from.read_datagram().await {
            let _ = to.send_datagram(d.clone());
            if tamper {
                let _ = to.send_datagram(d.clone());
                // A fresh counter (a stale one is refused as a replay before its tag
                // is even checked): only the tag can refuse it.
                let mut forged = d.to_vec();
                let at = crate::tunnel::seal::UUID_LEN;
                let counter = u64::from_be_bytes(forged[at..at + 8].try_into().unwrap());
                forged[at..at + 8].copy_from_slice(&(counter + 1_000_000).to_be_bytes());
                let _ = to.send_datagram(forged.into());
            }
        }
    }
}

fn relay_pair(
    relay: SocketAddr,
    secret: &str,
    receiver: SocketAddr,
    entry: SocketAddr,
) -> (TunnelConfig, TunnelConfig) {
    let base = json!({
        "id": id(7), "name": "via-relay", "protocol": "udp", "mode": "relay",
        "relay_addr": relay.to_string(), "tunnel_encryption_key": KEY,
        "tunnel_bind_secret": secret,
    });
    let mut ingress = base.clone();
    ingress["direction"] = "ingress".into();
    ingress["local_addr"] = receiver.to_string().into();
    let mut egress = base;
    egress["direction"] = "egress".into();
    egress["local_addr"] = entry.to_string().into();
    (tunnel(ingress), tunnel(egress))
}

/// Two edges with a UDP tunnel through the stand-in relay (pinned), started.
struct RelayEdges {
    relay: fake_relay::Relay,
    relay_addr: SocketAddr,
    /// Where the ingress edge delivers.
    receiver: tokio::net::UdpSocket,
    /// The egress edge's local address.
    entry: SocketAddr,
    ev_in: Events,
    ev_out: Events,
    edge_in: Tunnels,
    edge_out: Tunnels,
}

/// `mitm`: the relay also replays and forges each datagram it forwards.
async fn relay_edges(mitm: bool) -> RelayEdges {
    let relay = fake_relay::start(SECRET, mitm);
    let relay_addr = relay.endpoint.local_addr().unwrap();
    let pinned = pinned(&relay.fingerprint);
    let receiver = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let entry = free_udp_port();
    let (ingress, egress) = relay_pair(relay_addr, SECRET, receiver.local_addr().unwrap(), entry);
    let (ev_in, ev_out) = (Events::in_memory(64), Events::in_memory(64));
    let edge_in = Tunnels::new(ctx(&ev_in, std::env::temp_dir()));
    let edge_out = Tunnels::new(ctx(&ev_out, std::env::temp_dir()));
    edge_in.apply(&[ingress], &pinned);
    edge_out.apply(&[egress], &pinned);
    RelayEdges {
        relay,
        relay_addr,
        receiver,
        entry,
        ev_in,
        ev_out,
        edge_in,
        edge_out,
    }
}

/// Relay mode on loopback: both ends bind through the stand-in, the first learns of the
/// second on a relay-opened stream, and UDP comes out byte for byte.
#[test]
fn relay_mode_carries_udp_byte_exact_on_loopback() {
    local(async {
        let e = relay_edges(false).await;

        let sent = carry_udp(&e.receiver, e.entry, &e.ev_out).await;

        let now = Instant::now();
        let (s_in, s_out) = (&e.edge_in.status(now)[0], &e.edge_out.status(now)[0]);
        assert_eq!(
            (s_in.state, s_out.state),
            (TunnelState::Ready, TunnelState::Ready)
        );
        assert_eq!(s_in.remote.as_deref(), Some(&*e.relay_addr.to_string()));
        assert_eq!(s_in.stats.packets_in, s_out.stats.packets_out);
        assert!(s_in.stats.bytes_in >= sent as u64);
        let connected = Event::tunnel_connected(&id(7)).message;
        for ev in [&e.ev_in, &e.ev_out] {
            let n = tunnel_events(ev)
                .iter()
                .filter(|(m, _)| *m == connected)
                .count();
            assert_eq!(n, 1, "{:?}", tunnel_events(ev));
        }
        e.edge_out.stop_all().await;
        e.edge_in.stop_all().await;
        e.relay.endpoint.close(0u32.into(), b"");
    });
}

/// A bind token the relay refuses: the critical event once, the state `rejected`, and no
/// retry before the long back-off.
#[test]
fn a_refused_bind_token_is_raised_once_and_backs_off() {
    local(async {
        let relay = fake_relay::start(SECRET, false);
        let relay_addr = relay.endpoint.local_addr().unwrap();
        let pinned = pinned(&relay.fingerprint);
        let (ingress, _) = relay_pair(relay_addr, KEY, free_udp_port(), free_udp_port());
        let events = Events::in_memory(64);
        let tunnels = Tunnels::new(ctx(&events, std::env::temp_dir()));
        tunnels.apply(&[ingress], &pinned);
        let rejected = Event::tunnel_bind_rejected(&id(7), "bind authentication failed");
        let seen = tokio::time::timeout(Duration::from_secs(10), async {
            while tunnels.status(Instant::now())[0].state != TunnelState::Rejected {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        assert!(seen.is_ok(), "{:?}", tunnel_events(&events));
        let ev = tunnel_events(&events);
        assert_eq!(
            ev.iter().filter(|(m, _)| *m == rejected.message).count(),
            1,
            "{ev:?}"
        );
        assert_eq!(rejected.severity, crate::events::Severity::Critical);
        // The next attempt is a minute away, not the 1 s of an ordinary failure.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(relay.accepted.get(), 1);
        assert_eq!(
            tunnels.status(Instant::now())[0].state,
            TunnelState::Rejected
        );
        tunnels.stop_all().await;
    });
}

/// `security.outbound_allow` without loopback: a relay named `localhost` resolves to
/// loopback only, so the tunnel never dials it and says why.
#[test]
fn a_relay_outside_outbound_allow_is_never_dialled() {
    local(async {
        let relay = fake_relay::start(SECRET, false);
        let relay_addr = relay.endpoint.local_addr().unwrap();
        let (mut ingress, _) = relay_pair(relay_addr, SECRET, free_udp_port(), free_udp_port());
        ingress.relay_addr = Some(format!("localhost:{}", relay_addr.port()));
        let events = Events::in_memory(64);
        let mut context = ctx(&events, std::env::temp_dir());
        context.outbound =
            crate::net::outbound::AllowList::from_entries(Some(&["10.0.0.0/8".to_string()]));
        let tunnels = Tunnels::new(context);
        tunnels.apply(&[ingress], &TunnelTlsConfig::default());
        let refused = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let status = tunnels.status(Instant::now()).remove(0);
                if let Some(e) = status.last_error {
                    break e;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("no error within 10 s");
        assert!(
            refused.starts_with("localhost resolves to ")
                && refused.ends_with("none of it in security.outbound_allow"),
            "{refused}"
        );
        assert_eq!(relay.accepted.get(), 0);
        tunnels.stop_all().await;
    });
}

/// A TCP tunnel in direct mode: each connection is a stream, bytes come back byte for
/// byte, and a half-close goes through both ways (the echo server answers after the
/// client's EOF, then closes, and the client reads to the end).
#[test]
fn direct_mode_carries_tcp_with_half_close() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    local(async {
        let dir = cert::tests::Dir::new("direct-tcp");
        let ingress_dir = dir.0.join("ingress");
        let server_cert = cert::load_or_create(&ingress_dir).unwrap();
        // Echo after EOF: reads everything, answers it reversed, closes.
        let echo = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let echo_addr = echo.local_addr().unwrap();
        tokio::task::spawn_local(async move {
            while let Ok((mut s, _)) = echo.accept().await {
                tokio::task::spawn_local(async move {
                    let mut all = Vec::new();
                    s.read_to_end(&mut all).await.unwrap();
                    all.reverse();
                    s.write_all(&all).await.unwrap();
                    s.shutdown().await.unwrap();
                });
            }
        });
        let entry = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let listen = free_udp_port();
        let base = json!({
            "id": id(10), "name": "tcp", "protocol": "tcp", "mode": "direct",
            "tunnel_encryption_key": KEY, "tunnel_psk": "cd".repeat(32),
        });
        let mut ingress = base.clone();
        ingress["direction"] = "ingress".into();
        ingress["local_addr"] = echo_addr.to_string().into();
        ingress["direct_listen_addr"] = listen.to_string().into();
        let mut egress = base;
        egress["direction"] = "egress".into();
        egress["local_addr"] = entry.to_string().into();
        egress["peer_addr"] = listen.to_string().into();
        let pinned = pinned(&server_cert.fingerprint);
        let (ev_in, ev_out) = (Events::in_memory(64), Events::in_memory(64));
        let edge_in = Tunnels::new(ctx(&ev_in, ingress_dir));
        let edge_out = Tunnels::new(ctx(&ev_out, dir.0.join("egress")));
        edge_in.apply(&[tunnel(ingress)], &TunnelTlsConfig::default());
        edge_out.apply(&[tunnel(egress)], &pinned);
        tokio::task::yield_now().await;

        // Larger than one chunk, so it is cut and put back together.
        let payload: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        for _ in 0..3 {
            // Accepted once the tunnel is up (it waits in the listen backlog till then).
            let mut c = tokio::net::TcpStream::connect(entry).await.unwrap();
            c.write_all(&payload).await.unwrap();
            c.shutdown().await.unwrap();
            let mut back = Vec::new();
            tokio::time::timeout(Duration::from_secs(20), c.read_to_end(&mut back))
                .await
                .expect("echo through the tunnel")
                .unwrap();
            let mut expected = payload.clone();
            expected.reverse();
            assert!(back == expected, "{} bytes back", back.len());
        }
        let now = Instant::now();
        let (s_in, s_out) = (&edge_in.status(now)[0], &edge_out.status(now)[0]);
        assert_eq!(s_out.stats.tcp_connections, 3);
        assert_eq!(s_in.stats.tcp_connections, 3);
        assert_eq!(s_out.stats.bytes_out, 3 * payload.len() as u64);
        assert_eq!(s_out.stats.bytes_in, 3 * payload.len() as u64);
        assert_eq!(s_in.stats.auth_failures + s_out.stats.auth_failures, 0);
        edge_out.stop_all().await;
        edge_in.stop_all().await;
    });
}

/// A relay that replays and forges datagrams: each is delivered once, the replays and
/// the forgeries are counted, and none of them comes out.
#[test]
fn replayed_and_forged_datagrams_are_counted_and_never_delivered() {
    local(async {
        let RelayEdges {
            relay,
            receiver,
            entry,
            ev_out,
            edge_in,
            edge_out,
            ..
        } = relay_edges(true).await;

        // Each datagram comes out once, in order (carry_udp checks every one).
        carry_udp(&receiver, entry, &ev_out).await;
        let mut buf = [0u8; 2048];
        let extra = tokio::time::timeout(Duration::from_millis(300), receiver.recv(&mut buf)).await;
        assert!(extra.is_err(), "a replay or forgery came out");

        let s_in = &edge_in.status(Instant::now())[0];
        let delivered = s_in.stats.packets_in;
        assert!(delivered >= 201, "{s_in:?}");
        assert_eq!(s_in.stats.replays_dropped, delivered, "{s_in:?}");
        assert_eq!(s_in.stats.auth_failures, delivered, "{s_in:?}");
        edge_out.stop_all().await;
        edge_in.stop_all().await;
        relay.endpoint.close(0u32.into(), b"");
    });
}
