//! Tests of the record format, the log's recovery on a crashing disk, and the writer.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use serde_json::json;

use super::codec::{self, HEADER_LEN};
use super::log::{Log, LogOptions};
use super::storage::{MemStorage, Storage};
use super::writer::WriterOptions;
use super::*;

fn rec(seq: u64) -> Record {
    Record {
        seq,
        raised_at_ms: 1_775_131_200_000 + seq,
        event: Event::output_added("flow-1", &format!("out-{seq}")).with_detail("n", seq),
    }
}

fn big() -> LogOptions {
    LogOptions::with_budget(16 << 20)
}

fn open(s: &MemStorage, opts: LogOptions) -> (Log<MemStorage>, log::Recovery) {
    Log::open(s.clone(), opts).expect("open")
}

fn all(log: &mut Log<MemStorage>) -> Vec<Record> {
    log.read_after(0, usize::MAX).unwrap()
}

fn segments(s: &MemStorage) -> Vec<String> {
    let mut names = s.clone().list().unwrap();
    names.retain(|n| codec::parse_segment_name(n).is_some());
    names.sort();
    names
}

/// A disk holding the records `seqs`, committed, and acknowledged up to `acked` (0: none).
fn disk_with(opts: LogOptions, seqs: impl IntoIterator<Item = u64>, acked: u64) -> MemStorage {
    let s = MemStorage::new();
    let (mut log, _) = open(&s, opts);
    log.append(&seqs.into_iter().map(rec).collect::<Vec<_>>())
        .unwrap();
    log.commit().unwrap();
    if acked > 0 {
        log.set_acked(acked).unwrap();
    }
    s
}

/// A budget of four 1 KiB segments: rolls and drops come quickly.
fn tiny_budget() -> LogOptions {
    LogOptions {
        budget_bytes: 4096,
        segment_bytes: 1024,
    }
}

// ---- the record and the manager message --------------------------------------------------

#[test]
fn record_round_trips_through_a_frame() {
    let mut r = rec(7);
    r.event
        .details
        .insert("nested".into(), json!({"a": [1, 2.5, null, "x"]}));
    let mut buf = Vec::new();
    let n = codec::encode_record(&r, &mut buf);
    assert_eq!(n, buf.len());
    let (payload, len) = codec::frame_at(&buf).unwrap();
    assert_eq!(len, n);
    assert_eq!(codec::payload_seq(payload).unwrap(), 7);
    assert_eq!(codec::decode_payload(payload).unwrap(), r);
    // No details, no flow: still exact.
    let plain = Record {
        seq: 1,
        raised_at_ms: 0,
        event: Event::config_updated(),
    };
    buf.clear();
    codec::encode_record(&plain, &mut buf);
    assert_eq!(
        codec::decode_payload(codec::frame_at(&buf).unwrap().0).unwrap(),
        plain
    );
}

#[test]
fn every_flipped_bit_of_a_frame_is_caught() {
    let mut buf = Vec::new();
    codec::encode_record(&rec(3), &mut buf);
    for i in 0..buf.len() * 8 {
        let mut b = buf.clone();
        b[i / 8] ^= 1 << (i % 8);
        assert!(codec::frame_at(&b).is_err(), "bit {i} not caught");
    }
}

/// What goes to the manager is `manager::protocol::event` (the one encoder; the events
/// module keeps none of its own): checked here against the spec with a record of the log.
#[test]
fn manager_message_follows_the_spec() {
    let manager_message = |r: &Record| crate::manager::protocol::event(r).to_value();
    let r = Record {
        seq: 42,
        raised_at_ms: 1_775_131_200_123,
        event: Event::srt_input_disconnected("flow-1").with_detail("peer", "10.0.0.1:9000"),
    };
    assert_eq!(
        manager_message(&r),
        json!({
            "type": "event",
            "timestamp": "2026-04-02T12:00:00.123Z",
            "payload": {
                "severity": "warning",
                "category": "srt",
                "message": "SRT input disconnected, reconnecting",
                "flow_id": "flow-1",
                "details": {"peer": "10.0.0.1:9000", "seq": 42, "raised_at": "2026-04-02T12:00:00.123Z"}
            }
        })
    );
    let m = manager_message(&Record {
        seq: 1,
        raised_at_ms: 0,
        event: Event::manager_connected(),
    });
    assert!(m["payload"].get("flow_id").is_none());
    assert_eq!(
        m["payload"]["details"],
        json!({"seq": 1, "raised_at": "1970-01-01T00:00:00.000Z"})
    );
}

#[test]
fn headers_and_names() {
    assert_eq!(
        codec::parse_segment_header(&codec::segment_header(99)),
        Ok(99)
    );
    assert_eq!(codec::parse_cursor(&codec::cursor_bytes(5)), Ok(5));
    let mut newer = codec::segment_header(1);
    newer[4] = 2;
    let crc = crc32fast::hash(&newer[..16]);
    newer[16..].copy_from_slice(&crc.to_le_bytes());
    assert_eq!(
        codec::parse_segment_header(&newer),
        Err(codec::DecodeError::UnsupportedVersion(2))
    );
    assert_eq!(
        codec::parse_segment_name(&codec::segment_name(12)),
        Some(12)
    );
    assert_eq!(codec::parse_segment_name("seg-12.qev"), None);
    assert_eq!(codec::parse_segment_name("cursor"), None);
}

proptest! {
    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = codec::read_segment(1, &bytes, None);
        let _ = codec::read_segment(1, &bytes, Some(3));
        let _ = codec::examine_segment(u64::MAX, &bytes, 0, None);
        let _ = codec::examine_segment(0, &bytes, u64::MAX, Some(u64::MAX));
        let _ = codec::scan_frames(&bytes, 0, 0);
        let _ = codec::decode_payload(&bytes);
        let _ = codec::parse_cursor(&bytes);
        if let Ok((p, _)) = codec::frame_at(&bytes) {
            let _ = codec::decode_payload(p);
        }
        // And behind a valid header, so the frame scanner sees it too.
        let mut seg = codec::segment_header(1).to_vec();
        seg.extend_from_slice(&bytes);
        let read = codec::read_segment(1, &seg, Some(1000));
        prop_assert!(read.examined.scan.valid_len <= seg.len());
        prop_assert!(read.examined.readable);
    }

    #[test]
    fn damaged_valid_segments_never_panic(seed in any::<u64>(), flips in 1usize..8) {
        let mut seg = codec::segment_header(1).to_vec();
        for s in 1..20 {
            codec::encode_record(&rec(s), &mut seg);
        }
        let mut rng = storage::XorShift(seed | 1);
        for _ in 0..flips {
            let i = HEADER_LEN + (rng.next() as usize % (seg.len() - HEADER_LEN));
            seg[i] ^= (rng.next() as u8) | 1;
        }
        let read = codec::read_segment(1, &seg, Some(20));
        // Whatever survives is genuine and in order.
        let mut last = 0;
        for r in &read.records {
            prop_assert!(r.seq > last);
            prop_assert_eq!(r, &rec(r.seq));
            last = r.seq;
        }
        // And what is missing is counted, never more than was there.
        let lost = read.examined.lost_count();
        prop_assert!(read.records.len() as u64 + lost <= 19);
        for (lo, hi) in &read.examined.lost {
            prop_assert!(read.records.iter().all(|r| r.seq < *lo || r.seq > *hi));
        }
    }
}

// ---- recovery --------------------------------------------------------------------------------

#[test]
fn recovery_cuts_a_torn_tail_and_continues() {
    let s = MemStorage::new();
    let (mut log, rec0) = open(&s, big());
    assert_eq!(rec0.next_seq, 1);
    log.append(&[rec(1), rec(2)]).unwrap();
    log.commit().unwrap();
    drop(log);
    // Half a frame at the end: a crash mid-append.
    let name = segments(&s).pop().unwrap();
    let mut half = Vec::new();
    codec::encode_record(&rec(3), &mut half);
    s.clone().append(&name, &half[..half.len() / 2]).unwrap();
    s.clone().sync(&name).unwrap();

    let (mut log, r) = open(&s, big());
    assert_eq!((r.records, r.corrupt, r.next_seq), (2, 0, 3));
    assert_eq!(r.truncated_bytes, (half.len() / 2) as u64);
    log.append(&[rec(3)]).unwrap();
    log.commit().unwrap();
    assert_eq!(all(&mut log), vec![rec(1), rec(2), rec(3)]);
    // Appended to the same, now sound segment.
    assert_eq!(segments(&s).len(), 1);
}

#[test]
fn recovery_skips_and_counts_a_corrupt_record_in_the_middle() {
    let s = disk_with(big(), 1..=3, 0);
    let name = segments(&s).pop().unwrap();
    // Damage record 2's payload.
    let mut one = Vec::new();
    let len1 = codec::encode_record(&rec(1), &mut one);
    s.corrupt(&name, HEADER_LEN + len1 + 12, 0xFF);

    let (mut log, r) = open(&s, big());
    assert_eq!((r.records, r.corrupt, r.next_seq), (2, 1, 4));
    assert_eq!(all(&mut log), vec![rec(1), rec(3)]);
}

#[test]
fn cursor_survives_reopen_and_delivery_resumes_there() {
    let s = disk_with(big(), 1..=5, 3);
    s.crash(1);
    let (mut log, r) = open(&s, big());
    assert_eq!((r.acked, r.pending), (3, 2));
    assert_eq!(log.read_after(r.acked, 10).unwrap(), vec![rec(4), rec(5)]);
    assert_eq!(log.read_after(r.acked, 1).unwrap(), vec![rec(4)]);
}

