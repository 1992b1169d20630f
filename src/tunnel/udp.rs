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

use bytes::BytesMut;
use quinn::{Connection, ConnectionError, SendDatagramError};
use tokio::net::UdpSocket;

use super::seal::{DATAGRAM_OVERHEAD, OpenError, Opener, Sealer};
use super::status::{TunnelCounters, bump};

/// The largest UDP payload read or delivered.
const MAX_UDP: usize = 65_535;
/// The send storage datagrams are cut from: about 190 full-size sealed datagrams, so it is
/// reclaimed (not reallocated) as long as quinn sends faster than that backlog.
const SEND_STORAGE: usize = 256 * 1024;

/// The `egress` edge's side: the socket bound at `local_addr` for the tunnel's whole life
/// (reconnecting does not let go of the port flows send to).
pub struct UdpEgress {
    socket: UdpSocket,
    read: Vec<u8>,
    sealed: Vec<u8>,
    storage: BytesMut,
}

impl UdpEgress {
    /// Bound like a flow's UDP input (`net::bind_receiver`: a large receive buffer, and a
    /// multicast `local_addr` joins its group).
    pub fn bind(local: SocketAddr) -> io::Result<UdpEgress> {
        let socket = crate::net::bind_receiver(local, None)?;
        Ok(UdpEgress {
            socket: UdpSocket::from_std(socket)?,
            read: vec![0; MAX_UDP],
            sealed: Vec::with_capacity(MAX_UDP + DATAGRAM_OVERHEAD),
            storage: BytesMut::with_capacity(SEND_STORAGE),
        })
    }

    /// Read what queued while the tunnel was down and drop it: stale media is of no use to
    /// the far end, and a burst of it would only delay the live stream.
    pub fn drain(&mut self) -> usize {
        let mut n = 0;
        while self.socket.try_recv_from(&mut self.read).is_ok() {
            n += 1;
        }
        n
    }

    /// Carry local datagrams into `conn` until it closes (cancel-safe: the caller drops this
    /// when the control plane says the tunnel is down, and calls it again after any control
    /// message, so it keeps no state of its own between calls).
    pub async fn run(
        &mut self,
        conn: &Connection,
        sealer: &mut Sealer,
        counters: &TunnelCounters,
    ) -> ConnectionError {
        // Made once: a fresh `closed()` per datagram would lock the connection each time.
        let closed = conn.closed();
        tokio::pin!(closed);
        loop {
            let n = tokio::select! {
                biased;
                e = &mut closed => return e,
                r = self.socket.recv_from(&mut self.read) => match r {
                    Ok((n, _from)) => n,
                    Err(e) => {
                        // ICMP errors of earlier sends and the like: the socket is still good.
                        tracing::debug!(error = %e, "tunnel UDP read");
                        continue;
                    }
                },
            };
            let payload = &self.read[..n];
            sealer.seal(payload, &mut self.sealed);
            if conn
                .max_datagram_size()
                .is_none_or(|max| self.sealed.len() > max)
            {
                bump(&counters.send_dropped, 1);
                continue;
            }
            self.storage.reserve(self.sealed.len());
            self.storage.extend_from_slice(&self.sealed);
            match conn.send_datagram(self.storage.split().freeze()) {
                Ok(()) => counters.add_out(Instant::now(), n),
                Err(SendDatagramError::ConnectionLost(e)) => return e,
                Err(e) => {
                    tracing::debug!(error = %e, "tunnel datagram not sent");
                    bump(&counters.send_dropped, 1);
                }
            }
        }
    }
}

/// The `ingress` edge's side: delivers to `local_addr` from an ephemeral socket.
///
/// The socket is a plain non-blocking one, not registered with tokio, like a flow's UDP
/// output (`net::bind_sender` says why: a registered UDP socket wakes the runtime after each
/// send). Its 4 MiB send buffer is full only if the host cannot keep up; a datagram that
/// finds it full is dropped, as the network would.
pub struct UdpIngress {
    socket: std::net::UdpSocket,
    dest: SocketAddr,
    open: Vec<u8>,
}

impl UdpIngress {
    /// TTL 1 for a multicast `local_addr`: the tunnel delivers to the edge's own LAN.
    pub fn bind(dest: SocketAddr) -> io::Result<UdpIngress> {
        Ok(UdpIngress {
            socket: crate::net::bind_sender(dest, None, None, 0, 1)?,
            dest,
            open: Vec::with_capacity(MAX_UDP + DATAGRAM_OVERHEAD),
        })
    }

    /// Deliver the tunnel's datagrams until `conn` closes (cancel-safe).
    pub async fn run(
        &mut self,
        conn: &Connection,
        opener: &mut Opener,
        counters: &TunnelCounters,
    ) -> ConnectionError {
        loop {
            let datagram = match conn.read_datagram().await {
                Ok(d) => d,
                Err(e) => return e,
            };
            self.open.clear();
            self.open.extend_from_slice(&datagram);
            drop(datagram);
            match opener.open(&mut self.open) {
                Ok(payload) => {
                    counters.add_in(Instant::now(), payload.len());
                    if let Err(e) = self.socket.send_to(payload, self.dest) {
                        tracing::debug!(error = %e, dest = %self.dest, "tunnel UDP delivery");
                    }
                }
                Err(OpenError::Replayed) => bump(&counters.replays_dropped, 1),
                Err(e @ (OpenError::Forged | OpenError::Short | OpenError::WrongTunnel)) => {
                    tracing::debug!(error = %e, "tunnel datagram dropped");
                    bump(&counters.auth_failures, 1);
                }
            }
        }
    }
}
