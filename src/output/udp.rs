//! UDP and RTP outputs: each chunk of the ring goes out as one datagram, read in place.
//!
//! An output wakes when the input has pushed a batch, then sends everything the ring holds
//! for it with as few `sendmmsg` calls as it takes (at most [`BATCH`] chunks each). The
//! socket is not registered with the reactor while sends succeed (`net::bind_sender` says
//! why); only a full socket buffer registers it, until it is writable again.

use std::hash::{BuildHasher, Hasher};
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::rc::Rc;

use super::OutputError;
use crate::config::UdpOutputConfig;
use crate::net::mmsg::{BATCH, SendBatch};
use crate::rtp;
use crate::stats::{OutputStats, bump};
use crate::ts::packet::PACKET_LEN;
use crate::ts::ring::{FlowRing, Read, Reader, Ring};

/// Multicast TTL when the config does not say: enough for a routed plant, not the internet.
const DEFAULT_TTL: u32 = 16;

pub struct UdpOutput {
    socket: std::net::UdpSocket,
    dest: SocketAddr,
    rtp: Option<RtpState>,
}

struct RtpState {
    seq: u16,
    ssrc: u32,
}

impl UdpOutput {
    pub fn bind(cfg: &UdpOutputConfig, rtp: bool) -> Result<Self, OutputError> {
        let dest = cfg.dest_addr;
        let socket = crate::net::bind_sender(
            dest,
            cfg.bind_addr,
            cfg.interface_addr,
            cfg.dscp,
            cfg.ttl.unwrap_or(DEFAULT_TTL),
        )
        .map_err(|source| OutputError::Bind {
            addr: dest.to_string(),
            source,
        })?;
        let rtp = rtp.then(|| RtpState {
            seq: random_u32() as u16,
            ssrc: random_u32(),
        });
        Ok(UdpOutput { socket, dest, rtp })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Forward every chunk of the ring from now on, until the task is dropped.
    pub async fn run(mut self, ring: Rc<FlowRing>, stats: Rc<OutputStats>) {
        let mut reader = ring.ring.borrow().reader();
        let mut batch = SendBatch::new(self.dest, self.socket.as_fd());
        loop {
            // Register for the wake-up before looking, so a push between the look and the
            // await is not missed.
            let notified = ring.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            loop {
                let step = {
                    let r = ring.ring.borrow();
                    let socket = self.socket.as_fd();
                    drain_once(&r, &mut reader, &stats, self.rtp.as_mut(), |p, h| {
                        batch.send(socket, p, h)
                    })
                };
                match step {
                    Step::Empty => break,
                    Step::Sent => {}
                    Step::Blocked => {
                        // Socket buffer full: wait for room, then send the same chunks again
                        // (unless the ring has moved past them meanwhile, which read() tells).
                        // The input never waits for this: it keeps writing the ring.
                        if wait_writable(&self.socket).await.is_err() {
                            bump(&stats.send_errors, 1);
                            tokio::task::yield_now().await;
                        }
                    }
                }
            }
            notified.await;
        }
    }
}

/// The RTP headers of one batch, one per chunk (None for plain UDP).
type Headers<'h> = Option<&'h [[u8; rtp::HEADER_LEN]]>;

/// What one [`drain_once`] did.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    /// Nothing left to send.
    Empty,
    /// Sent (or skipped after an error) at least one chunk; there may be more.
    Sent,
    /// The socket buffer is full; the reader is back where it was.
    Blocked,
}

