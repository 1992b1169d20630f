//! The on-disk format of the event log, as plain functions over bytes (no I/O here).
//!
//! ```text
//! segment file  seg-<base_seq, 20 digits>.qev
//!   header (20 bytes)  "QEVS" | version u16 LE | reserved u16 | base_seq u64 LE | crc32 u32 LE
//!   frames...          len u32 LE | crc32 u32 LE | payload (len bytes)
//!                      crc32 covers the 4 length bytes and the payload
//!   payload            postcard: format u8, seq, raised_at_ms, severity u8, category str,
//!                      message str, flow_id Option<str>, details (JSON text)
//! cursor file   cursor (20 bytes)
//!                      "QCUR" | version u16 LE | reserved u16 | acked_seq u64 LE | crc32 u32 LE
//! loss ack file loss-ack (20 bytes)
//!                      "QLAK" | version u16 LE | reserved u16 | acked_seq u64 LE | crc32 u32 LE
//! ```
//!
//! The CRC covers the length, so a flipped length bit is caught instead of sending the
//! reader off into the middle of a later record. Details travel as JSON text because
//! postcard is not self-describing and cannot decode a `serde_json::Value`.
//!
//! A segment's records do not depend on its header: every frame carries its own CRC and
//! sequence number, and the header's base is also the file name. So a damaged header hides
//! nothing (`check_segment_header`, `examine_segment`), and damage anywhere is counted in
//! records lost, from the sequence numbers around it.
//!
//! Decoding never panics on any input (a proptest and a fuzz target check it).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{Category, Event, Record, Severity};

pub const SEGMENT_MAGIC: &[u8; 4] = b"QEVS";
pub const CURSOR_MAGIC: &[u8; 4] = b"QCUR";
pub const LOSS_ACK_MAGIC: &[u8; 4] = b"QLAK";
/// Segment format this build writes. A reader skips (and keeps) segments of a newer version,
/// so a rolled-back binary neither misreads nor deletes them, and numbers its own records
/// above them (`max_seq_in`).
pub const SEGMENT_VERSION: u16 = 1;
pub const CURSOR_VERSION: u16 = 1;
pub const LOSS_ACK_VERSION: u16 = 1;
pub const HEADER_LEN: usize = 20;
pub const CURSOR_LEN: usize = 20;
pub const FRAME_OVERHEAD: usize = 8;
/// The fewest bytes any record takes in a segment of any version (a v1 frame is at least
/// its 8-byte head and one payload byte). Part of the frozen rule below.
pub const MIN_FRAME_LEN: u64 = 9;
/// Largest payload accepted. The manager takes messages up to 10 000 bytes; details are
/// small. Anything larger is garbage, which keeps a corrupt length from asking for gigabytes.
pub const MAX_PAYLOAD: usize = 64 * 1024;
/// Payload format byte, the first field of every record.
const RECORD_FORMAT: u8 = 1;

pub const SEGMENT_PREFIX: &str = "seg-";
pub const SEGMENT_SUFFIX: &str = ".qev";
pub const CURSOR_FILE: &str = "cursor";
pub const CURSOR_TMP: &str = "cursor.tmp";
/// An operator's acknowledgement of reported event loss (`quoll ctl ack-loss`).
pub const LOSS_ACK_FILE: &str = "loss-ack";
pub const LOSS_ACK_TMP: &str = "loss-ack.tmp";

/// What went wrong decoding a piece of the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// Fewer bytes than the structure needs.
    Short {
        need: usize,
        have: usize,
    },
    BadMagic,
    BadCrc,
    /// A header of a format this build does not know.
    UnsupportedVersion(u16),
    /// A frame length of 0 or above `MAX_PAYLOAD`.
    BadLength(u32),
    /// The CRC matched but the payload does not decode (a newer record format, or a bug).
    BadPayload(String),
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::Short { need, have } => {
                write!(f, "truncated: need {need} bytes, have {have}")
            }
            DecodeError::BadMagic => f.write_str("bad magic"),
            DecodeError::BadCrc => f.write_str("CRC mismatch"),
            DecodeError::UnsupportedVersion(v) => write!(f, "unsupported format version {v}"),
            DecodeError::BadLength(n) => write!(f, "implausible record length {n}"),
            DecodeError::BadPayload(e) => write!(f, "undecodable record: {e}"),
        }
    }
}

