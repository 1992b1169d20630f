//! The async shell around [`Link`]: sockets, TLS, WebSocket frames, timers and the writer
//! task. Every decision is the link's; this file only does what it is told and reports back.
//!
//! Tasks (all on the runtime thread's `LocalSet`):
//! - the main loop: feeds the link, performs its actions, reads frames;
//! - one connect task per attempt (aborted when the link gives up on it);
//! - one writer per connection, draining the [`Outbox`] and the event feed, so a manager
//!   that reads slowly stalls nothing but the writer;
//! - one task per command, whose reply comes back to the main loop.

use std::cell::{Cell, RefCell};
use std::net::IpAddr;
use std::pin::pin;
use std::rc::Rc;
use std::sync::Arc;

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Bytes, Message};

use super::commands;
use super::feed::EventFeed;
use super::link::{Action, Link, Timing};
use super::outbox::{EVENT_WINDOW, Frame, Outbox};
use super::protocol::{self, Credentials, ToManager};
use crate::config::{ManagerConfig, ManagerUrl};
use crate::net::tls;
use crate::node::Node;
use crate::secret::Secret;

/// Anything a WebSocket can run over: plain TCP or TLS over TCP.
trait Io: AsyncRead + AsyncWrite + Unpin {}
impl<T: AsyncRead + AsyncWrite + Unpin> Io for T {}

type Ws = WebSocketStream<Box<dyn Io>>;
type Sink = SplitSink<Ws, Message>;
type Stream = SplitStream<Ws>;

/// The read limit per frame and message (memory bound). Frames between 5 MB and this are read
/// and ignored by the link, as the protocol says. A larger one cannot be skipped: tungstenite
/// refuses it after reading only its header, with the payload still in the stream, so the
/// connection is closed, the frame counted, and the link reconnects with its normal backoff
/// ([`Link::handle_frame_too_large`]).
pub const MAX_FRAME: usize = 16 << 20;

#[derive(Debug)]
pub enum ClientError {
    NoUrl,
    Tls(tls::TlsError),
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::NoUrl => f.write_str("no usable manager URL"),
            ClientError::Tls(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for ClientError {}

/// Why one connection attempt to the manager failed, naming the step: TCP, TLS or the
/// WebSocket upgrade. The text goes to the log and to `last_error` (`/healthz`,
/// `quoll ctl manager`).
#[derive(Debug)]
pub enum ConnectError {
    Tcp {
        host: String,
        port: u16,
        source: std::io::Error,
    },
    /// The host cannot be a TLS server name.
    ServerName {
        host: String,
        source: rustls::pki_types::InvalidDnsNameError,
    },
    Tls(std::io::Error),
    /// The upgrade request could not be built from the URL.
    BadUrl(tungstenite::Error),
    Upgrade(tungstenite::Error),
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnectError::Tcp { host, port, source } => {
                write!(f, "TCP connect to {host}:{port}: {source}")
            }
            ConnectError::ServerName { host, source } => {
                write!(f, "{host:?} is not a TLS server name: {source}")
            }
            ConnectError::Tls(e) => write!(f, "TLS handshake: {e}"),
            ConnectError::BadUrl(e) => write!(f, "bad URL: {e}"),
            ConnectError::Upgrade(e) => write!(f, "WebSocket upgrade: {e}"),
        }
    }
}

impl std::error::Error for ConnectError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ConnectError::Tcp { source, .. } => Some(source),
            ConnectError::ServerName { source, .. } => Some(source),
            ConnectError::Tls(e) => Some(e),
            ConnectError::BadUrl(e) | ConnectError::Upgrade(e) => Some(e),
        }
    }
}

/// What the side tasks report to the main loop, tagged with the connection's generation so
/// a late report about an abandoned connection is ignored.
enum Report {
    Connected(u64, Box<Ws>),
    ConnectFailed(u64, ConnectError),
    WriteFailed(u64, String),
    Reply(u64, ToManager),
}

struct Connection {
    reader: Option<Stream>,
    writer: Option<JoinHandle<()>>,
    connecting: Option<JoinHandle<()>>,
}

