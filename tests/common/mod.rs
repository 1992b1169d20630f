//! Helpers shared by the integration tests.
//!
//! Under cross-testing the test binary runs in qemu-user, and so must the `quoll` binary it
//! spawns: `QUOLL_RUNNER` (e.g. `qemu-aarch64`) is put in front of it. Peers such as ffmpeg
//! stay native host programs.
#![allow(dead_code)]
// `kill(2)` freezes and thaws the RTSP server (SIGSTOP/SIGCONT): a libc call.
#![allow(unsafe_code)]

use std::net::{TcpListener, UdpSocket};
use std::process::Command;

/// The quoll binary under test: the one cargo built, or on a target board where the test
/// binaries run as a Yocto ptest (the build path does not exist there) `$QUOLL_BIN`, else
/// `quoll` from PATH.
fn quoll_bin() -> String {
    if let Ok(b) = std::env::var("QUOLL_BIN") {
        return b;
    }
    let built = env!("CARGO_BIN_EXE_quoll");
    if std::path::Path::new(built).exists() {
        built.to_owned()
    } else {
        "quoll".to_owned()
    }
}

/// A `Command` for the quoll binary under test.
pub fn quoll() -> Command {
    let bin = quoll_bin();
    match std::env::var("QUOLL_RUNNER") {
        Ok(runner) if !runner.trim().is_empty() => {
            let mut parts = runner.split_whitespace();
            let mut c = Command::new(parts.next().unwrap_or("qemu-aarch64"));
            c.args(parts).arg(&bin);
            c
        }
        _ => Command::new(&bin),
    }
}

/// A UDP port on 127.0.0.1 that was free a moment ago.
pub fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral UDP port")
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_tcp_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral TCP port")
}

/// Skip the test (return) when a peer it needs is missing, unless `QUOLL_REQUIRE_PEERS` is
/// set (CI sets it), where a missing peer fails the test instead. The arguments are peer
/// names as [`peers_present`] takes them: programs on PATH (`"ffmpeg"`,
/// `"srt-live-transmit"`, `"chromium"`) and `"gst-rtsp-server"` (GStreamer's RTSP server
/// through python3-gi).
#[macro_export]
macro_rules! require_peers {
    ($($peer:expr),+ $(,)?) => {
        if !$crate::common::peers_present(&[$($peer),+]) {
            return;
        }
    };
}

/// Whether every peer in `names` is there (see [`require_peers!`]); each missing one is
/// reported (or, with `QUOLL_REQUIRE_PEERS`, fails the test).
pub fn peers_present(names: &[&str]) -> bool {
    names.iter().all(|&n| {
        if n == "gst-rtsp-server" {
            have_rtsp_server()
        } else {
            have_peer(n)
        }
    })
}

/// Whether a peer program is on PATH; tests that need it say so and skip only when
/// `QUOLL_REQUIRE_PEERS` is unset (CI sets it, so a missing peer fails there).
pub fn have_peer(name: &str) -> bool {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {name}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    peer_found(found, &format!("peer program '{name}' (on PATH)"))
}

