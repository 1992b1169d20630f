//! Cutting a live MPEG-TS into HLS segments, sans-IO: TS packets in, whole segments out.
//!
//! Each segment begins with the stream's latest PAT and PMT, then a random access point of
//! the program's timing stream: a video key frame, or for a stream without video, any
//! audio PES start. A cut is considered only once the open segment has lasted the target
//! duration, so a segment is as long as the target or, when key frames are sparser, up to
//! the next key frame (its real length goes in the playlist's EXTINF).
//!
//! A key frame is recognised by the random_access_indicator of the PES's first packet, or
//! else by the NAL units at the start of the PES (H.264 IDR, H.265 IRAP, an MPEG-2 sequence
//! header). Looking at the NAL units needs the packets after the PES start, so while a cut
//! is due the packets from a video PES start are held (at most [`MAX_SCAN`] bytes of video
//! payload) until the first picture's type is known. Everything here reads untrusted bytes
//! through bounds-checked views and never panics.
//!
//! Durations come from the timing stream's PTS (exact, and the same on every run of the
//! same input), or from the time passed in when there is none or it jumps (a restarted
//! source): `now` is only read for that. The PAT and the PMT PID's continuity counters are
//! renumbered, since the copies put at each segment start are packets the source never sent.

use std::time::{Duration, Instant};

use crate::ts::packet::{NULL_PID, PACKET_LEN, Packet, SYNC_BYTE};
use crate::ts::psi::{Section, SectionAssembler, TABLE_PAT, TABLE_PMT};

/// Bytes of video payload looked at for the first picture of a PES before it is taken for
/// a non-key frame: x264's first-frame SEI alone can be 1 KiB, a whole access unit's
/// parameter sets and SEI rarely more than a few.
pub const MAX_SCAN: usize = 64 * 1024;

/// A segment is cut at the next PES start of the timing stream, key frame or not, once it
/// holds this much: a source that never sends a key frame must not grow one without bound.
/// At twice this it is cut at whatever packet comes (a timing stream that stopped).
pub const MAX_SEGMENT_BYTES: usize = 32 * 1024 * 1024;

/// Packets held from a video PES start, all PIDs, before it is taken for a non-key frame
/// (the video PID may stop sending while the others go on).
pub const MAX_HELD_BYTES: usize = 4 * MAX_SCAN;

/// By the clock, a segment without a key frame is cut at the next PES start of the timing
/// stream once it lasted this many target durations (or [`MIN_FORCE_AFTER`]); at any packet
/// after twice that. Generous: sparse key frames are the encoder's choice, a stalled
/// playlist is not.
const FORCE_AFTER_TARGETS: u32 = 10;
const MIN_FORCE_AFTER: Duration = Duration::from_secs(30);

/// PTS steps larger than this are a timestamp jump (a source restart), not a duration.
const MAX_PTS_STEP: u64 = 90_000 * 600;
const PTS_MASK: u64 = (1 << 33) - 1;
const PAT_PID: u16 = 0;

/// One finished segment: whole TS packets, PAT and PMT first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// Number of the segment in this run, from the first number given to [`Segmenter::new`].
    pub seq: u64,
    pub duration: Duration,
    pub data: Vec<u8>,
}

/// How the timing stream's random access points are found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    H264,
    H265,
    Mpeg2Video,
    /// Video of a type whose pictures we do not parse: only the random_access_indicator.
    OtherVideo,
    /// Every PES start is a random access point (audio, or anything without video).
    Audio,
}

impl Codec {
    /// The kind of an elementary stream of the PMT, `None` for data (never a timing stream).
    fn of(stream_type: u8, descriptors: &[u8]) -> Option<Codec> {
        match stream_type {
            0x1B => Some(Codec::H264),
            0x24 => Some(Codec::H265),
            0x01 | 0x02 => Some(Codec::Mpeg2Video),
            0x10 | 0x20 | 0x42 | 0xD1 | 0xEA => Some(Codec::OtherVideo),
            0x03 | 0x04 | 0x0F | 0x11 | 0x1C | 0x81 | 0x87 => Some(Codec::Audio),
            // Private data: audio when a descriptor says AC-3, E-AC-3, DTS or AAC.
            0x06 => crate::ts::psi::descriptors(descriptors)
                .any(|(tag, _)| matches!(tag, 0x6A | 0x7A | 0x7B | 0x7C))
                .then_some(Codec::Audio),
            _ => None,
        }
    }

    fn is_video(self) -> bool {
        !matches!(self, Codec::Audio)
    }
}

