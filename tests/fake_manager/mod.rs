//! A fake manager built from `shared/spec/manager-protocol.md`, for the integration tests.
//!
//! A WebSocket server on 127.0.0.1 (plain or TLS), run by its own thread and tokio runtime.
//! It plays the manager's part (registration tokens, node credentials, auth replies,
//! commands) and is strict about everything the edge sends: every message is checked against
//! the spec (envelope, `timestamp`, field names and types, limits) and any deviation is
//! recorded as a violation, which the tests assert to be empty. Everything received is
//! recorded with its arrival time.
#![allow(dead_code)]

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// Error codes of `command_ack` in the spec, and `limit_exceeded` (a resource budget, issue
/// 13; to be added to the spec's list).
const ERROR_CODES: &[&str] = &[
    "limit_exceeded",
    "validation_error",
    "not_found",
    "port_conflict",
    "bind_failed",
    "unknown_action",
    "config_persist_failed",
    "invalid_value",
];
const SECRET_KEYS: &[&str] = &[
    "passphrase",
    "password",
    "bearer_token",
    "stream_key",
    "auth_token",
    "node_secret",
    "registration_token",
    "secret",
    "private_key",
];

#[derive(Clone, Default)]
pub struct Options {
    /// Listen on this port (a restart on the same port); 0 picks a free one.
    pub port: u16,
    /// Serve TLS with this certificate chain and key (DER).
    pub tls: Option<(Vec<u8>, Vec<u8>)>,
    /// Registration tokens the operator created (single use).
    pub tokens: Vec<String>,
    /// Known nodes: (node_id, node_secret).
    pub nodes: Vec<(String, String)>,
    /// A tiny socket receive buffer, so a manager that stops reading pushes back at once.
    pub small_rcvbuf: bool,
}

#[derive(Debug, Clone)]
pub struct Received {
    /// Index of the connection (0-based, counting upgraded WebSocket connections).
    pub conn: usize,
    pub at: SystemTime,
    pub msg: Value,
}

#[derive(Debug, Default)]
pub struct State {
    pub connections: usize,
    /// Connections whose TLS handshake failed.
    pub tls_failures: usize,
    /// The `auth` payloads, in order.
    pub auths: Vec<Value>,
    /// "ok", "registered" or "error", one per auth.
    pub auth_results: Vec<&'static str>,
    /// Every message after `auth` that the real manager would keep, in arrival order.
    pub messages: Vec<Received>,
    /// Messages the real manager drops (no valid `timestamp`, over 5 MB): counted here and
    /// as violations, never in `messages`.
    pub dropped: usize,
    pub violations: Vec<String>,
    pub tokens: Vec<String>,
    pub nodes: Vec<(String, String)>,
    /// Reject this many further auths with `auth_error` (message below).
    pub reject_auths: usize,
    pub reject_message: String,
    auth_failures: Vec<Instant>,
    /// WebSocket Ping frames received (the edge's liveness check).
    pub pings: usize,
    pub open: bool,
}

impl State {
    pub fn of_type(&self, kind: &str) -> Vec<&Received> {
        self.messages
            .iter()
            .filter(|r| r.msg["type"] == kind)
            .collect()
    }
    pub fn events(&self) -> Vec<&Value> {
        self.of_type("event").into_iter().map(|r| &r.msg).collect()
    }
    pub fn has_event(&self, message: &str) -> bool {
        self.events()
            .iter()
            .any(|e| e["payload"]["message"] == message)
    }
}

#[path = "../support/watched.rs"]
mod watched;

type Shared = watched::Watched<State>;

impl Shared {
    fn violation(&self, v: String) {
        eprintln!("fake manager: VIOLATION {v}");
        self.update(|s| s.violations.push(v));
    }
}

enum Ctl {
    Send(Message),
    /// Stop / resume reading the current connection (a slow manager).
    Reading(bool),
    /// Close the current connection.
    Drop,
    Stop,
}