/// Read up to [`BATCH`] chunks for `reader`, hand them to `send` (one datagram each, after an
/// RTP header when `rtp` is set) and move the reader past what went out.
///
/// `send` returns how many of the datagrams went out, from the first; a short count means
/// the next one failed, and the next call will meet that failure on its own. WouldBlock
/// leaves the reader where it was. Any other error is counted in `send_errors` and skips one
/// chunk: unreachable networks and the like should not stop the chunks after it.
fn drain_once(
    ring: &Ring,
    reader: &mut Reader,
    stats: &OutputStats,
    mut rtp: Option<&mut RtpState>,
    send: impl FnOnce(&[&[u8]], Headers<'_>) -> io::Result<usize>,
) -> Step {
    let mut payloads: [&[u8]; BATCH] = [&[]; BATCH];
    let mut headers = [[0u8; rtp::HEADER_LEN]; BATCH];
    let mut start = reader.clone();
    let mut n = 0;
    while n < BATCH {
        match ring.read(reader) {
            Read::Empty => break,
            Read::Lagged(missed) => {
                // Only the first read can find its slot overwritten: the ring does not move
                // while it is borrowed, and the slots after a readable one are readable too.
                debug_assert_eq!(n, 0);
                bump(&stats.dropped, missed);
                start = reader.clone();
            }
            Read::Chunk(chunk) => {
                if let Some(state) = rtp.as_deref() {
                    // 90 kHz clock from the input's receive time keeps every RTP output of the
                    // flow on the same timeline, with the arrival spacing of the source.
                    let ts = (chunk.recv_us.wrapping_mul(9) / 100) as u32;
                    let seq = state.seq.wrapping_add(n as u16);
                    rtp::write_header(&mut headers[n], seq, ts, state.ssrc);
                }
                payloads[n] = chunk.data;
                n += 1;
            }
        }
    }
    if n == 0 {
        return Step::Empty;
    }
    let result = send(&payloads[..n], rtp.is_some().then_some(&headers[..n]));
    *reader = start;
    match result {
        Ok(sent) if sent > 0 => {
            let sent = sent.min(n);
            for p in &payloads[..sent] {
                bump(&stats.datagrams, 1);
                bump(&stats.packets, (p.len() / PACKET_LEN) as u64);
                bump(&stats.bytes, p.len() as u64);
            }
            ring.advance(reader, sent);
            if let Some(state) = rtp.as_mut() {
                state.seq = state.seq.wrapping_add(sent as u16);
            }
            Step::Sent
        }
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Step::Blocked,
        // An error, or a sender that claims to have sent nothing (sendmmsg never does).
        _ => {
            bump(&stats.send_errors, 1);
            ring.advance(reader, 1);
            Step::Sent
        }
    }
}

/// Wait until `socket` has room in its send buffer.
///
/// A duplicate descriptor of the same socket is registered with the reactor for the length
/// of the wait: readiness is the socket's, and the output keeps its own descriptor without
/// any unsafe hand-over. The dup, the registration (one allocation) and the `epoll_ctl`s
/// cost something, but only when a buffer is full, never per packet.
async fn wait_writable(socket: &std::net::UdpSocket) -> io::Result<()> {
    let registered = tokio::net::UdpSocket::from_std(socket.try_clone()?)?;
    registered.writable().await
}

/// A random u32 from the std hasher's per-process random keys: enough for SSRCs and initial
/// sequence numbers (RFC 3550 asks for unpredictable ones), no extra dependency.
fn random_u32() -> u32 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0),
    );
    h.finish() as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    fn chunk(tag: u8) -> Vec<u8> {
        let mut v = vec![0u8; 7 * PACKET_LEN];
        for p in v.chunks_mut(PACKET_LEN) {
            p[0] = 0x47;
            p[1] = tag;
        }
        v
    }

    fn ring_with(n: u8, capacity: usize) -> (Ring, Reader) {
        let mut ring = Ring::new(capacity);
        let reader = ring.reader();
        for i in 0..n {
            ring.push(&chunk(i), u64::from(i) * 1000);
        }
        (ring, reader)
    }

    /// Tags of the chunks each call to the fake sender saw.
    type Calls = RefCell<Vec<Vec<u8>>>;

    fn fake<'a>(
        calls: &'a Calls,
        result: io::Result<usize>,
    ) -> impl FnOnce(&[&[u8]], Headers<'_>) -> io::Result<usize> + 'a {
        move |p, _| {
            calls.borrow_mut().push(p.iter().map(|c| c[1]).collect());
            result
        }
    }

    #[test]
    fn sends_in_batches_and_counts_what_went_out() {
        let (ring, mut r) = ring_with(40, 64);
        let stats = OutputStats::default();
        let calls = Calls::default();
        assert_eq!(
            drain_once(&ring, &mut r, &stats, None, fake(&calls, Ok(BATCH))),
            Step::Sent
        );
        assert_eq!(
            drain_once(&ring, &mut r, &stats, None, fake(&calls, Ok(8))),
            Step::Sent
        );
        assert_eq!(
            drain_once(&ring, &mut r, &stats, None, fake(&calls, Ok(0))),
            Step::Empty
        );
        let calls = calls.into_inner();
        assert_eq!(calls.len(), 2, "the empty ring calls no sender");
        assert_eq!(calls[0], (0..BATCH as u8).collect::<Vec<_>>());
        assert_eq!(calls[1], (BATCH as u8..40).collect::<Vec<_>>());
        assert_eq!(stats.datagrams.get(), 40);
        assert_eq!(stats.packets.get(), 40 * 7);
        assert_eq!(stats.bytes.get(), 40 * 7 * PACKET_LEN as u64);
    }

    #[test]
    fn a_short_send_resumes_after_the_last_chunk_sent() {
        let (ring, mut r) = ring_with(5, 8);
        let stats = OutputStats::default();
        let calls = Calls::default();
        drain_once(&ring, &mut r, &stats, None, fake(&calls, Ok(2)));
        drain_once(&ring, &mut r, &stats, None, fake(&calls, Ok(3)));
        assert_eq!(calls.into_inner(), vec![vec![0, 1, 2, 3, 4], vec![2, 3, 4]]);
        assert_eq!(stats.datagrams.get(), 5);
    }

    #[test]
    fn would_block_keeps_the_chunks_for_the_retry() {
        let (ring, mut r) = ring_with(3, 8);
        let stats = OutputStats::default();
        let calls = Calls::default();
        let blocked = io::Error::from(io::ErrorKind::WouldBlock);
        assert_eq!(
            drain_once(&ring, &mut r, &stats, None, fake(&calls, Err(blocked))),
            Step::Blocked
        );
        drain_once(&ring, &mut r, &stats, None, fake(&calls, Ok(3)));
        assert_eq!(calls.into_inner(), vec![vec![0, 1, 2], vec![0, 1, 2]]);
        assert_eq!(stats.send_errors.get(), 0);
        assert_eq!(stats.datagrams.get(), 3);
    }

    #[test]
    fn an_error_skips_one_chunk_and_is_counted() {
        let (ring, mut r) = ring_with(3, 8);
        let stats = OutputStats::default();
        let calls = Calls::default();
        let unreachable = io::Error::from_raw_os_error(libc::ENETUNREACH);
        assert_eq!(
            drain_once(&ring, &mut r, &stats, None, fake(&calls, Err(unreachable))),
            Step::Sent
        );
        drain_once(&ring, &mut r, &stats, None, fake(&calls, Ok(2)));
        assert_eq!(calls.into_inner(), vec![vec![0, 1, 2], vec![1, 2]]);
        assert_eq!(stats.send_errors.get(), 1);
        assert_eq!(stats.datagrams.get(), 2);
    }

    #[test]
    fn a_lagging_reader_counts_dropped_and_sends_from_the_head() {
        let mut ring = Ring::new(4);
        let mut r = ring.reader();
        for i in 0..10 {
            ring.push(&chunk(i), 0);
        }
        let stats = OutputStats::default();
        let calls = Calls::default();
        drain_once(&ring, &mut r, &stats, None, fake(&calls, Ok(0)));
        // Lagged to the head: nothing left to send this time, 10 chunks' packets dropped.
        assert_eq!(stats.dropped.get(), 10 * 7);
        assert!(calls.borrow().is_empty());
        ring.push(&chunk(42), 0);
        drain_once(&ring, &mut r, &stats, None, fake(&calls, Ok(1)));
        assert_eq!(calls.into_inner(), vec![vec![42]]);
    }

    #[test]
    fn rtp_headers_number_consecutively_and_only_sent_ones_advance_seq() {
        let (ring, mut r) = ring_with(4, 8);
        let stats = OutputStats::default();
        let mut state = RtpState {
            seq: 0xFFFE,
            ssrc: 0x1234_5678,
        };
        let seen = RefCell::new(Vec::new());
        let send = |p: &[&[u8]], h: Headers<'_>| {
            let h = h.expect("RTP output sends headers");
            assert_eq!(h.len(), p.len());
            for hdr in h {
                assert_eq!(hdr[1], rtp::PT_MP2T);
                assert_eq!(&hdr[8..12], &0x1234_5678u32.to_be_bytes());
                seen.borrow_mut().push(u16::from_be_bytes([hdr[2], hdr[3]]));
            }
            Ok(3)
        };
        drain_once(&ring, &mut r, &stats, Some(&mut state), send);
        assert_eq!(state.seq, 0x0001, "advanced by the 3 sent, wrapping");
        assert_eq!(seen.into_inner(), vec![0xFFFE, 0xFFFF, 0x0000, 0x0001]);
        // The fourth goes again with the next number, 0x0001.
        let again = RefCell::new(Vec::new());
        drain_once(&ring, &mut r, &stats, Some(&mut state), |_, h| {
            again
                .borrow_mut()
                .push(u16::from_be_bytes([h.unwrap()[0][2], h.unwrap()[0][3]]));
            Ok(1)
        });
        assert_eq!(again.into_inner(), vec![0x0001]);
        assert_eq!(state.seq, 0x0002);
    }
}