/// Run the manager link until the task is dropped. Returns early only if the config cannot
/// be used at all (validated configs always can).
pub async fn run(
    node: Rc<Node>,
    cfg: ManagerConfig,
    feed: Rc<dyn EventFeed>,
) -> Result<(), ClientError> {
    let urls: Vec<(ManagerUrl, String)> = cfg
        .urls
        .iter()
        .filter_map(|u| ManagerUrl::parse(u).ok().map(|p| (p, u.clone())))
        .collect();
    if urls.is_empty() {
        return Err(ClientError::NoUrl);
    }
    let pin = cfg
        .cert_fingerprint
        .as_deref()
        .and_then(crate::config::parse_fingerprint);
    let tls = Arc::new(
        tls::client_config(&tls::ServerTrust::manager(pin, cfg.accept_self_signed_cert))
            .map_err(ClientError::Tls)?,
    );
    let creds = match (&cfg.node_id, &cfg.node_secret) {
        (Some(id), Some(secret)) => Credentials::Node {
            id: id.clone(),
            secret: Secret::new(secret.as_str()),
        },
        _ => Credentials::Token {
            token: Secret::new(cfg.registration_token.clone().unwrap_or_default()),
        },
    };
    let mut link = Link::new(
        urls.len(),
        creds,
        Timing::default(),
        seed(),
        Instant::now().into_std(),
    );
    let shell = Shell {
        node,
        feed,
        protocol_version: cfg.protocol_version,
        outbox: Rc::new(RefCell::new(Outbox::default())),
        wake: Rc::new(Notify::new()),
        events_on: Rc::new(Cell::new(false)),
    };
    let (tx, mut rx) = mpsc::unbounded_channel::<Report>();
    let mut generation = 0u64;
    let mut conn = Connection {
        reader: None,
        writer: None,
        connecting: None,
    };
    loop {
        while let Some(action) = link.poll_action() {
            match action {
                Action::Connect { url } => {
                    shell.teardown(&mut conn);
                    generation += 1;
                    let (parsed, raw) = urls[url].clone();
                    tracing::info!(url = %raw, effective = %request_url(&parsed), "connecting to the manager");
                    let (tls, tx, g) = (tls.clone(), tx.clone(), generation);
                    conn.connecting = Some(tokio::task::spawn_local(async move {
                        let r = match connect(&parsed, tls).await {
                            Ok(ws) => Report::Connected(g, Box::new(ws)),
                            Err(e) => Report::ConnectFailed(g, e),
                        };
                        let _ = tx.send(r);
                    }));
                }
                Action::Disconnect { reason } => {
                    tracing::info!("manager link: disconnect ({reason})");
                    shell.teardown(&mut conn);
                    // Reports still in flight belong to the old connection.
                    generation += 1;
                }
                Action::SendAuth => {
                    let auth = protocol::auth(
                        link.credentials(),
                        env!("CARGO_PKG_VERSION"),
                        shell.protocol_version,
                    );
                    shell.push(Frame::Text(auth.to_json().into()));
                }
                Action::Up => {
                    tracing::info!("manager link up");
                    shell.events_on.set(true);
                    shell.wake.notify_one();
                }
                Action::SendHealth => {
                    let h = shell.health(link.counters()).await;
                    let msg = ToManager::Health {
                        timestamp: crate::time::now_rfc3339(),
                        payload: h,
                    };
                    shell.outbox.borrow_mut().push_health(msg.to_json());
                    shell.wake.notify_one();
                }
                Action::SendStats => {
                    let s = shell.stats().await;
                    let msg = ToManager::Stats {
                        timestamp: crate::time::now_rfc3339(),
                        payload: s,
                    };
                    shell.outbox.borrow_mut().push_stats(msg.to_json());
                    shell.wake.notify_one();
                }
                Action::SendPing => shell.push(Frame::Ping),
                Action::SendPong => {
                    let pong = ToManager::Pong {
                        timestamp: crate::time::now_rfc3339(),
                        payload: protocol::Empty {},
                    };
                    shell.push(Frame::Text(pong.to_json().into()));
                }
                Action::Execute { command_id, action } => {
                    tracing::info!(%command_id, ?action, "manager command");
                    let (node, tx, g) = (shell.node.clone(), tx.clone(), generation);
                    tokio::task::spawn_local(async move {
                        let reply = commands::execute(&node, action).await;
                        for msg in reply.into_messages(&crate::time::now_rfc3339(), &command_id) {
                            let _ = tx.send(Report::Reply(g, msg));
                        }
                    });
                }
                Action::Reject { command_id, error } => {
                    let ack = protocol::ack_err(
                        &crate::time::now_rfc3339(),
                        &command_id,
                        &error,
                        "validation_error",
                    );
                    shell.push(Frame::Text(ack.to_json().into()));
                }
                Action::StoreCredentials {
                    node_id,
                    node_secret,
                } => {
                    match shell
                        .node
                        .set_manager_credentials(&node_id, node_secret.expose())
                        .await
                    {
                        Ok(()) => {
                            tracing::info!(%node_id, "registered with the manager; credentials saved")
                        }
                        // Raised as an event by Node; the credentials still serve this run.
                        Err(e) => tracing::error!(%node_id, "registered, but {e}"),
                    }
                }
                Action::Raise(event) => {
                    shell.node.events.raise(event);
                }
            }
        }

        // What `quoll ctl manager` shows (cheap: a few words and counters per loop turn).
        let c = link.counters();
        shell.node.set_manager_status(json!({
            "state": link.state_name(),
            "ever_connected": link.ever_connected(),
            "last_error": link.last_error(),
            "connects": c.connects,
            "sessions": c.sessions,
            "failed_attempts": c.failed_attempts,
            "auth_failures": c.auth_failures,
            "malformed_frames": c.malformed,
            "oversize_frames": c.oversize,
        }));
        let deadline = Instant::from_std(link.poll_timeout());
        let next_frame = async {
            match conn.reader.as_mut() {
                Some(r) => r.next().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => link.handle_timeout(Instant::now().into_std()),
            Some(report) = rx.recv() => {
                let now = Instant::now().into_std();
                match report {
                    Report::Connected(g, ws) if g == generation => {
                        let (sink, stream) = (*ws).split();
                        conn.connecting = None;
                        conn.reader = Some(stream);
                        conn.writer = Some(tokio::task::spawn_local(shell.writer(sink, g, tx.clone())));
                        link.handle_connected(now);
                    }
                    Report::ConnectFailed(g, e) if g == generation => {
                        tracing::warn!("manager connect failed: {e}");
                        link.handle_connect_failed(now, &e.to_string());
                    }
                    Report::WriteFailed(g, e) if g == generation => {
                        tracing::warn!("manager write failed: {e}");
                        link.handle_closed(now, &e);
                    }
                    Report::Reply(g, msg) if g == generation && link.is_up() => {
                        shell.push(Frame::Text(msg.to_json().into()));
                    }
                    _ => {}
                }
            }
            frame = next_frame => {
                let now = Instant::now().into_std();
                match frame {
                    Some(Ok(Message::Text(t))) => link.handle_text(now, t.as_str()),
                    Some(Ok(Message::Binary(b))) => link.handle_binary(b.len()),
                    Some(Ok(Message::Pong(_))) => link.handle_pong(now),
                    // tungstenite answers pings itself.
                    Some(Ok(Message::Ping(_) | Message::Frame(_))) => {}
                    Some(Ok(Message::Close(c))) => {
                        let why = c.map(|c| format!("closed by the manager ({} {})", c.code, c.reason))
                            .unwrap_or_else(|| "closed by the manager".into());
                        conn.reader = None;
                        link.handle_closed(now, &why);
                    }
                    Some(Err(e @ tungstenite::Error::Capacity(_))) => {
                        conn.reader = None;
                        link.handle_frame_too_large(now, &e.to_string());
                    }
                    Some(Err(e)) => {
                        conn.reader = None;
                        link.handle_closed(now, &format!("read failed: {e}"));
                    }
                    None => {
                        conn.reader = None;
                        link.handle_closed(now, "connection closed");
                    }
                }
            }
        }
    }
}

struct Shell {
    node: Rc<Node>,
    feed: Rc<dyn EventFeed>,
    protocol_version: u32,
    outbox: Rc<RefCell<Outbox>>,
    /// Wakes the writer when the outbox gets something.
    wake: Rc<Notify>,
    /// Events flow only after auth succeeded (and after the first health).
    events_on: Rc<Cell<bool>>,
}

impl Shell {
    fn push(&self, frame: Frame) {
        self.outbox.borrow_mut().push_control(frame);
        self.wake.notify_one();
    }

    fn teardown(&self, conn: &mut Connection) {
        if let Some(t) = conn.connecting.take() {
            t.abort();
        }
        if let Some(t) = conn.writer.take() {
            t.abort();
        }
        conn.reader = None;
        self.outbox.borrow_mut().clear();
        self.events_on.set(false);
    }

    /// The writer of one connection: replies, health, events (pulled from the feed and
    /// acknowledged once written), stats.
    fn writer(
        &self,
        mut sink: Sink,
        generation: u64,
        tx: mpsc::UnboundedSender<Report>,
    ) -> impl std::future::Future<Output = ()> + 'static {
        let (outbox, wake, feed, events_on) = (
            self.outbox.clone(),
            self.wake.clone(),
            self.feed.clone(),
            self.events_on.clone(),
        );
        async move {
            let raised = feed.notify();
            loop {
                // Register for wake-ups before looking, so none is missed in between.
                let mut woken = pin!(wake.notified());
                let mut new_event = pin!(raised.notified());
                woken.as_mut().enable();
                new_event.as_mut().enable();
                if events_on.get() && outbox.borrow().wants_events() {
                    let mut ob = outbox.borrow_mut();
                    for r in feed.pending(EVENT_WINDOW) {
                        if !ob.push_event(r.seq, event_text(&r)) {
                            // Queued as a skip: acknowledged in its turn, never written,
                            // so it cannot hold back the events behind it.
                            tracing::error!(
                                seq = r.seq,
                                category = r.event.category.as_str(),
                                "event too large for the manager even shortened: skipped"
                            );
                        }
                    }
                }
                let next = outbox.borrow_mut().pop();
                let Some(out) = next else {
                    tokio::select! {
                        _ = woken => {}
                        _ = new_event => {}
                    }
                    continue;
                };
                let msg = match out.frame {
                    Some(Frame::Text(t)) => Message::text(t.into_inner()),
                    Some(Frame::Ping) => Message::Ping(Bytes::new()),
                    None => {
                        // An event that cannot be sent, reached in its turn.
                        if let Some(seq) = out.seq {
                            feed.ack(seq);
                        }
                        continue;
                    }
                };
                if let Err(e) = sink.send(msg).await {
                    let _ = tx.send(Report::WriteFailed(generation, e.to_string()));
                    return;
                }
                if let Some(seq) = out.seq {
                    feed.ack(seq);
                }
            }
        }
    }

    async fn health(&self, link: &super::link::Counters) -> Value {
        let h = self.node.health().await;
        // Memory-only (a failed disk, or no data dir) means alarms would not survive a crash.
        let durable = h.event_log.durable;
        // Events lost to damage on disk, until this link delivers the loss report.
        let lost = h.event_log.lost_unacked > 0;
        let views = self.node.flows().await;
        let errored = views
            .iter()
            .filter(|v| v.state == crate::flow::FlowState::Error)
            .count();
        // error: there are flows and every one that should run has failed; degraded:
        // something is wrong but the node works (a failed flow, events only in memory).
        let enabled = views.iter().filter(|v| v.config.enabled).count();
        let status = if enabled > 0 && errored >= enabled {
            "error"
        } else if errored > 0 || !durable || lost {
            "degraded"
        } else {
            "ok"
        };
        let ob = self.outbox.borrow().counters.clone();
        let active_tunnels = h
            .tunnels
            .iter()
            .filter(|t| t.state == crate::tunnel::status::TunnelState::Ready)
            .count();
        let tunnels = &h.tunnels;
        json!({
            "status": status,
            "version": h.version,
            "uptime_secs": h.uptime_secs,
            "active_flows": h.active_flows,
            "total_flows": h.total_flows,
            "error_flows": errored,
            // Each tunnel's state and counters, as in `stats`, and how many are ready.
            "tunnels": tunnels,
            "active_tunnels": active_tunnels,
            "event_queue_depth": self.feed.depth(),
            "event_log": if durable { "durable" } else { "memory" },
            "memory": memory(),
            "manager_link": {
                "connects": link.connects,
                "failed_attempts": link.failed_attempts,
                "auth_failures": link.auth_failures,
                "malformed_frames": link.malformed,
                "oversize_frames": link.oversize,
                "ignored_messages": link.ignored,
                "stats_shed": ob.stats_shed,
                "replies_dropped": ob.control_dropped,
                "too_large_unsent": ob.too_large,
                "events_skipped": ob.events_skipped,
            },
        })
    }

    async fn stats(&self) -> Value {
        let s = self.node.stats().await;
        let mut v = serde_json::to_value(&s).unwrap_or_else(|_| json!({}));
        // The manager reads the counters; the flow configs go with get_config.
        if let Some(flows) = v.get_mut("flows").and_then(Value::as_array_mut) {
            for f in flows.iter_mut().filter_map(Value::as_object_mut) {
                f.remove("config");
            }
        }
        crate::config::redact_value(&mut v);
        // `stats` serialized every tunnel's status in the shape the manager reads (`state`,
        // `stats.bitrate_in_bps` / `bitrate_out_bps`).
        v
    }
}

