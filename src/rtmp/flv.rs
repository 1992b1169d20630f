//! FLV audio and video tag bodies (RTMP message types 8 and 9) into what MPEG-TS carries.
//!
//! Video: H.264 as FLV codec 7 (AVCDecoderConfigurationRecord, then length-prefixed NAL
//! units with a composition time), H.265 as Enhanced RTMP `hvc1` (and the older codec id
//! 12 some Chinese encoders use). Frames become Annex B with an access unit delimiter and,
//! before every key frame that lacks them, the parameter sets. Audio: AAC (sound format 10),
//! AudioSpecificConfig turned into an ADTS header per frame.
//!
//! Everything is bounds-checked; a malformed tag is an error for that tag only.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VideoCodec {
    H264,
    H265,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FlvError {
    Truncated(&'static str),
    /// A decoder configuration record that does not parse.
    BadConfig(&'static str),
    /// A NAL unit length running past the frame.
    BadNalLength,
    /// An AAC config this muxer cannot put in ADTS (explicit frequency, object type > 31).
    UnsupportedAac(&'static str),
    /// An AAC frame too long for ADTS's 13-bit length.
    AacFrameTooLong(usize),
}

impl fmt::Display for FlvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FlvError::Truncated(what) => write!(f, "FLV tag truncated in the {what}"),
            FlvError::BadConfig(what) => write!(f, "bad decoder configuration record: {what}"),
            FlvError::BadNalLength => write!(f, "NAL unit length runs past the frame"),
            FlvError::UnsupportedAac(what) => write!(f, "AAC config not carried: {what}"),
            FlvError::AacFrameTooLong(n) => write!(f, "AAC frame of {n} bytes too long for ADTS"),
        }
    }
}

impl std::error::Error for FlvError {}

/// A video tag body, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VideoTag<'a> {
    /// avcC / hvcC.
    Config { codec: VideoCodec, record: &'a [u8] },
    Frame {
        codec: VideoCodec,
        key: bool,
        /// Composition time offset, ms (PTS = DTS + this).
        cts: i32,
        data: &'a [u8],
    },
    /// End of sequence, metadata, or a codec this remuxer does not carry (its FLV codec id
    /// or FourCC, for a log line).
    Skip(u32),
}

fn si24(b: &[u8]) -> i32 {
    ((i32::from(b[0]) << 24) | (i32::from(b[1]) << 16) | (i32::from(b[2]) << 8)) >> 8
}

pub fn parse_video(tag: &[u8]) -> Result<VideoTag<'_>, FlvError> {
    let &b0 = tag.first().ok_or(FlvError::Truncated("video header"))?;
    if b0 & 0x80 != 0 {
        // Enhanced RTMP: frame type in bits 4-6, packet type in 0-3, then a FourCC.
        let key = (b0 >> 4) & 0x07 == 1;
        let packet_type = b0 & 0x0f;
        let cc = tag.get(1..5).ok_or(FlvError::Truncated("FourCC"))?;
        let fourcc = u32::from_be_bytes([cc[0], cc[1], cc[2], cc[3]]);
        let codec = match cc {
            b"hvc1" => VideoCodec::H265,
            b"avc1" => VideoCodec::H264,
            _ => return Ok(VideoTag::Skip(fourcc)),
        };
        let body = &tag[5..];
        return Ok(match packet_type {
            0 => VideoTag::Config {
                codec,
                record: body,
            },
            1 => {
                let c = body
                    .get(..3)
                    .ok_or(FlvError::Truncated("composition time"))?;
                VideoTag::Frame {
                    codec,
                    key,
                    cts: si24(c),
                    data: &body[3..],
                }
            }
            3 => VideoTag::Frame {
                codec,
                key,
                cts: 0,
                data: body,
            },
            _ => VideoTag::Skip(fourcc),
        });
    }
    let key = b0 >> 4 == 1;
    let codec = match b0 & 0x0f {
        7 => VideoCodec::H264,
        12 => VideoCodec::H265,
        other => return Ok(VideoTag::Skip(u32::from(other))),
    };
    let h = tag
        .get(1..5)
        .ok_or(FlvError::Truncated("AVC packet header"))?;
    let body = &tag[5..];
    Ok(match h[0] {
        0 => VideoTag::Config {
            codec,
            record: body,
        },
        1 => VideoTag::Frame {
            codec,
            key,
            cts: si24(&h[1..4]),
            data: body,
        },
        _ => VideoTag::Skip(u32::from(b0 & 0x0f)),
    })
}

