//! The RTMP handshake. Server side: C0+C1 in, S0+S1+S2 out, C2 in. Client side (the push
//! output): C0+C1 out, S0+S1 in, C2 out, S2 in.
//!
//! The simple handshake: S1 is a time, four zero bytes and random filler, S2 echoes C1. The
//! zero bytes where a "version" would be tell a client that this server does not do the
//! digest ("complex", Flash Player 9) handshake; FFmpeg and librtmp (OBS) then skip the
//! digest check, and both accept an S2 that echoes C1. C1's and C2's contents are not
//! checked: nothing here is authenticated, the stream key is.

use std::fmt;

/// C1, C2, S1, S2 are this long.
pub const PACKET_SIZE: usize = 1536;
/// Plain RTMP. 6 would be RTMPE (encrypted), not offered.
pub const VERSION: u8 = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeError {
    /// C0 asked for a version other than 3 (RTMPE, or not RTMP at all: an HTTP request,
    /// a TLS ClientHello).
    Version(u8),
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HandshakeError::Version(v) => {
                write!(f, "handshake version {v} refused (only plain RTMP, 3)")
            }
        }
    }
}

impl std::error::Error for HandshakeError {}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Waiting for C0 and C1 (1 + 1536 bytes).
    C0C1,
    /// S0S1S2 sent; waiting for C2.
    C2,
    Done,
}

#[derive(Debug)]
pub struct ServerHandshake {
    state: State,
    /// S1's time field and the seed of its filler.
    epoch_ms: u32,
}

/// What [`ServerHandshake::feed`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Bytes of the input used; the rest (after C2) is the chunk stream.
    pub consumed: usize,
    pub done: bool,
}

impl ServerHandshake {
    /// `epoch_ms`: the server's uptime in ms, written into S1 (clients echo it, nobody
    /// checks it) and seeding S1's filler.
    pub fn new(epoch_ms: u32) -> Self {
        ServerHandshake {
            state: State::C0C1,
            epoch_ms,
        }
    }

    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Consumes what it can of `input` (whole C0+C1, then whole C2: it never takes a part),
    /// appending the server's answer to `out`.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<Progress, HandshakeError> {
        let mut consumed = 0;
        if self.state == State::C0C1 {
            let Some(c1) = version_and_packet(input)? else {
                return Ok(Progress {
                    consumed,
                    done: false,
                });
            };
            out.reserve(1 + 2 * PACKET_SIZE);
            out.push(VERSION);
            put_first_packet(self.epoch_ms, 0x9e37_79b9_7f4a_7c15, out);
            // S2: C1 echoed.
            out.extend_from_slice(c1);
            consumed = 1 + PACKET_SIZE;
            self.state = State::C2;
        }
        if self.state == State::C2 {
            if input.len() - consumed < PACKET_SIZE {
                return Ok(Progress {
                    consumed,
                    done: false,
                });
            }
            consumed += PACKET_SIZE;
            self.state = State::Done;
        }
        Ok(Progress {
            consumed,
            done: self.state == State::Done,
        })
    }
}

/// The client side of the simple handshake: C1 is a time, four zero bytes (no digest
/// handshake asked for) and filler; C2 echoes S1. S2 is read and not checked: servers
/// differ in what they put there, and nothing here is authenticated (RTMPS is).
#[derive(Debug)]
pub struct ClientHandshake {
    state: ClientState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClientState {
    /// C0C1 sent; waiting for S0 and S1.
    S0S1,
    /// C2 sent; waiting for S2.
    S2,
    Done,
}

impl ClientHandshake {
    /// Appends C0 and C1 to `out`. `epoch_ms` is C1's time and seeds its filler.
    pub fn start(epoch_ms: u32, out: &mut Vec<u8>) -> Self {
        out.reserve(1 + PACKET_SIZE);
        out.push(VERSION);
        put_first_packet(epoch_ms, 0x2545_f491_4f6c_dd1d, out);
        ClientHandshake {
            state: ClientState::S0S1,
        }
    }

    pub fn is_done(&self) -> bool {
        self.state == ClientState::Done
    }

    /// Consumes what it can of `input` (whole S0+S1, then whole S2), appending C2 to `out`.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<Progress, HandshakeError> {
        let mut consumed = 0;
        if self.state == ClientState::S0S1 {
            let Some(s1) = version_and_packet(input)? else {
                return Ok(Progress {
                    consumed,
                    done: false,
                });
            };
            out.extend_from_slice(s1);
            consumed = 1 + PACKET_SIZE;
            self.state = ClientState::S2;
        }
        if self.state == ClientState::S2 {
            if input.len() - consumed < PACKET_SIZE {
                return Ok(Progress {
                    consumed,
                    done: false,
                });
            }
            consumed += PACKET_SIZE;
            self.state = ClientState::Done;
        }
        Ok(Progress {
            consumed,
            done: self.state == ClientState::Done,
        })
    }
}

