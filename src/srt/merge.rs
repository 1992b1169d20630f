//! SMPTE 2022-7 style hitless merge of two SRT legs carrying the same stream. Sans-IO: fed
//! datagrams (with the SRT sequence number they came with), leg events and the time; hands
//! out what to forward, in order, and counts what it dropped.
//!
//! Both payload kinds are put in one order and merged like a 2022-7 receiver does:
//!
//! - **RTP** (`V=2`, whole TS packets after the header): the RTP sequence number is the
//!   order, the same on both legs.
//! - **Raw TS** (the usual SRT payload, 7 x 188 bytes): the order is the SRT packet
//!   sequence number of each leg. The two legs are separate SRT connections with their own
//!   initial sequence numbers, so each leg's numbers are mapped onto one common index by an
//!   offset learned from content: a datagram whose bytes (FNV-1a 64) occur exactly once in
//!   what was merged recently anchors its leg. From then on every datagram of that leg has a
//!   place, whatever its content (stuffing included), and every place is checked: a
//!   datagram whose place already holds other bytes means the anchor is wrong (the leg is
//!   unaligned again and re-anchors). A leg that is not anchored yet keeps its datagrams
//!   aside for up to the window and replays them once anchored; if the other leg is not
//!   delivering (not anchored, or silent for the window), it becomes the reference itself.
//!
//! The merged order goes out without delay while it has no hole: a datagram that is the
//! next one is forwarded at once, a copy of one already forwarded is a duplicate. A datagram
//! ahead of a hole (a packet one leg lost, typically dropped as too late by SRT) is held
//! until the other leg fills the hole, or until it has waited `window`: then the hole is
//! given up (counted in `gaps`) and what is held goes out in order. Anything behind what was
//! forwarded is never sent: a copy of a forwarded datagram is a duplicate, a datagram for a
//! hole already given up is late. So the output never goes backwards and never repeats; a
//! hole in one leg costs nothing as long as the other leg delivers within the window.
//!
//! Memory is bounded: at most `MAX_AHEAD` datagrams held (references to the received
//! buffers, no copies), `RECENT` indexes and hashes remembered, `PENDING_MAX` datagrams per
//! unanchored leg.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::rtp;
use crate::ts::packet::PACKET_LEN;

/// How long a datagram ahead of a hole waits for the other leg by default: above the skew
/// of two legs with the same latency (a few ms), below what an operator notices as a stall.
/// Legs with different `latency_ms` skew by the difference: `Merge::default_window` adds it.
pub const DEFAULT_WINDOW: Duration = Duration::from_millis(100);
/// Datagrams held ahead of a hole, at most (a longer hole is given up at once).
pub const MAX_AHEAD: usize = 8192;
/// Indexes (and hashes) of forwarded datagrams remembered, to tell duplicates from late
/// ones and to anchor a leg: 8.6 s at 20 Mbit/s.
pub const RECENT: usize = 16_384;
/// Datagrams an unanchored leg keeps aside (for twice the window at most).
pub const PENDING_MAX: usize = 1024;
/// RTP: a sender restart makes every packet look far behind; after this many in a row, the
/// merge follows it.
const RTP_RESYNC_AFTER: u32 = 64;
/// "Far" behind for RTP: more than this many sequence numbers.
const RTP_FAR: u64 = 1024;
/// Raw TS: an anchored leg whose datagrams are all late, this many in a row, is placed
/// again by content.
const LATE_RUN_REANCHOR: u32 = 256;
/// Where the common index starts: room below for anything that maps before the first.
const START: u64 = 1 << 40;
const EMPTY: u64 = u64::MAX;

/// What became of an offered datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// It was the next one: `pop` hands it out (with any held ones it released).
    Forwarded,
    /// Ahead of a hole: held until the hole is filled or the window runs out.
    Held,
    /// Already forwarded or held (the other leg's copy, usually).
    Duplicate,
    /// Behind what was forwarded, for a hole already given up: dropped.
    Late,
    /// Raw TS from a leg not anchored yet: kept aside until it is.
    Unaligned,
    /// Neither whole TS packets nor RTP carrying them.
    Malformed,
}

/// Counters of the merge, cumulative.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MergeStats {
    pub offered: [u64; 2],
    /// Forwarded, by the leg whose copy went out.
    pub forwarded: [u64; 2],
    pub duplicates: u64,
    pub late: u64,
    /// Datagrams that filled a hole: the other leg had already delivered what follows.
    pub filled: u64,
    /// Datagrams neither leg delivered within the window (given up).
    pub gaps: u64,
    /// Raw-TS datagrams dropped because their leg was not anchored (startup, reconnect).
    pub unaligned: u64,
    pub malformed: u64,
    /// Re-anchorings and jumps: a leg's place did not match its content, a sender restart
    /// (RTP), a hole longer than `MAX_AHEAD`.
    pub resyncs: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Rtp,
    Ts,
}

#[derive(Debug)]
struct Held {
    data: Bytes,
    at: Instant,
    leg: u8,
    hash: u64,
}

#[derive(Debug)]
struct Pending {
    seq: u32,
    hash: u64,
    data: Bytes,
    at: Instant,
}

#[derive(Debug, Default)]
struct Leg {
    /// Raw TS: (SRT sequence number, common index) of the last datagram placed; None while
    /// the leg is not anchored.
    anchor: Option<(u32, u64)>,
    /// Raw TS, not anchored: datagrams kept aside, oldest first.
    pending: VecDeque<Pending>,
    /// When a datagram of this leg last found its place.
    last: Option<Instant>,
    /// Raw TS: late datagrams in a row from this leg.
    late_run: u32,
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

/// The result of putting a datagram at its index.
enum Placed {
    Done(Verdict),
    /// The index holds other bytes: the leg's anchor is wrong.
    Mismatch,
}

pub struct Merge {
    window: Duration,
    kind: Option<Kind>,
    /// Index of the next datagram to forward.
    next: Option<u64>,
    /// Highest index placed so far.
    top: Option<u64>,
    /// `held[i]` is index `next + i`; `held[0]` is always empty (it would have gone out).
    held: VecDeque<Option<Held>>,
    held_count: usize,
    ready: VecDeque<Bytes>,
    /// Forwarded indexes, their hashes and when they arrived (ms since `epoch`), by
    /// `index % RECENT`.
    recent: Vec<(u64, u64, u32)>,
    epoch: Option<Instant>,
    /// Raw TS: hash -> (highest index with it, how many remembered indexes have it).
    by_hash: HashMap<u64, (u64, u32), BuildHasherDefault<IdentityHasher>>,
    legs: [Leg; 2],
    far_behind: u32,
    stats: MergeStats,
}

/// Signed distance from `from` to `to` in a sequence space of `bits` bits.
fn seq_delta(to: u32, from: u32, bits: u32) -> i64 {
    let modulus = 1i64 << bits;
    let d = (i64::from(to) - i64::from(from)).rem_euclid(modulus);
    if d >= modulus / 2 { d - modulus } else { d }
}

fn offset(index: u64, delta: i64) -> u64 {
    index.wrapping_add_signed(delta)
}

impl Merge {
    /// `window`: how long a datagram ahead of a hole waits for the other leg.
    pub fn new(window: Duration) -> Self {
        Merge {
            window,
            kind: None,
            next: None,
            top: None,
            held: VecDeque::new(),
            held_count: 0,
            ready: VecDeque::new(),
            recent: vec![(EMPTY, 0, 0); RECENT],
            epoch: None,
            by_hash: HashMap::default(),
            legs: Default::default(),
            far_behind: 0,
            stats: MergeStats::default(),
        }
    }

