//! RTMP input end to end with real FFmpeg: a publisher pushes H.264 (with B-frames) and AAC
//! into a quoll flow, whose UDP output ffprobe decodes; a second publisher continues the
//! same continuity counters; a wrong key, garbage and an absurd chunk size are refused and
//! counted while the node keeps running; a taken port is a server error. H.265 (which
//! FFmpeg 5.1 cannot publish) goes through the remuxer as Enhanced RTMP tags.

mod common;

use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::*;
use serde_json::{Value, json};

fn rtmp_flow(id: &str, port: u16, key: &str, outputs: Value) -> Value {
    json!({
        "id": id, "name": id, "enabled": true,
        "input": { "type": "rtmp", "listen_addr": format!("127.0.0.1:{port}"),
                   "app": "live", "stream_key": key },
        "outputs": outputs
    })
}

/// FFmpeg publishing `secs` of a test pattern and a tone to `url` (H.264 with B-frames,
/// a key frame a second, AAC), in real time.
fn publish(url: &str, secs: u32) -> Output {
    Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-loglevel", "error", "-re"])
        .args(["-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25"])
        .args(["-f", "lavfi", "-i", "sine=frequency=1000:sample_rate=48000"])
        .args(["-t", &secs.to_string()])
        .args([
            "-c:v", "libx264", "-preset", "veryfast", "-g", "25", "-bf", "2",
        ])
        .args(["-c:a", "aac", "-b:a", "64k", "-f", "flv"])
        .arg(url)
        .output()
        .expect("run ffmpeg")
}

/// Collects datagrams on `rx` until `stop` is set and the socket has gone quiet.
fn capture(rx: UdpSocket, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut got = Vec::new();
        let mut buf = vec![0u8; 65536];
        loop {
            match rx.recv(&mut buf) {
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(_) if stop.load(Ordering::SeqCst) => return got,
                Err(_) => {}
            }
        }
    })
}

/// Continuity errors in a TS capture, per PID (payload-carrying packets only).
fn cc_errors(ts: &[u8]) -> usize {
    let mut last = std::collections::HashMap::new();
    let mut errors = 0;
    for p in ts.chunks_exact(188) {
        assert_eq!(p[0], 0x47, "sync byte");
        let pid = u16::from_be_bytes([p[1] & 0x1f, p[2]]);
        if p[3] & 0x10 == 0 {
            continue;
        }
        let cc = p[3] & 0x0f;
        if let Some(prev) = last.insert(pid, cc)
            && (prev + 1) & 0x0f != cc
        {
            errors += 1;
        }
    }
    errors
}

