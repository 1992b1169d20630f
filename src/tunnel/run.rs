//! One tunnel's task: binds what the tunnel needs locally, then keeps a QUIC connection to
//! the relay (`relay.rs`) or the peer (`direct.rs`) and runs the data plane (`udp.rs`,
//! `tcp.rs`) whenever both ends are up. It ends when the registry says stop, or with a fatal
//! error ("Tunnel '{name}' failed: {error}"): something retrying cannot fix, such as a
//! `local_addr` already taken.
//!
//! What the task reports is in `Shared` (`shared.rs`): the state, the address in use, the
//! last error and the counters, read by `Tunnels::status`. The registry runs the task by
//! mode (`relay::run`, `direct::run`) between [`Task::start`] and [`Task::finish`].

use std::cell::RefCell;
use std::fmt;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime};

use quinn::{Connection, ConnectionError, RecvStream, SendStream};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use super::TunnelContext;
use super::seal::{self, Opener, Sealer, key_from_hex};
use super::shared::Shared;
use super::status::TunnelState;
use super::tcp::{self, Streams, TcpPlane};
use super::udp::{UdpEgress, UdpIngress};
use super::wire::FrameDecoder;
use crate::config::{TunnelConfig, TunnelDirection, TunnelProtocol, TunnelTlsConfig};
use crate::events::Event;

/// Why a tunnel's task gave up.
#[derive(Debug)]
pub enum Fatal {
    /// A field the mode needs is absent or malformed (validation should have caught it).
    Config(&'static str),
    /// `local_addr` could not be bound (UDP) or listened on (TCP).
    Local {
        addr: SocketAddr,
        error: std::io::Error,
    },
    /// The direct server's certificate could not be loaded or made.
    Cert(super::cert::CertError),
    /// The QUIC endpoint or its TLS config could not be set up.
    Quic(super::quic::QuicError),
}

impl fmt::Display for Fatal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fatal::Config(what) => write!(f, "config: {what}"),
            Fatal::Local { addr, error } => write!(f, "cannot use local_addr {addr}: {error}"),
            Fatal::Cert(e) => write!(f, "{e}"),
            Fatal::Quic(e) => write!(f, "{e}"),
        }
    }
}

/// One tunnel's task, as the registry spawns it.
pub struct Task {
    pub ctx: TunnelContext,
    pub config: TunnelConfig,
    pub tls: TunnelTlsConfig,
    pub shared: Rc<Shared>,
    pub stop: watch::Receiver<bool>,
}

impl Task {
    /// The task's local side, bound now: an error here is fatal ([`Task::finish`] it).
    pub fn start(&self) -> Result<Plane, Fatal> {
        self.shared.set_state(TunnelState::Connecting);
        Plane::new(&self.config, self.shared.clone())
    }

    /// The task is over: stopped, or failed ("Tunnel '{name}' failed: {error}").
    pub fn finish(&self, result: Result<(), Fatal>) {
        let shared = &self.shared;
        shared.set_remote(None);
        shared.set_state(TunnelState::Stopped);
        if let Err(e) = result {
            shared.set_error(&e);
            self.ctx.events.raise(Event::tunnel_failed(
                &self.config.id,
                &self.config.name,
                &e.to_string(),
            ));
        }
    }

    /// Resolves once the registry has told the task to stop.
    pub async fn stopped(&mut self) {
        // A dropped sender (the registry is gone) is a stop too.
        let _ = self.stop.wait_for(|s| *s).await;
    }
}

/// The tunnel's local side and crypto, set up once per task: a reconnect keeps the local
/// port and the nonce counter.
pub struct Plane {
    pub shared: Rc<Shared>,
    local: Local,
}

/// One direction per edge: UDP sends with a sealer or delivers with an opener.
enum Local {
    // Boxed: the key schedule and the replay window are most of the bytes.
    UdpEgress(UdpEgress, Box<Sealer>),
    UdpIngress(UdpIngress, Box<Opener>),
    /// TCP: the listener, or the address to dial; and what every stream shares.
    TcpEgress(TcpListener, TcpPlane),
    TcpIngress(SocketAddr, TcpPlane),
}

