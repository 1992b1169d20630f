//! The event log writer: the one thread that touches the disk.
//!
//! Producers (on the runtime thread) push records into a bounded queue under a mutex that
//! the writer holds only to swap the queue out, never across I/O, so `raise` never waits for
//! the disk. The writer loop is thin: wait for the first record, gather until the commit
//! deadline (group commit), append the batch, one `fdatasync`, then publish the durable
//! sequence number through a `watch` channel the runtime can await. Recovery (`Log::open`,
//! which cuts torn tails and syncs) runs on this thread too: `spawn` hands the result back.
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
//! Time comes from a `Clock`: the real one, or a `FakeClock` a test moves by hand, which
//! makes the time to durability a deterministic figure (`tests.rs`).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{oneshot, watch};

use super::log::{Log, LogError, LogOptions, Recovery};
use super::storage::Storage;
use super::{Event, Record};

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

/// Counters and flags readable from any thread.
#[derive(Default)]
pub struct Counters {
    pub degraded: AtomicBool,
    /// Records dropped because the queue to the writer was full.
    pub queue_overflow: AtomicU64,
    /// Records dropped while degraded because the memory view was full.
    pub memory_overflow: AtomicU64,
    /// Undelivered records the byte budget pushed out.
    pub budget_dropped: AtomicU64,
    /// Group commits (one `fdatasync` of the tail each).
    pub syncs: AtomicU64,
    pub batches: AtomicU64,
    /// Cursor file writes (two syncs each: the temp file and the directory).
    pub cursor_writes: AtomicU64,
    pub acked: AtomicU64,
}

struct ReadRequest {
    after: u64,
    max: usize,
    reply: oneshot::Sender<Vec<Record>>,
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

struct State {
    next_seq: u64,
    queue: VecDeque<Record>,
    /// When the oldest queued record arrived (group-commit deadline).
    first_at: Option<Instant>,
    /// Queue overflow not yet reported: (count, first seq, last seq).
    overflow: Option<(u64, u64, u64)>,
    ack_to: u64,
    /// When the oldest acknowledgement not yet handed to the cursor file arrived.
    ack_since: Option<Instant>,
    reads: Vec<ReadRequest>,
    shutdown: bool,
    /// The newest loss report (acknowledged once `ack_to` or `loss_ack_to` reaches it).
    loss: Option<LossReport>,
    /// Highest lost sequence number reported in this run: a reopen reports only above it.
    loss_reported_through: u64,
    /// The loss report an operator acknowledged (`ack_loss`).
    loss_ack_to: u64,
    /// The highest lost sequence number it covered; the writer persists it.
    loss_ack_through: u64,
}

pub struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    pub counters: Counters,
    durable: watch::Sender<u64>,
    opts: WriterOptions,
    clock: Clock,
}

// ---- time ------------------------------------------------------------------------------------

/// Where the writer takes the time from.
#[derive(Clone, Default)]
pub enum Clock {
    #[default]
    Real,
    /// Tests: time moves only when the test (or a storage fake) moves it.
    #[cfg(test)]
    Fake(Arc<FakeClock>),
}

impl Clock {
    pub fn now(&self) -> Instant {
        match self {
            Clock::Real => Instant::now(),
            #[cfg(test)]
            Clock::Fake(f) => f.now(),
        }
    }

    /// Something the writer must look at was queued (called under the state lock, so it is
    /// ordered with the writer's parking).
    fn touch(&self) {
        #[cfg(test)]
        if let Clock::Fake(f) = self {
            f.unpark();
        }
    }

    /// `seq` just became durable (a fake clock notes when, for the tests' figures).
    #[cfg_attr(not(test), allow(unused_variables))]
    fn durable(&self, seq: u64) {
        #[cfg(test)]
        if let Clock::Fake(f) = self {
            let mut st = f.state();
            let at = st.offset;
            st.durable.push((seq, at));
        }
    }

