//! What a tunnel's task shares with the registry: its state, the relay or peer in use, the
//! last error, and the counters its data plane bumps. One thread, so `Cell`s.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::time::Instant;

use super::status::{TunnelCounters, TunnelState, TunnelStatus};
use crate::config::TunnelConfig;

/// What a tunnel's task shares with the registry.
#[derive(Debug, Default)]
pub struct Shared {
    pub counters: TunnelCounters,
    state: Cell<Option<TunnelState>>,
    remote: RefCell<Option<String>>,
    last_error: RefCell<Option<String>>,
}

impl Shared {
    pub fn new() -> Shared {
        Shared::default()
    }

    pub fn state(&self) -> TunnelState {
        self.state.get().unwrap_or(TunnelState::Connecting)
    }

    pub fn set_state(&self, state: TunnelState) {
        self.state.set(Some(state));
    }

    pub fn set_remote(&self, remote: Option<String>) {
        *self.remote.borrow_mut() = remote;
    }

    pub fn set_error(&self, error: impl fmt::Display) {
        *self.last_error.borrow_mut() = Some(error.to_string());
    }

    pub fn status(&self, config: &TunnelConfig, now: Instant) -> TunnelStatus {
        TunnelStatus {
            state: self.state(),
            remote: self.remote.borrow().clone(),
            last_error: self.last_error.borrow().clone(),
            stats: self.counters.snapshot(now),
            ..TunnelStatus::stopped(config)
        }
    }
}
