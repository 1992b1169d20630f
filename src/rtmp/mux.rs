//! MPEG-TS to FLV tags, sans-IO: the other direction of [`super::remux`], for the RTMP push
//! output.
//!
//! The PAT and PMT say which PIDs carry what. The first H.264 stream (`stream_type` 0x1B)
//! and the first AAC-in-ADTS stream (0x0F) are reassembled into PES packets and turned into
//! FLV tag bodies (RTMP message types 9 and 8):
//! - video: the Annex B access unit becomes 4-byte length-prefixed NAL units (access unit
//!   delimiters and filler dropped, parameter sets kept in-band as FFmpeg does), with the
//!   key-frame flag for an IDR and the composition time `PTS - DTS`. An
//!   AVCDecoderConfigurationRecord built from the SPS and PPS goes out before the first
//!   frame and again whenever they change. Video starts at a key frame;
//! - audio: each ADTS frame of the PES becomes one raw AAC tag, timed from the PES's PTS
//!   plus 1024 samples per frame before it, after an AudioSpecificConfig built from the
//!   ADTS header (again when it changes).
//!
//! Timestamps are milliseconds since the first DTS sent (33-bit PTS/DTS wrap unwrapped;
//! the 32-bit millisecond count wraps as RTMP's does, which the chunk writer carries in
//! extended timestamps). Every other elementary stream is left out and reported once as a
//! [`Notice`]. Everything read is bounded: a PES longer than its limit is dropped.

use crate::ts::packet::{PACKET_LEN, Packet};
use crate::ts::psi::{Section, SectionAssembler};

/// RTMP message types of the tags.
pub const AUDIO: u8 = 8;
pub const VIDEO: u8 = 9;
/// The largest video PES reassembled (a key frame of a high-rate stream is a few MB; the
/// same bound as the RTMP input's longest message).
pub const MAX_VIDEO_PES: usize = 8 << 20;
/// The largest audio PES (a few dozen ADTS frames at most).
pub const MAX_AUDIO_PES: usize = 256 << 10;
/// PTS and DTS count 90 kHz ticks in 33 bits.
const WRAP_33: i64 = 1 << 33;
const NAL_SPS: u8 = 7;
const NAL_PPS: u8 = 8;
const NAL_IDR: u8 = 5;
const NAL_AUD: u8 = 9;
const NAL_FILLER: u8 = 12;
/// ADTS sampling frequency index to Hz.
const AAC_RATES: [u32; 13] = [
    96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350,
];

/// One FLV tag body for an RTMP audio or video message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tag {
    /// [`AUDIO`] or [`VIDEO`].
    pub type_id: u8,
    /// Milliseconds since the first DTS sent.
    pub timestamp: u32,
    pub body: Vec<u8>,
}

/// What the muxer met that the caller should report (each at most once per PID).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// The PMT lists a stream FLV does not carry here (H.265, MPEG audio, AC-3, ...): it is
    /// left out. `kind` is `ts::psi::stream_kind`'s name for it.
    Unsupported { pid: u16, kind: &'static str },
    /// A second H.264 or AAC stream: only the first of each kind is pushed.
    Extra { pid: u16, kind: &'static str },
}

/// Why a PES produced nothing (counted by the caller).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    /// The PES header is broken or carries no PTS.
    BadPes,
    /// Longer than [`MAX_VIDEO_PES`] / [`MAX_AUDIO_PES`].
    TooLong,
    /// A continuity counter jumped: the PES in progress lost bytes.
    Discontinuity,
    /// An ADTS header that does not parse.
    BadAdts,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Video,
    Audio,
}

/// One PID's PES in progress.
#[derive(Debug)]
struct Pes {
    pid: u16,
    kind: Kind,
    buf: Vec<u8>,
    /// A PES has started (bytes before the first unit start are skipped).
    active: bool,
    last_cc: Option<u8>,
}

impl Pes {
    fn new(pid: u16, kind: Kind) -> Self {
        Pes {
            pid,
            kind,
            buf: Vec::new(),
            active: false,
            last_cc: None,
        }
    }

    fn limit(&self) -> usize {
        match self.kind {
            Kind::Video => MAX_VIDEO_PES,
            Kind::Audio => MAX_AUDIO_PES,
        }
    }

    /// The PES_packet_length says the PES is whole (0: unbounded, ends at the next start).
    fn complete(&self) -> bool {
        match self.buf.get(4..6) {
            Some(l) => {
                let len = usize::from(u16::from_be_bytes([l[0], l[1]]));
                len != 0 && self.buf.len() >= 6 + len
            }
            None => false,
        }
    }
}

