//! SRT plumbing shared by the SRT input and output: turning an `SrtConfig` into srt-tokio
//! options, binding UDP sockets at flow start, and the sans-IO parts that decide things
//! (the callers' reconnect values for `net::reconnect`, stale-connection detection, the
//! 2022-7 merge in `merge`).
//!
//! srt-tokio (a patched 0.4.4 in `vendor/srt-tokio`, see docs/srt.md) does the protocol.

#[cfg(test)]
mod loss_sim;
pub mod merge;

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use srt_tokio::options::{KeySize, Passphrase, SocketOptions};

use crate::config::{SrtConfig, SrtMode};
use crate::net::reconnect::{Backoff, Reconnect};

/// How long a caller (or rendezvous) waits for its handshake before the attempt fails.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Sender buffer in packets (see `Endpoint::options`).
const SEND_BUFFER_PACKETS: u64 = 4096;
/// UDP socket buffers for SRT sockets: the same 4 MiB as quoll's UDP sockets.
const UDP_BUFFER: usize = 4 << 20;

/// Why an SRT endpoint could not be set up or connect, saying what and where.
#[derive(Debug)]
pub enum SrtError {
    /// A config field did not parse (validation should have caught it).
    BadConfig { field: &'static str, value: String },
    /// The UDP socket could not be bound.
    Bind { addr: SocketAddr, source: io::Error },
    /// srt-tokio refused the options (e.g. a passphrase it does not take).
    Options(String),
    /// A caller's handshake got no answer in time.
    Timeout { remote: SocketAddr },
    /// The peer rejected the handshake (wrong passphrase, stream id, busy listener...).
    Rejected { remote: SocketAddr, reason: String },
    /// Any other failure while connecting.
    Connect {
        remote: SocketAddr,
        source: io::Error,
    },
    /// A listener refused callers during the handshake (count of refusals so far).
    CallerRejected { local: SocketAddr, count: u64 },
}

impl fmt::Display for SrtError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SrtError::BadConfig { field, value } => write!(f, "{field}: {value:?} is not valid"),
            SrtError::Bind { addr, source } => write!(f, "cannot bind UDP {addr}: {source}"),
            SrtError::Options(e) => write!(f, "SRT options refused: {e}"),
            SrtError::Timeout { remote } => {
                write!(
                    f,
                    "no handshake answer from {remote} within {CONNECT_TIMEOUT:?}"
                )
            }
            SrtError::Rejected { remote, reason } => {
                write!(f, "{remote} rejected the connection: {reason}")
            }
            SrtError::Connect { remote, source } => write!(f, "connecting to {remote}: {source}"),
            SrtError::CallerRejected { local, count } => write!(
                f,
                "listener {local} rejected a caller's handshake (wrong or missing passphrase?); {count} so far"
            ),
        }
    }
}

impl std::error::Error for SrtError {}

impl SrtError {
    /// Classify an error returned by srt-tokio's `call` / `rendezvous`.
    pub fn from_connect(remote: SocketAddr, e: io::Error) -> Self {
        match e.kind() {
            io::ErrorKind::TimedOut => SrtError::Timeout { remote },
            io::ErrorKind::ConnectionRefused => SrtError::Rejected {
                remote,
                reason: e.to_string(),
            },
            _ => SrtError::Connect { remote, source: e },
        }
    }
}

/// One leg, with the addresses it runs on.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub mode: SrtMode,
    pub local: SocketAddr,
    pub remote: Option<SocketAddr>,
    pub cfg: SrtConfig,
}

impl Endpoint {
    /// One leg (its `redundancy` is ignored here). The addresses are typed already; a
    /// caller or rendezvous leg without `remote_addr` (a config not validated) is an error.
    pub fn parse(cfg: &SrtConfig) -> Result<Self, SrtError> {
        let local = cfg.local_addr;
        let remote = match (cfg.remote_addr, cfg.mode) {
            (_, SrtMode::Listener) => None,
            (Some(r), _) => Some(r),
            (None, _) => {
                return Err(SrtError::BadConfig {
                    field: "remote_addr",
                    value: String::new(),
                });
            }
        };
        let mut cfg = cfg.clone();
        cfg.redundancy = None;
        Ok(Endpoint {
            mode: cfg.mode,
            local,
            remote,
            cfg,
        })
    }

    /// Both legs of a config: one, or two with `redundancy`.
    pub fn legs(cfg: &SrtConfig) -> Result<Vec<Endpoint>, SrtError> {
        let mut legs = vec![Endpoint::parse(cfg)?];
        if let Some(leg) = &cfg.redundancy {
            legs.push(Endpoint::parse(leg)?);
        }
        Ok(legs)
    }

