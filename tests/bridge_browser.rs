//! A real browser plays a bridge stream: headless Chromium opens a page (served from
//! loopback) that plays `ws://127.0.0.1:PORT/ws/stream/cam` with mpegts.js (vendored in
//! tests/browser/). Through the DevTools protocol the test checks that video frames are
//! decoded and the playback time advances, then saves a screenshot under
//! `target/tmp/bridge-browser.png`.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::{self, Message};

/// Serves the player page and mpegts.js on 127.0.0.1 (one thread, until the process ends).
fn serve_page() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut s) = conn else { continue };
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let mut line = String::new();
            let mut r = BufReader::new(s.try_clone().unwrap());
            if r.read_line(&mut line).is_err() {
                continue;
            }
            // Drain the headers.
            let mut h = String::new();
            while r.read_line(&mut h).map(|n| n > 2).unwrap_or(false) {
                h.clear();
            }
            let path = line.split_whitespace().nth(1).unwrap_or("/");
            let (file, ctype) = if path.starts_with("/mpegts.js") {
                ("mpegts-1.8.2.min.js", "application/javascript")
            } else if path.starts_with("/player.html") {
                ("player.html", "text/html")
            } else {
                let _ = s.write_all(
                    b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
                continue;
            };
            let body = std::fs::read(dir.join(file)).unwrap_or_default();
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = s.write_all(&body);
        }
    });
    port
}

/// Headless Chromium, killed on drop.
struct Browser {
    child: Child,
    devtools_port: u16,
    _profile: TempDir,
}

impl Browser {
    fn start() -> Browser {
        let profile = TempDir::new("chromium");
        let mut child = Command::new("chromium")
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--mute-audio",
                "--autoplay-policy=no-user-gesture-required",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
                "--window-size=800,600",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn chromium");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("DevTools listening on ws://127.0.0.1:").nth(1) {
                    let port: u16 = rest.split('/').next().unwrap_or("0").parse().unwrap_or(0);
                    let _ = tx.send(port);
                }
            }
        });
        let devtools_port = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("chromium did not open its DevTools port");
        Browser {
            child,
            devtools_port,
            _profile: profile,
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// GET a DevTools HTTP endpoint (it keeps connections open: read by Content-Length).
fn devtools_json(port: u16, path: &str) -> Value {
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return Value::Null;
    };
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = write!(s, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n");
    let mut r = BufReader::new(s);
    let mut len = 0usize;
    let mut line = String::new();
    while r.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
        if line == "\r\n" {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().unwrap_or(0);
        }
        line.clear();
    }
    let mut body = vec![0u8; len];
    if r.read_exact(&mut body).is_err() {
        return Value::Null;
    }
    serde_json::from_slice(&body).unwrap_or(Value::Null)
}

/// A DevTools protocol connection to one page.
struct Page {
    ws: tungstenite::WebSocket<std::net::TcpStream>,
    next_id: u64,
}

impl Page {
    fn connect(devtools_port: u16) -> Page {
        let list = wait_for(Duration::from_secs(10), "a page target", || {
            devtools_json(devtools_port, "/json/list")
                .as_array()
                .cloned()
                .and_then(|a| a.into_iter().find(|t| t["type"] == "page"))
        });
        let url = list["webSocketDebuggerUrl"].as_str().unwrap().to_owned();
        let tcp = std::net::TcpStream::connect(("127.0.0.1", devtools_port)).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let (ws, _) = tungstenite::client(url.as_str(), tcp).expect("devtools websocket");
        Page { ws, next_id: 1 }
    }

    fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let msg = json!({"id": id, "method": method, "params": params}).to_string();
        self.ws.send(Message::Text(msg.into())).unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            assert!(Instant::now() < deadline, "no answer to {method}");
            if let Message::Text(t) = self.ws.read().expect("devtools read") {
                let v: Value = serde_json::from_str(&t).unwrap();
                if v["id"] == id {
                    assert!(v.get("error").is_none(), "{method}: {v}");
                    return v["result"].clone();
                }
            }
        }
    }

    fn eval(&mut self, expr: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({"expression": expr, "returnByValue": true}),
        );
        r["result"]["value"].clone()
    }
}

fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0);
    for v in s.bytes().filter_map(val) {
        acc = acc << 6 | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

#[test]
fn chromium_plays_a_camera_through_the_bridge() {
    require_peers!("gst-rtsp-server", "chromium");
    let dir = TempDir::new("bridge-browser");
    let rtsp_port = free_tcp_port();
    let server = RtspServer::start(rtsp_port, &["--size", "640x360"]);
    let api = free_tcp_port();
    // The page comes from another port than the API's: another origin, which the bridge
    // refuses unless it is listed.
    let page_port = serve_page();
    let cfg = json!({
        "version": 1,
        "server": {"listen_addr": "127.0.0.1", "listen_port": api},
        "flows": [],
        "bridge": {"streams": {"cam": {"rtsp_url": server.url}},
                   "allowed_origins": [format!("http://127.0.0.1:{page_port}")]}
    });
    let q = Quoll::start(dir.path(), &cfg);
    let browser = Browser::start();
    let mut page = Page::connect(browser.devtools_port);
    page.call("Page.enable", json!({}));
    // The viewer token, as a page that plays a stream from a non-loopback node has it. It
    // is hex: the only characters of the ws URL to escape inside the page URL are ? and =.
    let token = q.token_file("viewer-token");
    let ws = format!("ws://127.0.0.1:{api}/ws/stream/cam%3Ftoken%3D{token}");
    page.call(
        "Page.navigate",
        json!({"url": format!("http://127.0.0.1:{page_port}/player.html?ws={ws}")}),
    );
    let probe = "(() => { const v = document.getElementById('v'); if (!v || !window.state) return null; \
        return {t: v.currentTime, frames: v.getVideoPlaybackQuality().totalVideoFrames, \
        w: v.videoWidth, h: v.videoHeight, errors: window.state.errors}; })()";
    let first = wait_for(Duration::from_secs(45), "decoded video frames", || {
        let v = page.eval(probe);
        if let Some(e) = v["errors"].as_array()
            && !e.is_empty()
        {
            panic!("player errors: {e:?}");
        }
        (v["frames"].as_u64().unwrap_or(0) >= 10 && v["t"].as_f64().unwrap_or(0.0) > 0.5)
            .then_some(v)
    });
    assert_eq!(first["w"], 640, "{first}");
    assert_eq!(first["h"], 360, "{first}");
    let t0 = first["t"].as_f64().unwrap();
    let f0 = first["frames"].as_u64().unwrap();
    let later = wait_for(Duration::from_secs(30), "playback time advancing", || {
        let v = page.eval(probe);
        (v["t"].as_f64().unwrap_or(0.0) > t0 + 1.5).then_some(v)
    });
    assert!(later["frames"].as_u64().unwrap() > f0 + 20, "{later}");

    let shot = page.call("Page.captureScreenshot", json!({"format": "png"}));
    let png = base64_decode(shot["data"].as_str().unwrap());
    assert_eq!(&png[1..4], b"PNG");
    let out_dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let out_dir = if out_dir.exists() {
        out_dir
    } else {
        std::env::temp_dir()
    };
    let path = out_dir.join("bridge-browser.png");
    std::fs::write(&path, &png).unwrap();
    eprintln!("screenshot: {} ({} bytes)", path.display(), png.len());

    let (_, h) = q.api("GET", "/healthz", None);
    assert_eq!(h["sessions"][0]["clientCount"], 1, "{h}");
    drop(page);
    drop(browser);
    wait_for(
        Duration::from_secs(10),
        "the session ends with the browser",
        || {
            let (_, h) = q.api("GET", "/healthz", None);
            (h["sessions"] == json!([])).then_some(())
        },
    );
}
