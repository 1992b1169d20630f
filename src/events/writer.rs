//! The event log writer: the one thread that touches the disk.
//!
//! Every decision is in `WriterCore` (`writer/machine.rs`): a sans-IO state machine that
//! takes the producers' records and acknowledgements, the time and what the disk said, and
//! returns what to do next. This file is the thin shell around it: the producers' handle
//! (`Shared`, the core under a mutex held for decisions only, never across I/O, so `raise`
//! never waits for the disk) and the thread that carries out the core's actions against the
//! `Log` with the real clocks. What the core decides: wait for the first record, gather
//! until the commit deadline (group commit), append the batch, one `fdatasync`, then the
//! thread publishes the durable sequence number through a `watch` channel the runtime can
//! await. Recovery (`Log::open`, which cuts torn tails and syncs) runs on this thread too:
//! `spawn` hands the result back.
//!
//! Acknowledgements are coalesced: the cursor file (two syncs: the temp file and the
//! directory) is written at most once per commit window, when the oldest acknowledgement
//! not yet on disk has waited `max_commit_delay`, however often the manager acknowledges.
//!
//! When the queue is full, the *oldest* queued record is dropped, counted, and one
//! `events_dropped` warning (with the range of sequence numbers lost) is queued in the same
//! batch: newest information wins, as with the byte budget, and the loss is never silent.
//!
//! When the disk fails (full, read-only, I/O error), the writer degrades to memory only: it
//! keeps up to `memory_max` records, raises `event_log_degraded` once, and retries every
//! `retry_interval` by reopening the log (full recovery, so its view of the files is the
//! truth). It keeps the failed log open for reading only: delivery goes on in order, the
//! records already on disk first, then the ones held in memory; if the disk cannot even be
//! read, delivery waits rather than skip what it holds. When a retry succeeds the kept
//! records are written and `event_log_recovered` is raised.
//!
//! Loss found by recovery (records a damaged disk no longer holds) is reported by one
//! `event_log_corrupt` warning and held as a `LossReport` until acknowledged: by the manager
//! (its delivery acknowledgement reaches the report's sequence number) or by an operator
//! (`ack_loss`; how far the acknowledged loss went is persisted in the `loss-ack` file).
//! `/healthz` says `degraded` meanwhile.
//!
//! The core's tests drive it directly, on fake time and with the storage results they
//! choose, so the time to durability is a deterministic figure (`tests.rs`).

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{oneshot, watch};

use super::log::{Log, LogError, LogOptions, Recovery};
use super::storage::Storage;
use super::{Event, Record};

mod machine;
pub use machine::{
    Action, Counters, CursorWritten, DiskRead, Notice, Now, Opened, Outcome, WriterCore,
};

/// Knobs of the writer.
#[derive(Debug, Clone, Copy)]
pub struct WriterOptions {
    pub log: LogOptions,
    /// Longest a record waits in memory before its batch is committed.
    pub max_commit_delay: Duration,
    /// Records the queue to the writer holds; beyond this the oldest is dropped.
    pub queue_max: usize,
    /// A batch is committed early when it reaches this many records.
    pub batch_max: usize,
    /// Records kept in memory while the disk is failing.
    pub memory_max: usize,
    /// How often a failed disk is tried again.
    pub retry_interval: Duration,
}

impl WriterOptions {
    pub fn new(budget_bytes: u64, max_commit_delay: Duration) -> Self {
        WriterOptions {
            log: LogOptions::with_budget(budget_bytes),
            max_commit_delay,
            queue_max: 16 * 1024,
            batch_max: 4096,
            memory_max: 16 * 1024,
            retry_interval: Duration::from_secs(5),
        }
    }
}

/// A report of events lost to damage: the `event_log_corrupt` event's sequence number, how
/// many events it (and earlier unacknowledged reports) said were lost, and the highest
/// sequence number among them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LossReport {
    pub seq: u64,
    pub lost: u64,
    pub through: u64,
}

/// Where a delivery read's answer goes.
type Reply = oneshot::Sender<Vec<Record>>;

/// The writer's state, shared by the producers (on the runtime thread) and the writer
/// thread. The lock is held for decisions only, never across I/O.
pub struct Shared {
    core: Mutex<WriterCore<Reply>>,
    wake: Condvar,
    durable: watch::Sender<u64>,
}

impl Now {
    /// The real clocks: monotonic for deadlines, the wall clock for raise times.
    pub fn real() -> Now {
        Now {
            at: Instant::now(),
            unix_ms: crate::time::unix_millis(SystemTime::now()),
        }
    }
}