impl std::error::Error for DecodeError {}

// ---- names ---------------------------------------------------------------------------------

pub fn segment_name(base_seq: u64) -> String {
    format!("{SEGMENT_PREFIX}{base_seq:020}{SEGMENT_SUFFIX}")
}

/// The base sequence number of a segment file name, or `None` if it is not one.
pub fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name
        .strip_prefix(SEGMENT_PREFIX)?
        .strip_suffix(SEGMENT_SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The highest sequence number a segment named `base_seq`, `file_len` bytes long, can hold,
/// whatever its version. This is the frozen rule every version keeps, so that a rolled-back
/// older binary that cannot read a newer segment still numbers its own events above all of
/// the newer one's: the file name and the 20-byte header layout never change, sequence
/// numbers inside a segment start at its base and are dense (no gaps; a writer starts a new
/// segment at a gap), and every record takes at least `MIN_FRAME_LEN` bytes.
pub fn max_seq_in(base_seq: u64, file_len: u64) -> u64 {
    let records = file_len.saturating_sub(HEADER_LEN as u64) / MIN_FRAME_LEN;
    base_seq.saturating_add(records)
}

// ---- headers -------------------------------------------------------------------------------

fn header(magic: &[u8; 4], version: u16, value: u64) -> [u8; 20] {
    let mut h = [0u8; 20];
    h[..4].copy_from_slice(magic);
    h[4..6].copy_from_slice(&version.to_le_bytes());
    h[8..16].copy_from_slice(&value.to_le_bytes());
    let crc = crc32fast::hash(&h[..16]);
    h[16..].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Returns (version, value). The version is checked by the caller, after the CRC, so a
/// newer header is told apart from a corrupt one.
fn parse_header(bytes: &[u8], magic: &[u8; 4]) -> Result<(u16, u64), DecodeError> {
    if bytes.len() < 20 {
        return Err(DecodeError::Short {
            need: 20,
            have: bytes.len(),
        });
    }
    if &bytes[..4] != magic {
        return Err(DecodeError::BadMagic);
    }
    let crc = u32::from_le_bytes(bytes[16..20].try_into().expect("4 bytes"));
    if crc32fast::hash(&bytes[..16]) != crc {
        return Err(DecodeError::BadCrc);
    }
    let version = u16::from_le_bytes([bytes[4], bytes[5]]);
    let value = u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes"));
    Ok((version, value))
}

pub fn segment_header(base_seq: u64) -> [u8; HEADER_LEN] {
    header(SEGMENT_MAGIC, SEGMENT_VERSION, base_seq)
}

/// The segment's base sequence number.
pub fn parse_segment_header(bytes: &[u8]) -> Result<u64, DecodeError> {
    let (version, base) = parse_header(bytes, SEGMENT_MAGIC)?;
    if version != SEGMENT_VERSION {
        return Err(DecodeError::UnsupportedVersion(version));
    }
    Ok(base)
}

pub fn cursor_bytes(acked_seq: u64) -> [u8; CURSOR_LEN] {
    header(CURSOR_MAGIC, CURSOR_VERSION, acked_seq)
}

/// The acknowledged sequence number held in a cursor file.
pub fn parse_cursor(bytes: &[u8]) -> Result<u64, DecodeError> {
    let (version, acked) = parse_header(bytes, CURSOR_MAGIC)?;
    if version != CURSOR_VERSION {
        return Err(DecodeError::UnsupportedVersion(version));
    }
    Ok(acked)
}

/// The loss-ack file: an operator acknowledged reported loss of records up to `seq`.
pub fn loss_ack_bytes(seq: u64) -> [u8; CURSOR_LEN] {
    header(LOSS_ACK_MAGIC, LOSS_ACK_VERSION, seq)
}

pub fn parse_loss_ack(bytes: &[u8]) -> Result<u64, DecodeError> {
    let (version, seq) = parse_header(bytes, LOSS_ACK_MAGIC)?;
    if version != LOSS_ACK_VERSION {
        return Err(DecodeError::UnsupportedVersion(version));
    }
    Ok(seq)
}

// ---- a segment's header, checked against its name ------------------------------------------

/// What a segment's 20-byte header says, checked against the base sequence number of its
/// file name (the frozen rule: both hold the same number, and the layout never changes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderCheck {
    /// Sound, of this version, and its base is the file name's.
    Sound { base: u64 },
    /// Sound, of another version: the segment is kept unread.
    Newer { version: u16 },
    /// Damaged, but what it held is known: either its CRC (intact) matches the header of
    /// `version` with the name's base (bits of the other 16 bytes flipped), or those 16
    /// bytes are exactly such a header (the CRC field is what flipped). Any one flipped
    /// bit, anywhere in the 20 bytes, lands here.
    Rebuilt { version: u16 },
    /// Damaged beyond rebuilding (the CRC and what it covers at once, as a zeroed sector
    /// does), shorter than a header, or sound but naming another base than its file: the
    /// records behind it decide (`examine_segment`).
    Damaged,
}

/// The version (1..) whose segment header with base `base` has the CRC `crc`, if any.
///
/// For messages of one length a CRC-32 is affine over GF(2): crc(a ^ b) = crc(a) ^ crc(b)
/// ^ crc(0). So the CRC of the header of version v is that of version 0, XORed with one
/// constant per set bit of v. Walking every version in Gray-code order flips one bit per
/// step: one XOR each instead of a CRC of 16 bytes (65 535 steps, microseconds).
pub fn version_with_crc(base: u64, crc: u32) -> Option<u16> {
    let crc_of = |version: u16| {
        let h = header(SEGMENT_MAGIC, version, base);
        crc32fast::hash(&h[..16])
    };
    let zero = crc_of(0);
    let bit: [u32; 16] = std::array::from_fn(|i| crc_of(1 << i) ^ zero);
    let mut c = zero;
    for step in 1..=u16::MAX {
        c ^= bit[step.trailing_zeros() as usize];
        if c == crc {
            return Some(step ^ (step >> 1));
        }
    }
    None
}

/// Check a segment header. Never fails: a header that does not check out is rebuilt from
/// what is known, the file name's base and the CRC, when that determines it.
pub fn check_segment_header(name_base: u64, bytes: &[u8]) -> HeaderCheck {
    match parse_header(bytes, SEGMENT_MAGIC) {
        // A sound header naming another base than its file does is not what was written
        // there (the two are written together): the name and the records decide.
        Ok((SEGMENT_VERSION, base)) if base == name_base => return HeaderCheck::Sound { base },
        Ok((SEGMENT_VERSION, _)) => return HeaderCheck::Damaged,
        Ok((version, _)) => return HeaderCheck::Newer { version },
        Err(DecodeError::Short { .. }) => return HeaderCheck::Damaged,
        Err(_) => {}
    }
    // The CRC field intact, something in bytes 0..16 flipped: of every header this build
    // could meet there (magic, any version, reserved 0, the name's base), at most one has
    // this CRC (they differ only in the 16-bit version field, and a CRC-32 tells apart
    // any two messages that differ within 32 bits), so a match is what was written.
    let stored = u32::from_le_bytes(bytes[16..20].try_into().expect("4 bytes"));
    if let Some(version) = version_with_crc(name_base, stored) {
        return HeaderCheck::Rebuilt { version };
    }
    // The CRC field itself damaged: the 16 bytes it covers still read as a header, with
    // the name's base.
    let version = u16::from_le_bytes([bytes[4], bytes[5]]);
    let looks_whole = &bytes[..4] == SEGMENT_MAGIC
        && version != 0
        && bytes[6..8] == [0, 0]
        && bytes[8..16] == name_base.to_le_bytes();
    if looks_whole {
        return HeaderCheck::Rebuilt { version };
    }
    HeaderCheck::Damaged
}

// ---- records -------------------------------------------------------------------------------

#[derive(Serialize, Deserialize)]
struct Stored<'a> {
    format: u8,
    seq: u64,
    raised_at_ms: u64,
    severity: u8,
    #[serde(borrow)]
    category: &'a str,
    message: std::borrow::Cow<'a, str>,
    flow_id: Option<std::borrow::Cow<'a, str>>,
    details: std::borrow::Cow<'a, str>,
}

