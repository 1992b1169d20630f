//! `quoll run`: the one-thread runtime, startup in a fixed order (config, events, flows,
//! API), and a clean stop on SIGTERM/SIGINT (flows stopped, events flushed).

use std::cell::RefCell;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::rc::Rc;
use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};

use crate::board::Profile;
use crate::config::{self, Config};
use crate::events::Events;
use crate::net::listener::{Admission, Limits, Listener};
use crate::node::Node;

pub fn run(config_path: Option<PathBuf>, board: Option<Profile>) -> ExitCode {
    init_logging();
    // Before anything opens descriptors; the listeners' caps are derived from the result.
    let fds = match crate::net::fdlimit::raise_nofile() {
        Ok(l) => {
            if l.soft > l.was {
                tracing::info!(
                    "file descriptor limit raised from {} to {} (hard limit {})",
                    l.was,
                    l.soft,
                    l.hard
                );
            }
            l.soft
        }
        Err(e) => {
            tracing::warn!("cannot raise the file descriptor limit: {e}");
            1024
        }
    };
    // A board's config file is the default; on a fresh box it is created from the profile,
    // so the manager's changes persist there from the first boot on.
    let config_path = match (config_path, &board) {
        (Some(p), _) => Some(p),
        (None, Some(b)) => match first_boot_config(b) {
            Ok(p) => Some(p),
            Err(msg) => {
                eprintln!("quoll: {msg}");
                return ExitCode::FAILURE;
            }
        },
        (None, None) => None,
    };
    if let Some(b) = &board {
        tracing::info!(board = %b.board, config = ?config_path, "board profile");
        for (key, have, want) in b.sysctl_shortfalls(Path::new("/proc/sys")) {
            tracing::warn!(
                "{key} is {have}, board {} wants {want}: socket buffers will be capped",
                b.board
            );
        }
    }
    let budget = crate::board::budget(board.as_ref().map(|b| b.board.as_str()));
    let config = match load(config_path.as_deref(), budget) {
        Ok(c) => c,
        Err(msg) => {
            eprintln!("quoll: {msg}");
            return ExitCode::FAILURE;
        }
    };
    // The bridge's recovery variables override config fields: held to the same ranges.
    #[cfg(feature = "rtsp")]
    if let Err(msg) = crate::bridge::check_env(|k| std::env::var(k).ok()) {
        eprintln!("quoll: {msg}");
        return ExitCode::FAILURE;
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("quoll: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, serve(config, config_path, board, budget, fds))
}

/// Hold an exclusive `flock` on `<data_dir>/lock` for the life of the process. A directory
/// that cannot be created is not fatal here (the event log then degrades to memory and says
/// so); another live daemon holding the lock is. The directory is made (or tightened to)
/// owner-only, and the files in it too (`private_dir`), before anything is written there.
fn lock_data_dir(dir: &Path) -> Result<Option<std::fs::File>, StartupConfigError> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    if crate::events::storage::private_dir(dir).is_err() {
        return Ok(None);
    }
    let path = dir.join("lock");
    let Ok(file) = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(crate::events::storage::DATA_FILE_MODE)
        .open(&path)
    else {
        return Ok(None);
    };
    // `mode` above applies to a new file only, reduced by the umask: set it exactly.
    let _ = file.set_permissions(std::fs::Permissions::from_mode(
        crate::events::storage::DATA_FILE_MODE,
    ));
    // std's `try_lock` is `flock(LOCK_EX | LOCK_NB)` on Linux.
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(std::fs::TryLockError::WouldBlock) => Err(StartupConfigError::DataDirInUse {
            dir: dir.to_path_buf(),
        }),
        Err(std::fs::TryLockError::Error(err)) => {
            tracing::warn!("cannot lock {}: {err}", path.display());
            Ok(None)
        }
    }
}

/// Why the daemon cannot start on its config: no config to start with, or its data
/// directory taken. Printed as `quoll: {self}`.
#[derive(Debug)]
pub enum StartupConfigError {
    /// The board profile's default config could not be serialized.
    BoardDefault {
        board: String,
        source: serde_json::Error,
    },
    /// The directory of the board's config file could not be created.
    CreateDir { dir: PathBuf, source: io::Error },
    /// The board's config file could not be written.
    Write { path: PathBuf, source: io::Error },
    /// The config file could not be read.
    Read { path: PathBuf, source: io::Error },
    /// `origin` (a path, or the embedded default) is not a valid config.
    Invalid {
        origin: String,
        errors: Vec<config::ConfigError>,
    },
    /// Another live daemon holds `storage.data_dir`.
    DataDirInUse { dir: PathBuf },
    /// Valid, but over the board's budget.
    OverBudget {
        origin: String,
        error: crate::flow::FlowError,
    },
}

