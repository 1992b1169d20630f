//! HLS pushed to a real web server: quoll takes a UDP TS from ffmpeg (libx264, a key frame
//! every second) and PUTs segments and the live playlist to Debian's nginx with its WebDAV
//! methods; ffmpeg and ffprobe play them back from nginx. Stopping nginx raises "HLS
//! segment upload failed" once, and uploads resume when it is back. The same playlist is
//! served from memory on the API port, with the API's token.
#![cfg(feature = "hls")]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::json;

/// A child process killed on drop.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// nginx on 127.0.0.1:`port`, accepting PUT and DELETE under `/live/`, and under `/secure/`
/// with basic auth (quoll / pw) and the header `X-Ingest-Token: not-for-logs`; files in
/// `dir/www`.
fn nginx(dir: &Path, port: u16) -> Killed {
    let conf = dir.join("nginx.conf");
    let d = dir.display();
    std::fs::create_dir_all(dir.join("www/live")).unwrap();
    std::fs::write(dir.join("htpasswd"), "quoll:{PLAIN}pw\n").unwrap();
    std::fs::write(
        &conf,
        format!(
            "daemon off;\nmaster_process off;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
             events {{ worker_connections 64; }}\n\
             http {{\n access_log {d}/access.log;\n client_body_temp_path {d}/body;\n\
             proxy_temp_path {d}/proxy;\n fastcgi_temp_path {d}/fastcgi;\n\
             uwsgi_temp_path {d}/uwsgi;\n scgi_temp_path {d}/scgi;\n\
             types {{ application/vnd.apple.mpegurl m3u8; video/mp2t ts; }}\n\
             server {{\n  listen 127.0.0.1:{port};\n  root {d}/www;\n\
             client_max_body_size 64m;\n\
             location /live/ {{ dav_methods PUT DELETE; create_full_put_path on; }}\n\
             location /secure/ {{ dav_methods PUT DELETE; create_full_put_path on;\n\
               auth_basic ingest; auth_basic_user_file {d}/htpasswd;\n\
               if ($http_x_ingest_token != not-for-logs) {{ return 403; }} }}\n }}\n}}\n"
        ),
    )
    .unwrap();
    let child = Command::new("nginx")
        .arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(&conf)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start nginx");
    wait_for(Duration::from_secs(10), "nginx to listen", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    });
    Killed(child)
}

/// A live H.264 + AAC TS to 127.0.0.1:`port`: 25 fps, a key frame every 25 frames exactly.
fn live_source(port: u16) -> Killed {
    let child = Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-loglevel", "error", "-re"])
        .args(["-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25"])
        .args(["-f", "lavfi", "-i", "sine=frequency=1000:sample_rate=48000"])
        .args([
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-tune",
            "zerolatency",
        ])
        .args(["-g", "25", "-keyint_min", "25", "-sc_threshold", "0"])
        .args(["-c:a", "aac", "-b:a", "64k"])
        .args(["-f", "mpegts"])
        .arg(format!("udp://127.0.0.1:{port}?pkt_size=1316"))
        .stdin(Stdio::null())
        .spawn()
        .expect("start ffmpeg");
    Killed(child)
}

/// A playlist as nginx serves it.
#[derive(Debug, Clone)]
struct Playlist {
    target: u64,
    media_sequence: u64,
    /// (duration in seconds, URI)
    segments: Vec<(f64, String)>,
}

fn parse(text: &str) -> Playlist {
    assert!(text.starts_with("#EXTM3U\n"), "not a playlist: {text}");
    let mut p = Playlist {
        target: 0,
        media_sequence: 0,
        segments: Vec::new(),
    };
    let mut extinf = None;
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("#EXT-X-TARGETDURATION:") {
            p.target = v.parse().unwrap();
        } else if let Some(v) = line.strip_prefix("#EXT-X-MEDIA-SEQUENCE:") {
            p.media_sequence = v.parse().unwrap();
        } else if let Some(v) = line.strip_prefix("#EXTINF:") {
            extinf = Some(v.trim_end_matches(',').parse::<f64>().unwrap());
        } else if !line.starts_with('#') && !line.is_empty() {
            p.segments
                .push((extinf.take().expect("EXTINF before a URI"), line.to_owned()));
        }
    }
    p
}

/// The playlist on disk under nginx's root, once it names at least `n` segments past
/// `after` (a media sequence number).
fn wait_playlist(www: &Path, n: usize, after: u64, limit: Duration) -> Playlist {
    wait_for(limit, &format!("{n} segments after #{after}"), || {
        let text = std::fs::read_to_string(www.join("live/f1/index.m3u8")).ok()?;
        let p = parse(&text);
        let newer = p
            .segments
            .iter()
            .enumerate()
            .filter(|(i, _)| p.media_sequence + *i as u64 > after)
            .count();
        (newer >= n).then_some(p)
    })
}

