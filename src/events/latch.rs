//! State-transition latching: the seed's Deduplication rules as two small sans-IO helpers.
//!
//! Events fire on transitions, never periodically: a disconnect fires once when the link
//! drops, not on every poll while it is down. For retry loops (SRT caller, RTSP, manager,
//! tunnel) the failure event fires once per connection cycle: while the remote stays
//! unreachable, further failed attempts are silent until a connection succeeds and then
//! drops again. Both helpers take the time as an argument so they can be driven on fake time,
//! and return what to raise; the caller picks the catalog constructor.
//!
//! [`ConnectionCycle`] is the one place these rules live: a link that dials out gets it
//! through `net::reconnect::Reconnect` (which adds the retry timing), a listener, which does
//! not dial, uses it directly.

use std::time::{Duration, Instant};

/// Latches a value: [`Latch::set`] reports only changes.
#[derive(Debug, Clone)]
pub struct Latch<S> {
    state: S,
    since: Instant,
}

/// A change reported by [`Latch::set`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change<S> {
    pub from: S,
    pub to: S,
    /// How long the latch held `from`.
    pub held: Duration,
}

impl<S: PartialEq + Clone> Latch<S> {
    /// Starts in `initial` (no event for it).
    pub fn new(initial: S, now: Instant) -> Self {
        Latch {
            state: initial,
            since: now,
        }
    }

    pub fn get(&self) -> &S {
        &self.state
    }

    /// Moves to `to`; `Some` only if that is a change.
    pub fn set(&mut self, to: S, now: Instant) -> Option<Change<S>> {
        if self.state == to {
            return None;
        }
        let from = std::mem::replace(&mut self.state, to.clone());
        let held = now.saturating_duration_since(self.since);
        self.since = now;
        Some(Change { from, to, held })
    }
}

/// What a [`ConnectionCycle`] says to raise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkEvent {
    /// The link came up. `down_for` is `None` for the first connection; `failed_attempts`
    /// counts the attempts that failed since the link was last up (reported or not).
    Connected {
        down_for: Option<Duration>,
        failed_attempts: u32,
    },
    /// An established link dropped (the "disconnected, reconnecting" event).
    Lost { up_for: Duration },
    /// The first failed attempt of a cycle in which the link has not been up (the
    /// "connection failed" event). Later failures of the same cycle are silent.
    Failed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Link {
    /// Never connected since this cycle started.
    Initial,
    Up,
    Down,
}

/// Once-per-cycle latching for a reconnecting link.
///
/// A cycle starts at creation and after each drop of an established link. Within a cycle the
/// first event is either [`LinkEvent::Lost`] (the link was up and dropped) or
/// [`LinkEvent::Failed`] (the first attempt failed before any connection); every other failure
/// until the next [`LinkEvent::Connected`] is silent.
#[derive(Debug, Clone)]
pub struct ConnectionCycle {
    link: Link,
    since: Instant,
    /// Whether this cycle's failure has been reported.
    reported: bool,
    failed_attempts: u32,
}

impl ConnectionCycle {
    pub fn new(now: Instant) -> Self {
        ConnectionCycle {
            link: Link::Initial,
            since: now,
            reported: false,
            failed_attempts: 0,
        }
    }

    pub fn is_up(&self) -> bool {
        self.link == Link::Up
    }

    /// Failed attempts since the link was last up.
    pub fn failed_attempts(&self) -> u32 {
        self.failed_attempts
    }

    /// A connection (or accept) succeeded.
    pub fn connected(&mut self, now: Instant) -> Option<LinkEvent> {
        if self.link == Link::Up {
            return None;
        }
        let down_for = (self.link == Link::Down).then(|| now.saturating_duration_since(self.since));
        let failed_attempts = std::mem::take(&mut self.failed_attempts);
        self.link = Link::Up;
        self.since = now;
        self.reported = false;
        Some(LinkEvent::Connected {
            down_for,
            failed_attempts,
        })
    }

    /// The established link dropped. Silent unless the link was up.
    pub fn lost(&mut self, now: Instant) -> Option<LinkEvent> {
        if self.link != Link::Up {
            return None;
        }
        let up_for = now.saturating_duration_since(self.since);
        self.link = Link::Down;
        self.since = now;
        // The drop is this cycle's report: retries that fail after it stay silent.
        self.reported = true;
        Some(LinkEvent::Lost { up_for })
    }

