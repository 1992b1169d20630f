//! `quoll ctl` against a running daemon: plain text that fits the terminal (a real
//! pseudo-terminal with and without a window size, `COLUMNS`, pipes), colour only on a
//! terminal without `NO_COLOR`, `--json`, the boot health check, and a clear word when the
//! daemon is not running.

// openpty, TIOCSWINSZ and geteuid have no std API: libc calls.
#![allow(unsafe_code)]

mod common;

use std::io::Read;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Quoll, TempDir, free_tcp_port, free_udp_port, quoll};
use serde_json::json;

fn config(dir: &TempDir) -> serde_json::Value {
    json!({
        "version": 1,
        "server": { "listen_addr": "127.0.0.1", "listen_port": free_tcp_port() },
        "storage": { "data_dir": dir.path().join("data") },
        "flows": [{
            "id": "studio-a-main-contribution-feed", "name": "a",
            "input": { "type": "udp", "bind_addr": format!("127.0.0.1:{}", free_udp_port()) },
            "outputs": [
                { "type": "udp", "id": "to-the-playout-server-in-rack-7",
                  "dest_addr": format!("127.0.0.1:{}", free_udp_port()) },
                { "type": "rtp", "id": "r", "dest_addr": format!("127.0.0.1:{}", free_udp_port()) }
            ]
        }]
    })
}

fn ctl(run_dir: &Path, args: &[&str]) -> Command {
    let mut c = quoll();
    c.arg("ctl")
        .args(args)
        .env("QUOLL_RUNTIME_DIR", run_dir)
        .env_remove("COLUMNS")
        .env_remove("NO_COLOR")
        .stdin(Stdio::null());
    c
}

fn output(mut c: Command) -> (i32, String, String) {
    let o = c.output().expect("run quoll ctl");
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// Run `c` with stdout on a new pseudo-terminal of `cols` columns (0: no size, like a
/// serial line); returns what the terminal received.
fn on_pty(mut c: Command, cols: u16) -> String {
    let (mut master, mut slave) = (0, 0);
    // SAFETY: openpty writes two fds into the locals; no name/termios/winsize passed.
    let r = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(r, 0, "openpty: {}", std::io::Error::last_os_error());
    let ws = libc::winsize {
        ws_row: 24,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: master is a valid pty fd; ws outlives the call.
    assert_eq!(unsafe { libc::ioctl(master, libc::TIOCSWINSZ, &ws) }, 0);
    // SAFETY: both fds are fresh from openpty and owned here only.
    let (master, slave) = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
    let mut child = c
        .stdout(Stdio::from(slave.try_clone().unwrap()))
        .spawn()
        .expect("spawn ctl on the pty");
    // Every slave fd in this process must go (the Command holds one too), or the read
    // below never sees the end.
    drop(c);
    drop(slave);
    let status = child.wait().unwrap();
    assert!(status.success(), "ctl on a pty failed: {status}");
    // The child has exited and the slave is closed: reading drains the buffer, then EIO.
    let mut out = Vec::new();
    let mut f = std::fs::File::from(master);
    let mut buf = [0u8; 4096];
    while let Ok(n) = f.read(&mut buf) {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&out).replace("\r\n", "\n")
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::new();
    let mut esc = false;
    for ch in s.chars() {
        match (esc, ch) {
            (false, '\x1b') => esc = true,
            (true, 'm') => esc = false,
            (true, _) => {}
            (false, c) => out.push(c),
        }
    }
    out
}

fn assert_width(text: &str, width: usize) {
    assert!(!text.trim().is_empty(), "no output");
    for line in text.lines() {
        let n = strip_ansi(line).chars().count();
        assert!(n <= width, "line of {n} > {width} columns: {line:?}");
    }
}

#[test]
fn ctl_fits_the_terminal_and_speaks_json() {
    let dir = TempDir::new("ctl");
    let q = Quoll::start(dir.path(), &config(&dir));
    let run = dir.path().join("run");

    // A pipe: 80 columns, no colour.
    let (code, out, err) = output(ctl(&run, &["status"]));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("status: ok"), "{out}");
    assert!(out.contains("flows 1/1 running"), "{out}");
    assert!(!out.contains('\x1b'));
    assert_width(&out, 80);
    let (_, flows, _) = output(ctl(&run, &["flows"]));
    assert!(flows.contains("studio-a-main-contr~"), "{flows}");
    assert!(flows.contains("-> to-the-playout-server"), "{flows}");
    assert_width(&flows, 80);

    // COLUMNS narrows it, down to the 30-column floor.
    for (columns, width) in [("50", 50), ("32", 32), ("10", 30)] {
        for cmd in ["flows", "status"] {
            let mut narrow = ctl(&run, &[cmd]);
            narrow.env("COLUMNS", columns);
            let (_, out, _) = output(narrow);
            assert_width(&out, width);
            if cmd == "status" {
                assert!(
                    out.contains("status: ok"),
                    "the verdict is never cut: {out}"
                );
            }
        }
    }

    // A real terminal of 60 columns: fitted and coloured.
    let tty = on_pty(ctl(&run, &["flows"]), 60);
    assert_width(&tty, 60);
    assert!(
        tty.contains("\x1b[32mrunning"),
        "colour on a terminal: {tty:?}"
    );
    // NO_COLOR on the same terminal.
    let mut plain = ctl(&run, &["status"]);
    plain.env("NO_COLOR", "1");
    let tty = on_pty(plain, 60);
    assert!(!tty.contains('\x1b'), "{tty:?}");
    // A serial line reports no size: COLUMNS, else 80.
    let tty = on_pty(ctl(&run, &["flows"]), 0);
    assert_width(&tty, 80);
    assert!(
        tty.lines().any(|l| strip_ansi(l).chars().count() > 60),
        "80 wide: {tty}"
    );

    // --json for scripts.
    let (code, out, _) = output(ctl(&run, &["--json", "flows"]));
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v[0]["id"], "studio-a-main-contribution-feed");
    assert_eq!(v[0]["outputs"].as_array().unwrap().len(), 2);
    let (_, out, _) = output(ctl(&run, &["--json", "events"]));
    let evs: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(
        evs.as_array()
            .unwrap()
            .iter()
            .any(|e| e["message"] == "Flow 'studio-a-main-contribution-feed' started"),
        "{evs}"
    );
    for cmd in ["sessions", "tunnels", "manager", "events"] {
        let (code, out, err) = output(ctl(&run, &[cmd]));
        assert_eq!(code, 0, "{cmd}: {err}");
        assert_width(&out, 80);
    }

    // The boot gate passes on a healthy node.
    let (code, _, err) = output(ctl(&run, &["health", "--boot-check", "--timeout", "20"]));
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = output(ctl(&run, &["bogus"]));
    assert_eq!(code, 2, "{err}");

    let (status, log) = q.terminate();
    assert!(status.success(), "{log}");
    assert!(
        !run.join("ctl.sock").exists(),
        "socket removed on a clean stop"
    );
}

