//! `WriterCore`: every decision of the event log writer, without I/O, threads or clocks.
//!
//! Producers hand it records (`handle_push`), acknowledgements (`handle_ack`,
//! `handle_ack_loss`), delivery reads (`handle_read`) and the shutdown (`handle_shutdown`);
//! the writer thread asks it what to do next (`poll_action`, with the time as a value) and
//! reports what the disk said (`handle`, or one by one: `handle_reopened`, `handle_committed`,
//! `handle_cursor_written`, `handle_loss_ack_written`, `complete_read`). When there is nothing to do, `poll_timeout`
//! says until when. Time comes in as `Now`: the monotonic instant every deadline is counted
//! on, and the wall clock the records the writer raises itself are stamped with.
//!
//! One cycle, as the thread around it runs it (`writer.rs`):
//!
//! 1. wait until something is due: the oldest record's commit deadline (group commit), a full
//!    batch, a delivery read, an operator's loss acknowledgement, the oldest unwritten
//!    acknowledgement's deadline, the next disk retry, or the shutdown;
//! 2. take the queue if its commit is due (a read alone does not cut a batch short), with one
//!    `events_dropped` warning for what the full queue pushed out;
//! 3. write: `Reopen` first when degraded and the retry is due, then `Commit` the pending
//!    records (append and one `fdatasync`);
//! 4. serve: `WriteLossAck`, `WriteCursor` when due (one cursor write per commit window at
//!    most), then one `Read` per delivery read taken at the start of this step.
//!
//! At shutdown a last cycle takes what the first one raised itself, writes it and writes the
//! cursor whatever its deadline, then says `Stop`.
//!
//! The caller owns the reply handle of a read (`R`: a channel in the writer, a token in the
//! tests); the core hands it back in the `Read` action.

use std::collections::VecDeque;
use std::time::Instant;

use super::super::log::{Dropped, LogError, Recovery};
use super::super::{Event, Record};
use super::{LossReport, WriterOptions};

/// The time as the shell read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    /// Monotonic: commit, cursor and retry deadlines.
    pub at: Instant,
    /// The wall clock (Unix ms): the raise time of the records the writer raises itself.
    pub unix_ms: u64,
}

/// What the log holds after an open (the first one, or a retry).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Opened {
    /// The highest sequence number in the log (records at or below it are never written
    /// again).
    pub last_seq: u64,
    /// The delivery cursor.
    pub acked: u64,
    /// How far an operator acknowledged reported loss (the `loss-ack` file).
    pub loss_acked: u64,
}

/// A cursor write that went through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CursorWritten {
    /// The cursor file changed (a newer-format cursor is never overwritten).
    pub wrote: bool,
    /// The acknowledgement the log now holds.
    pub acked: u64,
}

/// What a delivery read found on disk.
#[derive(Debug)]
pub enum DiskRead {
    Records(Vec<Record>),
    /// The log could not be read; it holds records up to `last_seq`.
    Failed {
        error: LogError,
        last_seq: u64,
    },
    /// There is no log (it never opened).
    NoLog,
}

/// What the writer thread must do next.
#[derive(Debug)]
pub enum Action<R> {
    /// Open the log again and recover it (a retry while degraded): `handle_reopened`.
    Reopen,
    /// Append these records and commit them (one `fdatasync`): `handle_committed`, with the
    /// records back.
    Commit(Vec<Record>),
    /// Persist an operator's loss acknowledgement up to here: `handle_loss_ack_written`.
    WriteLossAck(u64),
    /// Write the delivery cursor: `handle_cursor_written`.
    WriteCursor(u64),
    /// Read up to `max` records after `after` from the log, then `complete_read` and reply.
    Read { after: u64, max: usize, reply: R },
    /// The shutdown flush is done: the thread ends.
    Stop,
}

/// What the disk said to an action (`writer::perform` carries them out).
#[derive(Debug)]
pub enum Outcome<R> {
    Reopened(Result<(Opened, Recovery), LogError>),
    /// The records of the `Commit`, back, and what the byte budget dropped.
    Committed(Vec<Record>, Result<Option<Dropped>, LogError>),
    LossAckWritten(Result<(), LogError>),
    CursorWritten(Result<CursorWritten, LogError>),
    Read {
        after: u64,
        max: usize,
        reply: R,
        disk: DiskRead,
    },
}

