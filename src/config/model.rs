//! The config document. Field names follow `shared/spec/manager-protocol.md` exactly.
//!
//! Every struct keeps the fields it does not know in `extra`, so a config written back (to
//! disk or to the manager) loses nothing a newer manager or a newer Quoll put there.
//! Addresses and modes are held as their types (`SocketAddr`, `IpAddr`, `RtspTransport`,
//! …), parsed once by the reader (`value.rs`); the code that runs a config takes them as
//! they are.
//!
//! Each block is declared once with `config_struct!` (`declare.rs`): its fields, their JSON
//! keys, defaults and own checks; the reader, the writer and `Default` come from that.
//! Serde derive is not used: its internally-tagged enums and `flatten` buffer their input,
//! which loses the JSON path of a type error inside an input or output and stops at the
//! first problem. See `json.rs`.

use std::net::{IpAddr, SocketAddr};

use super::declare::{check, config_struct};
use super::error::{ConfigError, ErrorKind};

pub use super::value::{BridgeWorker, RtspTransport, TunnelDirection, TunnelMode, TunnelProtocol};

pub use super::obj::Extra;

#[derive(Clone, PartialEq)]
pub struct Config {
    /// Document format version; only 1 exists.
    pub version: u32,
    pub server: ServerConfig,
    pub flows: Vec<FlowConfig>,
    /// Tunnels to other edges (`shared/spec/relay-protocol.md`), manager-owned.
    pub tunnels: Vec<TunnelConfig>,
    /// How this edge trusts relays and direct peers (edge-owned, kept across `update_config`).
    pub tunnel_tls: TunnelTlsConfig,
    pub storage: StorageConfig,
    /// The manager link (URLs, credentials, TLS pin); absent means no manager.
    pub manager: Option<ManagerConfig>,
    /// The RTSP->WebSocket bridge block (absent: no bridge streams).
    pub bridge: Option<BridgeConfig>,
    /// Resource budgets (`limits`); every field absent takes the board's default.
    pub limits: LimitsConfig,
    /// Network guards (`security`); absent means none (the behaviour before it existed).
    pub security: Option<SecurityConfig>,
    pub extra: Extra,
}

config_struct! {
    /// The `server` block: the local HTTP API.
    ///
    /// `Debug` prints the redacted JSON (see `redact.rs`): `api_token` never reaches a log line.
    #[derive(Clone, PartialEq)]
    pub struct ServerConfig with Default {
        /// IP address the local HTTP API listens on.
        listen_addr: IpAddr => parsed_default(Self::DEFAULT_ADDR);
        /// TCP port of the local HTTP API.
        listen_port: u16 => default(Self::DEFAULT_PORT) check = check::not_zero;
        /// The bearer token of `/api/v1/*`. Absent: Quoll generates one at first start and
        /// keeps it in `<storage.data_dir>/api-token` (see `http::token`).
        api_token: Option<String> => optional check = check::opt(token);
        /// Host names (besides IP literals and `localhost`) a request's `Host` may name. Any
        /// other name is refused: a DNS-rebinding page would send its own. Edge-only, like
        /// the connection fields below: written only when set, so the manager's view of
        /// `server` stays the two fields it knows.
        allowed_hosts: Vec<String> => list_if_any
            check = check::each(check::string(check::host_name));
        /// Edge-only: concurrent connections on the API/bridge listener, all sources together
        /// (absent: [`ServerConfig::DEFAULT_MAX_CONNECTIONS`], lowered further if the process
        /// has too few file descriptors; see `net::listener`).
        max_connections: Option<usize> => optional
            check = check::opt(check::range(Self::MAX_CONNECTIONS_RANGE));
        /// Edge-only: concurrent connections from one source address (IPv6: one /64).
        max_connections_per_ip: Option<usize> => optional
            check = check::opt(check::range(Self::MAX_CONNECTIONS_RANGE));
        /// Edge-only: how long a client has to deliver a complete request header, counted
        /// from when the server starts waiting for it (the accept; on a kept-alive connection
        /// the end of the previous response, so it also bounds an idle kept-alive connection).
        header_timeout_ms: Option<u64> => optional
            check = check::opt(check::range(Self::TIMEOUT_MS_RANGE));
        /// Edge-only: a connection on which no byte moves in either direction for this long
        /// is closed (a stalled upload, a client that does not read its response, an idle
        /// kept-alive connection). WebSocket sessions, once upgraded, are the bridge's.
        idle_timeout_ms: Option<u64> => optional
            check = check::opt(check::range(Self::TIMEOUT_MS_RANGE));
    }
}

