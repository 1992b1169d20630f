//! The event log over a `Storage`: recovery, appends, group commit, the byte budget, the
//! delivery cursor. Single-threaded and synchronous; the writer thread (`writer.rs`) drives
//! it, and the crash tests drive it directly against `MemStorage`.
//!
//! Invariants the crash tests check: a record is confirmed durable only when `commit`
//! returned `Ok` after it was appended, and synced bytes are never rewritten (the log only
//! appends, truncates a torn tail it found at open, and removes whole segments).

use std::collections::VecDeque;
use std::io;

use super::Record;
use super::codec::{self, DecodeError};
use super::storage::Storage;

/// Tuning of the log (the storage block of the config, plus test knobs).
#[derive(Debug, Clone, Copy)]
pub struct LogOptions {
    /// Upper bound of the bytes in all segment files.
    pub budget_bytes: u64,
    /// Size at which a segment is closed and a new one started.
    pub segment_bytes: u64,
}

impl LogOptions {
    /// A segment is an eighth of the budget: dropping the oldest frees about 12 % of it,
    /// and a segment is small enough to read whole for a delivery batch.
    pub fn with_budget(budget_bytes: u64) -> Self {
        LogOptions {
            budget_bytes,
            segment_bytes: (budget_bytes / 8).max(4096),
        }
    }
}

/// What went wrong, and where.
#[derive(Debug)]
pub enum LogError {
    /// A storage call failed: `op` on `file`.
    Io {
        op: &'static str,
        file: String,
        source: io::Error,
    },
}

impl LogError {
    fn io<'a>(op: &'static str, file: &'a str) -> impl FnOnce(io::Error) -> LogError + 'a {
        move |source| LogError::Io {
            op,
            file: file.to_owned(),
            source,
        }
    }

    pub fn io_kind(&self) -> io::ErrorKind {
        match self {
            LogError::Io { source, .. } => source.kind(),
        }
    }
}

impl std::fmt::Display for LogError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LogError::Io { op, file, source } => write!(f, "{op} {file}: {source}"),
        }
    }
}

impl std::error::Error for LogError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LogError::Io { source, .. } => Some(source),
        }
    }
}

/// What `open` found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovery {
    /// The sequence number the next event gets.
    pub next_seq: u64,
    /// Acknowledged by the manager up to here (the cursor file).
    pub acked: u64,
    /// Records in the log.
    pub records: u64,
    /// Records in the log not yet acknowledged.
    pub pending: u64,
    /// Damaged records skipped in the middle of the log.
    pub corrupt: u64,
    /// Bytes of torn tail cut from the last segment.
    pub truncated_bytes: u64,
    /// Segments of a newer format (or with a damaged header), left alone.
    pub skipped_segments: u64,
}

/// One segment file, as the log keeps track of it.
#[derive(Debug, Clone)]
struct Segment {
    name: String,
    base_seq: u64,
    first_seq: Option<u64>,
    last_seq: Option<u64>,
    count: u64,
    bytes: u64,
    /// Whether this build may read it (right version, sound header).
    readable: bool,
}

/// Events the budget pushed out: how many were not yet delivered, and their range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dropped {
    pub count: u64,
    pub first_seq: u64,
    pub last_seq: u64,
}

pub struct Log<S: Storage> {
    storage: S,
    opts: LogOptions,
    segments: VecDeque<Segment>,
    /// Whether the last segment may be appended to (ours, sound, not abandoned).
    tail_writable: bool,
    /// Whether the tail holds appended bytes not yet synced.
    dirty: bool,
    last_seq: u64,
    acked: u64,
    cursor_on_disk: u64,
    /// Highest sequence number in a segment the budget removed.
    evicted_through: u64,
    buf: Vec<u8>,
}