    /// Wait on the writer's condvar until woken or `deadline` (read as of `now`).
    fn wait<'a>(
        &self,
        cv: &Condvar,
        st: MutexGuard<'a, State>,
        now: Instant,
        deadline: Option<Instant>,
    ) -> MutexGuard<'a, State> {
        match (self, deadline) {
            (Clock::Real, Some(d)) => {
                cv.wait_timeout(st, d - now)
                    .unwrap_or_else(|p| p.into_inner())
                    .0
            }
            (Clock::Real, None) => cv.wait(st).unwrap_or_else(|p| p.into_inner()),
            #[cfg(test)]
            (Clock::Fake(f), _) => {
                // Fake time does not wake a condvar: say where the writer stands, then
                // look again shortly.
                f.park(now, deadline);
                cv.wait_timeout(st, Duration::from_millis(1))
                    .unwrap_or_else(|p| p.into_inner())
                    .0
            }
        }
    }
}

/// A clock for tests: it stands still until moved. The writer reports when it is idle
/// (parked) with nothing due before its next deadline, so a test can step time from one
/// deadline to the next and every figure comes out the same on any machine. Unit tests only.
#[cfg(test)]
pub struct FakeClock {
    start: Instant,
    state: Mutex<FakeState>,
    changed: Condvar,
}

#[cfg(test)]
#[derive(Default)]
struct FakeState {
    offset: Duration,
    /// The writer is idle: the time it saw and its next deadline.
    parked: Option<(Duration, Option<Instant>)>,
    /// Each commit: the highest durable sequence number and when.
    durable: Vec<(u64, Duration)>,
}

#[cfg(test)]
impl FakeClock {
    pub fn new() -> Arc<FakeClock> {
        Arc::new(FakeClock {
            start: Instant::now(),
            state: Mutex::new(FakeState::default()),
            changed: Condvar::new(),
        })
    }

