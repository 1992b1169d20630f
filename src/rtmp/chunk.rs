//! The RTMP chunk stream: messages cut into chunks, interleaved over chunk stream ids, each
//! chunk with a basic header (fmt, csid) and a message header of 11, 7, 3 or 0 bytes that
//! says only what changed since the previous chunk of that chunk stream.
//!
//! [`ChunkReader`] turns bytes from the peer into whole messages; it bounds everything a
//! peer declares: the chunk size ([`MAX_CHUNK_SIZE`]), a message's length
//! ([`Limits::max_message`]), the bytes held by messages in progress together
//! ([`Limits::budget`]) and the number of chunk streams ([`MAX_CHUNK_STREAMS`]). Payloads grow
//! with the bytes that arrive, never to a declared length up front. [`ChunkWriter`] cuts
//! outgoing messages.

use std::fmt;

/// The chunk size every connection starts with.
pub const DEFAULT_CHUNK_SIZE: u32 = 128;
/// The largest chunk size a peer may set. Encoders use 4096 (OBS, FFmpeg) to 60000; the
/// protocol allows 2^31-1, which would let one chunk header hold a connection's memory.
pub const MAX_CHUNK_SIZE: u32 = 1 << 20;
/// Chunk streams one connection may use at once (publishers use 3 to 6).
pub const MAX_CHUNK_STREAMS: usize = 64;
/// A timestamp field holding this says the real value follows in 4 bytes.
const EXTENDED: u32 = 0xff_ffff;

/// Protocol control message types (chunk stream 2, message stream 0).
pub const SET_CHUNK_SIZE: u8 = 1;
pub const ABORT: u8 = 2;
pub const ACK: u8 = 3;
pub const USER_CONTROL: u8 = 4;
pub const WINDOW_ACK_SIZE: u8 = 5;
pub const SET_PEER_BANDWIDTH: u8 = 6;
pub const AUDIO: u8 = 8;
pub const VIDEO: u8 = 9;
pub const DATA_AMF3: u8 = 15;
pub const COMMAND_AMF3: u8 = 17;
pub const DATA_AMF0: u8 = 18;
pub const COMMAND_AMF0: u8 = 20;

/// What one connection may make the reader hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The longest message accepted (a key frame of a high-rate stream is a few MB).
    pub max_message: u32,
    /// Bytes of all messages in progress together (they interleave across chunk streams).
    pub budget: usize,
}

impl Limits {
    /// Before a publish is accepted a peer is anonymous: commands are small, so it may not
    /// make the server hold more than this (a few of them fit in 256 KB a connection).
    pub const ANONYMOUS: Limits = Limits {
        max_message: 64 * 1024,
        budget: 128 * 1024,
    };
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message: 8 << 20,
            budget: 12 << 20,
        }
    }
}

/// A whole message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub csid: u32,
    /// Milliseconds, as the peer counts them (wraps at 2^32).
    pub timestamp: u32,
    pub type_id: u8,
    pub stream_id: u32,
    pub payload: Vec<u8>,
}

/// Why the chunk stream is broken; the connection cannot continue after any of these.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChunkError {
    /// Set Chunk Size of 0, or with the top bit set, or above [`MAX_CHUNK_SIZE`].
    BadChunkSize(u32),
    /// A message longer than [`Limits::max_message`].
    MessageTooLong { csid: u32, len: u32 },
    /// The messages in progress would hold more than [`Limits::budget`] bytes.
    OverBudget { csid: u32 },
    /// More than [`MAX_CHUNK_STREAMS`] chunk streams.
    TooManyChunkStreams,
    /// A type-3 chunk on a chunk stream that has no previous header to repeat.
    NoPreviousHeader { csid: u32 },
    /// A new message header while a message on the chunk stream is still incomplete.
    HeaderMidMessage { csid: u32 },
    /// A protocol control message whose payload is too short.
    ShortControl { type_id: u8 },
}

impl fmt::Display for ChunkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChunkError::BadChunkSize(n) => {
                write!(f, "chunk size {n} refused (1..={MAX_CHUNK_SIZE} accepted)")
            }
            ChunkError::MessageTooLong { csid, len } => {
                write!(
                    f,
                    "message of {len} bytes on chunk stream {csid} is too long"
                )
            }
            ChunkError::OverBudget { csid } => write!(
                f,
                "chunk stream {csid}: messages in progress exceed the memory budget"
            ),
            ChunkError::TooManyChunkStreams => {
                write!(f, "more than {MAX_CHUNK_STREAMS} chunk streams")
            }
            ChunkError::NoPreviousHeader { csid } => {
                write!(f, "chunk stream {csid} continues a header it never sent")
            }
            ChunkError::HeaderMidMessage { csid } => {
                write!(f, "chunk stream {csid} starts a message inside another")
            }
            ChunkError::ShortControl { type_id } => {
                write!(f, "protocol control message type {type_id} too short")
            }
        }
    }
}