    /// The window when none is configured: `DEFAULT_WINDOW` plus the difference of the
    /// legs' SRT latencies (the lagging leg is that much later).
    pub fn default_window(latency_ms: [u64; 2]) -> Duration {
        DEFAULT_WINDOW + Duration::from_millis(latency_ms[0].abs_diff(latency_ms[1]))
    }

    pub fn stats(&self) -> MergeStats {
        self.stats
    }

    /// Datagrams held ahead of a hole right now.
    pub fn held(&self) -> usize {
        self.held_count
    }

    /// The next datagram to forward, in order.
    pub fn pop(&mut self) -> Option<Bytes> {
        self.ready.pop_front()
    }

    /// When `tick` has something to do (a hole to give up, a leg to promote): None when
    /// nothing is held or kept aside.
    pub fn next_deadline(&self) -> Option<Instant> {
        let held = self
            .held
            .iter()
            .flatten()
            .next()
            .map(|h| h.at + self.window);
        let pending = (0..2)
            .filter_map(|leg| {
                let front = self.legs[leg].pending.front()?;
                // Dropped after twice the window; promoted when the other leg has been
                // silent for the window.
                let partner = &self.legs[1 - leg];
                let silent = partner
                    .anchor
                    .and(partner.last)
                    .map_or(front.at, |t| t + self.window);
                Some((front.at + self.window * 2).min(silent))
            })
            .min();
        match (held, pending) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The leg's connection dropped: its anchor (raw TS) no longer holds.
    pub fn leg_reset(&mut self, leg: usize) {
        let l = &mut self.legs[leg.min(1)];
        l.anchor = None;
        l.pending.clear();
        l.last = None;
        l.late_run = 0;
    }

    /// Offer a datagram from `leg` (0 or 1) that arrived at `now`. `srt_seq` is the SRT
    /// sequence number of the packet that carried it (used for raw TS).
    pub fn offer(&mut self, leg: usize, now: Instant, srt_seq: u32, datagram: Bytes) -> Verdict {
        let leg = leg.min(1);
        self.stats.offered[leg] += 1;
        self.tick(now);
        let v = if datagram.first() == Some(&0x47) && datagram.len().is_multiple_of(PACKET_LEN) {
            self.switch(Kind::Ts);
            self.offer_ts(leg, now, srt_seq & 0x7FFF_FFFF, datagram)
        } else {
            match rtp::parse(&datagram) {
                Ok(h) if h.payload_len > 0 && h.payload_len.is_multiple_of(PACKET_LEN) => {
                    self.switch(Kind::Rtp);
                    let payload =
                        datagram.slice(h.payload_offset..h.payload_offset + h.payload_len);
                    self.offer_rtp(leg, now, h.seq, payload)
                }
                _ => Verdict::Malformed,
            }
        };
        if v == Verdict::Malformed {
            self.stats.malformed += 1;
        }
        v
    }

    /// Gives up holes that waited the window and promotes a waiting leg whose partner
    /// stopped delivering. Call at `next_deadline` (and it is called on every offer).
    pub fn tick(&mut self, now: Instant) {
        while let Some(k) = self.held.iter().position(Option::is_some) {
            let at = self.held[k].as_ref().map(|h| h.at).unwrap();
            if now.saturating_duration_since(at) < self.window {
                break;
            }
            self.skip(k as u64);
        }
        for leg in 0..2 {
            if self.legs[leg].anchor.is_none() && !self.legs[leg].pending.is_empty() {
                if !self.partner_delivering(leg, now) {
                    self.promote(leg, now);
                } else {
                    self.trim_pending(leg, now);
                }
            }
        }
    }

    fn switch(&mut self, kind: Kind) {
        if self.kind == Some(kind) {
            return;
        }
        if self.kind.is_some() {
            // The payload changed kind (a sender reconfigured): start over, keeping order
            // for what was held.
            self.flush();
            self.stats.resyncs += 1;
        }
        self.kind = Some(kind);
        self.next = None;
        self.top = None;
        self.recent.fill((EMPTY, 0, 0));
        self.by_hash.clear();
        for l in &mut self.legs {
            l.anchor = None;
            l.pending.clear();
        }
    }

    fn offer_rtp(&mut self, leg: usize, now: Instant, seq: u16, payload: Bytes) -> Verdict {
        let index = match self.next {
            None => START + u64::from(seq),
            Some(n) => offset(n, seq_delta(u32::from(seq), u32::from(n as u16), 16)),
        };
        if let Some(n) = self.next
            && index + RTP_FAR < n
        {
            // Far behind: a restarted sender, once enough of them came in a row.
            self.far_behind += 1;
            if self.far_behind < RTP_RESYNC_AFTER {
                self.stats.late += 1;
                return Verdict::Late;
            }
            self.flush();
            self.stats.resyncs += 1;
            self.next = None;
            self.top = None;
            self.far_behind = 0;
            // The new numbers start over at START: what is remembered is another stream's.
            self.recent.fill((EMPTY, 0, 0));
            return self.place_rtp(leg, now, START + u64::from(seq), payload);
        }
        self.far_behind = 0;
        self.place_rtp(leg, now, index, payload)
    }

    fn place_rtp(&mut self, leg: usize, now: Instant, index: u64, payload: Bytes) -> Verdict {
        match self.place(leg, now, index, 0, payload) {
            Placed::Done(v) => v,
            // RTP carries no hash: never a mismatch.
            Placed::Mismatch => Verdict::Duplicate,
        }
    }

    fn offer_ts(&mut self, leg: usize, now: Instant, seq: u32, data: Bytes) -> Verdict {
        let hash = fnv1a(&data);
        if let Some((s0, i0)) = self.legs[leg].anchor {
            let index = offset(i0, seq_delta(seq, s0, 31));
            // Far ahead while the other leg delivers: this leg's numbers are wrong, not
            // the other leg's (a real hole that long would show on both).
            let implausible = self.next.is_some_and(|n| index >= n + MAX_AHEAD as u64)
                && self.partner_delivering(leg, now);
            let placed = if implausible {
                Placed::Mismatch
            } else {
                self.place(leg, now, index, hash, data.clone())
            };
            match placed {
                Placed::Done(v) => {
                    self.legs[leg].anchor = Some((seq, index));
                    let l = &mut self.legs[leg];
                    l.late_run = if v == Verdict::Late {
                        l.late_run + 1
                    } else {
                        0
                    };
                    if l.late_run >= LATE_RUN_REANCHOR {
                        // Everything this leg sends is behind what is forgotten: place it
                        // again by content.
                        l.anchor = None;
                        l.late_run = 0;
                        self.stats.resyncs += 1;
                    }
                    if matches!(v, Verdict::Forwarded | Verdict::Held) {
                        self.anchor_partner(leg, now, index, hash);
                    }
                    return v;
                }
                Placed::Mismatch => {
                    // Its place holds other bytes: this leg's anchor is wrong.
                    self.legs[leg].anchor = None;
                    self.stats.resyncs += 1;
                }
            }
        }
        // Not anchored: by unique content, or as the reference, or kept aside.
        self.legs[leg].pending.push_back(Pending {
            seq,
            hash,
            data,
            at: now,
        });
        let found = match self.by_hash.get(&hash) {
            Some(&(index, 1)) if !is_stuffing(&self.legs[leg].pending.back().unwrap().data) => {
                Some(index).filter(|&i| self.consistent(leg, seq, i))
            }
            _ => None,
        };
        if let Some(index) = found {
            self.anchor_at(leg, now, seq, index)
        } else if !self.partner_delivering(leg, now) {
            self.promote(leg, now)
        } else {
            self.trim_pending(leg, now);
            Verdict::Unaligned
        }
    }

    /// Whether the other leg is anchored and delivered within the window.
    fn partner_delivering(&self, leg: usize, now: Instant) -> bool {
        let o = &self.legs[1 - leg];
        o.anchor.is_some()
            && o.last
                .is_some_and(|t| now.saturating_duration_since(t) < self.window)
    }

    /// Whether anchoring `leg`'s SRT sequence `seq` at `index` agrees with everything the
    /// leg kept aside: each of those whose place is known must hold the same bytes.
    fn consistent(&self, leg: usize, seq: u32, index: u64) -> bool {
        let Some(next) = self.next else {
            return true;
        };
        self.legs[leg].pending.iter().all(|p| {
            let i = offset(index, seq_delta(p.seq, seq, 31));
            if i < next {
                let (ri, rh, _) = self.recent[(i % RECENT as u64) as usize];
                ri != i || rh == p.hash
            } else {
                match self.held.get((i - next) as usize) {
                    Some(Some(h)) => h.hash == p.hash,
                    _ => true,
                }
            }
        })
    }

    /// Anchors `leg` with SRT sequence `seq` at `index` and places what it kept aside, in
    /// order. Returns the verdict of the last one (the datagram just offered).
    fn anchor_at(&mut self, leg: usize, now: Instant, seq: u32, index: u64) -> Verdict {
        self.legs[leg].anchor = Some((seq, index));
        let mut pending = std::mem::take(&mut self.legs[leg].pending);
        let mut last = Verdict::Unaligned;
        while let Some(p) = pending.pop_front() {
            let Some((s0, i0)) = self.legs[leg].anchor else {
                unreachable!("the loop ends when the leg loses its anchor")
            };
            let index = offset(i0, seq_delta(p.seq, s0, 31));
            match self.place(leg, now, index, p.hash, p.data.clone()) {
                Placed::Done(v) => {
                    self.legs[leg].anchor = Some((p.seq, index));
                    last = v;
                }
                Placed::Mismatch => {
                    // Not where it belongs after all: unanchored again, and what is left
                    // waits for a better anchor.
                    self.legs[leg].anchor = None;
                    self.stats.resyncs += 1;
                    pending.push_front(p);
                    self.legs[leg].pending = pending;
                    return Verdict::Unaligned;
                }
            }
        }
        last
    }

    /// `leg` (not anchored) becomes the reference, its partner being silent. What it kept
    /// aside goes where it most plausibly belongs: where the partner delivered the same
    /// bytes at about the same time (within the window, consistent with the rest of what it
    /// kept), or else right after the highest index so far, whichever the arrival times
    /// fit best. (Content that is not unique, stuffing above all, cannot anchor a leg by
    /// itself; time is what tells its place.)
    fn promote(&mut self, leg: usize, now: Instant) -> Verdict {
        let Some((seq, hash, at)) = self.legs[leg]
            .pending
            .front()
            .map(|p| (p.seq, p.hash, p.at))
        else {
            return Verdict::Unaligned;
        };
        let base = match (self.top, self.next) {
            (Some(t), Some(n)) => (t + 1).max(n),
            (None, Some(n)) => n,
            (_, None) => START,
        };
        let at = i64::from(self.ms(at));
        let window = i64::try_from(self.window.as_millis()).unwrap_or(i64::MAX);
        // The frontier's expected arrival: the top's, plus the recent spacing.
        let mut best = self.top.and_then(|top| {
            let t_top = i64::from(self.arrival_ms(top)?);
            let spacing = top
                .checked_sub(16)
                .and_then(|i| self.arrival_ms(i))
                .map_or(0, |t| (t_top - i64::from(t)) / 16);
            Some((base, (at - t_top - spacing).abs()))
        });
        let next = self.next.unwrap_or(base);
        let remembered = self.recent.iter().map(|&(i, h, _)| (i, h));
        let held = self
            .held
            .iter()
            .enumerate()
            .filter_map(|(k, h)| h.as_ref().map(|h| (next + k as u64, h.hash)));
        let candidates: Vec<u64> = remembered
            .chain(held)
            .filter(|&(i, h)| i != EMPTY && h == hash)
            .map(|(i, _)| i)
            .collect();
        for i in candidates {
            let Some(t) = self.arrival_ms(i) else {
                continue;
            };
            let d = (at - i64::from(t)).abs();
            if d < window && best.is_none_or(|(_, bd)| d < bd) && self.consistent(leg, seq, i) {
                best = Some((i, d));
            }
        }
        let index = best.map_or(base, |(i, _)| i);
        self.anchor_at(leg, now, seq, index)
    }

    /// `leg` just placed `hash` at `index`: if the other leg kept that content aside (once),
    /// the other leg is anchored there.
    fn anchor_partner(&mut self, leg: usize, now: Instant, index: u64, hash: u64) {
        let o = 1 - leg;
        if self.legs[o].anchor.is_some() || self.legs[o].pending.is_empty() {
            return;
        }
        if self.by_hash.get(&hash).map(|e| e.1) != Some(1) {
            return;
        }
        let mut found = self.legs[o].pending.iter().filter(|p| p.hash == hash);
        if let (Some(p), None) = (found.next(), found.next()) {
            let seq = p.seq;
            if !is_stuffing(&p.data) && self.consistent(o, seq, index) {
                self.anchor_at(o, now, seq, index);
            }
        }
    }

    /// Drops what a leg kept aside for longer than twice the window (or beyond
    /// `PENDING_MAX`): long enough to be promoted if the other leg went silent just when
    /// this one started.
    fn trim_pending(&mut self, leg: usize, now: Instant) {
        let window = self.window * 2;
        let pending = &mut self.legs[leg].pending;
        while pending.front().is_some_and(|p| {
            now.saturating_duration_since(p.at) >= window || pending.len() > PENDING_MAX
        }) {
            pending.pop_front();
            self.stats.unaligned += 1;
        }
    }

    /// Puts a datagram at `index` of the merged order.
    fn place(&mut self, leg: usize, now: Instant, index: u64, hash: u64, data: Bytes) -> Placed {
        let next = *self.next.get_or_insert(index);
        if index < next {
            let (i, h, _) = self.recent[(index % RECENT as u64) as usize];
            if i != index {
                self.stats.late += 1;
                return Placed::Done(Verdict::Late);
            }
            if h != hash {
                return Placed::Mismatch;
            }
            self.legs[leg].last = Some(now);
            self.stats.duplicates += 1;
            return Placed::Done(Verdict::Duplicate);
        }
        let mut d = index - next;
        if d >= MAX_AHEAD as u64 {
            // A hole longer than anything the window may hold: give it up now.
            self.flush();
            self.stats.resyncs += 1;
            self.next = Some(index);
            d = 0;
        }
        self.legs[leg].last = Some(now);
        self.top = Some(self.top.map_or(index, |t| t.max(index)));
        if d == 0 {
            let filled = self.held_count > 0;
            self.remember(index, hash);
            self.emit(leg, index, hash, data, now);
            self.next = Some(index + 1);
            self.held.pop_front();
            self.release_run();
            if filled {
                self.stats.filled += 1;
            }
            return Placed::Done(Verdict::Forwarded);
        }
        let d = d as usize;
        if let Some(Some(h)) = self.held.get(d) {
            if h.hash != hash {
                return Placed::Mismatch;
            }
            self.stats.duplicates += 1;
            return Placed::Done(Verdict::Duplicate);
        }
        let filled = self.held.len() > d + 1;
        if self.held.len() <= d {
            self.held.resize_with(d + 1, || None);
        }
        self.held[d] = Some(Held {
            data,
            at: now,
            leg: leg as u8,
            hash,
        });
        self.held_count += 1;
        self.remember(index, hash);
        if filled {
            self.stats.filled += 1;
        }
        Placed::Done(Verdict::Held)
    }

    /// Counts raw-TS content for anchoring (undone when its index leaves `recent`).
    fn remember(&mut self, index: u64, hash: u64) {
        if self.kind != Some(Kind::Ts) {
            return;
        }
        let e = self.by_hash.entry(hash).or_insert((index, 0));
        e.0 = e.0.max(index);
        e.1 += 1;
    }

    /// Hands a datagram out and remembers its index (forgetting the one `RECENT` before).
    fn emit(&mut self, leg: usize, index: u64, hash: u64, data: Bytes, at: Instant) {
        self.ready.push_back(data);
        self.stats.forwarded[leg.min(1)] += 1;
        let ms = self.ms(at);
        let slot = &mut self.recent[(index % RECENT as u64) as usize];
        let old = std::mem::replace(slot, (index, hash, ms));
        if old.0 != EMPTY
            && self.kind == Some(Kind::Ts)
            && let Some(e) = self.by_hash.get_mut(&old.1)
        {
            e.1 -= 1;
            if e.1 == 0 {
                self.by_hash.remove(&old.1);
            }
        }
    }

    /// `t` in ms since the first datagram (saturating: 49 days).
    fn ms(&mut self, t: Instant) -> u32 {
        let epoch = *self.epoch.get_or_insert(t);
        u32::try_from(t.saturating_duration_since(epoch).as_millis()).unwrap_or(u32::MAX)
    }

    /// When the datagram at `index` arrived (ms since `epoch`), if it is remembered or held.
    fn arrival_ms(&self, index: u64) -> Option<u32> {
        let next = self.next?;
        let epoch = self.epoch?;
        if index < next {
            let (i, _, ms) = self.recent[(index % RECENT as u64) as usize];
            (i == index).then_some(ms)
        } else {
            let h = self.held.get((index - next) as usize)?.as_ref()?;
            u32::try_from(h.at.saturating_duration_since(epoch).as_millis()).ok()
        }
    }

    /// Forwards the held datagrams that now follow without a hole.
    fn release_run(&mut self) {
        while let Some(Some(_)) = self.held.front() {
            let h = self.held.pop_front().flatten().unwrap();
            let index = self.next.unwrap();
            self.held_count -= 1;
            self.emit(usize::from(h.leg), index, h.hash, h.data, h.at);
            self.next = Some(index + 1);
        }
    }

    /// Gives up the `k` indexes before the first held datagram and forwards what follows.
    fn skip(&mut self, k: u64) {
        for _ in 0..k {
            self.held.pop_front();
        }
        self.next = self.next.map(|n| n + k);
        self.stats.gaps += k;
        self.release_run();
    }

    /// Forwards everything held, in order, giving up the holes between.
    fn flush(&mut self) {
        while let Some(k) = self.held.iter().position(Option::is_some) {
            self.skip(k as u64);
        }
        self.held.clear();
    }
}

/// Whether a raw-TS datagram is only null packets: such content repeats by nature and
/// never anchors a leg.
fn is_stuffing(d: &[u8]) -> bool {
    d.chunks(PACKET_LEN)
        .all(|p| p.len() >= 3 && p[1] & 0x1F == 0x1F && p[2] == 0xFF)
}

/// FNV-1a, 64 bit: fast enough for 1316 bytes per datagram. A collision could only
/// mis-anchor a leg, which the next datagrams' checks undo.
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
    use crate::testing::Clock;