impl fmt::Display for StartupConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BoardDefault { board, source } => {
                write!(f, "board {board}: default config: {source}")
            }
            Self::CreateDir { dir, source } => {
                write!(f, "cannot create {}: {source}", dir.display())
            }
            Self::Write { path, source } => write!(f, "cannot write {}: {source}", path.display()),
            Self::Read { path, source } => write!(f, "{}: cannot read: {source}", path.display()),
            Self::Invalid { origin, errors } => {
                write!(f, "{origin} is invalid:")?;
                for e in errors {
                    write!(f, "\n  {e}")?;
                }
                Ok(())
            }
            Self::DataDirInUse { dir } => write!(
                f,
                "{} is in use by another quoll (storage.data_dir must differ per daemon)",
                dir.display()
            ),
            Self::OverBudget { origin, error } => write!(
                f,
                "{origin} is over this node's budget:\n  {error}\n  (raise the limit in the \
                 config's `limits` block, or remove flows; see docs/security.md)"
            ),
        }
    }
}

impl std::error::Error for StartupConfigError {}

/// The board's config path, written from its default config when absent.
fn first_boot_config(board: &Profile) -> Result<PathBuf, StartupConfigError> {
    let path = board.paths.config.clone();
    if path.exists() {
        return Ok(path);
    }
    let text = serde_json::to_vec_pretty(&board.default_config).map_err(|source| {
        StartupConfigError::BoardDefault {
            board: board.board.clone(),
            source,
        }
    })?;
    if let Some(dir) = path.parent() {
        // The board's config lives in its data directory: owner-only like the rest of it.
        crate::events::storage::private_dir(dir).map_err(|source| {
            StartupConfigError::CreateDir {
                dir: dir.to_path_buf(),
                source,
            }
        })?;
    }
    // 0600: the manager will write credentials into this file's siblings and tokens into it.
    config::store::write_atomic(&path, &text, 0o600).map_err(|source| {
        StartupConfigError::Write {
            path: path.clone(),
            source,
        }
    })?;
    tracing::info!(path = %path.display(), board = %board.board, "first boot: wrote the board's default config");
    Ok(path)
}

/// Read the config and admit it like any change: valid, and within the board's budget (a
/// config over budget would allocate at start what no API call could add).
fn load(path: Option<&Path>, budget: config::Budget) -> Result<Config, StartupConfigError> {
    let (text, origin) = match path {
        Some(p) => (
            std::fs::read_to_string(p).map_err(|source| StartupConfigError::Read {
                path: p.to_path_buf(),
                source,
            })?,
            p.display().to_string(),
        ),
        None => (
            config::EMBEDDED_DEFAULT.to_owned(),
            "embedded default config".to_owned(),
        ),
    };
    let invalid = |errors| StartupConfigError::Invalid {
        origin: origin.clone(),
        errors,
    };
    let value = serde_json::from_str(&text)
        .map_err(|e| invalid(vec![config::ConfigError::from_json(&e)]))?;
    let cfg = config::read_value(value).map_err(invalid)?;
    match crate::node::admit(&cfg, budget) {
        Ok(()) => Ok(cfg),
        Err(crate::flow::FlowError::Invalid(errors)) => Err(invalid(errors)),
        Err(error) => Err(StartupConfigError::OverBudget { origin, error }),
    }
}

