//! Reconnecting a link, sans-IO: when to dial, how long to back off, when a connection has
//! lasted long enough to start the back-off afresh, and which connection events to raise.
//!
//! Every link that dials out and retries forever goes through one [`Reconnect`]: the SRT
//! input and output callers (`input/srt.rs`, `output/srt.rs`), the RTSP input
//! (`input/rtsp.rs`) and the manager link (`manager/link.rs`), and so will tunnels and push
//! outputs. The machine holds no socket and reads no clock. Its shell asks [`Reconnect::poll`]
//! what to do (dial now, or nothing before an instant), dials, reports how the attempt ended
//! ([`Reconnect::connected`], [`Reconnect::failed`]) and later how the connection ended
//! ([`Reconnect::disconnected`]), each with the current time, raises the event the machine
//! returns, and sleeps until the machine's deadline. The tests below drive it on fake time.
//!
//! The rules:
//! - the first attempt is due at once; after a failed attempt or a drop the next one waits
//!   the [`Backoff`]'s next delay (`min` doubling to `max`, optionally scaled by a seeded
//!   jitter in [0.75, 1]);
//! - **stable after**: a connection that stayed up at least `stable_after` restarts the
//!   back-off from `min` when it drops; a shorter one does not, so a peer that accepts and
//!   drops at once keeps being retried at the slowing pace. The rule is evaluated at the
//!   drop, because the back-off is only read then: no timer runs while the link is up, and
//!   the result is the same as resetting it at the moment the connection became stable;
//! - an attempt may have a deadline (`with_connect_timeout`, re-armed for each further
//!   handshake step by [`Reconnect::step_deadline`]); past it `poll` says
//!   [`Next::TimedOut`] and the shell abandons the attempt and reports the failure, with its
//!   own reason and, for the manager's authentication, its own back-off
//!   ([`Reconnect::failed_with_delay`]);
//! - events are latched by [`ConnectionCycle`] (the seed's deduplication rule, in one place):
//!   "connected" on each connection, one "disconnected" when an established connection
//!   drops, one "failed" for the first failed attempt of a cycle that has not connected,
//!   and silence for every other failed retry until the link has been up again.
//!
//! The values are the users': SRT callers 250 ms doubling to 5 s with no jitter; an SRT
//! input caller's connection is stable after 10 s, an SRT output caller's after 250 ms (the
//! one check interval it always needed, so a restarted receiver gets its stream back at
//! once); RTSP a fixed `reconnect_delay_secs`; the manager 1 s doubling to 60 s with jitter,
//! stable after 60 s, 10 s to connect and 10 s to authenticate.
//!
//! Before this machine each user reset its back-off its own way; with the one rule above,
//! the manager's is unchanged, the SRT input caller's "lasted more than 10 s" is now "at
//! least 10 s", and the SRT output caller, which reset the back-off at any 250 ms check that
//! found its connection up, now resets it when a connection that lasted 250 ms drops: the same
//! outcome, except that it no longer depends on where the checks fell.

use std::fmt;
use std::time::{Duration, Instant};

use crate::events::latch::{ConnectionCycle, LinkEvent};

/// Exponential back-off: the n-th delay is `min * 2^n` capped at `max`, optionally scaled by
/// a random factor in [0.75, 1.0] so a fleet that lost its peer at the same moment does not
/// come back in lockstep. The jitter comes from a seeded xorshift64*, so a given seed always
/// gives the same delays (and the tests can check them).
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
    /// The jitter's generator state; `None` for exact delays.
    rng: Option<u64>,
}

impl Backoff {
    /// `min` doubling to `max` (at least `min`), without jitter.
    pub fn new(min: Duration, max: Duration) -> Self {
        Backoff {
            min,
            max: max.max(min),
            next: min,
            rng: None,
        }
    }

    /// The same delay every time.
    pub fn fixed(delay: Duration) -> Self {
        Self::new(delay, delay)
    }

    /// Scale each delay by a factor in [0.75, 1.0] drawn from `seed`.
    pub fn with_jitter(mut self, seed: u64) -> Self {
        // xorshift must not start at 0.
        self.rng = Some(seed | 1);
        self
    }