impl<S: Storage> Log<S> {
    /// Open the log and recover: cut a torn tail off the last segment, count damaged records
    /// in the middle (they are skipped on every read, never rewritten), read the cursor.
    /// A storage that cannot be written (read-only filesystem) still opens; the first
    /// append then fails.
    pub fn open(mut storage: S, opts: LogOptions) -> Result<(Log<S>, Recovery), LogError> {
        let mut names = storage.list().map_err(LogError::io("list", "."))?;
        names.sort();
        let mut rec = Recovery::default();

        let acked = match storage.read(codec::CURSOR_FILE) {
            Ok(bytes) => codec::parse_cursor(&bytes).unwrap_or_else(|e| {
                // Written by rename, so this is bit rot: delivering again is the safe side.
                tracing::warn!("event log cursor unreadable ({e}); delivering from the start");
                0
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
            Err(e) => return Err(LogError::io("read", codec::CURSOR_FILE)(e)),
        };
        rec.acked = acked;

        let seg_names: Vec<(u64, String)> = names
            .iter()
            .filter_map(|n| codec::parse_segment_name(n).map(|b| (b, n.clone())))
            .collect();
        let mut segments = VecDeque::new();
        let mut last_seq = 0u64;
        let mut tail_writable = false;
        for (i, (name_base, name)) in seg_names.iter().enumerate() {
            let is_last = i + 1 == seg_names.len();
            let bytes = match storage.read(name) {
                Ok(b) => b,
                Err(e) => return Err(LogError::io("read", name)(e)),
            };
            let base_seq = match codec::parse_segment_header(&bytes) {
                Ok(b) => b,
                Err(e) => {
                    if is_last && bytes.len() < codec::HEADER_LEN {
                        // Torn at creation (the header never became durable): nothing
                        // in it can have been confirmed.
                        let _ = storage.remove(name).and_then(|()| storage.sync_dir());
                        continue;
                    }
                    if !matches!(e, DecodeError::UnsupportedVersion(_)) {
                        rec.corrupt += 1;
                    }
                    rec.skipped_segments += 1;
                    // Its records are unknown: at least keep new segment names (and
                    // sequence numbers) clear of it.
                    last_seq = last_seq.max(*name_base);
                    segments.push_back(Segment {
                        name: name.clone(),
                        base_seq: *name_base,
                        first_seq: None,
                        last_seq: None,
                        count: 0,
                        bytes: bytes.len() as u64,
                        readable: false,
                    });
                    continue;
                }
            };
            let scan = codec::scan_frames(&bytes, codec::HEADER_LEN, base_seq.max(last_seq + 1));
            rec.corrupt += scan.corrupt;
            let mut len = bytes.len() as u64;
            if scan.has_tail(bytes.len()) {
                if is_last {
                    // A torn tail: the crash came mid-write. Cut it so appends continue
                    // from sound bytes. If the cut fails (read-only), start a new segment.
                    let cut = storage
                        .truncate(name, scan.valid_len as u64)
                        .and_then(|()| storage.sync(name));
                    if cut.is_ok() {
                        rec.truncated_bytes += len - scan.valid_len as u64;
                        len = scan.valid_len as u64;
                        tail_writable = true;
                    }
                } else {
                    rec.corrupt += 1;
                }
            } else if is_last {
                // Sound to the end. Sync it anyway: a killed (not power-cut) predecessor
                // may have left its last batch in the page cache only.
                tail_writable = storage.sync(name).is_ok();
            }
            let first = scan.frames.first().map(|f| f.seq);
            let last = scan.frames.last().map(|f| f.seq);
            last_seq = last_seq
                .max(last.unwrap_or(0))
                .max(base_seq.saturating_sub(1));
            rec.records += scan.frames.len() as u64;
            rec.pending += scan.frames.iter().filter(|f| f.seq > acked).count() as u64;
            segments.push_back(Segment {
                name: name.clone(),
                base_seq,
                first_seq: first,
                last_seq: last,
                count: scan.frames.len() as u64,
                bytes: len,
                readable: true,
            });
        }
        if segments.back().is_some_and(|s| !s.readable) {
            tail_writable = false;
        }
        // A stale temp cursor from a crash mid-write: the rename never happened.
        if names.iter().any(|n| n == codec::CURSOR_TMP) {
            let _ = storage.remove(codec::CURSOR_TMP);
        }
        let last_seq = last_seq.max(acked);
        rec.next_seq = last_seq + 1;
        let log = Log {
            storage,
            opts,
            segments,
            tail_writable,
            dirty: false,
            last_seq,
            acked,
            cursor_on_disk: acked,
            evicted_through: 0,
            buf: Vec::new(),
        };
        Ok((log, rec))
    }

    /// The highest sequence number appended (or recovered).
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    pub fn acked(&self) -> u64 {
        self.acked
    }

    /// Highest sequence number the byte budget removed from the log (0: none yet).
    pub fn evicted_through(&self) -> u64 {
        self.evicted_through
    }

    /// Bytes in all segment files.
    pub fn total_bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.bytes).sum()
    }

    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    pub fn storage(&self) -> &S {
        &self.storage
    }

