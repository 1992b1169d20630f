//! RTMP media messages into MPEG-TS: one [`Remux`] per flow input, kept across publishers.
//!
//! Timestamps: RTMP counts milliseconds of decoding time (32 bits, wrapping); a video
//! frame adds its composition time. DTS = base + elapsed ms × 90, PTS = DTS + composition
//! time × 90. The base starts at [`START_90K`] (so the PCR, which runs
//! [`PCR_LEAD_90K`](crate::ts::mux::PCR_LEAD_90K) behind, is never negative) and a new
//! publisher continues a frame after the last DTS written: a reconnect is not a time jump,
//! and since the muxer is the same, the continuity counters run on too.
//!
//! The program (video and/or AAC audio) is fixed at the first frame of a publisher, from the
//! sequence headers seen so far (publishers send them all first); a sequence header for a
//! stream not in the program changes it (new PMT version, same counters).

use std::fmt;

use super::chunk::{AUDIO, VIDEO};
use super::flv::{self, Adts, AudioTag, FlvError, VideoCodec, VideoConfig, VideoTag};
use crate::ts::mux::{StreamKind, TsMuxer};

/// Where the first publisher's DTS starts (1 s of 90 kHz ticks).
pub const START_90K: u64 = 90_000;
/// A new publisher's first DTS: this far after the last one written (one 30 fps frame).
pub const GAP_90K: u64 = 3_000;
/// 90 kHz ticks in a millisecond.
const MS_90K: i64 = 90;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemuxError {
    Flv(FlvError),
    /// A frame before its stream's sequence header.
    NoConfig(&'static str),
}

impl fmt::Display for RemuxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RemuxError::Flv(e) => e.fmt(f),
            RemuxError::NoConfig(what) => write!(f, "{what} frame before its sequence header"),
        }
    }
}

impl std::error::Error for RemuxError {}

impl From<FlvError> for RemuxError {
    fn from(e: FlvError) -> Self {
        RemuxError::Flv(e)
    }
}

/// What one media message did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fed {
    /// A frame went out as TS.
    Frame,
    /// A sequence header was taken.
    Config,
    /// A codec or tag this remuxer does not carry (FLV codec number or FourCC).
    Skipped(u32),
}

pub struct Remux {
    mux: TsMuxer,
    /// The program is set for the current publisher.
    program_set: bool,
    video: Option<VideoConfig>,
    audio: Option<Adts>,
    /// The timeline: this publisher's first RTMP timestamp, the unwrapped ms since, and
    /// the DTS base.
    first_ms: Option<u32>,
    prev_ms: u32,
    elapsed_ms: i64,
    base_90k: u64,
    /// The highest DTS written so far (across publishers).
    last_dts: Option<u64>,
    scratch: Vec<u8>,
}

impl Default for Remux {
    fn default() -> Self {
        Self::new()
    }
}

impl Remux {
    pub fn new() -> Self {
        Remux {
            mux: TsMuxer::new(&[]),
            program_set: false,
            video: None,
            audio: None,
            first_ms: None,
            prev_ms: 0,
            elapsed_ms: 0,
            base_90k: START_90K,
            last_dts: None,
            scratch: Vec::new(),
        }
    }

    /// A new publisher: its codecs and clock are its own; the muxer and the timeline go on.
    pub fn start_publisher(&mut self) {
        self.video = None;
        self.audio = None;
        self.program_set = false;
        self.first_ms = None;
        self.elapsed_ms = 0;
        if let Some(last) = self.last_dts {
            self.base_90k = last + GAP_90K;
        }
    }