/// A line for the process log. The core only collects them (`take_notices`); the thread
/// writes them with the lock released, so a producer never waits for the journal either.
#[derive(Debug, Clone, PartialEq)]
pub enum Notice {
    /// An event the writer raised itself, logged at its severity's level.
    Raised(Event),
    /// The disk failed: events are kept in memory.
    Degraded(String),
    /// A retry (or a write while degraded) failed again: quiet, debug level.
    StillFailing(String),
    /// A retry went through.
    Writable,
    /// A delivery read could not read the disk: delivery waits.
    Unreadable(String),
}

impl Notice {
    pub fn log(&self) {
        match self {
            Notice::Raised(event) => event.log(),
            Notice::Degraded(e) => {
                tracing::error!("event log failed, keeping events in memory: {e}")
            }
            Notice::StillFailing(e) => tracing::debug!("event log still failing: {e}"),
            Notice::Writable => tracing::info!("event log writable again"),
            Notice::Unreadable(e) => tracing::warn!("event log unreadable, delivery waits: {e}"),
        }
    }
}

/// Counters and flags of the writer (`/healthz`, `LogStatus`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    pub degraded: bool,
    /// Records dropped because the queue to the writer was full.
    pub queue_overflow: u64,
    /// Records dropped while degraded because the memory view was full.
    pub memory_overflow: u64,
    /// Undelivered records the byte budget pushed out.
    pub budget_dropped: u64,
    /// Group commits (one `fdatasync` of the tail each).
    pub syncs: u64,
    pub batches: u64,
    /// Cursor file writes (two syncs each: the temp file and the directory).
    pub cursor_writes: u64,
    /// The acknowledgement the log holds.
    pub acked: u64,
}

struct ReadRequest<R> {
    after: u64,
    max: usize,
    reply: R,
}

/// Where the writer stands in its cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting until something is due.
    Wait,
    /// The batch is taken: reopen and commit next.
    Write,
    /// An action is out; its result comes next.
    Awaiting,
    /// The loss-ack file, then the cursor.
    ServeLossAck,
    ServeCursor,
    /// When the next cursor write is due.
    ServeAckSince,
    /// The reads taken at the start of the serve step.
    ServeReads,
    Stopped,
}

/// Dropped records not yet reported: (count, first seq, last seq).
type Overflow = Option<(u64, u64, u64)>;

pub struct WriterCore<R> {
    opts: WriterOptions,
    counters: Counters,
    durable_seq: u64,

    // ---- what producers hand in -------------------------------------------------------
    next_seq: u64,
    queue: VecDeque<Record>,
    /// When the oldest queued record arrived (group-commit deadline).
    first_at: Option<Instant>,
    /// Queue overflow not yet reported.
    overflow: Overflow,
    ack_to: u64,
    /// When the oldest acknowledgement not yet handed to the cursor file arrived.
    ack_since: Option<Instant>,
    reads: Vec<ReadRequest<R>>,
    shutdown: bool,
    /// The newest loss report (acknowledged once `ack_to` or `loss_ack_to` reaches it).
    loss: Option<LossReport>,
    /// Highest lost sequence number reported in this run: a reopen reports only above it.
    loss_reported_through: u64,
    /// The loss report an operator acknowledged (`ack_loss`).
    loss_ack_to: u64,
    /// The highest lost sequence number it covered; the writer persists it.
    loss_ack_through: u64,

    // ---- the writer's side --------------------------------------------------------------
    phase: Phase,
    /// The shutdown was seen when this cycle started; `last`: this is the final cycle.
    closing: bool,
    last: bool,
    /// The log takes writes. While degraded the log is kept for reading only.
    writable: bool,
    /// Records taken from the queue and not yet durable (while degraded: the memory view).
    pending: VecDeque<Record>,
    retry_at: Option<Instant>,
    /// Memory-view overflow not yet reported.
    lost: Overflow,
    /// A reopen went through this cycle: its recovery, reported once a write succeeded.
    reopened: Option<Recovery>,
    /// The acknowledgement last handed to the log.
    ack_seen: u64,
    /// The operator's loss acknowledgement last handed to the log.
    loss_ack_seen: u64,
    /// The serve step's view, taken at its start: the cursor is due, up to here.
    ack_due: bool,
    ack_target: u64,
    serving: VecDeque<ReadRequest<R>>,
    /// Lines for the process log, oldest first.
    notices: Vec<Notice>,
}

