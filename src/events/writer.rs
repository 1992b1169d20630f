//! The event log writer: the one thread that touches the disk.
//!
//! Producers (on the runtime thread) push records into a bounded queue under a mutex that
//! the writer holds only to swap the queue out, never across I/O, so `raise` never waits for
//! the disk. The writer loop is thin: wait for the first record, gather until the commit
//! deadline (group commit), append the batch, one `fdatasync`, then publish the durable
//! sequence number through a `watch` channel the runtime can await.
//!
//! When the queue is full, the *oldest* queued record is dropped, counted, and one
//! `events_dropped` warning (with the range of sequence numbers lost) is queued in the same
//! batch: newest information wins, as with the byte budget, and the loss is never silent.
//!
//! When the disk fails (full, read-only, I/O error), the writer degrades to memory only: it
//! keeps up to `memory_max` records, raises `event_log_degraded` once, and retries every
//! `retry_interval` by reopening the log (full recovery, so its view of the files is the
//! truth). When a retry succeeds the kept records are written and `event_log_recovered` is
//! raised.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{oneshot, watch};

use super::log::{Log, LogError, LogOptions};
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
    pub syncs: AtomicU64,
    pub batches: AtomicU64,
    pub acked: AtomicU64,
}

struct ReadRequest {
    after: u64,
    max: usize,
    reply: oneshot::Sender<Vec<Record>>,
}

struct State {
    next_seq: u64,
    queue: VecDeque<Record>,
    /// When the oldest queued record arrived (group-commit deadline).
    first_at: Option<Instant>,
    /// Queue overflow not yet reported: (count, first seq, last seq).
    overflow: Option<(u64, u64, u64)>,
    ack_to: u64,
    reads: Vec<ReadRequest>,
    shutdown: bool,
}

pub struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    pub counters: Counters,
    durable: watch::Sender<u64>,
    opts: WriterOptions,
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
            st.first_at = Some(Instant::now());
        }
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

    pub fn ack(&self, seq: u64) {
        let mut st = lock(self);
        if seq > st.ack_to {
            st.ack_to = seq;
            drop(st);
            self.wake.notify_one();
        }
    }

    /// The highest acknowledgement received (the cursor file may lag behind it).
    pub fn ack_requested(&self) -> u64 {
        lock(self).ack_to
    }

    pub fn request_read(&self, after: u64, max: usize) -> oneshot::Receiver<Vec<Record>> {
        let (reply, rx) = oneshot::channel();
        lock(self).reads.push(ReadRequest { after, max, reply });
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
        lock(self).shutdown = true;
        self.wake.notify_one();
    }
}

/// Start the writer thread over an opened log (or none: the disk failed at start, the
/// writer begins degraded and retries `reopen`).
pub fn spawn<S, F>(
    log: Result<Log<S>, LogError>,
    reopen: F,
    next_seq: u64,
    acked: u64,
    opts: WriterOptions,
) -> (Arc<Shared>, std::thread::JoinHandle<()>)
where
    S: Storage,
    F: FnMut() -> Result<Log<S>, LogError> + Send + 'static,
{
    let (durable, _) = watch::channel(next_seq - 1);
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            next_seq,
            queue: VecDeque::new(),
            first_at: None,
            overflow: None,
            ack_to: acked,
            reads: Vec::new(),
            shutdown: false,
        }),
        wake: Condvar::new(),
        counters: Counters::default(),
        durable,
        opts,
    });
    shared.counters.acked.store(acked, Ordering::Relaxed);
    // Built here, not on the thread: a log that failed to open is degraded (and /healthz
    // says so) before `open` returns, so READY and the first health report are truthful.
    let writer = Writer::new(shared.clone(), log, reopen);
    let handle = std::thread::Builder::new()
        .name("quoll-eventlog".into())
        .spawn(move || writer.run())
        .expect("spawn the event log writer thread");
    (shared, handle)
}

struct Writer<S: Storage, F> {
    shared: Arc<Shared>,
    log: Option<Log<S>>,
    reopen: F,
    /// Records taken from the queue and not yet durable (while degraded: the memory view).
    pending: VecDeque<Record>,
    retry_at: Option<Instant>,
    /// Memory-view overflow not yet reported.
    lost: Option<(u64, u64, u64)>,
    spare: VecDeque<Record>,
    /// The acknowledgement last handed to the log.
    ack_seen: u64,
}

enum Wake {
    Work,
    Shutdown,
}

impl<S: Storage, F: FnMut() -> Result<Log<S>, LogError>> Writer<S, F> {
    fn new(shared: Arc<Shared>, log: Result<Log<S>, LogError>, reopen: F) -> Self {
        let mut w = Writer {
            shared,
            log: None,
            reopen,
            pending: VecDeque::new(),
            retry_at: None,
            lost: None,
            spare: VecDeque::new(),
            ack_seen: 0,
        };
        match log {
            Ok(l) => {
                w.ack_seen = l.acked();
                w.log = Some(l);
            }
            Err(e) => w.degrade(&e),
        }
        w
    }