impl ServerConfig {
    pub const DEFAULT_ADDR: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
    pub const DEFAULT_PORT: u16 = 8080;
    /// A browser opens about 6 connections per host, plus one WebSocket per bridge stream
    /// it shows; 256 leaves room for a few dozen operators and viewers, and is far below
    /// the descriptors a raised RLIMIT_NOFILE gives.
    pub const DEFAULT_MAX_CONNECTIONS: usize = 256;
    pub const MAX_CONNECTIONS_RANGE: std::ops::RangeInclusive<usize> = 1..=65_536;
    /// One browser with a wall of bridge streams stays under this; one misbehaving host
    /// cannot take more than a quarter of the default total.
    pub const DEFAULT_MAX_CONNECTIONS_PER_IP: usize = 64;
    /// A person's request header arrives in one packet; 10 s covers a slow link many times.
    pub const DEFAULT_HEADER_TIMEOUT_MS: u64 = 10_000;
    pub const DEFAULT_IDLE_TIMEOUT_MS: u64 = 30_000;
    pub const TIMEOUT_MS_RANGE: std::ops::RangeInclusive<u64> = 100..=3_600_000;
    /// The edge-only keys of `server`: a manager push that leaves them out keeps the node's
    /// values (a v0.4.x manager only knows `listen_addr` and `listen_port`). The token is
    /// kept as every secret is (`restore_secrets`).
    pub const EDGE_KEYS: [&'static str; 5] = [
        "allowed_hosts",
        "max_connections",
        "max_connections_per_ip",
        "header_timeout_ms",
        "idle_timeout_ms",
    ];
}

/// What a configured token (`server.api_token`, `bridge.viewer_token`) must look like: long
/// enough not to be guessed, and only characters that go into an HTTP header and a URL
/// query as they are (printable ASCII, no space).
pub const TOKEN_LEN: std::ops::RangeInclusive<usize> = 16..=512;

config_struct! {
    /// The `limits` block: overrides of the board's resource budgets (`config::budget`). An
    /// absent field takes the board profile's value.
    #[derive(Debug, Clone, PartialEq)]
    pub struct LimitsConfig with Default {
        /// Flows configured at once, running or not.
        max_flows: Option<usize> => optional
            check = check::opt(check::range(Self::MAX_FLOWS_RANGE));
        /// Outputs in one flow.
        max_outputs_per_flow: Option<usize> => optional
            check = check::opt(check::range(Self::MAX_OUTPUTS_RANGE));
        /// Memory of every flow's TS ring added up (`ring_chunks` x bytes per ring slot).
        max_ring_bytes: Option<u64> => optional
            check = check::opt(check::range(Self::MAX_RING_BYTES_RANGE));
    }
}

impl LimitsConfig {
    pub const MAX_FLOWS_RANGE: std::ops::RangeInclusive<usize> = 1..=4096;
    pub const MAX_OUTPUTS_RANGE: std::ops::RangeInclusive<usize> = 1..=1024;
    /// From 1 MiB (a few default rings) to 64 GiB.
    pub const MAX_RING_BYTES_RANGE: std::ops::RangeInclusive<u64> = (1 << 20)..=(64 << 30);

    pub fn is_empty(&self) -> bool {
        *self == LimitsConfig::default()
    }
}

config_struct! {
    /// The `security` block.
    #[derive(Debug, Clone, PartialEq)]
    pub struct SecurityConfig with Default {
        /// CIDRs (`10.0.0.0/8`, `2001:db8::/32`, or a bare address) that inputs and outputs
        /// may connect or send to. Absent: anywhere. Empty: nowhere. See `net::outbound`.
        outbound_allow: Option<Vec<String>> => strings;
    }
}

config_struct! {
    #[derive(Debug, Clone, PartialEq)]
    pub struct StorageConfig with Default {
        /// Where persistent state lives (event log, credentials). Relative paths are taken
        /// from the working directory.
        data_dir: String => default(Self::DEFAULT_DATA_DIR.into()) check = check::not_empty;
        /// Size cap of the on-disk event log, in bytes.
        event_log_max_bytes: u64 => default(Self::DEFAULT_EVENT_LOG_MAX_BYTES)
            check = |n: &u64, path: &str, errors: &mut Vec<ConfigError>| {
                if *n < Self::MIN_EVENT_LOG_MAX_BYTES {
                    errors.push(ConfigError::of(
                        ErrorKind::Range,
                        path,
                        format!(
                            "{n} is too small (at least {} = 1 MiB)",
                            Self::MIN_EVENT_LOG_MAX_BYTES
                        ),
                    ));
                }
            };
        /// Longest an event may wait in memory before it is committed (fsynced) to the log.
        event_commit_max_delay_ms: u64 => default(Self::DEFAULT_EVENT_COMMIT_MAX_DELAY_MS)
            check = check::range(Self::EVENT_COMMIT_MAX_DELAY_MS_RANGE);
    }
}

impl StorageConfig {
    pub const DEFAULT_DATA_DIR: &'static str = "quoll-data";
    pub const DEFAULT_EVENT_LOG_MAX_BYTES: u64 = 16 << 20;
    /// Below this the log would hold too few events to bridge a manager outage.
    pub const MIN_EVENT_LOG_MAX_BYTES: u64 = 1 << 20;
    pub const DEFAULT_EVENT_COMMIT_MAX_DELAY_MS: u64 = 50;
    pub const EVENT_COMMIT_MAX_DELAY_MS_RANGE: std::ops::RangeInclusive<u64> = 1..=1000;
}

config_struct! {
    #[derive(Clone, PartialEq)]
    pub struct FlowConfig {
        id: String => required;
        name: String => default(String::new());
        enabled: bool => default(true);
        input: InputConfig => custom;
        outputs: Vec<OutputConfig> => custom;
        /// Ring capacity in 7-packet chunks (edge-only field).
        ring_chunks: Option<usize> => optional
            check = check::opt(check::range(Self::RING_CHUNKS_RANGE));
    }
}

