//! Where the node may connect or send to: `security.outbound_allow`, a list of CIDRs.
//!
//! Why: flows are created through the API and by the manager, and an RTSP input, an SRT
//! caller or a UDP output makes the node open connections or send packets to whatever
//! address the caller wrote. Without a limit the API can be used to probe the networks the
//! box sits on (connect errors and timings tell open from closed ports). With the list set,
//! every destination must fall inside one of its networks; absent, nothing is restricted
//! (the behaviour before the list existed).
//!
//! Literal addresses are refused by validation, with their JSON path (`config::validate`).
//! A host name can only be checked when it is resolved, at connect time: [`resolve`]
//! resolves it, keeps the addresses the list permits, and the caller connects to that
//! address, not to the name again, so a name that resolves differently the second time (DNS
//! rebinding) cannot slip past. A later push target (RTMP, HLS, WHIP) calls [`resolve`] or
//! [`AllowList::check`] the same way.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

/// One network: an address and a prefix length, `10.0.0.0/8`, `2001:db8::/32`, or a bare
/// address (`/32`, `/128`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Result<Cidr, CidrError> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let net: IpAddr = addr
            .parse()
            .map_err(|_| CidrError::NotAnAddress(s.to_owned()))?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => match p.parse::<u8>() {
                Ok(n) if n <= max => n,
                _ => {
                    return Err(CidrError::Prefix {
                        input: s.to_owned(),
                        max,
                    });
                }
            },
        };
        if mask(net, prefix) != net {
            // 10.1.2.3/8 is most likely a typo for a host or for 10.0.0.0/8: say which.
            return Err(CidrError::HostBits {
                input: s.to_owned(),
                network: Cidr {
                    net: mask(net, prefix),
                    prefix,
                },
            });
        }
        Ok(Cidr { net, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        ip.is_ipv4() == self.net.is_ipv4() && mask(ip, self.prefix) == self.net
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.net, self.prefix)
    }
}

/// Why an entry of `security.outbound_allow` is not a network (each with the entry as written).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CidrError {
    /// The part before `/` is not an IP address (a name, a typo).
    NotAnAddress(String),
    /// The prefix length is not a number up to `max` (32 or 128).
    Prefix { input: String, max: u8 },
    /// Bits below the prefix are set: `network` is what the prefix leaves.
    HostBits { input: String, network: Cidr },
}

impl fmt::Display for CidrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CidrError::NotAnAddress(input) => write!(
                f,
                "{input:?} is not a CIDR (expected e.g. 10.0.0.0/8 or 2001:db8::/32)"
            ),
            CidrError::Prefix { input, max } => {
                write!(f, "{input:?}: prefix length must be 0 to {max}")
            }
            CidrError::HostBits { input, network } => {
                write!(f, "{input:?} has host bits set (the network is {network})")
            }
        }
    }
}

impl std::error::Error for CidrError {}

fn mask(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4);
            let m = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4((bits & m).into())
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let m = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6((bits & m).into())
        }
    }
}

/// The networks destinations must fall in. Empty: no destination at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowList {
    nets: Vec<Cidr>,
}

/// The policy a connecting piece is given: `None` is no restriction.
pub type Policy = Option<Arc<AllowList>>;

impl AllowList {
    /// Every entry parsed, or each bad one with its index.
    pub fn parse(entries: &[String]) -> Result<AllowList, Vec<(usize, CidrError)>> {
        let mut nets = Vec::with_capacity(entries.len());
        let mut bad = Vec::new();
        for (i, e) in entries.iter().enumerate() {
            match Cidr::parse(e.trim()) {
                Ok(c) => nets.push(c),
                Err(why) => bad.push((i, why)),
            }
        }
        if bad.is_empty() {
            Ok(AllowList { nets })
        } else {
            Err(bad)
        }
    }