impl std::error::Error for ChunkError {}

/// The last header seen on one chunk stream, and its message in progress.
#[derive(Debug, Default)]
struct ChunkStream {
    csid: u32,
    /// Absolute timestamp of the current (or last) message.
    timestamp: u32,
    /// What a type-3 chunk starting a new message adds (FFmpeg's reading: the last field).
    delta: u32,
    len: u32,
    type_id: u8,
    stream_id: u32,
    /// The last header used an extended timestamp, so type-3 chunks carry one too.
    extended: bool,
    /// A header has been seen (type 3 needs one).
    known: bool,
    payload: Vec<u8>,
}

/// Bytes in, messages out.
#[derive(Debug)]
pub struct ChunkReader {
    chunk_size: u32,
    limits: Limits,
    streams: Vec<ChunkStream>,
    /// Bytes held by incomplete messages.
    held: usize,
}

fn be24(b: &[u8]) -> u32 {
    u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2])
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

impl ChunkReader {
    pub fn new(limits: Limits) -> Self {
        ChunkReader {
            chunk_size: DEFAULT_CHUNK_SIZE,
            limits,
            streams: Vec::new(),
            held: 0,
        }
    }

    pub fn chunk_size(&self) -> u32 {
        self.chunk_size
    }

    /// New limits from now on (messages in progress keep what they hold).
    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
    }

    /// Bytes held by messages in progress.
    pub fn held(&self) -> usize {
        self.held
    }

    /// Reads one chunk from the front of `data`. `Ok(None)`: more bytes are needed (nothing
    /// consumed). `Ok(Some((n, msg)))`: `n` bytes consumed, `msg` if the chunk completed one.
    /// Set Chunk Size and Abort are applied here (and also returned).
    pub fn read(&mut self, data: &[u8]) -> Result<Option<(usize, Option<Message>)>, ChunkError> {
        let Some(&b0) = data.first() else {
            return Ok(None);
        };
        let fmt = b0 >> 6;
        let (csid, mut pos) = match b0 & 0x3f {
            0 => match data.get(1) {
                Some(&b) => (64 + u32::from(b), 2),
                None => return Ok(None),
            },
            1 => match data.get(1..3) {
                Some(b) => (64 + u32::from(b[0]) + 256 * u32::from(b[1]), 3),
                None => return Ok(None),
            },
            n => (u32::from(n), 1),
        };
        let header_len = [11, 7, 3, 0][usize::from(fmt)];
        let Some(h) = data.get(pos..pos + header_len) else {
            return Ok(None);
        };
        pos += header_len;
        let idx = match self.streams.iter().position(|s| s.csid == csid) {
            Some(i) => i,
            None => {
                if fmt == 3 {
                    return Err(ChunkError::NoPreviousHeader { csid });
                }
                if self.streams.len() >= MAX_CHUNK_STREAMS {
                    // Forget a chunk stream with nothing in progress, or give up.
                    let Some(free) = self.streams.iter().position(|s| s.payload.is_empty()) else {
                        return Err(ChunkError::TooManyChunkStreams);
                    };
                    self.streams.swap_remove(free);
                }
                self.streams.push(ChunkStream {
                    csid,
                    ..ChunkStream::default()
                });
                self.streams.len() - 1
            }
        };
        let cs = &self.streams[idx];
        if fmt == 3 && !cs.known {
            return Err(ChunkError::NoPreviousHeader { csid });
        }
        if fmt != 3 && !cs.payload.is_empty() {
            return Err(ChunkError::HeaderMidMessage { csid });
        }
        // The timestamp field (or delta), extended or not.
        let ts_field = if fmt < 3 { be24(h) } else { 0 };
        let extended = if fmt < 3 {
            ts_field == EXTENDED
        } else {
            cs.extended
        };
        let ext_value = if extended {
            let Some(e) = data.get(pos..pos + 4) else {
                return Ok(None);
            };
            pos += 4;
            Some(be32(e))
        } else {
            None
        };
        // Everything the header needs is here: how much payload does this chunk carry?
        let (len, starting) = match fmt {
            0 | 1 => (be24(&h[3..6]), true),
            _ => (cs.len, cs.payload.is_empty()),
        };
        if starting && len > self.limits.max_message {
            return Err(ChunkError::MessageTooLong { csid, len });
        }
        let have = cs.payload.len();
        let take = (len as usize - have.min(len as usize)).min(self.chunk_size as usize);
        if data.len() < pos + take {
            return Ok(None);
        }
        if starting && take < len as usize && self.held + len as usize > self.limits.budget {
            return Err(ChunkError::OverBudget { csid });
        }
        // Commit the header.
        let cs = &mut self.streams[idx];
        let field = ext_value.unwrap_or(ts_field);
        match fmt {
            0 => {
                cs.timestamp = field;
                cs.delta = field;
                cs.len = len;
                cs.type_id = h[6];
                cs.stream_id = u32::from_le_bytes([h[7], h[8], h[9], h[10]]);
            }
            1 => {
                cs.delta = field;
                cs.timestamp = cs.timestamp.wrapping_add(field);
                cs.len = len;
                cs.type_id = h[6];
            }
            2 => {
                cs.delta = field;
                cs.timestamp = cs.timestamp.wrapping_add(field);
            }
            _ => {
                if starting {
                    cs.timestamp = cs.timestamp.wrapping_add(cs.delta);
                }
            }
        }
        if fmt < 3 {
            cs.extended = extended;
        }
        cs.known = true;
        cs.payload.extend_from_slice(&data[pos..pos + take]);
        pos += take;
        if cs.payload.len() < cs.len as usize {
            if starting {
                self.held += cs.len as usize;
            }
            return Ok(Some((pos, None)));
        }
        if !starting {
            self.held = self.held.saturating_sub(cs.len as usize);
        }
        let msg = Message {
            csid,
            timestamp: cs.timestamp,
            type_id: cs.type_id,
            stream_id: cs.stream_id,
            payload: std::mem::take(&mut cs.payload),
        };
        self.control(&msg)?;
        Ok(Some((pos, Some(msg))))
    }

    /// Applies the control messages that change how chunks are read.
    fn control(&mut self, msg: &Message) -> Result<(), ChunkError> {
        if msg.stream_id != 0 && msg.csid != 2 {
            return Ok(());
        }
        match msg.type_id {
            SET_CHUNK_SIZE => {
                let b = msg.payload.get(..4).ok_or(ChunkError::ShortControl {
                    type_id: SET_CHUNK_SIZE,
                })?;
                let size = be32(b);
                if size == 0 || size > MAX_CHUNK_SIZE {
                    return Err(ChunkError::BadChunkSize(size));
                }
                self.chunk_size = size;
            }
            ABORT => {
                let b = msg
                    .payload
                    .get(..4)
                    .ok_or(ChunkError::ShortControl { type_id: ABORT })?;
                let csid = be32(b);
                if let Some(cs) = self.streams.iter_mut().find(|s| s.csid == csid)
                    && !cs.payload.is_empty()
                {
                    self.held = self.held.saturating_sub(cs.len as usize);
                    cs.payload = Vec::new();
                }
            }
            _ => {}
        }
        Ok(())
    }
}

