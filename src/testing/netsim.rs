//! A seeded network model for deterministic tests of protocol state machines: a `Link`
//! carries datagrams one way, losing some (independently, or in bursts) and delaying the
//! rest by a base delay plus jitter, which reorders them unless the link is FIFO.
//!
//! Nothing here reads a clock or spawns anything: the test passes `now` in, sends, and asks
//! for what is due, like str0m's and quinn's simulated networks. Every decision comes from
//! one small PRNG (xorshift64*) started from an explicit seed, so a seed gives the same
//! losses, delays and order on every machine and under qemu emulation, however slowly the
//! test runs. A failing seed replays exactly.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// xorshift64* (Vigna): tiny, fast, good enough to pick losses and delays, and the same on
/// every platform.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// Any seed works (0 included): it is spread with splitmix64 first, so seeds 1, 2, 3
    /// give unrelated streams.
    pub fn new(seed: u64) -> Self {
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        Rng(if z == 0 { 0x2545_F491_4F6C_DD1D } else { z })
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        // The top 53 bits as a fraction: no modulo bias worth the name at these sizes.
        ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 * n as f64) as u64
    }

    /// True with probability `p` (0.0 never, 1.0 always).
    pub fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64) < p
    }

    /// A duration in `0..=max`, to the microsecond.
    pub fn upto(&mut self, max: Duration) -> Duration {
        let us = max.as_micros() as u64;
        Duration::from_micros(if us == 0 { 0 } else { self.below(us + 1) })
    }
}

/// Burst loss (Gilbert–Elliott): the link flips between a good state, which loses with
/// `LinkConfig::loss`, and a bad one, which loses with `loss`. Mean burst length is
/// 1 / `leave` datagrams.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Burst {
    /// Chance per datagram of going from good to bad.
    pub enter: f64,
    /// Chance per datagram of going from bad back to good.
    pub leave: f64,
    /// Loss probability while bad.
    pub loss: f64,
}

/// One direction of a path.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinkConfig {
    /// Loss probability per datagram (in the good state, with `burst`).
    pub loss: f64,
    pub burst: Option<Burst>,
    /// One-way delay every datagram has.
    pub delay: Duration,
    /// Extra delay, uniform in `0..=jitter`, per datagram.
    pub jitter: Duration,
    /// Jitter may reorder (a datagram overtakes an earlier one) when true; when false the
    /// link is FIFO: a datagram never arrives before the one sent before it.
    pub reorder: bool,
}

impl LinkConfig {
    /// No loss, no jitter, `delay` one way.
    pub fn delay(delay: Duration) -> Self {
        LinkConfig {
            loss: 0.0,
            burst: None,
            delay,
            jitter: Duration::ZERO,
            reorder: false,
        }
    }

    pub fn loss(self, loss: f64) -> Self {
        LinkConfig { loss, ..self }
    }

    pub fn burst(self, burst: Burst) -> Self {
        LinkConfig {
            burst: Some(burst),
            ..self
        }
    }

    /// Jitter up to `jitter`; `reorder` says whether it may reorder.
    pub fn jitter(self, jitter: Duration, reorder: bool) -> Self {
        LinkConfig {
            jitter,
            reorder,
            ..self
        }
    }
}

/// What a link did, cumulative.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkStats {
    pub sent: u64,
    /// Lost by the model (loss, burst, or the link being down).
    pub lost: u64,
    pub delivered: u64,
}

/// One direction of a simulated path carrying `T` (bytes, or anything a test wants).
#[derive(Debug)]
pub struct Link<T> {
    cfg: LinkConfig,
    rng: Rng,
    bad: bool,
    up: bool,
    /// In flight, by (arrival, send order): ties arrive in the order sent.
    in_flight: BTreeMap<(Instant, u64), T>,
    order: u64,
    /// Arrival of the datagram sent last (FIFO links arrive no earlier).
    last_arrival: Option<Instant>,
    stats: LinkStats,
}

impl<T> Link<T> {
    pub fn new(cfg: LinkConfig, seed: u64) -> Self {
        Link {
            cfg,
            rng: Rng::new(seed),
            bad: false,
            up: true,
            in_flight: BTreeMap::new(),
            order: 0,
            last_arrival: None,
            stats: LinkStats::default(),
        }
    }

    /// Sends `item` at `now`. Returns whether it will arrive (false: the model lost it).
    /// The random draws do not depend on what is sent, so the same seed loses the same
    /// positions in the send order whatever the payloads are.
    pub fn send(&mut self, now: Instant, item: T) -> bool {
        self.stats.sent += 1;
        let lost = self.draw_loss();
        let arrival = now + self.cfg.delay + self.rng.upto(self.cfg.jitter);
        if lost || !self.up {
            self.stats.lost += 1;
            return false;
        }
        let arrival = match self.last_arrival {
            Some(last) if !self.cfg.reorder => arrival.max(last),
            _ => arrival,
        };
        self.last_arrival = Some(arrival);
        self.order += 1;
        self.in_flight.insert((arrival, self.order), item);
        true
    }

