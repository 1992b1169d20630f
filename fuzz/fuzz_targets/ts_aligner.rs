//! The pipe re-aligner of the FFmpeg worker on arbitrary bytes cut at arbitrary points:
//! only whole packets starting with the sync byte come out, and it keeps less than one
//! packet between reads.
#![no_main]

use libfuzzer_sys::fuzz_target;
use quoll::bridge::Aligner;
use quoll::ts::packet::{PACKET_LEN, SYNC_BYTE};

fuzz_target!(|data: &[u8]| {
    let Some((&cut, rest)) = data.split_first() else {
        return;
    };
    let step = usize::from(cut).max(1);
    let mut a = Aligner::default();
    let mut out = 0u64;
    for piece in rest.chunks(step) {
        a.feed(piece, |ts| {
            assert_eq!(ts.len() % PACKET_LEN, 0);
            assert!(ts.chunks(PACKET_LEN).all(|p| p[0] == SYNC_BYTE));
            out += ts.len() as u64;
        });
    }
    assert!(out + a.dropped <= rest.len() as u64);
});