impl FlowConfig {
    /// Ring capacity when `ring_chunks` is absent: 1024 chunks of 7 packets is 1.3 MiB,
    /// about half a second at 20 Mbit/s: enough to absorb a stalled output without
    /// dropping, small enough for the smallest board.
    pub const DEFAULT_RING_CHUNKS: usize = 1024;
    pub const RING_CHUNKS_RANGE: std::ops::RangeInclusive<usize> = 16..=65536;
}

/// A flow input, tagged by `type`.
#[derive(Clone, PartialEq)]
pub enum InputConfig {
    Udp(UdpInputConfig),
    Rtp(UdpInputConfig),
    Srt(SrtConfig),
    /// A server RTMP publishers push to (read in every build; run with the `rtmp` feature).
    Rtmp(RtmpInputConfig),
    Rtsp(RtspInputConfig),
    /// Input types of the spec that this build does not run yet: kept verbatim (every field
    /// but `type`) so a config holding them round-trips, and refused by validation with a
    /// clear message.
    Webrtc(Extra),
    Whep(Extra),
}

impl InputConfig {
    /// Every input `type` the document format knows, in the spec's order.
    pub const KNOWN_TYPES: &'static [&'static str] =
        &["udp", "rtp", "srt", "rtmp", "rtsp", "webrtc", "whep"];
    /// The input types this build can run.
    pub const SUPPORTED_TYPES: &'static [&'static str] = &[
        "udp",
        "rtp",
        "srt",
        #[cfg(feature = "rtmp")]
        "rtmp",
        #[cfg(feature = "rtsp")]
        "rtsp",
    ];

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

config_struct! {
    #[derive(Debug, Clone, PartialEq)]
    pub struct UdpInputConfig {
        /// `ip:port` to receive on; a multicast group address joins that group.
        bind_addr: SocketAddr => parsed;
        /// Local interface address for the multicast join.
        interface_addr: Option<IpAddr> => parsed_opt;
        /// Source IPs accepted; absent means any.
        allowed_sources: Option<Vec<IpAddr>> => parsed_list;
    }
}

#[derive(Clone, PartialEq)]
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
    Srt(SrtConfig),
    /// An RTMP(S) push (read in every build; run with the `rtmp` feature).
    Rtmp(RtmpOutputConfig),
    /// HLS pushed by HTTP PUT (feature `hls`; without it, refused like the types above).
    Hls(HlsOutputConfig),
    Webrtc(Extra),
}

impl OutputKind {
    /// Every output `type` the document format knows, in the spec's order.
    pub const KNOWN_TYPES: &'static [&'static str] =
        &["udp", "rtp", "srt", "rtmp", "hls", "webrtc"];
    /// The output types this build can run.
    pub const SUPPORTED_TYPES: &'static [&'static str] = &[
        "udp",
        "rtp",
        "srt",
        #[cfg(feature = "rtmp")]
        "rtmp",
        #[cfg(feature = "hls")]
        "hls",
    ];

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

config_struct! {
    #[derive(Debug, Clone, PartialEq)]
    pub struct UdpOutputConfig {
        /// `ip:port` to send to (unicast or multicast).
        dest_addr: SocketAddr => parsed;
        /// Local `ip:port` to send from; absent means any address, ephemeral port.
        bind_addr: Option<SocketAddr> => parsed_opt;
        /// Outgoing interface address for multicast.
        interface_addr: Option<IpAddr> => parsed_opt;
        /// DiffServ code point (0..=63); 46 is EF, the usual class for live video.
        dscp: u8 => default(Self::DEFAULT_DSCP) check = check::range(Self::DSCP_RANGE);
        /// Multicast TTL / hop limit (edge-only field); absent means the sender's default.
        ttl: Option<u32> => optional check = check::opt(check::range(Self::TTL_RANGE));
    }
}

config_struct! {
    /// An `hls` output: segments and a live playlist pushed by HTTP PUT (docs/hls.md).
    #[derive(Clone, PartialEq)]
    pub struct HlsOutputConfig {
        /// `http(s)://host[:port]/dir/` (the playlist is `index.m3u8`) or
        /// `http(s)://host[:port]/dir/name.m3u8`; segments go next to the playlist.
        ingest_url: String => required;
        /// Target segment length; segments are cut at the first key frame after it.
        segment_duration_ms: u64 => default(Self::DEFAULT_SEGMENT_DURATION_MS)
            check = check::range(Self::SEGMENT_DURATION_MS_RANGE);
        /// Segments the live playlist names (and the upload queue and memory hold).
        playlist_size: u32 => default(Self::DEFAULT_PLAYLIST_SIZE)
            check = check::range(Self::PLAYLIST_SIZE_RANGE);
        /// Extra request headers; a secret as a whole (they often carry a token).
        headers: Option<std::collections::BTreeMap<String, String>> => optional;
        /// HTTP basic authentication.
        username: Option<String> => optional;
        /// A secret: removed by `redacted()`.
        password: Option<String> => optional;
        /// `EXT-X-PROGRAM-DATE-TIME` on every segment.
        program_date_time: bool => default(false);
    }
}

