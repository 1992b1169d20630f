//! The durable event log: `cargo bench --bench events`. Plain `Instant` timing, no harness.
//!
//! 1. Sustained durable appends per second through `Events::raise` with group commit (the
//!    default 50 ms commit delay), on the real filesystem under the target dir (not /tmp,
//!    which may be tmpfs and make `fdatasync` free).
//! 2. Bytes written per event: the segment bytes over the encoded record size (write
//!    amplification of the format), and, where /proc/self/io exists, what the kernel wrote
//!    to the device for the whole run (page granularity, cursor and metadata included).
//! 3. fdatasync calls per 1000 events.
//! 4. Recovery (`Log::open`) of a full 16 MiB log, page cache warm.

use std::path::Path;
use std::time::{Duration, Instant};

use quoll::events::codec;
use quoll::events::log::{Log, LogOptions};
use quoll::events::storage::FsStorage;
use quoll::events::{Event, Events, LogConfig, Record};

const EVENTS: u64 = 300_000;
const BUDGET: u64 = 16 << 20;

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

fn main() {
    let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("bench-events");
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();

    // ---- 1-3: sustained durable appends ------------------------------------------------
    let dir = root.join("append");
    let storage = quoll::config::StorageConfig {
        event_log_max_bytes: 256 << 20, // no drops during the run
        ..Default::default()
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let io_before = proc_write_bytes();
    let (events, _) = Events::open(&dir, LogConfig::from_storage(&storage));
    let mut durable = events.durable_watch().unwrap();
    let t = Instant::now();
    let mut raise_ns: Vec<u32> = Vec::with_capacity(EVENTS as usize);
    rt.block_on(async {
        // Raise in steps of 5000 while keeping at most 12 000 in flight, as a busy node would:
        // the producer never waits for the disk, only this bench's pacing does.
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
    });
    let elapsed = t.elapsed();
    let status = events.status();
    events.close();
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
        "durable appends: {EVENTS} events in {elapsed:.2?} = {:.0} events/s",
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
    println!(
        "  fdatasync: {} commits = {:.2} per 1000 events",
        status.commits,
        status.commits as f64 * 1000.0 / EVENTS as f64
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
        "recovery: {:.1} MiB log, {} records, {} segments: best of 5 {best:.2?}",
        total as f64 / (1 << 20) as f64,
        records,
        std::fs::read_dir(&dir).unwrap().count()
    );
    let _ = std::fs::remove_dir_all(&root);
}
