//! A build without the `tunnels` feature: tunnels are kept in the config and reported
//! `"stopped"`, in the same shapes as the engine's, and never run.

use std::cell::RefCell;
use std::time::Instant;

use super::TunnelContext;
use super::status::TunnelStatus;
use crate::config::{TunnelConfig, TunnelTlsConfig};

pub struct Tunnels {
    configs: RefCell<Vec<TunnelConfig>>,
}

impl Tunnels {
    pub fn new(_ctx: TunnelContext) -> Tunnels {
        Tunnels {
            configs: RefCell::new(Vec::new()),
        }
    }

    pub fn apply(&self, tunnels: &[TunnelConfig], _tls: &TunnelTlsConfig) {
        *self.configs.borrow_mut() = tunnels.to_vec();
    }

    pub fn status(&self, _now: Instant) -> Vec<TunnelStatus> {
        self.configs
            .borrow()
            .iter()
            .map(TunnelStatus::stopped)
            .collect()
    }

    pub async fn stop_all(&self) {}
}
