//! `quoll run` as a service. Under a fake systemd (a Unix datagram socket as
//! `NOTIFY_SOCKET`) it sends `READY=1` only once the flows run, then `WATCHDOG=1` at half of
//! `WATCHDOG_USEC` with a `STATUS=` line, and `STOPPING=1` on SIGTERM. One daemon per data
//! dir. Under a 20 Mbit/s load it runs on exactly two threads. Without `rauc.slot=` on the
//! kernel command line, `health` gets the booted slot from `rauc status`, and a hung `rauc`
//! delays nothing.

mod common;

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use common::{Quoll, TempDir, free_tcp_port, free_udp_port, node_config, udp_flow, wait_for};
use serde_json::json;

/// Datagrams received until `done` says stop, or the deadline.
fn collect_until(
    rx: &UnixDatagram,
    within: Duration,
    mut done: impl FnMut(&[String]) -> bool,
) -> Vec<String> {
    let mut at = Vec::new();
    collect_timed(rx, within, &mut at, |m| done(m))
}

/// `collect_until`, also recording when each datagram arrived.
fn collect_timed(
    rx: &UnixDatagram,
    within: Duration,
    at: &mut Vec<Instant>,
    mut done: impl FnMut(&[String]) -> bool,
) -> Vec<String> {
    rx.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let deadline = Instant::now() + within;
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while Instant::now() < deadline && !done(&got) {
        if let Ok(n) = rx.recv(&mut buf) {
            at.push(Instant::now());
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
    let config = node_config(
        free_tcp_port(),
        &dir.path().join("data"),
        json!([udp_flow(free_udp_port(), free_udp_port())]),
    );
    // WatchdogSec=1s: a ping every 500 ms (slow enough for qemu).
    const PINGS: usize = 6;
    let q = Quoll::start_with_env(
        dir.path(),
        &config,
        &[
            ("NOTIFY_SOCKET", sock.to_str().unwrap()),
            ("WATCHDOG_USEC", "1000000"),
        ],
    );
    let mut at = Vec::new();
    let got = collect_timed(&rx, Duration::from_secs(30), &mut at, |m| {
        m.iter().filter(|s| s.as_str() == "WATCHDOG=1").count() >= PINGS
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
    // Pinged at half of WatchdogSec: the mean spacing of the pings, as this end saw them,
    // within [0.25, 0.75] x WatchdogSec (wide enough for a loaded machine or qemu-user).
    let pings: Vec<Instant> = got
        .iter()
        .zip(&at)
        .filter(|(m, _)| *m == "WATCHDOG=1")
        .map(|(_, t)| *t)
        .collect();
    assert!(pings.len() >= PINGS, "{got:?}");
    let mean = (pings[pings.len() - 1] - pings[0]).as_secs_f64() / (pings.len() - 1) as f64;
    assert!(
        (0.25..=0.75).contains(&mean),
        "mean ping interval {mean:.3} s for WatchdogSec=1s (want about 0.5 s)"
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
    let config = empty_config(&dir);
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
    let config = empty_config(&dir);
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
    first.stop();
}

/// Thread names of a process, from /proc/PID/task (`comm`, sorted).
fn thread_names(pid: u32) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| {
            d.filter_map(Result::ok)
                .filter_map(|t| std::fs::read_to_string(t.path().join("comm")).ok())
                .map(|n| n.trim().to_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// The footprint promise: in steady state under a 20 Mbit/s flow the daemon has exactly
/// two threads, the runtime (`quoll`) and the event-log writer. The test paces the load
/// itself and samples /proc/PID/task while it runs. Native only: under qemu-user the
/// process is the emulator, with threads of its own.
#[test]
fn two_threads_in_steady_state_under_a_20_mbit_load() {
    if std::env::var("QUOLL_RUNNER").is_ok_and(|r| !r.trim().is_empty()) {
        eprintln!("skipping: thread count is checked natively (qemu-user adds threads)");
        return;
    }
    let dir = TempDir::new("threads");
    let in_port = free_udp_port();
    // Outputs to a bound socket nobody reads: the kernel drops what overflows it.
    let (_sink, out_port) = common::udp_receiver();
    let config = node_config(
        free_tcp_port(),
        &dir.path().join("data"),
        json!([{
            "id": "f1", "name": "f1",
            "input": { "type": "udp", "bind_addr": format!("127.0.0.1:{in_port}") },
            "outputs": [
                { "type": "udp", "id": "o1", "dest_addr": format!("127.0.0.1:{out_port}") },
                { "type": "rtp", "id": "o2", "dest_addr": format!("127.0.0.1:{out_port}") }
            ]
        }]),
    );
    let q = Quoll::start(dir.path(), &config);
    let pid = q.pid();
    let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    tx.connect(("127.0.0.1", in_port)).unwrap();

    // 7 TS packets per datagram, PID 0x100, continuity counter counting.
    const DGRAM: usize = 7 * 188;
    const RATE_BPS: f64 = 20e6;
    let mut cc = 0u8;
    let mut datagram = move || {
        let mut d = vec![0xffu8; DGRAM];
        for p in d.chunks_mut(188) {
            p[..4].copy_from_slice(&[0x47, 0x01, 0x00, 0x10 | cc]);
            cc = (cc + 1) & 0x0f;
        }
        d
    };
    const WANT_SAMPLES: usize = 10;
    let start = Instant::now();
    let deadline = start + Duration::from_secs(60);
    let mut sent = 0u64;
    let mut next_look = start;
    let mut loaded = false;
    let mut steady: Vec<Vec<String>> = Vec::new();
    let mut seen: Vec<Vec<String>> = Vec::new();
    loop {
        // Pace by bytes: everything due by now goes out.
        let due = (start.elapsed().as_secs_f64() * RATE_BPS / 8.0) as u64;
        while sent < due {
            let _ = tx.send(&datagram());
            sent += DGRAM as u64;
        }
        if Instant::now() >= next_look {
            next_look += Duration::from_millis(200);
            if !loaded {
                // The load is on once the flow has taken a second's worth of it.
                let (_, f) = q.api("GET", "/api/v1/flows/f1", None);
                loaded = f["input"]["datagrams"].as_u64().unwrap_or(0) > 1_900;
            } else {
                let names = thread_names(pid);
                // Steady: the last samples in a row all two threads (a transient thread,
                // e.g. tokio's blocking pool for a DNS lookup, may come and go first).
                if names.len() == 2 {
                    steady.push(names.clone());
                } else {
                    steady.clear();
                }
                seen.push(names);
                if steady.len() >= WANT_SAMPLES {
                    break;
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "no steady state of two threads under load (loaded: {loaded}); samples: {seen:?}"
        );
        // The load generator's pacing step, not a synchronisation.
        std::thread::sleep(Duration::from_millis(1));
    }
    for names in &steady {
        assert_eq!(names, &["quoll", "quoll-eventlog"], "{seen:?}");
    }
    // The load really went through the flow.
    let (_, f) = q.api("GET", "/api/v1/flows/f1", None);
    assert!(
        f["input"]["bitrate_bps"].as_u64().unwrap_or(0) > 10_000_000,
        "{f}"
    );
    assert_eq!(f["input"]["cc_errors"], 0, "{f}");
    q.stop();
}

/// A fake `rauc` on PATH that prints `output`, or when `None` writes its pid to
/// `<dir>/rauc.pid` and hangs.
fn fake_rauc(dir: &std::path::Path, output: Option<&str>) -> String {
    use std::os::unix::fs::PermissionsExt;
    let bin = dir.join("fake-bin");
    std::fs::create_dir_all(&bin).unwrap();
    let script = match output {
        Some(out) => format!(
            "#!/bin/sh\n[ \"$1 $2\" = \"status --output-format=json\" ] || exit 1\ncat <<'EOF'\n{out}\nEOF\n"
        ),
        None => format!(
            "#!/bin/sh\necho $$ > {}.tmp && mv {0}.tmp {0}\nexec sleep 600\n",
            dir.join("rauc.pid").display()
        ),
    };
    let path = bin.join("rauc");
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into())
    )
}

/// Whether `pid` is a live (not zombie) process.
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X")
    })
}

fn booted_by_cmdline() -> bool {
    std::fs::read_to_string("/proc/cmdline").is_ok_and(|c| c.contains("rauc.slot="))
}

/// quoll (no flows) with the fake `rauc` printing `output` (see `fake_rauc`) first on
/// PATH, or `None` (skipping) when this machine's kernel command line names a RAUC slot.
fn with_fake_rauc(tag: &str, output: Option<&str>) -> Option<(TempDir, Quoll)> {
    if booted_by_cmdline() {
        eprintln!("skipping: this machine's kernel command line names a RAUC slot");
        return None;
    }
    let dir = TempDir::new(tag);
    let path = fake_rauc(dir.path(), output);
    let q = Quoll::start_with_env(dir.path(), &empty_config(&dir), &[("PATH", &path)]);
    Some((dir, q))
}

/// No flows; the data dir in `dir`.
fn empty_config(dir: &TempDir) -> serde_json::Value {
    node_config(free_tcp_port(), &dir.path().join("data"), json!([]))
}

/// An EFI-booted board has no `rauc.slot=`: the slot comes from `rauc status`'s JSON.
#[test]
fn booted_slot_from_rauc_status_when_the_command_line_has_none() {
    let status = r#"{"compatible":"quoll-jetson-orin-nano","variant":null,"booted":"B","boot_primary":"rootfs.1","slots":[{"rootfs.0":{"class":"rootfs","device":"/dev/nvme0n1p1","type":"ext4","bootname":"A","state":"inactive","parent":null,"mountpoint":null,"boot_status":"good"}},{"rootfs.1":{"class":"rootfs","device":"/dev/nvme0n1p2","type":"ext4","bootname":"B","state":"booted","parent":null,"mountpoint":"/","boot_status":"good"}}]}"#;
    let Some((_dir, q)) = with_fake_rauc("rauc", Some(status)) else {
        return;
    };
    let slot = wait_for(Duration::from_secs(20), "boot_slot in /healthz", || {
        let (_, h) = q.api("GET", "/healthz", None);
        h["boot_slot"].as_str().map(str::to_owned)
    });
    assert_eq!(slot, "B");
    q.stop();
}

/// A `rauc` that never answers holds up neither startup nor the API (they answer while it
/// is still running), the slot is left out, and it is killed at its timeout.
#[test]
fn a_hung_rauc_delays_nothing() {
    let Some((dir, q)) = with_fake_rauc("rauc-hung", None) else {
        return;
    };
    let pidfile = dir.path().join("rauc.pid");
    let pid: u32 = wait_for(Duration::from_secs(20), "rauc to be run", || {
        std::fs::read_to_string(&pidfile)
            .ok()
            .and_then(|t| t.trim().parse().ok())
    });
    let (code, h) = q.api("GET", "/healthz", None);
    assert_eq!(code, 200);
    assert_eq!(h["status"], "ok");
    assert!(h.get("boot_slot").is_none(), "{h}");
    assert!(
        alive(pid),
        "the API answered only once rauc was gone: the runtime waited for it"
    );
    // Abandoned (killed) at its timeout, not left behind.
    wait_for(Duration::from_secs(60), "the hung rauc killed", || {
        (!alive(pid)).then_some(())
    });
    let log = q.stop();
    assert!(log.contains("rauc status did not answer"), "{log}");
}
