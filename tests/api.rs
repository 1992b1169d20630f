//! The local HTTP API against a running quoll: flow lifecycle, hot-add / hot-remove of
//! outputs under a live stream, and errors as JSON with the right codes.

mod common;

use std::net::UdpSocket;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use common::*;
use serde_json::json;

/// Numbered datagrams to `port` at ~2000/s until stopped; returns how many were sent.
fn sender(port: u16, stop: Arc<AtomicBool>) -> thread::JoinHandle<u32> {
    numbered_sender(port, Duration::from_micros(500), stop)
}

fn base_config(dir: &TempDir, in_port: u16, out_port: u16) -> serde_json::Value {
    let flow = json!({
        "id": "main", "name": "main",
        "input": { "type": "udp", "bind_addr": format!("127.0.0.1:{in_port}") },
        "outputs": [{ "type": "udp", "id": "keep", "dest_addr": format!("127.0.0.1:{out_port}") }]
    });
    node_config(free_tcp_port(), &dir.path().join("data"), json!([flow]))
}

#[test]
fn hot_add_and_remove_outputs_without_disturbing_the_others() {
    let dir = TempDir::new("api-hot");
    let in_port = free_udp_port();
    let (keep_rx, keep_port) = udp_receiver();
    let (added_rx, added_port) = udp_receiver();
    let q = Quoll::start(dir.path(), &base_config(&dir, in_port, keep_port));

    let stop = Arc::new(AtomicBool::new(false));
    let tx = sender(in_port, stop.clone());
    // The stream is flowing once the kept output sees it.
    let first = receive_until(&keep_rx, Duration::from_secs(10), |d| d.len() >= 50);
    assert!(first.len() >= 50, "no stream on the kept output");

    let (code, view) = q.api(
        "POST",
        "/api/v1/flows/main/outputs",
        Some(&json!({ "type": "rtp", "id": "extra", "dest_addr": format!("127.0.0.1:{added_port}") }).to_string()),
    );
    assert_eq!(code, 201, "{view}");
    assert_eq!(view["outputs"].as_array().unwrap().len(), 2);
    let added = receive_until(&added_rx, Duration::from_secs(10), |d| d.len() >= 50);
    assert!(added.len() >= 50, "hot-added output got nothing");
    assert!(
        added
            .iter()
            .all(|d| d.len() == 12 + 1316 && d[1] & 0x7F == 33)
    );

    let (code, view) = q.api("DELETE", "/api/v1/flows/main/outputs/extra", None);
    assert_eq!(code, 200, "{view}");
    assert_eq!(view["outputs"].as_array().unwrap().len(), 1);
    let (code, err) = q.api("DELETE", "/api/v1/flows/main/outputs/extra", None);
    assert_eq!((code, err["error_code"].as_str()), (404, Some("not_found")));

    stop.store(true, Ordering::Relaxed);
    let sent = tx.join().unwrap();
    let mut kept = first;
    kept.extend(receive_until(&keep_rx, Duration::from_secs(10), |d| {
        d.last().is_some_and(|l| seq_of(l) + 1 == sent)
    }));
    // The kept output saw one unbroken run of datagrams across the add and the remove.
    let start = seq_of(&kept[0]);
    for (i, d) in kept.iter().enumerate() {
        assert_eq!(
            seq_of(d),
            start + i as u32,
            "gap or reorder on the untouched output"
        );
    }
    assert_eq!(seq_of(kept.last().unwrap()) + 1, sent);

    let (_, stats) = q.api("GET", "/api/v1/stats", None);
    assert_eq!(stats["flows"][0]["input"]["cc_errors"], 0);
    assert_eq!(stats["flows"][0]["outputs"][0]["dropped"], 0);
    let events = q.stop_events();
    for msg in [
        "Output 'extra' added to flow 'main'",
        "Output 'extra' removed from flow 'main'",
    ] {
        let n = count_matching(&events, Some("main"), msg);
        assert_eq!(n, 1, "event {msg:?}; events:\n{}", events_text(&events));
    }
}