    /// srt-tokio socket options for this leg.
    pub fn options(&self) -> Result<SocketOptions, SrtError> {
        let c = &self.cfg;
        let mut o = SocketOptions::default();
        o.connect.local = self.local;
        o.connect.timeout = CONNECT_TIMEOUT;
        o.connect.udp_recv_buffer_size = srt_tokio::options::ByteCount(UDP_BUFFER as u64);
        o.connect.udp_send_buffer_size = srt_tokio::options::ByteCount(UDP_BUFFER as u64);
        let latency = Duration::from_millis(c.latency_ms);
        o.sender.peer_latency = latency;
        o.receiver.latency = latency;
        o.session.peer_idle_timeout = Duration::from_secs(c.peer_idle_timeout_secs);
        // srt-tokio's default send buffer is 46 592 bytes: 32 packets. Every packet not yet
        // acknowledged beyond that is dropped from the buffer (receivers log RCV-DROPPED),
        // which a burst or a 10 ms ACK interval at 20 Mbit/s already exceeds. libsrt's
        // default is 8192 packets; 4096 (6 MB at most, 2.4 s at 20 Mbit/s) bounds memory.
        o.sender.buffer_size = srt_tokio::options::ByteCount(SEND_BUFFER_PACKETS * 1456);
        if let Some(p) = &c.passphrase {
            o.encryption.passphrase = Some(
                Passphrase::try_from(p.clone()).map_err(|e| SrtError::Options(e.to_string()))?,
            );
            o.encryption.key_size = match c.aes_key_len {
                // libsrt's rule (SRTO_PBKEYLEN 0): a listener without a key length takes the
                // caller's (the patched handshake adopts it when Unspecified); a caller or a
                // rendezvous peer advertises AES-128.
                None if self.mode == SrtMode::Listener => KeySize::Unspecified,
                None | Some(16) => KeySize::AES128,
                Some(24) => KeySize::AES192,
                Some(32) => KeySize::AES256,
                Some(k) => {
                    return Err(SrtError::BadConfig {
                        field: "aes_key_len",
                        value: k.to_string(),
                    });
                }
            };
        }
        Ok(o)
    }

    /// Binds this leg's UDP socket now (the flow-start check), as srt-tokio would.
    pub fn bind(&self) -> Result<tokio::net::UdpSocket, SrtError> {
        bind_udp(self.local).map_err(|source| SrtError::Bind {
            addr: self.local,
            source,
        })
    }
}

fn bind_udp(local: SocketAddr) -> io::Result<tokio::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let domain = if local.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    let s = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    s.set_nonblocking(true)?;
    // Best effort: capped by net.core.{r,w}mem_max.
    let _ = s.set_recv_buffer_size(UDP_BUFFER);
    let _ = s.set_send_buffer_size(UDP_BUFFER);
    s.bind(&local.into())?;
    tokio::net::UdpSocket::from_std(s.into())
}

/// A caller's first retry after a failed attempt or a drop (input and output).
pub const RETRY_FIRST: Duration = Duration::from_millis(250);
/// The longest wait between a caller's attempts.
pub const RETRY_MAX: Duration = Duration::from_secs(5);

/// A caller's reconnect machine: 250 ms doubling to 5 s, no jitter (a handful of callers per
/// node, each to its own peer), back-off started afresh after a connection that lasted
/// `stable_after`. No connect deadline of its own: srt-tokio's handshake has
/// [`CONNECT_TIMEOUT`], and a rendezvous waits for its peer as long as it takes.
pub fn reconnect(stable_after: Duration, now: Instant) -> Reconnect {
    Reconnect::new(Backoff::new(RETRY_FIRST, RETRY_MAX), stable_after, now)
}

/// Stale-connection detection for a sending connection: the peer has stopped
/// acknowledging although we keep sending. SRT receivers ACK every 10 ms, so a connection
/// that sent data and got no ACK for `timeout` is dead even if srt-tokio has not noticed
/// (its peer idle timeout is longer, or the peer answers keepalives only).
/// Sans-IO: fed counters and the time.
#[derive(Debug, Clone)]
pub struct StaleDetector {
    timeout: Duration,
    acks: u64,
    sent: u64,
    /// When ACKs last advanced (or the detector started).
    last_ack: Instant,
    /// Sent-data count when ACKs last advanced.
    sent_at_last_ack: u64,
}

impl StaleDetector {
    /// Default: no ACK for 5 s while data is being sent.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

    pub fn new(timeout: Duration, now: Instant) -> Self {
        StaleDetector {
            timeout,
            acks: 0,
            sent: 0,
            last_ack: now,
            sent_at_last_ack: 0,
        }
    }