fn video_frames(path: &Path) -> u64 {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0", "-count_frames"])
        .args(["-show_entries", "stream=nb_read_frames", "-of", "csv=p=0"])
        .arg(path)
        .output()
        .expect("run ffprobe");
    // TS: the program's streams and the streams again; the first count is the one.
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn ffmpeg_publishes_twice_and_the_udp_output_decodes_with_continuous_counters() {
    require_peers!("ffmpeg", "ffprobe");
    let dir = TempDir::new("rtmp-e2e");
    let port = free_tcp_port();
    let (rx, out_port) = udp_receiver();
    // Two flows on one port, told apart by their keys; only f1 is published to.
    let q = Quoll::start(
        dir.path(),
        &node_config(
            free_tcp_port(),
            &dir.path().join("data"),
            json!([
                rtmp_flow(
                    "f1",
                    port,
                    "k1",
                    json!([{ "type": "udp", "id": "u",
                    "dest_addr": format!("127.0.0.1:{out_port}") }])
                ),
                rtmp_flow("f2", port, "k2", json!([])),
            ]),
        ),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let cap = capture(rx, stop.clone());
    let url = format!("rtmp://127.0.0.1:{port}/live/k1");
    for n in 1..=2 {
        let out = publish(&url, 3);
        assert!(
            out.status.success(),
            "ffmpeg publish {n} failed: {}\nlog:\n{}",
            String::from_utf8_lossy(&out.stderr),
            q.log()
        );
        q.wait_events("RTMP publisher disconnected", n, Duration::from_secs(10));
    }
    let f = q.wait_flow("f1", Duration::from_secs(5), "output counted", |f| {
        f["input"]["packets"].as_u64() > Some(0)
    });
    stop.store(true, Ordering::SeqCst);
    let ts = cap.join().unwrap();
    assert!(ts.len() > 100 * 188, "only {} bytes came out", ts.len());
    assert_eq!(
        cc_errors(&ts),
        0,
        "the capture's counters run on across publishers"
    );
    assert_eq!(f["input"]["cc_errors"], 0, "quoll's analyzer: {f}");
    assert_eq!(f["input"]["malformed"], 0, "{f}");
    let path = dir.path().join("out.ts");
    std::fs::write(&path, &ts).unwrap();
    let (codecs, errors) = ffprobe_ts(&path);
    assert_eq!(codecs, vec!["h264", "aac"]);
    assert!(errors.is_empty(), "decode errors:\n{errors}");
    // 2 × 3 s at 25 fps; the capture's last unit is cut off by ffprobe_ts.
    let frames = video_frames(&path.with_extension("whole.ts"));
    assert!(
        (140..=150).contains(&frames),
        "{frames} video frames decoded"
    );
    assert_eq!(q.count_flow_events("f1", "RTMP publisher connected"), 2);
    assert_eq!(q.count_flow_events("f1", "RTMP publisher disconnected"), 2);
    assert_eq!(q.count_flow_events("f2", "RTMP publisher"), 0);
    q.assert_no_event("RTMP server error");
}

/// The client half of a handshake: C0+C1, read S0+S1+S2, C2.
fn handshake(s: &mut TcpStream) {
    let mut c = vec![3u8];
    c.extend(std::iter::repeat_n(0u8, 1536));
    s.write_all(&c).unwrap();
    let mut s012 = vec![0u8; 1 + 2 * 1536];
    s.read_exact(&mut s012).unwrap();
    assert_eq!(s012[0], 3);
    s.write_all(&[0u8; 1536]).unwrap();
}

/// The server closes the connection (EOF or reset) within the test's patience.
fn closed_by_server(s: &mut TcpStream) -> bool {
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) => {
                return matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
                );
            }
        }
    }
}

#[test]
fn a_wrong_key_garbage_and_an_absurd_chunk_size_are_refused_and_counted() {
    require_peers!("ffmpeg");
    let dir = TempDir::new("rtmp-refuse");
    let port = free_tcp_port();
    // f2's port is taken: its server cannot bind, which is an event and a failed flow.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_port = taken.local_addr().unwrap().port();
    let q = Quoll::start(
        dir.path(),
        &node_config(
            free_tcp_port(),
            &dir.path().join("data"),
            json!([
                rtmp_flow("f1", port, "right", json!([])),
                rtmp_flow("f2", taken_port, "other", json!([])),
            ]),
        ),
    );
    let e = q.wait_event(
        "RTMP server error: cannot listen on",
        Duration::from_secs(10),
    );
    assert_eq!(e["flow_id"], "f2", "{e}");
    let out = publish(&format!("rtmp://127.0.0.1:{port}/live/wrong"), 1);
    assert!(!out.status.success(), "a wrong key must be refused");
    q.wait_flow("f1", Duration::from_secs(10), "the refusal counted", |f| {
        f["input"]["filtered"] == 1
    });

    // Not RTMP at all.
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert!(closed_by_server(&mut s));
    q.wait_flow("f1", Duration::from_secs(10), "garbage counted", |f| {
        f["input"]["malformed"] == 1
    });

    // A chunk size of 2^31-1 right after the handshake.
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    handshake(&mut s);
    let mut m = vec![0x02, 0, 0, 0, 0, 0, 4, 1, 0, 0, 0, 0];
    m.extend_from_slice(&0x7fff_ffffu32.to_be_bytes());
    s.write_all(&m).unwrap();
    assert!(closed_by_server(&mut s));
    // A message header declaring 16 MB on a fresh connection.
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    handshake(&mut s);
    s.write_all(&[0x04, 0, 0, 0, 0xff, 0xff, 0xff, 9, 1, 0, 0, 0])
        .unwrap();
    let _ = s.write_all(&[0u8; 128]);
    assert!(closed_by_server(&mut s));
    let f = q.wait_flow("f1", Duration::from_secs(10), "abuse counted", |f| {
        f["input"]["malformed"] == 3
    });
    assert_eq!(f["input"]["filtered"], 1);
    // Still serving: the right key publishes.
    let out = publish(&format!("rtmp://127.0.0.1:{port}/live/right"), 1);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    q.wait_event("RTMP publisher disconnected", Duration::from_secs(10));
    q.assert_events("RTMP publisher connected", 1);
}

