//! `quoll check-config PATH` on real files, through the real binary.

mod common;

use std::fs;

fn write_temp(name: &str, text: &str) -> std::path::PathBuf {
    let p = std::env::temp_dir().join(format!("quoll-check-{name}-{}.json", std::process::id()));
    fs::write(&p, text).unwrap();
    p
}

#[test]
fn valid_file_exits_zero() {
    let path = write_temp("valid", quoll::config::EMBEDDED_DEFAULT);
    let out = common::quoll()
        .arg("check-config")
        .arg(&path)
        .output()
        .unwrap();
    let _ = fs::remove_file(&path);
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
    let path = write_temp(
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
    let out = common::quoll()
        .arg("check-config")
        .arg(&path)
        .output()
        .unwrap();
    let _ = fs::remove_file(&path);
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
    let path = write_temp("syntax", "{\"version\": 1,");
    let out = common::quoll()
        .arg("check-config")
        .arg(&path)
        .output()
        .unwrap();
    let _ = fs::remove_file(&path);
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
