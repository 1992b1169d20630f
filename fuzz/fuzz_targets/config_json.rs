//! A config document from an untrusted source (a file on the box, a manager's
//! `update_config`): parsing and validation never panic, a config that parses writes back
//! JSON that reads back the same (unknown fields kept), and its redacted form holds no secret.
#![no_main]

use libfuzzer_sys::fuzz_target;
use quoll::config::{Config, is_secret_key, parse_unvalidated, validate};
use serde_json::Value;

fn assert_no_secret(v: &Value, in_tunnel: bool) {
    match v {
        Value::Object(m) => {
            for (k, child) in m {
                assert!(!is_secret_key(k, in_tunnel), "secret `{k}` survived redaction");
                assert_no_secret(child, in_tunnel || k == "tunnels");
            }
        }
        Value::Array(items) => items.iter().for_each(|i| assert_no_secret(i, in_tunnel)),
        _ => {}
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(cfg) = parse_unvalidated(text) else {
        return;
    };
    let _ = validate(&cfg);
    let written = cfg.to_value();
    let again = Config::from_value(written.clone()).expect("a config's own JSON reads back");
    assert_eq!(again.to_value(), written, "write-back is not stable");
    assert_no_secret(&cfg.redacted(), false);
});