#[test]
fn budget_drops_the_oldest_segment_and_says_how_many_were_undelivered() {
    let s = MemStorage::new();
    let opts = tiny_budget();
    let (mut log, _) = open(&s, opts);
    let mut dropped = Vec::new();
    for seq in 1..=200 {
        if seq == 10 {
            log.set_acked(5).unwrap();
        }
        if let Some(d) = log.append(&[rec(seq)]).unwrap() {
            dropped.push(d);
        }
        log.commit().unwrap();
        assert!(
            log.total_bytes() <= opts.budget_bytes,
            "over budget at {seq}"
        );
    }
    assert!(!dropped.is_empty());
    // The first segment went with records 1..=k, 5 of them delivered.
    let first = dropped[0];
    assert_eq!(first.first_seq, 6);
    let left = all(&mut log);
    let total: u64 = dropped.iter().map(|d| d.count).sum();
    assert_eq!(total + 5 + left.len() as u64, 200);
    assert_eq!(left.last().unwrap().seq, 200);
    assert!(s.total_bytes() <= opts.budget_bytes + 100); // + the cursor file
}

/// A header of format `version` (CRC fixed up), as a newer binary would write it.
fn header_of_version(magic_cursor: bool, version: u16, value: u64) -> [u8; 20] {
    let mut h = if magic_cursor {
        codec::cursor_bytes(value)
    } else {
        codec::segment_header(value)
    };
    h[4..6].copy_from_slice(&version.to_le_bytes());
    let crc = crc32fast::hash(&h[..16]);
    h[16..].copy_from_slice(&crc.to_le_bytes());
    h
}

/// The frames of records `seqs`, one after the other.
fn encoded(seqs: impl IntoIterator<Item = u64>) -> Vec<u8> {
    let mut body = Vec::new();
    for seq in seqs {
        codec::encode_record(&rec(seq), &mut body);
    }
    body
}

/// Put a segment of a newer format at `base` with `body` after its header.
fn newer_segment(s: &MemStorage, base: u64, body: &[u8]) -> String {
    let mut st = s.clone();
    let name = codec::segment_name(base);
    st.create(&name).unwrap();
    st.append(&name, &header_of_version(false, 9, base))
        .unwrap();
    st.append(&name, body).unwrap();
    st.sync(&name).unwrap();
    st.sync_dir().unwrap();
    name
}

#[test]
fn a_segment_of_a_newer_format_is_kept_and_skipped() {
    let s = MemStorage::new();
    newer_segment(&s, 1, &[0xAB; 100]);
    let (mut log, r) = open(&s, big());
    assert_eq!((r.skipped_segments, r.corrupt, r.records), (1, 0, 0));
    assert_eq!(r.newer_segments, 1);
    log.append(&[rec(r.next_seq)]).unwrap();
    log.commit().unwrap();
    assert_eq!(segments(&s).len(), 2, "the newer segment is left alone");
    assert_eq!(all(&mut log).len(), 1);
}

/// A rolled-back binary numbers its events above every sequence number the newer segment
/// can hold, not from its base: a newer binary's v2 records 1..=50 (whatever their bytes
/// look like) are never given a second meaning.
#[test]
fn a_rolled_back_binary_numbers_above_a_newer_segment() {
    let s = MemStorage::new();
    // What the newer binary wrote: 50 records, dense from base 1, 9 bytes or more each.
    let name = newer_segment(&s, 1, &encoded(1..=50));
    let len = s.clone().read(&name).unwrap().len() as u64;
    let (mut log, r) = open(&s, big());
    assert!(
        r.next_seq > 50,
        "next seq {} reuses the newer segment's",
        r.next_seq
    );
    assert_eq!(r.next_seq, codec::max_seq_in(1, len) + 1);
    log.append(&[rec(r.next_seq)]).unwrap();
    log.commit().unwrap();
    // Our segment sorts after the newer one.
    let segs = segments(&s);
    assert_eq!(segs, [name, codec::segment_name(r.next_seq)]);
    // And a restart keeps counting from there.
    drop(log);
    let (_, r2) = open(&s, big());
    assert_eq!(r2.next_seq, r.next_seq + 1);
}

/// A damaged header in the middle of the log hides nothing: its records are found by their
/// own CRCs and sequence numbers, nothing is counted as lost, and numbering goes on from
/// the last record.
#[test]
fn a_damaged_header_in_the_middle_hides_nothing() {
    let opts = small_segments();
    let s = disk_with(opts, 1..=60, 0);
    let segs = segments(&s);
    assert!(segs.len() >= 3, "{segs:?}");
    // Several bytes of the header at once: magic, version and CRC (past rebuilding).
    for at in [0, 4, 17] {
        s.corrupt(&segs[1], at, 0x5A);
    }
    let (mut log, r) = open(&s, opts);
    assert_eq!(
        (r.skipped_segments, r.damaged_headers, r.lost, r.corrupt),
        (0, 1, 0, 0)
    );
    assert_eq!(all(&mut log), (1..=60).map(rec).collect::<Vec<_>>());
    assert_eq!(r.next_seq, 61);
    drop(log);
    // Through the writer: nothing to report, health stays `ok`, numbering goes on.
    let mut o = fast();
    o.log = opts;
    let (events, _) = mem_events(&s, o);
    assert!(events.snapshot().is_empty(), "{:?}", events.snapshot());
    assert_eq!(events.unacked_loss(), None);
    assert_eq!(events.raise(Event::config_updated()), 61);
}

/// Small segments: records 1..=60 fill three or more.
fn small_segments() -> LogOptions {
    LogOptions {
        budget_bytes: 1 << 20,
        segment_bytes: 2048,
    }
}

/// A disk holding `files` (name, bytes), all durable.
fn disk_of(files: &[(String, Vec<u8>)]) -> MemStorage {
    let s = MemStorage::new();
    let mut st = s.clone();
    for (name, bytes) in files {
        st.create(name).unwrap();
        st.append(name, bytes).unwrap();
        st.sync(name).unwrap();
    }
    st.sync_dir().unwrap();
    s
}

/// What is found after flipping `bit` of segment `seg`'s header in `files` (records
/// 1..=60, acknowledged up to 2), optionally damaging the third record of that segment too;
/// then appending one more record and reopening. Returns the recovery of the first reopen
/// and every record read after the second.
fn with_header_bit_flipped(
    files: &[(String, Vec<u8>)],
    seg: usize,
    bit: usize,
    damage_a_record: bool,
) -> (log::Recovery, Vec<Record>) {
    let s = disk_of(files);
    let name = &files[seg].0;
    s.corrupt(name, bit / 8, 1 << (bit % 8));
    if damage_a_record {
        // The third record's payload: its frame is two records in.
        let base = codec::parse_segment_name(name).unwrap();
        let mut two = Vec::new();
        codec::encode_record(&rec(base), &mut two);
        codec::encode_record(&rec(base + 1), &mut two);
        let at = HEADER_LEN + two.len() + codec::FRAME_OVERHEAD + 3;
        assert!(at < files[seg].1.len());
        s.corrupt(name, at, 0x10);
    }
    let (mut log, r) = open(&s, small_segments());
    log.append(&[rec(r.next_seq)]).unwrap();
    log.commit().unwrap();
    drop(log);
    let (mut log, _) = open(&s, small_segments());
    (r, all(&mut log))
}

/// Every bit of a segment header, flipped one at a time, in the first, a middle and the
/// last segment: no intact record is lost (before and after appending more), the loss
/// reported is exactly 0, and exactly 1 when one record of that segment is damaged too.
#[test]
fn every_flipped_bit_of_a_segment_header_hides_nothing() {
    let s = disk_with(small_segments(), 1..=60, 2);
    let files: Vec<(String, Vec<u8>)> = {
        let mut st = s.clone();
        let mut names = st.list().unwrap();
        names.sort();
        names
            .into_iter()
            .map(|n| {
                let b = st.read(&n).unwrap();
                (n, b)
            })
            .collect()
    };
    let segs: Vec<usize> = (0..files.len())
        .filter(|&i| codec::parse_segment_name(&files[i].0).is_some())
        .collect();
    assert!(segs.len() >= 3, "{files:?}");
    for seg in [segs[0], segs[segs.len() / 2], segs[segs.len() - 1]] {
        let base = codec::parse_segment_name(&files[seg].0).unwrap();
        for bit in 0..HEADER_LEN * 8 {
            let at = format!("{}, header bit {bit}", files[seg].0);
            let (r, got) = with_header_bit_flipped(&files, seg, bit, false);
            assert_eq!(r.damaged_headers, 1, "{at}");
            assert_eq!(
                (r.lost, r.lost_delivered, r.skipped_segments, r.corrupt),
                (0, 0, 0, 0),
                "{at}"
            );
            assert_eq!(r.next_seq, 61, "{at}");
            assert_eq!(got, (1..=61).map(rec).collect::<Vec<_>>(), "{at}");

            let (r, got) = with_header_bit_flipped(&files, seg, bit, true);
            let third = base + 2;
            assert_eq!((r.lost, r.lost_delivered), (1, 0), "{at}");
            assert_eq!(r.lost_ranges, [(third, third)], "{at}");
            let want: Vec<Record> = (1..=61).filter(|&q| q != third).map(rec).collect();
            assert_eq!(got, want, "{at}");
        }
    }
}

