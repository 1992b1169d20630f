//! The RTSP->WebSocket bridge: on-demand sessions that pull a camera (or read a flow) and
//! fan MPEG-TS out to browser WebSocket clients (`ws://HOST:PORT/ws/stream/{id}`).
//!
//! `lifecycle.rs` decides (sans-IO); this file is its shell on the runtime thread: it runs
//! the workers the core asks for, reports their starts, data and exits back, closes the
//! clients of a stopped session, and sleeps until the core's next timeout.
//!
//! Fan-out: each session has one ring of `client_queue_chunks` chunks (7 TS packets each).
//! The worker writes it; every client holds a cursor into it, so a chunk is stored once
//! whatever the number of clients. A client's queue is the distance between its cursor and
//! the head: it is bounded by the ring. A client that falls a whole ring behind skips to the
//! head (the chunks it missed are counted) and after `max_client_lags` such skips it is
//! disconnected. The worker never waits for a client.
//!
//! Workers: `inprocess` (retina + `ts::mux`, no transcoding), `ffmpeg` (a child process,
//! `-c copy` or MPEG-1 video for JSMpeg), and the `flow_id` tap that copies a flow's ring.

pub mod lifecycle;
pub mod ws;

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Notify;

use crate::config::{BridgeConfig, BridgeStreamConfig, BridgeWorker};
use crate::events::Events;
use crate::flow::manager::FlowTaps;
use crate::rtsp;
use crate::ts::packet::{PACKET_LEN, SYNC_BYTE};
use crate::ts::ring::{CHUNK_BYTES, FlowRing, Read};
pub use lifecycle::{
    Action, AttachError, ClientId, DetachReason, Exit, LogPid, RuntimeStats, SessionId,
    SessionSnapshot, SessionState, StopReason, StreamManager, Timing, WorkerId,
};

/// The recovery variables (`STREAM_IDLE_TIMEOUT_MS`, ...) as `env` has them: an error naming
/// every variable that is not a whole number or is out of its config field's range. The
/// daemon refuses to start on it, as it does on an invalid config.
pub fn check_env(env: impl Fn(&str) -> Option<String>) -> Result<(), EnvError> {
    let (_, problems) = Timing::DEFAULT.with_env(env);
    if problems.is_empty() {
        Ok(())
    } else {
        Err(EnvError { problems })
    }
}

/// The recovery variables that are not whole numbers or are out of range, each as
/// `Timing::with_env` words it (`NAME="value" is out of range (1..=86400000)`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvError {
    pub problems: Vec<String>,
}

impl std::fmt::Display for EnvError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "invalid bridge environment: {}",
            self.problems.join("; ")
        )
    }
}

impl std::error::Error for EnvError {}

/// Why a configured stream cannot be served (it is left out; the others run).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamSpecError {
    /// `rtsp_url` is not an RTSP URL.
    Source(rtsp::SourceError),
    /// Neither `rtsp_url` nor `flow_id` is set.
    NoSource,
}

impl std::fmt::Display for StreamSpecError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StreamSpecError::Source(e) => e.fmt(f),
            StreamSpecError::NoSource => f.write_str("no source"),
        }
    }
}

impl std::error::Error for StreamSpecError {}

/// One configured stream.
#[derive(Debug, Clone)]
pub struct StreamSpec {
    pub id: String,
    pub source: SourceSpec,
    pub worker: WorkerKind,
}