/// The TS-to-FLV muxer of one output.
pub struct FlvMux {
    pat: SectionAssembler,
    pmt: SectionAssembler,
    pmt_pid: Option<u16>,
    pmt_version: Option<u8>,
    video: Option<Pes>,
    audio: Option<Pes>,
    /// PIDs already reported as [`Notice`]s.
    reported: Vec<u16>,
    /// The 33-bit clock unwrapped: the last raw value and its unwrapped count.
    clock: Option<(i64, i64)>,
    /// The unwrapped DTS that is timestamp 0.
    base: Option<i64>,
    sps: Option<Vec<u8>>,
    pps: Option<Vec<u8>>,
    /// What the receiver was last sent, so a change goes out again.
    sent_avc: Option<(Vec<u8>, Vec<u8>)>,
    sent_asc: Option<[u8; 2]>,
    /// Video waits for a key frame (at the start and after lost bytes).
    wait_key: bool,
}

impl Default for FlvMux {
    fn default() -> Self {
        Self::new()
    }
}

/// PTS or DTS from its 5 bytes.
fn timestamp_33(b: &[u8]) -> i64 {
    (i64::from(b[0] >> 1 & 0x07) << 30)
        | (i64::from(b[1]) << 22)
        | (i64::from(b[2] >> 1) << 15)
        | (i64::from(b[3]) << 7)
        | i64::from(b[4] >> 1)
}

/// A whole PES: (PTS, DTS, elementary stream bytes).
fn parse_pes(pes: &[u8]) -> Option<(i64, i64, &[u8])> {
    if pes.get(..3)? != [0, 0, 1] {
        return None;
    }
    let flags = *pes.get(7)?;
    let header_len = usize::from(*pes.get(8)?);
    let es_start = 9 + header_len;
    let declared = usize::from(u16::from_be_bytes([pes[4], pes[5]]));
    let end = if declared == 0 {
        pes.len()
    } else {
        (6 + declared).min(pes.len())
    };
    let es = pes.get(es_start..end)?;
    if flags & 0x80 == 0 {
        return None;
    }
    let pts = timestamp_33(pes.get(9..14)?);
    let dts = if flags & 0x40 != 0 && header_len >= 10 {
        timestamp_33(pes.get(14..19)?)
    } else {
        pts
    };
    Some((pts, dts, es))
}

/// The NAL units of an Annex B byte string (start codes and trailing zeros removed).
fn nal_units(es: &[u8]) -> Vec<&[u8]> {
    let mut starts = Vec::new();
    let mut i = 0;
    while i + 3 <= es.len() {
        if es[i] == 0 && es[i + 1] == 0 && es[i + 2] == 1 {
            starts.push(i + 3);
            i += 3;
        } else {
            i += 1;
        }
    }
    let mut out = Vec::with_capacity(starts.len());
    for (n, &s) in starts.iter().enumerate() {
        let end = starts.get(n + 1).map_or(es.len(), |&next| next - 3);
        let mut nal = &es[s..end.max(s)];
        while let [rest @ .., 0] = nal {
            nal = rest;
        }
        if !nal.is_empty() {
            out.push(nal);
        }
    }
    out
}

/// AVCDecoderConfigurationRecord (ISO/IEC 14496-15 5.2.4.1) of one SPS and one PPS.
pub fn avc_config_record(sps: &[u8], pps: &[u8]) -> Vec<u8> {
    let mut r = Vec::with_capacity(11 + sps.len() + pps.len());
    r.push(1);
    r.extend_from_slice(sps.get(1..4).unwrap_or(&[0x42, 0, 0x1e]));
    r.push(0xff); // 4-byte NAL unit lengths
    r.push(0xe1); // one SPS
    r.extend_from_slice(&(sps.len().min(0xffff) as u16).to_be_bytes());
    r.extend_from_slice(&sps[..sps.len().min(0xffff)]);
    r.push(1); // one PPS
    r.extend_from_slice(&(pps.len().min(0xffff) as u16).to_be_bytes());
    r.extend_from_slice(&pps[..pps.len().min(0xffff)]);
    r
}

impl FlvMux {
    pub fn new() -> Self {
        FlvMux {
            pat: SectionAssembler::new(),
            pmt: SectionAssembler::new(),
            pmt_pid: None,
            pmt_version: None,
            video: None,
            audio: None,
            reported: Vec::new(),
            clock: None,
            base: None,
            sps: None,
            pps: None,
            sent_avc: None,
            sent_asc: None,
            wait_key: true,
        }
    }