    /// Start again from `min`.
    pub fn reset(&mut self) {
        self.next = self.min;
    }

    /// The wait before the next attempt; each call doubles the following one, up to `max`.
    pub fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = base.saturating_mul(2).min(self.max);
        let Some(rng) = &mut self.rng else {
            return base;
        };
        // xorshift64*: plenty for jitter, and deterministic for a given seed.
        *rng ^= *rng >> 12;
        *rng ^= *rng << 25;
        *rng ^= *rng >> 27;
        let r = rng.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11; // 53 random bits
        let unit = r as f64 / (1u64 << 53) as f64;
        base.mul_f64(1.0 - 0.25 * unit)
    }
}

/// What the shell does next ([`Reconnect::poll`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Start a connection attempt now (the machine has counted it as started).
    Connect,
    /// Nothing to do before this instant: poll again then.
    Wait(Instant),
    /// The attempt under way ran past its deadline: abandon it and report the failure.
    TimedOut,
    /// Nothing timed: the link is up, or an attempt without a deadline is under way. The
    /// next move comes from the shell's report.
    Idle,
}

/// How an attempt or a connection ended, as the machine sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Down {
    /// What to raise, if anything (already latched: `None` for a silent retry).
    pub event: Option<LinkEvent>,
    /// The back-off before the next attempt.
    pub delay: Duration,
    /// When the next attempt is due (`now + delay`).
    pub retry_at: Instant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Backing off; the next attempt is due at `until`.
    Waiting {
        until: Instant,
    },
    /// An attempt is under way; it is given up at `deadline`, if any.
    Connecting {
        deadline: Option<Instant>,
    },
    Up,
}

/// One reconnecting link's decisions: see the module docs.
#[derive(Debug, Clone)]
pub struct Reconnect {
    backoff: Backoff,
    stable_after: Duration,
    connect_timeout: Option<Duration>,
    state: State,
    /// When `state` began.
    since: Instant,
    cycle: ConnectionCycle,
    attempts: u64,
    last_error: Option<String>,
}

impl Reconnect {
    /// A link that dials at once (its first [`Reconnect::poll`] says [`Next::Connect`]),
    /// backs off with `backoff`, and starts the back-off afresh after a connection that
    /// lasted `stable_after`.
    pub fn new(backoff: Backoff, stable_after: Duration, now: Instant) -> Self {
        Reconnect {
            backoff,
            stable_after,
            connect_timeout: None,
            state: State::Waiting { until: now },
            since: now,
            cycle: ConnectionCycle::new(now),
            attempts: 0,
            last_error: None,
        }
    }

