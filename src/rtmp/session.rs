//! One publisher's connection, server side: bytes in, replies and media out.
//!
//! Handshake, then the chunk stream; commands answered as a publisher expects:
//! `connect` (window, bandwidth, chunk size and `_result`), `releaseStream`, `FCPublish`,
//! `createStream` (stream 1), `publish` (handed to the caller, who knows the flows: it calls
//! [`Session::accept_publish`] or [`Session::refuse_publish`]), `FCUnpublish`, `deleteStream`.
//! Audio and video messages of the publishing stream come out as [`Output::Media`].
//! Acknowledgements follow the window the peer asked for.

use std::fmt;

use super::amf::{self, Amf, AmfError};
use super::chunk::{self, ChunkError, ChunkReader, ChunkWriter, Limits, Message};
use super::handshake::{HandshakeError, ServerHandshake};

/// The window we announce and the default one we acknowledge by.
pub const WINDOW: u32 = 2_500_000;
/// Our outgoing chunk size.
pub const OUT_CHUNK_SIZE: u32 = 4096;
/// The message stream `createStream` hands out.
pub const STREAM_ID: u32 = 1;
/// Commands before `publish` may not add up to more than this many messages (a client that
/// keeps talking without publishing is not a publisher).
const MAX_COMMANDS: u32 = 64;

#[derive(Debug, Clone, PartialEq)]
pub enum SessionError {
    Handshake(HandshakeError),
    Chunk(ChunkError),
    /// A command whose AMF did not decode.
    Amf {
        command: String,
        error: AmfError,
    },
    /// The client broke the protocol (what it did).
    Protocol(&'static str),
}

impl fmt::Display for SessionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SessionError::Handshake(e) => write!(f, "handshake: {e}"),
            SessionError::Chunk(e) => write!(f, "chunk stream: {e}"),
            SessionError::Amf { command, error } => write!(f, "command {command:?}: {error}"),
            SessionError::Protocol(what) => write!(f, "protocol: {what}"),
        }
    }
}

impl std::error::Error for SessionError {}

impl From<HandshakeError> for SessionError {
    fn from(e: HandshakeError) -> Self {
        SessionError::Handshake(e)
    }
}

impl From<ChunkError> for SessionError {
    fn from(e: ChunkError) -> Self {
        SessionError::Chunk(e)
    }
}

/// What the session hands the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// The client asked to publish `key` on `app`: answer with `accept_publish` or
    /// `refuse_publish`.
    Publish { app: String, key: String },
    /// An audio (8) or video (9) message of the published stream.
    Media {
        type_id: u8,
        timestamp: u32,
        payload: Vec<u8>,
    },
    /// The client said it stops publishing (`FCUnpublish`, `deleteStream`).
    Unpublish,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Handshake,
    /// Chunks flow; no publish yet.
    Connected,
    /// `publish` handed to the caller, not answered yet.
    PublishAsked,
    Publishing,
    /// Unpublished or refused: media is ignored, the caller closes.
    Ended,
}

pub struct Session {
    stage: Stage,
    handshake: ServerHandshake,
    reader: ChunkReader,
    /// The reader's limits once a publish is accepted (until then, `Limits::ANONYMOUS`).
    limits: Limits,
    writer: ChunkWriter,
    /// Bytes not yet consumed (less than one chunk, or part of the handshake).
    pending: Vec<u8>,
    app: Option<String>,
    /// Acknowledgements: bytes received, and when the last ack was sent.
    received: u64,
    acked: u64,
    ack_window: u32,
    commands: u32,
}

fn command(name: &str, txn: f64, rest: Vec<Amf>) -> Vec<u8> {
    let mut v = vec![Amf::str(name), Amf::Number(txn)];
    v.extend(rest);
    amf::encode_all(&v)
}

fn status(level: &str, code: &str, description: &str) -> Amf {
    Amf::object(&[
        ("level", Amf::str(level)),
        ("code", Amf::str(code)),
        ("description", Amf::str(description)),
    ])
}

