//! `quoll ctl`: ask the running daemon over its control socket and print the answer.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::text::{self, Style};

pub const USAGE: &str = "\
usage: quoll ctl [--json] [--socket PATH] [--board NAME] COMMAND
  status    version, uptime, flow counts     flows     flows and their outputs
  events    the newest events                sessions  bridge sessions
  tunnels   relay tunnels                    manager   the manager link
  health [--boot-check] [--timeout SECS]
            exit 0 only when the node is healthy (--boot-check waits for it)
  ack-loss  acknowledge the report of events lost to damage on disk
exit status: 0 ok, 1 failed or not healthy, 2 usage, 3 daemon not running,
             4 permission denied on the control socket";

/// Exit code when the daemon does not answer.
const NOT_RUNNING: u8 = 3;
/// Exit code when the control socket (or its directory) is not ours to use: the daemon may
/// well be running, and waiting will not help.
const PERMISSION_DENIED: u8 = 4;
const COMMANDS: &[&str] = &[
    "status", "flows", "events", "sessions", "tunnels", "manager", "health", "ack-loss",
];

#[derive(Debug)]
enum CtlError {
    /// No socket, or nobody listening on it.
    NotRunning(PathBuf, std::io::Error),
    /// EACCES/EPERM on connect: the socket or its directory belongs to another user.
    PermissionDenied(PathBuf),
    Io(std::io::Error),
    BadReply(String),
    Refused(String),
}

impl std::fmt::Display for CtlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CtlError::NotRunning(p, e) => write!(
                f,
                "the quoll daemon is not running (no answer on {}: {e}); \
                 `quoll events` still reads the event log from disk",
                p.display()
            ),
            CtlError::PermissionDenied(p) => write!(
                f,
                "permission denied on {}: run as root or as the quoll user",
                p.display()
            ),
            CtlError::Io(e) => write!(f, "control socket: {e}"),
            CtlError::BadReply(s) => write!(f, "unreadable reply from the daemon: {s}"),
            CtlError::Refused(s) => write!(f, "the daemon says: {s}"),
        }
    }
}

pub fn run(mut args: lexopt::Parser) -> ExitCode {
    use lexopt::Arg::{Long, Value as Val};
    let mut json = false;
    let mut socket: Option<PathBuf> = None;
    let mut board: Option<String> = None;
    let mut command: Option<String> = None;
    let mut boot_check = false;
    let mut timeout = Duration::from_secs(60);
    loop {
        let arg = match args.next() {
            Ok(Some(a)) => a,
            Ok(None) => break,
            Err(e) => return usage(&e.to_string()),
        };
        match arg {
            Long("json") => json = true,
            Long("boot-check") => boot_check = true,
            Long("help") => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            Long("socket") | Long("board") | Long("timeout") => {
                let name = match &arg {
                    Long(n) => n.to_string(),
                    _ => unreachable!(),
                };
                let v = match args.value() {
                    Ok(v) => v.to_string_lossy().into_owned(),
                    Err(e) => return usage(&e.to_string()),
                };
                match name.as_str() {
                    "socket" => socket = Some(v.into()),
                    "board" => board = Some(v),
                    _ => match v.parse::<u64>() {
                        Ok(s) => timeout = Duration::from_secs(s),
                        Err(_) => return usage(&format!("--timeout {v:?} is not seconds")),
                    },
                }
            }
            Val(v) if command.is_none() => command = Some(v.to_string_lossy().into_owned()),
            other => return usage(&format!("unexpected {}", other.unexpected())),
        }
    }
    let Some(command) = command else {
        return usage("which command?");
    };
    if !COMMANDS.contains(&command.as_str()) {
        return usage(&format!("unknown command {command:?}"));
    }
    let socket = match socket {
        Some(s) => s,
        None => match crate::board::selected(board.as_deref()) {
            Ok(b) => super::socket_path(b.as_ref()),
            Err(e) => return usage(&e.to_string()),
        },
    };
    // A socket in a /tmp fallback directory someone else controls could be anyone's.
    if let Err(e) = super::check_runtime_dir(socket.parent().unwrap_or(Path::new("/"))) {
        complain(&format!("quoll ctl: {e}"));
        return ExitCode::FAILURE;
    }
    if command == "health" {
        return health(&socket, json, boot_check, timeout);
    }
    match ask(&socket, &command) {
        Ok(data) => {
            print(&command, &data, json);
            ExitCode::SUCCESS
        }
        Err(e) => {
            complain(&format!("quoll ctl: {e}"));
            exit_code(&e)
        }
    }
}