fn severity_code(s: Severity) -> u8 {
    match s {
        Severity::Info => 0,
        Severity::Warning => 1,
        Severity::Critical => 2,
    }
}

fn severity_from(code: u8) -> Option<Severity> {
    Severity::ALL
        .into_iter()
        .find(|s| severity_code(*s) == code)
}

/// Append one framed record to `out`. Returns the frame length.
pub fn encode_record(record: &Record, out: &mut Vec<u8>) -> usize {
    let details = if record.event.details.is_empty() {
        String::new()
    } else {
        Value::Object(record.event.details.clone()).to_string()
    };
    let stored = Stored {
        format: RECORD_FORMAT,
        seq: record.seq,
        raised_at_ms: record.raised_at_ms,
        severity: severity_code(record.event.severity),
        category: record.event.category.as_str(),
        message: record.event.message.as_str().into(),
        flow_id: record.event.flow_id.as_deref().map(Into::into),
        details: details.into(),
    };
    let start = out.len();
    out.extend_from_slice(&[0u8; FRAME_OVERHEAD]);
    // Serialising into a Vec cannot fail for these types.
    let mut out_ref = std::mem::take(out);
    out_ref = postcard::to_extend(&stored, out_ref).expect("postcard into a Vec");
    *out = out_ref;
    let len = out.len() - start - FRAME_OVERHEAD;
    out[start..start + 4].copy_from_slice(&(len as u32).to_le_bytes());
    let mut h = crc32fast::Hasher::new();
    h.update(&out[start..start + 4]);
    h.update(&out[start + FRAME_OVERHEAD..]);
    let crc = h.finalize();
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    len + FRAME_OVERHEAD
}