/// C0+C1 (or S0+S1) at the start of `input`: the version checked, then the whole packet, or
/// `None` while it has not all arrived.
fn version_and_packet(input: &[u8]) -> Result<Option<&[u8]>, HandshakeError> {
    match input.first() {
        None => Ok(None),
        Some(&v) if v != VERSION => Err(HandshakeError::Version(v)),
        Some(_) => Ok(input.get(1..1 + PACKET_SIZE)),
    }
}

/// C1 or S1: the time, four zero bytes (no digest handshake) and xorshift filler from `seed`.
fn put_first_packet(epoch_ms: u32, seed: u64, out: &mut Vec<u8>) {
    out.extend_from_slice(&epoch_ms.to_be_bytes());
    out.extend_from_slice(&[0; 4]);
    let mut x = u64::from(epoch_ms) | seed;
    for _ in 0..(PACKET_SIZE - 8) / 8 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_and_server_complete_each_other() {
        let mut c_out = Vec::new();
        let mut client = ClientHandshake::start(7, &mut c_out);
        assert_eq!(c_out.len(), 1 + PACKET_SIZE);
        assert_eq!(&c_out[5..9], &[0; 4]);
        let mut server = ServerHandshake::new(9);
        let mut s_out = Vec::new();
        let p = server.feed(&c_out, &mut s_out).unwrap();
        assert!(!p.done);
        c_out.clear();
        // The server's answer in pieces.
        let mut buf = Vec::new();
        for piece in s_out.chunks(333) {
            buf.extend_from_slice(piece);
            let p = client.feed(&buf, &mut c_out).unwrap();
            buf.drain(..p.consumed);
        }
        assert!(client.is_done());
        assert_eq!(c_out.len(), PACKET_SIZE, "C2");
        assert_eq!(&c_out[..], &s_out[1..1 + PACKET_SIZE], "C2 echoes S1");
        assert!(server.feed(&c_out, &mut Vec::new()).unwrap().done);
        // Not RTMP back (an HTTP server, a TLS alert): refused at the first byte.
        let mut c = ClientHandshake::start(0, &mut Vec::new());
        assert_eq!(
            c.feed(b"HTTP/1.1 400", &mut Vec::new()),
            Err(HandshakeError::Version(b'H'))
        );
    }

    #[test]
    fn simple_handshake_in_any_split() {
        let mut c0c1 = vec![3u8];
        c0c1.extend((0..PACKET_SIZE).map(|i| i as u8));
        let c2 = vec![7u8; PACKET_SIZE];
        let mut all = c0c1.clone();
        all.extend_from_slice(&c2);
        all.extend_from_slice(b"chunk");
        // At once.
        let mut h = ServerHandshake::new(42);
        let mut out = Vec::new();
        let p = h.feed(&all, &mut out).unwrap();
        assert_eq!(
            p,
            Progress {
                consumed: 1 + 2 * PACKET_SIZE,
                done: true
            }
        );
        assert_eq!(out.len(), 1 + 2 * PACKET_SIZE);
        assert_eq!(out[0], 3);
        assert_eq!(&out[1..5], &42u32.to_be_bytes());
        assert_eq!(&out[5..9], &[0; 4], "no digest handshake announced");
        assert_eq!(&out[1 + PACKET_SIZE..], &c0c1[1..], "S2 echoes C1");
        // Through a buffer, a few bytes at a time.
        let mut h = ServerHandshake::new(42);
        let mut out2 = Vec::new();
        let mut buf = Vec::new();
        for piece in all.chunks(100) {
            buf.extend_from_slice(piece);
            let p = h.feed(&buf, &mut out2).unwrap();
            buf.drain(..p.consumed);
            if p.done {
                break;
            }
        }
        assert!(h.is_done());
        assert_eq!(out2, out);
    }

    #[test]
    fn not_rtmp_is_refused_at_the_first_byte() {
        let mut h = ServerHandshake::new(0);
        let mut out = Vec::new();
        assert_eq!(
            h.feed(b"GET / HTTP/1.1\r\n", &mut out),
            Err(HandshakeError::Version(b'G'))
        );
        assert!(out.is_empty());
        assert_eq!(
            ServerHandshake::new(0).feed(&[6], &mut out),
            Err(HandshakeError::Version(6))
        );
    }
}
