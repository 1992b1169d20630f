//! Arbitrary TS packets into the RTMP output's TS-to-FLV muxer: never panics, and every
//! tag it makes is an audio or video tag with a body.
#![no_main]

use libfuzzer_sys::fuzz_target;
use quoll::rtmp::mux::FlvMux;

fuzz_target!(|data: &[u8]| {
    let mut m = FlvMux::new();
    let (mut tags, mut notices, mut dropped) = (Vec::new(), Vec::new(), Vec::new());
    // Force sync bytes so the packets reach the PSI and PES paths.
    let mut ts = data.to_vec();
    for p in ts.chunks_mut(188) {
        p[0] = 0x47;
    }
    m.push(&ts, &mut tags, &mut notices, &mut dropped);
    for t in &tags {
        assert!(t.type_id == 8 || t.type_id == 9);
        assert!(t.body.len() >= 2);
    }
});