/// Check the frame at the start of `bytes`: returns its payload and total length.
pub fn frame_at(bytes: &[u8]) -> Result<(&[u8], usize), DecodeError> {
    if bytes.len() < FRAME_OVERHEAD {
        return Err(DecodeError::Short {
            need: FRAME_OVERHEAD,
            have: bytes.len(),
        });
    }
    let len = u32::from_le_bytes(bytes[..4].try_into().expect("4 bytes"));
    if len == 0 || len as usize > MAX_PAYLOAD {
        return Err(DecodeError::BadLength(len));
    }
    let total = FRAME_OVERHEAD + len as usize;
    if bytes.len() < total {
        return Err(DecodeError::Short {
            need: total,
            have: bytes.len(),
        });
    }
    let crc = u32::from_le_bytes(bytes[4..8].try_into().expect("4 bytes"));
    let mut h = crc32fast::Hasher::new();
    h.update(&bytes[..4]);
    h.update(&bytes[FRAME_OVERHEAD..total]);
    if h.finalize() != crc {
        return Err(DecodeError::BadCrc);
    }
    Ok((&bytes[FRAME_OVERHEAD..total], total))
}

/// The sequence number of a payload, without decoding the rest (recovery reads only this).
pub fn payload_seq(payload: &[u8]) -> Result<u64, DecodeError> {
    #[derive(Deserialize)]
    struct Head {
        format: u8,
        seq: u64,
    }
    let (head, _): (Head, _) =
        postcard::take_from_bytes(payload).map_err(|e| DecodeError::BadPayload(e.to_string()))?;
    if head.format != RECORD_FORMAT {
        return Err(DecodeError::BadPayload(format!(
            "record format {}",
            head.format
        )));
    }
    Ok(head.seq)
}

