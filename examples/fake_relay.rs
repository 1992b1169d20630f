//! The stand-in relay of the tunnel tests (`tests/fake_relay`, written from
//! `shared/spec/relay-protocol.md`) as a process, for `scripts/bench-tunnel.sh`.
//!
//! ```text
//! fake_relay PORT TUNNEL_ID BIND_SECRET
//! ```
//! Listens on 127.0.0.1:PORT (UDP, QUIC), accepts the two binds of TUNNEL_ID whose tokens
//! BIND_SECRET makes, prints `relay addr=… fingerprint=…` and runs until stdin closes.

#[path = "../tests/fake_relay/mod.rs"]
mod fake_relay;

use std::io::Read;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [port, id, secret] = args.as_slice() else {
        eprintln!("usage: fake_relay PORT TUNNEL_ID BIND_SECRET");
        std::process::exit(2);
    };
    let binds = ["egress", "ingress"]
        .iter()
        .map(|d| {
            (
                id.clone(),
                d.to_string(),
                fake_relay::bind_token(secret, id, d),
            )
        })
        .collect();
    let relay = fake_relay::FakeRelay::start(fake_relay::Options {
        port: port.parse().expect("PORT"),
        binds,
        ..Default::default()
    });
    println!(
        "relay addr={} fingerprint={}",
        relay.addr,
        relay.fingerprint()
    );
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
    let s = relay.stop();
    println!(
        "relay datagrams_forwarded={} dropped={} violations={}",
        s.datagrams_forwarded,
        s.datagrams_dropped,
        s.violations.len()
    );
}
