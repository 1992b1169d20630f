//! A TCP tunnel's data plane (`shared/spec/relay-protocol.md`, "Data plane"): one QUIC
//! bidirectional stream per TCP connection, opened by the `egress` edge (which listens at its
//! `local_addr`) with the framed header `{"tunnel_id":…,"stream_type":"tcp"}`, then sealed
//! chunks both ways. The `ingress` edge reads the header and dials its `local_addr`. A TCP
//! EOF finishes the QUIC stream and a finished QUIC stream shuts the TCP write side down, so
//! half-closed connections work as they do without the tunnel.
//!
//! Buffers are bounded: one read of at most `MAX_CHUNK_PAYLOAD` at a time each way, and the
//! chunk decoder never holds more than one chunk. A bad header or a chunk that does not open
//! ends that stream only (reset, counted); the tunnel and its other streams go on.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use quinn::{Connection, ConnectionError, RecvStream, SendStream, VarInt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use super::seal::{ChunkDecoder, ChunkError, MAX_CHUNK_PAYLOAD, OpenError, Opener, Sealer};
use super::shared::Shared;
use super::status::bump;
use super::wire::{self, StreamHeader};

/// The QUIC error code a stream is reset or stopped with when its TCP side failed or its
/// chunks did not open.
const STREAM_ERROR: VarInt = VarInt::from_u32(1);
/// How long an ingress stream may take to dial `local_addr`.
const DIAL_TIMEOUT: Duration = Duration::from_secs(10);

/// What every TCP stream of one tunnel shares.
#[derive(Clone)]
pub struct TcpPlane {
    pub tunnel_id: String,
    /// One sealer for the tunnel: its counter is unique across all streams.
    pub sealer: Rc<RefCell<Sealer>>,
    pub opener: Rc<Opener>,
    pub shared: Rc<Shared>,
}

/// The streams of one connection: aborted together when the connection is done with.
#[derive(Default)]
pub struct Streams(JoinSet<()>);

impl Streams {
    pub fn spawn(&mut self, f: impl Future<Output = ()> + 'static) {
        // Reap what ended, so the set holds only live streams.
        while self.0.try_join_next().is_some() {}
        self.0.spawn_local(f);
    }

    /// Tasks still running.
    pub fn live(&mut self) -> usize {
        while self.0.try_join_next().is_some() {}
        self.0.len()
    }
}

/// The `egress` edge: each TCP connection accepted on `listener` becomes a QUIC stream of
/// `conn`, until `conn` closes.
pub async fn egress(
    listener: &TcpListener,
    conn: &Connection,
    plane: &TcpPlane,
    streams: &mut Streams,
) -> ConnectionError {
    let mut header = Vec::new();
    wire::encode(&StreamHeader::tcp(&plane.tunnel_id), &mut header);
    let closed = conn.closed();
    tokio::pin!(closed);
    loop {
        let (tcp, from) = tokio::select! {
            biased;
            e = &mut closed => return e,
            r = listener.accept() => match r {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors and the like: the next accept may work.
                    tracing::warn!(error = %e, "tunnel TCP accept");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let (mut send, recv) = match conn.open_bi().await {
            Ok(s) => s,
            Err(e) => return e,
        };
        tracing::debug!(%from, "tunnel TCP connection");
        let plane = plane.clone();
        let header = header.clone();
        streams.spawn(async move {
            if let Err(e) = send.write_all(&header).await {
                tracing::debug!(error = %e, "tunnel TCP stream header");
                return;
            }
            carry(plane, tcp, send, recv).await;
        });
    }
}

/// The `ingress` edge: a stream the peer opened, whose first frame was `header`. Checks it,
/// dials `local`, and carries the connection.
pub fn ingress(
    header: &[u8],
    local: SocketAddr,
    mut send: SendStream,
    mut recv: RecvStream,
    plane: &TcpPlane,
    streams: &mut Streams,
) {
    let ok = match wire::decode::<StreamHeader>(header) {
        Ok(h) => h.stream_type == StreamHeader::TCP && h.tunnel_id == plane.tunnel_id,
        Err(_) => false,
    };
    if !ok {
        tracing::debug!("tunnel stream with a bad header: reset");
        bump(&plane.shared.counters.auth_failures, 1);
        let _ = send.reset(STREAM_ERROR);
        let _ = recv.stop(STREAM_ERROR);
        return;
    }
    let plane = plane.clone();
    streams.spawn(async move {
        let tcp = match tokio::time::timeout(DIAL_TIMEOUT, TcpStream::connect(local)).await {
            Ok(Ok(tcp)) => tcp,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, %local, "tunnel TCP dial");
                let _ = send.reset(STREAM_ERROR);
                let _ = recv.stop(STREAM_ERROR);
                return;
            }
            Err(_) => {
                tracing::debug!(%local, "tunnel TCP dial timed out");
                let _ = send.reset(STREAM_ERROR);
                let _ = recv.stop(STREAM_ERROR);
                return;
            }
        };
        carry(plane, tcp, send, recv).await;
    });
}