/// `found`, after reporting a missing peer `what`: a failure when `QUOLL_REQUIRE_PEERS` is
/// set, else a "skipping" line.
fn peer_found(found: bool, what: &str) -> bool {
    if !found {
        assert!(
            std::env::var_os("QUOLL_REQUIRE_PEERS").is_none(),
            "{what} is required (QUOLL_REQUIRE_PEERS is set) but missing"
        );
        eprintln!("skipping: {what} is missing");
    }
    found
}

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A scratch directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("quoll-test-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running `quoll run`, killed on drop.
pub struct Quoll {
    child: Option<Child>,
    pub api_port: u16,
    /// The daemon's `storage.data_dir` (the token files are there).
    pub data_dir: PathBuf,
    /// The API token: `server.api_token` of the config, else what the daemon wrote to
    /// `<data_dir>/api-token` at its first start. `api` sends it.
    pub token: String,
    log: Arc<Mutex<Vec<String>>>,
}

impl Quoll {
    /// Start `quoll run --config <dir>/config.json` and wait (bounded) for its ready line.
    pub fn start(dir: &Path, config: &serde_json::Value) -> Quoll {
        Self::start_with_env(dir, config, &[])
    }

    /// `start` with extra environment variables for the daemon.
    pub fn start_with_env(dir: &Path, config: &serde_json::Value, env: &[(&str, &str)]) -> Quoll {
        let path = dir.join("config.json");
        // Every test daemon keeps its state in its own scratch dir: never in the checkout,
        // and never shared (one daemon per data dir).
        let mut config = config.clone();
        if config["storage"]["data_dir"].is_null() {
            config["storage"]["data_dir"] = dir.join("data").to_string_lossy().into();
        }
        let config = &config;
        std::fs::write(&path, serde_json::to_vec_pretty(config).unwrap()).unwrap();
        let api_port = config["server"]["listen_port"]
            .as_u64()
            .expect("listen_port") as u16;
        let data_dir = PathBuf::from(config["storage"]["data_dir"].as_str().expect("data_dir"));
        let mut child = quoll()
            .arg("run")
            .arg("--config")
            .arg(&path)
            .env("NO_COLOR", "1")
            // Each test daemon its own control socket (quoll ctl finds it the same way).
            .env("QUOLL_RUNTIME_DIR", dir.join("run"))
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn quoll");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("quoll ready") {
                    let _ = tx.send(());
                }
                sink.lock().unwrap().push(line);
            }
        });
        let mut q = Quoll {
            child: Some(child),
            api_port,
            data_dir,
            token: String::new(),
            log,
        };
        if rx.recv_timeout(Duration::from_secs(30)).is_err() {
            panic!("quoll did not become ready; log:\n{}", q.log());
        }
        // The token files are written before the daemon says it is ready. A data dir that
        // cannot be written has none: then the API refuses every request (a test of such a
        // node sets server.api_token).
        q.token = match config["server"]["api_token"].as_str() {
            Some(t) => t.to_owned(),
            None => std::fs::read_to_string(q.data_dir.join("api-token"))
                .map(|t| t.trim().to_owned())
                .unwrap_or_default(),
        };
        q
    }

    /// A token file of the daemon's data dir (`api-token`, `viewer-token`), trimmed.
    pub fn token_file(&self, name: &str) -> String {
        let path = self.data_dir.join(name);
        std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("read {}: {e}; log:\n{}", path.display(), self.log()))
            .trim()
            .to_owned()
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// One HTTP/1.1 request to the local API with the API token; returns status and parsed
    /// JSON body.
    pub fn api(&self, method: &str, path: &str, body: Option<&str>) -> (u16, serde_json::Value) {
        http(self.api_port, Some(&self.token), method, path, body)
    }

    /// `GET /api/v1/flows/{id}`, asserted 200.
    pub fn flow(&self, id: &str) -> serde_json::Value {
        let (code, f) = self.api("GET", &format!("/api/v1/flows/{id}"), None);
        assert_eq!(code, 200, "GET flow {id}: {f}");
        f
    }

    /// Poll `/api/v1/flows/{id}` until `at(flow)` (a counter, a state) holds; returns the
    /// flow that satisfied it, or panics with `what` and the log after `limit`.
    pub fn wait_flow(
        &self,
        id: &str,
        limit: Duration,
        what: &str,
        mut at: impl FnMut(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let mut last = serde_json::Value::Null;
        let ok = poll(limit, || {
            last = self.flow(id);
            at(&last).then_some(())
        });
        if ok.is_none() {
            panic!(
                "timed out waiting for {what}; flow {id}: {last}\nlog:\n{}",
                self.log()
            );
        }
        last
    }

    /// Every event record on disk, as `quoll events --json --data-dir` prints them, once the
    /// log has made everything raised so far durable (`/healthz` `event_log.durable_seq`
    /// caught up with `next_seq`): a read after a sync point sees every event raised before
    /// it. A stopped daemon's records are read as they are.
    pub fn events(&self) -> Vec<serde_json::Value> {
        if self.child.is_some() {
            let caught_up = poll(Duration::from_secs(10), || {
                let (code, h) = self.api("GET", "/healthz", None);
                let log = &h["event_log"];
                let next = log["next_seq"].as_u64()?;
                (code == 200 && log["durable_seq"].as_u64()? + 1 >= next).then_some(())
            });
            assert!(
                caught_up.is_some(),
                "the event log never caught up; log:\n{}",
                self.log()
            );
        }
        read_events(&self.data_dir)
    }

    /// How many events say something that starts with `text`.
    pub fn count_events(&self, text: &str) -> usize {
        count_matching(&self.events(), None, text)
    }

    /// How many events of flow `flow` start with `text`.
    pub fn count_flow_events(&self, flow: &str, text: &str) -> usize {
        count_matching(&self.events(), Some(flow), text)
    }

    /// Wait (bounded) until at least `n` events start with `text`; returns the newest.
    pub fn wait_events(&self, text: &str, n: usize, limit: Duration) -> serde_json::Value {
        let found = poll(limit, || {
            let matching: Vec<_> = self
                .events()
                .into_iter()
                .filter(|e| message_starts(e, text))
                .collect();
            (matching.len() >= n).then(|| matching.last().cloned())?
        });
        found.unwrap_or_else(|| {
            panic!(
                "timed out waiting for {n} event(s) {text:?}; events:\n{}\nlog:\n{}",
                self.events_text(),
                self.log()
            )
        })
    }

    /// [`wait_events`](Self::wait_events) for the first one.
    pub fn wait_event(&self, text: &str, limit: Duration) -> serde_json::Value {
        self.wait_events(text, 1, limit)
    }

    /// Exactly `n` events start with `text` (call it after a sync point: a later event seen,
    /// or a counter that moves in the same step as the event would be raised).
    pub fn assert_events(&self, text: &str, n: usize) {
        let got = count_matching(&self.events(), None, text);
        assert_eq!(
            got,
            n,
            "events {text:?}; all events:\n{}\nlog:\n{}",
            self.events_text(),
            self.log()
        );
    }

    /// No event starts with `text` (see [`assert_events`](Self::assert_events)).
    pub fn assert_no_event(&self, text: &str) {
        self.assert_events(text, 0);
    }

    /// The events, one `seq flow message` line each, for failure messages.
    pub fn events_text(&self) -> String {
        events_text(&read_events(&self.data_dir))
    }

    /// Wait (bounded) until the process log holds `needle` at least `n` times from byte
    /// `mark` on (`log().len()` taken earlier). For what is only a log line, such as a
    /// debug-level retry, never for events (see [`wait_events`](Self::wait_events)).
    pub fn wait_log(&self, needle: &str, n: usize, mark: usize, limit: Duration) {
        let ok = poll(limit, || {
            let log = self.log();
            (log.get(mark..).unwrap_or("").matches(needle).count() >= n).then_some(())
        });
        assert!(
            ok.is_some(),
            "timed out waiting for {n} x {needle:?}; log:\n{}",
            self.log()
        );
    }

    /// SIGTERM, then wait (bounded) for the exit, asserted clean; returns the log.
    pub fn stop(self) -> String {
        let (status, log) = self.terminate();
        assert!(status.success(), "quoll exited with {status}; log:\n{log}");
        log
    }

    /// [`stop`](Self::stop), then every event record the daemon left on disk.
    pub fn stop_events(self) -> Vec<serde_json::Value> {
        let data_dir = self.data_dir.clone();
        self.stop();
        read_events(&data_dir)
    }

    /// SIGTERM, then wait (bounded) for the exit.
    pub fn terminate(mut self) -> (ExitStatus, String) {
        let mut child = self.child.take().unwrap();
        unsafe_kill(child.id(), "TERM");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                // Let the reader thread drain the last lines.
                std::thread::sleep(Duration::from_millis(50));
                return (status, self.log());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("quoll did not stop on SIGTERM; log:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Quoll {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn unsafe_kill(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status();
}

/// Minimal HTTP/1.1 client for the tests (Connection: close, whole body read), as a
/// script would call the API: `Host: 127.0.0.1`, a JSON body, the bearer token if given.
pub fn http(
    port: u16,
    token: Option<&str>,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> (u16, serde_json::Value) {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("Host", "127.0.0.1"), ("Content-Type", "application/json")];
    if let Some(a) = &auth {
        headers.push(("Authorization", a));
    }
    let r = raw_http(port, method, path, &headers, body.unwrap_or(""));
    (r.status, r.json())
}

/// A response as `raw_http` read it.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    /// Header names lowercased, in the order sent.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// One request with exactly the given headers (and `Content-Length` when there is a body,
/// `Connection: close` unless `headers` say otherwise), to 127.0.0.1:`port`. Reads the head and then `Content-Length` bytes, so it also returns
/// on a `101 Switching Protocols` (whose connection stays open).
pub fn raw_http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> RawResponse {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to API");
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() || matches!(method, "POST" | "PUT" | "PATCH") {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    if !headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("connection"))
    {
        req.push_str("Connection: close\r\n");
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).unwrap();
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line).expect("read the status line");
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("bad HTTP response: {line:?}"));
    let mut headers = Vec::new();
    loop {
        line.clear();
        if r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
    }
    let len: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).expect("read the body");
    RawResponse {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

/// A UDP receiver on 127.0.0.1 with a large buffer.
pub fn udp_receiver() -> (UdpSocket, u16) {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).unwrap();
    let _ = s.set_recv_buffer_size(8 << 20);
    s.bind(
        &"127.0.0.1:0"
            .parse::<std::net::SocketAddr>()
            .unwrap()
            .into(),
    )
    .unwrap();
    let s: UdpSocket = s.into();
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let port = s.local_addr().unwrap().port();
    (s, port)
}