/// What a decoder configuration record gives: the NAL length size and the parameter sets
/// as Annex B.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VideoConfig {
    pub codec: VideoCodec,
    pub length_size: usize,
    pub parameter_sets: Vec<u8>,
}

fn take<'a>(
    b: &'a [u8],
    pos: &mut usize,
    n: usize,
    what: &'static str,
) -> Result<&'a [u8], FlvError> {
    let s = b
        .get(*pos..pos.saturating_add(n))
        .ok_or(FlvError::BadConfig(what))?;
    *pos += n;
    Ok(s)
}

fn u16_at(b: &[u8], pos: &mut usize, what: &'static str) -> Result<usize, FlvError> {
    let s = take(b, pos, 2, what)?;
    Ok(usize::from(u16::from_be_bytes([s[0], s[1]])))
}

const START: [u8; 4] = [0, 0, 0, 1];

impl VideoConfig {
    pub fn parse(codec: VideoCodec, record: &[u8]) -> Result<Self, FlvError> {
        let mut ps = Vec::new();
        let mut pos = 0;
        let length_size;
        match codec {
            VideoCodec::H264 => {
                let h = take(record, &mut pos, 6, "avcC header")?;
                if h[0] != 1 {
                    return Err(FlvError::BadConfig("avcC version"));
                }
                length_size = usize::from(h[4] & 3) + 1;
                let sps = usize::from(h[5] & 0x1f);
                for _ in 0..sps {
                    let n = u16_at(record, &mut pos, "SPS length")?;
                    ps.extend_from_slice(&START);
                    ps.extend_from_slice(take(record, &mut pos, n, "SPS")?);
                }
                let pps = usize::from(take(record, &mut pos, 1, "PPS count")?[0]);
                for _ in 0..pps {
                    let n = u16_at(record, &mut pos, "PPS length")?;
                    ps.extend_from_slice(&START);
                    ps.extend_from_slice(take(record, &mut pos, n, "PPS")?);
                }
            }
            VideoCodec::H265 => {
                let h = take(record, &mut pos, 23, "hvcC header")?;
                if h[0] != 1 {
                    return Err(FlvError::BadConfig("hvcC version"));
                }
                length_size = usize::from(h[21] & 3) + 1;
                let arrays = usize::from(h[22]);
                for _ in 0..arrays {
                    take(record, &mut pos, 1, "NAL array type")?;
                    let n = u16_at(record, &mut pos, "NAL count")?;
                    for _ in 0..n {
                        let len = u16_at(record, &mut pos, "NAL length")?;
                        ps.extend_from_slice(&START);
                        ps.extend_from_slice(take(record, &mut pos, len, "NAL unit")?);
                    }
                }
            }
        }
        Ok(VideoConfig {
            codec,
            length_size,
            parameter_sets: ps,
        })
    }

    /// Appends the frame as Annex B: an access unit delimiter, the parameter sets before a
    /// key frame that does not carry its own, then each NAL unit with a start code (the
    /// frame's own delimiters dropped: there is one already).
    pub fn annex_b(&self, key: bool, data: &[u8], out: &mut Vec<u8>) -> Result<(), FlvError> {
        let start = out.len();
        let h265 = self.codec == VideoCodec::H265;
        let aud: &[u8] = if h265 {
            &[0, 0, 0, 1, 0x46, 0x01, 0x50]
        } else {
            &[0, 0, 0, 1, 0x09, 0xf0]
        };
        // NAL unit types of an access unit delimiter and of an SPS.
        let (aud_type, sps_type) = if h265 { (35, 33) } else { (9, 7) };
        let nal_type = |h: u8| if h265 { (h >> 1) & 0x3f } else { h & 0x1f };
        out.extend_from_slice(aud);
        let ps_at = out.len();
        let mut has_sps = false;
        let mut pos = 0;
        while pos < data.len() {
            let Some(l) = data.get(pos..pos + self.length_size) else {
                out.truncate(start);
                return Err(FlvError::BadNalLength);
            };
            let n = l.iter().fold(0usize, |acc, &b| acc << 8 | usize::from(b));
            pos += self.length_size;
            let Some(nal) = data.get(pos..pos.saturating_add(n)) else {
                out.truncate(start);
                return Err(FlvError::BadNalLength);
            };
            pos += n;
            let Some(&h) = nal.first() else { continue };
            if nal_type(h) == aud_type {
                continue;
            }
            has_sps |= nal_type(h) == sps_type;
            out.extend_from_slice(&START);
            out.extend_from_slice(nal);
        }
        if key && !has_sps && !self.parameter_sets.is_empty() {
            out.splice(ps_at..ps_at, self.parameter_sets.iter().copied());
        }
        Ok(())
    }
}

