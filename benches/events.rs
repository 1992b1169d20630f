//! The durable event log: `cargo bench --bench events`. Plain `Instant` timing, no harness.
//!
//! 1. Sustained durable appends per second through `Events::raise` with group commit (the
//!    default 50 ms commit delay), on the real filesystem under the target dir (not /tmp,
//!    which may be tmpfs and make `fdatasync` free), while the manager's feed
//!    (`manager::feed::LogFeed`) reads everything and a stand-in for the link acknowledges
//!    it batch by batch, as the manager link does after each successful write.
//! 2. Bytes written per event: the segment bytes over the encoded record size (write
//!    amplification of the format), and, where /proc/self/io exists, what the kernel wrote
//!    to the device for the whole run (page granularity, cursor and metadata included).
//! 3. fdatasync calls per 1000 events, counted at the storage (`Counted`): group commits,
//!    segment rolls and cursor writes (temp file + directory) alike.
//! 4. Recovery (`Log::open`) of a full 16 MiB log, page cache warm, and cold where the
//!    page cache can be dropped (`/proc/sys/vm/drop_caches`, root only).

use std::path::Path;
use std::rc::Rc;
use std::time::{Duration, Instant};

use quoll::events::codec;
use quoll::events::log::{Log, LogOptions};
use quoll::events::storage::{Counted, FsStorage, StorageCounts};
use quoll::events::{Event, Events, Record};
use quoll::manager::feed::{EventFeed, LogFeed};

const EVENTS: u64 = 300_000;
const BUDGET: u64 = 16 << 20;
/// Records the link stand-in takes per acknowledgement (the feed's window is 256).
const LINK_BATCH: usize = 64;

fn event(i: u64) -> Event {
    // A typical mid-sized event: flow id, message with an error, one detail.
    Event::output_start_failed(
        "flow-1",
        &format!("out-{}", i % 8),
        "bind 10.0.0.1:5000: address in use",
    )
    .with_detail("attempt", i)
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok()?.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

fn proc_write_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/io").ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("write_bytes: "))
        .and_then(|v| v.trim().parse().ok())
}

/// Drop the page cache (dirty pages written first). `false` where not allowed.
fn drop_caches() -> bool {
    let synced = std::process::Command::new("sync")
        .status()
        .is_ok_and(|s| s.success());
    synced && std::fs::write("/proc/sys/vm/drop_caches", "3\n").is_ok()
}