    /// An attempt to connect failed. A failure while up means the link dropped.
    pub fn attempt_failed(&mut self, now: Instant) -> Option<LinkEvent> {
        if self.link == Link::Up {
            self.failed_attempts += 1;
            return self.lost(now);
        }
        self.failed_attempts = self.failed_attempts.saturating_add(1);
        if self.reported {
            return None;
        }
        self.reported = true;
        if self.link == Link::Initial {
            // Down time is measured from the first failure when it never was up.
            self.since = now;
            self.link = Link::Down;
        }
        Some(LinkEvent::Failed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::Clock;

    #[test]
    fn latch_reports_changes_only_with_the_time_held() {
        let c = Clock::new();
        let mut l = Latch::new("ok", c.t(0));
        assert_eq!(l.set("ok", c.t(10)), None);
        assert_eq!(
            l.set("degraded", c.t(100)),
            Some(Change {
                from: "ok",
                to: "degraded",
                held: Duration::from_millis(100)
            })
        );
        for ms in [200, 300, 400] {
            assert_eq!(l.set("degraded", c.t(ms)), None, "no repeat at {ms} ms");
        }
        assert_eq!(
            l.set("ok", c.t(1_100)).map(|ch| ch.held),
            Some(Duration::from_millis(1_000))
        );
        assert_eq!(*l.get(), "ok");
    }

    #[test]
    fn unreachable_remote_reports_its_first_failure_only() {
        let c = Clock::new();
        let mut cy = ConnectionCycle::new(c.t(0));
        assert_eq!(cy.attempt_failed(c.t(0)), Some(LinkEvent::Failed));
        for i in 1..=50 {
            assert_eq!(
                cy.attempt_failed(c.t(i * 1_000)),
                None,
                "retry {i} is silent"
            );
        }
        assert_eq!(
            cy.connected(c.t(60_000)),
            Some(LinkEvent::Connected {
                down_for: Some(Duration::from_secs(60)),
                failed_attempts: 51
            })
        );
        assert!(cy.is_up());
    }

    #[test]
    fn drop_fires_once_then_retries_are_silent_until_connected_again() {
        let c = Clock::new();
        let mut cy = ConnectionCycle::new(c.t(0));
        assert_eq!(
            cy.connected(c.t(5)),
            Some(LinkEvent::Connected {
                down_for: None,
                failed_attempts: 0
            })
        );
        assert_eq!(cy.connected(c.t(6)), None, "already up");
        assert_eq!(
            cy.lost(c.t(10_005)),
            Some(LinkEvent::Lost {
                up_for: Duration::from_secs(10)
            })
        );
        assert_eq!(cy.lost(c.t(10_006)), None, "already down");
        // Reconnect attempts after the drop: the drop was this cycle's event.
        for i in 1..=10 {
            assert_eq!(cy.attempt_failed(c.t(10_005 + i * 2_000)), None);
        }
        assert_eq!(cy.failed_attempts(), 10);
        assert_eq!(
            cy.connected(c.t(40_005)),
            Some(LinkEvent::Connected {
                down_for: Some(Duration::from_secs(30)),
                failed_attempts: 10
            })
        );
        // A new cycle: the next drop fires again, and so does the next first failure.
        assert!(matches!(cy.lost(c.t(50_000)), Some(LinkEvent::Lost { .. })));
        assert_eq!(cy.attempt_failed(c.t(51_000)), None);
    }

    #[test]
    fn failure_while_up_is_a_drop() {
        let c = Clock::new();
        let mut cy = ConnectionCycle::new(c.t(0));
        cy.connected(c.t(0));
        assert_eq!(
            cy.attempt_failed(c.t(3_000)),
            Some(LinkEvent::Lost {
                up_for: Duration::from_secs(3)
            })
        );
        assert_eq!(cy.attempt_failed(c.t(4_000)), None);
        assert_eq!(
            cy.connected(c.t(5_000)),
            Some(LinkEvent::Connected {
                down_for: Some(Duration::from_secs(2)),
                failed_attempts: 2
            })
        );
    }

    #[test]
    fn connect_after_first_cycle_failure_then_flap_reports_each_transition() {
        let c = Clock::new();
        let mut cy = ConnectionCycle::new(c.t(0));
        let mut raised = Vec::new();
        // fail, fail, up, down, fail, up, down: Failed, Connected, Lost, Connected, Lost.
        let steps: [(u64, u8); 7] = [(0, 0), (1, 0), (2, 1), (3, 2), (4, 0), (5, 1), (6, 2)];
        for (ms, what) in steps {
            let now = c.t(ms * 1_000);
            let ev = match what {
                0 => cy.attempt_failed(now),
                1 => cy.connected(now),
                _ => cy.lost(now),
            };
            raised.extend(ev);
        }
        let kinds: Vec<&str> = raised
            .iter()
            .map(|e| match e {
                LinkEvent::Connected { .. } => "connected",
                LinkEvent::Lost { .. } => "lost",
                LinkEvent::Failed => "failed",
            })
            .collect();
        assert_eq!(kinds, ["failed", "connected", "lost", "connected", "lost"]);
    }
}