/// The latest valid section of one PSI PID, and the packets that carry it.
#[derive(Default)]
struct Table {
    asm: SectionAssembler,
    section: Option<Vec<u8>>,
    /// Our continuity counter on this PID (every packet of it is renumbered).
    cc: u8,
}

/// Finds the first picture's NAL type across packet boundaries.
#[derive(Debug, Clone)]
struct NalScan {
    codec: Codec,
    zeros: u8,
    header_next: bool,
    scanned: usize,
}

impl NalScan {
    fn new(codec: Codec) -> Self {
        NalScan {
            codec,
            zeros: 0,
            header_next: false,
            scanned: 0,
        }
    }

    /// `Some(key)` once the first picture of the PES is found, or the scan gave up.
    fn feed(&mut self, bytes: &[u8]) -> Option<bool> {
        for &b in bytes {
            self.scanned += 1;
            if self.header_next {
                self.header_next = false;
                if let Some(key) = picture_kind(self.codec, b) {
                    return Some(key);
                }
            }
            if b == 0 {
                self.zeros = self.zeros.saturating_add(1);
            } else {
                self.header_next = b == 1 && self.zeros >= 2;
                self.zeros = 0;
            }
        }
        (self.scanned >= MAX_SCAN).then_some(false)
    }
}

/// For the byte after a start code: `Some(key)` if it begins a picture (or, for MPEG-2, a
/// sequence header, which precedes every I picture a decoder can start at).
fn picture_kind(codec: Codec, b: u8) -> Option<bool> {
    match codec {
        Codec::H264 => match b & 0x1F {
            5 => Some(true),
            1..=4 => Some(false),
            _ => None,
        },
        // IRAP pictures are types 16..=23 (BLA, IDR, CRA, reserved IRAP); VCL is 0..=31.
        Codec::H265 => match (b >> 1) & 0x3F {
            16..=23 => Some(true),
            0..=31 => Some(false),
            _ => None,
        },
        Codec::Mpeg2Video => match b {
            0xB3 => Some(true),
            0x00 => Some(false),
            _ => None,
        },
        Codec::OtherVideo | Codec::Audio => Some(false),
    }
}

/// What the first packet of a PES says about it.
struct PesStart<'a> {
    pts: Option<u64>,
    /// The elementary stream bytes after the PES header, in this packet.
    es: &'a [u8],
}

fn pes_start(payload: &[u8]) -> Option<PesStart<'_>> {
    if payload.get(..3)? != [0, 0, 1] {
        return None;
    }
    let stream_id = *payload.get(3)?;
    // Streams without the optional header (program_stream_map, padding, private_stream_2,
    // ECM/EMM, directory...): no PTS, no ES to look at.
    if matches!(
        stream_id,
        0xBC | 0xBE | 0xBF | 0xF0 | 0xF1 | 0xF2 | 0xF8 | 0xFF
    ) {
        return Some(PesStart { pts: None, es: &[] });
    }
    let flags = *payload.get(7)?;
    let header_len = usize::from(*payload.get(8)?);
    let pts = if flags & 0x80 != 0 {
        payload.get(9..14).map(|b| {
            (u64::from(b[0] >> 1) & 0x07) << 30
                | u64::from(b[1]) << 22
                | u64::from(b[2] >> 1) << 15
                | u64::from(b[3]) << 7
                | u64::from(b[4] >> 1)
        })
    } else {
        None
    };
    Some(PesStart {
        pts,
        es: payload.get(9 + header_len..).unwrap_or(&[]),
    })
}

/// The segment being filled.
struct Open {
    seq: u64,
    data: Vec<u8>,
    pts: Option<u64>,
    started: Instant,
}

/// Packets held from a video PES start while a cut is due, until its picture type is known.
struct Held {
    data: Vec<u8>,
    scan: NalScan,
    pts: Option<u64>,
    at: Instant,
}

/// TS packets in, segments out: see the module docs.
pub struct Segmenter {
    target: Duration,
    next_seq: u64,
    pat: Table,
    pmt: Table,
    pmt_pid: Option<u16>,
    /// The PES PID whose random access points start segments, and how to find them.
    timing: Option<(u16, Codec)>,
    open: Option<Open>,
    held: Option<Held>,
}

impl Segmenter {
    /// Segments of at least `target` (when key frames allow), numbered from `first_seq`.
    pub fn new(target: Duration, first_seq: u64) -> Self {
        Segmenter {
            target,
            next_seq: first_seq,
            pat: Table::default(),
            pmt: Table::default(),
            pmt_pid: None,
            timing: None,
            open: None,
            held: None,
        }
    }

