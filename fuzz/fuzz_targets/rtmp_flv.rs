//! FLV tag bodies on arbitrary bytes through the remuxer: never panics, always whole TS
//! packets. The first byte picks audio or video and whether a valid H.264 / AAC sequence
//! header comes first, so frames reach the Annex B and ADTS conversion.
#![no_main]

use libfuzzer_sys::fuzz_target;
use quoll::rtmp::chunk::{AUDIO, VIDEO};
use quoll::rtmp::flv::{self, VideoCodec, VideoConfig};
use quoll::rtmp::remux::Remux;

const AVC_CONFIG: &[u8] = &[
    0x17, 0, 0, 0, 0, 1, 0x64, 0, 0x1f, 0xff, 0xe1, 0, 2, 0x67, 0x64, 1, 0, 2, 0x68, 0xee,
];
const AAC_CONFIG: &[u8] = &[0xaf, 0, 0x11, 0x90];

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let _ = flv::parse_video(rest);
    let _ = flv::parse_audio(rest);
    let _ = VideoConfig::parse(VideoCodec::H264, rest);
    let _ = VideoConfig::parse(VideoCodec::H265, rest);
    let mut r = Remux::new();
    let mut out = Vec::new();
    if sel & 1 == 1 {
        r.feed(VIDEO, 0, AVC_CONFIG, &mut out).expect("valid avcC");
        r.feed(AUDIO, 0, AAC_CONFIG, &mut out).expect("valid ASC");
    }
    let kind = if sel & 2 == 2 { VIDEO } else { AUDIO };
    for (i, tag) in rest.chunks(usize::from(sel >> 2).max(1)).enumerate() {
        let _ = r.feed(kind, i as u32 * 40, tag, &mut out);
    }
    assert_eq!(out.len() % 188, 0);
});
