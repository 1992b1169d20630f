//! Splitting received datagram payloads into chunks of whole TS packets.

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
    pub fn split(&mut self, payload: &[u8], mut emit: impl FnMut(&[u8])) {
        let start = payload
            .iter()
            .position(|&b| b == SYNC_BYTE)
            .unwrap_or(payload.len());
        if start != 0 || payload.len() % PACKET_LEN != 0 {
            self.resyncs += 1;
        }
        let whole = (payload.len() - start) / PACKET_LEN * PACKET_LEN;
        self.discarded_bytes += (payload.len() - whole) as u64;
        for c in payload[start..start + whole].chunks(CHUNK_BYTES) {
            emit(c);
        }
    }

    pub fn resyncs(&self) -> u64 {
        self.resyncs
    }

    pub fn discarded_bytes(&self) -> u64 {
        self.discarded_bytes
    }
}
