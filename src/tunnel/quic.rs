//! QUIC endpoints and their configs, as `shared/spec/relay-protocol.md` writes them: ALPN
//! `bilbycast-relay` to a relay (SNI its host name, or `relay` when it is given as an IP
//! address), ALPN `bilbycast-direct` between edges (SNI `bilbycast-edge`), keep-alive 5 s,
//! idle timeout 25 s, datagrams on with a bounded receive buffer.
//!
//! Certificates are trusted by `tunnel_tls` (`net::tls`); the direct server presents the
//! certificate of `cert.rs`.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{ClientConfig, Endpoint, IdleTimeout, ServerConfig, TransportConfig, VarInt};

use super::cert::ServerCert;
use crate::net::outbound::split_host_port;
use crate::net::tls::{ServerTrust, TlsError, client_config};

pub const ALPN_RELAY: &[u8] = b"bilbycast-relay";
pub const ALPN_DIRECT: &[u8] = b"bilbycast-direct";
/// SNI to a relay given by address, and the direct client's SNI.
pub const SNI_RELAY: &str = "relay";
pub const SNI_DIRECT: &str = super::cert::SERVER_NAME;

pub const KEEP_ALIVE: Duration = Duration::from_secs(5);
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(25);
/// Datagrams received and not yet read by the data plane: about 700 full-size ones, some
/// 250 ms of a 20 Mbit/s stream. Beyond it quinn drops the oldest, which is what a stalled
/// UDP consumer should see.
pub const DATAGRAM_RECEIVE_BUFFER: usize = 1 << 20;
/// Datagrams queued for sending: the same bound on the way out.
pub const DATAGRAM_SEND_BUFFER: usize = 1 << 20;
/// TCP connections a peer may have open on one tunnel at once (one QUIC stream each).
pub const MAX_BIDI_STREAMS: u32 = 256;
/// Relay-opened notification streams in flight (one message each, closed at once).
pub const MAX_UNI_STREAMS: u32 = 16;

#[derive(Debug)]
pub enum QuicError {
    Tls(TlsError),
    /// The rustls config lacks the TLS 1.3 suite QUIC's initial packets need.
    Suite(quinn::crypto::rustls::NoInitialCipherSuite),
    /// The server's certificate or key was refused by rustls.
    Cert(rustls::Error),
    /// The UDP socket of the endpoint could not be bound.
    Bind {
        addr: SocketAddr,
        error: std::io::Error,
    },
}

impl fmt::Display for QuicError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QuicError::Tls(e) => write!(f, "{e}"),
            QuicError::Suite(e) => write!(f, "QUIC TLS setup: {e}"),
            QuicError::Cert(e) => write!(f, "tunnel certificate: {e}"),
            QuicError::Bind { addr, error } => write!(f, "cannot bind QUIC on {addr}: {error}"),
        }
    }
}

impl std::error::Error for QuicError {}

/// The transport both ends use.
/// The UDP payload size a connection starts with: what a 1 500-byte Ethernet path carries
/// (IPv6 headers included). quinn's default, 1 200, leaves a datagram about 1 150 bytes, less
/// than one 7-packet TS datagram (1 316 + 44 bytes of tunnel framing): until MTU discovery
/// had raised it, every datagram of a stream right after a (re)connect would be dropped. A
/// path narrower than this loses packets, which quinn's black-hole detection notices and
/// answers by falling back to 1 200.
pub const INITIAL_MTU: u16 = 1452;

pub fn transport() -> Arc<TransportConfig> {
    let mut t = TransportConfig::default();
    t.keep_alive_interval(Some(KEEP_ALIVE))
        .max_idle_timeout(Some(
            IdleTimeout::try_from(IDLE_TIMEOUT).expect("25 s is a valid idle timeout"),
        ))
        .datagram_receive_buffer_size(Some(DATAGRAM_RECEIVE_BUFFER))
        .datagram_send_buffer_size(DATAGRAM_SEND_BUFFER)
        .max_concurrent_bidi_streams(VarInt::from_u32(MAX_BIDI_STREAMS))
        .max_concurrent_uni_streams(VarInt::from_u32(MAX_UNI_STREAMS))
        .initial_mtu(INITIAL_MTU);
    Arc::new(t)
}