/// Receive datagrams until `done(datagrams)` says so or `limit` passes.
pub fn receive_until(
    s: &UdpSocket,
    limit: Duration,
    mut done: impl FnMut(&[Vec<u8>]) -> bool,
) -> Vec<Vec<u8>> {
    let deadline = Instant::now() + limit;
    let mut got = Vec::new();
    let mut buf = vec![0u8; 65536];
    while Instant::now() < deadline && !done(&got) {
        if let Ok(n) = s.recv(&mut buf) {
            got.push(buf[..n].to_vec());
        }
    }
    got
}

/// Generate a short H.264 + AAC test TS with ffmpeg; returns its path.
pub fn make_test_ts(dir: &Path, secs: u32) -> PathBuf {
    let out = dir.join("source.ts");
    let status = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y"])
        .args(["-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25"])
        .args(["-f", "lavfi", "-i", "sine=frequency=1000:sample_rate=48000"])
        .args(["-t", &secs.to_string()])
        .args([
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-g",
            "25",
            "-c:a",
            "aac",
            "-b:a",
            "64k",
        ])
        .args(["-f", "mpegts", "-muxrate", "1000000"])
        .arg(&out)
        .status()
        .expect("run ffmpeg");
    assert!(
        status.success(),
        "ffmpeg could not generate the test stream"
    );
    out
}

