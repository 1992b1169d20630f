//! Socket setup shared by UDP/RTP inputs and outputs: binding, multicast membership, source
//! filtering, DSCP, TTL and buffer sizes. All through socket2. The sockets are plain
//! non-blocking std sockets, not registered with tokio's reactor: the packet path decides
//! when it wants to be woken ([`wake`] for inputs, `output::udp` for full send buffers).
//! [`mmsg`] has the batched syscalls of the packet path; [`gate`] holds back the wake-ups of
//! a TCP socket that a library owns (the in-process bridge worker's RTSP connection).
//! [`listener`] puts connection limits on every TCP listener, [`fdlimit`] raises the
//! descriptor limit they are derived from, [`outbound`] holds where the node may connect.
//! [`reconnect`] decides when a link that dials out (SRT and RTSP callers, the manager) retries;
//! [`tls`] says how a TLS peer it dials is trusted.

pub mod fdlimit;
pub mod gate;
pub mod listener;
pub mod mmsg;
pub mod outbound;
pub mod reconnect;
pub mod tls;
pub mod wake;

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use socket2::{Domain, Protocol, Socket, Type};

/// Socket buffer we ask for: a 100 Mbit/s stream fills 4 MiB in a third of a second, enough
/// to ride out a scheduling hiccup. The kernel caps it at `net.core.rmem_max`.
const BUFFER_BYTES: usize = 4 << 20;

/// A non-blocking UDP socket bound to `bind`, joined to the group when `bind` is multicast
/// (on `interface` when given). Multicast binds use the group address with SO_REUSEADDR so
/// several receivers on the host can join the same group.
pub fn bind_receiver(
    bind: SocketAddr,
    interface: Option<IpAddr>,
) -> io::Result<std::net::UdpSocket> {
    let socket = Socket::new(Domain::for_address(bind), Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_nonblocking(true)?;
    let _ = socket.set_recv_buffer_size(BUFFER_BYTES);
    if bind.ip().is_multicast() {
        socket.set_reuse_address(true)?;
    }
    socket.bind(&bind.into())?;
    match (bind.ip(), interface) {
        (IpAddr::V4(group), iface) if group.is_multicast() => {
            let iface = match iface {
                Some(IpAddr::V4(i)) => i,
                Some(IpAddr::V6(_)) => {
                    return Err(invalid("IPv4 group needs an IPv4 interface_addr"));
                }
                None => Ipv4Addr::UNSPECIFIED,
            };
            socket.join_multicast_v4(&group, &iface)?;
        }
        (IpAddr::V6(group), iface) if group.is_multicast() => {
            socket.join_multicast_v6(&group, interface_index(iface)?)?;
        }
        _ => {}
    }
    Ok(socket.into())
}

/// A non-blocking UDP socket for sending to `dest`: bound to `bind` (or an ephemeral port),
/// with DSCP set, and for a multicast destination the TTL/hop limit and outgoing interface.
///
/// It is deliberately not registered with tokio's reactor. Registration is edge-triggered for
/// read and write, and a UDP socket becomes writable again each time the kernel frees a sent
/// datagram, so every send would cost one more `epoll_wait` round of the runtime for nothing.
/// An output registers only while its socket buffer is full (`output::udp`).
pub fn bind_sender(
    dest: SocketAddr,
    bind: Option<SocketAddr>,
    interface: Option<IpAddr>,
    dscp: u8,
    ttl: u32,
) -> io::Result<std::net::UdpSocket> {
    let socket = Socket::new(Domain::for_address(dest), Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_nonblocking(true)?;
    let _ = socket.set_send_buffer_size(BUFFER_BYTES);
    let local = bind.unwrap_or(match dest {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    });
    socket.bind(&local.into())?;
    // DSCP is the top six bits of the TOS / traffic class byte.
    let tos = u32::from(dscp) << 2;
    match dest {
        SocketAddr::V4(d) => {
            socket.set_tos(tos)?;
            if d.ip().is_multicast() {
                socket.set_multicast_ttl_v4(ttl)?;
                if let Some(IpAddr::V4(i)) = interface {
                    socket.set_multicast_if_v4(&i)?;
                }
            }
        }
        SocketAddr::V6(d) => {
            socket.set_tclass_v6(tos)?;
            if d.ip().is_multicast() {
                socket.set_multicast_hops_v6(ttl)?;
                socket.set_multicast_if_v6(interface_index(interface)?)?;
            }
        }
    }
    Ok(socket.into())
}

/// The index of the interface that holds address `ip` (0 = let the kernel choose).
fn interface_index(ip: Option<IpAddr>) -> io::Result<u32> {
    let Some(ip) = ip else { return Ok(0) };
    crate::sys::interface_index_of(ip)?
        .filter(|&i| i != 0)
        .ok_or_else(|| invalid("no interface holds interface_addr"))
}

fn invalid(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::rt;
    use socket2::SockRef;

    #[test]
    fn sender_sets_dscp_and_multicast_ttl() {
        rt().block_on(async {
            let s = bind_sender(
                "239.255.10.1:5000".parse().unwrap(),
                None,
                Some("127.0.0.1".parse().unwrap()),
                46,
                7,
            )
            .unwrap();
            let r = SockRef::from(&s);
            assert_eq!(r.tos().unwrap(), 46 << 2, "DSCP EF in the TOS byte");
            assert_eq!(r.multicast_ttl_v4().unwrap(), 7);
            assert_eq!(r.multicast_if_v4().unwrap(), Ipv4Addr::LOCALHOST);
            let s = bind_sender("[::1]:5000".parse().unwrap(), None, None, 10, 1).unwrap();
            assert_eq!(SockRef::from(&s).tclass_v6().unwrap(), 10 << 2);
        });
    }

    #[test]
    fn multicast_receiver_gets_group_traffic_on_loopback() {
        rt().block_on(async {
            let group: SocketAddr = "239.255.10.2:0".parse().unwrap();
            // Port 0 would give the group an arbitrary port; pick one first.
            let port = std::net::UdpSocket::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let group = SocketAddr::new(group.ip(), port);
            let rx = bind_receiver(group, Some("127.0.0.1".parse().unwrap())).unwrap();
            let rx = tokio::net::UdpSocket::from_std(rx).unwrap();
            let tx = bind_sender(group, None, Some("127.0.0.1".parse().unwrap()), 0, 1).unwrap();
            tx.send_to(b"hello", group).unwrap();
            let mut buf = [0u8; 16];
            let n = tokio::time::timeout(std::time::Duration::from_secs(5), rx.recv(&mut buf))
                .await
                .expect("multicast datagram within 5 s")
                .unwrap();
            assert_eq!(&buf[..n], b"hello");
        });
    }

    #[test]
    fn mismatched_interface_family_is_an_error() {
        rt().block_on(async {
            let err = bind_receiver(
                "239.255.10.3:5000".parse().unwrap(),
                Some("::1".parse().unwrap()),
            )
            .unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        });
    }
}