/// An event message, shortened (details cut to `seq` and `raised_at`) in the unlikely case
/// that its details push it over the manager's limit: better a short event than none.
fn event_text(r: &crate::events::Record) -> String {
    let text = protocol::event(r).to_json();
    if text.len() <= protocol::MAX_MESSAGE_BYTES {
        return text;
    }
    let mut short = r.clone();
    short.event.details.clear();
    short.event.details.insert("truncated".into(), true.into());
    protocol::event(&short).to_json()
}

/// Resident memory of quoll and what the system has left, from /proc (Linux).
fn memory() -> Value {
    let page = crate::sys::page_size();
    let rss = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map(|pages| pages * page);
    let available = std::fs::read_to_string("/proc/meminfo").ok().and_then(|s| {
        s.lines()
            .find(|l| l.starts_with("MemAvailable:"))?
            .split_whitespace()
            .nth(1)?
            .parse::<u64>()
            .ok()
            .map(|kib| kib * 1024)
    });
    json!({ "rss_bytes": rss, "available_bytes": available })
}

/// Jitter seed; the link's backoff only needs it to differ between nodes.
fn seed() -> u64 {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 8];
    if ring::rand::SystemRandom::new().fill(&mut b).is_err() {
        let t = crate::time::unix_millis(std::time::SystemTime::now());
        return t ^ u64::from(std::process::id()).rotate_left(32);
    }
    u64::from_le_bytes(b)
}

