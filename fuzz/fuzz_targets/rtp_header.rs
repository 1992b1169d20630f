//! The RTP header parser on arbitrary datagrams: the payload it reports lies inside them.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(h) = quoll::rtp::parse(data) {
        assert!(h.payload_offset + h.payload_len <= data.len());
    }
});