    fn draw_loss(&mut self) -> bool {
        let mut p = self.cfg.loss;
        if let Some(b) = self.cfg.burst {
            self.bad = if self.bad {
                !self.rng.chance(b.leave)
            } else {
                self.rng.chance(b.enter)
            };
            if self.bad {
                p = b.loss;
            }
        }
        self.rng.chance(p)
    }

    /// When the next datagram in flight arrives.
    pub fn next_arrival(&self) -> Option<Instant> {
        self.in_flight.keys().next().map(|&(at, _)| at)
    }

    /// The next datagram that has arrived by `now`, earliest first.
    pub fn recv(&mut self, now: Instant) -> Option<T> {
        let (&key, _) = self.in_flight.iter().next()?;
        if key.0 > now {
            return None;
        }
        self.stats.delivered += 1;
        self.in_flight.remove(&key)
    }

    /// Takes the link down (everything sent from now on is lost; what is in flight still
    /// arrives) or back up.
    pub fn set_up(&mut self, up: bool) {
        self.up = up;
    }

    pub fn stats(&self) -> LinkStats {
        self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Sends 0..n one per ms and returns (arrival ms, item) of what arrived.
    fn run(cfg: LinkConfig, seed: u64, n: u64) -> Vec<(u64, u64)> {
        let t0 = Instant::now();
        let mut link = Link::new(cfg, seed);
        let mut out = Vec::new();
        for i in 0..n {
            link.send(t0 + ms(i), i);
        }
        while let Some(at) = link.next_arrival() {
            let item = link.recv(at).unwrap();
            out.push(((at - t0).as_millis() as u64, item));
        }
        assert_eq!(link.stats().sent, n);
        assert_eq!(link.stats().delivered + link.stats().lost, n);
        out
    }

    #[test]
    fn same_seed_same_losses_and_order_other_seed_other() {
        let cfg = LinkConfig::delay(ms(20)).loss(0.05).jitter(ms(5), true);
        assert_eq!(run(cfg, 7, 2000), run(cfg, 7, 2000));
        assert_ne!(run(cfg, 7, 2000), run(cfg, 8, 2000));
    }

    #[test]
    fn loss_rate_is_close_to_the_configured_one() {
        for seed in 0..5 {
            let got = run(LinkConfig::delay(ms(1)).loss(0.05), seed, 20_000).len();
            let lost = 20_000 - got;
            assert!((800..1200).contains(&lost), "seed {seed}: lost {lost}");
        }
    }

    #[test]
    fn fifo_link_keeps_order_reordering_link_does_not() {
        let fifo = run(LinkConfig::delay(ms(20)).jitter(ms(10), false), 1, 1000);
        assert_eq!(fifo.len(), 1000);
        assert!(fifo.windows(2).all(|w| w[0].1 < w[1].1 && w[0].0 <= w[1].0));
        assert!(fifo.iter().all(|&(at, i)| at >= i + 20));
        let wild = run(LinkConfig::delay(ms(20)).jitter(ms(10), true), 1, 1000);
        assert_eq!(wild.len(), 1000);
        assert!(
            wild.windows(2).any(|w| w[0].1 > w[1].1),
            "nothing reordered"
        );
        assert!(wild.iter().all(|&(at, i)| (i + 20..=i + 30).contains(&at)));
    }

    #[test]
    fn bursts_lose_runs() {
        let burst = Burst {
            enter: 0.01,
            leave: 0.2,
            loss: 1.0,
        };
        let got: Vec<u64> = run(LinkConfig::delay(ms(1)).burst(burst), 3, 10_000)
            .into_iter()
            .map(|(_, i)| i)
            .collect();
        let longest = got.windows(2).map(|w| w[1] - w[0] - 1).max().unwrap();
        assert!(longest >= 5, "longest run lost: {longest}");
        assert!(got.len() > 8_500 && got.len() < 9_900, "{}", got.len());
    }

    #[test]
    fn a_link_taken_down_loses_what_is_sent_while_down() {
        let t0 = Instant::now();
        let mut link = Link::new(LinkConfig::delay(ms(10)), 0);
        assert!(link.send(t0, 1));
        link.set_up(false);
        assert!(!link.send(t0 + ms(1), 2));
        link.set_up(true);
        assert!(link.send(t0 + ms(2), 3));
        assert_eq!(link.recv(t0 + ms(9)), None);
        assert_eq!(link.recv(t0 + ms(12)), Some(1));
        assert_eq!(link.recv(t0 + ms(12)), Some(3));
        assert_eq!(link.recv(t0 + ms(12)), None);
        assert_eq!(
            link.stats(),
            LinkStats {
                sent: 3,
                lost: 1,
                delivered: 2
            }
        );
    }
}
