//! Throughput of the TS hot path, in packets per second. Plain `Instant` timing, no harness:
//! `cargo bench --bench ring`. Each figure is the best of a few runs, because the target and
//! the build machines are shared and a single run picks up other people's load.

use std::hint::black_box;
use std::time::{Duration, Instant};

use quoll::ts::analyzer::TsAnalyzer;
use quoll::ts::chunk::Chunker;
use quoll::ts::packet::PACKET_LEN;
use quoll::ts::ring::{CHUNK_BYTES, CHUNK_PACKETS, Read, Ring};
use quoll::ts::synth::StreamGen;

const RUNS: usize = 5;
const RING_CAPACITY: usize = 1024;
/// Chunks pushed per ring run (x7 packets).
const RING_CHUNKS: usize = 200_000;
/// Datagrams in the pre-generated stream for the chunker/analyzer runs.
const DATAGRAMS: usize = 20_000;

/// Best packets/s over `RUNS` runs of `f`, which returns how many packets it handled.
fn best(mut f: impl FnMut() -> u64) -> f64 {
    (0..RUNS)
        .map(|_| {
            let t = Instant::now();
            let packets = f();
            packets as f64 / t.elapsed().max(Duration::from_nanos(1)).as_secs_f64()
        })
        .fold(0.0, f64::max)
}

/// One writer, `readers` readers each reading every chunk in place and touching its bytes.
fn ring(readers: usize) -> f64 {
    let mut chunk = [0u8; CHUNK_BYTES];
    StreamGen::new().fill(&mut chunk);
    best(|| {
        let mut ring = Ring::new(RING_CAPACITY);
        let mut rs: Vec<_> = (0..readers).map(|_| ring.reader()).collect();
        let mut acc = 0u8;
        for i in 0..RING_CHUNKS {
            chunk[1] = i as u8;
            ring.push(&chunk, i as u64);
            for r in &mut rs {
                while let Read::Chunk(c) = ring.read(r) {
                    // Read the first and the last byte so the slot's data is really fetched.
                    acc ^= c.data[0] ^ c.data[c.data.len() - 1];
                }
            }
        }
        black_box(acc);
        ring.packets_written()
    })
}

fn datagrams(misaligned: bool) -> Vec<Vec<u8>> {
    let mut g = StreamGen::new();
    (0..DATAGRAMS)
        .map(|i| {
            let mut d = vec![0u8; CHUNK_BYTES];
            g.fill(&mut d);
            if misaligned && i % 10 == 0 {
                // Garbage in front and a truncated tail: the resync path.
                d.splice(0..0, [0x47, 1, 2, 3, 0x47]);
                d.truncate(d.len() - 100);
            }
            d
        })
        .collect()
}

fn chunker(ds: &[Vec<u8>]) -> f64 {
    best(|| {
        let mut c = Chunker::new();
        let mut n = 0u64;
        for d in ds {
            c.split(d, |x| n += (x.len() / PACKET_LEN) as u64);
        }
        black_box(n)
    })
}

fn analyzer(ds: &[Vec<u8>]) -> f64 {
    best(|| {
        let mut a = TsAnalyzer::new();
        for d in ds {
            a.feed(d);
        }
        black_box(a.info().packets)
    })
}

fn chunker_analyzer(ds: &[Vec<u8>]) -> f64 {
    best(|| {
        let mut c = Chunker::new();
        let mut a = TsAnalyzer::new();
        for d in ds {
            c.split(d, |x| a.feed(x));
        }
        black_box(a.info().packets)
    })
}

/// The whole per-flow path: chunker -> ring -> 4 readers, each with its own analyzer.
fn full_path(ds: &[Vec<u8>]) -> f64 {
    best(|| {
        let mut c = Chunker::new();
        let mut ring = Ring::new(RING_CAPACITY);
        let mut rs: Vec<_> = (0..4).map(|_| (ring.reader(), TsAnalyzer::new())).collect();
        for d in ds {
            c.split(d, |x| ring.push(x, 0));
            for (r, a) in &mut rs {
                while let Read::Chunk(ch) = ring.read(r) {
                    a.feed(ch.data);
                }
            }
        }
        black_box(rs[0].1.info().packets);
        ring.packets_written()
    })
}

fn row(name: &str, pps: f64) {
    // Mbit/s of TS: what a flow of that packet rate carries.
    let mbps = pps * (PACKET_LEN * 8) as f64 / 1e6;
    println!("| {name:<40} | {:>14.0} | {:>10.0} |", pps, mbps);
}

fn main() {
    println!(
        "ring: capacity {RING_CAPACITY} chunks of {CHUNK_PACKETS} packets; best of {RUNS} runs"
    );
    println!(
        "| {:<40} | {:>14} | {:>10} |",
        "case", "packets/s", "TS Mbit/s"
    );
    println!("|{:-<42}|{:-<16}|{:-<12}|", "", "", "");
    for readers in [1, 4, 16] {
        row(&format!("ring push + {readers} reader(s)"), ring(readers));
    }
    let aligned = datagrams(false);
    let misaligned = datagrams(true);
    row("chunker, aligned 7-packet datagrams", chunker(&aligned));
    row("chunker, 10% datagrams need resync", chunker(&misaligned));
    row("analyzer feed", analyzer(&aligned));
    row("chunker + analyzer", chunker_analyzer(&aligned));
    row(
        "chunker -> ring -> 4 readers + analyzers",
        full_path(&aligned),
    );
}
