//! A hostile caller against the listener's handshake state machine (the vendored
//! srt-protocol `Listen`, as an SRT listener input or output runs it), with and without a
//! passphrase: a run of datagrams (each after a length byte) parsed and handed to it in
//! order. The induction cookie is echoed into later handshakes, as a real caller would, so
//! the fuzzer reaches the conclusion phase (HSv5 extensions, key material) instead of being
//! stopped at a 32-bit guess. Whatever comes, no panic.
#![no_main]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use srt_protocol::options::{KeySize, SocketOptions};
use srt_protocol::packet::{ControlTypes, Packet};
use srt_protocol::protocol::pending_connection::ConnectionResult;
use srt_protocol::protocol::pending_connection::listen::Listen;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, mut rest)) = data.split_first() else {
        return;
    };
    let mut opts = SocketOptions::default();
    if mode & 1 == 1 {
        opts.encryption.passphrase = Some("correct-horse-battery".try_into().unwrap());
        opts.encryption.key_size = if mode & 2 == 2 {
            KeySize::AES256
        } else {
            KeySize::Unspecified
        };
    }
    let mut listen = Listen::new(opts.into(), false);
    let from: SocketAddr = "127.0.0.1:9000".parse().unwrap();
    let start = Instant::now();
    let mut cookie = None;
    let mut step = 0u64;
    while let Some((&len, r)) = rest.split_first() {
        let n = usize::from(len).min(r.len());
        let (datagram, r) = r.split_at(n);
        rest = r;
        step += 1;
        let Ok(mut packet) = Packet::parse(&mut &datagram[..], false) else {
            continue;
        };
        if let (Some(c), Packet::Control(ctl)) = (cookie, &mut packet)
            && let ControlTypes::Handshake(hs) = &mut ctl.control_type
        {
            hs.syn_cookie = c;
        }
        let now = start + Duration::from_millis(step * 10);
        match listen.handle_packet(now, Ok((packet, from))) {
            ConnectionResult::SendPacket((Packet::Control(reply), _)) => {
                if let ControlTypes::Handshake(hs) = &reply.control_type {
                    cookie = Some(hs.syn_cookie);
                }
            }
            ConnectionResult::Connected(..) => return,
            _ => {}
        }
        let _ = listen.handle_timer(now);
    }
});
