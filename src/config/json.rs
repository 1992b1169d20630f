//! JSON <-> model, by hand.
//!
//! Why not `#[derive(Deserialize)]`: an input or output is tagged by `type`, and serde's
//! derived tagged enums (and `flatten`) first buffer the whole object, then deserialize the
//! variant from that buffer; a type error inside then carries no path (`flows[0].outputs[1]`
//! instead of `flows[0].outputs[1].dscp`), the first error stops everything, and the `type`
//! key has to be kept out of `extra` by serde's internals. Reading a `serde_json::Value`
//! field by field gives every error its exact path, reports all of them, and makes the
//! round trip obvious: each reader takes its known keys out of the object and whatever is
//! left becomes `extra`; each writer puts the known keys back first and then `extra`
//! (without letting `extra` overwrite a known key).

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use super::error::{ConfigError, ErrorKind, child, index, kind_of, quoted, shown};
use super::model::*;

/// One JSON object being read: known keys are taken out, the rest is `extra`.
struct Obj<'e> {
    map: Map<String, Value>,
    path: String,
    errors: &'e mut Vec<ConfigError>,
}

impl<'e> Obj<'e> {
    fn new(v: Value, path: String, errors: &'e mut Vec<ConfigError>) -> Option<Self> {
        match v {
            Value::Object(map) => Some(Obj { map, path, errors }),
            other => {
                errors.push(ConfigError::of(
                    ErrorKind::Type,
                    shown(&path),
                    format!("expected an object, found {}", kind_of(&other)),
                ));
                None
            }
        }
    }

    fn err(&mut self, kind: ErrorKind, key: &str, message: impl Into<String>) {
        let p = child(&self.path, key);
        self.errors.push(ConfigError::of(kind, p, message));
    }

    /// Converts one value; a type error is recorded at `path` and gives `None`.
    fn convert<T: DeserializeOwned>(&mut self, key: &str, v: Value) -> Option<T> {
        match serde_json::from_value::<T>(v) {
            Ok(t) => Some(t),
            Err(e) => {
                self.err(ErrorKind::Type, key, e.to_string());
                None
            }
        }
    }

    /// A required field. Absent: "missing required field".
    fn required<T: DeserializeOwned>(&mut self, key: &str) -> Option<T> {
        match self.map.shift_remove(key) {
            Some(v) => self.convert(key, v),
            None => {
                self.err(ErrorKind::Missing, key, "missing required field");
                None
            }
        }
    }

    /// A field with a default when absent. A present but wrong value is an error (and the
    /// default stands in, so reading can go on and find further problems).
    fn defaulted<T: DeserializeOwned>(&mut self, key: &str, default: T) -> T {
        match self.map.shift_remove(key) {
            Some(v) => self.convert(key, v).unwrap_or(default),
            None => default,
        }
    }

    /// An optional field: absent or `null` is `None`.
    fn optional<T: DeserializeOwned>(&mut self, key: &str) -> Option<T> {
        match self.map.shift_remove(key) {
            None | Some(Value::Null) => None,
            Some(v) => self.convert(key, v),
        }
    }

    /// An optional array of strings, each element checked with its own index in the path.
    fn optional_strings(&mut self, key: &str) -> Option<Vec<String>> {
        let p = child(&self.path, key);
        match self.map.shift_remove(key) {
            None | Some(Value::Null) => None,
            Some(Value::Array(items)) => {
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.into_iter().enumerate() {
                    match item {
                        Value::String(s) => out.push(s),
                        other => self.errors.push(ConfigError::of(
                            ErrorKind::Type,
                            index(&p, i),
                            format!("expected a string, found {}", kind_of(&other)),
                        )),
                    }
                }
                Some(out)
            }
            Some(other) => {
                self.err(
                    ErrorKind::Type,
                    key,
                    format!("expected an array of strings, found {}", kind_of(&other)),
                );
                None
            }
        }
    }

