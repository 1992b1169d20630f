//! The flow manager: creates, starts, stops, restarts and deletes flows, and hot-adds and
//! hot-removes outputs of a running flow without touching its other outputs.
//!
//! It trusts its callers to have validated the config (see `node`), and raises the `flow`
//! events of the catalog on every transition.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Instant;

use serde::Serialize;
use tokio::task::JoinHandle;

use super::error::FlowError;
use crate::config::{FlowConfig, InputConfig, OutputConfig, OutputKind};
use crate::events::{Event, Events};
use crate::hls::Published;
#[cfg(feature = "rtmp")]
use crate::input::rtmp::RtmpInput;
#[cfg(feature = "rtsp")]
use crate::input::rtsp::RtspInput;
use crate::input::srt::SrtInput;
use crate::input::udp::{TsPath, UdpInput};
use crate::input::{Feed, InputError};
use crate::net::outbound::Policy;
use crate::output::OutputError;
use crate::output::srt::SrtOutput;
use crate::output::udp::UdpOutput;
use crate::stats::{InputSnapshot, InputStats, OutputSnapshot, OutputStats};
use crate::ts::analyzer::TsInfo;
use crate::ts::ring::FlowRing;

/// Ring capacity when the flow config does not set `ring_chunks` (see the config's).
pub const DEFAULT_RING_CHUNKS: usize = FlowConfig::DEFAULT_RING_CHUNKS;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FlowState {
    Running,
    Stopped,
    Error,
}

impl FlowState {
    pub fn as_str(&self) -> &'static str {
        match self {
            FlowState::Running => "running",
            FlowState::Stopped => "stopped",
            FlowState::Error => "error",
        }
    }
}

/// What the API and the manager see of a flow.
#[derive(Debug, Clone, Serialize)]
pub struct FlowView {
    pub id: String,
    pub name: String,
    pub state: FlowState,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub input: InputSnapshot,
    pub outputs: Vec<OutputSnapshot>,
    pub ts: TsInfo,
    /// Serialized without its secrets (passphrases, camera passwords): a view goes to the
    /// local API, the console and the manager, none of which may read them back.
    #[serde(serialize_with = "serialize_redacted")]
    pub config: FlowConfig,
}

fn serialize_redacted<S: serde::Serializer>(c: &FlowConfig, s: S) -> Result<S::Ok, S::Error> {
    let mut v = serde_json::to_value(c).map_err(serde::ser::Error::custom)?;
    crate::config::redact_value(&mut v);
    v.serialize(s)
}

struct Flow {
    config: FlowConfig,
    /// Why the flow last failed (start failure or input lost); cleared on a good start.
    error: Rc<RefCell<Option<String>>>,
    run: Option<Running>,
    input_stats: Rc<InputStats>,
    ts: Rc<RefCell<TsPath>>,
    output_stats: Vec<(String, Rc<OutputStats>)>,
}

struct Running {
    ring: Rc<FlowRing>,
    input: JoinHandle<()>,
    outputs: Vec<(String, JoinHandle<()>)>,
}

impl Flow {
    fn new(config: FlowConfig) -> Self {
        Flow {
            config,
            error: Rc::new(RefCell::new(None)),
            run: None,
            input_stats: Rc::default(),
            ts: Rc::new(RefCell::new(TsPath::new())),
            output_stats: Vec::new(),
        }
    }

    fn state(&self) -> FlowState {
        match (&self.run, self.error.borrow().is_some()) {
            (Some(_), false) => FlowState::Running,
            (None, false) => FlowState::Stopped,
            (_, true) => FlowState::Error,
        }
    }

    fn output_stats(&mut self, id: &str) -> Rc<OutputStats> {
        match self.output_stats.iter().find(|(o, _)| o == id) {
            Some((_, s)) => s.clone(),
            None => {
                let s = Rc::new(OutputStats::default());
                self.output_stats.push((id.to_owned(), s.clone()));
                s
            }
        }
    }