    /// A raw-TS datagram whose content is unique to `n` (7 packets, PID 0x100, continuous
    /// counters, `n` in the payload).
    fn ts(n: u32) -> Bytes {
        let mut d = vec![0u8; 7 * PACKET_LEN];
        for (i, p) in d.chunks_mut(PACKET_LEN).enumerate() {
            p[0] = 0x47;
            p[1] = 0x01;
            p[2] = 0x00;
            p[3] = 0x10 | ((n as usize * 7 + i) & 0x0F) as u8;
            p[4..8].copy_from_slice(&n.to_be_bytes());
        }
        d.into()
    }

    /// What a list of datagrams is, readably: the number `ts(n)` put in, or -1 for stuffing.
    fn ids(v: &[Bytes]) -> Vec<i64> {
        v.iter()
            .map(|d| {
                if d[1] == 0x1F {
                    -1
                } else {
                    i64::from(u32::from_be_bytes(d[4..8].try_into().unwrap()))
                }
            })
            .collect()
    }

    fn null_datagram() -> Bytes {
        let mut d = vec![0xFFu8; 7 * PACKET_LEN];
        for p in d.chunks_mut(PACKET_LEN) {
            p[..4].copy_from_slice(&[0x47, 0x1F, 0xFF, 0x10]);
        }
        d.into()
    }

