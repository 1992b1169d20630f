//! Bridge test helpers shared by tests/bridge_*.rs (included with `#[path]`): the scenario
//! of a GStreamer RTSP server (the camera), quoll with bridge streams or an `rtsp` flow
//! input on it, and the WebSocket viewers; the checks on what a viewer kept.
#![allow(dead_code)]

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

use crate::common::*;

/// The peers of the bridge tests: `require_peers!(RTSP_SERVER, FFPROBE)`.
pub const RTSP_SERVER: &str = "gst-rtsp-server";
pub const FFPROBE: &str = "ffprobe";

/// Quick recovery for the bridge's sessions (restart delay, sweep, idle timeout).
pub const FAST_RECOVERY: &[(&str, &str)] = &[
    ("STREAM_RESTART_DELAY_MS", "300"),
    ("STREAM_SWEEP_INTERVAL_MS", "500"),
    ("STREAM_IDLE_TIMEOUT_MS", "4000"),
];

/// A config with bridge `streams` (and `max_restarts` high enough never to give up).
pub fn bridge_config(api: u16, streams: Value) -> Value {
    json!({
        "version": 1,
        "server": {"listen_addr": "127.0.0.1", "listen_port": api},
        "flows": [],
        "bridge": {"streams": streams, "max_restarts": 100}
    })
}

/// A camera and quoll serving it: `Camera::start(tag, server_args)` then `bridge(streams,
/// env)` (bridge streams made from the camera's URL) or `rtsp_flow(extra)` (flow `cam` with
/// an `rtsp` input and a UDP output to a receiver).
pub struct Camera {
    pub server: RtspServer,
    pub dir: TempDir,
    pub api: u16,
}

/// A started bridge scenario. Fields drop in order: quoll before the camera and the dir.
pub struct Bridge {
    pub q: Quoll,
    pub rx: Option<(std::net::UdpSocket, u16)>,
    pub cam: Camera,
}

impl Camera {
    /// The RTSP server (`tests/support/rtsp_server.py` with `args`) on a free port.
    pub fn start(tag: &str, args: &[&str]) -> Camera {
        Camera {
            server: RtspServer::start(free_tcp_port(), args),
            dir: TempDir::new(tag),
            api: free_tcp_port(),
        }
    }

    /// A camera that asks for `scheme` ("basic", "digest") auth: user `cam`, `password`.
    pub fn with_auth(tag: &str, scheme: &str, password: &str) -> Camera {
        Camera::start(
            tag,
            &["--auth", scheme, "--user", "cam", "--password", password],
        )
    }

    /// quoll (fast recovery) with two bridge streams on the camera: `good` with `password`
    /// and `bad` with `wrong`, each with its `extra` fields (transport, worker).
    pub fn good_and_bad(self, password: &str, good: Value, wrong: &str, bad: Value) -> Bridge {
        let stream = |p: &str, extra: &Value, url: &str| {
            let mut s = json!({"rtsp_url": url, "username": "cam", "password": p});
            for (k, v) in extra.as_object().expect("an object") {
                s[k] = v.clone();
            }
            s
        };
        self.bridge(
            |url| json!({"good": stream(password, &good, url), "bad": stream(wrong, &bad, url)}),
            FAST_RECOVERY,
        )
    }

    /// quoll with the bridge streams `streams(camera_url)`, started with `env`.
    pub fn bridge(self, streams: impl FnOnce(&str) -> Value, env: &[(&str, &str)]) -> Bridge {
        let cfg = bridge_config(self.api, streams(&self.server.url));
        let q = Quoll::start_with_env(self.dir.path(), &cfg, env);
        Bridge {
            q,
            rx: None,
            cam: self,
        }
    }

    /// quoll with flow `cam`: an `rtsp` input on the camera (2 s timeout, 1 s reconnect
    /// delay) and a UDP output to a receiver (`Bridge::rx`); `extra` is merged into the
    /// config (e.g. a bridge stream tapping the flow).
    pub fn rtsp_flow(self, extra: Value) -> Bridge {
        let (rx, out_port) = udp_receiver();
        let mut cfg = json!({
            "version": 1,
            "server": {"listen_addr": "127.0.0.1", "listen_port": self.api},
            "flows": [{
                "id": "cam", "name": "camera", "enabled": true,
                "input": {"type": "rtsp", "rtsp_url": self.server.url, "timeout_secs": 2,
                          "reconnect_delay_secs": 1},
                "outputs": [{"type": "udp", "id": "o", "name": "o",
                             "dest_addr": format!("127.0.0.1:{out_port}")}]
            }]
        });
        for (k, v) in extra.as_object().expect("an object") {
            cfg[k] = v.clone();
        }
        let q = Quoll::start(self.dir.path(), &cfg);
        Bridge {
            q,
            rx: Some((rx, out_port)),
            cam: self,
        }
    }
}

