//! `quoll events` against a running and a stopped daemon, and `/healthz` when the event log
//! cannot be written.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use common::*;
use serde_json::{Value, json};

fn config(api_port: u16, data_dir: &Path, in_port: u16, out_port: u16) -> Value {
    node_config(api_port, data_dir, json!([udp_flow(in_port, out_port)]))
}

/// Every file of the data dir with its bytes.
fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().into_string().unwrap(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

#[test]
fn events_are_readable_while_running_and_after_stop_without_touching_files() {
    let dir = TempDir::new("events-console");
    let data = dir.path().join("data");
    let q = Quoll::start(
        dir.path(),
        &config(free_tcp_port(), &data, free_udp_port(), free_udp_port()),
    );
    // While running: the flow's start event becomes durable within the commit delay.
    q.wait_event("Flow 'f1' started", Duration::from_secs(20));
    let running = q.events();
    let started = running
        .iter()
        .find(|r| r["message"] == "Flow 'f1' started")
        .unwrap();
    assert_eq!(started["delivered"], false);
    assert_eq!(started["flow_id"], "f1");
    assert!(started["raised_at"].as_str().unwrap().ends_with('Z'));
    let (code, h) = q.api("GET", "/healthz", None);
    assert_eq!((code, h["status"].as_str()), (200, Some("ok")));
    assert_eq!(h["event_log"]["durable"], true);
    // The data directory quoll created is owner-only, and so is every file in it (the
    // segment, the lock).
    assert_owner_only(&data, 2);

    q.stop();
    assert_owner_only(&data, 2);
    // Stopped: the stop event was flushed on SIGTERM.
    let before = snapshot(&data);
    let stopped = read_events(&data);
    let seqs: Vec<u64> = stopped.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]));
    assert!(
        stopped.iter().any(|r| r["message"] == "Flow 'f1' stopped"),
        "{stopped:?}"
    );
    // The text view: 80 columns, pending marked.
    let out = quoll()
        .args(["events", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.lines().all(|l| l.chars().count() <= 80), "{text}");
    assert!(text.contains("Flow 'f1' started"), "{text}");
    assert!(text.lines().any(|l| l.starts_with('*')), "{text}");
    // --since
    let last = *seqs.last().unwrap();
    let out = quoll()
        .args([
            "events",
            "--json",
            "--since",
            &last.to_string(),
            "--data-dir",
        ])
        .arg(&data)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8(out.stdout).unwrap().lines().count(), 1);
    // Reading changed nothing.
    assert_eq!(before, snapshot(&data));

    // A restart continues the sequence.
    let q = Quoll::start(
        dir.path(),
        &config(free_tcp_port(), &data, free_udp_port(), free_udp_port()),
    );
    q.stop();
    let after = read_events(&data);
    let seqs: Vec<u64> = after.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]));
    assert!(seqs.len() > stopped.len());
}

#[test]
fn an_unwritable_data_dir_degrades_health_but_not_the_node() {
    let dir = TempDir::new("events-degraded");
    // A data dir below a regular file can never be created.
    let blocker = dir.path().join("not-a-dir");
    std::fs::write(&blocker, b"x").unwrap();
    let data = blocker.join("data");
    // No token file can be written there either: the token comes from the config.
    let mut cfg = config(free_tcp_port(), &data, free_udp_port(), free_udp_port());
    cfg["server"]["api_token"] = json!("degraded-node-token-0123");
    let q = Quoll::start(dir.path(), &cfg);
    let (code, h) = q.api("GET", "/healthz", None);
    assert_eq!(code, 200);
    assert_eq!(h["status"], "degraded", "{h}");
    // A monitor without the token sees it too.
    let (code, summary) = http(q.api_port, None, "GET", "/healthz", None);
    assert_eq!(code, 200);
    assert_eq!(
        summary,
        json!({"status": "degraded", "version": env!("CARGO_PKG_VERSION")})
    );
    assert_eq!(h["event_log"]["durable"], false);
    assert_eq!(
        (h["active_flows"].as_u64(), h["total_flows"].as_u64()),
        (Some(1), Some(1))
    );
    let (status, log) = q.terminate();
    assert!(status.success(), "{log}");
}

/// `quoll events --follow` prints what is already there, then each new event as it becomes
/// durable, until it is killed. Bounded: every wait below has a deadline.
#[test]
fn follow_prints_new_events_as_they_become_durable() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    use std::sync::mpsc;

    let dir = TempDir::new("events-follow");
    let data = dir.path().join("data");
    let raise = |run: u64, count: u64| {
        let (run, count) = (run.to_string(), count.to_string());
        raise_events(
            &data,
            &["--run", &run, "--count", &count, "--delay-ms", "5"],
        );
    };
    raise(0, 3);
    let mut follower = quoll()
        .args(["events", "--follow", "--json", "--data-dir"])
        .arg(&data)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn quoll events --follow");
    let (tx, rx) = mpsc::channel();
    let stdout = follower.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let next = |what: &str| -> Value {
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("no line for {what} within 20 s"));
        serde_json::from_str(&line).expect("a JSON line")
    };
    let seen: Vec<Value> = (0..3).map(|i| next(&format!("event {i}"))).collect();
    let runs: Vec<(u64, u64)> = seen
        .iter()
        .map(|r| {
            (
                r["details"]["run"].as_u64().unwrap(),
                r["details"]["n"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(runs, [(0, 0), (0, 1), (0, 2)]);
    // New events, written while it follows, show up, and they are the next lines: nothing
    // was printed again in between (the new lines are the sync point for that absence).
    raise(1, 2);
    let more: Vec<Value> = (0..2).map(|i| next(&format!("new event {i}"))).collect();
    assert_eq!(more[0]["details"]["run"], 1);
    assert_eq!(more[1]["details"]["n"], 1);
    let last = seen.last().unwrap()["seq"].as_u64().unwrap();
    assert!(more[0]["seq"].as_u64().unwrap() > last);
    follower.kill().expect("kill the follower");
    let _ = follower.wait();
    reader.join().unwrap();
}
