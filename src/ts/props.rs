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

proptest! {
    /// Any interleaving of pushes and reads: every reader sees chunks in push order with no
    /// repeats, and after draining, packets read + packets reported lagged == packets written.
    #[test]
    fn ring_accounting_is_exact(
        capacity in 2usize..9,
        ops in prop::collection::vec((0u8..4, 1usize..8), 0..300),
    ) {
        use super::ring::{Read, Ring};
        let mut ring = Ring::new(capacity);
        let mut readers: Vec<_> = (0..3).map(|_| (ring.reader(), 0u64, 0u64, None::<u32>)).collect();
        let mut seq = 0u32;
        let chunk = |seq: u32, n: usize| {
            let mut v = vec![0u8; n * PACKET_LEN];
            for p in v.chunks_mut(PACKET_LEN) {
                p[0] = SYNC_BYTE;
                p[1..5].copy_from_slice(&seq.to_be_bytes());
            }
            v
        };
        let read_one = |ring: &Ring, r: &mut (super::ring::Reader, u64, u64, Option<u32>)| {
            match ring.read(&mut r.0) {
                Read::Chunk(c) => {
                    let s = u32::from_be_bytes([c.data[1], c.data[2], c.data[3], c.data[4]]);
                    assert!(r.3.is_none_or(|last| s > last), "out of order or repeated");
                    r.3 = Some(s);
                    r.1 += c.packets() as u64;
                    true
                }
                Read::Lagged(n) => {
                    assert!(n > 0);
                    r.2 += n;
                    true
                }
                Read::Empty => false,
            }
        };
        for (op, n) in ops {
            if op == 3 {
                ring.push(&chunk(seq, n), 0);
                seq += 1;
            } else {
                read_one(&ring, &mut readers[usize::from(op)]);
            }
        }
        for r in &mut readers {
            while read_one(&ring, r) {}
            prop_assert_eq!(r.1 + r.2, ring.packets_written());
        }
    }
}