#[test]
fn flow_lifecycle_and_errors() {
    let dir = TempDir::new("api-life");
    let in_port = free_udp_port();
    let (_rx, out_port) = udp_receiver();
    let q = Quoll::start(dir.path(), &base_config(&dir, in_port, out_port));

    let (code, h) = q.api("GET", "/healthz", None);
    assert_eq!(code, 200);
    assert_eq!(h["status"], "ok");
    assert_eq!(h["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(
        (h["active_flows"].as_u64(), h["total_flows"].as_u64()),
        (Some(1), Some(1))
    );
    assert!(h["uptime_secs"].is_u64());

    // Create a second flow, then drive it through its lifecycle.
    let second_in = free_udp_port();
    let flow = json!({
        "id": "second", "name": "second",
        "input": { "type": "rtp", "bind_addr": format!("127.0.0.1:{second_in}") },
        "outputs": [{ "type": "udp", "id": "o", "dest_addr": format!("127.0.0.1:{out_port}") }]
    });
    let (code, v) = q.api("POST", "/api/v1/flows", Some(&flow.to_string()));
    assert_eq!(code, 201, "{v}");
    assert_eq!(v["state"], "running");
    for (action, state) in [
        ("stop", "stopped"),
        ("start", "running"),
        ("restart", "running"),
    ] {
        let (code, v) = q.api("POST", &format!("/api/v1/flows/second/{action}"), None);
        assert_eq!(
            (code, v["state"].as_str()),
            (200, Some(state)),
            "{action}: {v}"
        );
    }
    let (code, list) = q.api("GET", "/api/v1/flows", None);
    assert_eq!(code, 200);
    assert_eq!(list.as_array().unwrap().len(), 2);

    // Secrets never leave through the API: the views show the config without them.
    let secret = "never-shown-passphrase";
    let flow = json!({
        "id": "secret", "name": "secret",
        "input": { "type": "udp", "bind_addr": format!("127.0.0.1:{}", free_udp_port()) },
        "outputs": [{ "type": "srt", "id": "s", "mode": "listener",
                      "local_addr": format!("127.0.0.1:{}", free_udp_port()),
                      "passphrase": secret, "aes_key_len": 16 }]
    });
    let (code, v) = q.api("POST", "/api/v1/flows", Some(&flow.to_string()));
    assert_eq!(code, 201, "{v}");
    assert_eq!(v["config"]["outputs"][0]["aes_key_len"], 16, "{v}");
    let mut seen = vec![v.to_string()];
    for path in ["/api/v1/flows", "/api/v1/flows/secret", "/api/v1/stats"] {
        let (code, body) = q.api("GET", path, None);
        assert_eq!(code, 200, "{path}: {body}");
        seen.push(body.to_string());
    }
    for body in seen {
        assert!(!body.contains(secret), "the passphrase leaked: {body}");
    }
    let (code, v) = q.api("DELETE", "/api/v1/flows/secret", None);
    assert_eq!(code, 200, "{v}");

    // Errors: JSON with a code, never a crash.
    let cases: &[(&str, &str, Option<&str>, u16, &str)] = &[
        ("GET", "/api/v1/flows/nope", None, 404, "not_found"),
        ("POST", "/api/v1/flows/nope/start", None, 404, "not_found"),
        (
            "POST",
            "/api/v1/flows",
            Some("{not json"),
            400,
            "validation_error",
        ),
        ("POST", "/api/v1/flows", Some("[]"), 400, "validation_error"),
        (
            "POST",
            "/api/v1/flows",
            Some(r#"{"id":"x","input":{"type":"carrier-pigeon"}}"#),
            400,
            "validation_error",
        ),
        (
            "POST",
            "/api/v1/flows/main/outputs",
            Some(r#"{"type":"udp"}"#),
            400,
            "validation_error",
        ),
        ("GET", "/api/v1/nothing", None, 404, "not_found"),
        ("PUT", "/api/v1/flows", None, 405, "method_not_allowed"),
    ];
    for (method, path, body, status, code) in cases {
        let (got, err) = q.api(method, path, *body);
        assert_eq!(got, *status, "{method} {path}: {err}");
        assert_eq!(err["error_code"], *code, "{method} {path}: {err}");
        assert!(err["error"].as_str().is_some_and(|m| !m.is_empty()));
    }

    // A port another process holds: the flow is refused as a port conflict.
    let squatter = UdpSocket::bind("127.0.0.1:0").unwrap();
    let busy = squatter.local_addr().unwrap().port();
    let flow = json!({
        "id": "busy", "input": { "type": "udp", "bind_addr": format!("127.0.0.1:{busy}") }, "outputs": []
    });
    let (code, err) = q.api("POST", "/api/v1/flows", Some(&flow.to_string()));
    assert_eq!(
        (code, err["error_code"].as_str()),
        (409, Some("port_conflict")),
        "{err}"
    );
    let (_, v) = q.api("GET", "/api/v1/flows/busy", None);
    assert_eq!(v["state"], "error");

    for id in ["second", "busy"] {
        let (code, _) = q.api("DELETE", &format!("/api/v1/flows/{id}"), None);
        assert_eq!(code, 200);
    }
    let (code, _) = q.api("GET", "/api/v1/flows/second", None);
    assert_eq!(code, 404);

    let events = q.stop_events();
    for msg in [
        "Flow 'second' started",
        "Flow 'second' stopped",
        "Flow 'busy' failed to start: input: cannot bind",
    ] {
        let n = count_matching(&events, None, msg);
        assert!(
            n >= 1,
            "no event {msg:?}; events:\n{}",
            events_text(&events)
        );
    }
    // The running config was written back to the file: the two extra flows are gone again.
    let saved: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("config.json")).unwrap()).unwrap();
    assert_eq!(saved["flows"].as_array().unwrap().len(), 1);
}

/// Resource budgets (issue 13): a flow whose ring would not fit, the flow after the last one
/// allowed and an output over the per-flow limit are refused with `limit_exceeded` (409),
/// nothing starts and nothing is written to the config file.
#[test]
fn over_budget_changes_are_refused_and_not_saved() {
    let dir = TempDir::new("api-limits");
    let in_port = free_udp_port();
    let (_rx, out_port) = udp_receiver();
    let mut cfg = base_config(&dir, in_port, out_port);
    // 1.3 MiB per default ring: three fit 8 MiB, one of 65 536 chunks (83 MiB) does not.
    cfg["limits"] = json!({"max_flows": 2, "max_outputs_per_flow": 2, "max_ring_bytes": 8 << 20});
    let q = Quoll::start(dir.path(), &cfg);
    let path = dir.path().join("config.json");
    let file_before = std::fs::read(&path).unwrap();
    let flow = |id: &str, ring: Option<u32>| {
        let mut f = json!({
            "id": id, "input": { "type": "udp", "bind_addr": format!("127.0.0.1:{}", free_udp_port()) },
            "outputs": [{ "type": "udp", "id": "o", "dest_addr": format!("127.0.0.1:{out_port}") }]
        });
        if let Some(n) = ring {
            f["ring_chunks"] = json!(n);
        }
        f.to_string()
    };

    let (code, err) = q.api("POST", "/api/v1/flows", Some(&flow("huge", Some(65_536))));
    assert_eq!(
        (code, err["error_code"].as_str()),
        (409, Some("limit_exceeded")),
        "{err}"
    );
    let msg = err["error"].as_str().unwrap();
    assert!(
        msg.starts_with("flows[1].ring_chunks: ") && msg.contains("limits.max_ring_bytes"),
        "{msg}"
    );
    assert_eq!(q.api("GET", "/api/v1/flows/huge", None).0, 404);
    assert!(
        std::fs::read(&path).unwrap() == file_before,
        "a refused flow was saved"
    );

    let (code, v) = q.api("POST", "/api/v1/flows", Some(&flow("second", None)));
    assert_eq!(code, 201, "{v}");
    let (code, err) = q.api("POST", "/api/v1/flows", Some(&flow("third", None)));
    assert_eq!(
        (code, err["error_code"].as_str()),
        (409, Some("limit_exceeded")),
        "{err}"
    );
    assert_eq!(
        err["error"],
        "flows: 3 flows would be configured, at most 2 (limits.max_flows)"
    );
    assert_eq!(q.api("GET", "/api/v1/flows/third", None).0, 404);

    let output = |id: &str| {
        json!({ "type": "udp", "id": id, "dest_addr": format!("127.0.0.1:{out_port}") }).to_string()
    };
    let (code, v) = q.api("POST", "/api/v1/flows/second/outputs", Some(&output("o2")));
    assert_eq!(code, 201, "{v}");
    let (code, err) = q.api("POST", "/api/v1/flows/second/outputs", Some(&output("o3")));
    assert_eq!(
        (code, err["error_code"].as_str()),
        (409, Some("limit_exceeded")),
        "{err}"
    );
    let (_, v) = q.api("GET", "/api/v1/flows/second", None);
    assert_eq!(v["outputs"].as_array().map(Vec::len), Some(2), "{v}");

    let saved: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(saved["flows"][0]["id"], "main");
    assert_eq!(saved["flows"][1]["id"], "second");
    assert_eq!(saved["flows"].as_array().map(Vec::len), Some(2));
    assert_eq!(
        saved["flows"][1]["outputs"].as_array().map(Vec::len),
        Some(2)
    );
    q.stop();

    // The saved config, with a third flow written by hand, is refused at start.
    let mut over = saved.clone();
    over["flows"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::from_str(&flow("third", None)).unwrap());
    std::fs::write(&path, serde_json::to_vec_pretty(&over).unwrap()).unwrap();
    let mut child = quoll()
        .arg("run")
        .arg("--config")
        .arg(&path)
        .env("QUOLL_RUNTIME_DIR", dir.path().join("run"))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Bounded: a daemon that started anyway is killed, and the test fails.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("quoll started with a config over its budget");
        }
        thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("over this node's budget")
            && stderr.contains("flows: 3 flows would be configured, at most 2 (limits.max_flows)"),
        "{stderr}"
    );
    let out = quoll().arg("check-config").arg(&path).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("limit_exceeded"));
}