    /// Takes a sub-object's raw value (absent: `None`).
    fn take(&mut self, key: &str) -> Option<Value> {
        self.map.shift_remove(key)
    }

    fn rest(self) -> Extra {
        self.map
    }
}

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
        m.insert(
            "flows".into(),
            Value::Array(self.flows.iter().map(FlowConfig::to_value).collect()),
        );
        m.insert("tunnels".into(), Value::Array(self.tunnels.clone()));
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
        put_extra(&mut m, &self.extra);
        Value::Object(m)
    }
}

impl ServerConfig {
    pub fn to_value(&self) -> Value {
        let mut m = Map::new();
        m.insert("listen_addr".into(), self.listen_addr.clone().into());
        m.insert("listen_port".into(), self.listen_port.into());
        if let Some(t) = &self.api_token {
            m.insert("api_token".into(), t.clone().into());
        }
        // Edge-only, like the connection fields below: only when set, so the manager's
        // view of `server` stays the two fields it knows.
        if !self.allowed_hosts.is_empty() {
            m.insert("allowed_hosts".into(), self.allowed_hosts.clone().into());
        }
        // The edge-only fields only when set: the manager's view of `server` stays the
        // two fields it knows unless the operator chose otherwise.
        for (k, v) in [
            ("max_connections", self.max_connections.map(|n| n as u64)),
            (
                "max_connections_per_ip",
                self.max_connections_per_ip.map(|n| n as u64),
            ),
            ("header_timeout_ms", self.header_timeout_ms),
            ("idle_timeout_ms", self.idle_timeout_ms),
        ] {
            if let Some(v) = v {
                m.insert(k.into(), v.into());
            }
        }
        put_extra(&mut m, &self.extra);
        Value::Object(m)
    }
}

impl StorageConfig {
    pub fn to_value(&self) -> Value {
        let mut m = Map::new();
        m.insert("data_dir".into(), self.data_dir.clone().into());
        m.insert(
            "event_log_max_bytes".into(),
            self.event_log_max_bytes.into(),
        );
        m.insert(
            "event_commit_max_delay_ms".into(),
            self.event_commit_max_delay_ms.into(),
        );
        put_extra(&mut m, &self.extra);
        Value::Object(m)
    }
}

impl FlowConfig {
    /// Reads one flow (e.g. the `flow` of a manager `create_flow` command); `path` prefixes
    /// every error path (`""` for none, `"flow"` gives `flow.input.bind_addr: …`).
    pub fn from_value_at(v: Value, path: &str) -> Result<FlowConfig, Vec<ConfigError>> {
        run(|errors| read_flow(v, path.to_string(), errors))
    }

    pub fn to_value(&self) -> Value {
        let mut m = Map::new();
        m.insert("id".into(), self.id.clone().into());
        m.insert("name".into(), self.name.clone().into());
        m.insert("enabled".into(), self.enabled.into());
        m.insert("input".into(), self.input.to_value());
        m.insert(
            "outputs".into(),
            Value::Array(self.outputs.iter().map(OutputConfig::to_value).collect()),
        );
        if let Some(n) = self.ring_chunks {
            m.insert("ring_chunks".into(), n.into());
        }
        put_extra(&mut m, &self.extra);
        Value::Object(m)
    }
}