impl Session {
    /// `limits`: what a publisher's chunk stream may hold once its publish is accepted;
    /// until then the smaller of them and [`Limits::ANONYMOUS`]. `epoch_ms`: see
    /// [`ServerHandshake::new`].
    pub fn new(limits: Limits, epoch_ms: u32) -> Self {
        let anonymous = Limits {
            max_message: limits.max_message.min(Limits::ANONYMOUS.max_message),
            budget: limits.budget.min(Limits::ANONYMOUS.budget),
        };
        Session {
            stage: Stage::Handshake,
            handshake: ServerHandshake::new(epoch_ms),
            reader: ChunkReader::new(anonymous),
            limits,
            writer: ChunkWriter::default(),
            pending: Vec::new(),
            app: None,
            received: 0,
            acked: 0,
            ack_window: WINDOW,
            commands: 0,
        }
    }

    /// The handshake is done and chunks flow.
    pub fn handshaken(&self) -> bool {
        self.stage != Stage::Handshake
    }

    pub fn publishing(&self) -> bool {
        self.stage == Stage::Publishing
    }

    /// Bytes the session holds (pending input and messages in progress): what a peer costs.
    pub fn held(&self) -> usize {
        self.pending.len() + self.reader.held()
    }

    /// Feeds bytes from the peer. Replies are appended to `reply`, everything else to
    /// `outputs`. An error ends the connection.
    pub fn feed(
        &mut self,
        data: &[u8],
        reply: &mut Vec<u8>,
        outputs: &mut Vec<Output>,
    ) -> Result<(), SessionError> {
        self.received += data.len() as u64;
        self.pending.extend_from_slice(data);
        let mut pos = 0;
        if self.stage == Stage::Handshake {
            let p = self.handshake.feed(&self.pending, reply)?;
            pos = p.consumed;
            if p.done {
                self.stage = Stage::Connected;
            }
        }
        if self.stage != Stage::Handshake {
            let result = self.read_chunks(&mut pos, reply, outputs);
            self.pending.drain(..pos);
            result?;
        } else {
            self.pending.drain(..pos);
        }
        // Bound what one connection keeps between reads.
        if self.pending.capacity() > 256 * 1024 && self.pending.len() < 64 * 1024 {
            self.pending.shrink_to(64 * 1024);
        }
        if self.stage != Stage::Handshake
            && self.received - self.acked >= u64::from(self.ack_window)
        {
            self.acked = self.received;
            self.writer.write(
                2,
                0,
                chunk::ACK,
                0,
                &(self.received as u32).to_be_bytes(),
                reply,
            );
        }
        Ok(())
    }

    fn read_chunks(
        &mut self,
        pos: &mut usize,
        reply: &mut Vec<u8>,
        outputs: &mut Vec<Output>,
    ) -> Result<(), SessionError> {
        while let Some((n, msg)) = self.reader.read(&self.pending[*pos..])? {
            *pos += n;
            if let Some(msg) = msg {
                self.message(msg, reply, outputs)?;
            }
        }
        Ok(())
    }

    fn message(
        &mut self,
        msg: Message,
        reply: &mut Vec<u8>,
        outputs: &mut Vec<Output>,
    ) -> Result<(), SessionError> {
        match msg.type_id {
            chunk::AUDIO | chunk::VIDEO
                if self.stage == Stage::Publishing && msg.stream_id == STREAM_ID =>
            {
                outputs.push(Output::Media {
                    type_id: msg.type_id,
                    timestamp: msg.timestamp,
                    payload: msg.payload,
                });
            }
            chunk::WINDOW_ACK_SIZE => {
                let b = msg
                    .payload
                    .get(..4)
                    .ok_or(SessionError::Protocol("short window acknowledgement size"))?;
                // At least 4 KB between acknowledgements, whatever the peer asks.
                self.ack_window = u32::from_be_bytes([b[0], b[1], b[2], b[3]]).max(4096);
            }
            chunk::COMMAND_AMF0 => self.command(&msg.payload, reply, outputs)?,
            chunk::COMMAND_AMF3 => {
                // An AMF3 command message starts with a 0 byte, then AMF0 values.
                self.command(msg.payload.get(1..).unwrap_or(&[]), reply, outputs)?
            }
            // Set Chunk Size and Abort were applied by the reader; metadata
            // (`@setDataFrame`), acks, user control and bandwidth need nothing.
            _ => {}
        }
        Ok(())
    }

