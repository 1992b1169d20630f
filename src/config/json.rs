//! JSON <-> model: the reader's tools (`Obj`), the document root, the tagged inputs and
//! outputs, and the fields `config_struct!` (`declare.rs`) cannot read by itself.
//!
//! Why not `#[derive(Deserialize)]`: an input or output is tagged by `type`, and serde's
//! derived tagged enums (and `flatten`) first buffer the whole object, then deserialize the
//! variant from that buffer; a type error inside then carries no path (`flows[0].outputs[1]`
//! instead of `flows[0].outputs[1].dscp`), the first error stops everything, and the `type`
//! key has to be kept out of `extra` by serde's internals. Reading a `serde_json::Value`
//! field by field gives every error its exact path, reports all of them, and makes the
//! round trip obvious: each reader takes its known keys out of the object and whatever is
//! left becomes `extra`; each writer puts the known keys back first and then `extra`
//! (without letting `extra` overwrite a known key). The blocks' fields are declared once,
//! in `model.rs`; the readers and writers here are the ones that are not a list of keys.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use super::error::{ConfigError, ErrorKind, child, index, kind_of, quoted};
use super::model::*;
use super::obj::{Custom, Fields, Obj, put_extra, write_text};
use super::value::ConfigValue;

/// Runs a reader over a fresh error list: all problems, or the value.
fn run<T>(read: impl FnOnce(&mut Vec<ConfigError>) -> Option<T>) -> Result<T, Vec<ConfigError>> {
    let mut errors = Vec::new();
    match read(&mut errors) {
        Some(t) if errors.is_empty() => Ok(t),
        _ => {
            if errors.is_empty() {
                // Every reader that gives `None` records why; this is a guard, not a path.
                errors.push(ConfigError::new("$", "invalid document"));
            }
            Err(errors)
        }
    }
}

impl Config {
    /// Reads a config document, reporting every shape problem (wrong JSON type, missing
    /// field, unknown input/output `type`) with its JSON path. Does not validate values.
    pub fn from_value(v: Value) -> Result<Config, Vec<ConfigError>> {
        run(|errors| read_partial(v, errors).map(|p| p.config))
    }

    /// The document as JSON: known fields in the spec's order, then the preserved unknown ones.
    pub fn to_value(&self) -> Value {
        let mut m = Map::new();
        m.insert("version".into(), self.version.into());
        m.insert("server".into(), self.server.to_value());
        write_flows(&self.flows, &mut m, "flows");
        let tunnels = self.tunnels.iter().map(TunnelConfig::to_value).collect();
        m.insert("tunnels".into(), Value::Array(tunnels));
        m.insert("storage".into(), self.storage.to_value());
        if let Some(v) = &self.manager {
            m.insert("manager".into(), v.to_value());
        }
        if let Some(b) = &self.bridge {
            m.insert("bridge".into(), b.to_value());
        }
        // Written only when set, so a config without it reads and writes back unchanged.
        if !self.limits.is_empty() {
            m.insert("limits".into(), self.limits.to_value());
        }
        if let Some(s) = &self.security {
            m.insert("security".into(), s.to_value());
        }
        if !self.tunnel_tls.is_empty() {
            m.insert("tunnel_tls".into(), self.tunnel_tls.to_value());
        }
        put_extra(&mut m, &self.extra);
        Value::Object(m)
    }
}

/// A document read as far as it could be: sections whose shape was wrong are left at their
/// defaults (or out), and unreadable flows are left out; `flow_index[i]` is the document's
/// index of `config.flows[i]`. Every shape problem is in `errors`.
pub(crate) struct Partial {
    pub config: Config,
    pub flow_index: Vec<usize>,
}

/// The root is read by hand: its `flows` reader also tells which document index each flow
/// that could be read stood at.
pub(crate) fn read_partial(v: Value, errors: &mut Vec<ConfigError>) -> Option<Partial> {
    let mut o = Obj::new(v, String::new(), errors)?;
    let version = o.defaulted("version", 1u32);
    let server = o.section("server", false);
    let mut flows = Vec::new();
    let mut flow_index = Vec::new();
    if let Some(items) = o.array("flows") {
        for (i, item) in items.into_iter().enumerate() {
            if let Some(f) = FlowConfig::read_at(item, index("flows", i), o.errors) {
                flows.push(f);
                flow_index.push(i);
            }
        }
    }
    let mut tunnels = Vec::new();
    if let Some(items) = o.array("tunnels") {
        for (i, item) in items.into_iter().enumerate() {
            tunnels.extend(TunnelConfig::read_at(item, index("tunnels", i), o.errors));
        }
    }
    let tunnel_tls = o.section("tunnel_tls", true);
    let storage = o.section("storage", false);
    let manager = o.optional_section("manager");
    let bridge = o.optional_section("bridge");
    let limits = o.section("limits", true);
    let security = o.optional_section("security");
    let extra = o.rest();
    Some(Partial {
        config: Config {
            version,
            server,
            flows,
            tunnels,
            tunnel_tls,
            storage,
            manager,
            bridge,
            limits,
            security,
            extra,
        },
        flow_index,
    })
}

