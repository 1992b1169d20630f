//! The files under the event log, behind a small trait so the log's logic can be tested on a
//! fault-injecting in-memory disk (`MemStorage`, in `doubles.rs`: tests and the `test-util`
//! feature only) as well as run on the real one (`FsStorage`).
//!
//! The trait is flat: one directory, files addressed by name. That is all the log needs, and
//! it keeps the crash model of `MemStorage` simple to state: file contents are durable up to
//! the last `sync` of that file, and directory entries (create, rename, remove) are durable
//! up to the last `sync_dir`.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// One flat directory of files.
pub trait Storage: Send + 'static {
    /// Names of the files in the directory (any order).
    fn list(&mut self) -> io::Result<Vec<String>>;
    /// The whole content of a file.
    fn read(&mut self, name: &str) -> io::Result<Vec<u8>>;
    /// Up to `len` bytes of a file from `offset` (fewer at its end, none past it).
    fn read_at(&mut self, name: &str, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let bytes = self.read(name)?;
        let start = (offset as usize).min(bytes.len());
        let end = start.saturating_add(len).min(bytes.len());
        Ok(bytes[start..end].to_vec())
    }
    /// Create an empty file (truncating an existing one).
    fn create(&mut self, name: &str) -> io::Result<()>;
    /// Append bytes at the end of a file.
    fn append(&mut self, name: &str, bytes: &[u8]) -> io::Result<()>;
    /// Make the file's content durable (`fdatasync`).
    fn sync(&mut self, name: &str) -> io::Result<()>;
    /// Cut a file to `len` bytes (not durable until `sync`).
    fn truncate(&mut self, name: &str, len: u64) -> io::Result<()>;
    /// Atomically replace `to` by `from` (not durable until `sync_dir`).
    fn rename(&mut self, from: &str, to: &str) -> io::Result<()>;
    fn remove(&mut self, name: &str) -> io::Result<()>;
    /// Make creations, renames and removals durable (fsync of the directory).
    fn sync_dir(&mut self) -> io::Result<()>;
}

// ---- the real disk -------------------------------------------------------------------------

/// Mode of the data directory (`storage.data_dir`): owner only. It holds the event log
/// (operational history: flow names, addresses, errors) and, on a board, the config with
/// the manager's credentials; nobody else on the box has any business listing it.
pub const DATA_DIR_MODE: u32 = 0o700;
/// Mode of every file quoll keeps in it: segments, cursor, loss-ack, lock, config.
pub const DATA_FILE_MODE: u32 = 0o600;

/// Create the data directory (and missing parents) owner-only, or tighten an existing one
/// to `DATA_DIR_MODE` and the regular files in it to `DATA_FILE_MODE`: an older quoll made
/// it 0755 and its files 0644 (the umask's defaults). Creating it is what can fail; a
/// directory or file that cannot be tightened (not ours) is logged and left as it is.
pub fn private_dir(dir: &Path) -> io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(DATA_DIR_MODE)
        .create(dir)?;
    // A sticky directory (`/tmp`) is shared by design: closing it would break everybody
    // else, and the files in it are not all quoll's. Say so instead.
    if std::fs::metadata(dir)?.permissions().mode() & 0o1000 != 0 {
        tracing::warn!(
            "{} is a shared (sticky) directory: left as it is; give storage.data_dir a \
             directory of its own",
            dir.display()
        );
        return Ok(());
    }
    // `mode` above is reduced by the umask and applies to new directories only.
    if let Err(e) = tighten(dir, DATA_DIR_MODE) {
        tracing::warn!("cannot make {} owner-only: {e}", dir.display());
        return Ok(());
    }
    for entry in std::fs::read_dir(dir)?.flatten() {
        let path = entry.path();
        // Regular files only: never follow a symlink out of the directory (the directory
        // is owner-only by now, so nobody else can swap an entry in between).
        let is_file = std::fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_file());
        if is_file && let Err(e) = tighten(&path, DATA_FILE_MODE) {
            tracing::warn!("cannot make {} owner-only: {e}", path.display());
        }
    }
    Ok(())
}

