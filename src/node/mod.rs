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

use serde_json::Value;

#[cfg(feature = "rtsp")]
use crate::bridge::Bridge;
use crate::bridge::{BridgeHealth, SessionSnapshot};
use crate::config::{
    self, Budget, Config, ConfigError, FlowConfig, ManagerConfig, OutputConfig, TunnelConfig,
};
use crate::events::{Event, Events, LogStatus};
/// The node's errors: every Node call answers with a [`FlowError`], whose [`ErrorCode`] is
/// the `error_code` of the API and of the manager's `command_ack`.
pub use crate::flow::{ErrorCode, FlowError};
use crate::flow::{FlowManager, FlowView};
use crate::tunnel::status::TunnelStatus;

/// The top-level config keys the manager reads and pushes (`shared/spec/manager-protocol.md`,
/// "Config shape"); every other top-level block is the edge's own.
pub const MANAGER_OWNED_KEYS: [&str; 4] = ["version", "server", "flows", "tunnels"];
/// Edge blocks an `update_config` can never change, pushed or not.
/// `manager` and `storage`: a push must not be able to cut the node off its manager or move
/// its data; `limits` and `security`: nor lift the guards the node's owner set (a
/// compromised manager could otherwise raise the budgets or open the outbound allow list).
pub const ALWAYS_LOCAL_KEYS: [&str; 4] = ["manager", "storage", "limits", "security"];

/// Whether `candidate` may become the running config: valid, and within the budget of the
/// board (`budget`) with the candidate's `limits` applied. The one door of every change to
/// flows, and of the config at start (`daemon`): nothing is applied, started or saved
/// before it said yes.
pub fn admit(candidate: &Config, budget: Budget) -> Result<(), FlowError> {
    let errors = config::validate(candidate);
    if !errors.is_empty() {
        return Err(FlowError::Invalid(errors));
    }
    config::budget::check(candidate, budget)
        .map(|_| ())
        .map_err(FlowError::LimitExceeded)
}