impl TunnelConfig {
    /// Reads one tunnel object (a `create_tunnel` push) with its problems at `path`.
    pub fn from_value_at(v: Value, path: &str) -> Result<TunnelConfig, Vec<ConfigError>> {
        run(|errors| TunnelConfig::read_at(v, path.to_owned(), errors))
    }
}

impl FlowConfig {
    /// Reads one flow (e.g. the `flow` of a manager `create_flow` command); `path` prefixes
    /// every error path (`""` for none, `"flow"` gives `flow.input.bind_addr: …`).
    pub fn from_value_at(v: Value, path: &str) -> Result<FlowConfig, Vec<ConfigError>> {
        run(|errors| FlowConfig::read_at(v, path.to_string(), errors))
    }
}

fn write_flows(flows: &[FlowConfig], m: &mut Map<String, Value>, key: &str) {
    let flows = flows.iter().map(FlowConfig::to_value).collect();
    m.insert(key.into(), Value::Array(flows));
}

/// `FlowConfig.input`: required, tagged by `type`.
fn input_field(o: &mut Obj<'_>, key: &str) -> Option<InputConfig> {
    match o.take(key) {
        Some(v) => read_input(v, child(&o.path, key), o.errors),
        None => {
            o.err(ErrorKind::Missing, key, "missing required field");
            None
        }
    }
}

fn write_input(input: &InputConfig, m: &mut Map<String, Value>, key: &str) {
    m.insert(key.into(), input.to_value());
}

/// `FlowConfig.outputs`: absent is none; every output is read (and every problem reported)
/// even when an earlier one could not be.
fn outputs_field(o: &mut Obj<'_>, key: &str) -> Option<Vec<OutputConfig>> {
    let base = child(&o.path, key);
    let items = match o.has(key) {
        false => return Some(Vec::new()),
        true => o.array(key)?,
    };
    let mut outputs = Some(Vec::with_capacity(items.len()));
    for (i, item) in items.into_iter().enumerate() {
        let out = read_output(item, index(&base, i), o.errors);
        outputs = outputs.zip(out).map(|(mut os, out)| {
            os.push(out);
            os
        });
    }
    outputs
}

fn write_outputs(outputs: &[OutputConfig], m: &mut Map<String, Value>, key: &str) {
    let outputs = outputs.iter().map(OutputConfig::to_value).collect();
    m.insert(key.into(), Value::Array(outputs));
}

impl InputConfig {
    pub fn to_value(&self) -> Value {
        let mut m = Map::new();
        m.insert("type".into(), self.type_name().into());
        match self {
            InputConfig::Udp(u) | InputConfig::Rtp(u) => u.write_fields(&mut m),
            InputConfig::Srt(c) => c.write_fields(&mut m),
            InputConfig::Rtsp(r) => r.write_fields(&mut m),
            InputConfig::Rtmp(r) => r.write_fields(&mut m),
            InputConfig::Webrtc(x) | InputConfig::Whep(x) => put_extra(&mut m, x),
        }
        Value::Object(m)
    }
}

impl OutputConfig {
    /// Reads one output (e.g. the `output` of a manager `add_output` command); see
    /// `FlowConfig::from_value_at` for `path`.
    pub fn from_value_at(v: Value, path: &str) -> Result<OutputConfig, Vec<ConfigError>> {
        run(|errors| read_output(v, path.to_string(), errors))
    }