    /// A new receiver (a reconnect) or a gap in the input (the output fell behind): the
    /// sequence headers go out again, video resumes at the next key frame, timestamps start
    /// from 0 again, and PES in progress are dropped. What the PMT said is kept.
    pub fn restart(&mut self) {
        for p in [&mut self.video, &mut self.audio].into_iter().flatten() {
            p.buf.clear();
            p.active = false;
            p.last_cc = None;
        }
        self.base = None;
        self.sent_avc = None;
        self.sent_asc = None;
        self.wait_key = true;
    }

    /// Packets were lost on the way in (the output fell a ring behind): PES in progress are
    /// dropped and video resumes at the next key frame; the timeline and what the receiver
    /// was sent go on.
    pub fn gap(&mut self) {
        for p in [&mut self.video, &mut self.audio].into_iter().flatten() {
            p.buf.clear();
            p.active = false;
            p.last_cc = None;
        }
        self.wait_key = true;
    }

    /// The PMT named an H.264 stream (then audio alone is not started before video).
    pub fn has_video(&self) -> bool {
        self.video.is_some()
    }

    /// Takes TS packets (whole 188-byte packets; a trailing part is ignored), appending
    /// finished tags to `tags`, new notices to `notices` and what was dropped to `dropped`.
    pub fn push(
        &mut self,
        packets: &[u8],
        tags: &mut Vec<Tag>,
        notices: &mut Vec<Notice>,
        dropped: &mut Vec<Dropped>,
    ) {
        for raw in packets.chunks_exact(PACKET_LEN) {
            self.packet(raw, tags, notices, dropped);
        }
    }

    fn packet(
        &mut self,
        raw: &[u8],
        tags: &mut Vec<Tag>,
        notices: &mut Vec<Notice>,
        dropped: &mut Vec<Dropped>,
    ) {
        let Some(p) = Packet::new(raw) else { return };
        if p.transport_error() {
            return;
        }
        let pid = p.pid();
        let Some(payload) = p.payload() else { return };
        if pid == 0 {
            let mut pmt_pid = None;
            let _ = self.pat.push(payload, p.pusi(), |s| {
                if let Ok(sec) = Section::new(s)
                    && sec.table_id() == 0
                {
                    pmt_pid = sec
                        .pat_entries()
                        .find(|&(program, _)| program != 0)
                        .map(|(_, pid)| pid);
                }
            });
            if let Some(pid) = pmt_pid
                && self.pmt_pid != Some(pid)
            {
                self.pmt_pid = Some(pid);
                self.pmt_version = None;
                self.pmt.reset();
            }
            return;
        }
        if Some(pid) == self.pmt_pid {
            let mut sections = Vec::new();
            let _ = self
                .pmt
                .push(payload, p.pusi(), |s| sections.push(s.to_vec()));
            for s in sections {
                self.pmt_section(&s, notices);
            }
            return;
        }
        let cc = p.cc();
        let pusi = p.pusi();
        let Some(pes) = [&mut self.video, &mut self.audio]
            .into_iter()
            .flatten()
            .find(|s| s.pid == pid)
        else {
            return;
        };
        // A repeated packet (same counter) carries nothing new; a jump loses the PES.
        if let Some(last) = pes.last_cc {
            if cc == last {
                return;
            }
            if cc != (last + 1) & 0x0f && pes.active && !pusi {
                pes.buf.clear();
                pes.active = false;
                dropped.push(Dropped::Discontinuity);
                if pes.kind == Kind::Video {
                    self.wait_key = true;
                }
            }
        }
        pes.last_cc = Some(cc);
        let kind = pes.kind;
        if pusi {
            let done = std::mem::take(&mut pes.buf);
            let was_active = pes.active;
            pes.buf.extend_from_slice(payload);
            pes.active = true;
            if was_active && !done.is_empty() {
                self.finish(kind, &done, tags, dropped);
            }
        } else if pes.active {
            if pes.buf.len() + payload.len() > pes.limit() {
                pes.buf = Vec::new();
                pes.active = false;
                dropped.push(Dropped::TooLong);
                if kind == Kind::Video {
                    self.wait_key = true;
                }
                return;
            }
            pes.buf.extend_from_slice(payload);
        }
        let pes = match kind {
            Kind::Video => self.video.as_mut(),
            Kind::Audio => self.audio.as_mut(),
        };
        if let Some(pes) = pes
            && pes.active
            && pes.complete()
        {
            let done = std::mem::take(&mut pes.buf);
            pes.active = false;
            self.finish(kind, &done, tags, dropped);
        }
    }

