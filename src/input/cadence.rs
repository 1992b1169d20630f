//! How often a busy UDP/RTP input drains its socket.
//!
//! A tick costs about the same whatever it carries: one wake-up (on the benchmark VM mostly
//! the context switch), one `epoll_wait`, one timer `read`, one `recvmmsg` and one send per
//! output. So CPU per GB falls with the datagrams a tick carries, and the latency a tick adds
//! (a datagram arriving just after one waits a whole period) rises with the period. A fixed
//! period is wrong at one end or the other: 3 ms cost 1.3× srt-live-transmit's CPU at
//! 20 Mbit/s (5.7 datagrams a tick) and was cheap at 100 Mbit/s (28 a tick).
//!
//! So the period follows the stream: long enough that a tick carries about one receive batch
//! ([`TARGET_BATCH`]), never longer than [`MAX_PERIOD`] (srt-live-transmit's own 10 ms poll
//! sleep, the latency a broadcast receiver's buffer already absorbs from it) and never shorter
//! than [`MIN_PERIOD`]. At 20 Mbit/s that is 10 ms, at 100 Mbit/s about 3.4 ms, at 400 Mbit/s
//! 1 ms. Sans-IO: it sees only datagram counts, so it is tested without a clock.

use std::time::Duration;

use crate::net::mmsg::BATCH;

/// Datagrams one tick should carry: one full `recvmmsg`.
pub const TARGET_BATCH: usize = BATCH;
/// The longest period, the most latency a tick adds.
pub const MAX_PERIOD: Duration = Duration::from_millis(10);
/// The shortest period: below it wake-ups cost more than batches save.
pub const MIN_PERIOD: Duration = Duration::from_millis(1);
/// The period a busy spell starts with before the first tick has measured the stream; also
/// the gap between wake-ups under which an idle input turns busy (see `udp::go_busy`).
pub const START_PERIOD: Duration = Duration::from_millis(3);

/// A period is only changed when the wanted one differs by more than 1/HYSTERESIS of it, so
/// a steady stream whose count jitters by a datagram a tick never re-arms the timer.
const HYSTERESIS: u32 = 4;
/// Weight of the newest tick in the rate estimate: 1/SMOOTHING.
const SMOOTHING: f64 = 4.0;

/// Whether a socket woken by a datagram should switch to draining on the ticker: when more
/// than one was already waiting, or the previous wake-up was less than a starting period
/// ago. In both cases datagrams come faster than the ticker would wake, so ticking costs less.
/// (The UDP input's rule, and the UDP tunnel egress's.)
pub fn go_busy(got: usize, since_last_wake: Option<Duration>) -> bool {
    got > 1 || (got == 1 && since_last_wake.is_some_and(|g| g < START_PERIOD))
}

#[derive(Debug)]
pub struct Cadence {
    period: Duration,
    /// Datagrams per second, smoothed over ticks; `None` until the first tick of the input.
    rate: Option<f64>,
}

impl Default for Cadence {
    fn default() -> Self {
        Cadence::new()
    }
}

impl Cadence {
    pub fn new() -> Self {
        Cadence {
            period: START_PERIOD,
            rate: None,
        }
    }

    /// The period to tick at now.
    pub fn period(&self) -> Duration {
        self.period
    }

    /// After a tick of [`period`](Self::period) that drained `got` datagrams: the new
    /// period when the ticker should be re-armed with it, `None` to keep ticking as it is.
    /// The rate estimate survives idle spells, so a stream that pauses resumes at its pace.
    pub fn after_tick(&mut self, got: usize) -> Option<Duration> {
        let sample = got as f64 / self.period.as_secs_f64();
        let rate = match self.rate {
            Some(r) => r + (sample - r) / SMOOTHING,
            None => sample,
        };
        self.rate = Some(rate);
        let wanted = if rate > 0.0 {
            Duration::from_secs_f64((TARGET_BATCH as f64 / rate).min(MAX_PERIOD.as_secs_f64()))
                .max(MIN_PERIOD)
        } else {
            MAX_PERIOD
        };
        let diff = wanted.abs_diff(self.period);
        if diff > self.period / HYSTERESIS {
            self.period = wanted;
            Some(wanted)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Datagrams per second of 1316-byte datagrams at `mbit`.
    fn per_sec(mbit: f64) -> f64 {
        mbit * 1e6 / 8.0 / 1316.0
    }

    /// Ticks a stream of `rate` datagrams/s for `ticks` ticks, carrying the fractional
    /// datagrams over as a real socket would; returns the period it settles on.
    fn settle(c: &mut Cadence, rate: f64, ticks: usize) -> Duration {
        let mut owed = 0.0;
        for _ in 0..ticks {
            owed += rate * c.period().as_secs_f64();
            let got = owed.floor();
            owed -= got;
            c.after_tick(got as usize);
        }
        c.period()
    }

    #[test]
    fn the_period_follows_the_rate_within_its_bounds() {
        let mut c = Cadence::new();
        assert_eq!(c.period(), START_PERIOD);
        assert_eq!(settle(&mut c, per_sec(20.0), 50), MAX_PERIOD);
        // Within the hysteresis of the wanted period (and of the bounds).
        let near = |p: Duration, want: Duration| p >= want * 3 / 4 && p <= want * 5 / 4;
        let p = settle(&mut c, per_sec(100.0), 50);
        // 32 datagrams at 9 500/s: 3.37 ms, give or take the hysteresis.
        assert!(near(p, Duration::from_micros(3370)), "{p:?}");
        let p = settle(&mut c, per_sec(1000.0), 50);
        assert!(near(p, MIN_PERIOD), "{p:?}");
        let p = settle(&mut c, per_sec(2.0), 50);
        assert!(near(p, MAX_PERIOD), "{p:?}");
    }

    #[test]
    fn a_steady_stream_stops_re_arming_the_timer() {
        let mut c = Cadence::new();
        settle(&mut c, per_sec(100.0), 20);
        let mut owed = 0.0;
        let mut rearms = 0;
        for _ in 0..1000 {
            owed += per_sec(100.0) * c.period().as_secs_f64();
            let got = owed.floor();
            owed -= got;
            rearms += usize::from(c.after_tick(got as usize).is_some());
        }
        assert_eq!(rearms, 0);
    }

    #[test]
    fn one_tick_sets_a_first_estimate_and_empty_ticks_lengthen_the_period() {
        let mut c = Cadence::new();
        // 6 datagrams in 3 ms: 2 000/s, 16 ms wanted, capped at 10.
        assert_eq!(c.after_tick(6), Some(MAX_PERIOD));
        assert_eq!(c.after_tick(0), None, "already at the longest period");
        let mut c = Cadence::new();
        // 96 in 3 ms: 32 000/s, 1 ms.
        assert_eq!(c.after_tick(96), Some(MIN_PERIOD));
    }

    #[test]
    fn the_new_period_is_reported_exactly_when_it_changes() {
        let mut c = Cadence::new();
        for got in [0usize, 1, 5, 40, 300, 3, 0, 17, 17, 17] {
            let before = c.period();
            match c.after_tick(got) {
                Some(p) => {
                    assert_ne!(p, before);
                    assert_eq!(p, c.period());
                }
                None => assert_eq!(c.period(), before),
            }
            assert!(c.period() >= MIN_PERIOD && c.period() <= MAX_PERIOD);
        }
    }
}