    pub fn to_value(&self) -> Value {
        let mut m = Map::new();
        m.insert("type".into(), self.kind.type_name().into());
        m.insert("id".into(), self.id.clone().into());
        m.insert("name".into(), self.name.clone().into());
        match &self.kind {
            OutputKind::Udp(u) | OutputKind::Rtp(u) => u.write_fields(&mut m),
            OutputKind::Srt(c) => c.write_fields(&mut m),
            OutputKind::Hls(c) => c.write_fields(&mut m),
            OutputKind::Rtmp(c) => c.write_fields(&mut m),
            OutputKind::Webrtc(x) => put_extra(&mut m, x),
        }
        Value::Object(m)
    }
}

/// Takes and checks the `type` key of an input or output.
fn take_type(o: &mut Obj<'_>, what: &str, known: &[&str]) -> Option<String> {
    let list = known.join(", ");
    match o.take("type") {
        Some(Value::String(t)) if known.contains(&t.as_str()) => Some(t),
        Some(Value::String(t)) => {
            o.err(
                ErrorKind::Unknown,
                "type",
                format!("unknown {what} type {} (known types: {list})", quoted(&t)),
            );
            None
        }
        Some(other) => {
            o.err(
                ErrorKind::Type,
                "type",
                format!(
                    "expected a string naming the {what} type, found {} (known types: {list})",
                    kind_of(&other)
                ),
            );
            None
        }
        None => {
            o.err(
                ErrorKind::Missing,
                "type",
                format!("missing required field (known types: {list})"),
            );
            None
        }
    }
}

fn read_input(v: Value, path: String, errors: &mut Vec<ConfigError>) -> Option<InputConfig> {
    let mut o = Obj::new(v, path, errors)?;
    let ty = take_type(&mut o, "input", InputConfig::KNOWN_TYPES)?;
    Some(match ty.as_str() {
        "udp" => InputConfig::Udp(UdpInputConfig::read_fields(o)?),
        "rtp" => InputConfig::Rtp(UdpInputConfig::read_fields(o)?),
        "srt" => InputConfig::Srt(SrtConfig::read_fields(o)?),
        "rtmp" => InputConfig::Rtmp(RtmpInputConfig::read_fields(o)?),
        "rtsp" => InputConfig::Rtsp(RtspInputConfig::read_fields(o)?),
        "webrtc" => InputConfig::Webrtc(o.rest()),
        "whep" => InputConfig::Whep(o.rest()),
        // take_type only lets known types through; KNOWN_TYPES and this match go together.
        _ => return None,
    })
}

fn read_output(v: Value, path: String, errors: &mut Vec<ConfigError>) -> Option<OutputConfig> {
    let mut o = Obj::new(v, path, errors)?;
    let ty = take_type(&mut o, "output", OutputKind::KNOWN_TYPES);
    let id = o.required::<String>("id");
    let name = o.defaulted("name", String::new());
    let kind = match ty?.as_str() {
        "udp" => OutputKind::Udp(UdpOutputConfig::read_fields(o)?),
        "rtp" => OutputKind::Rtp(UdpOutputConfig::read_fields(o)?),
        "srt" => OutputKind::Srt(SrtConfig::read_fields(o)?),
        "rtmp" => OutputKind::Rtmp(RtmpOutputConfig::read_fields(o)?),
        "hls" => OutputKind::Hls(HlsOutputConfig::read_fields(o)?),
        "webrtc" => OutputKind::Webrtc(o.rest()),
        _ => return None,
    };
    Some(OutputConfig {
        id: id?,
        name,
        kind,
    })
}

/// `BridgeConfig.streams`: an object keyed by stream id (absent or `null`: none).
fn bridge_streams(o: &mut Obj<'_>, key: &str) -> Option<Vec<BridgeStreamConfig>> {
    match o.take(key) {
        None | Some(Value::Null) => Some(Vec::new()),
        Some(Value::Object(map)) => {
            let base = child(&o.path, key);
            let mut streams = Some(Vec::with_capacity(map.len()));
            for (id, item) in map {
                let path = child(&base, &id);
                let s = BridgeStreamConfig::read_at(item, path, o.errors)
                    .map(|s| BridgeStreamConfig { id, ..s });
                streams = streams.zip(s).map(|(mut v, s)| {
                    v.push(s);
                    v
                });
            }
            streams
        }
        Some(other) => {
            o.err(
                ErrorKind::Type,
                key,
                format!(
                    "expected an object mapping stream ids to sources, found {}",
                    kind_of(&other)
                ),
            );
            None
        }
    }
}

fn write_bridge_streams(streams: &[BridgeStreamConfig], m: &mut Map<String, Value>, key: &str) {
    let streams = streams.iter().map(|s| (s.id.clone(), s.to_value()));
    m.insert(key.into(), Value::Object(streams.collect()));
}

