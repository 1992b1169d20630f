//! A UDP tunnel's data plane, one direction per edge (`shared/spec/relay-protocol.md`, "Data
//! plane"): the `egress` edge reads datagrams at its `local_addr` and sends each, sealed, as
//! one QUIC datagram; the `ingress` edge opens the QUIC datagrams it receives and delivers
//! each payload to its `local_addr`. Replays and forgeries are counted and dropped, never
//! delivered.
//!
//! Steady state allocates nothing per packet on the way out: the datagram is sealed into a
//! reused `Vec`, then copied into a `BytesMut` whose storage is taken back once quinn has sent
//! (and dropped) the datagrams cut from it. On the way in quinn hands each datagram over as
//! its own `Bytes`; it is opened in a reused buffer.

use std::io;
use std::net::SocketAddr;
use std::time::Instant;

use std::os::fd::AsFd;

use bytes::BytesMut;
use futures::FutureExt;
use quinn::{Connection, ConnectionError, SendDatagramError};

use crate::input::cadence::{Cadence, go_busy};
use crate::net::mmsg::{BATCH, RecvBatch, SendBatch};
use crate::net::wake::{OneShotReadable, Ticker};

use super::seal::{DATAGRAM_OVERHEAD, OpenError, Opener, Sealer};
use super::status::{TunnelCounters, bump};

/// The largest UDP payload read or delivered.
const MAX_UDP: usize = 65_535;
/// The send storage datagrams are cut from: about 190 full-size sealed datagrams, so it is
/// reclaimed (not reallocated) as long as quinn sends faster than that backlog.
const SEND_STORAGE: usize = 256 * 1024;

/// The `egress` edge's side: the socket bound at `local_addr` for the tunnel's whole life
/// (reconnecting does not let go of the port flows send to).
///
/// Read like a flow's UDP input (`input::udp`): idle, the socket wakes the task per datagram;
/// once datagrams come faster than a tick it is drained every tick ([`Cadence`]: 1 to 10 ms
/// following the stream's rate) with `recvmmsg`, and every datagram of the tick goes to quinn
/// at once, so its connection task sends them in one go and the relay acknowledges them
/// together. Waking per datagram cost a context switch, a read and a QUIC send each.
pub struct UdpEgress {
    socket: std::net::UdpSocket,
    armed: OneShotReadable,
    ticker: Ticker,
    batch: RecvBatch,
    cadence: Cadence,
    last_wake: Option<Instant>,
    sealed: Vec<u8>,
    storage: BytesMut,
}

impl UdpEgress {
    /// Bound like a flow's UDP input (`net::bind_receiver`: a large receive buffer, and a
    /// multicast `local_addr` joins its group).
    pub fn bind(local: SocketAddr) -> io::Result<UdpEgress> {
        let socket = crate::net::bind_receiver(local, None)?;
        Ok(UdpEgress {
            armed: OneShotReadable::new(socket.as_fd())?,
            ticker: Ticker::new()?,
            socket,
            batch: RecvBatch::new(BATCH),
            cadence: Cadence::new(),
            last_wake: None,
            sealed: Vec::with_capacity(MAX_UDP + DATAGRAM_OVERHEAD),
            storage: BytesMut::with_capacity(SEND_STORAGE),
        })
    }

    /// Read what queued while the tunnel was down and drop it: stale media is of no use to
    /// the far end, and a burst of it would only delay the live stream.
    pub fn drain(&mut self) -> usize {
        let mut n = 0;
        while let Ok(got) = self.batch.recv(self.socket.as_fd()) {
            n += got;
            if got < self.batch.capacity() {
                break;
            }
        }
        n
    }

    /// Carry local datagrams into `conn` until it closes (cancel-safe: the caller drops this
    /// when the control plane says the tunnel is down, and calls it again after any control
    /// message; a call starts idle, and a tick that finds the socket empty goes back to idle).
    pub async fn run(
        &mut self,
        conn: &Connection,
        sealer: &mut Sealer,
        counters: &TunnelCounters,
    ) -> ConnectionError {
        // Made once: a fresh `closed()` per datagram would lock the connection each time.
        let closed = conn.closed();
        tokio::pin!(closed);
        // A call dropped while busy left the ticker running.
        let _ = self.ticker.stop();
        loop {
            tokio::select! {
                biased;
                e = &mut closed => return e,
                r = self.armed.readable() => {
                    if let Err(e) = r {
                        tracing::debug!(error = %e, "tunnel UDP wait");
                    }
                }
            }
            let woke = Instant::now();
            let gap = self.last_wake.map(|t| woke.saturating_duration_since(t));
            self.last_wake = Some(woke);
            let got = match self.forward(conn, sealer, counters) {
                Ok(n) => n,
                Err(e) => return e,
            };
            if !go_busy(got, gap) || self.ticker.start(self.cadence.period()).is_err() {
                continue;
            }
            loop {
                tokio::select! {
                    biased;
                    e = &mut closed => {
                        let _ = self.ticker.stop();
                        return e;
                    }
                    r = self.ticker.tick() => {
                        if let Err(e) = r {
                            tracing::debug!(error = %e, "tunnel UDP tick");
                        }
                    }
                }
                match self.forward(conn, sealer, counters) {
                    // The stream paused: back to waking per datagram.
                    Ok(0) => break,
                    Ok(got) => {
                        if let Some(period) = self.cadence.after_tick(got) {
                            let _ = self.ticker.start(period);
                        }
                    }
                    Err(e) => {
                        let _ = self.ticker.stop();
                        return e;
                    }
                }
            }
            let _ = self.ticker.stop();
        }
    }