impl InputConfig {
    pub fn to_value(&self) -> Value {
        let mut m = Map::new();
        m.insert("type".into(), self.type_name().into());
        match self {
            InputConfig::Udp(u) | InputConfig::Rtp(u) => {
                m.insert("bind_addr".into(), u.bind_addr.clone().into());
                if let Some(i) = &u.interface_addr {
                    m.insert("interface_addr".into(), i.clone().into());
                }
                if let Some(s) = &u.allowed_sources {
                    m.insert("allowed_sources".into(), s.clone().into());
                }
                put_extra(&mut m, &u.extra);
            }
            InputConfig::Srt(c) => c.write(&mut m),
            InputConfig::Rtsp(r) => {
                m.insert("rtsp_url".into(), r.rtsp_url.clone().into());
                if let Some(u) = &r.username {
                    m.insert("username".into(), u.clone().into());
                }
                if let Some(p) = &r.password {
                    m.insert("password".into(), p.clone().into());
                }
                m.insert("transport".into(), r.transport.clone().into());
                m.insert("timeout_secs".into(), r.timeout_secs.into());
                m.insert("reconnect_delay_secs".into(), r.reconnect_delay_secs.into());
                put_extra(&mut m, &r.extra);
            }
            InputConfig::Rtmp(x) | InputConfig::Webrtc(x) | InputConfig::Whep(x) => {
                put_extra(&mut m, x)
            }
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
            OutputKind::Udp(u) | OutputKind::Rtp(u) => {
                m.insert("dest_addr".into(), u.dest_addr.clone().into());
                if let Some(b) = &u.bind_addr {
                    m.insert("bind_addr".into(), b.clone().into());
                }
                if let Some(i) = &u.interface_addr {
                    m.insert("interface_addr".into(), i.clone().into());
                }
                m.insert("dscp".into(), u.dscp.into());
                if let Some(t) = u.ttl {
                    m.insert("ttl".into(), t.into());
                }
                put_extra(&mut m, &u.extra);
            }
            OutputKind::Srt(c) => c.write(&mut m),
            OutputKind::Rtmp(x) | OutputKind::Hls(x) | OutputKind::Webrtc(x) => {
                put_extra(&mut m, x)
            }
        }
        Value::Object(m)
    }
}

/// Unknown keys go after the known ones; a known key always wins, so a hand-built `extra`
/// that repeats one (say `type`) can never produce a duplicate or contradicting key.
fn put_extra(m: &mut Map<String, Value>, extra: &Extra) {
    for (k, v) in extra {
        if !m.contains_key(k) {
            m.insert(k.clone(), v.clone());
        }
    }
}

/// A document read as far as it could be: sections whose shape was wrong are left at their
/// defaults (or out), and unreadable flows are left out; `flow_index[i]` is the document's
/// index of `config.flows[i]`. Every shape problem is in `errors`.
pub(crate) struct Partial {
    pub config: Config,
    pub flow_index: Vec<usize>,
}