/// `BridgeStreamConfig.transport`. A camera stream's is read as an RTSP input's; a flow's
/// stream (`flow_id`, read after this field) has no camera: its transport is neither used
/// nor written, so a value that does not parse is no problem there (only a wrong JSON type
/// is), as before it was typed.
fn stream_transport(o: &mut Obj<'_>, key: &str) -> Option<RtspTransport> {
    if !o.has("flow_id") {
        return Some(o.parsed_defaulted(key, RtspTransport::Tcp));
    }
    let text = match o.take(key) {
        Some(v) => o.convert::<String>(key, v),
        None => None,
    };
    Some(
        text.and_then(|t| RtspTransport::from_text(&t).ok())
            .unwrap_or_default(),
    )
}

/// `SrtConfig.mode`, with the modes named in every message.
fn srt_mode(o: &mut Obj<'_>, key: &str) -> Option<SrtMode> {
    let (kind, message) = match o.take(key) {
        Some(Value::String(m)) => match SrtMode::parse(&m) {
            Some(mode) => return Some(mode),
            None => (
                ErrorKind::Unknown,
                format!(
                    "unknown SRT mode {} (expected caller, listener or rendezvous)",
                    quoted(&m)
                ),
            ),
        },
        Some(other) => (
            ErrorKind::Type,
            format!(
                "expected a string (caller, listener or rendezvous), found {}",
                kind_of(&other)
            ),
        ),
        None => (
            ErrorKind::Missing,
            "missing required field (caller, listener or rendezvous)".to_string(),
        ),
    };
    o.err(kind, key, message);
    None
}

fn write_srt_mode(mode: &SrtMode, m: &mut Map<String, Value>, key: &str) {
    m.insert(key.into(), mode.as_str().into());
}

/// `SrtConfig.redundancy`: a second leg, read like the first (a nested `redundancy` inside
/// it is left to validation to refuse).
fn srt_leg(o: &mut Obj<'_>, key: &str) -> Option<Option<Box<SrtConfig>>> {
    match o.take(key) {
        None | Some(Value::Null) => Some(None),
        Some(v) => SrtConfig::read_at(v, child(&o.path, key), o.errors).map(|l| Some(Box::new(l))),
    }
}

fn write_srt_leg(leg: &Option<Box<SrtConfig>>, m: &mut Map<String, Value>, key: &str) {
    if let Some(leg) = leg {
        m.insert(key.into(), leg.to_value());
    }
}

/// The `custom` fields of `config_struct!` (model.rs) are read and written by the functions
/// above.
macro_rules! custom_fields {
    ($($ty:ty => $read:ident, $write:path;)*) => {$(
        impl Custom for $ty {
            fn read_field(o: &mut Obj<'_>, key: &str) -> Option<Self> {
                $read(o, key)
            }
            fn write_field(&self, m: &mut Map<String, Value>, key: &str) {
                $write(self, m, key)
            }
        }
    )*};
}

custom_fields! {
    InputConfig => input_field, write_input;
    Vec<OutputConfig> => outputs_field, write_outputs;
    SrtMode => srt_mode, write_srt_mode;
    Option<Box<SrtConfig>> => srt_leg, write_srt_leg;
    Vec<BridgeStreamConfig> => bridge_streams, write_bridge_streams;
    // Only a bridge stream's `transport` is `custom` (an RTSP input's is `parsed_default`).
    RtspTransport => stream_transport, write_text;
}

/// serde support, so other code can embed these types in its own messages. Deserializing
/// goes through the readers above; all problems are joined into one error message, each
/// with its path relative to the value being read.
macro_rules! serde_via_value {
    ($ty:ty, $from:expr) => {
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                self.to_value().serialize(s)
            }
        }
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let v = Value::deserialize(d)?;
                #[allow(clippy::redundant_closure_call)]
                ($from)(v).map_err(|errors: Vec<ConfigError>| {
                    let msgs: Vec<String> = errors.iter().map(ToString::to_string).collect();
                    serde::de::Error::custom(msgs.join("; "))
                })
            }
        }
    };
}

serde_via_value!(Config, Config::from_value);
serde_via_value!(FlowConfig, |v| FlowConfig::from_value_at(v, ""));
serde_via_value!(OutputConfig, |v| OutputConfig::from_value_at(v, ""));