/// Count a dropped record into an overflow report.
fn note_drop(o: &mut Overflow, seq: u64) {
    let o = o.get_or_insert((0, seq, seq));
    o.0 += 1;
    o.2 = seq;
}

fn stamp(seq: u64, event: Event, now: Now) -> Record {
    Record {
        seq,
        raised_at_ms: now.unix_ms,
        event,
    }
}

impl<R> WriterCore<R> {
    /// A writer over the log the first open gave (`Ok`: what it holds and the sequence
    /// number the next event gets), or over none (`Err`: it starts degraded, raising
    /// `event_log_degraded`, and retries).
    pub fn new(opts: WriterOptions, first: Result<(Opened, u64), &LogError>, now: Now) -> Self {
        let (opened, next_seq) = match first {
            Ok((o, next)) => (o, next),
            Err(_) => (Opened::default(), 1),
        };
        let mut core = WriterCore {
            opts,
            counters: Counters {
                acked: opened.acked,
                ..Counters::default()
            },
            durable_seq: next_seq - 1,
            next_seq,
            queue: VecDeque::new(),
            first_at: None,
            overflow: None,
            ack_to: opened.acked,
            ack_since: None,
            reads: Vec::new(),
            shutdown: false,
            loss: None,
            loss_reported_through: 0,
            loss_ack_to: 0,
            loss_ack_through: opened.loss_acked,
            phase: Phase::Wait,
            closing: false,
            last: false,
            writable: true,
            pending: VecDeque::new(),
            retry_at: None,
            lost: None,
            reopened: None,
            ack_seen: opened.acked,
            loss_ack_seen: opened.loss_acked,
            ack_due: false,
            ack_target: 0,
            serving: VecDeque::new(),
            notices: Vec::new(),
        };
        if let Err(e) = first {
            core.degrade(e, now);
        }
        core
    }

    // ---- producers ----------------------------------------------------------------------

    /// Queue one event raised at `raised_at_ms` (wall clock); returns its sequence number
    /// and whether the writer must be woken: only for the first record of a batch or a
    /// full batch (other records wait for the deadline it already set). When the queue is
    /// full the oldest record goes, counted for one `events_dropped` warning.
    pub fn handle_push(&mut self, event: Event, raised_at_ms: u64, now: Instant) -> (u64, bool) {
        let seq = self.next_seq;
        self.next_seq += 1;
        if self.queue.len() >= self.opts.queue_max
            && let Some(old) = self.queue.pop_front()
        {
            self.counters.queue_overflow += 1;
            note_drop(&mut self.overflow, old.seq);
        }
        self.queue.push_back(Record {
            seq,
            raised_at_ms,
            event,
        });
        self.first_at.get_or_insert(now);
        let len = self.queue.len();
        (seq, len == 1 || len == self.opts.batch_max)
    }

    /// The manager has everything up to `seq`. The cursor file follows when this (or an
    /// earlier, unwritten) acknowledgement has waited the commit delay: one cursor write
    /// per commit window at most. Returns whether the writer must be woken (its deadline
    /// changed).
    pub fn handle_ack(&mut self, seq: u64, now: Instant) -> bool {
        if seq <= self.ack_to {
            return false;
        }
        self.ack_to = seq;
        if self.ack_since.is_some() {
            return false;
        }
        self.ack_since = Some(now);
        true
    }

    /// An operator acknowledges the loss report: health is `ok` again at once, and the
    /// writer persists how far the loss went (the `loss-ack` file; wake it). Returns what
    /// was acknowledged.
    pub fn handle_ack_loss(&mut self) -> Option<LossReport> {
        let report = self.unacked_loss()?;
        self.loss_ack_to = report.seq;
        self.loss_ack_through = self.loss_ack_through.max(report.through);
        Some(report)
    }

    /// A delivery read (the writer must be woken): answered in the next serve step.
    pub fn handle_read(&mut self, after: u64, max: usize, reply: R) {
        self.reads.push(ReadRequest { after, max, reply });
    }

    /// Flush and stop (the writer must be woken).
    pub fn handle_shutdown(&mut self) {
        self.shutdown = true;
    }