fn exit_code(e: &CtlError) -> ExitCode {
    match e {
        CtlError::NotRunning(..) => ExitCode::from(NOT_RUNNING),
        CtlError::PermissionDenied(..) => ExitCode::from(PERMISSION_DENIED),
        _ => ExitCode::FAILURE,
    }
}

/// What a failed connect means: permission problems are told apart from a daemon that is
/// not there, since the daemon may well be running.
fn connect_error(socket: &Path, e: std::io::Error) -> CtlError {
    match e.raw_os_error() {
        Some(libc::EACCES) | Some(libc::EPERM) => CtlError::PermissionDenied(socket.to_owned()),
        _ => CtlError::NotRunning(socket.to_owned(), e),
    }
}

fn usage(msg: &str) -> ExitCode {
    complain(&format!("quoll ctl: {msg}"));
    eprintln!("{USAGE}");
    ExitCode::from(2)
}

/// An error on stderr, wrapped to the serial console's 80 columns.
fn complain(msg: &str) {
    for line in text::wrap(msg, 80) {
        eprintln!("{line}");
    }
}

/// One request, one reply.
fn ask(socket: &Path, request: &str) -> Result<Value, CtlError> {
    let mut s = UnixStream::connect(socket).map_err(|e| connect_error(socket, e))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(CtlError::Io)?;
    s.write_all(format!("{request}\n").as_bytes())
        .map_err(CtlError::Io)?;
    let mut line = String::new();
    BufReader::new(s)
        .read_line(&mut line)
        .map_err(CtlError::Io)?;
    let reply: Value =
        serde_json::from_str(&line).map_err(|e| CtlError::BadReply(e.to_string()))?;
    if reply.get("ok").and_then(Value::as_bool) == Some(true) {
        Ok(reply.get("data").cloned().unwrap_or(Value::Null))
    } else {
        Err(CtlError::Refused(
            reply
                .get("error")
                .and_then(Value::as_str)
                .unwrap_or("no reason given")
                .to_owned(),
        ))
    }
}

fn print(command: &str, data: &Value, json: bool) {
    if json {
        println!("{data}");
        return;
    }
    let style = Style::detect();
    let lines = match command {
        "status" | "health" => text::status(data, &style),
        "flows" => text::flows(data, &style),
        "events" => text::events(data, &style),
        "sessions" => text::sessions(data, &style),
        "tunnels" => text::tunnels(data, &style),
        "ack-loss" => vec![text::ack_loss(data)],
        _ => text::manager(data, &style),
    };
    let mut out = std::io::stdout().lock();
    for l in lines {
        let _ = writeln!(out, "{l}");
    }
}

/// Why a health reply is not healthy, if it is not: status other than `ok`, or a flow in
/// `error`. (A flow stopped on purpose is fine.)
///
/// For the OTA gate (`boot_check`), a node degraded only by events lost to damage on disk
/// (the event log is durable, and its loss report not acknowledged yet) passes: the image
/// works, and rolling it back would not bring the events back. The older slot would meet
/// the same damaged data partition, so a strict gate would refuse every update until
/// someone acknowledged the loss. Plain `health` still says `degraded`.
pub fn unhealthy(health: &Value, flows: &Value, boot_check: bool) -> Option<String> {
    let status = health.get("status").and_then(Value::as_str).unwrap_or("?");
    if status != "ok" && !(boot_check && status == "degraded" && only_event_loss(health)) {
        return Some(format!("status is {status}"));
    }
    let failed: Vec<&str> = flows
        .as_array()
        .into_iter()
        .flatten()
        .filter(|f| f.get("state").and_then(Value::as_str) == Some("error"))
        .filter_map(|f| f.get("id").and_then(Value::as_str))
        .collect();
    (!failed.is_empty()).then(|| format!("flows in error: {}", failed.join(", ")))
}

/// Whether the one thing that degrades this health reply is an unacknowledged loss report
/// (the two causes of `degraded` are a memory-only event log and that; see `Node::health`).
fn only_event_loss(health: &Value) -> bool {
    let log = &health["event_log"];
    log["durable"].as_bool() == Some(true) && log["lost_unacked"].as_u64().unwrap_or(0) > 0
}

