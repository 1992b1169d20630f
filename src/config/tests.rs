//! Unit tests: one failing config per rule, with the exact path and message.

use serde_json::{Value, json};

use super::*;

/// A valid config touching every kind of field the rules look at.
fn base() -> Value {
    json!({
        "version": 1,
        "server": {"listen_addr": "127.0.0.1", "listen_port": 8080},
        "flows": [
            {"id": "f1", "name": "one", "enabled": true,
             "input": {"type": "udp", "bind_addr": "0.0.0.0:5000"},
             "outputs": [
                {"type": "udp", "id": "o1", "name": "a", "dest_addr": "239.1.1.1:5000"},
                {"type": "rtp", "id": "o2", "name": "b", "dest_addr": "127.0.0.1:6000"}
             ]},
            {"id": "f2", "name": "two", "enabled": true,
             "input": {"type": "rtp", "bind_addr": "239.2.2.2:5002", "interface_addr": "127.0.0.1"},
             "outputs": []}
        ]
    })
}

/// The problems `parse` reports for `base()` after `change`, as displayed.
fn errs(change: impl FnOnce(&mut Value)) -> Vec<String> {
    let mut v = base();
    change(&mut v);
    match parse(&v.to_string()) {
        Ok(_) => Vec::new(),
        Err(e) => e.iter().map(ToString::to_string).collect(),
    }
}

fn one(change: impl FnOnce(&mut Value), expected: &str) {
    assert_eq!(errs(change), vec![expected.to_string()]);
}

#[test]
fn base_and_embedded_default_are_valid() {
    assert_eq!(errs(|_| {}), Vec::<String>::new());
    let cfg = parse(EMBEDDED_DEFAULT).expect("embedded default must validate");
    assert_eq!(cfg.flows.len(), 1);
}

#[test]
fn defaults_apply_when_fields_are_absent() {
    let cfg = parse(
        r#"{"flows":[{"id":"a","input":{"type":"udp","bind_addr":"127.0.0.1:5000"},
        "outputs":[{"type":"udp","id":"o","dest_addr":"127.0.0.1:5001"}]}]}"#,
    )
    .unwrap();
    assert_eq!(cfg.version, 1);
    assert_eq!(cfg.server, ServerConfig::default());
    assert_eq!(cfg.server.listen_port, 8080);
    assert_eq!(cfg.storage.data_dir, "quoll-data");
    assert_eq!(cfg.storage.event_log_max_bytes, 16_777_216);
    assert_eq!(cfg.storage.event_commit_max_delay_ms, 50);
    let f = &cfg.flows[0];
    assert!(f.enabled);
    assert_eq!(f.name, "");
    assert_eq!(f.ring_chunks, None);
    match &f.outputs[0].kind {
        OutputKind::Udp(u) => {
            assert_eq!(u.dscp, 46);
            assert_eq!(u.ttl, None);
        }
        other => panic!("expected udp, got {other:?}"),
    }
    // Defaults are written out, so the file shows what is in force.
    let v = cfg.to_value();
    assert_eq!(v["storage"]["event_log_max_bytes"], 16_777_216);
    assert_eq!(v["storage"]["event_commit_max_delay_ms"], 50);
}

// ---- parsing: syntax and shape errors carry paths ----

#[test]
fn syntax_error_is_reported_at_root_with_line_and_column() {
    let e = parse("{\"version\": 1,\n  \"flows\": [}").unwrap_err();
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].path, "$");
    assert!(e[0].message.starts_with("not valid JSON: "), "{}", e[0]);
    assert!(e[0].message.contains("line 2"), "{}", e[0]);
}

#[test]
fn type_error_inside_an_output_names_the_field() {
    one(
        |v| v["flows"][0]["outputs"][1]["dscp"] = json!("x"),
        r#"flows[0].outputs[1].dscp: invalid type: string "x", expected u8"#,
    );
}

#[test]
fn shape_errors_are_all_reported_in_document_order() {
    let e = errs(|v| {
        v["server"]["listen_port"] = json!(70000);
        v["flows"][0]["input"]
            .as_object_mut()
            .unwrap()
            .remove("bind_addr");
        v["flows"][0]["outputs"][0]["ttl"] = json!(-1);
        v["flows"][1]["enabled"] = json!("yes");
        v["storage"] = json!({"event_log_max_bytes": "big"});
    });
    assert_eq!(
        e,
        vec![
            "server.listen_port: invalid value: integer `70000`, expected u16",
            "flows[0].input.bind_addr: missing required field",
            "flows[0].outputs[0].ttl: invalid value: integer `-1`, expected u32",
            "flows[1].enabled: invalid type: string \"yes\", expected a boolean",
            "storage.event_log_max_bytes: invalid type: string \"big\", expected u64",
        ]
    );
}

#[test]
fn unknown_input_type_lists_the_known_types() {
    one(
        |v| v["flows"][0]["input"]["type"] = json!("ndi"),
        r#"flows[0].input.type: unknown input type "ndi" (known types: udp, rtp, srt, rtmp, rtsp, webrtc, whep)"#,
    );
}

#[test]
fn unknown_output_type_lists_the_known_types() {
    one(
        |v| v["flows"][1]["outputs"] = json!([{"type": "st2110", "id": "x"}]),
        r#"flows[1].outputs[0].type: unknown output type "st2110" (known types: udp, rtp, srt, rtmp, hls, webrtc)"#,
    );
}

#[test]
fn missing_or_non_string_type() {
    one(
        |v| {
            v["flows"][0]["input"]
                .as_object_mut()
                .unwrap()
                .remove("type");
        },
        "flows[0].input.type: missing required field (known types: udp, rtp, srt, rtmp, rtsp, webrtc, whep)",
    );
    one(
        |v| v["flows"][0]["outputs"][0]["type"] = json!(7),
        "flows[0].outputs[0].type: expected a string naming the output type, found number `7` (known types: udp, rtp, srt, rtmp, hls, webrtc)",
    );
}

#[test]
fn wrong_container_types() {
    assert_eq!(
        parse("[1,2]").unwrap_err()[0].to_string(),
        "$: expected an object, found an array"
    );
    one(
        |v| v["flows"] = json!({}),
        "flows: expected an array, found an object",
    );
    one(
        |v| v["flows"][0]["outputs"] = json!("none"),
        r#"flows[0].outputs: expected an array, found string "none""#,
    );
    one(
        |v| v["flows"][1] = json!(null),
        "flows[1]: expected an object, found null",
    );
    one(
        |v| v["flows"][0]["input"]["allowed_sources"] = json!(["10.0.0.1", 5]),
        "flows[0].input.allowed_sources[1]: expected a string, found number `5`",
    );
    one(
        |v| v["server"] = json!(1),
        "server: expected an object, found number `1`",
    );
}

#[test]
fn flow_and_output_readers_prefix_their_path() {
    let e =
        FlowConfig::from_value_at(json!({"id": 1, "input": {"type": "udp"}}), "flow").unwrap_err();
    let e: Vec<String> = e.iter().map(ToString::to_string).collect();
    assert_eq!(
        e,
        vec![
            "flow.id: invalid type: integer `1`, expected a string",
            "flow.input.bind_addr: missing required field",
        ]
    );
    let e = serde_json::from_value::<OutputConfig>(json!({"type": "udp", "id": "o"}))
        .unwrap_err()
        .to_string();
    assert_eq!(e, "dest_addr: missing required field");
}

#[test]
fn no_input_makes_parse_panic() {
    // A mix of truncations and odd values around a real document; parse must return, not
    // panic. (proptest below covers arbitrary JSON.)
    let text = base().to_string();
    for i in 0..text.len() {
        let _ = parse(&text[..i]);
    }
    for odd in [
        json!(null),
        json!(-1),
        json!(1e300),
        json!(u64::MAX),
        json!("\u{0}"),
        json!([[[[]]]]),
        json!({"": {}}),
    ] {
        for ptr in [
            "/version",
            "/server",
            "/server/listen_port",
            "/flows/0",
            "/flows/0/id",
            "/flows/0/input",
            "/flows/0/input/bind_addr",
            "/flows/0/outputs/0",
            "/flows/0/outputs/0/dscp",
            "/flows/0/ring_chunks",
            "/storage",
        ] {
            let mut v = base();
            if let Some(slot) = v.pointer_mut(ptr) {
                *slot = odd.clone();
            } else if let Some((parent, key)) = ptr.rsplit_once('/')
                && let Some(Value::Object(m)) = v.pointer_mut(parent)
            {
                m.insert(key.to_string(), odd.clone());
            }
            let _ = parse(&v.to_string());
        }
    }
}

mod fuzz {
    use proptest::prelude::*;
    use serde_json::Value;

