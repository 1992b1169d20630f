//! The event log's test doubles, on the `Storage` trait: `MemStorage` (an in-memory disk
//! that can crash and fail) and `Tapped` (any storage with a `Tap` that sees each call that
//! changes the disk), which makes `SlowSync` (syncs that take long or are held) and
//! `Counted` (counts what reaches the disk). Compiled for unit tests and with the `test-util` feature (integration tests,
//! the events bench, the fuzz crate), never in a product build.

use std::collections::BTreeMap;
use std::io;
use std::sync::{Arc, Mutex};

use super::Storage;

// ---- the fault-injecting disk --------------------------------------------------------------

/// An in-memory disk that can crash. On `crash`, every file goes back to its content at its
/// last `sync`, plus a random prefix of what was appended since (a write that reached the
/// platter without being confirmed), whose last sector (up to 512 bytes) is torn: filled with
/// garbage. Directory changes not followed by `sync_dir` are undone. Bytes that were synced
/// are never changed, which is the guarantee an append-only log relies on.
///
/// It can also be told to fail: `fail_after(n)` makes every operation after the next `n`
/// fail (power is lost at that moment; call `crash` next), and `set_full(true)` makes writes
/// fail with a disk-full error until cleared. Clones share one disk.
#[derive(Clone, Default)]
pub struct MemStorage {
    disk: Arc<Mutex<MemDisk>>,
}

#[derive(Default)]
struct MemDisk {
    next_id: u64,
    /// Name -> file id, as the running system sees it.
    dir: BTreeMap<String, u64>,
    /// Name -> file id, as it would be after a crash.
    durable_dir: BTreeMap<String, u64>,
    files: BTreeMap<u64, MemFile>,
    ops_left: Option<u64>,
    full: bool,
    syncs: u64,
    bytes_appended: u64,
}

#[derive(Default, Clone)]
struct MemFile {
    data: Vec<u8>,
    synced: Vec<u8>,
}

/// Sector size for torn writes.
const SECTOR: usize = 512;

impl MemStorage {
    pub fn new() -> Self {
        Self::default()
    }

    /// Every operation after the next `ops` fails, as if power were lost there.
    pub fn fail_after(&self, ops: u64) {
        self.disk.lock().unwrap().ops_left = Some(ops);
    }

    /// Whether a `fail_after` limit was reached.
    pub fn has_failed(&self) -> bool {
        self.disk.lock().unwrap().ops_left == Some(0)
    }

    /// Make appends, creates and syncs fail with "no space left" (or succeed again).
    pub fn set_full(&self, full: bool) {
        self.disk.lock().unwrap().full = full;
    }

    /// `sync` calls so far.
    pub fn syncs(&self) -> u64 {
        self.disk.lock().unwrap().syncs
    }

    /// Bytes passed to `append` so far.
    pub fn bytes_appended(&self) -> u64 {
        self.disk.lock().unwrap().bytes_appended
    }

    /// Total bytes held in files the running system sees.
    pub fn total_bytes(&self) -> u64 {
        let d = self.disk.lock().unwrap();
        d.dir.values().map(|id| d.files[id].data.len() as u64).sum()
    }

    /// Overwrite one byte of a file (bit rot, for the corruption tests). Durable at once.
    pub fn corrupt(&self, name: &str, offset: usize, xor: u8) {
        let mut d = self.disk.lock().unwrap();
        let id = d.dir[name];
        let f = d.files.get_mut(&id).unwrap();
        f.data[offset] ^= xor;
        if offset < f.synced.len() {
            f.synced[offset] ^= xor;
        }
    }

    /// Lose power: see the type's documentation. `seed` picks how much unsynced data
    /// survives and what the torn sector holds. Clears `fail_after` and `set_full`.
    pub fn crash(&self, seed: u64) {
        let mut rng = XorShift(seed | 1);
        let mut d = self.disk.lock().unwrap();
        d.dir = d.durable_dir.clone();
        let live: Vec<u64> = d.dir.values().copied().collect();
        d.files.retain(|id, _| live.contains(id));
        for f in d.files.values_mut() {
            let mut kept = f.synced.clone();
            if f.data.len() > f.synced.len() && f.data.starts_with(&f.synced) {
                let extra = f.data.len() - f.synced.len();
                let n = (rng.next() % (extra as u64 + 1)) as usize;
                let start = kept.len();
                kept.extend_from_slice(&f.data[start..start + n]);
                if n > 0 {
                    // Tear the last sector written: only bytes past the synced length.
                    let sector_start = ((start + n - 1) / SECTOR * SECTOR).max(start);
                    let torn_from =
                        sector_start + (rng.next() as usize % (start + n - sector_start));
                    for b in &mut kept[torn_from..] {
                        *b = rng.next() as u8;
                    }
                }
            }
            f.data = kept.clone();
            f.synced = kept;
        }
        d.ops_left = None;
        d.full = false;
    }
}