    /// Append records (not yet durable: see `commit`). Records at or below the last
    /// sequence number are skipped, so a batch re-offered after an error is not doubled.
    /// Returns what the byte budget pushed out, if anything.
    pub fn append(&mut self, records: &[Record]) -> Result<Option<Dropped>, LogError> {
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        let mut first = None;
        let mut last = self.last_seq;
        let mut count = 0u64;
        for r in records.iter().filter(|r| r.seq > self.last_seq) {
            if r.seq <= last {
                continue; // out of order within the batch: never happens, never written
            }
            codec::encode_record(r, &mut buf);
            first.get_or_insert(r.seq);
            last = r.seq;
            count += 1;
        }
        let result = match first {
            None => Ok(None),
            Some(first) => self.write_frames(&buf, first, last, count),
        };
        self.buf = buf;
        result
    }

    fn write_frames(
        &mut self,
        frames: &[u8],
        first: u64,
        last: u64,
        count: u64,
    ) -> Result<Option<Dropped>, LogError> {
        let mut dropped = None;
        let fits = self.tail_writable
            && self.segments.back().is_some_and(|s| {
                s.count == 0 || s.bytes + frames.len() as u64 <= self.opts.segment_bytes
            });
        if !fits {
            dropped = self.roll(first)?;
        }
        let tail = self.segments.back_mut().expect("roll made a tail");
        self.storage
            .append(&tail.name, frames)
            .map_err(LogError::io("append", &tail.name))?;
        self.dirty = true;
        tail.bytes += frames.len() as u64;
        tail.first_seq.get_or_insert(first);
        tail.last_seq = Some(last);
        tail.count += count;
        self.last_seq = last;
        Ok(dropped)
    }

    /// Close the tail and start a segment whose first record will be `first`. Makes room
    /// first: the oldest segments go until a whole new segment fits in the budget.
    fn roll(&mut self, first: u64) -> Result<Option<Dropped>, LogError> {
        self.commit()?;
        let mut dropped: Option<Dropped> = None;
        while !self.segments.is_empty()
            && self.total_bytes() + self.opts.segment_bytes > self.opts.budget_bytes
        {
            let old = self.segments.front().expect("not empty").clone();
            let undelivered = self.count_undelivered(&old);
            self.storage
                .remove(&old.name)
                .map_err(LogError::io("remove", &old.name))?;
            self.segments.pop_front();
            self.evicted_through = self.evicted_through.max(old.last_seq.unwrap_or(0));
            if let Some((n, lo, hi)) = undelivered {
                let d = dropped.get_or_insert(Dropped {
                    count: 0,
                    first_seq: lo,
                    last_seq: hi,
                });
                d.count += n;
                d.last_seq = hi;
            }
        }
        let name = codec::segment_name(first);
        self.storage
            .create(&name)
            .map_err(LogError::io("create", &name))?;
        self.tail_writable = false;
        self.storage
            .append(&name, &codec::segment_header(first))
            .map_err(LogError::io("append", &name))?;
        self.storage
            .sync(&name)
            .map_err(LogError::io("sync", &name))?;
        // One directory sync makes the new segment and the removals durable together.
        self.storage
            .sync_dir()
            .map_err(LogError::io("sync_dir", "."))?;
        self.segments.push_back(Segment {
            name,
            base_seq: first,
            first_seq: None,
            last_seq: None,
            count: 0,
            bytes: codec::HEADER_LEN as u64,
            readable: true,
        });
        self.tail_writable = true;
        Ok(dropped)
    }

    /// Undelivered records of a segment about to go: (count, first seq, last seq).
    fn count_undelivered(&mut self, seg: &Segment) -> Option<(u64, u64, u64)> {
        let (Some(first), Some(last)) = (seg.first_seq, seg.last_seq) else {
            return None;
        };
        if last <= self.acked {
            return None;
        }
        if first > self.acked {
            return Some((seg.count, first, last));
        }
        // Partly delivered: count exactly (sequence numbers can have gaps after a crash).
        let bytes = self.storage.read(&seg.name).ok()?;
        let scan = codec::scan_frames(&bytes, codec::HEADER_LEN, seg.base_seq);
        let left: Vec<u64> = scan
            .frames
            .iter()
            .map(|f| f.seq)
            .filter(|&s| s > self.acked)
            .collect();
        Some((left.len() as u64, *left.first()?, *left.last()?))
    }