/// MD5-free checksum for comparisons in tests (FNV-1a 64 over the bytes).
pub fn checksum(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Python with GStreamer's introspection bindings (Debian's, not a pyenv shim).
pub fn gst_python() -> String {
    std::env::var("QUOLL_GST_PYTHON").unwrap_or_else(|_| "/usr/bin/python3".to_owned())
}

/// Whether the GStreamer RTSP test server can run here (see `have_peer`).
pub fn have_rtsp_server() -> bool {
    let ok = Command::new(gst_python())
        .args([
            "-c",
            "import gi; gi.require_version('GstRtspServer', '1.0'); from gi.repository import GstRtspServer",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    peer_found(
        ok,
        "the GStreamer RTSP server (python3-gi, gir1.2-gst-rtsp-server-1.0)",
    )
}

/// `tests/support/rtsp_server.py` on 127.0.0.1, killed on drop (thawed first if frozen).
pub struct RtspServer {
    child: Option<Child>,
    pub port: u16,
    pub url: String,
    args: Vec<String>,
    frozen: bool,
}

impl RtspServer {
    pub fn start(port: u16, args: &[&str]) -> RtspServer {
        let mut s = RtspServer {
            child: None,
            port,
            url: String::new(),
            args: args.iter().map(|s| s.to_string()).collect(),
            frozen: false,
        };
        s.restart();
        s
    }

    /// (Re)start on the same port, waiting (bounded) for its READY line.
    pub fn restart(&mut self) {
        self.kill();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/rtsp_server.py");
        let mut child = Command::new(gst_python())
            .arg(script)
            .arg("--port")
            .arg(self.port.to_string())
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn rtsp_server.py");
        let stdout = child.stdout.take().unwrap();
        self.child = Some(child);
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("READY ") {
                    let _ = tx.send(url.to_owned());
                }
            }
        });
        self.url = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("rtsp_server.py did not get ready");
    }

    /// Kill it (SIGKILL) and reap it. A frozen server is killed too (SIGKILL ends a
    /// stopped process) and sent SIGCONT anyway, so nothing is left stopped.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            if std::mem::take(&mut self.frozen) {
                let _ = signal(c.id(), libc::SIGCONT);
            }
            let _ = c.wait();
        }
    }

    /// Freeze the server (SIGSTOP): a camera that hangs with its connections open. The
    /// kernel still accepts TCP connections into the listen backlog, but nothing answers
    /// and no media flows until [`thaw`](Self::thaw). Dropping a frozen server kills it.
    pub fn freeze(&mut self) {
        let c = self.child.as_ref().expect("the server runs");
        signal(c.id(), libc::SIGSTOP).expect("SIGSTOP the RTSP server");
        self.frozen = true;
    }

    /// Let a frozen server run again (SIGCONT).
    pub fn thaw(&mut self) {
        if let Some(c) = &self.child
            && std::mem::take(&mut self.frozen)
        {
            signal(c.id(), libc::SIGCONT).expect("SIGCONT the RTSP server");
        }
    }
}