/// Every single flipped bit of a header is rebuilt to what was written, from the file
/// name and the CRC: ours is read, a newer one stays a newer one (kept unread).
#[test]
fn a_header_with_one_flipped_bit_is_rebuilt_exactly() {
    for (header, want) in [
        (
            codec::segment_header(77),
            codec::HeaderCheck::Rebuilt { version: 1 },
        ),
        (
            header_of_version(false, 9, 77),
            codec::HeaderCheck::Rebuilt { version: 9 },
        ),
    ] {
        for bit in 0..HEADER_LEN * 8 {
            let mut h = header;
            h[bit / 8] ^= 1 << (bit % 8);
            assert_eq!(codec::check_segment_header(77, &h), want, "bit {bit}");
        }
    }
    assert_eq!(
        codec::check_segment_header(77, &codec::segment_header(77)),
        codec::HeaderCheck::Sound { base: 77 }
    );
    assert_eq!(
        codec::check_segment_header(77, &header_of_version(false, 9, 77)),
        codec::HeaderCheck::Newer { version: 9 }
    );
    assert_eq!(
        codec::check_segment_header(77, &[0u8; 20]),
        codec::HeaderCheck::Damaged
    );
    assert_eq!(
        codec::check_segment_header(77, b"QEVS"),
        codec::HeaderCheck::Damaged
    );
}

/// The shortcut through the CRC's linearity finds what the plain search finds.
#[test]
fn the_version_search_matches_a_plain_search() {
    let plain = |base: u64, crc: u32| {
        (1..=u16::MAX).find(|&v| {
            let h = header_of_version(false, v, base);
            u32::from_le_bytes(h[16..20].try_into().unwrap()) == crc
        })
    };
    for (base, version) in [(1u64, 1u16), (77, 9), (u64::MAX, 0xFFFF), (1 << 40, 0x8001)] {
        let h = header_of_version(false, version, base);
        let crc = u32::from_le_bytes(h[16..20].try_into().unwrap());
        assert_eq!(codec::version_with_crc(base, crc), Some(version));
        for other in [crc ^ 1, crc.rotate_left(7), 0] {
            assert_eq!(codec::version_with_crc(base, other), plain(base, other));
        }
    }
}

/// A newer binary's segment whose header lost a bit is still a newer segment: kept, not
/// read, nothing counted as lost, numbering above it.
#[test]
fn a_newer_segment_with_a_damaged_header_stays_unread() {
    let s = MemStorage::new();
    let name = newer_segment(&s, 1, &encoded(1..=20));
    s.corrupt(&name, 5, 0x04);
    let (_, r) = open(&s, big());
    assert_eq!(
        (r.newer_segments, r.skipped_segments, r.lost, r.records),
        (1, 1, 0, 0)
    );
    let len = s.clone().read(&name).unwrap().len() as u64;
    assert_eq!(r.next_seq, codec::max_seq_in(1, len) + 1);
}

/// Loss is counted in records, exactly, from the sequence numbers around the damage: a
/// stretch of several records, a first record, the end of an older segment (its length
/// fields still count it, across a gap the writer left), while the torn end of the newest
/// segment is not a loss.
#[test]
fn records_lost_to_damage_are_counted_exactly() {
    let s = MemStorage::new();
    let opts = small_segments();
    let (mut log, _) = open(&s, opts);
    log.append(&(1..=40).map(rec).collect::<Vec<_>>()).unwrap();
    // A gap (a queue overflow): the next segment starts at 50.
    log.append(&(50..=90).map(rec).collect::<Vec<_>>()).unwrap();
    log.commit().unwrap();
    drop(log);
    let segs = segments(&s);
    let frames = |name: &str| {
        let bytes = s.clone().read(name).unwrap();
        codec::scan_frames(&bytes, HEADER_LEN, 0).frames
    };
    let gap_seg = segs
        .iter()
        .position(|n| codec::parse_segment_name(n) == Some(50))
        .expect("a segment starts at the gap");
    let before_gap = &segs[gap_seg - 1];
    let f = frames(before_gap);
    assert_eq!(f.last().unwrap().seq, 40);
    // The last record before the gap.
    s.corrupt(before_gap, f.last().unwrap().offset + 9, 0x01);
    // Three records in a row in the first segment, from its second record on.
    let f0 = frames(&segs[0]);
    for f in &f0[1..=3] {
        s.corrupt(&segs[0], f.offset + 10, 0x80);
    }
    // The first record of the segment after the gap.
    let fg = frames(&segs[gap_seg]);
    s.corrupt(&segs[gap_seg], fg[0].offset + 2, 0x02);
    // The newest segment's last record: a torn write, not a loss.
    let newest = segs.last().unwrap();
    let fl = frames(newest);
    let torn = fl.last().unwrap().seq;
    s.corrupt(newest, fl.last().unwrap().offset + 12, 0x20);

    let (mut log, r) = open(&s, opts);
    let want = vec![(2, 4), (40, 40), (50, 50)];
    assert_eq!(r.lost_ranges, want);
    assert_eq!((r.lost, r.lost_delivered, r.lost_inexact), (5, 0, false));
    assert!(r.truncated_bytes > 0);
    let gone = |q: u64| want.iter().any(|&(lo, hi)| q >= lo && q <= hi) || q == torn;
    let expect: Vec<Record> = (1..=40)
        .chain(50..=90)
        .filter(|&q| !gone(q))
        .map(rec)
        .collect();
    assert_eq!(all(&mut log), expect);
    // The console counts the same (the torn end is cut by now).
    let (_, _, lost) = log::read_all(&mut s.clone()).unwrap();
    assert_eq!(lost, 5);
}

/// Loss at or below the delivery cursor is history (the manager has those events): it is
/// counted apart and not reported as an alarm.
#[test]
fn loss_the_manager_already_has_is_only_history() {
    let s = disk_with(big(), 1..=10, 5);
    let name = segments(&s).pop().unwrap();
    let f = codec::scan_frames(&s.clone().read(&name).unwrap(), HEADER_LEN, 0).frames;
    s.corrupt(&name, f[2].offset + 9, 0x01); // record 3: delivered
    s.corrupt(&name, f[6].offset + 9, 0x01); // record 7: not yet
    let (_, r) = open(&s, big());
    assert_eq!((r.lost, r.lost_delivered), (1, 1));
    assert_eq!(r.lost_ranges, [(7, 7)]);
}

/// A segment damaged past reading (header and every record) is kept unread, like a newer
/// one; its records still count as lost: exactly, when their length fields chain through
/// the file, else every number it may have held (and the report says it is not exact).
#[test]
fn a_segment_damaged_past_reading_counts_what_it_held() {
    for keep_lengths in [true, false] {
        let opts = small_segments();
        let s = disk_with(opts, 1..=60, 0);
        let segs = segments(&s);
        let name = &segs[1];
        let base = codec::parse_segment_name(name).unwrap();
        let next = codec::parse_segment_name(&segs[2]).unwrap();
        let bytes = s.clone().read(name).unwrap();
        let f = codec::scan_frames(&bytes, HEADER_LEN, 0).frames;
        // The header's magic and CRC, and every frame's CRC (or its length field).
        s.corrupt(name, 0, 0xFF);
        s.corrupt(name, 18, 0xFF);
        for fr in &f {
            let at = if keep_lengths {
                fr.offset + 5
            } else {
                fr.offset + 1
            };
            s.corrupt(name, at, 0x01);
        }
        let (mut log, r) = open(&s, opts);
        assert_eq!(r.skipped_segments, 1);
        assert_eq!(r.lost_ranges, [(base, next - 1)]);
        assert_eq!(r.lost, next - base);
        assert_eq!(r.lost_inexact, !keep_lengths);
        let got: Vec<u64> = all(&mut log).iter().map(|r| r.seq).collect();
        let want: Vec<u64> = (1..=60).filter(|q| *q < base || *q >= next).collect();
        assert_eq!(got, want);
        assert!(r.next_seq > 60);
    }
}

/// The writer keeps sequence numbers dense inside a segment (a gap starts a new one), so
/// `max_seq_in` bounds every segment this build writes too.
#[test]
fn sequence_numbers_are_dense_inside_every_segment() {
    let s = MemStorage::new();
    let (mut log, _) = open(&s, big());
    log.append(&[rec(1), rec(2), rec(3)]).unwrap();
    log.append(&[rec(10), rec(11)]).unwrap(); // a gap (e.g. queue overflow)
    log.append(&[rec(12), rec(20)]).unwrap();
    log.commit().unwrap();
    assert_eq!(
        segments(&s),
        [1, 10, 20].map(codec::segment_name).to_vec(),
        "a gap starts a segment"
    );
    for name in segments(&s) {
        let bytes = s.clone().read(&name).unwrap();
        let base = codec::parse_segment_name(&name).unwrap();
        let seg = codec::read_segment(base, &bytes, None);
        let base = seg.examined.base_seq;
        let seqs: Vec<u64> = seg.records.iter().map(|r| r.seq).collect();
        let dense: Vec<u64> = (base..base + seqs.len() as u64).collect();
        assert_eq!(seqs, dense, "{name}");
        assert!(*seqs.last().unwrap() <= codec::max_seq_in(base, bytes.len() as u64));
    }
    assert_eq!(
        all(&mut log).iter().map(|r| r.seq).collect::<Vec<_>>(),
        [1, 2, 3, 10, 11, 12, 20]
    );
}

