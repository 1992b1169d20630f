//! The push output's side of RTMP on arbitrary server bytes after a valid handshake: the
//! publisher never panics, holds little, and what it writes back stays small.
#![no_main]

use libfuzzer_sys::fuzz_target;
use quoll::rtmp::publish::{Publisher, Target};

fuzz_target!(|data: &[u8]| {
    let target = Target {
        app: "live".into(),
        tc_url: "rtmp://127.0.0.1/live".into(),
        key: "k".into(),
    };
    let mut out = Vec::new();
    let mut p = Publisher::start(target, 0, &mut out);
    // S0, S1 and S2, so the fuzzer reaches the chunk stream at once.
    let mut hs = vec![3u8];
    hs.resize(1 + 2 * 1536, 0);
    p.feed(&hs, &mut out).expect("handshake");
    for piece in data.chunks(777) {
        out.clear();
        if p.feed(piece, &mut out).is_err() {
            return;
        }
        assert!(out.len() < 64 * 1024);
        assert!(p.held() <= 256 * 1024);
        if p.publishing() {
            p.media(9, 0, &[0x17, 1, 0, 0, 0], &mut out);
        }
    }
});