pub struct FakeManager {
    pub port: u16,
    shared: Arc<Shared>,
    ctl: mpsc::UnboundedSender<Ctl>,
    thread: Option<std::thread::JoinHandle<()>>,
    next_command: usize,
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

impl FakeManager {
    pub fn start(opts: Options) -> FakeManager {
        let shared = Arc::new(Shared::new(State {
            tokens: opts.tokens.clone(),
            nodes: opts.nodes.clone(),
            open: true,
            ..State::default()
        }));
        let socket = tokio_socket(opts.port, opts.small_rcvbuf).expect("bind the fake manager");
        let port = socket.local_addr().unwrap().port();
        let (ctl, rx) = mpsc::unbounded_channel();
        let thread = {
            let shared = shared.clone();
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                let local = tokio::task::LocalSet::new();
                local.block_on(&rt, serve(socket, opts.tls, shared, rx));
            })
        };
        FakeManager {
            port,
            shared,
            ctl,
            thread: Some(thread),
            next_command: 0,
        }
    }

    pub fn url(&self, tls: bool) -> String {
        let scheme = if tls { "wss" } else { "ws" };
        format!("{scheme}://127.0.0.1:{}/ws/node", self.port)
    }

    pub fn state(&self) -> MutexGuard<'_, State> {
        self.shared.lock()
    }

    pub fn update(&self, f: impl FnOnce(&mut State)) {
        self.shared.update(f)
    }

    /// Wait until `cond` holds, up to `limit`; false if it never did.
    pub fn wait(&self, limit: Duration, cond: impl FnMut(&State) -> bool) -> bool {
        self.shared.wait(limit, cond)
    }

    /// Like `wait`, but panics with the state on timeout.
    pub fn expect(&self, what: &str, limit: Duration, cond: impl FnMut(&State) -> bool) {
        if !self.wait(limit, cond) {
            let s = self.state();
            panic!(
                "fake manager: timed out waiting for {what}; connections {}, auths {:?}, results {:?}, violations {:?}, last messages {:?}",
                s.connections,
                s.auths,
                s.auth_results,
                s.violations,
                s.messages
                    .iter()
                    .rev()
                    .take(5)
                    .map(|r| r.msg.to_string().chars().take(300).collect::<String>())
                    .collect::<Vec<_>>()
            );
        }
    }

    /// Send a raw frame to the current connection.
    pub fn send(&self, m: Message) {
        let _ = self.ctl.send(Ctl::Send(m));
    }

    pub fn send_json(&self, v: Value) {
        self.send(Message::text(v.to_string()));
    }

    /// Stop reading from the node (`false`) or start again (`true`); sending goes on. A
    /// manager that does not read does not answer the node's WebSocket Pings either
    /// (tungstenite answers them while reading), which is what a hung manager looks like.
    pub fn set_reading(&self, on: bool) {
        let _ = self.ctl.send(Ctl::Reading(on));
    }

    /// Close the current connection (the manager going away for a moment).
    pub fn drop_connection(&self) {
        let _ = self.ctl.send(Ctl::Drop);
    }

    /// Send a `command` and wait for its reply: the `command_ack` with its id, or for
    /// `get_config` the next `config_response`, which must follow the `command_ack`.
    pub fn command(&mut self, action: Value, limit: Duration) -> Value {
        self.next_command += 1;
        let id = format!("cmd-{}", self.next_command);
        let kind = action["type"].as_str().unwrap_or("").to_string();
        let seen = self.state().messages.len();
        self.send_json(json!({
            "type": "command",
            "timestamp": now_rfc3339(),
            "payload": { "command_id": id, "action": action }
        }));
        let ack =
            |m: &Value| m["type"] == "command_ack" && m["payload"]["command_id"] == id.as_str();
        let answer = |m: &Value| {
            if kind == "get_config" {
                m["type"] == "config_response"
            } else {
                ack(m)
            }
        };
        let mut found = None;
        let ok = self.wait(limit, |s| {
            let new = &s.messages[seen.min(s.messages.len())..];
            found = new.iter().position(|r| answer(&r.msg)).map(|i| {
                // get_config: the manager needs the ack first (it clears its cached config
                // on any ack), then the config_response.
                let acked_first = kind != "get_config" || new[..i].iter().any(|r| ack(&r.msg));
                (new[i].msg.clone(), acked_first)
            });
            found.is_some()
        });
        assert!(ok, "no reply to {kind} ({id}) within {limit:?}");
        let (msg, acked_first) = found.unwrap();
        assert!(
            acked_first,
            "{kind} ({id}): config_response without a command_ack before it"
        );
        msg
    }

    /// Stop listening and close every connection; returns the port for a restart.
    pub fn stop(mut self) -> (u16, Vec<Received>, Vec<String>) {
        let _ = self.ctl.send(Ctl::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let mut s = self.shared.lock();
        (
            self.port,
            std::mem::take(&mut s.messages),
            std::mem::take(&mut s.violations),
        )
    }
}