/// The byte budget never removes a segment this build cannot read: it stays (outside the
/// budget) while the readable ones rotate.
#[test]
fn the_budget_never_removes_a_segment_it_cannot_read() {
    let s = MemStorage::new();
    let newer = newer_segment(&s, 1, &[0xAB; 1500]);
    let newer_len = s.clone().read(&newer).unwrap().len() as u64;
    let opts = tiny_budget();
    let (mut log, r) = open(&s, opts);
    let mut dropped = 0;
    for seq in r.next_seq..r.next_seq + 200 {
        if let Some(d) = log.append(&[rec(seq)]).unwrap() {
            dropped += d.count;
        }
        log.commit().unwrap();
        assert!(log.total_bytes() <= opts.budget_bytes);
    }
    assert!(dropped > 0, "readable segments rotated");
    assert!(
        segments(&s).contains(&newer),
        "the newer segment was removed"
    );
    assert_eq!(s.clone().read(&newer).unwrap().len() as u64, newer_len);
    assert!(s.total_bytes() <= opts.budget_bytes + newer_len);
}

/// A cursor of a newer format is kept as it is: acknowledgements are held in memory and
/// delivery starts from the oldest record after every restart (duplicates, never skips).
#[test]
fn a_cursor_of_a_newer_format_is_never_overwritten() {
    let s = MemStorage::new();
    let (mut log, _) = open(&s, big());
    log.append(&(1..=5).map(rec).collect::<Vec<_>>()).unwrap();
    log.commit().unwrap();
    drop(log);
    let mut st = s.clone();
    let newer = header_of_version(true, 2, 3);
    st.create(codec::CURSOR_FILE).unwrap();
    st.append(codec::CURSOR_FILE, &newer).unwrap();
    st.sync(codec::CURSOR_FILE).unwrap();
    st.sync_dir().unwrap();

    let (mut log, r) = open(&s, big());
    assert_eq!((r.newer_cursor, r.acked, r.pending), (Some(2), 0, 5));
    log.set_acked(4).unwrap();
    assert_eq!(log.acked(), 4);
    assert_eq!(log.read_after(log.acked(), 10).unwrap(), vec![rec(5)]);
    drop(log);
    assert_eq!(
        s.clone().read(codec::CURSOR_FILE).unwrap(),
        newer.to_vec(),
        "the newer cursor was overwritten"
    );
    let (_, r) = open(&s, big());
    assert_eq!((r.newer_cursor, r.acked), (Some(2), 0));
}

/// Batches are split across segments: no segment outgrows its size and the budget holds
/// after every append, however large the batch.
#[test]
fn batches_are_split_across_segments_and_the_budget_holds() {
    let s = MemStorage::new();
    let opts = LogOptions {
        budget_bytes: 8192,
        segment_bytes: 2048,
    };
    let (mut log, _) = open(&s, opts);
    let mut next = 1;
    let mut dropped = 0;
    for n in [1u64, 60, 3, 100, 25, 7, 80, 200, 1, 45] {
        let batch: Vec<Record> = (next..next + n).map(rec).collect();
        next += n;
        if let Some(d) = log.append(&batch).unwrap() {
            dropped += d.count;
        }
        log.commit().unwrap();
        assert!(
            log.total_bytes() <= opts.budget_bytes,
            "over budget after {n}"
        );
        assert!(
            s.total_bytes() <= opts.budget_bytes,
            "files over budget after {n}"
        );
        for name in segments(&s) {
            let len = s.clone().read(&name).unwrap().len() as u64;
            assert!(len <= opts.segment_bytes, "{name}: {len} bytes");
        }
    }
    // Nothing lost but what the budget dropped (and said so), all in order.
    let left = all(&mut log);
    assert_eq!(left.len() as u64 + dropped, next - 1);
    assert_eq!(left.last().unwrap().seq, next - 1);
    assert!(left.windows(2).all(|w| w[1].seq == w[0].seq + 1));
}

// ---- the crash property --------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Op {
    /// Append this many records.
    Append(u8),
    Commit,
    Ack,
    /// Power loss: every storage operation after the next `n` fails; the run goes on until
    /// one fails, then the disk crashes (seeded) and the log is reopened.
    Crash {
        after: u16,
        seed: u64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1u8..40).prop_map(Op::Append),
        3 => Just(Op::Commit),
        1 => Just(Op::Ack),
        2 => (0u16..12, any::<u64>()).prop_map(|(after, seed)| Op::Crash { after, seed }),
    ]
}

/// Cases of the crash property: fewer under qemu-user, which runs it ~25x slower.
fn crash_cases() -> u32 {
    if std::env::var_os("QUOLL_RUNNER").is_some() {
        64
    } else {
        256
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: crash_cases(), ..ProptestConfig::default() })]

    /// After any crash, every record whose durability was confirmed (a `commit` returned
    /// `Ok` after it was appended) is present, in order, and nothing else is there but
    /// records that were really appended, byte for byte. Small segments and a small budget
    /// make rolls and drops part of the run; dropped ranges leave the model too.
    #[test]
    fn confirmed_records_survive_any_crash(ops in proptest::collection::vec(op(), 1..60)) {
        let s = MemStorage::new();
        let opts = LogOptions { budget_bytes: 12 * 1024, segment_bytes: 2048 };
        let (mut log, r) = open(&s, opts);
        let mut next = r.next_seq;
        // Every record ever appended, by seq (a seq reused after a crash replaces it).
        let mut appended: BTreeMap<u64, Record> = BTreeMap::new();
        let mut unconfirmed: Vec<u64> = Vec::new();
        let mut confirmed: VecDeque<u64> = VecDeque::new();
        let mut failing = false;
        for op in ops {
            match op {
                Op::Append(n) if !failing => {
                    let batch: Vec<Record> = (next..next + u64::from(n)).map(rec).collect();
                    next += u64::from(n);
                    match log.append(&batch) {
                        Ok(_) => {}
                        Err(_) => failing = true,
                    }
                    for r in batch {
                        unconfirmed.push(r.seq);
                        appended.insert(r.seq, r);
                    }
                }
                Op::Commit if !failing => {
                    if log.commit().is_ok() {
                        confirmed.extend(unconfirmed.drain(..));
                    } else {
                        failing = true;
                    }
                }
                Op::Ack if !failing => {
                    let to = confirmed.back().copied().unwrap_or(0);
                    if log.set_acked(to).is_err() {
                        failing = true;
                    }
                }
                Op::Crash { after, seed } => {
                    s.fail_after(u64::from(after));
                    failing = true;
                    let _ = seed;
                }
                _ => {}
            }
            if failing && (s.has_failed() || matches!(op, Op::Crash { .. })) {
                // Run on a little so the crash lands mid-operation, then lose power.
                let seed = match op { Op::Crash { seed, .. } => seed, _ => next };
                let batch: Vec<Record> = (next..next + 5).map(rec).collect();
                // Even a failed append may have written a part (a batch split across
                // segments fails at the roll after its first part).
                let _ = log.append(&batch);
                for r in batch {
                    appended.insert(r.seq, r);
                }
                let _ = log.commit();
                let evicted = log.evicted_through();
                confirmed.retain(|&q| q > evicted);
                drop(log);
                s.crash(seed);
                unconfirmed.clear();
                let (l, r) = open(&s, opts);
                log = l;
                failing = false;
                let got = all(&mut log);
                // In order, nothing invented, nothing corrupted.
                let mut last = 0;
                for g in &got {
                    prop_assert!(g.seq > last, "out of order: {} after {}", g.seq, last);
                    prop_assert_eq!(Some(g), appended.get(&g.seq), "invented or changed record");
                    last = g.seq;
                }
                // Every confirmed record present (the budget's drops left the model above).
                let present: std::collections::BTreeSet<u64> = got.iter().map(|g| g.seq).collect();
                for q in &confirmed {
                    prop_assert!(present.contains(q), "confirmed record {} lost", q);
                }
                prop_assert!(r.next_seq > last);
                // A reused seq after the crash is a new record: forget what was lost.
                next = r.next_seq;
                appended.retain(|&k, _| k < next);
                prop_assert_eq!(r.corrupt, 0, "a crash is not corruption");
            }
        }
    }
}

// ---- the writer --------------------------------------------------------------------------------

fn mem_events(s: &MemStorage, opts: WriterOptions) -> (Events, Option<log::Recovery>) {
    let lo = opts.log;
    let s2 = s.clone();
    Events::open_with(
        move || Log::open(s2.clone(), lo),
        LogConfig { writer: opts },
    )
}

/// Events over `s` with one record (seq 1) durable.
fn one_durable(s: &MemStorage) -> Events {
    let (events, _) = mem_events(s, fast());
    block_on(async {
        events.raise(Event::config_updated());
        events.flushed().await;
    });
    events
}

fn fast() -> WriterOptions {
    let mut o = WriterOptions::new(16 << 20, Duration::from_millis(5));
    o.retry_interval = Duration::from_millis(20);
    o
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// Poll `cond` until true or the deadline passes (a bounded wait, not a sleep).
fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::yield_now();
    }
}

#[test]
fn raised_events_become_durable_with_group_commit() {
    let s = MemStorage::new();
    let (events, _) = mem_events(&s, WriterOptions::new(16 << 20, Duration::from_millis(20)));
    block_on(async {
        for i in 0..2000 {
            events.raise(Event::flow_started(&format!("f{i}")));
        }
        events.flushed().await;
    });
    assert_eq!(events.status().durable_seq, 2000);
    // Group commit: far fewer syncs than events.
    assert!(s.syncs() < 50, "{} syncs for 2000 events", s.syncs());
    events.close();
    let (mut log, r) = open(&s, big());
    assert_eq!(r.next_seq, 2001);
    let got = all(&mut log);
    assert_eq!(got.len(), 2000);
    assert_eq!(got[1999].event.message, "Flow 'f1999' started");
}

