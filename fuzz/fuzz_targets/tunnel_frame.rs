//! The tunnel's framed JSON (relay control stream, peer notifications, direct-mode
//! authentication, TCP stream header) on arbitrary bytes fed in arbitrary pieces: the frame
//! decoder never panics and never holds more than one maximal frame plus a read, and any
//! message that decodes encodes back to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use quoll::tunnel::wire::{self, FrameDecoder, MAX_FRAME, PeerMsg, RelayMsg, StreamHeader};

/// A decoded message, encoded as a frame and cut out again, decodes to itself.
macro_rules! round_trip {
    ($m:expr, $t:ty) => {{
        let mut out = Vec::new();
        wire::encode(&$m, &mut out);
        let mut d = FrameDecoder::new();
        d.push(&out);
        let frame = d.next_frame().unwrap().unwrap();
        assert_eq!(wire::decode::<$t>(&frame).unwrap(), $m);
    }};
}

fuzz_target!(|data: &[u8]| {
    // The first byte picks the piece size, as reads from a stream would cut it.
    let step = usize::from(data.first().copied().unwrap_or(1)).max(1);
    let mut d = FrameDecoder::new();
    for piece in data.get(1..).unwrap_or(&[]).chunks(step) {
        d.push(piece);
        assert!(d.buffered() <= MAX_FRAME + 4 + step);
        loop {
            match d.next_frame() {
                Ok(Some(frame)) => {
                    assert!(frame.len() <= MAX_FRAME);
                    check(&frame);
                }
                Ok(None) => break,
                Err(_) => {
                    assert_eq!(d.buffered(), 0, "nothing kept after an oversized header");
                    return;
                }
            }
        }
    }
    // The whole input as one frame body, too (most inputs are not a valid frame stream).
    check(data);
});

fn check(frame: &[u8]) {
    if let Ok(m) = wire::decode::<RelayMsg>(frame) {
        round_trip!(m, RelayMsg);
    }
    if let Ok(m) = wire::decode::<PeerMsg>(frame) {
        round_trip!(m, PeerMsg);
    }
    if let Ok(h) = wire::decode::<StreamHeader>(frame) {
        round_trip!(h, StreamHeader);
    }
}
