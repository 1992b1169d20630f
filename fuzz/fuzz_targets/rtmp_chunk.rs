//! The RTMP chunk reader on arbitrary bytes, fed in arbitrary pieces: never panics, never
//! holds more than its budget, and every message it returns is within the length limit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use quoll::rtmp::chunk::{ChunkReader, Limits};

fuzz_target!(|data: &[u8]| {
    let limits = Limits {
        max_message: 64 * 1024,
        budget: 128 * 1024,
    };
    let mut r = ChunkReader::new(limits);
    // The first byte picks the piece size, as reads from a socket would cut the stream.
    let step = usize::from(data.first().copied().unwrap_or(1)).max(1);
    let mut buf = Vec::new();
    for piece in data.get(1..).unwrap_or(&[]).chunks(step) {
        buf.extend_from_slice(piece);
        loop {
            match r.read(&buf) {
                Ok(Some((n, msg))) => {
                    assert!(n > 0 && n <= buf.len());
                    buf.drain(..n);
                    if let Some(m) = msg {
                        assert!(m.payload.len() <= limits.max_message as usize);
                    }
                }
                Ok(None) => break,
                Err(_) => return,
            }
            assert!(r.held() <= limits.budget);
        }
    }
});