    fn view(&self, now: Instant) -> FlowView {
        let s = &self.input_stats;
        let ts = self.ts.borrow();
        let input = InputSnapshot {
            kind: self.config.input.type_name(),
            bitrate_bps: s.rate.bps(now),
            datagrams: s.datagrams.get(),
            bytes: s.bytes.get(),
            packets: s.packets.get(),
            cc_errors: ts.analyzer.cc_errors(),
            resyncs: ts.chunker.resyncs(),
            discarded_bytes: ts.chunker.discarded_bytes(),
            filtered: s.filtered.get(),
            malformed: s.malformed.get(),
            rtp_lost: s.rtp_lost.get(),
            rtp_reordered: s.rtp_reordered.get(),
            recv_errors: s.recv_errors.get(),
            srt: s.srt.get(),
        };
        let running = self.run.is_some();
        let outputs = self
            .config
            .outputs
            .iter()
            .map(|o| {
                let state = if running { "running" } else { "stopped" };
                match self.output_stats.iter().find(|(id, _)| *id == o.id) {
                    Some((_, st)) => st.snapshot(&o.id, o.kind.type_name(), state),
                    None => OutputStats::default().snapshot(&o.id, o.kind.type_name(), state),
                }
            })
            .collect();
        FlowView {
            id: self.config.id.clone(),
            name: self.config.name.clone(),
            state: self.state(),
            error: self.error.borrow().clone(),
            input,
            outputs,
            ts: ts.analyzer.info(),
            config: self.config.clone(),
        }
    }
}

/// The rings of the running flows, by flow id: where the bridge's `flow_id` streams read.
pub type FlowTaps = Rc<RefCell<std::collections::BTreeMap<String, Rc<FlowRing>>>>;

pub struct FlowManager {
    flows: Vec<Flow>,
    events: Events,
    taps: FlowTaps,
    /// Origin of the flows' monotonic receive timestamps.
    epoch: Instant,
    /// `security.outbound_allow`, for inputs that resolve a name when they connect.
    outbound: Policy,
    /// The live windows of the HLS outputs, served by the API.
    hls: Published,
    /// Caps and timeouts of the TCP listeners inputs open (RTMP), from the `server` block.
    listener_limits: crate::net::listener::Limits,
}

impl FlowManager {
    pub fn new(events: Events) -> Self {
        Self::with_taps(events, FlowTaps::default())
    }

    /// A manager that publishes each running flow's ring in `taps`.
    pub fn with_taps(events: Events, taps: FlowTaps) -> Self {
        FlowManager {
            flows: Vec::new(),
            events,
            taps,
            epoch: Instant::now(),
            outbound: None,
            hls: Published::default(),
            listener_limits: crate::net::listener::Limits::default(),
        }
    }

    /// Where flows may connect (`security.outbound_allow`); flows started from now on use it.
    pub fn set_outbound(&mut self, policy: Policy) {
        self.outbound = policy;
    }

    /// The caps of the listeners inputs open (an RTMP server's port), as the API listener's:
    /// flows started from now on use them.
    pub fn set_listener_limits(&mut self, limits: crate::net::listener::Limits) {
        self.listener_limits = limits;
    }

    /// Where the HLS outputs publish their live playlists (the API's `/hls/` reads it).
    pub fn hls_published(&self) -> Published {
        self.hls.clone()
    }

    /// The flows' configs, in creation order.
    pub fn configs(&self) -> Vec<FlowConfig> {
        self.flows.iter().map(|f| f.config.clone()).collect()
    }

    pub fn contains(&self, id: &str) -> bool {
        self.flows.iter().any(|f| f.config.id == id)
    }

    pub fn views(&self) -> Vec<FlowView> {
        let now = Instant::now();
        self.flows.iter().map(|f| f.view(now)).collect()
    }

    pub fn view(&self, id: &str) -> Option<FlowView> {
        self.flows
            .iter()
            .find(|f| f.config.id == id)
            .map(|f| f.view(Instant::now()))
    }

    pub fn counts(&self) -> (usize, usize) {
        let active = self
            .flows
            .iter()
            .filter(|f| f.state() == FlowState::Running)
            .count();
        (active, self.flows.len())
    }

    fn find(&mut self, id: &str) -> Result<&mut Flow, FlowError> {
        self.flows
            .iter_mut()
            .find(|f| f.config.id == id)
            .ok_or_else(|| FlowError::NotFound(id.to_owned()))
    }

    /// Add a flow and start it if it is enabled. A start failure leaves the flow in place
    /// in state `error` (the operator can fix the cause and start it) and is returned.
    pub async fn create(&mut self, config: FlowConfig) -> Result<(), FlowError> {
        let id = config.id.clone();
        let enabled = config.enabled;
        self.flows.push(Flow::new(config));
        if enabled {
            self.start(&id).await
        } else {
            Ok(())
        }
    }