    fn any_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            prop_oneof![
                Just("udp".to_string()),
                Just("srt".to_string()),
                Just("0.0.0.0:5000".to_string()),
                ".{0,12}"
            ]
            .prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::vec(
                    (
                        prop_oneof![
                            Just("type".to_string()),
                            Just("id".to_string()),
                            Just("flows".to_string()),
                            Just("input".to_string()),
                            Just("outputs".to_string()),
                            Just("bind_addr".to_string()),
                            Just("dest_addr".to_string()),
                            "[a-z_]{1,8}"
                        ],
                        inner
                    ),
                    0..6
                )
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn parse_never_panics_and_valid_results_round_trip(v in any_json()) {
            if let Ok(cfg) = super::parse(&v.to_string()) {
                let again = super::parse(&cfg.to_value().to_string()).unwrap();
                prop_assert_eq!(again, cfg);
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(s in ".{0,64}") {
            let _ = super::parse(&s);
        }
    }
}

// ---- round trip ----

/// Unknown keys at every level, every unsupported type with its spec fields, all defaults
/// spelled out so the JSON written back must equal the JSON read.
fn everything() -> Value {
    let srt = json!({"mode": "caller", "local_addr": "0.0.0.0:9000", "remote_addr": "10.0.0.2:9000",
        "latency_ms": 120, "peer_idle_timeout_secs": 30, "passphrase": "0123456789abc",
        "aes_key_len": 32, "stream_id": "#!::r=live", "future_srt": {"x": [1, 2]},
        "redundancy": {"mode": "caller", "local_addr": "0.0.0.0:9001",
                       "remote_addr": "10.0.1.2:9000", "latency_ms": 200,
                       "peer_idle_timeout_secs": 30, "passphrase": "abcdefghijk"}});
    let mut srt_in = srt.clone();
    srt_in["type"] = json!("srt");
    let mut srt_out = srt;
    srt_out["type"] = json!("srt");
    srt_out["id"] = json!("srt-out");
    srt_out["name"] = json!("SRT");
    // Callers from ephemeral ports: no conflict with the SRT input's fixed ports.
    srt_out["local_addr"] = json!("0.0.0.0:0");
    srt_out["redundancy"]["local_addr"] = json!("0.0.0.0:0");
    json!({
        "version": 1,
        "server": {"listen_addr": "0.0.0.0", "listen_port": 8080,
                   "api_token": "api-token-everything-1", "allowed_hosts": ["quoll-box"],
                   "tls": {"cert": "c.pem"}},
        "flows": [
            {"id": "udp-flow", "name": "U", "enabled": false,
             "input": {"type": "udp", "bind_addr": "239.1.1.1:5000", "interface_addr": "10.0.0.1",
                       "allowed_sources": ["10.0.0.9"], "fec": {"cols": 5}},
             "outputs": [
                {"type": "udp", "id": "u1", "name": "A", "dest_addr": "239.9.9.9:5000",
                 "bind_addr": "10.0.0.1:0", "interface_addr": "10.0.0.1", "dscp": 34, "ttl": 16,
                 "pacing": "cbr", "nested": {"type": "not-a-tag"}},
                {"type": "rtp", "id": "r1", "name": "B", "dest_addr": "[ff0e::1]:5004", "dscp": 46,
                 "ssrc": 1234},
                srt_out,
                {"type": "rtmp", "id": "rtmp-out", "name": "YT", "dest_url": "rtmp://a/live",
                 "stream_key": "k", "reconnect_delay_secs": 5, "max_reconnect_attempts": 3},
                {"type": "hls", "id": "hls-out", "name": "H", "ingest_url": "https://h/x",
                 "segment_duration_ms": 2000, "playlist_size": 6, "program_date_time": false,
                 "max_segments": 5, "auth_token": "t"},
                {"type": "webrtc", "id": "w", "name": "W", "mode": "whip_client",
                 "whip_url": "https://w", "bearer_token": "b", "video_only": true}
             ],
             "ring_chunks": 512, "tags": ["a"]},
            {"id": "srt-flow", "name": "S", "enabled": true, "input": srt_in, "outputs": []},
            {"id": "rtmp-flow", "name": "", "enabled": true,
             "input": {"type": "rtmp", "listen_addr": "0.0.0.0:1935", "app": "live",
                       "stream_key": "s", "max_publishers": 1}, "outputs": []},
            {"id": "rtsp-flow", "name": "", "enabled": true,
             "input": {"type": "rtsp", "rtsp_url": "rtsp://cam/1", "username": "u",
                       "password": "p", "transport": "tcp", "timeout_secs": 10,
                       "reconnect_delay_secs": 5}, "outputs": []},
            {"id": "whip-flow", "name": "", "enabled": true,
             "input": {"type": "webrtc", "bearer_token": "b", "video_only": false,
                       "public_ip": "1.2.3.4", "stun_server": "stun:s:3478"}, "outputs": []},
            {"id": "whep-flow", "name": "", "enabled": true,
             "input": {"type": "whep", "whep_url": "https://w/e", "video_only": true},
             "outputs": []}
        ],
        "tunnels": [{"id": "0192f3a4-5b6c-7d8e-9fa0-b1c2d3e4f5a6", "name": "t1", "enabled": true,
                     "protocol": "udp", "mode": "relay", "direction": "egress",
                     "local_addr": "0.0.0.0:9000", "relay_addr": "relay.example:4433",
                     "tunnel_encryption_key": "a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0",
                     "tunnel_bind_secret": "b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1",
                     "key": "secret-key", "relay": "r:1"}],
        "storage": {"data_dir": "/var/lib/quoll", "event_log_max_bytes": 2097152,
                    "event_commit_max_delay_ms": 10, "compress": true},
        "manager": {"enabled": true, "urls": ["wss://m:8443/ws/node"],
                    "registration_token": "rt", "node_id": "nid", "node_secret": "ns",
                    "accept_self_signed_cert": false, "allow_plain_ws": false,
                    "protocol_version": 1, "retry": {"secret": "x"}},
        "bridge": {"streams": {
                       "cam1": {"rtsp_url": "rtsp://cam/2", "username": "u", "password": "bp",
                                "transport": "udp", "timeout_secs": 7, "worker": "ffmpeg",
                                "ffmpeg_video": "mpeg1video", "label": "door"},
                       "studio": {"flow_id": "udp-flow", "worker": "inprocess"}},
                   "idle_timeout_ms": 15000, "sweep_interval_ms": 5000,
                   "restart_delay_ms": 2000, "max_restarts": 5, "max_clients_per_stream": 32,
                   "client_queue_chunks": 512, "max_client_lags": 3, "ffmpeg_path": "ffmpeg",
                   "allowed_origins": ["http://dash.example:3000"],
                   "viewer_token": "viewer-token-everything-1", "enabled": false},
        "zz_future": {"deep": [{"passphrase": "pp"}]}
    })
}

#[test]
fn round_trip_is_lossless_at_every_level() {
    let original = everything();
    let text = serde_json::to_string_pretty(&original).unwrap();
    let cfg = parse_unvalidated(&text).expect("parses");
    let written = cfg.to_value();
    assert_eq!(
        written, original,
        "JSON written back differs from JSON read"
    );
    let again = parse_unvalidated(&written.to_string()).unwrap();
    assert_eq!(again, cfg);
    // Through serde as other modules use it, too.
    let via_serde: Config = serde_json::from_str(&serde_json::to_string(&cfg).unwrap()).unwrap();
    assert_eq!(via_serde, cfg);

    // `type` is neither lost nor duplicated: one per input and output, plus the one nested
    // inside an unknown field.
    let compact = written.to_string();
    let n_inputs_outputs = 6 + 6;
    assert_eq!(compact.matches("\"type\"").count(), n_inputs_outputs + 1);
    // And it is not kept in `extra` as well as in the enum.
    match &cfg.flows[1].input {
        InputConfig::Srt(c) => {
            assert!(!c.extra.contains_key("type"));
            assert_eq!(c.extra.keys().collect::<Vec<_>>(), ["future_srt"]);
            assert_eq!(c.latency_ms, 120);
            assert_eq!(c.mode, SrtMode::Caller);
            assert_eq!(c.redundancy.as_ref().map(|l| l.latency_ms), Some(200));
        }
        other => panic!("expected srt, got {other:?}"),
    }
    match &cfg.flows[0].outputs[0].kind {
        OutputKind::Udp(u) => {
            assert_eq!(u.extra.keys().collect::<Vec<_>>(), ["pacing", "nested"]);
        }
        other => panic!("expected udp, got {other:?}"),
    }
    assert_eq!(cfg.flows[0].extra["tags"], json!(["a"]));
    assert_eq!(cfg.server.extra["tls"], json!({"cert": "c.pem"}));
    assert_eq!(cfg.storage.extra["compress"], json!(true));
    assert!(cfg.extra.contains_key("zz_future"));
}

#[test]
fn known_keys_win_over_a_hand_built_extra() {
    let mut cfg = parse(EMBEDDED_DEFAULT).unwrap();
    if let OutputKind::Udp(u) = &mut cfg.flows[0].outputs[0].kind {
        u.extra.insert("type".into(), json!("srt"));
        u.extra.insert("dscp".into(), json!(0));
    }
    let text = cfg.to_value().to_string();
    assert_eq!(parse(&text).unwrap(), {
        let mut c = cfg.clone();
        if let OutputKind::Udp(u) = &mut c.flows[0].outputs[0].kind {
            u.extra.clear();
        }
        c
    });
}

#[test]
fn unsupported_types_round_trip_but_do_not_validate() {
    let e = parse(&everything().to_string()).unwrap_err();
    let e: Vec<String> = e.iter().map(ToString::to_string).collect();
    let out = OutputKind::SUPPORTED_TYPES.join(", ");
    let inputs = InputConfig::SUPPORTED_TYPES.join(", ");
    let mut want = Vec::new();
    // The `rtmp` feature runs the rtmp output (its extra keys are kept, like any block's).
    if !cfg!(feature = "rtmp") {
        want.push(format!(
            r#"flows[0].outputs[3].type: "rtmp" is not supported by this build yet (supported: {out})"#
        ));
    }
    // The `hls` feature runs the hls output (its extra keys are kept, like any block's).
    if !cfg!(feature = "hls") {
        want.push(format!(
            r#"flows[0].outputs[4].type: "hls" is not supported by this build yet (supported: {out})"#
        ));
    }
    want.push(format!(
        r#"flows[0].outputs[5].type: "webrtc" is not supported by this build yet (supported: {out})"#
    ));
    if !cfg!(feature = "rtmp") {
        want.push(format!(
            r#"flows[2].input.type: "rtmp" is not supported by this build yet (supported: {inputs})"#
        ));
    }
    if !cfg!(feature = "rtsp") {
        want.push(format!(
            r#"flows[3].input.type: "rtsp" is not supported by this build yet (supported: {inputs})"#
        ));
    }
    for (i, t) in [(4, "webrtc"), (5, "whep")] {
        want.push(format!(
            r#"flows[{i}].input.type: "{t}" is not supported by this build yet (supported: {inputs})"#
        ));
    }
    if !cfg!(feature = "rtsp") {
        want.push("bridge.streams: the RTSP bridge is not in this build".to_owned());
    }
    assert_eq!(e, want);
}

// ---- validation, one rule at a time ----

/// A build without the `rtsp` feature refuses what it cannot run, where it is written: an
/// RTSP input by its type, bridge streams as a whole; a bridge block without streams is kept.
#[cfg(not(feature = "rtsp"))]
#[test]
fn rtsp_and_bridge_streams_are_refused_without_the_feature() {
    let e = errs(|v| v["flows"][1]["input"] = json!({"type": "rtsp", "rtsp_url": "rtsp://a/b"}));
    assert_eq!(
        e,
        [format!(
            r#"flows[1].input.type: "rtsp" is not supported by this build yet (supported: {})"#,
            InputConfig::SUPPORTED_TYPES.join(", ")
        )]
    );
    let e = errs(|v| v["bridge"] = json!({"streams": {"c": {"rtsp_url": "rtsp://a/b"}}}));
    assert_eq!(e, ["bridge.streams: the RTSP bridge is not in this build"]);
    assert!(errs(|v| v["bridge"] = json!({"streams": {}, "idle_timeout_ms": 9000})).is_empty());
    assert!(errs(|v| v["bridge"] = json!({})).is_empty());
}

#[cfg(feature = "rtmp")]
#[test]
fn rtmp_input_fields() {
    let rtmp = |f: Value| {
        move |v: &mut Value| {
            let mut i = json!({"type": "rtmp", "listen_addr": "0.0.0.0:1935", "app": "live",
                               "stream_key": "k1"});
            for (k, x) in f.as_object().unwrap() {
                i[k] = x.clone();
            }
            v["flows"][0]["input"] = i;
        }
    };
    assert!(errs(rtmp(json!({}))).is_empty());
    one(
        rtmp(json!({"listen_addr": "0.0.0.0:0"})),
        "flows[0].input.listen_addr: port must not be 0 (publishers need a fixed port)",
    );
    one(
        rtmp(json!({"app": "/"})),
        "flows[0].input.app: must be a non-empty name without spaces or '?'",
    );
    one(
        rtmp(json!({"stream_key": ""})),
        "flows[0].input.stream_key: must not be empty",
    );
    // The key is a secret: never in Debug output or a redacted config.
    let cfg = parse(&{
        let mut v = base();
        rtmp(json!({"stream_key": "hunter2-key"}))(&mut v);
        v.to_string()
    })
    .unwrap();
    assert!(!format!("{:?}", cfg.flows[0].input).contains("hunter2"));
    assert!(!cfg.redacted().to_string().contains("hunter2"));
}

#[cfg(feature = "rtmp")]
#[test]
fn rtmp_output_fields_and_the_key_never_shows() {
    let rtmp = |f: Value| {
        move |v: &mut Value| {
            let mut o = json!({"type": "rtmp", "id": "push", "url": "rtmp://10.0.0.5/live/k1"});
            for (k, x) in f.as_object().unwrap() {
                o[k] = x.clone();
            }
            v["flows"][0]["outputs"] = json!([o]);
        }
    };
    assert!(errs(rtmp(json!({}))).is_empty());
    assert!(
        errs(rtmp(
            json!({"url": "rtmps://h:4443/app/k", "cert_fingerprint": "ab".repeat(32)})
        ))
        .is_empty()
    );
    assert!(errs(rtmp(json!({"url": "rtmp://h/app", "stream_key": "k"}))).is_empty());
    // The manager's form.
    let manager_form = |v: &mut Value| {
        v["flows"][0]["outputs"] = json!([{"type": "rtmp", "id": "push",
            "dest_url": "rtmp://h/app", "stream_key": "k", "reconnect_delay_secs": 5}]);
    };
    assert!(errs(manager_form).is_empty());
    one(
        |v: &mut Value| {
            rtmp(json!({}))(v);
            v["flows"][0]["outputs"][0]["dest_url"] = json!("rtmp://h/app");
        },
        "flows[0].outputs[0].dest_url: url and dest_url both given: keep one",
    );
    one(
        |v: &mut Value| {
            rtmp(json!({}))(v);
            v["flows"][0]["outputs"][0]
                .as_object_mut()
                .unwrap()
                .remove("url");
        },
        "flows[0].outputs[0].url: required (rtmp(s)://host[:port]/app/key, or dest_url with stream_key)",
    );
    one(
        rtmp(json!({"url": "rtmp://h/app"})),
        "flows[0].outputs[0].url: has no stream key: expected rtmp(s)://host[:port]/app/key, or the key in stream_key",
    );
    one(
        rtmp(json!({"url": "srt://h/app/k"})),
        r#"flows[0].outputs[0].url: scheme "srt" is not rtmp or rtmps (expected rtmp(s)://host[:port]/app/key)"#,
    );
    one(
        rtmp(json!({"cert_fingerprint": "ab".repeat(32)})),
        "flows[0].outputs[0].cert_fingerprint: only for an rtmps:// url (plain RTMP has no certificate)",
    );
    one(
        rtmp(json!({"url": "rtmps://h/a/k", "cert_fingerprint": "zz"})),
        r#"flows[0].outputs[0].cert_fingerprint: "zz" is not a SHA-256 fingerprint (64 hex digits, colons allowed)"#,
    );
    one(
        |v: &mut Value| {
            rtmp(json!({}))(v);
            v["security"] = json!({"outbound_allow": ["192.168.0.0/16"]});
        },
        "flows[0].outputs[0].url: 10.0.0.5 is not in security.outbound_allow",
    );
    // The key is a secret: masked in the URL of a redacted config (get_config), absent
    // from Debug, and a masked URL pushed back gets its key again.
    let cfg = parse(&{
        let mut v = base();
        rtmp(json!({"url": "rtmps://u:pw@ingest.example/live/hunter2-key?tok=s3"}))(&mut v);
        v["flows"][0]["outputs"][0]["cert_fingerprint"] = json!("ab".repeat(32));
        v.to_string()
    })
    .unwrap();
    let red = cfg.redacted();
    let text = red.to_string();
    assert!(
        !text.contains("hunter2") && !text.contains("s3") && !text.contains("pw"),
        "{text}"
    );
    assert_eq!(
        red["flows"][0]["outputs"][0]["url"],
        json!("rtmps://***@ingest.example/live/***")
    );
    assert!(!format!("{:?}", cfg.flows[0].outputs[0]).contains("hunter2"));
    assert!(!format!("{cfg:?}").contains("hunter2"));
    let mut pushed = red.clone();
    restore_secrets(&mut pushed, &cfg.to_value());
    assert_eq!(pushed, cfg.to_value(), "the real URL is restored");
    // A URL the manager changed is its own.
    let mut pushed = red;
    pushed["flows"][0]["outputs"][0]["url"] = json!("rtmp://other/live/new-key");
    restore_secrets(&mut pushed, &cfg.to_value());
    assert_eq!(
        pushed["flows"][0]["outputs"][0]["url"],
        json!("rtmp://other/live/new-key")
    );
    // The key apart (the manager's form) is removed like any secret.
    let cfg = parse(&{
        let mut v = base();
        rtmp(json!({"url": "rtmp://h/live", "stream_key": "hunter2-key"}))(&mut v);
        v.to_string()
    })
    .unwrap();
    assert!(!cfg.redacted().to_string().contains("hunter2"));
    assert_eq!(
        cfg.redacted()["flows"][0]["outputs"][0]["url"],
        json!("rtmp://h/live")
    );
    // A key in `dest_url` is masked too, and restored.
    let cfg = parse(&{
        let mut v = base();
        v["flows"][0]["outputs"] = json!([{"type": "rtmp", "id": "push",
            "dest_url": "rtmp://h/live/hunter2-key"}]);
        v.to_string()
    })
    .unwrap();
    let red = cfg.redacted();
    assert_eq!(
        red["flows"][0]["outputs"][0]["dest_url"],
        json!("rtmp://h/live/***")
    );
    let mut pushed = red;
    restore_secrets(&mut pushed, &cfg.to_value());
    assert_eq!(pushed, cfg.to_value());
}

#[test]
fn version_must_be_1() {
    one(
        |v| v["version"] = json!(2),
        "version: unsupported version 2 (this build reads version 1)",
    );
}

#[test]
fn server_rules() {
    one(
        |v| v["server"]["listen_addr"] = json!("localhost"),
        r#"server.listen_addr: "localhost" is not an IP address"#,
    );
    one(
        |v| v["server"]["listen_port"] = json!(0),
        "server.listen_port: must not be 0",
    );
    assert!(errs(|v| v["server"]["listen_addr"] = json!("::")).is_empty());
}

#[test]
fn server_connection_limits_are_optional_and_checked() {
    let cfg = parse(&base().to_string()).unwrap();
    assert_eq!(
        (
            cfg.server.max_connections,
            cfg.server.max_connections_per_ip,
            cfg.server.header_timeout_ms,
            cfg.server.idle_timeout_ms
        ),
        (None, None, None, None)
    );
    // Absent fields are not written back: the manager's view of `server` is unchanged.
    assert_eq!(
        cfg.server.to_value(),
        json!({"listen_addr": "127.0.0.1", "listen_port": 8080})
    );
    let set = json!({"listen_addr": "127.0.0.1", "listen_port": 8080, "max_connections": 100,
        "max_connections_per_ip": 10, "header_timeout_ms": 5000, "idle_timeout_ms": 20000});
    let mut v = base();
    v["server"] = set.clone();
    let cfg = parse(&v.to_string()).unwrap();
    assert_eq!(cfg.server.max_connections, Some(100));
    assert_eq!(cfg.server.to_value(), set);
    one(
        |v| v["server"]["max_connections"] = json!(0),
        "server.max_connections: 0 is out of range (1..=65536)",
    );
    one(
        |v| {
            v["server"]["max_connections"] = json!(8);
            v["server"]["max_connections_per_ip"] = json!(9);
        },
        "server.max_connections_per_ip: 9 is above server.max_connections (8)",
    );
    one(
        |v| v["server"]["header_timeout_ms"] = json!(10),
        "server.header_timeout_ms: 10 is out of range (100..=3600000)",
    );
    one(
        |v| v["server"]["idle_timeout_ms"] = json!("1s"),
        "server.idle_timeout_ms: invalid type: string \"1s\", expected u64",
    );
}

#[test]
fn limits_block_round_trips_and_is_checked() {
    let mut v = base();
    v["limits"] = json!({"max_flows": 4, "max_outputs_per_flow": 2,
        "max_ring_bytes": 8388608, "x_note": "kept"});
    let cfg = parse(&v.to_string()).unwrap();
    assert_eq!(cfg.limits.max_flows, Some(4));
    assert_eq!(cfg.limits.max_ring_bytes, Some(8 << 20));
    assert_eq!(cfg.to_value()["limits"], v["limits"]);
    // Absent: not written back.
    assert!(
        parse(&base().to_string())
            .unwrap()
            .to_value()
            .get("limits")
            .is_none()
    );
    one(
        |v| v["limits"] = json!({"max_flows": 0}),
        "limits.max_flows: 0 is out of range (1..=4096)",
    );
    one(
        |v| v["limits"] = json!({"max_outputs_per_flow": 5000}),
        "limits.max_outputs_per_flow: 5000 is out of range (1..=1024)",
    );
    one(
        |v| v["limits"] = json!({"max_ring_bytes": 1000}),
        "limits.max_ring_bytes: 1000 is out of range (1048576..=68719476736)",
    );
    one(
        |v| v["limits"] = json!([]),
        "limits: expected an object, found an array",
    );
}

#[test]
fn flow_id_rules() {
    one(
        |v| v["flows"][0]["id"] = json!(""),
        "flows[0].id: must not be empty",
    );
    one(
        |v| v["flows"][0]["id"] = json!("a/b"),
        r#"flows[0].id: "a/b" contains '/'; only letters, digits, '.', '_' and '-' are allowed"#,
    );
    one(
        |v| v["flows"][0]["id"] = json!("é"),
        r#"flows[0].id: "é" contains 'é'; only letters, digits, '.', '_' and '-' are allowed"#,
    );
    let long = "a".repeat(65);
    one(
        |v| v["flows"][0]["id"] = json!(long),
        &format!(r#"flows[0].id: "{long}" is 65 characters long (at most 64)"#),
    );
    assert!(errs(|v| v["flows"][0]["id"] = json!("A.z_0-9".repeat(10)[..64])).is_empty());
    one(
        |v| v["flows"][1]["id"] = json!("f1"),
        r#"flows[1].id: "f1" is already used by flows[0].id"#,
    );
}

#[test]
fn output_id_rules() {
    one(
        |v| v["flows"][0]["outputs"][1]["id"] = json!(""),
        "flows[0].outputs[1].id: must not be empty",
    );
    one(
        |v| v["flows"][0]["outputs"][1]["id"] = json!("o 2"),
        r#"flows[0].outputs[1].id: "o 2" contains ' '; only letters, digits, '.', '_' and '-' are allowed"#,
    );
    one(
        |v| v["flows"][0]["outputs"][1]["id"] = json!("o1"),
        r#"flows[0].outputs[1].id: "o1" is already used by flows[0].outputs[0].id in this flow"#,
    );
    // Output ids are scoped to their flow.
    assert!(
        errs(|v| v["flows"][1]["outputs"] =
            json!([{"type": "udp", "id": "o1", "dest_addr": "127.0.0.1:7000"}]))
        .is_empty()
    );
}

#[test]
fn unsupported_input_and_output_types() {
    one(
        |v| v["flows"][0]["input"] = json!({"type": "whep", "url": "http://x/whep"}),
        &format!(
            r#"flows[0].input.type: "whep" is not supported by this build yet (supported: {})"#,
            InputConfig::SUPPORTED_TYPES.join(", ")
        ),
    );
    one(
        |v| {
            v["flows"][0]["outputs"][0] =
                json!({"type": "webrtc", "id": "w", "whip_url": "https://x"})
        },
        &format!(
            r#"flows[0].outputs[0].type: "webrtc" is not supported by this build yet (supported: {})"#,
            OutputKind::SUPPORTED_TYPES.join(", ")
        ),
    );
}

#[cfg(feature = "hls")]
#[test]
fn hls_output_rules() {
    let hls = |extra: Value| {
        let mut o = json!({"type": "hls", "id": "h", "ingest_url": "http://127.0.0.1:8080/live/"});
        for (k, v) in extra.as_object().unwrap() {
            o[k] = v.clone();
        }
        move |v: &mut Value| v["flows"][0]["outputs"][0] = o.clone()
    };
    assert!(errs(hls(json!({}))).is_empty());
    assert!(
        errs(hls(
            json!({"segment_duration_ms": 6000, "playlist_size": 10,
            "headers": {"X-Token": "t"}, "username": "u", "password": "p"})
        ))
        .is_empty()
    );
    one(
        hls(json!({"ingest_url": "ftp://h/x"})),
        r#"flows[0].outputs[0].ingest_url: scheme "ftp" is not http or https (expected http(s)://host[:port]/path/)"#,
    );
    one(
        hls(json!({"ingest_url": "nope"})),
        "flows[0].outputs[0].ingest_url: not a URL (expected http(s)://host[:port]/path/)",
    );
    one(
        hls(json!({"segment_duration_ms": 100})),
        "flows[0].outputs[0].segment_duration_ms: 100 is out of range (500..=30000)",
    );
    one(
        hls(json!({"playlist_size": 1})),
        "flows[0].outputs[0].playlist_size: 1 is out of range (2..=30)",
    );
    one(
        hls(json!({"headers": {"Bad Name": "x"}})),
        "flows[0].outputs[0].headers.Bad Name: not a valid HTTP header name",
    );
}

#[test]
fn address_rules() {
    one(
        |v| v["flows"][0]["input"]["bind_addr"] = json!("x"),
        r#"flows[0].input.bind_addr: "x" is not a socket address (expected ip:port, e.g. 239.1.1.1:5000 or [ff0e::1]:5000)"#,
    );
    one(
        |v| v["flows"][0]["input"]["bind_addr"] = json!("127.0.0.1:0"),
        "flows[0].input.bind_addr: port must not be 0 (senders need a fixed port)",
    );
    one(
        |v| v["flows"][0]["outputs"][1]["dest_addr"] = json!("x"),
        r#"flows[0].outputs[1].dest_addr: "x" is not a socket address (expected ip:port, e.g. 239.1.1.1:5000 or [ff0e::1]:5000)"#,
    );
    one(
        |v| v["flows"][0]["outputs"][1]["dest_addr"] = json!("10.1.1.1:0"),
        "flows[0].outputs[1].dest_addr: port must not be 0",
    );
    one(
        |v| v["flows"][0]["outputs"][1]["bind_addr"] = json!("10.1.1.1"),
        r#"flows[0].outputs[1].bind_addr: "10.1.1.1" is not a socket address (expected ip:port, e.g. 239.1.1.1:5000 or [ff0e::1]:5000)"#,
    );
    one(
        |v| v["flows"][0]["outputs"][1]["bind_addr"] = json!("[::]:0"),
        "flows[0].outputs[1].bind_addr: [::]:0 is IPv6 but dest_addr 127.0.0.1:6000 is IPv4",
    );
}

#[test]
fn interface_addr_rules() {
    one(
        |v| v["flows"][1]["input"]["interface_addr"] = json!("eth0"),
        r#"flows[1].input.interface_addr: "eth0" is not an IP address"#,
    );
    one(
        |v| v["flows"][1]["input"]["interface_addr"] = json!("::1"),
        "flows[1].input.interface_addr: ::1 is IPv6 but bind_addr 239.2.2.2:5002 is IPv4",
    );
    one(
        |v| v["flows"][0]["outputs"][0]["interface_addr"] = json!("fe80::1"),
        "flows[0].outputs[0].interface_addr: fe80::1 is IPv6 but dest_addr 239.1.1.1:5000 is IPv4",
    );
    assert!(
        errs(|v| {
            v["flows"][0]["outputs"][0]["dest_addr"] = json!("[ff0e::1]:5000");
            v["flows"][0]["outputs"][0]["interface_addr"] = json!("fe80::1");
        })
        .is_empty()
    );
}

#[test]
fn allowed_sources_are_ip_addresses() {
    one(
        |v| v["flows"][1]["input"]["allowed_sources"] = json!(["10.0.0.1", "10.0.0.0/8", "::1"]),
        r#"flows[1].input.allowed_sources[1]: "10.0.0.0/8" is not an IP address"#,
    );
}

#[test]
fn dscp_ttl_ring_ranges() {
    one(
        |v| v["flows"][0]["outputs"][0]["dscp"] = json!(64),
        "flows[0].outputs[0].dscp: 64 is out of range (0..=63)",
    );
    assert!(errs(|v| v["flows"][0]["outputs"][0]["dscp"] = json!(63)).is_empty());
    one(
        |v| v["flows"][0]["outputs"][0]["ttl"] = json!(0),
        "flows[0].outputs[0].ttl: 0 is out of range (1..=255)",
    );
    one(
        |v| v["flows"][0]["outputs"][0]["ttl"] = json!(256),
        "flows[0].outputs[0].ttl: 256 is out of range (1..=255)",
    );
    assert!(errs(|v| v["flows"][0]["outputs"][0]["ttl"] = json!(255)).is_empty());
    one(
        |v| v["flows"][0]["ring_chunks"] = json!(15),
        "flows[0].ring_chunks: 15 is out of range (16..=65536)",
    );
    one(
        |v| v["flows"][0]["ring_chunks"] = json!(65537),
        "flows[0].ring_chunks: 65537 is out of range (16..=65536)",
    );
    assert!(errs(|v| v["flows"][0]["ring_chunks"] = json!(16)).is_empty());
    assert!(errs(|v| v["flows"][0]["ring_chunks"] = json!(65536)).is_empty());
}

#[test]
fn storage_rules() {
    one(
        |v| v["storage"] = json!({"event_log_max_bytes": 1048575}),
        "storage.event_log_max_bytes: 1048575 is too small (at least 1048576 = 1 MiB)",
    );
    assert!(errs(|v| v["storage"] = json!({"event_log_max_bytes": 1048576})).is_empty());
    one(
        |v| v["storage"] = json!({"event_commit_max_delay_ms": 0}),
        "storage.event_commit_max_delay_ms: 0 is out of range (1..=1000)",
    );
    one(
        |v| v["storage"] = json!({"event_commit_max_delay_ms": 1001}),
        "storage.event_commit_max_delay_ms: 1001 is out of range (1..=1000)",
    );
    assert!(errs(|v| v["storage"] = json!({"event_commit_max_delay_ms": 1})).is_empty());
    assert!(errs(|v| v["storage"] = json!({"event_commit_max_delay_ms": 1000})).is_empty());
    one(
        |v| v["storage"] = json!({"data_dir": ""}),
        "storage.data_dir: must not be empty",
    );
}

// ---- port conflicts ----

fn set_input_binds(v: &mut Value, a: &str, b: &str) {
    v["flows"][0]["input"]["bind_addr"] = json!(a);
    v["flows"][1]["input"]["bind_addr"] = json!(b);
    v["flows"][1]["input"]
        .as_object_mut()
        .unwrap()
        .remove("interface_addr");
}

#[test]
fn wildcard_input_overlaps_its_family() {
    one(
        |v| set_input_binds(v, "0.0.0.0:5000", "127.0.0.1:5000"),
        "flows[1].input.bind_addr: UDP port 5000 on 127.0.0.1 is already bound by flows[0].input.bind_addr (0.0.0.0:5000)",
    );
    one(
        |v| set_input_binds(v, "239.1.1.1:5000", "0.0.0.0:5000"),
        "flows[1].input.bind_addr: UDP port 5000 on 0.0.0.0 is already bound by flows[0].input.bind_addr (239.1.1.1:5000)",
    );
    // `::` is dual-stack on Linux: it also takes the IPv4 port.
    one(
        |v| set_input_binds(v, "127.0.0.1:5000", "[::]:5000"),
        "flows[1].input.bind_addr: UDP port 5000 on :: is already bound by flows[0].input.bind_addr (127.0.0.1:5000)",
    );
    // 0.0.0.0 does not cover IPv6 addresses.
    assert!(errs(|v| set_input_binds(v, "0.0.0.0:5000", "[::1]:5000")).is_empty());
}

#[test]
fn same_address_same_port_conflicts_but_not_other_ports_or_groups() {
    one(
        |v| set_input_binds(v, "239.1.1.1:5000", "239.1.1.1:5000"),
        "flows[1].input.bind_addr: UDP port 5000 on 239.1.1.1 is already bound by flows[0].input.bind_addr (239.1.1.1:5000)",
    );
    // Two different multicast groups on one port: each socket binds its own group.
    assert!(errs(|v| set_input_binds(v, "239.1.1.1:5000", "239.1.1.2:5000")).is_empty());
    assert!(errs(|v| set_input_binds(v, "127.0.0.1:5000", "127.0.0.2:5000")).is_empty());
    assert!(errs(|v| set_input_binds(v, "0.0.0.0:5000", "0.0.0.0:5001")).is_empty());
}

#[test]
fn api_tcp_port_is_not_a_udp_conflict() {
    assert!(errs(|v| v["server"]["listen_port"] = json!(5000)).is_empty());
}

#[test]
fn output_bind_on_an_input_port_conflicts() {
    // Against a later flow's input: reported on the output.
    one(
        |v| {
            set_input_binds(v, "0.0.0.0:5000", "127.0.0.1:5002");
            v["flows"][0]["outputs"][1]["bind_addr"] = json!("127.0.0.1:5002");
        },
        "flows[0].outputs[1].bind_addr: UDP port 5002 on 127.0.0.1 is already bound by flows[1].input.bind_addr (127.0.0.1:5002)",
    );
    // Ephemeral source port: never a conflict.
    assert!(errs(|v| v["flows"][0]["outputs"][1]["bind_addr"] = json!("0.0.0.0:0")).is_empty());
    // Two outputs sending from the same fixed port.
    one(
        |v| {
            v["flows"][0]["outputs"][0]["bind_addr"] = json!("127.0.0.1:7000");
            v["flows"][0]["outputs"][1]["bind_addr"] = json!("127.0.0.1:7000");
        },
        "flows[0].outputs[1].bind_addr: UDP port 7000 on 127.0.0.1 is already bound by flows[0].outputs[0].bind_addr (127.0.0.1:7000)",
    );
}

#[test]
fn every_problem_is_reported_in_document_order() {
    let e = errs(|v| {
        v["version"] = json!(3);
        v["server"]["listen_addr"] = json!("nope");
        v["flows"][0]["id"] = json!("bad id");
        v["flows"][0]["outputs"][0]["dscp"] = json!(99);
        v["flows"][0]["outputs"][1]["dest_addr"] = json!("x");
        v["flows"][0]["ring_chunks"] = json!(1);
        v["flows"][1]["input"]["bind_addr"] = json!("0.0.0.0:5000");
        v["storage"] = json!({"event_commit_max_delay_ms": 5000});
    });
    // The reader's errors (values that do not parse) in document order, then the
    // validator's in document order.
    assert_eq!(
        e,
        vec![
            r#"server.listen_addr: "nope" is not an IP address"#,
            r#"flows[0].outputs[1].dest_addr: "x" is not a socket address (expected ip:port, e.g. 239.1.1.1:5000 or [ff0e::1]:5000)"#,
            "version: unsupported version 3 (this build reads version 1)",
            r#"flows[0].id: "bad id" contains ' '; only letters, digits, '.', '_' and '-' are allowed"#,
            "flows[0].outputs[0].dscp: 99 is out of range (0..=63)",
            "flows[0].ring_chunks: 1 is out of range (16..=65536)",
            "flows[1].input.bind_addr: UDP port 5000 on 0.0.0.0 is already bound by flows[0].input.bind_addr (0.0.0.0:5000)",
            "storage.event_commit_max_delay_ms: 5000 is out of range (1..=1000)",
        ]
    );
}

// ---- redaction ----

#[test]
fn redaction_removes_every_secret_and_keeps_the_rest() {
    let cfg = parse_unvalidated(&everything().to_string()).unwrap();
    let r = cfg.redacted();
    let text = r.to_string();
    for secret in [
        "0123456789abc",
        "abcdefghijk",
        "secret-key",
        "\"ns\"",
        "\"rt\"",
        "\"bp\"",
        "\"pp\"",
        "stream_key",
        "auth_token",
        "bearer_token",
        "password",
        "passphrase",
        "api-token-everything-1",
        "viewer-token-everything-1",
        "api_token",
        "viewer_token",
    ] {
        assert!(
            !text.contains(secret),
            "{secret} survived redaction: {text}"
        );
    }
    // Tunnel keys and secrets go; everything else stays.
    assert_eq!(
        r["tunnels"][0],
        json!({"id": "0192f3a4-5b6c-7d8e-9fa0-b1c2d3e4f5a6", "name": "t1", "enabled": true,
               "protocol": "udp", "mode": "relay", "direction": "egress",
               "local_addr": "0.0.0.0:9000", "relay_addr": "relay.example:4433", "relay": "r:1"})
    );
    assert_eq!(
        r["manager"],
        json!({"enabled": true, "urls": ["wss://m:8443/ws/node"], "node_id": "nid",
               "accept_self_signed_cert": false, "allow_plain_ws": false,
               "protocol_version": 1, "retry": {}})
    );
    assert_eq!(r["flows"][1]["input"]["redundancy"]["latency_ms"], 200);
    assert_eq!(r["flows"][3]["input"]["username"], "u");
    assert_eq!(r["zz_future"], json!({"deep": [{}]}));
    // The config itself is untouched.
    assert!(cfg.to_value().to_string().contains("0123456789abc"));
}

/// What a debug log line would print of a config, or of any part of one holding a secret.
#[test]
fn debug_output_holds_no_secret() {
    let mut v = everything();
    v["flows"][3]["input"]["rtsp_url"] = json!("rtsp://u:url-pass@cam/1");
    v["bridge"] = json!({"streams": {"c": {"rtsp_url": "rtsp://u:url-pass@cam/2",
                                           "password": "bridge-pass"}},
                         "viewer_token": "viewer-token-everything-1"});
    let cfg = parse_unvalidated(&v.to_string()).unwrap();
    let Some(InputConfig::Rtsp(rtsp)) = cfg
        .flows
        .iter()
        .map(|f| &f.input)
        .find(|i| matches!(i, InputConfig::Rtsp(_)))
    else {
        panic!("everything() has an rtsp input");
    };
    let srt_flow = cfg.flows.iter().find(|f| f.id == "srt-flow").unwrap();
    let InputConfig::Srt(srt) = &srt_flow.input else {
        panic!("srt-flow has an srt input")
    };
    let bridge = cfg.bridge.as_ref().unwrap();
    let printed = [
        format!("{cfg:?}"),
        format!("{:?}", cfg.flows),
        format!("{:?}", cfg.flows[0].outputs),
        format!("{:?}", srt_flow.input),
        format!("{srt:?}"),
        format!("{:?}", srt.redundancy),
        format!("{rtsp:?}"),
        format!("{bridge:?}"),
        format!("{:?}", bridge.streams),
        format!("{:?}", cfg.manager),
        format!("{:?}", cfg.server),
    ];
    for text in &printed {
        for secret in [
            "0123456789abc",
            "abcdefghijk",
            "secret-key",
            "url-pass",
            "bridge-pass",
            "\"ns\"",
            "\"rt\"",
            "\"pp\"",
            "stream_key",
            "auth_token",
            "bearer_token",
            "api-token-everything-1",
            "viewer-token-everything-1",
        ] {
            assert!(!text.contains(secret), "{secret} printed by Debug: {text}");
        }
    }
    // Still useful for debugging: the type and the non-secret fields are there.
    assert!(printed[4].starts_with("SrtConfig {") && printed[4].contains("10.0.0.2:9000"));
    assert!(printed[6].contains("rtsp://u@cam/1"), "{}", printed[6]);
    assert!(printed[10].starts_with("ServerConfig {") && printed[10].contains("quoll-box"));
}

#[test]
fn key_is_only_a_secret_inside_tunnels() {
    let mut v =
        json!({"flows": [{"key": "stays"}], "tunnels": [{"key": "goes", "x": {"key": "goes"}}]});
    redact_value(&mut v);
    assert_eq!(
        v,
        json!({"flows": [{"key": "stays"}], "tunnels": [{"x": {}}]})
    );
    let mut t = json!({"id": "t", "key": "k", "passphrase": "p",
        "tunnel_encryption_key": "e", "tunnel_bind_secret": "b", "relay_addr": "r:1"});
    redact_tunnel(&mut t);
    assert_eq!(t, json!({"id": "t", "relay_addr": "r:1"}));
    let mut v = json!({"flows": [{"api_key": "stays", "x_bind_token": "goes"}]});
    redact_value(&mut v);
    assert_eq!(v, json!({"flows": [{"api_key": "stays"}]}));
}

#[test]
fn restore_secrets_puts_back_what_a_push_omits() {
    let local = json!({"flows": [
        {"id": "a", "input": {"type": "srt", "passphrase": "pa"}},
        {"id": "b", "input": {"type": "srt", "passphrase": "pb"}}],
        "tunnels": [{"id": "t", "key": "k"}]});
    // The manager reordered the flows and changed b's passphrase.
    let mut pushed = json!({"flows": [
        {"id": "b", "input": {"type": "srt", "passphrase": "new"}},
        {"id": "a", "input": {"type": "srt"}}],
        "tunnels": [{"id": "t"}]});
    restore_secrets(&mut pushed, &local);
    assert_eq!(pushed["flows"][0]["input"]["passphrase"], "new");
    assert_eq!(pushed["flows"][1]["input"]["passphrase"], "pa");
    assert_eq!(pushed["tunnels"][0]["key"], "k");
}

#[test]
fn manager_block_is_typed_and_validated_by_path() {
    let base = |m: serde_json::Value| json!({"version": 1, "manager": m}).to_string();
    let ok = parse(&base(json!({"urls": ["wss://m.example:8443/ws/node"],
        "registration_token": "t", "cert_fingerprint": "ab".repeat(32), "x_future": 1})))
    .expect("valid");
    let m = ok.manager.as_ref().unwrap();
    assert!(m.enabled);
    assert_eq!(m.protocol_version, 1);
    assert_eq!(m.extra["x_future"], 1);
    assert!(!format!("{m:?}").contains("\"t\""), "Debug hides the token");

    let errors = parse(&base(
        json!({"urls": ["ws://m:8443/ws/node", "http://x", "wss://u:p@h/"],
        "node_id": "n", "accept_self_signed_cert": true, "cert_fingerprint": "zz",
        "protocol_version": 0}),
    ))
    .unwrap_err();
    let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "manager.urls[0]",
            "manager.urls[1]",
            "manager.urls[2]",
            "manager.node_secret",
            "manager.cert_fingerprint",
            "manager.protocol_version"
        ],
        "{errors:?}"
    );
    assert!(
        !errors.iter().any(|e| e.message.contains("u:p")),
        "user info is not echoed"
    );
    let e = parse(&base(
        json!({"urls": ["wss://m/"], "node_id": "n", "node_secret": "s",
        "accept_self_signed_cert": true}),
    ))
    .unwrap_err();
    assert_eq!(e[0].path, "manager.accept_self_signed_cert");
    let e = parse(&base(json!({"urls": []}))).unwrap_err();
    assert_eq!(e.len(), 2, "{e:?}");
    assert!(parse(&base(json!({"enabled": false}))).is_ok());
    assert!(
        parse(&base(
            json!({"urls": ["ws://127.0.0.1:1/ws/node"], "allow_plain_ws": true,
        "node_id": "n", "node_secret": "s"})
        ))
        .is_ok()
    );
    assert_eq!(
        crate::config::ManagerUrl::parse("wss://[::1]:9/ws/node").unwrap(),
        crate::config::ManagerUrl {
            tls: true,
            host: "::1".into(),
            port: 9,
            path: "/ws/node".into()
        }
    );
    // The spec's defaults: port 8443 and path /ws/node when the URL leaves them out.
    let url = |s: &str| crate::config::ManagerUrl::parse(s).unwrap();
    for (s, tls, host, port, path) in [
        ("wss://m", true, "m", 8443, "/ws/node"),
        ("ws://m", false, "m", 8443, "/ws/node"),
        ("wss://m:443", true, "m", 443, "/ws/node"),
        ("wss://[::1]", true, "::1", 8443, "/ws/node"),
        ("wss://m?x=1", true, "m", 8443, "/ws/node?x=1"),
        ("wss://m/", true, "m", 8443, "/"),
        ("wss://m:9/other", true, "m", 9, "/other"),
    ] {
        assert_eq!(
            url(s),
            crate::config::ManagerUrl {
                tls,
                host: host.into(),
                port,
                path: path.into()
            },
            "{s}"
        );
    }
}