/// Messages out, chunks out: type 0 for a message's first chunk, type 3 for the rest.
#[derive(Debug)]
pub struct ChunkWriter {
    chunk_size: u32,
}

impl Default for ChunkWriter {
    fn default() -> Self {
        ChunkWriter {
            chunk_size: DEFAULT_CHUNK_SIZE,
        }
    }
}

impl ChunkWriter {
    /// From now on, chunks of this size (after a Set Chunk Size was written with the old).
    pub fn set_chunk_size(&mut self, size: u32) {
        self.chunk_size = size.clamp(1, MAX_CHUNK_SIZE);
    }

    fn basic_header(fmt: u8, csid: u32, out: &mut Vec<u8>) {
        match csid {
            2..=63 => out.push(fmt << 6 | csid as u8),
            64..=319 => out.extend_from_slice(&[fmt << 6, (csid - 64) as u8]),
            _ => {
                let c = csid.clamp(320, 65599) - 64;
                out.extend_from_slice(&[fmt << 6 | 1, c as u8, (c >> 8) as u8]);
            }
        }
    }

    /// Appends `payload` as one message (at most 2^24-1 bytes; longer is cut).
    pub fn write(
        &self,
        csid: u32,
        timestamp: u32,
        type_id: u8,
        stream_id: u32,
        payload: &[u8],
        out: &mut Vec<u8>,
    ) {
        let payload = &payload[..payload.len().min(0xff_ffff)];
        let csid = csid.max(2);
        let extended = timestamp >= EXTENDED;
        let field = if extended { EXTENDED } else { timestamp };
        Self::basic_header(0, csid, out);
        out.extend_from_slice(&field.to_be_bytes()[1..]);
        out.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
        out.push(type_id);
        out.extend_from_slice(&stream_id.to_le_bytes());
        if extended {
            out.extend_from_slice(&timestamp.to_be_bytes());
        }
        let mut chunks = payload.chunks(self.chunk_size as usize);
        if let Some(first) = chunks.next() {
            out.extend_from_slice(first);
        }
        for c in chunks {
            Self::basic_header(3, csid, out);
            if extended {
                out.extend_from_slice(&timestamp.to_be_bytes());
            }
            out.extend_from_slice(c);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(r: &mut ChunkReader, mut data: &[u8]) -> Result<Vec<Message>, ChunkError> {
        let mut out = Vec::new();
        while let Some((n, m)) = r.read(data)? {
            data = &data[n..];
            out.extend(m);
        }
        assert!(data.is_empty(), "{} bytes left", data.len());
        Ok(out)
    }

    #[test]
    fn writer_and_reader_agree_byte_by_byte_and_at_once() {
        let mut w = ChunkWriter::default();
        let mut wire = Vec::new();
        let big: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
        w.write(3, 0, COMMAND_AMF0, 0, b"hello", &mut wire);
        w.write(2, 0, SET_CHUNK_SIZE, 0, &4096u32.to_be_bytes(), &mut wire);
        w.set_chunk_size(4096);
        w.write(6, 40, VIDEO, 1, &big, &mut wire);
        w.write(70, 0x0100_0000, AUDIO, 1, &big[..300], &mut wire);
        w.write(400, 5, AUDIO, 1, b"", &mut wire);
        let mut r = ChunkReader::new(Limits::default());
        let msgs = read_all(&mut r, &wire).unwrap();
        assert_eq!(msgs.len(), 5);
        assert_eq!(r.chunk_size(), 4096);
        assert_eq!(msgs[2].payload, big);
        assert_eq!((msgs[2].timestamp, msgs[2].stream_id), (40, 1));
        assert_eq!((msgs[3].csid, msgs[3].timestamp), (70, 0x0100_0000));
        assert_eq!(msgs[4].csid, 400);
        // Fed one byte at a time, through a buffer as the session does.
        let mut r = ChunkReader::new(Limits::default());
        let mut buf = Vec::new();
        let mut got = Vec::new();
        for &b in &wire {
            buf.push(b);
            while let Some((n, m)) = r.read(&buf).unwrap() {
                buf.drain(..n);
                got.extend(m);
            }
        }
        assert_eq!(got, msgs);
        assert_eq!(r.held(), 0);
    }

    #[test]
    fn interleaved_chunks_and_header_types_1_2_3() {
        // Two messages of 200 bytes on csid 4 and 5, chunk size 128, interleaved; then
        // type-1, type-2 and type-3 headers for further messages on csid 4.
        let a = vec![0xaa; 200];
        let b = vec![0xbb; 200];
        let mut wire = Vec::new();
        // csid 4 fmt 0: ts 1000, len 200, video, stream 1
        wire.extend_from_slice(&[0x04, 0, 0x03, 0xe8, 0, 0, 200, VIDEO, 1, 0, 0, 0]);
        wire.extend_from_slice(&a[..128]);
        // csid 5 fmt 0: ts 1010, len 200, audio
        wire.extend_from_slice(&[0x05, 0, 0x03, 0xf2, 0, 0, 200, AUDIO, 1, 0, 0, 0]);
        wire.extend_from_slice(&b[..128]);
        wire.push(0xc4); // fmt 3 csid 4
        wire.extend_from_slice(&a[128..]);
        wire.push(0xc5);
        wire.extend_from_slice(&b[128..]);
        // csid 4 fmt 1: delta 40, len 3, video
        wire.extend_from_slice(&[0x44, 0, 0, 40, 0, 0, 3, VIDEO, 1, 2, 3]);
        // csid 4 fmt 2: delta 33
        wire.extend_from_slice(&[0x84, 0, 0, 33, 4, 5, 6]);
        // csid 4 fmt 3 starting a message: delta 33 again
        wire.extend_from_slice(&[0xc4, 7, 8, 9]);
        let mut r = ChunkReader::new(Limits::default());
        let m = read_all(&mut r, &wire).unwrap();
        let ts: Vec<(u32, u32)> = m.iter().map(|m| (m.csid, m.timestamp)).collect();
        assert_eq!(
            ts,
            vec![(4, 1000), (5, 1010), (4, 1040), (4, 1073), (4, 1106)]
        );
        assert_eq!(m[0].payload, a);
        assert_eq!(m[1].payload, b);
        assert_eq!(m[4].payload, vec![7, 8, 9]);
        assert!(m[4].stream_id == 1);
    }

    #[test]
    fn extended_timestamps_repeat_on_type_3_chunks() {
        let mut wire = vec![0x06, 0xff, 0xff, 0xff, 0, 0, 200, VIDEO, 1, 0, 0, 0];
        wire.extend_from_slice(&0x1234_5678u32.to_be_bytes());
        wire.extend_from_slice(&[1; 128]);
        wire.push(0xc6);
        wire.extend_from_slice(&0x1234_5678u32.to_be_bytes());
        wire.extend_from_slice(&[2; 72]);
        let mut r = ChunkReader::new(Limits::default());
        let m = read_all(&mut r, &wire).unwrap();
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].timestamp, 0x1234_5678);
        assert_eq!(m[0].payload.len(), 200);
    }

