//! The running node: config, events, flows and the local API on one thread.
//!
//! Every change to flows (from the local API today, from the manager link tomorrow) goes
//! through `Node`: the candidate config is validated as a whole first (nothing changes on a
//! validation error), then applied, then persisted atomically when the node runs from a
//! config file.

use std::cell::RefCell;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Instant;

use serde::Serialize;

use crate::bridge::{Bridge, BridgeHealth, SessionSnapshot};
use crate::config::{self, Config, FlowConfig, OutputConfig};
use crate::events::Events;
use crate::flow::{FlowError, FlowManager, FlowView};

pub struct Node {
    /// The config minus its flows, whose truth is the flow manager.
    base: RefCell<Config>,
    flows: tokio::sync::Mutex<FlowManager>,
    pub events: Events,
    /// The RTSP->WebSocket bridge (no streams when the config has no `bridge`).
    pub bridge: Rc<Bridge>,
    bridge_task: RefCell<Option<tokio::task::JoinHandle<()>>>,
    config_path: Option<PathBuf>,
    started: Instant,
    board: Option<String>,
    boot_slot: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowAction {
    Start,
    Stop,
    Restart,
}

#[derive(Debug, Serialize)]
pub struct Health {
    pub status: &'static str,
    pub version: &'static str,
    /// The commit the binary was built from.
    pub git_rev: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub board: Option<String>,
    /// The A/B slot RAUC booted (`rauc.slot=` on the kernel command line).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub boot_slot: Option<String>,
    pub uptime_secs: u64,
    pub active_flows: usize,
    pub total_flows: usize,
    /// The bridge's runtime stats.
    pub bridge: BridgeHealth,
    /// Every bridge session's snapshot.
    pub sessions: Vec<SessionSnapshot>,
}

#[derive(Debug, Serialize)]
pub struct Stats {
    pub flows: Vec<FlowView>,
    pub tunnels: Vec<serde_json::Value>,
    pub uptime_secs: u64,
    pub active_flows: usize,
    pub total_flows: usize,
}

impl Node {
    /// Build the node and start its enabled flows. A flow that fails to start stays in
    /// state `error` (and its event is raised); the node runs on.
    pub async fn start(
        config: Config,
        config_path: Option<PathBuf>,
        events: Events,
        board: Option<String>,
    ) -> Rc<Node> {
        Self::start_with_launcher(config, config_path, events, board, None).await
    }

    /// `start` with the bridge's workers replaced (tests run fake workers).
    pub async fn start_with_launcher(
        mut config: Config,
        config_path: Option<PathBuf>,
        events: Events,
        board: Option<String>,
        launcher: Option<crate::bridge::Launcher>,
    ) -> Rc<Node> {
        let flows = std::mem::take(&mut config.flows);
        let taps = crate::flow::manager::FlowTaps::default();
        let mut manager = FlowManager::with_taps(events.clone(), taps.clone());
        for flow in flows {
            let id = flow.id.clone();
            if let Err(e) = manager.create(flow).await {
                tracing::error!(flow_id = %id, "flow failed to start: {e}");
            }
        }
        let bridge = match launcher {
            None => Bridge::new(config.bridge.as_ref(), taps),
            Some(l) => {
                Bridge::with_launcher(config.bridge.as_ref(), taps, |k| std::env::var(k).ok(), l)
            }
        };
        let bridge_task = tokio::task::spawn_local(bridge.clone().run());
        Rc::new(Node {
            base: RefCell::new(config),
            flows: tokio::sync::Mutex::new(manager),
            events,
            bridge,
            bridge_task: RefCell::new(Some(bridge_task)),
            config_path,
            started: Instant::now(),
            board,
            boot_slot: std::fs::read_to_string("/proc/cmdline")
                .ok()
                .and_then(|c| rauc_slot(&c)),
        })
    }