config_struct! {
    /// An `rtmp` output: the flow's H.264 and AAC remuxed to FLV and pushed to an RTMP(S)
    /// server (docs/rtmp.md).
    #[derive(Clone, PartialEq)]
    pub struct RtmpOutputConfig {
        /// `rtmp(s)://host[:port]/app/key`: the last path segment (and any query) is the
        /// stream key, a secret (`redacted()` shows it as `***`). With `stream_key`, the URL
        /// ends at the app (`rtmp://host/app`, OBS's "Server"). Validation wants this or
        /// `dest_url`.
        url: Option<String> => optional;
        /// The manager's name for `url` (its form is `dest_url` + `stream_key`); masked the
        /// same way.
        dest_url: Option<String> => optional;
        /// The stream key apart from the URL; a secret, removed by `redacted()`.
        stream_key: Option<String> => optional;
        /// `rtmps`: SHA-256 of the server's leaf certificate (hex, colons optional), trusted
        /// instead of a public chain (a private ingest with a self-signed certificate).
        cert_fingerprint: Option<String> => optional;
        /// The wait before the first retry; it doubles up to [`Self::RETRY_MAX_SECS`] (or
        /// stays at this value when that is longer).
        reconnect_delay_secs: u64 => default(Self::DEFAULT_RECONNECT_DELAY_SECS)
            check = check::range(Self::RECONNECT_DELAY_SECS_RANGE);
        /// Failed attempts in a row after which the output gives up (the flow's "failed to
        /// start" event); absent: it retries for ever.
        max_reconnect_attempts: Option<u32> => optional
            check = check::opt(check::range(1..=u32::MAX));
    }
}

impl RtmpOutputConfig {
    /// The manager's default.
    pub const DEFAULT_RECONNECT_DELAY_SECS: u64 = 5;
    pub const RECONNECT_DELAY_SECS_RANGE: std::ops::RangeInclusive<u64> = 1..=3600;
    /// The longest wait the doubling reaches.
    pub const RETRY_MAX_SECS: u64 = 30;

    /// `url`, else `dest_url` (validation makes sure there is exactly one).
    pub fn push_url(&self) -> &str {
        self.url
            .as_deref()
            .or(self.dest_url.as_deref())
            .unwrap_or("")
    }
}

impl HlsOutputConfig {
    pub const DEFAULT_SEGMENT_DURATION_MS: u64 = 2000;
    pub const SEGMENT_DURATION_MS_RANGE: std::ops::RangeInclusive<u64> = 500..=30_000;
    pub const DEFAULT_PLAYLIST_SIZE: u32 = 6;
    pub const PLAYLIST_SIZE_RANGE: std::ops::RangeInclusive<u32> = 2..=30;
}

impl UdpOutputConfig {
    pub const DEFAULT_DSCP: u8 = 46;
    pub const DSCP_RANGE: std::ops::RangeInclusive<u8> = 0..=63;
    pub const TTL_RANGE: std::ops::RangeInclusive<u32> = 1..=255;
}

config_struct! {
    /// The `manager` block: how this node reaches its central manager.
    ///
    /// `Debug` prints the redacted JSON (see `redact.rs`), so credentials never reach a log
    /// line. Absent optional fields are not written (an absent credential is not an empty one).
    #[derive(Clone, PartialEq)]
    pub struct ManagerConfig with Default {
        /// Whether the link runs at all (a block can be kept but switched off).
        enabled: bool => default(true);
        /// `wss://host[:port]/path` URLs, tried in turn; `ws://` only with `allow_plain_ws`.
        urls: Vec<String> => list;
        /// One-time enrollment token; dropped once the manager answers with credentials.
        registration_token: Option<String> => optional;
        node_id: Option<String> => optional;
        node_secret: Option<String> => optional;
        /// SHA-256 of the manager's leaf certificate, hex, colons optional.
        cert_fingerprint: Option<String> => optional;
        /// Accept a certificate no public root vouches for; only together with the pin.
        accept_self_signed_cert: bool => default(false);
        /// Allow `ws://` URLs (manager behind a TLS-terminating proxy on the same host, tests).
        allow_plain_ws: bool => default(false);
        /// The manager protocol version announced in `auth`.
        protocol_version: u32 => default(Self::DEFAULT_PROTOCOL_VERSION)
            check = check::at_least_1;
    }
}

impl ManagerConfig {
    pub const DEFAULT_PROTOCOL_VERSION: u32 = 1;

    /// A block with every default and no URL or credential.
    pub fn empty() -> Self {
        ManagerConfig::default()
    }
}

/// How an SRT endpoint connects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SrtMode {
    /// Connects to `remote_addr`, and reconnects forever with backoff.
    Caller,
    /// Waits on `local_addr` for callers.
    Listener,
    /// Both sides connect to each other at once (`local_addr` and `remote_addr`).
    Rendezvous,
}

impl SrtMode {
    pub const ALL: [SrtMode; 3] = [SrtMode::Caller, SrtMode::Listener, SrtMode::Rendezvous];

    pub fn as_str(self) -> &'static str {
        match self {
            SrtMode::Caller => "caller",
            SrtMode::Listener => "listener",
            SrtMode::Rendezvous => "rendezvous",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.as_str() == s)
    }
}