/// `security.outbound_allow` (issue 13): a destination written as an address outside the
/// list is a validation error naming its JSON path; a host name is resolved at connect
/// time and refused there, with an event that says why. Nothing is sent anywhere: the
/// allowed network is 127.0.0.2/32.
#[test]
fn outbound_allow_refuses_literals_by_path_and_names_at_connect() {
    let dir = TempDir::new("api-outbound");
    let in_port = free_udp_port();
    let mut cfg = base_config(&dir, in_port, free_udp_port());
    cfg["flows"][0]["outputs"][0]["dest_addr"] = json!(format!("127.0.0.2:{}", free_udp_port()));
    cfg["security"] = json!({ "outbound_allow": ["127.0.0.2/32", "2001:db8::/32"] });
    let q = Quoll::start(dir.path(), &cfg);
    let path = dir.path().join("config.json");
    let file_before = std::fs::read(&path).unwrap();

    let udp_in = || json!({ "type": "udp", "bind_addr": format!("127.0.0.1:{}", free_udp_port()) });
    let cases = [
        (
            json!({ "id": "u", "input": udp_in(),
                    "outputs": [{ "type": "udp", "id": "o", "dest_addr": "127.0.0.3:5000" }] }),
            "flows[1].outputs[0].dest_addr: 127.0.0.3 is not in security.outbound_allow",
        ),
        (
            json!({ "id": "s", "input": udp_in(),
                    "outputs": [{ "type": "srt", "id": "o", "mode": "caller",
                                  "local_addr": "127.0.0.1:0", "remote_addr": "127.0.0.3:9000" }] }),
            "flows[1].outputs[0].remote_addr: 127.0.0.3 is not in security.outbound_allow",
        ),
        (
            json!({ "id": "c", "input": { "type": "srt", "mode": "caller",
                    "local_addr": "127.0.0.1:0", "remote_addr": "127.0.0.3:9000" }, "outputs": [] }),
            "flows[1].input.remote_addr: 127.0.0.3 is not in security.outbound_allow",
        ),
        (
            json!({ "id": "r", "input": { "type": "rtsp", "rtsp_url": "rtsp://u:secret@[::1]:8554/cam" },
                    "outputs": [] }),
            "flows[1].input.rtsp_url: ::1 is not in security.outbound_allow",
        ),
    ];
    for (flow, want) in cases {
        let (code, err) = q.api("POST", "/api/v1/flows", Some(&flow.to_string()));
        assert_eq!(
            (code, err["error_code"].as_str()),
            (400, Some("validation_error")),
            "{err}"
        );
        assert_eq!(err["error"], want);
    }
    // Adding an output to a running flow goes through the same check.
    let out = json!({ "type": "rtp", "id": "x", "dest_addr": "[2001:db9::1]:5000" });
    let (code, err) = q.api("POST", "/api/v1/flows/main/outputs", Some(&out.to_string()));
    assert_eq!(code, 400, "{err}");
    assert_eq!(
        err["error"],
        "flows[0].outputs[1].dest_addr: 2001:db9::1 is not in security.outbound_allow"
    );
    // A value that does not parse is the reader's now, answered as validation answered it:
    // same status, code, path and message. A wrong JSON type is still a malformed body.
    let socket =
        r#"is not a socket address (expected ip:port, e.g. 239.1.1.1:5000 or [ff0e::1]:5000)"#;
    let bodies = [
        (
            "/api/v1/flows",
            json!({ "id": "b", "input": { "type": "udp", "bind_addr": "x" }, "outputs": [] }),
            format!(r#"flows[1].input.bind_addr: "x" {socket}"#),
        ),
        (
            "/api/v1/flows",
            json!({ "id": "t", "input": { "type": "rtsp", "rtsp_url": "rtsp://127.0.0.2/x",
                    "transport": "quic" } }),
            r#"flows[1].input.transport: "quic" is not one of tcp, udp"#.to_string(),
        ),
        (
            "/api/v1/flows/main/outputs",
            json!({ "type": "udp", "id": "x", "dest_addr": "127.0.0.2:5000", "interface_addr": "eth0" }),
            r#"flows[0].outputs[1].interface_addr: "eth0" is not an IP address"#.to_string(),
        ),
        (
            "/api/v1/flows",
            json!({ "id": "n", "input": { "type": "udp", "bind_addr": 5 } }),
            "invalid JSON body: input.bind_addr: invalid type: integer `5`, expected a string"
                .to_string(),
        ),
    ];
    for (route, body, want) in bodies {
        let (code, err) = q.api("POST", route, Some(&body.to_string()));
        assert_eq!(
            (code, err["error_code"].as_str()),
            (400, Some("validation_error")),
            "{err}"
        );
        assert_eq!(err["error"], want.as_str());
    }
    let (code, _) = q.api(
        "POST",
        "/api/v1/flows/nope/outputs",
        Some(r#"{"type":"udp","id":"x","dest_addr":"x"}"#),
    );
    assert_eq!(code, 404, "an unknown flow is not found, whatever the body");
    assert!(
        std::fs::read(&path).unwrap() == file_before,
        "a refused change was saved"
    );

    // A name cannot be checked before it is resolved: the flow is created, and each
    // connect attempt is refused with the addresses the name resolved to.
    let flow = json!({ "id": "named", "input": { "type": "rtsp", "rtsp_url": "rtsp://localhost:1/cam",
                       "reconnect_delay_secs": 1 }, "outputs": [] });
    let (code, v) = q.api("POST", "/api/v1/flows", Some(&flow.to_string()));
    assert_eq!(code, 201, "{v}");
    let event = q.wait_event(
        "RTSP input disconnected: localhost resolves to",
        Duration::from_secs(20),
    );
    let line = event["message"].as_str().unwrap();
    assert!(
        line.contains("none of it in security.outbound_allow"),
        "{line}"
    );
    q.stop();
}
