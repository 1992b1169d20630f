use super::*;
use crate::ts::analyzer::testgen::psi_packets;
use crate::ts::psi::crc32_mpeg2;

const PMT_PID: u16 = 0x1000;
const VIDEO: u16 = 0x100;
const AUDIO: u16 = 0x101;
/// 25 frames per second at 90 kHz.
const FRAME: u64 = 3600;

fn with_crc(mut s: Vec<u8>) -> Vec<u8> {
    let len = s.len() - 3 + 4;
    s[1] = 0xB0 | (len >> 8) as u8;
    s[2] = len as u8;
    let crc = crc32_mpeg2(&s);
    s.extend_from_slice(&crc.to_be_bytes());
    s
}

fn pat() -> Vec<u8> {
    with_crc(vec![
        0x00,
        0,
        0,
        0,
        1,
        0xC1,
        0,
        0,
        0,
        1,
        0xE0 | (PMT_PID >> 8) as u8,
        PMT_PID as u8,
    ])
}

/// A PMT with the given (stream_type, pid) streams.
fn pmt(streams: &[(u8, u16)]) -> Vec<u8> {
    let mut s = vec![
        0x02,
        0,
        0,
        0,
        1,
        0xC1,
        0,
        0,
        0xE0 | (VIDEO >> 8) as u8,
        VIDEO as u8,
        0xF0,
        0,
    ];
    for &(t, pid) in streams {
        s.extend_from_slice(&[t, 0xE0 | (pid >> 8) as u8, pid as u8, 0xF0, 0]);
    }
    with_crc(s)
}

/// A PES on `pid` with `pts` carrying `es`, packetized with adaptation stuffing.
fn pes(pid: u16, pts: u64, es: &[u8], rai: bool, cc: &mut u8) -> Vec<u8> {
    let mut data = vec![
        0,
        0,
        1,
        if pid == AUDIO { 0xC0 } else { 0xE0 },
        0,
        0,
        0x80,
        0x80,
        5,
    ];
    data.extend_from_slice(&[
        0x21 | ((pts >> 29) & 0x0E) as u8,
        (pts >> 22) as u8,
        0x01 | ((pts >> 14) & 0xFE) as u8,
        (pts >> 7) as u8,
        0x01 | ((pts << 1) & 0xFE) as u8,
    ]);
    data.extend_from_slice(es);
    let mut out = Vec::new();
    let mut rest = &data[..];
    let mut first = true;
    while first || !rest.is_empty() {
        let mut p = vec![
            SYNC_BYTE,
            (if first { 0x40 } else { 0 }) | (pid >> 8) as u8,
            pid as u8,
        ];
        // Room for the payload after an adaptation field of `af` bytes (0: none).
        let want_af = if first && rai { 2 } else { 0 };
        let room = PACKET_LEN - 4 - want_af;
        let n = rest.len().min(room);
        let af_len = if n < room || want_af > 0 {
            // adaptation_field_length byte + flags + stuffing
            PACKET_LEN - 4 - n
        } else {
            0
        };
        if af_len > 0 {
            p.push(0x30 | *cc);
            p.push((af_len - 1) as u8);
            if af_len > 1 {
                p.push(if first && rai { 0x40 } else { 0 });
                p.extend(std::iter::repeat_n(0xFF, af_len - 2));
            }
        } else {
            p.push(0x10 | *cc);
        }
        *cc = (*cc + 1) & 0x0F;
        p.extend_from_slice(&rest[..n]);
        assert_eq!(p.len(), PACKET_LEN);
        rest = &rest[n..];
        first = false;
        out.extend_from_slice(&p);
    }
    out
}