config_struct! {
    /// An SRT input or output (one leg), plus an optional second leg for SMPTE 2022-7 style
    /// redundancy. Field names and defaults follow the manager protocol.
    #[derive(Clone, PartialEq)]
    pub struct SrtConfig {
        mode: SrtMode => custom;
        /// `ip:port` to bind. A listener needs a fixed port; a caller may use port 0 (any).
        local_addr: SocketAddr => parsed;
        /// `ip:port` of the peer (caller and rendezvous).
        remote_addr: Option<SocketAddr> => parsed_opt;
        /// SRT latency (TSBPD delay) in milliseconds, both directions.
        latency_ms: u64 => default(Self::DEFAULT_LATENCY_MS)
            check = check::range(Self::LATENCY_MS_RANGE);
        /// A connection that hears nothing from its peer for this long is dropped.
        peer_idle_timeout_secs: u64 => default(Self::DEFAULT_PEER_IDLE_TIMEOUT_SECS)
            check = check::range(Self::PEER_IDLE_TIMEOUT_SECS_RANGE);
        /// AES passphrase, 10 to 79 characters; absent means no encryption.
        passphrase: Option<String> => optional check = check::opt(passphrase);
        /// AES key length in bytes (16, 24 or 32); absent means 16 (or the peer's, as
        /// listener).
        aes_key_len: Option<u16> => optional check = check::opt(aes_key_len);
        /// SRT stream id sent by a caller (`SRTO_STREAMID`).
        stream_id: Option<String> => optional check = check::opt(stream_id);
        /// Quoll-only, outputs in listener mode: how many callers may be fed at once.
        max_connections: Option<u32> => optional;
        /// Quoll-only, in an input's `redundancy` leg: how long the 2022-7 merge holds
        /// datagrams behind a hole waiting for the other leg (absent:
        /// `srt::merge::DEFAULT_WINDOW` plus the difference of the legs' latencies).
        window_ms: Option<u64> => optional;
        /// The second leg (same fields; a leg has no `redundancy` of its own: a nested one
        /// is read, and refused by validation).
        redundancy: Option<Box<SrtConfig>> => custom;
    }
}

impl SrtConfig {
    pub const DEFAULT_LATENCY_MS: u64 = 120;
    pub const DEFAULT_PEER_IDLE_TIMEOUT_SECS: u64 = 30;
    pub const LATENCY_MS_RANGE: std::ops::RangeInclusive<u64> = 0..=60_000;
    pub const PEER_IDLE_TIMEOUT_SECS_RANGE: std::ops::RangeInclusive<u64> = 1..=3_600;
    pub const PASSPHRASE_LEN: std::ops::RangeInclusive<usize> = 10..=79;
    pub const AES_KEY_LENS: [u16; 3] = [16, 24, 32];
    /// libsrt's limit for `SRTO_STREAMID`.
    pub const MAX_STREAM_ID_LEN: usize = 512;
    pub const DEFAULT_MAX_CONNECTIONS: u32 = 8;
    pub const MAX_CONNECTIONS_RANGE: std::ops::RangeInclusive<u32> = 1..=64;
    pub const WINDOW_MS_RANGE: std::ops::RangeInclusive<u64> = 1..=10_000;

    /// A leg with defaults for everything but mode and address (tests, examples).
    pub fn new(mode: SrtMode, local_addr: SocketAddr) -> Self {
        SrtConfig {
            mode,
            local_addr,
            remote_addr: None,
            latency_ms: Self::DEFAULT_LATENCY_MS,
            peer_idle_timeout_secs: Self::DEFAULT_PEER_IDLE_TIMEOUT_SECS,
            passphrase: None,
            aes_key_len: None,
            stream_id: None,
            max_connections: None,
            window_ms: None,
            redundancy: None,
            extra: Extra::new(),
        }
    }
}

config_struct! {
    /// An RTMP server input: publishers (OBS, FFmpeg, encoders) push `rtmp://host:port/app/key`
    /// to it. Several flows may share one `listen_addr`, told apart by `app` and `stream_key`.
    #[derive(Clone, PartialEq)]
    pub struct RtmpInputConfig {
        /// `ip:port` (TCP) to listen on; 1935 is RTMP's usual port.
        listen_addr: SocketAddr => parsed;
        /// The application name: the first path segment of the publisher's URL.
        app: String => required;
        /// A secret (removed by `redacted()`): the last path segment, OBS's "Stream Key".
        stream_key: String => required;
    }
}

config_struct! {
    /// An RTSP camera as a flow input (the spec's fields), pulled with retina and remuxed to
    /// MPEG-TS in-process.
    #[derive(Clone, PartialEq)]
    pub struct RtspInputConfig {
        /// `rtsp://[user:pass@]host[:port]/path`.
        rtsp_url: String => required;
        username: Option<String> => optional;
        /// A secret: removed by `redacted()`.
        password: Option<String> => optional;
        /// `tcp` (interleaved on the RTSP connection, the default) or `udp`.
        transport: RtspTransport => parsed_default(RtspTransport::Tcp);
        /// A connection attempt, or a stream that sends nothing for this long, has failed.
        timeout_secs: u64 => default(Self::DEFAULT_TIMEOUT_SECS)
            check = check::range(Self::TIMEOUT_SECS_RANGE);
        /// Wait between reconnection attempts.
        reconnect_delay_secs: u64 => default(Self::DEFAULT_RECONNECT_DELAY_SECS)
            check = check::range(Self::RECONNECT_DELAY_SECS_RANGE);
    }
}

