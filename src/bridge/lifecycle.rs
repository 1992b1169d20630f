//! The bridge's session lifecycle as a sans-IO state machine (`shared/seeds/runtime-recovery.txt`).
//!
//! Nothing here touches a socket, a process or a clock. The shell (`bridge/mod.rs`) feeds
//! inputs with the current time (`attach`, `detach`, `worker_started`, `worker_data`,
//! `worker_exited`, `handle_timeout`), drains [`Action`]s with [`StreamManager::poll_action`]
//! and sleeps until [`StreamManager::poll_timeout`], like quinn-proto or str0m. The tests
//! drive it on fake time with a fake worker.
//!
//! The rules, as the seed states them:
//! - the first client attach creates the session and starts its worker; later clients of
//!   the same stream share it;
//! - the last client leaving (close or error) stops the worker and destroys the session;
//! - an unexpected worker exit restarts the worker after `restart_delay`, keeping clients;
//! - a manual stop never restarts, and clears (detaches) the clients;
//! - every restart counts; at `max_restarts` the session goes to `errored` (an error is
//!   logged, an [`Action::Errored`] and the critical `bridge` event emitted) and stops
//!   retrying, clients stay attached;
//! - every `sweep_interval` the manager restarts a `running` session with clients whose last
//!   data is older than `idle_timeout`, destroys sessions without clients, and leaves
//!   sessions that are not running alone;
//! - restart is not destroy: only the manager destroys, and only without clients.
//!
//! Quoll's own additions, each needed to make the rules total: a worker is named by a
//! [`WorkerId`], so the exit of a worker that was already replaced or whose session is gone
//! is ignored; a restart that the manager asked for (idle recovery) starts the new worker as
//! soon as the old one has exited, without the delay; a client attaching to an `errored`
//! session is an operator retry: the restart count is reset and the worker started again.
//!
//! Events follow the events seed's deduplication rule (transitions only, once per cycle):
//! the `errored` event is raised once per stream until the stream delivers media again,
//! which raises the `recovered` event. A viewer page that keeps reloading an errored stream
//! (each reload a new session that fails again) therefore raises one alarm, not one per
//! reload; the log still has a `session errored` line for each.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

use crate::events::Event;

/// The recovery knobs (the seed's four variables).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Timing {
    /// `STREAM_IDLE_TIMEOUT_MS`: a running session with clients and no data for this long
    /// is restarted by the sweep.
    pub idle_timeout: Duration,
    /// `STREAM_SWEEP_INTERVAL_MS`.
    pub sweep_interval: Duration,
    /// `STREAM_RESTART_DELAY_MS`: wait after an unexpected exit before starting again.
    pub restart_delay: Duration,
    /// `STREAM_MAX_RESTARTS`.
    pub max_restarts: u32,
}

impl Timing {
    pub const DEFAULT: Timing = Timing {
        idle_timeout: Duration::from_millis(15_000),
        sweep_interval: Duration::from_millis(5_000),
        restart_delay: Duration::from_millis(2_000),
        max_restarts: 5,
    };

    /// The variables' names, in the order of the fields.
    pub const ENV: [&'static str; 4] = [
        "STREAM_IDLE_TIMEOUT_MS",
        "STREAM_SWEEP_INTERVAL_MS",
        "STREAM_RESTART_DELAY_MS",
        "STREAM_MAX_RESTARTS",
    ];