/// An audio tag body, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AudioTag<'a> {
    /// AudioSpecificConfig.
    AacConfig(&'a [u8]),
    AacFrame(&'a [u8]),
    /// Another sound format (its FLV number), not carried.
    Skip(u8),
}

pub fn parse_audio(tag: &[u8]) -> Result<AudioTag<'_>, FlvError> {
    let &b0 = tag.first().ok_or(FlvError::Truncated("audio header"))?;
    let format = b0 >> 4;
    if format != 10 {
        return Ok(AudioTag::Skip(format));
    }
    let &kind = tag.get(1).ok_or(FlvError::Truncated("AAC packet type"))?;
    Ok(match kind {
        0 => AudioTag::AacConfig(&tag[2..]),
        _ => AudioTag::AacFrame(&tag[2..]),
    })
}

/// What an ADTS header needs from an AudioSpecificConfig.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Adts {
    /// ADTS profile: object type - 1 (0 Main, 1 LC, 2 SSR, 3 LTP).
    pub profile: u8,
    pub freq_index: u8,
    pub channels: u8,
}

impl Adts {
    pub fn parse(asc: &[u8]) -> Result<Self, FlvError> {
        let b = asc
            .get(..2)
            .ok_or(FlvError::Truncated("AudioSpecificConfig"))?;
        let object = b[0] >> 3;
        let freq_index = ((b[0] & 7) << 1) | (b[1] >> 7);
        let channels = (b[1] >> 3) & 0x0f;
        if object == 31 {
            return Err(FlvError::UnsupportedAac("escaped object type"));
        }
        if freq_index >= 13 {
            return Err(FlvError::UnsupportedAac("explicit sampling frequency"));
        }
        // HE-AAC (5) and PS (29) signal the core frequency here; ADTS says LC and decoders
        // find the SBR implicitly.
        let profile = match object {
            1..=4 => object - 1,
            _ => 1,
        };
        Ok(Adts {
            profile,
            freq_index,
            channels,
        })
    }