    /// Make everything appended durable: one `fdatasync` of the tail segment.
    pub fn commit(&mut self) -> Result<(), LogError> {
        if self.dirty {
            let tail = self.segments.back().expect("dirty implies a tail");
            self.storage
                .sync(&tail.name)
                .map_err(LogError::io("sync", &tail.name))?;
            self.dirty = false;
        }
        Ok(())
    }

    /// Record that the manager has everything up to `seq`, durably: the cursor file is
    /// written to a temp file, synced, renamed over the old one, and the directory synced.
    pub fn set_acked(&mut self, seq: u64) -> Result<(), LogError> {
        let seq = seq.min(self.last_seq);
        self.acked = self.acked.max(seq);
        if self.acked == self.cursor_on_disk {
            return Ok(());
        }
        let tmp = codec::CURSOR_TMP;
        self.storage
            .create(tmp)
            .map_err(LogError::io("create", tmp))?;
        self.storage
            .append(tmp, &codec::cursor_bytes(self.acked))
            .map_err(LogError::io("append", tmp))?;
        self.storage.sync(tmp).map_err(LogError::io("sync", tmp))?;
        self.storage
            .rename(tmp, codec::CURSOR_FILE)
            .map_err(LogError::io("rename", tmp))?;
        self.storage
            .sync_dir()
            .map_err(LogError::io("sync_dir", "."))?;
        self.cursor_on_disk = self.acked;
        Ok(())
    }

    /// Up to `max` records with a sequence number above `after`, oldest first. Damaged
    /// records are skipped.
    pub fn read_after(&mut self, after: u64, max: usize) -> Result<Vec<Record>, LogError> {
        let mut out = Vec::new();
        let names: Vec<(String, u64)> = self
            .segments
            .iter()
            .filter(|s| s.readable && s.last_seq.is_some_and(|l| l > after))
            .map(|s| (s.name.clone(), s.base_seq))
            .collect();
        for (name, base) in names {
            if out.len() >= max {
                break;
            }
            let bytes = self
                .storage
                .read(&name)
                .map_err(LogError::io("read", &name))?;
            let scan = codec::scan_frames(&bytes, codec::HEADER_LEN, base);
            for f in scan.frames.iter().filter(|f| f.seq > after) {
                if out.len() >= max {
                    break;
                }
                let payload = &bytes[f.offset + codec::FRAME_OVERHEAD..f.offset + f.len];
                if let Ok(r) = codec::decode_payload(payload) {
                    out.push(r);
                }
            }
        }
        Ok(out)
    }

    /// Take the storage back (tests: crash it, then open again).
    pub fn into_storage(self) -> S {
        self.storage
    }
}

/// Read a whole log without changing anything (the console; works while the daemon writes:
/// a half-written last frame reads as a tail and is left out). Returns the records, the
/// acknowledged sequence number and the count of damaged records seen.
pub fn read_all<S: Storage>(storage: &mut S) -> io::Result<(Vec<Record>, u64, u64)> {
    let mut names = storage.list()?;
    names.sort();
    let acked = match storage.read(codec::CURSOR_FILE) {
        Ok(b) => codec::parse_cursor(&b).unwrap_or(0),
        Err(_) => 0,
    };
    let mut out: Vec<Record> = Vec::new();
    let mut corrupt = 0;
    for name in names
        .iter()
        .filter(|n| codec::parse_segment_name(n).is_some())
    {
        // A segment removed by the running daemon between list and read is simply gone.
        let Ok(bytes) = storage.read(name) else {
            continue;
        };
        let Ok(seg) = codec::read_segment(&bytes) else {
            continue;
        };
        corrupt += seg.scan.corrupt + seg.undecodable;
        let last = out.last().map_or(0, |r| r.seq);
        out.extend(seg.records.into_iter().filter(|r| r.seq > last));
    }
    Ok((out, acked, corrupt))
}