#[test]
fn close_flushes_what_was_raised() {
    let s = MemStorage::new();
    let (events, _) = mem_events(
        &s,
        WriterOptions::new(16 << 20, Duration::from_millis(1000)),
    );
    events.raise(Event::config_updated());
    events.close();
    let (_, r) = open(&s, big());
    assert_eq!(r.records, 1);
}

#[test]
fn sequence_numbers_increase_across_restarts() {
    let s = MemStorage::new();
    let (events, _) = mem_events(&s, fast());
    assert_eq!(events.raise(Event::config_updated()), 1);
    assert_eq!(events.raise(Event::config_updated()), 2);
    events.close();
    let (events, r) = mem_events(&s, fast());
    assert_eq!(r.unwrap().next_seq, 3);
    assert_eq!(events.raise(Event::config_updated()), 3);
}

#[test]
fn delivery_reads_from_the_cursor_and_ack_persists() {
    let s = MemStorage::new();
    let (events, _) = mem_events(&s, fast());
    block_on(async {
        for _ in 0..10 {
            events.raise(Event::config_updated());
        }
        events.flushed().await;
        let b = events.read_batch(4).await;
        assert_eq!(b.iter().map(|r| r.seq).collect::<Vec<_>>(), [1, 2, 3, 4]);
        // Not acknowledged: the same batch again (at least once, same seqs).
        assert_eq!(events.read_batch(4).await, b);
        events.ack(4);
    });
    eventually("cursor written", || events.status().acked_seq == 4);
    block_on(async {
        let b = events.read_batch(100).await;
        assert_eq!(b.first().map(|r| r.seq), Some(5));
        assert_eq!(b.len(), 6);
    });
    events.close();
    // Restart: delivery resumes after the cursor.
    let (events, r) = mem_events(&s, fast());
    assert_eq!(r.unwrap().acked, 4);
    block_on(async {
        let b = events.read_batch(100).await;
        assert_eq!(
            b.iter().map(|r| r.seq).collect::<Vec<_>>(),
            (5..=10).collect::<Vec<_>>()
        );
    });
}

/// Read batches the way the manager feed does: from the highest sequence number fetched
/// so far (not from the acknowledgement), acknowledging each batch.
fn deliver(events: &Events, fetched: &mut u64, seen: &mut Vec<u64>) -> Vec<Record> {
    let b = block_on(events.read_after(*fetched, 100));
    if let Some(last) = b.last() {
        *fetched = last.seq;
        events.ack(last.seq);
    }
    seen.extend(b.iter().map(|r| r.seq));
    b
}

#[test]
fn full_disk_degrades_to_memory_and_recovers() {
    let s = MemStorage::new();
    let events = one_durable(&s);
    // Seq 1 is on disk and has not been delivered yet.
    s.set_full(true);
    let during = events.raise(Event::flow_started("during"));
    assert_eq!(during, 2);
    eventually("degraded", || events.is_degraded());
    assert!(!events.status().durable);
    // Delivery goes on in order and complete: the disk's seq 1 first, then the memory
    // view (seq 2 and the degraded warning, which joins within one commit delay).
    let (mut fetched, mut seen) = (0, Vec::new());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let b = deliver(&events, &mut fetched, &mut seen);
        if b.iter().any(|r| {
            r.event
                .message
                .starts_with("Event log degraded to memory only")
        }) {
            break;
        }
        assert!(Instant::now() < deadline, "no degraded warning in {seen:?}");
    }
    assert_eq!(seen, [1, 2, 3], "delivered while degraded");
    // Acknowledging while degraded moves delivery on (the cursor file follows later).
    assert!(block_on(events.read_batch(100)).is_empty());
    let after = events.raise(Event::flow_started("still degraded"));
    s.set_full(false);
    eventually("recovered", || !events.is_degraded());
    block_on(events.flushed());
    // Everything after what was delivered comes next, nothing twice, nothing skipped.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !seen.contains(&(after + 1)) {
        deliver(&events, &mut fetched, &mut seen);
        assert!(
            Instant::now() < deadline,
            "recovery warning never delivered: {seen:?}"
        );
    }
    let want: Vec<u64> = (1..=after + 1).collect();
    assert_eq!(seen, want, "delivered across degrade and recovery");
    eventually("cursor written", || events.status().acked_seq == after + 1);
    events.close();
    let (mut log, r) = open(&s, big());
    assert_eq!(r.acked, after + 1);
    let got = all(&mut log);
    let msgs: Vec<&str> = got.iter().map(|r| r.event.message.as_str()).collect();
    assert!(msgs.contains(&"Flow 'during' started"), "{msgs:?}");
    assert!(
        msgs.iter().any(|m| m.starts_with("Event log degraded")),
        "{msgs:?}"
    );
    assert!(msgs.contains(&"Event log writable again"), "{msgs:?}");
    let seqs: Vec<u64> = got.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, want);
}

/// While degraded, if the disk cannot even be read, delivery waits: serving the memory view
/// would let an acknowledgement move the cursor over what the disk holds.
#[test]
fn delivery_waits_while_the_disk_cannot_be_read() {
    let s = MemStorage::new();
    let events = one_durable(&s);
    s.fail_after(0); // every call fails, reads too
    events.raise(Event::flow_started("during"));
    eventually("degraded", || events.is_degraded());
    for _ in 0..20 {
        assert_eq!(
            block_on(events.read_after(0, 100)),
            vec![],
            "served past the disk"
        );
    }
    s.crash(5); // the disk is back (seq 1 was synced; nothing else was written)
    eventually("recovered", || !events.is_degraded());
    block_on(events.flushed());
    let (mut fetched, mut seen) = (0, Vec::new());
    deliver(&events, &mut fetched, &mut seen);
    assert_eq!(&seen[..2], [1, 2]);
    assert!(seen.windows(2).all(|w| w[1] == w[0] + 1), "{seen:?}");
}

/// Recovery's syncs (cutting a torn tail, syncing the last segment) run on the writer
/// thread: `Events::open` is called on the runtime thread, which must never `fdatasync`.
#[test]
fn recovery_never_syncs_on_the_callers_thread() {
    use std::sync::{Arc, Mutex};
    use std::thread::ThreadId;
    // A log with a torn tail: recovery cuts it and syncs.
    let s = MemStorage::new();
    let (mut log, _) = open(&s, big());
    log.append(&[rec(1), rec(2)]).unwrap();
    log.commit().unwrap();
    drop(log);
    let name = segments(&s).pop().unwrap();
    s.clone().append(&name, &[0x5A; 7]).unwrap();
    let seen: Arc<Mutex<Vec<ThreadId>>> = Arc::default();
    let note = seen.clone();
    let w = storage::Tapped {
        inner: s.clone(),
        tap: storage::OnCall(move |_| note.lock().unwrap().push(std::thread::current().id())),
    };
    let opts = fast();
    let (events, r) = Events::open_with(
        move || Log::open(w.clone(), opts.log),
        LogConfig { writer: opts },
    );
    let r = r.expect("recovered");
    assert_eq!((r.truncated_bytes, r.next_seq), (7, 3));
    let syncs = seen.lock().unwrap().clone();
    assert!(!syncs.is_empty(), "recovery synced nothing");
    let here = std::thread::current().id();
    assert!(
        !syncs.contains(&here),
        "recovery synced on the caller's thread"
    );
    events.close();
}

/// The byte budget's warning goes out through the writer: the dropped range is reported in
/// the log itself, with the count the status shows.
#[test]
fn the_budget_warning_goes_out_through_the_writer() {
    let s = MemStorage::new();
    let mut opts = fast();
    opts.log = LogOptions {
        budget_bytes: 8192,
        segment_bytes: 2048,
    };
    let (events, _) = mem_events(&s, opts);
    block_on(async {
        for i in 0..300 {
            events.raise(Event::flow_started(&format!("f{i}")));
            if i % 20 == 0 {
                events.flushed().await; // several batches, several rolls
            }
        }
        events.flushed().await;
    });
    let dropped = events.status().budget_dropped;
    assert!(dropped > 0, "nothing dropped");
    events.close();
    let (mut log, _) = open(&s, opts.log);
    let got = all(&mut log);
    let warnings: Vec<&Record> = got
        .iter()
        .filter(|r| r.event.message.starts_with("Event log full: "))
        .collect();
    assert!(!warnings.is_empty(), "no budget warning in the log");
    // Every event raised is either still in the log or inside a reported range.
    let reported: u64 = warnings
        .iter()
        .map(|w| w.event.details["dropped"].as_u64().unwrap())
        .sum();
    let first_left = got.first().unwrap().seq;
    assert_eq!(
        first_left - 1,
        reported,
        "reported counts cover the dropped head"
    );
    let w = warnings[0];
    assert_eq!(w.event.details["first_seq"], 1);
    assert_eq!(
        w.event.message,
        format!(
            "Event log full: {} oldest events dropped",
            w.event.details["dropped"]
        )
    );
    // Only the earliest warnings can themselves have been dropped by a later roll.
    assert!(reported >= dropped.min(reported));
}