// ---- SRT ----

fn srt_in(v: &mut Value, input: Value) {
    v["flows"][0]["input"] = input;
}

#[test]
fn srt_defaults_and_typed_fields() {
    let cfg = parse(
        r##"{"flows":[{"id":"a","input":{"type":"srt","mode":"listener","local_addr":"0.0.0.0:9000"},
        "outputs":[{"type":"srt","id":"o","mode":"caller","local_addr":"0.0.0.0:0",
                    "remote_addr":"10.0.0.2:9000","stream_id":"#!::r=live"}]}]}"##,
    )
    .unwrap();
    let InputConfig::Srt(i) = &cfg.flows[0].input else {
        panic!("srt input expected")
    };
    assert_eq!(i.mode, SrtMode::Listener);
    assert_eq!(i.latency_ms, 120);
    assert_eq!(i.peer_idle_timeout_secs, 30);
    assert!(i.passphrase.is_none() && i.redundancy.is_none());
    let OutputKind::Srt(o) = &cfg.flows[0].outputs[0].kind else {
        panic!("srt output expected")
    };
    assert_eq!(o.stream_id.as_deref(), Some("#!::r=live"));
}

#[test]
fn srt_shape_errors_have_paths() {
    let e = errs(|v| {
        srt_in(
            v,
            json!({"type": "srt", "mode": "server", "latency_ms": "x",
                   "redundancy": {"mode": 3, "local_addr": "127.0.0.1:9001"}}),
        )
    });
    assert_eq!(
        e,
        [
            r#"flows[0].input.mode: unknown SRT mode "server" (expected caller, listener or rendezvous)"#,
            "flows[0].input.local_addr: missing required field",
            "flows[0].input.latency_ms: invalid type: string \"x\", expected u64",
            "flows[0].input.redundancy.mode: expected a string (caller, listener or rendezvous), found number `3`",
        ]
    );
}

