//! systemd service notifications (`sd_notify(3)`): `READY=1`, `WATCHDOG=1`, `STATUS=`,
//! `STOPPING=1`, as datagrams to `$NOTIFY_SOCKET`. The protocol is one datagram per message,
//! so no library is needed.
//!
//! The watchdog is fed by a task on the runtime thread, never by a thread of its own: if the
//! runtime loop stalls, the pings stop and systemd restarts the process, which is the point.

use std::io;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::time::Duration;

/// Where notifications go, from the environment systemd sets for a `Type=notify` service.
#[derive(Debug)]
pub struct Notifier {
    socket: UnixDatagram,
    target: Target,
    watchdog: Option<Duration>,
}

#[derive(Debug, Clone)]
enum Target {
    Path(PathBuf),
    /// Linux abstract namespace (`@name` in `NOTIFY_SOCKET`).
    Abstract(Vec<u8>),
}

/// Why the environment could not be used.
#[derive(Debug)]
pub enum NotifyError {
    /// `NOTIFY_SOCKET` is neither an absolute path nor `@abstract`.
    BadSocket(String),
    /// `WATCHDOG_USEC` is not a positive integer.
    BadWatchdog(String),
    Socket(io::Error),
}

impl std::fmt::Display for NotifyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotifyError::BadSocket(s) => write!(f, "NOTIFY_SOCKET {s:?} is not a socket path"),
            NotifyError::BadWatchdog(s) => write!(f, "WATCHDOG_USEC {s:?} is not a duration"),
            NotifyError::Socket(e) => write!(f, "cannot create the notify socket: {e}"),
        }
    }
}

impl Notifier {
    /// `None` when not started by systemd (no `NOTIFY_SOCKET`): every call is then skipped.
    pub fn from_env() -> Result<Option<Self>, NotifyError> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        Self::from_vars(
            var("NOTIFY_SOCKET").as_deref(),
            var("WATCHDOG_USEC").as_deref(),
            var("WATCHDOG_PID").as_deref(),
            std::process::id(),
        )
    }

    fn from_vars(
        socket: Option<&str>,
        watchdog_usec: Option<&str>,
        watchdog_pid: Option<&str>,
        pid: u32,
    ) -> Result<Option<Self>, NotifyError> {
        let Some(socket) = socket else {
            return Ok(None);
        };
        let target = if let Some(name) = socket.strip_prefix('@') {
            Target::Abstract(name.as_bytes().to_vec())
        } else if socket.starts_with('/') {
            Target::Path(socket.into())
        } else {
            return Err(NotifyError::BadSocket(socket.to_owned()));
        };
        // WATCHDOG_PID names the process meant to ping; a child that inherited the
        // variables (we start none, but be exact) must not.
        let for_us = watchdog_pid.is_none_or(|p| p.trim() == pid.to_string());
        let watchdog = match watchdog_usec {
            Some(us) if for_us => match us.trim().parse::<u64>() {
                Ok(us) if us > 0 => Some(Duration::from_micros(us)),
                _ => return Err(NotifyError::BadWatchdog(us.to_owned())),
            },
            _ => None,
        };
        let socket = UnixDatagram::unbound().map_err(NotifyError::Socket)?;
        socket.set_nonblocking(true).map_err(NotifyError::Socket)?;
        Ok(Some(Notifier {
            socket,
            target,
            watchdog,
        }))
    }

    /// How often to send `WATCHDOG=1`: half of `WatchdogSec`, as sd_watchdog_enabled(3)
    /// recommends, so one late tick does not get us killed.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog.map(|w| w / 2)
    }

    /// Send one notification (newline-separated assignments). Never blocks: a full socket
    /// buffer loses the message, and the next ping or status replaces it.
    pub fn notify(&self, state: &str) -> io::Result<()> {
        match &self.target {
            Target::Path(p) => self.socket.send_to(state.as_bytes(), p).map(drop),
            Target::Abstract(name) => {
                use std::os::linux::net::SocketAddrExt;
                let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
                self.socket.send_to_addr(state.as_bytes(), &addr).map(drop)
            }
        }
    }

    pub fn ready(&self, status: &str) {
        self.send(&format!("READY=1\nSTATUS={}", one_line(status)));
    }

    pub fn status(&self, status: &str) {
        self.send(&format!("STATUS={}", one_line(status)));
    }

    pub fn stopping(&self) {
        self.send("STOPPING=1\nSTATUS=stopping");
    }

    pub fn watchdog(&self) {
        self.send("WATCHDOG=1");
    }

    fn send(&self, msg: &str) {
        if let Err(e) = self.notify(msg) {
            tracing::debug!("sd_notify failed: {e}");
        }
    }

    /// Feed the watchdog from the runtime loop (when systemd asked for one), and refresh
    /// `STATUS=` whenever `status()` says something new. Runs until dropped.
    pub async fn feed(&self, mut status: impl FnMut() -> String) {
        let every = self.watchdog_interval().unwrap_or(STATUS_EVERY);
        let mut tick = tokio::time::interval(every);
        // After a stall, do not burst the missed pings: one ping says the loop is back.
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last = String::new();
        loop {
            tick.tick().await;
            if self.watchdog.is_some() {
                self.watchdog();
            }
            let now = status();
            if now != last {
                self.status(&now);
                last = now;
            }
        }
    }
}