    fn command(
        &mut self,
        payload: &[u8],
        reply: &mut Vec<u8>,
        outputs: &mut Vec<Output>,
    ) -> Result<(), SessionError> {
        if self.stage != Stage::Publishing {
            self.commands += 1;
            if self.commands > MAX_COMMANDS {
                return Err(SessionError::Protocol(
                    "too many commands without publishing",
                ));
            }
        }
        let values = match amf::decode_all(payload) {
            Ok(v) => v,
            Err(error) => {
                let name = amf::decode_all(payload.get(..payload.len().min(64)).unwrap_or(&[]))
                    .ok()
                    .and_then(|v| v.first().and_then(Amf::as_str).map(str::to_owned))
                    .unwrap_or_default();
                return Err(SessionError::Amf {
                    command: name,
                    error,
                });
            }
        };
        let name = values.first().and_then(Amf::as_str).unwrap_or("");
        let txn = values.get(1).and_then(Amf::as_number).unwrap_or(0.0);
        let arg = |i: usize| values.get(i).and_then(Amf::as_str);
        match name {
            "connect" => {
                if self.app.is_some() {
                    return Err(SessionError::Protocol("second connect"));
                }
                let app = values
                    .get(2)
                    .and_then(|o| o.get("app"))
                    .and_then(Amf::as_str)
                    .ok_or(SessionError::Protocol("connect without app"))?;
                self.app = Some(app.trim_end_matches('/').to_owned());
                let w = &mut self.writer;
                w.write(
                    2,
                    0,
                    chunk::WINDOW_ACK_SIZE,
                    0,
                    &WINDOW.to_be_bytes(),
                    reply,
                );
                let mut bw = WINDOW.to_be_bytes().to_vec();
                bw.push(2); // dynamic
                w.write(2, 0, chunk::SET_PEER_BANDWIDTH, 0, &bw, reply);
                w.write(
                    2,
                    0,
                    chunk::SET_CHUNK_SIZE,
                    0,
                    &OUT_CHUNK_SIZE.to_be_bytes(),
                    reply,
                );
                w.set_chunk_size(OUT_CHUNK_SIZE);
                let body = command(
                    "_result",
                    txn,
                    vec![
                        Amf::object(&[
                            ("fmsVer", Amf::str("FMS/3,0,1,123")),
                            ("capabilities", Amf::Number(31.0)),
                        ]),
                        Amf::object(&[
                            ("level", Amf::str("status")),
                            ("code", Amf::str("NetConnection.Connect.Success")),
                            ("description", Amf::str("Connection succeeded.")),
                            ("objectEncoding", Amf::Number(0.0)),
                        ]),
                    ],
                );
                w.write(3, 0, chunk::COMMAND_AMF0, 0, &body, reply);
            }
            "releaseStream" | "FCPublish" => {
                self.connected()?;
                let body = command("_result", txn, vec![Amf::Null, Amf::Undefined]);
                self.writer
                    .write(3, 0, chunk::COMMAND_AMF0, 0, &body, reply);
            }
            "createStream" => {
                self.connected()?;
                let body = command(
                    "_result",
                    txn,
                    vec![Amf::Null, Amf::Number(STREAM_ID.into())],
                );
                self.writer
                    .write(3, 0, chunk::COMMAND_AMF0, 0, &body, reply);
            }
            "publish" => {
                self.connected()?;
                if self.stage != Stage::Connected {
                    return Err(SessionError::Protocol("publish twice"));
                }
                let key = arg(3).ok_or(SessionError::Protocol("publish without a stream key"))?;
                self.stage = Stage::PublishAsked;
                outputs.push(Output::Publish {
                    app: self.app.clone().unwrap_or_default(),
                    key: key.to_owned(),
                });
            }
            "FCUnpublish" | "deleteStream" | "closeStream" if self.stage == Stage::Publishing => {
                self.stage = Stage::Ended;
                outputs.push(Output::Unpublish);
            }
            // getStreamLength, ping-style `_checkbw`, ...: nothing to answer.
            _ => {}
        }
        Ok(())
    }