#[derive(Debug, Clone)]
pub enum SourceSpec {
    Rtsp {
        source: rtsp::Source,
        timeout: Duration,
    },
    Flow(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkerKind {
    InProcess,
    /// `video`: `copy` or `mpeg1video`.
    Ffmpeg {
        video: String,
    },
}

/// The shell's knobs (from `bridge` in the config, timing overridden by the environment).
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    #[serde(skip)]
    pub timing: Timing,
    pub max_clients_per_stream: usize,
    pub client_queue_chunks: usize,
    pub max_client_lags: u32,
    pub ffmpeg_path: String,
}

impl Settings {
    pub fn from_config(cfg: &BridgeConfig, env: impl Fn(&str) -> Option<String>) -> Settings {
        let timing = Timing {
            idle_timeout: Duration::from_millis(cfg.idle_timeout_ms),
            sweep_interval: Duration::from_millis(cfg.sweep_interval_ms.max(1)),
            restart_delay: Duration::from_millis(cfg.restart_delay_ms),
            max_restarts: cfg.max_restarts,
        };
        // The daemon checked these before starting (`check_env`): only an embedder that did
        // not gets here with a bad value, which is then not applied.
        let (timing, problems) = timing.with_env(env);
        for p in problems {
            tracing::warn!("bridge: ignoring {p}");
        }
        Settings {
            timing,
            max_clients_per_stream: cfg.max_clients_per_stream,
            client_queue_chunks: cfg.client_queue_chunks,
            max_client_lags: cfg.max_client_lags,
            ffmpeg_path: cfg.ffmpeg_path.clone(),
        }
    }
}

impl StreamSpec {
    /// `outbound`: `security.outbound_allow`, checked on a camera's resolved address.
    pub fn from_config(
        s: &BridgeStreamConfig,
        outbound: crate::net::outbound::Policy,
    ) -> Result<StreamSpec, StreamSpecError> {
        let source = match (&s.rtsp_url, &s.flow_id) {
            (Some(url), _) => SourceSpec::Rtsp {
                source: rtsp::Source::new(
                    url,
                    s.username.as_deref(),
                    s.password.as_deref(),
                    s.transport,
                )
                .map_err(StreamSpecError::Source)?
                .with_outbound(outbound),
                timeout: Duration::from_secs(s.timeout_secs.max(1)),
            },
            (None, Some(f)) => SourceSpec::Flow(f.clone()),
            (None, None) => return Err(StreamSpecError::NoSource),
        };
        let worker = match s.worker {
            BridgeWorker::Ffmpeg => WorkerKind::Ffmpeg {
                video: s.ffmpeg_video.clone(),
            },
            BridgeWorker::InProcess => WorkerKind::InProcess,
        };
        Ok(StreamSpec {
            id: s.id.clone(),
            source,
            worker,
        })
    }
}

/// What a worker gets: where to write, how to report, when to stop.
pub struct WorkerCtx {
    bridge: Weak<Bridge>,
    pub worker: WorkerId,
    pub stream_id: String,
    pub session_id: SessionId,
    pub ring: Rc<FlowRing>,
    pub stop: Rc<Notify>,
    pub ffmpeg_path: String,
    pub taps: FlowTaps,
    epoch: Instant,
}

impl WorkerCtx {
    /// The worker runs (`pid` for a process).
    pub fn started(&self, pid: Option<u32>) {
        if let Some(b) = self.bridge.upgrade() {
            b.core
                .borrow_mut()
                .worker_started(Instant::now(), self.worker, pid);
            b.pump();
        }
    }

    /// Write whole TS packets (any number) into the session's ring and count them as data.
    pub fn push_packets(&self, ts: &[u8]) {
        if ts.is_empty() {
            return;
        }
        let now = Instant::now();
        let recv_us = now.saturating_duration_since(self.epoch).as_micros() as u64;
        for c in ts.chunks(CHUNK_BYTES) {
            self.ring.push(c, recv_us);
        }
        self.data(now, ts.len());
    }

    fn data(&self, now: Instant, n: usize) {
        if let Some(b) = self.bridge.upgrade() {
            b.core.borrow_mut().worker_data(now, self.worker, n);
        }
    }

    /// Alive, nothing to send (a flow tap whose flow is quiet or away).
    fn alive(&self, now: Instant) {
        if let Some(b) = self.bridge.upgrade() {
            b.core.borrow_mut().worker_alive(now, self.worker);
        }
    }
}

pub type WorkerFuture = Pin<Box<dyn Future<Output = Exit>>>;
/// Runs a worker to its end. The default runs the real workers; tests put in a fake.
pub type Launcher = Rc<dyn Fn(&StreamSpec, WorkerCtx) -> WorkerFuture>;

struct WorkerHandle {
    stop: Rc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Default)]
struct Counters {
    frames_sent: Cell<u64>,
    bytes_sent: Cell<u64>,
    lagged_chunks: Cell<u64>,
    lag_events: Cell<u64>,
    slow_disconnects: Cell<u64>,
    refused: Cell<u64>,
}

