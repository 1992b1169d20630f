//! SMPTE 2022-7 style hitless merge of two SRT legs carrying the same stream. Sans-IO: fed
//! datagrams, leg events and the time; says what to forward and what to raise.
//!
//! - **RTP payload** (`V=2`, TS after the header): merged by RTP sequence number. A packet is
//!   forwarded if it is ahead of the last one forwarded (16-bit wrap-around); anything else
//!   is a duplicate or too late and is dropped, so the output never goes backwards.
//! - **Raw TS** (the usual SRT payload, 7 x 188 bytes): there is no sequence number, so a
//!   datagram is dropped when the *other* leg already delivered an identical one within the
//!   window. Each forwarded datagram gives the other leg one "credit" for that content; the
//!   other leg's first identical datagram uses it up. So content that legitimately repeats
//!   (a datagram of seven null packets) is forwarded as often as the leading leg sends it,
//!   and never dropped because the same leg sent it before.
//!
//! Memory is bounded: the raw-TS window holds at most `capacity` datagrams (hash and time,
//! no payload), and entries older than the window are forgotten. Legs that drift apart by
//! more than the window produce duplicates rather than losses.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::time::{Duration, Instant};

use crate::rtp;
use crate::ts::packet::PACKET_LEN;

/// What to do with an offered datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Forward it. For RTP, `payload` is the TS part (offset, length) after the header.
    Forward { offset: usize, len: usize },
    /// The other leg (or, for RTP, either leg) already delivered it.
    Duplicate,
    /// RTP only: older than what was already forwarded.
    Late,
    /// Neither whole TS packets nor RTP carrying them.
    Malformed,
}

/// Counters of the merge, cumulative.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MergeStats {
    pub offered: [u64; 2],
    pub forwarded: [u64; 2],
    pub duplicates: u64,
    pub late: u64,
    pub malformed: u64,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    hash: u64,
    /// The leg that forwarded it: the credit is for the other one.
    leg: u8,
    at: Instant,
    /// Index of the credit it issued.
    credit: u64,
}

/// Keys are already hashes: no need to hash them again.
#[derive(Default)]
struct IdentityHasher(u64);

impl Hasher for IdentityHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// Credits for one content hash, per leg that may drop: issued when the other leg forwards
/// the content, used when this leg drops a copy. Credits are used and expire oldest first,
/// so expiring a credit that was already used must not take a newer one: each window entry
/// remembers the index of the credit it issued.
#[derive(Debug, Default, Clone, Copy)]
struct Credit {
    issued: [u64; 2],
    used: [u64; 2],
    /// Window entries that refer to this hash; the hash is forgotten at 0.
    live: u32,
}

pub struct Merge {
    window: Duration,
    capacity: usize,
    /// Forwarded raw-TS datagrams in arrival order.
    recent: VecDeque<Entry>,
    credits: HashMap<u64, Credit, BuildHasherDefault<IdentityHasher>>,
    /// RTP: last sequence number forwarded.
    last_seq: Option<u16>,
    /// RTP: consecutive packets far behind `last_seq` (a restarted sender), to resync.
    far_behind: u32,
    stats: MergeStats,
}

/// A sender restart makes every packet look "behind": after this many in a row, follow it.
const RTP_RESYNC_AFTER: u32 = 64;
/// "Far" behind: more than this many sequence numbers.
const RTP_FAR: u16 = 1024;

impl Merge {
    /// `window`: how long a forwarded raw-TS datagram is remembered (at least the legs'
    /// skew); `capacity`: at most that many are remembered, whatever the rate.
    pub fn new(window: Duration, capacity: usize) -> Self {
        let capacity = capacity.max(16);
        let mut credits = HashMap::default();
        credits.reserve(capacity);
        Merge {
            window,
            capacity,
            recent: VecDeque::with_capacity(capacity),
            credits,
            last_seq: None,
            far_behind: 0,
            stats: MergeStats::default(),
        }
    }

    pub fn stats(&self) -> MergeStats {
        self.stats
    }