#[test]
fn srt_values_are_checked_on_both_legs() {
    let e = errs(|v| {
        srt_in(
            v,
            json!({"type": "srt", "mode": "caller", "local_addr": "127.0.0.1:0",
                   "latency_ms": 70000, "peer_idle_timeout_secs": 0, "passphrase": "short",
                   "aes_key_len": 20, "max_connections": 2,
                   "redundancy": {"mode": "listener", "local_addr": "127.0.0.1:0",
                                  "remote_addr": "[::1]:9000",
                                  "redundancy": {"mode": "listener", "local_addr": "127.0.0.1:9"}}}),
        )
    });
    assert_eq!(
        e,
        [
            "flows[0].input.remote_addr: required in caller mode",
            "flows[0].input.latency_ms: 70000 is out of range (0..=60000)",
            "flows[0].input.peer_idle_timeout_secs: 0 is out of range (1..=3600)",
            "flows[0].input.passphrase: must be 10 to 79 characters long (this one has 5)",
            "flows[0].input.aes_key_len: 20 is not an AES key length (expected 16, 24 or 32)",
            "flows[0].input.max_connections: only SRT outputs in listener mode take callers",
            "flows[0].input.redundancy.local_addr: port must not be 0 in listener mode (the peer needs a fixed port)",
            "flows[0].input.redundancy.remote_addr: [::1]:9000 is IPv6 but local_addr 127.0.0.1:0 is IPv4",
            "flows[0].input.redundancy.redundancy: a redundancy leg cannot have a redundancy leg of its own (2 legs at most)",
        ]
    );
    // The passphrase itself never appears in a message.
    assert!(e.iter().all(|m| !m.contains("short\"")));
}

