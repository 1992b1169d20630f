//! A small MPEG-TS muxer (ISO/IEC 13818-1): PAT and PMT with the MPEG-2 CRC, PES with PTS
//! (and DTS when it differs: B-frames from RTMP), PCR on the first stream, random-access
//! flags on key frames.
//!
//! Pure functions over byte buffers: frames in, whole 188-byte packets appended to a `Vec`.
//! It never panics on any input (empty frames, huge frames, timestamps anywhere in `u64`),
//! which a proptest below and `fuzz/fuzz_targets/ts_mux.rs` hold it to.
//!
//! The RTSP side hands it access units already in the form a TS carries (retina's
//! `FrameFormat::SIMPLE`: Annex B with parameter sets before every key frame, ADTS AAC),
//! so no bitstream rewriting happens here: it is a remux, not a transcode.

use super::packet::{PACKET_LEN, SYNC_BYTE};
use super::psi::crc32_mpeg2;

pub const PAT_PID: u16 = 0x0000;
pub const PMT_PID: u16 = 0x1000;
/// PIDs of the elementary streams: the first stream gets 0x100, the next 0x101, ...
pub const FIRST_ES_PID: u16 = 0x0100;
/// The program number of the one program.
pub const PROGRAM: u16 = 1;
/// PTS and PCR are 33-bit counters of the 90 kHz clock.
const PTS_MASK: u64 = (1 << 33) - 1;
/// PCR runs this far behind the PTS, so a decoder has the frame before it is due.
pub const PCR_LEAD_90K: u64 = 9_000;
/// PAT/PMT are repeated at least this often (in 90 kHz ticks) and before every key frame.
pub const PSI_INTERVAL_90K: u64 = 22_500;

/// What an elementary stream carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    H264,
    H265,
    /// AAC in ADTS frames.
    AacAdts,
}

impl StreamKind {
    pub fn stream_type(self) -> u8 {
        match self {
            StreamKind::H264 => 0x1b,
            StreamKind::H265 => 0x24,
            StreamKind::AacAdts => 0x0f,
        }
    }

    fn stream_id(self) -> u8 {
        match self {
            StreamKind::H264 | StreamKind::H265 => 0xe0,
            StreamKind::AacAdts => 0xc0,
        }
    }

    pub fn is_video(self) -> bool {
        matches!(self, StreamKind::H264 | StreamKind::H265)
    }
}

#[derive(Debug, Clone)]
struct EsState {
    kind: StreamKind,
    pid: u16,
    cc: u8,
}

/// Muxer state: the streams, the continuity counters and when PSI was last sent.
#[derive(Debug, Clone)]
pub struct TsMuxer {
    streams: Vec<EsState>,
    pat_cc: u8,
    pmt_cc: u8,
    last_psi: Option<u64>,
    /// The PMT's version_number: bumped when [`TsMuxer::set_streams`] changes the program.
    version: u8,
}

impl TsMuxer {
    /// A muxer for these streams (at most 16; more are ignored). The first video stream
    /// carries the PCR, or the first stream if there is no video.
    pub fn new(kinds: &[StreamKind]) -> Self {
        let mut streams: Vec<EsState> = kinds
            .iter()
            .take(16)
            .enumerate()
            .map(|(i, &kind)| EsState {
                kind,
                pid: FIRST_ES_PID + i as u16,
                cc: 0,
            })
            .collect();
        // PCR stream first in the PMT and in our index 0 bookkeeping is not needed; keep
        // the caller's order and find the PCR stream when writing.
        streams.shrink_to_fit();
        TsMuxer {
            streams,
            pat_cc: 0,
            pmt_cc: 0,
            last_psi: None,
            version: 0,
        }
    }

    /// Changes the program to these streams (at most 16), keeping every continuity counter:
    /// a stream keeps its PID and counter by position, so a source that reconnects with the
    /// same streams continues the same PIDs seamlessly. A different set bumps the PMT
    /// version and sends PAT/PMT before the next frame.
    pub fn set_streams(&mut self, kinds: &[StreamKind]) {
        let kinds = &kinds[..kinds.len().min(16)];
        let same = kinds.len() == self.streams.len()
            && kinds.iter().zip(&self.streams).all(|(k, s)| *k == s.kind);
        if same {
            return;
        }
        let old = std::mem::take(&mut self.streams);
        self.streams = kinds
            .iter()
            .enumerate()
            .map(|(i, &kind)| EsState {
                kind,
                pid: FIRST_ES_PID + i as u16,
                cc: old.get(i).map_or(0, |s| s.cc),
            })
            .collect();
        self.version = (self.version + 1) & 0x1f;
        self.last_psi = None;
    }