#[test]
fn a_log_that_cannot_open_starts_degraded_and_still_takes_events() {
    let s = MemStorage::new();
    s.fail_after(0);
    let (events, r) = mem_events(&s, fast());
    assert!(r.is_none());
    events.raise(Event::config_updated());
    eventually("degraded", || events.is_degraded());
    s.crash(3); // clears the failure: the disk is back
    eventually("recovered", || !events.is_degraded());
    block_on(events.flushed());
    events.close();
    let (mut log, _) = open(&s, big());
    assert!(
        all(&mut log)
            .iter()
            .any(|r| r.event == Event::config_updated())
    );
}

#[test]
fn queue_overflow_drops_the_oldest_and_says_so() {
    let s = MemStorage::new();
    let mut opts = fast();
    opts.queue_max = 8;
    opts.batch_max = 1000;
    opts.max_commit_delay = Duration::from_millis(1000);
    let (events, _) = mem_events(&s, opts);
    // Twenty raises faster than a 1 s commit delay: twelve must go.
    for i in 0..20 {
        events.raise(Event::flow_started(&format!("f{i}")));
    }
    assert_eq!(events.status().queue_overflow, 12);
    events.close();
    let (mut log, _) = open(&s, big());
    let got = all(&mut log);
    let warn = got
        .iter()
        .find(|r| r.event.category == Category::Storage)
        .expect("an events_dropped warning");
    assert_eq!(warn.event, Event::events_dropped(12, 1, 12));
    assert_eq!(got.len(), 9);
    assert_eq!(got[0].seq, 13);
}

#[test]
fn corrupt_records_at_start_raise_one_event() {
    let s = disk_with(big(), 1..=3, 0);
    let name = segments(&s).pop().unwrap();
    s.corrupt(&name, HEADER_LEN + 10, 0x55);
    let (events, r) = mem_events(&s, fast());
    let r = r.unwrap();
    assert_eq!((r.corrupt, r.lost), (1, 1));
    let snap = events.snapshot();
    assert_eq!(
        snap.last().unwrap().event,
        Event::event_log_corrupt(1, &[(1, 1)], true)
    );
    assert_eq!(snap.last().unwrap().seq, 4);
}

/// A log with records 1..=10 of which 4 and 5 are damaged.
fn log_with_two_lost() -> MemStorage {
    let s = disk_with(big(), 1..=10, 0);
    let name = segments(&s).pop().unwrap();
    let f = codec::scan_frames(&s.clone().read(&name).unwrap(), HEADER_LEN, 0).frames;
    s.corrupt(&name, f[3].offset + 9, 0x01);
    s.corrupt(&name, f[4].offset + 9, 0x01);
    s
}

/// Loss found at start degrades health (`lost_unacked`) until the manager acknowledges the
/// loss report; after that a restart does not report it again (the cursor is past it).
#[test]
fn loss_degrades_health_until_the_manager_acknowledges_the_report() {
    let s = log_with_two_lost();
    let (events, _) = mem_events(&s, fast());
    let report = events.unacked_loss().expect("a loss report");
    assert_eq!(
        report,
        LossReport {
            seq: 11,
            lost: 2,
            through: 5
        }
    );
    let st = events.status();
    assert_eq!((st.lost_unacked, st.loss_seq), (2, Some(11)));
    let warn = &events.snapshot()[0];
    assert_eq!(warn.seq, 11);
    assert_eq!(warn.event, Event::event_log_corrupt(2, &[(4, 5)], true));
    // Delivered in its turn, after the intact records before it.
    block_on(events.flushed());
    let b = block_on(events.read_batch(100));
    assert_eq!(
        b.iter().map(|r| r.seq).collect::<Vec<_>>(),
        [1, 2, 3, 6, 7, 8, 9, 10, 11]
    );
    events.ack(10);
    assert!(
        events.unacked_loss().is_some(),
        "the report is not delivered yet"
    );
    events.ack(11);
    assert_eq!(events.unacked_loss(), None);
    assert_eq!(events.status().lost_unacked, 0);
    eventually("cursor written", || events.status().acked_seq == 11);
    events.close();
    let (events, r) = mem_events(&s, fast());
    let r = r.unwrap();
    assert_eq!((r.lost, r.lost_delivered), (0, 2));
    assert_eq!(events.unacked_loss(), None);
    assert!(events.snapshot().is_empty(), "{:?}", events.snapshot());
}

/// Without a manager, an operator acknowledges the loss (`quoll ctl ack-loss`): health is
/// `ok` at once, the acknowledgement survives a restart (the `loss-ack` file), and the
/// report is still delivered to a manager later, like any event.
#[test]
fn an_operator_acknowledges_the_loss_and_it_stays_acknowledged() {
    let s = log_with_two_lost();
    let (events, _) = mem_events(&s, fast());
    assert_eq!(events.unacked_loss().map(|l| l.lost), Some(2));
    let want = LossReport {
        seq: 11,
        lost: 2,
        through: 5,
    };
    assert_eq!(events.ack_loss(), Some(want));
    assert_eq!(events.unacked_loss(), None);
    assert_eq!(events.ack_loss(), None, "nothing left to acknowledge");
    eventually("loss-ack written", || {
        s.clone()
            .read(codec::LOSS_ACK_FILE)
            .is_ok_and(|b| codec::parse_loss_ack(&b) == Ok(5))
    });
    events.close();
    let (events, r) = mem_events(&s, fast());
    let r = r.unwrap();
    assert_eq!((r.loss_acked, r.lost, r.lost_delivered), (5, 0, 2));
    assert_eq!(events.unacked_loss(), None);
    block_on(events.flushed());
    let b = block_on(events.read_batch(100));
    assert_eq!(b.last().unwrap().seq, 11, "the report is still delivered");
    assert_eq!(b.last().unwrap().event.category, Category::Storage);
    events.close();
    // New damage after the acknowledgement is reported again, and only that.
    let name = segments(&s).pop().unwrap();
    let f = codec::scan_frames(&s.clone().read(&name).unwrap(), HEADER_LEN, 0).frames;
    let eighth = f.iter().find(|f| f.seq == 8).unwrap();
    s.corrupt(&name, eighth.offset + 9, 0x01);
    let (events, _) = mem_events(&s, fast());
    let report = events.unacked_loss().expect("the new loss");
    assert_eq!(report.lost, 1);
    assert_eq!(
        events.snapshot()[0].event,
        Event::event_log_corrupt(1, &[(8, 8)], true)
    );
}

/// Memory-only events have no log to lose records from.
#[test]
fn memory_only_events_never_report_loss() {
    let e = Events::in_memory(3);
    assert_eq!(e.unacked_loss(), None);
    assert_eq!(e.ack_loss(), None);
    assert_eq!(e.status().lost_unacked, 0);
}

