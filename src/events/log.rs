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
    /// Damaged stretches found between (or after) intact records, outside a torn tail,
    /// and segments damaged past reading.
    pub corrupt: u64,
    /// Records lost to damage that nobody has been told about: the numbers above the
    /// cursor and above `loss_acked`. Exact, unless `lost_inexact` (see `codec::Examined`).
    pub lost: u64,
    /// Those records' sequence numbers, as ranges (first, last), in order.
    pub lost_ranges: Vec<(u64, u64)>,
    /// Records lost to damage at or below the cursor or `loss_acked`: delivered already
    /// (or their loss acknowledged), so only the history `quoll events` shows is shorter.
    pub lost_delivered: u64,
    /// A segment was damaged beyond counting (header and every record): `lost` counts
    /// every number it may have held.
    pub lost_inexact: bool,
    /// Segment headers found damaged. Their records were read all the same (the header
    /// is rebuilt from the file name, the CRC and the records), and left as they are.
    pub damaged_headers: u64,
    /// An operator acknowledged reported loss of records up to here (the `loss-ack` file).
    pub loss_acked: u64,
    /// Bytes of torn tail cut from the last segment.
    pub truncated_bytes: u64,
    /// Segments of a newer format, or damaged past reading, left alone.
    pub skipped_segments: u64,
    /// Of those, the segments of a newer format (a rolled-back binary found them).
    pub newer_segments: u64,
    /// The cursor file is of this newer format: it is kept untouched, and the delivery
    /// position is held in memory only (see `Log::set_acked`).
    pub newer_cursor: Option<u16>,
}

impl Recovery {
    /// The highest sequence number lost (0: none).
    pub fn lost_last(&self) -> u64 {
        self.lost_ranges.last().map_or(0, |r| r.1)
    }
}

/// One segment file, as the log keeps track of it.
#[derive(Debug, Clone)]
struct Segment {
    name: String,
    base_seq: u64,
    first_seq: Option<u64>,
    last_seq: Option<u64>,
    /// No record in it is above this: the next segment's base - 1 (`u64::MAX` for the
    /// newest). A frame that claims more is garbage, on every read as at recovery.
    max_seq: u64,
    count: u64,
    bytes: u64,
    /// Whether this build may read it (right version; its header sound, or damaged with
    /// its records read all the same).
    readable: bool,
    /// Every `INDEX_EVERY`th frame: (sequence number, offset). A delivery read starts at the
    /// entry just before what it wants instead of scanning the whole file.
    index: Vec<(u64, u64)>,
}

/// Frames between index entries: a read scans at most this many frames it does not want,
/// and a full 16 MiB log keeps about 3500 entries (55 KiB).
const INDEX_EVERY: u64 = 32;

/// Bytes a delivery read takes from a segment at a time (a frame is at most 64 KiB).
const READ_CHUNK: usize = 128 * 1024;

/// Events the budget pushed out: how many were not yet delivered, and their range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dropped {
    pub count: u64,
    pub first_seq: u64,
    pub last_seq: u64,
}

pub struct Log<S: Storage> {
    storage: S,
    /// The cursor file is of a newer format: never overwritten by this build.
    cursor_foreign: bool,
    /// The loss-ack file is of a newer format: never overwritten by this build.
    loss_ack_foreign: bool,
    /// Reported loss of records up to here acknowledged by an operator (`set_loss_acked`).
    loss_acked: u64,
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
    /// End offset in `buf` and sequence number of each frame of the batch being appended.
    frames: Vec<(usize, u64)>,
}