impl MemDisk {
    fn op(&mut self) -> io::Result<()> {
        match &mut self.ops_left {
            Some(0) => Err(io::Error::other("simulated power loss")),
            Some(n) => {
                *n -= 1;
                Ok(())
            }
            None => Ok(()),
        }
    }

    fn space(&self) -> io::Result<()> {
        if self.full {
            Err(io::Error::new(
                io::ErrorKind::StorageFull,
                "No space left on device (simulated)",
            ))
        } else {
            Ok(())
        }
    }

    fn file(&mut self, name: &str) -> io::Result<&mut MemFile> {
        let id = *self
            .dir
            .get(name)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, name.to_owned()))?;
        Ok(self.files.get_mut(&id).expect("dir entry has a file"))
    }
}

impl Storage for MemStorage {
    fn list(&mut self) -> io::Result<Vec<String>> {
        let mut d = self.disk.lock().unwrap();
        d.op()?;
        Ok(d.dir.keys().cloned().collect())
    }

    fn read(&mut self, name: &str) -> io::Result<Vec<u8>> {
        let mut d = self.disk.lock().unwrap();
        d.op()?;
        Ok(d.file(name)?.data.clone())
    }

    fn read_at(&mut self, name: &str, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let mut d = self.disk.lock().unwrap();
        d.op()?;
        let data = &d.file(name)?.data;
        let start = (offset as usize).min(data.len());
        let end = start.saturating_add(len).min(data.len());
        Ok(data[start..end].to_vec())
    }

    fn create(&mut self, name: &str) -> io::Result<()> {
        let mut d = self.disk.lock().unwrap();
        d.op()?;
        d.space()?;
        let id = d.next_id;
        d.next_id += 1;
        d.files.insert(id, MemFile::default());
        if let Some(old) = d.dir.insert(name.to_owned(), id)
            && !d.durable_dir.values().any(|&v| v == old)
        {
            d.files.remove(&old);
        }
        Ok(())
    }

    fn append(&mut self, name: &str, bytes: &[u8]) -> io::Result<()> {
        let mut d = self.disk.lock().unwrap();
        d.op()?;
        d.space()?;
        d.bytes_appended += bytes.len() as u64;
        d.file(name)?.data.extend_from_slice(bytes);
        Ok(())
    }

    fn sync(&mut self, name: &str) -> io::Result<()> {
        let mut d = self.disk.lock().unwrap();
        d.op()?;
        d.space()?;
        d.syncs += 1;
        let f = d.file(name)?;
        f.synced = f.data.clone();
        Ok(())
    }

    fn truncate(&mut self, name: &str, len: u64) -> io::Result<()> {
        let mut d = self.disk.lock().unwrap();
        d.op()?;
        let f = d.file(name)?;
        f.data.truncate(len as usize);
        Ok(())
    }

    fn rename(&mut self, from: &str, to: &str) -> io::Result<()> {
        let mut d = self.disk.lock().unwrap();
        d.op()?;
        let id = d
            .dir
            .remove(from)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, from.to_owned()))?;
        d.dir.insert(to.to_owned(), id);
        Ok(())
    }

    fn remove(&mut self, name: &str) -> io::Result<()> {
        let mut d = self.disk.lock().unwrap();
        d.op()?;
        d.dir
            .remove(name)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, name.to_owned()))?;
        Ok(())
    }

    fn sync_dir(&mut self) -> io::Result<()> {
        let mut d = self.disk.lock().unwrap();
        d.op()?;
        d.durable_dir = d.dir.clone();
        let live: Vec<u64> = d.dir.values().copied().collect();
        d.files.retain(|id, _| live.contains(id));
        Ok(())
    }
}

/// Syncs (the `fdatasync`) that are slow: each takes at least `sync_time`, and while the
/// test holds the gate it does not return at all. Holding the gate makes "the runtime does
/// not wait for the disk" a causal check, not a timing one: anything that waited for a sync
/// would wait forever.
pub struct Slow {
    pub sync_time: std::time::Duration,
    pub gate: std::sync::Arc<SyncGate>,
}

/// A storage whose syncs are `Slow`.
pub type SlowSync<S> = Tapped<S, Slow>;

impl Tap for Slow {
    fn on(&self, call: Call) {
        if let Call::Sync = call {
            // This is the writer thread: blocking here is the point of the fake.
            self.gate.pass(|| std::thread::sleep(self.sync_time), || ());
        }
    }
}

/// Holds `SlowSync` syncs until opened, and counts the ones in progress.
#[derive(Default)]
pub struct SyncGate {
    state: std::sync::Mutex<GateState>,
    changed: std::sync::Condvar,
}

#[derive(Default)]
struct GateState {
    held: bool,
    in_sync: u64,
    started: u64,
}