    pub fn streams(&self) -> usize {
        self.streams.len()
    }

    pub fn pid(&self, index: usize) -> Option<u16> {
        self.streams.get(index).map(|s| s.pid)
    }

    fn pcr_index(&self) -> usize {
        self.streams
            .iter()
            .position(|s| s.kind.is_video())
            .unwrap_or(0)
    }

    pub fn pcr_pid(&self) -> u16 {
        self.streams
            .get(self.pcr_index())
            .map(|s| s.pid)
            .unwrap_or(0x1fff)
    }

    /// Appends a PAT and a PMT (one packet each).
    pub fn write_psi(&mut self, out: &mut Vec<u8>) {
        let pat = pat_section();
        let pmt = pmt_section_version(
            self.version,
            self.pcr_pid(),
            self.streams.iter().map(|s| (s.kind, s.pid)),
        );
        psi_packet(PAT_PID, &mut self.pat_cc, &pat, out);
        psi_packet(PMT_PID, &mut self.pmt_cc, &pmt, out);
    }

    /// Appends one access unit of stream `index` as a PES in TS packets; PAT/PMT first when
    /// due. `pts` is in 90 kHz ticks (any value; it is taken modulo 2^33). An unknown
    /// `index` writes nothing.
    pub fn write_frame(
        &mut self,
        index: usize,
        pts: u64,
        key: bool,
        data: &[u8],
        out: &mut Vec<u8>,
    ) {
        self.write_frame_dts(index, pts, pts, key, data, out);
    }

    /// [`TsMuxer::write_frame`] with a decoding time: the PES carries a DTS when it differs
    /// from the PTS (B-frames), and the PCR and the PSI timing follow the DTS, the order in
    /// which frames arrive.
    pub fn write_frame_dts(
        &mut self,
        index: usize,
        pts: u64,
        dts: u64,
        key: bool,
        data: &[u8],
        out: &mut Vec<u8>,
    ) {
        if index >= self.streams.len() {
            return;
        }
        let (pts, dts) = (pts & PTS_MASK, dts & PTS_MASK);
        let is_pcr = index == self.pcr_index();
        if is_pcr {
            let due = match self.last_psi {
                None => true,
                Some(last) => key || dts.wrapping_sub(last) & PTS_MASK >= PSI_INTERVAL_90K,
            };
            if due {
                self.write_psi(out);
                self.last_psi = Some(dts);
            }
        } else if self.last_psi.is_none() {
            // Nothing has announced the program yet.
            self.write_psi(out);
        }
        let es = &mut self.streams[index];
        let pcr = is_pcr.then(|| dts.wrapping_sub(PCR_LEAD_90K) & PTS_MASK);
        if pts == dts {
            let header = pes_header(es.kind, pts, data.len());
            write_pes(es.pid, &mut es.cc, &header, data, pcr, key, out);
        } else {
            let header = pes_header_dts(es.kind, pts, dts, data.len());
            write_pes(es.pid, &mut es.cc, &header, data, pcr, key, out);
        }
    }
}

/// One 33-bit timestamp in the PES header's 5-byte form, `prefix` in the top nibble.
fn put_timestamp(dst: &mut [u8], prefix: u8, ts: u64) {
    let ts = ts & PTS_MASK;
    dst[0] = (prefix << 4) | (((ts >> 30) as u8 & 0x07) << 1) | 1;
    dst[1] = (ts >> 22) as u8;
    dst[2] = (((ts >> 15) as u8) << 1) | 1;
    dst[3] = (ts >> 7) as u8;
    dst[4] = ((ts as u8) << 1) | 1;
}

/// The PES header for one frame with a PTS and a DTS (19 bytes).
pub fn pes_header_dts(kind: StreamKind, pts: u64, dts: u64, payload_len: usize) -> [u8; 19] {
    let mut h = [0u8; 19];
    pes_start(&mut h, kind, 0xc0, payload_len);
    put_timestamp(&mut h[9..14], 0x3, pts);
    put_timestamp(&mut h[14..19], 0x1, dts);
    h
}