impl Opened {
    /// What an opened log holds.
    pub fn of<S: Storage>(log: &Log<S>) -> Opened {
        Opened {
            last_seq: log.last_seq(),
            acked: log.acked(),
            loss_acked: log.loss_acked(),
        }
    }
}

impl<R> WriterCore<R> {
    /// The core over the result of the first open (`WriterCore::new`).
    pub fn after_open<S: Storage>(
        opts: WriterOptions,
        first: &Result<(Log<S>, Recovery), LogError>,
        now: Now,
    ) -> Self {
        let first = match first {
            Ok((log, rec)) => Ok((Opened::of(log), rec.next_seq)),
            Err(e) => Err(e),
        };
        WriterCore::new(opts, first, now)
    }
}

impl Shared {
    /// Lock the core, surviving a panicked holder (the state is plain data, still coherent).
    fn core(&self) -> MutexGuard<'_, WriterCore<Reply>> {
        self.core.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Run `f` on the core and wake the writer if it says so.
    fn with_core<T>(&self, f: impl FnOnce(&mut WriterCore<Reply>) -> (T, bool)) -> T {
        let (out, wake) = f(&mut self.core());
        if wake {
            self.wake.notify_one();
        }
        out
    }

    /// Queue one event. Never blocks on the disk: the lock is only ever held for O(1) work.
    pub fn push(&self, event: Event, raised_at_ms: u64) -> u64 {
        let now = Instant::now();
        self.with_core(|c| c.handle_push(event, raised_at_ms, now))
    }

    pub fn next_seq(&self) -> u64 {
        self.core().next_seq()
    }

    pub fn queued(&self) -> usize {
        self.core().queued()
    }

    /// The manager has everything up to `seq`; the cursor file follows within one commit
    /// delay (`WriterCore::handle_ack`).
    pub fn ack(&self, seq: u64) {
        let now = Instant::now();
        self.with_core(|c| ((), c.handle_ack(seq, now)));
    }

    /// The highest acknowledgement received (the cursor file may lag behind it).
    pub fn ack_requested(&self) -> u64 {
        self.core().ack_requested()
    }

    /// The loss event `seq` reported `lost` events, the highest of them `through`
    /// (`WriterCore::note_loss`).
    pub fn note_loss(&self, seq: u64, lost: u64, through: u64) {
        self.core().note_loss(seq, lost, through);
    }

    /// The loss report nobody has acknowledged yet, if any.
    pub fn unacked_loss(&self) -> Option<LossReport> {
        self.core().unacked_loss()
    }

    /// An operator acknowledges the loss report (`quoll ctl ack-loss`): health is `ok`
    /// again at once, and the writer persists how far the acknowledged loss went (the
    /// `loss-ack` file) so that recovery does not report the same loss after a restart.
    /// Returns what was acknowledged.
    pub fn ack_loss(&self) -> Option<LossReport> {
        self.with_core(|c| {
            let report = c.handle_ack_loss();
            (report, report.is_some())
        })
    }

    pub fn request_read(&self, after: u64, max: usize) -> oneshot::Receiver<Vec<Record>> {
        let (reply, rx) = oneshot::channel();
        self.with_core(|c| {
            c.handle_read(after, max, reply);
            ((), true)
        });
        rx
    }

    /// The writer's counters, read together.
    pub fn counters(&self) -> Counters {
        self.core().counters()
    }

    pub fn is_degraded(&self) -> bool {
        self.core().counters().degraded
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.durable.subscribe()
    }

    pub fn durable_seq(&self) -> u64 {
        *self.durable.borrow()
    }

    pub fn shutdown(&self) {
        self.with_core(|c| {
            c.handle_shutdown();
            ((), true)
        });
    }
}

/// Start the writer thread. `open` opens the log and recovers it; it runs on the writer
/// thread, first at start and again for every retry after a disk failure, so no recovery
/// `fdatasync` ever runs on the caller's (the runtime's) thread. `spawn` waits for the first
/// open to finish, because the first sequence number of this run must come from it; a log
/// that failed to open starts the writer degraded (and `/healthz` says so before `spawn`
/// returns, so READY and the first health report are truthful).
pub fn spawn<S, F>(
    open: F,
    opts: WriterOptions,
) -> (Arc<Shared>, std::thread::JoinHandle<()>, Option<Recovery>)
where
    S: Storage,
    F: FnMut() -> Result<(Log<S>, Recovery), LogError> + Send + 'static,
{
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    let handle = std::thread::Builder::new()
        .name("quoll-eventlog".into())
        .spawn(move || {
            let mut open = open;
            let first = open();
            let core = WriterCore::after_open(opts, &first, Now::real());
            let (durable, _) = watch::channel(core.durable_seq());
            let shared = Arc::new(Shared {
                core: Mutex::new(core),
                wake: Condvar::new(),
                durable,
            });
            let (log, recovery) = match first {
                Ok((log, rec)) => (Some(log), Some(rec)),
                Err(_) => (None, None),
            };
            if tx.send((shared.clone(), recovery)).is_err() {
                return; // the caller is gone
            }
            run(&shared, log, open);
        })
        .expect("spawn the event log writer thread");
    let (shared, recovery) = rx
        .recv()
        .expect("the event log writer thread reports its recovery");
    (shared, handle, recovery)
}