    /// `self` with every variable `get` returns overriding its field, under the same rules
    /// as the config fields: the three `_MS` variables within
    /// [`BridgeConfig::MS_RANGE`](crate::config::BridgeConfig::MS_RANGE), the restart count a
    /// whole number that fits `u32`. A value that breaks them is not applied and is reported,
    /// naming the variable; the daemon refuses to start on any (see
    /// [`check_env`](super::check_env)), as it does on an out-of-range config field.
    pub fn with_env(mut self, get: impl Fn(&str) -> Option<String>) -> (Timing, Vec<String>) {
        let ms = crate::config::BridgeConfig::MS_RANGE;
        let mut problems = Vec::new();
        for (i, name) in Self::ENV.iter().enumerate() {
            let Some(raw) = get(name) else { continue };
            let n = match raw.trim().parse::<u64>() {
                Ok(n) => n,
                Err(_) => {
                    problems.push(format!("{name}={raw:?} is not a whole number"));
                    continue;
                }
            };
            let range = if i < 3 {
                ms.clone()
            } else {
                0..=u64::from(u32::MAX)
            };
            if !range.contains(&n) {
                problems.push(format!(
                    "{name}={raw:?} is out of range ({}..={})",
                    range.start(),
                    range.end()
                ));
                continue;
            }
            match i {
                0 => self.idle_timeout = Duration::from_millis(n),
                1 => self.sweep_interval = Duration::from_millis(n),
                2 => self.restart_delay = Duration::from_millis(n),
                _ => self.max_restarts = n as u32,
            }
        }
        (self, problems)
    }
}

impl Default for Timing {
    fn default() -> Self {
        Self::DEFAULT
    }
}

pub type ClientId = u64;
pub type SessionId = u64;
/// Names one worker run (one FFmpeg process, one in-process RTSP pull).
pub type WorkerId = u64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SessionState {
    /// A worker was asked to start and has not reported yet.
    Starting,
    Running,
    /// Between a worker exit (or a requested stop for recovery) and the next start.
    Restarting,
    /// Manually stopped: no restart, no clients.
    Stopped,
    /// `max_restarts` reached: no more retries.
    Errored,
}

impl SessionState {
    pub fn as_str(self) -> &'static str {
        match self {
            SessionState::Starting => "starting",
            SessionState::Running => "running",
            SessionState::Restarting => "restarting",
            SessionState::Stopped => "stopped",
            SessionState::Errored => "errored",
        }
    }
}

/// Why a worker is stopped on purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    LastClientLeft,
    /// The sweep found the session without clients (they left without a detach).
    NoClients,
    Manual,
    IdleTimeout,
    Shutdown,
}

impl StopReason {
    pub fn as_str(self) -> &'static str {
        match self {
            StopReason::LastClientLeft => "last client left",
            StopReason::NoClients => "no clients at sweep",
            StopReason::Manual => "manual stop",
            StopReason::IdleTimeout => "idle timeout",
            StopReason::Shutdown => "shutdown",
        }
    }
}

impl fmt::Display for StopReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A worker's pid in a log line: the number, or `none` (an in-process worker, or no worker
/// at that moment). Every log line about a session carries `streamId`, `sessionId`, `pid`
/// and `reason`.
#[derive(Debug, Clone, Copy)]
pub struct LogPid(pub Option<u32>);

impl fmt::Display for LogPid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(pid) => write!(f, "{pid}"),
            None => f.write_str("none"),
        }
    }
}

/// How a client left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DetachReason {
    Close,
    Error,
}

/// How a worker ended, as the shell saw it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Exit {
    pub code: Option<i32>,
    pub signal: Option<i32>,
    /// A short reason (spawn failure, RTSP error, end of stream).
    pub error: Option<String>,
}