/// H.265 as Enhanced RTMP sends it (`hvc1`: an hvcC, then length-prefixed frames), which
/// FFmpeg 5.1 cannot publish: built here from libx265's Annex B (one access unit delimiter
/// per frame marks the boundaries), remuxed by quoll's `rtmp::remux`, decoded by FFmpeg.
#[test]
fn enhanced_rtmp_hevc_remuxes_to_ts_that_decodes() {
    use quoll::rtmp::chunk::VIDEO;
    use quoll::rtmp::remux::{Fed, Remux};
    require_peers!("ffmpeg", "ffprobe");
    let dir = TempDir::new("rtmp-hevc");
    let es = dir.path().join("in.hevc");
    let status = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y"])
        .args([
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=320x240:rate=25",
            "-t",
            "2",
        ])
        .args(["-c:v", "libx265", "-preset", "ultrafast"])
        .args(["-x265-params", "aud=1:bframes=0:keyint=25:log-level=error"])
        .arg(&es)
        .status()
        .expect("run ffmpeg");
    assert!(status.success());
    let data = std::fs::read(&es).unwrap();
    // NAL units of the Annex B stream (start codes of 3 or 4 bytes).
    let mut starts = Vec::new();
    let mut i = 0;
    while i + 3 <= data.len() {
        if data[i..i + 3] == [0, 0, 1] {
            starts.push(i + 3);
            i += 3;
        } else {
            i += 1;
        }
    }
    let nals: Vec<&[u8]> = starts
        .iter()
        .enumerate()
        .map(|(k, &s)| {
            let end = starts.get(k + 1).map_or(data.len(), |&n| n - 3);
            let nal = &data[s..end];
            // A 4-byte start code leaves its leading zero on the previous unit.
            nal.strip_suffix(&[0]).unwrap_or(nal)
        })
        .collect();
    let kind = |n: &[u8]| (n[0] >> 1) & 0x3f;
    // hvcC: the 23-byte header (only its version and length size are read), then one array
    // per parameter set type.
    let mut hvcc = vec![0u8; 23];
    hvcc[0] = 1;
    hvcc[21] = 0x03;
    let mut arrays = 0;
    for t in [32u8, 33, 34] {
        let sets: Vec<&&[u8]> = nals.iter().filter(|n| kind(n) == t).take(1).collect();
        for s in sets {
            arrays += 1;
            hvcc.extend_from_slice(&[0x80 | t, 0, 1]);
            hvcc.extend_from_slice(&(s.len() as u16).to_be_bytes());
            hvcc.extend_from_slice(s);
        }
    }
    hvcc[22] = arrays;
    let mut tag = vec![0x90];
    tag.extend_from_slice(b"hvc1");
    tag.extend_from_slice(&hvcc);
    let mut r = Remux::new();
    let mut ts = Vec::new();
    assert_eq!(r.feed(VIDEO, 0, &tag, &mut ts), Ok(Fed::Config));
    // Access units: from one delimiter (type 35) to the next; parameter sets are left out
    // as a publisher's frames do (the remuxer puts them back before key frames).
    let mut frames = 0u32;
    for au in nals.split(|n| kind(n) == 35).filter(|au| !au.is_empty()) {
        let key = au.iter().any(|n| (16..=21).contains(&kind(n)));
        let mut tag = vec![if key { 0x93 } else { 0xa3 }];
        tag.extend_from_slice(b"hvc1");
        for n in au.iter().filter(|n| !(32..=34).contains(&kind(n))) {
            tag.extend_from_slice(&(n.len() as u32).to_be_bytes());
            tag.extend_from_slice(n);
        }
        assert_eq!(r.feed(VIDEO, frames * 40, &tag, &mut ts), Ok(Fed::Frame));
        frames += 1;
    }
    assert_eq!(frames, 50);
    assert_eq!(cc_errors(&ts), 0);
    let path = dir.path().join("out.ts");
    std::fs::write(&path, &ts).unwrap();
    let (codecs, errors) = ffprobe_ts(&path);
    assert_eq!(codecs, vec!["hevc"]);
    assert!(errors.is_empty(), "decode errors:\n{errors}");
    // ffprobe_ts leaves the last access unit out.
    assert_eq!(video_frames(&path.with_extension("whole.ts")), 49);
}