    /// The timing stream's PID and kind, once a PMT named one.
    pub fn timing(&self) -> Option<(u16, Codec)> {
        self.timing
    }

    /// Take whole packets (a trailing partial packet is ignored); each segment finished by
    /// them is handed to `done`, in order.
    pub fn push(&mut self, packets: &[u8], now: Instant, mut done: impl FnMut(Segment)) {
        for raw in packets.chunks_exact(PACKET_LEN) {
            if let Some(s) = self.packet(raw, now) {
                done(s);
            }
        }
    }

    /// Take one packet; returns the segment it finished, if any.
    pub fn packet(&mut self, raw: &[u8], now: Instant) -> Option<Segment> {
        let p = Packet::new(raw)?;
        let pid = p.pid();
        if pid == NULL_PID || p.transport_error() {
            return None;
        }
        let mut copy = [0u8; PACKET_LEN];
        copy.copy_from_slice(raw);
        if pid == PAT_PID || Some(pid) == self.pmt_pid {
            self.psi(p);
            let table = if pid == PAT_PID {
                &mut self.pat
            } else {
                &mut self.pmt
            };
            if p.has_payload() {
                copy[3] = (copy[3] & 0xF0) | table.cc;
                table.cc = (table.cc + 1) & 0x0F;
            }
            self.append(&copy);
            return None;
        }
        let (timing_pid, codec) = self.timing?;
        if pid == timing_pid && p.pusi() {
            return self.timing_start(p, codec, &copy, now);
        }
        if let Some(held) = &mut self.held {
            held.data.extend_from_slice(&copy);
            let decided = if pid == timing_pid {
                p.payload().and_then(|pl| held.scan.feed(pl))
            } else {
                None
            }
            .or((held.data.len() >= MAX_HELD_BYTES).then_some(false));
            return decided.and_then(|key| self.release(key));
        }
        self.append(&copy);
        match &self.open {
            Some(o) if self.overdue(o, now, 2) => self.cut(None, now),
            _ => None,
        }
    }

    /// Whether `o` has run past `factor` times the forced-cut limits (bytes, clock).
    fn overdue(&self, o: &Open, now: Instant, factor: u32) -> bool {
        let force_after = (self.target * FORCE_AFTER_TARGETS).max(MIN_FORCE_AFTER);
        o.data.len() >= MAX_SEGMENT_BYTES * factor as usize
            || now.saturating_duration_since(o.started) >= force_after * factor
    }

    /// A PES of the timing stream starts in `p`.
    fn timing_start(
        &mut self,
        p: Packet<'_>,
        codec: Codec,
        copy: &[u8; PACKET_LEN],
        now: Instant,
    ) -> Option<Segment> {
        // A PES held undecided ends here: its picture was not a key frame we could see.
        let mut finished = None;
        if self.held.is_some() {
            finished = self.release(false);
        }
        let start = p.payload().and_then(pes_start);
        let pts = start.as_ref().and_then(|s| s.pts);
        if !self.cut_due(pts, now) {
            self.append(copy);
            return finished;
        }
        let rai = p
            .adaptation()
            .ok()
            .flatten()
            .is_some_and(|a| a.random_access());
        let overdue = self.open.as_ref().is_some_and(|o| self.overdue(o, now, 1));
        if rai || !codec.is_video() || overdue {
            let cut = self.cut(pts, now);
            self.append(copy);
            return finished.or(cut);
        }
        let mut scan = NalScan::new(codec);
        let decided = start.and_then(|s| scan.feed(s.es));
        self.held = Some(Held {
            data: copy.to_vec(),
            scan,
            pts,
            at: now,
        });
        match decided {
            Some(key) => finished.or(self.release(key)),
            None => finished,
        }
    }

    /// Whether the open segment has lasted the target (or there is none yet).
    fn cut_due(&self, pts: Option<u64>, now: Instant) -> bool {
        match &self.open {
            None => self.pat.section.is_some() && self.pmt.section.is_some(),
            Some(o) => duration(o, pts, now) >= self.target || self.overdue(o, now, 1),
        }
    }

    /// The held PES's picture type is known: cut before it if it is a key frame.
    fn release(&mut self, key: bool) -> Option<Segment> {
        let held = self.held.take()?;
        let cut = if key {
            self.cut(held.pts, held.at)
        } else {
            None
        };
        // Before the first key frame there is no segment: the packets are dropped.
        if let Some(o) = &mut self.open {
            o.data.extend_from_slice(&held.data);
        }
        cut
    }