    /// The running config's policy from `security.outbound_allow` (`None`: absent). Only
    /// called on validated configs; an entry that does not parse would have been refused,
    /// and is left out here.
    pub fn from_entries(entries: Option<&[String]>) -> Policy {
        let entries = entries?;
        let nets = entries
            .iter()
            .filter_map(|e| Cidr::parse(e.trim()).ok())
            .collect();
        Some(Arc::new(AllowList { nets }))
    }

    pub fn permits(&self, ip: IpAddr) -> bool {
        self.nets.iter().any(|n| n.contains(ip))
    }

    /// `ip` for a connection to `host` (as written, for the message).
    pub fn check(&self, host: &str, ip: IpAddr) -> Result<(), OutboundError> {
        if self.permits(ip) {
            Ok(())
        } else {
            Err(OutboundError::Refused {
                host: host.to_owned(),
                addrs: vec![ip],
            })
        }
    }

    /// Of the addresses `host` resolved to, the first the list permits.
    pub fn pick(&self, host: &str, resolved: &[SocketAddr]) -> Result<SocketAddr, OutboundError> {
        resolved
            .iter()
            .copied()
            .find(|a| self.permits(a.ip()))
            .ok_or_else(|| OutboundError::Refused {
                host: host.to_owned(),
                addrs: resolved.iter().map(SocketAddr::ip).collect(),
            })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutboundError {
    /// None of the destination's addresses is in `security.outbound_allow`.
    Refused { host: String, addrs: Vec<IpAddr> },
    /// The name did not resolve.
    Resolve { host: String, error: String },
}

impl fmt::Display for OutboundError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OutboundError::Refused { host, addrs } => {
                let list: Vec<String> = addrs.iter().map(ToString::to_string).collect();
                let literal = addrs.len() == 1 && list[0] == *host;
                if literal {
                    write!(f, "{host} is not in security.outbound_allow")
                } else if addrs.is_empty() {
                    write!(f, "{host} resolves to no address")
                } else {
                    write!(
                        f,
                        "{host} resolves to {}, none of it in security.outbound_allow",
                        list.join(", ")
                    )
                }
            }
            OutboundError::Resolve { host, error } => write!(f, "cannot resolve {host}: {error}"),
        }
    }
}

impl std::error::Error for OutboundError {}

/// `host:port` (a name, an IPv4 address, or an IPv6 one in brackets) as its host, without
/// brackets, and port; `None` without a port.
pub fn split_host_port(s: &str) -> Option<(&str, u16)> {
    let (host, port) = s.rsplit_once(':')?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    Some((host, port.parse().ok()?))
}