/// Reads the DTS back out of a PES header; `None` when it has none (then DTS = PTS).
pub fn pes_dts(pes: &[u8]) -> Option<u64> {
    if pes.len() < 19 || pes[..3] != [0, 0, 1] || pes[7] & 0xc0 != 0xc0 {
        return None;
    }
    Some(get_timestamp(&pes[14..19]))
}

/// The PES header for one frame with a PTS. Video gets PES_packet_length 0 (unbounded, as
/// the standard allows for video in TS); audio its exact length when it fits 16 bits.
pub fn pes_header(kind: StreamKind, pts: u64, payload_len: usize) -> [u8; 14] {
    let mut h = [0u8; 14];
    pes_start(&mut h, kind, 0x80, payload_len);
    put_timestamp(&mut h[9..14], 0x2, pts);
    h
}

/// The first 9 bytes of a PES header of `h.len()` bytes: start code, stream id,
/// PES_packet_length, '10' (not scrambled, no priority, not aligned, no copyright, copy),
/// the PTS/DTS flags (`0x80` PTS only, `0xc0` both) and the header data length.
fn pes_start(h: &mut [u8], kind: StreamKind, pts_dts_flags: u8, payload_len: usize) {
    h[..3].copy_from_slice(&[0, 0, 1]);
    h[3] = kind.stream_id();
    // PES_packet_length counts everything after itself.
    let len = payload_len + h.len() - 6;
    let len = if kind.is_video() || len > 0xffff {
        0
    } else {
        len as u16
    };
    h[4..6].copy_from_slice(&len.to_be_bytes());
    h[6] = 0x80;
    h[7] = pts_dts_flags;
    h[8] = (h.len() - 9) as u8;
}

/// A 33-bit timestamp out of its 5-byte PES form.
fn get_timestamp(p: &[u8]) -> u64 {
    (u64::from(p[0] >> 1) & 0x07) << 30
        | u64::from(p[1]) << 22
        | u64::from(p[2] >> 1) << 15
        | u64::from(p[3]) << 7
        | u64::from(p[4] >> 1)
}

/// Reads the PTS back out of a PES header (for tests and the analyzer's users).
pub fn pes_pts(pes: &[u8]) -> Option<u64> {
    if pes.len() < 14 || pes[..3] != [0, 0, 1] || pes[7] & 0x80 == 0 {
        return None;
    }
    Some(get_timestamp(&pes[9..14]))
}

/// Splits `header ++ data` into TS packets of `pid`. The first packet has PUSI set and, if
/// given, the PCR and the random-access flag; the last is padded with adaptation stuffing.
pub fn write_pes(
    pid: u16,
    cc: &mut u8,
    header: &[u8],
    data: &[u8],
    pcr: Option<u64>,
    key: bool,
    out: &mut Vec<u8>,
) {
    let total = header.len() + data.len();
    out.reserve(total.div_ceil(170).saturating_add(1) * PACKET_LEN);
    let byte_at = |i: usize| -> &[u8] {
        if i < header.len() {
            &header[i..]
        } else {
            &data[i - header.len()..]
        }
    };
    let mut pos = 0usize;
    let mut first = true;
    while first || pos < total {
        let start = out.len();
        out.extend_from_slice(&[
            SYNC_BYTE,
            (if first { 0x40 } else { 0 }) | ((pid >> 8) as u8 & 0x1f),
            pid as u8,
            0,
        ]);
        // Adaptation field contents (after its length byte): flags, PCR.
        let mut af = [0u8; 7];
        let mut af_len = 0usize; // bytes after the length byte
        let with_flags = first && (pcr.is_some() || key);
        if with_flags {
            af[0] = if key { 0x40 } else { 0 };
            af_len = 1;
            if let Some(pcr) = pcr {
                af[0] |= 0x10;
                let base = pcr & PTS_MASK;
                af[1] = (base >> 25) as u8;
                af[2] = (base >> 17) as u8;
                af[3] = (base >> 9) as u8;
                af[4] = (base >> 1) as u8;
                af[5] = (((base & 1) as u8) << 7) | 0x7e;
                af[6] = 0;
                af_len = 7;
            }
        }
        let remaining = total - pos;
        let room_without_af = 184;
        let af_total = if with_flags { 1 + af_len } else { 0 };
        let room = room_without_af - af_total;
        let (af_total, take) = if remaining >= room {
            (af_total, room)
        } else {
            // Pad with stuffing in the adaptation field so the payload ends the packet.
            (184 - remaining, remaining)
        };
        let has_af = af_total > 0;
        out[start + 3] = (if has_af { 0x30 } else { 0x10 }) | (*cc & 0x0f);
        *cc = (*cc + 1) & 0x0f;
        if has_af {
            let len = af_total - 1; // the length byte itself is not counted
            out.push(len as u8);
            if len > 0 {
                if with_flags {
                    out.extend_from_slice(&af[..af_len]);
                } else {
                    out.push(0); // flags byte, nothing set
                }
                let written = if with_flags { af_len } else { 1 };
                out.resize(out.len() + (len - written), 0xff);
            }
        }
        // Payload: `take` bytes from `pos`, across the header/data boundary.
        let mut left = take;
        while left > 0 {
            let src = byte_at(pos);
            let n = src.len().min(left);
            out.extend_from_slice(&src[..n]);
            pos += n;
            left -= n;
        }
        debug_assert_eq!(out.len() - start, PACKET_LEN);
        first = false;
    }
}