/// The URL of the upgrade request: scheme, host, port and path after the defaults.
fn request_url(url: &ManagerUrl) -> String {
    let scheme = if url.tls { "wss" } else { "ws" };
    let host = if url.host.contains(':') {
        format!("[{}]", url.host)
    } else {
        url.host.clone()
    };
    format!("{scheme}://{host}:{}{}", url.port, url.path)
}

async fn connect(url: &ManagerUrl, tls: Arc<rustls::ClientConfig>) -> Result<Ws, ConnectError> {
    let tcp = match url.host.parse::<IpAddr>() {
        Ok(ip) => TcpStream::connect((ip, url.port)).await,
        // A name: tokio resolves it on its blocking pool, off the runtime thread.
        Err(_) => TcpStream::connect((url.host.as_str(), url.port)).await,
    }
    .map_err(|source| ConnectError::Tcp {
        host: url.host.clone(),
        port: url.port,
        source,
    })?;
    let _ = tcp.set_nodelay(true);
    let io: Box<dyn Io> = if url.tls {
        let name = rustls::pki_types::ServerName::try_from(url.host.clone()).map_err(|source| {
            ConnectError::ServerName {
                host: url.host.clone(),
                source,
            }
        })?;
        let stream = tokio_rustls::TlsConnector::from(tls)
            .connect(name, tcp)
            .await
            .map_err(ConnectError::Tls)?;
        Box::new(stream)
    } else {
        Box::new(tcp)
    };
    // The request is built from the parsed URL, so the defaults (port 8443, path `/ws/node`)
    // apply to the upgrade as they did to the TCP connect.
    let request = request_url(url)
        .into_client_request()
        .map_err(ConnectError::BadUrl)?;
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_FRAME))
        .max_frame_size(Some(MAX_FRAME));
    let (ws, _response) = tokio_tungstenite::client_async_with_config(request, io, Some(config))
        .await
        .map_err(ConnectError::Upgrade)?;
    Ok(ws)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio_tungstenite::tungstenite::protocol::Role;

    use super::*;
    use crate::events::{Event, Events, Record};

    #[test]
    fn the_upgrade_request_carries_the_spec_defaults() {
        let url = |s: &str| request_url(&ManagerUrl::parse(s).unwrap());
        assert_eq!(url("wss://m.example"), "wss://m.example:8443/ws/node");
        assert_eq!(url("ws://127.0.0.1:9"), "ws://127.0.0.1:9/ws/node");
        assert_eq!(url("wss://[::1]/x?y=1"), "wss://[::1]:8443/x?y=1");
    }

    #[test]
    fn connect_errors_name_the_step_that_failed() {
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let e = ConnectError::Tcp {
            host: "m.example".into(),
            port: 8443,
            source: refused,
        };
        assert!(
            e.to_string().starts_with("TCP connect to m.example:8443: "),
            "{e}"
        );
        assert!(std::error::Error::source(&e).is_some());
        let e = ConnectError::Tls(std::io::Error::other("bad certificate"));
        assert_eq!(e.to_string(), "TLS handshake: bad certificate");
    }

    /// A feed over a fixed list, recording acknowledgements.
    #[derive(Default)]
    struct ListFeed {
        records: RefCell<Vec<Record>>,
        acked: Cell<u64>,
        notify: Rc<Notify>,
    }

    impl EventFeed for ListFeed {
        fn pending(&self, max: usize) -> Vec<Record> {
            let acked = self.acked.get();
            let r = self.records.borrow();
            r.iter()
                .filter(|r| r.seq > acked)
                .take(max)
                .cloned()
                .collect()
        }
        fn ack(&self, seq: u64) {
            self.acked.set(self.acked.get().max(seq));
        }
        fn notify(&self) -> Rc<Notify> {
            self.notify.clone()
        }
        fn depth(&self) -> u64 {
            0
        }
    }

    fn record(seq: u64, flow_id: String) -> Record {
        let mut event = Event::flow_started("f");
        event.flow_id = Some(flow_id);
        Record {
            seq,
            raised_at_ms: 1_775_131_200_000,
            event,
        }
    }

    #[test]
    fn an_event_too_large_to_send_does_not_stall_the_queue() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        tokio::task::LocalSet::new().block_on(&rt, async {
            let mut cfg = crate::config::parse(crate::config::EMBEDDED_DEFAULT).unwrap();
            cfg.flows.clear();
            let node = Node::start(cfg, None, Events::in_memory(16), None).await;
            let feed = Rc::new(ListFeed::default());
            // Over 5 MB even shortened (the flow id is not cut), and the only event.
            feed.records
                .borrow_mut()
                .push(record(1, "f".repeat(protocol::MAX_MESSAGE_BYTES)));
            let shell = Shell {
                node,
                feed: feed.clone(),
                protocol_version: 1,
                outbox: Rc::new(RefCell::new(Outbox::default())),
                wake: Rc::new(Notify::new()),
                events_on: Rc::new(Cell::new(true)),
            };
            let (a, b) = tokio::io::duplex(1 << 16);
            let client =
                WebSocketStream::from_raw_socket(Box::new(a) as Box<dyn Io>, Role::Client, None)
                    .await;
            let mut server = WebSocketStream::from_raw_socket(b, Role::Server, None).await;
            let (sink, _stream) = client.split();
            let (tx, _rx) = mpsc::unbounded_channel();
            let writer = tokio::task::spawn_local(shell.writer(sink, 1, tx));
            shell.wake.notify_one();

            let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
            while feed.acked.get() < 1 {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the oversize event was never acknowledged: the queue stalls"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            assert_eq!(shell.outbox.borrow().counters.events_skipped, 1);

            // The next event goes out, and it is the first thing the manager gets.
            feed.records.borrow_mut().push(record(2, "f2".into()));
            feed.notify.notify_one();
            let got = tokio::time::timeout(Duration::from_secs(5), server.next())
                .await
                .expect("the next event")
                .unwrap()
                .unwrap();
            let v: Value = serde_json::from_str(got.to_text().unwrap()).unwrap();
            assert_eq!(v["payload"]["details"]["seq"], 2, "{v}");
            let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
            while feed.acked.get() < 2 {
                assert!(tokio::time::Instant::now() < deadline);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            writer.abort();
        });
    }
}