    fn state(&self) -> MutexGuard<'_, FakeState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn now(&self) -> Instant {
        self.start + self.state().offset
    }

    /// Move time forward (a storage fake's slow sync does this too).
    pub fn advance(&self, by: Duration) {
        let mut st = self.state();
        st.offset += by;
        st.parked = None;
    }

    /// Move time forward to `to` (never back).
    pub fn advance_to(&self, to: Instant) {
        let by = to.saturating_duration_since(self.now());
        self.advance(by);
    }

    /// When `seq` became durable, if it has.
    pub fn durable_at(&self, seq: u64) -> Option<Instant> {
        let st = self.state();
        st.durable
            .iter()
            .find(|(s, _)| *s >= seq)
            .map(|(_, at)| self.start + *at)
    }

    fn park(&self, now: Instant, deadline: Option<Instant>) {
        let mut st = self.state();
        st.parked = Some((now - self.start, deadline));
        self.changed.notify_all();
    }

    fn unpark(&self) {
        self.state().parked = None;
    }

    /// Wait (in real time, at most `timeout`) until the writer is idle at the current time;
    /// returns its next deadline (`None`: it waits for work). Panics on timeout.
    pub fn idle(&self, timeout: Duration) -> Option<Instant> {
        let until = Instant::now() + timeout;
        let mut st = self.state();
        loop {
            if let Some((seen, deadline)) = st.parked
                && seen == st.offset
            {
                return deadline;
            }
            let left = until.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "the event log writer never went idle");
            st = self
                .changed
                .wait_timeout(st, left.min(Duration::from_millis(5)))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

/// The loss report, unless the manager's acknowledgement or an operator's reached it.
fn unacked(st: &State) -> Option<LossReport> {
    st.loss.filter(|l| l.seq > st.ack_to.max(st.loss_ack_to))
}

/// Lock the state, surviving a panicked holder (the state is plain data, still coherent).
fn lock(shared: &Shared) -> std::sync::MutexGuard<'_, State> {
    shared.state.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    /// Queue one event. Never blocks on the disk: the lock is only ever held for O(1) work.
    pub fn push(&self, event: Event, raised_at_ms: u64) -> u64 {
        let mut st = lock(self);
        let seq = st.next_seq;
        st.next_seq += 1;
        if st.queue.len() >= self.opts.queue_max
            && let Some(old) = st.queue.pop_front()
        {
            self.counters.queue_overflow.fetch_add(1, Ordering::Relaxed);
            let o = st.overflow.get_or_insert((0, old.seq, old.seq));
            o.0 += 1;
            o.2 = old.seq;
        }
        st.queue.push_back(Record {
            seq,
            raised_at_ms,
            event,
        });
        let len = st.queue.len();
        if st.first_at.is_none() {
            st.first_at = Some(self.clock.now());
        }
        self.clock.touch();
        drop(st);
        // Wake the writer only when it has something new to decide: the first record of a
        // batch, or a full batch. Other pushes wait for the deadline it already set.
        if len == 1 || len == self.opts.batch_max {
            self.wake.notify_one();
        }
        seq
    }

    pub fn next_seq(&self) -> u64 {
        lock(self).next_seq
    }

    pub fn queued(&self) -> usize {
        lock(self).queue.len()
    }

    /// The manager has everything up to `seq`. The cursor file follows when this (or an
    /// earlier, unwritten) acknowledgement has waited the commit delay: one cursor write per
    /// commit window at most, however often the manager acknowledges.
    pub fn ack(&self, seq: u64) {
        let mut st = lock(self);
        if seq > st.ack_to {
            st.ack_to = seq;
            if st.ack_since.is_none() {
                // The writer's deadline changes: let it set its timer.
                st.ack_since = Some(self.clock.now());
                self.clock.touch();
                drop(st);
                self.wake.notify_one();
            }
        }
    }

    /// The highest acknowledgement received (the cursor file may lag behind it).
    pub fn ack_requested(&self) -> u64 {
        lock(self).ack_to
    }

    /// The loss event `seq` reported `lost` events, the highest of them `through`. Loss
    /// reported earlier and not acknowledged yet is added in: acknowledging this report
    /// (a higher sequence number) acknowledges those too.
    pub fn note_loss(&self, seq: u64, lost: u64, through: u64) {
        let mut st = lock(self);
        let earlier = unacked(&st);
        st.loss = Some(LossReport {
            seq,
            lost: earlier.map_or(0, |l| l.lost) + lost,
            through: earlier.map_or(0, |l| l.through).max(through),
        });
        st.loss_reported_through = st.loss_reported_through.max(through);
    }

    /// The loss report nobody has acknowledged yet, if any.
    pub fn unacked_loss(&self) -> Option<LossReport> {
        unacked(&lock(self))
    }

    /// An operator acknowledges the loss report (`quoll ctl ack-loss`): health is `ok`
    /// again at once, and the writer persists how far the acknowledged loss went (the
    /// `loss-ack` file) so that recovery does not report the same loss after a restart.
    /// Returns what was acknowledged.
    pub fn ack_loss(&self) -> Option<LossReport> {
        let mut st = lock(self);
        let report = unacked(&st)?;
        st.loss_ack_to = report.seq;
        st.loss_ack_through = st.loss_ack_through.max(report.through);
        self.clock.touch();
        drop(st);
        self.wake.notify_one();
        Some(report)
    }

    pub fn request_read(&self, after: u64, max: usize) -> oneshot::Receiver<Vec<Record>> {
        let (reply, rx) = oneshot::channel();
        let mut st = lock(self);
        st.reads.push(ReadRequest { after, max, reply });
        self.clock.touch();
        drop(st);
        self.wake.notify_one();
        rx
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.durable.subscribe()
    }

    pub fn durable_seq(&self) -> u64 {
        *self.durable.borrow()
    }

    pub fn shutdown(&self) {
        let mut st = lock(self);
        st.shutdown = true;
        self.clock.touch();
        drop(st);
        self.wake.notify_one();
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
    clock: Clock,
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
            let (next_seq, acked, loss_acked) = match &first {
                Ok((_, rec)) => (rec.next_seq, rec.acked, rec.loss_acked),
                Err(_) => (1, 0, 0),
            };
            let (durable, _) = watch::channel(next_seq - 1);
            let shared = Arc::new(Shared {
                state: Mutex::new(State {
                    next_seq,
                    queue: VecDeque::new(),
                    first_at: None,
                    overflow: None,
                    ack_to: acked,
                    ack_since: None,
                    reads: Vec::new(),
                    shutdown: false,
                    loss: None,
                    loss_reported_through: 0,
                    loss_ack_to: 0,
                    loss_ack_through: loss_acked,
                }),
                wake: Condvar::new(),
                counters: Counters::default(),
                durable,
                opts,
                clock,
            });
            shared.counters.acked.store(acked, Ordering::Relaxed);
            let (log, recovery) = match first {
                Ok((log, rec)) => (Ok(log), Some(rec)),
                Err(e) => (Err(e), None),
            };
            let writer = Writer::new(shared.clone(), log, open);
            if tx.send((shared, recovery)).is_err() {
                return; // the caller is gone
            }
            writer.run();
        })
        .expect("spawn the event log writer thread");
    let (shared, recovery) = rx
        .recv()
        .expect("the event log writer thread reports its recovery");
    (shared, handle, recovery)
}

