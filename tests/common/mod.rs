//! Helpers shared by the integration tests.
//!
//! Under cross-testing the test binary runs in qemu-user, and so must the `quoll` binary it
//! spawns: `QUOLL_RUNNER` (e.g. `qemu-aarch64`) is put in front of it. Peers such as ffmpeg
//! stay native host programs.
#![allow(dead_code)]

use std::net::{TcpListener, UdpSocket};
use std::process::Command;

/// A `Command` for the quoll binary under test.
pub fn quoll() -> Command {
    let bin = env!("CARGO_BIN_EXE_quoll");
    match std::env::var("QUOLL_RUNNER") {
        Ok(runner) if !runner.trim().is_empty() => {
            let mut parts = runner.split_whitespace();
            let mut c = Command::new(parts.next().unwrap_or("qemu-aarch64"));
            c.args(parts).arg(bin);
            c
        }
        _ => Command::new(bin),
    }
}

/// A UDP port on 127.0.0.1 that was free a moment ago.
pub fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral UDP port")
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_tcp_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral TCP port")
}

/// Whether a peer program is on PATH; tests that need it say so and skip only when
/// `QUOLL_REQUIRE_PEERS` is unset (CI sets it, so a missing peer fails there).
pub fn have_peer(name: &str) -> bool {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {name}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !found {
        assert!(
            std::env::var_os("QUOLL_REQUIRE_PEERS").is_none(),
            "peer program '{name}' is required (QUOLL_REQUIRE_PEERS is set) but not on PATH"
        );
        eprintln!("skipping: peer program '{name}' not on PATH");
    }
    found
}