/// Set `path`'s permission bits to `mode` if they differ.
fn tighten(path: &Path, mode: u32) -> io::Result<()> {
    let have = std::fs::symlink_metadata(path)?.permissions().mode() & 0o7777;
    if have != mode {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

/// Files in a directory on the real filesystem. The append handle of the file last written
/// is kept open, so a batch costs one `write` and one `fdatasync`.
pub struct FsStorage {
    dir: PathBuf,
    read_only: bool,
    open: Option<(String, File)>,
}

impl FsStorage {
    /// The writer's view: creates the directory if needed, owner-only (`private_dir`).
    pub fn open(dir: &Path) -> io::Result<FsStorage> {
        private_dir(dir)?;
        Ok(FsStorage {
            dir: dir.to_owned(),
            read_only: false,
            open: None,
        })
    }

    /// A reader's view (`quoll events`): never creates, writes or locks anything; every
    /// mutating call fails with `PermissionDenied`.
    pub fn read_only(dir: &Path) -> FsStorage {
        FsStorage {
            dir: dir.to_owned(),
            read_only: true,
            open: None,
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn writable(&self) -> io::Result<()> {
        if self.read_only {
            Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "read-only view of the event log",
            ))
        } else {
            Ok(())
        }
    }

    fn handle(&mut self, name: &str) -> io::Result<&mut File> {
        self.writable()?;
        let reopen = !matches!(&self.open, Some((n, _)) if n == name);
        if reopen {
            let f = OpenOptions::new().append(true).open(self.dir.join(name))?;
            self.open = Some((name.to_owned(), f));
        }
        Ok(&mut self.open.as_mut().expect("just opened").1)
    }

    fn forget(&mut self, name: &str) {
        if matches!(&self.open, Some((n, _)) if n == name) {
            self.open = None;
        }
    }
}

impl Storage for FsStorage {
    fn list(&mut self) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            if let Ok(name) = entry.file_name().into_string() {
                names.push(name);
            }
        }
        Ok(names)
    }

    fn read(&mut self, name: &str) -> io::Result<Vec<u8>> {
        let mut bytes = Vec::new();
        File::open(self.dir.join(name))?.read_to_end(&mut bytes)?;
        Ok(bytes)
    }

    fn read_at(&mut self, name: &str, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        use std::io::{Seek, SeekFrom};
        let mut f = File::open(self.dir.join(name))?;
        f.seek(SeekFrom::Start(offset))?;
        let mut bytes = Vec::with_capacity(len.min(1 << 20));
        f.take(len as u64).read_to_end(&mut bytes)?;
        Ok(bytes)
    }

    fn create(&mut self, name: &str) -> io::Result<()> {
        self.writable()?;
        let path = self.dir.join(name);
        // Truncate, then reopen for appending (append and truncate in one open is refused
        // by clippy as suspicious, and rightly reads oddly). Owner-only: the mode given to
        // open() applies to a new file and is reduced by the umask, so it is also set on
        // the open file (a file left by an older quoll may be 0644).
        let f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(DATA_FILE_MODE)
            .open(&path)?;
        f.set_permissions(std::fs::Permissions::from_mode(DATA_FILE_MODE))?;
        drop(f);
        self.forget(name);
        let f = OpenOptions::new().append(true).open(&path)?;
        self.open = Some((name.to_owned(), f));
        Ok(())
    }

    fn append(&mut self, name: &str, bytes: &[u8]) -> io::Result<()> {
        self.handle(name)?.write_all(bytes)
    }

    fn sync(&mut self, name: &str) -> io::Result<()> {
        self.handle(name)?.sync_data()
    }

    fn truncate(&mut self, name: &str, len: u64) -> io::Result<()> {
        self.handle(name)?.set_len(len)
    }

    fn rename(&mut self, from: &str, to: &str) -> io::Result<()> {
        self.writable()?;
        self.forget(from);
        self.forget(to);
        std::fs::rename(self.dir.join(from), self.dir.join(to))
    }

    fn remove(&mut self, name: &str) -> io::Result<()> {
        self.writable()?;
        self.forget(name);
        std::fs::remove_file(self.dir.join(name))
    }

    fn sync_dir(&mut self) -> io::Result<()> {
        self.writable()?;
        File::open(&self.dir)?.sync_all()
    }
}

// ---- test doubles ----------------------------------------------------------------------------

/// `MemStorage`, `SlowSync`, `Counted`, `Tapped`: tests, the events bench and the fuzz
/// crate only.
#[cfg(any(test, feature = "test-util"))]
mod doubles;
#[cfg(test)]
pub(crate) use doubles::XorShift;
#[cfg(any(test, feature = "test-util"))]
pub use doubles::{
    Call, Counted, MemStorage, OnCall, Slow, SlowSync, StorageCounts, SyncGate, Tap, Tapped,
};
