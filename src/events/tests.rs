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

#[test]
fn manager_message_follows_the_spec() {
    let r = Record {
        seq: 42,
        raised_at_ms: 1_775_131_200_123,
        event: Event::srt_input_disconnected("flow-1").with_detail("peer", "10.0.0.1:9000"),
    };
    assert_eq!(
        r.manager_message(),
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
    let m = Record {
        seq: 1,
        raised_at_ms: 0,
        event: Event::manager_connected(),
    }
    .manager_message();
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
        let _ = codec::read_segment(&bytes);
        let _ = codec::scan_frames(&bytes, 0, 0);
        let _ = codec::decode_payload(&bytes);
        let _ = codec::parse_cursor(&bytes);
        if let Ok((p, _)) = codec::frame_at(&bytes) {
            let _ = codec::decode_payload(p);
        }
        // And behind a valid header, so the frame scanner sees it too.
        let mut seg = codec::segment_header(1).to_vec();
        seg.extend_from_slice(&bytes);
        let read = codec::read_segment(&seg).unwrap();
        prop_assert!(read.scan.valid_len <= seg.len());
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
        let read = codec::read_segment(&seg).unwrap();
        // Whatever survives is genuine and in order.
        let mut last = 0;
        for r in &read.records {
            prop_assert!(r.seq > last);
            prop_assert_eq!(r, &rec(r.seq));
            last = r.seq;
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
    let s = MemStorage::new();
    let (mut log, _) = open(&s, big());
    log.append(&[rec(1), rec(2), rec(3)]).unwrap();
    log.commit().unwrap();
    drop(log);
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
    let s = MemStorage::new();
    let (mut log, _) = open(&s, big());
    log.append(&(1..=5).map(rec).collect::<Vec<_>>()).unwrap();
    log.commit().unwrap();
    log.set_acked(3).unwrap();
    drop(log);
    s.crash(1);
    let (mut log, r) = open(&s, big());
    assert_eq!((r.acked, r.pending), (3, 2));
    assert_eq!(log.read_after(r.acked, 10).unwrap(), vec![rec(4), rec(5)]);
    assert_eq!(log.read_after(r.acked, 1).unwrap(), vec![rec(4)]);
}

#[test]
fn budget_drops_the_oldest_segment_and_says_how_many_were_undelivered() {
    let s = MemStorage::new();
    let opts = LogOptions {
        budget_bytes: 4096,
        segment_bytes: 1024,
    };
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

#[test]
fn a_segment_of_a_newer_format_is_kept_and_skipped() {
    let s = MemStorage::new();
    let mut st = s.clone();
    let name = codec::segment_name(1);
    let mut h = codec::segment_header(1);
    h[4] = 9;
    let crc = crc32fast::hash(&h[..16]);
    h[16..].copy_from_slice(&crc.to_le_bytes());
    st.create(&name).unwrap();
    st.append(&name, &h).unwrap();
    st.append(&name, &[0xAB; 100]).unwrap();
    st.sync(&name).unwrap();
    st.sync_dir().unwrap();
    let (mut log, r) = open(&s, big());
    assert_eq!((r.skipped_segments, r.corrupt, r.records), (1, 0, 0));
    log.append(&[rec(r.next_seq)]).unwrap();
    log.commit().unwrap();
    assert_eq!(segments(&s).len(), 2, "the newer segment is left alone");
    assert_eq!(all(&mut log).len(), 1);
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
                if log.append(&batch).is_ok() {
                    for r in batch {
                        appended.insert(r.seq, r);
                    }
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
        Log::open(s.clone(), lo),
        move || Log::open(s2.clone(), lo).map(|(l, _)| l),
        LogConfig { writer: opts },
    )
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

#[test]
fn full_disk_degrades_to_memory_and_recovers() {
    let s = MemStorage::new();
    let (events, _) = mem_events(&s, fast());
    block_on(async {
        events.raise(Event::config_updated());
        events.flushed().await;
    });
    s.set_full(true);
    let lost_seq = events.raise(Event::flow_started("during"));
    eventually("degraded", || events.is_degraded());
    assert!(!events.status().durable);
    // Delivery still sees everything, from memory (the degraded warning joins within one
    // commit delay).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let b = block_on(events.read_batch(100));
        let has_warning = b.iter().any(|r| {
            r.event
                .message
                .starts_with("Event log degraded to memory only")
        });
        if has_warning {
            assert!(b.iter().any(|r| r.seq == lost_seq), "{b:?}");
            break;
        }
        assert!(Instant::now() < deadline, "no degraded warning in {b:?}");
    }
    // Acknowledging while degraded moves delivery on (the cursor file follows later).
    block_on(async {
        events.ack(lost_seq);
        let b = events.read_batch(100).await;
        assert!(b.iter().all(|r| r.seq > lost_seq), "{b:?}");
    });
    s.set_full(false);
    eventually("recovered", || !events.is_degraded());
    block_on(events.flushed());
    eventually("cursor written", || events.status().acked_seq == lost_seq);
    events.close();
    let (mut log, _) = open(&s, big());
    let got = all(&mut log);
    let msgs: Vec<&str> = got.iter().map(|r| r.event.message.as_str()).collect();
    assert!(msgs.contains(&"Flow 'during' started"), "{msgs:?}");
    assert!(
        msgs.iter().any(|m| m.starts_with("Event log degraded")),
        "{msgs:?}"
    );
    assert!(msgs.contains(&"Event log writable again"), "{msgs:?}");
    let seqs: Vec<u64> = got.iter().map(|r| r.seq).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
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
    let s = MemStorage::new();
    let (mut log, _) = open(&s, big());
    log.append(&[rec(1), rec(2), rec(3)]).unwrap();
    log.commit().unwrap();
    drop(log);
    let name = segments(&s).pop().unwrap();
    s.corrupt(&name, HEADER_LEN + 10, 0x55);
    let (events, r) = mem_events(&s, fast());
    assert_eq!(r.unwrap().corrupt, 1);
    let snap = events.snapshot();
    assert_eq!(snap.last().unwrap().event, Event::event_log_corrupt(1));
    assert_eq!(snap.last().unwrap().seq, 4);
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

#[test]
fn a_disk_that_opens_but_cannot_be_written_stays_degraded_without_flapping() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    let s = MemStorage::new();
    let opts = fast();
    let reopens = Arc::new(AtomicU64::new(0));
    let (s2, r2) = (s.clone(), reopens.clone());
    let (events, _) = Events::open_with(
        Log::open(s.clone(), opts.log),
        move || {
            r2.fetch_add(1, Ordering::Relaxed);
            Log::open(s2.clone(), opts.log).map(|(l, _)| l)
        },
        LogConfig { writer: opts },
    );
    // Like a read-only filesystem: listing and reading work, writing fails.
    s.set_full(true);
    events.raise(Event::config_updated());
    eventually("three retries", || reopens.load(Ordering::Relaxed) >= 3);
    assert!(events.is_degraded());
    let batch = block_on(events.read_batch(100));
    let storage: Vec<&str> = batch
        .iter()
        .filter(|r| r.event.category == Category::Storage)
        .map(|r| r.event.message.as_str())
        .collect();
    assert_eq!(storage.len(), 1, "{storage:?}");
    assert!(storage[0].starts_with("Event log degraded to memory only"));
    s.set_full(false);
    eventually("recovered", || !events.is_degraded());
}
