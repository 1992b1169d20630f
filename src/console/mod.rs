//! The serial-console side of Quoll: a local control socket the daemon serves, and
//! `quoll ctl`, which asks it questions and prints answers that fit an 80-column terminal.
//!
//! The socket is a Unix stream socket, `ctl.sock` in the runtime directory, owner-only. One
//! request line (`status`, `flows`, ...) gets one JSON document back; the client does all
//! the formatting, so scripts can use `--json` and get the same data.

pub mod ctl;
/// `quoll events`: the durable event queue read on the serial console.
pub mod events;
pub mod server;
pub mod text;

use std::path::{Path, PathBuf};

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
    fallback_dir()
}

fn uid() -> u32 {
    crate::sys::uid()
}

/// The last resort, `/tmp/quoll-<uid>`: in a directory everyone can write, so whoever
/// creates it first owns it. [`check_runtime_dir`] refuses it unless it is ours and private.
pub fn fallback_dir() -> PathBuf {
    PathBuf::from(format!("/tmp/quoll-{}", uid()))
}

pub fn socket_path(board: Option<&Profile>) -> PathBuf {
    runtime_dir(board).join(SOCKET_NAME)
}

/// Whether the control socket may live in (or be looked for in) `dir`. Only the `/tmp`
/// fallback is checked: the other runtime directories are chosen by the operator or made by
/// systemd (`/run/quoll` belongs to the quoll user and `quoll ctl` may run as root). A
/// fallback that does not exist yet is fine: the daemon creates it, mode 0700.
pub fn check_runtime_dir(dir: &Path) -> Result<(), RuntimeDirError> {
    if dir != fallback_dir() {
        return Ok(());
    }
    match std::fs::symlink_metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(RuntimeDirError::Inspect {
            dir: dir.to_owned(),
            source,
        }),
        Ok(meta) => private_to(dir, &meta, uid()),
    }
}

/// `dir` (described by its `lstat`) is a real directory owned by `uid` that nobody else
/// may write into.
fn private_to(dir: &Path, meta: &std::fs::Metadata, uid: u32) -> Result<(), RuntimeDirError> {
    use std::os::unix::fs::MetadataExt;
    let why = if !meta.is_dir() {
        Unsafe::NotADirectory
    } else if meta.uid() != uid {
        Unsafe::Owner {
            owner: meta.uid(),
            me: uid,
        }
    } else if meta.mode() & 0o022 != 0 {
        Unsafe::Writable {
            mode: meta.mode() & 0o7777,
        }
    } else {
        return Ok(());
    };
    Err(RuntimeDirError::Refused {
        dir: dir.to_owned(),
        why,
    })
}

/// Why the control socket may not live in (or be looked for in) a runtime directory.
#[derive(Debug)]
pub enum RuntimeDirError {
    /// `lstat` failed for another reason than absence.
    Inspect {
        dir: PathBuf,
        source: std::io::Error,
    },
    /// The `/tmp` fallback exists and someone else could control it.
    Refused { dir: PathBuf, why: Unsafe },
}

/// What makes an existing `/tmp` fallback directory unsafe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unsafe {
    /// A symlink or a file, left by someone.
    NotADirectory,
    /// Owned by `owner`, not by this user (`me`).
    Owner { owner: u32, me: u32 },
    /// Group- or world-writable (`mode` & 0o7777).
    Writable { mode: u32 },
}

impl std::fmt::Display for Unsafe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unsafe::NotADirectory => {
                f.write_str("it is not a directory (a symlink or file left by someone)")
            }
            Unsafe::Owner { owner, me } => {
                write!(f, "it is owned by uid {owner}, not by this user (uid {me})")
            }
            Unsafe::Writable { mode } => {
                write!(f, "it is group- or world-writable (mode {mode:04o})")
            }
        }
    }
}

impl std::fmt::Display for RuntimeDirError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RuntimeDirError::Inspect { dir, source } => {
                write!(f, "cannot inspect {}: {source}", dir.display())
            }
            RuntimeDirError::Refused { dir, why } => write!(
                f,
                "refusing runtime directory {}: {why}; remove it, or set QUOLL_RUNTIME_DIR \
                 (or XDG_RUNTIME_DIR) to a private directory",
                dir.display()
            ),
        }
    }
}

impl std::error::Error for RuntimeDirError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RuntimeDirError::Inspect { source, .. } => Some(source),
            RuntimeDirError::Refused { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn only_a_private_directory_of_ours_is_accepted() {
        let base = std::env::temp_dir().join(format!("quoll-rtdir-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(&base).unwrap();
        let me = uid();
        let check = |p: &Path, uid: u32| {
            private_to(p, &std::fs::symlink_metadata(p).unwrap(), uid).map_err(|e| e.to_string())
        };

        let good = base.join("good");
        std::fs::create_dir(&good).unwrap();
        std::fs::set_permissions(&good, std::fs::Permissions::from_mode(0o700)).unwrap();
        assert_eq!(check(&good, me), Ok(()));
        // Readable by others is not a takeover; writable is.
        std::fs::set_permissions(&good, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(check(&good, me), Ok(()));

        for mode in [0o777, 0o770, 0o1777, 0o702] {
            std::fs::set_permissions(&good, std::fs::Permissions::from_mode(mode)).unwrap();
            let err = check(&good, me).unwrap_err();
            assert!(err.contains("group- or world-writable"), "{mode:o}: {err}");
            assert!(err.contains("QUOLL_RUNTIME_DIR"), "{err}");
        }
        std::fs::set_permissions(&good, std::fs::Permissions::from_mode(0o700)).unwrap();

        // Someone else's (seen from another uid's point of view).
        let err = check(&good, me.wrapping_add(1)).unwrap_err();
        assert!(err.contains(&format!("owned by uid {me}")), "{err}");

        // A symlink to a directory we own is still refused: it can be re-pointed.
        let link = base.join("link");
        std::os::unix::fs::symlink(&good, &link).unwrap();
        let err = check(&link, me).unwrap_err();
        assert!(err.contains("not a directory"), "{err}");

        // The check applies to the /tmp fallback only.
        assert!(check_runtime_dir(&base.join("anything")).is_ok());
        let _ = std::fs::remove_dir_all(base);
    }
}