impl RtspInputConfig {
    pub const DEFAULT_TIMEOUT_SECS: u64 = 10;
    pub const DEFAULT_RECONNECT_DELAY_SECS: u64 = 5;
    pub const TIMEOUT_SECS_RANGE: std::ops::RangeInclusive<u64> = 1..=300;
    pub const RECONNECT_DELAY_SECS_RANGE: std::ops::RangeInclusive<u64> = 1..=3600;
}

config_struct! {
    /// The RTSP->WebSocket bridge (`bridge`). Browsers open `ws://HOST:PORT/ws/stream/{id}`.
    #[derive(Clone, PartialEq)]
    pub struct BridgeConfig with Default {
        /// Stream id -> source, in the document's order (a JSON object keyed by stream id).
        streams: Vec<BridgeStreamConfig> => custom;
        /// `STREAM_IDLE_TIMEOUT_MS` overrides it.
        idle_timeout_ms: u64 => default(Self::DEFAULT_IDLE_TIMEOUT_MS)
            check = check::range(Self::MS_RANGE);
        /// `STREAM_SWEEP_INTERVAL_MS` overrides it.
        sweep_interval_ms: u64 => default(Self::DEFAULT_SWEEP_INTERVAL_MS)
            check = check::range(Self::MS_RANGE);
        /// `STREAM_RESTART_DELAY_MS` overrides it.
        restart_delay_ms: u64 => default(Self::DEFAULT_RESTART_DELAY_MS)
            check = check::range(Self::MS_RANGE);
        /// `STREAM_MAX_RESTARTS` overrides it.
        max_restarts: u32 => default(Self::DEFAULT_MAX_RESTARTS);
        /// Clients per stream; one more is refused.
        max_clients_per_stream: usize => default(Self::DEFAULT_MAX_CLIENTS_PER_STREAM)
            check = check::range(Self::MAX_CLIENTS_RANGE);
        /// Each client's queue, in 7-packet chunks (1316 bytes): how far behind it may fall.
        client_queue_chunks: usize => default(Self::DEFAULT_CLIENT_QUEUE_CHUNKS)
            check = check::range(Self::CLIENT_QUEUE_CHUNKS_RANGE);
        /// A client that had to skip chunks this many times is disconnected.
        max_client_lags: u32 => default(Self::DEFAULT_MAX_CLIENT_LAGS) check = check::at_least_1;
        /// The FFmpeg binary of `ffmpeg` workers.
        ffmpeg_path: String => default(Self::DEFAULT_FFMPEG_PATH.into()) check = check::not_empty;
        /// Origins (`http[s]://host[:port]`) whose pages may open a stream, besides pages
        /// served by the same host and port as the request names in `Host`.
        allowed_origins: Vec<String> => list check = check::each(check::string(check::origin));
        /// The read-only token of `/ws/stream/*` (`?token=`). Absent: generated at first
        /// start into `<storage.data_dir>/viewer-token`. Required when the API listens
        /// beyond loopback.
        viewer_token: Option<String> => optional check = check::opt(token);
    }
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

/// A parsed manager URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagerUrl {
    pub tls: bool,
    /// Host name or IP address (IPv6 without brackets).
    pub host: String,
    pub port: u16,
    /// Path and query, at least `/`.
    pub path: String,
}

impl ManagerUrl {
    /// The manager's port when a URL names none (`shared/spec/manager-protocol.md`), for
    /// `wss://` and `ws://` alike.
    pub const DEFAULT_PORT: u16 = 8443;
    /// The manager's WebSocket endpoint, used when a URL has no path.
    pub const DEFAULT_PATH: &'static str = "/ws/node";

    /// `wss://host[:port][/path]` or `ws://…`. No user info (credentials never go in a URL),
    /// no fragment. The manager's defaults fill what is left out: port
    /// [`Self::DEFAULT_PORT`] (8443, not the scheme's 443/80) and, when there is no path at
    /// all, [`Self::DEFAULT_PATH`] (`/ws/node`); a path that is written, even `/`, is kept.
    pub fn parse(s: &str) -> Result<ManagerUrl, ManagerUrlError> {
        let (tls, rest) = if let Some(r) = s.strip_prefix("wss://") {
            (true, r)
        } else if let Some(r) = s.strip_prefix("ws://") {
            (false, r)
        } else {
            return Err(ManagerUrlError::Scheme);
        };
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        let path = if path.is_empty() || path.starts_with('?') {
            format!("{}{path}", Self::DEFAULT_PATH)
        } else {
            path.to_string()
        };
        if authority.contains('@') {
            return Err(ManagerUrlError::UserInfo);
        }
        if path.contains('#') || path.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(ManagerUrlError::Path);
        }
        let default_port = Self::DEFAULT_PORT;
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) = v6.split_once(']').ok_or(ManagerUrlError::UnclosedBracket)?;
            h.parse::<std::net::Ipv6Addr>()
                .map_err(|_| ManagerUrlError::NotIpv6(h.to_string()))?;
            let port = match after {
                "" => default_port,
                p => parse_port(
                    p.strip_prefix(':')
                        .ok_or(ManagerUrlError::JunkAfterBracket)?,
                )?,
            };
            (h.to_string(), port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), parse_port(p)?),
                None => (authority.to_string(), default_port),
            }
        };
        if host.is_empty() {
            return Err(ManagerUrlError::NoHost);
        }
        if !host.contains(':')
            && !host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        {
            return Err(ManagerUrlError::Host(host));
        }
        Ok(ManagerUrl {
            tls,
            host,
            port,
            path,
        })
    }
}