    /// Give each attempt `timeout` to connect (without one, the shell's connect call has its
    /// own, or waits for its peer as long as it takes).
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = Some(timeout);
        self
    }

    /// What to do now: dial, or nothing before an instant. A due attempt is counted as
    /// started when this says [`Next::Connect`].
    pub fn poll(&mut self, now: Instant) -> Next {
        match self.state {
            State::Waiting { until } if now >= until => {
                self.state = State::Connecting {
                    deadline: self.connect_timeout.map(|t| now + t),
                };
                self.since = now;
                self.attempts += 1;
                Next::Connect
            }
            State::Waiting { until } => Next::Wait(until),
            State::Connecting {
                deadline: Some(deadline),
            } if now >= deadline => Next::TimedOut,
            State::Connecting {
                deadline: Some(deadline),
            } => Next::Wait(deadline),
            State::Connecting { deadline: None } | State::Up => Next::Idle,
        }
    }

    /// When [`Reconnect::poll`] has something to do next; `None` while nothing is timed.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::Waiting { until } => Some(until),
            State::Connecting { deadline } => deadline,
            State::Up => None,
        }
    }

    /// The attempt under way reached a further handshake step (authentication after the
    /// connect, say) that has `timeout` of its own. Nothing happens unless connecting.
    pub fn step_deadline(&mut self, now: Instant, timeout: Duration) {
        if let State::Connecting { deadline } = &mut self.state {
            *deadline = Some(now + timeout);
        }
    }

    /// The attempt (or an accept) succeeded. `Some` is the "connected" event; `None` if the
    /// link was already up.
    pub fn connected(&mut self, now: Instant) -> Option<LinkEvent> {
        if matches!(self.state, State::Up) {
            return None;
        }
        self.state = State::Up;
        self.since = now;
        self.cycle.connected(now)
    }

    /// The attempt under way failed (or the connection, if it was up: then this is
    /// [`Reconnect::disconnected`]). Backs off with the link's back-off.
    pub fn failed(&mut self, now: Instant, reason: impl fmt::Display) -> Down {
        self.end(now, reason, None)
    }

    /// As [`Reconnect::failed`], but the wait is `delay`, which the caller drew from a
    /// back-off of its own (the manager's after a failed authentication); the link's own
    /// back-off does not advance.
    pub fn failed_with_delay(
        &mut self,
        now: Instant,
        reason: impl fmt::Display,
        delay: Duration,
    ) -> Down {
        self.end(now, reason, Some(delay))
    }

    /// The established connection dropped (or, if none was up, the attempt failed).
    pub fn disconnected(&mut self, now: Instant, reason: impl fmt::Display) -> Down {
        self.end(now, reason, None)
    }

    fn end(&mut self, now: Instant, reason: impl fmt::Display, delay: Option<Duration>) -> Down {
        let event = match self.state {
            // Nothing was under way (a report about an attempt already given up): the
            // wait in progress stands.
            State::Waiting { until } => {
                return Down {
                    event: None,
                    delay: until.saturating_duration_since(now),
                    retry_at: until,
                };
            }
            State::Connecting { .. } => self.cycle.attempt_failed(now),
            State::Up => {
                if now.saturating_duration_since(self.since) >= self.stable_after {
                    self.backoff.reset();
                }
                self.cycle.lost(now)
            }
        };
        self.last_error = Some(reason.to_string());
        let delay = delay.unwrap_or_else(|| self.backoff.next_delay());
        let retry_at = now + delay;
        self.state = State::Waiting { until: retry_at };
        self.since = now;
        Down {
            event,
            delay,
            retry_at,
        }
    }

    pub fn is_up(&self) -> bool {
        matches!(self.state, State::Up)
    }

    /// Whether an attempt is under way.
    pub fn is_connecting(&self) -> bool {
        matches!(self.state, State::Connecting { .. })
    }

    /// When the current state began: the last attempt's start, connection, or end.
    pub fn since(&self) -> Instant {
        self.since
    }

    /// Attempts started.
    pub fn attempts(&self) -> u64 {
        self.attempts
    }

    /// Failed attempts since the link was last up.
    pub fn failed_attempts(&self) -> u32 {
        self.cycle.failed_attempts()
    }

    /// Why the last attempt or connection ended.
    pub fn last_error(&self) -> Option<&str> {
        self.last_error.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::Clock;

    const MS: Duration = Duration::from_millis(1);
    const SEC: Duration = Duration::from_secs(1);

    /// The SRT callers' values, the machine's most common use.
    fn srt(now: Instant) -> Reconnect {
        Reconnect::new(Backoff::new(250 * MS, 5 * SEC), 10 * SEC, now)
    }

    fn ms(d: Duration) -> u64 {
        d.as_millis() as u64
    }

    #[test]
    fn backoff_doubles_to_the_cap_and_resets() {
        let mut b = Backoff::new(250 * MS, 5 * SEC);
        let got: Vec<u64> = (0..8).map(|_| ms(b.next_delay())).collect();
        assert_eq!(got, [250, 500, 1000, 2000, 4000, 5000, 5000, 5000]);
        b.reset();
        assert_eq!(b.next_delay(), 250 * MS);
        let mut fixed = Backoff::fixed(5 * SEC);
        assert!((0..5).all(|_| fixed.next_delay() == 5 * SEC));
        // A cap below the first delay is the first delay; a huge one does not overflow.
        assert_eq!(Backoff::new(SEC, MS).next_delay(), SEC);
        let mut big = Backoff::new(SEC, Duration::MAX);
        assert!((0..100).all(|_| big.next_delay() >= SEC));
    }

    #[test]
    fn jitter_is_deterministic_for_a_seed_and_within_bounds() {
        let delays = |seed| {
            let mut b = Backoff::new(SEC, 60 * SEC).with_jitter(seed);
            (0..12).map(|_| b.next_delay()).collect::<Vec<_>>()
        };
        let a = delays(42);
        assert_eq!(a, delays(42), "the same seed gives the same delays");
        assert_ne!(a, delays(44), "another seed, other delays");
        // Seed 0 is usable (xorshift must not start at 0).
        assert!(delays(0).iter().all(|d| !d.is_zero()));
        let bases = [1, 2, 4, 8, 16, 32, 60, 60, 60, 60, 60, 60].map(|s| s * SEC);
        for (d, b) in a.iter().zip(bases) {
            assert!(*d >= b * 3 / 4 && *d <= b, "{d:?} vs {b:?}");
        }
        assert!(a.iter().zip(bases).any(|(d, b)| *d != b), "jittered");
        // Over many draws the factor covers its range.
        let mut b = Backoff::fixed(SEC).with_jitter(7);
        let f: Vec<f64> = (0..1000).map(|_| b.next_delay().as_secs_f64()).collect();
        let (lo, hi) = f
            .iter()
            .fold((1.0f64, 0.0f64), |(l, h), x| (l.min(*x), h.max(*x)));
        assert!(
            (0.75..0.76).contains(&lo) && (0.99..=1.0).contains(&hi),
            "{lo} {hi}"
        );
    }

    #[test]
    fn dials_at_once_then_waits_the_backoff_after_each_failure() {
        let c = Clock::new();
        let mut r = srt(c.t(0));
        assert_eq!(r.poll(c.t(0)), Next::Connect);
        assert!(r.is_connecting());
        // No deadline of its own: nothing timed until the shell reports.
        assert_eq!(r.poll(c.t(60_000)), Next::Idle);
        assert_eq!(r.poll_timeout(), None);
        let mut now = 0;
        let mut waits = Vec::new();
        for _ in 0..7 {
            let d = r.failed(c.t(now), "refused");
            assert_eq!(d.retry_at, c.t(now) + d.delay);
            assert_eq!(r.poll(c.t(now)), Next::Wait(d.retry_at));
            assert_eq!(r.poll_timeout(), Some(d.retry_at));
            // Not a moment early.
            assert_eq!(r.poll(d.retry_at - MS), Next::Wait(d.retry_at));
            waits.push(ms(d.delay));
            now += ms(d.delay);
            assert_eq!(r.poll(c.t(now)), Next::Connect);
        }
        assert_eq!(waits, [250, 500, 1000, 2000, 4000, 5000, 5000]);
        assert_eq!((r.attempts(), r.failed_attempts()), (8, 7));
        assert_eq!(r.last_error(), Some("refused"));
    }

    #[test]
    fn the_backoff_restarts_only_after_a_connection_that_lasted_stable_after() {
        let c = Clock::new();
        let mut r = srt(c.t(0));
        // Four failures: the next wait would be 4 s.
        let mut now = 0;
        for _ in 0..4 {
            r.poll(c.t(now));
            now += ms(r.failed(c.t(now), "refused").delay);
        }
        // Up for just under 10 s: a flap, the back-off goes on.
        r.poll(c.t(now));
        r.connected(c.t(now));
        now += 9_999;
        let d = r.disconnected(c.t(now), "eof");
        assert_eq!(ms(d.delay), 4_000);
        now += 4_000;
        // Up for exactly 10 s: stable, the next wait is the first one again.
        assert_eq!(r.poll(c.t(now)), Next::Connect);
        r.connected(c.t(now));
        now += 10_000;
        assert_eq!(ms(r.disconnected(c.t(now), "eof").delay), 250);
        // And it doubles again from there.
        r.poll(c.t(now + 250));
        assert_eq!(ms(r.failed(c.t(now + 250), "refused").delay), 500);
    }

    /// The seed's deduplication rule: one "failed" per failing cycle, one "disconnected"
    /// per drop, silent retries, "connected" again after each recovery.
    #[test]
    fn events_are_latched_per_connection_cycle() {
        let c = Clock::new();
        let mut r = srt(c.t(0));
        let mut now = 0;
        let mut raised = Vec::new();
        let fail = |r: &mut Reconnect, now: &mut u64, times: usize, raised: &mut Vec<_>| {
            for _ in 0..times {
                assert_eq!(r.poll(c.t(*now)), Next::Connect);
                let d = r.failed(c.t(*now), "unreachable");
                raised.extend(d.event);
                *now += ms(d.delay);
            }
        };
        // Unreachable from the start: one "failed" for 20 attempts.
        fail(&mut r, &mut now, 20, &mut raised);
        assert_eq!(raised, [LinkEvent::Failed]);
        raised.clear();
        r.poll(c.t(now));
        assert_eq!(
            r.connected(c.t(now)),
            Some(LinkEvent::Connected {
                down_for: Some(c.t(now) - c.t(0)),
                failed_attempts: 20,
            })
        );
        assert!(r.is_up());
        assert_eq!(r.poll(c.t(now)), Next::Idle);
        assert_eq!(r.connected(c.t(now + 1)), None, "already up");
        // A drop: one "disconnected", then silent retries (the drop reported the cycle).
        now += 30_000;
        let d = r.disconnected(c.t(now), "eof");
        assert_eq!(d.event, Some(LinkEvent::Lost { up_for: 30 * SEC }));
        assert_eq!(ms(d.delay), 250, "stable: the back-off started afresh");
        now += 250;
        fail(&mut r, &mut now, 10, &mut raised);
        assert_eq!(raised, []);
        assert_eq!(r.failed_attempts(), 10);
        // Back up: "connected" again, counting the silent retries.
        r.poll(c.t(now));
        assert!(matches!(
            r.connected(c.t(now)),
            Some(LinkEvent::Connected {
                down_for: Some(_),
                failed_attempts: 10
            })
        ));
        // The next cycle reports its drop again.
        now += 1_000;
        assert!(matches!(
            r.disconnected(c.t(now), "eof").event,
            Some(LinkEvent::Lost { .. })
        ));
        // A failure reported while up is a drop.
        let mut r = srt(c.t(0));
        r.poll(c.t(0));
        r.connected(c.t(0));
        assert!(matches!(
            r.failed(c.t(5_000), "reset").event,
            Some(LinkEvent::Lost { .. })
        ));
    }

    #[test]
    fn an_attempt_past_its_connect_timeout_is_given_up_and_backs_off() {
        let c = Clock::new();
        let mut r = Reconnect::new(Backoff::new(SEC, 60 * SEC), 60 * SEC, c.t(0))
            .with_connect_timeout(10 * SEC);
        assert_eq!(r.poll(c.t(0)), Next::Connect);
        assert_eq!(r.poll_timeout(), Some(c.t(10_000)));
        assert_eq!(r.poll(c.t(9_999)), Next::Wait(c.t(10_000)));
        assert_eq!(r.poll(c.t(10_000)), Next::TimedOut);
        // It stays timed out until the shell reports the failure.
        assert_eq!(r.poll(c.t(10_500)), Next::TimedOut);
        let d = r.failed(c.t(10_500), "connect timed out");
        assert_eq!(d.event, Some(LinkEvent::Failed));
        assert_eq!(r.poll(c.t(10_500)), Next::Wait(c.t(11_500)));
        // A second step (an authentication) re-arms the deadline from its start.
        assert_eq!(r.poll(c.t(11_500)), Next::Connect);
        r.step_deadline(c.t(12_000), 5 * SEC);
        assert_eq!(r.poll(c.t(16_999)), Next::Wait(c.t(17_000)));
        assert_eq!(r.poll(c.t(17_000)), Next::TimedOut);
        // Up: no deadline; a step while up changes nothing.
        r.connected(c.t(17_000));
        r.step_deadline(c.t(17_000), SEC);
        assert_eq!(r.poll_timeout(), None);
        assert_eq!(r.poll(c.t(99_000)), Next::Idle);
    }

    #[test]
    fn a_delay_of_the_callers_own_leaves_the_backoff_where_it_was() {
        let c = Clock::new();
        let mut r = srt(c.t(0));
        r.poll(c.t(0));
        assert_eq!(ms(r.failed(c.t(0), "refused").delay), 250);
        r.poll(c.t(250));
        let d = r.failed_with_delay(c.t(250), "auth", 40 * SEC);
        assert_eq!((d.delay, d.retry_at), (40 * SEC, c.t(40_250)));
        assert_eq!(d.event, None, "the cycle's failure was already reported");
        r.poll(c.t(40_250));
        assert_eq!(ms(r.failed(c.t(40_250), "refused").delay), 500);
    }

    #[test]
    fn a_late_report_while_waiting_changes_nothing() {
        let c = Clock::new();
        let mut r = srt(c.t(0));
        r.poll(c.t(0));
        let d = r.failed(c.t(0), "refused");
        // The abandoned attempt's own failure arrives later: ignored, same wait.
        let late = r.failed(c.t(100), "late");
        assert_eq!((late.event, late.retry_at), (None, d.retry_at));
        assert_eq!(ms(late.delay), 150);
        assert_eq!(r.disconnected(c.t(100), "late").retry_at, d.retry_at);
        assert_eq!(r.last_error(), Some("refused"));
        assert_eq!(r.failed_attempts(), 1);
    }

    /// A shell's loop on fake time: a peer that is away for the first 20 s, up for 30 s,
    /// away again for 12 s. Attempts follow the back-off; events are one per transition.
    #[test]
    fn a_shell_loop_against_a_peer_that_comes_and_goes() {
        let c = Clock::new();
        let up = |t: u64| (20_000..50_000).contains(&t) || t >= 62_000;
        let mut r = srt(c.t(0));
        let mut now = 0u64;
        let mut attempts = Vec::new();
        let mut events = Vec::new();
        let mut session_end = None;
        while now < 70_000 {
            match r.poll(c.t(now)) {
                Next::Wait(t) => now = ms(t - c.t(0)),
                Next::Connect => {
                    attempts.push(now);
                    if up(now) {
                        events.extend(r.connected(c.t(now)).map(|e| (now, e)));
                        // The session lasts until the peer goes away (or the end).
                        let end = if now < 50_000 { 50_000 } else { 70_000 };
                        session_end = Some(end);
                        now = end;
                        if now < 70_000 {
                            events.extend(r.disconnected(c.t(now), "eof").event.map(|e| (now, e)));
                        }
                    } else {
                        // Each failed attempt takes 2 s (a handshake timeout).
                        now += 2_000;
                        events.extend(r.failed(c.t(now), "timeout").event.map(|e| (now, e)));
                    }
                }
                Next::TimedOut | Next::Idle => unreachable!("no deadline, reports at once"),
            }
        }
        assert_eq!(session_end, Some(70_000));
        // 2 s per try plus 250, 500, 1000, 2000, 4000, 5000 ms...
        assert_eq!(
            &attempts[..7],
            [0, 2_250, 4_750, 7_750, 11_750, 17_750, 24_750]
        );
        // After the stable session's drop at 50 s: 250 ms again.
        assert_eq!(attempts[7], 50_250);
        let kinds: Vec<(u64, &str)> = events
            .iter()
            .map(|(t, e)| {
                let k = match e {
                    LinkEvent::Failed => "failed",
                    LinkEvent::Connected { .. } => "connected",
                    LinkEvent::Lost { .. } => "disconnected",
                };
                (*t, k)
            })
            .collect();
        let back = *attempts.iter().find(|&&t| t >= 62_000).unwrap();
        assert_eq!(
            kinds,
            [
                (2_000, "failed"),
                (24_750, "connected"),
                (50_000, "disconnected"),
                (back, "connected")
            ]
        );
    }
}
