//! Property tests: arbitrary bytes never panic the TS parsers, and their accounting holds.
//! These are the CI-level stand-in for the cargo-fuzz targets in `fuzz/`.

use proptest::prelude::*;

use super::analyzer::TsAnalyzer;
use super::chunk::Chunker;
use super::packet::{PACKET_LEN, Packet, SYNC_BYTE};
use super::psi::{Section, SectionAssembler};
use super::ring::CHUNK_BYTES;

/// Bytes that look like TS often enough to reach the deep branches: packets with a real sync
/// byte and random everything else, sometimes shifted by garbage.
fn ts_like() -> impl Strategy<Value = Vec<u8>> {
    let packet = prop::collection::vec(any::<u8>(), PACKET_LEN).prop_map(|mut p| {
        p[0] = SYNC_BYTE;
        // Keep PIDs in a small set so CC and PSI state builds up.
        p[1] &= 0xE0;
        p[2] %= 4;
        p
    });
    let garbage = prop::collection::vec(any::<u8>(), 0..40);
    prop::collection::vec((packet, garbage, any::<bool>()), 0..20).prop_map(|parts| {
        let mut out = Vec::new();
        for (p, g, with_garbage) in parts {
            out.extend_from_slice(&p);
            if with_garbage {
                out.extend_from_slice(&g);
            }
        }
        out
    })
}

fn any_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![prop::collection::vec(any::<u8>(), 0..3000), ts_like()]
}

fn check_chunker(data: &[u8]) {
    let mut c = Chunker::new();
    let mut emitted = 0usize;
    let mut cursor = 0usize;
    c.split(data, |chunk| {
        assert!(!chunk.is_empty() && chunk.len() <= CHUNK_BYTES);
        assert_eq!(chunk.len() % PACKET_LEN, 0);
        for p in chunk.chunks(PACKET_LEN) {
            assert_eq!(p[0], SYNC_BYTE);
        }
        // Chunks are slices of the input, in order, never overlapping.
        let off = chunk.as_ptr() as usize - data.as_ptr() as usize;
        assert!(off >= cursor);
        cursor = off + chunk.len();
        emitted += chunk.len();
    });
    assert_eq!(emitted as u64 + c.discarded_bytes(), data.len() as u64);
    assert!(c.resyncs() <= c.discarded_bytes());
    assert_eq!(c.resyncs() == 0, c.discarded_bytes() == 0);
}

proptest! {
    #[test]
    fn packet_views_never_panic(mut bytes in prop::collection::vec(any::<u8>(), PACKET_LEN)) {
        bytes[0] = SYNC_BYTE;
        let p = Packet::new(&bytes).unwrap();
        let _ = (p.pid(), p.pusi(), p.cc(), p.scrambling(), p.transport_error());
        let _ = p.adaptation_control();
        if let Ok(Some(af)) = p.adaptation() {
            let _ = (af.discontinuity(), af.random_access(), af.pcr(), af.opcr());
            prop_assert!(af.bytes().len() <= 183);
        }
        if let Some(payload) = p.payload() {
            prop_assert!(p.has_payload());
            prop_assert!(!payload.is_empty() && payload.len() <= 184);
        }
    }

    #[test]
    fn packet_new_any_length(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        let ok = bytes.len() == PACKET_LEN && bytes[0] == SYNC_BYTE;
        prop_assert_eq!(Packet::new(&bytes).is_some(), ok);
    }

    #[test]
    fn chunker_accounts_for_every_byte(data in any_bytes()) {
        check_chunker(&data);
    }

    #[test]
    fn analyzer_never_panics(data in any_bytes(), split in 0usize..20) {
        let mut a = TsAnalyzer::new();
        let whole = data.len() / PACKET_LEN * PACKET_LEN;
        let cut = (split * PACKET_LEN).min(whole);
        a.feed(&data[..cut]);
        a.feed(&data[cut..]);
        let info = a.info();
        prop_assert_eq!(info.packets, (data.len() / PACKET_LEN) as u64);
        prop_assert!(info.cc_errors <= info.packets);
        prop_assert!(info.programs.len() <= super::analyzer::MAX_PROGRAMS);
    }

    #[test]
    fn section_parsers_never_panic(data in prop::collection::vec(any::<u8>(), 0..1100), pusi: bool) {
        let _ = Section::new(&data).map(|s| {
            let _ = s.pat_entries().count();
            if let Ok(p) = s.pmt() {
                let _ = p.streams().count();
            }
        });
        let mut asm = SectionAssembler::new();
        for part in data.chunks(184) {
            let _ = asm.push(part, pusi, |s| assert!(s.len() >= 3 && s.len() <= 1024));
        }
    }
}
