//! Flow inputs: where packets enter Quoll. An input binds at flow start (so a bind failure
//! is a start failure the operator sees at once), then runs as one task writing the ring.

pub mod cadence;
#[cfg(feature = "rtmp")]
pub mod rtmp;
#[cfg(feature = "rtsp")]
pub mod rtsp;
pub mod srt;
pub mod udp;

use std::cell::RefCell;
use std::fmt;
use std::io;
use std::rc::Rc;
use std::time::Instant;

use crate::stats::{InputStats, bump};
use crate::ts::ring::FlowRing;
use udp::TsPath;

/// Where an input's payloads go: through the flow's TS path (chunker, analyzer, packet
/// count) into its ring, stamped with the receive time since the flow's epoch. Every
/// input's `run` takes one.
pub struct Feed {
    pub ring: Rc<FlowRing>,
    pub ts: Rc<RefCell<TsPath>>,
    pub stats: Rc<InputStats>,
    pub epoch: Instant,
}

impl Feed {
    /// A datagram (or access unit) of `len` bytes arrived at `now`: count it.
    pub fn count(&self, len: usize, now: Instant) {
        bump(&self.stats.datagrams, 1);
        bump(&self.stats.bytes, len as u64);
        self.stats.rate.add(now, len);
    }

    /// Microseconds from the flow's epoch to `now`, the ring's receive stamp.
    pub fn recv_us(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_micros() as u64
    }

    /// Into the chunker, the analyzer and the ring.
    pub fn push(&self, payload: &[u8], now: Instant) {
        let recv_us = self.recv_us(now);
        let ring = &self.ring;
        self.ts
            .borrow_mut()
            .split(payload, &self.stats, |chunk| ring.push(chunk, recv_us));
    }
}

/// Why an input could not start or stopped.
#[derive(Debug)]
pub enum InputError {
    /// A config field did not parse (validation should have caught it).
    BadConfig {
        field: &'static str,
        value: String,
    },
    Bind {
        addr: String,
        source: io::Error,
    },
    /// The socket kept failing: the task gave up.
    Receive(io::Error),
    /// The configured input type is not run by this build.
    Unsupported(&'static str),
    /// An SRT input could not be set up, or its listener stopped.
    Srt(crate::srt::SrtError),
}

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InputError::BadConfig { field, value } => write!(f, "{field}: {value:?} is not valid"),
            InputError::Bind { addr, source } => write!(f, "cannot bind {addr}: {source}"),
            InputError::Receive(e) => write!(f, "receive failed repeatedly: {e}"),
            InputError::Unsupported(t) => {
                write!(f, "input type '{t}' is not supported by this build")
            }
            InputError::Srt(e) => write!(f, "SRT: {e}"),
        }
    }
}

impl std::error::Error for InputError {}
