//! The token files: a token the config does not set is generated at first start and kept
//! in the data dir (`api-token`, `viewer-token`), so it survives restarts and the operator
//! reads it from there (`cat quoll-data/api-token`).
//!
//! Each file holds one token and a newline, mode 0600, written atomically (temp file, fsync,
//! rename: a power cut leaves the old file or the whole new one). The daemon holds the data
//! dir's lock while it reads or creates them, so no other Quoll races it.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use crate::config::TOKEN_LEN;
use crate::config::store::write_atomic;
use crate::secret::Secret;

/// The API token's file in the data dir.
pub const API_TOKEN_FILE: &str = "api-token";
/// The bridge viewer token's file in the data dir.
pub const VIEWER_TOKEN_FILE: &str = "viewer-token";
/// Random bytes in a generated token (64 hex digits).
pub const TOKEN_BYTES: usize = 32;
/// Only the owner may read a token file.
pub const TOKEN_FILE_MODE: u32 = 0o600;

#[derive(Debug)]
pub enum TokenError {
    /// The system's random source failed (no token can be made).
    Random,
    Read {
        path: PathBuf,
        source: io::Error,
    },
    Write {
        path: PathBuf,
        source: io::Error,
    },
}

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenError::Random => write!(f, "the system random source failed"),
            TokenError::Read { path, source } => {
                write!(f, "cannot read {}: {source}", path.display())
            }
            TokenError::Write { path, source } => {
                write!(f, "cannot write {}: {source}", path.display())
            }
        }
    }
}

impl std::error::Error for TokenError {}

/// What `load_or_create` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The file was there and held a usable token.
    Read,
    /// There was no file: a new token was written.
    Created,
    /// The file held no usable token (empty, or characters a header cannot carry): it was
    /// replaced by a new one.
    Replaced,
}

/// A new token: `TOKEN_BYTES` from the operating system's CSPRNG (ring's `SystemRandom`,
/// getrandom(2)), as lowercase hex.
pub fn generate() -> Result<Secret, TokenError> {
    use ring::rand::{SecureRandom, SystemRandom};
    let mut bytes = [0u8; TOKEN_BYTES];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| TokenError::Random)?;
    let mut hex = String::with_capacity(2 * TOKEN_BYTES);
    for b in bytes {
        hex.push_str(&format!("{b:02x}"));
    }
    Ok(Secret::new(hex))
}

/// Whether a file's contents (surrounding whitespace removed) can serve as a token: the
/// rule of a configured one (`config::TOKEN_LEN`, printable ASCII without spaces).
fn usable(token: &str) -> bool {
    TOKEN_LEN.contains(&token.len()) && token.bytes().all(|b| b.is_ascii_graphic())
}

/// The token in `dir/name`, or a new one written there (mode 0600). A file readable by
/// others is made owner-only again (and a warning says so): the token is as good as
/// leaked otherwise, but refusing to start would take the flows down with the API.
pub fn load_or_create(dir: &Path, name: &str) -> Result<(Secret, Origin), TokenError> {
    let path = dir.join(name);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let token = text.trim();
            if usable(token) {
                tighten_mode(&path);
                return Ok((Secret::new(token), Origin::Read));
            }
            let token = generate()?;
            write(&path, &token)?;
            Ok((token, Origin::Replaced))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let token = generate()?;
            write(&path, &token)?;
            Ok((token, Origin::Created))
        }
        Err(source) => Err(TokenError::Read { path, source }),
    }
}

fn write(path: &Path, token: &Secret) -> Result<(), TokenError> {
    let text = format!("{}\n", token.expose());
    write_atomic(path, text.as_bytes(), TOKEN_FILE_MODE).map_err(|source| TokenError::Write {
        path: path.to_owned(),
        source,
    })
}

fn tighten_mode(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let Ok(meta) = std::fs::metadata(path) else {
        return;
    };
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 == 0 {
        return;
    }
    match std::fs::set_permissions(path, std::fs::Permissions::from_mode(TOKEN_FILE_MODE)) {
        Ok(()) => tracing::warn!(
            path = %path.display(),
            "token file was mode {mode:04o} (readable by others): set to 0600; \
             consider replacing the token (delete the file and restart)"
        ),
        Err(e) => tracing::warn!(
            path = %path.display(),
            "token file is mode {mode:04o} (readable by others) and cannot be changed: {e}"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn scratch(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("quoll-token-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn generated_tokens_are_64_hex_digits_and_differ() {
        let a = generate().unwrap();
        let b = generate().unwrap();
        assert_eq!(a.expose().len(), 64);
        assert!(a.expose().bytes().all(|c| c.is_ascii_hexdigit()));
        assert!(!a.matches(b.expose()));
    }

    #[test]
    fn a_token_is_created_once_and_reused() {
        let dir = scratch("reuse");
        let (first, origin) = load_or_create(&dir, API_TOKEN_FILE).unwrap();
        assert_eq!(origin, Origin::Created);
        let path = dir.join(API_TOKEN_FILE);
        assert_eq!(mode(&path), 0o600);
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            format!("{}\n", first.expose())
        );
        let (again, origin) = load_or_create(&dir, API_TOKEN_FILE).unwrap();
        assert_eq!(origin, Origin::Read);
        assert!(again.matches(first.expose()));
        // No temp files left behind.
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from(API_TOKEN_FILE)]);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn an_operator_written_token_is_kept_and_made_private() {
        let dir = scratch("operator");
        let path = dir.join(VIEWER_TOKEN_FILE);
        std::fs::write(&path, "  my-own-viewer-token-1234 \n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let (t, origin) = load_or_create(&dir, VIEWER_TOKEN_FILE).unwrap();
        assert_eq!(origin, Origin::Read);
        assert!(t.matches("my-own-viewer-token-1234"));
        assert_eq!(mode(&path), 0o600);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn an_unusable_file_is_replaced() {
        let dir = scratch("unusable");
        let path = dir.join(API_TOKEN_FILE);
        for junk in ["", "\n", "short", "has a space inside it"] {
            std::fs::write(&path, junk).unwrap();
            let (t, origin) = load_or_create(&dir, API_TOKEN_FILE).unwrap();
            assert_eq!(origin, Origin::Replaced, "{junk:?}");
            assert_eq!(t.expose().len(), 64);
            assert_eq!(mode(&path), 0o600);
        }
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_missing_directory_is_an_error_not_a_panic() {
        let dir = scratch("missing").join("not-there");
        let err = load_or_create(&dir, API_TOKEN_FILE).unwrap_err();
        assert!(matches!(err, TokenError::Write { .. }), "{err}");
    }
}
