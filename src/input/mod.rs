//! Flow inputs: where packets enter Quoll. An input binds at flow start (so a bind failure
//! is a start failure the operator sees at once), then runs as one task writing the ring.

pub mod cadence;
#[cfg(feature = "rtmp")]
pub mod rtmp;
pub mod rtsp;
pub mod srt;
pub mod udp;

use std::fmt;
use std::io;

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