    /// Offer a datagram from `leg` (0 or 1) at `now`.
    pub fn offer(&mut self, leg: usize, now: Instant, datagram: &[u8]) -> Verdict {
        let leg = leg.min(1);
        self.stats.offered[leg] += 1;
        let v = if datagram.first() == Some(&0x47) && datagram.len().is_multiple_of(PACKET_LEN) {
            self.offer_ts(leg, now, datagram)
        } else {
            match rtp::parse(datagram) {
                Ok(h) if h.payload_len > 0 && h.payload_len.is_multiple_of(PACKET_LEN) => {
                    self.offer_rtp(h.seq, h.payload_offset, h.payload_len)
                }
                _ => Verdict::Malformed,
            }
        };
        match v {
            Verdict::Forward { .. } => self.stats.forwarded[leg] += 1,
            Verdict::Duplicate => self.stats.duplicates += 1,
            Verdict::Late => self.stats.late += 1,
            Verdict::Malformed => self.stats.malformed += 1,
        }
        v
    }

    fn offer_rtp(&mut self, seq: u16, offset: usize, len: usize) -> Verdict {
        let forward = Verdict::Forward { offset, len };
        let Some(last) = self.last_seq else {
            self.last_seq = Some(seq);
            return forward;
        };
        let ahead = seq.wrapping_sub(last);
        if ahead != 0 && ahead < 0x8000 {
            self.last_seq = Some(seq);
            self.far_behind = 0;
            return forward;
        }
        if ahead == 0 {
            return Verdict::Duplicate;
        }
        if last.wrapping_sub(seq) > RTP_FAR {
            self.far_behind += 1;
            if self.far_behind >= RTP_RESYNC_AFTER {
                self.last_seq = Some(seq);
                self.far_behind = 0;
                return forward;
            }
        }
        Verdict::Late
    }

    fn offer_ts(&mut self, leg: usize, now: Instant, datagram: &[u8]) -> Verdict {
        self.expire(now);
        let h = fnv1a(datagram);
        let other = 1 - leg;
        if let Some(c) = self.credits.get_mut(&h)
            && c.used[leg] < c.issued[leg]
        {
            c.used[leg] += 1;
            return Verdict::Duplicate;
        }
        if self.recent.len() == self.capacity {
            self.forget_oldest();
        }
        let c = self.credits.entry(h).or_default();
        let credit = c.issued[other];
        c.issued[other] += 1;
        c.live += 1;
        self.recent.push_back(Entry {
            hash: h,
            leg: leg as u8,
            at: now,
            credit,
        });
        Verdict::Forward {
            offset: 0,
            len: datagram.len(),
        }
    }

    fn expire(&mut self, now: Instant) {
        while let Some(e) = self.recent.front() {
            if now.saturating_duration_since(e.at) <= self.window {
                break;
            }
            self.forget_oldest();
        }
    }

    /// Forgets the oldest forwarded datagram: its credit, if still unused, expires.
    fn forget_oldest(&mut self) {
        if let Some(e) = self.recent.pop_front() {
            let other = 1 - usize::from(e.leg);
            if let Some(c) = self.credits.get_mut(&e.hash) {
                // Credits are used oldest first: if this one is unused, so is none before it.
                c.used[other] = c.used[other].max(e.credit + 1);
                c.live -= 1;
                if c.live == 0 {
                    self.credits.remove(&e.hash);
                }
            }
        }
    }

    /// Raw-TS datagrams currently remembered.
    pub fn remembered(&self) -> usize {
        self.recent.len()
    }
}