impl Drop for FakeManager {
    fn drop(&mut self) {
        let _ = self.ctl.send(Ctl::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A listening socket with SO_REUSEADDR, so a restarted manager gets its port back while the
/// old connections sit in TIME_WAIT.
fn tokio_socket(port: u16, small_rcvbuf: bool) -> io::Result<std::net::TcpListener> {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    s.set_reuse_address(true)?;
    if small_rcvbuf {
        // Inherited by accepted sockets; set before listen so the window is small from
        // the first segment.
        s.set_recv_buffer_size(4096)?;
    }
    s.bind(&SocketAddr::from(([127, 0, 0, 1], port)).into())?;
    s.listen(16)?;
    s.set_nonblocking(true)?;
    Ok(s.into())
}

async fn serve(
    socket: std::net::TcpListener,
    tls: Option<(Vec<u8>, Vec<u8>)>,
    shared: Arc<Shared>,
    mut ctl: mpsc::UnboundedReceiver<Ctl>,
) {
    let listener = tokio::net::TcpListener::from_std(socket).unwrap();
    let acceptor = tls.map(|(cert, key)| {
        let cert = rustls::pki_types::CertificateDer::from(cert);
        let key = rustls::pki_types::PrivateKeyDer::try_from(key).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .unwrap();
        tokio_rustls::TlsAcceptor::from(Arc::new(config))
    });
    let mut current: Option<(mpsc::UnboundedSender<Ctl>, tokio::task::JoinHandle<()>)> = None;
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let (tx, rx) = mpsc::unbounded_channel();
                let task = tokio::task::spawn_local(connection(stream, acceptor.clone(), shared.clone(), rx));
                // One node: a new connection replaces the old one, as the manager does.
                if let Some((_, old)) = current.replace((tx, task)) {
                    old.abort();
                }
            }
            c = ctl.recv() => match c {
                Some(c @ (Ctl::Send(_) | Ctl::Reading(_))) => {
                    if let Some((tx, _)) = &current {
                        let _ = tx.send(c);
                    }
                }
                Some(Ctl::Drop) => {
                    if let Some((_, t)) = current.take() {
                        t.abort();
                    }
                }
                Some(Ctl::Stop) | None => {
                    if let Some((_, t)) = current.take() {
                        t.abort();
                        let _ = t.await;
                    }
                    shared.update(|s| s.open = false);
                    return;
                }
            }
        }
    }
}