pub struct Bridge {
    pub settings: Settings,
    streams: BTreeMap<String, StreamSpec>,
    core: RefCell<StreamManager>,
    rings: RefCell<BTreeMap<String, Rc<FlowRing>>>,
    workers: RefCell<BTreeMap<WorkerId, WorkerHandle>>,
    clients: RefCell<BTreeMap<ClientId, Rc<Kick>>>,
    wake: Notify,
    next_client: Cell<ClientId>,
    taps: FlowTaps,
    launcher: Launcher,
    counters: Counters,
    /// Where the core's `bridge` events (session errored, stream recovered) are raised.
    events: Events,
    epoch: Instant,
    me: Weak<Bridge>,
}

/// A client's end of an attach.
pub struct Attached {
    pub client: ClientId,
    pub session_id: SessionId,
    pub ring: Rc<FlowRing>,
    /// Fired when the session is stopped and the client must go.
    pub kick: Rc<Kick>,
}

/// Tells a client to go, and what to say in its close frame.
#[derive(Default)]
pub struct Kick {
    notify: Notify,
    /// Set when the session failed: the client hears why (1011) instead of a plain "stream
    /// stopped" (1001), so a player can tell a dead camera from a stop.
    error: RefCell<Option<String>>,
}

impl Kick {
    fn send(&self, error: Option<String>) {
        *self.error.borrow_mut() = error;
        self.notify.notify_one();
    }

    pub async fn notified(&self) {
        self.notify.notified().await
    }

    /// The error the session failed with, if that is why the client goes.
    pub fn error(&self) -> Option<String> {
        self.error.borrow().clone()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    UnknownStream,
    Full,
}

impl Bridge {
    /// A bridge for `cfg` (none: no streams), with the real workers.
    pub fn new(
        cfg: Option<&BridgeConfig>,
        taps: FlowTaps,
        events: Events,
        outbound: crate::net::outbound::Policy,
    ) -> Rc<Bridge> {
        Self::with_launcher(
            cfg,
            taps,
            events,
            outbound,
            |k| std::env::var(k).ok(),
            Rc::new(real_worker),
        )
    }

    pub fn with_launcher(
        cfg: Option<&BridgeConfig>,
        taps: FlowTaps,
        events: Events,
        outbound: crate::net::outbound::Policy,
        env: impl Fn(&str) -> Option<String>,
        launcher: Launcher,
    ) -> Rc<Bridge> {
        let default = BridgeConfig::default();
        let cfg = cfg.unwrap_or(&default);
        let settings = Settings::from_config(cfg, env);
        let mut streams = BTreeMap::new();
        for s in &cfg.streams {
            match StreamSpec::from_config(s, outbound.clone()) {
                Ok(spec) => {
                    streams.insert(s.id.clone(), spec);
                }
                Err(e) => tracing::error!(streamId = %s.id, "bridge stream not usable: {e}"),
            }
        }
        let now = Instant::now();
        Rc::new_cyclic(|me| Bridge {
            core: RefCell::new(StreamManager::new(
                settings.timing,
                settings.max_clients_per_stream,
                now,
            )),
            settings,
            streams,
            rings: RefCell::default(),
            workers: RefCell::default(),
            clients: RefCell::default(),
            wake: Notify::new(),
            next_client: Cell::new(1),
            taps,
            launcher,
            counters: Counters::default(),
            events,
            epoch: now,
            me: me.clone(),
        })
    }

    pub fn has_stream(&self, id: &str) -> bool {
        self.streams.contains_key(id)
    }

    pub fn stream_ids(&self) -> Vec<String> {
        self.streams.keys().cloned().collect()
    }

    /// Drives the core's timers until the task is dropped.
    pub async fn run(self: Rc<Self>) {
        loop {
            let due = self.core.borrow().poll_timeout();
            tokio::select! {
                _ = tokio::time::sleep_until(due.into()) => {}
                _ = self.wake.notified() => {}
            }
            self.core.borrow_mut().handle_timeout(Instant::now());
            self.drain();
        }
    }