#[test]
fn srt_window_ms_belongs_to_an_inputs_redundancy_leg() {
    let ok = |w: u64| {
        errs(|v| {
            srt_in(
                v,
                json!({"type": "srt", "mode": "listener", "local_addr": "127.0.0.1:9000",
                       "redundancy": {"mode": "listener", "local_addr": "127.0.0.1:9001",
                                      "window_ms": w}}),
            )
        })
    };
    assert_eq!(ok(250), Vec::<String>::new());
    assert_eq!(
        ok(0),
        ["flows[0].input.redundancy.window_ms: 0 is out of range (1..=10000)"]
    );
    let e = errs(|v| {
        srt_in(
            v,
            json!({"type": "srt", "mode": "listener", "local_addr": "127.0.0.1:9000",
                   "window_ms": 100}),
        );
        v["flows"][0]["outputs"] = json!([{"type": "srt", "id": "s", "mode": "caller",
            "local_addr": "127.0.0.1:0", "remote_addr": "127.0.0.1:9100",
            "redundancy": {"mode": "caller", "local_addr": "127.0.0.1:0",
                           "remote_addr": "127.0.0.1:9101", "window_ms": 100}}]);
    });
    assert_eq!(
        e,
        [
            "flows[0].input.window_ms: only in the redundancy leg of an SRT input (the 2022-7 merge's window)",
            "flows[0].outputs[0].redundancy.window_ms: only SRT inputs merge their legs (an output feeds both)",
        ]
    );
    // It round-trips.
    let cfg = parse(
        r#"{"flows":[{"id":"a","input":{"type":"srt","mode":"listener","local_addr":"0.0.0.0:9000",
            "redundancy":{"mode":"listener","local_addr":"0.0.0.0:9001","window_ms":300}}}]}"#,
    )
    .unwrap();
    let InputConfig::Srt(i) = &cfg.flows[0].input else {
        panic!("srt input expected")
    };
    assert_eq!(i.redundancy.as_ref().unwrap().window_ms, Some(300));
    let text = cfg.to_value().to_string();
    assert!(text.contains(r#""window_ms":300"#), "{text}");
}

#[test]
fn srt_ports_conflict_with_udp_and_between_legs() {
    let e = errs(|v| {
        srt_in(
            v,
            json!({"type": "srt", "mode": "listener", "local_addr": "127.0.0.1:9000",
                   "redundancy": {"mode": "listener", "local_addr": "0.0.0.0:9000"}}),
        );
        v["flows"][1]["outputs"] = json!([{"type": "srt", "id": "s", "mode": "listener",
            "local_addr": "127.0.0.1:9000", "max_connections": 4}]);
    });
    assert_eq!(
        e,
        [
            "flows[0].input.redundancy.local_addr: UDP port 9000 on 0.0.0.0 is already bound by flows[0].input.local_addr (127.0.0.1:9000)",
            "flows[1].outputs[0].local_addr: UDP port 9000 on 127.0.0.1 is already bound by flows[0].input.local_addr (127.0.0.1:9000)",
        ]
    );
}

#[test]
fn srt_passphrases_are_redacted_on_both_legs() {
    let mut v = base();
    srt_in(
        &mut v,
        json!({"type": "srt", "mode": "listener", "local_addr": "127.0.0.1:9000",
               "passphrase": "leg-one-secret", "aes_key_len": 32,
               "redundancy": {"mode": "listener", "local_addr": "127.0.0.1:9001",
                              "passphrase": "leg-two-secret"}}),
    );
    let cfg = parse(&v.to_string()).unwrap();
    let text = cfg.redacted().to_string();
    assert!(
        !text.contains("leg-one-secret") && !text.contains("leg-two-secret"),
        "{text}"
    );
    assert!(text.contains("\"aes_key_len\":32"), "{text}");
    // Debug output (logs) of the typed config: validation messages never echo it either.
    assert!(cfg.to_value().to_string().contains("leg-two-secret"));
}

// ---- RTSP input and bridge ----

fn with_bridge(bridge: serde_json::Value) -> Vec<String> {
    let mut v: serde_json::Value = serde_json::from_str(EMBEDDED_DEFAULT).unwrap();
    v["bridge"] = bridge;
    match parse(&v.to_string()) {
        Ok(_) => Vec::new(),
        Err(e) => e.iter().map(ToString::to_string).collect(),
    }
}

#[cfg(feature = "rtsp")]
#[test]
fn rtsp_input_reads_with_spec_defaults_and_validates() {
    let flow: FlowConfig = serde_json::from_value(json!({
        "id": "cam", "input": {"type": "rtsp", "rtsp_url": "rtsp://10.0.0.5/live"}
    }))
    .unwrap();
    match &flow.input {
        InputConfig::Rtsp(r) => {
            assert_eq!(r.transport, RtspTransport::Tcp);
            assert_eq!(r.timeout_secs, 10);
            assert_eq!(r.reconnect_delay_secs, 5);
            assert_eq!(r.username, None);
        }
        other => panic!("{other:?}"),
    }
    one(
        |v| v["flows"][0]["input"] = json!({"type": "rtsp", "rtsp_url": "http://x/y"}),
        r#"flows[0].input.rtsp_url: scheme "http" is not rtsp (expected rtsp://host[:port]/path)"#,
    );
    let mut v: serde_json::Value = serde_json::from_str(EMBEDDED_DEFAULT).unwrap();
    v["flows"][0]["input"] = json!({"type": "rtsp", "rtsp_url": "rtsp://", "transport": "sctp",
        "timeout_secs": 0, "reconnect_delay_secs": 99999, "username": 5});
    let e: Vec<String> = parse(&v.to_string())
        .unwrap_err()
        .iter()
        .map(ToString::to_string)
        .collect();
    // The reader's errors (a wrong type, a mode that does not parse), then every value
    // error, in one pass.
    assert_eq!(
        e,
        vec![
            "flows[0].input.username: invalid type: integer `5`, expected a string",
            r#"flows[0].input.transport: "sctp" is not one of tcp, udp"#,
            "flows[0].input.rtsp_url: is not an RTSP URL (expected rtsp://host[:port]/path)",
            "flows[0].input.timeout_secs: 0 is out of range (1..=300)",
            "flows[0].input.reconnect_delay_secs: 99999 is out of range (1..=3600)",
        ]
    );
    v["flows"][0]["input"]["username"] = json!("u");
    let e: Vec<String> = parse(&v.to_string())
        .unwrap_err()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        e,
        vec![
            r#"flows[0].input.transport: "sctp" is not one of tcp, udp"#,
            "flows[0].input.rtsp_url: is not an RTSP URL (expected rtsp://host[:port]/path)",
            "flows[0].input.timeout_secs: 0 is out of range (1..=300)",
            "flows[0].input.reconnect_delay_secs: 99999 is out of range (1..=3600)",
        ]
    );
}

