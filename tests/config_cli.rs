//! `quoll check-config PATH` on real files, through the real binary.

mod common;

use std::fs;

/// `quoll check-config` on a file holding `text` (removed afterwards).
fn check_config(name: &str, text: &str) -> std::process::Output {
    let path = std::env::temp_dir().join(format!("quoll-check-{name}-{}.json", std::process::id()));
    fs::write(&path, text).unwrap();
    let out = common::quoll()
        .arg("check-config")
        .arg(&path)
        .output()
        .unwrap();
    let _ = fs::remove_file(&path);
    out
}

#[test]
fn valid_file_exits_zero() {
    let out = check_config("valid", quoll::config::EMBEDDED_DEFAULT);
    assert!(
        out.status.success(),
        "status {:?}, stderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("ok (1 flows)"), "{stdout}");
}

#[test]
fn broken_file_lists_every_problem_by_path() {
    let out = check_config(
        "broken",
        r#"{
  "version": 1,
  "server": {"listen_addr": "127.0.0.1", "listen_port": 0},
  "flows": [
    {"id": "a", "input": {"type": "whep", "url": "http://x/whep"},
     "outputs": [{"type": "udp", "id": "o", "dest_addr": "x", "dscp": 70}]},
    {"id": "a", "input": {"type": "udp", "bind_addr": "0.0.0.0:5000"}}
  ]
}"#,
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    for line in [
        "server.listen_port: must not be 0",
        r#"flows[0].input.type: "whep" is not supported by this build yet (supported: udp, rtp, srt, rtmp, rtsp)"#,
        r#"flows[0].outputs[0].dest_addr: "x" is not a socket address"#,
        "flows[0].outputs[0].dscp: 70 is out of range (0..=63)",
        r#"flows[1].id: "a" is already used by flows[0].id"#,
        "5 problem(s)",
    ] {
        assert!(
            stderr.contains(line),
            "missing {line:?} in stderr:\n{stderr}"
        );
    }
}

#[test]
fn syntax_error_is_reported_not_panicked() {
    let out = check_config("syntax", "{\"version\": 1,");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("$: not valid JSON: "), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn embedded_default_checks_ok() {
    let out = common::quoll()
        .args(["check-config", "--default"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "embedded default: ok (1 flows)"
    );
}