/// One PSI section in one packet (pointer_field 0, 0xff stuffing). Sections here are short.
fn psi_packet(pid: u16, cc: &mut u8, section: &[u8], out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[
        SYNC_BYTE,
        0x40 | ((pid >> 8) as u8 & 0x1f),
        pid as u8,
        0x10 | (*cc & 0x0f),
        0,
    ]);
    *cc = (*cc + 1) & 0x0f;
    let n = section.len().min(PACKET_LEN - 5);
    out.extend_from_slice(&section[..n]);
    out.resize(start + PACKET_LEN, 0xff);
}

fn finish_section(mut s: Vec<u8>) -> Vec<u8> {
    // section_length counts from after its own field to the end of the CRC.
    let len = (s.len() - 3 + 4) as u16;
    s[1] = 0xb0 | ((len >> 8) as u8 & 0x0f);
    s[2] = len as u8;
    let crc = crc32_mpeg2(&s);
    s.extend_from_slice(&crc.to_be_bytes());
    s
}

pub fn pat_section() -> Vec<u8> {
    let mut s = vec![0x00, 0, 0, 0x00, 0x01, 0xc1, 0x00, 0x00];
    s.extend_from_slice(&PROGRAM.to_be_bytes());
    s.extend_from_slice(&(0xe000 | PMT_PID).to_be_bytes());
    finish_section(s)
}

pub fn pmt_section(pcr_pid: u16, streams: impl Iterator<Item = (StreamKind, u16)>) -> Vec<u8> {
    pmt_section_version(0, pcr_pid, streams)
}

/// The PMT with this version_number (5 bits).
pub fn pmt_section_version(
    version: u8,
    pcr_pid: u16,
    streams: impl Iterator<Item = (StreamKind, u16)>,
) -> Vec<u8> {
    let mut s = vec![0x02, 0, 0];
    s.extend_from_slice(&PROGRAM.to_be_bytes());
    s.extend_from_slice(&[0xc1 | ((version & 0x1f) << 1), 0x00, 0x00]);
    s.extend_from_slice(&(0xe000 | pcr_pid).to_be_bytes());
    s.extend_from_slice(&[0xf0, 0x00]); // program_info_length 0
    for (kind, pid) in streams {
        s.push(kind.stream_type());
        s.extend_from_slice(&(0xe000 | pid).to_be_bytes());
        s.extend_from_slice(&[0xf0, 0x00]);
    }
    finish_section(s)
}

