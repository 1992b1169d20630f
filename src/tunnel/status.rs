//! What a tunnel reports: its state and counters, in the shape the manager reads
//! (`tunnels[].state`, `"ready"` counting as active, and `tunnels[].stats.bitrate_in_bps` /
//! `bitrate_out_bps`), also served by `/healthz`, `/api/v1/stats` and `quoll ctl tunnels`.
//!
//! One thread, so plain `Cell`s: the data plane bumps them without atomics.

use std::cell::Cell;
use std::time::Instant;

use serde::Serialize;

use crate::config::{TunnelConfig, TunnelDirection, TunnelMode, TunnelProtocol};
use crate::stats::RateMeter;

/// Where a tunnel is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TunnelState {
    /// Not running: disabled, or this build has no tunnel engine.
    Stopped,
    /// Dialling the relay or the peer (or waiting for the peer to dial, direct ingress).
    Connecting,
    /// Bound on the relay, the peer has not bound yet.
    Waiting,
    /// Both ends are up: traffic flows.
    Ready,
    /// Between attempts, after a failure or after the peer went away.
    Backoff,
    /// The relay refused the bind token: retried only after a long back-off.
    Rejected,
}

/// Counters of one tunnel, bumped by its data plane. "in" is what came out of the tunnel
/// (from the peer), "out" what went into it.
#[derive(Debug, Default)]
pub struct TunnelCounters {
    pub packets_in: Cell<u64>,
    pub bytes_in: Cell<u64>,
    pub packets_out: Cell<u64>,
    pub bytes_out: Cell<u64>,
    pub rate_in: RateMeter,
    pub rate_out: RateMeter,
    /// Datagrams dropped because their counter was already seen or too old.
    pub replays_dropped: Cell<u64>,
    /// Datagrams or stream chunks whose tag did not verify (forged, or the wrong key).
    pub auth_failures: Cell<u64>,
    /// Datagrams that could not be sent (QUIC not ready, too large for the path).
    pub send_dropped: Cell<u64>,
    /// TCP connections carried, in total and now.
    pub tcp_connections: Cell<u64>,
    pub tcp_open: Cell<u64>,
    /// Connections made to the relay or the peer after the first.
    pub reconnects: Cell<u64>,
}

impl TunnelCounters {
    pub fn add_in(&self, now: Instant, bytes: usize) {
        bump(&self.packets_in, 1);
        bump(&self.bytes_in, bytes as u64);
        self.rate_in.add(now, bytes);
    }

    pub fn add_out(&self, now: Instant, bytes: usize) {
        bump(&self.packets_out, 1);
        bump(&self.bytes_out, bytes as u64);
        self.rate_out.add(now, bytes);
    }

    pub fn snapshot(&self, now: Instant) -> TunnelStats {
        TunnelStats {
            packets_in: self.packets_in.get(),
            bytes_in: self.bytes_in.get(),
            bitrate_in_bps: self.rate_in.bps(now),
            packets_out: self.packets_out.get(),
            bytes_out: self.bytes_out.get(),
            bitrate_out_bps: self.rate_out.bps(now),
            replays_dropped: self.replays_dropped.get(),
            auth_failures: self.auth_failures.get(),
            send_dropped: self.send_dropped.get(),
            tcp_connections: self.tcp_connections.get(),
            tcp_open: self.tcp_open.get(),
            reconnects: self.reconnects.get(),
        }
    }
}

pub fn bump(c: &Cell<u64>, n: u64) {
    c.set(c.get().wrapping_add(n));
}

/// The counters as reported.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TunnelStats {
    pub packets_in: u64,
    pub bytes_in: u64,
    pub bitrate_in_bps: u64,
    pub packets_out: u64,
    pub bytes_out: u64,
    pub bitrate_out_bps: u64,
    pub replays_dropped: u64,
    pub auth_failures: u64,
    pub send_dropped: u64,
    pub tcp_connections: u64,
    pub tcp_open: u64,
    pub reconnects: u64,
}

/// One tunnel as reported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TunnelStatus {
    pub id: String,
    pub name: String,
    pub state: TunnelState,
    pub enabled: bool,
    pub protocol: TunnelProtocol,
    pub mode: TunnelMode,
    pub direction: TunnelDirection,
    pub local_addr: String,
    /// The relay (relay mode) or peer address (direct mode) in use, when connected.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote: Option<String>,
    /// Why the last attempt failed or the last connection ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    pub stats: TunnelStats,
}

impl TunnelStatus {
    /// A tunnel that is not running.
    pub fn stopped(t: &TunnelConfig) -> TunnelStatus {
        TunnelStatus {
            id: t.id.clone(),
            name: t.name.clone(),
            state: TunnelState::Stopped,
            enabled: t.enabled,
            protocol: t.protocol,
            mode: t.mode,
            direction: t.direction,
            local_addr: t.local_addr.to_string(),
            remote: None,
            last_error: None,
            stats: TunnelStats::default(),
        }
    }
}