#[cfg(feature = "rtsp")]
#[test]
fn bridge_streams_validate_by_path() {
    assert_eq!(
        with_bridge(json!({"streams": {"cam1": {"rtsp_url": "rtsp://127.0.0.1:8554/test"}}})),
        Vec::<String>::new()
    );
    let e = with_bridge(json!({
        "streams": {
            "bad id": {"rtsp_url": "rtsp://a/b"},
            "both": {"rtsp_url": "rtsp://a/b", "flow_id": "flow-1"},
            "none": {},
            "ghost": {"flow_id": "nope"},
            "w": {"rtsp_url": "rtsp://a/b", "worker": "gst", "transport": "quic"},
            "f": {"rtsp_url": "rtsp://a/b", "worker": "ffmpeg", "ffmpeg_video": "vp9"}
        },
        "sweep_interval_ms": 0,
        "client_queue_chunks": 1,
        "max_client_lags": 0
    }));
    assert_eq!(
        e,
        vec![
            // The reader's: a transport and a worker that do not parse.
            r#"bridge.streams.w.transport: "quic" is not one of tcp, udp"#,
            r#"bridge.streams.w.worker: "gst" is not one of inprocess, ffmpeg"#,
            r#"bridge.streams.bad id: "bad id" contains ' '; only letters, digits, '.', '_' and '-' are allowed"#,
            "bridge.streams.both: has both rtsp_url and flow_id; a stream has one source",
            "bridge.streams.none: needs a source: rtsp_url (a camera) or flow_id (a flow's output)",
            r#"bridge.streams.ghost.flow_id: no flow has id "nope""#,
            r#"bridge.streams.f.ffmpeg_video: "vp9" is not one of copy, mpeg1video"#,
            "bridge.sweep_interval_ms: 0 is out of range (1..=86400000)",
            "bridge.client_queue_chunks: 1 is out of range (16..=8192)",
            "bridge.max_client_lags: must be at least 1",
        ]
    );
    let e = with_bridge(json!({"streams": [1], "max_restarts": "x"}));
    assert_eq!(
        e,
        vec![
            "bridge.streams: expected an object mapping stream ids to sources, found an array",
            r#"bridge.max_restarts: invalid type: string "x", expected u32"#,
        ]
    );
}

#[cfg(feature = "rtsp")]
#[test]
fn rtsp_credentials_are_redacted() {
    let mut v: serde_json::Value = serde_json::from_str(EMBEDDED_DEFAULT).unwrap();
    v["flows"][0]["input"] = json!({"type": "rtsp", "rtsp_url": "rtsp://admin:hunter2@cam/1",
        "username": "admin", "password": "hunter2"});
    v["bridge"] = json!({"streams": {"c": {"rtsp_url": "rtsp://u:pw@cam/2", "password": "pw"}}});
    let cfg = parse(&v.to_string()).unwrap();
    let text = cfg.redacted().to_string();
    assert!(!text.contains("hunter2") && !text.contains("pw@"), "{text}");
    assert!(text.contains("rtsp://admin@cam/1"), "{text}");
    assert!(text.contains("\"username\":\"admin\""));
}

// ---- access: tokens, allowed hosts and origins ----

#[test]
fn access_fields_default_and_are_written_back() {
    let cfg = parse(EMBEDDED_DEFAULT).unwrap();
    assert_eq!(cfg.server.api_token, None);
    assert!(cfg.server.allowed_hosts.is_empty());
    let v = cfg.to_value();
    // Edge-only fields are written when set: the manager's view of `server` is unchanged.
    assert!(v["server"].get("allowed_hosts").is_none());
    assert!(v["server"].get("api_token").is_none());
    let b = BridgeConfig::default();
    assert!(b.allowed_origins.is_empty() && b.viewer_token.is_none());
    assert_eq!(b.to_value()["allowed_origins"], json!([]));
    assert!(b.to_value().get("viewer_token").is_none());
}