/// Pump one TCP connection through one QUIC stream, both ways, until both are done. If
/// either way fails the whole connection goes: the stream is reset and the TCP socket closed.
async fn carry(plane: TcpPlane, tcp: TcpStream, mut send: SendStream, mut recv: RecvStream) {
    let counters = &plane.shared.counters;
    bump(&counters.tcp_connections, 1);
    bump(&counters.tcp_open, 1);
    let _ = tcp.set_nodelay(true);
    let (tcp_read, tcp_write) = tcp.into_split();
    let result = {
        let up = tcp_to_quic(&plane, tcp_read, &mut send);
        let down = quic_to_tcp(&plane, &mut recv, tcp_write);
        tokio::pin!(up, down);
        let (mut up_done, mut down_done) = (false, false);
        loop {
            let r = tokio::select! {
                r = &mut up, if !up_done => { up_done = true; r }
                r = &mut down, if !down_done => { down_done = true; r }
            };
            if r.is_err() || (up_done && down_done) {
                break r;
            }
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "tunnel TCP stream failed");
        let _ = send.reset(STREAM_ERROR);
        let _ = recv.stop(STREAM_ERROR);
    }
    counters
        .tcp_open
        .set(counters.tcp_open.get().saturating_sub(1));
}

/// TCP bytes in, sealed chunks out; TCP EOF finishes the stream.
async fn tcp_to_quic(
    plane: &TcpPlane,
    mut tcp: OwnedReadHalf,
    send: &mut SendStream,
) -> Result<(), String> {
    let mut buf = vec![0u8; MAX_CHUNK_PAYLOAD];
    let mut chunk = Vec::with_capacity(MAX_CHUNK_PAYLOAD + 64);
    loop {
        let n = match tcp.read(&mut buf).await {
            Ok(0) => {
                let _ = send.finish();
                return Ok(());
            }
            Ok(n) => n,
            Err(e) => return Err(format!("TCP read: {e}")),
        };
        plane.sealer.borrow_mut().seal_chunk(&buf[..n], &mut chunk);
        if let Err(e) = send.write_all(&chunk).await {
            return Err(format!("QUIC write: {e}"));
        }
        plane.shared.counters.add_out(Instant::now(), n);
    }
}

/// Sealed chunks in, TCP bytes out; the stream's end shuts the TCP write side.
async fn quic_to_tcp(
    plane: &TcpPlane,
    recv: &mut RecvStream,
    mut tcp: OwnedWriteHalf,
) -> Result<(), String> {
    let counters = &plane.shared.counters;
    let mut decoder = ChunkDecoder::new();
    let mut buf = vec![0u8; MAX_CHUNK_PAYLOAD + 64];
    loop {
        let want = decoder.wanted().min(buf.len());
        let n = match recv.read(&mut buf[..want]).await {
            Ok(Some(n)) => n,
            Ok(None) if decoder.is_at_boundary() => {
                let _ = tcp.shutdown().await;
                return Ok(());
            }
            Ok(None) => return Err("QUIC stream ended inside a chunk".into()),
            Err(e) => return Err(format!("QUIC read: {e}")),
        };
        decoder.push(&buf[..n]);
        loop {
            match decoder.next_chunk(&plane.opener) {
                Ok(Some(plain)) => {
                    counters.add_in(Instant::now(), plain.len());
                    if let Err(e) = tcp.write_all(plain).await {
                        return Err(format!("TCP write: {e}"));
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    match e {
                        ChunkError::Open(OpenError::Replayed) => bump(&counters.replays_dropped, 1),
                        _ => bump(&counters.auth_failures, 1),
                    }
                    return Err(e.to_string());
                }
            }
        }
    }
}
