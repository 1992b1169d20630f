//! The `rtmp` flow input: a listening server publishers (OBS, FFmpeg, encoders) push to.
//!
//! The protocol is `crate::rtmp`'s sans-IO [`Session`]; this is its shell: a TCP listener
//! with the API listener's caps and timeouts from the `server` block (`net::listener`;
//! `FlowManager::set_listener_limits`), one task per connection
//! that reads, feeds the session, writes its replies, and hands media to the flow's
//! [`Remux`] and from there, as TS, to the flow's chunker, analyzer and ring.
//!
//! Several flows may listen on one `listen_addr`: the first to start binds it, the others
//! join, and a publisher is routed by its app and stream key (the key compared in constant
//! time through `crate::secret`). The server closes when the last of its flows stops. Each
//! flow input has one [`Remux`] for its whole run, so a publisher that reconnects continues
//! the same PIDs, continuity counters and timeline.
//!
//! Counted in the flow's input stats: refused publishers (unknown app or key, or a second
//! publisher on a busy flow) as `filtered`, connections dropped for garbage (not RTMP, bad
//! chunk sizes, over-long messages, broken commands, no publish in time) and media tags that
//! do not parse as `malformed`. A connection that belongs to no flow yet is counted on the
//! flows whose app it asked for, or on every flow of the port if it never named one.
//! Events as the seed's RTMP table: "RTMP publisher connected" (info), "RTMP publisher
//! disconnected" (warning), "RTMP server error: {error}" (critical: bind or accept failure).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::{Rc, Weak};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::{Feed, InputError};
use crate::events::{Event, Events};
use crate::net::listener::{self, Conn, Limits, Listener};
use crate::rtmp::chunk;
use crate::rtmp::remux::{Fed, Remux};
use crate::rtmp::session::{Output, Session};
use crate::secret::Secret;
use crate::stats::{InputStats, bump};

/// How often the accept loop looks for accept errors to report.
const ERROR_CHECK_EVERY: Duration = Duration::from_secs(1);
/// Bytes read per call.
const READ_SIZE: usize = 64 * 1024;

thread_local! {
    /// The listening servers by address: flows on one port share one.
    static SERVERS: RefCell<HashMap<SocketAddr, Weak<Server>>> = RefCell::new(HashMap::new());
}

/// One flow's place on a server.
struct Route {
    flow_id: String,
    app: String,
    key: Secret,
    events: Events,
    /// Where the flow's media goes: set when the input task runs (a publisher is taken
    /// only then).
    sink: RefCell<Option<Feed>>,
    remux: RefCell<Remux>,
    /// A publisher is on.
    busy: Cell<bool>,
    /// The flow stopped: its publisher is disconnected.
    closed: Cell<bool>,
    stop: Notify,
}

impl Route {
    fn stats(&self) -> Option<Rc<InputStats>> {
        self.sink.borrow().as_ref().map(|s| s.stats.clone())
    }
}

/// A listening port and the flows on it.
struct Server {
    addr: SocketAddr,
    routes: RefCell<Vec<Rc<Route>>>,
    accept: RefCell<Option<JoinHandle<()>>>,
    /// Wakes connections that have no route yet when the server closes.
    shutdown: Rc<Notify>,
    started: Instant,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(t) = self.accept.borrow_mut().take() {
            t.abort();
        }
        self.shutdown.notify_waiters();
        let addr = self.addr;
        let _ = SERVERS.try_with(|s| {
            let mut s = s.borrow_mut();
            if s.get(&addr).is_some_and(|w| w.strong_count() == 0) {
                s.remove(&addr);
            }
        });
    }
}

impl Server {
    /// Counts on the flows `app` names (every flow of the port when none matches).
    fn count(&self, app: Option<&str>, f: impl Fn(&InputStats)) {
        let routes = self.routes.borrow();
        let named: Vec<&Rc<Route>> = routes
            .iter()
            .filter(|r| app.is_some_and(|a| a == r.app))
            .collect();
        let targets: Vec<&Rc<Route>> = if named.is_empty() {
            routes.iter().collect()
        } else {
            named
        };
        for r in targets {
            if let Some(s) = r.stats() {
                f(&s);
            }
        }
    }

    /// The flow for `app` and `key`. Every route with the app is compared, so the time
    /// taken does not tell which key came close.
    fn route(&self, app: &str, key: &str) -> Option<Rc<Route>> {
        let mut found = None;
        for r in self.routes.borrow().iter() {
            if r.app == app && r.key.matches(key) && found.is_none() {
                found = Some(r.clone());
            }
        }
        found
    }
}

