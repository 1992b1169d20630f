//! Splitting received datagram payloads into chunks of whole TS packets.
//!
//! UDP datagrams are self-contained: a sender never splits a packet across two, so a
//! partial packet is corruption and nothing is carried from one datagram to the next. The
//! usual datagram is 7 aligned packets; that case costs one sync-byte check per packet. Only
//! when it fails do we search, and a lone 0x47 is not trusted as sync (it is common in
//! payload): the sync byte must repeat one and two packets on, where those bytes exist.

use super::packet::{PACKET_LEN, SYNC_BYTE};
use super::ring::CHUNK_BYTES;

#[derive(Debug, Default)]
pub struct Chunker {
    resyncs: u64,
    discarded_bytes: u64,
}

impl Chunker {
    pub fn new() -> Self {
        Self::default()
    }

    /// Call `emit` with consecutive runs of at most 7 whole packets found in `payload`.
    ///
    /// Every byte of `payload` is either emitted once or counted in [`discarded_bytes`];
    /// each run of discarded bytes counts one resync.
    ///
    /// [`discarded_bytes`]: Chunker::discarded_bytes
    pub fn split(&mut self, payload: &[u8], mut emit: impl FnMut(&[u8])) {
        if payload.len().is_multiple_of(PACKET_LEN)
            && payload.iter().step_by(PACKET_LEN).all(|&b| b == SYNC_BYTE)
        {
            for c in payload.chunks(CHUNK_BYTES) {
                emit(c);
            }
            return;
        }
        self.split_slow(payload, &mut emit);
    }

    /// The datagram is not whole aligned packets: walk it, emitting packets while the sync
    /// byte keeps appearing every 188 bytes and searching again when it does not.
    fn split_slow(&mut self, payload: &[u8], emit: &mut impl FnMut(&[u8])) {
        let len = payload.len();
        let mut pos = 0;
        // The pending run of packets: payload[run_start..pos], at most 7 packets.
        let mut run_start = 0;
        // Once the sync byte has been confirmed, one packet on is where the next must be, so
        // a single check per packet is enough until it fails.
        let mut locked = false;
        while pos < len {
            if pos + PACKET_LEN <= len
                && payload[pos] == SYNC_BYTE
                && (locked || confirmed(payload, pos))
            {
                locked = true;
                pos += PACKET_LEN;
                if pos - run_start == CHUNK_BYTES {
                    emit(&payload[run_start..pos]);
                    run_start = pos;
                }
                continue;
            }
            if pos > run_start {
                emit(&payload[run_start..pos]);
            }
            let next = find_sync(payload, pos).unwrap_or(len);
            self.resyncs += 1;
            self.discarded_bytes += (next - pos) as u64;
            pos = next;
            run_start = pos;
            // find_sync returns only confirmed offsets.
            locked = true;
        }
        if pos > run_start {
            emit(&payload[run_start..pos]);
        }
    }

    pub fn resyncs(&self) -> u64 {
        self.resyncs
    }

    pub fn discarded_bytes(&self) -> u64 {
        self.discarded_bytes
    }
}

/// A sync byte at `at` that also appears one and two packets on, where the payload reaches
/// that far. A trailing lone packet (nothing after it) is accepted on its own sync byte.
fn confirmed(payload: &[u8], at: usize) -> bool {
    payload.get(at) == Some(&SYNC_BYTE)
        && at + PACKET_LEN <= payload.len()
        && payload.get(at + PACKET_LEN).is_none_or(|&b| b == SYNC_BYTE)
        && payload
            .get(at + 2 * PACKET_LEN)
            .is_none_or(|&b| b == SYNC_BYTE)
}