/// How often `STATUS=` is looked at when there is no watchdog to pace it.
const STATUS_EVERY: Duration = Duration::from_secs(5);

/// A STATUS= value must be one line: the protocol separates assignments by newlines.
fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recv_all(rx: &UnixDatagram) -> Vec<String> {
        let mut out = Vec::new();
        let mut buf = [0u8; 512];
        while let Ok(n) = rx.recv(&mut buf) {
            out.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        out
    }

    fn pair(tag: &str) -> (UnixDatagram, PathBuf) {
        let path = std::env::temp_dir().join(format!("quoll-notify-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let rx = UnixDatagram::bind(&path).unwrap();
        rx.set_nonblocking(true).unwrap();
        (rx, path)
    }

    #[test]
    fn no_socket_means_no_notifier_and_bad_values_are_errors() {
        assert!(
            Notifier::from_vars(None, Some("1000"), None, 1)
                .unwrap()
                .is_none()
        );
        assert!(matches!(
            Notifier::from_vars(Some("relative"), None, None, 1),
            Err(NotifyError::BadSocket(_))
        ));
        assert!(matches!(
            Notifier::from_vars(Some("/x"), Some("soon"), None, 1),
            Err(NotifyError::BadWatchdog(_))
        ));
        assert!(matches!(
            Notifier::from_vars(Some("/x"), Some("0"), None, 1),
            Err(NotifyError::BadWatchdog(_))
        ));
    }

    #[test]
    fn watchdog_is_half_of_watchdog_usec_and_only_for_our_pid() {
        let n = Notifier::from_vars(Some("/x"), Some("10000000"), Some("42"), 42)
            .unwrap()
            .unwrap();
        assert_eq!(n.watchdog_interval(), Some(Duration::from_secs(5)));
        let other = Notifier::from_vars(Some("/x"), Some("10000000"), Some("7"), 42)
            .unwrap()
            .unwrap();
        assert_eq!(other.watchdog_interval(), None);
    }

    #[test]
    fn messages_reach_the_socket_as_single_datagrams() {
        let (rx, path) = pair("msg");
        let n = Notifier::from_vars(path.to_str(), None, None, 1)
            .unwrap()
            .unwrap();
        n.ready("2 flows running\nsecond line");
        n.status("all good");
        n.stopping();
        let got = recv_all(&rx);
        assert_eq!(
            got,
            [
                "READY=1\nSTATUS=2 flows running second line",
                "STATUS=all good",
                "STOPPING=1\nSTATUS=stopping"
            ]
        );
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn abstract_socket_names_work() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("quoll-notify-abstract-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let rx = UnixDatagram::bind_addr(&addr).unwrap();
        rx.set_nonblocking(true).unwrap();
        let n = Notifier::from_vars(Some(&format!("@{name}")), None, None, 1)
            .unwrap()
            .unwrap();
        n.watchdog();
        assert_eq!(recv_all(&rx), ["WATCHDOG=1"]);
    }

    /// A stalled runtime loop stops the pings: the feeder lives on the loop it guards. The
    /// stall is simulated by blocking the runtime thread (on purpose, to be the fault).
    #[test]
    fn a_stalled_runtime_stops_feeding_the_watchdog() {
        let (rx, path) = pair("stall");
        // WatchdogSec=40ms: a ping every 20 ms.
        let n = Notifier::from_vars(path.to_str(), Some("40000"), None, 1)
            .unwrap()
            .unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let stall = Duration::from_millis(300);
        let (before, during) = rt.block_on(async {
            let feeder = n.feed(|| "ok".to_owned());
            tokio::pin!(feeder);
            // Let it ping a few times.
            let _ = tokio::time::timeout(Duration::from_millis(100), &mut feeder).await;
            let before = recv_all(&rx);
            std::thread::sleep(stall); // the loop is stuck: nothing may be sent
            let during = recv_all(&rx);
            (before, during)
        });
        assert!(
            before.iter().filter(|m| *m == "WATCHDOG=1").count() >= 2,
            "{before:?}"
        );
        assert!(before.contains(&"STATUS=ok".to_owned()), "{before:?}");
        assert!(
            during.is_empty(),
            "pings while the loop was stalled: {during:?}"
        );
        let _ = std::fs::remove_file(path);
    }
}
