//! UDP and RTP outputs: each chunk of the ring goes out as one datagram, read in place.

use std::hash::{BuildHasher, Hasher};
use std::io::{self, IoSlice};
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;

use socket2::SockRef;
use tokio::io::Interest;
use tokio::net::UdpSocket;

use super::OutputError;
use crate::config::UdpOutputConfig;
use crate::flow::stats::{OutputStats, bump};
use crate::rtp;
use crate::ts::ring::{FlowRing, Read};

/// Multicast TTL when the config does not say: enough for a routed plant, not the internet.
const DEFAULT_TTL: u32 = 16;

pub struct UdpOutput {
    socket: UdpSocket,
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
        loop {
            // Register for the wake-up before looking, so a push between the look and the
            // await is not missed.
            let notified = ring.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            loop {
                let before = reader.clone();
                let sent = {
                    let r = ring.ring.borrow();
                    match r.read(&mut reader) {
                        Read::Empty => break,
                        Read::Lagged(missed) => {
                            bump(&stats.dropped, missed);
                            continue;
                        }
                        Read::Chunk(chunk) => {
                            let res = self.send(chunk.data, chunk.recv_us);
                            if res.is_ok() {
                                bump(&stats.datagrams, 1);
                                bump(&stats.packets, chunk.packets() as u64);
                                bump(&stats.bytes, chunk.data.len() as u64);
                            }
                            res
                        }
                    }
                };
                match sent {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        // Socket buffer full: wait for room, then send the same chunk again
                        // (unless the ring has moved past it meanwhile, which read() tells).
                        reader = before;
                        if self.socket.writable().await.is_err() {
                            bump(&stats.send_errors, 1);
                        }
                    }
                    Err(_) => {
                        // Unreachable network and the like: count it and go on; the next
                        // chunk may well get through.
                        bump(&stats.send_errors, 1);
                    }
                }
            }
            notified.await;
        }
    }

    fn send(&mut self, payload: &[u8], recv_us: u64) -> io::Result<()> {
        match &mut self.rtp {
            None => self.socket.try_send_to(payload, self.dest).map(drop),
            Some(state) => {
                let mut header = [0u8; rtp::HEADER_LEN];
                // 90 kHz clock from the input's receive time keeps every RTP output of the
                // flow on the same timeline, with the arrival spacing of the source.
                let ts = (recv_us.wrapping_mul(9) / 100) as u32;
                rtp::write_header(&mut header, state.seq, ts, state.ssrc);
                let dest = self.dest.into();
                self.socket
                    .try_io(Interest::WRITABLE, || {
                        SockRef::from(&self.socket).send_to_vectored(
                            &[IoSlice::new(&header), IoSlice::new(payload)],
                            &dest,
                        )
                    })
                    .map(|_| state.seq = state.seq.wrapping_add(1))
            }
        }
    }
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
