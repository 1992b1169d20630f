//! Durable file writes (temp file, fsync, rename, fsync of the directory) and the config
//! file on disk.

use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::error::ConfigError;
use super::model::Config;

/// Mode of the config file: it can hold SRT passphrases, bearer tokens and the manager
/// credentials, so only the owner may read it.
pub const CONFIG_FILE_MODE: u32 = 0o600;

/// Atomically replace `path` with `bytes`. `mode` is the Unix permission of the new file
/// (0o600 for anything holding secrets), set exactly (not filtered by the umask).
///
/// A reader sees either the old file or the whole new one, and after a power cut the
/// new one is either fully there or not at all: the data is fsynced before the rename and
/// the directory after it. The temp file lives in the same directory (a rename across file
/// systems is not atomic) under a name no other writer uses, and is removed on failure.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    // pid + per-process counter: unique among concurrent writers, in this process or others.
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".{}.{n}.tmp", std::process::id()));
    let tmp = dir.join(tmp_name);

    let result = write_then_rename(&tmp, path, bytes, mode);
    if result.is_err() {
        // Best effort: the error that matters is the one being returned.
        let _ = fs::remove_file(&tmp);
        return result;
    }
    fs::File::open(dir)?.sync_all()
}

fn write_then_rename(tmp: &Path, path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    // create_new: never write through a stale temp file or a symlink planted under its name.
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(tmp)?;
    // The mode given to open() is reduced by the umask; set it exactly.
    f.set_permissions(fs::Permissions::from_mode(mode))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    fs::rename(tmp, path)
}

/// Why a config file could not be loaded.
#[derive(Debug)]
pub enum LoadError {
    /// The file could not be read.
    Io { path: PathBuf, source: io::Error },
    /// The file was read but is not a valid config; every problem, by JSON path.
    Invalid(Vec<ConfigError>),
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::Io { path, source } => {
                write!(f, "cannot read config file {}: {source}", path.display())
            }
            LoadError::Invalid(errors) => {
                write!(f, "invalid config ({} problem(s))", errors.len())?;
                for e in errors {
                    write!(f, "; {e}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for LoadError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LoadError::Io { source, .. } => Some(source),
            LoadError::Invalid(_) => None,
        }
    }
}

/// Why a config file could not be written.
#[derive(Debug)]
pub struct SaveError {
    pub path: PathBuf,
    pub source: io::Error,
}

impl fmt::Display for SaveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cannot write config file {}: {}",
            self.path.display(),
            self.source
        )
    }
}

impl std::error::Error for SaveError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// The config file on disk.
#[derive(Debug, Clone)]
pub struct ConfigFile {
    path: PathBuf,
}

impl ConfigFile {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        ConfigFile { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads, parses and validates the file.
    pub fn load(&self) -> Result<Config, LoadError> {
        let text = fs::read_to_string(&self.path).map_err(|source| LoadError::Io {
            path: self.path.clone(),
            source,
        })?;
        super::parse(&text).map_err(LoadError::Invalid)
    }

    /// Writes `cfg` as pretty JSON, atomically, mode 0600. Does not validate: callers
    /// validate before they apply a config, and save what they applied.
    pub fn save(&self, cfg: &Config) -> Result<(), SaveError> {
        let mut bytes = serde_json::to_vec_pretty(&cfg.to_value()).map_err(|e| SaveError {
            path: self.path.clone(),
            source: io::Error::other(e),
        })?;
        bytes.push(b'\n');
        write_atomic(&self.path, &bytes, CONFIG_FILE_MODE).map_err(|source| SaveError {
            path: self.path.clone(),
            source,
        })
    }
}

/// `ConfigFile::new(path).load()`.
pub fn load(path: impl Into<PathBuf>) -> Result<Config, LoadError> {
    ConfigFile::new(path).load()
}
