//! The event log decoder on arbitrary bytes: a whole segment file, and the same bytes behind
//! a valid header. It must never panic, and whatever it accepts is in strict sequence order
//! and inside the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use quoll::events::codec;

fuzz_target!(|data: &[u8]| {
    let _ = codec::parse_cursor(data);
    let _ = codec::decode_payload(data);
    if let Ok(seg) = codec::read_segment(data) {
        check(&seg, data.len());
    }
    let mut framed = codec::segment_header(1).to_vec();
    framed.extend_from_slice(data);
    let seg = codec::read_segment(&framed).expect("valid header");
    check(&seg, framed.len());
});

fn check(seg: &codec::SegmentRead, len: usize) {
    assert!(seg.scan.valid_len <= len);
    for w in seg.scan.frames.windows(2) {
        assert!(w[0].seq < w[1].seq);
        assert!(w[0].offset + w[0].len <= w[1].offset);
    }
    for w in seg.records.windows(2) {
        assert!(w[0].seq < w[1].seq);
    }
}
