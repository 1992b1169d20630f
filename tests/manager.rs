//! The manager link end to end: the real quoll binary against a fake manager that enforces
//! `shared/spec/manager-protocol.md` (tests/fake_manager). Loopback only, temp dirs, free
//! ports; every wait polls a condition with a deadline.

mod common;
mod fake_manager;

use std::net::UdpSocket;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use fake_manager::{FakeManager, Options, parse_rfc3339_utc};
use serde_json::{Value, json};

/// Deadlines stretch under emulation: a quoll under qemu-user is 10-50x slower.
fn t(secs: u64) -> Duration {
    let emulated = std::env::var("QUOLL_RUNNER").is_ok_and(|r| !r.trim().is_empty());
    Duration::from_secs(if emulated { secs * 6 } else { secs })
}

const NODE_ID: &str = "11111111-2222-4333-8444-555555555555";
const NODE_SECRET: &str = "node-secret-value-0001";

fn config(dir: &TempDir, manager: Value, flows: Value) -> Value {
    let mut c = node_config(free_tcp_port(), &dir.path().join("data"), flows);
    c["manager"] = manager;
    c
}

fn plain(fm: &FakeManager) -> Value {
    json!({ "urls": [fm.url(false)], "allow_plain_ws": true,
            "node_id": NODE_ID, "node_secret": NODE_SECRET })
}

fn known_node() -> Options {
    Options {
        nodes: vec![(NODE_ID.into(), NODE_SECRET.into())],
        ..Options::default()
    }
}

fn udp_flow(id: &str, in_port: u16, out_port: u16) -> Value {
    json!({ "id": id, "name": id,
            "input": { "type": "udp", "bind_addr": format!("127.0.0.1:{in_port}") },
            "outputs": [{ "type": "udp", "id": "out", "name": "out",
                          "dest_addr": format!("127.0.0.1:{out_port}") }] })
}

/// Poll the quoll log for `needle` until `limit`.
fn wait_log(q: &Quoll, needle: &str, limit: Duration) -> bool {
    poll(limit, || q.log().contains(needle).then_some(())).is_some()
}

fn assert_clean(fm: &FakeManager) {
    let s = fm.state();
    assert!(
        s.violations.is_empty(),
        "spec violations: {:#?}",
        s.violations
    );
}