    fn rtp_pkt(seq: u16, n: u32) -> Bytes {
        let mut d = vec![0u8; 12];
        rtp::write_header((&mut d[..12]).try_into().unwrap(), seq, 0, 1);
        d.extend_from_slice(&ts(n));
        d.into()
    }

    /// One arrival: at `ms`, on `leg`, with SRT sequence number `seq`.
    #[derive(Clone)]
    struct Arrival {
        ms: u64,
        leg: usize,
        seq: u32,
        data: Bytes,
    }

    /// Plays arrivals in time order (ties: leg 0 first), firing `tick` at each deadline as
    /// a timer would, then once long after the last. Returns what went out and the stats.
    fn play(window: Duration, arrivals: Vec<Arrival>) -> (Vec<Bytes>, MergeStats) {
        play_with_resets(window, arrivals, &[])
    }

    /// `play`, with leg `r.1`'s connection dropping at `r.0` ms for each `r` in `resets`.
    fn play_with_resets(
        window: Duration,
        mut arrivals: Vec<Arrival>,
        resets: &[(u64, usize)],
    ) -> (Vec<Bytes>, MergeStats) {
        arrivals.sort_by_key(|a| (a.ms, a.leg));
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut m = Merge::new(window);
        let mut out = Vec::new();
        let mut end = 0;
        for a in arrivals {
            while let Some(d) = m.next_deadline()
                && d <= at(a.ms)
            {
                m.tick(d);
                out.extend(std::iter::from_fn(|| m.pop()));
            }
            for &(_, leg) in resets.iter().filter(|r| r.0 > end && r.0 <= a.ms) {
                m.leg_reset(leg);
            }
            m.offer(a.leg, at(a.ms), a.seq, a.data);
            out.extend(std::iter::from_fn(|| m.pop()));
            end = a.ms;
        }
        while let Some(d) = m.next_deadline() {
            m.tick(d);
        }
        m.tick(at(end) + window * 4);
        out.extend(std::iter::from_fn(|| m.pop()));
        assert_eq!(m.held(), 0);
        (out, m.stats())
    }

