//! Continuity counter checking per ISO/IEC 13818-1 2.4.3.3 (and ETSI TR 101 290 1.4).
//!
//! The rules: the 4-bit CC increments on every packet of a PID that carries a payload and
//! stays put on adaptation-only packets; a packet may be sent twice in a row (one duplicate,
//! same CC and content); a packet whose adaptation field sets discontinuity_indicator starts
//! a new count. The null PID carries no continuity. The first packet seen on a PID only sets
//! the baseline.

use super::packet::NULL_PID;

/// What the CC of one packet says about its place in the PID's sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The next packet (or the first one, or one after a signalled discontinuity).
    InOrder,
    /// A repeat of the previous packet: its payload was already seen and must not be used
    /// twice (a PSI section would be assembled with a copy of itself).
    Duplicate,
    /// Packets were lost or reordered before this one. It is the new baseline.
    Error,
}

/// Per-PID state in one byte: 0 is "never seen".
const SEEN: u8 = 0x80;
/// The previous packet was already a duplicate; another repeat is an error.
const DUP: u8 = 0x40;

/// CC state for all 8192 PIDs, allocated once (8 KiB).
pub struct ContinuityTracker {
    state: Box<[u8; 8192]>,
}

impl Default for ContinuityTracker {
    fn default() -> Self {
        Self::new()
    }
}

impl ContinuityTracker {
    pub fn new() -> Self {
        ContinuityTracker {
            state: Box::new([0; 8192]),
        }
    }

    /// Judge one packet. `pid` is masked to 13 bits, so any value is safe.
    pub fn check(&mut self, pid: u16, cc: u8, has_payload: bool, discontinuity: bool) -> Verdict {
        if pid & 0x1FFF == NULL_PID {
            return Verdict::InOrder;
        }
        let slot = &mut self.state[usize::from(pid & 0x1FFF)];
        let cc = cc & 0x0F;
        let prev = *slot;
        if prev & SEEN == 0 || discontinuity {
            *slot = SEEN | cc;
            return Verdict::InOrder;
        }
        let last = prev & 0x0F;
        if !has_payload {
            // Adaptation-only packets repeat the CC of the last payload packet.
            if cc == last {
                return Verdict::InOrder;
            }
            *slot = SEEN | cc;
            return Verdict::Error;
        }
        if cc == (last + 1) & 0x0F {
            *slot = SEEN | cc;
            Verdict::InOrder
        } else if cc == last && prev & DUP == 0 {
            *slot = prev | DUP;
            Verdict::Duplicate
        } else {
            *slot = SEEN | cc;
            Verdict::Error
        }
    }

    /// Forget everything: the next packet of every PID is a new baseline.
    pub fn reset(&mut self) {
        self.state.fill(0);
    }
}

#[cfg(test)]
mod tests {
    use super::Verdict::*;
    use super::*;

    fn run(t: &mut ContinuityTracker, pid: u16, seq: &[(u8, bool, bool)]) -> Vec<Verdict> {
        seq.iter()
            .map(|&(cc, payload, disc)| t.check(pid, cc, payload, disc))
            .collect()
    }

    #[test]
    fn in_order_with_wrap() {
        let mut t = ContinuityTracker::new();
        let seq: Vec<_> = (0..40u8).map(|i| ((i + 10) & 0x0F, true, false)).collect();
        assert!(run(&mut t, 0x100, &seq).iter().all(|&v| v == InOrder));
    }

    #[test]
    fn first_packet_is_baseline() {
        let mut t = ContinuityTracker::new();
        assert_eq!(t.check(0x100, 7, true, false), InOrder);
        assert_eq!(
            t.check(0x101, 3, true, false),
            InOrder,
            "PIDs are independent"
        );
        assert_eq!(t.check(0x100, 8, true, false), InOrder);
    }

    #[test]
    fn gap_is_one_error_and_rebaselines() {
        let mut t = ContinuityTracker::new();
        let v = run(
            &mut t,
            0x100,
            &[
                (0, true, false),
                (1, true, false),
                (5, true, false),
                (6, true, false),
            ],
        );
        assert_eq!(v, [InOrder, InOrder, Error, InOrder]);
    }

    #[test]
    fn one_duplicate_allowed_two_is_error() {
        let mut t = ContinuityTracker::new();
        let v = run(
            &mut t,
            0x100,
            &[
                (3, true, false),
                (3, true, false),
                (4, true, false),
                (4, true, false),
                (4, true, false),
                (5, true, false),
            ],
        );
        assert_eq!(v, [InOrder, Duplicate, InOrder, Duplicate, Error, InOrder]);
    }

    #[test]
    fn adaptation_only_keeps_cc() {
        let mut t = ContinuityTracker::new();
        let v = run(
            &mut t,
            0x100,
            &[
                (3, true, false),
                (3, false, false),
                (3, false, false),
                (4, true, false),
                (9, false, false), // an AF-only packet must repeat the CC
                (10, true, false),
            ],
        );
        assert_eq!(v, [InOrder, InOrder, InOrder, InOrder, Error, InOrder]);
    }

    #[test]
    fn discontinuity_indicator_resets_expectation() {
        let mut t = ContinuityTracker::new();
        let v = run(
            &mut t,
            0x100,
            &[
                (3, true, false),
                (12, true, true),
                (13, true, false),
                (2, false, true),
            ],
        );
        assert_eq!(v, [InOrder, InOrder, InOrder, InOrder]);
        assert_eq!(t.check(0x100, 3, true, false), InOrder);
    }

    #[test]
    fn null_pid_is_ignored() {
        let mut t = ContinuityTracker::new();
        for cc in [0, 9, 9, 9, 3] {
            assert_eq!(t.check(NULL_PID, cc, true, false), InOrder);
        }
    }

    #[test]
    fn reset_forgets() {
        let mut t = ContinuityTracker::new();
        t.check(0x100, 1, true, false);
        t.reset();
        assert_eq!(t.check(0x100, 9, true, false), InOrder);
    }
}
