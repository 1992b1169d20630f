//! The client side of an RTMP publish, sans-IO: what the push output says to a server (an
//! ingest, a platform, FFmpeg listening) and how it reads the answers.
//!
//! The sequence is FFmpeg's and OBS's: handshake (C0/C1, S0/S1/S2, C2); Set Chunk Size and
//! `connect` (app, tcUrl); on its `_result`, `releaseStream`, `FCPublish` and
//! `createStream`; on that `_result` (the message stream id), `publish` (key, "live"); on
//! `onStatus NetStream.Publish.Start`, media may flow ([`Publisher::media`]). An `_error`
//! or an `onStatus` of level `error` is a refusal ([`PublishError::Refused`]) with the
//! server's code and description; the description has the stream key blotted out, since
//! servers like to quote the stream name back.
//!
//! The server's bytes are untrusted: they go through the same bounded [`ChunkReader`] as a
//! publisher's do, with [`Limits::ANONYMOUS`] (a server has nothing big to tell a
//! publisher), and commands through the bounded AMF0 decoder. Ping requests are answered,
//! acknowledgements sent by the window the server asks for.

use std::fmt;

use super::amf::{self, Amf, AmfError};
use super::chunk::{self, ChunkError, ChunkReader, ChunkWriter, Limits, Message};
use super::handshake::{ClientHandshake, HandshakeError};

/// Our outgoing chunk size (FFmpeg's and OBS's).
pub const OUT_CHUNK_SIZE: u32 = 4096;
/// The acknowledgement window we announce.
pub const WINDOW: u32 = 2_500_000;
/// Chunk streams of our messages: control, commands, publish, audio, video (FFmpeg's).
const CS_CONTROL: u32 = 2;
const CS_COMMAND: u32 = 3;
const CS_AUDIO: u32 = 4;
const CS_VIDEO: u32 = 6;
const CS_STREAM: u32 = 8;
/// Transaction ids.
const TXN_CONNECT: f64 = 1.0;
const TXN_CREATE_STREAM: f64 = 4.0;
const TXN_PUBLISH: f64 = 5.0;
/// User control events.
const UC_PING_REQUEST: u16 = 6;
const UC_PING_RESPONSE: u16 = 7;
/// Messages a server may send before the publish starts (a server that keeps talking
/// without answering is not one).
const MAX_MESSAGES_BEFORE_PUBLISH: u32 = 256;

#[derive(Debug, Clone, PartialEq)]
pub enum PublishError {
    Handshake(HandshakeError),
    Chunk(ChunkError),
    /// A command whose AMF0 did not decode.
    Amf(AmfError),
    /// The server said no: `_error`, or an `onStatus` of level `error`
    /// (`NetConnection.Connect.Rejected`, `NetStream.Publish.BadName`, ...).
    Refused {
        code: String,
        description: String,
    },
    /// The server broke the protocol (what it did).
    Protocol(&'static str),
}

impl fmt::Display for PublishError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PublishError::Handshake(e) => write!(f, "handshake: {e}"),
            PublishError::Chunk(e) => write!(f, "chunk stream: {e}"),
            PublishError::Amf(e) => write!(f, "server command: {e}"),
            PublishError::Refused { code, description } if description.is_empty() => {
                write!(f, "refused by the server: {code}")
            }
            PublishError::Refused { code, description } => {
                write!(f, "refused by the server: {code} ({description})")
            }
            PublishError::Protocol(what) => write!(f, "protocol: {what}"),
        }
    }
}

impl std::error::Error for PublishError {}

impl From<HandshakeError> for PublishError {
    fn from(e: HandshakeError) -> Self {
        PublishError::Handshake(e)
    }
}