/// Decode a record payload (inside a frame whose CRC matched).
pub fn decode_payload(payload: &[u8]) -> Result<Record, DecodeError> {
    let bad = |what: String| DecodeError::BadPayload(what);
    let stored: Stored = postcard::from_bytes(payload).map_err(|e| bad(e.to_string()))?;
    if stored.format != RECORD_FORMAT {
        return Err(bad(format!("record format {}", stored.format)));
    }
    let severity = severity_from(stored.severity)
        .ok_or_else(|| bad(format!("severity {}", stored.severity)))?;
    let category = Category::parse(stored.category)
        .ok_or_else(|| bad(format!("category {:?}", stored.category)))?;
    let details = if stored.details.is_empty() {
        Map::new()
    } else {
        match serde_json::from_str::<Value>(&stored.details) {
            Ok(Value::Object(m)) => m,
            Ok(_) => return Err(bad("details are not a JSON object".into())),
            Err(e) => return Err(bad(format!("details: {e}"))),
        }
    };
    Ok(Record {
        seq: stored.seq,
        raised_at_ms: stored.raised_at_ms,
        event: Event {
            severity,
            category,
            message: stored.message.into_owned(),
            flow_id: stored.flow_id.map(|s| s.into_owned()),
            details,
        },
    })
}

// ---- scanning a segment ----------------------------------------------------------------------

/// One valid frame found by `scan_frames`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameRef {
    pub offset: usize,
    pub len: usize,
    pub seq: u64,
}

/// What a scan of a segment's frames found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Scan {
    /// Valid frames in order, with strictly increasing sequence numbers.
    pub frames: Vec<FrameRef>,
    /// Damaged stretches between valid frames (each counts as one corrupt record: a damaged
    /// length makes it impossible to tell how many records a stretch held).
    pub corrupt: u64,
    /// End of the last valid frame: bytes after it are a torn (or damaged) tail.
    pub valid_len: usize,
}

impl Scan {
    pub fn has_tail(&self, file_len: usize) -> bool {
        self.valid_len < file_len
    }
}

/// Scan the frames of a segment body starting at `start` (after the header). A bad frame
/// is skipped by searching forward, byte by byte, for the next frame that checks out; what
/// lies between is counted as corrupt. A bad stretch with no valid frame after it is the
/// tail, reported by `valid_len` and not counted (the caller decides what it means). A
/// frame whose sequence number does not increase is treated as damage too: the log never
/// writes one, so it can only be garbage whose CRC happens to match.
pub fn scan_frames(bytes: &[u8], start: usize, min_seq: u64) -> Scan {
    scan_frames_until(bytes, start, min_seq, u64::MAX, |_| false)
}