/// Where the flow or output of a request body goes in the candidate config (see
/// [`Node::unparsed_body`]).
#[derive(Debug, Clone, Copy)]
pub enum BodySlot<'a> {
    /// A flow appended to the flows.
    NewFlow,
    /// The flow with this id, replaced.
    Flow(&'a str),
    /// An output appended to the outputs of the flow with this id.
    NewOutput(&'a str),
}

pub struct Node {
    /// The config minus its flows, whose truth is the flow manager.
    base: RefCell<Config>,
    flows: tokio::sync::Mutex<FlowManager>,
    pub events: Events,
    /// The RTSP->WebSocket bridge (no streams when the config has no `bridge`).
    #[cfg(feature = "rtsp")]
    pub bridge: Rc<Bridge>,
    /// The HLS outputs' live playlists and segments, served under `/hls/` by the API.
    pub hls: crate::hls::Published,
    #[cfg(feature = "rtsp")]
    bridge_task: RefCell<Option<tokio::task::JoinHandle<()>>>,
    config_path: Option<PathBuf>,
    started: Instant,
    board: Option<String>,
    /// The board's resource budget; the config's `limits` apply on top (`admit`).
    budget: Budget,
    /// The A/B slot RAUC booted: from the kernel command line at start, else filled in by a
    /// one-off `rauc status` task (see `crate::rauc`).
    boot_slot: Rc<RefCell<Option<String>>>,
    /// The manager link's state and counters, as its task last published them.
    manager_status: RefCell<Option<Value>>,
    /// The API listener's connection counters (`net::listener`), once it runs.
    listener: RefCell<Option<crate::net::listener::SharedAdmission>>,
    /// The tunnels the config names, running (with the `tunnels` feature) or reported
    /// `"stopped"`.
    tunnels: crate::tunnel::Tunnels,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowAction {
    Start,
    Stop,
    Restart,
}

/// What `create_flow_with` / `update_flow_with` leave behind when the flow validated but
/// failed to start (a port taken by another process, an address not on this host).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartFailure {
    /// Keep the change (saved); the flow stays in state `error`. The local API's contract.
    Keep,
    /// Undo the change, nothing saved: the error reply is the whole truth, and a retry
    /// after fixing the cause is a fresh create. The manager's commands.
    RollBack,
}

/// What `update_config` did, flow by flow.
#[derive(Debug, Default)]
pub struct ConfigDiff {
    pub created: Vec<String>,
    pub updated: Vec<String>,
    pub deleted: Vec<String>,
    pub unchanged: Vec<String>,
    /// Flows in the new config that failed to start (they stay, in state `error`).
    pub failed: Vec<(String, FlowError)>,
    /// `server` changed: the local API moves at the next start.
    pub restart_required: bool,
    /// Whether anything at all changed (and was persisted).
    pub changed: bool,
}

#[derive(Debug, Serialize)]
pub struct Health {
    pub status: &'static str,
    pub version: &'static str,
    /// The commit the binary was built from.
    pub git_rev: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub board: Option<String>,
    /// The A/B slot RAUC booted (`rauc.slot=` on the kernel command line, else the `booted`
    /// slot of `rauc status`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub boot_slot: Option<String>,
    pub uptime_secs: u64,
    pub active_flows: usize,
    pub total_flows: usize,
    /// The event queue (durable or degraded, depth, cursor).
    pub event_log: LogStatus,
    /// The bridge's runtime stats.
    pub bridge: BridgeHealth,
    /// Every bridge session's snapshot.
    pub sessions: Vec<SessionSnapshot>,
    /// The manager link, when one is configured: its state, whether it was ever
    /// established, and why the last attempt or session ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub manager: Option<serde_json::Value>,
    /// The API listener's connections: open, caps, admitted, refused, accept errors.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_connections: Option<crate::net::listener::AdmissionStats>,
    /// Every tunnel's state and counters.
    pub tunnels: Vec<TunnelStatus>,
}

#[derive(Debug, Serialize)]
pub struct Stats {
    pub flows: Vec<FlowView>,
    pub tunnels: Vec<TunnelStatus>,
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
        // `security` is the node's own (never pushed): fixed for the life of the process.
        let allow = config
            .security
            .as_ref()
            .and_then(|s| s.outbound_allow.as_deref());
        let outbound = crate::net::outbound::AllowList::from_entries(allow);
        manager.set_outbound(outbound.clone());
        // Listeners flows open (RTMP) take the API listener's caps, the same way
        // (daemon.rs): the `server` block, within the descriptors the budget leaves.
        let budget = crate::board::budget(board.as_deref()).with_overrides(&config.limits);
        let reserve = crate::net::fdlimit::reserve(budget.max_flows, budget.max_outputs_per_flow);
        let (limits, _) = crate::net::listener::Limits::from_server(
            &config.server,
            crate::net::fdlimit::soft_nofile(),
            reserve,
        );
        manager.set_listener_limits(limits);
        let hls = manager.hls_published();
        for flow in flows {
            let id = flow.id.clone();
            if let Err(e) = manager.create(flow).await {
                tracing::error!(flow_id = %id, "flow failed to start: {e}");
            }
        }
        #[cfg(feature = "rtsp")]
        let bridge = match launcher {
            None => Bridge::new(
                config.bridge.as_ref(),
                taps,
                events.clone(),
                outbound.clone(),
            ),
            Some(l) => Bridge::with_launcher(
                config.bridge.as_ref(),
                taps,
                events.clone(),
                outbound.clone(),
                |k| std::env::var(k).ok(),
                l,
            ),
        };
        #[cfg(feature = "rtsp")]
        let bridge_task = tokio::task::spawn_local(bridge.clone().run());
        #[cfg(not(feature = "rtsp"))]
        let _ = launcher;
        let boot_slot = Rc::new(RefCell::new(crate::rauc::slot_from_proc_cmdline()));
        if boot_slot.borrow().is_none() {
            // No `rauc.slot=` (EFI boots): ask `rauc status` once, in the background, so a
            // slow or hung RAUC service delays nothing. `health` omits the slot until then.
            let cell = boot_slot.clone();
            tokio::task::spawn_local(async move {
                if let Some(slot) = crate::rauc::slot_from_rauc_status().await {
                    tracing::info!(slot = %slot, "RAUC booted slot");
                    *cell.borrow_mut() = Some(slot);
                }
            });
        }
        let tunnels = crate::tunnel::Tunnels::new(crate::tunnel::TunnelContext {
            events: events.clone(),
            data_dir: PathBuf::from(&config.storage.data_dir),
            edge_id: edge_id(&config),
            outbound,
        });
        tunnels.apply(&config.tunnels, &config.tunnel_tls);
        Rc::new(Node {
            tunnels,
            base: RefCell::new(config),
            flows: tokio::sync::Mutex::new(manager),
            events,
            #[cfg(feature = "rtsp")]
            bridge,
            hls,
            #[cfg(feature = "rtsp")]
            bridge_task: RefCell::new(Some(bridge_task)),
            config_path,
            started: Instant::now(),
            budget: crate::board::budget(board.as_deref()),
            board,
            manager_status: RefCell::new(None),
            listener: RefCell::new(None),
            boot_slot,
        })
    }

    pub fn set_listener_stats(&self, admission: crate::net::listener::SharedAdmission) {
        *self.listener.borrow_mut() = Some(admission);
    }

    pub fn set_manager_status(&self, status: Value) {
        *self.manager_status.borrow_mut() = Some(status);
    }

    /// `None` when no manager link runs.
    pub fn manager_status(&self) -> Option<Value> {
        self.manager_status.borrow().clone()
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

    /// `ok`, or `degraded` while the event log is memory-only (alarms raised now do not
    /// survive a power cut), or while events were lost to damage on disk and the loss report
    /// is not acknowledged (by the manager, or `quoll ctl ack-loss`): both are degradations
    /// the operator must see.
    pub fn status(&self) -> &'static str {
        if self.events.is_degraded() || self.events.unacked_loss().is_some() {
            "degraded"
        } else {
            "ok"
        }
    }

    /// The bridge's `/healthz` block; without the `rtsp` feature, the empty one.
    fn bridge_health(&self) -> BridgeHealth {
        #[cfg(feature = "rtsp")]
        return self.bridge.health();
        #[cfg(not(feature = "rtsp"))]
        BridgeHealth::absent(self.base.borrow().bridge.as_ref())
    }

    /// Every bridge session's snapshot (`/healthz`, `quoll ctl sessions`); none without the
    /// `rtsp` feature.
    pub fn bridge_sessions(&self) -> Vec<SessionSnapshot> {
        #[cfg(feature = "rtsp")]
        return self.bridge.snapshots();
        #[cfg(not(feature = "rtsp"))]
        Vec::new()
    }

    pub async fn health(&self) -> Health {
        let (active_flows, total_flows) = self.flows.lock().await.counts();
        let event_log = self.events.status();
        Health {
            status: self.status(),
            event_log,
            version: env!("CARGO_PKG_VERSION"),
            git_rev: env!("QUOLL_GIT_REV"),
            board: self.board.clone(),
            boot_slot: self.boot_slot.borrow().clone(),
            uptime_secs: self.uptime_secs(),
            active_flows,
            total_flows,
            bridge: self.bridge_health(),
            sessions: self.bridge_sessions(),
            manager: self.manager_status().map(|m| {
                serde_json::json!({
                    "state": m["state"],
                    "ever_connected": m["ever_connected"],
                    "last_error": m["last_error"],
                })
            }),
            api_connections: self
                .listener
                .borrow()
                .as_ref()
                .map(|a| crate::net::listener::lock(a).stats()),
            tunnels: self.tunnel_status(),
        }
    }

    /// Every tunnel's state and counters.
    pub fn tunnel_status(&self) -> Vec<TunnelStatus> {
        self.tunnels.status(Instant::now())
    }

    /// Runs the config's tunnels as they now are: new ones start, changed ones restart,
    /// removed or disabled ones stop, the others are not touched.
    fn apply_tunnels(&self) {
        let base = self.base.borrow();
        self.tunnels.apply(&base.tunnels, &base.tunnel_tls);
    }

    pub async fn stats(&self) -> Stats {
        let flows = self.flows.lock().await;
        let (active_flows, total_flows) = flows.counts();
        Stats {
            flows: flows.views(),
            tunnels: self.tunnel_status(),
            uptime_secs: self.uptime_secs(),
            active_flows,
            total_flows,
        }
    }

    /// The answer to a flow or output body (API, manager command) whose only problems are
    /// values that did not parse ([`ConfigError::is_unparsed`]): a well-formed body, so the
    /// answer is validation's, each problem at the path validation names it by in the
    /// candidate config (`flows[2].input.bind_addr`), its body path under `root` (`""`,
    /// `"flow"`, `"output"`) moved there. `None` when any problem is about the body's shape:
    /// the caller answers that as before. Unknown flows are `NotFound`, as the change itself
    /// would be.
    pub async fn unparsed_body(
        &self,
        errors: &[ConfigError],
        root: &str,
        slot: BodySlot<'_>,
    ) -> Option<FlowError> {
        if errors.is_empty() || !errors.iter().all(ConfigError::is_unparsed) {
            return None;
        }
        let configs = self.flows.lock().await.configs();
        let find = |id: &str| configs.iter().position(|f| f.id == id);
        let at = match slot {
            BodySlot::NewFlow => format!("flows[{}]", configs.len()),
            BodySlot::Flow(id) => match find(id) {
                Some(i) => format!("flows[{i}]"),
                None => return Some(FlowError::NotFound(id.to_owned())),
            },
            BodySlot::NewOutput(id) => match find(id) {
                Some(i) => format!("flows[{i}].outputs[{}]", configs[i].outputs.len()),
                None => return Some(FlowError::NotFound(id.to_owned())),
            },
        };
        let moved = errors.iter().map(|e| e.clone().moved(root, &at)).collect();
        Some(FlowError::Invalid(moved))
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
        admit(&candidate, self.budget)
    }

    /// Add a flow and start it; a flow that fails to start stays, in state `error` (the
    /// local API's contract: fix the cause, then start it).
    pub async fn create_flow(&self, flow: FlowConfig) -> Result<FlowView, FlowError> {
        self.create_flow_with(flow, StartFailure::Keep).await
    }

    /// Add a flow and start it, deciding what a start failure leaves behind.
    pub async fn create_flow_with(
        &self,
        flow: FlowConfig,
        on_failure: StartFailure,
    ) -> Result<FlowView, FlowError> {
        let mut flows = self.flows.lock().await;
        self.check(&flows, |f| f.push(flow.clone()))?;
        let id = flow.id.clone();
        let started = flows.create(flow).await;
        if on_failure == StartFailure::RollBack
            && let Err(e) = started
        {
            // Nothing was written yet: removing the flow restores the config as it was.
            let _ = flows.delete(&id).await;
            return Err(e);
        }
        let persisted = self.persist(&flows);
        started?;
        persisted?;
        Ok(flows.view(&id).expect("flow just created"))
    }

    /// Replace one flow's config; that flow alone restarts (if it ran or is enabled). A
    /// flow that fails to start keeps the new config, in state `error`.
    pub async fn update_flow(
        &self,
        flow_id: &str,
        flow: FlowConfig,
    ) -> Result<FlowView, FlowError> {
        self.update_flow_with(flow_id, flow, StartFailure::Keep)
            .await
    }

    /// Replace one flow's config, deciding what a start failure leaves behind: with
    /// [`StartFailure::RollBack`] the previous config is restored (and the flow restarted
    /// on it if it was running), so the config, the file and the error reply agree.
    pub async fn update_flow_with(
        &self,
        flow_id: &str,
        flow: FlowConfig,
        on_failure: StartFailure,
    ) -> Result<FlowView, FlowError> {
        let mut flows = self.flows.lock().await;
        if !flows.contains(flow_id) {
            return Err(FlowError::NotFound(flow_id.to_owned()));
        }
        if flow.id != flow_id {
            return Err(FlowError::Invalid(vec![ConfigError::new(
                "flow.id",
                format!("{:?} differs from flow_id {flow_id:?}", flow.id),
            )]));
        }
        self.check(&flows, |fs| {
            if let Some(f) = fs.iter_mut().find(|f| f.id == flow_id) {
                *f = flow.clone();
            }
        })?;
        let previous = flows.view(flow_id).map(|v| {
            let running = v.state == crate::flow::FlowState::Running;
            (v.config, running)
        });
        let started = flows.replace(flow).await;
        if on_failure == StartFailure::RollBack
            && let Err(e) = started
        {
            if let Some((config, was_running)) = previous {
                let _ = flows.stop(flow_id).await;
                let _ = flows.set_config(config);
                if was_running && let Err(again) = flows.start(flow_id).await {
                    tracing::error!(
                        %flow_id,
                        "update rolled back, but the previous config failed to start too: {again}"
                    );
                }
            }
            return Err(e);
        }
        let persisted = self.persist(&flows);
        started?;
        persisted?;
        flows
            .view(flow_id)
            .ok_or_else(|| FlowError::NotFound(flow_id.to_owned()))
    }

    /// Apply a whole pushed config as a diff: flows whose config is unchanged are not
    /// touched (they keep forwarding), removed flows stop, changed flows restart, new flows
    /// start. Validated as a whole first: on any problem nothing changes.
    ///
    /// The node keeps what is its own. The manager owns the top-level keys it reads and
    /// pushes ([`MANAGER_OWNED_KEYS`]); every other top-level block is the edge's: a push
    /// that leaves one out keeps the local value (a v0.4.x manager pushes only its own
    /// keys), and the `manager` and `storage` blocks always stay local even when pushed (a
    /// push must not be able to cut the node off its manager or move its data). Every
    /// secret the push omits (`get_config` strips them) is kept from the running config.
    /// `server` is stored but only takes effect at the next start.
    pub async fn update_config(&self, pushed: Value) -> Result<ConfigDiff, FlowError> {
        let mut flows = self.flows.lock().await;
        let current = {
            let mut c = self.base.borrow().clone();
            c.flows = flows.configs();
            c
        };
        let Value::Object(mut merged) = pushed else {
            return Err(FlowError::Invalid(vec![ConfigError::new(
                "config",
                "expected an object",
            )]));
        };
        let local = current.to_value();
        for own in ALWAYS_LOCAL_KEYS {
            match local.get(own) {
                Some(v) => merged.insert(own.into(), v.clone()),
                None => merged.remove(own),
            };
        }
        if let Value::Object(local) = &local {
            for (key, value) in local {
                if !MANAGER_OWNED_KEYS.contains(&key.as_str()) && !merged.contains_key(key) {
                    merged.insert(key.clone(), value.clone());
                }
            }
        }
        // `server` is the manager's, but its allowed hosts and connection limits are the
        // edge's: a push that leaves them out (a v0.4.x manager knows only the address and
        // port) keeps them.
        if let (Some(Value::Object(pushed)), Some(Value::Object(own))) =
            (merged.get_mut("server"), local.get("server"))
        {
            for key in config::ServerConfig::EDGE_KEYS {
                if let (false, Some(v)) = (pushed.contains_key(key), own.get(key)) {
                    pushed.insert(key.into(), v.clone());
                }
            }
        }
        let mut merged = Value::Object(merged);
        config::restore_secrets(&mut merged, &local);
        let prefix = |errors: Vec<ConfigError>| {
            errors
                .into_iter()
                .map(|e| {
                    let path = if e.path == "$" {
                        "config".to_string()
                    } else {
                        format!("config.{}", e.path)
                    };
                    // The kind goes along: it decides the answer's error code.
                    e.at(path)
                })
                .collect::<Vec<_>>()
        };
        let mut candidate =
            config::read_value(merged).map_err(|e| FlowError::Invalid(prefix(e)))?;
        match admit(&candidate, self.budget) {
            Err(FlowError::Invalid(errors)) => return Err(FlowError::Invalid(prefix(errors))),
            Err(e) => return Err(e),
            Ok(()) => {}
        }

        let mut diff = ConfigDiff {
            // The HTTP server and the bridge are built once at start; a change to either is
            // saved now and runs from the next start, and the ack says so.
            restart_required: current.server != candidate.server
                || current.bridge != candidate.bridge,
            ..ConfigDiff::default()
        };
        let new_flows = std::mem::take(&mut candidate.flows);
        // Stop phase: removed and changed flows release their sockets first, so flows may
        // trade ports within one push.
        for old in &current.flows {
            match new_flows.iter().find(|f| f.id == old.id) {
                None => {
                    flows.delete(&old.id).await?;
                    diff.deleted.push(old.id.clone());
                }
                Some(new) if new != old => {
                    flows.stop(&old.id).await?;
                    flows.set_config(new.clone())?;
                    diff.updated.push(old.id.clone());
                }
                Some(_) => diff.unchanged.push(old.id.clone()),
            }
        }
        // Start phase.
        for new in &new_flows {
            let result = if diff.updated.contains(&new.id) {
                if new.enabled {
                    flows.start(&new.id).await
                } else {
                    Ok(())
                }
            } else if !diff.unchanged.contains(&new.id) {
                diff.created.push(new.id.clone());
                flows.create(new.clone()).await
            } else {
                Ok(())
            };
            if let Err(e) = result {
                diff.failed.push((new.id.clone(), e));
            }
        }
        let order: Vec<&str> = new_flows.iter().map(|f| f.id.as_str()).collect();
        flows.reorder(&order);
        diff.changed = diff.restart_required
            || !(diff.created.is_empty() && diff.updated.is_empty() && diff.deleted.is_empty())
            || candidate.tunnels != current.tunnels
            || candidate.extra != current.extra
            || candidate.bridge != current.bridge
            || candidate.version != current.version;
        *self.base.borrow_mut() = candidate;
        self.apply_tunnels();
        if diff.changed {
            self.persist(&flows)?;
        }
        Ok(diff)
    }

    /// The tunnels of the config, running or not.
    pub fn tunnels(&self) -> Vec<TunnelConfig> {
        self.base.borrow().tunnels.clone()
    }

    /// Store a tunnel. `Ok(false)`: an identical tunnel was already there (the manager
    /// re-pushes its tunnels on every connect), nothing changed. A tunnel with the same id
    /// but other settings is replaced. Secrets the push omits are kept.
    pub async fn create_tunnel(&self, mut tunnel: Value) -> Result<bool, FlowError> {
        let id = match tunnel.get("id") {
            Some(Value::String(id)) if !id.is_empty() => id.clone(),
            _ => {
                return Err(FlowError::Invalid(vec![ConfigError::new(
                    "tunnel.id",
                    "missing required field (a non-empty string)",
                )]));
            }
        };
        let flows = self.flows.lock().await;
        let mut candidate = self.base.borrow().clone();
        let existing = candidate.tunnels.iter().position(|t| t.id == id);
        if let Some(i) = existing {
            config::restore_secrets_in_tunnel(&mut tunnel, &candidate.tunnels[i].to_value());
        }
        let tunnel = TunnelConfig::from_value_at(tunnel, "tunnel").map_err(FlowError::Invalid)?;
        let at = match existing {
            // The tunnel holds its shared key, but this is no secret check: only the
            // authenticated manager can push a tunnel, it sent that key itself, and it may
            // replace it outright. So no constant time.
            Some(i) if candidate.tunnels[i] == tunnel => return Ok(false),
            Some(i) => {
                candidate.tunnels[i] = tunnel;
                i
            }
            None => {
                candidate.tunnels.push(tunnel);
                candidate.tunnels.len() - 1
            }
        };
        // Only this tunnel's problems, at the push's own path.
        let prefix = format!("tunnels[{at}]");
        let errors: Vec<ConfigError> = config::validate(&candidate)
            .into_iter()
            .filter_map(|mut e| {
                let rest = e.path.strip_prefix(&prefix)?;
                e.path = format!("tunnel{rest}");
                Some(e)
            })
            .collect();
        if !errors.is_empty() {
            return Err(FlowError::Invalid(errors));
        }
        *self.base.borrow_mut() = candidate;
        self.persist(&flows)?;
        self.apply_tunnels();
        Ok(true)
    }

    pub async fn delete_tunnel(&self, id: &str) -> Result<(), FlowError> {
        let flows = self.flows.lock().await;
        {
            let mut base = self.base.borrow_mut();
            let before = base.tunnels.len();
            base.tunnels.retain(|t| t.id != id);
            if base.tunnels.len() == before {
                return Err(FlowError::TunnelNotFound(id.to_owned()));
            }
        }
        self.persist(&flows)?;
        self.apply_tunnels();
        Ok(())
    }

    pub fn manager_config(&self) -> Option<ManagerConfig> {
        self.base.borrow().manager.clone()
    }

    /// `register_ack`: keep the issued credentials and forget the single-use token, in one
    /// atomic write of the config file (mode 0600).
    pub async fn set_manager_credentials(
        &self,
        node_id: &str,
        node_secret: &str,
    ) -> Result<(), FlowError> {
        let flows = self.flows.lock().await;
        {
            let mut base = self.base.borrow_mut();
            let m = base.manager.get_or_insert_with(ManagerConfig::empty);
            m.node_id = Some(node_id.to_owned());
            m.node_secret = Some(node_secret.to_owned());
            m.registration_token = None;
        }
        if self.config_path.is_none() {
            tracing::warn!("no config file: the manager credentials last until quoll stops");
        }
        self.persist(&flows)
    }

    pub async fn delete_flow(&self, id: &str) -> Result<(), FlowError> {
        let mut flows = self.flows.lock().await;
        flows.delete(id).await?;
        self.persist(&flows)
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
        self.persist(&flows)?;
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
        self.persist(&flows)?;
        flows
            .view(flow_id)
            .ok_or_else(|| FlowError::NotFound(flow_id.to_owned()))
    }

    /// Stop every flow (the shutdown path).
    pub async fn shutdown(&self) {
        #[cfg(feature = "rtsp")]
        {
            if let Some(t) = self.bridge_task.borrow_mut().take() {
                t.abort();
            }
            self.bridge.shutdown().await;
        }
        self.tunnels.stop_all().await;
        self.flows.lock().await.stop_all().await;
    }

    /// Write the config back when the node runs from a file. On a failure the running
    /// state is kept (the change is live, only its persistence failed), the `config`
    /// warning event is raised, and the error returned for the reply.
    fn persist(&self, flows: &FlowManager) -> Result<(), FlowError> {
        let Some(path) = &self.config_path else {
            return Ok(());
        };
        let mut cfg = self.base.borrow().clone();
        cfg.flows = flows.configs();
        let result = serde_json::to_vec_pretty(&cfg)
            .map_err(std::io::Error::other)
            .and_then(|bytes| config::store::write_atomic(path, &bytes, 0o600));
        result.map_err(|e| {
            let error = e.to_string();
            tracing::warn!(path = %path.display(), "failed to persist configuration: {error}");
            self.events.raise(Event::config_persist_failed(&error));
            FlowError::Persist(error)
        })
    }
}

/// The edge's name on a relay (`identify`, at most 64 characters): the manager's node id,
/// else the host name.
fn edge_id(config: &Config) -> String {
    let id = config
        .manager
        .as_ref()
        .and_then(|m| m.node_id.clone())
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "quoll".to_owned());
    id.chars().take(64).collect()
}