/// FNV-1a, 64 bit: fast enough for 1316 bytes per datagram, and a collision would only drop
/// one datagram that the other leg then has to have sent too.
fn fnv1a(d: &[u8]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for &b in d {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// What the leg watch says to raise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LegEvent {
    /// Leg 1 or 2 (numbered as in the events) stopped receiving.
    LegLost(u8),
    /// Neither leg receives.
    BothLost,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LegState {
    /// Never received since start.
    Idle,
    Up(Instant),
    Lost,
}

/// Watches both legs: a leg that was receiving and has been silent for `timeout` (or whose
/// connection dropped) is lost. Each transition is reported once; "both lost" once until a
/// leg receives again.
#[derive(Debug, Clone)]
pub struct LegWatch {
    timeout: Duration,
    legs: [LegState; 2],
    both_reported: bool,
}

impl LegWatch {
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);

    pub fn new(timeout: Duration) -> Self {
        LegWatch {
            timeout,
            legs: [LegState::Idle; 2],
            both_reported: false,
        }
    }

    /// Data arrived on `leg` (0 or 1). Cheap: called per datagram.
    pub fn on_data(&mut self, leg: usize, now: Instant) {
        self.legs[leg.min(1)] = LegState::Up(now);
        self.both_reported = false;
    }

    /// The leg's connection dropped.
    pub fn on_disconnect(&mut self, leg: usize, now: Instant, out: &mut Vec<LegEvent>) {
        let leg = leg.min(1);
        if let LegState::Up(_) = self.legs[leg] {
            self.legs[leg] = LegState::Lost;
            out.push(LegEvent::LegLost(leg as u8 + 1));
        }
        self.check_both(now, out);
    }

    /// Periodic check (e.g. every 100 ms).
    pub fn tick(&mut self, now: Instant, out: &mut Vec<LegEvent>) {
        for (i, l) in self.legs.iter_mut().enumerate() {
            if let LegState::Up(t) = *l
                && now.saturating_duration_since(t) >= self.timeout
            {
                *l = LegState::Lost;
                out.push(LegEvent::LegLost(i as u8 + 1));
            }
        }
        self.check_both(now, out);
    }

    fn check_both(&mut self, _now: Instant, out: &mut Vec<LegEvent>) {
        let none_up = self.legs.iter().all(|l| !matches!(l, LegState::Up(_)));
        let any_was_up = self.legs.contains(&LegState::Lost);
        if none_up && any_was_up && !self.both_reported {
            self.both_reported = true;
            out.push(LegEvent::BothLost);
        }
    }

    pub fn is_up(&self, leg: usize) -> bool {
        matches!(self.legs[leg.min(1)], LegState::Up(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A raw-TS datagram whose content is unique to `n` (7 packets, PID 0x100, CC = n).
    fn ts(n: u32) -> Vec<u8> {
        let mut d = vec![0u8; 7 * PACKET_LEN];
        for (i, p) in d.chunks_mut(PACKET_LEN).enumerate() {
            p[0] = 0x47;
            p[1] = 0x01;
            p[2] = 0x00;
            p[3] = 0x10 | ((n as usize * 7 + i) & 0x0F) as u8;
            p[4..8].copy_from_slice(&n.to_be_bytes());
        }
        d
    }

    fn null_datagram() -> Vec<u8> {
        let mut d = vec![0xFFu8; 7 * PACKET_LEN];
        for p in d.chunks_mut(PACKET_LEN) {
            p[..4].copy_from_slice(&[0x47, 0x1F, 0xFF, 0x10]);
        }
        d
    }

    fn rtp_pkt(seq: u16) -> Vec<u8> {
        let mut d = vec![0u8; 12];
        rtp::write_header((&mut d[..12]).try_into().unwrap(), seq, 0, 1);
        d.extend(ts(u32::from(seq)));
        d
    }

    struct Clock(Instant);
    impl Clock {
        fn t(&self, ms: u64) -> Instant {
            self.0 + Duration::from_millis(ms)
        }
    }

    fn forwarded(m: &mut Merge, leg: usize, now: Instant, d: &[u8]) -> bool {
        matches!(m.offer(leg, now, d), Verdict::Forward { .. })
    }

    #[test]
    fn ts_duplicates_from_the_other_leg_are_dropped_in_either_order() {
        let c = Clock(Instant::now());
        let mut m = Merge::new(Duration::from_secs(2), 1024);
        let mut out = Vec::new();
        // Leg 0 leads by 3 datagrams, then leg 1 overtakes (reordering between legs).
        let order: Vec<(usize, u32)> = vec![
            (0, 0),
            (0, 1),
            (0, 2),
            (1, 0),
            (0, 3),
            (1, 1),
            (1, 2),
            (1, 3),
            (1, 4),
            (1, 5),
            (0, 4),
            (0, 5),
            (1, 6),
            (0, 6),
        ];
        for (i, (leg, n)) in order.into_iter().enumerate() {
            if forwarded(&mut m, leg, c.t(i as u64), &ts(n)) {
                out.push(n);
            }
        }
        assert_eq!(out, (0..=6).collect::<Vec<_>>());
        assert_eq!(m.stats().duplicates, 7);
    }

    #[test]
    fn repeated_content_on_one_leg_is_not_a_duplicate() {
        let c = Clock(Instant::now());
        let mut m = Merge::new(Duration::from_secs(2), 1024);
        let null = null_datagram();
        // Leg 0 sends three identical stuffing datagrams: all three go out.
        for i in 0..3 {
            assert!(forwarded(&mut m, 0, c.t(i), &null));
        }
        // Leg 1's three copies are the duplicates; a fourth is new content.
        for i in 0..3 {
            assert!(!forwarded(&mut m, 1, c.t(10 + i), &null));
        }
        assert!(forwarded(&mut m, 1, c.t(20), &null));
    }

    #[test]
    fn ts_window_forgets_old_datagrams_and_memory_stays_bounded() {
        let c = Clock(Instant::now());
        let mut m = Merge::new(Duration::from_millis(500), 64);
        for n in 0..10_000u32 {
            assert!(forwarded(&mut m, 0, c.t(u64::from(n)), &ts(n)));
            assert!(m.remembered() <= 64);
            assert!(m.credits.len() <= 64);
            assert!(m.credits.capacity() < 256, "no growth past the reservation");
        }
        // Recent and within capacity: still a duplicate.
        assert!(!forwarded(&mut m, 1, c.t(10_000), &ts(9_999)));
        // Beyond the capacity (and the window): forgotten, so forwarded again.
        assert!(forwarded(&mut m, 1, c.t(10_000), &ts(5)));
        assert!(forwarded(&mut m, 1, c.t(20_000), &ts(9_998)));
    }

    #[test]
    fn one_leg_dying_loses_nothing() {
        let c = Clock(Instant::now());
        let mut m = Merge::new(Duration::from_secs(2), 4096);
        let mut out = Vec::new();
        // Leg 0 leads by 5 ms; it dies after datagram 499. Leg 1 carries on.
        for n in 0..1000u32 {
            let t = u64::from(n) * 10;
            if n < 500 && forwarded(&mut m, 0, c.t(t), &ts(n)) {
                out.push(n);
            }
            if forwarded(&mut m, 1, c.t(t + 5), &ts(n)) {
                out.push(n);
            }
        }
        assert_eq!(out, (0..1000).collect::<Vec<_>>());
    }

    #[test]
    fn rtp_merges_by_sequence_number_across_wrap() {
        let mut m = Merge::new(Duration::from_secs(1), 64);
        let now = Instant::now();
        let mut out = Vec::new();
        let seqs: Vec<(usize, u16)> = vec![
            (0, 65533),
            (1, 65533),
            (1, 65534),
            (0, 65534),
            (0, 65535),
            (0, 0),
            (1, 65535),
            (1, 0),
            (1, 1),
            (0, 1),
            (0, 3),
            (1, 2),
            (1, 3),
            (1, 4),
        ];
        for (leg, s) in seqs {
            if let Verdict::Forward { offset, len } = m.offer(leg, now, &rtp_pkt(s)) {
                assert_eq!((offset, len), (12, 7 * PACKET_LEN));
                out.push(s);
            }
        }
        // 2 arrived after 3 had gone out: late, dropped (the output never goes backwards).
        // So is leg 1's 65535 after 0: without a per-packet record a copy that comes after
        // a newer packet counts as late, not as a duplicate.
        assert_eq!(out, [65533, 65534, 65535, 0, 1, 3, 4]);
        assert_eq!(m.stats().late, 2);
        assert_eq!(m.stats().duplicates, 5);
    }

    #[test]
    fn rtp_follows_a_restarted_sender() {
        let mut m = Merge::new(Duration::from_secs(1), 64);
        let now = Instant::now();
        for s in 30_000..30_100u16 {
            assert!(forwarded(&mut m, 0, now, &rtp_pkt(s)));
        }
        let mut got = 0;
        for s in 100..300u16 {
            if forwarded(&mut m, 1, now, &rtp_pkt(s)) {
                got += 1;
            }
        }
        assert!(got >= 200 - RTP_RESYNC_AFTER as usize, "{got}");
    }

    #[test]
    fn hostile_datagrams_are_malformed_not_panics() {
        let mut m = Merge::new(Duration::from_secs(1), 64);
        let now = Instant::now();
        for d in [
            &[][..],
            &[0x47][..],
            &[0x80, 33, 0, 1][..],
            &[0x80; 13][..],
            &[0u8; 188][..],
        ] {
            assert_eq!(m.offer(0, now, d), Verdict::Malformed);
        }
    }

    #[test]
    fn leg_watch_reports_each_loss_once_and_both_once() {
        let c = Clock(Instant::now());
        let mut w = LegWatch::new(Duration::from_secs(1));
        let mut ev = Vec::new();
        w.tick(c.t(5_000), &mut ev);
        assert!(ev.is_empty(), "nothing before any data");
        for ms in (0..2_000).step_by(10) {
            w.on_data(0, c.t(ms));
            w.on_data(1, c.t(ms));
            w.tick(c.t(ms), &mut ev);
        }
        assert!(ev.is_empty());
        // Leg 2 goes silent at 2 s; leg 1 keeps going.
        for ms in (2_000..4_000).step_by(10) {
            w.on_data(0, c.t(ms));
            w.tick(c.t(ms), &mut ev);
        }
        assert_eq!(ev, [LegEvent::LegLost(2)]);
        ev.clear();
        // Leg 1's connection drops: both lost, once.
        w.on_disconnect(0, c.t(4_000), &mut ev);
        w.tick(c.t(4_500), &mut ev);
        w.on_disconnect(0, c.t(4_600), &mut ev);
        assert_eq!(ev, [LegEvent::LegLost(1), LegEvent::BothLost]);
        ev.clear();
        // Leg 2 comes back, then dies again: a new cycle.
        w.on_data(1, c.t(6_000));
        w.tick(c.t(6_100), &mut ev);
        assert!(ev.is_empty());
        w.tick(c.t(7_100), &mut ev);
        assert_eq!(ev, [LegEvent::LegLost(2), LegEvent::BothLost]);
    }

    #[allow(clippy::needless_range_loop)]
    mod prop {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            /// Two legs carry the same datagrams, each with its own constant delay (the
            /// path difference, up to 300 ms, so either leg may lead) plus jitter, and leg
            /// `dies` stops at `cut`. Stuffing datagrams with identical content are mixed in.
            /// The merge forwards every datagram exactly once, in the source order.
            #[test]
            fn every_datagram_exactly_once_in_order(
                n in 1usize..400,
                skew in (0u64..300, 0u64..300),
                jitter in proptest::collection::vec((0u64..5, 0u64..5), 400),
                dies in 0usize..2,
                cut in 0usize..400,
                null_every in 2usize..20,
            ) {
                let t0 = Instant::now();
                let data: Vec<Vec<u8>> = (0..n)
                    .map(|i| if i % null_every == 0 { null_datagram() } else { ts(i as u32) })
                    .collect();
                // (time, leg, index); each leg delivers in order (SRT does).
                let mut arrivals = Vec::new();
                let mut last = [0u64; 2];
                for i in 0..n {
                    let base = i as u64 * 10;
                    for leg in 0..2 {
                        if leg == dies && i >= cut {
                            continue;
                        }
                        let d = if leg == 0 { skew.0 + jitter[i].0 } else { skew.1 + jitter[i].1 };
                        let t = (base + d).max(last[leg]);
                        last[leg] = t;
                        arrivals.push((t, leg, i));
                    }
                }
                arrivals.sort_by_key(|&(t, leg, i)| (t, i, leg));
                let mut m = Merge::new(Duration::from_secs(2), 8192);
                let mut out = Vec::new();
                for (t, leg, i) in arrivals {
                    if forwarded(&mut m, leg, t0 + Duration::from_millis(t), &data[i]) {
                        out.push(data[i].clone());
                    }
                }
                prop_assert_eq!(out.len(), n);
                prop_assert!(out == data, "content or order differs");
            }

            #[test]
            fn arbitrary_bytes_never_panic(
                d in proptest::collection::vec(any::<u8>(), 0..1500),
                leg in 0usize..4,
            ) {
                let mut m = Merge::new(Duration::from_secs(1), 16);
                let _ = m.offer(leg, Instant::now(), &d);
                let mut w = LegWatch::new(Duration::from_secs(1));
                let mut ev = Vec::new();
                w.on_disconnect(leg, Instant::now(), &mut ev);
            }
        }
    }
}