async fn connection(
    stream: tokio::net::TcpStream,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shared: Arc<Shared>,
    mut rx: mpsc::UnboundedReceiver<Ctl>,
) {
    let io: Box<dyn Io> = match tls {
        Some(acceptor) => match acceptor.accept(stream).await {
            Ok(s) => Box::new(s),
            Err(e) => {
                eprintln!("fake manager: TLS handshake failed: {e}");
                shared.update(|s| s.tls_failures += 1);
                return;
            }
        },
        None => Box::new(stream),
    };
    let path_ok = std::cell::Cell::new(true);
    // The callback's signature is tungstenite's.
    #[allow(clippy::result_large_err)]
    let check_path = |req: &Request, resp: Response| {
        if req.uri().path() != "/ws/node" {
            path_ok.set(false);
        }
        Ok(resp)
    };
    let config = WebSocketConfig::default()
        .max_message_size(Some(64 << 20))
        .max_frame_size(Some(64 << 20));
    let ws =
        match tokio_tungstenite::accept_hdr_async_with_config(io, check_path, Some(config)).await {
            Ok(ws) => ws,
            Err(e) => {
                shared.violation(format!("WebSocket upgrade failed: {e}"));
                return;
            }
        };
    if !path_ok.get() {
        shared.violation("upgrade request path is not /ws/node".into());
    }
    let conn = {
        let mut s = shared.lock();
        s.connections += 1;
        s.connections - 1
    };
    shared.notify();
    let (mut sink, mut stream) = ws.split();

    // The first frame: auth, within 10 s of the upgrade.
    let first = tokio::time::timeout(Duration::from_secs(10), stream.next()).await;
    let auth = match first {
        Ok(Some(Ok(Message::Text(t)))) => t.to_string(),
        Ok(other) => {
            shared.violation(format!("first frame is not a text auth frame: {other:?}"));
            return;
        }
        Err(_) => {
            shared.violation("no auth frame within 10 s of the upgrade".into());
            return;
        }
    };
    let reply = match check_auth(&shared, &auth) {
        Some(r) => r,
        None => return,
    };
    let rejected = reply["type"] == "auth_error";
    if sink.send(Message::text(reply.to_string())).await.is_err() {
        return;
    }
    if rejected {
        // The manager closes after auth_error.
        let _ = sink.close().await;
        return;
    }

    let mut reading = true;
    loop {
        tokio::select! {
            m = stream.next(), if reading => match m {
                Some(Ok(Message::Text(t))) => check_message(&shared, conn, t.as_str()),
                Some(Ok(Message::Binary(_))) => shared.violation("binary frame from the edge".into()),
                Some(Ok(Message::Ping(p))) => {
                    shared.update(|s| s.pings += 1);
                    let _ = sink.send(Message::Pong(p)).await;
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return,
            },
            out = rx.recv() => match out {
                Some(Ctl::Send(m)) => {
                    if sink.send(m).await.is_err() {
                        return;
                    }
                }
                Some(Ctl::Reading(on)) => reading = on,
                Some(_) => {}
                None => return,
            }
        }
    }
}

/// Checks the auth frame and plays the manager: the reply to send, or `None` to hang up.
fn check_auth(shared: &Shared, text: &str) -> Option<Value> {
    let v: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            shared.violation(format!("auth is not JSON: {e}"));
            return None;
        }
    };
    let mut bad = Vec::new();
    if v["type"] != "auth" {
        bad.push(format!("first frame type is {} not auth", v["type"]));
    }
    if let Some(obj) = v.as_object() {
        for k in obj.keys() {
            if !["type", "payload", "timestamp"].contains(&k.as_str()) {
                bad.push(format!("auth has unknown top-level key {k}"));
            }
        }
    }
    let p = &v["payload"];
    let token = p["registration_token"].as_str();
    let creds = (p["node_id"].as_str(), p["node_secret"].as_str());
    match (token, creds) {
        (Some(_), (None, None)) | (None, (Some(_), Some(_))) => {}
        _ => bad.push(format!(
            "auth needs registration_token xor node_id+node_secret: {:?}",
            p.as_object().map(|o| o.keys().collect::<Vec<_>>())
        )),
    }
    if !p["software_version"].is_string() {
        bad.push("auth.payload.software_version is not a string".into());
    }
    if !p["protocol_version"].is_u64() {
        bad.push("auth.payload.protocol_version is not an integer".into());
    }
    if let Some(obj) = p.as_object() {
        for k in obj.keys() {
            if ![
                "registration_token",
                "node_id",
                "node_secret",
                "software_version",
                "protocol_version",
            ]
            .contains(&k.as_str())
            {
                bad.push(format!("auth.payload has unknown key {k}"));
            }
        }
    }
    for b in bad {
        shared.violation(b);
    }

    let mut s = shared.lock();
    s.auths.push(p.clone());
    let reply = if s.reject_auths > 0 {
        s.reject_auths -= 1;
        None
    } else if let Some(t) = token {
        match s.tokens.iter().position(|x| x == t) {
            Some(i) => {
                s.tokens.remove(i); // single use
                let n = s.nodes.len();
                let id = format!("00000000-0000-4000-8000-{n:012}");
                let secret = format!("secret-{n}-{:x}", now_ms());
                s.nodes.push((id.clone(), secret.clone()));
                s.auth_results.push("registered");
                Some(json!({"type": "register_ack", "timestamp": now_rfc3339(),
                            "payload": {"node_id": id, "node_secret": secret}}))
            }
            None => {
                s.reject_message = "Invalid registration token".into();
                None
            }
        }
    } else {
        let known = s
            .nodes
            .iter()
            .any(|(i, sec)| Some(i.as_str()) == creds.0 && Some(sec.as_str()) == creds.1);
        if known {
            s.auth_results.push("ok");
            Some(json!({"type": "auth_ok", "timestamp": now_rfc3339()}))
        } else {
            s.reject_message = "Invalid node secret".into();
            None
        }
    };
    let reply = reply.unwrap_or_else(|| {
        s.auth_results.push("error");
        let now = Instant::now();
        s.auth_failures.push(now);
        let recent = s
            .auth_failures
            .iter()
            .filter(|t| now.duration_since(**t) < Duration::from_secs(60))
            .count();
        if recent >= 5 {
            s.violations
                .push("lockout: 5 auth failures within 60 s".into());
        }
        let msg = if s.reject_message.is_empty() {
            "Invalid node secret".to_string()
        } else {
            s.reject_message.clone()
        };
        json!({"type": "auth_error", "message": msg})
    });
    drop(s);
    shared.notify();
    Some(reply)
}