fn random_salt() -> [u8; 4] {
    use ring::rand::SecureRandom;
    let mut salt = [0u8; 4];
    // The system RNG fails only on a broken kernel; a fixed salt then still gives unique
    // nonces from this edge (the counter), it only stops telling the two edges apart.
    let _ = ring::rand::SystemRandom::new().fill(&mut salt);
    salt
}

impl Plane {
    pub fn new(config: &TunnelConfig, shared: Rc<Shared>) -> Result<Plane, Fatal> {
        let uuid = super::uuid_bytes(&config.id).ok_or(Fatal::Config("id is not a UUID"))?;
        let key = config
            .tunnel_encryption_key
            .as_deref()
            .and_then(key_from_hex)
            .ok_or(Fatal::Config("tunnel_encryption_key must be 64 hex digits"))?;
        let addr = config.local_addr;
        let local_err = |error| Fatal::Local { addr, error };
        // One sealer per edge and tunnel, for the task's life; its opener refuses what
        // carries the sealer's own salt (a relay reflecting our traffic back).
        let (sealer, opener) = seal::pair(
            &key,
            uuid,
            seal::counter_start(SystemTime::now()),
            random_salt(),
        );
        let tcp_plane = |sealer, opener| TcpPlane {
            tunnel_id: config.id.clone(),
            sealer: Rc::new(RefCell::new(sealer)),
            opener: Rc::new(opener),
            shared: shared.clone(),
        };
        let local = match (config.protocol, config.direction) {
            (TunnelProtocol::Udp, TunnelDirection::Egress) => {
                Local::UdpEgress(UdpEgress::bind(addr).map_err(local_err)?, Box::new(sealer))
            }
            (TunnelProtocol::Udp, TunnelDirection::Ingress) => {
                Local::UdpIngress(UdpIngress::bind(addr).map_err(local_err)?, Box::new(opener))
            }
            (TunnelProtocol::Tcp, TunnelDirection::Egress) => {
                let l = std::net::TcpListener::bind(addr).map_err(local_err)?;
                l.set_nonblocking(true).map_err(local_err)?;
                let l = TcpListener::from_std(l).map_err(local_err)?;
                Local::TcpEgress(l, tcp_plane(sealer, opener))
            }
            (TunnelProtocol::Tcp, TunnelDirection::Ingress) => {
                Local::TcpIngress(addr, tcp_plane(sealer, opener))
            }
        };
        Ok(Plane { shared, local })
    }

    /// Both ends just came up: forget what queued locally while they were not.
    pub fn on_ready(&mut self) {
        if let Local::UdpEgress(udp, _) = &mut self.local {
            let dropped = udp.drain();
            if dropped > 0 {
                tracing::debug!(
                    dropped,
                    "dropped datagrams queued while the tunnel was down"
                );
            }
        }
    }

    /// Carry traffic over `conn` until it closes (cancel-safe: dropped when the peer goes
    /// away or the tunnel stops). TCP streams the peer opens come in through
    /// [`Plane::incoming_tcp`], from the caller's stream acceptor.
    pub async fn run(&mut self, conn: &Connection, streams: &mut Streams) -> ConnectionError {
        let counters = &self.shared.counters;
        match &mut self.local {
            Local::UdpEgress(udp, sealer) => udp.run(conn, sealer, counters).await,
            Local::UdpIngress(udp, opener) => udp.run(conn, opener, counters).await,
            Local::TcpEgress(listener, tcp) => tcp::egress(listener, conn, tcp, streams).await,
            Local::TcpIngress(..) => conn.closed().await,
        }
    }

    /// A stream the peer opened whose first frame is a TCP stream header: carried if this
    /// edge is a TCP tunnel's `ingress`, else reset.
    pub fn incoming_tcp(
        &self,
        header: &[u8],
        mut send: SendStream,
        mut recv: RecvStream,
        streams: &mut Streams,
    ) {
        match &self.local {
            Local::TcpIngress(addr, tcp) => tcp::ingress(header, *addr, send, recv, tcp, streams),
            _ => {
                tracing::debug!("TCP stream on a tunnel that does not accept them: reset");
                let _ = send.reset(quinn::VarInt::from_u32(1));
                let _ = recv.stop(quinn::VarInt::from_u32(1));
            }
        }
    }
}

