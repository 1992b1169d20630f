//! Operational events: the catalog of `shared/seeds/events-and-alarms.txt` as typed
//! constructors, and the handle every part of Quoll raises them through.
//!
//! `Events::raise` stamps an event with its sequence number and raise time and hands it to
//! the durable log (`writer.rs` on its own thread, `log.rs` over `storage.rs`, format in
//! `codec.rs`). Raising never blocks and never waits for the disk. The manager link reads
//! batches from the delivery cursor (`read_batch`) and acknowledges them (`ack`) after its
//! write succeeded: delivery is at least once, and a duplicate carries the same `seq`.
//! See `docs/events.md`.

pub mod catalog;
pub mod codec;
pub mod latch;
pub mod log;
pub mod storage;
pub mod writer;

use std::cell::RefCell;
use std::collections::VecDeque;
use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Serialize;

pub use catalog::{Category, Event, Severity};

use self::log::{Log, LogError, Recovery};
use self::storage::{FsStorage, Storage};
pub use self::writer::LossReport;
use self::writer::{Shared, WriterOptions};

/// An event as recorded: sequence number and raise time attached.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Record {
    pub seq: u64,
    pub raised_at_ms: u64,
    #[serde(flatten)]
    pub event: Event,
}

impl Record {
    /// The raise time as RFC 3339 UTC with milliseconds.
    pub fn raised_at(&self) -> String {
        crate::time::rfc3339_millis(self.raised_at_ms)
    }
}

/// The event log's state, for `/healthz` and the manager's `health` message.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct LogStatus {
    /// `false` when the disk failed and events are kept in memory only.
    pub durable: bool,
    /// Highest sequence number on disk (confirmed by `fdatasync`).
    pub durable_seq: u64,
    /// Acknowledged by the manager up to here.
    pub acked_seq: u64,
    /// The sequence number the next event gets.
    pub next_seq: u64,
    /// Records dropped because the queue to the writer was full.
    pub queue_overflow: u64,
    /// Undelivered records dropped by the byte budget.
    pub budget_dropped: u64,
    /// Group commits (one `fdatasync` each) since start.
    pub commits: u64,
    /// Events lost to damage on disk (found by recovery) whose report is not acknowledged
    /// yet; health is `degraded` while this is above 0 (see `Events::unacked_loss`).
    pub lost_unacked: u64,
    /// The report to acknowledge: the `event_log_corrupt` event's sequence number.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub loss_seq: Option<u64>,
}

/// Settings of the durable log (from the config's `storage` block).
#[derive(Debug, Clone, Copy)]
pub struct LogConfig {
    pub writer: WriterOptions,
}

impl LogConfig {
    /// A log of at most `max_bytes` whose commits wait at most `commit_max_delay` (the
    /// config's `storage.event_log_max_bytes` and `event_commit_max_delay_ms`).
    pub fn new(max_bytes: u64, commit_max_delay: Duration) -> Self {
        LogConfig {
            writer: WriterOptions::new(max_bytes, commit_max_delay),
        }
    }
}

/// The handle through which events are raised. Cheap to clone; raising never blocks.
#[derive(Clone)]
pub struct Events {
    inner: Rc<RefCell<Inner>>,
}

struct Inner {
    /// The newest records, for `snapshot` (and the whole queue when memory-only).
    recent: VecDeque<Record>,
    capacity: usize,
    /// Memory-only mode: next sequence number and the acknowledged one.
    next_seq: u64,
    acked: u64,
    durable: Option<Durable>,
}