    /// Both legs carry `data`, one datagram every 10 ms; leg 0's SRT numbers start at
    /// `isn.0`, leg 1's at `isn.1`; leg 1 arrives `lag` ms after leg 0; `missing(leg, i)`
    /// removes datagram `i` from a leg.
    fn legs(
        data: &[Bytes],
        isn: (u32, u32),
        lag: u64,
        missing: impl Fn(usize, usize) -> bool,
    ) -> Vec<Arrival> {
        let mut v = Vec::new();
        for (i, d) in data.iter().enumerate() {
            for leg in 0..2 {
                if missing(leg, i) {
                    continue;
                }
                let base = if leg == 0 { isn.0 } else { isn.1 };
                v.push(Arrival {
                    ms: i as u64 * 10 + if leg == 1 { lag } else { 0 },
                    leg,
                    seq: base.wrapping_add(i as u32) & 0x7FFF_FFFF,
                    data: d.clone(),
                });
            }
        }
        v
    }

    fn stream(n: u32, null_every: u32) -> Vec<Bytes> {
        (0..n)
            .map(|i| {
                if null_every > 0 && i % null_every == 3 {
                    null_datagram()
                } else {
                    ts(i)
                }
            })
            .collect()
    }

    #[test]
    fn ts_hole_in_the_leading_leg_is_filled_in_order_by_the_lagging_leg() {
        // Leg 0 leads by 30 ms and misses 40..45 and 100; leg 1 has them. Stuffing
        // (identical datagrams) every 7th; the legs' SRT numbers start far apart (and leg
        // 1's wrap around 2^31).
        let data = stream(200, 7);
        let arrivals = legs(&data, (1_000, 0x7FFF_FFF0), 30, |leg, i| {
            leg == 0 && ((40..45).contains(&i) || i == 100)
        });
        let (out, s) = play(DEFAULT_WINDOW, arrivals);
        assert_eq!(ids(&out), ids(&data), "every datagram once, in order");
        // 40 and 41 came from leg 1 before leg 0 showed the hole (with 45): not counted.
        assert_eq!(s.filled, 4, "{s:?}");
        assert_eq!(s.gaps, 0);
        assert_eq!(s.late, 0);
        assert_eq!(s.forwarded[1], 6, "{s:?}");
    }

    #[test]
    fn ts_holes_in_both_legs_at_different_places_cost_nothing() {
        let data = stream(300, 5);
        let arrivals = legs(&data, (7, 77_777), 20, |leg, i| {
            (leg == 0 && i % 37 == 11) || (leg == 1 && i % 41 == 13)
        });
        let (out, s) = play(DEFAULT_WINDOW, arrivals);
        assert_eq!(ids(&out), ids(&data), "{s:?}");
        assert_eq!(s.gaps, 0);
    }

    #[test]
    fn ts_a_hole_in_both_legs_is_given_up_after_the_window() {
        let data = stream(100, 0);
        let arrivals = legs(&data, (0, 500), 10, |_, i| i == 50);
        let t0 = Instant::now();
        let mut m = Merge::new(Duration::from_millis(100));
        let mut out = Vec::new();
        let mut arrivals = arrivals;
        arrivals.sort_by_key(|a| (a.ms, a.leg));
        for a in &arrivals {
            m.offer(
                a.leg,
                t0 + Duration::from_millis(a.ms),
                a.seq,
                a.data.clone(),
            );
            out.extend(std::iter::from_fn(|| m.pop()));
            if a.ms == 550 && a.leg == 0 {
                // 51 to 55 are held, waiting for 50, since 51 came (at 510 ms).
                assert_eq!(m.held(), 5);
                assert_eq!(m.next_deadline(), Some(t0 + Duration::from_millis(610)));
            }
        }
        m.tick(t0 + Duration::from_secs(10));
        out.extend(std::iter::from_fn(|| m.pop()));
        let want: Vec<Bytes> = data
            .iter()
            .enumerate()
            .filter(|&(i, _)| i != 50)
            .map(|(_, d)| d.clone())
            .collect();
        assert_eq!(ids(&out), ids(&want));
        assert_eq!(m.stats().gaps, 1);
        // leg 1's copies that came after the hole was given up: duplicates, never late.
        assert_eq!(m.stats().late, 0);
    }

    #[test]
    fn ts_a_leg_that_lags_past_the_window_adds_duplicates_never_disorder() {
        // Leg 1 is 300 ms behind with a 100 ms window: its copies come after leg 0's went
        // out. A hole in leg 0 then costs the datagram (late on leg 1), nothing else.
        let data = stream(200, 4);
        let arrivals = legs(&data, (10, 20), 300, |leg, i| leg == 0 && i == 120);
        let (out, s) = play(DEFAULT_WINDOW, arrivals);
        let want: Vec<Bytes> = data
            .iter()
            .enumerate()
            .filter(|&(i, _)| i != 120)
            .map(|(_, d)| d.clone())
            .collect();
        assert_eq!(ids(&out), ids(&want), "{s:?}");
        assert_eq!((s.gaps, s.late), (1, 1), "{s:?}");
    }

    #[test]
    fn ts_one_leg_dying_loses_nothing_either_way() {
        for dead in 0..2 {
            let data = stream(400, 6);
            let arrivals = legs(&data, (123, 456), 5, |leg, i| leg == dead && i >= 200);
            let (out, s) = play(DEFAULT_WINDOW, arrivals);
            assert_eq!(ids(&out), ids(&data), "leg {dead} died: {s:?}");
        }
    }