    /// The loss event `seq` reported `lost` events, the highest of them `through`. Loss
    /// reported earlier and not acknowledged yet is added in: acknowledging this report
    /// (a higher sequence number) acknowledges those too.
    pub fn note_loss(&mut self, seq: u64, lost: u64, through: u64) {
        let earlier = self.unacked_loss();
        self.loss = Some(LossReport {
            seq,
            lost: earlier.map_or(0, |l| l.lost) + lost,
            through: earlier.map_or(0, |l| l.through).max(through),
        });
        self.loss_reported_through = self.loss_reported_through.max(through);
    }

    /// The loss report, unless the manager's acknowledgement or an operator's reached it.
    pub fn unacked_loss(&self) -> Option<LossReport> {
        self.loss
            .filter(|l| l.seq > self.ack_to.max(self.loss_ack_to))
    }

    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// The highest acknowledgement received (the cursor file may lag behind it).
    pub fn ack_requested(&self) -> u64 {
        self.ack_to
    }

    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// The lines for the process log collected since the last call, oldest first.
    pub fn take_notices(&mut self) -> Vec<Notice> {
        std::mem::take(&mut self.notices)
    }

    /// The highest sequence number a commit confirmed.
    pub fn durable_seq(&self) -> u64 {
        self.durable_seq
    }

    // ---- the writer: what to do ----------------------------------------------------------

    /// The next action, or `None`: nothing is due before `poll_timeout` (or an action is
    /// out and its result has not come back).
    pub fn poll_action(&mut self, now: Now) -> Option<Action<R>> {
        loop {
            match self.phase {
                Phase::Wait => {
                    if !self.due(now.at) {
                        return None;
                    }
                    self.closing = self.shutdown;
                    self.take(now);
                    self.phase = Phase::Write;
                }
                Phase::Write => {
                    if !self.writable {
                        if self.retry_at.is_some_and(|t| now.at < t) {
                            self.start_serving(now);
                            continue;
                        }
                        self.phase = Phase::Awaiting;
                        return Some(Action::Reopen);
                    }
                    if !self.pending.is_empty() {
                        self.phase = Phase::Awaiting;
                        let batch = std::mem::take(&mut self.pending);
                        return Some(Action::Commit(batch.into()));
                    }
                    self.written(now);
                }
                Phase::Awaiting | Phase::Stopped => return None,
                Phase::ServeLossAck => {
                    self.phase = Phase::ServeCursor;
                    let through = self.loss_ack_through;
                    if self.writable && through > self.loss_ack_seen {
                        self.loss_ack_seen = through;
                        self.phase = Phase::Awaiting;
                        return Some(Action::WriteLossAck(through));
                    }
                }
                Phase::ServeCursor => {
                    self.phase = Phase::ServeAckSince;
                    if self.writable && self.ack_due && self.ack_target > self.ack_seen {
                        self.ack_seen = self.ack_target;
                        self.phase = Phase::Awaiting;
                        return Some(Action::WriteCursor(self.ack_target));
                    }
                }
                Phase::ServeAckSince => {
                    // The next cursor write is due a commit delay after the first
                    // acknowledgement not yet handed to the log: one write per window.
                    if self.writable {
                        if self.ack_to <= self.ack_seen {
                            self.ack_since = None;
                        } else if self.ack_due {
                            self.ack_since = Some(now.at);
                        }
                    }
                    self.phase = Phase::ServeReads;
                }
                Phase::ServeReads => {
                    if let Some(req) = self.serving.pop_front() {
                        return Some(Action::Read {
                            after: req.after,
                            max: req.max,
                            reply: req.reply,
                        });
                    }
                    if self.last {
                        self.phase = Phase::Stopped;
                        return Some(Action::Stop);
                    }
                    if self.closing {
                        // Flush what the last write itself raised (a storage event) and the
                        // last acknowledgement, then stop. A degraded log cannot do better:
                        // its records die with the process.
                        self.last = true;
                        let taken = std::mem::take(&mut self.queue);
                        self.keep(taken);
                        self.phase = Phase::Write;
                    } else {
                        self.phase = Phase::Wait;
                    }
                }
            }
        }
    }