    /// Start a stopped flow; starting a running flow does nothing.
    pub async fn start(&mut self, id: &str) -> Result<(), FlowError> {
        let events = self.events.clone();
        let epoch = self.epoch;
        let outbound = self.outbound.clone();
        let hls = self.hls.clone();
        let limits = self.listener_limits;
        let flow = self.find(id)?;
        if flow.run.is_some() {
            return Ok(());
        }
        match spawn(flow, &events, epoch, outbound, &hls, limits) {
            Ok(run) => {
                self.taps
                    .borrow_mut()
                    .insert(id.to_owned(), run.ring.clone());
                let flow = self.find(id)?;
                flow.run = Some(run);
                events.raise(Event::flow_started(id));
                Ok(())
            }
            Err(e) => {
                *flow.error.borrow_mut() = Some(e.to_string());
                events.raise(Event::flow_start_failed(id, &e.to_string()));
                Err(e)
            }
        }
    }

    /// Stop a flow: its tasks are gone (and its sockets closed) when this returns.
    pub async fn stop(&mut self, id: &str) -> Result<(), FlowError> {
        let events = self.events.clone();
        self.taps.borrow_mut().remove(id);
        let flow = self.find(id)?;
        *flow.error.borrow_mut() = None;
        if let Some(run) = flow.run.take() {
            run.shutdown().await;
            events.raise(Event::flow_stopped(id));
        }
        Ok(())
    }

    pub async fn restart(&mut self, id: &str) -> Result<(), FlowError> {
        self.stop(id).await?;
        self.start(id).await
    }

    pub async fn delete(&mut self, id: &str) -> Result<(), FlowError> {
        self.stop(id).await?;
        self.flows.retain(|f| f.config.id != id);
        Ok(())
    }

    /// Replace a flow's config. If the flow runs, it is restarted on the new config.
    pub async fn replace(&mut self, config: FlowConfig) -> Result<(), FlowError> {
        let id = config.id.clone();
        let was_running = self.find(&id)?.run.is_some();
        self.stop(&id).await?;
        self.find(&id)?.config = config;
        if was_running || self.find(&id)?.config.enabled {
            self.start(&id).await
        } else {
            Ok(())
        }
    }

    /// Set the config of a stopped flow without starting it (a config diff stops every
    /// changed flow first, then starts them, so flows can trade ports).
    pub fn set_config(&mut self, config: FlowConfig) -> Result<(), FlowError> {
        let flow = self.find(&config.id)?;
        debug_assert!(flow.run.is_none(), "set_config on a running flow");
        flow.config = config;
        Ok(())
    }

    /// Put the flows in the order of `ids` (ids not listed keep their place at the end).
    pub fn reorder(&mut self, ids: &[&str]) {
        self.flows.sort_by_key(|f| {
            ids.iter()
                .position(|id| *id == f.config.id)
                .unwrap_or(usize::MAX)
        });
    }

    /// Add an output. On a running flow it starts at once, reading the live ring; the
    /// other outputs are not touched.
    pub async fn add_output(
        &mut self,
        flow_id: &str,
        output: OutputConfig,
    ) -> Result<(), FlowError> {
        let events = self.events.clone();
        let ctx = (self.outbound.clone(), self.hls.clone());
        let flow = self.find(flow_id)?;
        if let Some(run) = &flow.run {
            let ring = run.ring.clone();
            let stats = Rc::new(OutputStats::default());
            match spawn_output(&output, ring, stats.clone(), flow_id, &events, &ctx) {
                Ok(task) => {
                    flow.output_stats.retain(|(id, _)| *id != output.id);
                    flow.output_stats.push((output.id.clone(), stats));
                    if let Some(run) = &mut flow.run {
                        run.outputs.push((output.id.clone(), task));
                    }
                }
                Err(error) => {
                    events.raise(Event::output_start_failed(
                        flow_id,
                        &output.id,
                        &error.to_string(),
                    ));
                    return Err(FlowError::OutputStart {
                        output_id: output.id.clone(),
                        error,
                    });
                }
            }
        }
        events.raise(Event::output_added(flow_id, &output.id));
        flow.config.outputs.push(output);
        Ok(())
    }

