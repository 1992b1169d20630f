//! An SRT datagram from anyone who can reach a listener port, through the vendored (patched)
//! srt-protocol parser: never a panic, and a packet it accepts serializes to bytes that
//! parse again. (Not to an equal packet: string extensions are NUL-padded words, so a string
//! ending in NUL bytes cannot survive the trip, in libsrt either.)
#![no_main]

use libfuzzer_sys::fuzz_target;
use srt_protocol::packet::Packet;

fuzz_target!(|data: &[u8]| {
    for ipv6 in [false, true] {
        let Ok(p) = Packet::parse(&mut &data[..], ipv6) else {
            continue;
        };
        let mut out = Vec::new();
        p.serialize(&mut out);
        if let Err(e) = Packet::parse(&mut &out[..], ipv6) {
            panic!("{p:?} serialized to bytes that do not parse: {e:?}");
        }
    }
});