    fn pmt_section(&mut self, s: &[u8], notices: &mut Vec<Notice>) {
        let Ok(sec) = Section::new(s) else { return };
        if sec.table_id() != 2 || self.pmt_version == Some(sec.version()) {
            return;
        }
        let Ok(pmt) = sec.pmt() else { return };
        self.pmt_version = Some(sec.version());
        let (mut video, mut audio) = (None, None);
        for st in pmt.streams() {
            let kind = crate::ts::psi::stream_kind(st.stream_type, st.descriptors);
            let slot = match st.stream_type {
                0x1b => &mut video,
                0x0f => &mut audio,
                _ => {
                    if !self.reported.contains(&st.pid) {
                        self.reported.push(st.pid);
                        notices.push(Notice::Unsupported { pid: st.pid, kind });
                    }
                    continue;
                }
            };
            if slot.is_none() {
                *slot = Some(st.pid);
            } else if !self.reported.contains(&st.pid) {
                self.reported.push(st.pid);
                notices.push(Notice::Extra { pid: st.pid, kind });
            }
        }
        if self.video.as_ref().map(|p| p.pid) != video {
            self.video = video.map(|pid| Pes::new(pid, Kind::Video));
            self.wait_key = true;
        }
        if self.audio.as_ref().map(|p| p.pid) != audio {
            self.audio = audio.map(|pid| Pes::new(pid, Kind::Audio));
        }
    }

    /// The 33-bit `raw` on the unwrapped timeline (neighbours are taken to be less than
    /// 2^32 ticks, 13 hours, apart).
    fn unwrap(&mut self, raw: i64) -> i64 {
        let ext = match self.clock {
            None => raw,
            Some((last_raw, last_ext)) => {
                let mut d = (raw - last_raw).rem_euclid(WRAP_33);
                if d >= WRAP_33 / 2 {
                    d -= WRAP_33;
                }
                last_ext + d
            }
        };
        self.clock = Some((raw, ext));
        ext
    }

    /// Milliseconds since the base (set by the first tag), as RTMP counts them: before the
    /// base is 0, and the count wraps at 2^32.
    fn ms(&mut self, dts: i64) -> u32 {
        let base = *self.base.get_or_insert(dts);
        ((dts - base).max(0) / 90) as u64 as u32
    }

    fn finish(&mut self, kind: Kind, pes: &[u8], tags: &mut Vec<Tag>, dropped: &mut Vec<Dropped>) {
        let Some((pts, dts, es)) = parse_pes(pes) else {
            dropped.push(Dropped::BadPes);
            return;
        };
        // Both from the one raw clock: DTS first, PTS as its offset (a wrap between them
        // is unwrapped the same way).
        let dts = self.unwrap(dts);
        let pts = dts + (pts - (dts.rem_euclid(WRAP_33))).rem_euclid(WRAP_33);
        match kind {
            Kind::Video => self.video_frame(pts, dts, es, tags),
            Kind::Audio => self.audio_frames(pts, es, tags, dropped),
        }
    }

    fn video_frame(&mut self, pts: i64, dts: i64, es: &[u8], tags: &mut Vec<Tag>) {
        let nals = nal_units(es);
        let mut key = false;
        for nal in &nals {
            match nal[0] & 0x1f {
                NAL_SPS => self.sps = Some(nal.to_vec()),
                NAL_PPS => self.pps = Some(nal.to_vec()),
                NAL_IDR => key = true,
                _ => {}
            }
        }
        let (Some(sps), Some(pps)) = (&self.sps, &self.pps) else {
            return;
        };
        if self.wait_key && !key {
            return;
        }
        let sent = self
            .sent_avc
            .as_ref()
            .is_some_and(|(s, p)| s == sps && p == pps);
        let config = (!sent).then(|| (sps.clone(), pps.clone()));
        self.wait_key = false;
        let ts = self.ms(dts);
        if let Some((sps, pps)) = config {
            let mut body = vec![0x17, 0, 0, 0, 0];
            body.extend_from_slice(&avc_config_record(&sps, &pps));
            tags.push(Tag {
                type_id: VIDEO,
                timestamp: ts,
                body,
            });
            self.sent_avc = Some((sps, pps));
        }
        let cts = ((pts - dts) / 90).clamp(-(1 << 23), (1 << 23) - 1) as i32;
        let mut body = Vec::with_capacity(es.len() + 4 * nals.len() + 5);
        body.push(if key { 0x17 } else { 0x27 });
        body.push(1);
        body.extend_from_slice(&cts.to_be_bytes()[1..]);
        for nal in nals {
            if matches!(nal[0] & 0x1f, NAL_AUD | NAL_FILLER) {
                continue;
            }
            body.extend_from_slice(&(nal.len() as u32).to_be_bytes());
            body.extend_from_slice(nal);
        }
        tags.push(Tag {
            type_id: VIDEO,
            timestamp: ts,
            body,
        });
    }