async fn serve(
    config: Config,
    config_path: Option<PathBuf>,
    board: Option<Profile>,
    budget: config::Budget,
    fds: u64,
) -> ExitCode {
    // Signals first: a SIGTERM that lands during startup must still stop us cleanly.
    let (mut term, mut int) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(t), Ok(i)) => (t, i),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("quoll: cannot install signal handlers: {e}");
            return ExitCode::FAILURE;
        }
    };
    let notifier = match crate::systemd::Notifier::from_env() {
        Ok(n) => n.map(Rc::new),
        Err(e) => {
            // A broken unit file: run on, but say why systemd will not hear from us.
            tracing::warn!("systemd notifications disabled: {e}");
            None
        }
    };
    let api_addr = SocketAddr::new(config.server.listen_addr, config.server.listen_port);
    let listener = match crate::http::bind(api_addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("quoll: cannot bind the local API on {api_addr}: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Listener connections stay under the descriptors left once the flows the budget
    // allows have theirs: a flood of connections cannot starve the control socket, the
    // event log or an input of descriptors.
    let budget = budget.with_overrides(&config.limits);
    let reserve = crate::net::fdlimit::reserve(budget.max_flows, budget.max_outputs_per_flow);
    let (limits, lowered) = Limits::from_server(&config.server, fds, reserve);
    if lowered {
        tracing::warn!(
            "API connections capped at {} (file descriptor limit {fds}, {reserve} kept for flows \
             and the node); raise LimitNOFILE to allow server.max_connections",
            limits.max_total
        );
    }
    let admission = std::sync::Arc::new(std::sync::Mutex::new(Admission::new(&limits)));
    let listener = Listener::new(listener, "api", limits, admission.clone());
    // The event log recovers before any flow starts, so the first event of this run gets
    // a sequence number above every recovered one. A disk that fails here degrades the log
    // to memory (and /healthz to "degraded"); it does not stop the node.
    let data_dir = PathBuf::from(&config.storage.data_dir);
    // One daemon per data dir: two writers would interleave the event log's segments.
    let _lock = match lock_data_dir(&data_dir) {
        Ok(l) => l,
        Err(msg) => {
            eprintln!("quoll: {msg}");
            return ExitCode::FAILURE;
        }
    };
    // Tokens from the config, else the data dir's token files (created at first start).
    let access = match crate::http::Access::load(&config, &data_dir) {
        Ok(a) => Rc::new(a),
        Err(e) => {
            eprintln!("quoll: cannot make the API token: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (events, _recovery) = Events::open(&data_dir, config.storage.log_config());
    let node = Node::start(
        config,
        config_path,
        events,
        board.as_ref().map(|b| b.board.clone()),
    )
    .await;
    let (active, total) = {
        let h = node.health().await;
        (h.active_flows, h.total_flows)
    };
    node.set_listener_stats(admission);
    let api = tokio::task::spawn_local(crate::http::serve(listener, node.clone(), access));
    // The serial console's way in. Never fatal: flows matter more than `quoll ctl`.
    let ctl_path = crate::console::socket_path(board.as_ref());
    let console = match crate::console::server::bind(&ctl_path) {
        Ok(l) => Some(tokio::task::spawn_local(crate::console::server::serve(
            l,
            ctl_path.clone(),
            node.clone(),
        ))),
        Err(e) => {
            tracing::warn!("control socket disabled, quoll ctl will not reach this daemon: {e}");
            None
        }
    };
    let manager = start_manager(&node);
    tracing::info!(api = %api_addr, active_flows = active, total_flows = total, "quoll ready");
    // READY=1 only now: config loaded, events recovered, flows started, API listening.
    if let Some(n) = &notifier {
        n.ready(&status_line(&node).await);
    }
    let feeder = {
        let node = node.clone();
        let notifier = notifier.clone();
        tokio::task::spawn_local(async move {
            if let Some(n) = notifier {
                let status = Rc::new(RefCell::new(status_line(&node).await));
                let refresh = {
                    let (node, status) = (node.clone(), status.clone());
                    async move {
                        loop {
                            tokio::time::sleep(STATUS_REFRESH).await;
                            *status.borrow_mut() = status_line(&node).await;
                        }
                    }
                };
                tokio::select! {
                    _ = n.feed(|| status.borrow().clone()) => {}
                    _ = refresh => {}
                }
            }
        })
    };

    // Waited for in a task of its own: the future given to the runtime is polled again
    // each time any task wakes, and polling the two signal streams that often showed up in
    // profiles of a busy node.
    let _ = tokio::task::spawn_local(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: stopping"),
            _ = int.recv() => tracing::info!("SIGINT: stopping"),
        }
    })
    .await;
    if let Some(n) = &notifier {
        n.stopping();
    }
    feeder.abort();
    api.abort();
    for task in manager {
        task.abort();
    }
    if let Some(c) = console {
        c.abort();
        // Let the aborted task drop (it removes the socket file) before we exit.
        let _ = c.await;
    }
    node.shutdown().await;
    // Flush the log and join its writer: at most one commit (one fdatasync) of waiting.
    node.events.close();
    tracing::info!("stopped");
    ExitCode::SUCCESS
}

/// How often the one-line `STATUS=` summary is recomputed for systemd.
const STATUS_REFRESH: Duration = Duration::from_secs(5);

/// The one-line summary `systemctl status quoll` shows.
async fn status_line(node: &Node) -> String {
    let h = node.health().await;
    format!(
        "{}: {}/{} flows running",
        h.status, h.active_flows, h.total_flows
    )
}

/// The manager link, when the config has an enabled `manager` block, fed from the event
/// log's delivery cursor.
fn start_manager(node: &std::rc::Rc<Node>) -> Vec<tokio::task::JoinHandle<()>> {
    let Some(cfg) = node.manager_config().filter(|m| m.enabled) else {
        return Vec::new();
    };
    let (feed, watch) = crate::manager::LogFeed::new(node.events.clone());
    let node = node.clone();
    let link = async move {
        if let Err(e) = crate::manager::run(node, cfg, feed).await {
            tracing::error!("manager link not started: {e}");
        }
    };
    vec![
        tokio::task::spawn_local(watch),
        tokio::task::spawn_local(link),
    ]
}

/// stderr, with the userinfo of every URL in a log line redacted: whatever a line quotes (a
/// peer's error, a forwarded FFmpeg line, a URL in an error chain), no password reaches the
/// journal. The formatter hands over one whole event per write.
struct RedactingStderr;

impl std::io::Write for RedactingStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        std::io::stderr().write_all(crate::config::redact_userinfo(&text).as_bytes())?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("QUOLL_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| RedactingStderr)
        .with_ansi(
            std::io::IsTerminal::is_terminal(&std::io::stderr())
                && std::env::var_os("NO_COLOR").is_none(),
        )
        .try_init();
}
