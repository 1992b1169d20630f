//! The daemon's end of the control socket.

use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use crate::node::Node;

/// Longest request line: the requests are single words.
const MAX_REQUEST: usize = 256;
/// A client that sends nothing for this long is dropped (a stuck shell must not pin a task).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once; more wait in the kernel's backlog.
const MAX_CLIENTS: usize = 8;
/// How many of the newest events `events` returns.
const EVENTS_SHOWN: usize = 200;

#[derive(Debug)]
pub enum BindError {
    CreateDir {
        dir: PathBuf,
        source: io::Error,
    },
    /// Another live daemon answers on this socket.
    InUse(PathBuf),
    /// The `/tmp` fallback directory is not private to us (see `check_runtime_dir`).
    Unsafe(super::RuntimeDirError),
    Bind {
        path: PathBuf,
        source: io::Error,
    },
}

impl std::fmt::Display for BindError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BindError::CreateDir { dir, source } => {
                write!(f, "cannot create {}: {source}", dir.display())
            }
            BindError::InUse(p) => write!(f, "{} is in use by another quoll", p.display()),
            BindError::Unsafe(why) => why.fmt(f),
            BindError::Bind { path, source } => {
                write!(f, "cannot bind {}: {source}", path.display())
            }
        }
    }
}

/// Bind the control socket, owner-only, replacing a stale one left by a crash.
pub fn bind(path: &Path) -> Result<UnixListener, BindError> {
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| BindError::CreateDir {
                dir: dir.to_owned(),
                source,
            })?;
        // A fallback under /tmp that someone else made (or opened up) is not used.
        super::check_runtime_dir(dir).map_err(BindError::Unsafe)?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(BindError::InUse(path.to_owned()));
        }
        // Nobody listens: a socket file left by a killed daemon.
        let _ = std::fs::remove_file(path);
    }
    let bind_err = |source| BindError::Bind {
        path: path.to_owned(),
        source,
    };
    let listener = UnixListener::bind(path).map_err(bind_err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(bind_err)?;
    Ok(listener)
}

/// Serve clients until the task is dropped; removes the socket file then.
pub async fn serve(listener: UnixListener, path: PathBuf, node: Rc<Node>) {
    let _cleanup = RemoveOnDrop(path);
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_CLIENTS));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!("control socket accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let node = node.clone();
        tokio::task::spawn_local(async move {
            if let Err(e) = client(stream, &node).await {
                tracing::debug!("control client: {e}");
            }
            drop(permit);
        });
    }
}

struct RemoveOnDrop(PathBuf);
impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

async fn client(stream: UnixStream, node: &Node) -> io::Result<()> {
    let (rd, mut wr) = stream.into_split();
    let mut line = String::new();
    let mut rd = BufReader::new(rd).take(MAX_REQUEST as u64);
    let read = tokio::time::timeout(REQUEST_TIMEOUT, rd.read_line(&mut line)).await;
    let reply = match read {
        Ok(Ok(_)) => answer(node, line.trim()).await,
        Ok(Err(e)) => return Err(e),
        Err(_) => json!({ "ok": false, "error": "no request within 5 s" }),
    };
    let mut bytes = serde_json::to_vec(&reply).unwrap_or_default();
    bytes.push(b'\n');
    wr.write_all(&bytes).await?;
    wr.shutdown().await
}

/// The reply to one request: `{"ok":true,"data":…}` or `{"ok":false,"error":…}`.
pub async fn answer(node: &Node, request: &str) -> Value {
    let data = match request {
        "status" | "health" => json!(node.health().await),
        "flows" => json!(node.flows().await),
        "events" => {
            let all = node.events.snapshot();
            let acked = node.events.status().acked_seq;
            let skip = all.len().saturating_sub(EVENTS_SHOWN);
            let shown: Vec<Value> = all[skip..]
                .iter()
                .map(|r| {
                    let mut v = json!(r);
                    v["delivered"] = json!(r.seq <= acked);
                    v
                })
                .collect();
            json!(shown)
        }
        // The one request that changes something: the operator has seen the report of
        // events lost to damage on disk, and health may say `ok` again. The socket is
        // owner-only, like every other request on it.
        "ack-loss" => match node.events.ack_loss() {
            Some(l) => json!({
                "acknowledged": true, "loss_seq": l.seq, "lost": l.lost, "through": l.through,
            }),
            None => json!({ "acknowledged": false }),
        },
        "tunnels" => json!(node.tunnel_status()),
        "sessions" => json!(node.bridge_sessions()),
        "manager" => {
            let cfg = node.config().await;
            let mut block = cfg.manager.map_or(Value::Null, |m| m.to_value());
            crate::config::redact_value(&mut block);
            let mut out = json!({ "config": block });
            if let Some(status) = node.manager_status() {
                out["state"] = status["state"].clone();
                out["link"] = status;
            }
            out
        }
        other => {
            return json!({ "ok": false, "error": format!("unknown request {other:?}") });
        }
    };
    json!({ "ok": true, "data": data })
}

use tokio::io::AsyncReadExt as _;