/// What the shell must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    StartWorker {
        stream_id: String,
        session_id: SessionId,
        worker: WorkerId,
    },
    /// Stop (kill) this worker; its exit is reported with `worker_exited` as usual.
    StopWorker {
        stream_id: String,
        session_id: SessionId,
        worker: WorkerId,
        reason: StopReason,
    },
    /// Close this client's connection: its session was stopped.
    DetachClient { stream_id: String, client: ClientId },
    /// The session gave up after `max_restarts`.
    Errored {
        stream_id: String,
        session_id: SessionId,
        restart_count: u32,
        error: String,
    },
    /// Raise this event (the bridge's `errored` and `recovered` events).
    RaiseEvent(Event),
    /// The session is gone; drop everything the shell keeps for it.
    Destroyed {
        stream_id: String,
        session_id: SessionId,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachError {
    /// The stream already has `max_clients` clients.
    Full,
    /// The client id is attached already.
    Duplicate,
}

/// One stream's session.
#[derive(Debug, Clone)]
pub struct Session {
    pub stream_id: String,
    pub session_id: SessionId,
    pub state: SessionState,
    pub clients: BTreeSet<ClientId>,
    /// The live worker, if one was started and has not exited.
    pub worker: Option<WorkerId>,
    pub pid: Option<u32>,
    pub restart_count: u32,
    pub created_at: Instant,
    pub last_started_at: Option<Instant>,
    pub last_stopped_at: Option<Instant>,
    pub last_restart_at: Option<Instant>,
    pub last_data_at: Option<Instant>,
    /// The last sign of life of a worker that waits on a source restarting cannot fix (a
    /// flow tap while its flow is quiet or restarting): it counts as activity for the idle
    /// sweep, not as media.
    pub alive_at: Option<Instant>,
    pub last_exit_code: Option<i32>,
    pub last_exit_signal: Option<i32>,
    pub last_error: Option<String>,
    pub bytes: u64,
    /// Set by a manual stop: the worker's exit must not restart it.
    pub manual_stop: bool,
    /// A recovery restart was asked for: start again as soon as the worker has exited.
    restart_requested: bool,
    /// When the delayed restart is due.
    restart_at: Option<Instant>,
    /// The pid of the worker that last exited, for the log line of the restart that
    /// replaces it.
    exited_pid: Option<u32>,
    /// Why the next restart happens (the exit's cause, or the recovery's reason), for its
    /// log line.
    restart_reason: Option<String>,
}

/// The serializable view of a session (the seed's snapshot fields; times in Unix ms).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionSnapshot {
    pub stream_id: String,
    pub session_id: SessionId,
    pub state: SessionState,
    pub pid: Option<u32>,
    pub client_count: usize,
    pub restart_count: u32,
    pub last_started_at: Option<u64>,
    pub last_stopped_at: Option<u64>,
    pub last_restart_at: Option<u64>,
    pub last_data_at: Option<u64>,
    pub last_exit_code: Option<i32>,
    pub last_exit_signal: Option<i32>,
    pub last_error: Option<String>,
    pub bytes: u64,
}

/// Totals since the manager was created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RuntimeStats {
    /// Sessions alive now.
    pub sessions: usize,
    /// Clients attached now, over all sessions.
    pub clients: usize,
    pub sessions_created: u64,
    pub sessions_destroyed: u64,
    /// Worker restarts over all sessions.
    pub restarts: u64,
    /// Worker exits that were not asked for.
    pub unexpected_exits: u64,
    pub idle_recoveries: u64,
    /// Sessions that reached `errored`.
    pub errored: u64,
    /// Bytes the workers produced.
    pub bytes: u64,
}

/// Owns every session and decides when one is created, restarted and destroyed.
pub struct StreamManager {
    timing: Timing,
    max_clients: usize,
    sessions: BTreeMap<String, Session>,
    clients: BTreeMap<ClientId, String>,
    workers: BTreeMap<WorkerId, String>,
    next_session: SessionId,
    next_worker: WorkerId,
    next_sweep: Instant,
    actions: VecDeque<Action>,
    stats: RuntimeStats,
    /// Streams whose `errored` event was raised and that have not delivered media since.
    /// Kept per stream, not per session: a session without clients is destroyed, and the
    /// next viewer's new session must not raise the same alarm again.
    alarmed: BTreeSet<String>,
}

/// What ended a worker, in words: its own error, else its exit code or signal.
fn exit_cause(exit: &Exit) -> String {
    match (&exit.error, exit.code, exit.signal) {
        (Some(e), _, _) => e.clone(),
        (None, Some(code), _) => format!("exited with code {code}"),
        (None, None, Some(signal)) => format!("killed by signal {signal}"),
        (None, None, None) => "worker exited".into(),
    }
}

