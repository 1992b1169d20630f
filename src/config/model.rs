//! The config document. Field names follow `shared/spec/manager-protocol.md` exactly.
//!
//! Every struct keeps the fields it does not know in `extra`, so a config written back (to
//! disk or to the manager) loses nothing a newer manager or a newer Quoll put there.
//! Addresses stay strings as the operator wrote them; `validate` parses them.
//!
//! (De)serialization is hand-written in `json.rs` rather than derived: serde's derived
//! internally-tagged enums and `flatten` buffer their input, which loses the JSON path of a
//! type error inside an input or output and stops at the first problem. See `json.rs`.

use serde_json::{Map, Value};

pub type Extra = Map<String, Value>;

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Document format version; only 1 exists.
    pub version: u32,
    pub server: ServerConfig,
    pub flows: Vec<FlowConfig>,
    /// Relay tunnels, owned by the tunnel code; kept as JSON here.
    pub tunnels: Vec<Value>,
    pub storage: StorageConfig,
    /// The manager link block (URLs, credentials); kept as JSON here.
    pub manager: Option<Value>,
    /// The RTSP->WebSocket bridge block (absent: no bridge streams).
    pub bridge: Option<BridgeConfig>,
    pub extra: Extra,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    /// IP address the local HTTP API listens on.
    pub listen_addr: String,
    /// TCP port of the local HTTP API.
    pub listen_port: u16,
    pub extra: Extra,
}

impl ServerConfig {
    pub const DEFAULT_ADDR: &'static str = "127.0.0.1";
    pub const DEFAULT_PORT: u16 = 8080;
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen_addr: Self::DEFAULT_ADDR.into(),
            listen_port: Self::DEFAULT_PORT,
            extra: Extra::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct StorageConfig {
    /// Where persistent state lives (event log, credentials). Relative paths are taken from
    /// the working directory.
    pub data_dir: String,
    /// Size cap of the on-disk event log, in bytes.
    pub event_log_max_bytes: u64,
    /// Longest an event may wait in memory before it is committed (fsynced) to the log.
    pub event_commit_max_delay_ms: u64,
    pub extra: Extra,
}

impl StorageConfig {
    pub const DEFAULT_DATA_DIR: &'static str = "quoll-data";
    pub const DEFAULT_EVENT_LOG_MAX_BYTES: u64 = 16 << 20;
    /// Below this the log would hold too few events to bridge a manager outage.
    pub const MIN_EVENT_LOG_MAX_BYTES: u64 = 1 << 20;
    pub const DEFAULT_EVENT_COMMIT_MAX_DELAY_MS: u64 = 50;
    pub const EVENT_COMMIT_MAX_DELAY_MS_RANGE: std::ops::RangeInclusive<u64> = 1..=1000;
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            data_dir: Self::DEFAULT_DATA_DIR.into(),
            event_log_max_bytes: Self::DEFAULT_EVENT_LOG_MAX_BYTES,
            event_commit_max_delay_ms: Self::DEFAULT_EVENT_COMMIT_MAX_DELAY_MS,
            extra: Extra::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct FlowConfig {
    pub id: String,
    pub name: String,
    pub enabled: bool,
    pub input: InputConfig,
    pub outputs: Vec<OutputConfig>,
    /// Ring capacity in 7-packet chunks (edge-only field).
    pub ring_chunks: Option<usize>,
    pub extra: Extra,
}

impl FlowConfig {
    pub const RING_CHUNKS_RANGE: std::ops::RangeInclusive<usize> = 16..=65536;
}

/// A flow input, tagged by `type`.
#[derive(Debug, Clone, PartialEq)]
pub enum InputConfig {
    Udp(UdpInputConfig),
    Rtp(UdpInputConfig),
    /// Input types of the spec that this build does not run yet: kept verbatim (every field
    /// but `type`) so a config holding them round-trips, and refused by validation with a
    /// clear message.
    Srt(Extra),
    Rtmp(Extra),
    Rtsp(RtspInputConfig),
    Webrtc(Extra),
    Whep(Extra),
}

impl InputConfig {
    /// Every input `type` the document format knows, in the spec's order.
    pub const KNOWN_TYPES: &'static [&'static str] =
        &["udp", "rtp", "srt", "rtmp", "rtsp", "webrtc", "whep"];
    /// The input types this build can run.
    pub const SUPPORTED_TYPES: &'static [&'static str] = &["udp", "rtp", "rtsp"];

