//! Counters shared between a flow's tasks and whoever reports them (API, manager link).
//!
//! One thread, so plain `Cell`s: the packet path bumps them without atomics or locks.

use std::cell::Cell;
use std::time::{Duration, Instant};

use serde::Serialize;

/// Bitrate over the last whole second of input, 0 once input has been silent for two.
#[derive(Debug)]
pub struct RateMeter {
    window_start: Cell<Option<Instant>>,
    window_bytes: Cell<u64>,
    last_bps: Cell<u64>,
    last_update: Cell<Option<Instant>>,
}

const WINDOW: Duration = Duration::from_secs(1);

impl Default for RateMeter {
    fn default() -> Self {
        RateMeter {
            window_start: Cell::new(None),
            window_bytes: Cell::new(0),
            last_bps: Cell::new(0),
            last_update: Cell::new(None),
        }
    }
}

impl RateMeter {
    pub fn add(&self, now: Instant, bytes: usize) {
        let start = *self.window_start.get().get_or_insert(now);
        self.window_start.set(Some(start));
        self.window_bytes
            .set(self.window_bytes.get() + bytes as u64);
        let elapsed = now.saturating_duration_since(start);
        if elapsed >= WINDOW {
            let bps = self.window_bytes.get() as u128 * 8 * 1_000_000 / elapsed.as_micros().max(1);
            self.last_bps.set(bps as u64);
            self.last_update.set(Some(now));
            self.window_start.set(Some(now));
            self.window_bytes.set(0);
        }
    }

    pub fn bps(&self, now: Instant) -> u64 {
        match self.window_start.get() {
            Some(start) if now.saturating_duration_since(start) < 2 * WINDOW => self.last_bps.get(),
            _ => 0,
        }
    }
}

/// Input-side counters.
#[derive(Debug, Default)]
pub struct InputStats {
    pub datagrams: Cell<u64>,
    pub bytes: Cell<u64>,
    pub packets: Cell<u64>,
    /// Datagrams from a source not in `allowed_sources`.
    pub filtered: Cell<u64>,
    /// Datagrams whose RTP header did not parse.
    pub malformed: Cell<u64>,
    pub rtp_lost: Cell<u64>,
    pub rtp_reordered: Cell<u64>,
    pub recv_errors: Cell<u64>,
    pub rate: RateMeter,
    /// SRT inputs only: connection state and SRT counters, refreshed about once a second.
    pub srt: Cell<Option<SrtInputSnapshot>>,
}

/// Output-side counters.
#[derive(Debug, Default)]
pub struct OutputStats {
    pub datagrams: Cell<u64>,
    pub packets: Cell<u64>,
    pub bytes: Cell<u64>,
    /// TS packets this output missed because it fell a whole ring behind.
    pub dropped: Cell<u64>,
    pub send_errors: Cell<u64>,
    /// SRT outputs only, refreshed about once a second.
    pub srt: Cell<Option<SrtOutputSnapshot>>,
    /// RTMP outputs only.
    pub rtmp: Cell<Option<RtmpOutputSnapshot>>,
}

/// What an RTMP push output adds to the output stats.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct RtmpOutputSnapshot {
    /// Publishing right now.
    pub connected: bool,
    /// Publishes started since the output started.
    pub connects: u64,
    /// Of those, the ones after the first.
    pub reconnects: u64,
    /// Attempts that did not reach a publish (refused, unreachable, timed out, TLS).
    pub failed_attempts: u64,
    /// Of those, the ones whose server certificate did not verify (trust or pin).
    pub certificate_errors: u64,
    /// Elementary streams left out: not H.264 or AAC, or a second one of a kind.
    pub unsupported_streams: u64,
    /// PES packets dropped: broken, over-long, or cut by lost TS packets.
    pub dropped_frames: u64,
}