struct Writer<S: Storage, F> {
    shared: Arc<Shared>,
    /// The log. While degraded it is kept for reading only (`writable` is false), so
    /// delivery still sees what the disk holds; `None` only when it never opened.
    log: Option<Log<S>>,
    writable: bool,
    open: F,
    /// Records taken from the queue and not yet durable (while degraded: the memory view).
    pending: VecDeque<Record>,
    retry_at: Option<Instant>,
    /// Memory-view overflow not yet reported.
    lost: Option<(u64, u64, u64)>,
    spare: VecDeque<Record>,
    /// The acknowledgement last handed to the log.
    ack_seen: u64,
    /// The operator's loss acknowledgement last handed to the log.
    loss_ack_seen: u64,
}

enum Wake {
    Work,
    Shutdown,
}

impl<S: Storage, F: FnMut() -> Result<(Log<S>, Recovery), LogError>> Writer<S, F> {
    fn new(shared: Arc<Shared>, log: Result<Log<S>, LogError>, open: F) -> Self {
        let mut w = Writer {
            shared,
            log: None,
            writable: false,
            open,
            pending: VecDeque::new(),
            retry_at: None,
            lost: None,
            spare: VecDeque::new(),
            ack_seen: 0,
            loss_ack_seen: 0,
        };
        match log {
            Ok(l) => {
                w.ack_seen = l.acked();
                w.loss_ack_seen = l.loss_acked();
                w.log = Some(l);
                w.writable = true;
            }
            Err(e) => w.degrade(&e),
        }
        w
    }

    fn now(&self) -> Instant {
        self.shared.clock.now()
    }

    fn run(mut self) {
        loop {
            let wake = self.wait_and_take();
            self.write();
            self.serve(false);
            if matches!(wake, Wake::Shutdown) {
                // Flush what the last write itself raised (a storage event) and the last
                // acknowledgement, then stop. A degraded log cannot do better: its records
                // die with the process.
                self.take_queue();
                self.write();
                self.serve(true);
                return;
            }
        }
    }

    fn take_queue(&mut self) {
        let taken = std::mem::take(&mut lock(&self.shared).queue);
        self.keep(taken.into_iter());
    }

    /// Block until there is work, then take the queue (group commit: wait for the deadline
    /// of the oldest record unless a batch is full or something else needs doing).
    fn wait_and_take(&mut self) -> Wake {
        let opts = self.shared.opts;
        let clock = self.shared.clock.clone();
        let mut st = lock(&self.shared);
        let wake = loop {
            if st.shutdown {
                break Wake::Shutdown;
            }
            if !st.reads.is_empty() || st.queue.len() >= opts.batch_max {
                break Wake::Work;
            }
            // An operator's loss acknowledgement is rare: persisted at once.
            if self.writable && st.loss_ack_through > self.loss_ack_seen {
                break Wake::Work;
            }
            // The earliest of: the oldest record's commit deadline, the oldest unwritten
            // acknowledgement's, the next disk retry.
            let commit_at = st.first_at.map(|t| t + opts.max_commit_delay);
            let cursor_at = if self.writable && st.ack_to > self.ack_seen {
                st.ack_since.map(|t| t + opts.max_commit_delay)
            } else {
                None
            };
            let retry_at = if self.writable { None } else { self.retry_at };
            let deadline = [commit_at, cursor_at, retry_at].into_iter().flatten().min();
            let now = clock.now();
            match deadline {
                Some(d) if now >= d => break Wake::Work,
                d => st = clock.wait(&self.shared.wake, st, now, d),
            }
        };
        // A read or a cursor deadline alone does not cut the batch short: the queue is taken
        // only when its commit is due, so group commit holds while the manager reads.
        let now = clock.now();
        let commit_due = matches!(wake, Wake::Shutdown)
            || st.queue.len() >= opts.batch_max
            || st
                .first_at
                .is_some_and(|t| now >= t + opts.max_commit_delay);
        if !commit_due {
            return wake;
        }
        std::mem::swap(&mut st.queue, &mut self.spare);
        st.first_at = None;
        if let Some((count, first, last)) = st.overflow.take() {
            let seq = st.next_seq;
            st.next_seq += 1;
            self.spare
                .push_back(stamp(seq, Event::events_dropped(count, first, last)));
        }
        drop(st);
        let mut batch = std::mem::take(&mut self.spare);
        self.keep(batch.drain(..));
        self.spare = batch;
        wake
    }