/// The first confirmed sync offset at or after `from`.
fn find_sync(payload: &[u8], from: usize) -> Option<usize> {
    let last = payload.len().checked_sub(PACKET_LEN)?;
    let mut at = from;
    while at <= last {
        let rel = payload[at..=last].iter().position(|&b| b == SYNC_BYTE)?;
        at += rel;
        if confirmed(payload, at) {
            return Some(at);
        }
        at += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` packets whose second byte is their index. Every payload holds stray 0x47 bytes
    /// (at a different offset in each packet), which a first-0x47 search would lock onto.
    fn packets(n: usize) -> Vec<u8> {
        let mut v = vec![0u8; n * PACKET_LEN];
        for (i, p) in v.chunks_mut(PACKET_LEN).enumerate() {
            for (j, b) in p.iter_mut().enumerate() {
                *b = (j * 31 + i * 17) as u8 & 0x3F;
            }
            p[0] = SYNC_BYTE;
            p[1] = i as u8;
            p[5 + i % 100] = SYNC_BYTE;
            p[120] = SYNC_BYTE;
        }
        v
    }

    fn run(c: &mut Chunker, d: &[u8]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        c.split(d, |x| out.push(x.to_vec()));
        out
    }

    fn ids(chunks: &[Vec<u8>]) -> Vec<Vec<u8>> {
        chunks
            .iter()
            .map(|c| c.chunks(PACKET_LEN).map(|p| p[1]).collect())
            .collect()
    }

    #[test]
    fn aligned_datagram_is_the_fast_path() {
        let mut c = Chunker::new();
        let out = run(&mut c, &packets(7));
        assert_eq!(ids(&out), vec![(0..7).collect::<Vec<u8>>()]);
        let out = run(&mut c, &packets(10));
        assert_eq!(
            ids(&out),
            vec![(0..7).collect::<Vec<u8>>(), (7..10).collect()]
        );
        assert_eq!((c.resyncs(), c.discarded_bytes()), (0, 0));
        assert!(run(&mut c, &[]).is_empty());
        assert_eq!(c.resyncs(), 0);
    }

    #[test]
    fn leading_garbage_with_0x47_in_it_is_skipped() {
        let mut c = Chunker::new();
        // Garbage that contains a sync byte not repeated 188 on.
        let mut d = vec![0u8, SYNC_BYTE, 1, 2, 3];
        d.extend_from_slice(&packets(3));
        let out = run(&mut c, &d);
        assert_eq!(ids(&out), vec![vec![0, 1, 2]]);
        assert_eq!((c.resyncs(), c.discarded_bytes()), (1, 5));
    }

    #[test]
    fn trailing_partial_packet_is_discarded_not_carried() {
        let mut c = Chunker::new();
        let mut d = packets(2);
        d.extend_from_slice(&[SYNC_BYTE; 50]);
        let out = run(&mut c, &d);
        assert_eq!(ids(&out), vec![vec![0, 1]]);
        assert_eq!((c.resyncs(), c.discarded_bytes()), (1, 50));
        // The next datagram starts clean: nothing of the 50 bytes is prepended.
        let out = run(&mut c, &packets(1));
        assert_eq!(out, vec![packets(1)]);
    }

    #[test]
    fn mid_datagram_break_resyncs_and_keeps_both_sides() {
        let mut c = Chunker::new();
        let p = packets(6);
        let mut d = p[..3 * PACKET_LEN].to_vec();
        d.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, SYNC_BYTE, 12, 13]);
        d.extend_from_slice(&p[3 * PACKET_LEN..]);
        let out = run(&mut c, &d);
        assert_eq!(ids(&out), vec![vec![0, 1, 2], vec![3, 4, 5]]);
        assert_eq!((c.resyncs(), c.discarded_bytes()), (1, 13));
    }

    #[test]
    fn long_misaligned_datagram_emits_runs_of_seven() {
        let mut c = Chunker::new();
        let mut d = vec![9u8; 3];
        d.extend_from_slice(&packets(16));
        let out = run(&mut c, &d);
        assert_eq!(
            out.iter().map(Vec::len).collect::<Vec<_>>(),
            [1316, 1316, 376]
        );
        assert_eq!(ids(&out)[2], vec![14, 15]);
        assert_eq!((c.resyncs(), c.discarded_bytes()), (1, 3));
    }

    #[test]
    fn lone_packet_after_garbage_is_accepted() {
        let mut c = Chunker::new();
        let mut d = vec![0u8; 20];
        d.extend_from_slice(&packets(1));
        assert_eq!(ids(&run(&mut c, &d)), vec![vec![0]]);
        assert_eq!((c.resyncs(), c.discarded_bytes()), (1, 20));
    }

    #[test]
    fn pure_garbage_is_all_discarded_once() {
        let mut c = Chunker::new();
        let d = vec![SYNC_BYTE; 100];
        assert!(run(&mut c, &d).is_empty());
        let d = [0u8, 1, 2, 3].repeat(200);
        assert!(run(&mut c, &d).is_empty());
        assert_eq!((c.resyncs(), c.discarded_bytes()), (2, 900));
    }

    #[test]
    fn unconfirmed_sync_at_start_is_not_trusted() {
        let mut c = Chunker::new();
        // A 0x47 at offset 0, but the real stream starts at 1: 0x47 is not repeated at 188.
        let mut d = vec![SYNC_BYTE];
        let mut p = packets(3);
        for x in p.chunks_mut(PACKET_LEN) {
            x[PACKET_LEN - 1] = 0; // the byte before each real sync is not 0x47
        }
        d.extend_from_slice(&p);
        assert_eq!(ids(&run(&mut c, &d)), vec![vec![0, 1, 2]]);
        assert_eq!((c.resyncs(), c.discarded_bytes()), (1, 1));
    }
}