    /// Close the open segment (if any) and open the next with PAT and PMT.
    fn cut(&mut self, pts: Option<u64>, now: Instant) -> Option<Segment> {
        let (Some(pat), Some(pmt), Some(pmt_pid)) =
            (&self.pat.section, &self.pmt.section, self.pmt_pid)
        else {
            return None;
        };
        let mut data = Vec::with_capacity(self.open.as_ref().map_or(0, |o| o.data.len()));
        packetize(PAT_PID, pat, &mut self.pat.cc, &mut data);
        packetize(pmt_pid, pmt, &mut self.pmt.cc, &mut data);
        let next = Open {
            seq: self.next_seq,
            data,
            pts,
            started: now,
        };
        self.next_seq += 1;
        let closed = self.open.replace(next)?;
        Some(Segment {
            seq: closed.seq,
            duration: duration(&closed, pts, now),
            data: closed.data,
        })
    }

    fn append(&mut self, packet: &[u8]) {
        if let Some(held) = &mut self.held {
            held.data.extend_from_slice(packet);
        } else if let Some(o) = &mut self.open {
            o.data.extend_from_slice(packet);
        }
    }

    /// Follow the PAT and the first program's PMT.
    fn psi(&mut self, p: Packet<'_>) {
        let Some(payload) = p.payload() else {
            return;
        };
        let pid = p.pid();
        let mut found: Option<Vec<u8>> = None;
        let table = if pid == PAT_PID {
            &mut self.pat
        } else {
            &mut self.pmt
        };
        let want = if pid == PAT_PID { TABLE_PAT } else { TABLE_PMT };
        let _ = table.asm.push(payload, p.pusi(), |s| {
            if let Ok(sec) = Section::new(s)
                && sec.table_id() == want
                && sec.current()
                && sec.section_number() == 0
                && sec.last_section_number() == 0
            {
                found = Some(s.to_vec());
            }
        });
        let Some(section) = found else {
            return;
        };
        if pid == PAT_PID {
            let Ok(sec) = Section::new(&section) else {
                return;
            };
            let pmt_pid = sec
                .pat_entries()
                .find(|&(program, _)| program != 0)
                .map(|(_, pid)| pid)
                .filter(|&p| p != PAT_PID && p != NULL_PID);
            if pmt_pid != self.pmt_pid {
                self.pmt_pid = pmt_pid;
                self.pmt = Table::default();
                self.timing = None;
            }
            self.pat.section = Some(section);
        } else {
            let Ok(pmt) = Section::new(&section).and_then(|s| s.pmt()) else {
                return;
            };
            let streams = || {
                pmt.streams()
                    .filter_map(|s| Some((s.pid, Codec::of(s.stream_type, s.descriptors)?)))
            };
            self.timing = streams()
                .find(|(_, c)| c.is_video())
                .or_else(|| streams().next());
            self.pmt.section = Some(section);
        }
    }
}

/// How long `o` has lasted at a timing-stream PES with `pts` (or at `now`).
fn duration(o: &Open, pts: Option<u64>, now: Instant) -> Duration {
    if let (Some(a), Some(b)) = (o.pts, pts) {
        let step = b.wrapping_sub(a) & PTS_MASK;
        if step <= MAX_PTS_STEP {
            return Duration::from_micros(step * 100 / 9);
        }
    }
    now.saturating_duration_since(o.started)
}

/// A PSI section as TS packets on `pid` (pointer_field 0, 0xFF stuffing), numbered from `*cc`.
fn packetize(pid: u16, section: &[u8], cc: &mut u8, out: &mut Vec<u8>) {
    let mut first = true;
    let mut rest = section;
    while first || !rest.is_empty() {
        let mut p = [0xFFu8; PACKET_LEN];
        p[0] = SYNC_BYTE;
        p[1] = (if first { 0x40 } else { 0 }) | (pid >> 8) as u8 & 0x1F;
        p[2] = pid as u8;
        p[3] = 0x10 | *cc;
        *cc = (*cc + 1) & 0x0F;
        let at = if first {
            p[4] = 0;
            5
        } else {
            4
        };
        let n = rest.len().min(PACKET_LEN - at);
        p[at..at + n].copy_from_slice(&rest[..n]);
        rest = &rest[n..];
        first = false;
        out.extend_from_slice(&p);
    }
}

#[cfg(test)]
mod tests;
