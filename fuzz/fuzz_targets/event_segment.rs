//! The event log decoder on arbitrary bytes: a whole segment file (damaged header or not),
//! and the same bytes behind a valid header. It must never panic, whatever it accepts is in
//! strict sequence order, inside the input and below the next segment, and what it counts
//! as lost never overlaps what it read.
//!
//! Then recovery itself: the bytes as the oldest segment file with a sound one after it, and
//! alone. Whatever that file holds (a damaged header, garbage, frames with any sequence
//! numbers), every record of the sound segment is still read, in order, and appending and
//! recovering again works.
#![no_main]

use libfuzzer_sys::fuzz_target;
use quoll::events::codec;
use quoll::events::log::{Log, LogOptions};
use quoll::events::storage::{MemStorage, Storage};
use quoll::events::{Event, Record};

/// Base of the segment the fuzzer's bytes go into (the seeds' base), and of the sound one
/// after it.
const FUZZ_BASE: u64 = 1;
const AFTER_BASE: u64 = 1000;

fuzz_target!(|data: &[u8]| {
    let _ = codec::parse_cursor(data);
    let _ = codec::parse_loss_ack(data);
    let _ = codec::decode_payload(data);
    for next in [None, Some(FUZZ_BASE + 3), Some(AFTER_BASE)] {
        let seg = codec::read_segment(FUZZ_BASE, data, next);
        check(&seg, data.len(), next);
    }
    let mut framed = codec::segment_header(FUZZ_BASE).to_vec();
    framed.extend_from_slice(data);
    let seg = codec::read_segment(FUZZ_BASE, &framed, Some(AFTER_BASE));
    assert!(seg.examined.readable, "a sound header is read");
    check(&seg, framed.len(), Some(AFTER_BASE));

    recover(data);
});

fn check(seg: &codec::SegmentRead, len: usize, next: Option<u64>) {
    let ex = &seg.examined;
    assert!(ex.scan.valid_len <= len);
    for w in ex.scan.frames.windows(2) {
        assert!(w[0].seq < w[1].seq);
        assert!(w[0].offset + w[0].len <= w[1].offset);
    }
    for w in seg.records.windows(2) {
        assert!(w[0].seq < w[1].seq);
    }
    if let Some(next) = next {
        assert!(ex.scan.frames.iter().all(|f| f.seq < next));
    }
    for w in ex.lost.windows(2) {
        assert!(w[0].1 < w[1].0, "lost ranges in order: {:?}", ex.lost);
    }
    for &(lo, hi) in &ex.lost {
        assert!(lo <= hi);
        assert!(ex.scan.frames.iter().all(|f| f.seq < lo || f.seq > hi));
    }
}

fn rec(seq: u64) -> Record {
    Record {
        seq,
        raised_at_ms: seq,
        event: Event::config_updated(),
    }
}

/// A sound segment holding `seqs`.
fn sound(s: &mut MemStorage, base: u64, seqs: std::ops::RangeInclusive<u64>) {
    let name = codec::segment_name(base);
    let mut bytes = codec::segment_header(base).to_vec();
    for q in seqs {
        codec::encode_record(&rec(q), &mut bytes);
    }
    put(s, &name, &bytes);
}

fn put(s: &mut MemStorage, name: &str, bytes: &[u8]) {
    s.create(name).unwrap();
    s.append(name, bytes).unwrap();
    s.sync(name).unwrap();
    s.sync_dir().unwrap();
}

fn recover(data: &[u8]) {
    let opts = LogOptions::with_budget(1 << 20);
    for with_after in [true, false] {
        let mut s = MemStorage::new();
        put(&mut s, &codec::segment_name(FUZZ_BASE), data);
        if with_after {
            sound(&mut s, AFTER_BASE, AFTER_BASE..=AFTER_BASE + 4);
        }
        let (mut log, r) = Log::open(s.clone(), opts).expect("open");
        let got = log.read_after(0, usize::MAX).expect("read");
        for w in got.windows(2) {
            assert!(w[0].seq < w[1].seq);
        }
        if with_after {
            for q in AFTER_BASE..=AFTER_BASE + 4 {
                assert!(
                    got.iter().any(|g| g.seq == q && *g == rec(q)),
                    "sound record {q} lost"
                );
            }
        }
        assert!(r.next_seq > got.last().map_or(0, |g| g.seq));
        // Appending goes on above everything, and a second recovery agrees.
        log.append(&[rec(r.next_seq)]).expect("append");
        log.commit().expect("commit");
        drop(log);
        let (mut log, _) = Log::open(s, opts).expect("reopen");
        let again = log.read_after(0, usize::MAX).expect("read");
        assert_eq!(again.last().map(|g| g.seq), Some(r.next_seq));
    }
}