/// The address to connect to for `host:port` under `policy`: a literal address is checked,
/// a name is resolved and the first permitted address returned. Without a policy a literal
/// is returned as is and a name resolved as the system would.
pub async fn resolve(
    policy: Option<&AllowList>,
    host: &str,
    port: u16,
) -> Result<SocketAddr, OutboundError> {
    // `[::1]` as a URL writes it.
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        if let Some(p) = policy {
            p.check(bare, ip)?;
        }
        return Ok(SocketAddr::new(ip, port));
    }
    let resolved: Vec<SocketAddr> = tokio::net::lookup_host((bare, port))
        .await
        .map_err(|e| OutboundError::Resolve {
            host: bare.to_owned(),
            error: e.to_string(),
        })?
        .collect();
    match policy {
        Some(p) => p.pick(bare, &resolved),
        None => resolved
            .first()
            .copied()
            .ok_or_else(|| OutboundError::Refused {
                host: bare.to_owned(),
                addrs: Vec::new(),
            }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(entries: &[&str]) -> AllowList {
        AllowList::parse(&entries.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn host_port_splits_names_and_both_families() {
        assert_eq!(
            split_host_port("relay.example:4433"),
            Some(("relay.example", 4433))
        );
        assert_eq!(split_host_port("10.0.0.1:9"), Some(("10.0.0.1", 9)));
        assert_eq!(
            split_host_port("[2001:db8::1]:4433"),
            Some(("2001:db8::1", 4433))
        );
        assert_eq!(split_host_port("relay.example"), None);
        assert_eq!(split_host_port("relay:99999"), None);
    }

    #[test]
    fn cidrs_parse_and_match_both_families() {
        let l = list(&["10.0.0.0/8", "192.0.2.7", "2001:db8::/32", "::1"]);
        for yes in [
            "10.1.2.3",
            "10.255.255.255",
            "192.0.2.7",
            "2001:db8:ffff::1",
            "::1",
        ] {
            assert!(l.permits(ip(yes)), "{yes}");
        }
        for no in ["11.0.0.1", "192.0.2.8", "2001:db9::1", "::2", "127.0.0.1"] {
            assert!(!l.permits(ip(no)), "{no}");
        }
        // An IPv4 host written as an IPv4-mapped IPv6 address is that host.
        assert!(l.permits(ip("::ffff:10.0.0.1")));
        assert!(!l.permits(ip("::ffff:11.0.0.1")));
    }

    #[test]
    fn zero_prefix_allows_a_whole_family_and_empty_allows_nothing() {
        let v4 = list(&["0.0.0.0/0"]);
        assert!(v4.permits(ip("203.0.113.9")));
        assert!(!v4.permits(ip("2001:db8::1")));
        let none = list(&[]);
        assert!(!none.permits(ip("127.0.0.1")));
    }

    #[test]
    fn bad_entries_are_named_by_index() {
        let entries: Vec<String> = [
            "10.0.0.0/8",
            "10.0.0.0/33",
            "example.com",
            "10.1.2.3/8",
            "::/129",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let bad = AllowList::parse(&entries).unwrap_err();
        let idx: Vec<usize> = bad.iter().map(|(i, _)| *i).collect();
        assert_eq!(idx, [1, 2, 3, 4]);
        assert_eq!(
            bad[0].1,
            CidrError::Prefix {
                input: "10.0.0.0/33".into(),
                max: 32
            }
        );
        assert_eq!(
            bad[0].1.to_string(),
            "\"10.0.0.0/33\": prefix length must be 0 to 32"
        );
        assert!(
            bad[1].1.to_string().contains("is not a CIDR"),
            "{}",
            bad[1].1
        );
        assert_eq!(
            bad[2].1.to_string(),
            "\"10.1.2.3/8\" has host bits set (the network is 10.0.0.0/8)"
        );
    }

    #[test]
    fn pick_takes_the_first_permitted_address_of_a_name() {
        let l = list(&["192.0.2.0/24"]);
        let resolved: Vec<SocketAddr> = vec![
            "198.51.100.1:554".parse().unwrap(),
            "192.0.2.10:554".parse().unwrap(),
        ];
        assert_eq!(l.pick("cam", &resolved).unwrap(), resolved[1]);
        let e = l.pick("cam", &resolved[..1]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "cam resolves to 198.51.100.1, none of it in security.outbound_allow"
        );
        assert_eq!(
            l.check("10.0.0.1", ip("10.0.0.1")).unwrap_err().to_string(),
            "10.0.0.1 is not in security.outbound_allow"
        );
    }

    #[test]
    fn resolve_checks_literals_and_names() {
        crate::testing::rt().block_on(async {
            let l = list(&["127.0.0.0/8"]);
            assert_eq!(
                resolve(Some(&l), "127.0.0.1", 554).await.unwrap(),
                "127.0.0.1:554".parse().unwrap()
            );
            assert!(resolve(Some(&l), "[::1]", 554).await.is_err());
            assert!(resolve(None, "[::1]", 554).await.is_ok());
            // `localhost` comes from /etc/hosts: no network needed.
            let a = resolve(Some(&l), "localhost", 554).await.unwrap();
            assert!(a.ip().is_loopback() && a.is_ipv4(), "{a}");
            let none = list(&["192.0.2.0/24"]);
            let e = resolve(Some(&none), "localhost", 554).await.unwrap_err();
            assert!(
                e.to_string().starts_with("localhost resolves to ")
                    && e.to_string()
                        .ends_with("none of it in security.outbound_allow"),
                "{e}"
            );
        });
    }
}