/// Why a manager URL was refused. Shown after the URL (`"ws:/x" must start with …`), so
/// each message reads as the rest of a sentence; none repeats user info (a password).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ManagerUrlError {
    Scheme,
    UserInfo,
    /// A fragment, a space or a control character in the path.
    Path,
    UnclosedBracket,
    NotIpv6(String),
    JunkAfterBracket,
    Port(PortError),
    NoHost,
    Host(String),
}

impl std::fmt::Display for ManagerUrlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Scheme => f.write_str("must start with wss:// (or ws://)"),
            Self::UserInfo => {
                f.write_str("must not contain user info (put credentials in the manager block)")
            }
            Self::Path => {
                f.write_str("path must not contain a fragment, spaces or control characters")
            }
            Self::UnclosedBracket => f.write_str("unclosed '[' in host"),
            Self::NotIpv6(h) => write!(f, "{h:?} is not an IPv6 address"),
            Self::JunkAfterBracket => f.write_str("junk after ']'"),
            Self::Port(e) => write!(f, "{e}"),
            Self::NoHost => f.write_str("has no host"),
            Self::Host(h) => write!(f, "host {h:?} is not a host name or IP address"),
        }
    }
}

impl std::error::Error for ManagerUrlError {}

/// A port that is not a number 1-65535, as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortError(pub String);

impl std::fmt::Display for PortError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "port {:?} is not a port number 1-65535", self.0)
    }
}

impl std::error::Error for PortError {}

impl From<PortError> for ManagerUrlError {
    fn from(e: PortError) -> Self {
        ManagerUrlError::Port(e)
    }
}

fn parse_port(p: &str) -> Result<u16, PortError> {
    match p.parse::<u16>() {
        Ok(0) | Err(_) => Err(PortError(p.to_string())),
        Ok(n) => Ok(n),
    }
}

config_struct! {
    /// One bridge stream: an RTSP camera (`rtsp_url`) or the output of a flow (`flow_id`).
    /// Its rules depend on which source it has: they are code in `validate.rs`.
    #[derive(Clone, PartialEq)]
    pub struct BridgeStreamConfig {
        /// The stream's key in `bridge.streams`.
        id: String => external;
        rtsp_url: Option<String> => optional;
        username: Option<String> => optional;
        /// A secret: removed by `redacted()`.
        password: Option<String> => optional;
        /// Checked for a camera stream only: a flow's stream has no camera (see
        /// `stream_transport`).
        transport: RtspTransport => custom
            [if |s: &BridgeStreamConfig| s.rtsp_url.is_some()];
        timeout_secs: u64 => default(RtspInputConfig::DEFAULT_TIMEOUT_SECS)
            [if |s: &BridgeStreamConfig| s.rtsp_url.is_some()];
        /// Read the TS of this flow instead of a camera.
        flow_id: Option<String> => optional;
        /// `inprocess` (retina + Quoll's remux, the default) or `ffmpeg` (a child process).
        worker: BridgeWorker => parsed_default(BridgeWorker::InProcess);
        /// For `ffmpeg` workers: `copy` (remux) or `mpeg1video` (transcode for JSMpeg). A
        /// string: it is only checked for `ffmpeg` workers (others ignore it).
        ffmpeg_video: String => default("copy".into())
            [if |s: &BridgeStreamConfig| s.worker == BridgeWorker::Ffmpeg];
    }
}

impl BridgeStreamConfig {
    pub const FFMPEG_VIDEO: &'static [&'static str] = &["copy", "mpeg1video"];
}

// The checks of the values only these blocks hold (`check = …` above); the generic ones are
// `declare::check`.

/// A configured token. The message never repeats it: it is a secret, and a validation
/// error is printed and logged.
#[allow(clippy::ptr_arg)] // a check takes `&T`, T the field's type
fn token(t: &String, path: &str, errors: &mut Vec<ConfigError>) {
    if !TOKEN_LEN.contains(&t.len()) {
        errors.push(ConfigError::of(
            ErrorKind::Range,
            path,
            format!(
                "must be {} to {} characters long (is {})",
                TOKEN_LEN.start(),
                TOKEN_LEN.end(),
                t.len()
            ),
        ));
    } else if !t.bytes().all(|b| b.is_ascii_graphic()) {
        errors.push(ConfigError::new(
            path,
            "must be printable ASCII without spaces (it is sent in a header and a URL)",
        ));
    }
}