    fn connected(&self) -> Result<(), SessionError> {
        if self.app.is_none() {
            return Err(SessionError::Protocol("command before connect"));
        }
        Ok(())
    }

    fn on_status(&mut self, level: &str, code: &str, description: &str, reply: &mut Vec<u8>) {
        let body = command(
            "onStatus",
            0.0,
            vec![Amf::Null, status(level, code, description)],
        );
        self.writer
            .write(5, 0, chunk::COMMAND_AMF0, STREAM_ID, &body, reply);
    }

    /// The caller found a flow for the publish: Stream Begin and `NetStream.Publish.Start`.
    pub fn accept_publish(&mut self, reply: &mut Vec<u8>) {
        if self.stage != Stage::PublishAsked {
            return;
        }
        self.stage = Stage::Publishing;
        self.reader.set_limits(self.limits);
        let mut begin = vec![0, 0];
        begin.extend_from_slice(&STREAM_ID.to_be_bytes());
        self.writer
            .write(2, 0, chunk::USER_CONTROL, 0, &begin, reply);
        self.on_status(
            "status",
            "NetStream.Publish.Start",
            "Start publishing",
            reply,
        );
    }

    /// No flow has this app and key: `NetStream.Publish.BadName`; the caller then closes.
    pub fn refuse_publish(&mut self, reply: &mut Vec<u8>) {
        if self.stage != Stage::PublishAsked {
            return;
        }
        self.stage = Stage::Ended;
        self.on_status(
            "error",
            "NetStream.Publish.BadName",
            "Publish refused",
            reply,
        );
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::rtmp::handshake::PACKET_SIZE;

    /// A client's side of the conversation, as FFmpeg's `rtmp` muxer sends it.
    pub(crate) fn client_publish(app: &str, key: &str, chunk_size: u32) -> Vec<u8> {
        let mut wire = vec![3u8];
        wire.extend(std::iter::repeat_n(0x5a, PACKET_SIZE)); // C1
        wire.extend(std::iter::repeat_n(0xa5, PACKET_SIZE)); // C2
        let mut w = ChunkWriter::default();
        w.write(
            2,
            0,
            chunk::SET_CHUNK_SIZE,
            0,
            &chunk_size.to_be_bytes(),
            &mut wire,
        );
        w.set_chunk_size(chunk_size);
        let connect = command(
            "connect",
            1.0,
            vec![Amf::object(&[
                ("app", Amf::str(app)),
                ("type", Amf::str("nonprivate")),
                ("flashVer", Amf::str("FMLE/3.0 (compatible; Lavf61.7.100)")),
                ("tcUrl", Amf::String(format!("rtmp://127.0.0.1:1935/{app}"))),
            ])],
        );
        w.write(3, 0, chunk::COMMAND_AMF0, 0, &connect, &mut wire);
        for (i, name) in ["releaseStream", "FCPublish"].iter().enumerate() {
            let c = command(name, 2.0 + i as f64, vec![Amf::Null, Amf::str(key)]);
            w.write(3, 0, chunk::COMMAND_AMF0, 0, &c, &mut wire);
        }
        let c = command("createStream", 4.0, vec![Amf::Null]);
        w.write(3, 0, chunk::COMMAND_AMF0, 0, &c, &mut wire);
        let c = command(
            "publish",
            5.0,
            vec![Amf::Null, Amf::str(key), Amf::str("live")],
        );
        w.write(8, 0, chunk::COMMAND_AMF0, STREAM_ID, &c, &mut wire);
        wire
    }

    /// Reads back the server's replies (after S0S1S2): the command names and status codes.
    fn replies(bytes: &[u8]) -> Vec<String> {
        let mut r = ChunkReader::new(Limits::default());
        let mut data = &bytes[1 + 2 * PACKET_SIZE..];
        let mut out = Vec::new();
        while let Some((n, m)) = r.read(data).unwrap() {
            data = &data[n..];
            let Some(m) = m else { continue };
            if m.type_id == chunk::COMMAND_AMF0 {
                let v = amf::decode_all(&m.payload).unwrap();
                let mut s = v[0].as_str().unwrap().to_owned();
                if let Some(code) = v.get(3).and_then(|o| o.get("code")).and_then(Amf::as_str) {
                    s = format!("{s} {code}");
                }
                out.push(s);
            } else {
                out.push(format!("type {}", m.type_id));
            }
        }
        assert!(data.is_empty());
        out
    }

    #[test]
    fn the_publish_sequence_is_answered_and_media_flows() {
        let mut s = Session::new(Limits::default(), 0);
        let mut wire = client_publish("live", "secret", 4096);
        let mut w = ChunkWriter::default();
        w.set_chunk_size(4096);
        let mut media = Vec::new();
        w.write(
            6,
            40,
            chunk::VIDEO,
            STREAM_ID,
            &[0x17, 0, 0, 0, 0],
            &mut media,
        );
        let (mut reply, mut out) = (Vec::new(), Vec::new());
        // Split everywhere: 7 bytes at a time.
        for piece in wire.chunks(7) {
            s.feed(piece, &mut reply, &mut out).unwrap();
        }
        assert_eq!(
            out,
            vec![Output::Publish {
                app: "live".into(),
                key: "secret".into()
            }]
        );
        // Media before the answer is dropped.
        s.feed(&media, &mut reply, &mut out).unwrap();
        assert_eq!(out.len(), 1);
        s.accept_publish(&mut reply);
        assert!(s.publishing());
        assert_eq!(
            replies(&reply),
            vec![
                "type 5",
                "type 6",
                "type 1",
                "_result NetConnection.Connect.Success",
                "_result",
                "_result",
                "_result",
                "type 4",
                "onStatus NetStream.Publish.Start",
            ]
        );
        out.clear();
        s.feed(&media, &mut reply, &mut out).unwrap();
        assert_eq!(
            out,
            vec![Output::Media {
                type_id: chunk::VIDEO,
                timestamp: 40,
                payload: vec![0x17, 0, 0, 0, 0]
            }]
        );
        wire.clear();
        let c = command("deleteStream", 6.0, vec![Amf::Null, Amf::Number(1.0)]);
        w.write(3, 0, chunk::COMMAND_AMF0, 0, &c, &mut wire);
        out.clear();
        s.feed(&wire, &mut reply, &mut out).unwrap();
        assert_eq!(out, vec![Output::Unpublish]);
    }

    #[test]
    fn a_refused_publish_gets_bad_name() {
        let mut s = Session::new(Limits::default(), 0);
        let (mut reply, mut out) = (Vec::new(), Vec::new());
        s.feed(&client_publish("live", "wrong", 128), &mut reply, &mut out)
            .unwrap();
        s.refuse_publish(&mut reply);
        assert!(!s.publishing());
        assert_eq!(
            replies(&reply).last().unwrap(),
            "onStatus NetStream.Publish.BadName"
        );
    }

    #[test]
    fn acknowledgements_follow_the_window() {
        let mut s = Session::new(Limits::default(), 0);
        let (mut reply, mut out) = (Vec::new(), Vec::new());
        let mut wire = client_publish("live", "k", 4096);
        let mut w = ChunkWriter::default();
        w.write(
            2,
            0,
            chunk::WINDOW_ACK_SIZE,
            0,
            &5000u32.to_be_bytes(),
            &mut wire,
        );
        s.feed(&wire, &mut reply, &mut out).unwrap();
        s.accept_publish(&mut reply);
        reply.clear();
        let mut media = Vec::new();
        w.set_chunk_size(4096);
        w.write(6, 0, chunk::AUDIO, STREAM_ID, &[0xaf; 6000], &mut media);
        let mut setcs = Vec::new();
        ChunkWriter::default().write(
            2,
            0,
            chunk::SET_CHUNK_SIZE,
            0,
            &4096u32.to_be_bytes(),
            &mut setcs,
        );
        s.feed(&media, &mut reply, &mut out).unwrap();
        assert!(!reply.is_empty(), "an ack after 5000 bytes");
        let mut r = ChunkReader::new(Limits::default());
        let (_, m) = r.read(&reply).unwrap().unwrap();
        assert_eq!(m.unwrap().type_id, chunk::ACK);
    }

    #[test]
    fn an_anonymous_peer_gets_small_limits_a_publisher_the_full_ones() {
        let big = 200 * 1024u32;
        let video_header = |len: u32| {
            let mut h = vec![0x06, 0, 0, 0];
            h.extend_from_slice(&len.to_be_bytes()[1..]);
            h.extend_from_slice(&[chunk::VIDEO, 1, 0, 0, 0]);
            h
        };
        // Before publishing: a 200 KB message is refused at its header.
        let mut s = Session::new(Limits::default(), 0);
        let (mut reply, mut out) = (Vec::new(), Vec::new());
        let mut wire = client_publish("live", "k", 4096);
        wire.truncate(1 + 2 * PACKET_SIZE);
        wire.extend_from_slice(&video_header(big));
        assert!(matches!(
            s.feed(&wire, &mut reply, &mut out),
            Err(SessionError::Chunk(ChunkError::MessageTooLong { .. }))
        ));
        // After: accepted.
        let mut s = Session::new(Limits::default(), 0);
        s.feed(&client_publish("live", "k", 4096), &mut reply, &mut out)
            .unwrap();
        s.accept_publish(&mut reply);
        out.clear();
        let mut media = Vec::new();
        let mut w = ChunkWriter::default();
        w.set_chunk_size(4096);
        w.write(
            6,
            0,
            chunk::VIDEO,
            STREAM_ID,
            &vec![0x27; big as usize],
            &mut media,
        );
        s.feed(&media, &mut reply, &mut out).unwrap();
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn garbage_and_abuse_end_the_session() {
        let (mut reply, mut out) = (Vec::new(), Vec::new());
        assert!(matches!(
            Session::new(Limits::default(), 0).feed(b"\x16\x03\x01 tls", &mut reply, &mut out),
            Err(SessionError::Handshake(_))
        ));
        // An absurd chunk size right after the handshake.
        let mut wire = client_publish("live", "k", 128);
        let at = 1 + 2 * PACKET_SIZE;
        wire.truncate(at);
        ChunkWriter::default().write(
            2,
            0,
            chunk::SET_CHUNK_SIZE,
            0,
            &0x7fff_ffffu32.to_be_bytes(),
            &mut wire,
        );
        assert!(matches!(
            Session::new(Limits::default(), 0).feed(&wire, &mut reply, &mut out),
            Err(SessionError::Chunk(ChunkError::BadChunkSize(_)))
        ));
        // Commands before connect.
        let mut wire = client_publish("live", "k", 128);
        wire.truncate(at);
        let c = command("publish", 5.0, vec![Amf::Null, Amf::str("k")]);
        ChunkWriter::default().write(3, 0, chunk::COMMAND_AMF0, 0, &c, &mut wire);
        assert_eq!(
            Session::new(Limits::default(), 0).feed(&wire, &mut reply, &mut out),
            Err(SessionError::Protocol("command before connect"))
        );
    }
}
