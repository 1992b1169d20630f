//! UDP and RTP inputs: unicast or multicast, optional source filter, MPEG-TS payload.

use std::cell::RefCell;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsFd;
use std::rc::Rc;
use std::time::Instant;

use tokio::io::Interest;
use tokio::net::UdpSocket;

use super::InputError;
use crate::config::UdpInputConfig;
use crate::flow::stats::{InputStats, bump};
use crate::net::mmsg::{BATCH, RecvBatch};
use crate::rtp::{self, SeqTracker};
use crate::ts::analyzer::TsAnalyzer;
use crate::ts::chunk::Chunker;
use crate::ts::ring::FlowRing;

/// Consecutive receive errors after which the input is declared lost.
const MAX_CONSECUTIVE_ERRORS: u32 = 1000;

pub struct UdpInput {
    socket: UdpSocket,
    rtp: bool,
    allowed: Option<Vec<IpAddr>>,
}

/// The TS-level state of a flow's input, shared with the stats reporter.
#[derive(Default)]
pub struct TsPath {
    pub chunker: Chunker,
    pub analyzer: TsAnalyzer,
}

impl TsPath {
    pub fn new() -> Self {
        TsPath {
            chunker: Chunker::new(),
            analyzer: TsAnalyzer::new(),
        }
    }
}

impl UdpInput {
    /// Bind the socket now (joining the multicast group if any).
    pub fn bind(cfg: &UdpInputConfig, rtp: bool) -> Result<Self, InputError> {
        let bind: SocketAddr = cfg.bind_addr.parse().map_err(|_| InputError::BadConfig {
            field: "bind_addr",
            value: cfg.bind_addr.clone(),
        })?;
        let interface = parse_ip(cfg.interface_addr.as_deref(), "interface_addr")?;
        let allowed = cfg
            .allowed_sources
            .as_ref()
            .map(|list| {
                list.iter()
                    .map(|s| {
                        s.parse::<IpAddr>()
                            .map(|ip| ip.to_canonical())
                            .map_err(|_| InputError::BadConfig {
                                field: "allowed_sources",
                                value: s.clone(),
                            })
                    })
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()?;
        let socket =
            crate::net::bind_receiver(bind, interface).map_err(|source| InputError::Bind {
                addr: cfg.bind_addr.clone(),
                source,
            })?;
        Ok(UdpInput {
            socket,
            rtp,
            allowed,
        })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Receive until the task is dropped; returns only when the socket keeps failing.
    pub async fn run(
        self,
        ring: Rc<FlowRing>,
        ts: Rc<RefCell<TsPath>>,
        stats: Rc<InputStats>,
        epoch: Instant,
    ) -> InputError {
        let mut batch = RecvBatch::new(BATCH);
        let mut seq = SeqTracker::default();
        let mut errors = 0u32;
        loop {
            if let Err(e) = self.socket.readable().await {
                return InputError::Receive(e);
            }
            match recv_batch(&self.socket, &mut batch) {
                Ok(0) => continue,
                Ok(_) => errors = 0,
                Err(e) => {
                    bump(&stats.recv_errors, 1);
                    errors += 1;
                    if errors >= MAX_CONSECUTIVE_ERRORS {
                        return InputError::Receive(e);
                    }
                    tokio::task::yield_now().await;
                    continue;
                }
            }
            // One clock read per batch: the datagrams of a batch were all waiting in the
            // socket when the batch was read, so this is when quoll received every one of them.
            let now = Instant::now();
            let recv_us = now.saturating_duration_since(epoch).as_micros() as u64;
            self.forward(&batch, now, recv_us, &mut seq, &ring, &ts, &stats);
            ring.wake();
            if batch.len() == batch.capacity() {
                // More may be waiting, and the socket is still marked readable: let the
                // outputs (and everything else on this thread) run before the next batch.
                tokio::task::yield_now().await;
            }
        }
    }

    /// Filter, depacketize, chunk and analyse every datagram of `batch` and push the chunks.
    #[allow(clippy::too_many_arguments)]
    fn forward(
        &self,
        batch: &RecvBatch,
        now: Instant,
        recv_us: u64,
        seq: &mut SeqTracker,
        ring: &FlowRing,
        ts: &RefCell<TsPath>,
        stats: &InputStats,
    ) {
        let mut ts = ts.borrow_mut();
        let TsPath { chunker, analyzer } = &mut *ts;
        let mut ring = ring.ring.borrow_mut();
        for i in 0..batch.len() {
            let (datagram, from) = batch.get(i);
            if let Some(allowed) = &self.allowed
                && !from.is_some_and(|ip| allowed.contains(&ip))
            {
                bump(&stats.filtered, 1);
                continue;
            }
            bump(&stats.datagrams, 1);
            bump(&stats.bytes, datagram.len() as u64);
            stats.rate.add(now, datagram.len());
            let payload = if self.rtp {
                match rtp::parse(datagram) {
                    Ok(h) => {
                        let fresh = seq.record(h.seq);
                        stats.rtp_lost.set(seq.lost);
                        stats.rtp_reordered.set(seq.reordered);
                        if !fresh {
                            // Duplicates and late packets: forwarding them would put TS
                            // packets out of order downstream.
                            continue;
                        }
                        &datagram[h.payload_offset..h.payload_offset + h.payload_len]
                    }
                    Err(_) => {
                        bump(&stats.malformed, 1);
                        continue;
                    }
                }
            } else {
                datagram
            };
            chunker.split(payload, |chunk| {
                analyzer.feed(chunk);
                bump(
                    &stats.packets,
                    (chunk.len() / crate::ts::packet::PACKET_LEN) as u64,
                );
                ring.push(chunk, recv_us);
            });
        }
    }
}

/// One `recvmmsg` into `batch` if the reactor says the socket is readable: `Ok(n)` with the
/// datagrams stored (0 when it was not readable after all), or the socket's error.
///
/// tokio clears a socket's readiness only when the operation inside `try_io` returns
/// WouldBlock. A short batch means recvmmsg met an empty queue, so it reports WouldBlock
/// after storing the datagrams: that clears readiness without the extra empty `recvfrom`
/// the usual loop needs. This is race-free: the clear applies only to the readiness event
/// it was read under (tokio compares the event's tick), and a datagram arriving after the
/// queue ran empty raises a new edge that the reactor sees at its next poll, on this same
/// thread, after the clear.
fn recv_batch(socket: &UdpSocket, batch: &mut RecvBatch) -> io::Result<usize> {
    let mut got = 0;
    let res = socket.try_io(Interest::READABLE, || {
        got = batch.recv(socket.as_fd())?;
        if ready_after(got, batch.capacity()) {
            Ok(())
        } else {
            Err(io::ErrorKind::WouldBlock.into())
        }
    });
    match res {
        Ok(()) => Ok(got),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(got),
        Err(e) => Err(e),
    }
}

/// Whether a socket may still hold datagrams after a batch of `got` out of `capacity`: only
/// a full batch can have left some behind.
fn ready_after(got: usize, capacity: usize) -> bool {
    got >= capacity
}

fn parse_ip(s: Option<&str>, field: &'static str) -> Result<Option<IpAddr>, InputError> {
    s.map(|s| {
        s.parse().map_err(|_| InputError::BadConfig {
            field,
            value: s.to_owned(),
        })
    })
    .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_full_batch_keeps_the_socket_readable() {
        assert!(!ready_after(0, BATCH));
        assert!(!ready_after(1, BATCH));
        assert!(!ready_after(BATCH - 1, BATCH));
        assert!(ready_after(BATCH, BATCH));
    }
}