    pub fn type_name(&self) -> &'static str {
        match self {
            InputConfig::Udp(_) => "udp",
            InputConfig::Rtp(_) => "rtp",
            InputConfig::Srt(_) => "srt",
            InputConfig::Rtmp(_) => "rtmp",
            InputConfig::Rtsp(_) => "rtsp",
            InputConfig::Webrtc(_) => "webrtc",
            InputConfig::Whep(_) => "whep",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct UdpInputConfig {
    /// `ip:port` to receive on; a multicast group address joins that group.
    pub bind_addr: String,
    /// Local interface address for the multicast join.
    pub interface_addr: Option<String>,
    /// Source IPs accepted; absent means any.
    pub allowed_sources: Option<Vec<String>>,
    pub extra: Extra,
}

#[derive(Debug, Clone, PartialEq)]
pub struct OutputConfig {
    pub id: String,
    pub name: String,
    pub kind: OutputKind,
}

/// An output, tagged by `type`.
#[derive(Debug, Clone, PartialEq)]
pub enum OutputKind {
    Udp(UdpOutputConfig),
    Rtp(UdpOutputConfig),
    /// Output types of the spec that this build does not run yet; see `InputConfig::Srt`.
    Srt(Extra),
    Rtmp(Extra),
    Hls(Extra),
    Webrtc(Extra),
}

impl OutputKind {
    /// Every output `type` the document format knows, in the spec's order.
    pub const KNOWN_TYPES: &'static [&'static str] =
        &["udp", "rtp", "srt", "rtmp", "hls", "webrtc"];
    /// The output types this build can run.
    pub const SUPPORTED_TYPES: &'static [&'static str] = &["udp", "rtp"];