    /// The ring of `stream_id`, made by the first client or worker that needs it: the
    /// worker writes it, every client reads it.
    fn ring(&self, stream_id: &str) -> Rc<FlowRing> {
        self.rings
            .borrow_mut()
            .entry(stream_id.to_owned())
            .or_insert_with(|| Rc::new(FlowRing::new(self.settings.client_queue_chunks)))
            .clone()
    }

    /// A client for `stream_id`; the first one starts the session.
    pub fn attach(&self, stream_id: &str) -> Result<Attached, Refused> {
        if !self.streams.contains_key(stream_id) {
            return Err(Refused::UnknownStream);
        }
        let client = self.next_client.get();
        self.next_client.set(client + 1);
        let ring = self.ring(stream_id);
        let r = self
            .core
            .borrow_mut()
            .attach(Instant::now(), stream_id, client);
        match r {
            Ok(session_id) => {
                let kick = Rc::new(Kick::default());
                self.clients.borrow_mut().insert(client, kick.clone());
                self.pump();
                Ok(Attached {
                    client,
                    session_id,
                    ring,
                    kick,
                })
            }
            Err(_) => {
                self.counters.refused.set(self.counters.refused.get() + 1);
                self.pump();
                Err(Refused::Full)
            }
        }
    }

    pub fn detach(&self, client: ClientId, reason: DetachReason) {
        self.clients.borrow_mut().remove(&client);
        self.core
            .borrow_mut()
            .detach(Instant::now(), client, reason);
        self.pump();
    }

    /// Manual stop of a stream's session (clients are closed, no restart).
    pub fn stop(&self, stream_id: &str) {
        self.core.borrow_mut().stop(Instant::now(), stream_id);
        self.pump();
    }

    /// Stop everything and kill the workers (the shutdown path).
    pub async fn shutdown(&self) {
        self.core.borrow_mut().stop_all(Instant::now());
        self.drain();
        let handles: Vec<WorkerHandle> = std::mem::take(&mut *self.workers.borrow_mut())
            .into_values()
            .collect();
        for h in handles {
            h.task.abort();
            let _ = h.task.await;
        }
    }

    /// The pid of the stream's worker, if it is a running process.
    pub fn session_pid(&self, stream_id: &str) -> Option<u32> {
        self.core.borrow().session(stream_id).and_then(|s| s.pid)
    }

    pub fn snapshots(&self) -> Vec<SessionSnapshot> {
        self.core
            .borrow()
            .snapshots(Instant::now(), SystemTime::now())
    }

    pub fn health(&self) -> BridgeHealth {
        let s: RuntimeStats = self.core.borrow().stats();
        let t = self.settings.timing;
        let c = &self.counters;
        BridgeHealth {
            streams: self.streams.len(),
            sessions: s.sessions,
            clients: s.clients,
            restarts: s.restarts,
            bytes: s.bytes,
            bytes_sent: c.bytes_sent.get(),
            frames_sent: c.frames_sent.get(),
            sessions_created: s.sessions_created,
            sessions_destroyed: s.sessions_destroyed,
            unexpected_exits: s.unexpected_exits,
            idle_recoveries: s.idle_recoveries,
            errored: s.errored,
            lagged_chunks: c.lagged_chunks.get(),
            slow_disconnects: c.slow_disconnects.get(),
            refused_clients: c.refused.get(),
            idle_timeout_ms: t.idle_timeout.as_millis() as u64,
            sweep_interval_ms: t.sweep_interval.as_millis() as u64,
            restart_delay_ms: t.restart_delay.as_millis() as u64,
            max_restarts: t.max_restarts,
        }
    }

    fn pump(&self) {
        self.drain();
        // The core's next timeout may have moved.
        self.wake.notify_one();
    }