/// A flow's registration on a server: removed (and its publisher closed) when dropped.
struct Registration {
    server: Rc<Server>,
    route: Rc<Route>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.route.closed.set(true);
        self.route.stop.notify_waiters();
        self.server
            .routes
            .borrow_mut()
            .retain(|r| !Rc::ptr_eq(r, &self.route));
    }
}

pub struct RtmpInput {
    reg: Registration,
}

impl RtmpInput {
    /// Binds `listen_addr` (or joins the server another flow bound there) and claims
    /// `app`/`stream_key` on it. A bind failure raises "RTMP server error" and fails the
    /// start. A server started here takes `limits` (the `server` block's, as the API
    /// listener); one joined keeps those it started with.
    pub fn bind(
        addr: SocketAddr,
        app: &str,
        stream_key: &Secret,
        flow_id: &str,
        events: &Events,
        limits: Limits,
    ) -> Result<Self, InputError> {
        let app = app.trim_matches('/').to_owned();
        let existing = SERVERS.with(|s| s.borrow().get(&addr).and_then(Weak::upgrade));
        let server = match existing {
            Some(s) => s,
            None => match start_server(addr, limits) {
                Ok(s) => s,
                Err(source) => {
                    events.raise(Event::rtmp_server_error(
                        flow_id,
                        &format!("cannot listen on {addr}: {source}"),
                    ));
                    return Err(InputError::Bind {
                        addr: addr.to_string(),
                        source,
                    });
                }
            },
        };
        if let Some(other) = server
            .routes
            .borrow()
            .iter()
            .find(|r| r.app == app && r.key.matches(stream_key.expose()))
        {
            return Err(InputError::BadConfig {
                field: "stream_key",
                value: format!("the same app and key as flow '{}' on {addr}", other.flow_id),
            });
        }
        let route = Rc::new(Route {
            flow_id: flow_id.to_owned(),
            app,
            key: stream_key.clone(),
            events: events.clone(),
            sink: RefCell::new(None),
            remux: RefCell::new(Remux::new()),
            busy: Cell::new(false),
            closed: Cell::new(false),
            stop: Notify::new(),
        });
        server.routes.borrow_mut().push(route.clone());
        Ok(RtmpInput {
            reg: Registration { server, route },
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.reg.server.addr
    }

    /// Takes publishers until the task is dropped (the flow stops).
    pub async fn run(self, feed: Feed) -> InputError {
        *self.reg.route.sink.borrow_mut() = Some(feed);
        // The registration lives as long as this future.
        let _reg = self.reg;
        std::future::pending::<InputError>().await
    }
}

fn start_server(addr: SocketAddr, limits: Limits) -> std::io::Result<Rc<Server>> {
    let std_listener = std::net::TcpListener::bind(addr)?;
    std_listener.set_nonblocking(true)?;
    let tcp = tokio::net::TcpListener::from_std(std_listener)?;
    let bound = tcp.local_addr()?;
    let server = Rc::new(Server {
        addr: bound,
        routes: RefCell::new(Vec::new()),
        accept: RefCell::new(None),
        shutdown: Rc::new(Notify::new()),
        started: Instant::now(),
    });
    let listener = Listener::alone(tcp, "rtmp", limits);
    let task = tokio::task::spawn_local(accept_loop(listener, Rc::downgrade(&server)));
    *server.accept.borrow_mut() = Some(task);
    SERVERS.with(|s| {
        let mut s = s.borrow_mut();
        s.insert(bound, Rc::downgrade(&server));
        if bound != addr {
            // Port 0: later flows name the address they configured.
            s.insert(addr, Rc::downgrade(&server));
        }
    });
    Ok(server)
}

async fn accept_loop(mut listener: Listener, server: Weak<Server>) {
    let admission = listener.admission();
    let shutdown = match server.upgrade() {
        Some(s) => s.shutdown.clone(),
        None => return,
    };
    let mut seen_errors = 0;
    let mut failing = false;
    let mut check = tokio::time::interval(ERROR_CHECK_EVERY);
    loop {
        tokio::select! {
            conn = listener.accept() => {
                let Some(s) = server.upgrade() else { return };
                let limits = listener.limits();
                let started = s.started;
                drop(s);
                tokio::task::spawn_local(connection(
                    conn,
                    server.clone(),
                    shutdown.clone(),
                    limits,
                    started,
                ));
            }
            _ = check.tick() => {
                // The listener waits accept errors out and logs them; the flows hear of
                // them once per failing stretch.
                let errors = listener::lock(&admission).stats().accept_errors;
                let new = errors - seen_errors;
                seen_errors = errors;
                match (new > 0, failing) {
                    (true, false) => {
                        failing = true;
                        let Some(s) = server.upgrade() else { return };
                        for r in s.routes.borrow().iter() {
                            r.events.raise(Event::rtmp_server_error(
                                &r.flow_id,
                                &format!("accepting connections on {} failed {new} times", s.addr),
                            ));
                        }
                    }
                    (false, true) => failing = false,
                    _ => {}
                }
            }
        }
    }
}

/// Why a connection ended (for the log line).
enum End {
    Closed,
    Error(String),
    Refused,
    Timeout,
    FlowStopped,
}

async fn connection(
    conn: Conn,
    server: Weak<Server>,
    shutdown: Rc<Notify>,
    limits: Limits,
    started: Instant,
) {
    let Conn {
        peer,
        mut stream,
        idle,
    } = conn;
    let epoch_ms = started.elapsed().as_millis() as u32;
    let mut pc = Publisher {
        session: Session::new(chunk::Limits::default(), epoch_ms),
        route: None,
        app: None,
        out: Vec::new(),
    };
    let deadline = tokio::time::Instant::now() + limits.header_timeout;
    let serve = async {
        let mut buf = vec![0u8; READ_SIZE];
        let mut reply = Vec::new();
        let mut outputs = Vec::new();
        loop {
            let read = async {
                match pc.route.clone() {
                    // Until a publish is accepted: the header timeout.
                    None => tokio::select! {
                        r = tokio::time::timeout_at(deadline, stream.read(&mut buf)) => r.ok(),
                        () = shutdown.notified() => Some(Ok(0)),
                    },
                    Some(route) => {
                        if route.closed.get() {
                            return None;
                        }
                        tokio::select! {
                            r = stream.read(&mut buf) => Some(r),
                            () = route.stop.notified() => None,
                        }
                    }
                }
            };
            let n = match read.await {
                None if pc.route.is_some() => return End::FlowStopped,
                None => return End::Timeout,
                Some(Ok(0)) => return End::Closed,
                Some(Ok(n)) => n,
                Some(Err(e)) => return End::Error(e.to_string()),
            };
            let fed = pc.session.feed(&buf[..n], &mut reply, &mut outputs);
            let mut refused = false;
            for o in outputs.drain(..) {
                if !pc.output(o, &server, &mut reply) {
                    refused = true;
                }
            }
            if let Some(r) = &pc.route
                && let Some(sink) = r.sink.borrow().as_ref()
            {
                let now = Instant::now();
                bump(&sink.stats.bytes, n as u64);
                sink.stats.rate.add(now, n);
            }
            if !reply.is_empty() {
                if let Err(e) = stream.write_all(&reply).await {
                    return End::Error(e.to_string());
                }
                reply.clear();
            }
            if refused {
                return End::Refused;
            }
            if let Err(e) = fed {
                return End::Error(e.to_string());
            }
            if reply.capacity() > READ_SIZE {
                reply = Vec::new();
            }
        }
    };
    let end = listener::until_idle(idle, serve)
        .await
        .unwrap_or(End::Timeout);
    let server = server.upgrade();
    match (&end, &pc.route) {
        (_, Some(route)) => {
            route.busy.set(false);
            let why = match &end {
                End::Closed => "closed".to_owned(),
                End::Error(e) => e.clone(),
                End::Timeout => "idle timeout".to_owned(),
                End::FlowStopped => "flow stopped".to_owned(),
                End::Refused => "refused".to_owned(),
            };
            if let End::Error(_) = end
                && let Some(s) = route.stats()
            {
                bump(&s.malformed, 1);
            }
            tracing::warn!(flow_id = %route.flow_id, %peer, "rtmp publisher disconnected: {why}");
            // A flow that stops says so itself; like the other inputs, its publisher's end
            // is no event of its own then.
            if !matches!(end, End::FlowStopped) {
                route
                    .events
                    .raise(Event::rtmp_publisher_disconnected(&route.flow_id));
            }
        }
        (End::Refused, None) => {}
        (End::Closed, None) => {
            tracing::debug!(%peer, "rtmp connection closed before publishing");
        }
        (End::Error(e), None) => {
            tracing::warn!(%peer, "rtmp connection dropped: {e}");
            if let Some(s) = &server {
                s.count(pc.app.as_deref(), |st| bump(&st.malformed, 1));
            }
        }
        (End::Timeout, None) => {
            tracing::warn!(%peer, "rtmp connection dropped: no publish within {:?}", limits.header_timeout);
            if let Some(s) = &server {
                s.count(pc.app.as_deref(), |st| bump(&st.malformed, 1));
            }
        }
        (End::FlowStopped, None) => {}
    }
}

/// One connection's publisher side.
struct Publisher {
    session: Session,
    route: Option<Rc<Route>>,
    /// The app it asked for, for counting a refusal.
    app: Option<String>,
    out: Vec<u8>,
}

impl Publisher {
    /// Handles one session output; `false` when the publisher was refused.
    fn output(&mut self, o: Output, server: &Weak<Server>, reply: &mut Vec<u8>) -> bool {
        match o {
            Output::Publish { app, key } => {
                let app = app.trim_matches('/').to_owned();
                let route = server.upgrade().and_then(|s| {
                    let r = s.route(&app, &key).filter(|r| !r.closed.get());
                    match r {
                        Some(r) if r.sink.borrow().is_some() && !r.busy.get() => Some(r),
                        Some(r) => {
                            tracing::warn!(flow_id = %r.flow_id, "rtmp publish refused: the flow already has a publisher");
                            if let Some(st) = r.stats() {
                                bump(&st.filtered, 1);
                            }
                            None
                        }
                        None => {
                            tracing::warn!(app = %app, "rtmp publish refused: unknown app or stream key");
                            s.count(Some(&app), |st| bump(&st.filtered, 1));
                            None
                        }
                    }
                });
                self.app = Some(app);
                match route {
                    Some(r) => {
                        r.busy.set(true);
                        r.remux.borrow_mut().start_publisher();
                        self.session.accept_publish(reply);
                        tracing::info!(flow_id = %r.flow_id, "rtmp publisher connected");
                        r.events.raise(Event::rtmp_publisher_connected(&r.flow_id));
                        self.route = Some(r);
                        true
                    }
                    None => {
                        self.session.refuse_publish(reply);
                        false
                    }
                }
            }
            Output::Media {
                type_id,
                timestamp,
                payload,
            } => {
                let Some(route) = &self.route else {
                    return true;
                };
                let sink = route.sink.borrow();
                let Some(sink) = sink.as_ref() else {
                    return true;
                };
                bump(&sink.stats.datagrams, 1);
                self.out.clear();
                match route
                    .remux
                    .borrow_mut()
                    .feed(type_id, timestamp, &payload, &mut self.out)
                {
                    Ok(Fed::Frame | Fed::Config) => {}
                    Ok(Fed::Skipped(codec)) => {
                        tracing::debug!(flow_id = %route.flow_id, codec, "rtmp: codec not carried, tag skipped");
                    }
                    Err(e) => {
                        bump(&sink.stats.malformed, 1);
                        tracing::debug!(flow_id = %route.flow_id, "rtmp: tag dropped: {e}");
                    }
                }
                if !self.out.is_empty() {
                    sink.push(&self.out, Instant::now());
                }
                if self.out.capacity() > 1 << 20 {
                    self.out = Vec::new();
                }
                true
            }
            Output::Unpublish => true,
        }
    }
}

#[cfg(test)]
mod tests {
    //! The shell over real loopback TCP: routing by key on a shared port, a busy flow, the
    //! port closing with its last flow. (FFmpeg end to end is `tests/rtmp_flow.rs`.)
    use super::*;
    use crate::input::udp::TsPath;
    use crate::rtmp::amf;
    use crate::rtmp::chunk::{ChunkReader, ChunkWriter, VIDEO};
    use crate::rtmp::handshake::PACKET_SIZE;
    use crate::rtmp::session::STREAM_ID;
    use crate::rtmp::session::tests::client_publish;
    use crate::ts::ring::FlowRing;
    use tokio::net::TcpStream;

    struct Flow {
        stats: Rc<InputStats>,
        task: JoinHandle<InputError>,
    }

    fn start(addr: SocketAddr, key: &str, id: &str, events: &Events) -> (Flow, SocketAddr) {
        let input = RtmpInput::bind(
            addr,
            "live",
            &Secret::new(key),
            id,
            events,
            Limits::default(),
        )
        .unwrap();
        let bound = input.local_addr();
        let stats = Rc::new(InputStats::default());
        let task = tokio::task::spawn_local(input.run(Feed {
            ring: Rc::new(FlowRing::new(64)),
            ts: Rc::new(RefCell::new(TsPath::new())),
            stats: stats.clone(),
            epoch: Instant::now(),
        }));
        (Flow { stats, task }, bound)
    }

    /// Publishes with `key`; returns the connection and the status code answered.
    async fn publish(addr: SocketAddr, key: &str) -> (TcpStream, String) {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(&client_publish("live", key, 4096))
            .await
            .unwrap();
        let mut r = ChunkReader::new(chunk::Limits::default());
        let mut buf = Vec::new();
        let mut skip = 1 + 2 * PACKET_SIZE;
        loop {
            let mut b = [0u8; 8192];
            let n = s.read(&mut b).await.unwrap();
            assert!(n > 0, "closed before onStatus");
            buf.extend_from_slice(&b[..n]);
            let k = skip.min(buf.len());
            buf.drain(..k);
            skip -= k;
            while let Some((n, m)) = r.read(&buf).unwrap() {
                buf.drain(..n);
                let Some(m) = m else { continue };
                if m.type_id == chunk::SET_CHUNK_SIZE {
                    continue; // applied by the reader
                }
                let v = amf::decode_all(&m.payload).unwrap_or_default();
                if v.first().and_then(amf::Amf::as_str) == Some("onStatus") {
                    let code = v[3].get("code").and_then(amf::Amf::as_str).unwrap();
                    return (s, code.to_owned());
                }
            }
        }
    }

    async fn settle() {
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
    }

    #[test]
    fn flows_share_a_port_publishers_are_routed_by_key_and_the_port_closes_with_the_last() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        tokio::task::LocalSet::new().block_on(&rt, async {
            let events = Events::in_memory(64);
            let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
            let (f1, addr) = start(any, "k1", "f1", &events);
            // Port 0 names the first server: the second flow joins it.
            let (f2, addr2) = start(any, "k2", "f2", &events);
            assert_eq!(addr, addr2);
            assert!(
                RtmpInput::bind(
                    any,
                    "live",
                    &Secret::new("k1"),
                    "f3",
                    &events,
                    Limits::default()
                )
                .is_err()
            );
            settle().await;

            let (mut pub2, code) = publish(addr, "k2").await;
            assert_eq!(code, "NetStream.Publish.Start");
            // H.264 config and a key frame: TS on f2's ring, nothing on f1's.
            let mut media = Vec::new();
            let mut w = ChunkWriter::default();
            w.write(
                2,
                0,
                chunk::SET_CHUNK_SIZE,
                0,
                &4096u32.to_be_bytes(),
                &mut media,
            );
            w.set_chunk_size(4096);
            let config = [
                0x17, 0, 0, 0, 0, 1, 0x64, 0, 0x1f, 0xff, 0xe1, 0, 2, 0x67, 0x64, 1, 0, 2, 0x68,
                0xee,
            ];
            w.write(6, 0, VIDEO, STREAM_ID, &config, &mut media);
            let frame = [0x17, 1, 0, 0, 0, 0, 0, 0, 2, 0x65, 0];
            w.write(6, 40, VIDEO, STREAM_ID, &frame, &mut media);
            pub2.write_all(&media).await.unwrap();
            for _ in 0..200 {
                if f2.stats.packets.get() > 0 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            assert!(f2.stats.packets.get() >= 3, "PAT, PMT and the frame");
            assert_eq!(f1.stats.packets.get(), 0);

            // A second publisher for f2 is refused; a wrong key too; both counted.
            let (_s, code) = publish(addr, "k2").await;
            assert_eq!(code, "NetStream.Publish.BadName");
            let (_s, code) = publish(addr, "nope").await;
            assert_eq!(code, "NetStream.Publish.BadName");
            settle().await;
            assert_eq!(f2.stats.filtered.get(), 2, "busy, and the app matched");
            assert_eq!(f1.stats.filtered.get(), 1);

            // Stopping f2 disconnects its publisher.
            f2.task.abort();
            settle().await;
            let mut b = [0u8; 64];
            let n = tokio::time::timeout(Duration::from_secs(5), pub2.read(&mut b))
                .await
                .unwrap()
                .unwrap_or(0);
            assert_eq!(n, 0, "publisher closed");
            let msgs: Vec<(Option<String>, String)> = events
                .snapshot()
                .into_iter()
                .map(|r| (r.event.flow_id, r.event.message))
                .collect();
            // Stopping the flow is not a publisher's disconnection.
            assert_eq!(
                msgs,
                vec![(Some("f2".to_owned()), "RTMP publisher connected".to_owned())]
            );
            // The last flow stops: the port is free again.
            f1.task.abort();
            settle().await;
            std::net::TcpListener::bind(addr).expect("the port is closed with its last flow");
        });
    }
}
