//! The `bridge` block of `/healthz`, one struct for the build with the bridge and the one
//! without (`absent.rs`), so the two cannot drift apart.

use serde::Serialize;

use crate::config::BridgeConfig;

/// The `bridge` block of `/healthz`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct BridgeHealth {
    pub streams: usize,
    pub sessions: usize,
    pub clients: usize,
    pub restarts: u64,
    /// Bytes the workers produced.
    pub bytes: u64,
    pub bytes_sent: u64,
    pub frames_sent: u64,
    pub sessions_created: u64,
    pub sessions_destroyed: u64,
    pub unexpected_exits: u64,
    pub idle_recoveries: u64,
    pub errored: u64,
    /// TS chunks slow clients had to skip.
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
            idle_timeout_ms: b.idle_timeout_ms,
            sweep_interval_ms: b.sweep_interval_ms.max(1),
            restart_delay_ms: b.restart_delay_ms,
            max_restarts: b.max_restarts,
            ..BridgeHealth::default()
        }
    }
}
