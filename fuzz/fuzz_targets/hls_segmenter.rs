//! The HLS segmenter on arbitrary bytes: PSI, PES headers and NAL scanning of untrusted TS.
//! Every segment it cuts is whole packets and starts with a PAT; nothing panics.
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use quoll::hls::segmenter::Segmenter;
use quoll::ts::packet::{PACKET_LEN, Packet};

fuzz_target!(|data: &[u8]| {
    let t0 = Instant::now();
    let mut seg = Segmenter::new(Duration::from_millis(1), 0);
    for (i, raw) in data.chunks(PACKET_LEN).enumerate() {
        if let Some(s) = seg.packet(raw, t0 + Duration::from_millis(i as u64)) {
            assert_eq!(s.data.len() % PACKET_LEN, 0);
            let first = Packet::new(&s.data[..PACKET_LEN]).expect("a packet");
            assert_eq!(first.pid(), 0);
        }
    }
});
