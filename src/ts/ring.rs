//! The per-flow TS ring: one writer (the input), many readers (the outputs), one thread.
//!
//! Slots hold up to 7 whole TS packets (one 1316-byte chunk, the usual UDP payload) and are
//! allocated once. Outputs read slots in place through a [`Reader`] cursor. The writer never
//! waits for anybody: a reader that falls a whole ring behind is moved to the head and told
//! how many TS packets it missed, which the output counts as `dropped`.
//!
//! Everything runs on the runtime thread, so there are no atomics: the ring is shared as
//! `Rc<FlowRing>` and borrowed only between awaits.

use std::cell::RefCell;
use tokio::sync::Notify;

use super::packet::PACKET_LEN;

/// TS packets per chunk: 7 x 188 = 1316 bytes fits a 1500-byte MTU with IP/UDP/RTP headers.
pub const CHUNK_PACKETS: usize = 7;
/// Bytes in a full chunk.
pub const CHUNK_BYTES: usize = CHUNK_PACKETS * PACKET_LEN;

/// Memory one ring slot takes (the chunk, its length and its receive time): what a flow's
/// `ring_chunks` costs per chunk, as the resource budget counts it (`config::budget`).
pub const SLOT_BYTES: usize = std::mem::size_of::<Slot>();

#[derive(Clone, Copy)]
struct Slot {
    len: u16,
    /// Receive time of the datagram this chunk came from, in microseconds on the flow's
    /// monotonic clock. RTP outputs derive their 90 kHz timestamps from it.
    recv_us: u64,
    data: [u8; CHUNK_BYTES],
}

/// One chunk of whole TS packets, borrowed from the ring.
#[derive(Debug, Clone, Copy)]
pub struct Chunk<'a> {
    pub data: &'a [u8],
    pub recv_us: u64,
}

impl Chunk<'_> {
    pub fn packets(&self) -> usize {
        self.data.len() / PACKET_LEN
    }
}

/// A reader's position. Created by [`Ring::reader`] at the live head.
#[derive(Debug, Clone)]
pub struct Reader {
    /// Sequence number of the next slot to read.
    next: u64,
    /// TS packets this reader has consumed or been told it missed, cumulative.
    packets: u64,
}

impl Reader {
    /// Sequence number of the next chunk this reader reads. A [`Read::Lagged`] moves it by
    /// exactly the number of chunks skipped (its count is their TS packets).
    pub fn seq(&self) -> u64 {
        self.next
    }
}

/// What a read found.
#[derive(Debug)]
pub enum Read<'a> {
    Chunk(Chunk<'a>),
    /// The reader had fallen a whole ring behind: it now stands at the head and missed
    /// exactly this many TS packets: every chunk from its old position to the head, the
    /// overwritten ones and the ones still stored that it skips. [`Reader::seq`] counts
    /// the chunks.
    Lagged(u64),
    Empty,
}

pub struct Ring {
    slots: Box<[Slot]>,
    /// Slots written since creation; slot `n` lives at `n % capacity`.
    head: u64,
    /// TS packets written since creation.
    packets: u64,
}

impl Ring {
    /// A ring of `capacity` chunks (at least 2). All memory is allocated here, once.
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(2);
        let empty = Slot {
            len: 0,
            recv_us: 0,
            data: [0; CHUNK_BYTES],
        };
        Ring {
            slots: vec![empty; capacity].into_boxed_slice(),
            head: 0,
            packets: 0,
        }
    }

    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// Total TS packets written since creation.
    pub fn packets_written(&self) -> u64 {
        self.packets
    }

    /// Append one chunk. `packets` must be whole TS packets, at most [`CHUNK_BYTES`] long;
    /// anything else is a caller bug and is truncated to the whole packets that fit.
    pub fn push(&mut self, packets: &[u8], recv_us: u64) {
        let len = packets.len().min(CHUNK_BYTES) / PACKET_LEN * PACKET_LEN;
        if len == 0 {
            return;
        }
        let cap = self.slots.len() as u64;
        let slot = &mut self.slots[(self.head % cap) as usize];
        slot.data[..len].copy_from_slice(&packets[..len]);
        slot.len = len as u16;
        slot.recv_us = recv_us;
        self.head += 1;
        self.packets += (len / PACKET_LEN) as u64;
    }

    /// A reader that starts at the live head (it sees only what is pushed from now on).
    pub fn reader(&self) -> Reader {
        Reader {
            next: self.head,
            packets: self.packets,
        }
    }

    /// Read the next chunk for `r`, in place.
    pub fn read(&self, r: &mut Reader) -> Read<'_> {
        if r.next == self.head {
            return Read::Empty;
        }
        let cap = self.slots.len() as u64;
        // `r.next > head` only happens with a reader of another ring: treat it like a lag
        // rather than underflow.
        if r.next > self.head || self.head - r.next > cap {
            // The slot the reader wanted has been overwritten. Jump to the head rather than
            // to the oldest slot: a reader that slow would only lag again at once, and live
            // media wants the newest data.
            let missed = self.packets.saturating_sub(r.packets);
            r.next = self.head;
            r.packets = self.packets;
            return Read::Lagged(missed);
        }
        let slot = &self.slots[(r.next % cap) as usize];
        r.next += 1;
        r.packets += u64::from(slot.len) / PACKET_LEN as u64;
        Read::Chunk(Chunk {
            data: &slot.data[..usize::from(slot.len)],
            recv_us: slot.recv_us,
        })
    }

    /// Move `r` past up to `n` chunks, exactly as `n` reads would. An output that read a
    /// batch, sent only part of it and rewound uses this to step past what went out.
    pub fn advance(&self, r: &mut Reader, n: usize) {
        for _ in 0..n {
            if let Read::Empty = self.read(r) {
                break;
            }
        }
    }
}