/// H.264 access units: AUD, then SPS/PPS, a long SEI and an IDR slice, or a non-IDR slice.
fn h264(key: bool) -> Vec<u8> {
    let mut es = vec![0, 0, 0, 1, 0x09, 0xF0];
    if key {
        es.extend_from_slice(&[0, 0, 0, 1, 0x67, 0x64, 0, 0x1F]);
        es.extend_from_slice(&[0, 0, 0, 1, 0x68, 0xEE]);
        // x264's SEI: longer than a packet, so the IDR is in a later one.
        es.extend_from_slice(&[0, 0, 1, 0x06, 0x05]);
        es.extend(std::iter::repeat_n(0x80, 700));
        es.extend_from_slice(&[0, 0, 1, 0x65, 0x88]);
    } else {
        es.extend_from_slice(&[0, 0, 1, 0x41, 0x9A]);
    }
    es.extend(std::iter::repeat_n(0x11, 900));
    es
}

struct Source {
    vcc: u8,
    acc: u8,
    pcc: u8,
    mcc: u8,
    pmt: Vec<u8>,
}

impl Source {
    fn new(streams: &[(u8, u16)]) -> Self {
        Source {
            vcc: 0,
            acc: 0,
            pcc: 0,
            mcc: 0,
            pmt: pmt(streams),
        }
    }

    fn psi(&mut self) -> Vec<u8> {
        let mut v = psi_packets(0, &pat(), &mut self.pcc);
        v.extend(psi_packets(PMT_PID, &self.pmt.clone(), &mut self.mcc));
        v
    }

    /// Frame `n` of a stream with a key frame every `gop` frames, PSI every 10 frames, an
    /// audio frame after each video one.
    fn frame(&mut self, n: u64, gop: u64, rai: bool) -> Vec<u8> {
        let mut v = if n.is_multiple_of(10) {
            self.psi()
        } else {
            Vec::new()
        };
        let key = n.is_multiple_of(gop);
        v.extend(pes(VIDEO, n * FRAME, &h264(key), rai && key, &mut self.vcc));
        v.extend(pes(
            AUDIO,
            n * FRAME,
            &[0xFF, 0xF1, 0x50, 0x80],
            false,
            &mut self.acc,
        ));
        v
    }
}

fn run(seg: &mut Segmenter, stream: &[u8], t0: Instant) -> Vec<Segment> {
    let mut out = Vec::new();
    seg.push(stream, t0, |s| out.push(s));
    out
}

fn pids(data: &[u8]) -> Vec<u16> {
    data.chunks(PACKET_LEN)
        .map(|p| Packet::new(p).unwrap().pid())
        .collect()
}

/// The NAL type of the first slice in the segment's first video PES.
fn first_slice_is_idr(data: &[u8]) -> bool {
    let mut scan = NalScan::new(Codec::H264);
    let mut started = false;
    for raw in data.chunks(PACKET_LEN) {
        let p = Packet::new(raw).unwrap();
        if p.pid() != VIDEO {
            continue;
        }
        let pl = p.payload().unwrap();
        let es = if p.pusi() {
            assert!(!started, "the first video PES has no slice");
            started = true;
            pes_start(pl).unwrap().es
        } else {
            pl
        };
        if let Some(key) = scan.feed(es) {
            return key;
        }
    }
    false
}

fn av() -> Vec<(u8, u16)> {
    vec![(0x1B, VIDEO), (0x0F, AUDIO)]
}

/// The TS of frames `range` (a key frame every `gop`, `rai`: flagged random access) of a
/// program with `streams`, and the source to go on with.
fn frames(
    streams: &[(u8, u16)],
    range: std::ops::Range<u64>,
    gop: u64,
    rai: bool,
) -> (Source, Vec<u8>) {
    let mut src = Source::new(streams);
    let mut stream = Vec::new();
    for n in range {
        stream.extend(src.frame(n, gop, rai));
    }
    (src, stream)
}