    fn audio_frames(
        &mut self,
        pts: i64,
        es: &[u8],
        tags: &mut Vec<Tag>,
        dropped: &mut Vec<Dropped>,
    ) {
        // With video, audio waits for it: the receiver's recording starts at a picture.
        if self.video.is_some() && self.sent_avc.is_none() {
            return;
        }
        let mut rest = es;
        let mut samples: i64 = 0;
        while !rest.is_empty() {
            let Some(h) = rest.get(..7) else {
                dropped.push(Dropped::BadAdts);
                return;
            };
            if h[0] != 0xff || h[1] & 0xf0 != 0xf0 {
                dropped.push(Dropped::BadAdts);
                return;
            }
            let header_len = if h[1] & 1 == 1 { 7 } else { 9 };
            let profile = h[2] >> 6;
            let rate_index = (h[2] >> 2) & 0x0f;
            let channels = ((h[2] & 1) << 2) | (h[3] >> 6);
            let len =
                (usize::from(h[3] & 3) << 11) | (usize::from(h[4]) << 3) | usize::from(h[5] >> 5);
            let (Some(&rate), Some(frame)) = (
                AAC_RATES.get(usize::from(rate_index)),
                rest.get(header_len..len.max(header_len))
                    .filter(|_| len <= rest.len()),
            ) else {
                dropped.push(Dropped::BadAdts);
                return;
            };
            let asc = [
                ((profile + 1) << 3) | (rate_index >> 1),
                ((rate_index & 1) << 7) | (channels << 3),
            ];
            let ts = self.ms(pts + samples * 90_000 / i64::from(rate));
            if self.sent_asc != Some(asc) {
                tags.push(Tag {
                    type_id: AUDIO,
                    timestamp: ts,
                    body: vec![0xaf, 0, asc[0], asc[1]],
                });
                self.sent_asc = Some(asc);
            }
            let mut body = Vec::with_capacity(frame.len() + 2);
            body.extend_from_slice(&[0xaf, 1]);
            body.extend_from_slice(frame);
            tags.push(Tag {
                type_id: AUDIO,
                timestamp: ts,
                body,
            });
            samples += 1024;
            rest = &rest[len..];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rtmp::flv::{self, AudioTag, VideoCodec, VideoConfig, VideoTag};
    use crate::rtmp::remux::Remux;

    const SPS: &[u8] = &[0x67, 0x64, 0, 0x1f, 0xac, 0xd9];
    const PPS: &[u8] = &[0x68, 0xee, 0x3c, 0x80];

    fn avc_seq() -> Vec<u8> {
        let mut t = vec![0x17, 0, 0, 0, 0];
        t.extend_from_slice(&avc_config_record(SPS, PPS));
        t
    }

    /// An FLV video tag of NAL units (length-prefixed) with a composition time.
    fn video_tag(key: bool, cts: u32, nals: &[&[u8]]) -> Vec<u8> {
        let mut t = vec![if key { 0x17 } else { 0x27 }, 1];
        t.extend_from_slice(&cts.to_be_bytes()[1..]);
        for n in nals {
            t.extend_from_slice(&(n.len() as u32).to_be_bytes());
            t.extend_from_slice(n);
        }
        t
    }

    /// TS from FLV through the RTMP input's remuxer: the real thing, independently written.
    fn ts_of(tags: &[(u8, u32, Vec<u8>)]) -> Vec<u8> {
        let mut r = Remux::new();
        let mut ts = Vec::new();
        for (t, ms, body) in tags {
            r.feed(*t, *ms, body, &mut ts).unwrap();
        }
        ts
    }

    fn run(ts: &[u8]) -> (Vec<Tag>, Vec<Notice>, Vec<Dropped>) {
        let mut m = FlvMux::new();
        let (mut tags, mut notices, mut dropped) = (Vec::new(), Vec::new(), Vec::new());
        // In odd pieces, as the ring hands them over.
        for piece in ts.chunks(188 * 3) {
            m.push(piece, &mut tags, &mut notices, &mut dropped);
        }
        (tags, notices, dropped)
    }

    #[test]
    fn flv_through_ts_and_back_keeps_frames_times_and_configs() {
        let aac = vec![0x21, 0x10, 0x04, 0x60, 0x8c, 0x1c];
        let mut input = vec![(9u8, 0u32, avc_seq()), (8, 0, vec![0xaf, 0, 0x12, 0x10])];
        for i in 0..10u32 {
            let key = i % 5 == 0;
            let slice: &[u8] = if key {
                &[0x65, 0x88, i as u8 + 1]
            } else {
                &[0x41, 0x9a, i as u8 + 1]
            };
            input.push((9, 1000 + i * 40, video_tag(key, 80, &[slice])));
            let mut a = vec![0xaf, 1];
            a.extend_from_slice(&aac);
            input.push((8, 1000 + i * 40, a));
        }
        let (tags, notices, dropped) = run(&ts_of(&input));
        assert!(
            notices.is_empty() && dropped.is_empty(),
            "{notices:?} {dropped:?}"
        );
        let video: Vec<&Tag> = tags.iter().filter(|t| t.type_id == VIDEO).collect();
        // The sequence header first, then every frame but the last (its PES ends only when
        // the next one starts).
        let VideoTag::Config { codec, record } = flv::parse_video(&video[0].body).unwrap() else {
            panic!("first video tag is not the sequence header");
        };
        let cfg = VideoConfig::parse(codec, record).unwrap();
        assert_eq!(cfg.codec, VideoCodec::H264);
        assert_eq!(&video[0].body[5..], &avc_config_record(SPS, PPS)[..]);
        assert_eq!(video.len(), 1 + 9);
        for (i, t) in video[1..].iter().enumerate() {
            assert_eq!(t.timestamp, i as u32 * 40, "timestamps from the first DTS");
            assert_eq!(t.body[0] >> 4 == 1, i % 5 == 0, "key flag of frame {i}");
            assert_eq!(
                &t.body[1..5],
                &[1, 0, 0, 80],
                "NALU tag, composition time 80 ms"
            );
            // The NAL units: parameter sets in-band before key frames, no AUD.
            let mut nals = Vec::new();
            let mut d = &t.body[5..];
            while !d.is_empty() {
                let n = u32::from_be_bytes([d[0], d[1], d[2], d[3]]) as usize;
                nals.push(d[4..4 + n].to_vec());
                d = &d[4 + n..];
            }
            assert!(nals.iter().all(|n| n[0] & 0x1f != NAL_AUD));
            assert_eq!(nals.last().unwrap()[2], i as u8 + 1, "frame {i} in order");
        }
        let audio: Vec<&Tag> = tags.iter().filter(|t| t.type_id == AUDIO).collect();
        assert!(matches!(
            flv::parse_audio(&audio[0].body).unwrap(),
            AudioTag::AacConfig(c) if c == [0x12, 0x10]
        ));
        // Audio PES end at their declared length, so the first one is done before the
        // first picture (whose PES ends only when the next starts): it waits, and is left
        // out.
        assert_eq!(audio.len(), 1 + 9);
        for (i, t) in audio[1..].iter().enumerate() {
            assert_eq!(t.body[2..], aac[..]);
            assert_eq!(t.timestamp, (i as u32 + 1) * 40);
        }
        // The sequence headers precede the media of their kind.
        let first_audio = tags.iter().position(|t| t.type_id == AUDIO).unwrap();
        let first_video = tags.iter().position(|t| t.type_id == VIDEO).unwrap();
        assert!(
            first_video < first_audio,
            "audio waits for the first picture"
        );
    }

    #[test]
    fn video_starts_at_a_key_frame_and_config_changes_go_out_again() {
        let mut input = vec![(9u8, 0u32, avc_seq())];
        // Feed a muxer that starts mid-GOP: cut the TS so the first key frame is missed.
        input.push((9, 0, video_tag(true, 0, &[&[0x65, 1]])));
        input.push((9, 40, video_tag(false, 0, &[&[0x41, 2]])));
        input.push((9, 80, video_tag(false, 0, &[&[0x41, 3]])));
        let sps2: &[u8] = &[0x67, 0x4d, 0, 0x28, 0xaa];
        let mut seq2 = vec![0x17, 0, 0, 0, 0];
        seq2.extend_from_slice(&avc_config_record(sps2, PPS));
        input.push((9, 120, seq2));
        input.push((9, 120, video_tag(true, 0, &[&[0x65, 4]])));
        input.push((9, 160, video_tag(false, 0, &[&[0x41, 5]])));
        let ts = ts_of(&input);
        let (tags, _, _) = run(&ts);
        let frames: Vec<u8> = tags
            .iter()
            .filter(|t| t.body[1] == 1)
            .map(|t| *t.body.last().unwrap())
            .collect();
        assert_eq!(frames, vec![1, 2, 3, 4]);
        let configs: Vec<&Tag> = tags.iter().filter(|t| t.body[1] == 0).collect();
        assert_eq!(configs.len(), 2);
        assert_eq!(configs[1].timestamp, 120);
        assert_eq!(&configs[1].body[5..], &avc_config_record(sps2, PPS)[..]);

        // Restarted (a reconnect) between frames 2 and 3: nothing until key frame 4, which
        // gets the sequence header again at timestamp 0.
        let mut m = FlvMux::new();
        let (mut t, mut n, mut d) = (Vec::new(), Vec::new(), Vec::new());
        let packets: Vec<&[u8]> = ts.chunks(188).collect();
        let half = packets.len() / 2;
        for p in &packets[..half] {
            m.push(p, &mut t, &mut n, &mut d);
        }
        m.restart();
        t.clear();
        for p in &packets[half..] {
            m.push(p, &mut t, &mut n, &mut d);
        }
        assert_eq!(t[0].body[1], 0, "sequence header first");
        assert_eq!(t[0].timestamp, 0);
        assert_eq!(t[1].body.last(), Some(&4));
    }

    /// A hand-made TS: PAT, a PMT with the given streams, and one PES per (pid, pts, dts,
    /// es) in a single packet each.
    fn hand_ts(streams: &[(u8, u16)], pes: &[(u16, u64, u64, Vec<u8>)]) -> Vec<u8> {
        use crate::ts::mux;
        let mut out = Vec::new();
        let mut packet = |pid: u16, pusi: bool, cc: u8, payload: &[u8]| {
            let mut p = vec![
                0x47,
                (pid >> 8) as u8 | if pusi { 0x40 } else { 0 },
                pid as u8,
            ];
            let stuff = 184 - payload.len();
            if stuff == 0 {
                p.push(0x10 | cc);
            } else {
                p.push(0x30 | cc);
                p.push((stuff - 1) as u8);
                if stuff > 1 {
                    p.push(0);
                    p.extend(std::iter::repeat_n(0xff, stuff - 2));
                }
            }
            p.extend_from_slice(payload);
            assert_eq!(p.len(), 188);
            out.extend_from_slice(&p);
        };
        let mut pat = vec![0];
        pat.extend_from_slice(&mux::pat_section());
        packet(0, true, 0, &pat);
        // A PMT by hand: any stream types.
        let mut body = vec![0xe1, 0x00, 0xf0, 0x00];
        for &(st, pid) in streams {
            body.extend_from_slice(&[st, 0xe0 | (pid >> 8) as u8, pid as u8, 0xf0, 0]);
        }
        let len = 5 + body.len() + 4;
        let mut sec = vec![2, 0xb0 | (len >> 8) as u8, len as u8, 0, 1, 0xc1, 0, 0];
        sec.extend_from_slice(&body);
        let crc = crate::ts::psi::crc32_mpeg2(&sec);
        sec.extend_from_slice(&crc.to_be_bytes());
        let mut pmt = vec![0];
        pmt.extend_from_slice(&sec);
        packet(mux::PMT_PID, true, 0, &pmt);
        let mut ccs = std::collections::HashMap::new();
        for (pid, pts, dts, es) in pes {
            let put = |t: u64, marker: u8| {
                [
                    marker << 4 | ((t >> 29) as u8 & 0x0e) | 1,
                    (t >> 22) as u8,
                    ((t >> 14) as u8 & 0xfe) | 1,
                    (t >> 7) as u8,
                    ((t << 1) as u8) | 1,
                ]
            };
            let mut p = vec![0, 0, 1, 0xe0, 0, 0, 0x80, 0xc0, 10];
            p.extend_from_slice(&put(*pts, 3));
            p.extend_from_slice(&put(*dts, 1));
            p.extend_from_slice(es);
            let cc = ccs.entry(*pid).or_insert(0u8);
            packet(*pid, true, *cc, &p);
            *cc = (*cc + 1) & 0x0f;
        }
        out
    }

    #[test]
    fn unsupported_streams_are_reported_once_and_left_out() {
        let idr: Vec<u8> = [&[0, 0, 0, 1][..], SPS, &[0, 0, 1], PPS, &[0, 0, 1, 0x65, 7]].concat();
        let mut ts = hand_ts(
            &[(0x1b, 0x100), (0x24, 0x101), (0x03, 0x102), (0x1b, 0x103)],
            &[
                (0x100, 9000, 9000, idr.clone()),
                (0x101, 0, 0, vec![1, 2, 3]),
            ],
        );
        ts.extend(ts.clone());
        let (tags, notices, _) = run(&ts);
        assert_eq!(
            notices,
            vec![
                Notice::Unsupported {
                    pid: 0x101,
                    kind: "h265"
                },
                Notice::Unsupported {
                    pid: 0x102,
                    kind: "mpeg-audio"
                },
                Notice::Extra {
                    pid: 0x103,
                    kind: "h264"
                },
            ]
        );
        assert!(tags.iter().all(|t| t.type_id == VIDEO));
    }

    #[test]
    fn timestamps_unwrap_the_33_bit_clock_and_carry_composition_time() {
        let idr: Vec<u8> = [&[0, 0, 0, 1][..], SPS, &[0, 0, 1], PPS, &[0, 0, 1, 0x65, 7]].concat();
        let p: Vec<u8> = vec![0, 0, 1, 0x41, 9];
        let top = (1u64 << 33) - 1800; // 20 ms before the wrap
        let pes = vec![
            (0x100, top + 3600, top, idr),
            (
                0x100,
                (top + 3600 + 3600) % (1 << 33),
                (top + 3600) % (1 << 33),
                p.clone(),
            ),
            (
                0x100,
                (top + 7200 + 3600) % (1 << 33),
                (top + 7200) % (1 << 33),
                p.clone(),
            ),
            (0x100, 0, 0, p), // ends the previous PES
        ];
        let (tags, _, _) = run(&hand_ts(&[(0x1b, 0x100)], &pes));
        let frames: Vec<(u32, &[u8])> = tags
            .iter()
            .filter(|t| t.body[1] == 1)
            .map(|t| (t.timestamp, &t.body[2..5]))
            .collect();
        assert_eq!(
            frames,
            vec![
                (0, &[0, 0, 40][..]),
                (40, &[0, 0, 40][..]),
                (80, &[0, 0, 40][..])
            ]
        );
    }

    #[test]
    fn the_millisecond_count_wraps_at_2_32_as_rtmp_does() {
        let mut m = FlvMux::new();
        m.base = Some(0);
        let big = (u64::from(u32::MAX) + 41) * 90;
        assert_eq!(m.ms(big as i64), 40);
        assert_eq!(m.ms(90 * 1000), 1000);
        assert_eq!(m.ms(-900), 0, "before the base is 0");
    }

    #[test]
    fn garbage_never_panics_and_bounds_hold() {
        // A video PES that never ends is dropped at its limit.
        let mut m = FlvMux::new();
        let (mut t, mut n, mut d) = (Vec::new(), Vec::new(), Vec::new());
        let ts = hand_ts(&[(0x1b, 0x100)], &[(0x100, 0, 0, vec![0, 0, 1, 0x65])]);
        m.push(&ts, &mut t, &mut n, &mut d);
        let mut cc = 1u8;
        let mut cont = vec![0x47, 0x01, 0x00, 0x10];
        cont.extend_from_slice(&[0xab; 184]);
        for _ in 0..(MAX_VIDEO_PES / 184 + 2) {
            cont[3] = 0x10 | cc;
            cc = (cc + 1) & 0x0f;
            m.push(&cont, &mut t, &mut n, &mut d);
        }
        assert_eq!(d, vec![Dropped::TooLong]);
        assert!(m.video.as_ref().unwrap().buf.len() <= MAX_VIDEO_PES);
        // Bad ADTS and broken PES headers.
        let ts = hand_ts(
            &[(0x0f, 0x101)],
            &[
                (0x101, 0, 0, vec![0xff, 0xf1, 0x50, 0x80, 0xff, 0xff, 0xfc]),
                (0x101, 0, 0, vec![1]),
            ],
        );
        let (tags, _, dropped) = run(&ts);
        assert!(tags.is_empty());
        assert!(dropped.contains(&Dropped::BadAdts), "{dropped:?}");
    }

    #[test]
    fn nal_units_split_on_3_and_4_byte_start_codes() {
        let es = [
            0, 0, 0, 1, 9, 0xf0, 0, 0, 1, 0x67, 1, 0, 0, 0, 0, 1, 0x65, 2, 0,
        ];
        assert_eq!(
            nal_units(&es),
            vec![&[9, 0xf0][..], &[0x67, 1][..], &[0x65, 2][..]]
        );
        assert!(nal_units(&[1, 2, 3]).is_empty());
    }
}