    /// Add records to `pending`, within the memory bound.
    fn keep(&mut self, records: impl Iterator<Item = Record>) {
        let max = self.shared.opts.memory_max;
        for r in records {
            if self.pending.len() >= max
                && let Some(old) = self.pending.pop_front()
            {
                self.shared
                    .counters
                    .memory_overflow
                    .fetch_add(1, Ordering::Relaxed);
                let o = self.lost.get_or_insert((0, old.seq, old.seq));
                o.0 += 1;
                o.2 = old.seq;
            }
            self.pending.push_back(r);
        }
    }

    /// A record raised by the writer itself (a storage event). It joins the back of the
    /// queue like any other, so sequence numbers stay in queue order; it goes out with the
    /// next batch.
    fn raise_own(&mut self, event: Event) -> u64 {
        event.log();
        let now = self.now();
        let mut st = lock(&self.shared);
        let seq = st.next_seq;
        st.next_seq += 1;
        st.queue.push_back(stamp(seq, event));
        st.first_at.get_or_insert(now);
        self.shared.clock.touch();
        seq
    }

    fn write(&mut self) {
        let mut reopened = None;
        if !self.writable {
            if self.retry_at.is_some_and(|t| self.now() < t) {
                return;
            }
            match (self.open)() {
                Ok((log, rec)) => {
                    // Records the reopened log already holds (written before the failure)
                    // are not written twice.
                    let last = log.last_seq();
                    self.pending.retain(|r| r.seq > last);
                    self.ack_seen = log.acked();
                    self.loss_ack_seen = log.loss_acked();
                    self.log = Some(log);
                    self.writable = true;
                    self.retry_at = None;
                    reopened = Some(rec);
                }
                Err(e) => {
                    self.retry_at = Some(self.now() + self.shared.opts.retry_interval);
                    tracing::debug!("event log still failing: {e}");
                    return;
                }
            }
        }
        if !self.pending.is_empty() {
            let log = self.log.as_mut().expect("writable implies a log");
            let batch = self.pending.make_contiguous();
            let last = batch.last().map(|r| r.seq).unwrap_or(0);
            let result = log.append(batch).and_then(|d| log.commit().map(|()| d));
            match result {
                Ok(dropped) => {
                    self.shared.counters.syncs.fetch_add(1, Ordering::Relaxed);
                    self.shared.counters.batches.fetch_add(1, Ordering::Relaxed);
                    self.pending.clear();
                    self.shared.clock.durable(last);
                    self.shared.durable.send_replace(last);
                    if let Some(d) = dropped {
                        self.shared
                            .counters
                            .budget_dropped
                            .fetch_add(d.count, Ordering::Relaxed);
                        self.raise_own(Event::events_dropped(d.count, d.first_seq, d.last_seq));
                    }
                }
                Err(e) => {
                    // Still failing (a read-only filesystem opens fine and fails here):
                    // stay degraded, quietly.
                    self.degrade(&e);
                    return;
                }
            }
        }
        if let Some(rec) = reopened {
            // Recovered only once a write went through, so health does not flap.
            self.shared
                .counters
                .degraded
                .store(false, Ordering::Relaxed);
            if let Some((n, lo, hi)) = self.lost.take() {
                self.raise_own(Event::events_dropped(n, lo, hi));
            }
            self.report_new_loss(&rec);
            self.raise_own(Event::event_log_recovered());
            tracing::info!("event log writable again");
        }
    }