#[test]
fn cuts_at_idr_frames_with_pat_and_pmt_first() {
    let t0 = Instant::now();
    // Starts mid-GOP: frames before the first IDR (and before the PSI) are dropped.
    let (_, stream) = frames(&av(), 7..161, 25, false);
    let mut seg = Segmenter::new(Duration::from_secs(2), 40);
    let out = run(&mut seg, &stream, t0);
    assert_eq!(seg.timing(), Some((VIDEO, Codec::H264)));
    // IDRs at 25, 50, ...: 2 s segments from 25 to 75, 75 to 125; 125 still open.
    assert_eq!(out.iter().map(|s| s.seq).collect::<Vec<_>>(), vec![40, 41]);
    let mut pat_cc = None;
    for s in &out {
        assert_eq!(s.duration, Duration::from_secs(2));
        assert_eq!(s.data.len() % PACKET_LEN, 0);
        let p = pids(&s.data);
        assert_eq!(
            &p[..3],
            &[0, PMT_PID, VIDEO],
            "PAT, PMT, then the key frame"
        );
        assert!(first_slice_is_idr(&s.data));
        // The PAT's CC runs on across the inserted and the source's copies.
        for raw in s.data.chunks(PACKET_LEN) {
            let pk = Packet::new(raw).unwrap();
            if pk.pid() == 0 {
                if let Some(prev) = pat_cc {
                    assert_eq!(pk.cc(), (prev + 1) & 0x0F);
                }
                pat_cc = Some(pk.cc());
            }
        }
    }
}

#[test]
fn sparse_key_frames_make_longer_segments() {
    let t0 = Instant::now();
    let (_, stream) = frames(&av(), 0..200, 75, false);
    let mut seg = Segmenter::new(Duration::from_secs(2), 0);
    let out = run(&mut seg, &stream, t0);
    assert_eq!(out.len(), 2);
    assert!(out.iter().all(|s| s.duration == Duration::from_secs(3)));
    assert!(out.iter().all(|s| first_slice_is_idr(&s.data)));
}

#[test]
fn random_access_indicator_alone_marks_a_key_frame() {
    // Video of a type whose pictures are not parsed: only the flag can tell.
    let t0 = Instant::now();
    let (_, stream) = frames(&[(0x10, VIDEO), (0x0F, AUDIO)], 0..101, 25, true);
    let mut seg = Segmenter::new(Duration::from_secs(2), 0);
    let out = run(&mut seg, &stream, t0);
    assert_eq!(seg.timing(), Some((VIDEO, Codec::OtherVideo)));
    assert_eq!(out.len(), 2);
    assert!(out.iter().all(|s| s.duration == Duration::from_secs(2)));
}

#[test]
fn audio_only_streams_cut_on_time() {
    let t0 = Instant::now();
    let mut src = Source::new(&[(0x0F, AUDIO)]);
    let mut stream = src.psi();
    // AAC at 48 kHz: 1920 ticks a frame; 2 s is 93.75 frames, so cuts come at frame 94.
    for n in 0..200u64 {
        if n.is_multiple_of(50) {
            stream.extend(src.psi());
        }
        stream.extend(pes(
            AUDIO,
            n * 1920,
            &[0xFF, 0xF1, 0x50, 0x80],
            false,
            &mut src.acc,
        ));
    }
    let mut seg = Segmenter::new(Duration::from_secs(2), 0);
    let out = run(&mut seg, &stream, t0);
    assert_eq!(seg.timing(), Some((AUDIO, Codec::Audio)));
    assert_eq!(out.len(), 2);
    assert_eq!(out[0].duration, Duration::from_micros(94 * 1920 * 100 / 9));
    assert_eq!(&pids(&out[1].data)[..3], &[0, PMT_PID, AUDIO]);
}

#[test]
fn without_timestamps_the_clock_times_the_segments() {
    let t0 = Instant::now();
    let mut src = Source::new(&av());
    let mut seg = Segmenter::new(Duration::from_secs(2), 0);
    let mut out = Vec::new();
    for n in 0..151u64 {
        let mut f = src.frame(n, 25, false);
        // Strip the PTS flag from every PES header.
        for p in f.chunks_mut(PACKET_LEN) {
            let pk = Packet::new(p).unwrap();
            if pk.pusi() && pk.pid() != 0 && pk.pid() != PMT_PID {
                let at = PACKET_LEN - pk.payload().unwrap().len();
                p[at + 7] = 0;
            }
        }
        // 40 ms a frame on the clock.
        seg.push(&f, t0 + Duration::from_millis(40 * n), |s| out.push(s));
    }
    assert_eq!(out.len(), 3);
    assert!(out.iter().all(|s| s.duration == Duration::from_secs(2)));
}

