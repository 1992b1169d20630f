//! The tunnel's framed JSON messages (`shared/spec/relay-protocol.md`, "Control stream" and
//! "Direct mode"), sans-IO.
//!
//! Every JSON message a tunnel exchanges travels in the same frame: a 4-byte big-endian
//! length, then that many bytes of UTF-8 JSON, at most [`MAX_FRAME`] (1 MiB). That covers
//! the relay control stream ([`RelayMsg`]), the one-message streams the relay opens for peer
//! notifications (also [`RelayMsg`]), the direct-mode authentication stream ([`PeerMsg`]) and
//! the header that opens each TCP stream ([`StreamHeader`]).
//!
//! [`encode`] appends one frame to a buffer; [`FrameDecoder`] cuts frames out of the bytes a
//! stream delivers, whatever the reads' sizes, and [`decode`] reads a frame's JSON. Unknown
//! `type`s decode to the `Unknown` variant, which the sessions ignore (the spec's rule), and
//! fields the edge does not know are skipped, so a newer relay's additions do not break an
//! older edge.

use std::fmt;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The largest frame body (the JSON), per the spec.
pub const MAX_FRAME: usize = 1 << 20;

/// The spec's relay protocol version, sent in `hello`.
pub const PROTOCOL_VERSION: u32 = 2;

/// What went wrong reading a frame or its message.
#[derive(Debug)]
pub enum WireError {
    /// A frame header announced `len` bytes, over [`MAX_FRAME`]: the stream is unusable
    /// (nothing of the frame was buffered).
    TooLarge { len: usize },
    /// The frame is not JSON, or not a message of the expected shape.
    Json(serde_json::Error),
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireError::TooLarge { len } => {
                write!(f, "frame of {len} bytes is over the {MAX_FRAME}-byte limit")
            }
            WireError::Json(e) => write!(f, "malformed frame: {e}"),
        }
    }
}

impl std::error::Error for WireError {}

/// Append `msg` as one frame (`[u32 BE length][JSON]`) to `out`.
///
/// The messages the edge builds are small objects of strings and numbers: serializing them
/// cannot fail, and none comes near [`MAX_FRAME`].
pub fn encode<T: Serialize>(msg: &T, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    serde_json::to_writer(&mut *out, msg).expect("tunnel messages serialize");
    let len = (out.len() - start - 4) as u32;
    out[start..start + 4].copy_from_slice(&len.to_be_bytes());
}

/// Read one frame's JSON as a `T`.
pub fn decode<T: DeserializeOwned>(frame: &[u8]) -> Result<T, WireError> {
    serde_json::from_slice(frame).map_err(WireError::Json)
}

/// Cuts frames out of a byte stream, sans-IO: [`FrameDecoder::push`] what the stream gave,
/// then take frames with [`FrameDecoder::next_frame`] until it says `None`.
///
/// A header announcing more than [`MAX_FRAME`] is an error as soon as its 4 bytes are in,
/// before any of its body is kept, and the error stays (the stream's framing is lost). A shell
/// that reads at most [`FrameDecoder::wanted`] bytes at a time never makes the decoder hold
/// more than one maximal frame and its header (`MAX_FRAME + 4` bytes); one that pushes
/// bigger reads adds at most one read to that, since it drains the frames after each push.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    /// Bytes of `buf` already handed out as frames (compacted lazily).
    start: usize,
    /// Latched: the length of the oversized frame that broke the stream.
    too_large: Option<usize>,
}

impl FrameDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Add bytes read from the stream. After an oversized header they are dropped.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.too_large.is_some() {
            return;
        }
        // Compact before growing: what was handed out is never needed again.
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
        self.check_header();
    }

    /// How many more bytes complete the frame being read (its header first): a shell that
    /// reads no more than this keeps the decoder within `MAX_FRAME + 4` bytes. At least 1.
    pub fn wanted(&self) -> usize {
        let pending = &self.buf[self.start..];
        match header(pending) {
            None => 4 - pending.len(),
            Some(len) => (4 + len).saturating_sub(pending.len()).max(1),
        }
    }

    /// Bytes held and not yet handed out as frames.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// The next complete frame's body, `None` until one is complete.
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, WireError> {
        if let Some(len) = self.too_large {
            return Err(WireError::TooLarge { len });
        }
        let pending = &self.buf[self.start..];
        let Some(len) = header(pending) else {
            return Ok(None);
        };
        if pending.len() < 4 + len {
            return Ok(None);
        }
        let frame = pending[4..4 + len].to_vec();
        self.start += 4 + len;
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        self.check_header();
        Ok(Some(frame))
    }

    /// Latch the error if the frame being read announces too much, and let go of its bytes.
    fn check_header(&mut self) {
        if let Some(len) = header(&self.buf[self.start..])
            && len > MAX_FRAME
        {
            self.too_large = Some(len);
            self.buf = Vec::new();
            self.start = 0;
        }
    }
}