    #[test]
    fn ts_a_leg_that_reconnects_is_anchored_again_by_content() {
        // Leg 1 (30 ms behind) drops at datagram 100 and comes back at 150 with a new SRT
        // connection (new numbers). Meanwhile leg 0 loses 160 and 170: the re-anchored
        // leg 1 fills them.
        let data = stream(300, 9);
        let mut arrivals = legs(&data, (5_000, 9), 30, |leg, i| {
            (leg == 0 && (i == 160 || i == 170)) || (leg == 1 && (100..150).contains(&i))
        });
        for a in &mut arrivals {
            if a.leg == 1 && a.ms >= 1500 {
                a.seq = a.seq.wrapping_add(2_000_000_000) & 0x7FFF_FFFF;
            }
        }
        let (out, s) = play_with_resets(DEFAULT_WINDOW, arrivals, &[(1025, 1)]);
        assert_eq!(ids(&out), ids(&data), "{s:?}");
        assert_eq!(s.filled, 2, "{s:?}");
    }

    #[test]
    fn ts_a_leg_starting_ahead_is_anchored_when_the_other_delivers_the_same() {
        // Leg 1 starts 40 ms ahead of leg 0 (leg 0 is the reference: it came first... no,
        // leg 1's first datagrams arrive first) and leg 0 misses one early datagram.
        let data = stream(100, 0);
        let mut arrivals = legs(&data, (1, 1_000_000), 0, |leg, i| leg == 0 && i == 8);
        for a in &mut arrivals {
            if a.leg == 0 {
                a.ms += 40;
            }
        }
        let (out, s) = play(DEFAULT_WINDOW, arrivals);
        assert_eq!(ids(&out), ids(&data), "{s:?}");
    }

    #[test]
    fn ts_a_wrong_anchor_is_dropped_and_found_again() {
        // Leg 1's SRT numbers jump (as if the mapping were wrong) without a reset: the
        // first datagram whose place holds other bytes unanchors it; it anchors again by
        // content and nothing is out of order.
        let data = stream(200, 0);
        let t0 = Instant::now();
        let mut m = Merge::new(DEFAULT_WINDOW);
        let mut out = Vec::new();
        for (i, d) in data.iter().enumerate() {
            let t = t0 + Duration::from_millis(i as u64 * 10);
            m.offer(0, t, i as u32, d.clone());
            let seq1 = if i < 100 {
                50 + i as u32
            } else {
                40 + i as u32
            };
            m.offer(1, t + Duration::from_millis(5), seq1, d.clone());
            out.extend(std::iter::from_fn(|| m.pop()));
        }
        m.tick(t0 + Duration::from_secs(100));
        out.extend(std::iter::from_fn(|| m.pop()));
        assert_eq!(ids(&out), ids(&data));
        assert!(m.stats().resyncs >= 1, "{:?}", m.stats());
    }

    #[test]
    fn ts_content_repeating_on_one_leg_goes_out_as_often_as_sent() {
        // Only stuffing for a while: every copy is forwarded (each has its own place).
        let data: Vec<Bytes> = (0..50)
            .map(|i| {
                if (10..40).contains(&i) {
                    null_datagram()
                } else {
                    ts(i)
                }
            })
            .collect();
        let arrivals = legs(&data, (0, 99), 7, |leg, i| leg == 0 && i == 20);
        let (out, s) = play(DEFAULT_WINDOW, arrivals);
        assert_eq!(ids(&out), ids(&data), "{s:?}");
    }

    #[test]
    fn rtp_merges_by_sequence_number_across_wrap_and_fills_holes() {
        let mut m = Merge::new(Duration::from_secs(1));
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
            (0, 3), // held: 2 is missing on leg 0
            (1, 2), // leg 1 fills it: 2 then 3 go out
            (1, 3),
            (1, 4),
        ];
        let mut verdicts = Vec::new();
        for (leg, s) in seqs {
            verdicts.push(m.offer(leg, now, 0, rtp_pkt(s, u32::from(s))));
            out.extend(std::iter::from_fn(|| m.pop()));
        }
        let want: Vec<Bytes> = [65533u16, 65534, 65535, 0, 1, 2, 3, 4]
            .iter()
            .map(|&s| ts(u32::from(s)))
            .collect();
        assert_eq!(ids(&out), ids(&want), "RTP headers stripped, in order");
        assert_eq!(verdicts[10], Verdict::Held);
        assert_eq!(verdicts[11], Verdict::Forwarded);
        let s = m.stats();
        assert_eq!(
            (s.late, s.duplicates, s.filled, s.gaps),
            (0, 6, 1, 0),
            "{s:?}"
        );
    }

    #[test]
    fn rtp_one_leg_dying_loses_nothing() {
        // Leg 1 lags by 3 packets and dies at 500; leg 0 misses 200 and 300 before that
        // and then dies at 700 while leg 1... no: leg 1 is dead; leg 0 carries on alone.
        let t0 = Instant::now();
        let mut m = Merge::new(DEFAULT_WINDOW);
        let mut out = Vec::new();
        for n in 0..1000u32 {
            let t = t0 + Duration::from_millis(u64::from(n));
            let s = (n + 65_000) as u16;
            if n != 200 && n != 300 {
                m.offer(0, t, 0, rtp_pkt(s, n));
            }
            if n >= 3 && n - 3 < 500 {
                let s1 = (n - 3 + 65_000) as u16;
                m.offer(1, t, 0, rtp_pkt(s1, n - 3));
            }
            out.extend(std::iter::from_fn(|| m.pop()));
        }
        m.tick(t0 + Duration::from_secs(10));
        out.extend(std::iter::from_fn(|| m.pop()));
        assert_eq!(
            ids(&out),
            (0..1000).collect::<Vec<i64>>(),
            "{:?}",
            m.stats()
        );
        assert_eq!(m.stats().filled, 2);
        assert_eq!(m.stats().gaps, 0);
    }

    #[test]
    fn rtp_follows_a_restarted_sender() {
        let mut m = Merge::new(Duration::from_secs(1));
        let now = Instant::now();
        for s in 1_000..3_100u16 {
            assert_eq!(m.offer(0, now, 0, rtp_pkt(s, 0)), Verdict::Forwarded);
        }
        // The restarted sender reuses numbers the old one went through: they are new.
        let mut got = 0;
        for s in 1_000..1_300u16 {
            if m.offer(1, now, 0, rtp_pkt(s, 1)) == Verdict::Forwarded {
                got += 1;
            }
        }
        assert!(got >= 300 - RTP_RESYNC_AFTER as usize, "{got}");
        assert_eq!(m.stats().resyncs, 1);
    }

