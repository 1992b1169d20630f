//! The TS muxer on arbitrary frames: never panics, always whole 188-byte packets with the
//! sync byte and continuous counters per PID, and every frame's bytes come back out.
#![no_main]

use libfuzzer_sys::fuzz_target;
use quoll::ts::mux::{StreamKind, TsMuxer};
use quoll::ts::packet::{PACKET_LEN, Packet};

fuzz_target!(|data: &[u8]| {
    let kinds = [StreamKind::H264, StreamKind::AacAdts, StreamKind::H265];
    let n = data.first().map_or(1, |b| usize::from(b % 4));
    let mut m = TsMuxer::new(&kinds[..n.min(3)]);
    let mut out = Vec::new();
    let mut rest = data.get(1..).unwrap_or(&[]);
    let mut payload = 0usize;
    while rest.len() >= 11 {
        let idx = usize::from(rest[0] % 4);
        let pts = u64::from_le_bytes(rest[1..9].try_into().unwrap());
        let key = rest[9] & 1 == 1;
        let len = usize::from(rest[10]) * 8;
        let body = &rest[11..rest.len().min(11 + len)];
        if idx < m.streams() {
            payload += body.len();
        }
        m.write_frame(idx, pts, key, body, &mut out);
        rest = &rest[11 + body.len()..];
    }
    assert_eq!(out.len() % PACKET_LEN, 0);
    let mut cc = std::collections::HashMap::new();
    let mut es = 0usize;
    for p in out.chunks(PACKET_LEN) {
        let pkt = Packet::new(p).expect("sync byte");
        if let Some(prev) = cc.insert(pkt.pid(), pkt.cc()) {
            assert_eq!((prev + 1) & 0xf, pkt.cc());
        }
        if pkt.pid() >= 0x100 && pkt.pid() < 0x1000 {
            es += pkt.payload().map_or(0, <[u8]>::len);
        }
    }
    // Each frame adds a 14-byte PES header.
    assert!(es >= payload);
});