/// `kill(pid, sig)` on a child we spawned (and have not reaped, so the pid is still ours).
fn signal(pid: u32, sig: libc::c_int) -> std::io::Result<()> {
    // SAFETY: kill(2) takes plain integers and touches no memory of ours.
    if unsafe { libc::kill(pid as libc::pid_t, sig) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

impl Drop for RtspServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `quoll events --json --data-dir <data_dir>`: every record on disk.
pub fn read_events(data_dir: &Path) -> Vec<serde_json::Value> {
    let out = quoll()
        .args(["events", "--json", "--data-dir"])
        .arg(data_dir)
        .stdin(Stdio::null())
        .output()
        .expect("run quoll events");
    assert!(
        out.status.success(),
        "quoll events failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn message_starts(e: &serde_json::Value, text: &str) -> bool {
    e["message"].as_str().is_some_and(|m| m.starts_with(text))
}

/// Events whose message starts with `text` (and of flow `flow`, if given).
pub fn count_matching(events: &[serde_json::Value], flow: Option<&str>, text: &str) -> usize {
    events
        .iter()
        .filter(|e| message_starts(e, text) && flow.is_none_or(|f| e["flow_id"] == f))
        .count()
}

/// One `seq [flow] message` line per event.
pub fn events_text(events: &[serde_json::Value]) -> String {
    events
        .iter()
        .map(|e| {
            format!(
                "{} [{}] {}",
                e["seq"],
                e["flow_id"].as_str().unwrap_or("-"),
                e["message"].as_str().unwrap_or("")
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Poll `f` every 50 ms until it gives `Some`, or give `None` after `limit`.
pub fn poll<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(t) = f() {
            return Some(t);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Poll `f` until it gives `Some`, or panic with `what` after `limit`.
pub fn wait_for<T>(limit: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(t) = f() {
            return t;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A WebSocket viewer of `ws://127.0.0.1:{port}/ws/stream/{id}` on its own thread: counts
/// the bytes it receives and keeps the first `keep` of them.
pub struct WsViewer {
    pub bytes: Arc<std::sync::atomic::AtomicU64>,
    pub frames: Arc<std::sync::atomic::AtomicU64>,
    pub kept: Arc<Mutex<Vec<u8>>>,
    pub closed: Arc<std::sync::atomic::AtomicBool>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl WsViewer {
    pub fn connect(port: u16, stream: &str, keep: usize) -> WsViewer {
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        use tokio_tungstenite::tungstenite::{self, Message};
        let tcp = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        // The handshake gets a generous deadline (a node under QEMU answers in hundreds of
        // milliseconds); the short timeout afterwards only lets the reader notice `stop`.
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let url = format!("ws://127.0.0.1:{port}/ws/stream/{stream}");
        let (mut ws, resp) = tungstenite::client(url.as_str(), tcp).expect("websocket handshake");
        assert_eq!(resp.status(), 101);
        ws.get_ref()
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let bytes = Arc::new(AtomicU64::new(0));
        let frames = Arc::new(AtomicU64::new(0));
        let kept = Arc::new(Mutex::new(Vec::new()));
        let closed = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let (b, f, k, c, s) = (
            bytes.clone(),
            frames.clone(),
            kept.clone(),
            closed.clone(),
            stop.clone(),
        );
        let thread = std::thread::spawn(move || {
            loop {
                if s.load(Ordering::Relaxed) {
                    let _ = ws.close(None);
                    let _ = ws.flush();
                    break;
                }
                match ws.read() {
                    Ok(Message::Binary(d)) => {
                        assert_eq!(d.len() % 188, 0, "frames carry whole TS packets");
                        b.fetch_add(d.len() as u64, Ordering::Relaxed);
                        f.fetch_add(1, Ordering::Relaxed);
                        let mut k = k.lock().unwrap();
                        if k.len() < keep {
                            let n = (keep - k.len()).min(d.len());
                            k.extend_from_slice(&d[..n]);
                        }
                    }
                    Ok(Message::Close(_)) | Err(tungstenite::Error::ConnectionClosed) => {
                        c.store(true, Ordering::Relaxed);
                        break;
                    }
                    Ok(_) => {}
                    Err(tungstenite::Error::Io(e))
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) => {}
                    Err(_) => {
                        c.store(true, Ordering::Relaxed);
                        break;
                    }
                }
            }
        });
        WsViewer {
            bytes,
            frames,
            kept,
            closed,
            stop,
            thread: Some(thread),
        }
    }

    pub fn bytes(&self) -> u64 {
        self.bytes.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Close from our side and wait for the thread.
    pub fn close(mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for WsViewer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// ffprobe's verdict on a TS file: the codec names (ffprobe), and every error FFmpeg prints
/// while demuxing and decoding the whole file (`ffmpeg -v error -i FILE -f null -`), plus
/// ffprobe's own. Empty errors mean every packet of every stream decoded.
///
/// A viewer's capture stops wherever its byte budget ran out, mid-PES: the file is cut
/// before the last packet that starts a payload unit (both muxers write each PES
/// contiguously), so the last frame is whole or absent, never decoded truncated.
pub fn ffprobe_ts(path: &Path) -> (Vec<String>, String) {
    let data = std::fs::read(path).expect("read the TS file");
    let whole = trim_to_whole_units(&data);
    let cut = path.with_extension("whole.ts");
    std::fs::write(&cut, whole).unwrap();
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "stream=codec_name",
            "-of",
            "json",
        ])
        .arg(&cut)
        .output()
        .expect("run ffprobe");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let codecs = v["streams"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s["codec_name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let mut errors = String::from_utf8_lossy(&out.stderr).into_owned();
    let decode = Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-v", "error", "-i"])
        .arg(&cut)
        .args(["-f", "null", "-"])
        .output()
        .expect("run ffmpeg");
    errors.push_str(&String::from_utf8_lossy(&decode.stderr));
    if !decode.status.success() {
        errors.push_str(&format!("ffmpeg -f null failed: {}\n", decode.status));
    }
    assert!(
        whole.len() >= data.len() / 2,
        "most of the capture is whole units ({} of {} bytes)",
        whole.len(),
        data.len()
    );
    (codecs, errors)
}

/// `ts` up to (not including) its last packet with payload_unit_start_indicator set, and
/// whole 188-byte packets only.
pub fn trim_to_whole_units(ts: &[u8]) -> &[u8] {
    let whole = &ts[..ts.len() / 188 * 188];
    let last_start = whole
        .chunks(188)
        .rposition(|p| p[0] == 0x47 && p[1] & 0x40 != 0)
        .unwrap_or(0);
    &whole[..last_start * 188]
}

/// A TCP connection to `127.0.0.1:port` from `source`, another loopback address
/// (`127.0.0.2`): a second client as the node's per-source limits see it.
pub fn connect_from(source: &str, port: u16) -> TcpStream {
    try_connect_from(source, port).expect("connect")
}

/// [`connect_from`] that may fail: a flood's connection that the node refuses can be reset
/// before `connect` returns (seen under emulation), which is the refusal, not an error.
pub fn try_connect_from(source: &str, port: u16) -> std::io::Result<TcpStream> {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    let src: std::net::SocketAddr = format!("{source}:0").parse().unwrap();
    s.bind(&src.into())?;
    let dst: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    s.connect(&dst.into())?;
    Ok(s.into())
}

/// A node config: the API on 127.0.0.1:`api_port`, the event log (and tokens) in
/// `data_dir`, and `flows`.
pub fn node_config(api_port: u16, data_dir: &Path, flows: serde_json::Value) -> serde_json::Value {
    serde_json::json!({
        "version": 1,
        "server": { "listen_addr": "127.0.0.1", "listen_port": api_port },
        "storage": { "data_dir": data_dir },
        "flows": flows
    })
}

/// Flow `f1`: a UDP input on `in_port`, a UDP output `o1` to `out_port`.
pub fn udp_flow(in_port: u16, out_port: u16) -> serde_json::Value {
    serde_json::json!({
        "id": "f1", "name": "test", "enabled": true,
        "input": { "type": "udp", "bind_addr": format!("127.0.0.1:{in_port}") },
        "outputs": [{ "type": "udp", "id": "o1", "dest_addr": format!("127.0.0.1:{out_port}") }]
    })
}

/// `quoll debug-raise-events --data-dir <data> <args>`, asserted successful.
pub fn raise_events(data: &Path, args: &[&str]) {
    let out = quoll()
        .args(["debug-raise-events", "--data-dir"])
        .arg(data)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run quoll debug-raise-events");
    assert!(out.status.success(), "{out:?}");
}

/// `quoll ctl <args>` against the daemon whose runtime dir is `run_dir`: exit code, stdout,
/// stderr.
pub fn ctl_output(run_dir: &Path, args: &[&str]) -> (i32, String, String) {
    let o = quoll()
        .arg("ctl")
        .args(args)
        .env("QUOLL_RUNTIME_DIR", run_dir)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .expect("run quoll ctl");
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// A file's permission bits.
pub fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

/// The data dir is 0700 and each of its files (at least `files` of them) 0600.
pub fn assert_owner_only(data: &Path, files: usize) {
    assert_eq!(mode(data), 0o700, "{}", data.display());
    let mut n = 0;
    for e in std::fs::read_dir(data).unwrap() {
        let p = e.unwrap().path();
        assert_eq!(mode(&p), 0o600, "{}", p.display());
        n += 1;
    }
    assert!(n >= files, "{n} files in {}", data.display());
}

/// A datagram of 7 TS packets on PID 0x100 whose first payload bytes carry `n`, with the
/// continuity counter counting on (so the analyzer sees a clean stream).
pub fn numbered_datagram(n: u32) -> Vec<u8> {
    let mut d = vec![0xFFu8; 1316];
    for (i, p) in d.chunks_mut(188).enumerate() {
        p[..4].copy_from_slice(&[0x47, 0x01, 0x00, 0x10 | ((n as usize * 7 + i) & 0x0F) as u8]);
        p[4..8].copy_from_slice(&n.to_be_bytes());
    }
    d
}

/// The number a [`numbered_datagram`] carries.
pub fn seq_of(d: &[u8]) -> u32 {
    u32::from_be_bytes([d[4], d[5], d[6], d[7]])
}

/// Sends numbered datagrams to 127.0.0.1:`port`, one every `every`, until `stop`; the
/// thread returns how many it sent.
pub fn numbered_sender(
    port: u16,
    every: Duration,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<u32> {
    std::thread::spawn(move || {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut n = 0u32;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let _ = s.send_to(&numbered_datagram(n), ("127.0.0.1", port));
            n += 1;
            // Pacing the source, not waiting for anything.
            std::thread::sleep(every);
        }
        n
    })
}
