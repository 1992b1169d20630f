//! The datagram chunker on arbitrary bytes: whole packets out, every byte accounted for.
#![no_main]

use libfuzzer_sys::fuzz_target;
use quoll::ts::chunk::Chunker;
use quoll::ts::packet::{PACKET_LEN, SYNC_BYTE};
use quoll::ts::ring::CHUNK_BYTES;

fuzz_target!(|data: &[u8]| {
    let mut c = Chunker::new();
    let mut emitted = 0usize;
    c.split(data, |chunk| {
        assert!(!chunk.is_empty() && chunk.len() <= CHUNK_BYTES);
        assert_eq!(chunk.len() % PACKET_LEN, 0);
        assert!(chunk.chunks(PACKET_LEN).all(|p| p[0] == SYNC_BYTE));
        emitted += chunk.len();
    });
    assert_eq!(emitted as u64 + c.discarded_bytes(), data.len() as u64);
});