    /// One audio or video message payload (`type_id` 8 or 9), TS appended to `out`.
    pub fn feed(
        &mut self,
        type_id: u8,
        timestamp: u32,
        payload: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<Fed, RemuxError> {
        match type_id {
            VIDEO => self.video(timestamp, payload, out),
            AUDIO => self.audio(timestamp, payload, out),
            other => Ok(Fed::Skipped(u32::from(other))),
        }
    }

    fn kinds(&self) -> Vec<StreamKind> {
        let mut k = Vec::with_capacity(2);
        match self.video.as_ref().map(|v| v.codec) {
            Some(VideoCodec::H264) => k.push(StreamKind::H264),
            Some(VideoCodec::H265) => k.push(StreamKind::H265),
            None => {}
        }
        if self.audio.is_some() {
            k.push(StreamKind::AacAdts);
        }
        k
    }

    /// Sets the program from the configs seen (at a publisher's first frame, or when a new
    /// stream's config arrives later).
    fn program(&mut self) {
        self.mux.set_streams(&self.kinds());
        self.program_set = true;
    }

    fn index(&self, video: bool) -> usize {
        if video {
            0
        } else {
            usize::from(self.video.is_some())
        }
    }

    /// The DTS (90 kHz) of a message at `ms`.
    fn dts(&mut self, ms: u32) -> u64 {
        if self.first_ms.is_none() {
            self.first_ms = Some(ms);
            self.prev_ms = ms;
        }
        // Unwrap the 32-bit clock: steps are signed (audio and video interleave slightly
        // out of order).
        self.elapsed_ms += i64::from(ms.wrapping_sub(self.prev_ms) as i32);
        self.prev_ms = ms;
        // Not clamped at the base: audio a few ms before the first video frame keeps its
        // place (the base is a second in, so the sum stays positive).
        let dts = self.base_90k as i64 + self.elapsed_ms * MS_90K;
        dts.max(0) as u64
    }

    fn wrote(&mut self, dts: u64) {
        self.last_dts = Some(self.last_dts.map_or(dts, |l| l.max(dts)));
    }

    fn video(&mut self, ms: u32, payload: &[u8], out: &mut Vec<u8>) -> Result<Fed, RemuxError> {
        match flv::parse_video(payload)? {
            VideoTag::Skip(c) => Ok(Fed::Skipped(c)),
            VideoTag::Config { codec, record } => {
                let cfg = VideoConfig::parse(codec, record)?;
                let new_stream = self.video.as_ref().map(|v| v.codec) != Some(codec);
                self.video = Some(cfg);
                if self.program_set && new_stream {
                    self.program();
                }
                Ok(Fed::Config)
            }
            VideoTag::Frame {
                codec,
                key,
                cts,
                data,
            } => {
                let Some(cfg) = self.video.as_ref().filter(|v| v.codec == codec) else {
                    return Err(RemuxError::NoConfig("video"));
                };
                self.scratch.clear();
                cfg.annex_b(key, data, &mut self.scratch)?;
                if !self.program_set {
                    self.program();
                }
                let dts = self.dts(ms);
                let pts = (dts as i64 + i64::from(cts.max(0)) * MS_90K) as u64;
                let idx = self.index(true);
                self.mux
                    .write_frame_dts(idx, pts, dts, key, &self.scratch, out);
                self.wrote(dts);
                Ok(Fed::Frame)
            }
        }
    }

    fn audio(&mut self, ms: u32, payload: &[u8], out: &mut Vec<u8>) -> Result<Fed, RemuxError> {
        match flv::parse_audio(payload)? {
            AudioTag::Skip(f) => Ok(Fed::Skipped(u32::from(f))),
            AudioTag::AacConfig(asc) => {
                let adts = Adts::parse(asc)?;
                let new_stream = self.audio.is_none();
                self.audio = Some(adts);
                if self.program_set && new_stream {
                    self.program();
                }
                Ok(Fed::Config)
            }
            AudioTag::AacFrame(raw) => {
                let Some(adts) = self.audio else {
                    return Err(RemuxError::NoConfig("AAC"));
                };
                self.scratch.clear();
                adts.frame(raw, &mut self.scratch)?;
                if !self.program_set {
                    self.program();
                }
                let dts = self.dts(ms);
                let idx = self.index(false);
                self.mux.write_frame(idx, dts, false, &self.scratch, out);
                self.wrote(dts);
                Ok(Fed::Frame)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ts::mux::{pes_dts, pes_pts};
    use crate::ts::packet::{PACKET_LEN, Packet};
    use std::collections::BTreeMap;

    fn avc_config() -> Vec<u8> {
        vec![
            0x17, 0, 0, 0, 0, 1, 0x64, 0, 0x1f, 0xff, 0xe1, 0, 2, 0x67, 0x64, 1, 0, 2, 0x68, 0xee,
        ]
    }

    fn frame(key: bool, cts: u8) -> Vec<u8> {
        vec![
            if key { 0x17 } else { 0x27 },
            1,
            0,
            0,
            cts,
            0,
            0,
            0,
            2,
            if key { 0x65 } else { 0x41 },
            0,
        ]
    }

    /// (pid, pts, dts, key) of each PES, checking CC continuity per PID.
    fn pes_list(ts: &[u8]) -> Vec<(u16, u64, Option<u64>)> {
        let mut cc: BTreeMap<u16, u8> = BTreeMap::new();
        let mut out = Vec::new();
        for p in ts.chunks(PACKET_LEN) {
            let pkt = Packet::new(p).unwrap();
            if let Some(prev) = cc.insert(pkt.pid(), pkt.cc()) {
                assert_eq!((prev + 1) & 0xf, pkt.cc(), "CC on {:#x}", pkt.pid());
            }
            if (0x100..0x1000).contains(&pkt.pid()) && pkt.pusi() {
                let pl = pkt.payload().unwrap();
                out.push((pkt.pid(), pes_pts(pl).unwrap(), pes_dts(pl)));
            }
        }
        out
    }

    #[test]
    fn timestamps_pts_is_dts_plus_composition_time() {
        let mut r = Remux::new();
        let mut out = Vec::new();
        assert_eq!(r.feed(VIDEO, 0, &avc_config(), &mut out), Ok(Fed::Config));
        assert_eq!(
            r.feed(AUDIO, 0, &[0xaf, 0, 0x11, 0x90], &mut out),
            Ok(Fed::Config)
        );
        assert!(out.is_empty());
        r.feed(VIDEO, 1000, &frame(true, 80), &mut out).unwrap();
        r.feed(AUDIO, 1010, &[0xaf, 1, 1, 2, 3], &mut out).unwrap();
        r.feed(VIDEO, 1040, &frame(false, 0), &mut out).unwrap();
        // Audio a little behind the video keeps its place.
        r.feed(AUDIO, 1020, &[0xaf, 1, 4], &mut out).unwrap();
        let p = pes_list(&out);
        assert_eq!(
            p,
            vec![
                (0x100, START_90K + 80 * 90, Some(START_90K)),
                (0x101, START_90K + 10 * 90, None),
                (0x100, START_90K + 40 * 90, None),
                (0x101, START_90K + 20 * 90, None),
            ]
        );
    }

    #[test]
    fn a_new_publisher_continues_the_timeline_and_the_counters() {
        let mut r = Remux::new();
        let mut out = Vec::new();
        r.feed(VIDEO, 0, &avc_config(), &mut out).unwrap();
        for i in 0..20u32 {
            r.feed(VIDEO, 5000 + i * 40, &frame(i == 0, 0), &mut out)
                .unwrap();
        }
        let last = START_90K + 19 * 40 * 90;
        // The second publisher starts its clock at 0 again.
        r.start_publisher();
        assert!(matches!(
            r.feed(VIDEO, 0, &frame(true, 0), &mut out),
            Err(RemuxError::NoConfig(_))
        ));
        r.feed(VIDEO, 0, &avc_config(), &mut out).unwrap();
        r.feed(VIDEO, 0, &frame(true, 0), &mut out).unwrap();
        r.feed(VIDEO, 40, &frame(false, 0), &mut out).unwrap();
        let p = pes_list(&out); // asserts continuous CCs
        let n = p.len();
        assert_eq!(p[n - 2].1, last + GAP_90K);
        assert_eq!(p[n - 1].1, last + GAP_90K + 3600);
    }

    #[test]
    fn the_32_bit_clock_unwraps() {
        let mut r = Remux::new();
        let mut out = Vec::new();
        r.feed(VIDEO, 0, &avc_config(), &mut out).unwrap();
        r.feed(VIDEO, u32::MAX - 39, &frame(true, 0), &mut out)
            .unwrap();
        r.feed(VIDEO, 0, &frame(false, 0), &mut out).unwrap();
        let p = pes_list(&out);
        assert_eq!(p[1].1 - p[0].1, 40 * 90);
    }

    #[test]
    fn audio_only_and_late_audio_change_the_program() {
        let mut r = Remux::new();
        let mut out = Vec::new();
        r.feed(VIDEO, 0, &avc_config(), &mut out).unwrap();
        r.feed(VIDEO, 0, &frame(true, 0), &mut out).unwrap();
        r.feed(AUDIO, 0, &[0xaf, 0, 0x11, 0x90], &mut out).unwrap();
        r.feed(AUDIO, 20, &[0xaf, 1, 9], &mut out).unwrap();
        let p = pes_list(&out);
        assert_eq!(
            p.iter().map(|x| x.0).collect::<Vec<_>>(),
            vec![0x100, 0x101]
        );
        // Unknown codecs are skipped, garbage is an error.
        assert_eq!(r.feed(AUDIO, 0, &[0x2f, 0], &mut out), Ok(Fed::Skipped(2)));
        assert!(r.feed(VIDEO, 0, &[], &mut out).is_err());
        assert!(
            r.feed(VIDEO, 0, &[0x17, 1, 0, 0, 0, 0, 0, 9, 9], &mut out)
                .is_err()
        );
    }
}