/// A client config trusting servers by `trust`, offering `alpn`.
pub fn client(trust: &ServerTrust, alpn: &[u8]) -> Result<ClientConfig, QuicError> {
    let mut tls = client_config(trust).map_err(QuicError::Tls)?;
    tls.alpn_protocols = vec![alpn.to_vec()];
    let crypto = QuicClientConfig::try_from(tls).map_err(QuicError::Suite)?;
    let mut config = ClientConfig::new(Arc::new(crypto));
    config.transport_config(transport());
    Ok(config)
}

/// The direct-mode server's config: its own certificate, ALPN `bilbycast-direct`.
pub fn direct_server(cert: &ServerCert) -> Result<ServerConfig, QuicError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(QuicError::Cert)?
        .with_no_client_auth()
        .with_single_cert(vec![cert.cert.clone()], cert.key.clone_key())
        .map_err(QuicError::Cert)?;
    tls.alpn_protocols = vec![ALPN_DIRECT.to_vec()];
    let crypto = QuicServerConfig::try_from(tls).map_err(QuicError::Suite)?;
    let mut config = ServerConfig::with_crypto(Arc::new(crypto));
    config.transport_config(transport());
    Ok(config)
}

/// The SNI for a relay given as `host:port`: the host when it is a name, else `relay`.
pub fn relay_sni(host_port: &str) -> &str {
    let host = split_host_port(host_port).map_or(host_port, |(host, _port)| host);
    if host.is_empty() || host.parse::<IpAddr>().is_ok() {
        SNI_RELAY
    } else {
        host
    }
}

/// A client endpoint on an ephemeral port of `remote`'s address family.
pub fn client_endpoint(remote: SocketAddr) -> Result<Endpoint, QuicError> {
    let addr = match remote {
        SocketAddr::V4(_) => SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
        SocketAddr::V6(_) => SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)),
    };
    endpoint(addr, None)
}

/// A server endpoint on `addr` (the direct-mode ingress edge).
pub fn server_endpoint(config: ServerConfig, addr: SocketAddr) -> Result<Endpoint, QuicError> {
    endpoint(addr, Some(config))
}

/// UDP buffers of the endpoint's socket: quinn leaves the kernel's default (some 200 KiB),
/// which a burst of a 20 Mbit/s stream and its acknowledgements can fill while the task is
/// busy; the flows' sockets ask for the same (`net`).
const SOCKET_BUFFER: usize = 4 << 20;

fn endpoint(addr: SocketAddr, server: Option<ServerConfig>) -> Result<Endpoint, QuicError> {
    use socket2::{Domain, Protocol, Socket, Type};
    let bind = |error| QuicError::Bind { addr, error };
    let socket =
        Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP)).map_err(bind)?;
    // The kernel caps them (`net.core.rmem_max`, `wmem_max`); a smaller buffer still works.
    let _ = socket.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = socket.set_send_buffer_size(SOCKET_BUFFER);
    socket.bind(&addr.into()).map_err(bind)?;
    Endpoint::new(
        quinn::EndpointConfig::default(),
        server,
        socket.into(),
        Arc::new(quinn::TokioRuntime),
    )
    .map_err(bind)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relay_sni_is_the_host_name_else_relay() {
        assert_eq!(relay_sni("relay.example:4433"), "relay.example");
        assert_eq!(relay_sni("203.0.113.7:4433"), "relay");
        assert_eq!(relay_sni("[2001:db8::1]:4433"), "relay");
        assert_eq!(relay_sni("localhost:4433"), "localhost");
    }

    #[test]
    fn configs_build() {
        client(&ServerTrust::Insecure, ALPN_RELAY).unwrap();
        client(&ServerTrust::PinOrWebPki(vec![[1; 32]]), ALPN_DIRECT).unwrap();
        let dir = super::super::cert::tests::Dir::new("quic-configs");
        let cert = super::super::cert::load_or_create(&dir.0).unwrap();
        direct_server(&cert).unwrap();
    }
}