fn main() {
    let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("bench-events");
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();

    // ---- 1-3: sustained durable appends, delivered and acknowledged ---------------------
    let dir = root.join("append");
    let storage = quoll::config::StorageConfig {
        event_log_max_bytes: 256 << 20, // no drops during the run
        ..Default::default()
    };
    let config = storage.log_config();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let io_before = proc_write_bytes();
    let counts = std::sync::Arc::<StorageCounts>::default();
    let lo = config.writer.log;
    let (d, c) = (dir.clone(), counts.clone());
    let (events, _) = Events::open_with(
        move || {
            let inner = FsStorage::open(&d).expect("bench dir");
            Log::open(
                Counted {
                    inner,
                    tap: c.clone(),
                },
                lo,
            )
        },
        config,
    );
    let mut durable = events.durable_watch().unwrap();
    let t = Instant::now();
    let mut raise_ns: Vec<u32> = Vec::with_capacity(EVENTS as usize);
    let mut acks = 0u64;
    tokio::task::LocalSet::new().block_on(&rt, async {
        let (feed, fill) = LogFeed::new(events.clone());
        let filler = tokio::task::spawn_local(fill);
        // The link: takes what the feed has, "sends" it, acknowledges the last one.
        let link = {
            let feed: Rc<LogFeed> = feed.clone();
            tokio::task::spawn_local(async move {
                let wake = feed.notify();
                let mut acks = 0u64;
                loop {
                    let batch = feed.pending(LINK_BATCH);
                    match batch.last() {
                        Some(last) => {
                            feed.ack(last.seq);
                            acks += 1;
                            if last.seq >= EVENTS {
                                return acks;
                            }
                            tokio::task::yield_now().await;
                        }
                        None => wake.notified().await,
                    }
                }
            })
        };
        // Raise in steps while keeping at most 12 000 in flight, as a busy node would: the
        // producer never waits for the disk, only this bench's pacing does.
        let mut raised = 0u64;
        while raised < EVENTS {
            let done = *durable.borrow_and_update();
            while raised < EVENTS && raised.saturating_sub(done) < 12_000 {
                let r = Instant::now();
                events.raise(event(raised));
                raise_ns.push(r.elapsed().as_nanos().min(u32::MAX as u128) as u32);
                raised += 1;
            }
            let _ = durable.changed().await;
        }
        events.flushed().await;
        acks = link.await.unwrap();
        filler.abort();
    });
    let elapsed = t.elapsed();
    let status = events.status();
    events.close(); // writes the last cursor
    let io_after = proc_write_bytes();
    assert_eq!(status.durable_seq, EVENTS, "every event durable");

    let mut encoded = 0u64;
    let mut buf = Vec::new();
    for i in 0..EVENTS {
        buf.clear();
        let r = Record {
            seq: i + 1,
            raised_at_ms: 1_775_131_200_000 + i,
            event: event(i),
        };
        encoded += (codec::encode_record(&r, &mut buf) - codec::FRAME_OVERHEAD) as u64;
    }
    let on_disk = dir_bytes(&dir);
    println!(
        "durable appends: {EVENTS} events in {elapsed:.2?} = {:.0} events/s, all delivered \
         and acknowledged ({acks} acks of up to {LINK_BATCH})",
        EVENTS as f64 / elapsed.as_secs_f64()
    );
    raise_ns.sort_unstable();
    let pct = |p: f64| raise_ns[((raise_ns.len() - 1) as f64 * p) as usize];
    println!(
        "  raise latency: p50 {} ns, p99 {} ns, p99.9 {} ns, max {} us (max includes the odd \
         preemption on a shared 2-core box)",
        pct(0.5),
        pct(0.99),
        pct(0.999),
        raise_ns.last().unwrap() / 1000
    );
    println!(
        "  bytes per event: {:.1} on disk for {:.1} encoded (postcard payload) = {:.3}x",
        on_disk as f64 / EVENTS as f64,
        encoded as f64 / EVENTS as f64,
        on_disk as f64 / encoded as f64
    );
    if let (Some(a), Some(b)) = (io_before, io_after) {
        println!(
            "  kernel write_bytes for the run: {:.1} per event = {:.3}x encoded",
            (b - a) as f64 / EVENTS as f64,
            (b - a) as f64 / encoded as f64
        );
    }
    let syncs = StorageCounts::get(&counts.syncs);
    let dir_syncs = StorageCounts::get(&counts.dir_syncs);
    let cursor_writes = StorageCounts::get(&counts.renames);
    let per_k = |n: u64| n as f64 * 1000.0 / EVENTS as f64;
    println!(
        "  fdatasync: {syncs} = {:.2} per 1000 events; with {dir_syncs} directory fsyncs \
         {:.2} per 1000 events ({} group commits, {cursor_writes} cursor writes for {acks} \
         acks, the rest segment rolls)",
        per_k(syncs),
        per_k(syncs + dir_syncs),
        status.commits,
    );

    // ---- 4: recovery of a full 16 MiB log ----------------------------------------------
    let dir = root.join("full");
    // 16 MiB of 2 MiB segments (the default budget's segment size), with room to spare so
    // nothing is dropped while filling: the worst case recovery reads.
    let opts = LogOptions {
        budget_bytes: 4 * BUDGET,
        segment_bytes: LogOptions::with_budget(BUDGET).segment_bytes,
    };
    let (mut log, _) = Log::open(FsStorage::open(&dir).unwrap(), opts).unwrap();
    let mut seq = 1;
    while log.total_bytes() < BUDGET - 1000 * 160 {
        let batch: Vec<Record> = (seq..seq + 1000)
            .map(|s| Record {
                seq: s,
                raised_at_ms: 1_775_131_200_000 + s,
                event: event(s),
            })
            .collect();
        seq += 1000;
        assert!(log.append(&batch).unwrap().is_none());
        log.commit().unwrap();
    }
    let total = log.total_bytes();
    let records = seq - 1;
    drop(log);
    let mut best = Duration::MAX;
    for _ in 0..5 {
        let t = Instant::now();
        let (log, rec) = Log::open(FsStorage::open(&dir).unwrap(), opts).unwrap();
        best = best.min(t.elapsed());
        assert!(rec.records > 0);
        drop(log);
    }
    println!(
        "recovery: {:.1} MiB log, {} records, {} segments: page cache warm, best of 5 {best:.2?}",
        total as f64 / (1 << 20) as f64,
        records,
        std::fs::read_dir(&dir).unwrap().count()
    );
    let mut cold = Vec::new();
    for _ in 0..3 {
        if !drop_caches() {
            break;
        }
        let t = Instant::now();
        let (log, rec) = Log::open(FsStorage::open(&dir).unwrap(), opts).unwrap();
        cold.push(t.elapsed());
        assert!(rec.records > 0);
        drop(log);
    }
    if cold.is_empty() {
        println!("  cold page cache: not measured (cannot write /proc/sys/vm/drop_caches)");
    } else {
        cold.sort();
        println!(
            "  cold page cache (drop_caches before each): median of {} {:.2?}, worst {:.2?}",
            cold.len(),
            cold[cold.len() / 2],
            cold.last().unwrap()
        );
    }
    let _ = std::fs::remove_dir_all(&root);
}