    /// Carries out the core's actions.
    fn drain(&self) {
        loop {
            let action = self.core.borrow_mut().poll_action();
            let Some(action) = action else { break };
            match action {
                Action::StartWorker {
                    stream_id,
                    session_id,
                    worker,
                } => self.launch(&stream_id, session_id, worker),
                Action::StopWorker { worker, .. } => {
                    if let Some(h) = self.workers.borrow().get(&worker) {
                        h.stop.notify_one();
                    }
                }
                Action::DetachClient { client, .. } => {
                    if let Some(k) = self.clients.borrow_mut().remove(&client) {
                        k.send(None);
                    }
                }
                // Logged by the core; its event comes as the `RaiseEvent` after it. The
                // clients are told why and closed (the last one leaving ends the session; a
                // new client starts it again).
                Action::Errored {
                    stream_id, error, ..
                } => {
                    let ids: Vec<ClientId> = self
                        .core
                        .borrow()
                        .session(&stream_id)
                        .map(|s| s.clients.iter().copied().collect())
                        .unwrap_or_default();
                    let clients = self.clients.borrow();
                    for k in ids.iter().filter_map(|id| clients.get(id)) {
                        k.send(Some(error.clone()));
                    }
                }
                Action::RaiseEvent(event) => {
                    self.events.raise(event);
                }
                Action::Destroyed { stream_id, .. } => {
                    self.rings.borrow_mut().remove(&stream_id);
                }
            }
        }
    }