    /// The reopened log's recovery found records lost to damage: report those not reported
    /// in this run yet (the failing disk may have damaged more).
    fn report_new_loss(&mut self, rec: &Recovery) {
        let through = lock(&self.shared).loss_reported_through;
        let fresh: Vec<(u64, u64)> = rec
            .lost_ranges
            .iter()
            .filter(|r| r.1 > through)
            .map(|&(lo, hi)| (lo.max(through + 1), hi))
            .collect();
        let lost: u64 = fresh.iter().map(|(lo, hi)| hi - lo + 1).sum();
        if lost > 0 {
            let seq = self.raise_own(Event::event_log_corrupt(lost, &fresh, !rec.lost_inexact));
            let last = fresh.last().map_or(0, |r| r.1);
            self.shared.note_loss(seq, lost, last);
        }
    }

    /// The disk failed: keep records in memory, keep the log for reading, retry later.
    fn degrade(&mut self, e: &LogError) {
        self.writable = false;
        self.retry_at = Some(self.now() + self.shared.opts.retry_interval);
        if !self.shared.counters.degraded.swap(true, Ordering::Relaxed) {
            tracing::error!("event log failed, keeping events in memory: {e}");
            self.raise_own(Event::event_log_degraded(&e.to_string()));
        } else {
            tracing::debug!("event log still failing: {e}");
        }
    }

    /// Cursor writes (when due, or `force` at shutdown) and delivery reads.
    fn serve(&mut self, force: bool) {
        let now = self.now();
        let delay = self.shared.opts.max_commit_delay;
        let (ack_to, ack_due, reads, loss_through) = {
            let mut st = lock(&self.shared);
            let due = force || st.ack_since.is_some_and(|t| now >= t + delay);
            (
                st.ack_to,
                due,
                std::mem::take(&mut st.reads),
                st.loss_ack_through,
            )
        };
        if self.writable && loss_through > self.loss_ack_seen {
            let log = self.log.as_mut().expect("writable implies a log");
            self.loss_ack_seen = loss_through;
            if let Err(e) = log.set_loss_acked(loss_through) {
                // Health is `ok` all the same (the acknowledgement is held in memory); only
                // a restart before the disk is back reports the loss again.
                self.degrade(&e);
            }
        }
        if self.writable && ack_due && ack_to > self.ack_seen {
            let log = self.log.as_mut().expect("writable implies a log");
            self.ack_seen = ack_to;
            let before = log.cursor_on_disk();
            match log.set_acked(ack_to) {
                Ok(()) => {
                    if log.cursor_on_disk() != before {
                        self.shared
                            .counters
                            .cursor_writes
                            .fetch_add(1, Ordering::Relaxed);
                    }
                    self.shared
                        .counters
                        .acked
                        .store(log.acked(), Ordering::Relaxed);
                }
                Err(e) => self.degrade(&e),
            }
        }
        if self.writable {
            // The next cursor write is due a commit delay after the first acknowledgement
            // not yet handed to the log: one write per window at most.
            let mut st = lock(&self.shared);
            if st.ack_to <= self.ack_seen {
                st.ack_since = None;
            } else if ack_due {
                st.ack_since = Some(self.now());
            }
        }
        for req in reads {
            let out = self.read(req.after, req.max);
            let _ = req.reply.send(out);
        }
    }

    /// Up to `max` records after `after`, in order: what the log holds on disk (read even
    /// while degraded), then what is held in memory. If the disk cannot be read, nothing
    /// from memory is served past what it holds: delivery waits (health says `degraded`
    /// meanwhile) rather than let an acknowledgement move the cursor over records on disk.
    fn read(&mut self, after: u64, max: usize) -> Vec<Record> {
        let mut out = match self.log.as_mut() {
            Some(log) => match log.read_after(after, max) {
                Ok(v) => v,
                Err(e) if log.last_seq() > after => {
                    tracing::warn!("event log unreadable, delivery waits: {e}");
                    return Vec::new();
                }
                Err(_) => Vec::new(),
            },
            None => Vec::new(),
        };
        let last = out.last().map_or(after, |r| r.seq);
        for r in self.pending.iter().filter(|r| r.seq > last) {
            if out.len() >= max {
                break;
            }
            out.push(r.clone());
        }
        out
    }
}

fn stamp(seq: u64, event: Event) -> Record {
    Record {
        seq,
        raised_at_ms: crate::time::unix_millis(SystemTime::now()),
        event,
    }
}
