//! The serial-console side of Quoll: a local control socket the daemon serves, and
//! `quoll ctl`, which asks it questions and prints answers that fit an 80-column terminal.
//!
//! The socket is a Unix stream socket, `ctl.sock` in the runtime directory, owner-only. One
//! request line (`status`, `flows`, ...) gets one JSON document back; the client does all
//! the formatting, so scripts can use `--json` and get the same data.

pub mod ctl;
pub mod server;
pub mod text;

use std::path::PathBuf;

use crate::board::Profile;

/// The socket's file name inside the runtime directory.
pub const SOCKET_NAME: &str = "ctl.sock";

/// Where the control socket lives, the same for the daemon and `quoll ctl`:
/// `$QUOLL_RUNTIME_DIR`, then systemd's `$RUNTIME_DIRECTORY` (RuntimeDirectory=quoll), then
/// the board's runtime dir, then `$XDG_RUNTIME_DIR/quoll`, then `/tmp/quoll-<uid>`.
pub fn runtime_dir(board: Option<&Profile>) -> PathBuf {
    let env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(d) = env("QUOLL_RUNTIME_DIR") {
        return d;
    }
    if let Some(d) = env("RUNTIME_DIRECTORY") {
        // systemd may list several, colon-separated; ours is the first.
        let first = d
            .to_string_lossy()
            .split(':')
            .next()
            .unwrap_or("")
            .to_owned();
        if !first.is_empty() {
            return first.into();
        }
    }
    if let Some(b) = board {
        return b.paths.runtime_dir.clone();
    }
    if let Some(d) = env("XDG_RUNTIME_DIR") {
        return d.join("quoll");
    }
    // SAFETY: getuid has no preconditions and cannot fail.
    let uid = unsafe { libc::getuid() };
    PathBuf::from(format!("/tmp/quoll-{uid}"))
}

pub fn socket_path(board: Option<&Profile>) -> PathBuf {
    runtime_dir(board).join(SOCKET_NAME)
}