    /// Feed the cumulative counters (ACKs received, data packets sent). True when stale.
    pub fn update(&mut self, now: Instant, acks: u64, sent: u64) -> bool {
        if acks != self.acks {
            self.acks = acks;
            self.last_ack = now;
            self.sent_at_last_ack = sent;
        }
        self.sent = sent;
        self.sent > self.sent_at_last_ack
            && now.saturating_duration_since(self.last_ack) >= self.timeout
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Vendored srt-protocol, QUOLL PATCH 20: key material that carries no key (KF 00) is
    /// refused when parsed. It used to reach the key unwrap and panic, which under
    /// `panic = "abort"` ended the process on one caller's handshake (the fuzz target's
    /// reproducer is in fuzz/seeds/srt_listener_handshake).
    #[test]
    fn key_material_without_a_key_is_a_parse_error() {
        use srt_protocol::packet::*;
        let km = KeyingMaterialMessage {
            pt: PacketType::KeyingMaterial,
            key_flags: KeyFlags::EVEN,
            keki: 0,
            cipher: CipherType::Ctr,
            auth: Auth::None,
            salt: vec![7; 16],
            wrapped_keys: vec![9; 24],
        };
        let packet = Packet::Control(ControlPacket {
            timestamp: TimeStamp::from_micros(1),
            dest_sockid: SocketId(1),
            control_type: ControlTypes::Srt(SrtControlPacket::KeyRefreshRequest(km)),
        });
        let mut bytes = Vec::new();
        packet.serialize(&mut bytes);
        assert_eq!(Packet::parse(&mut &bytes[..], false).unwrap(), packet);
        // The control header is 16 bytes; the key flags are the low bits of the message's
        // fourth byte.
        bytes[16 + 3] &= !0b11;
        assert_eq!(
            Packet::parse(&mut &bytes[..], false),
            Err(PacketParseError::BadSrtExtensionMessage)
        );
    }

    #[test]
    fn callers_back_off_from_250_ms_doubling_to_5_s() {
        let t0 = Instant::now();
        let mut r = reconnect(Duration::from_secs(10), t0);
        let mut now = t0;
        let mut got = Vec::new();
        for _ in 0..8 {
            r.poll(now);
            let d = r.failed(now, "timeout");
            got.push(d.delay.as_millis() as u64);
            now = d.retry_at;
        }
        assert_eq!(got, [250, 500, 1000, 2000, 4000, 5000, 5000, 5000]);
    }

    #[test]
    fn stale_only_when_sending_without_acks_for_the_timeout() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut d = StaleDetector::new(Duration::from_secs(5), t0);
        // Idle (nothing sent): never stale, however long.
        assert!(!d.update(ms(60_000), 0, 0));
        // Sending and ACKed: fine.
        let mut acks = 0;
        for i in 1..=100 {
            acks += 1;
            assert!(!d.update(ms(60_000 + i * 100), acks, i * 10));
        }
        // ACKs stop while data still goes out.
        assert!(!d.update(ms(70_000 + 4_900), acks, 2_000));
        assert!(d.update(ms(70_000 + 5_000), acks, 2_100));
        // One ACK revives it.
        assert!(!d.update(ms(80_000), acks + 1, 2_200));
    }

    #[test]
    fn stale_needs_data_sent_after_the_last_ack() {
        let t0 = Instant::now();
        let mut d = StaleDetector::new(Duration::from_secs(1), t0);
        assert!(!d.update(t0 + Duration::from_millis(10), 5, 100));
        // No new data since that ACK: a quiet source, not a dead peer.
        assert!(!d.update(t0 + Duration::from_secs(10), 5, 100));
        assert!(d.update(t0 + Duration::from_secs(11), 5, 101));
    }

    #[test]
    fn options_map_the_config() {
        let mut c = SrtConfig::new(SrtMode::Caller, "127.0.0.1:0".parse().unwrap());
        c.remote_addr = Some("127.0.0.1:9000".parse().unwrap());
        c.latency_ms = 300;
        c.peer_idle_timeout_secs = 7;
        c.passphrase = Some("0123456789".into());
        c.aes_key_len = Some(32);
        let e = Endpoint::parse(&c).unwrap();
        let o = e.options().unwrap();
        assert_eq!(o.receiver.latency, Duration::from_millis(300));
        assert_eq!(o.sender.peer_latency, Duration::from_millis(300));
        assert_eq!(o.session.peer_idle_timeout, Duration::from_secs(7));
        assert_eq!(o.encryption.key_size, KeySize::AES256);
        assert_eq!(e.remote, Some("127.0.0.1:9000".parse().unwrap()));
        // No key length: a caller advertises AES-128, a listener takes the caller's.
        c.aes_key_len = None;
        let o = Endpoint::parse(&c).unwrap().options().unwrap();
        assert_eq!(o.encryption.key_size, KeySize::AES128);
        let mut l = c.clone();
        l.mode = SrtMode::Listener;
        let o = Endpoint::parse(&l).unwrap().options().unwrap();
        assert_eq!(o.encryption.key_size, KeySize::Unspecified);
        l.aes_key_len = Some(24);
        let o = Endpoint::parse(&l).unwrap().options().unwrap();
        assert_eq!(o.encryption.key_size, KeySize::AES192);
        // A bad key length never panics: it is an error.
        c.aes_key_len = Some(20);
        assert!(matches!(
            Endpoint::parse(&c).unwrap().options(),
            Err(SrtError::BadConfig {
                field: "aes_key_len",
                ..
            })
        ));
    }
}