impl<S: Storage> Log<S> {
    /// Open the log and recover: cut a torn tail off the last segment, find every intact
    /// record (behind a damaged header too), count the records lost to damage in the
    /// middle (damaged bytes are skipped on every read, never rewritten), read the cursor.
    /// A storage that cannot be written (read-only filesystem) still opens; the first
    /// append then fails.
    pub fn open(mut storage: S, opts: LogOptions) -> Result<(Log<S>, Recovery), LogError> {
        let mut names = storage.list().map_err(LogError::io("list", "."))?;
        names.sort();
        let mut rec = Recovery::default();

        let acked = match read_marker(&mut storage, codec::CURSOR_FILE, codec::parse_cursor)? {
            Marker::Absent => 0,
            Marker::Value(acked) => acked,
            Marker::Newer(v) => {
                // A newer binary wrote it and this one was rolled back. Its number may
                // mean something else: deliver from the start (the safe side) and
                // never overwrite the file (`set_acked`), so rolling forward again
                // finds it as it was.
                tracing::warn!(
                    "event log cursor is of a newer format (version {v}): kept untouched; \
                     the delivery position is held in memory only"
                );
                rec.newer_cursor = Some(v);
                0
            }
            Marker::Damaged(e) => {
                // Written by rename, so this is bit rot: delivering again is the safe side.
                tracing::warn!("event log cursor unreadable ({e}); delivering from the start");
                0
            }
        };
        rec.acked = acked;
        let (loss_acked, loss_ack_foreign) =
            match read_marker(&mut storage, codec::LOSS_ACK_FILE, codec::parse_loss_ack)? {
                Marker::Absent => (0, false),
                Marker::Value(seq) => (seq, false),
                // Unknown or unreadable: loss at or below the cursor is still not reported
                // again; above it, reporting it again is the safe side.
                Marker::Newer(_) => (0, true),
                Marker::Damaged(e) => {
                    tracing::warn!("event log loss-ack file unreadable ({e}); ignored");
                    (0, false)
                }
            };
        rec.loss_acked = loss_acked;
        // Loss at or below this was delivered, or reported and acknowledged. (Damage found
        // later among undelivered records below an operator's acknowledgement is taken for
        // the acknowledged loss: the file holds how far it went, not every range.)
        let told = acked.max(loss_acked);

        let seg_names: Vec<(u64, String)> = names
            .iter()
            .filter_map(|n| codec::parse_segment_name(n).map(|b| (b, n.clone())))
            .collect();
        let mut segments = VecDeque::new();
        let mut last_seq = 0u64;
        // Above every sequence number a segment this build cannot read may hold.
        let mut reserved = 0u64;
        let mut tail_writable = false;
        for (i, (name_base, name)) in seg_names.iter().enumerate() {
            let next_base = seg_names.get(i + 1).map(|(b, _)| *b);
            let is_last = next_base.is_none();
            let max_seq = next_base.map_or(u64::MAX, |n| n.saturating_sub(1));
            let bytes = match storage.read(name) {
                Ok(b) => b,
                Err(e) => return Err(LogError::io("read", name)(e)),
            };
            if is_last && bytes.len() < codec::HEADER_LEN {
                // Torn at creation (the header never became durable): nothing in it can
                // have been confirmed.
                let _ = storage.remove(name).and_then(|()| storage.sync_dir());
                continue;
            }
            let ex = codec::examine_segment(*name_base, &bytes, last_seq + 1, next_base);
            if ex.header_damaged() {
                rec.damaged_headers += 1;
                tracing::warn!(
                    segment = %name,
                    header = ?ex.header,
                    records = ex.scan.frames.len(),
                    "event log segment header damaged; its records are read from their own \
                     CRCs and sequence numbers"
                );
            }
            for &(lo, hi) in &ex.lost {
                let untold = lo.max(told.saturating_add(1));
                let fresh = if untold <= hi { hi - untold + 1 } else { 0 };
                rec.lost_delivered += (hi - lo).saturating_add(1) - fresh;
                if fresh > 0 {
                    rec.lost += fresh;
                    rec.lost_ranges.push((untold, hi));
                }
            }
            rec.lost_inexact |= !ex.lost_exact;
            if !ex.readable {
                if matches!(
                    ex.header,
                    codec::HeaderCheck::Newer { .. } | codec::HeaderCheck::Rebuilt { .. }
                ) {
                    rec.newer_segments += 1;
                } else {
                    rec.corrupt += 1;
                }
                rec.skipped_segments += 1;
                // Its records are unknown, but every version keeps sequence numbers
                // dense inside a segment and spends at least `MIN_FRAME_LEN` bytes on
                // a record (the frozen rule in `codec.rs`), so none of them is above
                // this bound: numbering resumes above it and never reuses one. (Only
                // the numbering: later segments are still scanned from their own base.)
                last_seq = last_seq.max(*name_base);
                reserved = reserved.max(codec::max_seq_in(*name_base, bytes.len() as u64));
                segments.push_back(Segment {
                    name: name.clone(),
                    base_seq: *name_base,
                    first_seq: None,
                    last_seq: None,
                    max_seq,
                    count: 0,
                    bytes: bytes.len() as u64,
                    readable: false,
                    index: Vec::new(),
                });
                continue;
            }
            let base_seq = ex.base_seq;
            let header_damaged = ex.header_damaged();
            let scan = ex.scan;
            rec.corrupt += scan.corrupt;
            let mut len = bytes.len() as u64;
            if scan.has_tail(bytes.len()) {
                if is_last {
                    // A torn tail: the crash came mid-write. Cut it so appends continue
                    // from sound bytes (and so a later recovery, when this segment is no
                    // longer the newest, does not take it for damage). If the cut fails
                    // (read-only), start a new segment.
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
            if header_damaged {
                // Read, never appended to: new records go to a new segment with a sound
                // header. The damaged one is left as it is (synced bytes are never
                // rewritten) until the budget removes it.
                tail_writable = false;
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
                max_seq,
                count: scan.frames.len() as u64,
                bytes: len,
                readable: true,
                index: scan
                    .frames
                    .iter()
                    .step_by(INDEX_EVERY as usize)
                    .map(|f| (f.seq, f.offset as u64))
                    .collect(),
            });
        }
        if segments.back().is_some_and(|s| !s.readable) {
            tail_writable = false;
        }
        // Stale temp files from a crash mid-write: the rename never happened.
        for tmp in [codec::CURSOR_TMP, codec::LOSS_ACK_TMP] {
            if names.iter().any(|n| n == tmp) {
                let _ = storage.remove(tmp);
            }
        }
        let last_seq = last_seq.max(acked).max(reserved);
        rec.next_seq = last_seq + 1;
        let log = Log {
            storage,
            cursor_foreign: rec.newer_cursor.is_some(),
            loss_ack_foreign,
            loss_acked,
            opts,
            segments,
            tail_writable,
            dirty: false,
            last_seq,
            acked,
            cursor_on_disk: acked,
            evicted_through: 0,
            buf: Vec::new(),
            frames: Vec::new(),
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

    /// The acknowledged sequence number the cursor file holds.
    pub fn cursor_on_disk(&self) -> u64 {
        self.cursor_on_disk
    }

    /// Highest sequence number the byte budget removed from the log (0: none yet).
    pub fn evicted_through(&self) -> u64 {
        self.evicted_through
    }

    /// Bytes in the segment files the byte budget covers: the ones this build can read.
    /// Segments it cannot read (a newer format, a damaged header) are never removed by it
    /// and are outside the budget (see `roll`).
    pub fn total_bytes(&self) -> u64 {
        self.segments
            .iter()
            .filter(|s| s.readable)
            .map(|s| s.bytes)
            .sum()
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
    ///
    /// A batch is split across segments: the tail takes frames while it stays within
    /// `segment_bytes` and their sequence numbers follow on without a gap; the rest goes to
    /// new segments. So no segment outgrows its size (unless one record alone is larger)
    /// and the budget holds, and sequence numbers are dense inside every segment (the
    /// frozen rule `codec::max_seq_in` relies on).
    pub fn append(&mut self, records: &[Record]) -> Result<Option<Dropped>, LogError> {
        let mut buf = std::mem::take(&mut self.buf);
        let mut frames = std::mem::take(&mut self.frames);
        buf.clear();
        frames.clear();
        let mut last = self.last_seq;
        for r in records {
            if r.seq <= last {
                continue; // already in the log, or out of order: never written twice
            }
            codec::encode_record(r, &mut buf);
            frames.push((buf.len(), r.seq));
            last = r.seq;
        }
        let result = self.write_frames(&buf, &frames);
        self.buf = buf;
        self.frames = frames;
        result
    }

    /// Whether the tail takes a frame of `len` bytes with sequence number `seq`.
    fn tail_takes(&self, seq: u64, len: u64) -> bool {
        self.tail_writable
            && self.segments.back().is_some_and(|s| {
                let dense = seq == s.last_seq.map_or(s.base_seq, |l| l + 1);
                s.readable && dense && (s.count == 0 || s.bytes + len <= self.opts.segment_bytes)
            })
    }

    fn write_frames(
        &mut self,
        buf: &[u8],
        frames: &[(usize, u64)],
    ) -> Result<Option<Dropped>, LogError> {
        let mut dropped: Option<Dropped> = None;
        let mut i = 0;
        let mut start = 0;
        while i < frames.len() {
            let (end, first) = frames[i];
            if !self.tail_takes(first, (end - start) as u64) {
                let need = (codec::HEADER_LEN + end - start) as u64;
                if let Some(d) = self.roll(first, need)? {
                    match &mut dropped {
                        Some(acc) => {
                            acc.count += d.count;
                            acc.last_seq = d.last_seq;
                        }
                        None => dropped = Some(d),
                    }
                }
            }
            // The longest run of frames the tail takes.
            let tail = self.segments.back().expect("roll made a tail");
            let mut j = i + 1;
            while j < frames.len()
                && frames[j].1 == frames[j - 1].1 + 1
                && tail.bytes + (frames[j].0 - start) as u64 <= self.opts.segment_bytes
            {
                j += 1;
            }
            let (stop, last) = frames[j - 1];
            let tail = self.segments.back_mut().expect("roll made a tail");
            self.storage
                .append(&tail.name, &buf[start..stop])
                .map_err(LogError::io("append", &tail.name))?;
            self.dirty = true;
            for k in i..j {
                if (tail.count + (k - i) as u64).is_multiple_of(INDEX_EVERY) {
                    let frame_start = if k == 0 { 0 } else { frames[k - 1].0 };
                    let offset = tail.bytes + (frame_start - start) as u64;
                    tail.index.push((frames[k].1, offset));
                }
            }
            tail.bytes += (stop - start) as u64;
            tail.first_seq.get_or_insert(first);
            tail.last_seq = Some(last);
            tail.count += (j - i) as u64;
            self.last_seq = last;
            start = stop;
            i = j;
        }
        Ok(dropped)
    }

    /// Close the tail and start a segment whose first record will be `first`, with room for
    /// at least `need` bytes. Makes room first: the oldest segments go until a whole new
    /// segment fits in the budget. Only segments this build can read count and go: one of
    /// a newer format (or with a damaged header) is never removed here, whatever its age;
    /// it stays outside the budget until a build that reads it takes the log over (or an
    /// operator removes it), so the disk may hold that much more than the budget.
    fn roll(&mut self, first: u64, need: u64) -> Result<Option<Dropped>, LogError> {
        self.commit()?;
        let need = need.max(self.opts.segment_bytes);
        let mut dropped: Option<Dropped> = None;
        // A tail of ours that holds nothing (recovered header-only, or left by a gap in
        // the sequence numbers) goes with the removals: a new segment replaces it.
        if self
            .segments
            .back()
            .is_some_and(|s| s.readable && s.count == 0 && self.tail_writable)
        {
            let empty = self.segments.pop_back().expect("checked");
            self.storage
                .remove(&empty.name)
                .map_err(LogError::io("remove", &empty.name))?;
        }
        self.tail_writable = false;
        while self.total_bytes() + need > self.opts.budget_bytes {
            let Some(idx) = self.segments.iter().position(|s| s.readable) else {
                break;
            };
            let old = self.segments[idx].clone();
            let undelivered = self.count_undelivered(&old);
            self.storage
                .remove(&old.name)
                .map_err(LogError::io("remove", &old.name))?;
            self.segments.remove(idx);
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
        // The segment before it now ends below `first` (as recovery will find it).
        if let Some(prev) = self.segments.back_mut() {
            prev.max_seq = prev.max_seq.min(first.saturating_sub(1));
        }
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
            max_seq: u64::MAX,
            count: 0,
            bytes: codec::HEADER_LEN as u64,
            readable: true,
            index: Vec::new(),
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
        let scan =
            codec::scan_frames_until(&bytes, codec::HEADER_LEN, seg.base_seq, seg.max_seq, |_| {
                false
            });
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
    ///
    /// When the cursor file is of a newer format (a rolled-back binary), it is never
    /// overwritten: the acknowledgement is kept in memory only, and after a restart
    /// delivery starts again from the oldest record (duplicates, never a skip).
    pub fn set_acked(&mut self, seq: u64) -> Result<(), LogError> {
        let seq = seq.min(self.last_seq);
        self.acked = self.acked.max(seq);
        if self.acked == self.cursor_on_disk || self.cursor_foreign {
            return Ok(());
        }
        let bytes = codec::cursor_bytes(self.acked);
        self.replace_file(codec::CURSOR_TMP, codec::CURSOR_FILE, &bytes)?;
        self.cursor_on_disk = self.acked;
        Ok(())
    }

    /// An operator acknowledged reported loss of records up to `seq` (`quoll ctl
    /// ack-loss`), durably: the `loss-ack` file is written like the cursor. Recovery
    /// reports again only loss above it (and above the cursor). A newer-format file is
    /// never overwritten; the acknowledgement then lasts until the restart.
    pub fn set_loss_acked(&mut self, seq: u64) -> Result<(), LogError> {
        let seq = seq.min(self.last_seq);
        if seq <= self.loss_acked || self.loss_ack_foreign {
            return Ok(());
        }
        let bytes = codec::loss_ack_bytes(seq);
        self.replace_file(codec::LOSS_ACK_TMP, codec::LOSS_ACK_FILE, &bytes)?;
        self.loss_acked = seq;
        Ok(())
    }

    /// How far an operator acknowledged reported loss (the `loss-ack` file; 0: none).
    pub fn loss_acked(&self) -> u64 {
        self.loss_acked
    }

    /// Replace a small file atomically and durably: temp file, sync, rename, directory sync.
    fn replace_file(&mut self, tmp: &str, file: &str, bytes: &[u8]) -> Result<(), LogError> {
        self.storage
            .create(tmp)
            .map_err(LogError::io("create", tmp))?;
        self.storage
            .append(tmp, bytes)
            .map_err(LogError::io("append", tmp))?;
        self.storage.sync(tmp).map_err(LogError::io("sync", tmp))?;
        self.storage
            .rename(tmp, file)
            .map_err(LogError::io("rename", tmp))?;
        self.storage
            .sync_dir()
            .map_err(LogError::io("sync_dir", "."))
    }

    /// Up to `max` records with a sequence number above `after`, oldest first. Damaged
    /// records are skipped.
    pub fn read_after(&mut self, after: u64, max: usize) -> Result<Vec<Record>, LogError> {
        let mut out = Vec::new();
        // Each segment from its index entry just before `after + 1`.
        let starts: Vec<(String, u64, u64, u64)> = self
            .segments
            .iter()
            .filter(|s| s.readable && s.last_seq.is_some_and(|l| l > after))
            .map(|s| {
                let i = s.index.partition_point(|&(seq, _)| seq <= after + 1);
                let (seq, offset) = match i {
                    0 => (s.first_seq.unwrap_or(s.base_seq), codec::HEADER_LEN as u64),
                    i => s.index[i - 1],
                };
                (s.name.clone(), seq, offset, s.max_seq)
            })
            .collect();
        for (name, mut min_seq, mut offset, max_seq) in starts {
            // In chunks: a batch needs a few KiB, not the rest of a 2 MiB segment.
            let mut chunk = READ_CHUNK;
            while out.len() < max {
                let bytes = self
                    .storage
                    .read_at(&name, offset, chunk)
                    .map_err(LogError::io("read", &name))?;
                let want = max - out.len();
                let mut wanted = 0;
                let scan = codec::scan_frames_until(&bytes, 0, min_seq, max_seq, |f| {
                    wanted += usize::from(f.seq > after);
                    wanted >= want
                });
                for f in scan.frames.iter().filter(|f| f.seq > after) {
                    let payload = &bytes[f.offset + codec::FRAME_OVERHEAD..f.offset + f.len];
                    if let Ok(r) = codec::decode_payload(payload) {
                        out.push(r);
                    }
                }
                if bytes.len() < chunk {
                    break; // the end of the segment
                }
                match scan.frames.last() {
                    // Go on after the last whole frame (the chunk cut the next one).
                    Some(last) => {
                        offset += scan.valid_len as u64;
                        min_seq = last.seq + 1;
                        chunk = READ_CHUNK;
                    }
                    // Not one whole frame in it (a damaged stretch): read more at once.
                    None => chunk = chunk.saturating_mul(4),
                }
            }
        }
        out.truncate(max);
        Ok(out)
    }

    /// Take the storage back (tests: crash it, then open again).
    pub fn into_storage(self) -> S {
        self.storage
    }
}

/// What a small marker file (the cursor, the loss-ack file) holds.
enum Marker {
    Absent,
    Value(u64),
    Newer(u16),
    Damaged(DecodeError),
}

fn read_marker<S: Storage>(
    storage: &mut S,
    name: &str,
    parse: fn(&[u8]) -> Result<u64, DecodeError>,
) -> Result<Marker, LogError> {
    match storage.read(name) {
        Ok(bytes) => Ok(match parse(&bytes) {
            Ok(v) => Marker::Value(v),
            Err(DecodeError::UnsupportedVersion(v)) => Marker::Newer(v),
            Err(e) => Marker::Damaged(e),
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Marker::Absent),
        Err(e) => Err(LogError::io("read", name)(e)),
    }
}

/// Read a whole log without changing anything (the console; works while the daemon writes:
/// a half-written last frame reads as a tail and is left out). Returns the records, the
/// acknowledged sequence number and the count of records lost to damage (segment headers
/// do not matter: records are found by their own CRCs and sequence numbers).
pub fn read_all<S: Storage>(storage: &mut S) -> io::Result<(Vec<Record>, u64, u64)> {
    let mut names = storage.list()?;
    names.sort();
    let acked = match storage.read(codec::CURSOR_FILE) {
        Ok(b) => codec::parse_cursor(&b).unwrap_or(0),
        Err(_) => 0,
    };
    let segs: Vec<(u64, &String)> = names
        .iter()
        .filter_map(|n| codec::parse_segment_name(n).map(|b| (b, n)))
        .collect();
    let mut out: Vec<Record> = Vec::new();
    let mut lost = 0;
    for (i, (base, name)) in segs.iter().enumerate() {
        // A segment removed by the running daemon between list and read is simply gone.
        let Ok(bytes) = storage.read(name) else {
            continue;
        };
        // The newest segment's damaged tail is a write in progress (or a torn one the
        // daemon will cut), not a loss.
        let next_base = segs.get(i + 1).map(|(b, _)| *b);
        let seg = codec::read_segment(*base, &bytes, next_base);
        lost += seg.examined.lost_count() + seg.undecodable;
        let last = out.last().map_or(0, |r| r.seq);
        out.extend(seg.records.into_iter().filter(|r| r.seq > last));
    }
    Ok((out, acked, lost))
}