/// The length a frame's header announces, once its 4 bytes are in.
fn header(pending: &[u8]) -> Option<usize> {
    let h: [u8; 4] = pending.get(..4)?.try_into().ok()?;
    Some(u32::from_be_bytes(h) as usize)
}

/// The relay protocol's messages, both ways, on the control stream and on the streams the
/// relay opens for peer notifications. `direction` and `protocol` are the config's words
/// (`"egress"`, `"udp"`...): `TunnelDirection::as_str`, `TunnelProtocol::as_str`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RelayMsg {
    Hello {
        protocol_version: u32,
        software_version: String,
    },
    HelloAck {
        protocol_version: u32,
        #[serde(default)]
        software_version: String,
    },
    Identify {
        edge_id: String,
    },
    TunnelBind {
        tunnel_id: String,
        direction: String,
        protocol: String,
        bind_token: String,
    },
    TunnelWaiting {
        tunnel_id: String,
    },
    TunnelReady {
        tunnel_id: String,
    },
    TunnelDown {
        tunnel_id: String,
        /// A relay that gives none still says the tunnel is down.
        #[serde(default)]
        reason: String,
    },
    TunnelUnbind {
        tunnel_id: String,
    },
    Ping,
    Pong,
    /// A `type` this edge does not know: ignored (the spec's rule).
    #[serde(other)]
    Unknown,
}

/// The direct mode's messages on the stream the client opens (`shared/spec/relay-protocol.md`,
/// "Direct mode").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum PeerMsg {
    PeerAuth {
        tunnel_id: String,
        token: String,
    },
    PeerAuthOk {
        tunnel_id: String,
    },
    PeerAuthError {
        #[serde(default)]
        reason: String,
    },
    Ping,
    Pong,
    /// A `type` this edge does not know: ignored.
    #[serde(other)]
    Unknown,
}

/// The frame that opens each TCP stream: `{"tunnel_id":"<uuid>","stream_type":"tcp"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamHeader {
    pub tunnel_id: String,
    pub stream_type: String,
}

impl StreamHeader {
    /// The only stream type the spec defines.
    pub const TCP: &'static str = "tcp";