    pub fn uptime_secs(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    /// The running config, flows included.
    pub async fn config(&self) -> Config {
        let flows = self.flows.lock().await.configs();
        let mut cfg = self.base.borrow().clone();
        cfg.flows = flows;
        cfg
    }

    pub fn server_config(&self) -> config::ServerConfig {
        self.base.borrow().server.clone()
    }

    pub async fn flows(&self) -> Vec<FlowView> {
        self.flows.lock().await.views()
    }

    pub async fn flow(&self, id: &str) -> Result<FlowView, FlowError> {
        self.flows
            .lock()
            .await
            .view(id)
            .ok_or_else(|| FlowError::NotFound(id.to_owned()))
    }

    pub async fn health(&self) -> Health {
        let (active_flows, total_flows) = self.flows.lock().await.counts();
        Health {
            status: "ok",
            version: env!("CARGO_PKG_VERSION"),
            git_rev: env!("QUOLL_GIT_REV"),
            board: self.board.clone(),
            boot_slot: self.boot_slot.clone(),
            uptime_secs: self.uptime_secs(),
            active_flows,
            total_flows,
            bridge: self.bridge.health(),
            sessions: self.bridge.snapshots(),
        }
    }

    pub async fn stats(&self) -> Stats {
        let flows = self.flows.lock().await;
        let (active_flows, total_flows) = flows.counts();
        Stats {
            flows: flows.views(),
            tunnels: Vec::new(),
            uptime_secs: self.uptime_secs(),
            active_flows,
            total_flows,
        }
    }

    /// Validate the config that `change` would produce from the current flows.
    fn check(
        &self,
        flows: &FlowManager,
        change: impl FnOnce(&mut Vec<FlowConfig>),
    ) -> Result<(), FlowError> {
        let mut candidate = self.base.borrow().clone();
        candidate.flows = flows.configs();
        change(&mut candidate.flows);
        let errors = config::validate(&candidate);
        if errors.is_empty() {
            Ok(())
        } else {
            Err(FlowError::Invalid(errors))
        }
    }

    pub async fn create_flow(&self, flow: FlowConfig) -> Result<FlowView, FlowError> {
        let mut flows = self.flows.lock().await;
        self.check(&flows, |f| f.push(flow.clone()))?;
        let id = flow.id.clone();
        let started = flows.create(flow).await;
        self.persist(&flows);
        started?;
        Ok(flows.view(&id).expect("flow just created"))
    }

    pub async fn delete_flow(&self, id: &str) -> Result<(), FlowError> {
        let mut flows = self.flows.lock().await;
        flows.delete(id).await?;
        self.persist(&flows);
        Ok(())
    }

    pub async fn flow_action(&self, id: &str, action: FlowAction) -> Result<FlowView, FlowError> {
        let mut flows = self.flows.lock().await;
        match action {
            FlowAction::Start => flows.start(id).await?,
            FlowAction::Stop => flows.stop(id).await?,
            FlowAction::Restart => flows.restart(id).await?,
        }
        flows
            .view(id)
            .ok_or_else(|| FlowError::NotFound(id.to_owned()))
    }

    pub async fn add_output(
        &self,
        flow_id: &str,
        output: OutputConfig,
    ) -> Result<FlowView, FlowError> {
        let mut flows = self.flows.lock().await;
        if !flows.contains(flow_id) {
            return Err(FlowError::NotFound(flow_id.to_owned()));
        }
        self.check(&flows, |fs| {
            if let Some(f) = fs.iter_mut().find(|f| f.id == flow_id) {
                f.outputs.push(output.clone());
            }
        })?;
        flows.add_output(flow_id, output).await?;
        self.persist(&flows);
        flows
            .view(flow_id)
            .ok_or_else(|| FlowError::NotFound(flow_id.to_owned()))
    }

    pub async fn remove_output(
        &self,
        flow_id: &str,
        output_id: &str,
    ) -> Result<FlowView, FlowError> {
        let mut flows = self.flows.lock().await;
        flows.remove_output(flow_id, output_id).await?;
        self.persist(&flows);
        flows
            .view(flow_id)
            .ok_or_else(|| FlowError::NotFound(flow_id.to_owned()))
    }

    /// Stop every flow (the shutdown path).
    pub async fn shutdown(&self) {
        if let Some(t) = self.bridge_task.borrow_mut().take() {
            t.abort();
        }
        self.bridge.shutdown().await;
        self.flows.lock().await.stop_all().await;
    }

    /// Write the config back when the node runs from a file. A failure is logged and the
    /// running state kept: the change is live, only its persistence failed.
    fn persist(&self, flows: &FlowManager) {
        let Some(path) = &self.config_path else {
            return;
        };
        let mut cfg = self.base.borrow().clone();
        cfg.flows = flows.configs();
        let result = serde_json::to_vec_pretty(&cfg)
            .map_err(std::io::Error::other)
            .and_then(|bytes| config::store::write_atomic(path, &bytes, 0o600));
        if let Err(e) = result {
            tracing::warn!(path = %path.display(), "failed to persist configuration: {e}");
        }
    }
}

/// The slot RAUC booted, from the kernel command line its bootloader integration extends
/// (`rauc.slot=A`).
fn rauc_slot(cmdline: &str) -> Option<String> {
    cmdline
        .split_whitespace()
        .find_map(|w| w.strip_prefix("rauc.slot="))
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

#[cfg(test)]
mod slot_tests {
    #[test]
    fn rauc_slot_comes_from_the_kernel_command_line() {
        let c = "console=ttyS0,115200 root=/dev/mmcblk0p3 rauc.slot=B rootwait";
        assert_eq!(super::rauc_slot(c).as_deref(), Some("B"));
        assert_eq!(super::rauc_slot("console=ttyS0 rootwait"), None);
        assert_eq!(super::rauc_slot("rauc.slot= quiet"), None);
    }
}