/// Streams the other end opens, each with its first frame read. Each stream is read by a
/// task of its own, so a slow or silent one holds up nobody; their first frames come out of
/// one channel in arrival order.
pub struct Incoming {
    tx: mpsc::Sender<Opened>,
    rx: mpsc::Receiver<Opened>,
    readers: Streams,
}

/// A stream the other end opened, with its first frame.
pub struct Opened {
    pub frame: Vec<u8>,
    /// The stream's halves, for a bidirectional stream that carries more (a TCP stream).
    pub bi: Option<(SendStream, RecvStream)>,
}

/// The first frame of an opened stream must come within this, and be at most
/// [`FIRST_FRAME_MAX`] bytes: notifications and TCP headers are small JSON objects.
const FIRST_FRAME_TIMEOUT: Duration = Duration::from_secs(10);
const FIRST_FRAME_MAX: usize = 64 * 1024;
/// First frames waiting for the task to take them.
const OPENED_QUEUE: usize = 32;

impl Incoming {
    pub fn new() -> Incoming {
        let (tx, rx) = mpsc::channel(OPENED_QUEUE);
        Incoming {
            tx,
            rx,
            readers: Streams::default(),
        }
    }

    /// The next stream the other end opened on `conn` with its first frame; streams whose
    /// first frame does not come, is too big or is cut are dropped here. Cancel-safe.
    pub async fn next(&mut self, conn: &Connection) -> Result<Opened, ConnectionError> {
        loop {
            tokio::select! {
                biased;
                Some(opened) = self.rx.recv() => return Ok(opened),
                r = conn.accept_uni() => {
                    let recv = r?;
                    let tx = self.tx.clone();
                    self.readers.spawn(async move {
                        let mut recv = recv;
                        if let Some(frame) = first_frame(&mut recv).await {
                            let _ = tx.send(Opened { frame, bi: None }).await;
                        }
                    });
                }
                r = conn.accept_bi() => {
                    let (send, mut recv) = r?;
                    let tx = self.tx.clone();
                    self.readers.spawn(async move {
                        if let Some(frame) = first_frame(&mut recv).await {
                            let _ = tx.send(Opened { frame, bi: Some((send, recv)) }).await;
                        }
                    });
                }
            }
        }
    }
}

impl Default for Incoming {
    fn default() -> Self {
        Self::new()
    }
}

/// One frame from the start of `recv`, read no further than the frame.
async fn first_frame(recv: &mut RecvStream) -> Option<Vec<u8>> {
    let read = async {
        let mut decoder = FrameDecoder::new();
        let mut buf = [0u8; 4096];
        loop {
            match decoder.next_frame() {
                Ok(Some(frame)) => return Some(frame),
                Ok(None) => {}
                Err(e) => {
                    tracing::debug!(error = %e, "tunnel stream's first frame");
                    return None;
                }
            }
            if decoder.buffered() + decoder.wanted() > FIRST_FRAME_MAX + 4 {
                tracing::debug!("tunnel stream's first frame is too large: dropped");
                return None;
            }
            let want = decoder.wanted().min(buf.len());
            match recv.read(&mut buf[..want]).await {
                Ok(Some(n)) => decoder.push(&buf[..n]),
                Ok(None) | Err(_) => return None,
            }
        }
    };
    let frame = tokio::time::timeout(FIRST_FRAME_TIMEOUT, read)
        .await
        .ok()
        .flatten();
    if frame.is_none() {
        let _ = recv.stop(quinn::VarInt::from_u32(1));
    }
    frame
}

/// Reads frames one after another from a stream the task keeps (the relay control stream, the
/// direct authentication stream).
pub struct FrameReader {
    recv: RecvStream,
    decoder: FrameDecoder,
    buf: Vec<u8>,
}

