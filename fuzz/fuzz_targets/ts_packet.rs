//! TS packet views and the analyzer (continuity, PSI reassembly, PAT/PMT) on arbitrary bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use quoll::ts::analyzer::TsAnalyzer;
use quoll::ts::packet::{PACKET_LEN, Packet};

fuzz_target!(|data: &[u8]| {
    for raw in data.chunks(PACKET_LEN) {
        if let Some(p) = Packet::new(raw) {
            let _ = (
                p.pid(),
                p.pusi(),
                p.cc(),
                p.scrambling(),
                p.transport_error(),
            );
            let _ = (p.adaptation_control(), p.has_payload());
            if let Ok(Some(af)) = p.adaptation() {
                let _ = (af.discontinuity(), af.random_access(), af.pcr(), af.opcr());
            }
            if let Some(payload) = p.payload() {
                assert!(!payload.is_empty() && payload.len() <= 184);
            }
        }
    }
    let mut a = TsAnalyzer::new();
    a.feed(data);
    let info = a.info();
    assert_eq!(info.packets, (data.len() / PACKET_LEN) as u64);
});