    pub async fn remove_output(&mut self, flow_id: &str, output_id: &str) -> Result<(), FlowError> {
        let events = self.events.clone();
        let flow = self.find(flow_id)?;
        let Some(pos) = flow.config.outputs.iter().position(|o| o.id == output_id) else {
            return Err(FlowError::OutputNotFound {
                flow_id: flow_id.to_owned(),
                output_id: output_id.to_owned(),
            });
        };
        if let Some(run) = &mut flow.run
            && let Some(i) = run.outputs.iter().position(|(id, _)| id == output_id)
        {
            let (_, task) = run.outputs.remove(i);
            task.abort();
            let _ = task.await;
            settle().await;
        }
        flow.config.outputs.remove(pos);
        flow.output_stats.retain(|(id, _)| id != output_id);
        events.raise(Event::output_removed(flow_id, output_id));
        Ok(())
    }

    /// Stop every flow (shutdown path).
    pub async fn stop_all(&mut self) {
        let ids: Vec<String> = self.flows.iter().map(|f| f.config.id.clone()).collect();
        for id in ids {
            let _ = self.stop(&id).await;
        }
    }
}

impl Running {
    async fn shutdown(self) {
        self.input.abort();
        let _ = self.input.await;
        for (_, task) in self.outputs {
            task.abort();
            let _ = task.await;
        }
        settle().await;
    }
}

/// Lets tasks that were aborted as a consequence (srt-tokio's own connection and listener
/// tasks, whose handles our tasks dropped) run their cancellation, so their sockets are
/// closed when a stop returns and a restart can bind the same ports.
async fn settle() {
    for _ in 0..4 {
        tokio::task::yield_now().await;
    }
}

/// Bind every socket of the flow first, then spawn its tasks: a flow either starts whole or
/// not at all, and a bind failure never leaves half a flow running.
#[cfg_attr(not(feature = "rtmp"), allow(unused_variables))]
fn spawn(
    flow: &mut Flow,
    events: &Events,
    epoch: Instant,
    outbound: Policy,
    hls: &Published,
    listener_limits: crate::net::listener::Limits,
) -> Result<Running, FlowError> {
    let cfg = &flow.config;
    let input = match &cfg.input {
        InputConfig::Udp(c) => UdpInput::bind(c, false).map(BoundInput::Udp),
        InputConfig::Rtp(c) => UdpInput::bind(c, true).map(BoundInput::Udp),
        #[cfg(feature = "rtsp")]
        InputConfig::Rtsp(c) => RtspInput::new(c, outbound.clone()).map(BoundInput::Rtsp),
        InputConfig::Srt(c) => SrtInput::bind(c, &cfg.id, events).map(BoundInput::Srt),
        #[cfg(feature = "rtmp")]
        InputConfig::Rtmp(c) => RtmpInput::bind(
            c.listen_addr,
            &c.app,
            &crate::secret::Secret::new(c.stream_key.as_str()),
            &cfg.id,
            events,
            listener_limits,
        )
        .map(BoundInput::Rtmp),
        other => Err(InputError::Unsupported(other.type_name())),
    }
    .map_err(FlowError::InputStart)?;
    let mut outputs = Vec::with_capacity(cfg.outputs.len());
    for o in &cfg.outputs {
        let ctx = (outbound.clone(), hls.clone());
        let bound =
            bind_output(o, &cfg.id, events, &ctx).map_err(|error| FlowError::OutputStart {
                output_id: o.id.clone(),
                error,
            })?;
        outputs.push((o.id.clone(), bound));
    }

    // Fresh counters for a fresh run.
    flow.input_stats = Rc::default();
    flow.ts = Rc::new(RefCell::new(TsPath::new()));
    flow.output_stats.clear();
    *flow.error.borrow_mut() = None;

    let ring = Rc::new(FlowRing::new(
        flow.config.ring_chunks.unwrap_or(DEFAULT_RING_CHUNKS),
    ));
    let mut tasks = Vec::with_capacity(outputs.len());
    for (id, out) in outputs {
        let stats = flow.output_stats(&id);
        tasks.push((id, tokio::task::spawn_local(out.run(ring.clone(), stats))));
    }
    let task = {
        let feed = Feed {
            ring: ring.clone(),
            ts: flow.ts.clone(),
            stats: flow.input_stats.clone(),
            epoch,
        };
        let (error, events, id) = (flow.error.clone(), events.clone(), flow.config.id.clone());
        tokio::task::spawn_local(async move {
            let e = input.run(feed, (events.clone(), id.clone())).await;
            tracing::error!(flow_id = %id, "input lost: {e}");
            *error.borrow_mut() = Some(e.to_string());
            events.raise(Event::flow_input_lost(&id, &e.to_string()));
        })
    };
    Ok(Running {
        ring,
        input: task,
        outputs: tasks,
    })
}