/// `health`: once, or with a deadline (`--boot-check`) polling until healthy.
fn health(socket: &Path, json: bool, boot_check: bool, timeout: Duration) -> ExitCode {
    let deadline = boot_check.then(|| Instant::now() + timeout);
    loop {
        let verdict = ask(socket, "health").and_then(|h| Ok((h, ask(socket, "flows")?)));
        let reason = match &verdict {
            Ok((h, f)) => match unhealthy(h, f, boot_check) {
                None => {
                    if boot_check && only_event_loss(h) && h["status"] != "ok" {
                        eprintln!(
                            "quoll ctl health: passing the boot check although {} events \
                             were lost to damage on disk (see `quoll events`; \
                             `quoll ctl ack-loss` once seen)",
                            h["event_log"]["lost_unacked"]
                        );
                    }
                    print("health", h, json);
                    return ExitCode::SUCCESS;
                }
                Some(r) => r,
            },
            Err(e) => e.to_string(),
        };
        // Waiting does not cure a permission problem: say so at once.
        let hopeless = matches!(verdict, Err(CtlError::PermissionDenied(..)));
        match deadline {
            Some(d) if Instant::now() < d && !hopeless => {
                // Polling a daemon that is still starting; not waiting for a test.
                std::thread::sleep(Duration::from_millis(500));
            }
            _ => {
                if let Ok((h, _)) = &verdict {
                    print("health", h, json);
                }
                complain(&format!("quoll ctl health: not healthy: {reason}"));
                return match &verdict {
                    Err(e) => exit_code(e),
                    Ok(_) => ExitCode::FAILURE,
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn permission_errors_are_not_a_stopped_daemon() {
        let p = Path::new("/run/quoll/ctl.sock");
        let e = connect_error(p, std::io::Error::from_raw_os_error(libc::EACCES));
        assert!(matches!(e, CtlError::PermissionDenied(_)), "{e:?}");
        assert_eq!(
            e.to_string(),
            "permission denied on /run/quoll/ctl.sock: run as root or as the quoll user"
        );
        let e = connect_error(p, std::io::Error::from_raw_os_error(libc::ENOENT));
        assert!(matches!(e, CtlError::NotRunning(..)), "{e:?}");
        let e = connect_error(p, std::io::Error::from_raw_os_error(libc::ECONNREFUSED));
        assert!(matches!(e, CtlError::NotRunning(..)), "{e:?}");
    }

    #[test]
    fn usage_fits_80_columns() {
        for l in USAGE.lines() {
            assert!(
                l.chars().count() <= 80,
                "{} columns: {l}",
                l.chars().count()
            );
        }
    }

    #[test]
    fn healthy_only_with_status_ok_and_no_flow_in_error() {
        let ok = json!({"status": "ok"});
        let flows = json!([{"id": "a", "state": "running"}, {"id": "b", "state": "stopped"}]);
        assert_eq!(unhealthy(&ok, &flows, false), None);
        assert_eq!(
            unhealthy(&json!({"status": "degraded"}), &flows, false).as_deref(),
            Some("status is degraded")
        );
        let bad = json!([{"id": "a", "state": "error"}, {"id": "c", "state": "error"}]);
        assert_eq!(
            unhealthy(&ok, &bad, false).as_deref(),
            Some("flows in error: a, c")
        );
    }

    /// The OTA gate lets through a node degraded by an unacknowledged loss report alone;
    /// plain `health` does not, and nothing else degraded passes the gate.
    #[test]
    fn the_boot_check_passes_a_node_degraded_only_by_event_loss() {
        let flows = json!([{"id": "a", "state": "running"}]);
        let lost = json!({"status": "degraded",
            "event_log": {"durable": true, "lost_unacked": 3, "loss_seq": 9}});
        assert_eq!(unhealthy(&lost, &flows, true), None);
        assert_eq!(
            unhealthy(&lost, &flows, false).as_deref(),
            Some("status is degraded")
        );
        let memory = json!({"status": "degraded",
            "event_log": {"durable": false, "lost_unacked": 3}});
        assert!(unhealthy(&memory, &flows, true).is_some());
        let plain =
            json!({"status": "degraded", "event_log": {"durable": true, "lost_unacked": 0}});
        assert!(unhealthy(&plain, &flows, true).is_some());
        let error = json!({"status": "error",
            "event_log": {"durable": true, "lost_unacked": 3}});
        assert!(unhealthy(&error, &flows, true).is_some());
        let failed = json!([{"id": "a", "state": "error"}]);
        assert!(unhealthy(&lost, &failed, true).is_some());
    }
}