impl From<ChunkError> for PublishError {
    fn from(e: ChunkError) -> Self {
        PublishError::Chunk(e)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Handshake,
    /// `connect` sent.
    Connecting,
    /// `createStream` sent.
    CreatingStream,
    /// `publish` sent.
    PublishSent,
    Publishing,
}

/// Where to publish: `rtmp://host[:port]/{app}/{key}`.
#[derive(Clone, PartialEq, Eq)]
pub struct Target {
    pub app: String,
    /// `rtmp(s)://host[:port]/app`, the `connect` command's `tcUrl`.
    pub tc_url: String,
    /// The stream name `publish` names: a secret.
    pub key: String,
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Target")
            .field("app", &self.app)
            .field("tc_url", &self.tc_url)
            .field("key", &"***")
            .finish()
    }
}

pub struct Publisher {
    stage: Stage,
    target: Target,
    handshake: ClientHandshake,
    reader: ChunkReader,
    writer: ChunkWriter,
    /// Bytes from the server not yet consumed.
    pending: Vec<u8>,
    stream_id: u32,
    received: u64,
    acked: u64,
    ack_window: u32,
    messages: u32,
}

fn command(name: &str, txn: f64, rest: Vec<Amf>) -> Vec<u8> {
    let mut v = vec![Amf::str(name), Amf::Number(txn)];
    v.extend(rest);
    amf::encode_all(&v)
}

impl Publisher {
    /// Starts the handshake: C0 and C1 are appended to `out`. `epoch_ms`: C1's time.
    pub fn start(target: Target, epoch_ms: u32, out: &mut Vec<u8>) -> Self {
        Publisher {
            stage: Stage::Handshake,
            target,
            handshake: ClientHandshake::start(epoch_ms, out),
            reader: ChunkReader::new(Limits::ANONYMOUS),
            writer: ChunkWriter::default(),
            pending: Vec::new(),
            stream_id: 0,
            received: 0,
            acked: 0,
            ack_window: WINDOW,
            messages: 0,
        }
    }

    /// The server said `NetStream.Publish.Start`: media may be sent.
    pub fn publishing(&self) -> bool {
        self.stage == Stage::Publishing
    }

    /// Bytes held for the server's messages in progress.
    pub fn held(&self) -> usize {
        self.pending.len() + self.reader.held()
    }

