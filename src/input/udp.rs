//! UDP and RTP inputs: unicast or multicast, optional source filter, MPEG-TS payload.

use std::cell::RefCell;
use std::io;
use std::net::UdpSocket;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsFd;
use std::time::Instant;

use super::cadence::{Cadence, go_busy};
use super::{Feed, InputError};
use crate::config::UdpInputConfig;
use crate::net::mmsg::{BATCH, RecvBatch};
use crate::net::wake::{OneShotReadable, Ticker};
use crate::rtp::{self, SeqTracker};
use crate::stats::{InputStats, bump};
use crate::ts::analyzer::TsAnalyzer;
use crate::ts::chunk::Chunker;
use crate::ts::packet::PACKET_LEN;
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

    /// Chunk `payload`, analyse each chunk, count its packets and hand it to `push` (the
    /// ring's: `FlowRing::push`, or a batch's borrowed `Ring`). Every input's last step.
    pub fn split(&mut self, payload: &[u8], stats: &InputStats, mut push: impl FnMut(&[u8])) {
        let TsPath { chunker, analyzer } = self;
        chunker.split(payload, |chunk| {
            analyzer.feed(chunk);
            bump(&stats.packets, (chunk.len() / PACKET_LEN) as u64);
            push(chunk);
        });
    }
}

impl UdpInput {
    /// Bind the socket now (joining the multicast group if any).
    pub fn bind(cfg: &UdpInputConfig, rtp: bool) -> Result<Self, InputError> {
        let bind = cfg.bind_addr;
        let allowed = cfg
            .allowed_sources
            .as_ref()
            .map(|list| list.iter().map(|ip| ip.to_canonical()).collect());
        let socket = crate::net::bind_receiver(bind, cfg.interface_addr).map_err(|source| {
            InputError::Bind {
                addr: bind.to_string(),
                source,
            }
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
    ///
    /// Two modes. Idle: the socket is armed ([`OneShotReadable`]) and the task sleeps until
    /// a datagram arrives, which is forwarded at once. Busy, once datagrams come faster than
    /// one per [`START_PERIOD`](super::cadence::START_PERIOD): the socket is disarmed and drained every period
    /// ([`Cadence`]: 1 to 10 ms, following the stream's rate) with as few `recvmmsg` calls as
    /// it takes, until a tick finds it empty and the input goes idle again. While busy,
    /// arrivals wake nobody: one wake-up, one `recvmmsg` and one send per
    /// output move a whole interval of datagrams, where waking per datagram cost a context
    /// switch and three syscalls each. A sparse stream stays idle, woken per datagram, which
    /// is then the cheaper way.
    pub async fn run(self, feed: Feed) -> InputError {
        let Feed {
            ring,
            ts,
            stats,
            epoch,
        } = feed;
        let (armed, ticker) =
            match OneShotReadable::new(self.socket.as_fd()).and_then(|a| Ok((a, Ticker::new()?))) {
                Ok(w) => w,
                Err(e) => return InputError::Receive(e),
            };
        let mut batch = RecvBatch::new(BATCH);
        let mut seq = SeqTracker::default();
        let mut cadence = Cadence::new();
        let mut errors = 0u32;
        // Consecutive receive errors are counted across both modes; too many end the input.
        let mut account = |res: io::Result<usize>| match res {
            Ok(n) => {
                if n > 0 {
                    errors = 0;
                }
                Ok(n)
            }
            Err(e) => {
                bump(&stats.recv_errors, 1);
                errors += 1;
                if errors >= MAX_CONSECUTIVE_ERRORS {
                    Err(InputError::Receive(e))
                } else {
                    Ok(0)
                }
            }
        };
        let mut last_wake: Option<Instant> = None;
        loop {
            if let Err(e) = armed.readable().await {
                return InputError::Receive(e);
            }
            let woke = Instant::now();
            let gap = last_wake.map(|t| woke.saturating_duration_since(t));
            last_wake = Some(woke);
            let got = match account(
                self.drain(&mut batch, &mut seq, &ring, &ts, &stats, epoch)
                    .await,
            ) {
                Ok(n) => n,
                Err(e) => return e,
            };
            if !go_busy(got, gap) {
                continue;
            }
            if let Err(e) = ticker.start(cadence.period()) {
                return InputError::Receive(e);
            }
            loop {
                if let Err(e) = ticker.tick().await {
                    return InputError::Receive(e);
                }
                match account(
                    self.drain(&mut batch, &mut seq, &ring, &ts, &stats, epoch)
                        .await,
                ) {
                    // The stream paused: that tick says nothing about its rate.
                    Ok(0) => break,
                    Ok(got) => {
                        if let Some(period) = cadence.after_tick(got)
                            && let Err(e) = ticker.start(period)
                        {
                            return InputError::Receive(e);
                        }
                    }
                    Err(e) => return e,
                }
            }
            if let Err(e) = ticker.stop() {
                return InputError::Receive(e);
            }
        }
    }

    /// Receive and forward everything the socket holds: `Ok(datagrams)`, 0 if it was empty.
    async fn drain(
        &self,
        batch: &mut RecvBatch,
        seq: &mut SeqTracker,
        ring: &FlowRing,
        ts: &RefCell<TsPath>,
        stats: &InputStats,
        epoch: Instant,
    ) -> io::Result<usize> {
        let mut total = 0;
        loop {
            match batch.recv(self.socket.as_fd()) {
                Ok(n) => {
                    // One clock read per batch: the datagrams of a batch were all waiting in
                    // the socket when it was read, which is when quoll received them.
                    let now = Instant::now();
                    let recv_us = now.saturating_duration_since(epoch).as_micros() as u64;
                    self.forward(batch, now, recv_us, seq, ring, ts, stats);
                    ring.wake();
                    total += n;
                    if !more_after(n, batch.capacity()) {
                        return Ok(total);
                    }
                    // A full batch: more may be waiting. Let the outputs send this one
                    // before the next can overwrite ring slots they have not read.
                    tokio::task::yield_now().await;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(total),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) if total > 0 => {
                    // Datagrams came before it: count it, keep them, try again next tick.
                    bump(&stats.recv_errors, 1);
                    return Ok(total);
                }
                Err(e) => return Err(e),
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
            ts.split(payload, stats, |chunk| ring.push(chunk, recv_us));
        }
    }
}

/// Whether a socket may still hold datagrams after a batch of `got` out of `capacity`: a
/// short batch means recvmmsg met an empty queue.
fn more_after(got: usize, capacity: usize) -> bool {
    got >= capacity
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::cadence;

    #[test]
    fn busy_mode_only_when_datagrams_come_faster_than_the_ticker() {
        let short = Some(cadence::START_PERIOD / 4);
        let long = Some(cadence::START_PERIOD * 3);
        assert!(go_busy(2, None), "a backlog means the input is behind");
        assert!(go_busy(5, long));
        assert!(go_busy(1, short), "wake-ups closer than a tick");
        assert!(!go_busy(1, long), "a sparse stream stays event-driven");
        assert!(!go_busy(1, None), "the first datagram ever");
        assert!(!go_busy(0, short), "a wake-up that found nothing");
        assert!(!go_busy(1, Some(cadence::START_PERIOD)));
    }

    #[test]
    fn only_a_full_batch_can_leave_datagrams_behind() {
        assert!(!more_after(0, BATCH));
        assert!(!more_after(1, BATCH));
        assert!(!more_after(BATCH - 1, BATCH));
        assert!(more_after(BATCH, BATCH));
    }
}