/// The real disk: the data directory is made owner-only (0700) and tightened when an older
/// quoll left it 0755, and every file the log writes (segments, cursor, loss-ack) is 0600,
/// as is one that existed with a wider mode.
#[test]
fn the_data_directory_and_its_files_are_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    let root = std::env::temp_dir().join(format!("quoll-modes-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    // Fresh.
    let fresh = root.join("fresh").join("data");
    let (mut log, _) = Log::open(storage::FsStorage::open(&fresh).unwrap(), big()).unwrap();
    log.append(&[rec(1), rec(2)]).unwrap();
    log.commit().unwrap();
    log.set_acked(1).unwrap();
    log.set_loss_acked(2).unwrap();
    drop(log);
    assert_eq!(mode(&fresh), 0o700);
    let names: Vec<_> = std::fs::read_dir(&fresh)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(names.len(), 3, "{names:?}"); // a segment, cursor, loss-ack
    for p in &names {
        assert_eq!(mode(p), 0o600, "{}", p.display());
    }
    // Left open by an older quoll: tightened at open.
    let old = root.join("old");
    std::fs::create_dir_all(&old).unwrap();
    std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o755)).unwrap();
    let seg = old.join(codec::segment_name(1));
    std::fs::write(&seg, codec::segment_header(1)).unwrap();
    std::fs::set_permissions(&seg, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (mut log, _) = Log::open(storage::FsStorage::open(&old).unwrap(), big()).unwrap();
    assert_eq!((mode(&old), mode(&seg)), (0o700, 0o600));
    log.append(&[rec(1)]).unwrap();
    log.commit().unwrap();
    drop(log);
    for e in std::fs::read_dir(&old).unwrap() {
        let p = e.unwrap().path();
        assert_eq!(mode(&p), 0o600, "{}", p.display());
    }
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn memory_only_events_keep_the_api() {
    let e = Events::in_memory(3);
    for _ in 0..5 {
        e.raise(Event::config_updated());
    }
    assert_eq!(
        e.snapshot().iter().map(|r| r.seq).collect::<Vec<_>>(),
        [3, 4, 5]
    );
    assert!(!e.is_degraded());
    block_on(async {
        e.ack(3);
        assert_eq!(
            e.read_batch(10)
                .await
                .iter()
                .map(|r| r.seq)
                .collect::<Vec<_>>(),
            [4, 5]
        );
    });
}

// ---- the writer's decisions: the core on fake time -------------------------------------------

use super::writer::{Action, Now, Outcome, WriterCore};

/// Fake time: it moves only when a test (or a sync of a `CoreRig`'s disk) moves it.
#[derive(Clone)]
struct FakeTime {
    start: Instant,
    offset: std::sync::Arc<std::sync::Mutex<Duration>>,
}

impl FakeTime {
    fn new() -> FakeTime {
        FakeTime {
            start: Instant::now(),
            offset: Default::default(),
        }
    }

    fn now(&self) -> Now {
        let offset = *self.offset.lock().unwrap();
        Now {
            at: self.start + offset,
            unix_ms: 1_775_131_200_000 + offset.as_millis() as u64,
        }
    }

    fn advance(&self, by: Duration) {
        *self.offset.lock().unwrap() += by;
    }

    /// Forward to `to` (never back).
    fn advance_to(&self, to: Instant) {
        self.advance(to.saturating_duration_since(self.now().at));
    }
}

/// A tap by which syncs, of files and of the directory alike, take `.1` of fake time `.0`.
#[derive(Clone)]
struct SyncTime(FakeTime, Duration);

impl storage::Tap for SyncTime {
    fn on(&self, call: storage::Call) {
        if matches!(call, storage::Call::Sync | storage::Call::SyncDir) {
            self.0.advance(self.1);
        }
    }
}

type TimedDisk = storage::Tapped<MemStorage, SyncTime>;
type Open = Box<dyn FnMut() -> Result<(Log<TimedDisk>, log::Recovery), log::LogError>>;

/// The writer core driven by hand on one thread: its actions carried out (`perform`, as the
/// writer thread does) against a log on `MemStorage` whose syncs, of files and of the
/// directory alike, take `sync_time` of fake time. No thread, no real time: every figure
/// comes out the same on any machine.
struct CoreRig {
    core: WriterCore<u32>,
    log: Option<Log<TimedDisk>>,
    open: Open,
    disk: MemStorage,
    time: FakeTime,
    /// Each commit: the highest durable sequence number and when its sync returned.
    durable: Vec<(u64, Instant)>,
    /// Answers to reads, by the test's token.
    replies: Vec<(u32, Vec<Record>)>,
}

impl CoreRig {
    fn new(opts: WriterOptions, sync_time: Duration) -> CoreRig {
        Self::on(MemStorage::new(), opts, sync_time)
    }

    fn on(disk: MemStorage, opts: WriterOptions, sync_time: Duration) -> CoreRig {
        let time = FakeTime::new();
        let timed = storage::Tapped {
            inner: disk.clone(),
            tap: SyncTime(time.clone(), sync_time),
        };
        let lo = opts.log;
        let mut open: Open = Box::new(move || Log::open(timed.clone(), lo));
        let first = open();
        let core = WriterCore::after_open(opts, &first, time.now());
        CoreRig {
            core,
            log: first.ok().map(|(l, _)| l),
            open,
            disk,
            time,
            durable: Vec::new(),
            replies: Vec::new(),
        }
    }

    fn raise(&mut self, event: Event) -> u64 {
        let now = self.time.now();
        self.core.handle_push(event, now.unix_ms, now.at).0
    }

    fn ack(&mut self, seq: u64) {
        self.core.handle_ack(seq, self.time.now().at);
    }

    fn poll(&mut self) -> Option<Action<u32>> {
        self.core.poll_action(self.time.now())
    }

    /// Carry out one action, as the writer thread does; `false` for `Stop`.
    fn execute(&mut self, action: Action<u32>) -> bool {
        let Some(outcome) = writer::perform(&mut self.log, &mut self.open, action) else {
            return false;
        };
        self.answer(outcome);
        true
    }

    /// Hand an outcome to the core (the test may make it up).
    fn answer(&mut self, outcome: Outcome<u32>) {
        let before = self.core.durable_seq();
        if let Some(reply) = self.core.handle(outcome, self.time.now()) {
            self.replies.push(reply);
        }
        if self.core.durable_seq() != before {
            self.durable
                .push((self.core.durable_seq(), self.time.now().at));
        }
    }

    /// Carry out actions until nothing is due; the next deadline.
    fn settle(&mut self) -> Option<Instant> {
        while let Some(action) = self.poll() {
            self.execute(action);
        }
        self.core.poll_timeout()
    }

    /// When `seq` became durable, if it has.
    fn durable_when(&self, seq: u64) -> Option<Instant> {
        self.durable.iter().find(|d| d.0 >= seq).map(|d| d.1)
    }

    /// Step fake time from one deadline to the next until `seq` is durable; the fake time
    /// its commit returned at.
    fn durable_at(&mut self, seq: u64) -> Instant {
        loop {
            let next = self.settle();
            if let Some(at) = self.durable_when(seq) {
                return at;
            }
            let next = next.unwrap_or_else(|| panic!("seq {seq} never became durable"));
            self.time.advance_to(next);
        }
    }

    /// Step to the next deadline and take the action due there.
    fn next_action(&mut self) -> Action<u32> {
        let deadline = self.settle().expect("a deadline");
        self.time.advance_to(deadline);
        self.poll().expect("an action at the deadline")
    }

    /// Shut down: carry out the last cycle.
    fn close(&mut self) {
        self.core.handle_shutdown();
        while let Some(action) = self.poll() {
            if !self.execute(action) {
                return;
            }
        }
        panic!("the writer did not stop");
    }
}

/// A rig whose commit delay is `delay_ms` and whose syncs take `sync_ms`, with the two as
/// durations. Segments of 4 KiB, so two padded events fill one (`padded`).
fn rig(delay_ms: u64, sync_ms: u64) -> (CoreRig, Duration, Duration) {
    let (d, s) = (
        Duration::from_millis(delay_ms),
        Duration::from_millis(sync_ms),
    );
    let mut opts = WriterOptions::new(16 << 20, d);
    opts.log.segment_bytes = 4096;
    let mut rig = CoreRig::new(opts, s);
    assert_eq!(rig.settle(), None, "idle, nothing due");
    (rig, d, s)
}

/// About 1.6 KB encoded: two fill a 4 KiB segment, a third starts a new one.
fn padded(n: u64) -> Event {
    Event::config_updated()
        .with_detail("n", n)
        .with_detail("pad", "x".repeat(1500))
}

/// The documented worst case of the time to durability (docs/events.md): the commit delay
/// or the writer cycle in progress, whichever ends later, then the record's own write.
/// A cycle is at most a batch write with a segment roll (3 syncs: header, directory,
/// commit) and a cursor write (2 syncs); delivery reads come on top (instant here).
fn worst_case(delay: Duration, sync: Duration) -> Duration {
    delay.max(5 * sync) + 3 * sync
}

#[test]
fn time_to_durability_on_an_idle_writer_is_the_delay_plus_one_sync() {
    for (delay, sync) in [(50, 200), (50, 10), (50, 0), (5, 5)] {
        let (mut rig, d, s) = rig(delay, sync);
        // The first event creates the first segment.
        let first = rig.raise(padded(0));
        rig.durable_at(first);
        let t0 = rig.time.now().at;
        let seq = rig.raise(padded(1));
        assert_eq!(rig.durable_at(seq) - t0, d + s, "delay {d:?}, sync {s:?}");
        rig.close();
    }
}

#[test]
fn an_event_raised_during_a_sync_waits_for_it_then_for_its_own() {
    for (delay, sync) in [(50, 200), (50, 10)] {
        let (mut rig, d, s) = rig(delay, sync);
        let first = rig.raise(padded(0));
        rig.durable_at(first);
        // A's batch is taken at its deadline; B arrives while it is being synced.
        let a = rig.raise(Event::config_updated());
        let commit = rig.next_action();
        assert!(matches!(commit, Action::Commit(_)));
        let (deadline, t_b) = (rig.time.now().at, rig.time.now().at);
        let b = rig.raise(Event::config_updated());
        rig.execute(commit);
        assert_eq!(rig.durable_at(a) - deadline, s);
        let took = rig.durable_at(b) - t_b;
        assert_eq!(took, d.max(s) + s, "delay {d:?}, sync {s:?}");
        assert!(took <= worst_case(d, s));
        rig.close();
    }
}

/// The worst case: the record arrives just as a cycle starts that rolls a segment and
/// writes the cursor, and its own batch rolls a segment too.
#[test]
fn the_worst_time_to_durability_is_bounded_as_documented() {
    for (delay, sync) in [(50, 200), (50, 10), (500, 10)] {
        let (mut rig, d, s) = rig(delay, sync);
        // Fill the first segment (two padded events), and let it be delivered.
        let w = rig.raise(padded(0));
        rig.raise(padded(1));
        rig.durable_at(w + 1);
        // A: two padded events (a roll, and a full segment), raised with an acknowledgement
        // due at the same deadline (one cursor write in the same cycle).
        let a = rig.raise(padded(2));
        rig.raise(padded(3));
        rig.ack(w + 1);
        let commit = rig.next_action();
        let deadline = rig.time.now().at;
        // B arrives as A's cycle starts; its own batch rolls a segment again.
        let t_b = rig.time.now().at;
        let b = rig.raise(padded(4));
        rig.execute(commit);
        assert_eq!(
            rig.durable_at(a + 1) - deadline,
            3 * s,
            "A: roll and commit"
        );
        let took = rig.durable_at(b) - t_b;
        assert_eq!(took, worst_case(d, s), "delay {d:?}, sync {s:?}");
        assert_eq!(rig.core.counters().acked, w + 1);
        rig.close();
    }
}

/// A delivery read answers at once but does not cut the batch short: the queue is committed
/// at its deadline, however often the manager link reads (it reads after every commit).
#[test]
fn reads_do_not_cut_group_commit_short() {
    let (mut rig, d, s) = rig(50, 5);
    let first = rig.raise(Event::config_updated());
    rig.durable_at(first);
    let commits = rig.core.counters().syncs;
    let t0 = rig.time.now().at;
    let seq = rig.raise(Event::config_updated());
    for token in 0..10 {
        rig.core.handle_read(first, 10, token);
        rig.settle();
        assert_eq!(rig.replies.pop(), Some((token, vec![])), "not durable yet");
    }
    assert_eq!(rig.core.counters().syncs, commits, "a read forced a commit");
    assert_eq!(rig.durable_at(seq) - t0, d + s);
    assert_eq!(rig.core.counters().syncs, commits + 1);
    rig.close();
}

/// However often the manager acknowledges, the cursor file (two syncs per write) is written
/// at most once per commit window: the first acknowledgement starts the window, the ones
/// inside it ride along.
#[test]
fn the_core_writes_the_cursor_once_per_window() {
    let (mut rig, d, s) = rig(400, 1);
    for _ in 0..50 {
        rig.raise(Event::config_updated());
    }
    rig.durable_at(50);
    let t0 = rig.time.now().at;
    // Fifty acknowledgements 1 ms apart, each followed by a read.
    for seq in 1..=50 {
        rig.ack(seq);
        rig.core.handle_read(seq, 10, seq as u32);
        rig.settle();
        rig.time.advance(Duration::from_millis(1));
    }
    assert_eq!(
        rig.core.counters().cursor_writes,
        0,
        "not before the window ends"
    );
    let next = rig.settle().expect("the cursor deadline");
    assert_eq!(next, t0 + d, "a window after the first acknowledgement");
    rig.time.advance_to(next);
    rig.settle();
    assert_eq!(
        rig.time.now().at - t0,
        d + 2 * s,
        "one window, then its two syncs"
    );
    let c = rig.core.counters();
    assert_eq!((c.cursor_writes, c.acked), (1, 50));
    assert_eq!(rig.settle(), None, "nothing more to write");
}

/// The queue to the writer is bounded: the oldest records go, and one `events_dropped`
/// warning with their range joins the batch.
#[test]
fn the_core_drops_the_oldest_queued_records_and_says_so() {
    let mut opts = WriterOptions::new(16 << 20, Duration::from_millis(1000));
    opts.queue_max = 8;
    let mut rig = CoreRig::new(opts, Duration::ZERO);
    for i in 0..20 {
        rig.raise(Event::flow_started(&format!("f{i}")));
    }
    assert_eq!(rig.core.counters().queue_overflow, 12);
    let Action::Commit(batch) = rig.next_action() else {
        panic!("a commit")
    };
    let seqs: Vec<u64> = batch.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, (13..=21).collect::<Vec<_>>());
    assert_eq!(batch[8].event, Event::events_dropped(12, 1, 12));
    // Stamped with the wall clock the shell handed in, not read by the core.
    assert_eq!(batch[8].raised_at_ms, rig.time.now().unix_ms);
}