    /// Seal and hand to quinn everything the socket holds: how many datagrams were read.
    fn forward(
        &mut self,
        conn: &Connection,
        sealer: &mut Sealer,
        counters: &TunnelCounters,
    ) -> Result<usize, ConnectionError> {
        let mut total = 0;
        loop {
            let got = match self.batch.recv(self.socket.as_fd()) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(total),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // ICMP errors of earlier sends and the like: the socket is still good.
                    tracing::debug!(error = %e, "tunnel UDP read");
                    return Ok(total);
                }
            };
            let now = Instant::now();
            let max = conn.max_datagram_size();
            for i in 0..got {
                let (payload, _from) = self.batch.get(i);
                sealer.seal(payload, &mut self.sealed);
                if max.is_none_or(|max| self.sealed.len() > max) {
                    bump(&counters.send_dropped, 1);
                    continue;
                }
                self.storage.reserve(self.sealed.len());
                self.storage.extend_from_slice(&self.sealed);
                match conn.send_datagram(self.storage.split().freeze()) {
                    Ok(()) => counters.add_out(now, payload.len()),
                    Err(SendDatagramError::ConnectionLost(e)) => return Err(e),
                    Err(e) => {
                        tracing::debug!(error = %e, "tunnel datagram not sent");
                        bump(&counters.send_dropped, 1);
                    }
                }
            }
            total += got;
            if got < self.batch.capacity() {
                return Ok(total);
            }
        }
    }
}

/// The `ingress` edge's side: delivers to `local_addr` from an ephemeral socket.
///
/// The socket is a plain non-blocking one, not registered with tokio, like a flow's UDP
/// output (`net::bind_sender` says why: a registered UDP socket wakes the runtime after each
/// send). Its 4 MiB send buffer is full only if the host cannot keep up; a datagram that
/// finds it full is dropped, as the network would. Whatever quinn has received by the time
/// the task runs is opened and delivered together, in one `sendmmsg` (or GSO send).
pub struct UdpIngress {
    socket: std::net::UdpSocket,
    dest: SocketAddr,
    send: SendBatch,
    /// One opening buffer per datagram of a batch.
    open: Vec<Vec<u8>>,
}

impl UdpIngress {
    /// TTL 1 for a multicast `local_addr`: the tunnel delivers to the edge's own LAN.
    pub fn bind(dest: SocketAddr) -> io::Result<UdpIngress> {
        let socket = crate::net::bind_sender(dest, None, None, 0, 1)?;
        Ok(UdpIngress {
            send: SendBatch::new(dest, socket.as_fd()),
            socket,
            dest,
            open: (0..BATCH)
                .map(|_| Vec::with_capacity(MAX_UDP + DATAGRAM_OVERHEAD))
                .collect(),
        })
    }

    /// Deliver the tunnel's datagrams until `conn` closes (cancel-safe: a datagram is taken
    /// from quinn and delivered in the same poll).
    pub async fn run(
        &mut self,
        conn: &Connection,
        opener: &mut Opener,
        counters: &TunnelCounters,
    ) -> ConnectionError {
        loop {
            let first = match conn.read_datagram().await {
                Ok(d) => d,
                Err(e) => return e,
            };
            let mut taken = 1;
            fill(&mut self.open[0], &first);
            drop(first);
            while taken < BATCH {
                match conn.read_datagram().now_or_never() {
                    Some(Ok(d)) => {
                        fill(&mut self.open[taken], &d);
                        taken += 1;
                    }
                    Some(Err(e)) => {
                        self.deliver(taken, opener, counters);
                        return e;
                    }
                    None => break,
                }
            }
            self.deliver(taken, opener, counters);
        }
    }

    /// Open the first `taken` buffers and send what opens.
    fn deliver(&mut self, taken: usize, opener: &mut Opener, counters: &TunnelCounters) {
        let now = Instant::now();
        let mut payloads: [&[u8]; BATCH] = [&[]; BATCH];
        let mut n = 0;
        for buf in self.open.iter_mut().take(taken) {
            match opener.open(buf) {
                Ok(payload) => {
                    counters.add_in(now, payload.len());
                    payloads[n] = payload;
                    n += 1;
                }
                Err(OpenError::Replayed) => bump(&counters.replays_dropped, 1),
                Err(e @ (OpenError::Forged | OpenError::Short | OpenError::WrongTunnel)) => {
                    tracing::debug!(error = %e, "tunnel datagram dropped");
                    bump(&counters.auth_failures, 1);
                }
            }
        }
        let mut sent = 0;
        while sent < n {
            match self
                .send
                .send(self.socket.as_fd(), &payloads[sent..n], None::<&[&[u8]]>)
            {
                Ok(k) => sent += k,
                Err(e) => {
                    // Full buffer or an ICMP error of an earlier send: this one is lost, as
                    // on the wire; the next goes on.
                    tracing::debug!(error = %e, dest = %self.dest, "tunnel UDP delivery");
                    sent += 1;
                }
            }
        }
    }
}

/// Copy a received datagram into an opening buffer (reused: no allocation once grown).
fn fill(buf: &mut Vec<u8>, datagram: &[u8]) {
    buf.clear();
    buf.extend_from_slice(datagram);
}