enum BoundInput {
    Udp(UdpInput),
    Srt(SrtInput),
    #[cfg(feature = "rtsp")]
    Rtsp(RtspInput),
    #[cfg(feature = "rtmp")]
    Rtmp(RtmpInput),
}

impl BoundInput {
    async fn run(self, feed: Feed, (events, flow_id): (Events, String)) -> InputError {
        // Only the RTSP input raises its own events.
        #[cfg(not(feature = "rtsp"))]
        let _ = (events, flow_id);
        match self {
            BoundInput::Udp(i) => i.run(feed).await,
            BoundInput::Srt(i) => i.run(feed).await,
            #[cfg(feature = "rtsp")]
            BoundInput::Rtsp(i) => i.run(feed, events, flow_id).await,
            #[cfg(feature = "rtmp")]
            BoundInput::Rtmp(i) => i.run(feed).await,
        }
    }
}

enum BoundOutput {
    Udp(UdpOutput),
    Srt(SrtOutput),
    #[cfg(feature = "hls")]
    Hls(Box<crate::output::hls::HlsOutput>),
    #[cfg(feature = "rtmp")]
    Rtmp(Box<crate::output::rtmp::RtmpOutput>),
}

/// What outputs that connect out need from the manager: `security.outbound_allow`, and
/// where HLS outputs publish their live windows.
type OutputContext = (Policy, Published);

impl BoundOutput {
    async fn run(self, ring: Rc<FlowRing>, stats: Rc<OutputStats>) {
        match self {
            BoundOutput::Udp(o) => o.run(ring, stats).await,
            BoundOutput::Srt(o) => o.run(ring, stats).await,
            #[cfg(feature = "hls")]
            BoundOutput::Hls(o) => o.run(ring, stats).await,
            #[cfg(feature = "rtmp")]
            BoundOutput::Rtmp(o) => o.run(ring, stats).await,
        }
    }
}

fn bind_output(
    o: &OutputConfig,
    flow_id: &str,
    events: &Events,
    ctx: &OutputContext,
) -> Result<BoundOutput, OutputError> {
    #[cfg(not(any(feature = "hls", feature = "rtmp")))]
    let _ = ctx;
    match &o.kind {
        OutputKind::Udp(c) => UdpOutput::bind(c, false).map(BoundOutput::Udp),
        OutputKind::Rtp(c) => UdpOutput::bind(c, true).map(BoundOutput::Udp),
        OutputKind::Srt(c) => SrtOutput::bind(c, flow_id, &o.id, events).map(BoundOutput::Srt),
        #[cfg(feature = "hls")]
        OutputKind::Hls(c) => crate::output::hls::HlsOutput::bind(
            &crate::output::hls::HlsSettings::from_config(c),
            flow_id,
            &o.id,
            events,
            ctx.0.clone(),
            ctx.1.clone(),
        )
        .map(|o| BoundOutput::Hls(Box::new(o))),
        #[cfg(feature = "rtmp")]
        OutputKind::Rtmp(c) => {
            crate::output::rtmp::RtmpOutput::bind(c, flow_id, &o.id, events, ctx.0.clone())
                .map(|o| BoundOutput::Rtmp(Box::new(o)))
        }
        other => Err(OutputError::Unsupported(other.type_name())),
    }
}

fn spawn_output(
    o: &OutputConfig,
    ring: Rc<FlowRing>,
    stats: Rc<OutputStats>,
    flow_id: &str,
    events: &Events,
    ctx: &OutputContext,
) -> Result<JoinHandle<()>, OutputError> {
    let bound = bind_output(o, flow_id, events, ctx)?;
    Ok(tokio::task::spawn_local(bound.run(ring, stats)))
}
