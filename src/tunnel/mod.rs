//! Tunnels: a UDP flow or TCP connections carried between two edges over QUIC, through a
//! relay or directly (`shared/spec/relay-protocol.md`).
//!
//! The config (`config::TunnelConfig`, `config::TunnelTlsConfig`), the reported status and the
//! UUID below exist in every build; the engine is the cargo feature `tunnels`. Without it,
//! `absent.rs` keeps the tunnels and reports them `"stopped"`.
//!
//! The node owns one [`Tunnels`]: `apply` starts new tunnels, restarts changed ones and stops
//! removed or disabled ones (an unchanged tunnel is not touched), `status` reports them.

use std::path::PathBuf;

use crate::events::Events;

#[cfg(feature = "tunnels")]
pub mod direct_session;
#[cfg(feature = "tunnels")]
pub mod failover;
#[cfg(feature = "tunnels")]
pub mod relay_session;
#[cfg(feature = "tunnels")]
pub mod seal;
pub mod status;
#[cfg(feature = "tunnels")]
pub mod token;
#[cfg(feature = "tunnels")]
pub mod wire;

#[cfg(feature = "tunnels")]
pub mod cert;
#[cfg(feature = "tunnels")]
mod direct;
#[cfg(feature = "tunnels")]
pub mod quic;
#[cfg(feature = "tunnels")]
mod relay;
#[cfg(feature = "tunnels")]
mod run;
#[cfg(feature = "tunnels")]
mod shared;
#[cfg(feature = "tunnels")]
mod tcp;
#[cfg(feature = "tunnels")]
mod udp;

#[cfg(feature = "tunnels")]
mod registry;
#[cfg(not(feature = "tunnels"))]
#[path = "absent.rs"]
mod registry;

pub use registry::Tunnels;

/// What every tunnel of a node shares.
#[derive(Clone)]
pub struct TunnelContext {
    pub events: Events,
    /// `storage.data_dir`: the direct-mode server keeps its certificate there.
    pub data_dir: PathBuf,
    /// The edge's name on the relay (`identify`): the manager's node id, else the host name;
    /// at most 64 characters.
    pub edge_id: String,
}

/// The 16 raw bytes of a UUID written 8-4-4-4-12 in hex (either case): the prefix of every
/// tunnel datagram. `None` for anything else.
pub fn uuid_bytes(text: &str) -> Option<[u8; 16]> {
    let b = text.as_bytes();
    if b.len() != 36 || [8, 13, 18, 23].iter().any(|&i| b[i] != b'-') {
        return None;
    }
    let mut out = [0u8; 16];
    let mut digits = b.iter().filter(|&&c| c != b'-');
    for byte in &mut out {
        let hi = (*digits.next()? as char).to_digit(16)?;
        let lo = (*digits.next()? as char).to_digit(16)?;
        *byte = (hi << 4 | lo) as u8;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_text_to_bytes() {
        let id = "0192f3a4-5b6c-7d8e-9fa0-b1c2d3e4f5A6";
        let b = uuid_bytes(id).unwrap();
        assert_eq!(b[0], 0x01);
        assert_eq!(b[15], 0xa6);
        for bad in [
            "",
            "0192f3a45b6c7d8e9fa0b1c2d3e4f5a6",
            "0192f3a4-5b6c-7d8e-9fa0-b1c2d3e4f5a",
            "0192f3a4-5b6c-7d8e-9fa0-b1c2d3e4f5ag",
            "0192f3a4+5b6c-7d8e-9fa0-b1c2d3e4f5a6",
            "0192f3a4-5b6c-7d8e-9fa0-b1c2d3e4-5a6",
        ] {
            assert_eq!(uuid_bytes(bad), None, "{bad}");
        }
    }
}