/// The writer thread: ask the core what to do, do it against the log with the lock
/// released, hand the result back. `log` is `None` only when it never opened; while
/// degraded it is kept for reading.
fn run<S, F>(shared: &Shared, mut log: Option<Log<S>>, mut open: F)
where
    S: Storage,
    F: FnMut() -> Result<(Log<S>, Recovery), LogError>,
{
    let mut published = shared.durable_seq();
    let mut core = shared.core();
    loop {
        // What the last step said, and the durable sequence number, go out with the lock
        // released: a producer never waits for the journal, a `flushed` waiter may lock.
        let notices = core.take_notices();
        let durable = core.durable_seq();
        if !notices.is_empty() || durable != published {
            drop(core);
            for n in &notices {
                n.log();
            }
            if durable != published {
                shared.durable.send_replace(durable);
                published = durable;
            }
            core = shared.core();
        }
        let action = loop {
            let now = Now::real();
            if let Some(action) = core.poll_action(now) {
                break action;
            }
            core = match core.poll_timeout() {
                Some(deadline) => {
                    let wait = deadline.saturating_duration_since(now.at);
                    let (guard, _) = shared
                        .wake
                        .wait_timeout(core, wait)
                        .unwrap_or_else(|p| p.into_inner());
                    guard
                }
                None => shared.wake.wait(core).unwrap_or_else(|p| p.into_inner()),
            };
        };
        drop(core);
        let Some(outcome) = perform(&mut log, &mut open, action) else {
            return;
        };
        core = shared.core();
        if let Some((reply, records)) = core.handle(outcome, Now::real()) {
            let _ = reply.send(records);
        }
    }
}

/// Carry out one action of the core against the log (no lock held); `None` for `Stop`.
/// `log` is `None` only when it never opened; while degraded it is kept for reading.
pub fn perform<S, F, R>(
    log: &mut Option<Log<S>>,
    open: &mut F,
    action: Action<R>,
) -> Option<Outcome<R>>
where
    S: Storage,
    F: FnMut() -> Result<(Log<S>, Recovery), LogError>,
{
    // The core writes only to a log that opened; should that ever not hold, the write fails
    // like a disk error (the records stay in memory, degraded) instead of ending the thread.
    fn writable<S: Storage>(log: &mut Option<Log<S>>) -> Result<&mut Log<S>, LogError> {
        log.as_mut().ok_or_else(|| LogError::Io {
            op: "write",
            file: "the event log (not open)".into(),
            source: std::io::Error::other("the event log is not open"),
        })
    }
    Some(match action {
        Action::Reopen => Outcome::Reopened(open().map(|(l, rec)| {
            let opened = Opened::of(&l);
            *log = Some(l);
            (opened, rec)
        })),
        Action::Commit(batch) => {
            let result = writable(log)
                .and_then(|log| log.append(&batch).and_then(|d| log.commit().map(|()| d)));
            Outcome::Committed(batch, result)
        }
        Action::WriteLossAck(through) => {
            Outcome::LossAckWritten(writable(log).and_then(|log| log.set_loss_acked(through)))
        }
        Action::WriteCursor(seq) => Outcome::CursorWritten(writable(log).and_then(|log| {
            let before = log.cursor_on_disk();
            log.set_acked(seq).map(|()| CursorWritten {
                wrote: log.cursor_on_disk() != before,
                acked: log.acked(),
            })
        })),
        Action::Read { after, max, reply } => {
            let disk = match log.as_mut() {
                Some(l) => match l.read_after(after, max) {
                    Ok(v) => DiskRead::Records(v),
                    Err(error) => DiskRead::Failed {
                        error,
                        last_seq: l.last_seq(),
                    },
                },
                None => DiskRead::NoLog,
            };
            Outcome::Read {
                after,
                max,
                reply,
                disk,
            }
        }
        Action::Stop => return None,
    })
}
