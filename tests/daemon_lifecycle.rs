//! `quoll run` as a service. Under a fake systemd (a Unix datagram socket as
//! `NOTIFY_SOCKET`) it sends `READY=1` only once the flows run, then `WATCHDOG=1` at half of
//! `WATCHDOG_USEC` with a `STATUS=` line, and `STOPPING=1` on SIGTERM. And one daemon per
//! data dir.

mod common;

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use common::{Quoll, TempDir, free_tcp_port, free_udp_port};
use serde_json::json;

/// Datagrams received until `done` says stop, or the deadline.
fn collect_until(
    rx: &UnixDatagram,
    within: Duration,
    mut done: impl FnMut(&[String]) -> bool,
) -> Vec<String> {
    rx.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let deadline = Instant::now() + within;
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while Instant::now() < deadline && !done(&got) {
        if let Ok(n) = rx.recv(&mut buf) {
            got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    got
}

#[test]
fn ready_after_flows_start_then_watchdog_pings_then_stopping() {
    let dir = TempDir::new("notify");
    let sock = dir.path().join("notify.sock");
    let rx = UnixDatagram::bind(&sock).unwrap();
    let config = json!({
        "version": 1,
        "server": { "listen_addr": "127.0.0.1", "listen_port": free_tcp_port() },
        "storage": { "data_dir": dir.path().join("data") },
        "flows": [{
            "id": "f1", "name": "f1",
            "input": { "type": "udp", "bind_addr": format!("127.0.0.1:{}", free_udp_port()) },
            "outputs": [{ "type": "udp", "id": "o1",
                          "dest_addr": format!("127.0.0.1:{}", free_udp_port()) }]
        }]
    });
    // WatchdogSec=1s: a ping every 500 ms (slow enough for qemu).
    let q = Quoll::start_with_env(
        dir.path(),
        &config,
        &[
            ("NOTIFY_SOCKET", sock.to_str().unwrap()),
            ("WATCHDOG_USEC", "1000000"),
        ],
    );
    let got = collect_until(&rx, Duration::from_secs(30), |m| {
        m.iter().filter(|s| s.as_str() == "WATCHDOG=1").count() >= 3
    });
    let ready = got
        .iter()
        .position(|m| m.starts_with("READY=1\n"))
        .unwrap_or_else(|| panic!("no READY=1 in {got:?}"));
    assert_eq!(ready, 0, "READY=1 comes first: {got:?}");
    assert!(
        got[0].contains("STATUS=ok: 1/1 flows running"),
        "READY carries the summary once the flow runs: {got:?}"
    );
    assert!(
        got[1..].iter().filter(|m| *m == "WATCHDOG=1").count() >= 3,
        "{got:?}"
    );
    // The flow really is running when READY said so.
    let (code, health) = q.api("GET", "/healthz", None);
    assert_eq!(code, 200);
    assert_eq!(health["active_flows"], 1);

    let (status, log) = q.terminate();
    assert!(status.success(), "{log}");
    let tail = collect_until(&rx, Duration::from_secs(5), |m| {
        m.iter().any(|s| s.starts_with("STOPPING=1"))
    });
    assert!(
        tail.iter().any(|m| m.starts_with("STOPPING=1")),
        "no STOPPING=1 after SIGTERM: {tail:?}"
    );
}

#[test]
fn without_notify_socket_nothing_changes() {
    let dir = TempDir::new("notify-none");
    let config = json!({
        "version": 1,
        "server": { "listen_addr": "127.0.0.1", "listen_port": free_tcp_port() },
        "storage": { "data_dir": dir.path().join("data") },
        "flows": []
    });
    let q = Quoll::start_with_env(dir.path(), &config, &[("NOTIFY_SOCKET", "not/absolute")]);
    let (code, _) = q.api("GET", "/healthz", None);
    assert_eq!(code, 200);
    let (status, log) = q.terminate();
    assert!(status.success());
    assert!(
        log.contains("systemd notifications disabled"),
        "a broken NOTIFY_SOCKET is reported: {log}"
    );
}

#[test]
fn a_second_daemon_on_the_same_data_dir_is_refused() {
    let dir = TempDir::new("lock");
    let config = json!({
        "version": 1,
        "server": { "listen_addr": "127.0.0.1", "listen_port": free_tcp_port() },
        "storage": { "data_dir": dir.path().join("data") },
        "flows": []
    });
    let first = Quoll::start(dir.path(), &config);
    let mut second = config.clone();
    second["server"]["listen_port"] = json!(free_tcp_port());
    let path = dir.path().join("second.json");
    std::fs::write(&path, second.to_string()).unwrap();
    let out = common::quoll()
        .args(["run", "--config"])
        .arg(&path)
        .env("QUOLL_RUNTIME_DIR", dir.path().join("run2"))
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("in use by another quoll"), "{err}");
    let (status, _) = first.terminate();
    assert!(status.success());
}