/// One SRT connection's (or leg's) counters, from srt-tokio's statistics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct SrtLinkSnapshot {
    pub connected: bool,
    /// Connections made since the flow started.
    pub connects: u64,
    pub rtt_ms: f64,
    /// Data packets received (input) or sent (output), retransmissions included.
    pub data_packets: u64,
    /// Retransmitted packets received (input) or sent (output).
    pub retransmits: u64,
    /// Packets detected lost (input: missing on arrival; output: reported by NAK).
    pub lost: u64,
    /// Packets dropped as too late (TLPKTDROP).
    pub dropped: u64,
    /// Input only: packets that failed to decrypt.
    pub decrypt_errors: u64,
    /// Listener legs: callers refused in the handshake (wrong or missing passphrase, another
    /// key length than a configured one).
    pub rejected: u64,
}

/// What an SRT input adds to the input stats.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct SrtInputSnapshot {
    pub leg1: SrtLinkSnapshot,
    /// The redundancy leg, if configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leg2: Option<SrtLinkSnapshot>,
    /// Redundancy: datagrams dropped because the other leg delivered them first.
    pub duplicates: u64,
    /// Redundancy: datagrams for a hole already given up (too late to go out in order).
    pub late: u64,
    /// Redundancy: datagrams one leg lacked that the other supplied in time (holes filled).
    pub filled: u64,
    /// Redundancy: datagrams neither leg delivered within the window (given up).
    pub gaps: u64,
}

/// What an SRT output adds to the output stats.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct SrtOutputSnapshot {
    /// Peers fed right now.
    pub connections: u64,
    /// Connections made since the output started.
    pub connects: u64,
    /// Connections dropped as stale (no ACK while sending).
    pub stale: u64,
    /// Callers refused because `max_connections` were already fed.
    pub refused: u64,
    /// Listener: callers refused in the handshake (wrong or missing passphrase, another key
    /// length than a configured one).
    pub rejected: u64,
    /// Largest round-trip time among the current connections.
    pub rtt_ms: f64,
    /// Summed over the current connections.
    pub retransmits: u64,
    pub lost: u64,
    pub dropped: u64,
}

pub fn bump(c: &Cell<u64>, n: u64) {
    c.set(c.get().wrapping_add(n));
}

#[derive(Debug, Clone, Serialize)]
pub struct InputSnapshot {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub bitrate_bps: u64,
    pub datagrams: u64,
    pub bytes: u64,
    pub packets: u64,
    pub cc_errors: u64,
    pub resyncs: u64,
    pub discarded_bytes: u64,
    pub filtered: u64,
    pub malformed: u64,
    pub rtp_lost: u64,
    pub rtp_reordered: u64,
    pub recv_errors: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub srt: Option<SrtInputSnapshot>,
}

#[derive(Debug, Clone, Serialize)]
pub struct OutputSnapshot {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub state: &'static str,
    pub datagrams: u64,
    pub packets: u64,
    pub bytes: u64,
    pub dropped: u64,
    pub send_errors: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub srt: Option<SrtOutputSnapshot>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rtmp: Option<RtmpOutputSnapshot>,
}

impl OutputStats {
    pub fn snapshot(&self, id: &str, kind: &'static str, state: &'static str) -> OutputSnapshot {
        OutputSnapshot {
            id: id.to_owned(),
            kind,
            state,
            datagrams: self.datagrams.get(),
            packets: self.packets.get(),
            bytes: self.bytes.get(),
            dropped: self.dropped.get(),
            send_errors: self.send_errors.get(),
            srt: self.srt.get(),
            rtmp: self.rtmp.get(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_meter_reports_last_second_and_goes_quiet() {
        let t0 = Instant::now();
        let m = RateMeter::default();
        for i in 0..=100u64 {
            m.add(t0 + Duration::from_millis(i * 10), 1250); // 1250 B per 10 ms = 1 Mbit/s
        }
        let bps = m.bps(t0 + Duration::from_millis(1000));
        assert!((990_000..=1_010_000).contains(&bps), "{bps}");
        assert_eq!(m.bps(t0 + Duration::from_secs(5)), 0);
    }
}
