//! The bridge in a build without the `rtsp` feature: nothing runs, validation refuses a
//! `bridge` block with streams, and what the manager and `quoll ctl` read keeps its shape.
//! `/healthz` still has its `bridge` block (no streams, sessions or clients; the block's
//! timing) and its `sessions` list, always empty. The default build compiles this file in
//! its tests too, to hold the two `bridge` blocks to the same fields.

use serde::Serialize;

use crate::config::BridgeConfig;

/// The `bridge` block of `/healthz`: the fields of the real one (`bridge::BridgeHealth`).
#[derive(Debug, Clone, Serialize)]
pub struct BridgeHealth {
    pub streams: usize,
    pub sessions: usize,
    pub clients: usize,
    pub restarts: u64,
    pub bytes: u64,
    pub bytes_sent: u64,
    pub frames_sent: u64,
    pub sessions_created: u64,
    pub sessions_destroyed: u64,
    pub unexpected_exits: u64,
    pub idle_recoveries: u64,
    pub errored: u64,
    pub lagged_chunks: u64,
    pub slow_disconnects: u64,
    pub refused_clients: u64,
    pub idle_timeout_ms: u64,
    pub sweep_interval_ms: u64,
    pub restart_delay_ms: u64,
    pub max_restarts: u32,
}

impl BridgeHealth {
    /// No bridge ran: every count zero, the timing the block holds (or its defaults).
    pub fn absent(cfg: Option<&BridgeConfig>) -> BridgeHealth {
        let d = BridgeConfig::default();
        let b = cfg.unwrap_or(&d);
        BridgeHealth {
            streams: 0,
            sessions: 0,
            clients: 0,
            restarts: 0,
            bytes: 0,
            bytes_sent: 0,
            frames_sent: 0,
            sessions_created: 0,
            sessions_destroyed: 0,
            unexpected_exits: 0,
            idle_recoveries: 0,
            errored: 0,
            lagged_chunks: 0,
            slow_disconnects: 0,
            refused_clients: 0,
            idle_timeout_ms: b.idle_timeout_ms,
            sweep_interval_ms: b.sweep_interval_ms.max(1),
            restart_delay_ms: b.restart_delay_ms,
            max_restarts: b.max_restarts,
        }
    }
}

/// A bridge session: none exists in this build, so a list of them is always `[]`.
#[derive(Debug, Clone, Serialize)]
pub enum SessionSnapshot {}

/// The bridge's workers: none to replace in this build (`Node::start_with_launcher` takes
/// `None`).
pub enum Launcher {}
