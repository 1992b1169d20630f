//! UDP and RTP outputs: each chunk of the ring goes out as one datagram, read in place.
//!
//! An output wakes when the input has pushed a batch, then sends everything the ring holds
//! for it with as few `sendmmsg` calls as it takes (at most [`BATCH`] chunks each). The
//! socket is not registered with the reactor while sends succeed (`net::bind_sender` says
//! why); only a full socket buffer registers it, until it is writable again.

use std::hash::{BuildHasher, Hasher};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsFd;
use std::rc::Rc;

use super::OutputError;
use crate::config::UdpOutputConfig;
use crate::flow::stats::{OutputStats, bump};
use crate::net::mmsg::{BATCH, SendBatch};
use crate::rtp;
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
        let dest: SocketAddr = cfg.dest_addr.parse().map_err(|_| OutputError::BadConfig {
            field: "dest_addr",
            value: cfg.dest_addr.clone(),
        })?;
        let bind = match &cfg.bind_addr {
            None => None,
            Some(b) => Some(
                b.parse::<SocketAddr>()
                    .map_err(|_| OutputError::BadConfig {
                        field: "bind_addr",
                        value: b.clone(),
                    })?,
            ),
        };
        let interface = match &cfg.interface_addr {
            None => None,
            Some(i) => Some(i.parse::<IpAddr>().map_err(|_| OutputError::BadConfig {
                field: "interface_addr",
                value: i.clone(),
            })?),
        };
        let socket = crate::net::bind_sender(
            dest,
            bind,
            interface,
            cfg.dscp,
            cfg.ttl.unwrap_or(DEFAULT_TTL),
        )
        .map_err(|source| OutputError::Bind {
            addr: cfg.dest_addr.clone(),
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
    send: impl FnOnce(&[&[u8]], Option<&[[u8; rtp::HEADER_LEN]]>) -> io::Result<usize>,
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
