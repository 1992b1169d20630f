//! UDP and RTP inputs: unicast or multicast, optional source filter, MPEG-TS payload.

use std::cell::RefCell;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::time::Instant;

use tokio::net::UdpSocket;

use super::InputError;
use crate::config::UdpInputConfig;
use crate::flow::stats::{InputStats, bump};
use crate::rtp::{self, SeqTracker};
use crate::ts::analyzer::TsAnalyzer;
use crate::ts::chunk::Chunker;
use crate::ts::ring::FlowRing;

/// Largest UDP payload: anything we receive fits, so nothing is silently truncated.
const RECV_BUF: usize = 65_536;
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
        let mut buf = vec![0u8; RECV_BUF];
        let mut seq = SeqTracker::default();
        let mut errors = 0u32;
        loop {
            let (len, from) = match self.socket.recv_from(&mut buf).await {
                Ok(r) => {
                    errors = 0;
                    r
                }
                Err(e) => {
                    bump(&stats.recv_errors, 1);
                    errors += 1;
                    if errors >= MAX_CONSECUTIVE_ERRORS {
                        return InputError::Receive(e);
                    }
                    tokio::task::yield_now().await;
                    continue;
                }
            };
            let now = Instant::now();
            if let Some(allowed) = &self.allowed
                && !allowed.contains(&from.ip().to_canonical())
            {
                bump(&stats.filtered, 1);
                continue;
            }
            bump(&stats.datagrams, 1);
            bump(&stats.bytes, len as u64);
            stats.rate.add(now, len);
            let datagram = &buf[..len];
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
            let recv_us = now.saturating_duration_since(epoch).as_micros() as u64;
            let mut ts = ts.borrow_mut();
            let TsPath { chunker, analyzer } = &mut *ts;
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

fn parse_ip(s: Option<&str>, field: &'static str) -> Result<Option<IpAddr>, InputError> {
    s.map(|s| {
        s.parse().map_err(|_| InputError::BadConfig {
            field,
            value: s.to_owned(),
        })
    })
    .transpose()
}