#[test]
fn access_fields_validate_by_path_without_repeating_tokens() {
    assert_eq!(
        errs(|v| {
            v["server"]["api_token"] = json!("0123456789abcdef");
            v["server"]["allowed_hosts"] = json!(["quoll-box", "cam.example.net", "a_b"]);
        }),
        Vec::<String>::new()
    );
    let e = errs(|v| {
        v["server"]["api_token"] = json!("short-secret");
        v["server"]["allowed_hosts"] = json!([
            "ok",
            "",
            "box:8080",
            "*.example",
            "http://box",
            ".box",
            "a..b"
        ]);
    });
    assert_eq!(
        e,
        vec![
            "server.api_token: must be 16 to 512 characters long (is 12)",
            r#"server.allowed_hosts[1]: "" is not a host name (1 to 253 characters)"#,
            r#"server.allowed_hosts[2]: "box:8080" is not a host name (letters, digits, '.', '-' and '_' only: no port, no scheme, no wildcard)"#,
            r#"server.allowed_hosts[3]: "*.example" is not a host name (letters, digits, '.', '-' and '_' only: no port, no scheme, no wildcard)"#,
            r#"server.allowed_hosts[4]: "http://box" is not a host name (letters, digits, '.', '-' and '_' only: no port, no scheme, no wildcard)"#,
            r#"server.allowed_hosts[5]: ".box" is not a host name (empty label)"#,
            r#"server.allowed_hosts[6]: "a..b" is not a host name (empty label)"#,
        ]
    );
    assert!(!e.iter().any(|m| m.contains("short-secret")));
    one(
        |v| v["server"]["api_token"] = json!("with a space inside it"),
        "server.api_token: must be printable ASCII without spaces (it is sent in a header and a URL)",
    );
    one(
        |v| v["server"]["allowed_hosts"] = json!("quoll-box"),
        r#"server.allowed_hosts: expected an array of strings, found string "quoll-box""#,
    );

    assert_eq!(
        with_bridge(
            json!({"allowed_origins": ["http://dash.example:3000", "https://[::1]:8443"],
                           "viewer_token": "viewer-0123456789"})
        ),
        Vec::<String>::new()
    );
    let e = with_bridge(json!({
        "allowed_origins": ["http://ok.example", "null", "*", "http://a.example/", "ws://a",
                            "https://", "http://a b"],
        "viewer_token": "tiny"
    }));
    let want = "is not an origin (expected http://host[:port] or https://host[:port], no path)";
    assert_eq!(
        e,
        vec![
            format!(r#"bridge.allowed_origins[1]: "null" {want}"#),
            format!(r#"bridge.allowed_origins[2]: "*" {want}"#),
            format!(r#"bridge.allowed_origins[3]: "http://a.example/" {want}"#),
            format!(r#"bridge.allowed_origins[4]: "ws://a" {want}"#),
            format!(r#"bridge.allowed_origins[5]: "https://" {want}"#),
            format!(r#"bridge.allowed_origins[6]: "http://a b" {want}"#),
            "bridge.viewer_token: must be 16 to 512 characters long (is 4)".to_string(),
        ]
    );
    // The viewer token must not open the API.
    let mut v: Value = serde_json::from_str(EMBEDDED_DEFAULT).unwrap();
    v["server"]["api_token"] = json!("the-same-token-0123");
    v["bridge"] = json!({"viewer_token": "the-same-token-0123"});
    let e: Vec<String> = parse(&v.to_string())
        .unwrap_err()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        e,
        vec![
            "bridge.viewer_token: must differ from server.api_token (the viewer token grants no API access)"
        ]
    );
}

#[test]
fn tokens_are_secrets_kept_across_a_push() {
    let mut v: Value = serde_json::from_str(EMBEDDED_DEFAULT).unwrap();
    v["server"]["api_token"] = json!("api-0123456789abcdef");
    v["bridge"] = json!({"viewer_token": "viewer-0123456789abcdef"});
    let cfg = parse(&v.to_string()).unwrap();
    let shown = cfg.redacted();
    let text = shown.to_string();
    assert!(!text.contains("0123456789abcdef"), "{text}");
    assert!(shown["server"].get("allowed_hosts").is_none());
    // What the manager read comes back without the tokens: the node keeps its own.
    let mut pushed = shown.clone();
    restore_secrets(&mut pushed, &cfg.to_value());
    assert_eq!(pushed["server"]["api_token"], "api-0123456789abcdef");
    assert_eq!(pushed["bridge"]["viewer_token"], "viewer-0123456789abcdef");
}

/// Shape errors no longer hide value errors: one pass lists both, each at the document's
/// own path (a flow that could not be read does not shift the indexes of the ones after it),
/// and nothing is said twice about a value whose shape was already wrong.
#[test]
fn shape_and_value_errors_are_reported_in_one_pass() {
    assert_eq!(
        errs(|v| {
            v["server"]["listen_port"] = json!("eighty");
            v["flows"][0]["input"] = json!({"type": "udp"});
            v["flows"][1]["outputs"] = json!([{"type": "udp", "id": "o", "dest_addr": "nowhere"}]);
            v["storage"] = json!({"event_log_max_bytes": 1});
        }),
        [
            r#"server.listen_port: invalid type: string "eighty", expected u16"#,
            r#"flows[0].input.bind_addr: missing required field"#,
            r#"flows[1].outputs[0].dest_addr: "nowhere" is not a socket address (expected ip:port, e.g. 239.1.1.1:5000 or [ff0e::1]:5000)"#,
            r#"storage.event_log_max_bytes: 1 is too small (at least 1048576 = 1 MiB)"#,
        ]
    );
}

#[test]
fn userinfo_is_redacted_in_log_text() {
    for (line, want) in [
        (
            "[concat @ 0x5] Impossible to open 'rtsp://u:p4ss@127.0.0.1:554/test'",
            "[concat @ 0x5] Impossible to open 'rtsp://***@127.0.0.1:554/test'",
        ),
        (
            "two: rtsp://a:b@h1/x and srt://token@h2:9000?x=1 end",
            "two: rtsp://***@h1/x and srt://***@h2:9000?x=1 end",
        ),
        // A raw '@' in a password: the last '@' of the authority ends the userinfo.
        ("rtsp://adm:p@ss@cam", "rtsp://***@cam"),
        (
            "no userinfo: rtsp://cam.local/x user@example",
            "no userinfo: rtsp://cam.local/x user@example",
        ),
        ("://@", "://***@"),
        ("", ""),
    ] {
        assert_eq!(redact_userinfo(line), want, "{line}");
    }
}

#[test]
fn outbound_allow_round_trips_and_names_bad_entries() {
    let allow = json!(["239.0.0.0/8", "127.0.0.1", "2001:db8::/32"]);
    let mut v = base();
    v["security"] = json!({"outbound_allow": allow.clone(), "x_later": 1});
    let cfg = parse(&v.to_string()).unwrap();
    assert_eq!(cfg.to_value()["security"], v["security"]);
    assert!(parse(&base().to_string()).unwrap().security.is_none());
    assert_eq!(
        errs(|v| v["security"] = json!({"outbound_allow": ["10.0.0.0/8", "10.0.0.0/8x", 5]})),
        vec![
            "security.outbound_allow[2]: expected a string, found number `5`".to_string(),
            r#"security.outbound_allow[1]: "10.0.0.0/8x": prefix length must be 0 to 32"#
                .to_string(),
        ]
    );
    assert_eq!(
        errs(|v| v["security"] = json!({"outbound_allow": ["127.0.0.0/8", "239.0.0.0/8", "fe80::1/10"]})),
        vec![
            r#"security.outbound_allow[2]: "fe80::1/10" has host bits set (the network is fe80::/10)"#
                .to_string(),
        ]
    );
}

#[test]
fn outbound_allow_checks_every_destination_written_as_an_address() {
    let with = |allow: Value, change: &dyn Fn(&mut Value)| {
        errs(|v| {
            v["security"] = json!({ "outbound_allow": allow });
            change(v);
        })
    };
    // base() sends to 239.1.1.1 and 127.0.0.1: both must be listed.
    assert_eq!(
        with(json!(["239.0.0.0/8"]), &|_| {}),
        vec!["flows[0].outputs[1].dest_addr: 127.0.0.1 is not in security.outbound_allow"]
    );
    let ok = json!(["239.0.0.0/8", "127.0.0.1/32"]);
    assert!(with(ok.clone(), &|_| {}).is_empty());
    // An empty list allows no destination at all.
    assert_eq!(with(json!([]), &|_| {}).len(), 2);
    // SRT: callers and rendezvous peers are destinations, a listener's remote_addr is not;
    // both legs are checked.
    let srt = |mode: &str| {
        json!({"type": "srt", "mode": mode, "local_addr": "0.0.0.0:9000",
               "remote_addr": "192.0.2.1:9000",
               "redundancy": {"mode": mode, "local_addr": "0.0.0.0:9001",
                              "remote_addr": "198.51.100.1:9001"}})
    };
    assert_eq!(
        with(ok.clone(), &|v| v["flows"][1]["input"] = srt("rendezvous")),
        vec![
            "flows[1].input.remote_addr: 192.0.2.1 is not in security.outbound_allow",
            "flows[1].input.redundancy.remote_addr: 198.51.100.1 is not in security.outbound_allow",
        ]
    );
    assert!(with(ok.clone(), &|v| v["flows"][1]["input"] = srt("listener")).is_empty());
    let mut out = srt("caller");
    out["id"] = json!("s");
    out["local_addr"] = json!("0.0.0.0:0");
    out["redundancy"]["local_addr"] = json!("0.0.0.0:0");
    assert_eq!(
        with(ok.clone(), &|v| v["flows"][1]["outputs"] =
            json!([out.clone()]))
        .len(),
        2
    );
    if !cfg!(feature = "rtsp") {
        return;
    }
    // RTSP: a literal host is checked now (credentials never echoed), a name at connect.
    let rtsp = |url: &str| json!({"type": "rtsp", "rtsp_url": url});
    assert_eq!(
        with(ok.clone(), &|v| v["flows"][1]["input"] =
            rtsp("rtsp://u:pw@10.1.1.1/live")),
        vec!["flows[1].input.rtsp_url: 10.1.1.1 is not in security.outbound_allow"]
    );
    assert!(
        with(ok.clone(), &|v| v["flows"][1]["input"] =
            rtsp("rtsp://cam.local/live"))
        .is_empty()
    );
    assert_eq!(
        with(
            ok,
            &|v| v["bridge"] = json!({"streams": {"cam": {"rtsp_url": "rtsp://[2001:db8::5]/x"}}})
        ),
        vec!["bridge.streams.cam.rtsp_url: 2001:db8::5 is not in security.outbound_allow"]
    );
}

/// Every error says what sort of problem it is, so callers (the `port_conflict` code) do
/// not read the message.
#[test]
fn errors_carry_their_kind() {
    let kinds = |change: fn(&mut Value)| -> Vec<ErrorKind> {
        let mut v = base();
        change(&mut v);
        parse(&v.to_string())
            .unwrap_err()
            .iter()
            .map(|e| e.kind)
            .collect()
    };
    assert_eq!(parse("{").unwrap_err()[0].kind, ErrorKind::Syntax, "syntax");
    assert_eq!(
        kinds(|v| v["server"]["listen_port"] = json!("x")),
        [ErrorKind::Type]
    );
    assert_eq!(
        kinds(|v| v["flows"][0]["input"] = json!({"type": "udp"})),
        [ErrorKind::Missing]
    );
    assert_eq!(
        kinds(|v| v["flows"][0]["input"]["type"] = json!("carrier-pigeon")),
        [ErrorKind::Unknown]
    );
    assert_eq!(
        kinds(|v| v["flows"][0]["input"]["type"] = json!("webrtc")),
        [ErrorKind::Unsupported]
    );
    assert_eq!(
        kinds(|v| v["flows"][0]["outputs"][0]["dscp"] = json!(99)),
        [ErrorKind::Range]
    );
    assert_eq!(
        kinds(|v| v["flows"][1]["input"]["bind_addr"] = json!("0.0.0.0:5000")),
        [ErrorKind::PortConflict]
    );
    assert_eq!(
        kinds(|v| v["server"]["listen_addr"] = json!("nope")),
        [ErrorKind::Invalid]
    );
}

#[test]
fn manager_url_errors_are_typed() {
    assert_eq!(ManagerUrl::parse("http://m"), Err(ManagerUrlError::Scheme));
    assert_eq!(
        ManagerUrl::parse("wss://m:0/x"),
        Err(ManagerUrlError::Port(PortError("0".into())))
    );
    assert_eq!(
        ManagerUrl::parse("wss://m:99999").unwrap_err().to_string(),
        r#"port "99999" is not a port number 1-65535"#
    );
}

/// A block's `Default` (made from its declaration) is what reading it empty gives.
#[test]
fn declared_defaults_equal_an_empty_block_read() {
    let cfg = parse_unvalidated(
        r#"{"server": {}, "storage": {}, "limits": {}, "security": {}, "manager": {},
            "bridge": {}}"#,
    )
    .unwrap();
    assert_eq!(cfg.server, ServerConfig::default());
    assert_eq!(cfg.storage, StorageConfig::default());
    assert_eq!(cfg.limits, LimitsConfig::default());
    assert_eq!(cfg.security, Some(SecurityConfig::default()));
    assert_eq!(cfg.manager, Some(ManagerConfig::empty()));
    assert_eq!(cfg.bridge, Some(BridgeConfig::default()));
}

/// A rule between fields stays in document order among the fields' own checks.
#[test]
fn server_cross_field_rule_keeps_document_order() {
    let e = errs(|v| {
        v["server"]["max_connections"] = json!(8);
        v["server"]["max_connections_per_ip"] = json!(9);
        v["server"]["header_timeout_ms"] = json!(10);
    });
    assert_eq!(
        e,
        [
            "server.max_connections_per_ip: 9 is above server.max_connections (8)",
            "server.header_timeout_ms: 10 is out of range (100..=3600000)",
        ]
    );
}

// ---- typed values: parsed once, by the reader ----

/// A value that does not parse is the reader's error: its exact path, the message
/// validation gave before it was typed, kind `Invalid` (`is_unparsed`).
#[test]
fn bad_address_is_reported_by_the_reader_with_its_path() {
    let mut v = base();
    v["flows"][0]["input"]["bind_addr"] = json!("nope:5000");
    let e = Config::from_value(v).unwrap_err();
    assert_eq!(
        e.iter().map(ToString::to_string).collect::<Vec<_>>(),
        [
            r#"flows[0].input.bind_addr: "nope:5000" is not a socket address (expected ip:port, e.g. 239.1.1.1:5000 or [ff0e::1]:5000)"#
        ]
    );
    assert_eq!(e[0].kind, ErrorKind::Invalid);
    assert!(e[0].is_unparsed());
    // A wrong JSON type stays a shape error.
    let mut v = base();
    v["flows"][0]["input"]["bind_addr"] = json!(5000);
    let e = Config::from_value(v).unwrap_err();
    assert_eq!(e[0].kind, ErrorKind::Type);
    assert!(!e[0].is_unparsed());
}

/// Every value of a block that does not parse is reported, and its fields' own checks still
/// run; the block is left out of the rules between fields (its port conflict waits).
#[test]
fn every_bad_field_of_a_block_is_reported() {
    let e = errs(|v| {
        let o = &mut v["flows"][0]["outputs"][0];
        o["dest_addr"] = json!("x");
        o["bind_addr"] = json!("0.0.0.0:5000"); // would conflict with flows[0]'s input
        o["interface_addr"] = json!("eth0");
        o["dscp"] = json!(99);
        v["flows"][1]["input"]["allowed_sources"] = json!(["10.0.0.1", "ten", "::1"]);
        v["flows"][1]["id"] = json!("bad id");
    });
    assert_eq!(
        e,
        [
            r#"flows[0].outputs[0].dest_addr: "x" is not a socket address (expected ip:port, e.g. 239.1.1.1:5000 or [ff0e::1]:5000)"#,
            r#"flows[0].outputs[0].interface_addr: "eth0" is not an IP address"#,
            r#"flows[1].input.allowed_sources[1]: "ten" is not an IP address"#,
            "flows[0].outputs[0].dscp: 99 is out of range (0..=63)",
            r#"flows[1].id: "bad id" contains ' '; only letters, digits, '.', '_' and '-' are allowed"#,
        ]
    );
    // Fixed, the output's rules between fields run again.
    let e = errs(|v| {
        v["flows"][0]["outputs"][0]["bind_addr"] = json!("0.0.0.0:5000");
    });
    assert_eq!(
        e,
        [
            "flows[0].outputs[0].bind_addr: UDP port 5000 on 0.0.0.0 is already bound by flows[0].input.bind_addr (0.0.0.0:5000)"
        ]
    );
}

/// Both legs of an SRT endpoint, and a required address beside an optional one.
#[test]
fn srt_addresses_are_parsed_per_leg() {
    let e = errs(|v| {
        v["flows"][1]["input"] = json!({"type": "srt", "mode": "caller",
            "local_addr": "0.0.0.0:0", "remote_addr": "peer:9000", "latency_ms": 70000,
            "redundancy": {"mode": "listener", "local_addr": "0.0.0.0:x"}});
    });
    assert_eq!(
        e,
        [
            r#"flows[1].input.remote_addr: "peer:9000" is not a socket address (expected ip:port, e.g. 239.1.1.1:5000 or [ff0e::1]:5000)"#,
            r#"flows[1].input.redundancy.local_addr: "0.0.0.0:x" is not a socket address (expected ip:port, e.g. 239.1.1.1:5000 or [ff0e::1]:5000)"#,
            "flows[1].input.latency_ms: 70000 is out of range (0..=60000)",
        ]
    );
}

/// A valid config written back is the text it was read from, byte for byte: addresses
/// (IPv6, multicast, scoped to an interface) and modes are written as their canonical text.
/// (It holds an RTSP input and bridge streams: only a build with them validates it.)
#[cfg(feature = "rtsp")]
#[test]
fn typed_values_round_trip_byte_identical() {
    let text = r#"{"version":1,"server":{"listen_addr":"::","listen_port":8080},"flows":[{"id":"v6","name":"","enabled":true,"input":{"type":"udp","bind_addr":"[ff0e::1]:5000","interface_addr":"::1","allowed_sources":["2001:db8::7","10.0.0.1"]},"outputs":[{"type":"rtp","id":"m4","name":"","dest_addr":"239.1.1.1:5000","bind_addr":"192.168.1.10:0","interface_addr":"192.168.1.10","dscp":46,"ttl":8},{"type":"udp","id":"m6","name":"","dest_addr":"[ff15::abcd]:6000","bind_addr":"[::]:0","interface_addr":"fe80::1","dscp":0}]},{"id":"s","name":"","enabled":true,"input":{"type":"srt","mode":"caller","local_addr":"[::]:0","remote_addr":"[2001:db8::5]:9000","latency_ms":120,"peer_idle_timeout_secs":30,"redundancy":{"mode":"listener","local_addr":"[::]:9001","latency_ms":120,"peer_idle_timeout_secs":30}},"outputs":[]},{"id":"cam","name":"","enabled":true,"input":{"type":"rtsp","rtsp_url":"rtsp://[2001:db8::9]:554/x","transport":"udp","timeout_secs":10,"reconnect_delay_secs":5},"outputs":[]}],"tunnels":[],"storage":{"data_dir":"quoll-data","event_log_max_bytes":16777216,"event_commit_max_delay_ms":50},"bridge":{"streams":{"c":{"rtsp_url":"rtsp://10.0.0.9/x","transport":"udp","timeout_secs":10,"worker":"ffmpeg","ffmpeg_video":"copy"},"f":{"flow_id":"v6","worker":"inprocess"}},"idle_timeout_ms":15000,"sweep_interval_ms":5000,"restart_delay_ms":2000,"max_restarts":5,"max_clients_per_stream":32,"client_queue_chunks":512,"max_client_lags":3,"ffmpeg_path":"ffmpeg","allowed_origins":[]}}"#;
    let cfg = parse(text).unwrap();
    let Some(InputConfig::Udp(u)) = cfg.flows.first().map(|f| &f.input) else {
        panic!("not a udp input")
    };
    assert!(u.bind_addr.ip().is_multicast());
    assert_eq!(cfg.server.listen_addr, std::net::IpAddr::from([0u16; 8]));
    assert_eq!(
        cfg.bridge.as_ref().unwrap().streams[0].worker,
        BridgeWorker::Ffmpeg
    );
    let written = cfg.to_value();
    assert_eq!(written, serde_json::from_str::<Value>(text).unwrap());
    assert_eq!(written.to_string(), text);
}

/// A flow's bridge stream has no camera: its transport was never checked, and still is not
/// (nor written); a camera stream's is.
#[cfg(feature = "rtsp")]
#[test]
fn a_flow_streams_transport_is_not_checked() {
    let with_bridge = |streams: Value| errs(|v| v["bridge"] = json!({"streams": streams}));
    assert_eq!(
        with_bridge(json!({"f": {"flow_id": "f1", "transport": "quic"}})),
        Vec::<String>::new()
    );
    assert_eq!(
        with_bridge(json!({"c": {"rtsp_url": "rtsp://a/b", "transport": "quic"}})),
        [r#"bridge.streams.c.transport: "quic" is not one of tcp, udp"#]
    );
}

#[test]
fn moved_errors_keep_their_place_below_the_new_root() {
    let e = |p: &str| ConfigError::new(p, "m");
    assert_eq!(
        e("input.bind_addr").moved("", "flows[2]").path,
        "flows[2].input.bind_addr"
    );
    assert_eq!(
        e("flow.input.bind_addr").moved("flow", "flows[0]").path,
        "flows[0].input.bind_addr"
    );
    assert_eq!(
        e("outputs[1].dest_addr").moved("", "flows[0]").path,
        "flows[0].outputs[1].dest_addr"
    );
    assert_eq!(
        e("output").moved("output", "flows[0].outputs[3]").path,
        "flows[0].outputs[3]"
    );
    assert_eq!(e("flowx.id").moved("flow", "flows[0]").path, "flowx.id");
}

/// A relay tunnel as the manager pushes it.
fn relay_tunnel() -> Value {
    json!({"id": "0192f3a4-5b6c-7d8e-9fa0-b1c2d3e4f5a6", "name": "t", "protocol": "udp",
           "mode": "relay", "direction": "egress", "local_addr": "127.0.0.1:9000",
           "relay_addr": "relay.example.com:4433", "tunnel_encryption_key": "ab".repeat(32),
           "tunnel_bind_secret": "cd".repeat(32)})
}

#[test]
fn tunnels_need_what_their_mode_uses() {
    assert_eq!(
        errs(|v| v["tunnels"] = json!([relay_tunnel()])),
        Vec::<String>::new()
    );
    let direct_in = json!({"mode": "direct", "direction": "ingress", "relay_addr": null,
                           "tunnel_bind_secret": null});
    let cases = [
        (
            json!({"relay_addr": null}),
            vec!["tunnels[0].relay_addr: required in relay mode"],
        ),
        (
            json!({"tunnel_bind_secret": null, "tunnel_encryption_key": null}),
            vec![
                "tunnels[0].tunnel_encryption_key: required (the data plane's key)",
                "tunnels[0].tunnel_bind_secret: required in relay mode",
            ],
        ),
        (
            direct_in,
            vec![
                "tunnels[0].tunnel_psk: required in direct mode",
                "tunnels[0].direct_listen_addr: required in direct mode on the ingress edge (it listens)",
            ],
        ),
        (
            json!({"mode": "direct", "tunnel_psk": "ef".repeat(32)}),
            vec!["tunnels[0].peer_addr: required in direct mode on the egress edge (it dials)"],
        ),
        (
            json!({"id": "t-1", "tunnel_encryption_key": "xy".repeat(32),
                   "relay_addr": "relay.example.com"}),
            vec![
                r#"tunnels[0].id: "t-1" is not a UUID (8-4-4-4-12 hex digits)"#,
                r#"tunnels[0].relay_addr: "relay.example.com" is not host:port (e.g. relay.example.com:4433 or [2001:db8::1]:4433)"#,
                r#"tunnels[0].tunnel_encryption_key: "xyxyxyxyxyxyxyxyxyxyxyxyxyxyxyxyxyxyxyxyxyxyxyxyxyxyxyxyxyxyxyxy" is not 64 hex digits"#,
            ],
        ),
        (
            json!({"relay_addrs": ["[::1]:4433", "10.0.0.1:4433", "r3:4433"]}),
            vec!["tunnels[0].relay_addrs: at most 2 relays (a primary and a backup)"],
        ),
        (
            json!({"protocol": "sctp"}),
            vec![r#"tunnels[0].protocol: "sctp" is not one of udp, tcp"#],
        ),
    ];
    for (change, want) in cases {
        let mut t = relay_tunnel();
        for (k, v) in change.as_object().unwrap() {
            if v.is_null() {
                t.as_object_mut().unwrap().remove(k);
            } else {
                t[k] = v.clone();
            }
        }
        assert_eq!(errs(|v| v["tunnels"] = json!([t])), want, "{change}");
    }
    let twice = json!([relay_tunnel(), relay_tunnel()]);
    assert_eq!(
        errs(|v| v["tunnels"] = twice),
        vec![r#"tunnels[1].id: duplicate tunnel id "0192f3a4-5b6c-7d8e-9fa0-b1c2d3e4f5a6""#]
    );
}

/// Relays and direct peers written as addresses, and the ingress edge's delivery address,
/// are destinations: `security.outbound_allow` holds them (a name is checked when dialled).
#[test]
fn tunnel_addresses_are_held_to_outbound_allow() {
    // The tunnel's problems only (the base config's flows send to loopback and multicast).
    let with_allow = |t: Value| -> Vec<String> {
        errs(|v| {
            v["security"] = json!({"outbound_allow": ["10.0.0.0/8"]});
            v["tunnels"] = json!([t]);
        })
        .into_iter()
        .filter(|e| e.starts_with("tunnels"))
        .collect()
    };
    let mut relays = relay_tunnel();
    relays["relay_addrs"] = json!(["10.0.0.1:4433", "192.0.2.1:4433"]);
    assert_eq!(
        with_allow(relays),
        vec!["tunnels[0].relay_addrs[1]: 192.0.2.1 is not in security.outbound_allow"]
    );
    // A name passes here; the egress edge's local_addr is where it reads, not a destination.
    assert_eq!(with_allow(relay_tunnel()), Vec::<String>::new());
    let mut ingress = relay_tunnel();
    ingress["direction"] = json!("ingress");
    ingress["relay_addr"] = json!("[2001:db8::1]:4433");
    assert_eq!(
        with_allow(ingress),
        vec![
            "tunnels[0].relay_addr: 2001:db8::1 is not in security.outbound_allow",
            "tunnels[0].local_addr: 127.0.0.1 is not in security.outbound_allow",
        ]
    );
    let mut direct = relay_tunnel();
    direct["mode"] = json!("direct");
    direct["peer_addr"] = json!("198.51.100.4:4433");
    direct["tunnel_psk"] = json!("ef".repeat(32));
    direct.as_object_mut().unwrap().remove("relay_addr");
    assert_eq!(
        with_allow(direct),
        vec!["tunnels[0].peer_addr: 198.51.100.4 is not in security.outbound_allow"]
    );
}

#[test]
fn tunnel_tls_is_checked_kept_and_gives_the_trust_rule() {
    one(
        |v| v["tunnel_tls"] = json!({"cert_fingerprints": ["AB:CD"]}),
        r#"tunnel_tls.cert_fingerprints[0]: "AB:CD" is not a SHA-256 fingerprint (64 hex digits, colons allowed)"#,
    );
    let fp = "ab".repeat(32);
    let mut v = base();
    v["tunnel_tls"] = json!({"cert_fingerprints": [fp]});
    let cfg = parse(&v.to_string()).unwrap();
    assert_eq!(
        cfg.to_value()["tunnel_tls"],
        json!({"cert_fingerprints": [fp]})
    );
    assert_eq!(
        cfg.tunnel_tls.trust(),
        crate::net::tls::ServerTrust::PinOrWebPki(vec![[0xab; 32]])
    );
    // Absent: not written back, public roots only.
    let cfg = parse(&base().to_string()).unwrap();
    assert!(cfg.to_value().get("tunnel_tls").is_none());
    assert_eq!(cfg.tunnel_tls.trust(), crate::net::tls::ServerTrust::WebPki);
    v["tunnel_tls"] = json!({"insecure_skip_verify": true});
    let cfg = parse(&v.to_string()).unwrap();
    assert_eq!(
        cfg.tunnel_tls.trust(),
        crate::net::tls::ServerTrust::Insecure
    );
}

#[test]
fn tunnel_secrets_never_leave_in_redacted_output_or_debug() {
    let mut t = relay_tunnel();
    t["tunnel_psk"] = "ef".repeat(32).into();
    let mut v = base();
    v["tunnels"] = json!([t]);
    let cfg = parse(&v.to_string()).unwrap();
    let shown = format!("{} {:?} {:?}", cfg.redacted(), cfg, cfg.tunnels[0]);
    for secret in ["ab".repeat(32), "cd".repeat(32), "ef".repeat(32)] {
        assert!(!shown.contains(&secret), "{shown}");
    }
    assert!(shown.contains("relay.example.com:4433"));
}

#[cfg(feature = "rtmp")]
#[test]
fn rtmp_output_retry_settings_are_checked() {
    let push = |extra: Value| {
        move |v: &mut Value| {
            let mut o = json!({"type": "rtmp", "id": "push", "dest_url": "rtmp://h/app",
                               "stream_key": "k"});
            for (k, x) in extra.as_object().unwrap() {
                o[k] = x.clone();
            }
            v["flows"][0]["outputs"] = json!([o]);
        }
    };
    assert!(
        errs(push(
            json!({"reconnect_delay_secs": 30, "max_reconnect_attempts": 3})
        ))
        .is_empty()
    );
    one(
        push(json!({"reconnect_delay_secs": 0})),
        "flows[0].outputs[0].reconnect_delay_secs: 0 is out of range (1..=3600)",
    );
    one(
        push(json!({"max_reconnect_attempts": 0})),
        "flows[0].outputs[0].max_reconnect_attempts: 0 is out of range (1..=4294967295)",
    );
}