fn read_json(path: &std::path::Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

#[test]
fn registration_then_reconnect_with_stored_credentials() {
    let dir = TempDir::new("mgr-reg");
    let fm = FakeManager::start(Options {
        tokens: vec!["reg-token-0001".into()],
        ..Options::default()
    });
    let cfg = config(
        &dir,
        json!({ "urls": [fm.url(false)], "allow_plain_ws": true,
                "registration_token": "reg-token-0001", "x_keep": {"a": 1} }),
        json!([]),
    );
    let q = Quoll::start(dir.path(), &cfg);
    fm.expect("registration", t(20), |s| s.auth_results == ["registered"]);
    assert_eq!(fm.state().auths[0]["registration_token"], "reg-token-0001");
    fm.expect("health, stats and the connected event", t(20), |s| {
        !s.of_type("stats").is_empty() && s.has_event("Connected to manager")
    });
    {
        let s = fm.state();
        assert_eq!(s.messages[0].msg["type"], "health", "health comes first");
        let h = &s.messages[0].msg["payload"];
        assert_eq!(h["version"], env!("CARGO_PKG_VERSION"));
        assert_eq!(h["status"], "ok", "durable event log, no failed flow: {h}");
        assert_eq!(h["event_log"], "durable");
        assert!(h["event_queue_depth"].is_u64() && h["memory"]["rss_bytes"].is_u64());
    }
    let (node_id, node_secret) = fm.state().nodes[0].clone();

    // Persisted at once, atomically, 0600, token gone, unknown fields kept.
    let path = dir.path().join("config.json");
    let saved = read_json(&path);
    assert_eq!(saved["manager"]["node_id"], node_id.as_str());
    assert_eq!(saved["manager"]["node_secret"], node_secret.as_str());
    assert!(saved["manager"].get("registration_token").is_none());
    assert_eq!(saved["manager"]["x_keep"], json!({"a": 1}));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    let (status, log) = q.terminate();
    assert!(status.success(), "{log}");
    assert!(
        !log.contains(&node_secret) && !log.contains("reg-token-0001"),
        "secret in log:\n{log}"
    );

    // After a restart: the stored credentials, not the token.
    let q = Quoll::start(dir.path(), &saved);
    fm.expect("auth with stored credentials", t(20), |s| {
        s.auth_results == ["registered", "ok"]
    });
    let auth = fm.state().auths[1].clone();
    assert_eq!(auth["node_id"], node_id.as_str());
    assert_eq!(auth["node_secret"], node_secret.as_str());
    assert!(auth.get("registration_token").is_none());
    assert_eq!(auth["protocol_version"], 1);
    fm.expect("stats on the second session", t(20), |s| {
        s.of_type("stats").iter().any(|r| r.conn == 1)
    });
    drop(q);
    assert_clean(&fm);
}

#[test]
fn auth_error_raises_the_event_and_backs_off() {
    let dir = TempDir::new("mgr-autherr");
    let fm = FakeManager::start(Options::default());
    let cfg = config(
        &dir,
        json!({ "urls": [fm.url(false)], "allow_plain_ws": true,
                "node_id": NODE_ID, "node_secret": "wrong-secret" }),
        json!([]),
    );
    let q = Quoll::start(dir.path(), &cfg);
    fm.expect("an auth attempt", t(20), |s| s.auth_results == ["error"]);
    assert!(
        wait_log(
            &q,
            "Manager authentication failed: Invalid node secret",
            t(10)
        ),
        "{}",
        q.log()
    );
    // Backoff: no second attempt in the next few seconds (it is 30-40 s away; the exact
    // schedule is tested on fake time in src/manager/link.rs).
    assert!(
        !fm.wait(Duration::from_secs(3), |s| s.connections > 1),
        "reconnected right after auth_error"
    );
    assert!(!q.log().contains("wrong-secret"));
    drop(q);
    assert_clean(&fm);
}

#[test]
fn events_raised_during_an_outage_arrive_afterwards_in_order_with_their_raise_time() {
    let dir = TempDir::new("mgr-outage");
    let (a_in, a_out) = (free_udp_port(), free_udp_port());
    let (b_in, b_out) = (free_udp_port(), free_udp_port());
    let fm = FakeManager::start(known_node());
    let cfg = config(&dir, plain(&fm), json!([udp_flow("a", a_in, a_out)]));
    let q = Quoll::start(dir.path(), &cfg);
    // Raised before the link was up, delivered from the queue.
    fm.expect("the startup events", t(20), |s| {
        s.has_event("Flow 'a' started") && s.has_event("Connected to manager")
    });

    let (port, before, violations) = fm.stop();
    assert!(violations.is_empty(), "{violations:#?}");
    assert!(
        wait_log(&q, "Manager connection lost, reconnecting", t(20)),
        "{}",
        q.log()
    );
    // The outage: three events while nobody listens.
    let outage_start = fake_manager::now_ms();
    assert_eq!(q.api("POST", "/api/v1/flows/a/stop", None).0, 200);
    assert_eq!(q.api("POST", "/api/v1/flows/a/start", None).0, 200);
    let b = udp_flow("b", b_in, b_out).to_string();
    assert_eq!(q.api("POST", "/api/v1/flows", Some(&b)).0, 201);
    let outage_end = fake_manager::now_ms();

    let fm = FakeManager::start(Options {
        port,
        ..known_node()
    });
    fm.expect("reconnect and the backlog", t(60), |s| {
        s.has_event("Flow 'b' started")
    });
    let s = fm.state();
    let events: Vec<&Value> = s.events();
    let msgs: Vec<&str> = events
        .iter()
        .map(|e| e["payload"]["message"].as_str().unwrap())
        .collect();
    let pos = |m: &str| {
        msgs.iter()
            .position(|x| *x == m)
            .unwrap_or_else(|| panic!("{m} missing: {msgs:?}"))
    };
    let (lost, stopped, started, b_started) = (
        pos("Manager connection lost, reconnecting"),
        pos("Flow 'a' stopped"),
        msgs.iter().rposition(|x| *x == "Flow 'a' started").unwrap(),
        pos("Flow 'b' started"),
    );
    assert!(
        lost < stopped && stopped < started && started < b_started,
        "{msgs:?}"
    );
    // Sequence numbers strictly increasing, across both manager runs.
    let seqs: Vec<u64> = before
        .iter()
        .filter(|r| r.msg["type"] == "event")
        .map(|r| &r.msg)
        .chain(events.iter().copied())
        .map(|e| e["payload"]["details"]["seq"].as_u64().unwrap())
        .collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    // Each outage event carries its own raise time, not its delivery time.
    let arrived = s.messages[0].at;
    let arrived_ms = arrived
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    for i in [stopped, started, b_started] {
        let raised = parse_rfc3339_utc(events[i]["timestamp"].as_str().unwrap()).unwrap();
        assert!(
            raised >= outage_start && raised <= outage_end && raised < arrived_ms,
            "{}: raised {raised}, outage {outage_start}..{outage_end}, reconnected {arrived_ms}",
            events[i]
        );
    }
    drop(s);
    drop(q);
    assert_clean(&fm);
}

/// A datagram of 7 TS packets whose payload carries `n`.
fn datagram(n: u32) -> Vec<u8> {
    numbered_datagram(n)
}

/// Numbered datagrams to `port` (1000/s) until stopped; returns how many were sent.
fn sender(port: u16, stop: Arc<AtomicBool>) -> thread::JoinHandle<u32> {
    numbered_sender(port, Duration::from_millis(1), stop)
}

fn ok(reply: &Value) -> &Value {
    assert_eq!(reply["type"], "command_ack", "{reply}");
    assert_eq!(reply["payload"]["success"], true, "{reply}");
    &reply["payload"]["data"]
}

fn failed(reply: &Value, code: &str) {
    assert_eq!(reply["type"], "command_ack", "{reply}");
    assert_eq!(reply["payload"]["success"], false, "{reply}");
    assert_eq!(reply["payload"]["error_code"], code, "{reply}");
}

#[test]
fn update_config_changes_one_flow_while_the_other_keeps_forwarding() {
    let dir = TempDir::new("mgr-diff");
    let (a_in, b_in) = (free_udp_port(), free_udp_port());
    let (a_rx, a_out) = udp_receiver();
    let (b_rx, b_out) = udp_receiver();
    let (b2_rx, b2_out) = udp_receiver();
    let mut fm = FakeManager::start(known_node());
    let cfg = config(
        &dir,
        plain(&fm),
        json!([udp_flow("a", a_in, a_out), udp_flow("b", b_in, b_out)]),
    );
    let q = Quoll::start(dir.path(), &cfg);
    fm.expect("link up", t(20), |s| s.auth_results == ["ok"]);

    let stop = Arc::new(AtomicBool::new(false));
    let tx_a = sender(a_in, stop.clone());
    let tx_b = sender(b_in, stop.clone());
    let first = receive_until(&a_rx, t(10), |d| d.len() >= 100);
    assert!(first.len() >= 100, "flow a is not forwarding");
    assert!(receive_until(&b_rx, t(10), |d| d.len() >= 10).len() >= 10);
    let (_, a_before) = q.api("GET", "/api/v1/flows/a", None);

    // A push that nothing can run: refused, nothing changes (flow b in memory, the file).
    let path = dir.path().join("config.json");
    let file_before = std::fs::read(&path).unwrap();
    let (_, b_before) = q.api("GET", "/api/v1/flows/b", None);
    let mut bad = fm.command(json!({"type": "get_config"}), t(10))["payload"].clone();
    bad["flows"][1]["outputs"][0]["dest_addr"] = json!("not-an-address");
    let r = fm.command(json!({"type": "update_config", "config": bad}), t(10));
    failed(&r, "validation_error");
    assert!(
        r["payload"]["error"]
            .as_str()
            .unwrap()
            .contains("config.flows[1].outputs[0].dest_addr"),
        "{r}"
    );
    let (_, b_after) = q.api("GET", "/api/v1/flows/b", None);
    assert_eq!(b_after["config"], b_before["config"]);
    assert_eq!(
        b_after["config"]["outputs"][0]["dest_addr"],
        format!("127.0.0.1:{b_out}")
    );
    assert_eq!(b_after["state"], "running");
    assert!(
        std::fs::read(&path).unwrap() == file_before,
        "a refused push changed the config file"
    );

    // Move b's output; a must not notice.
    let mut cfg = fm.command(json!({"type": "get_config"}), t(10))["payload"].clone();
    cfg["flows"][1]["outputs"][0]["dest_addr"] = json!(format!("127.0.0.1:{b2_out}"));
    let r = fm.command(json!({"type": "update_config", "config": cfg}), t(20));
    let data = ok(&r);
    assert_eq!(data["updated"], json!(["b"]), "{r}");
    assert_eq!(data["unchanged"], json!(["a"]), "{r}");
    assert_eq!(data["restart_required"], false, "{r}");
    assert!(
        receive_until(&b2_rx, t(10), |d| d.len() >= 10).len() >= 10,
        "b moved"
    );

    // A bridge stream added: saved, and the ack says it runs from the next start.
    let mut cfg = fm.command(json!({"type": "get_config"}), t(10))["payload"].clone();
    cfg["bridge"] = json!({"streams": {"cam": {"rtsp_url": "rtsp://127.0.0.1:8554/cam"}}});
    let r = fm.command(json!({"type": "update_config", "config": cfg}), t(20));
    let data = ok(&r);
    assert_eq!(data["restart_required"], true, "{r}");
    assert_eq!(data["unchanged"], json!(["a", "b"]), "{r}");

    // a kept running through the update: its counters were never reset (a restart starts
    // them from zero) and its stream has no gap.
    let got = receive_until(&a_rx, t(10), |d| d.len() >= 300);
    stop.store(true, Ordering::Relaxed);
    tx_a.join().unwrap();
    tx_b.join().unwrap();
    let (_, a_after) = q.api("GET", "/api/v1/flows/a", None);
    assert_eq!(a_after["state"], "running");
    assert!(
        a_after["input"]["datagrams"].as_u64() > a_before["input"]["datagrams"].as_u64(),
        "{a_before} / {a_after}"
    );
    let seqs: Vec<u32> = first
        .iter()
        .chain(got.iter())
        .map(|d| u32::from_be_bytes([d[4], d[5], d[6], d[7]]))
        .collect();
    let gaps = seqs.windows(2).filter(|w| w[1] != w[0] + 1).count();
    assert_eq!(gaps, 0, "flow a glitched during the update");

    // Persisted, and the config event raised.
    let saved = read_json(&dir.path().join("config.json"));
    assert_eq!(
        saved["flows"][1]["outputs"][0]["dest_addr"],
        format!("127.0.0.1:{b2_out}")
    );
    assert_eq!(
        saved["manager"]["node_secret"], NODE_SECRET,
        "node-local secret kept"
    );
    fm.expect("config event", t(10), |s| {
        s.has_event("Configuration updated")
    });
    drop(q);
    assert_clean(&fm);
}

#[test]
fn every_command_action() {
    let dir = TempDir::new("mgr-cmds");
    let (a_in, a_out, b_in, b_out, c_out) = (
        free_udp_port(),
        free_udp_port(),
        free_udp_port(),
        free_udp_port(),
        free_udp_port(),
    );
    let mut fm = FakeManager::start(known_node());
    let cfg = config(&dir, plain(&fm), json!([udp_flow("a", a_in, a_out)]));
    let q = Quoll::start(dir.path(), &cfg);
    fm.expect("link up", t(20), |s| s.auth_results == ["ok"]);
    let limit = t(10);

    let c = fm.command(json!({"type": "get_config"}), limit);
    assert_eq!(c["type"], "config_response");
    assert_eq!(c["payload"]["flows"][0]["id"], "a");
    assert_eq!(c["payload"]["manager"]["node_id"], NODE_ID);
    assert!(!c.to_string().contains(NODE_SECRET));

    let d = ok(&fm.command(
        json!({"type": "create_flow", "flow": udp_flow("b", b_in, b_out)}),
        limit,
    ))
    .clone();
    assert_eq!(
        (d["id"].as_str(), d["state"].as_str()),
        (Some("b"), Some("running"))
    );
    // Same input port as a: refused before anything changes.
    failed(
        &fm.command(
            json!({"type": "create_flow", "flow": udp_flow("c", a_in, c_out)}),
            limit,
        ),
        "port_conflict",
    );
    assert_eq!(q.api("GET", "/api/v1/flows/c", None).0, 404);
    assert!(
        !read_json(&dir.path().join("config.json"))["flows"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["id"] == "c")
    );
    failed(
        &fm.command(json!({"type": "create_flow", "flow": {"id": "x"}}), limit),
        "validation_error",
    );
    // A value that does not parse is the reader's now, answered as validation answered
    // it: the same code, and the path in the config the change would make.
    let socket =
        "is not a socket address (expected ip:port, e.g. 239.1.1.1:5000 or [ff0e::1]:5000)";
    let mut bad_in = udp_flow("d", free_udp_port(), c_out);
    bad_in["input"]["bind_addr"] = json!("x");
    let mut bad_out = udp_flow("b", b_in, c_out);
    bad_out["outputs"][0]["dest_addr"] = json!("y");
    let iface = json!({"type": "udp", "id": "i", "dest_addr": format!("127.0.0.1:{c_out}"),
                       "interface_addr": "eth0"});
    for (action, error) in [
        (
            json!({"type": "create_flow", "flow": bad_in}),
            format!(r#"flows[2].input.bind_addr: "x" {socket}"#),
        ),
        (
            json!({"type": "update_flow", "flow_id": "b", "flow": bad_out}),
            format!(r#"flows[1].outputs[0].dest_addr: "y" {socket}"#),
        ),
        (
            json!({"type": "add_output", "flow_id": "a", "output": iface}),
            r#"flows[0].outputs[1].interface_addr: "eth0" is not an IP address"#.to_string(),
        ),
    ] {
        let r = fm.command(action.clone(), limit);
        failed(&r, "validation_error");
        assert_eq!(r["payload"]["error"], error.as_str(), "{action}");
    }
    let d = ok(&fm.command(
        json!({"type": "update_flow", "flow_id": "b", "flow": udp_flow("b", b_in, c_out)}),
        limit,
    ))
    .clone();
    assert_eq!(d["outputs"][0]["id"], "out");
    assert_eq!(d["state"], "running");
    failed(
        &fm.command(
            json!({"type": "update_flow", "flow_id": "zz", "flow": udp_flow("zz", b_in, c_out)}),
            limit,
        ),
        "not_found",
    );
    for (action, state) in [
        ("stop_flow", "stopped"),
        ("start_flow", "running"),
        ("restart_flow", "running"),
    ] {
        let d = ok(&fm.command(json!({"type": action, "flow_id": "b"}), limit)).clone();
        assert_eq!(d["state"], state, "{action}");
    }
    // A missing or unusable field is answered with its name; the text is the same as
    // before the protocol was derived.
    for (action, error) in [
        (
            json!({"type": "start_flow"}),
            "flow_id: missing required field",
        ),
        (
            json!({"type": "stop_flow", "flow_id": 5}),
            "flow_id: expected a non-empty string",
        ),
        (
            json!({"type": "remove_output", "flow_id": "a", "output_id": ""}),
            "output_id: expected a non-empty string",
        ),
        (
            json!({"type": "create_flow"}),
            "flow: missing required field",
        ),
        // Serde would read a number as a variant's index: it must not be an action.
        (
            json!({"type": 1, "config": {}}),
            "action: expected an object with a string `type`",
        ),
    ] {
        let r = fm.command(action.clone(), limit);
        failed(&r, "validation_error");
        assert_eq!(r["payload"]["error"], error, "{action}");
    }
    failed(
        &fm.command(json!({"type": "stop_flow", "flow_id": "nope"}), limit),
        "not_found",
    );

    let out = json!({"type": "rtp", "id": "extra", "name": "x", "dest_addr": format!("127.0.0.1:{c_out}")});
    let d = ok(&fm.command(
        json!({"type": "add_output", "flow_id": "a", "output": out}),
        limit,
    ))
    .clone();
    assert_eq!(d["outputs"].as_array().unwrap().len(), 2);
    let d = ok(&fm.command(
        json!({"type": "remove_output", "flow_id": "a", "output_id": "extra"}),
        limit,
    ))
    .clone();
    assert_eq!(d["outputs"].as_array().unwrap().len(), 1);
    failed(
        &fm.command(
            json!({"type": "remove_output", "flow_id": "a", "output_id": "extra"}),
            limit,
        ),
        "not_found",
    );

    ok(&fm.command(json!({"type": "delete_flow", "flow_id": "b"}), limit));
    failed(
        &fm.command(json!({"type": "delete_flow", "flow_id": "b"}), limit),
        "not_found",
    );

    // The relay protocol's tunnel object, secrets included.
    let tunnel = json!({"id": "5c0c1a2e-0000-4000-8000-00000000aa01", "name": "uplink", "enabled": true, "protocol": "udp",
        "mode": "relay", "direction": "egress", "local_addr": "127.0.0.1:9000",
        "relay_addr": "192.0.2.1:4433", "tunnel_encryption_key": "ab".repeat(32),
        "tunnel_bind_secret": "cd".repeat(32)});
    let d = ok(&fm.command(json!({"type": "create_tunnel", "tunnel": tunnel}), limit)).clone();
    assert_eq!(
        (
            d["stored"].as_bool(),
            d["unchanged"].as_bool(),
            d["running"].as_bool()
        ),
        // Running where the build has the tunnel engine.
        (Some(true), Some(false), Some(cfg!(feature = "tunnels")))
    );
    // The manager re-pushes its tunnels on every connect: idempotent.
    let d = ok(&fm.command(json!({"type": "create_tunnel", "tunnel": tunnel}), limit)).clone();
    assert_eq!(d["unchanged"], true);
    // Also when its serializer puts the fields in another order.
    let mut reordered = serde_json::Map::new();
    for (k, v) in tunnel.as_object().unwrap().iter().rev() {
        reordered.insert(k.clone(), v.clone());
    }
    assert_ne!(
        Value::Object(reordered.clone()).to_string(),
        tunnel.to_string()
    );
    let d = ok(&fm.command(json!({"type": "create_tunnel", "tunnel": reordered}), limit)).clone();
    assert_eq!(d["unchanged"], true, "key order changed the tunnel");
    let c = fm.command(json!({"type": "get_config"}), limit);
    assert_eq!(
        c["payload"]["tunnels"],
        json!([{"id": "5c0c1a2e-0000-4000-8000-00000000aa01", "name": "uplink", "enabled": true, "protocol": "udp",
            "mode": "relay", "direction": "egress", "local_addr": "127.0.0.1:9000",
            "relay_addr": "192.0.2.1:4433"}])
    );
    // A re-push of what get_config showed (secrets stripped) is still the same tunnel.
    let shown = c["payload"]["tunnels"][0].clone();
    let d = ok(&fm.command(json!({"type": "create_tunnel", "tunnel": shown}), limit)).clone();
    assert_eq!(d["unchanged"], true);
    fm.expect("the tunnel in stats", limit, |s| {
        s.of_type("stats").last().is_some_and(|r| {
            r.msg["payload"]["tunnels"][0]["id"] == "5c0c1a2e-0000-4000-8000-00000000aa01"
        })
    });
    let saved = read_json(&dir.path().join("config.json"));
    assert_eq!(
        saved["tunnels"][0]["tunnel_encryption_key"],
        "ab".repeat(32)
    );
    assert_eq!(saved["tunnels"][0]["tunnel_bind_secret"], "cd".repeat(32));
    ok(&fm.command(
        json!({"type": "delete_tunnel", "tunnel_id": "5c0c1a2e-0000-4000-8000-00000000aa01"}),
        limit,
    ));
    failed(
        &fm.command(
            json!({"type": "delete_tunnel", "tunnel_id": "5c0c1a2e-0000-4000-8000-00000000aa01"}),
            limit,
        ),
        "not_found",
    );
    failed(
        &fm.command(
            json!({"type": "create_tunnel", "tunnel": {"name": "no id"}}),
            limit,
        ),
        "validation_error",
    );

    let r = fm.command(json!({"type": "reboot_the_moon"}), limit);
    failed(&r, "unknown_action");
    assert_eq!(r["payload"]["error"], "unknown action \"reboot_the_moon\"");

    // The persisted config holds the end state.
    let saved = read_json(&dir.path().join("config.json"));
    let ids: Vec<&str> = saved["flows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["a"]);
    assert_eq!(saved["tunnels"], json!([]));
    // create_flow, update_flow, add_output, remove_output, delete_flow, create_tunnel (once),
    // delete_tunnel: seven config changes, seven events.
    fm.expect("config events", limit, |s| {
        s.events()
            .iter()
            .filter(|e| e["payload"]["message"] == "Configuration updated")
            .count()
            == 7
    });
    drop(q);
    assert_clean(&fm);
}

#[test]
fn garbage_from_the_manager_is_ignored() {
    let dir = TempDir::new("mgr-garbage");
    let mut fm = FakeManager::start(known_node());
    let q = Quoll::start(dir.path(), &config(&dir, plain(&fm), json!([])));
    fm.expect("link up", t(20), |s| s.auth_results == ["ok"]);
    use tokio_tungstenite::tungstenite::Message;
    for g in [
        "not json",
        "[1,2,3]",
        "{\"no_type\":1}",
        "{\"type\":\"future_thing\",\"timestamp\":\"2026-01-01T00:00:00Z\",\"payload\":{}}",
        "{\"type\":\"command\",\"payload\":{\"action\":{\"type\":\"get_config\"}}}",
        "{\"type\":\"auth_ok\"}",
    ] {
        fm.send(Message::text(g));
    }
    fm.send(Message::binary(vec![0u8, 1, 2]));
    fm.send(Message::text("x".repeat(6_000_000)));
    // A command without a usable action is answered, not dropped.
    fm.send_json(
        json!({"type": "command", "timestamp": fake_manager::now_rfc3339(),
                        "payload": {"command_id": "bad-1", "action": "nope"}}),
    );
    fm.send_json(json!({"type": "ping", "timestamp": fake_manager::now_rfc3339()}));
    fm.expect("pong and the rejection", t(20), |s| {
        !s.of_type("pong").is_empty()
            && s.of_type("command_ack")
                .iter()
                .any(|r| r.msg["payload"]["command_id"] == "bad-1")
    });
    let r = fm.command(json!({"type": "get_config"}), t(10));
    assert_eq!(r["type"], "config_response");
    assert_eq!(
        fm.state().connections,
        1,
        "garbage must not cost the connection"
    );
    let rej = fm.state().of_type("command_ack")[0].msg.clone();
    failed(&rej, "validation_error");
    assert!(
        wait_log(&q, "ignored an oversize manager message", t(10)),
        "{}",
        q.log()
    );
    assert!(wait_log(
        &q,
        "ignored a malformed manager message: not JSON",
        t(10)
    ));
    drop(q);
    assert_clean(&fm);
}

fn self_signed() -> (Vec<u8>, Vec<u8>) {
    let ck =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    (ck.cert.der().to_vec(), ck.signing_key.serialize_der())
}

fn hex_colons(b: &[u8]) -> String {
    quoll::net::tls::fingerprint_hex(b)
}

#[test]
fn tls_self_signed_manager_is_accepted_with_the_pin() {
    let dir = TempDir::new("mgr-tls-ok");
    let (cert, key) = self_signed();
    let pin = hex_colons(&quoll::net::tls::sha256(&cert)).to_lowercase();
    let fm = FakeManager::start(Options {
        tls: Some((cert, key)),
        ..known_node()
    });
    let manager = json!({ "urls": [fm.url(true)], "node_id": NODE_ID, "node_secret": NODE_SECRET,
                          "cert_fingerprint": pin, "accept_self_signed_cert": true });
    let q = Quoll::start(dir.path(), &config(&dir, manager, json!([])));
    fm.expect("auth over TLS", t(30), |s| s.auth_results == ["ok"]);
    fm.expect("stats over TLS", t(20), |s| !s.of_type("stats").is_empty());
    assert_eq!(fm.state().tls_failures, 0);
    drop(q);
    assert_clean(&fm);
}

#[test]
fn tls_self_signed_manager_is_refused_without_the_right_pin() {
    let (cert, key) = self_signed();
    let start = |tag: &str, extra: Value| {
        let dir = TempDir::new(tag);
        let fm = FakeManager::start(Options {
            tls: Some((cert.clone(), key.clone())),
            ..known_node()
        });
        let mut manager =
            json!({ "urls": [fm.url(true)], "node_id": NODE_ID, "node_secret": NODE_SECRET });
        for (k, v) in extra.as_object().unwrap() {
            manager[k] = v.clone();
        }
        let q = Quoll::start(dir.path(), &config(&dir, manager, json!([])));
        (dir, fm, q)
    };
    // A pin of another certificate, even with accept_self_signed_cert.
    let wrong = start(
        "mgr-tls-wrong",
        json!({"cert_fingerprint": "ab".repeat(32), "accept_self_signed_cert": true}),
    );
    // No pin: webpki verification, which a self-signed certificate fails.
    let unpinned = start("mgr-tls-nopin", json!({}));
    // The right pin but without accept_self_signed_cert: the chain must still verify.
    let pin = hex_colons(&quoll::net::tls::sha256(&cert));
    let chain = start("mgr-tls-chain", json!({"cert_fingerprint": pin}));
    for (_, fm, q) in [&wrong, &unpinned, &chain] {
        fm.expect("a refused TLS handshake", t(30), |s| s.tls_failures >= 1);
        assert!(
            fm.state().auths.is_empty(),
            "credentials sent to an unverified manager"
        );
        // Never reached: said in /healthz, not as a "lost" event.
        let m = wait_for(t(10), "the refusal in /healthz", || {
            let (_, h) = q.api("GET", "/healthz", None);
            let m = h["manager"].clone();
            m["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("TLS"))
                .then_some(m)
        });
        assert_eq!(m["ever_connected"], false, "{m}");
        assert!(!q.log().contains("Manager connection lost"), "{}", q.log());
    }
    assert!(
        wrong.2.log().contains("does not match cert_fingerprint"),
        "{}",
        wrong.2.log()
    );
}

#[test]
fn a_failed_config_write_is_reported_and_the_change_stays_live() {
    let dir = TempDir::new("mgr-persist");
    let (a_in, a_out) = (free_udp_port(), free_udp_port());
    let mut fm = FakeManager::start(known_node());
    let q = Quoll::start(dir.path(), &config(&dir, plain(&fm), json!([])));
    fm.expect("link up", t(20), |s| s.auth_results == ["ok"]);
    // Root ignores file modes, so break the write another way: a directory where the
    // config file was makes the final rename fail.
    let path = dir.path().join("config.json");
    std::fs::remove_file(&path).unwrap();
    std::fs::create_dir(&path).unwrap();
    let r = fm.command(
        json!({"type": "create_flow", "flow": udp_flow("a", a_in, a_out)}),
        t(10),
    );
    failed(&r, "config_persist_failed");
    fm.expect("the persist warning", t(10), |s| {
        s.events().iter().any(|e| {
            e["payload"]["severity"] == "warning"
                && e["payload"]["category"] == "config"
                && e["payload"]["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("Failed to persist configuration: "))
        })
    });
    let (code, view) = q.api("GET", "/api/v1/flows/a", None);
    assert_eq!((code, view["state"].as_str()), (200, Some("running")));
    drop(q);
    assert_clean(&fm);
}

#[test]
fn a_dead_url_is_skipped_for_the_next_one() {
    let dir = TempDir::new("mgr-rotate");
    let fm = FakeManager::start(known_node());
    // Nothing listens on the first URL.
    let dead = format!("ws://127.0.0.1:{}/ws/node", free_tcp_port());
    let manager = json!({ "urls": [dead, fm.url(false)], "allow_plain_ws": true,
                          "node_id": NODE_ID, "node_secret": NODE_SECRET });
    let q = Quoll::start(dir.path(), &config(&dir, manager, json!([])));
    fm.expect("auth on the second URL", t(20), |s| {
        s.auth_results == ["ok"]
    });
    // The refused first attempt is counted in the "connected" event, not reported as a
    // loss of a link that never was.
    fm.expect("the connected event", t(20), |s| {
        s.events().iter().any(|e| {
            e["payload"]["message"] == "Connected to manager"
                && e["payload"]["details"]["failed_attempts"] == 1
        })
    });
    assert!(
        !fm.state()
            .has_event("Manager connection lost, reconnecting")
    );
    drop(q);
    assert_clean(&fm);
}

#[test]
fn a_manager_that_stops_reading_blocks_neither_flows_nor_events() {
    let dir = TempDir::new("mgr-slow");
    let (a_in, b_in, b_out) = (free_udp_port(), free_udp_port(), free_udp_port());
    let (a_rx, a_out) = udp_receiver();
    let fm = FakeManager::start(Options {
        small_rcvbuf: true,
        ..known_node()
    });
    let q = Quoll::start(
        dir.path(),
        &config(&dir, plain(&fm), json!([udp_flow("a", a_in, a_out)])),
    );
    fm.expect("link up", t(20), |s| {
        s.auth_results == ["ok"] && !s.of_type("health").is_empty()
    });
    let stop = Arc::new(AtomicBool::new(false));
    let tx = sender(a_in, stop.clone());
    assert!(receive_until(&a_rx, t(10), |d| d.len() >= 50).len() >= 50);

    // The manager stops reading and floods the node with commands: far more replies than
    // the socket buffers and the bounded reply queue hold.
    fm.set_reading(false);
    for i in 0..400 {
        fm.send_json(
            json!({"type": "command", "timestamp": fake_manager::now_rfc3339(),
            "payload": {"command_id": format!("flood-{i}"), "action": {"type": "get_config"}}}),
        );
    }
    assert!(
        wait_log(&q, "manager not reading: dropped a reply", t(20)),
        "{}",
        q.log()
    );

    // Meanwhile the node works: flows forward without a gap, the API answers, events are
    // raised (and wait in the queue).
    let got = receive_until(&a_rx, t(10), |d| d.len() >= 500);
    let seqs: Vec<u32> = got
        .iter()
        .map(|d| u32::from_be_bytes([d[4], d[5], d[6], d[7]]))
        .collect();
    assert!(
        seqs.len() >= 500 && seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "flow a stalled or glitched"
    );
    let asked = Instant::now();
    let b = udp_flow("b", b_in, b_out).to_string();
    assert_eq!(q.api("POST", "/api/v1/flows", Some(&b)).0, 201);
    assert!(
        asked.elapsed() < t(2),
        "the API waited for the manager: {:?}",
        asked.elapsed()
    );
    stop.store(true, Ordering::Relaxed);
    tx.join().unwrap();

    // The manager reads again: the backlog drains and the event raised during the stall
    // arrives, in order after everything before it.
    fm.set_reading(true);
    fm.expect("the event raised during the stall", t(30), |s| {
        s.has_event("Flow 'b' started")
    });
    let s = fm.state();
    let responses = s.of_type("config_response").len();
    assert!(responses < 400, "nothing was shed: {responses} replies");
    let seqs: Vec<u64> = s
        .events()
        .iter()
        .map(|e| e["payload"]["details"]["seq"].as_u64().unwrap())
        .collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    assert_eq!(s.connections, 1, "the stall must not cost the connection");
    drop(s);
    drop(q);
    assert_clean(&fm);
}

#[test]
fn a_push_without_the_edge_blocks_keeps_them() {
    let dir = TempDir::new("mgr-edge-blocks");
    let (a_in, a_out) = (free_udp_port(), free_udp_port());
    let mut fm = FakeManager::start(known_node());
    let mut cfg = config(&dir, plain(&fm), json!([]));
    cfg["bridge"] = json!({"idle_timeout_ms": 20000,
        "streams": {"cam": {"rtsp_url": "rtsp://127.0.0.1:1/cam"}}});
    cfg["x_edge"] = json!({"note": "mine"});
    let q = Quoll::start(dir.path(), &cfg);
    fm.expect("link up", t(20), |s| s.auth_results == ["ok"]);
    let shown = fm.command(json!({"type": "get_config"}), t(10))["payload"].clone();
    assert_eq!(shown["x_edge"], json!({"note": "mine"}));

    // What a v0.4.x manager pushes: its own keys only.
    let push = json!({"version": 1, "server": shown["server"].clone(),
        "flows": [udp_flow("a", a_in, a_out)], "tunnels": []});
    let r = fm.command(json!({"type": "update_config", "config": push}), t(20));
    let data = ok(&r);
    assert_eq!(data["created"], json!(["a"]), "{r}");
    assert_eq!(
        data["restart_required"], false,
        "the bridge did not change: {r}"
    );

    // In memory...
    let now = fm.command(json!({"type": "get_config"}), t(10))["payload"].clone();
    assert_eq!(now["bridge"], shown["bridge"]);
    assert_eq!(now["x_edge"], json!({"note": "mine"}));
    assert_eq!(now["storage"], shown["storage"]);
    assert_eq!(now["flows"][0]["id"], "a");
    // ...and on disk.
    let saved = read_json(&dir.path().join("config.json"));
    assert_eq!(saved["bridge"]["idle_timeout_ms"], 20000);
    assert_eq!(
        saved["bridge"]["streams"]["cam"]["rtsp_url"],
        "rtsp://127.0.0.1:1/cam"
    );
    assert_eq!(saved["x_edge"], json!({"note": "mine"}));
    assert_eq!(saved["manager"]["node_secret"], NODE_SECRET);
    assert_eq!(saved["flows"][0]["id"], "a");
    drop(q);
    assert_clean(&fm);
}

#[test]
fn a_flow_that_fails_to_start_is_rolled_back_and_the_ack_says_why() {
    let dir = TempDir::new("mgr-rollback");
    let (b_in, other) = (free_udp_port(), free_udp_port());
    let (b_rx, b_out) = udp_receiver();
    let mut fm = FakeManager::start(known_node());
    let q = Quoll::start(
        dir.path(),
        &config(&dir, plain(&fm), json!([udp_flow("b", b_in, b_out)])),
    );
    fm.expect("link up", t(20), |s| s.auth_results == ["ok"]);
    let limit = t(10);
    let path = dir.path().join("config.json");
    let file_before = std::fs::read(&path).unwrap();

    // A port another process holds: validation cannot know, the start fails.
    let squatter = UdpSocket::bind("127.0.0.1:0").unwrap();
    let busy = squatter.local_addr().unwrap().port();
    failed(
        &fm.command(
            json!({"type": "create_flow", "flow": udp_flow("c", busy, other)}),
            limit,
        ),
        "port_conflict",
    );
    assert_eq!(q.api("GET", "/api/v1/flows/c", None).0, 404, "c was kept");
    // An address this host does not have.
    let mut d = udp_flow("d", other, other);
    d["input"]["bind_addr"] = json!(format!("192.0.2.1:{other}"));
    let r = fm.command(json!({"type": "create_flow", "flow": d}), limit);
    failed(&r, "bind_failed");
    assert_eq!(q.api("GET", "/api/v1/flows/d", None).0, 404, "d was kept");
    // An update onto the busy port: b is back on its own config, running.
    failed(
        &fm.command(
            json!({"type": "update_flow", "flow_id": "b", "flow": udp_flow("b", busy, b_out)}),
            limit,
        ),
        "port_conflict",
    );
    let (code, b) = q.api("GET", "/api/v1/flows/b", None);
    assert_eq!(code, 200);
    assert_eq!(
        b["config"]["input"]["bind_addr"],
        format!("127.0.0.1:{b_in}")
    );
    assert_eq!(b["state"], "running", "{b}");
    assert!(
        std::fs::read(&path).unwrap() == file_before,
        "a failed command changed the config file"
    );
    let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
    for n in 0..20 {
        tx.send_to(&datagram(n), ("127.0.0.1", b_in)).unwrap();
    }
    assert!(
        !receive_until(&b_rx, t(10), |d| !d.is_empty()).is_empty(),
        "b does not forward after the rollback"
    );

    // Once the cause is gone, the manager's retry is a plain create.
    drop(squatter);
    let c = ok(&fm.command(
        json!({"type": "create_flow", "flow": udp_flow("c", busy, other)}),
        limit,
    ))
    .clone();
    assert_eq!(c["state"], "running");
    // Exactly one config change happened: events arrive in order, so by the time the
    // retry's event is in, the failures' would be too.
    fm.expect("the retry's config event", limit, |s| {
        s.has_event("Configuration updated")
    });
    let s = fm.state();
    let updates = s
        .events()
        .iter()
        .filter(|e| e["payload"]["message"] == "Configuration updated")
        .count();
    assert_eq!(updates, 1);
    drop(s);
    drop(q);
    assert_clean(&fm);
}

#[test]
fn a_url_without_a_path_reaches_ws_node() {
    let dir = TempDir::new("mgr-url-path");
    let fm = FakeManager::start(known_node());
    // The fake manager records any other upgrade path as a violation.
    let url = format!("ws://127.0.0.1:{}", fm.port);
    let manager = json!({ "urls": [url], "allow_plain_ws": true,
                          "node_id": NODE_ID, "node_secret": NODE_SECRET });
    let q = Quoll::start(dir.path(), &config(&dir, manager, json!([])));
    fm.expect("auth", t(20), |s| s.auth_results == ["ok"]);
    drop(q);
    assert_clean(&fm);
}

#[test]
fn the_node_pings_and_detects_a_manager_that_stops_answering() {
    let dir = TempDir::new("mgr-ping");
    let fm = FakeManager::start(known_node());
    let q = Quoll::start(dir.path(), &config(&dir, plain(&fm), json!([])));
    fm.expect("link up", t(20), |s| s.auth_results == ["ok"]);
    // The manager never pings; the node does, 10 s after the link came up (and 10 s after
    // each pong).
    fm.expect("a WebSocket Ping from the node", t(20), |s| s.pings >= 1);
    assert_eq!(fm.state().connections, 1, "an answered ping keeps the link");

    // The manager hangs: it reads nothing more, so no Pong comes back. The node gives up
    // on the link within ping interval + pong deadline (20 s) and reconnects.
    let hung = Instant::now();
    fm.set_reading(false);
    fm.expect("a new connection", t(40), |s| {
        s.connections >= 2 && s.auth_results == ["ok", "ok"]
    });
    assert!(
        hung.elapsed() >= Duration::from_secs(5),
        "{:?}",
        hung.elapsed()
    );
    assert!(
        wait_log(&q, "no pong within the deadline", t(5)),
        "{}",
        q.log()
    );
    fm.expect("the loss, reported on the new connection", t(20), |s| {
        s.events().iter().any(|e| {
            e["payload"]["message"] == "Manager connection lost, reconnecting"
                && e["payload"]["details"]["reason"] == "no pong within the deadline"
        })
    });
    drop(q);
    assert_clean(&fm);
}

#[test]
fn the_auth_failed_event_reaches_the_manager_after_a_later_successful_auth() {
    let dir = TempDir::new("mgr-auth-later");
    let fm = FakeManager::start(known_node());
    // The manager refuses the first auth (e.g. the node was briefly disabled), then accepts.
    fm.update(|s| {
        s.reject_auths = 1;
        s.reject_message = "Node disabled".into();
    });
    let q = Quoll::start(dir.path(), &config(&dir, plain(&fm), json!([])));
    fm.expect("the refused auth", t(20), |s| s.auth_results == ["error"]);
    let refused = Instant::now();
    // The auth backoff: 30-40 s, so the lockout (5 failures in 60 s) is never near.
    fm.expect("the accepted auth", t(60), |s| {
        s.auth_results == ["error", "ok"]
    });
    let waited = refused.elapsed();
    assert!(
        waited >= Duration::from_secs(25),
        "retried after {waited:?}"
    );
    fm.expect(
        "the critical event, delivered once the link is up",
        t(20),
        |s| {
            s.has_event("Manager authentication failed: Node disabled")
                && s.has_event("Connected to manager")
        },
    );
    let s = fm.state();
    let events = s.events();
    let failed = events
        .iter()
        .position(|e| e["payload"]["message"] == "Manager authentication failed: Node disabled")
        .unwrap();
    assert_eq!(events[failed]["payload"]["severity"], "critical");
    assert_eq!(events[failed]["payload"]["category"], "manager");
    // Raised at the failure, not at the delivery.
    let raised = parse_rfc3339_utc(events[failed]["timestamp"].as_str().unwrap()).unwrap();
    let delivered = s.messages[0]
        .at
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    assert!(
        raised + 20_000 < delivered,
        "raised {raised}, delivered {delivered}"
    );
    assert!(
        events
            .iter()
            .skip(failed)
            .any(|e| e["payload"]["message"] == "Connected to manager"),
        "connected is reported after the failure"
    );
    drop(s);
    drop(q);
    assert_clean(&fm);
}

#[test]
fn a_frame_too_large_to_read_costs_the_connection_not_the_node() {
    let dir = TempDir::new("mgr-huge-frame");
    let fm = FakeManager::start(known_node());
    let q = Quoll::start(dir.path(), &config(&dir, plain(&fm), json!([])));
    fm.expect("link up", t(20), |s| {
        s.auth_results == ["ok"] && !s.of_type("health").is_empty()
    });
    use tokio_tungstenite::tungstenite::Message;
    // Over the node's 16 MiB read limit (frames between 5 MB and that are read and
    // ignored: see garbage_from_the_manager_is_ignored).
    let sent = Instant::now();
    fm.send(Message::text("x".repeat(17 << 20)));
    fm.expect("the reconnect", t(20), |s| s.auth_results == ["ok", "ok"]);
    // The normal backoff (1 s), not the auth backoff (30 s and more).
    assert!(sent.elapsed() < t(10), "{:?}", sent.elapsed());
    assert!(
        wait_log(&q, "sent a frame too large to read", t(5)),
        "{}",
        q.log()
    );
    // Counted, and reported with the health of the new session.
    fm.expect("health on the new connection", t(20), |s| {
        s.of_type("health").iter().any(|r| r.conn == 1)
    });
    let h = fm
        .state()
        .of_type("health")
        .into_iter()
        .find(|r| r.conn == 1)
        .unwrap()
        .msg
        .clone();
    assert!(
        h["payload"]["manager_link"]["oversize_frames"].as_u64() >= Some(1),
        "{h}"
    );
    fm.expect("the loss event", t(20), |s| {
        s.events().iter().any(|e| {
            e["payload"]["message"] == "Manager connection lost, reconnecting"
                && e["payload"]["details"]["reason"]
                    .as_str()
                    .is_some_and(|r| r.contains("too large"))
        })
    });
    // The node itself never noticed.
    assert_eq!(q.api("GET", "/api/v1/flows", None).0, 200);
    drop(q);
    assert_clean(&fm);
}

/// Resource budgets (issue 13): every manager command that creates or changes flows is
/// refused whole with `limit_exceeded` when it would exceed a budget, nothing is saved, and
/// a push cannot lift the node's own `limits`.
#[test]
fn over_budget_commands_are_refused_with_limit_exceeded() {
    let dir = TempDir::new("mgr-limits");
    let (a_in, a_out, b_in, b_out) = (
        free_udp_port(),
        free_udp_port(),
        free_udp_port(),
        free_udp_port(),
    );
    let mut fm = FakeManager::start(known_node());
    let mut cfg = config(&dir, plain(&fm), json!([udp_flow("a", a_in, a_out)]));
    cfg["limits"] = json!({"max_flows": 1, "max_outputs_per_flow": 1, "max_ring_bytes": 4 << 20});
    let q = Quoll::start(dir.path(), &cfg);
    fm.expect("link up", t(20), |s| s.auth_results == ["ok"]);
    let limit = t(10);
    let path = dir.path().join("config.json");
    let file_before = std::fs::read(&path).unwrap();

    failed(
        &fm.command(
            json!({"type": "create_flow", "flow": udp_flow("b", b_in, b_out)}),
            limit,
        ),
        "limit_exceeded",
    );
    let mut big = udp_flow("a", a_in, a_out);
    big["ring_chunks"] = json!(65_536);
    failed(
        &fm.command(
            json!({"type": "update_flow", "flow_id": "a", "flow": big}),
            limit,
        ),
        "limit_exceeded",
    );
    failed(
        &fm.command(
            json!({"type": "add_output", "flow_id": "a",
                   "output": {"type": "udp", "id": "o2", "dest_addr": format!("127.0.0.1:{b_out}")}}),
            limit,
        ),
        "limit_exceeded",
    );
    // A whole config with two flows, and `limits` raised in the same push: the node keeps
    // its own limits, so the push is refused and nothing of it applies.
    let push = json!({"version": 1, "server": cfg["server"].clone(), "tunnels": [],
        "limits": {"max_flows": 10},
        "flows": [udp_flow("a", a_in, a_out), udp_flow("b", b_in, b_out)]});
    let r = fm.command(json!({"type": "update_config", "config": push}), limit);
    failed(&r, "limit_exceeded");
    assert!(
        r["payload"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("limits.max_flows")),
        "{r}"
    );

    assert_eq!(q.api("GET", "/api/v1/flows/b", None).0, 404);
    let (_, a) = q.api("GET", "/api/v1/flows/a", None);
    assert_eq!(a["state"], "running", "{a}");
    assert!(a["config"].get("ring_chunks").is_none(), "{a}");
    assert_eq!(a["config"]["outputs"].as_array().map(Vec::len), Some(1));
    assert!(
        std::fs::read(&path).unwrap() == file_before,
        "a refused command changed the config file"
    );
    drop(q);
    assert_clean(&fm);
}