#[test]
fn ctl_says_clearly_when_the_daemon_is_not_running() {
    let dir = TempDir::new("ctl-down");
    let run = dir.path().join("run");
    let (code, out, err) = output(ctl(&run, &["status"]));
    assert_eq!(code, 3, "{out}{err}");
    assert!(err.contains("not running"), "{err}");
    assert!(
        err.contains("quoll events"),
        "points at the offline view: {err}"
    );
    // The boot check gives up after its timeout with the same verdict.
    let (code, _, err) = output(ctl(&run, &["health", "--boot-check", "--timeout", "1"]));
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("not healthy"), "{err}");
}

#[test]
fn a_socket_left_by_a_killed_daemon_is_replaced() {
    let dir = TempDir::new("ctl-stale");
    let run = dir.path().join("run");
    let cfg = config(&dir);
    let q = Quoll::start(dir.path(), &cfg);
    let pid = q.pid();
    let _ = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status();
    drop(q);
    assert!(
        run.join("ctl.sock").exists(),
        "SIGKILL leaves the socket file"
    );
    let (code, _, err) = output(ctl(&run, &["status"]));
    assert_eq!(code, 3, "{err}");
    let q = Quoll::start(dir.path(), &cfg);
    let (code, out, err) = output(ctl(&run, &["status"]));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("status: ok"));
    // Owner-only.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(run.join("ctl.sock"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "socket mode {mode:o}");
    let mode = std::fs::metadata(&run).unwrap().permissions().mode();
    assert_eq!(mode & 0o077, 0, "runtime dir mode {mode:o}");
    drop(q);
    let _ = Duration::ZERO;
}

/// EACCES on the control socket is not "the daemon is not running": it gets its own message
/// and exit status 4, at once even with `--boot-check` (waiting cannot fix it). Run as
/// another user when the tests run as root, who is never refused.
#[test]
fn permission_denied_on_the_socket_is_told_apart() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    let dir = TempDir::new("ctl-perm");
    let run = dir.path().join("run");
    std::fs::create_dir_all(&run).unwrap();
    for d in [dir.path(), run.as_path()] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let sock = run.join("ctl.sock");
    // Someone listens (a daemon of another user): the socket exists and accepts.
    let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o000)).unwrap();
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let as_other = |mut c: Command| {
        if root {
            c.uid(65534).gid(65534);
        }
        c
    };
    let (code, out, err) = output(as_other(ctl(&run, &["status"])));
    assert_eq!(code, 4, "{out}{err}");
    // Wrapped to 80 columns for the serial console: compare the words.
    let words = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(err.lines().all(|l| l.chars().count() <= 80), "{err}");
    assert!(
        words(&err).contains(&format!(
            "permission denied on {}: run as root or as the quoll user",
            sock.display()
        )),
        "{err}"
    );
    assert!(!err.contains("not running"), "{err}");
    let started = std::time::Instant::now();
    let (code, _, err) = output(as_other(ctl(
        &run,
        &["health", "--boot-check", "--timeout", "60"],
    )));
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("permission denied"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "the boot check does not wait out a permission problem"
    );
}

/// The OTA gate fails on a degraded node: here the data directory cannot be created, so
/// the event log runs in memory only and health says "degraded". `--boot-check` waits
/// its timeout for a recovery that does not come, then exits 1.
#[test]
fn boot_check_fails_on_a_degraded_node() {
    let dir = TempDir::new("ctl-degraded");
    // A regular file where the data directory's parent should be: not creatable, not even
    // by root.
    let blocker = dir.path().join("not-a-dir");
    std::fs::write(&blocker, "").unwrap();
    let mut cfg = config(&dir);
    cfg["storage"]["data_dir"] = json!(blocker.join("data"));
    let q = Quoll::start(dir.path(), &cfg);
    let run = dir.path().join("run");

    let (code, out, err) = output(ctl(&run, &["health"]));
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("not healthy: status is degraded"), "{err}");
    assert!(
        out.contains("status: degraded"),
        "the verdict's health is shown: {out}"
    );

    let (code, _, err) = output(ctl(&run, &["health", "--boot-check", "--timeout", "2"]));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("status is degraded"), "{err}");
    let (status, log) = q.terminate();
    assert!(status.success(), "{log}");
}