    /// Appends an ADTS header and the raw frame.
    pub fn frame(&self, raw: &[u8], out: &mut Vec<u8>) -> Result<(), FlvError> {
        let len = raw.len() + 7;
        if len > 0x1fff {
            return Err(FlvError::AacFrameTooLong(raw.len()));
        }
        out.extend_from_slice(&[
            0xff,
            0xf1, // MPEG-4, layer 0, no CRC
            (self.profile << 6) | (self.freq_index << 2) | (self.channels >> 2),
            ((self.channels & 3) << 6) | (len >> 11) as u8,
            (len >> 3) as u8,
            ((len as u8 & 7) << 5) | 0x1f,
            0xfc,
        ]);
        out.extend_from_slice(raw);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPS: &[u8] = &[0x67, 0x64, 0x00, 0x1f, 0xac];
    const PPS: &[u8] = &[0x68, 0xee, 0x3c, 0x80];

    fn avcc() -> Vec<u8> {
        let mut r = vec![1, 0x64, 0, 0x1f, 0xff, 0xe1];
        r.extend_from_slice(&(SPS.len() as u16).to_be_bytes());
        r.extend_from_slice(SPS);
        r.push(1);
        r.extend_from_slice(&(PPS.len() as u16).to_be_bytes());
        r.extend_from_slice(PPS);
        r
    }

    #[test]
    fn avc_config_and_frames_become_annex_b() {
        let mut tag = vec![0x17, 0, 0, 0, 0];
        tag.extend_from_slice(&avcc());
        let VideoTag::Config { codec, record } = parse_video(&tag).unwrap() else {
            panic!()
        };
        let cfg = VideoConfig::parse(codec, record).unwrap();
        assert_eq!(cfg.length_size, 4);
        // Key frame: AUD + SEI? no: [AUD(in), IDR] with cts 80 ms.
        let mut frame = vec![0x17, 1, 0, 0, 80];
        frame.extend_from_slice(&[0, 0, 0, 2, 0x09, 0xf0]);
        frame.extend_from_slice(&[0, 0, 0, 3, 0x65, 0xaa, 0xbb]);
        let VideoTag::Frame { key, cts, data, .. } = parse_video(&frame).unwrap() else {
            panic!()
        };
        assert!(key);
        assert_eq!(cts, 80);
        let mut out = Vec::new();
        cfg.annex_b(key, data, &mut out).unwrap();
        let mut want = vec![0, 0, 0, 1, 0x09, 0xf0, 0, 0, 0, 1];
        want.extend_from_slice(SPS);
        want.extend_from_slice(&[0, 0, 0, 1]);
        want.extend_from_slice(PPS);
        want.extend_from_slice(&[0, 0, 0, 1, 0x65, 0xaa, 0xbb]);
        assert_eq!(out, want);
        // Non-key frame: no parameter sets; negative composition time.
        let frame = [0x27, 1, 0xff, 0xff, 0xf6, 0, 0, 0, 2, 0x41, 0x01];
        let VideoTag::Frame { key, cts, data, .. } = parse_video(&frame).unwrap() else {
            panic!()
        };
        assert_eq!((key, cts), (false, -10));
        let mut out = Vec::new();
        cfg.annex_b(key, data, &mut out).unwrap();
        assert_eq!(out, vec![0, 0, 0, 1, 0x09, 0xf0, 0, 0, 0, 1, 0x41, 0x01]);
        // A length past the end.
        let mut out = vec![9];
        assert_eq!(
            cfg.annex_b(true, &[0, 0, 1, 0, 0x65], &mut out),
            Err(FlvError::BadNalLength)
        );
        assert_eq!(out, vec![9], "nothing appended on error");
    }

    #[test]
    fn enhanced_rtmp_hevc() {
        // hvcC: 23-byte header, one array of one VPS.
        let mut rec = vec![1; 23];
        rec[21] = 0x03;
        rec[22] = 1;
        rec.extend_from_slice(&[0x20, 0, 1, 0, 2, 0x40, 0x01]);
        let mut tag = vec![0x90];
        tag.extend_from_slice(b"hvc1");
        tag.extend_from_slice(&rec);
        let VideoTag::Config { codec, record } = parse_video(&tag).unwrap() else {
            panic!()
        };
        assert_eq!(codec, VideoCodec::H265);
        let cfg = VideoConfig::parse(codec, record).unwrap();
        assert_eq!(cfg.parameter_sets, vec![0, 0, 0, 1, 0x40, 0x01]);
        // CodedFramesX key frame: no composition time.
        let mut f = vec![0x93];
        f.extend_from_slice(b"hvc1");
        f.extend_from_slice(&[0, 0, 0, 3, 0x26, 0x01, 0xaf]);
        let VideoTag::Frame { key, cts, data, .. } = parse_video(&f).unwrap() else {
            panic!()
        };
        assert_eq!((key, cts), (true, 0));
        let mut out = Vec::new();
        cfg.annex_b(key, data, &mut out).unwrap();
        assert_eq!(
            out,
            vec![
                0, 0, 0, 1, 0x46, 0x01, 0x50, 0, 0, 0, 1, 0x40, 0x01, 0, 0, 0, 1, 0x26, 0x01, 0xaf
            ]
        );
        // Another FourCC is skipped.
        let mut av1 = vec![0x90];
        av1.extend_from_slice(b"av01");
        assert!(matches!(parse_video(&av1), Ok(VideoTag::Skip(_))));
    }

    #[test]
    fn aac_config_to_adts() {
        // AAC LC, 48 kHz (index 3), stereo: 0x11 0x90.
        assert_eq!(
            parse_audio(&[0xaf, 0, 0x11, 0x90]).unwrap(),
            AudioTag::AacConfig(&[0x11, 0x90])
        );
        let a = Adts::parse(&[0x11, 0x90]).unwrap();
        assert_eq!(
            a,
            Adts {
                profile: 1,
                freq_index: 3,
                channels: 2
            }
        );
        let mut out = Vec::new();
        a.frame(&[1, 2, 3], &mut out).unwrap();
        assert_eq!(out, vec![0xff, 0xf1, 0x4c, 0x80, 0x01, 0x5f, 0xfc, 1, 2, 3]);
        assert!(a.frame(&vec![0; 9000], &mut out).is_err());
        assert!(Adts::parse(&[0x17, 0x80]).is_err(), "explicit frequency");
        assert_eq!(parse_audio(&[0x2f, 1]).unwrap(), AudioTag::Skip(2));
    }

    #[test]
    fn truncated_tags_are_errors() {
        for t in [&[][..], &[0x17], &[0x17, 1, 0], &[0x90, b'h']] {
            assert!(parse_video(t).is_err(), "{t:?}");
        }
        let full = avcc();
        for n in 0..full.len() {
            assert!(VideoConfig::parse(VideoCodec::H264, &full[..n]).is_err());
        }
        assert!(parse_audio(&[0xaf]).is_err());
    }
}