/// As `scan_frames`, taking only sequence numbers up to `max_seq` (a segment holds none at
/// or above the next segment's base: anything that claims one is garbage whose CRC
/// happens to match, and must not push the numbers after it aside), and stopping right
/// after the first frame for which `stop` is true (a delivery read stops once its batch is
/// full instead of checking the rest of the file).
pub fn scan_frames_until(
    bytes: &[u8],
    start: usize,
    min_seq: u64,
    max_seq: u64,
    mut stop: impl FnMut(&FrameRef) -> bool,
) -> Scan {
    let mut scan = Scan {
        valid_len: start.min(bytes.len()),
        ..Scan::default()
    };
    let mut pos = start;
    let mut last_seq: Option<u64> = None;
    let mut in_damage = false;
    while pos < bytes.len() {
        let ok = frame_at(&bytes[pos..]).ok().and_then(|(payload, len)| {
            let seq = payload_seq(payload).ok()?;
            let fresh = seq >= min_seq && seq <= max_seq && last_seq.is_none_or(|l| seq > l);
            fresh.then_some((seq, len))
        });
        match ok {
            Some((seq, len)) => {
                if in_damage {
                    scan.corrupt += 1;
                    in_damage = false;
                }
                let frame = FrameRef {
                    offset: pos,
                    len,
                    seq,
                };
                scan.frames.push(frame);
                last_seq = Some(seq);
                pos += len;
                scan.valid_len = pos;
                if stop(&frame) {
                    break;
                }
            }
            None => {
                in_damage = true;
                pos += 1;
            }
        }
    }
    scan
}

/// How many frames `bytes` holds if it is a chain of frames whose length fields are intact
/// (CRCs and payloads aside) ending exactly at its end; `None` if it is not.
fn frames_by_length(bytes: &[u8]) -> Option<u64> {
    let mut pos = 0usize;
    let mut n = 0u64;
    while pos < bytes.len() {
        let len = bytes.get(pos..pos + 4)?;
        let len = u32::from_le_bytes(len.try_into().expect("4 bytes")) as usize;
        if len == 0 || len > MAX_PAYLOAD {
            return None;
        }
        pos += FRAME_OVERHEAD + len;
        n += 1;
    }
    (pos == bytes.len()).then_some(n)
}

/// A segment as recovery (and `quoll events`) sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Examined {
    pub header: HeaderCheck,
    /// Whether this build reads its records: of this version, whether its header is sound,
    /// rebuilt, or damaged with records of this version behind it.
    pub readable: bool,
    /// The base sequence number: the header's, or the file name's when the header is not
    /// sound.
    pub base_seq: u64,
    /// The frames found (empty when not readable).
    pub scan: Scan,
    /// Records that were in the segment and cannot be read, as ranges of sequence numbers
    /// (first, last), in order.
    pub lost: Vec<(u64, u64)>,
    /// `false` when the segment is damaged beyond counting (header and every record):
    /// `lost` then spans every number it may have held.
    pub lost_exact: bool,
}

impl Examined {
    pub fn header_damaged(&self) -> bool {
        matches!(
            self.header,
            HeaderCheck::Rebuilt { .. } | HeaderCheck::Damaged
        )
    }

    pub fn lost_count(&self) -> u64 {
        self.lost.iter().fold(0u64, |n, (lo, hi)| {
            n.saturating_add((hi - lo).saturating_add(1))
        })
    }
}