    /// The header of a TCP stream of `tunnel_id`.
    pub fn tcp(tunnel_id: &str) -> StreamHeader {
        StreamHeader {
            tunnel_id: tunnel_id.to_string(),
            stream_type: Self::TCP.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame<T: Serialize>(msg: &T) -> Vec<u8> {
        let mut out = Vec::new();
        encode(msg, &mut out);
        out
    }

    /// The spec's examples, byte for byte.
    #[test]
    fn messages_encode_as_the_spec_writes_them() {
        let cases: [(RelayMsg, &str); 10] = [
            (
                RelayMsg::Hello {
                    protocol_version: 2,
                    software_version: "0.1.0".into(),
                },
                r#"{"type":"hello","protocol_version":2,"software_version":"0.1.0"}"#,
            ),
            (
                RelayMsg::HelloAck {
                    protocol_version: 2,
                    software_version: "r".into(),
                },
                r#"{"type":"hello_ack","protocol_version":2,"software_version":"r"}"#,
            ),
            (
                RelayMsg::Identify {
                    edge_id: "node-1".into(),
                },
                r#"{"type":"identify","edge_id":"node-1"}"#,
            ),
            (
                RelayMsg::TunnelBind {
                    tunnel_id: "u".into(),
                    direction: "egress".into(),
                    protocol: "udp".into(),
                    bind_token: "ab".into(),
                },
                r#"{"type":"tunnel_bind","tunnel_id":"u","direction":"egress","protocol":"udp","bind_token":"ab"}"#,
            ),
            (
                RelayMsg::TunnelWaiting {
                    tunnel_id: "u".into(),
                },
                r#"{"type":"tunnel_waiting","tunnel_id":"u"}"#,
            ),
            (
                RelayMsg::TunnelReady {
                    tunnel_id: "u".into(),
                },
                r#"{"type":"tunnel_ready","tunnel_id":"u"}"#,
            ),
            (
                RelayMsg::TunnelDown {
                    tunnel_id: "u".into(),
                    reason: "bind authentication failed".into(),
                },
                r#"{"type":"tunnel_down","tunnel_id":"u","reason":"bind authentication failed"}"#,
            ),
            (
                RelayMsg::TunnelUnbind {
                    tunnel_id: "u".into(),
                },
                r#"{"type":"tunnel_unbind","tunnel_id":"u"}"#,
            ),
            (RelayMsg::Ping, r#"{"type":"ping"}"#),
            (RelayMsg::Pong, r#"{"type":"pong"}"#),
        ];
        for (msg, json) in cases {
            let f = frame(&msg);
            assert_eq!(&f[..4], (json.len() as u32).to_be_bytes(), "{json}");
            assert_eq!(std::str::from_utf8(&f[4..]).unwrap(), json);
            assert_eq!(decode::<RelayMsg>(&f[4..]).unwrap(), msg, "{json}");
        }
        let peer: [(PeerMsg, &str); 5] = [
            (
                PeerMsg::PeerAuth {
                    tunnel_id: "u".into(),
                    token: "dA==".into(),
                },
                r#"{"type":"peer_auth","tunnel_id":"u","token":"dA=="}"#,
            ),
            (
                PeerMsg::PeerAuthOk {
                    tunnel_id: "u".into(),
                },
                r#"{"type":"peer_auth_ok","tunnel_id":"u"}"#,
            ),
            (
                PeerMsg::PeerAuthError {
                    reason: "Invalid token".into(),
                },
                r#"{"type":"peer_auth_error","reason":"Invalid token"}"#,
            ),
            (PeerMsg::Ping, r#"{"type":"ping"}"#),
            (PeerMsg::Pong, r#"{"type":"pong"}"#),
        ];
        for (msg, json) in peer {
            assert_eq!(&frame(&msg)[4..], json.as_bytes());
            assert_eq!(decode::<PeerMsg>(json.as_bytes()).unwrap(), msg);
        }
        assert_eq!(
            &frame(&StreamHeader::tcp("u"))[4..],
            br#"{"tunnel_id":"u","stream_type":"tcp"}"#
        );
    }

    #[test]
    fn unknown_types_and_extra_fields_are_tolerated() {
        let d = |s: &str| decode::<RelayMsg>(s.as_bytes());
        assert_eq!(
            d(r#"{"type":"relay_stats","whatever":[1,2]}"#).unwrap(),
            RelayMsg::Unknown
        );
        assert_eq!(
            d(r#"{"tunnel_id":"u","type":"tunnel_ready","since":3}"#).unwrap(),
            RelayMsg::TunnelReady {
                tunnel_id: "u".into()
            }
        );
        assert_eq!(d(r#"{"type":"pong","t":1}"#).unwrap(), RelayMsg::Pong);
        assert_eq!(
            d(r#"{"type":"tunnel_down","tunnel_id":"u"}"#).unwrap(),
            RelayMsg::TunnelDown {
                tunnel_id: "u".into(),
                reason: String::new()
            }
        );
        assert_eq!(
            decode::<PeerMsg>(br#"{"type":"peer_hello"}"#).unwrap(),
            PeerMsg::Unknown
        );
        assert_eq!(
            decode::<StreamHeader>(br#"{"stream_type":"tcp","tunnel_id":"u","x":null}"#).unwrap(),
            StreamHeader::tcp("u")
        );
        // Not messages: errors, not panics.
        for bad in [
            "",
            "null",
            "[]",
            r#"{"no_type":1}"#,
            r#"{"type":7}"#,
            r#"{"type":"tunnel_ready"}"#,
            "{\"type\":\"ping\"",
        ] {
            let e = d(bad).unwrap_err();
            assert!(matches!(e, WireError::Json(_)), "{bad}");
            assert!(e.to_string().starts_with("malformed frame"), "{e}");
        }
    }

    #[test]
    fn frames_are_cut_out_whatever_the_reads() {
        let mut stream = Vec::new();
        let msgs = [
            RelayMsg::Ping,
            RelayMsg::TunnelReady {
                tunnel_id: "x".repeat(300),
            },
            RelayMsg::Pong,
        ];
        for m in &msgs {
            encode(m, &mut stream);
        }
        // An empty frame is a frame (and not JSON).
        stream.extend_from_slice(&[0, 0, 0, 0]);
        for step in [1, 2, 3, 5, 7, 64, stream.len()] {
            let mut d = FrameDecoder::new();
            let mut got = Vec::new();
            for chunk in stream.chunks(step) {
                d.push(chunk);
                while let Some(f) = d.next_frame().unwrap() {
                    got.push(f);
                }
            }
            assert_eq!(got.len(), 4, "step {step}");
            for (m, f) in msgs.iter().zip(&got) {
                assert_eq!(&decode::<RelayMsg>(f).unwrap(), m);
            }
            assert!(got[3].is_empty());
            assert_eq!(d.buffered(), 0);
            assert_eq!(d.wanted(), 4);
        }
    }

    #[test]
    fn an_oversized_frame_is_refused_before_its_body_is_kept() {
        // Exactly the limit is fine.
        let mut d = FrameDecoder::new();
        d.push(&(MAX_FRAME as u32).to_be_bytes());
        assert_eq!(d.wanted(), MAX_FRAME);
        d.push(&vec![b' '; MAX_FRAME]);
        assert_eq!(d.next_frame().unwrap().unwrap().len(), MAX_FRAME);
        // One more is an error at the header, even behind a good frame, and it stays.
        let mut d = FrameDecoder::new();
        let mut bytes = Vec::new();
        encode(&RelayMsg::Ping, &mut bytes);
        bytes.extend_from_slice(&(MAX_FRAME as u32 + 1).to_be_bytes());
        d.push(&bytes);
        assert_eq!(
            decode::<RelayMsg>(&d.next_frame().unwrap().unwrap()).unwrap(),
            RelayMsg::Ping
        );
        let e = d.next_frame().unwrap_err();
        assert!(matches!(e, WireError::TooLarge { len } if len == MAX_FRAME + 1));
        assert!(e.to_string().contains("1048577"), "{e}");
        d.push(&[b'x'; 1000]);
        assert_eq!(d.buffered(), 0, "nothing kept after the error");
        assert!(d.next_frame().is_err());
        // 4 GiB announced: refused with 4 bytes held.
        let mut d = FrameDecoder::new();
        d.push(&[0xff; 4]);
        assert_eq!(d.buffered(), 0);
        assert!(matches!(
            d.next_frame(),
            Err(WireError::TooLarge { len }) if len == u32::MAX as usize
        ));
    }

    #[test]
    fn reading_what_is_wanted_keeps_the_decoder_within_one_frame() {
        // A stream of max-size frames read in `wanted()`-sized pieces.
        let mut stream = Vec::new();
        for _ in 0..3 {
            stream.extend_from_slice(&(MAX_FRAME as u32).to_be_bytes());
            stream.extend(std::iter::repeat_n(b'1', MAX_FRAME));
        }
        let mut d = FrameDecoder::new();
        let mut at = 0;
        let mut frames = 0;
        while at < stream.len() {
            let n = d.wanted().min(100_000).min(stream.len() - at);
            d.push(&stream[at..at + n]);
            at += n;
            assert!(d.buffered() <= MAX_FRAME + 4);
            while let Some(f) = d.next_frame().unwrap() {
                assert_eq!(f.len(), MAX_FRAME);
                frames += 1;
            }
        }
        assert_eq!(frames, 3);
    }

    /// Random bytes: never a panic, whatever the split.
    #[test]
    fn random_bytes_never_panic() {
        let mut rng = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        for _ in 0..2_000 {
            let len = (next() % 200) as usize;
            let mut bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            // Often a plausible small length prefix, so bodies get parsed too.
            if len >= 4 && next() % 2 == 0 {
                let body = (len - 4) as u32;
                bytes[..4].copy_from_slice(&body.to_be_bytes());
            }
            let mut d = FrameDecoder::new();
            for chunk in bytes.chunks(1 + (next() % 17) as usize) {
                d.push(chunk);
                while let Ok(Some(f)) = d.next_frame() {
                    let _ = decode::<RelayMsg>(&f);
                    let _ = decode::<PeerMsg>(&f);
                    let _ = decode::<StreamHeader>(&f);
                }
            }
        }
    }
}
