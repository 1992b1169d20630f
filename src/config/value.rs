//! The typed values of the config model: addresses and modes that are written as JSON
//! strings but held as what they mean ("parse, don't validate"). The reader parses each
//! once (`json.rs`, `Obj::parsed*`), reporting a value that does not parse at its own path
//! with the message validation used to give; the writer writes the canonical text back
//! (`Display` of an address, the mode's name), which is the text of every address and mode
//! written the usual way, so a valid config round-trips unchanged. The code that runs a
//! config takes the typed value: nothing parses it a second time.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};

use super::error::quoted;

/// A config value read from a JSON string.
pub(crate) trait ConfigValue: Sized {
    /// Stands in for a required value that did not parse, so the rest of its block (and of
    /// the document) can still be read and checked. A block holding one is left out of the
    /// rules between fields (`validate.rs`): the stand-in would mislead them.
    const STAND_IN: Self;

    /// The value, or the complete message (it starts with the quoted text).
    fn from_text(s: &str) -> Result<Self, String>;

    /// The canonical text, as written back.
    fn to_text(&self) -> String;
}

impl ConfigValue for SocketAddr {
    const STAND_IN: Self = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0));

    fn from_text(s: &str) -> Result<Self, String> {
        s.parse().map_err(|_| {
            format!(
                "{} is not a socket address (expected ip:port, e.g. 239.1.1.1:5000 or [ff0e::1]:5000)",
                quoted(s)
            )
        })
    }

    fn to_text(&self) -> String {
        self.to_string()
    }
}

impl ConfigValue for IpAddr {
    const STAND_IN: Self = IpAddr::V4(Ipv4Addr::UNSPECIFIED);

    fn from_text(s: &str) -> Result<Self, String> {
        s.parse()
            .map_err(|_| format!("{} is not an IP address", quoted(s)))
    }

    fn to_text(&self) -> String {
        self.to_string()
    }
}

/// A closed set of names (`tcp`/`udp`, …): one enum, its names in the messages.
macro_rules! named_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident { $( $(#[$vmeta:meta])* $variant:ident = $text:literal, )* }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
        pub enum $name { $( $(#[$vmeta])* $variant, )* }

        impl $name {
            /// Every value, in the order the messages list them.
            pub const ALL: &'static [$name] = &[$($name::$variant),*];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text,)* }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        /// As its config text (status reports carry the mode a thing runs in).
        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl ConfigValue for $name {
            const STAND_IN: Self = $name::ALL[0];

            fn from_text(s: &str) -> Result<Self, String> {
                Self::ALL.iter().copied().find(|v| v.as_str() == s).ok_or_else(|| {
                    let names: Vec<&str> = Self::ALL.iter().map(|v| v.as_str()).collect();
                    format!("{} is not one of {}", quoted(s), names.join(", "))
                })
            }

            fn to_text(&self) -> String {
                self.as_str().to_string()
            }
        }
    };
}

named_enum! {
    /// How an RTSP source carries its media (`transport` of an RTSP input or bridge stream).
    pub enum RtspTransport {
        /// Interleaved on the RTSP connection (the default).
        #[default]
        Tcp = "tcp",
        Udp = "udp",
    }
}

named_enum! {
    /// What runs a bridge stream (`worker`).
    pub enum BridgeWorker {
        /// retina and Quoll's remux, in the process (the default).
        #[default]
        InProcess = "inprocess",
        /// An FFmpeg child process.
        Ffmpeg = "ffmpeg",
    }
}

named_enum! {
    /// What a tunnel carries (`protocol`): UDP datagrams or TCP connections.
    pub enum TunnelProtocol {
        #[default]
        Udp = "udp",
        Tcp = "tcp",
    }
}

named_enum! {
    /// How a tunnel reaches its peer (`mode`): through a relay, or one edge dials the other.
    pub enum TunnelMode {
        #[default]
        Relay = "relay",
        Direct = "direct",
    }
}

named_enum! {
    /// The edge's own role (`direction`): `egress` reads local traffic at `local_addr` and
    /// sends it into the tunnel; `ingress` delivers what comes out of it to `local_addr`.
    pub enum TunnelDirection {
        #[default]
        Egress = "egress",
        Ingress = "ingress",
    }
}

/// The 16 raw bytes of a UUID written 8-4-4-4-12 in hex (either case): the prefix of every
/// tunnel datagram. `None` for anything else.
pub fn uuid_bytes(text: &str) -> Option<[u8; 16]> {
    let b = text.as_bytes();
    if b.len() != 36 || [8, 13, 18, 23].iter().any(|&i| b[i] != b'-') {
        return None;
    }
    let mut out = [0u8; 16];
    let mut digits = b.iter().filter(|&&c| c != b'-');
    for byte in &mut out {
        let hi = (*digits.next()? as char).to_digit(16)?;
        let lo = (*digits.next()? as char).to_digit(16)?;
        *byte = (hi << 4 | lo) as u8;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::uuid_bytes;

    #[test]
    fn uuid_text_to_bytes() {
        let id = "0192f3a4-5b6c-7d8e-9fa0-b1c2d3e4f5A6";
        let b = uuid_bytes(id).unwrap();
        assert_eq!(b[0], 0x01);
        assert_eq!(b[15], 0xa6);
        for bad in [
            "",
            "0192f3a45b6c7d8e9fa0b1c2d3e4f5a6",
            "0192f3a4-5b6c-7d8e-9fa0-b1c2d3e4f5a",
            "0192f3a4-5b6c-7d8e-9fa0-b1c2d3e4f5ag",
            "0192f3a4+5b6c-7d8e-9fa0-b1c2d3e4f5a6",
            "0192f3a4-5b6c-7d8e-9fa0-b1c2d3e4-5a6",
        ] {
            assert_eq!(uuid_bytes(bad), None, "{bad}");
        }
    }
}