/// Converts a timestamp in `clock_rate` units to 90 kHz, offset so that a stream starting
/// at 0 does not make the PCR (which runs behind) negative.
pub fn to_90k(elapsed: i64, clock_rate: u32, offset_90k: u64) -> u64 {
    let rate = i128::from(clock_rate.max(1));
    let t = i128::from(elapsed) * 90_000 / rate;
    (t + i128::from(offset_90k)).rem_euclid(1 << 33) as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ts::packet::Packet;
    use crate::ts::psi::Section;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    /// Parses a muxed stream back: checks every packet and the CCs, returns the PES units
    /// per PID and the PCRs seen.
    fn demux(ts: &[u8]) -> (BTreeMap<u16, Vec<Vec<u8>>>, Vec<u64>, usize) {
        assert_eq!(ts.len() % PACKET_LEN, 0);
        let mut pes: BTreeMap<u16, Vec<Vec<u8>>> = BTreeMap::new();
        let mut cc: BTreeMap<u16, u8> = BTreeMap::new();
        let mut pcrs = Vec::new();
        let mut psi = 0;
        for p in ts.chunks(PACKET_LEN) {
            let pkt = Packet::new(p).expect("valid packet");
            let pid = pkt.pid();
            if let Some(prev) = cc.insert(pid, pkt.cc()) {
                assert_eq!((prev + 1) & 0xf, pkt.cc(), "CC on pid {pid:#x}");
            }
            if let Ok(Some(af)) = pkt.adaptation()
                && let Some(pcr) = af.pcr()
            {
                pcrs.push(pcr);
            }
            let payload = pkt.payload().unwrap_or(&[]);
            if pid == PAT_PID || pid == PMT_PID {
                assert!(pkt.pusi());
                let len = 3 + (usize::from(payload[2] & 0x0f) << 8 | usize::from(payload[3]));
                Section::new(&payload[1..1 + len]).expect("PSI CRC and length");
                psi += 1;
                continue;
            }
            let units = pes.entry(pid).or_default();
            if pkt.pusi() {
                units.push(Vec::new());
            }
            units
                .last_mut()
                .expect("PES starts with PUSI")
                .extend_from_slice(payload);
        }
        (pes, pcrs, psi)
    }

    #[test]
    fn pat_and_pmt_check_out() {
        let pat = pat_section();
        let s = Section::new(&pat).unwrap();
        assert_eq!(s.pat_entries().collect::<Vec<_>>(), vec![(1, PMT_PID)]);
        let pmt = pmt_section(
            0x100,
            [(StreamKind::H264, 0x100), (StreamKind::AacAdts, 0x101)].into_iter(),
        );
        let s = Section::new(&pmt).unwrap();
        let p = s.pmt().unwrap();
        let types: Vec<(u8, u16)> = p.streams().map(|e| (e.stream_type, e.pid)).collect();
        assert_eq!(types, vec![(0x1b, 0x100), (0x0f, 0x101)]);
    }

    #[test]
    fn frame_roundtrip_with_pcr_and_psi() {
        let mut m = TsMuxer::new(&[StreamKind::H264, StreamKind::AacAdts]);
        let mut out = Vec::new();
        let video = vec![0xabu8; 5000];
        let audio = vec![0xcdu8; 300];
        m.write_frame(0, 90_000, true, &video, &mut out);
        m.write_frame(1, 90_100, false, &audio, &mut out);
        m.write_frame(0, 93_600, false, &video[..100], &mut out);
        let (pes, pcrs, psi) = demux(&out);
        assert_eq!(
            psi, 2,
            "PSI once at the start (second frame not a key frame)"
        );
        assert_eq!(
            pcrs,
            vec![(90_000 - PCR_LEAD_90K) * 300, (93_600 - PCR_LEAD_90K) * 300]
        );
        let v = &pes[&0x100];
        assert_eq!(v.len(), 2);
        assert_eq!(pes_pts(&v[0]), Some(90_000));
        assert_eq!(&v[0][14..], &video[..]);
        assert_eq!(&v[1][14..], &video[..100]);
        let a = &pes[&0x101];
        assert_eq!(pes_pts(&a[0]), Some(90_100));
        assert_eq!(usize::from(u16::from_be_bytes([a[0][4], a[0][5]])), 300 + 8);
        assert_eq!(&a[0][14..], &audio[..]);
    }

    #[test]
    fn key_frames_repeat_psi_and_set_random_access() {
        let mut m = TsMuxer::new(&[StreamKind::H265]);
        let mut out = Vec::new();
        m.write_frame(0, 0, true, b"x", &mut out);
        m.write_frame(0, 3600, true, b"y", &mut out);
        let (_, _, psi) = demux(&out);
        assert_eq!(psi, 4);
        let pkt = Packet::new(&out[2 * PACKET_LEN..3 * PACKET_LEN]).unwrap();
        assert!(pkt.adaptation().unwrap().unwrap().random_access());
    }

    #[test]
    fn timestamps_convert_and_wrap() {
        assert_eq!(to_90k(48_000, 48_000, 0), 90_000);
        assert_eq!(to_90k(0, 90_000, 90_000), 90_000);
        assert_eq!(to_90k(-90_000, 90_000, 0), (1 << 33) - 90_000);
        assert!(to_90k(i64::MAX, 0, u64::MAX) < (1 << 33));
    }

    #[test]
    fn empty_and_unknown_frames_are_safe() {
        let mut m = TsMuxer::new(&[]);
        let mut out = Vec::new();
        m.write_frame(0, 1, true, b"abc", &mut out);
        assert!(out.is_empty());
        let mut m = TsMuxer::new(&[StreamKind::AacAdts]);
        m.write_frame(0, u64::MAX, false, &[], &mut out);
        let (pes, _, _) = demux(&out);
        assert_eq!(pes[&0x100][0].len(), 14);
    }

    #[test]
    fn dts_is_written_when_it_differs_and_drives_the_pcr() {
        let mut m = TsMuxer::new(&[StreamKind::H264]);
        let mut out = Vec::new();
        m.write_frame_dts(0, 93_000, 90_000, true, b"idr", &mut out);
        m.write_frame_dts(0, 93_000, 93_000, false, b"b", &mut out);
        let (pes, pcrs, _) = demux(&out);
        let v = &pes[&0x100];
        assert_eq!(pes_pts(&v[0]), Some(93_000));
        assert_eq!(pes_dts(&v[0]), Some(90_000));
        assert_eq!(&v[0][19..], b"idr");
        assert_eq!(pes_dts(&v[1]), None);
        assert_eq!(&v[1][14..], b"b");
        assert_eq!(pcrs[0], (90_000 - PCR_LEAD_90K) * 300);
    }

    #[test]
    fn set_streams_keeps_counters_and_bumps_the_pmt_version() {
        let mut m = TsMuxer::new(&[StreamKind::H264]);
        let mut out = Vec::new();
        m.write_frame(0, 0, true, &[1u8; 400], &mut out);
        m.set_streams(&[StreamKind::H264]);
        m.write_frame(0, 3000, false, &[1u8; 400], &mut out);
        m.set_streams(&[StreamKind::H264, StreamKind::AacAdts]);
        m.write_frame(0, 6000, false, b"v", &mut out);
        m.write_frame(1, 6000, false, b"a", &mut out);
        // demux asserts continuous counters on every PID, PSI included.
        let (pes, _, psi) = demux(&out);
        assert_eq!(pes[&0x100].len(), 3);
        assert_eq!(psi, 4, "PSI at the start and after the change");
        let pmt = out
            .chunks(PACKET_LEN)
            .filter(|p| Packet::new(p).unwrap().pid() == PMT_PID)
            .nth(1)
            .unwrap();
        assert_eq!((pmt[5 + 5] >> 1) & 0x1f, 1, "version 1");
    }

    proptest! {
        #[test]
        fn any_frames_mux_to_valid_ts(frames in prop::collection::vec(
            (0usize..3, any::<u64>(), any::<bool>(), prop::collection::vec(any::<u8>(), 0..2000)),
            0..24,
        )) {
            let mut m = TsMuxer::new(&[StreamKind::H264, StreamKind::AacAdts]);
            let mut out = Vec::new();
            for (i, pts, key, data) in &frames {
                m.write_frame(*i, *pts, *key, data, &mut out);
            }
            let (pes, _, _) = demux(&out);
            for (idx, pid) in [(0usize, 0x100u16), (1, 0x101)] {
                let want: Vec<&Vec<u8>> = frames.iter().filter(|f| f.0 == idx).map(|f| &f.3).collect();
                let got = pes.get(&pid).cloned().unwrap_or_default();
                prop_assert_eq!(got.len(), want.len());
                for (g, (w, f)) in got.iter().zip(want.iter().zip(frames.iter().filter(|f| f.0 == idx))) {
                    prop_assert_eq!(&g[14..], &w[..]);
                    prop_assert_eq!(pes_pts(g), Some(f.1 & PTS_MASK));
                }
            }
        }
    }
}