/// Every EXTINF within the target duration; the sequence numbers of the URIs seen so far
/// (`seen`) agree with this playlist's, and run without gaps.
fn check_playlist(p: &Playlist, seen: &mut Vec<(u64, String)>) {
    assert!(p.target >= 2, "target duration {p:?}");
    for (i, (d, uri)) in p.segments.iter().enumerate() {
        assert!(*d <= p.target as f64, "EXTINF {d} over the target in {p:?}");
        let seq = p.media_sequence + i as u64;
        match seen.iter().find(|(s, _)| *s == seq) {
            Some((_, u)) => assert_eq!(u, uri, "sequence {seq} renamed in {p:?}"),
            None => seen.push((seq, uri.clone())),
        }
    }
    seen.sort();
    for w in seen.windows(2) {
        assert_eq!(w[1].0, w[0].0 + 1, "a gap in the media sequence: {seen:?}");
    }
}

/// The first video frame of a segment, as ffprobe reads it from nginx.
fn first_frame_is_key(port: u16, uri: &str) -> bool {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0", "-show_frames"])
        .args([
            "-read_intervals",
            "%+#1",
            "-show_entries",
            "frame=key_frame",
        ])
        .args(["-of", "csv=p=0"])
        .arg(format!("http://127.0.0.1:{port}/live/f1/{uri}"))
        .output()
        .expect("run ffprobe");
    let text = String::from_utf8_lossy(&out.stdout);
    // `key_frame` first, then any side data of the frame.
    let key = text.lines().next().and_then(|l| l.split(',').next()) == Some("1");
    if !key {
        eprintln!(
            "ffprobe {uri}: {text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    key
}

/// "HLS segment upload failed" events of the outputs `h` and `auth`.
fn upload_failures(q: &Quoll) -> [usize; 2] {
    let events = q.events();
    ["h", "auth"].map(|id| {
        events
            .iter()
            .filter(|e| {
                e["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("HLS segment upload failed: "))
                    && e["details"]["output_id"] == id
            })
            .count()
    })
}

#[test]
fn segments_and_playlist_go_to_nginx_and_play_back() {
    require_peers!("ffmpeg", "ffprobe", "nginx");
    let dir = TempDir::new("hls-nginx");
    let web = dir.path().join("nginx");
    std::fs::create_dir_all(&web).unwrap();
    let www: PathBuf = web.join("www");
    let web_port = free_tcp_port();
    let mut server = nginx(&web, web_port);
    let in_port = free_udp_port();
    let q = Quoll::start(
        dir.path(),
        &json!({
            "version": 1,
            "server": { "listen_addr": "127.0.0.1", "listen_port": free_tcp_port() },
            "flows": [{
                "id": "f1", "name": "hls", "enabled": true,
                "input": { "type": "udp", "bind_addr": format!("127.0.0.1:{in_port}") },
                "outputs": [{
                    "type": "hls", "id": "h",
                    "ingest_url": format!("http://127.0.0.1:{web_port}/live/f1/"),
                    "segment_duration_ms": 2000, "playlist_size": 4,
                    "headers": { "X-Ingest-Token": "not-for-logs" }
                }, {
                    "type": "hls", "id": "auth",
                    "ingest_url": format!("http://127.0.0.1:{web_port}/secure/f1/live.m3u8"),
                    "username": "quoll", "password": "pw",
                    "headers": { "X-Ingest-Token": "not-for-logs" }
                }]
            }]
        }),
    );
    let _source = live_source(in_port);

    // Segments, each named once, in order, each starting with a key frame.
    let mut seen = Vec::new();
    let p = wait_playlist(&www, 3, 0, Duration::from_secs(30));
    check_playlist(&p, &mut seen);
    assert_eq!(p.target, 2, "1 s GOPs fill 2 s segments exactly: {p:?}");
    for (_, uri) in &p.segments {
        assert!(
            first_frame_is_key(web_port, uri),
            "{uri} starts without a key frame"
        );
        let url = format!("http://127.0.0.1:{web_port}/live/f1/{uri}");
        expect_clean_decode(&[], &url, &[], uri);
    }
    // The second output's ingest wants the credentials and the header: it got both.
    wait_for(Duration::from_secs(10), "the authenticated upload", || {
        let text = std::fs::read_to_string(www.join("secure/f1/live.m3u8")).ok()?;
        (parse(&text).segments.len() >= 2).then_some(())
    });
    let last = p.media_sequence + p.segments.len() as u64 - 1;
    let p = wait_playlist(&www, 2, last, Duration::from_secs(20));
    check_playlist(&p, &mut seen);
    // Expired segments were deleted: nginx holds about the window.
    let held = std::fs::read_dir(www.join("live/f1")).unwrap().count();
    assert!(held <= 4 + 3, "{held} files left on the ingest");

    // ffmpeg plays the live playlist from nginx.
    let url = format!("http://127.0.0.1:{web_port}/live/f1/index.m3u8");
    expect_clean_decode(&[], &url, &["-t", "3"], "playback");

    // The same live playlist from memory on the API port, with the API's token only.
    let path = "/hls/f1/h/index.m3u8";
    let refused = raw_http(q.api_port, "GET", path, &[("Host", "127.0.0.1")], "");
    assert_eq!(refused.status, 401);
    let auth = format!("Bearer {}", q.token);
    let headers = [("Host", "127.0.0.1"), ("Authorization", auth.as_str())];
    let live = raw_http(q.api_port, "GET", path, &headers, "");
    assert_eq!(live.status, 200, "{live:?}");
    assert_eq!(
        live.header("content-type"),
        Some("application/vnd.apple.mpegurl")
    );
    let mem = parse(&live.body);
    assert!(
        mem.segments.len() >= 3 && mem.segments.len() <= 4,
        "{mem:?}"
    );
    // A segment it names decodes, fetched with the token as a player sends it.
    let url = format!(
        "http://127.0.0.1:{}/hls/f1/h/{}",
        q.api_port,
        mem.segments.last().unwrap().1
    );
    let header = format!("Authorization: {auth}\r\n");
    expect_clean_decode(&["-headers", &header], &url, &[], "segment from memory");
    let missing = raw_http(q.api_port, "GET", "/hls/f1/h/seg-1.ts", &headers, "");
    assert_eq!(missing.status, 404);

    // The ingest goes away: one event, however many PUTs fail.
    let errors_before = q.flow("f1")["outputs"][0]["send_errors"].as_u64().unwrap();
    drop(server);
    q.wait_events("HLS segment upload failed: ", 2, Duration::from_secs(20));
    let events = q.events();
    let event = events
        .iter()
        .find(|e| e["details"]["output_id"] == "h")
        .unwrap();
    assert_eq!(event["severity"], "warning");
    assert_eq!(event["category"], "hls");
    assert_eq!(event["flow_id"], "f1");
    // Each output failed at least twice more since, silently.
    q.wait_flow("f1", Duration::from_secs(30), "more failed PUTs", |f| {
        f["outputs"][0]["send_errors"].as_u64().unwrap() >= errors_before + 3
            && f["outputs"][1]["send_errors"].as_u64().unwrap() >= 3
    });
    assert_eq!(upload_failures(&q), [1, 1], "{}", q.events_text());

    // It comes back: segments flow again, and no second event.
    let before = parse(&std::fs::read_to_string(www.join("live/f1/index.m3u8")).unwrap());
    let last = before.media_sequence + before.segments.len() as u64 - 1;
    server = nginx(&web, web_port);
    let p = wait_playlist(&www, 2, last, Duration::from_secs(40));
    check_playlist(&p, &mut Vec::new());
    for (_, uri) in &p.segments {
        assert!(
            first_frame_is_key(web_port, uri),
            "{uri} starts without a key frame"
        );
    }
    assert_eq!(upload_failures(&q), [1, 1], "{}", q.events_text());
    q.assert_no_event("HLS output failed");
    let from_nginx = raw_http(web_port, "GET", "/live/f1/index.m3u8", &[("Host", "x")], "");
    assert_eq!(from_nginx.status, 200);

    // The header's value is a secret: not in the API's view of the flow, nor in the log.
    let view = q.flow("f1").to_string();
    assert!(!view.contains("not-for-logs"), "{view}");
    assert!(!view.contains("\"pw\""), "{view}");
    let log = q.stop();
    assert!(!log.contains("not-for-logs"));
    drop(server);
}

#[test]
fn an_ingest_outside_the_outbound_allow_list_fails_the_output() {
    require_peers!("ffmpeg");
    let dir = TempDir::new("hls-refused");
    let in_port = free_udp_port();
    // `localhost` is a name: validation cannot check it, the connection attempt does.
    let q = Quoll::start(
        dir.path(),
        &json!({
            "version": 1,
            "server": { "listen_addr": "127.0.0.1", "listen_port": free_tcp_port() },
            "security": { "outbound_allow": ["10.0.0.0/8"] },
            "flows": [{
                "id": "f1", "name": "hls", "enabled": true,
                "input": { "type": "udp", "bind_addr": format!("127.0.0.1:{in_port}") },
                "outputs": [{
                    "type": "hls", "id": "h",
                    "ingest_url": format!("http://localhost:{}/live/", free_tcp_port()),
                    "segment_duration_ms": 1000
                }]
            }]
        }),
    );
    let _source = live_source(in_port);
    let event = q.wait_event("HLS output failed: ", Duration::from_secs(30));
    assert_eq!(event["severity"], "critical");
    assert_eq!(event["details"]["output_id"], "h");
    let message = event["message"].as_str().unwrap();
    assert!(message.contains("security.outbound_allow"), "{message}");
    // It is not an upload failure: nothing was sent.
    q.assert_no_event("HLS segment upload failed");
}

/// ffmpeg reads `url` (after `before`, with `after` before its null output) and decodes it
/// without a single error line.
fn expect_clean_decode(before: &[&str], url: &str, after: &[&str], what: &str) {
    let decode = Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-v", "error"])
        .args(before)
        .args(["-i", url])
        .args(after)
        .args(["-f", "null", "-"])
        .output()
        .expect("run ffmpeg");
    assert!(
        decode.status.success() && decode.stderr.is_empty(),
        "{what} does not decode cleanly: {}",
        String::from_utf8_lossy(&decode.stderr)
    );
}