    /// Bytes from the server; replies are appended to `out`. An error ends the connection.
    pub fn feed(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<(), PublishError> {
        self.received += data.len() as u64;
        self.pending.extend_from_slice(data);
        let mut pos = 0;
        if self.stage == Stage::Handshake {
            let p = self.handshake.feed(&self.pending, out)?;
            pos = p.consumed;
            if p.done {
                self.connect(out);
            }
        }
        let result = if self.stage == Stage::Handshake {
            Ok(())
        } else {
            self.read_chunks(&mut pos, out)
        };
        self.pending.drain(..pos);
        result?;
        if self.pending.capacity() > 256 * 1024 && self.pending.len() < 64 * 1024 {
            self.pending.shrink_to(64 * 1024);
        }
        if self.stage != Stage::Handshake
            && self.received - self.acked >= u64::from(self.ack_window)
        {
            self.acked = self.received;
            self.writer.write(
                CS_CONTROL,
                0,
                chunk::ACK,
                0,
                &(self.received as u32).to_be_bytes(),
                out,
            );
        }
        Ok(())
    }

    /// Handshake done: our chunk size, then `connect`.
    fn connect(&mut self, out: &mut Vec<u8>) {
        self.stage = Stage::Connecting;
        let w = &mut self.writer;
        w.write(
            CS_CONTROL,
            0,
            chunk::SET_CHUNK_SIZE,
            0,
            &OUT_CHUNK_SIZE.to_be_bytes(),
            out,
        );
        w.set_chunk_size(OUT_CHUNK_SIZE);
        let body = command(
            "connect",
            TXN_CONNECT,
            vec![Amf::object(&[
                ("app", Amf::str(&self.target.app)),
                ("type", Amf::str("nonprivate")),
                (
                    "flashVer",
                    Amf::str(concat!(
                        "FMLE/3.0 (compatible; quoll/",
                        env!("CARGO_PKG_VERSION"),
                        ")"
                    )),
                ),
                ("tcUrl", Amf::str(&self.target.tc_url)),
            ])],
        );
        w.write(CS_COMMAND, 0, chunk::COMMAND_AMF0, 0, &body, out);
    }

    fn read_chunks(&mut self, pos: &mut usize, out: &mut Vec<u8>) -> Result<(), PublishError> {
        while let Some((n, msg)) = self.reader.read(&self.pending[*pos..])? {
            *pos += n;
            if let Some(msg) = msg {
                if self.stage != Stage::Publishing {
                    self.messages += 1;
                    if self.messages > MAX_MESSAGES_BEFORE_PUBLISH {
                        return Err(PublishError::Protocol(
                            "too many messages without starting the publish",
                        ));
                    }
                }
                self.message(msg, out)?;
            }
        }
        Ok(())
    }

    fn message(&mut self, msg: Message, out: &mut Vec<u8>) -> Result<(), PublishError> {
        match msg.type_id {
            chunk::WINDOW_ACK_SIZE => {
                let b = msg
                    .payload
                    .get(..4)
                    .ok_or(PublishError::Protocol("short window acknowledgement size"))?;
                self.ack_window = u32::from_be_bytes([b[0], b[1], b[2], b[3]]).max(4096);
            }
            chunk::SET_PEER_BANDWIDTH => {
                // Answered with our window, as librtmp does.
                self.writer.write(
                    CS_CONTROL,
                    0,
                    chunk::WINDOW_ACK_SIZE,
                    0,
                    &WINDOW.to_be_bytes(),
                    out,
                );
            }
            chunk::USER_CONTROL => {
                if let Some(b) = msg.payload.get(..6)
                    && u16::from_be_bytes([b[0], b[1]]) == UC_PING_REQUEST
                {
                    let mut pong = UC_PING_RESPONSE.to_be_bytes().to_vec();
                    pong.extend_from_slice(&b[2..6]);
                    self.writer
                        .write(CS_CONTROL, 0, chunk::USER_CONTROL, 0, &pong, out);
                }
            }
            chunk::COMMAND_AMF0 => self.command(&msg.payload, out)?,
            chunk::COMMAND_AMF3 => self.command(msg.payload.get(1..).unwrap_or(&[]), out)?,
            // Set Chunk Size and Abort were applied by the reader; acks, metadata and any
            // media a server might send need nothing.
            _ => {}
        }
        Ok(())
    }

    /// The server's text with the stream key blotted out.
    fn scrub(&self, s: &str) -> String {
        if self.target.key.is_empty() {
            return s.to_owned();
        }
        s.replace(&self.target.key, "***")
    }

    fn refused(&self, info: Option<&Amf>, fallback: &str) -> PublishError {
        let field = |k: &str| {
            info.and_then(|o| o.get(k))
                .and_then(Amf::as_str)
                .map(|s| self.scrub(s))
        };
        PublishError::Refused {
            code: field("code").unwrap_or_else(|| fallback.to_owned()),
            description: field("description").unwrap_or_default(),
        }
    }

    fn command(&mut self, payload: &[u8], out: &mut Vec<u8>) -> Result<(), PublishError> {
        let values = amf::decode_all(payload).map_err(PublishError::Amf)?;
        let name = values.first().and_then(Amf::as_str).unwrap_or("");
        let txn = values.get(1).and_then(Amf::as_number).unwrap_or(0.0);
        // The info object: `_result`/`_error` carry it third, `onStatus` after a null.
        let info = values.get(3);
        match name {
            "_result" if self.stage == Stage::Connecting && txn == TXN_CONNECT => {
                let key = Amf::str(&self.target.key);
                for (i, n) in ["releaseStream", "FCPublish"].iter().enumerate() {
                    let body = command(n, 2.0 + i as f64, vec![Amf::Null, key.clone()]);
                    self.writer
                        .write(CS_COMMAND, 0, chunk::COMMAND_AMF0, 0, &body, out);
                }
                let body = command("createStream", TXN_CREATE_STREAM, vec![Amf::Null]);
                self.writer
                    .write(CS_COMMAND, 0, chunk::COMMAND_AMF0, 0, &body, out);
                self.stage = Stage::CreatingStream;
            }
            "_result" if self.stage == Stage::CreatingStream && txn == TXN_CREATE_STREAM => {
                let id = info
                    .and_then(Amf::as_number)
                    .filter(|n| n.is_finite() && *n >= 0.0 && *n <= f64::from(u32::MAX))
                    .ok_or(PublishError::Protocol(
                        "createStream answered without a stream id",
                    ))?;
                self.stream_id = id as u32;
                let body = command(
                    "publish",
                    TXN_PUBLISH,
                    vec![Amf::Null, Amf::str(&self.target.key), Amf::str("live")],
                );
                self.writer.write(
                    CS_STREAM,
                    0,
                    chunk::COMMAND_AMF0,
                    self.stream_id,
                    &body,
                    out,
                );
                self.stage = Stage::PublishSent;
            }
            // `_error` of releaseStream or FCPublish (transactions 2 and 3) is usual
            // (nginx-rtmp, stream names unknown yet) and means nothing.
            "_error" if txn == TXN_CONNECT || txn == TXN_CREATE_STREAM || txn == TXN_PUBLISH => {
                return Err(self.refused(info, name));
            }
            "onStatus" => {
                let level = info
                    .and_then(|o| o.get("level"))
                    .and_then(Amf::as_str)
                    .unwrap_or("");
                let code = info
                    .and_then(|o| o.get("code"))
                    .and_then(Amf::as_str)
                    .unwrap_or("");
                if level == "error" {
                    return Err(self.refused(info, "onStatus error"));
                }
                if code == "NetStream.Publish.Start" && self.stage == Stage::PublishSent {
                    self.stage = Stage::Publishing;
                    self.metadata(out);
                }
            }
            // `onBWDone`, `onFCPublish`, `_checkbw`, `_result` of releaseStream...: nothing.
            _ => {}
        }
        Ok(())
    }

    /// `@setDataFrame onMetaData` naming the codecs, as encoders send it first.
    fn metadata(&mut self, out: &mut Vec<u8>) {
        let body = amf::encode_all(&[
            Amf::str("@setDataFrame"),
            Amf::str("onMetaData"),
            Amf::EcmaArray(vec![
                ("videocodecid".into(), Amf::Number(7.0)),
                ("audiocodecid".into(), Amf::Number(10.0)),
                (
                    "encoder".into(),
                    Amf::str(concat!("quoll/", env!("CARGO_PKG_VERSION"))),
                ),
            ]),
        ]);
        self.writer
            .write(CS_STREAM, 0, chunk::DATA_AMF0, self.stream_id, &body, out);
    }

    /// One FLV audio (8) or video (9) tag body as a message of the published stream. Only
    /// once [`Publisher::publishing`]; before, nothing is written.
    pub fn media(&mut self, type_id: u8, timestamp: u32, body: &[u8], out: &mut Vec<u8>) {
        if self.stage != Stage::Publishing {
            return;
        }
        let csid = if type_id == chunk::AUDIO {
            CS_AUDIO
        } else {
            CS_VIDEO
        };
        self.writer
            .write(csid, timestamp, type_id, self.stream_id, body, out);
    }

    /// A polite end: `FCUnpublish` and `deleteStream` (then the caller closes).
    pub fn unpublish(&mut self, out: &mut Vec<u8>) {
        if self.stage != Stage::Publishing {
            return;
        }
        let body = command(
            "FCUnpublish",
            6.0,
            vec![Amf::Null, Amf::str(&self.target.key)],
        );
        self.writer
            .write(CS_COMMAND, 0, chunk::COMMAND_AMF0, 0, &body, out);
        let body = command(
            "deleteStream",
            7.0,
            vec![Amf::Null, Amf::Number(f64::from(self.stream_id))],
        );
        self.writer
            .write(CS_COMMAND, 0, chunk::COMMAND_AMF0, 0, &body, out);
        self.stage = Stage::CreatingStream;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rtmp::session::{Output, Session};

    fn target(key: &str) -> Target {
        Target {
            app: "live".into(),
            tc_url: "rtmp://127.0.0.1/live".into(),
            key: key.into(),
        }
    }

    /// Our publisher against the RTMP input's server session, bytes passed back and forth
    /// in `step`-sized pieces until both are quiet.
    fn converse(
        p: &mut Publisher,
        s: &mut Session,
        mut to_server: Vec<u8>,
        step: usize,
        accept: bool,
    ) -> Vec<Output> {
        let mut outputs = Vec::new();
        for _ in 0..50 {
            if to_server.is_empty() {
                break;
            }
            let mut to_client = Vec::new();
            let mut outs = Vec::new();
            for piece in to_server.chunks(step) {
                s.feed(piece, &mut to_client, &mut outs).unwrap();
            }
            for o in outs {
                if let Output::Publish { .. } = o {
                    if accept {
                        s.accept_publish(&mut to_client);
                    } else {
                        s.refuse_publish(&mut to_client);
                    }
                }
                outputs.push(o);
            }
            to_server = Vec::new();
            for piece in to_client.chunks(step) {
                if let Err(e) = p.feed(piece, &mut to_server) {
                    outputs.push(Output::Unpublish);
                    assert!(matches!(e, PublishError::Refused { .. }), "{e}");
                    return outputs;
                }
            }
        }
        outputs
    }

    #[test]
    fn publishes_to_the_rtmp_input_server_and_media_flows() {
        for step in [7, 500, 100_000] {
            let mut s = Session::new(Limits::default(), 0);
            let mut wire = Vec::new();
            let mut p = Publisher::start(target("secret"), 5, &mut wire);
            let outs = converse(&mut p, &mut s, wire, step, true);
            assert_eq!(
                outs,
                vec![Output::Publish {
                    app: "live".into(),
                    key: "secret".into()
                }]
            );
            assert!(p.publishing() && s.publishing());
            let mut wire = Vec::new();
            p.media(chunk::VIDEO, 40, &[0x17, 0, 0, 0, 0, 1, 2], &mut wire);
            p.media(chunk::AUDIO, 0x0100_0000, &vec![0xaf; 5000], &mut wire);
            let (mut reply, mut outs) = (Vec::new(), Vec::new());
            s.feed(&wire, &mut reply, &mut outs).unwrap();
            assert_eq!(
                outs,
                vec![
                    Output::Media {
                        type_id: chunk::VIDEO,
                        timestamp: 40,
                        payload: vec![0x17, 0, 0, 0, 0, 1, 2]
                    },
                    Output::Media {
                        type_id: chunk::AUDIO,
                        timestamp: 0x0100_0000,
                        payload: vec![0xaf; 5000]
                    }
                ]
            );
            let mut wire = Vec::new();
            p.unpublish(&mut wire);
            outs.clear();
            s.feed(&wire, &mut reply, &mut outs).unwrap();
            assert_eq!(outs, vec![Output::Unpublish]);
        }
    }

    #[test]
    fn a_refusal_is_an_error_with_the_key_blotted_out() {
        let mut s = Session::new(Limits::default(), 0);
        let mut wire = Vec::new();
        let mut p = Publisher::start(target("wrong"), 0, &mut wire);
        let outs = converse(&mut p, &mut s, wire, 1000, false);
        assert_eq!(
            outs.last(),
            Some(&Output::Unpublish),
            "the publisher saw an error"
        );
        // A server quoting the key back.
        let mut p = Publisher::start(target("sekrit"), 0, &mut Vec::new());
        p.stage = Stage::PublishSent;
        let e = p.refused(
            Some(&Amf::object(&[
                ("level", Amf::str("error")),
                ("code", Amf::str("NetStream.Publish.BadName")),
                (
                    "description",
                    Amf::str("stream sekrit is already publishing"),
                ),
            ])),
            "x",
        );
        assert_eq!(
            e.to_string(),
            "refused by the server: NetStream.Publish.BadName (stream *** is already publishing)"
        );
    }

    /// A publisher past the handshake (with the server's side done by hand).
    fn handshaken() -> Publisher {
        let mut c = Vec::new();
        let mut p = Publisher::start(target("k"), 0, &mut c);
        let mut out = Vec::new();
        crate::rtmp::handshake::ServerHandshake::new(0)
            .feed(&c, &mut out)
            .unwrap();
        p.feed(&out, &mut Vec::new()).unwrap();
        assert_eq!(p.stage, Stage::Connecting);
        p
    }

    #[test]
    fn pings_are_answered_and_errors_end_the_publish() {
        let mut p = handshaken();
        let w = ChunkWriter::default();
        let mut wire = Vec::new();
        let mut ping = UC_PING_REQUEST.to_be_bytes().to_vec();
        ping.extend_from_slice(&1234u32.to_be_bytes());
        w.write(2, 0, chunk::USER_CONTROL, 0, &ping, &mut wire);
        let mut out = Vec::new();
        p.feed(&wire, &mut out).unwrap();
        let mut r = ChunkReader::new(Limits::default());
        let (_, m) = r.read(&out).unwrap().unwrap();
        let m = m.unwrap();
        assert_eq!(m.type_id, chunk::USER_CONTROL);
        assert_eq!(m.payload, vec![0, 7, 0, 0, 0x04, 0xd2]);
        // `_error` to connect: refused.
        let mut wire = Vec::new();
        let body = command(
            "_error",
            TXN_CONNECT,
            vec![
                Amf::Null,
                Amf::object(&[
                    ("level", Amf::str("error")),
                    ("code", Amf::str("NetConnection.Connect.Rejected")),
                ]),
            ],
        );
        w.write(3, 0, chunk::COMMAND_AMF0, 0, &body, &mut wire);
        assert_eq!(
            p.feed(&wire, &mut Vec::new()),
            Err(PublishError::Refused {
                code: "NetConnection.Connect.Rejected".into(),
                description: String::new()
            })
        );
        // Garbage and absurd declarations from a server.
        let mut p = handshaken();
        let hdr = [0x04, 0, 0, 0, 0xff, 0xff, 0xff, chunk::VIDEO, 1, 0, 0, 0];
        assert!(matches!(
            p.feed(&hdr, &mut Vec::new()),
            Err(PublishError::Chunk(ChunkError::MessageTooLong { .. }))
        ));
        let mut p = Publisher::start(target("k"), 0, &mut Vec::new());
        assert!(matches!(
            p.feed(b"\x15\x03\x03\x00\x02\x02\x28", &mut Vec::new()),
            Err(PublishError::Handshake(_))
        ));
        // A server that chats forever without answering.
        let mut p = handshaken();
        let mut wire = Vec::new();
        for _ in 0..=MAX_MESSAGES_BEFORE_PUBLISH {
            w.write(
                3,
                0,
                chunk::COMMAND_AMF0,
                0,
                &command("onBWDone", 0.0, vec![]),
                &mut wire,
            );
        }
        assert_eq!(
            p.feed(&wire, &mut Vec::new()),
            Err(PublishError::Protocol(
                "too many messages without starting the publish"
            ))
        );
    }

    #[test]
    fn media_before_the_publish_starts_is_not_written() {
        let mut p = Publisher::start(target("k"), 0, &mut Vec::new());
        let mut out = Vec::new();
        p.media(chunk::VIDEO, 0, &[1, 2, 3], &mut out);
        assert!(out.is_empty());
        assert!(!format!("{:?}", target("sekrit")).contains("sekrit"));
    }
}
