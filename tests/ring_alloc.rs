//! The hot path allocates nothing in steady state: datagram -> Chunker -> Ring::push ->
//! every Reader reads in place -> a TsAnalyzer per reader. Checked with a counting global
//! allocator, and with exact packet accounting per reader including a deliberately slow one
//! that lags.

// A counting global allocator is an `unsafe impl GlobalAlloc`.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use quoll::ts::analyzer::TsAnalyzer;
use quoll::ts::chunk::Chunker;
use quoll::ts::ring::{CHUNK_BYTES, Read, Reader, Ring};
use quoll::ts::synth::StreamGen;

thread_local! {
    // Only the measuring thread counts: the test harness may allocate on its own threads.
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

struct CountingAlloc;

fn note() {
    // try_with: allocation can happen while thread-locals are being torn down.
    let _ = COUNTING.try_with(|c| {
        if c.get() {
            let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        }
    });
}

// SAFETY: every method forwards to the system allocator unchanged; counting touches only
// const-initialised thread-locals, which never allocate.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note();
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note();
        // SAFETY: same contract as ours.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note();
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

/// Allocations made by `f` on this thread.
fn allocations_in(f: impl FnOnce()) -> u64 {
    ALLOCATIONS.with(|n| n.set(0));
    COUNTING.with(|c| c.set(true));
    f();
    COUNTING.with(|c| c.set(false));
    ALLOCATIONS.with(|n| n.get())
}

const RING_CAPACITY: usize = 1024;
const READERS: usize = 4;
const SLOW: usize = READERS - 1;
/// The slow reader takes one chunk per this many datagrams: it falls behind by a chunk every
/// other datagram, so it is a whole ring behind (and lagged) every ~2000 datagrams.
const SLOW_PERIOD: u64 = 2;
const WARMUP_DATAGRAMS: u64 = 3000;
/// Every this many datagrams arrives with garbage in front, to keep the chunker's resync
/// path in the measured loop.
const GARBAGE_EVERY: u64 = 97;
const GARBAGE: &[u8] = &[0x47, 0x00, 0x47, 0x12, 0x34];

struct Rig {
    source: StreamGen,
    chunker: Chunker,
    ring: Ring,
    readers: Vec<Reader>,
    analyzers: Vec<TsAnalyzer>,
    read: [u64; READERS],
    lagged: [u64; READERS],
    lag_events: [u64; READERS],
    touched: u8,
    datagram: [u8; GARBAGE.len() + CHUNK_BYTES],
    datagrams: u64,
}

impl Rig {
    fn new() -> Self {
        let ring = Ring::new(RING_CAPACITY);
        let readers = (0..READERS).map(|_| ring.reader()).collect();
        Rig {
            source: StreamGen::new(),
            chunker: Chunker::new(),
            ring,
            readers,
            analyzers: (0..READERS).map(|_| TsAnalyzer::new()).collect(),
            read: [0; READERS],
            lagged: [0; READERS],
            lag_events: [0; READERS],
            touched: 0,
            datagram: [0; GARBAGE.len() + CHUNK_BYTES],
            datagrams: 0,
        }
    }

    fn drain(&mut self, i: usize, max_chunks: usize) {
        for _ in 0..max_chunks {
            match self.ring.read(&mut self.readers[i]) {
                Read::Chunk(c) => {
                    self.read[i] += c.packets() as u64;
                    // Touch the data in place, as an output would when sending it.
                    self.touched ^= c.data[0];
                    self.analyzers[i].feed(c.data);
                }
                Read::Lagged(n) => {
                    self.lagged[i] += n;
                    self.lag_events[i] += 1;
                }
                Read::Empty => break,
            }
        }
    }

    fn step(&mut self) {
        let garbage = if self.datagrams % GARBAGE_EVERY == GARBAGE_EVERY - 1 {
            GARBAGE.len()
        } else {
            0
        };
        self.datagram[..garbage].copy_from_slice(&GARBAGE[..garbage]);
        let len = garbage + self.source.fill(&mut self.datagram[garbage..]);
        self.datagrams += 1;
        let recv_us = self.datagrams * 1000;
        let ring = &mut self.ring;
        self.chunker
            .split(&self.datagram[..len], |c| ring.push(c, recv_us));
        for i in 0..SLOW {
            self.drain(i, usize::MAX);
        }
        if self.datagrams.is_multiple_of(SLOW_PERIOD) {
            self.drain(SLOW, 1);
        }
    }
}

#[test]
fn steady_state_hot_path_allocates_nothing_and_accounts_exactly() {
    let mut rig = Rig::new();
    // Warm-up: PAT and PMT seen, section buffers allocated, tables built.
    for _ in 0..WARMUP_DATAGRAMS {
        rig.step();
    }
    let before_info = rig.analyzers[0].info();
    assert_eq!(before_info.programs.len(), 1);
    assert_eq!(before_info.programs[0].streams.len(), 2);

    const MEASURED_DATAGRAMS: u64 = 20_000; // 140 000 packets
    let allocations = allocations_in(|| {
        for _ in 0..MEASURED_DATAGRAMS {
            rig.step();
        }
    });
    assert_eq!(allocations, 0, "allocations in the steady-state loop");

    // Sanity of the harness itself: the counter does see allocations.
    assert!(allocations_in(|| drop(std::hint::black_box(vec![1u8; 10]))) > 0);

    // Let everyone catch up, then check the books.
    for i in 0..READERS {
        rig.drain(i, usize::MAX);
    }
    let written = rig.ring.packets_written();
    assert_eq!(written, rig.source.packets());
    assert!(written >= 100_000 + WARMUP_DATAGRAMS * 7);
    for i in 0..READERS {
        assert_eq!(
            rig.read[i] + rig.lagged[i],
            written,
            "reader {i}: read {} + lagged {} != written {written}",
            rig.read[i],
            rig.lagged[i]
        );
    }
    for i in 0..SLOW {
        assert_eq!(rig.lag_events[i], 0, "fast reader {i} lagged");
        let info = rig.analyzers[i].info();
        assert_eq!(info.cc_errors, 0);
        assert_eq!(info.packets, written);
        assert_eq!(
            info,
            rig.analyzers[0].info(),
            "fast readers see the same stream"
        );
    }
    assert!(rig.lag_events[SLOW] >= 5, "the slow reader must lag");
    assert!(rig.read[SLOW] > 0 && rig.lagged[SLOW] > 0);
    assert!(
        rig.analyzers[SLOW].cc_errors() > 0,
        "gaps show up as CC errors"
    );

    // The injected garbage was all discarded, one resync each, and no packet was lost.
    let total = WARMUP_DATAGRAMS + MEASURED_DATAGRAMS;
    let garbage_datagrams = total / GARBAGE_EVERY;
    assert_eq!(rig.chunker.resyncs(), garbage_datagrams);
    assert_eq!(
        rig.chunker.discarded_bytes(),
        garbage_datagrams * GARBAGE.len() as u64
    );
    assert_eq!(written, total * 7);
    std::hint::black_box(rig.touched);
}

/// The tunnel's encrypted data plane allocates nothing per packet either: UDP datagrams
/// sealed into a reused buffer and opened in place through the replay window, with reordered,
/// replayed and forged datagrams in the loop, and TCP chunks sealed and cut out of a stream
/// that arrives in uneven pieces.
#[cfg(feature = "tunnels")]
#[test]
fn steady_state_tunnel_seal_and_open_allocate_nothing() {
    use quoll::tunnel::seal::{
        CHUNK_OVERHEAD, ChunkDecoder, DATAGRAM_OVERHEAD, OpenError, Opener, Sealer,
    };

    struct Tunnel {
        source: StreamGen,
        sealer: Sealer,
        opener: Opener,
        chunks: ChunkDecoder,
        payload: [u8; CHUNK_BYTES],
        wire: Vec<u8>,
        held: Vec<u8>,
        copy: Vec<u8>,
        chunk: Vec<u8>,
        i: u64,
        opened: u64,
        replayed: u64,
        forged: u64,
        chunk_bytes: u64,
    }

    impl Tunnel {
        fn step(&mut self) {
            let n = self.source.fill(&mut self.payload);
            let payload = &self.payload[..n];
            self.i += 1;
            self.sealer.seal(payload, &mut self.wire);
            if self.i % 10 == 3 {
                // Held back and delivered after the next one: reordered.
                self.held.clear();
                self.held.extend_from_slice(&self.wire);
            } else {
                self.copy.clear();
                self.copy.extend_from_slice(&self.wire);
                assert_eq!(self.opener.open(&mut self.wire).unwrap(), payload);
                self.opened += 1;
                if !self.held.is_empty() {
                    assert!(
                        self.opener.open(&mut self.held).is_ok(),
                        "within the window"
                    );
                    self.opened += 1;
                    self.held.clear();
                }
                if self.i.is_multiple_of(7) {
                    // The same datagram again, then a forgery of a fresh one.
                    assert_eq!(self.opener.open(&mut self.copy), Err(OpenError::Replayed));
                    self.replayed += 1;
                    self.sealer.seal(payload, &mut self.copy);
                    self.copy[40] ^= 0x08;
                    assert_eq!(self.opener.open(&mut self.copy), Err(OpenError::Forged));
                    self.forged += 1;
                }
            }
            // The same payload as a TCP chunk, arriving in two uneven pieces.
            self.sealer.seal_chunk(payload, &mut self.chunk);
            let cut = (self.i as usize * 37) % self.chunk.len();
            self.chunks.push(&self.chunk[..cut]);
            if let Some(p) = self.chunks.next_chunk(&self.opener).unwrap() {
                self.chunk_bytes += p.len() as u64;
            }
            self.chunks.push(&self.chunk[cut..]);
            while let Some(p) = self.chunks.next_chunk(&self.opener).unwrap() {
                self.chunk_bytes += p.len() as u64;
            }
        }
    }

    const KEY: [u8; 32] = [0x42; 32];
    const UUID: [u8; 16] = [0x01; 16];
    let datagram = CHUNK_BYTES + DATAGRAM_OVERHEAD;
    let mut t = Tunnel {
        source: StreamGen::new(),
        sealer: Sealer::new(&KEY, UUID, 1_780_000_000_000_000, [1, 2, 3, 4]),
        opener: Opener::new(&KEY, UUID),
        chunks: ChunkDecoder::new(),
        payload: [0; CHUNK_BYTES],
        wire: Vec::with_capacity(datagram),
        held: Vec::with_capacity(datagram),
        copy: Vec::with_capacity(datagram),
        chunk: Vec::with_capacity(CHUNK_BYTES + CHUNK_OVERHEAD),
        i: 0,
        opened: 0,
        replayed: 0,
        forged: 0,
        chunk_bytes: 0,
    };
    // Warm-up: the chunk decoder's buffer grows to its working size.
    for _ in 0..100 {
        t.step();
    }
    const MEASURED: u64 = 20_000;
    let allocations = allocations_in(|| {
        for _ in 0..MEASURED {
            t.step();
        }
    });
    assert_eq!(
        allocations, 0,
        "allocations in the steady-state tunnel loop"
    );
    let steps = 100 + MEASURED;
    assert_eq!(t.opened, steps);
    assert_eq!(
        t.replayed,
        steps / 7 - steps / 70,
        "one per 7th step not held back"
    );
    assert_eq!(t.forged, t.replayed);
    assert_eq!(t.chunk_bytes, steps * CHUNK_BYTES as u64);
    assert!(t.chunks.is_at_boundary());
}