impl Bridge {
    /// A WebSocket viewer of bridge stream `stream` keeping its first `keep` bytes.
    pub fn viewer(&self, stream: &str, keep: usize) -> WsViewer {
        WsViewer::connect(self.cam.api, stream, keep)
    }

    /// The sessions of `/healthz`.
    pub fn sessions(&self) -> Vec<Value> {
        let (status, v) = self.q.api("GET", "/healthz", None);
        assert_eq!(status, 200);
        v["sessions"].as_array().cloned().unwrap_or_default()
    }

    /// The one session.
    pub fn session(&self) -> Value {
        let s = self.sessions();
        assert_eq!(s.len(), 1, "one session: {s:?}");
        s[0].clone()
    }

    /// Waits (bounded) until the session of `stream` has been restarted and reports an
    /// error (a wrong password); returns the error.
    pub fn wait_session_error(&self, stream: &str) -> String {
        wait_for(Duration::from_secs(20), "the session's error", || {
            self.sessions()
                .into_iter()
                .find(|s| s["streamId"] == stream)
                .filter(|s| s["restartCount"].as_u64().unwrap_or(0) >= 1)
                .and_then(|s| s["lastError"].as_str().map(str::to_owned))
        })
    }

    /// Waits (bounded) until every viewer has more than its byte count in `past`.
    pub fn wait_media(&self, what: &str, limit: Duration, past: &[(&WsViewer, u64)]) {
        wait_for(limit, what, || {
            past.iter().all(|(v, n)| v.bytes() > *n).then_some(())
        });
    }

    /// What `v` kept from byte `from` on (a frame boundary: a byte count read while no
    /// media could arrive) demuxes and decodes without an error, with `codecs`.
    pub fn expect_decodes(&self, name: &str, v: &WsViewer, from: u64, codecs: &[&str]) {
        let kept = v.kept.lock().unwrap();
        assert!(
            kept.len() as u64 > from + 50_000,
            "the viewer kept {} bytes, not enough past {from}",
            kept.len()
        );
        let path = self.cam.dir.path().join(name);
        std::fs::write(&path, &kept[from as usize..]).unwrap();
        expect_ts_decodes(&path, codecs);
    }

    /// The receiver of flow `cam`'s output.
    pub fn rx(&self) -> &std::net::UdpSocket {
        &self.rx.as_ref().expect("an rtsp flow").0
    }

    /// Waits (bounded) until `n` events start with `text` (the rtsp flow input's).
    pub fn wait_events(&self, text: &str, n: usize, limit: Duration) {
        self.q.wait_events(text, n, limit);
    }

    /// Stops quoll (asserted clean); returns its log.
    pub fn stop(self) -> String {
        self.q.stop()
    }
}

/// The TS file at `path` has `codecs` and decodes without an error ([`ffprobe_ts`]).
pub fn expect_ts_decodes(path: &Path, codecs: &[&str]) {
    let (got, errors) = ffprobe_ts(path);
    assert_eq!(got, codecs, "ffprobe: {errors}");
    assert!(
        errors.trim().is_empty(),
        "{}: FFmpeg reported errors: {errors}",
        path.display()
    );
}

/// The daemon's first log line that contains `what`, with the seed's four fields
/// (`streamId`, `sessionId`, `pid`, `reason`) asserted present. The first: later ones (a
/// further restart while the camera is still away) may already be there.
pub fn log_line_with_fields(q: &Quoll, what: &str) -> String {
    let log = q.log();
    let line = log
        .lines()
        .find(|l| l.contains(what))
        .unwrap_or_else(|| panic!("no {what:?} line; log:\n{log}"))
        .to_owned();
    assert_fields(&line);
    line
}

/// Every line the bridge logged about a session carries the seed's four fields
/// (docs/bridge.md, "Debugging order").
pub fn assert_session_lines_have_fields(log: &str) {
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(" quoll::bridge"))
        .collect();
    assert!(lines.len() >= 5, "{log}");
    lines.into_iter().for_each(assert_fields);
}

fn assert_fields(line: &str) {
    for field in ["streamId=", "sessionId=", "pid=", "reason="] {
        assert!(line.contains(field), "{field} missing: {line}");
    }
}