pub(crate) fn read_partial(v: Value, errors: &mut Vec<ConfigError>) -> Option<Partial> {
    let mut o = Obj::new(v, String::new(), errors)?;
    let version = o.defaulted("version", 1u32);
    let server = match o.take("server") {
        None => ServerConfig::default(),
        Some(v) => read_server(v, o.errors).unwrap_or_default(),
    };
    let mut flows = Vec::new();
    let mut flow_index = Vec::new();
    match o.take("flows") {
        None => {}
        Some(Value::Array(items)) => {
            for (i, item) in items.into_iter().enumerate() {
                if let Some(f) = read_flow(item, index("flows", i), o.errors) {
                    flows.push(f);
                    flow_index.push(i);
                }
            }
        }
        Some(other) => o.err(
            ErrorKind::Type,
            "flows",
            format!("expected an array, found {}", kind_of(&other)),
        ),
    }
    let tunnels = o.defaulted::<Vec<Value>>("tunnels", Vec::new());
    let storage = match o.take("storage") {
        None => StorageConfig::default(),
        Some(v) => read_storage(v, o.errors).unwrap_or_default(),
    };
    let manager = match o.take("manager") {
        None | Some(Value::Null) => None,
        Some(v) => read_manager(v, o.errors),
    };
    let bridge = match o.take("bridge") {
        None | Some(Value::Null) => None,
        Some(v) => read_bridge(v, o.errors),
    };
    let limits = match o.take("limits") {
        None | Some(Value::Null) => LimitsConfig::default(),
        Some(v) => read_limits(v, o.errors).unwrap_or_default(),
    };
    let security = match o.take("security") {
        None | Some(Value::Null) => None,
        Some(v) => read_security(v, o.errors),
    };
    let extra = o.rest();
    Some(Partial {
        config: Config {
            version,
            server,
            flows,
            tunnels,
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

fn read_limits(v: Value, errors: &mut Vec<ConfigError>) -> Option<LimitsConfig> {
    let mut o = Obj::new(v, "limits".into(), errors)?;
    let max_flows = o.optional::<usize>("max_flows");
    let max_outputs_per_flow = o.optional::<usize>("max_outputs_per_flow");
    let max_ring_bytes = o.optional::<u64>("max_ring_bytes");
    Some(LimitsConfig {
        max_flows,
        max_outputs_per_flow,
        max_ring_bytes,
        extra: o.rest(),
    })
}

impl LimitsConfig {
    pub fn to_value(&self) -> Value {
        let mut m = Map::new();
        if let Some(n) = self.max_flows {
            m.insert("max_flows".into(), n.into());
        }
        if let Some(n) = self.max_outputs_per_flow {
            m.insert("max_outputs_per_flow".into(), n.into());
        }
        if let Some(n) = self.max_ring_bytes {
            m.insert("max_ring_bytes".into(), n.into());
        }
        put_extra(&mut m, &self.extra);
        Value::Object(m)
    }
}

fn read_security(v: Value, errors: &mut Vec<ConfigError>) -> Option<SecurityConfig> {
    let mut o = Obj::new(v, "security".into(), errors)?;
    let outbound_allow = o.optional_strings("outbound_allow");
    Some(SecurityConfig {
        outbound_allow,
        extra: o.rest(),
    })
}

impl SecurityConfig {
    pub fn to_value(&self) -> Value {
        let mut m = Map::new();
        if let Some(list) = &self.outbound_allow {
            m.insert("outbound_allow".into(), list.clone().into());
        }
        put_extra(&mut m, &self.extra);
        Value::Object(m)
    }
}

impl ManagerConfig {
    /// Known fields first, in the order of docs/configuration.md; absent optional ones are
    /// left out (an absent credential is not an empty one).
    pub fn to_value(&self) -> Value {
        let mut m = Map::new();
        m.insert("enabled".into(), self.enabled.into());
        m.insert("urls".into(), self.urls.clone().into());
        for (k, v) in [
            ("registration_token", &self.registration_token),
            ("node_id", &self.node_id),
            ("node_secret", &self.node_secret),
            ("cert_fingerprint", &self.cert_fingerprint),
        ] {
            if let Some(v) = v {
                m.insert(k.into(), v.clone().into());
            }
        }
        m.insert(
            "accept_self_signed_cert".into(),
            self.accept_self_signed_cert.into(),
        );
        m.insert("allow_plain_ws".into(), self.allow_plain_ws.into());
        m.insert("protocol_version".into(), self.protocol_version.into());
        put_extra(&mut m, &self.extra);
        Value::Object(m)
    }
}

fn read_manager(v: Value, errors: &mut Vec<ConfigError>) -> Option<ManagerConfig> {
    let mut o = Obj::new(v, "manager".into(), errors)?;
    let d = ManagerConfig::empty();
    let enabled = o.defaulted("enabled", d.enabled);
    let urls = o.optional_strings("urls").unwrap_or_default();
    let registration_token = o.optional::<String>("registration_token");
    let node_id = o.optional::<String>("node_id");
    let node_secret = o.optional::<String>("node_secret");
    let cert_fingerprint = o.optional::<String>("cert_fingerprint");
    let accept_self_signed_cert = o.defaulted("accept_self_signed_cert", false);
    let allow_plain_ws = o.defaulted("allow_plain_ws", false);
    let protocol_version = o.defaulted("protocol_version", d.protocol_version);
    Some(ManagerConfig {
        enabled,
        urls,
        registration_token,
        node_id,
        node_secret,
        cert_fingerprint,
        accept_self_signed_cert,
        allow_plain_ws,
        protocol_version,
        extra: o.rest(),
    })
}

fn read_server(v: Value, errors: &mut Vec<ConfigError>) -> Option<ServerConfig> {
    let mut o = Obj::new(v, "server".into(), errors)?;
    let listen_addr = o.defaulted("listen_addr", ServerConfig::DEFAULT_ADDR.to_string());
    let listen_port = o.defaulted("listen_port", ServerConfig::DEFAULT_PORT);
    let api_token = o.optional::<String>("api_token");
    let allowed_hosts = o.optional_strings("allowed_hosts").unwrap_or_default();
    let max_connections = o.optional::<usize>("max_connections");
    let max_connections_per_ip = o.optional::<usize>("max_connections_per_ip");
    let header_timeout_ms = o.optional::<u64>("header_timeout_ms");
    let idle_timeout_ms = o.optional::<u64>("idle_timeout_ms");
    Some(ServerConfig {
        listen_addr,
        listen_port,
        api_token,
        allowed_hosts,
        max_connections,
        max_connections_per_ip,
        header_timeout_ms,
        idle_timeout_ms,
        extra: o.rest(),
    })
}

fn read_storage(v: Value, errors: &mut Vec<ConfigError>) -> Option<StorageConfig> {
    let mut o = Obj::new(v, "storage".into(), errors)?;
    let data_dir = o.defaulted("data_dir", StorageConfig::DEFAULT_DATA_DIR.to_string());
    let event_log_max_bytes = o.defaulted(
        "event_log_max_bytes",
        StorageConfig::DEFAULT_EVENT_LOG_MAX_BYTES,
    );
    let event_commit_max_delay_ms = o.defaulted(
        "event_commit_max_delay_ms",
        StorageConfig::DEFAULT_EVENT_COMMIT_MAX_DELAY_MS,
    );
    Some(StorageConfig {
        data_dir,
        event_log_max_bytes,
        event_commit_max_delay_ms,
        extra: o.rest(),
    })
}

fn read_flow(v: Value, path: String, errors: &mut Vec<ConfigError>) -> Option<FlowConfig> {
    let mut o = Obj::new(v, path, errors)?;
    let id = o.required::<String>("id");
    let name = o.defaulted("name", String::new());
    let enabled = o.defaulted("enabled", true);
    let input = match o.take("input") {
        Some(v) => read_input(v, child(&o.path, "input"), o.errors),
        None => {
            o.err(ErrorKind::Missing, "input", "missing required field");
            None
        }
    };
    let outputs = match o.take("outputs") {
        None => Some(Vec::new()),
        Some(Value::Array(items)) => {
            let base = child(&o.path, "outputs");
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
        Some(other) => {
            o.err(
                ErrorKind::Type,
                "outputs",
                format!("expected an array, found {}", kind_of(&other)),
            );
            None
        }
    };
    let ring_chunks = o.optional::<usize>("ring_chunks");
    let extra = o.rest();
    Some(FlowConfig {
        id: id?,
        name,
        enabled,
        input: input?,
        outputs: outputs?,
        ring_chunks,
        extra,
    })
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
        "udp" => InputConfig::Udp(read_udp_input(o)?),
        "rtp" => InputConfig::Rtp(read_udp_input(o)?),
        "srt" => InputConfig::Srt(read_srt(o)?),
        "rtmp" => InputConfig::Rtmp(o.rest()),
        "rtsp" => InputConfig::Rtsp(read_rtsp_input(o)?),
        "webrtc" => InputConfig::Webrtc(o.rest()),
        "whep" => InputConfig::Whep(o.rest()),
        // take_type only lets known types through; KNOWN_TYPES and this match go together.
        _ => return None,
    })
}

fn read_udp_input(mut o: Obj<'_>) -> Option<UdpInputConfig> {
    let bind_addr = o.required::<String>("bind_addr");
    let interface_addr = o.optional::<String>("interface_addr");
    let allowed_sources = o.optional_strings("allowed_sources");
    Some(UdpInputConfig {
        bind_addr: bind_addr?,
        interface_addr,
        allowed_sources,
        extra: o.rest(),
    })
}

fn read_rtsp_input(mut o: Obj<'_>) -> Option<RtspInputConfig> {
    let rtsp_url = o.required::<String>("rtsp_url");
    let username = o.optional::<String>("username");
    let password = o.optional::<String>("password");
    let transport = o.defaulted("transport", RtspInputConfig::DEFAULT_TRANSPORT.to_string());
    let timeout_secs = o.defaulted("timeout_secs", RtspInputConfig::DEFAULT_TIMEOUT_SECS);
    let reconnect_delay_secs = o.defaulted(
        "reconnect_delay_secs",
        RtspInputConfig::DEFAULT_RECONNECT_DELAY_SECS,
    );
    Some(RtspInputConfig {
        rtsp_url: rtsp_url?,
        username,
        password,
        transport,
        timeout_secs,
        reconnect_delay_secs,
        extra: o.rest(),
    })
}

fn read_bridge(v: Value, errors: &mut Vec<ConfigError>) -> Option<BridgeConfig> {
    let mut o = Obj::new(v, "bridge".into(), errors)?;
    let d = BridgeConfig::default();
    let streams = match o.take("streams") {
        None | Some(Value::Null) => Some(Vec::new()),
        Some(Value::Object(map)) => {
            let mut streams = Some(Vec::with_capacity(map.len()));
            for (id, item) in map {
                let path = child("bridge.streams", &id);
                let s = read_bridge_stream(id, item, path, o.errors);
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
                "streams",
                format!(
                    "expected an object mapping stream ids to sources, found {}",
                    kind_of(&other)
                ),
            );
            None
        }
    };
    let idle_timeout_ms = o.defaulted("idle_timeout_ms", d.idle_timeout_ms);
    let sweep_interval_ms = o.defaulted("sweep_interval_ms", d.sweep_interval_ms);
    let restart_delay_ms = o.defaulted("restart_delay_ms", d.restart_delay_ms);
    let max_restarts = o.defaulted("max_restarts", d.max_restarts);
    let max_clients_per_stream = o.defaulted("max_clients_per_stream", d.max_clients_per_stream);
    let client_queue_chunks = o.defaulted("client_queue_chunks", d.client_queue_chunks);
    let max_client_lags = o.defaulted("max_client_lags", d.max_client_lags);
    let ffmpeg_path = o.defaulted("ffmpeg_path", d.ffmpeg_path);
    let allowed_origins = o.optional_strings("allowed_origins").unwrap_or_default();
    let viewer_token = o.optional::<String>("viewer_token");
    Some(BridgeConfig {
        streams: streams?,
        idle_timeout_ms,
        sweep_interval_ms,
        restart_delay_ms,
        max_restarts,
        max_clients_per_stream,
        client_queue_chunks,
        max_client_lags,
        ffmpeg_path,
        allowed_origins,
        viewer_token,
        extra: o.rest(),
    })
}

fn read_bridge_stream(
    id: String,
    v: Value,
    path: String,
    errors: &mut Vec<ConfigError>,
) -> Option<BridgeStreamConfig> {
    let mut o = Obj::new(v, path, errors)?;
    let rtsp_url = o.optional::<String>("rtsp_url");
    let username = o.optional::<String>("username");
    let password = o.optional::<String>("password");
    let transport = o.defaulted("transport", RtspInputConfig::DEFAULT_TRANSPORT.to_string());
    let timeout_secs = o.defaulted("timeout_secs", RtspInputConfig::DEFAULT_TIMEOUT_SECS);
    let flow_id = o.optional::<String>("flow_id");
    let worker = o.defaulted("worker", "inprocess".to_string());
    let ffmpeg_video = o.defaulted("ffmpeg_video", "copy".to_string());
    Some(BridgeStreamConfig {
        id,
        rtsp_url,
        username,
        password,
        transport,
        timeout_secs,
        flow_id,
        worker,
        ffmpeg_video,
        extra: o.rest(),
    })
}

impl BridgeConfig {
    pub fn to_value(&self) -> Value {
        let mut m = Map::new();
        let mut streams = Map::new();
        for s in &self.streams {
            streams.insert(s.id.clone(), s.to_value());
        }
        m.insert("streams".into(), Value::Object(streams));
        m.insert("idle_timeout_ms".into(), self.idle_timeout_ms.into());
        m.insert("sweep_interval_ms".into(), self.sweep_interval_ms.into());
        m.insert("restart_delay_ms".into(), self.restart_delay_ms.into());
        m.insert("max_restarts".into(), self.max_restarts.into());
        m.insert(
            "max_clients_per_stream".into(),
            self.max_clients_per_stream.into(),
        );
        m.insert(
            "client_queue_chunks".into(),
            self.client_queue_chunks.into(),
        );
        m.insert("max_client_lags".into(), self.max_client_lags.into());
        m.insert("ffmpeg_path".into(), self.ffmpeg_path.clone().into());
        m.insert(
            "allowed_origins".into(),
            self.allowed_origins.clone().into(),
        );
        if let Some(t) = &self.viewer_token {
            m.insert("viewer_token".into(), t.clone().into());
        }
        put_extra(&mut m, &self.extra);
        Value::Object(m)
    }
}

impl BridgeStreamConfig {
    pub fn to_value(&self) -> Value {
        let mut m = Map::new();
        if let Some(u) = &self.rtsp_url {
            m.insert("rtsp_url".into(), u.clone().into());
        }
        if let Some(u) = &self.username {
            m.insert("username".into(), u.clone().into());
        }
        if let Some(p) = &self.password {
            m.insert("password".into(), p.clone().into());
        }
        if self.rtsp_url.is_some() {
            m.insert("transport".into(), self.transport.clone().into());
            m.insert("timeout_secs".into(), self.timeout_secs.into());
        }
        if let Some(f) = &self.flow_id {
            m.insert("flow_id".into(), f.clone().into());
        }
        m.insert("worker".into(), self.worker.clone().into());
        if self.worker == "ffmpeg" {
            m.insert("ffmpeg_video".into(), self.ffmpeg_video.clone().into());
        }
        put_extra(&mut m, &self.extra);
        Value::Object(m)
    }
}

fn read_output(v: Value, path: String, errors: &mut Vec<ConfigError>) -> Option<OutputConfig> {
    let mut o = Obj::new(v, path, errors)?;
    let ty = take_type(&mut o, "output", OutputKind::KNOWN_TYPES);
    let id = o.required::<String>("id");
    let name = o.defaulted("name", String::new());
    let kind = match ty?.as_str() {
        "udp" => OutputKind::Udp(read_udp_output(o)?),
        "rtp" => OutputKind::Rtp(read_udp_output(o)?),
        "srt" => OutputKind::Srt(read_srt(o)?),
        "rtmp" => OutputKind::Rtmp(o.rest()),
        "hls" => OutputKind::Hls(o.rest()),
        "webrtc" => OutputKind::Webrtc(o.rest()),
        _ => return None,
    };
    Some(OutputConfig {
        id: id?,
        name,
        kind,
    })
}

fn read_udp_output(mut o: Obj<'_>) -> Option<UdpOutputConfig> {
    let dest_addr = o.required::<String>("dest_addr");
    let bind_addr = o.optional::<String>("bind_addr");
    let interface_addr = o.optional::<String>("interface_addr");
    let dscp = o.defaulted("dscp", UdpOutputConfig::DEFAULT_DSCP);
    let ttl = o.optional::<u32>("ttl");
    Some(UdpOutputConfig {
        dest_addr: dest_addr?,
        bind_addr,
        interface_addr,
        dscp,
        ttl,
        extra: o.rest(),
    })
}

impl SrtConfig {
    /// Writes the known fields in the spec's order, then `extra`.
    fn write(&self, m: &mut Map<String, Value>) {
        m.insert("mode".into(), self.mode.as_str().into());
        m.insert("local_addr".into(), self.local_addr.clone().into());
        if let Some(r) = &self.remote_addr {
            m.insert("remote_addr".into(), r.clone().into());
        }
        m.insert("latency_ms".into(), self.latency_ms.into());
        m.insert(
            "peer_idle_timeout_secs".into(),
            self.peer_idle_timeout_secs.into(),
        );
        if let Some(p) = &self.passphrase {
            m.insert("passphrase".into(), p.clone().into());
        }
        if let Some(k) = self.aes_key_len {
            m.insert("aes_key_len".into(), k.into());
        }
        if let Some(s) = &self.stream_id {
            m.insert("stream_id".into(), s.clone().into());
        }
        if let Some(n) = self.max_connections {
            m.insert("max_connections".into(), n.into());
        }
        if let Some(w) = self.window_ms {
            m.insert("window_ms".into(), w.into());
        }
        if let Some(leg) = &self.redundancy {
            let mut l = Map::new();
            leg.write(&mut l);
            m.insert("redundancy".into(), Value::Object(l));
        }
        put_extra(m, &self.extra);
    }
}

/// An SRT endpoint. The `redundancy` leg is read the same way; a nested `redundancy` inside
/// it is left to validation to refuse.
fn read_srt(mut o: Obj<'_>) -> Option<SrtConfig> {
    let mode = match o.take("mode") {
        Some(Value::String(m)) => match SrtMode::parse(&m) {
            Some(mode) => Some(mode),
            None => {
                o.err(
                    ErrorKind::Unknown,
                    "mode",
                    format!(
                        "unknown SRT mode {} (expected caller, listener or rendezvous)",
                        quoted(&m)
                    ),
                );
                None
            }
        },
        Some(other) => {
            o.err(
                ErrorKind::Type,
                "mode",
                format!(
                    "expected a string (caller, listener or rendezvous), found {}",
                    kind_of(&other)
                ),
            );
            None
        }
        None => {
            o.err(
                ErrorKind::Missing,
                "mode",
                "missing required field (caller, listener or rendezvous)",
            );
            None
        }
    };
    let local_addr = o.required::<String>("local_addr");
    let remote_addr = o.optional::<String>("remote_addr");
    let latency_ms = o.defaulted("latency_ms", SrtConfig::DEFAULT_LATENCY_MS);
    let peer_idle_timeout_secs = o.defaulted(
        "peer_idle_timeout_secs",
        SrtConfig::DEFAULT_PEER_IDLE_TIMEOUT_SECS,
    );
    let passphrase = o.optional::<String>("passphrase");
    let aes_key_len = o.optional::<u16>("aes_key_len");
    let stream_id = o.optional::<String>("stream_id");
    let max_connections = o.optional::<u32>("max_connections");
    let window_ms = o.optional::<u64>("window_ms");
    let redundancy = match o.take("redundancy") {
        None | Some(Value::Null) => Some(None),
        Some(v) => {
            let path = child(&o.path, "redundancy");
            Obj::new(v, path, o.errors)
                .and_then(|leg| read_srt(leg))
                .map(|leg| Some(Box::new(leg)))
        }
    };
    Some(SrtConfig {
        mode: mode?,
        local_addr: local_addr?,
        remote_addr,
        latency_ms,
        peer_idle_timeout_secs,
        passphrase,
        aes_key_len,
        stream_id,
        max_connections,
        window_ms,
        redundancy: redundancy?,
        extra: o.rest(),
    })
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