/// Checks one message after auth against the spec and records it, unless the real manager
/// would drop it (over 5 MB, or no valid `timestamp`): such a message is a violation and is
/// not recorded, so a test waiting for it fails as it would against the real manager.
fn check_message(shared: &Shared, conn: usize, text: &str) {
    let mut bad = Vec::new();
    let mut dropped = false;
    if text.len() > 5_000_000 {
        bad.push(format!("message of {} bytes (over 5 MB)", text.len()));
        dropped = true;
    }
    let v: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            shared.violation(format!("not JSON: {e}"));
            return;
        }
    };
    match v.as_object() {
        None => bad.push("message is not an object".into()),
        Some(o) => {
            for k in o.keys() {
                if !["type", "timestamp", "payload"].contains(&k.as_str()) {
                    bad.push(format!("unknown top-level key {k}"));
                }
            }
        }
    }
    let kind = v["type"].as_str().unwrap_or("");
    match v["timestamp"].as_str() {
        None => {
            bad.push(format!("{kind}: missing timestamp (the manager drops it)"));
            dropped = true;
        }
        Some(t) if parse_rfc3339_utc(t).is_none() => {
            bad.push(format!("{kind}: timestamp {t:?} is not RFC 3339 UTC"));
            dropped = true;
        }
        Some(_) => {}
    }
    let p = &v["payload"];
    if !p.is_object() {
        bad.push(format!("{kind}: payload is not an object"));
    }
    let u64_at = |bad: &mut Vec<String>, p: &Value, path: &str| {
        let mut x = p;
        for part in path.split('.') {
            x = &x[part];
        }
        if !x.is_u64() {
            bad.push(format!("{kind}: {path} is not a u64: {x}"));
        }
    };
    match kind {
        "health" => {
            if !matches!(p["status"].as_str(), Some("ok" | "degraded" | "error")) {
                bad.push(format!("health.status {}", p["status"]));
            }
            if !p["version"].is_string() {
                bad.push("health.version is not a string".into());
            }
            for f in ["uptime_secs", "active_flows", "total_flows"] {
                u64_at(&mut bad, p, f);
            }
        }
        "stats" => {
            for f in ["uptime_secs", "active_flows", "total_flows"] {
                u64_at(&mut bad, p, f);
            }
            match p["flows"].as_array() {
                None => bad.push("stats.flows is not an array".into()),
                Some(flows) => {
                    if flows.is_empty() && p["total_flows"].as_u64().unwrap_or(0) > 0 {
                        bad.push("stats with an empty flow list while flows exist".into());
                    }
                    for f in flows {
                        if !f["id"].is_string() || !f["state"].is_string() {
                            bad.push(format!("stats flow without id/state: {f}"));
                        }
                        u64_at(&mut bad, f, "input.bitrate_bps");
                    }
                }
            }
            match p["tunnels"].as_array() {
                None => bad.push("stats.tunnels is not an array".into()),
                Some(ts) => {
                    for t in ts {
                        if !t["state"].is_string() {
                            bad.push(format!("stats tunnel without state: {t}"));
                        }
                        u64_at(&mut bad, t, "stats.bitrate_in_bps");
                        u64_at(&mut bad, t, "stats.bitrate_out_bps");
                    }
                }
            }
        }
        "event" => {
            if !matches!(
                p["severity"].as_str(),
                Some("info" | "warning" | "critical")
            ) {
                bad.push(format!("event.severity {}", p["severity"]));
            }
            match p["category"].as_str() {
                Some(c) if c.len() <= 256 => {}
                _ => bad.push(format!("event.category {}", p["category"])),
            }
            match p["message"].as_str() {
                Some(m) if m.len() <= 10_000 => {}
                _ => bad.push("event.message missing or over 10 000 bytes".into()),
            }
            if !(p["flow_id"].is_null() || p["flow_id"].is_string()) {
                bad.push("event.flow_id is not a string".into());
            }
            if !p["details"].is_object() {
                bad.push("event.details missing (must carry seq and raised_at)".into());
            }
            u64_at(&mut bad, p, "details.seq");
            if p["details"]["raised_at"] != v["timestamp"] {
                bad.push("event: timestamp is not the raise time in details.raised_at".into());
            }
        }
        "command_ack" => {
            if !p["command_id"].is_string() {
                bad.push("command_ack.command_id".into());
            }
            match p["success"].as_bool() {
                Some(true) => {}
                Some(false) => {
                    if !p["error"].is_string() {
                        bad.push("failed command_ack without error".into());
                    }
                    if !ERROR_CODES.contains(&p["error_code"].as_str().unwrap_or("")) {
                        bad.push(format!("command_ack.error_code {}", p["error_code"]));
                    }
                }
                None => bad.push("command_ack.success is not a boolean".into()),
            }
        }
        "config_response" => {
            if !p["version"].is_u64()
                || !p["server"].is_object()
                || !p["flows"].is_array()
                || !p["tunnels"].is_array()
            {
                bad.push("config_response lacks version/server/flows/tunnels".into());
            }
            if let Some(k) = find_secret(p, false) {
                bad.push(format!("config_response leaks secret key {k}"));
            }
        }
        "pong" => {}
        other => bad.push(format!("unknown message type {other:?} from the edge")),
    }
    for b in bad {
        shared.violation(b);
    }
    if dropped {
        shared.update(|s| s.dropped += 1);
        return;
    }
    shared.update(|s| {
        s.messages.push(Received {
            conn,
            at: SystemTime::now(),
            msg: v,
        })
    });
}