/// Unix milliseconds of `t`, given one moment seen on both clocks.
fn wall_ms(t: Instant, now: Instant, wall_now: SystemTime) -> u64 {
    let wall = match now.checked_duration_since(t) {
        Some(ago) => wall_now.checked_sub(ago).unwrap_or(wall_now),
        None => wall_now + t.saturating_duration_since(now),
    };
    crate::time::unix_millis(wall)
}

impl Session {
    fn new(stream_id: String, session_id: SessionId, now: Instant) -> Self {
        Session {
            stream_id,
            session_id,
            state: SessionState::Starting,
            clients: BTreeSet::new(),
            worker: None,
            pid: None,
            restart_count: 0,
            created_at: now,
            last_started_at: None,
            last_stopped_at: None,
            last_restart_at: None,
            last_data_at: None,
            alive_at: None,
            last_exit_code: None,
            last_exit_signal: None,
            last_error: None,
            bytes: 0,
            manual_stop: false,
            restart_requested: false,
            restart_at: None,
            exited_pid: None,
            restart_reason: None,
        }
    }

    pub fn client_count(&self) -> usize {
        self.clients.len()
    }

    /// When the restart of this session is due, if one is scheduled.
    pub fn restart_at(&self) -> Option<Instant> {
        self.restart_at
    }

    pub fn snapshot(&self, now: Instant, wall_now: SystemTime) -> SessionSnapshot {
        let w = |t: Option<Instant>| t.map(|t| wall_ms(t, now, wall_now));
        SessionSnapshot {
            stream_id: self.stream_id.clone(),
            session_id: self.session_id,
            state: self.state,
            pid: self.pid,
            client_count: self.clients.len(),
            restart_count: self.restart_count,
            last_started_at: w(self.last_started_at),
            last_stopped_at: w(self.last_stopped_at),
            last_restart_at: w(self.last_restart_at),
            last_data_at: w(self.last_data_at),
            last_exit_code: self.last_exit_code,
            last_exit_signal: self.last_exit_signal,
            last_error: self.last_error.clone(),
            bytes: self.bytes,
        }
    }

    /// The moment the idle clock counts from: the last data, or the start if none came yet.
    fn idle_since(&self) -> Option<Instant> {
        [self.last_data_at, self.last_started_at, self.alive_at]
            .into_iter()
            .flatten()
            .max()
    }
}

impl StreamManager {
    pub fn new(timing: Timing, max_clients: usize, now: Instant) -> Self {
        StreamManager {
            timing,
            max_clients: max_clients.max(1),
            sessions: BTreeMap::new(),
            clients: BTreeMap::new(),
            workers: BTreeMap::new(),
            next_session: 1,
            next_worker: 1,
            next_sweep: now + timing.sweep_interval,
            actions: VecDeque::new(),
            stats: RuntimeStats::default(),
            alarmed: BTreeSet::new(),
        }
    }

    pub fn timing(&self) -> Timing {
        self.timing
    }

    pub fn session(&self, stream_id: &str) -> Option<&Session> {
        self.sessions.get(stream_id)
    }

    pub fn sessions(&self) -> impl Iterator<Item = &Session> {
        self.sessions.values()
    }

    /// The stream a client is attached to.
    pub fn client_stream(&self, client: ClientId) -> Option<&str> {
        self.clients.get(&client).map(String::as_str)
    }

    pub fn snapshots(&self, now: Instant, wall_now: SystemTime) -> Vec<SessionSnapshot> {
        self.sessions
            .values()
            .map(|s| s.snapshot(now, wall_now))
            .collect()
    }

