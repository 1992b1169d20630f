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

/// Below both `config` (which checks a tunnel's `id`) and the engine (which prefixes every
/// datagram with it).
pub use crate::config::uuid_bytes;

/// What every tunnel of a node shares.
#[derive(Clone)]
pub struct TunnelContext {
    pub events: Events,
    /// `storage.data_dir`: the direct-mode server keeps its certificate there.
    pub data_dir: PathBuf,
    /// The edge's name on the relay (`identify`): the manager's node id, else the host name;
    /// at most 64 characters.
    pub edge_id: String,
    /// `security.outbound_allow`: the relays and direct peers a tunnel may dial.
    pub outbound: crate::net::outbound::Policy,
}