/// Examine one segment file: check its header against its name (`name_base`), find its
/// frames (sequence numbers from `min_seq` on, below `next_base`) and count the records
/// lost to damage.
///
/// `next_base` is the base of the segment after it (`None`: this is the newest segment,
/// whose damaged tail is a torn write, not a loss: nothing in it was confirmed).
///
/// Counting relies on the frozen rule (sequence numbers are dense inside a segment, which
/// starts at its base): a damaged stretch between two intact frames held exactly the
/// numbers between theirs, and one before the first frame the numbers from the base. A
/// damaged stretch at the end of an older segment held the records its length fields still
/// chain through, or else the numbers up to the next segment's base. Sequence numbers that
/// jump between intact adjacent frames are not losses (only older logs have them).
pub fn examine_segment(
    name_base: u64,
    bytes: &[u8],
    min_seq: u64,
    next_base: Option<u64>,
) -> Examined {
    let header = check_segment_header(name_base, bytes);
    let max_seq = next_base.map_or(u64::MAX, |n| n.saturating_sub(1));
    let scan_from =
        |base: u64| scan_frames_until(bytes, HEADER_LEN, base.max(min_seq), max_seq, |_| false);
    let unreadable = |header, lost: Vec<(u64, u64)>, exact| Examined {
        header,
        readable: false,
        base_seq: name_base,
        scan: Scan::default(),
        lost,
        lost_exact: exact,
    };
    let (base, scan) = match header {
        HeaderCheck::Sound { base } => (base, scan_from(base)),
        HeaderCheck::Rebuilt {
            version: SEGMENT_VERSION,
        } => (name_base, scan_from(name_base)),
        HeaderCheck::Newer { .. } | HeaderCheck::Rebuilt { .. } => {
            return unreadable(header, Vec::new(), true);
        }
        HeaderCheck::Damaged => {
            // Which version wrote it cannot be told from the header: the records can. A
            // v1 frame (CRC and record format 1) with a number this segment may hold is
            // ours to read; a newer format that a v1 reader must not read changes the
            // record format byte (see docs/events.md, Versioning).
            let scan = scan_from(name_base);
            if scan.frames.is_empty() {
                // Nothing readable: a newer segment whose header got damaged, or one of
                // ours with every record gone. Kept; whatever it held is counted as lost,
                // at most what the frozen rule lets it hold.
                let body = bytes.len().saturating_sub(HEADER_LEN);
                if body == 0 {
                    return unreadable(header, Vec::new(), true);
                }
                let most = max_seq_in(name_base, bytes.len() as u64);
                let last = match next_base {
                    Some(n) => n.saturating_sub(1).min(most),
                    None => most,
                };
                let lost = match frames_by_length(&bytes[HEADER_LEN..]) {
                    Some(k) if k > 0 && name_base.saturating_add(k - 1) <= last => {
                        let hi = name_base.saturating_add(k - 1);
                        return unreadable(header, vec![(name_base, hi)], true);
                    }
                    _ => vec![(name_base, last.max(name_base))],
                };
                return unreadable(header, lost, false);
            }
            (name_base, scan)
        }
    };
    let mut lost = Vec::new();
    let mut expected = base;
    let mut end = HEADER_LEN;
    for f in &scan.frames {
        if f.offset > end && f.seq > expected {
            lost.push((expected, f.seq - 1));
        }
        expected = f.seq.saturating_add(1);
        end = f.offset + f.len;
    }
    if let Some(next) = next_base
        && bytes.len() > end
        && next > expected
    {
        // A damaged tail of an older segment. If its length fields still chain to the end,
        // they count its records exactly (the writer may have skipped numbers before the
        // next segment: a queue overflow, reported when it happened). Otherwise the writer
        // went on densely into the next segment, as it does when a segment fills up.
        let room = next - expected;
        let k = match frames_by_length(&bytes[end..]) {
            Some(k) if k > 0 && k <= room => k,
            _ => room,
        };
        lost.push((expected, expected + k - 1));
    }
    Examined {
        header,
        readable: true,
        base_seq: base,
        scan,
        lost,
        lost_exact: true,
    }
}

/// Decode the records of a segment file, whole: what `examine_segment` found, and the
/// records (in order). Records whose frame is sound but whose payload does not decode are
/// counted in `undecodable`.
pub struct SegmentRead {
    pub examined: Examined,
    pub records: Vec<Record>,
    pub undecodable: u64,
}

pub fn read_segment(name_base: u64, bytes: &[u8], next_base: Option<u64>) -> SegmentRead {
    let examined = examine_segment(name_base, bytes, 0, next_base);
    let mut records = Vec::with_capacity(examined.scan.frames.len());
    let mut undecodable = 0;
    for f in &examined.scan.frames {
        let payload = &bytes[f.offset + FRAME_OVERHEAD..f.offset + f.len];
        match decode_payload(payload) {
            Ok(r) => records.push(r),
            Err(_) => undecodable += 1,
        }
    }
    SegmentRead {
        examined,
        records,
        undecodable,
    }
}