    pub fn stats(&self) -> RuntimeStats {
        RuntimeStats {
            sessions: self.sessions.len(),
            clients: self.clients.len(),
            ..self.stats
        }
    }

    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// The next moment `handle_timeout` has something to do.
    pub fn poll_timeout(&self) -> Instant {
        self.sessions
            .values()
            .filter_map(|s| s.restart_at)
            .fold(self.next_sweep, Instant::min)
    }

    /// A client wants `stream_id`. The first one creates the session and starts its worker.
    pub fn attach(
        &mut self,
        now: Instant,
        stream_id: &str,
        client: ClientId,
    ) -> Result<SessionId, AttachError> {
        if self.clients.contains_key(&client) {
            return Err(AttachError::Duplicate);
        }
        if !self.sessions.contains_key(stream_id) {
            self.create_session(now, stream_id, "first client attached");
        }
        let max = self.max_clients;
        let s = self.sessions.get_mut(stream_id).expect("just ensured");
        if s.clients.len() >= max {
            return Err(AttachError::Full);
        }
        s.clients.insert(client);
        let session_id = s.session_id;
        let count = s.clients.len();
        let retry = s.state == SessionState::Errored;
        let pid = LogPid(s.pid);
        self.clients.insert(client, stream_id.to_owned());
        tracing::info!(
            streamId = %stream_id,
            sessionId = session_id,
            pid = %pid,
            client,
            clientCount = count,
            reason = "client connected",
            "client attached"
        );
        if retry {
            let s = self.sessions.get_mut(stream_id).expect("present");
            s.restart_count = 0;
            tracing::info!(
                streamId = %stream_id,
                sessionId = session_id,
                pid = %pid,
                reason = "client attached to an errored session",
                "retrying"
            );
            self.start_worker(stream_id, now);
        }
        Ok(session_id)
    }

    /// Creates `stream_id`'s session and starts its worker.
    fn create_session(&mut self, now: Instant, stream_id: &str, reason: &str) -> SessionId {
        let id = self.next_session;
        self.next_session += 1;
        self.stats.sessions_created += 1;
        self.sessions.insert(
            stream_id.to_owned(),
            Session::new(stream_id.into(), id, now),
        );
        tracing::info!(
            streamId = %stream_id,
            sessionId = id,
            pid = %LogPid(None),
            reason,
            "session created"
        );
        self.start_worker(stream_id, now);
        id
    }

    /// Test only: a session whose worker is started but that has no clients, as if they had
    /// gone without a detach (which the shell never lets happen). Only the sweep's destroy
    /// branch ends such a session.
    #[cfg(test)]
    pub(crate) fn create_session_without_clients(
        &mut self,
        now: Instant,
        stream_id: &str,
    ) -> SessionId {
        assert!(!self.sessions.contains_key(stream_id), "no session yet");
        self.create_session(now, stream_id, "test: no clients")
    }

    /// A client left (its socket closed or failed). The last one stops and destroys the
    /// session.
    pub fn detach(&mut self, now: Instant, client: ClientId, reason: DetachReason) {
        let Some(stream_id) = self.clients.remove(&client) else {
            return;
        };
        let Some(s) = self.sessions.get_mut(&stream_id) else {
            return;
        };
        s.clients.remove(&client);
        tracing::info!(
            streamId = %stream_id,
            sessionId = s.session_id,
            pid = %LogPid(s.pid),
            client,
            clientCount = s.clients.len(),
            reason = if reason == DetachReason::Close { "close" } else { "error" },
            "client detached"
        );
        if s.clients.is_empty() {
            self.stop_session(now, &stream_id, StopReason::LastClientLeft);
            self.destroy(&stream_id, StopReason::LastClientLeft);
        }
    }

    /// Manual stop: the worker is stopped and never restarted, clients are detached, and the
    /// session (now without clients) is destroyed.
    pub fn stop(&mut self, now: Instant, stream_id: &str) {
        if !self.sessions.contains_key(stream_id) {
            return;
        }
        self.stop_session(now, stream_id, StopReason::Manual);
        self.destroy(stream_id, StopReason::Manual);
    }