    fn launch(&self, stream_id: &str, session_id: SessionId, worker: WorkerId) {
        let (Some(spec), Some(me)) = (self.streams.get(stream_id), self.me.upgrade()) else {
            return;
        };
        let ring = self.ring(stream_id);
        let stop = Rc::new(Notify::new());
        let ctx = WorkerCtx {
            bridge: self.me.clone(),
            worker,
            stream_id: stream_id.to_owned(),
            session_id,
            ring,
            stop: stop.clone(),
            ffmpeg_path: self.settings.ffmpeg_path.clone(),
            taps: self.taps.clone(),
            epoch: self.epoch,
        };
        let fut = (self.launcher)(spec, ctx);
        let task = tokio::task::spawn_local(async move {
            let exit = fut.await;
            me.workers.borrow_mut().remove(&worker);
            me.core
                .borrow_mut()
                .worker_exited(Instant::now(), worker, exit);
            me.pump();
        });
        self.workers
            .borrow_mut()
            .insert(worker, WorkerHandle { stop, task });
    }
}

/// The real workers.
fn real_worker(spec: &StreamSpec, ctx: WorkerCtx) -> WorkerFuture {
    match (&spec.source, &spec.worker) {
        (SourceSpec::Rtsp { source, timeout }, WorkerKind::InProcess) => {
            Box::pin(inprocess(source.clone(), *timeout, ctx))
        }
        (SourceSpec::Rtsp { source, timeout }, WorkerKind::Ffmpeg { video }) => {
            Box::pin(ffmpeg(source.clone(), *timeout, video.clone(), ctx))
        }
        (SourceSpec::Flow(flow), _) => Box::pin(flow_tap(flow.clone(), ctx)),
    }
}

fn stopped() -> Exit {
    Exit {
        error: Some("stopped".into()),
        ..Exit::default()
    }
}

fn failed(e: String) -> Exit {
    Exit {
        error: Some(e),
        ..Exit::default()
    }
}

/// retina in-process: pull, remux, push. Ends on an RTSP error, a stall of `timeout`, or
/// a stop.
async fn inprocess(source: rtsp::Source, timeout: Duration, ctx: WorkerCtx) -> Exit {
    ctx.started(None);
    let mut puller = tokio::select! {
        r = rtsp::connect(&source, timeout) => match r {
            Ok(p) => p,
            Err(e) => return failed(format!("rtsp: {e}")),
        },
        _ = ctx.stop.notified() => return stopped(),
    };
    // About a frame interval of the camera per wake-up instead of a TCP segment.
    let batched = puller.batch();
    tracing::info!(streamId = %ctx.stream_id, sessionId = ctx.session_id, pid = %LogPid(None), codecs = %puller.codecs, url = %source.shown(), batched, reason = "rtsp play", "rtsp playing");
    // TS is handed to the clients once per video frame (audio frames ride along with the
    // next one): fewer, larger WebSocket frames, a third of the wake-ups of one per frame.
    let mut out = Vec::with_capacity(64 * 1024);
    // The stall deadline is re-armed only when it fires, from the time of the last item:
    // one timer operation per `timeout` instead of one per frame.
    let mut last_item = Instant::now();
    let stall = tokio::time::sleep(timeout);
    tokio::pin!(stall);
    loop {
        tokio::select! {
            r = puller.next(&mut out) => match r {
                Err(e) => return failed(format!("rtsp: {e}")),
                Ok(()) => last_item = Instant::now(),
            },
            () = &mut stall => {
                let deadline = last_item + timeout;
                if deadline <= Instant::now() {
                    return failed(format!("no media for {} s", timeout.as_secs()));
                }
                stall.as_mut().reset(deadline.into());
                continue;
            }
            _ = ctx.stop.notified() => return stopped(),
        }
        if puller.flush_point || out.len() >= 32 * 1024 {
            ctx.push_packets(&out);
            out.clear();
            if out.capacity() > 1 << 20 {
                out = Vec::with_capacity(64 * 1024);
            }
        }
    }
}

/// The FFmpeg arguments of a worker: `-c copy` remux, or MPEG-1 video + MP2 audio for
/// JSMpeg players. The camera URL is not among them: any local user can read a process's
/// command line, and the URL may carry a password. FFmpeg reads it from its stdin instead,
/// as a one-entry concat script ([`ffmpeg_input_script`]).
pub fn ffmpeg_args(video: &str) -> Vec<String> {
    let mut a: Vec<String> = [
        "-hide_banner",
        "-loglevel",
        "error",
        "-nostdin",
        "-f",
        "concat",
        "-safe",
        "0",
        "-protocol_whitelist",
        "pipe,rtsp,rtsps,rtp,srtp,udp,tcp,tls",
        "-i",
        "pipe:0",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let codec: &[&str] = if video == "mpeg1video" {
        &[
            "-c:v",
            "mpeg1video",
            "-b:v",
            "1500k",
            "-bf",
            "0",
            "-c:a",
            "mp2",
            "-b:a",
            "128k",
        ]
    } else {
        &["-c", "copy"]
    };
    a.extend(codec.iter().map(|s| s.to_string()));
    a.extend(["-f", "mpegts", "pipe:1"].iter().map(|s| s.to_string()));
    a
}

/// What a worker's FFmpeg reads on its stdin: the camera URL (credentials included) and the
/// RTSP demuxer's options, as an ffconcat script of one entry.
pub fn ffmpeg_input_script(url: &str, udp: bool, timeout: Duration) -> String {
    // ffconcat quoting: inside '...', a quote is written '\''.
    let quoted = url.replace('\'', "'\\''");
    format!(
        "ffconcat version 1.0\nfile '{quoted}'\noption rtsp_transport {}\noption timeout {}\n",
        if udp { "udp" } else { "tcp" },
        timeout.as_micros() as u64
    )
}

/// The URL with credentials, as FFmpeg wants it.
fn url_with_creds(source: &rtsp::Source) -> String {
    let mut u = source.url.clone();
    if let Some(c) = &source.creds {
        let _ = u.set_username(&c.username);
        let _ = u.set_password(Some(&c.password));
    }
    u.to_string()
}

/// FFmpeg child process: stdout is the TS. Killed on stop (and on drop, whatever happens).
async fn ffmpeg(
    mut source: rtsp::Source,
    timeout: Duration,
    video: String,
    ctx: WorkerCtx,
) -> Exit {
    use std::os::unix::process::ExitStatusExt;
    // FFmpeg resolves names itself: under an allow list it is handed the checked address.
    match tokio::time::timeout(timeout, source.pinned_url()).await {
        Ok(Ok(url)) => source.url = url,
        Ok(Err(e)) => return failed(format!("rtsp: {e}")),
        Err(_) => return failed(format!("rtsp: no answer within {} s", timeout.as_secs())),
    }
    let script = ffmpeg_input_script(&url_with_creds(&source), source.udp, timeout);
    let mut child = match tokio::process::Command::new(&ctx.ffmpeg_path)
        .args(ffmpeg_args(&video))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
    {
        Ok(c) => c,
        Err(e) => return failed(format!("cannot run {}: {e}", ctx.ffmpeg_path)),
    };
    let pid = child.id();
    ctx.started(pid);
    let (Some(mut stdin), Some(mut stdout), Some(stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return failed("no pipes".into());
    };
    // A few hundred bytes: the pipe takes them at once. Closed after, so FFmpeg sees the
    // script's end.
    if let Err(e) = stdin.write_all(script.as_bytes()).await {
        return failed(format!("ffmpeg stdin: {e}"));
    }
    drop(stdin);
    let log = {
        let (stream_id, session_id) = (ctx.stream_id.clone(), ctx.session_id);
        tokio::task::spawn_local(async move {
            let mut stderr = stderr;
            let mut buf = vec![0u8; 4096];
            while let Ok(n) = stderr.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                for line in String::from_utf8_lossy(&buf[..n]).lines() {
                    if !line.trim().is_empty() {
                        tracing::warn!(streamId = %stream_id, sessionId = session_id, pid = %LogPid(pid), reason = "ffmpeg stderr", "{line}");
                    }
                }
            }
        })
    };
    let mut aligner = Aligner::default();
    let mut buf = vec![0u8; 64 * 1024];
    let mut stop_requested = false;
    loop {
        tokio::select! {
            r = stdout.read(&mut buf) => match r {
                Ok(0) | Err(_) => break,
                Ok(n) => aligner.feed(&buf[..n], |ts| ctx.push_packets(ts)),
            },
            _ = ctx.stop.notified(), if !stop_requested => {
                stop_requested = true;
                let _ = child.start_kill();
            }
        }
    }
    let status = child.wait().await;
    log.abort();
    let mut exit = match status {
        Ok(s) => Exit {
            code: s.code(),
            signal: s.signal(),
            error: None,
        },
        Err(e) => failed(format!("wait: {e}")),
    };
    if stop_requested {
        exit.error = Some("stopped".into());
    } else if exit.error.is_none() {
        // Says how, so that `lastError` and the restart's log line tell a crash (signal)
        // from FFmpeg giving up (its exit code, its stderr logged above).
        exit.error = Some(match (exit.code, exit.signal) {
            (Some(code), _) => format!("ffmpeg exited with code {code}"),
            (None, Some(signal)) => format!("ffmpeg killed by signal {signal}"),
            (None, None) => "ffmpeg exited".into(),
        });
    }
    exit
}

/// Re-aligns a byte stream (a pipe) on TS packets: whole packets out, a partial one kept
/// for the next read, garbage before a sync byte dropped. Bounded: keeps < 188 bytes.
#[derive(Default)]
pub struct Aligner {
    pending: Vec<u8>,
    pub dropped: u64,
}

impl Aligner {
    pub fn feed(&mut self, mut data: &[u8], mut out: impl FnMut(&[u8])) {
        if !self.pending.is_empty() {
            let need = PACKET_LEN - self.pending.len();
            let take = need.min(data.len());
            self.pending.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.pending.len() < PACKET_LEN {
                return;
            }
            if self.pending[0] == SYNC_BYTE {
                out(&self.pending);
            } else {
                self.dropped += PACKET_LEN as u64;
            }
            self.pending.clear();
        }
        // Find sync.
        let start = data
            .iter()
            .position(|&b| b == SYNC_BYTE)
            .unwrap_or(data.len());
        self.dropped += start as u64;
        let data = &data[start..];
        let whole = data.len() / PACKET_LEN * PACKET_LEN;
        if whole > 0 {
            out(&data[..whole]);
        }
        self.pending.extend_from_slice(&data[whole..]);
    }
}

/// Reads a flow's ring into the session ring, until stopped. A flow that stops or restarts
/// (and so gets a new ring) is waited for and followed: restarting the tap cannot bring a
/// flow's input back, so the tap stays up and tells the core it is alive, so that a quiet
/// flow is not taken for a hung worker by the idle sweep and the tap never gives up on it.
async fn flow_tap(flow_id: String, ctx: WorkerCtx) -> Exit {
    ctx.started(None);
    let mut tap: Option<(Rc<FlowRing>, crate::ts::ring::Reader)> = None;
    loop {
        let latest = ctx.taps.borrow().get(&flow_id).cloned();
        let same = matches!((&tap, &latest), (Some((a, _)), Some(b)) if Rc::ptr_eq(a, b));
        if !same {
            tracing::info!(
                streamId = %ctx.stream_id,
                sessionId = ctx.session_id,
                pid = %LogPid(None),
                flow = %flow_id,
                reason = if latest.is_some() { "flow running" } else { "flow not running" },
                "{}",
                if latest.is_some() { "tap following the flow" } else { "tap waiting for the flow" }
            );
            tap = latest.map(|src| {
                let reader = src.ring.borrow().reader();
                (src, reader)
            });
        }
        let Some((src, reader)) = &mut tap else {
            ctx.alive(Instant::now());
            tokio::select! {
                _ = ctx.stop.notified() => return stopped(),
                _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
            }
        };
        let src = src.clone();
        let notified = src.notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        loop {
            let r = src.ring.borrow();
            match r.read(reader) {
                Read::Empty => break,
                Read::Lagged(_) => continue,
                Read::Chunk(c) => {
                    ctx.ring.push(c.data, c.recv_us);
                    ctx.data(Instant::now(), c.data.len());
                }
            }
        }
        tokio::select! {
            _ = &mut notified => {}
            _ = ctx.stop.notified() => return stopped(),
            // A quiet ring: say so, and notice a flow that stopped or restarted.
            _ = tokio::time::sleep(Duration::from_secs(1)) => ctx.alive(Instant::now()),
        }
    }
}

#[cfg(test)]
mod tests;

/// What a build without the `rtsp` feature reports in its place, held here to the same shape.
/// (Its `Launcher` stands in for ours there: unused here.)
#[path = "health.rs"]
mod health;
pub use health::BridgeHealth;

#[cfg(test)]
#[path = "absent.rs"]
#[allow(dead_code)]
mod absent;

#[cfg(test)]
mod shell_tests {
    use super::*;

    #[test]
    fn aligner_keeps_partial_packets_and_drops_garbage() {
        let mut pkts = Vec::new();
        for i in 0..5u8 {
            let mut p = vec![i; PACKET_LEN];
            p[0] = SYNC_BYTE;
            pkts.extend_from_slice(&p);
        }
        let mut stream = vec![1, 2, 3];
        stream.extend_from_slice(&pkts);
        let mut a = Aligner::default();
        let mut got = Vec::new();
        for piece in stream.chunks(77) {
            a.feed(piece, |ts| {
                assert_eq!(ts.len() % PACKET_LEN, 0);
                got.extend_from_slice(ts)
            });
        }
        assert_eq!(got, pkts);
        assert_eq!(a.dropped, 3);
        assert!(a.pending.len() < PACKET_LEN);
    }

    /// The manager reads `/healthz`'s `bridge` block whatever the build: a build without the
    /// bridge reports the same fields, and with no `bridge` block the same values.
    #[test]
    fn absent_bridge_reports_the_same_health_block() {
        let real = Bridge::with_launcher(
            None,
            Default::default(),
            crate::events::Events::in_memory(16),
            None,
            |_| None,
            Rc::new(real_worker),
        );
        assert_eq!(
            serde_json::to_value(real.health()).unwrap(),
            serde_json::to_value(absent::BridgeHealth::absent(None)).unwrap()
        );
        let none: Vec<absent::SessionSnapshot> = Vec::new();
        assert_eq!(serde_json::to_value(none).unwrap(), serde_json::json!([]));
    }

    #[test]
    fn ffmpeg_args_copy_and_mpeg1() {
        let s = ffmpeg_args("copy").join(" ");
        assert!(
            s.ends_with("-f concat -safe 0 -protocol_whitelist pipe,rtsp,rtsps,rtp,srtp,udp,tcp,tls -i pipe:0 -c copy -f mpegts pipe:1"),
            "{s}"
        );
        let s = ffmpeg_args("mpeg1video").join(" ");
        assert!(s.contains("-c:v mpeg1video"), "{s}");
    }

    #[test]
    fn ffmpeg_input_script_carries_url_and_options() {
        let s = ffmpeg_input_script("rtsp://u:p'w@h/x", false, Duration::from_secs(10));
        assert_eq!(
            s,
            "ffconcat version 1.0\nfile 'rtsp://u:p'\\''w@h/x'\noption rtsp_transport tcp\n\
             option timeout 10000000\n"
        );
        let s = ffmpeg_input_script("rtsp://h/x", true, Duration::from_secs(1));
        assert!(
            s.contains("option rtsp_transport udp\noption timeout 1000000\n"),
            "{s}"
        );
    }
}