    /// Until when the writer may sleep (`None`: until a producer wakes it). Only meaningful
    /// after `poll_action` returned `None` in the waiting phase.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.phase != Phase::Wait {
            return None;
        }
        // The earliest of: the oldest record's commit deadline, the oldest unwritten
        // acknowledgement's, the next disk retry.
        let delay = self.opts.max_commit_delay;
        let commit_at = self.first_at.map(|t| t + delay);
        let cursor_at = if self.writable && self.ack_to > self.ack_seen {
            self.ack_since.map(|t| t + delay)
        } else {
            None
        };
        let retry_at = if self.writable { None } else { self.retry_at };
        [commit_at, cursor_at, retry_at].into_iter().flatten().min()
    }

    /// Whether a cycle must start now.
    fn due(&self, now: Instant) -> bool {
        self.shutdown
            || !self.reads.is_empty()
            || self.queue.len() >= self.opts.batch_max
            // An operator's loss acknowledgement is rare: persisted at once.
            || (self.writable && self.loss_ack_through > self.loss_ack_seen)
            || self.poll_timeout().is_some_and(|d| now >= d)
    }

    /// Take the queue into `pending` if its commit is due. A read or a cursor deadline
    /// alone does not cut the batch short, so group commit holds while the manager reads.
    fn take(&mut self, now: Now) {
        let commit_due = self.closing
            || self.queue.len() >= self.opts.batch_max
            || self
                .first_at
                .is_some_and(|t| now.at >= t + self.opts.max_commit_delay);
        if !commit_due {
            return;
        }
        let mut batch = std::mem::take(&mut self.queue);
        self.first_at = None;
        if let Some((count, first, last)) = self.overflow.take() {
            let seq = self.next_seq;
            self.next_seq += 1;
            batch.push_back(stamp(seq, Event::events_dropped(count, first, last), now));
        }
        self.keep(batch);
    }

    /// Add records to `pending`, within the memory bound.
    fn keep(&mut self, records: VecDeque<Record>) {
        let max = self.opts.memory_max;
        for r in records {
            if self.pending.len() >= max
                && let Some(old) = self.pending.pop_front()
            {
                self.counters.memory_overflow += 1;
                note_drop(&mut self.lost, old.seq);
            }
            self.pending.push_back(r);
        }
    }

    /// A record raised by the writer itself (a storage event). It joins the back of the
    /// queue like any other, so sequence numbers stay in queue order; it goes out with the
    /// next batch.
    fn raise_own(&mut self, event: Event, now: Now) -> u64 {
        self.notices.push(Notice::Raised(event.clone()));
        let seq = self.next_seq;
        self.next_seq += 1;
        self.queue.push_back(stamp(seq, event, now));
        self.first_at.get_or_insert(now.at);
        seq
    }

    /// The write step went through (or had nothing to write): a reopen of this cycle is a
    /// recovery now. Recovered only once a write went through, so health does not flap.
    fn written(&mut self, now: Now) {
        if let Some(rec) = self.reopened.take() {
            self.counters.degraded = false;
            if let Some((n, lo, hi)) = self.lost.take() {
                self.raise_own(Event::events_dropped(n, lo, hi), now);
            }
            self.report_new_loss(&rec, now);
            self.raise_own(Event::event_log_recovered(), now);
            self.notices.push(Notice::Writable);
        }
        self.start_serving(now);
    }

    /// The serve step sees the acknowledgement and the reads as they are at its start.
    fn start_serving(&mut self, now: Now) {
        self.reopened = None;
        let force = self.last;
        self.ack_due = force
            || self
                .ack_since
                .is_some_and(|t| now.at >= t + self.opts.max_commit_delay);
        self.ack_target = self.ack_to;
        self.serving.extend(self.reads.drain(..));
        self.phase = Phase::ServeLossAck;
    }

    /// The reopened log's recovery found records lost to damage: report those not reported
    /// in this run yet (the failing disk may have damaged more).
    fn report_new_loss(&mut self, rec: &Recovery, now: Now) {
        let through = self.loss_reported_through;
        let fresh: Vec<(u64, u64)> = rec
            .lost_ranges
            .iter()
            .filter(|r| r.1 > through)
            .map(|&(lo, hi)| (lo.max(through + 1), hi))
            .collect();
        let lost: u64 = fresh.iter().map(|(lo, hi)| hi - lo + 1).sum();
        if lost > 0 {
            let event = Event::event_log_corrupt(lost, &fresh, !rec.lost_inexact);
            let seq = self.raise_own(event, now);
            let last = fresh.last().map_or(0, |r| r.1);
            self.note_loss(seq, lost, last);
        }
    }

    /// The disk failed: keep records in memory, keep the log for reading, retry later.
    fn degrade(&mut self, e: &LogError, now: Now) {
        self.writable = false;
        self.retry_at = Some(now.at + self.opts.retry_interval);
        if !self.counters.degraded {
            self.counters.degraded = true;
            self.notices.push(Notice::Degraded(e.to_string()));
            self.raise_own(Event::event_log_degraded(&e.to_string()), now);
        } else {
            self.notices.push(Notice::StillFailing(e.to_string()));
        }
    }

    // ---- the writer: what the disk said ---------------------------------------------------

    /// Hand in what the disk said to the last action. A read's answer comes back with its
    /// reply handle, for the caller to send.
    pub fn handle(&mut self, outcome: Outcome<R>, now: Now) -> Option<(R, Vec<Record>)> {
        match outcome {
            Outcome::Reopened(r) => self.handle_reopened(r, now),
            Outcome::Committed(batch, r) => self.handle_committed(batch, r, now),
            Outcome::LossAckWritten(r) => self.handle_loss_ack_written(r, now),
            Outcome::CursorWritten(r) => self.handle_cursor_written(r, now),
            Outcome::Read {
                after,
                max,
                reply,
                disk,
            } => return Some((reply, self.complete_read(after, max, disk))),
        }
        None
    }

    /// The answer to `Reopen`: the log (and what its recovery found), or the error.
    pub fn handle_reopened(&mut self, result: Result<(Opened, Recovery), LogError>, now: Now) {
        match result {
            Ok((log, rec)) => {
                // Records the reopened log already holds (written before the failure) are
                // not written twice.
                self.pending.retain(|r| r.seq > log.last_seq);
                self.ack_seen = log.acked;
                self.loss_ack_seen = log.loss_acked;
                self.writable = true;
                self.retry_at = None;
                self.reopened = Some(rec);
                self.phase = Phase::Write;
            }
            Err(e) => {
                self.retry_at = Some(now.at + self.opts.retry_interval);
                self.notices.push(Notice::StillFailing(e.to_string()));
                self.start_serving(now);
            }
        }
    }

    /// The answer to `Commit`, with its records back: on success what the byte budget
    /// dropped to make room; on failure the records stay in memory.
    pub fn handle_committed(
        &mut self,
        batch: Vec<Record>,
        result: Result<Option<Dropped>, LogError>,
        now: Now,
    ) {
        match result {
            Ok(dropped) => {
                self.counters.syncs += 1;
                self.counters.batches += 1;
                if let Some(last) = batch.last() {
                    self.durable_seq = last.seq;
                }
                if let Some(d) = dropped {
                    self.counters.budget_dropped += d.count;
                    self.raise_own(Event::events_dropped(d.count, d.first_seq, d.last_seq), now);
                }
                self.written(now);
            }
            Err(e) => {
                // Still failing (a read-only filesystem opens fine and fails here): stay
                // degraded, quietly.
                self.pending = batch.into();
                self.degrade(&e, now);
                self.start_serving(now);
            }
        }
    }

    /// The answer to `WriteLossAck`. On failure health is `ok` all the same (the
    /// acknowledgement is held in memory); only a restart before the disk is back reports
    /// the loss again.
    pub fn handle_loss_ack_written(&mut self, result: Result<(), LogError>, now: Now) {
        if let Err(e) = result {
            self.degrade(&e, now);
        }
        self.phase = Phase::ServeCursor;
    }

    /// The answer to `WriteCursor`.
    pub fn handle_cursor_written(&mut self, result: Result<CursorWritten, LogError>, now: Now) {
        match result {
            Ok(c) => {
                if c.wrote {
                    self.counters.cursor_writes += 1;
                }
                self.counters.acked = c.acked;
            }
            Err(e) => self.degrade(&e, now),
        }
        self.phase = Phase::ServeAckSince;
    }

    /// The answer to `Read`: up to `max` records after `after`, in order: what the log
    /// holds on disk (read even while degraded), then what is held in memory. If the disk
    /// cannot be read, nothing from memory is served past what it holds: delivery waits
    /// (health says `degraded` meanwhile) rather than let an acknowledgement move the
    /// cursor over records on disk.
    pub fn complete_read(&mut self, after: u64, max: usize, disk: DiskRead) -> Vec<Record> {
        let mut out = match disk {
            DiskRead::Records(v) => v,
            DiskRead::Failed { error, last_seq } if last_seq > after => {
                self.notices.push(Notice::Unreadable(error.to_string()));
                return Vec::new();
            }
            DiskRead::Failed { .. } | DiskRead::NoLog => Vec::new(),
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