    /// Stop every session (the shutdown path).
    pub fn stop_all(&mut self, now: Instant) {
        let ids: Vec<String> = self.sessions.keys().cloned().collect();
        for id in ids {
            self.stop_session(now, &id, StopReason::Shutdown);
            self.destroy(&id, StopReason::Shutdown);
        }
    }

    /// Recovery restart: stop the worker, keep the clients and the session, start a new
    /// worker once the old one has exited. Only a running (or starting) session restarts.
    pub fn restart(&mut self, now: Instant, stream_id: &str, reason: StopReason) {
        let Some(s) = self.sessions.get_mut(stream_id) else {
            return;
        };
        if !matches!(s.state, SessionState::Running | SessionState::Starting) {
            return;
        }
        let Some(worker) = s.worker else { return };
        s.state = SessionState::Restarting;
        s.restart_requested = true;
        s.restart_reason = Some(reason.to_string());
        tracing::warn!(
            streamId = %stream_id,
            sessionId = s.session_id,
            pid = %LogPid(s.pid),
            reason = reason.as_str(),
            "restarting worker"
        );
        self.actions.push_back(Action::StopWorker {
            stream_id: stream_id.to_owned(),
            session_id: s.session_id,
            worker,
            reason,
        });
        let _ = now;
    }

    /// The worker the shell started for `StartWorker` is up; `pid` for process workers.
    pub fn worker_started(&mut self, now: Instant, worker: WorkerId, pid: Option<u32>) {
        let Some(s) = self.worker_session(worker) else {
            return;
        };
        if s.state != SessionState::Starting {
            return;
        }
        s.state = SessionState::Running;
        s.pid = pid;
        s.last_started_at = Some(now);
        tracing::info!(
            streamId = %s.stream_id,
            sessionId = s.session_id,
            pid = %LogPid(pid),
            reason = "worker started",
            "worker running"
        );
    }

    /// The worker produced `bytes` of output.
    pub fn worker_data(&mut self, now: Instant, worker: WorkerId, bytes: usize) {
        // Called for every batch of TS: the stream id is only copied (to clear its alarm)
        // while some stream is in alarm, which is rare.
        let any_alarm = !self.alarmed.is_empty();
        let Some(s) = self.worker_session(worker) else {
            return;
        };
        s.last_data_at = Some(now);
        s.bytes += bytes as u64;
        let sid = s.session_id;
        let pid = LogPid(s.pid);
        let alarmed = any_alarm.then(|| s.stream_id.clone());
        self.stats.bytes += bytes as u64;
        if let Some(stream_id) = alarmed
            && self.alarmed.remove(&stream_id)
        {
            tracing::info!(
                streamId = %stream_id,
                sessionId = sid,
                pid = %pid,
                reason = "media after errored",
                "stream recovered"
            );
            self.actions
                .push_back(Action::RaiseEvent(Event::bridge_stream_recovered(
                    &stream_id, sid,
                )));
        }
    }

    /// The worker is alive but has nothing to send, and restarting it would not help (see
    /// [`Session::alive_at`]).
    pub fn worker_alive(&mut self, now: Instant, worker: WorkerId) {
        if let Some(s) = self.worker_session(worker) {
            s.alive_at = Some(now);
        }
    }