fn find_secret(v: &Value, in_tunnel: bool) -> Option<String> {
    match v {
        Value::Object(m) => m.iter().find_map(|(k, c)| {
            let suffix = ["_secret", "_token", "_password", "_passphrase"]
                .iter()
                .any(|x| k.ends_with(x));
            if SECRET_KEYS.contains(&k.as_str())
                || suffix
                || (in_tunnel && (k == "key" || k.ends_with("_key")))
            {
                Some(k.clone())
            } else {
                find_secret(c, in_tunnel || k == "tunnels")
            }
        }),
        Value::Array(a) => a.iter().find_map(|c| find_secret(c, in_tunnel)),
        _ => None,
    }
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

pub fn now_rfc3339() -> String {
    quoll::time::rfc3339_millis(now_ms())
}

/// `YYYY-MM-DDTHH:MM:SS[.fraction]Z` to Unix milliseconds; `None` if it is not that.
pub fn parse_rfc3339_utc(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if b.len() < 20 || *b.last()? != b'Z' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        t.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| t.parse().ok())?
    };
    if b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut ms = 0;
    let rest = &s[19..s.len() - 1];
    if !rest.is_empty() {
        let frac = rest.strip_prefix('.')?;
        if frac.is_empty() || !frac.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        ms = format!("{frac:0<3}")[..3].parse().ok()?;
    }
    // days from civil (Howard Hinnant)
    let y2 = if mo <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 86_400 + h * 3600 + mi * 60 + sec) * 1000 + ms) as u64)
}

#[test]
fn rfc3339_parser_agrees_with_quoll() {
    for ms in [0u64, 951_782_400_123, 1_775_131_200_000] {
        assert_eq!(
            parse_rfc3339_utc(&quoll::time::rfc3339_millis(ms)),
            Some(ms)
        );
    }
    assert_eq!(
        parse_rfc3339_utc("2026-04-02T12:00:00Z"),
        Some(1_775_131_200_000)
    );
    assert!(parse_rfc3339_utc("2026-04-02 12:00:00Z").is_none());
    assert!(parse_rfc3339_utc("2026-04-02T12:00:00+01:00").is_none());
}

#[test]
fn messages_the_manager_drops_are_violations_and_not_recorded() {
    let shared = Shared::new(State::default());
    check_message(&shared, 0, r#"{"type":"pong","payload":{}}"#);
    check_message(
        &shared,
        0,
        r#"{"type":"pong","timestamp":"yesterday","payload":{}}"#,
    );
    check_message(
        &shared,
        0,
        r#"{"type":"pong","timestamp":"2026-04-02T12:00:00Z","payload":{}}"#,
    );
    let s = shared.lock();
    assert_eq!(s.messages.len(), 1);
    assert_eq!(s.dropped, 2);
    assert_eq!(s.violations.len(), 2, "{:?}", s.violations);
}