    #[test]
    fn hostile_datagrams_are_malformed_not_panics() {
        let mut m = Merge::new(Duration::from_secs(1));
        let now = Instant::now();
        for d in [
            &[][..],
            &[0x47][..],
            &[0x80, 33, 0, 1][..],
            &[0x80; 13][..],
            &[0u8; 188][..],
        ] {
            assert_eq!(
                m.offer(0, now, 0, Bytes::copy_from_slice(d)),
                Verdict::Malformed
            );
        }
    }

    #[test]
    fn memory_stays_bounded() {
        let t0 = Instant::now();
        let mut m = Merge::new(Duration::from_secs(3600));
        // One leg, 50 000 datagrams with a hole every 1000: held never exceeds MAX_AHEAD,
        // the hash table never exceeds RECENT plus what is held.
        for i in 0..50_000u32 {
            if i % 1000 != 999 {
                m.offer(0, t0, i, ts(i));
            }
            while m.pop().is_some() {}
            assert!(m.held() <= MAX_AHEAD);
            assert!(m.by_hash.len() <= RECENT + MAX_AHEAD);
        }
        // An hour-long window holds everything after the first hole... up to MAX_AHEAD.
        assert!(m.stats().resyncs >= 1);
    }
    #[test]
    fn leg_watch_reports_each_loss_once_and_both_once() {
        let c = Clock::new();
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
            /// Two legs carry the same datagrams (raw TS with its own SRT numbering per leg,
            /// or RTP), each with its own constant delay (the path difference, so either leg
            /// may lead) plus jitter, in order per leg (SRT delivers in order). Holes are
            /// punched anywhere in either leg (runs of 1 to 3), a few datagrams are lost on
            /// both, one leg may join late (a leg connecting mid-stream) and one may die.
            /// Stuffing with identical content is mixed in.
            /// Whatever at least one leg delivered goes out exactly once, in the source
            /// order; what neither delivered is a gap, and nothing else is missing.
            #[test]
            fn every_delivered_datagram_exactly_once_in_order(
                n in 1usize..400,
                rtp_payload in any::<bool>(),
                skew in (0u64..150, 0u64..150),
                jitter in proptest::collection::vec((0u64..5, 0u64..5), 400),
                holes in proptest::collection::vec((0usize..2, 5usize..400, 1usize..4), 0..12),
                both in proptest::collection::vec(5usize..400, 0..3),
                dies in 0usize..3,
                cut in 0usize..400,
                joins in 0usize..3,
                join_at in 0usize..200,
                null_every in 2u32..20,
                isn in (any::<u32>(), any::<u32>()),
                seq0 in any::<u16>(),
            ) {
                let data: Vec<Bytes> = (0..n as u32)
                    .map(|i| if i % null_every == 3 { null_datagram() } else { ts(i) })
                    .collect();
                let mut missing = vec![[false; 2]; n];
                for &(leg, start, len) in &holes {
                    for i in start..(start + len).min(n) {
                        missing[i][leg] = true;
                    }
                }
                for &i in &both {
                    if i < n {
                        missing[i] = [true, true];
                    }
                }
                if dies < 2 {
                    for i in cut.min(n)..n {
                        missing[i][dies] = true;
                    }
                }
                if joins < 2 {
                    for i in 0..join_at.min(n) {
                        missing[i][joins] = true;
                    }
                }
                // A leg that carries on alone after the other's last datagram, having run
                // alongside it, must have met it on some unique datagram: otherwise where
                // its datagrams go is ambiguous (stuffing only, or nothing in common) and
                // the merge can only guess from arrival times (see `Merge::promote`).
                let span = |leg: usize| {
                    let d: Vec<usize> = (0..n).filter(|&i| !missing[i][leg]).collect();
                    Some((*d.first()?, *d.last()?))
                };
                for leg in 0..2 {
                    if let (Some((f, l)), Some((_, ol))) = (span(leg), span(1 - leg))
                        && f <= ol
                        && l >= ol
                    {
                        prop_assume!((f..=ol).any(|i| missing[i] == [false, false]
                            && i as u32 % null_every != 3));
                    }
                }
                let mut arrivals = Vec::new();
                let mut last = [0u64; 2];
                for i in 0..n {
                    for leg in 0..2 {
                        if missing[i][leg] {
                            continue;
                        }
                        let d = if leg == 0 { skew.0 + jitter[i].0 } else { skew.1 + jitter[i].1 };
                        let t = (i as u64 * 10 + d).max(last[leg]);
                        last[leg] = t;
                        let base = if leg == 0 { isn.0 } else { isn.1 };
                        let seq = base.wrapping_add(i as u32);
                        let payload = if rtp_payload {
                            let mut p = vec![0u8; 12];
                            rtp::write_header(
                                (&mut p[..12]).try_into().unwrap(),
                                seq0.wrapping_add(i as u16),
                                0,
                                1,
                            );
                            p.extend_from_slice(&data[i]);
                            Bytes::from(p)
                        } else {
                            data[i].clone()
                        };
                        arrivals.push(Arrival { ms: t, leg, seq, data: payload });
                    }
                }
                // The merged stream starts with the first datagram to arrive: nothing before
                // it can go out (that would go backwards).
                let first = arrivals
                    .iter()
                    .min_by_key(|a| (a.ms, a.leg))
                    .map_or(n, |a| (a.seq.wrapping_sub(if a.leg == 0 { isn.0 } else { isn.1 })) as usize);
                let (out, stats) = play(Duration::from_millis(400), arrivals);
                let want: Vec<Bytes> = (first..n)
                    .filter(|&i| missing[i] != [true, true])
                    .map(|i| data[i].clone())
                    .collect();
                prop_assert_eq!(out.len(), want.len(), "{:?} {:?}", stats, ids(&out));
                prop_assert!(out == want, "content or order differs: {:?} {:?}", stats, ids(&out));
            }

            #[test]
            fn arbitrary_bytes_never_panic(
                ds in proptest::collection::vec(
                    (0usize..4, any::<u32>(), proptest::collection::vec(any::<u8>(), 0..1500)),
                    1..20,
                ),
            ) {
                let mut m = Merge::new(Duration::from_millis(50));
                let t0 = Instant::now();
                for (i, (leg, seq, d)) in ds.into_iter().enumerate() {
                    let now = t0 + Duration::from_millis(i as u64 * 30);
                    let _ = m.offer(leg, now, seq, Bytes::from(d));
                    m.tick(now);
                    while m.pop().is_some() {}
                    if i % 5 == 4 {
                        m.leg_reset(leg);
                    }
                }
                let mut w = LegWatch::new(Duration::from_secs(1));
                let mut ev = Vec::new();
                w.on_disconnect(3, Instant::now(), &mut ev);
            }
        }
    }

    /// The seeded network model over the merge (the raw-TS legs as SRT hands them over:
    /// each leg in order, missing what SRT gave up as too late, with its own delay).
    mod seeded {
        use super::*;
        use crate::testing::netsim::{Burst, Link, LinkConfig};

        /// One datagram every 2 ms (about 5 Mbit/s), 2 s.
        const N: u32 = 1000;
        const EVERY_MS: u64 = 2;

        /// One leg: what it loses and how late it is, its SRT numbers from `isn`, down
        /// between `down.0` and `down.1` ms (nothing sent then arrives) and back with new
        /// numbers from `isn_after` (a new SRT connection: the merge is told at `down.1`).
        #[derive(Clone, Copy)]
        struct LegPlan {
            link: LinkConfig,
            isn: u32,
            down: Option<(u64, u64)>,
            isn_after: u32,
        }

        impl LegPlan {
            /// About 3.5 % loss, a fifth of it in bursts, `delay_ms` plus up to 10 ms of jitter,
            /// in order (SRT releases in order).
            fn lossy(delay_ms: u64, isn: u32) -> Self {
                let link = LinkConfig::delay(Duration::from_millis(delay_ms))
                    .loss(0.029)
                    .burst(Burst {
                        enter: 0.002,
                        leave: 0.3,
                        loss: 1.0,
                    })
                    .jitter(Duration::from_millis(10), false);
                LegPlan {
                    link,
                    isn,
                    down: None,
                    isn_after: isn,
                }
            }
        }

        /// Sends `data` over both legs' links, seeded; returns the arrivals and, per leg,
        /// the datagrams that arrived.
        fn send(data: &[Bytes], plans: [LegPlan; 2], seed: u64) -> (Vec<Arrival>, [Vec<usize>; 2]) {
            let t0 = Instant::now();
            let mut arrivals = Vec::new();
            let mut got = [Vec::new(), Vec::new()];
            for (leg, plan) in plans.iter().enumerate() {
                let mut link = Link::new(plan.link, seed * 2 + leg as u64);
                for i in 0..data.len() {
                    let ms = i as u64 * EVERY_MS;
                    let (down, isn) = match plan.down {
                        Some((_, to)) if ms >= to => (false, plan.isn_after),
                        Some((from, _)) => (ms >= from, plan.isn),
                        None => (false, plan.isn),
                    };
                    link.set_up(!down);
                    let seq = isn.wrapping_add(i as u32) & 0x7FFF_FFFF;
                    link.send(t0 + Duration::from_millis(ms), (i, seq));
                }
                while let Some(at) = link.next_arrival() {
                    let (i, seq) = link.recv(at).unwrap();
                    got[leg].push(i);
                    arrivals.push(Arrival {
                        ms: (at - t0).as_millis() as u64,
                        leg,
                        seq,
                        data: data[i].clone(),
                    });
                }
            }
            (arrivals, got)
        }

        /// Plays a seeded run and checks it against what the legs delivered: the output
        /// is every datagram either leg delivered, once, in order (from the first one out);
        /// every index neither leg delivered is one gap; nothing is late; every copy not
        /// forwarded is a duplicate.
        fn check(window: Duration, plans: [LegPlan; 2], seed: u64) -> Result<MergeStats, String> {
            let data = stream(N, 0);
            let (arrivals, got) = send(&data, plans, seed);
            let offered = arrivals.len() as u64;
            let index =
                |a: &Arrival| i64::from(u32::from_be_bytes(a.data[4..8].try_into().unwrap()));
            let arrived: Vec<i64> = arrivals.iter().map(index).collect();
            let resets: Vec<(u64, usize)> = (0..2)
                .filter_map(|leg| plans[leg].down.map(|(_, to)| (to, leg)))
                .collect();
            let (out, s) = play_with_resets(window, arrivals, &resets);
            let out = ids(&out);
            let mut union: Vec<i64> = got.iter().flatten().map(|&i| i as i64).collect();
            union.sort_unstable();
            union.dedup();
            let first = *out.first().ok_or("nothing out")?;
            if first > 5 {
                return Err(format!("seed {seed}: the output starts at {first}"));
            }
            let want: Vec<i64> = union.iter().copied().filter(|&i| i >= first).collect();
            if out != want {
                let missing: Vec<i64> = want.iter().filter(|i| !out.contains(i)).copied().collect();
                return Err(format!(
                    "seed {seed}: {} out, {} delivered by a leg; missing {missing:?}, in order: {}; {s:?}",
                    out.len(),
                    want.len(),
                    out.windows(2).all(|w| w[0] < w[1])
                ));
            }
            let holes = (first..=*out.last().unwrap())
                .filter(|i| union.binary_search(i).is_err())
                .count() as u64;
            // Late: only what a reordering leg delivers from before the first one out.
            let before = arrived.iter().filter(|&&i| i < first).count() as u64;
            if s.gaps != holes || s.late != before {
                return Err(format!(
                    "seed {seed}: {holes} lost on both legs and {before} from before the start, \
                     but {} gaps and {} late: {s:?}",
                    s.gaps, s.late
                ));
            }
            let forwarded = s.forwarded[0] + s.forwarded[1];
            if forwarded != out.len() as u64
                || forwarded + s.duplicates + s.late + s.unaligned != offered
            {
                return Err(format!(
                    "seed {seed}: {offered} offered, {} out: {s:?}",
                    out.len()
                ));
            }
            Ok(s)
        }

        #[test]
        fn independent_loss_on_both_legs_merges_complete_and_in_order() {
            let mut gaps = 0;
            for seed in 1..=5 {
                let plans = [LegPlan::lossy(130, 1_000), LegPlan::lossy(150, 0x7FFF_F000)];
                let s = check(DEFAULT_WINDOW, plans, seed).unwrap();
                // The lagging leg filled what the leading one lost.
                assert!(s.filled > 15 && s.forwarded[1] > 15, "seed {seed}: {s:?}");
                gaps += s.gaps;
            }
            // And some were lost on both (about one a run), each counted once.
            assert!(gaps > 0);
        }

        #[test]
        fn reordering_within_a_leg_is_put_right() {
            for seed in 1..=3 {
                let mut plans = [LegPlan::lossy(130, 7), LegPlan::lossy(140, 70_000)];
                for p in &mut plans {
                    p.link = p.link.jitter(Duration::from_millis(6), true);
                }
                check(DEFAULT_WINDOW, plans, seed).unwrap();
            }
        }

        #[test]
        fn a_leg_dying_and_coming_back_loses_only_what_the_other_lost_meanwhile() {
            for seed in 1..=5 {
                for dead in 0..2 {
                    let mut plans = [LegPlan::lossy(130, 500), LegPlan::lossy(145, 9_000)];
                    // Down from 0.6 s to 1.4 s, back as a new connection.
                    plans[dead].down = Some((600, 1_400));
                    plans[dead].isn_after = 1_500_000_000;
                    let s = check(DEFAULT_WINDOW, plans, seed).unwrap();
                    // While one leg is down every loss of the other is a gap.
                    assert!(s.gaps > 5, "seed {seed}, leg {dead} down: {s:?}");
                }
            }
        }

        /// The check sees what it should: with a window shorter than the legs' skew, holes
        /// the lagging leg would fill are given up before it comes, and `check` says so.
        #[test]
        fn a_window_below_the_skew_is_caught() {
            let plans = [LegPlan::lossy(130, 1), LegPlan::lossy(190, 2)];
            assert!(check(Duration::from_millis(20), plans, 1).is_err());
        }
    }
}