    /// The worker ended (exited, was killed, failed to spawn, or lost its source).
    pub fn worker_exited(&mut self, now: Instant, worker: WorkerId, exit: Exit) {
        let Some(stream_id) = self.workers.remove(&worker) else {
            return;
        };
        let Some(s) = self.sessions.get_mut(&stream_id) else {
            return;
        };
        if s.worker != Some(worker) {
            return;
        }
        s.worker = None;
        let pid = s.pid.take();
        s.exited_pid = pid;
        let pid = LogPid(pid);
        s.last_stopped_at = Some(now);
        s.last_exit_code = exit.code;
        s.last_exit_signal = exit.signal;
        let sid = s.session_id;
        if s.manual_stop {
            if exit.error.is_some() {
                s.last_error = exit.error.clone();
            }
            s.state = SessionState::Stopped;
            tracing::info!(streamId = %stream_id, sessionId = sid, pid = %pid, reason = "manual stop", "worker exited");
            return;
        }
        let requested = std::mem::take(&mut s.restart_requested);
        // A worker stopped for a recovery restart says only "stopped": the cause is why it
        // was restarted (e.g. "idle timeout"), and that is what `lastError` and a give-up
        // event must name.
        let cause = match (&s.restart_reason, requested) {
            (Some(reason), true) => reason.clone(),
            _ => exit_cause(&exit),
        };
        if requested || exit.error.is_some() {
            s.last_error = Some(cause.clone());
        }
        if !requested {
            self.stats.unexpected_exits += 1;
            s.restart_reason = Some(cause.clone());
        }
        tracing::warn!(
            streamId = %stream_id,
            sessionId = sid,
            pid = %pid,
            code = ?exit.code,
            signal = ?exit.signal,
            reason = exit.error.as_deref().unwrap_or(if requested { "recovery restart" } else { "unexpected exit" }),
            "worker exited"
        );
        let max = self.timing.max_restarts;
        if s.restart_count >= max {
            s.state = SessionState::Errored;
            s.restart_at = None;
            let error = format!("gave up after {} restarts: {cause}", s.restart_count);
            tracing::error!(
                streamId = %stream_id,
                sessionId = sid,
                pid = %pid,
                restartCount = s.restart_count,
                reason = error.as_str(),
                "session errored"
            );
            s.last_error = Some(error.clone());
            self.stats.errored += 1;
            let restart_count = s.restart_count;
            // The seed's "error event", once per failure cycle of the stream (see the top).
            let event = self.alarmed.insert(stream_id.clone()).then(|| {
                let mut e = Event::bridge_stream_errored(&stream_id, sid, restart_count, &cause);
                if let Some(code) = exit.code {
                    e = e.with_detail("lastExitCode", code);
                }
                if let Some(signal) = exit.signal {
                    e = e.with_detail("lastExitSignal", signal);
                }
                e
            });
            self.actions.push_back(Action::Errored {
                stream_id,
                session_id: sid,
                restart_count,
                error,
            });
            self.actions.extend(event.map(Action::RaiseEvent));
            return;
        }
        s.state = SessionState::Restarting;
        if requested {
            self.restart_now(&stream_id, now);
        } else {
            s.restart_at = Some(now + self.timing.restart_delay);
        }
    }

    /// Runs what is due at `now`: delayed restarts, then the sweep.
    pub fn handle_timeout(&mut self, now: Instant) {
        let due: Vec<String> = self
            .sessions
            .values()
            .filter(|s| s.restart_at.is_some_and(|t| t <= now))
            .map(|s| s.stream_id.clone())
            .collect();
        for id in due {
            if let Some(s) = self.sessions.get_mut(&id) {
                s.restart_at = None;
            }
            self.restart_now(&id, now);
        }
        if now >= self.next_sweep {
            self.sweep(now);
            // Catch up without a burst: the next sweep is one interval from now.
            self.next_sweep = now + self.timing.sweep_interval;
        }
    }

    /// The sweep: destroy sessions without clients, restart stalled running ones, leave
    /// the others alone.
    pub fn sweep(&mut self, now: Instant) {
        let mut destroy = Vec::new();
        let mut stalled = Vec::new();
        for s in self.sessions.values() {
            if s.clients.is_empty() {
                destroy.push(s.stream_id.clone());
            } else if s.state == SessionState::Running
                && s.idle_since()
                    .is_some_and(|t| now.saturating_duration_since(t) > self.timing.idle_timeout)
            {
                stalled.push(s.stream_id.clone());
            }
        }
        for id in destroy {
            self.stop_session(now, &id, StopReason::NoClients);
            self.destroy(&id, StopReason::NoClients);
        }
        for id in stalled {
            self.stats.idle_recoveries += 1;
            self.restart(now, &id, StopReason::IdleTimeout);
        }
    }