    #[test]
    fn absurd_declarations_are_refused() {
        let mut r = ChunkReader::new(Limits::default());
        // Set Chunk Size 2^31-1.
        let mut w = Vec::new();
        ChunkWriter::default().write(
            2,
            0,
            SET_CHUNK_SIZE,
            0,
            &0x7fff_ffffu32.to_be_bytes(),
            &mut w,
        );
        assert_eq!(
            read_all(&mut r, &w),
            Err(ChunkError::BadChunkSize(0x7fff_ffff))
        );
        let mut r = ChunkReader::new(Limits::default());
        let mut w = Vec::new();
        ChunkWriter::default().write(2, 0, SET_CHUNK_SIZE, 0, &0u32.to_be_bytes(), &mut w);
        assert_eq!(read_all(&mut r, &w), Err(ChunkError::BadChunkSize(0)));
        // A 16 MB message with a small limit.
        let limits = Limits {
            max_message: 1000,
            budget: 1500,
        };
        let mut r = ChunkReader::new(limits);
        let hdr = [0x04, 0, 0, 0, 0xff, 0xff, 0xff, VIDEO, 1, 0, 0, 0];
        assert!(matches!(
            r.read(&hdr),
            Err(ChunkError::MessageTooLong { .. })
        ));
        // Two 900-byte messages in progress exceed the 1500-byte budget.
        let mut r = ChunkReader::new(limits);
        let mut wire = vec![0x04, 0, 0, 0, 0, 0x03, 0x84, VIDEO, 1, 0, 0, 0];
        wire.extend_from_slice(&[0; 128]);
        wire.extend_from_slice(&[0x05, 0, 0, 0, 0, 0x03, 0x84, VIDEO, 1, 0, 0, 0]);
        wire.extend_from_slice(&[0; 128]);
        assert_eq!(
            read_all(&mut r, &wire),
            Err(ChunkError::OverBudget { csid: 5 })
        );
        // Type 3 with no previous header.
        let mut r = ChunkReader::new(Limits::default());
        assert_eq!(
            r.read(&[0xc9, 0]),
            Err(ChunkError::NoPreviousHeader { csid: 9 })
        );
    }

    #[test]
    fn abort_frees_a_message_in_progress() {
        let mut wire = vec![0x04, 0, 0, 0, 0, 0x03, 0x84, VIDEO, 1, 0, 0, 0];
        wire.extend_from_slice(&[0; 128]);
        ChunkWriter::default().write(2, 0, ABORT, 0, &4u32.to_be_bytes(), &mut wire);
        let mut r = ChunkReader::new(Limits::default());
        let m = read_all(&mut r, &wire).unwrap();
        assert_eq!(m.len(), 1);
        assert_eq!(r.held(), 0);
        // A new message on csid 4 may start.
        let m = read_all(&mut r, &[0x44, 0, 0, 1, 0, 0, 1, VIDEO, 9]).unwrap();
        assert_eq!(m[0].payload, vec![9]);
    }
}