/// Counted in characters like the manager does; libsrt counts bytes, so a non-ASCII
/// passphrase must also fit 79 bytes. The passphrase itself is never echoed: messages
/// end up in logs.
#[allow(clippy::ptr_arg)] // a check takes `&T`, T the field's type
fn passphrase(p: &String, path: &str, errors: &mut Vec<ConfigError>) {
    let n = p.chars().count();
    let r = SrtConfig::PASSPHRASE_LEN;
    if !r.contains(&n) || p.len() > *r.end() {
        errors.push(ConfigError::of(
            ErrorKind::Range,
            path,
            format!(
                "must be {} to {} characters long (this one has {n})",
                r.start(),
                r.end()
            ),
        ));
    }
}

fn aes_key_len(k: &u16, path: &str, errors: &mut Vec<ConfigError>) {
    if !SrtConfig::AES_KEY_LENS.contains(k) {
        errors.push(ConfigError::new(
            path,
            format!("{k} is not an AES key length (expected 16, 24 or 32)"),
        ));
    }
}

#[allow(clippy::ptr_arg)] // a check takes `&T`, T the field's type
fn stream_id(s: &String, path: &str, errors: &mut Vec<ConfigError>) {
    if s.len() > SrtConfig::MAX_STREAM_ID_LEN {
        errors.push(ConfigError::of(
            ErrorKind::Range,
            path,
            format!(
                "is {} bytes long (at most {})",
                s.len(),
                SrtConfig::MAX_STREAM_ID_LEN
            ),
        ));
    }
}

config_struct! {
    /// One tunnel (`tunnels[]`): the object `create_tunnel` pushes, field for field as
    /// `shared/spec/relay-protocol.md` writes it. The secrets (`tunnel_encryption_key`,
    /// `tunnel_bind_secret`, `tunnel_psk`) are removed by `redacted()`.
    #[derive(Clone, PartialEq)]
    pub struct TunnelConfig {
        /// A UUID: its 16 raw bytes prefix every datagram.
        id: String => required check = check::string(check::uuid);
        name: String => default(String::new());
        /// A disabled tunnel is kept but not run.
        enabled: bool => default(true);
        protocol: TunnelProtocol => parsed;
        mode: TunnelMode => parsed;
        direction: TunnelDirection => parsed;
        /// `egress`: where local traffic is read (UDP bound, TCP listened on); `ingress`:
        /// where the tunnel's traffic is delivered (UDP sent to, TCP dialled).
        local_addr: SocketAddr => parsed;
        /// Relay mode: the relay's `host:port` (UDP, QUIC; 4433 is the usual port).
        relay_addr: Option<String> => optional check = check::opt(check::string(check::host_port));
        /// Relay mode: the relays in order of preference, the second one for failover; when
        /// set it takes the place of `relay_addr`.
        relay_addrs: Vec<String> => list_if_any
            check = check::each(check::string(check::host_port));
        /// Direct mode, `egress`: the listening peer's `host:port`.
        peer_addr: Option<String> => optional check = check::opt(check::string(check::host_port));
        /// Direct mode, `ingress`: the UDP address this edge's QUIC server listens on.
        direct_listen_addr: Option<SocketAddr> => parsed_opt;
        /// 64 hex digits: the ChaCha20-Poly1305 key of the data plane.
        tunnel_encryption_key: Option<String> => optional
            check = check::opt(check::string(check::hex_key));
        /// 64 hex characters: the HMAC key of the relay bind token (used as text, not decoded).
        tunnel_bind_secret: Option<String> => optional
            check = check::opt(check::string(check::hex_key));
        /// Direct mode: 64 hex characters, the HMAC key of the peer's authentication token.
        tunnel_psk: Option<String> => optional check = check::opt(check::string(check::hex_key));
    }
}

impl TunnelConfig {
    /// At most a primary and a backup relay.
    pub const MAX_RELAYS: usize = 2;

    /// The relays to try, in order: `relay_addrs` when set, else `relay_addr`.
    pub fn relays(&self) -> Vec<&str> {
        if self.relay_addrs.is_empty() {
            self.relay_addr.iter().map(String::as_str).collect()
        } else {
            self.relay_addrs.iter().map(String::as_str).collect()
        }
    }
}

config_struct! {
    /// `tunnel_tls`: how relays and direct peers are trusted. A certificate is accepted when
    /// its SHA-256 is one of `cert_fingerprints`, or when it chains to a public root and names
    /// the host. `insecure_skip_verify` accepts any, with a warning event each time a tunnel
    /// starts.
    #[derive(Clone, PartialEq, Debug)]
    pub struct TunnelTlsConfig with Default {
        /// SHA-256 of the relay's (or direct peer's) leaf certificate, hex, colons optional.
        cert_fingerprints: Vec<String> => list_if_any
            check = check::each(check::string(check::fingerprint));
        insecure_skip_verify: bool => default(false) [if |t: &TunnelTlsConfig| t.insecure_skip_verify];
    }
}

impl TunnelTlsConfig {
    /// The trust rule for `net::tls`.
    pub fn trust(&self) -> crate::net::tls::ServerTrust {
        let pins = self
            .cert_fingerprints
            .iter()
            .filter_map(|f| super::parse_fingerprint(f))
            .collect();
        crate::net::tls::ServerTrust::pins_or_webpki(pins, self.insecure_skip_verify)
    }

    pub fn is_empty(&self) -> bool {
        self.cert_fingerprints.is_empty() && !self.insecure_skip_verify
    }
}