/// A ring with the wake-up that tells readers new data is there.
///
/// The input pushes a whole receive batch through `ring` and then calls [`wake`] once: the
/// outputs run after the input task yields anyway (one thread), so one wake-up per batch
/// does the work of one per chunk.
///
/// [`wake`]: FlowRing::wake
pub struct FlowRing {
    pub ring: RefCell<Ring>,
    pub notify: Notify,
}

impl FlowRing {
    pub fn new(capacity: usize) -> Self {
        FlowRing {
            ring: RefCell::new(Ring::new(capacity)),
            notify: Notify::new(),
        }
    }

    /// Push one chunk and wake the readers.
    pub fn push(&self, packets: &[u8], recv_us: u64) {
        self.ring.borrow_mut().push(packets, recv_us);
        self.wake();
    }

    /// Wake every reader waiting for data (after pushes made through `ring` directly).
    pub fn wake(&self) {
        self.notify.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(tag: u8, packets: usize) -> Vec<u8> {
        let mut v = vec![0u8; packets * PACKET_LEN];
        for p in v.chunks_mut(PACKET_LEN) {
            p[0] = 0x47;
            p[1] = tag;
        }
        v
    }

    #[test]
    fn readers_see_every_chunk_in_order() {
        let mut ring = Ring::new(4);
        let mut a = ring.reader();
        let mut b = ring.reader();
        for i in 0..3 {
            ring.push(&chunk(i, 7), u64::from(i));
        }
        for r in [&mut a, &mut b] {
            for i in 0..3u8 {
                match ring.read(r) {
                    Read::Chunk(c) => {
                        assert_eq!(c.data[1], i);
                        assert_eq!(c.packets(), 7);
                        assert_eq!(c.recv_us, u64::from(i));
                    }
                    other => panic!("expected chunk, got {other:?}"),
                }
            }
            assert!(matches!(ring.read(r), Read::Empty));
        }
    }

    #[test]
    fn slow_reader_is_told_what_it_missed_and_jumps_to_head() {
        let mut ring = Ring::new(4);
        let mut slow = ring.reader();
        for i in 0..10 {
            ring.push(&chunk(i, 1 + (i as usize % 7)), 0);
        }
        let written = ring.packets_written();
        let from = slow.seq();
        match ring.read(&mut slow) {
            Read::Lagged(n) => assert_eq!(n, written),
            other => panic!("expected lag, got {other:?}"),
        }
        assert_eq!(slow.seq() - from, 10, "every chunk pushed was skipped");
        assert!(matches!(ring.read(&mut slow), Read::Empty));
        ring.push(&chunk(99, 2), 0);
        match ring.read(&mut slow) {
            Read::Chunk(c) => assert_eq!(c.data[1], 99),
            other => panic!("expected chunk, got {other:?}"),
        }
    }

    #[test]
    fn a_lag_counts_exactly_the_chunks_and_packets_skipped() {
        let mut ring = Ring::new(4);
        let mut r = ring.reader();
        // Read two of three, then fall behind by exactly one ring and one chunk more.
        for i in 0..3 {
            ring.push(&chunk(i, 7), 0);
        }
        for _ in 0..2 {
            assert!(matches!(ring.read(&mut r), Read::Chunk(_)));
        }
        // Unread: chunk 2 (7 packets), then 4 more of 3 packets: 5 chunks, 19 packets.
        for i in 3..7 {
            ring.push(&chunk(i, 3), 0);
        }
        let from = r.seq();
        match ring.read(&mut r) {
            Read::Lagged(n) => assert_eq!(n, 7 + 4 * 3),
            other => panic!("expected lag, got {other:?}"),
        }
        assert_eq!(r.seq() - from, 5);
        assert!(matches!(ring.read(&mut r), Read::Empty));
    }

    #[test]
    fn reader_exactly_one_ring_behind_still_reads_everything() {
        let mut ring = Ring::new(4);
        let mut r = ring.reader();
        for i in 0..4 {
            ring.push(&chunk(i, 1), 0);
        }
        for i in 0..4u8 {
            match ring.read(&mut r) {
                Read::Chunk(c) => assert_eq!(c.data[1], i),
                other => panic!("expected chunk, got {other:?}"),
            }
        }
    }

    #[test]
    fn advance_steps_like_reads_and_stops_at_head() {
        let mut ring = Ring::new(8);
        let mut r = ring.reader();
        for i in 0..5 {
            ring.push(&chunk(i, 1 + usize::from(i)), 0);
        }
        let mut by_reads = r.clone();
        for _ in 0..3 {
            assert!(matches!(ring.read(&mut by_reads), Read::Chunk(_)));
        }
        ring.advance(&mut r, 3);
        assert_eq!((r.next, r.packets), (by_reads.next, by_reads.packets));
        match ring.read(&mut r) {
            Read::Chunk(c) => assert_eq!(c.data[1], 3),
            other => panic!("expected chunk, got {other:?}"),
        }
        ring.advance(&mut r, 100);
        assert!(matches!(ring.read(&mut r), Read::Empty));
        assert_eq!(r.packets, ring.packets_written());
    }

    #[test]
    fn partial_packets_are_never_stored() {
        let mut ring = Ring::new(2);
        let mut r = ring.reader();
        ring.push(&[0x47; 100], 0);
        assert!(matches!(ring.read(&mut r), Read::Empty));
        ring.push(&[0x47; PACKET_LEN + 5], 0);
        match ring.read(&mut r) {
            Read::Chunk(c) => assert_eq!(c.data.len(), PACKET_LEN),
            other => panic!("expected chunk, got {other:?}"),
        }
    }
}