    fn worker_session(&mut self, worker: WorkerId) -> Option<&mut Session> {
        let id = self.workers.get(&worker)?;
        let s = self.sessions.get_mut(id)?;
        (s.worker == Some(worker)).then_some(s)
    }

    fn start_worker(&mut self, stream_id: &str, now: Instant) {
        let Some(s) = self.sessions.get_mut(stream_id) else {
            return;
        };
        let worker = self.next_worker;
        self.next_worker += 1;
        s.worker = Some(worker);
        s.state = SessionState::Starting;
        s.manual_stop = false;
        s.restart_requested = false;
        s.restart_at = None;
        s.exited_pid = None;
        s.restart_reason = None;
        self.workers.insert(worker, stream_id.to_owned());
        self.actions.push_back(Action::StartWorker {
            stream_id: stream_id.to_owned(),
            session_id: s.session_id,
            worker,
        });
        let _ = now;
    }

    /// Counts a restart and starts the worker again.
    fn restart_now(&mut self, stream_id: &str, now: Instant) {
        let Some(s) = self.sessions.get_mut(stream_id) else {
            return;
        };
        if s.state != SessionState::Restarting {
            return;
        }
        s.restart_count += 1;
        s.last_restart_at = Some(now);
        self.stats.restarts += 1;
        // `pid` is the worker being replaced: grep one pid to follow it from spawn to the
        // restart that replaced it.
        tracing::info!(
            streamId = %stream_id,
            sessionId = s.session_id,
            pid = %LogPid(s.exited_pid.take()),
            restartCount = s.restart_count,
            reason = s.restart_reason.take().as_deref().unwrap_or("restart"),
            "starting worker again"
        );
        self.start_worker(stream_id, now);
    }

    /// Marks the session manually stopped, stops its worker and detaches its clients.
    fn stop_session(&mut self, now: Instant, stream_id: &str, reason: StopReason) {
        let Some(s) = self.sessions.get_mut(stream_id) else {
            return;
        };
        s.manual_stop = true;
        s.restart_requested = false;
        s.restart_at = None;
        tracing::info!(
            streamId = %stream_id,
            sessionId = s.session_id,
            pid = %LogPid(s.pid),
            reason = reason.as_str(),
            "stopping session"
        );
        if let Some(worker) = s.worker.take() {
            self.workers.remove(&worker);
            s.pid = None;
            s.last_stopped_at = Some(now);
            self.actions.push_back(Action::StopWorker {
                stream_id: stream_id.to_owned(),
                session_id: s.session_id,
                worker,
                reason,
            });
        }
        s.state = SessionState::Stopped;
        for client in std::mem::take(&mut s.clients) {
            self.clients.remove(&client);
            self.actions.push_back(Action::DetachClient {
                stream_id: stream_id.to_owned(),
                client,
            });
        }
    }

    /// Removes a session that has no clients. Refuses (returns false) otherwise.
    fn destroy(&mut self, stream_id: &str, reason: StopReason) -> bool {
        match self.sessions.get(stream_id) {
            Some(s) if s.clients.is_empty() => {
                let s = self.sessions.remove(stream_id).expect("present");
                if let Some(w) = s.worker {
                    self.workers.remove(&w);
                }
                self.stats.sessions_destroyed += 1;
                tracing::info!(
                    streamId = %stream_id,
                    sessionId = s.session_id,
                    pid = %LogPid(s.pid),
                    reason = reason.as_str(),
                    "session destroyed"
                );
                self.actions.push_back(Action::Destroyed {
                    stream_id: stream_id.to_owned(),
                    session_id: s.session_id,
                });
                true
            }
            _ => false,
        }
    }
}
