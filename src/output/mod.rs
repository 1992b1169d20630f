//! Flow outputs: where packets leave Quoll. Each output is one task holding a reader of the
//! flow's ring; it binds at start so a bind failure is reported at once.

#[cfg(feature = "hls")]
pub mod hls;
#[cfg(feature = "rtmp")]
pub mod rtmp;
pub mod srt;
pub mod udp;

use std::fmt;
use std::io;

/// Why an output could not start.
#[derive(Debug)]
pub enum OutputError {
    BadConfig {
        field: &'static str,
        value: String,
    },
    Bind {
        addr: String,
        source: io::Error,
    },
    Unsupported(&'static str),
    /// An SRT output could not be set up.
    Srt(crate::srt::SrtError),
}

impl fmt::Display for OutputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OutputError::BadConfig { field, value } => write!(f, "{field}: {value:?} is not valid"),
            OutputError::Bind { addr, source } => {
                write!(f, "cannot open socket for {addr}: {source}")
            }
            OutputError::Unsupported(t) => {
                write!(f, "output type '{t}' is not supported by this build")
            }
            OutputError::Srt(e) => write!(f, "SRT: {e}"),
        }
    }
}

impl std::error::Error for OutputError {}