/// How a framed stream ended.
#[derive(Debug)]
pub enum StreamEnd {
    /// The other end finished it.
    Finished,
    Read(quinn::ReadError),
    /// Its framing broke (a frame over 1 MiB).
    Framing(super::wire::WireError),
}

impl fmt::Display for StreamEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StreamEnd::Finished => f.write_str("stream closed by the other end"),
            StreamEnd::Read(e) => write!(f, "{e}"),
            StreamEnd::Framing(e) => write!(f, "{e}"),
        }
    }
}

impl FrameReader {
    pub fn new(recv: RecvStream) -> FrameReader {
        FrameReader {
            recv,
            decoder: FrameDecoder::new(),
            buf: vec![0; 16 * 1024],
        }
    }

    /// The next frame. Cancel-safe: bytes read are kept in the decoder.
    pub async fn next(&mut self) -> Result<Vec<u8>, StreamEnd> {
        loop {
            if let Some(frame) = self.decoder.next_frame().map_err(StreamEnd::Framing)? {
                return Ok(frame);
            }
            let want = self.decoder.wanted().min(self.buf.len());
            match self.recv.read(&mut self.buf[..want]).await {
                Ok(Some(n)) => self.decoder.push(&self.buf[..n]),
                Ok(None) => return Err(StreamEnd::Finished),
                Err(e) => return Err(StreamEnd::Read(e)),
            }
        }
    }
}

/// A short text for why a connection ended, for events and `last_error`.
pub fn connection_reason(e: &ConnectionError) -> String {
    match e {
        ConnectionError::TimedOut => "idle timeout".to_string(),
        ConnectionError::ApplicationClosed(c) => {
            let reason = String::from_utf8_lossy(&c.reason);
            if reason.is_empty() {
                format!("closed by the other end (code {})", c.error_code)
            } else {
                format!("closed by the other end: {reason}")
            }
        }
        ConnectionError::LocallyClosed => "closed".to_string(),
        other => other.to_string(),
    }
}

/// The spec's connect timeout: resolving, the QUIC handshake and TLS together.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(6);

/// A QUIC connection to `host_port` from a fresh client endpoint, within
/// [`CONNECT_TIMEOUT`]: resolved now, to the first address `security.outbound_allow`
/// permits (the first address when it is not set). The endpoint is returned with the
/// connection: it must live as long as the connection does.
pub async fn dial(
    host_port: &str,
    outbound: &crate::net::outbound::Policy,
    config: &quinn::ClientConfig,
    sni: &str,
) -> Result<(quinn::Endpoint, Connection), String> {
    let attempt = async {
        // Config checked it: host:port with a port.
        let (host, port) = crate::net::outbound::split_host_port(host_port)
            .ok_or_else(|| format!("{host_port} is not host:port"))?;
        let addr = crate::net::outbound::resolve(outbound.as_deref(), host, port)
            .await
            .map_err(|e| e.to_string())?;
        let endpoint = super::quic::client_endpoint(addr).map_err(|e| e.to_string())?;
        let conn = endpoint
            .connect_with(config.clone(), addr, sni)
            .map_err(|e| format!("{addr}: {e}"))?
            .await
            .map_err(|e| format!("{addr}: {e}"))?;
        Ok((endpoint, conn))
    };
    match tokio::time::timeout(CONNECT_TIMEOUT, attempt).await {
        Ok(r) => r,
        Err(_) => Err(format!(
            "{host_port}: no answer within {} s",
            CONNECT_TIMEOUT.as_secs()
        )),
    }
}

/// Write `msg` as one frame on `send`.
pub async fn write_frame<T: serde::Serialize>(
    send: &mut SendStream,
    msg: &T,
    buf: &mut Vec<u8>,
) -> Result<(), quinn::WriteError> {
    buf.clear();
    super::wire::encode(msg, buf);
    send.write_all(buf).await
}

/// A sleep until `at`, or forever when nothing is timed.
pub async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
        None => std::future::pending().await,
    }
}

/// Whether a frame is a TCP stream header (it has `stream_type`) rather than a message (it
/// has `type`).
pub fn is_stream_header(frame: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(frame)
        .is_ok_and(|m| m.contains_key("stream_type") && !m.contains_key("type"))
}