struct Durable {
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Durable {
    /// Stops the writer and joins it: it flushes what was raised (at most one commit, plus
    /// the cursor). Runs on the runtime thread at shutdown only (`Events::close`, or the last
    /// handle dropped), after the flows stopped, where waiting for the disk holds nothing up.
    fn drop(&mut self) {
        self.shared.shutdown();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// How many recent records a durable handle keeps for `snapshot`.
const RECENT: usize = 1000;

impl Events {
    /// Memory-only events keeping the newest `capacity` records.
    pub fn in_memory(capacity: usize) -> Self {
        Self::with(capacity, 1, None)
    }

    fn with(capacity: usize, next_seq: u64, durable: Option<Durable>) -> Self {
        Events {
            inner: Rc::new(RefCell::new(Inner {
                recent: VecDeque::new(),
                capacity: capacity.max(1),
                next_seq,
                acked: 0,
                durable,
            })),
        }
    }

    /// The durable log under `dir`. Recovery (`Log::open`: reading every segment, cutting a
    /// torn tail, its syncs) runs on the writer thread, never on the caller's; this call
    /// waits for it once, because the first sequence number of this run comes from it.
    /// The daemon calls it on the runtime thread at start, before any flow, the API or the
    /// manager link runs, so nothing else is held up (recovery of a full 16 MiB log takes a
    /// few ms warm; see docs/events.md). A disk that cannot be opened does not stop Quoll:
    /// the log starts degraded (memory only) and the writer keeps trying. Returns what
    /// recovery found (`None` when it could not run).
    pub fn open(dir: &Path, config: LogConfig) -> (Events, Option<Recovery>) {
        let owned = dir.to_owned();
        let opts = config.writer.log;
        let open = move || -> Result<(Log<FsStorage>, Recovery), LogError> {
            let storage = FsStorage::open(&owned).map_err(|source| LogError::Io {
                op: "create directory",
                file: owned.display().to_string(),
                source,
            })?;
            Log::open(storage, opts)
        };
        Self::open_with(open, config)
    }

    /// The durable log over any storage (tests and the bench: `MemStorage`, `SlowSync`,
    /// `Counted`). `open` opens and recovers the log; it runs on the writer thread, at
    /// start and for every retry after a disk failure.
    pub fn open_with<S, F>(open: F, config: LogConfig) -> (Events, Option<Recovery>)
    where
        S: Storage,
        F: FnMut() -> Result<(Log<S>, Recovery), LogError> + Send + 'static,
    {
        let (shared, thread, recovery) = writer::spawn(open, config.writer);
        let next_seq = shared.next_seq();
        let events = Self::with(
            RECENT,
            next_seq,
            Some(Durable {
                shared,
                thread: Some(thread),
            }),
        );
        if let Some(rec) = &recovery {
            if rec.lost > 0 {
                // Undelivered events are gone: say exactly which, and keep health
                // `degraded` until somebody acknowledges it (`unacked_loss`).
                let seq = events.raise(Event::event_log_corrupt(
                    rec.lost,
                    &rec.lost_ranges,
                    !rec.lost_inexact,
                ));
                if let Some(s) = events.shared() {
                    s.note_loss(seq, rec.lost, rec.lost_last());
                }
            }
            if rec.lost_delivered > 0 || rec.damaged_headers > 0 {
                // Damage that cost no event anybody waits for (a segment header, rebuilt;
                // records the manager already had, or whose loss was acknowledged before):
                // the log line is the record of it, health stays as it is.
                tracing::warn!(
                    damaged_headers = rec.damaged_headers,
                    delivered_lost = rec.lost_delivered,
                    "event log damage found: damaged segment headers are read past, \
                     delivered records lost are history only"
                );
            }
            if rec.newer_segments > 0 || rec.newer_cursor.is_some() {
                let files = rec.newer_segments + u64::from(rec.newer_cursor.is_some());
                events.raise(Event::event_log_newer_format(
                    files,
                    rec.newer_segments,
                    rec.newer_cursor,
                    rec.next_seq,
                ));
            }
            tracing::info!(
                records = rec.records,
                pending = rec.pending,
                next_seq = rec.next_seq,
                truncated_bytes = rec.truncated_bytes,
                corrupt = rec.corrupt,
                lost = rec.lost,
                newer_segments = rec.newer_segments,
                "event log recovered"
            );
        }
        (events, recovery)
    }

    /// Raise an event: it gets its sequence number (returned) and raise time now, and is
    /// queued for the disk. Never blocks.
    pub fn raise(&self, event: Event) -> u64 {
        event.log();
        let raised_at_ms = crate::time::unix_millis(SystemTime::now());
        let mut inner = self.inner.borrow_mut();
        let seq = match &inner.durable {
            // The writer assigns under its lock (it raises storage events itself).
            Some(d) => d.shared.push(event.clone(), raised_at_ms),
            None => {
                inner.next_seq += 1;
                inner.next_seq - 1
            }
        };
        let record = Record {
            seq,
            raised_at_ms,
            event,
        };
        if inner.recent.len() == inner.capacity {
            inner.recent.pop_front();
        }
        inner.recent.push_back(record);
        seq
    }

    /// The newest records raised through this handle, oldest first.
    pub fn snapshot(&self) -> Vec<Record> {
        self.inner.borrow().recent.iter().cloned().collect()
    }

    /// Whether the log is memory-only because the disk failed.
    pub fn is_degraded(&self) -> bool {
        self.shared().is_some_and(|s| s.is_degraded())
    }

    /// The report of events lost to damage that nobody has acknowledged yet: neither the
    /// manager (delivery acknowledged up to it) nor an operator (`ack_loss`). Health is
    /// `degraded` while there is one. `None` for memory-only events.
    pub fn unacked_loss(&self) -> Option<LossReport> {
        self.shared().and_then(|s| s.unacked_loss())
    }

    /// An operator has seen the loss report (`quoll ctl ack-loss`): health goes back to
    /// `ok`, and a restart does not report the same loss again. Returns what was
    /// acknowledged (`None`: there was nothing to acknowledge).
    pub fn ack_loss(&self) -> Option<LossReport> {
        self.shared().and_then(|s| s.ack_loss())
    }

    pub fn status(&self) -> LogStatus {
        let inner = self.inner.borrow();
        match &inner.durable {
            Some(d) => {
                let c = d.shared.counters();
                let loss = d.shared.unacked_loss();
                LogStatus {
                    durable: !c.degraded,
                    durable_seq: d.shared.durable_seq(),
                    acked_seq: c.acked,
                    next_seq: d.shared.next_seq(),
                    queue_overflow: c.queue_overflow + c.memory_overflow,
                    budget_dropped: c.budget_dropped,
                    commits: c.syncs,
                    lost_unacked: loss.map_or(0, |l| l.lost),
                    loss_seq: loss.map(|l| l.seq),
                }
            }
            None => LogStatus {
                durable: false,
                durable_seq: 0,
                acked_seq: inner.acked,
                next_seq: inner.next_seq,
                queue_overflow: 0,
                budget_dropped: 0,
                commits: 0,
                lost_unacked: 0,
                loss_seq: None,
            },
        }
    }

    /// A receiver of the highest durable sequence number (changes after each commit).
    /// `None` for memory-only events.
    pub fn durable_watch(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        self.shared().map(|s| s.subscribe())
    }

    fn shared(&self) -> Option<Arc<Shared>> {
        self.inner
            .borrow()
            .durable
            .as_ref()
            .map(|d| d.shared.clone())
    }

    // ---- delivery (the manager link) --------------------------------------------------

    /// The next batch to deliver: up to `max` records after the acknowledged cursor, oldest
    /// first. Only durable records (or, while degraded, the memory view). Reading again
    /// before `ack` returns the same records: at-least-once.
    pub async fn read_batch(&self, max: usize) -> Vec<Record> {
        // From the last acknowledgement received, not the last one written to the cursor
        // file: while degraded the cursor cannot be written, and delivery must still move on.
        let after = match self.shared() {
            Some(s) => s.ack_requested(),
            None => self.inner.borrow().acked,
        };
        self.read_after(after, max).await
    }

    /// Up to `max` records with a sequence number above `after` (for a link that pipelines
    /// several batches before their acknowledgements).
    pub async fn read_after(&self, after: u64, max: usize) -> Vec<Record> {
        match self.shared() {
            // The writer thread reads the files, so the runtime never touches the disk.
            Some(s) => s.request_read(after, max).await.unwrap_or_default(),
            None => self
                .inner
                .borrow()
                .recent
                .iter()
                .filter(|r| r.seq > after)
                .take(max)
                .cloned()
                .collect(),
        }
    }

    /// The manager has everything up to `seq` (after its write succeeded). The cursor file
    /// follows within one commit delay (acknowledgements are coalesced: one cursor write
    /// per window); a crash before then redelivers, never skips.
    pub fn ack(&self, seq: u64) {
        match self.shared() {
            Some(s) => s.ack(seq),
            None => {
                let mut inner = self.inner.borrow_mut();
                inner.acked = inner.acked.max(seq.min(inner.next_seq - 1));
            }
        }
    }

    /// Wait until every record raised so far is durable (or the log is degraded). For the
    /// shutdown path and tests; the flows never call it.
    pub async fn flushed(&self) {
        let Some(s) = self.shared() else { return };
        let target = s.next_seq() - 1;
        let mut rx = s.subscribe();
        let _ = rx.wait_for(|&d| d >= target || s.is_degraded()).await;
    }

    /// Flush the log and stop the writer thread (blocks for at most one commit and one
    /// cursor write). For shutdown only: the daemon calls it on the runtime thread once the
    /// flows have stopped, when blocking for the disk delays nothing but the exit. Raising
    /// afterwards still works but only reaches memory.
    pub fn close(&self) {
        let durable = self.inner.borrow_mut().durable.take();
        if let Some(d) = durable {
            let shared = d.shared.clone();
            drop(d); // shuts the writer down and joins it
            self.inner.borrow_mut().next_seq = shared.next_seq();
        }
    }
}

#[cfg(test)]
mod tests;