    fn run(mut self) {
        loop {
            let wake = self.wait_and_take();
            self.write();
            self.serve();
            if matches!(wake, Wake::Shutdown) {
                // Flush what the last write itself raised (a storage event), then stop. A
                // degraded log cannot do better: its records die with the process.
                self.take_queue();
                self.write();
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
        let mut st = lock(&self.shared);
        let wake = loop {
            if st.shutdown {
                break Wake::Shutdown;
            }
            let ack_due = self.log.is_some() && st.ack_to > self.ack_seen;
            if !st.reads.is_empty() || ack_due || st.queue.len() >= opts.batch_max {
                break Wake::Work;
            }
            // The earliest of: the oldest record's commit deadline, the next disk retry.
            let commit_at = st.first_at.map(|t| t + opts.max_commit_delay);
            let retry_at = if self.log.is_none() {
                self.retry_at
            } else {
                None
            };
            let deadline = match (commit_at, retry_at) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let now = Instant::now();
            match deadline {
                Some(d) if now >= d => break Wake::Work,
                Some(d) => {
                    st = self
                        .shared
                        .wake
                        .wait_timeout(st, d - now)
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                }
                None => st = self.shared.wake.wait(st).unwrap_or_else(|p| p.into_inner()),
            }
        };
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
    fn raise_own(&mut self, event: Event) {
        tracing::warn!(category = "storage", "{}", event.message);
        let mut st = lock(&self.shared);
        let seq = st.next_seq;
        st.next_seq += 1;
        st.queue.push_back(stamp(seq, event));
        st.first_at.get_or_insert_with(Instant::now);
    }

    fn write(&mut self) {
        let mut reopened = false;
        if self.log.is_none() {
            if self.retry_at.is_some_and(|t| Instant::now() < t) {
                return;
            }
            match (self.reopen)() {
                Ok(log) => {
                    // Records the reopened log already holds (written before the failure)
                    // are not written twice.
                    let last = log.last_seq();
                    self.pending.retain(|r| r.seq > last);
                    self.ack_seen = log.acked();
                    self.log = Some(log);
                    self.retry_at = None;
                    reopened = true;
                }
                Err(e) => {
                    self.retry_at = Some(Instant::now() + self.shared.opts.retry_interval);
                    tracing::debug!("event log still failing: {e}");
                    return;
                }
            }
        }
        if !self.pending.is_empty() {
            let log = self.log.as_mut().expect("checked above");
            let batch = self.pending.make_contiguous();
            let last = batch.last().map(|r| r.seq).unwrap_or(0);
            let result = log.append(batch).and_then(|d| log.commit().map(|()| d));
            match result {
                Ok(dropped) => {
                    self.shared.counters.syncs.fetch_add(1, Ordering::Relaxed);
                    self.shared.counters.batches.fetch_add(1, Ordering::Relaxed);
                    self.pending.clear();
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
        if reopened {
            // Recovered only once a write went through, so health does not flap.
            self.shared
                .counters
                .degraded
                .store(false, Ordering::Relaxed);
            if let Some((n, lo, hi)) = self.lost.take() {
                self.raise_own(Event::events_dropped(n, lo, hi));
            }
            self.raise_own(Event::event_log_recovered());
            tracing::info!("event log writable again");
        }
    }

    fn degrade(&mut self, e: &LogError) {
        self.log = None;
        self.retry_at = Some(Instant::now() + self.shared.opts.retry_interval);
        if !self.shared.counters.degraded.swap(true, Ordering::Relaxed) {
            tracing::error!("event log failed, keeping events in memory: {e}");
            self.raise_own(Event::event_log_degraded(&e.to_string()));
        } else {
            tracing::debug!("event log still failing: {e}");
        }
    }

    /// Cursor writes and delivery reads.
    fn serve(&mut self) {
        let (ack_to, reads) = {
            let mut st = lock(&self.shared);
            (st.ack_to, std::mem::take(&mut st.reads))
        };
        if let Some(log) = self.log.as_mut()
            && ack_to > self.ack_seen
        {
            self.ack_seen = ack_to;
            match log.set_acked(ack_to) {
                Ok(()) => self
                    .shared
                    .counters
                    .acked
                    .store(log.acked(), Ordering::Relaxed),
                Err(e) => self.degrade(&e),
            }
        }
        for req in reads {
            let mut out = match self.log.as_mut() {
                Some(log) => log.read_after(req.after, req.max).unwrap_or_default(),
                None => Vec::new(),
            };
            // While degraded, the memory view is part of the queue too.
            let last = out.last().map_or(req.after, |r| r.seq);
            for r in self.pending.iter().filter(|r| r.seq > last) {
                if out.len() >= req.max {
                    break;
                }
                out.push(r.clone());
            }
            let _ = req.reply.send(out);
        }
    }
}

fn stamp(seq: u64, event: Event) -> Record {
    Record {
        seq,
        raised_at_ms: crate::time::unix_millis(SystemTime::now()),
        event,
    }
}
