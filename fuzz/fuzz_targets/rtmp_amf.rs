//! AMF0 on arbitrary bytes: decoding never panics, and what decodes re-encodes to bytes that
//! decode to the same values.
#![no_main]

use libfuzzer_sys::fuzz_target;
use quoll::rtmp::amf;

fuzz_target!(|data: &[u8]| {
    if let Ok(values) = amf::decode_all(data) {
        let again = amf::encode_all(&values);
        let back = amf::decode_all(&again).expect("re-encoded AMF decodes");
        // NaN != NaN: compare the encodings instead of the values.
        assert_eq!(amf::encode_all(&back), again);
    }
});