/// A disk that fails: one `event_log_degraded` warning, retries every `retry_interval`
/// (quietly), the records kept in memory and served in order, then written when a retry
/// goes through, followed by `event_log_recovered`.
#[test]
fn the_core_degrades_retries_and_recovers() {
    let mut opts = fast();
    opts.retry_interval = Duration::from_secs(5);
    let mut rig = CoreRig::new(opts, Duration::ZERO);
    let one = rig.raise(Event::config_updated());
    rig.durable_at(one);
    rig.disk.set_full(true);
    let two = rig.raise(Event::flow_started("during"));
    let t_fail = rig.time.now().at + opts.max_commit_delay;
    rig.settle();
    rig.time.advance_to(t_fail);
    rig.settle();
    assert!(rig.core.counters().degraded);
    // Reads serve the disk's records, then the memory view (the warning joins it at its
    // own commit deadline).
    rig.time.advance(opts.max_commit_delay);
    rig.core.handle_read(0, 100, 1);
    rig.settle();
    let (_, got) = rig.replies.pop().unwrap();
    let msgs: Vec<&str> = got.iter().map(|r| r.event.message.as_str()).collect();
    assert_eq!(
        &msgs[..2],
        ["Configuration updated", "Flow 'during' started"]
    );
    assert_eq!(got[1].seq, two);
    assert!(
        msgs[2].starts_with("Event log degraded to memory only"),
        "{msgs:?}"
    );
    // Retries are quiet: no second warning however long it fails.
    for retry in 1..=3 {
        let next = rig.settle().expect("a retry");
        assert_eq!(next, t_fail + opts.retry_interval * retry);
        rig.time.advance_to(next);
    }
    rig.settle();
    rig.disk.set_full(false);
    let next = rig.settle().expect("a retry");
    rig.time.advance_to(next);
    rig.settle();
    let next = rig.settle().expect("the recovery warning's commit");
    rig.time.advance_to(next);
    rig.settle();
    assert!(!rig.core.counters().degraded);
    // The process log says it once each way; the failed retries only at debug level.
    let notices = rig.core.take_notices();
    let count = |f: fn(&writer::Notice) -> bool| notices.iter().filter(|n| f(n)).count();
    assert_eq!(count(|n| matches!(n, writer::Notice::Degraded(_))), 1);
    assert_eq!(count(|n| matches!(n, writer::Notice::Writable)), 1);
    assert!(count(|n| matches!(n, writer::Notice::StillFailing(_))) >= 3);
    rig.close();
    let (mut log, _) = open(&rig.disk, big());
    let got = all(&mut log);
    let storage: Vec<&str> = got
        .iter()
        .filter(|r| r.event.category == Category::Storage)
        .map(|r| r.event.message.as_str())
        .collect();
    assert_eq!(storage.len(), 2, "{storage:?}");
    assert!(storage[0].starts_with("Event log degraded to memory only"));
    assert_eq!(storage[1], "Event log writable again");
    let seqs: Vec<u64> = got.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
}

/// A failed commit keeps its records: the storage result the test makes up is all the core
/// knows, and what it kept is served from memory and committed again after a reopen.
#[test]
fn a_failed_commit_keeps_its_records_in_memory() {
    let mut rig = CoreRig::new(fast(), Duration::ZERO);
    let seq = rig.raise(Event::config_updated());
    let Action::Commit(batch) = rig.next_action() else {
        panic!("a commit")
    };
    let failed = log::LogError::Io {
        op: "sync",
        file: "seg".into(),
        source: std::io::Error::other("EIO"),
    };
    rig.answer(Outcome::Committed(batch, Err(failed)));
    assert!(rig.core.counters().degraded);
    assert_eq!(rig.core.durable_seq(), 0);
    let read = rig.core.complete_read(0, 10, writer::DiskRead::NoLog);
    assert_eq!(read.iter().map(|r| r.seq).collect::<Vec<_>>(), [seq]);
    // The retry reopens the (sound) disk and commits what was kept.
    let at = rig.durable_at(seq + 1);
    assert!(at >= rig.time.start + fast().retry_interval);
    assert!(!rig.core.counters().degraded);
}

/// The shutdown commits what is queued and writes the last acknowledgement at once, without
/// waiting for either deadline, then stops.
#[test]
fn the_core_flushes_at_shutdown_without_waiting() {
    let (mut rig, _, _) = rig(1000, 0);
    let one = rig.raise(Event::config_updated());
    rig.durable_at(one);
    let two = rig.raise(Event::config_updated());
    rig.ack(one);
    let t = rig.time.now().at;
    rig.close();
    assert_eq!(rig.time.now().at, t, "no deadline was waited for");
    assert_eq!(rig.durable_when(two), Some(t));
    assert_eq!(rig.core.counters().acked, one);
    assert_eq!(rig.poll().map(|_| ()), None, "stopped");
}

/// Delivery reads start from the segment index, not the top of the file: every window of
/// every position reads the same as a full scan, before and after a restart (the index is
/// rebuilt by recovery), and around a damaged record.
#[test]
fn reads_from_any_position_match_a_full_scan() {
    // Small segments (many index entries per file, many files), and large ones (a read
    // crosses several 128 KiB chunks of one file).
    for (segment_bytes, sizes, step, maxes) in [
        (
            8192,
            vec![1u64, 70, 3, 150, 33, 64, 1, 200],
            1,
            &[1, 7, 32][..],
        ),
        (1 << 20, vec![1500, 1, 999, 2000], 151, &[1, 300, 2000][..]),
    ] {
        let s = MemStorage::new();
        let opts = LogOptions {
            budget_bytes: 16 << 20,
            segment_bytes,
        };
        let (mut log, _) = open(&s, opts);
        let mut next = 1;
        for n in sizes {
            log.append(&(next..next + n).map(rec).collect::<Vec<_>>())
                .unwrap();
            next += n;
        }
        log.commit().unwrap();
        let check = |log: &mut Log<MemStorage>| {
            let everything = all(log);
            // Fewer positions under qemu-user, which runs this ~25x slower.
            let step = if std::env::var_os("QUOLL_RUNNER").is_some() {
                step * 7
            } else {
                step
            };
            for after in (0..next + 1).step_by(step) {
                for &max in maxes {
                    let want: Vec<Record> = everything
                        .iter()
                        .filter(|r| r.seq > after)
                        .take(max)
                        .cloned()
                        .collect();
                    let got = log.read_after(after, max).unwrap();
                    assert!(got == want, "after {after}, max {max}");
                }
            }
            everything
        };
        assert_eq!(check(&mut log).len() as u64, next - 1);
        drop(log);
        // Damage one record in the middle of a segment; reopen (index from recovery).
        let segs = segments(&s);
        let name = segs[segs.len() / 2].clone();
        let len = s.clone().read(&name).unwrap().len();
        s.corrupt(&name, len / 2, 0x40);
        let (mut log, r) = open(&s, opts);
        assert_eq!((r.corrupt, r.lost), (1, 1));
        assert_eq!(check(&mut log).len() as u64, next - 2);
    }
}