impl SyncGate {
    fn state(&self) -> std::sync::MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
    /// Syncs started from now on block until `release`.
    pub fn hold(&self) {
        self.state().held = true;
    }
    pub fn release(&self) {
        self.state().held = false;
        self.changed.notify_all();
    }
    /// Syncs in progress right now.
    pub fn in_sync(&self) -> u64 {
        self.state().in_sync
    }
    /// Syncs started so far.
    pub fn started(&self) -> u64 {
        self.state().started
    }
}

impl SyncGate {
    /// One sync through the gate: `before` (the time it takes), then held while the test
    /// holds the gate, then `after`. Counted as in progress throughout.
    pub fn pass(&self, before: impl FnOnce(), after: impl FnOnce()) {
        {
            let mut st = self.state();
            st.in_sync += 1;
            st.started += 1;
        }
        before();
        let mut st = self.state();
        while st.held {
            st = self.changed.wait(st).unwrap_or_else(|p| p.into_inner());
        }
        drop(st);
        after();
        self.state().in_sync -= 1;
    }
}

/// A tiny deterministic PRNG (xorshift64*): enough for crash points, no dependency.
pub(crate) struct XorShift(pub u64);

impl XorShift {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// Counts of what reaches the disk: `fdatasync`s of files, `fsync`s of the directory,
/// renames and appended bytes. The benchmark wraps `FsStorage` in it (`Counted`), so its
/// figures count every sync the log makes (group commits, segment rolls, cursor writes,
/// recovery), not only the commits the writer knows about. Clones share the counters.
#[derive(Default, Debug)]
pub struct StorageCounts {
    pub syncs: std::sync::atomic::AtomicU64,
    pub dir_syncs: std::sync::atomic::AtomicU64,
    pub renames: std::sync::atomic::AtomicU64,
    pub bytes_appended: std::sync::atomic::AtomicU64,
}

/// A storage that counts what reaches it.
pub type Counted<S> = Tapped<S, Arc<StorageCounts>>;

impl StorageCounts {
    fn bump(c: &std::sync::atomic::AtomicU64, n: u64) {
        c.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    }
    pub fn get(c: &std::sync::atomic::AtomicU64) -> u64 {
        c.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Tap for Arc<StorageCounts> {
    fn on(&self, call: Call) {
        match call {
            Call::Sync => StorageCounts::bump(&self.syncs, 1),
            Call::SyncDir => StorageCounts::bump(&self.dir_syncs, 1),
            Call::Rename => StorageCounts::bump(&self.renames, 1),
            Call::Append(n) => StorageCounts::bump(&self.bytes_appended, n as u64),
            Call::Create | Call::Truncate | Call::Remove => {}
        }
    }
}

/// One call that changes the disk, as a `Tap` sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    Create,
    /// This many bytes.
    Append(usize),
    Sync,
    Truncate,
    Rename,
    Remove,
    SyncDir,
}

/// What a `Tapped` storage tells about each call that changes the disk, before passing it
/// on: count it, hold it, move fake time by what it costs, note the thread it ran on.
pub trait Tap: Send + 'static {
    fn on(&self, call: Call);
}

/// A closure as a `Tap`.
#[derive(Clone)]
pub struct OnCall<F>(pub F);

impl<F: Fn(Call) + Send + 'static> Tap for OnCall<F> {
    fn on(&self, call: Call) {
        (self.0)(call)
    }
}

/// A storage wrapped with a `Tap`: every call is passed on to `inner`, the ones that change
/// the disk after the tap has seen them.
#[derive(Clone)]
pub struct Tapped<S, T> {
    pub inner: S,
    pub tap: T,
}

impl<S: Storage, T: Tap> Storage for Tapped<S, T> {
    fn list(&mut self) -> io::Result<Vec<String>> {
        self.inner.list()
    }
    fn read(&mut self, name: &str) -> io::Result<Vec<u8>> {
        self.inner.read(name)
    }
    fn read_at(&mut self, name: &str, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        self.inner.read_at(name, offset, len)
    }
    fn create(&mut self, name: &str) -> io::Result<()> {
        self.tap.on(Call::Create);
        self.inner.create(name)
    }
    fn append(&mut self, name: &str, bytes: &[u8]) -> io::Result<()> {
        self.tap.on(Call::Append(bytes.len()));
        self.inner.append(name, bytes)
    }
    fn sync(&mut self, name: &str) -> io::Result<()> {
        self.tap.on(Call::Sync);
        self.inner.sync(name)
    }
    fn truncate(&mut self, name: &str, len: u64) -> io::Result<()> {
        self.tap.on(Call::Truncate);
        self.inner.truncate(name, len)
    }
    fn rename(&mut self, from: &str, to: &str) -> io::Result<()> {
        self.tap.on(Call::Rename);
        self.inner.rename(from, to)
    }
    fn remove(&mut self, name: &str) -> io::Result<()> {
        self.tap.on(Call::Remove);
        self.inner.remove(name)
    }
    fn sync_dir(&mut self) -> io::Result<()> {
        self.tap.on(Call::SyncDir);
        self.inner.sync_dir()
    }
}