#[test]
fn garbage_never_panics_and_bounds_what_it_holds() {
    let t0 = Instant::now();
    let mut seg = Segmenter::new(Duration::from_millis(1), 0);
    let mut src = Source::new(&av());
    let mut stream = src.psi();
    stream.extend(src.frame(0, 1, false));
    seg.push(&stream, t0, |_| {});
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let mut p = [0u8; PACKET_LEN];
    for i in 0..20_000u32 {
        for b in &mut p {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        p[0] = SYNC_BYTE;
        if i % 3 == 0 {
            // Aim at the PIDs that are parsed.
            p[1] = (p[1] & 0xE0) | (VIDEO >> 8) as u8;
            p[2] = VIDEO as u8;
        }
        let _ = seg.packet(&p, t0 + Duration::from_millis(u64::from(i)));
        if let Some(h) = &seg.held {
            assert!(h.scan.scanned <= MAX_SCAN + PACKET_LEN);
        }
    }
}

#[test]
fn packetize_splits_long_sections() {
    let section = vec![0xABu8; 400];
    let mut cc = 15;
    let mut out = Vec::new();
    packetize(0x20, &section, &mut cc, &mut out);
    assert_eq!(out.len(), 3 * PACKET_LEN);
    let mut got = Vec::new();
    for (i, raw) in out.chunks(PACKET_LEN).enumerate() {
        let p = Packet::new(raw).unwrap();
        assert_eq!(
            (p.pid(), p.cc(), p.pusi()),
            (0x20, (15 + i as u8) & 0x0F, i == 0)
        );
        got.extend_from_slice(&p.payload().unwrap()[usize::from(i == 0)..]);
    }
    assert_eq!(&got[..400], &section[..]);
    assert!(got[400..].iter().all(|&b| b == 0xFF));
}

#[test]
fn a_stream_without_key_frames_is_still_cut() {
    // After the first key frame, none: the segment is cut by the clock, at the next PES
    // start once it lasted 10 targets, so the playlist does not stall.
    let t0 = Instant::now();
    let mut src = Source::new(&av());
    let mut seg = Segmenter::new(Duration::from_secs(2), 0);
    let mut out = Vec::new();
    for n in 0..800u64 {
        let f = src.frame(n, 1_000_000, false);
        seg.push(&f, t0 + Duration::from_millis(40 * n), |s| out.push(s));
    }
    // 800 frames at 40 ms: cuts at 30 s (the floor over 10 x 2 s).
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].duration, Duration::from_secs(30));
}

#[test]
fn held_packets_are_bounded_when_the_video_stops() {
    let t0 = Instant::now();
    let mut src = Source::new(&av());
    let mut seg = Segmenter::new(Duration::from_secs(2), 0);
    let mut stream = Vec::new();
    for n in 0..60 {
        stream.extend(src.frame(n, 25, false));
    }
    // The first packet of a video PES, then only audio: the PES is held, then given up.
    let mut tail = pes(VIDEO, 60 * FRAME, &h264(false)[..20], false, &mut src.vcc);
    for n in 0..2000u64 {
        tail.extend(pes(
            AUDIO,
            (60 + n) * FRAME,
            &[0xFF, 0xF1, 0x50, 0x80],
            false,
            &mut src.acc,
        ));
    }
    seg.push(&stream, t0, |_| {});
    seg.push(&tail, t0, |_| {});
    assert!(
        seg.held
            .as_ref()
            .is_none_or(|h| h.data.len() <= MAX_HELD_BYTES)
    );
}