    pub fn type_name(&self) -> &'static str {
        match self {
            OutputKind::Udp(_) => "udp",
            OutputKind::Rtp(_) => "rtp",
            OutputKind::Srt(_) => "srt",
            OutputKind::Rtmp(_) => "rtmp",
            OutputKind::Hls(_) => "hls",
            OutputKind::Webrtc(_) => "webrtc",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct UdpOutputConfig {
    /// `ip:port` to send to (unicast or multicast).
    pub dest_addr: String,
    /// Local `ip:port` to send from; absent means any address, ephemeral port.
    pub bind_addr: Option<String>,
    /// Outgoing interface address for multicast.
    pub interface_addr: Option<String>,
    /// DiffServ code point (0..=63); 46 is EF, the usual class for live video.
    pub dscp: u8,
    /// Multicast TTL / hop limit (edge-only field); absent means the sender's default.
    pub ttl: Option<u32>,
    pub extra: Extra,
}

impl UdpOutputConfig {
    pub const DEFAULT_DSCP: u8 = 46;
}

/// An RTSP camera as a flow input (the spec's fields), pulled with retina and remuxed to
/// MPEG-TS in-process.
#[derive(Debug, Clone, PartialEq)]
pub struct RtspInputConfig {
    /// `rtsp://[user:pass@]host[:port]/path`.
    pub rtsp_url: String,
    pub username: Option<String>,
    /// A secret: removed by `redacted()`.
    pub password: Option<String>,
    /// `tcp` (interleaved on the RTSP connection, the default) or `udp`.
    pub transport: String,
    /// A connection attempt, or a stream that sends nothing for this long, has failed.
    pub timeout_secs: u64,
    /// Wait between reconnection attempts.
    pub reconnect_delay_secs: u64,
    pub extra: Extra,
}

impl RtspInputConfig {
    pub const DEFAULT_TRANSPORT: &'static str = "tcp";
    pub const TRANSPORTS: &'static [&'static str] = &["tcp", "udp"];
    pub const DEFAULT_TIMEOUT_SECS: u64 = 10;
    pub const DEFAULT_RECONNECT_DELAY_SECS: u64 = 5;
    pub const TIMEOUT_SECS_RANGE: std::ops::RangeInclusive<u64> = 1..=300;
    pub const RECONNECT_DELAY_SECS_RANGE: std::ops::RangeInclusive<u64> = 1..=3600;
}

/// The RTSP->WebSocket bridge (`bridge`). Browsers open `ws://HOST:PORT/ws/stream/{id}`.
#[derive(Debug, Clone, PartialEq)]
pub struct BridgeConfig {
    /// Stream id -> source, in the document's order (a JSON object keyed by stream id).
    pub streams: Vec<BridgeStreamConfig>,
    /// `STREAM_IDLE_TIMEOUT_MS` overrides it.
    pub idle_timeout_ms: u64,
    /// `STREAM_SWEEP_INTERVAL_MS` overrides it.
    pub sweep_interval_ms: u64,
    /// `STREAM_RESTART_DELAY_MS` overrides it.
    pub restart_delay_ms: u64,
    /// `STREAM_MAX_RESTARTS` overrides it.
    pub max_restarts: u32,
    /// Clients per stream; one more is refused.
    pub max_clients_per_stream: usize,
    /// Each client's queue, in 7-packet chunks (1316 bytes): how far behind it may fall.
    pub client_queue_chunks: usize,
    /// A client that had to skip chunks this many times is disconnected.
    pub max_client_lags: u32,
    /// The FFmpeg binary of `ffmpeg` workers.
    pub ffmpeg_path: String,
    pub extra: Extra,
}

impl BridgeConfig {
    pub const DEFAULT_IDLE_TIMEOUT_MS: u64 = 15_000;
    pub const DEFAULT_SWEEP_INTERVAL_MS: u64 = 5_000;
    pub const DEFAULT_RESTART_DELAY_MS: u64 = 2_000;
    pub const DEFAULT_MAX_RESTARTS: u32 = 5;
    pub const DEFAULT_MAX_CLIENTS_PER_STREAM: usize = 32;
    pub const DEFAULT_CLIENT_QUEUE_CHUNKS: usize = 512;
    pub const DEFAULT_MAX_CLIENT_LAGS: u32 = 3;
    pub const DEFAULT_FFMPEG_PATH: &'static str = "ffmpeg";
    pub const MAX_STREAMS: usize = 64;
    pub const MAX_CLIENTS_RANGE: std::ops::RangeInclusive<usize> = 1..=1024;
    pub const CLIENT_QUEUE_CHUNKS_RANGE: std::ops::RangeInclusive<usize> = 16..=8192;
    pub const MS_RANGE: std::ops::RangeInclusive<u64> = 1..=86_400_000;
}

impl Default for BridgeConfig {
    fn default() -> Self {
        BridgeConfig {
            streams: Vec::new(),
            idle_timeout_ms: Self::DEFAULT_IDLE_TIMEOUT_MS,
            sweep_interval_ms: Self::DEFAULT_SWEEP_INTERVAL_MS,
            restart_delay_ms: Self::DEFAULT_RESTART_DELAY_MS,
            max_restarts: Self::DEFAULT_MAX_RESTARTS,
            max_clients_per_stream: Self::DEFAULT_MAX_CLIENTS_PER_STREAM,
            client_queue_chunks: Self::DEFAULT_CLIENT_QUEUE_CHUNKS,
            max_client_lags: Self::DEFAULT_MAX_CLIENT_LAGS,
            ffmpeg_path: Self::DEFAULT_FFMPEG_PATH.into(),
            extra: Extra::new(),
        }
    }
}

/// One bridge stream: an RTSP camera (`rtsp_url`) or the output of a flow (`flow_id`).
#[derive(Debug, Clone, PartialEq)]
pub struct BridgeStreamConfig {
    pub id: String,
    pub rtsp_url: Option<String>,
    pub username: Option<String>,
    /// A secret: removed by `redacted()`.
    pub password: Option<String>,
    pub transport: String,
    pub timeout_secs: u64,
    /// Read the TS of this flow instead of a camera.
    pub flow_id: Option<String>,
    /// `inprocess` (retina + Quoll's remux, the default) or `ffmpeg` (a child process).
    pub worker: String,
    /// For `ffmpeg` workers: `copy` (remux) or `mpeg1video` (transcode for JSMpeg).
    pub ffmpeg_video: String,
    pub extra: Extra,
}

impl BridgeStreamConfig {
    pub const WORKERS: &'static [&'static str] = &["inprocess", "ffmpeg"];
    pub const FFMPEG_VIDEO: &'static [&'static str] = &["copy", "mpeg1video"];
}
