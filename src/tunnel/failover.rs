//! Which relay a relay-mode tunnel dials, and when (`shared/spec/relay-protocol.md`, "Failover
//! and backoff"), sans-IO, on top of the shared reconnect machine (`net/reconnect.rs`).
//!
//! A tunnel has one or two relays. The rules:
//! - an attempt is given [`CONNECT_TIMEOUT`] to bring the QUIC connection up
//!   ([`FailoverNext::TimedOut`] past it); from there the relay session's own deadlines take
//!   over (the `hello_ack` within 6 s, the peer within 10 s);
//! - an attempt that ends without the tunnel getting ready (refused, timed out, no
//!   `hello_ack`, or the peer did not bind within the wait limit and there is another relay:
//!   [`Failover::switch_on_wait`]) moves to the next relay **at once**; after a full cycle,
//!   every relay tried once without success, the next attempt waits the back-off, 1 s
//!   doubling to 60 s;
//! - a connection that was ready and drops moves to the next relay too, at once if there is
//!   another, else after the back-off; a connection that stayed ready at least
//!   [`STABLE_AFTER`] first restarts the back-off from 1 s (the reconnect machine's
//!   "stable after");
//! - a bind rejection waits [`REJECTED_DELAY`] (the back-off's maximum) before the next
//!   attempt instead of looping, and [`Failover::rejected`] says to raise the critical event
//!   only for the first rejection until the tunnel is ready again.
//!
//! The events are the reconnect machine's, latched per connection cycle (the seed's rule):
//! [`LinkEvent::Connected`] when the tunnel gets ready after being down (the seed's
//! "connected to relay" is "QUIC connection established and TunnelReady received"), one
//! [`LinkEvent::Lost`] when a ready tunnel's relay connection ends, one [`LinkEvent::Failed`]
//! for the first failed attempt of a cycle that has not been ready, silence for the retries.
//! A peer that goes away while the relay connection stays up is the relay session's
//! `PeerDown`, not an end of the connection.

use std::fmt;
use std::time::{Duration, Instant};

use crate::events::latch::LinkEvent;
use crate::net::reconnect::{Backoff, Next, Reconnect};

/// From starting an attempt to the QUIC connection being up.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(6);
/// The back-off after a full cycle of failed attempts: the first wait, and the cap.
pub const BACKOFF_MIN: Duration = Duration::from_secs(1);
pub const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// A tunnel that stayed ready this long restarts the back-off when its connection drops.
pub const STABLE_AFTER: Duration = Duration::from_secs(10);
/// The wait after a bind rejection.
pub const REJECTED_DELAY: Duration = BACKOFF_MAX;

/// What the shell does next ([`Failover::poll`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailoverNext {
    /// Start an attempt to this relay (an index into the tunnel's relays) now.
    Dial { relay_index: usize },
    /// Nothing to do before this instant (the back-off, or the connect deadline).
    Wait(Instant),
    /// The attempt under way is past [`CONNECT_TIMEOUT`]: abandon it and report
    /// [`Failover::failed`].
    TimedOut,
    /// Nothing timed here: connected (the session has its own deadlines) or ready. The next
    /// move comes from a report.
    Idle,
}

/// One relay-mode tunnel's choice of relay and timing: see the module docs.
#[derive(Debug, Clone)]
pub struct Failover {
    relays: usize,
    /// The relay of the attempt under way, or of the next one.
    current: usize,
    reconnect: Reconnect,
    /// Relays tried in this cycle without the tunnel getting ready.
    tried: usize,
    /// The attempt under way must have connected by then.
    connect_deadline: Option<Instant>,
    /// A bind rejection was reported since the tunnel was last ready.
    rejection_reported: bool,
}

impl Failover {
    /// A tunnel over `relays` relays (1 or 2; at least 1 is assumed), dialling the first at
    /// once.
    pub fn new(relays: usize, now: Instant) -> Self {
        Failover {
            relays: relays.max(1),
            current: 0,
            reconnect: Reconnect::new(Backoff::new(BACKOFF_MIN, BACKOFF_MAX), STABLE_AFTER, now),
            tried: 0,
            connect_deadline: None,
            rejection_reported: false,
        }
    }

    /// What to do now.
    pub fn poll(&mut self, now: Instant) -> FailoverNext {
        if let Some(deadline) = self.connect_deadline {
            return if now >= deadline {
                FailoverNext::TimedOut
            } else {
                FailoverNext::Wait(deadline)
            };
        }
        match self.reconnect.poll(now) {
            Next::Connect => {
                self.connect_deadline = Some(now + CONNECT_TIMEOUT);
                FailoverNext::Dial {
                    relay_index: self.current,
                }
            }
            Next::Wait(t) => FailoverNext::Wait(t),
            // The machine has no deadline of its own (the connect deadline is ours, lifted
            // at `connected`): attempts under way after that, and ready tunnels, are idle.
            Next::TimedOut | Next::Idle => FailoverNext::Idle,
        }
    }

    /// When [`Failover::poll`] has something to do; `None` while nothing is timed.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.connect_deadline.or(self.reconnect.poll_timeout())
    }

    /// The relay of the attempt under way, or of the next one.
    pub fn relay_index(&self) -> usize {
        self.current
    }

    pub fn relays(&self) -> usize {
        self.relays
    }

    /// The QUIC connection to the relay is up: the connect deadline is lifted (the session's
    /// `hello_ack` and wait deadlines follow). No event: "connected" waits for ready.
    pub fn connected(&mut self, _now: Instant) {
        if self.reconnect.is_connecting() {
            self.connect_deadline = None;
        }
    }

    /// The tunnel is ready on this relay: the "connected to relay" event when it was down
    /// (`None` if already ready, after a peer came back).
    pub fn ready(&mut self, now: Instant) -> Option<LinkEvent> {
        self.connect_deadline = None;
        self.tried = 0;
        self.rejection_reported = false;
        self.reconnect.connected(now)
    }

    /// Whether a session that waited too long for the peer should leave this relay for the
    /// other (then the shell closes the connection and reports [`Failover::failed`]). With
    /// one relay there is nowhere to go: it keeps waiting.
    pub fn switch_on_wait(&self) -> bool {
        self.relays > 1
    }

    /// The attempt under way ended before the tunnel got ready (connect error or timeout,
    /// TLS, no `hello_ack`, the connection lost while waiting, or left for the other relay).
    /// The "connection failed" event for the first of a cycle.
    pub fn failed(&mut self, now: Instant, reason: impl fmt::Display) -> Option<LinkEvent> {
        self.end(now, reason, false)
    }

    /// The ready tunnel's relay connection ended: the "disconnected" event.
    pub fn disconnected(&mut self, now: Instant, reason: impl fmt::Display) -> Option<LinkEvent> {
        self.end(now, reason, false)
    }

    /// The relay refused the bind token: the next attempt waits [`REJECTED_DELAY`]. `true`
    /// when the critical "bind rejected" event is to be raised: the first rejection since the
    /// tunnel was last ready.
    pub fn rejected(&mut self, now: Instant, reason: impl fmt::Display) -> bool {
        if !self.is_live() {
            // A late report about an attempt already ended.
            return false;
        }
        self.end(now, reason, true);
        !std::mem::replace(&mut self.rejection_reported, true)
    }

    /// Attempts started.
    pub fn attempts(&self) -> u64 {
        self.reconnect.attempts()
    }

    /// Whether the tunnel is ready (for the state reported).
    pub fn is_ready(&self) -> bool {
        self.reconnect.is_up()
    }

    /// Why the last attempt or connection ended.
    pub fn last_error(&self) -> Option<&str> {
        self.reconnect.last_error()
    }

    /// Whether an attempt is under way or the tunnel is ready: what a report can end.
    fn is_live(&self) -> bool {
        self.reconnect.is_up() || self.reconnect.is_connecting()
    }

    /// The common end of an attempt or a connection. Returns the (latched) link event, except
    /// for a rejection, whose own event the caller decides.
    fn end(
        &mut self,
        now: Instant,
        reason: impl fmt::Display,
        rejected: bool,
    ) -> Option<LinkEvent> {
        if !self.is_live() {
            // A late report about an attempt already ended: the wait in progress stands.
            return None;
        }
        let was_up = self.reconnect.is_up();
        self.connect_deadline = None;
        // A drop after ready starts a new cycle, with this relay tried.
        self.tried = if was_up { 1 } else { self.tried + 1 };
        self.current = (self.current + 1) % self.relays;
        let down = if rejected {
            self.tried = 0;
            self.reconnect
                .failed_with_delay(now, reason, REJECTED_DELAY)
        } else if self.tried < self.relays {
            // The other relay, at once (the back-off does not advance).
            self.reconnect
                .failed_with_delay(now, reason, Duration::ZERO)
        } else {
            // A full cycle: back off (from the start again after a stable connection).
            self.tried = 0;
            self.reconnect.failed(now, reason)
        };
        if rejected { None } else { down.event }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::Clock;

    fn at(c: &Clock, next: FailoverNext) -> Option<u64> {
        match next {
            FailoverNext::Wait(t) => Some((t - c.t(0)).as_millis() as u64),
            _ => None,
        }
    }

    fn dial(f: &mut Failover, c: &Clock, now: u64) -> usize {
        match f.poll(c.t(now)) {
            FailoverNext::Dial { relay_index } => relay_index,
            other => panic!("expected a dial at {now}, got {other:?}"),
        }
    }

    #[test]
    fn a_failed_attempt_moves_to_the_second_relay_at_once() {
        let c = Clock::new();
        let mut f = Failover::new(2, c.t(0));
        assert_eq!(dial(&mut f, &c, 0), 0);
        // The connect deadline is what is timed meanwhile.
        assert_eq!(at(&c, f.poll(c.t(100))), Some(6_000));
        assert_eq!(f.poll_timeout(), Some(c.t(6_000)));
        assert_eq!(f.failed(c.t(300), "refused"), Some(LinkEvent::Failed));
        assert_eq!(f.relay_index(), 1);
        assert_eq!(dial(&mut f, &c, 300), 1, "at once");
        // Both failed: a full cycle, the back-off's first second, silently.
        assert_eq!(f.failed(c.t(400), "refused"), None);
        assert_eq!(at(&c, f.poll(c.t(400))), Some(1_400));
        assert_eq!(dial(&mut f, &c, 1_400), 0);
        assert_eq!(f.attempts(), 3);
        assert_eq!(f.last_error(), Some("refused"));
    }

    #[test]
    fn no_connection_within_6_s_is_a_timeout() {
        let c = Clock::new();
        let mut f = Failover::new(2, c.t(0));
        dial(&mut f, &c, 0);
        assert_eq!(f.poll(c.t(5_999)), FailoverNext::Wait(c.t(6_000)));
        assert_eq!(f.poll(c.t(6_000)), FailoverNext::TimedOut);
        assert_eq!(f.poll(c.t(6_500)), FailoverNext::TimedOut, "until reported");
        assert_eq!(
            f.failed(c.t(6_500), "connect timed out"),
            Some(LinkEvent::Failed)
        );
        assert_eq!(dial(&mut f, &c, 6_500), 1);
        // Connected in time: the deadline is lifted, the session's deadlines take over.
        f.connected(c.t(7_000));
        assert_eq!(f.poll(c.t(60_000)), FailoverNext::Idle);
        assert_eq!(f.poll_timeout(), None);
    }

    #[test]
    fn waiting_too_long_for_the_peer_moves_to_the_other_relay() {
        let c = Clock::new();
        let mut f = Failover::new(2, c.t(0));
        dial(&mut f, &c, 0);
        f.connected(c.t(200));
        // The session said WaitedTooLong 10 s after its bind.
        assert!(f.switch_on_wait());
        assert_eq!(
            f.failed(c.t(10_300), "peer did not bind within 10 s"),
            Some(LinkEvent::Failed)
        );
        assert_eq!(dial(&mut f, &c, 10_300), 1, "at once");
        f.connected(c.t(10_400));
        // The peer is there: ready, the "connected" event.
        assert!(matches!(
            f.ready(c.t(10_500)),
            Some(LinkEvent::Connected {
                failed_attempts: 1,
                ..
            })
        ));
        assert!(f.is_ready());
        // With one relay there is nowhere to go.
        assert!(!Failover::new(1, c.t(0)).switch_on_wait());
    }

    #[test]
    fn full_cycles_back_off_doubling_to_60_s() {
        let c = Clock::new();
        for (relays, expected) in [
            (1usize, vec![1, 2, 4, 8, 16, 32, 60, 60]),
            (2, vec![0, 1, 0, 2, 0, 4, 0, 8, 0, 16, 0, 32, 0, 60, 0, 60]),
        ] {
            let mut f = Failover::new(relays, c.t(0));
            let mut now = 0;
            let mut waits = Vec::new();
            let mut relays_dialled = Vec::new();
            let mut events = 0;
            let mut next = f.poll(c.t(0));
            while waits.len() < expected.len() {
                let FailoverNext::Dial { relay_index } = next else {
                    panic!("expected a dial, got {next:?}");
                };
                relays_dialled.push(relay_index);
                now += 100;
                events += usize::from(f.failed(c.t(now), "unreachable").is_some());
                next = f.poll(c.t(now));
                match next {
                    FailoverNext::Dial { .. } => waits.push(0),
                    FailoverNext::Wait(t) => {
                        waits.push((t - c.t(now)).as_secs());
                        now = (t - c.t(0)).as_millis() as u64;
                        next = f.poll(t);
                    }
                    other => panic!("{other:?}"),
                }
            }
            assert_eq!(waits, expected, "{relays} relays");
            assert_eq!(events, 1, "one 'connection failed' for the whole cycle");
            // Relays alternate.
            assert!(
                relays_dialled
                    .iter()
                    .enumerate()
                    .all(|(i, &r)| r == i % relays),
                "{relays_dialled:?}"
            );
        }
    }

    #[test]
    fn a_ready_connection_that_lasted_restarts_the_backoff() {
        let c = Clock::new();
        let mut f = Failover::new(1, c.t(0));
        let mut now = 0;
        // Four failures: the next wait would be 16 s.
        for _ in 0..4 {
            dial(&mut f, &c, now);
            f.failed(c.t(now), "refused");
            now = at(&c, f.poll(c.t(now))).unwrap();
        }
        // Ready for just under 10 s: the back-off goes on.
        dial(&mut f, &c, now);
        f.connected(c.t(now));
        assert!(matches!(
            f.ready(c.t(now)),
            Some(LinkEvent::Connected { .. })
        ));
        assert_eq!(
            f.ready(c.t(now + 5)),
            None,
            "a peer coming back is no new connection"
        );
        now += 9_999;
        assert!(matches!(
            f.disconnected(c.t(now), "relay closed"),
            Some(LinkEvent::Lost { .. })
        ));
        assert_eq!(at(&c, f.poll(c.t(now))), Some(now + 16_000));
        now += 16_000;
        // Ready for 10 s: the next wait is 1 s again.
        dial(&mut f, &c, now);
        f.ready(c.t(now));
        now += 10_000;
        f.disconnected(c.t(now), "relay closed");
        assert_eq!(at(&c, f.poll(c.t(now))), Some(now + 1_000));
        // With two relays a drop goes to the other relay at once, then backs off from 1 s.
        let mut f = Failover::new(2, c.t(0));
        assert_eq!(dial(&mut f, &c, 0), 0);
        f.ready(c.t(0));
        assert!(matches!(
            f.disconnected(c.t(60_000), "relay restarted"),
            Some(LinkEvent::Lost { .. })
        ));
        assert_eq!(dial(&mut f, &c, 60_000), 1);
        assert_eq!(
            f.failed(c.t(60_100), "refused"),
            None,
            "the drop reported the cycle"
        );
        assert_eq!(at(&c, f.poll(c.t(60_100))), Some(61_100));
        assert_eq!(dial(&mut f, &c, 61_100), 0);
        assert!(matches!(
            f.ready(c.t(61_200)),
            Some(LinkEvent::Connected {
                down_for: Some(_),
                failed_attempts: 1
            })
        ));
    }

    #[test]
    fn a_bind_rejection_backs_off_60_s_and_is_raised_once() {
        let c = Clock::new();
        let mut f = Failover::new(2, c.t(0));
        let mut now = 0;
        let mut raised = 0;
        for round in 0..4 {
            dial(&mut f, &c, now);
            f.connected(c.t(now + 100));
            now += 200;
            raised += usize::from(f.rejected(c.t(now), "bind authentication failed"));
            assert_eq!(
                at(&c, f.poll(c.t(now))),
                Some(now + 60_000),
                "round {round}: no tight loop, not even to the other relay"
            );
            now += 60_000;
        }
        assert_eq!(raised, 1);
        assert_eq!(f.last_error(), Some("bind authentication failed"));
        // A rejection does not advance the back-off: a plain failure cycle starts at 0 s
        // (other relay) then 1 s.
        dial(&mut f, &c, now);
        assert_eq!(
            f.failed(c.t(now), "refused"),
            None,
            "cycle already reported"
        );
        assert!(matches!(f.poll(c.t(now)), FailoverNext::Dial { .. }));
        f.failed(c.t(now), "refused");
        assert_eq!(at(&c, f.poll(c.t(now))), Some(now + 1_000));
        // Ready again, then a new rejection is raised again.
        now += 1_000;
        dial(&mut f, &c, now);
        f.ready(c.t(now));
        now += 1_000;
        f.disconnected(c.t(now), "eof");
        dial(&mut f, &c, now);
        assert!(f.rejected(c.t(now + 100), "bind authentication failed"));
    }

    #[test]
    fn a_late_report_changes_nothing() {
        let c = Clock::new();
        let mut f = Failover::new(2, c.t(0));
        dial(&mut f, &c, 0);
        f.failed(c.t(6_000), "connect timed out");
        dial(&mut f, &c, 6_000);
        f.failed(c.t(6_100), "refused");
        let wait = f.poll(c.t(6_100));
        // The abandoned attempt's own error arrives later: same wait, same relay.
        assert_eq!(f.failed(c.t(6_200), "late"), None);
        assert!(!f.rejected(c.t(6_200), "late"));
        assert_eq!(f.poll(c.t(6_200)), wait);
        assert_eq!(f.relay_index(), 0);
        assert_eq!(f.last_error(), Some("refused"));
    }

    /// The failover and the relay session driven together by a shell loop on fake time,
    /// against two relays and a peer: relay 0 is unreachable for the first 30 s, the peer
    /// binds only at 25 s, relay 1 restarts at 60 s (down for 1 s). The tunnel waits on
    /// relay 1, leaves it after 10 s for relay 0 (refused), backs off, comes back, is ready
    /// when the peer binds, and after relay 1's restart is ready again at once on relay 0.
    #[test]
    fn a_shell_loop_over_two_relays_and_a_late_peer() {
        use crate::config::{TunnelDirection, TunnelProtocol};
        use crate::tunnel::relay_session::{
            RelaySession, SessionEvent, SessionParams, SessionState,
        };
        use crate::tunnel::wire::RelayMsg;

        const TID: &str = "0192f3a4-5b6c-7d8e-9fa0-b1c2d3e4f5a6";
        const END: u64 = 70_000;
        let c = Clock::new();
        let ms = |t: Instant| (t - c.t(0)).as_millis() as u64;
        let relay_up = |r: usize, now: u64| match r {
            0 => now >= 30_000,
            _ => !(60_000..61_000).contains(&now),
        };
        let peer_bound = |now: u64| now >= 25_000;
        let scripted = [25_000u64, 60_000];

        let mut f = Failover::new(2, c.t(0));
        // The session in progress and its relay.
        let mut session: Option<(RelaySession, usize)> = None;
        let mut log: Vec<(u64, String)> = Vec::new();
        let mut dials: Vec<(u64, usize)> = Vec::new();
        let mut now = 0u64;
        // One round of the shell: what the session says, answered as a relay would.
        fn pump(s: &mut RelaySession, now: Instant, peer: bool, out: &mut Vec<SessionEvent>) {
            while let Some(m) = s.poll_transmit() {
                let answer = match m {
                    RelayMsg::Hello { .. } => Some(RelayMsg::HelloAck {
                        protocol_version: 2,
                        software_version: "stand-in".into(),
                    }),
                    RelayMsg::TunnelBind { tunnel_id, .. } if peer => {
                        Some(RelayMsg::TunnelReady { tunnel_id })
                    }
                    RelayMsg::TunnelBind { tunnel_id, .. } => {
                        Some(RelayMsg::TunnelWaiting { tunnel_id })
                    }
                    _ => None,
                };
                if let Some(a) = answer {
                    s.handle_control(a, now);
                }
            }
            out.extend(std::iter::from_fn(|| s.poll_event()));
        }
        while now < END {
            let t = c.t(now);
            let mut events = Vec::new();
            // The world changes: the peer binds (a notification), relay 1 restarts.
            if let Some((s, r)) = &mut session {
                if now == 25_000 && s.state() == SessionState::Waiting {
                    s.handle_notification(
                        RelayMsg::TunnelReady {
                            tunnel_id: TID.into(),
                        },
                        t,
                    );
                }
                if !relay_up(*r, now) {
                    let ev = if s.state() == SessionState::Ready {
                        f.disconnected(t, "connection lost")
                    } else {
                        f.failed(t, "connection lost")
                    };
                    log.extend(ev.map(|e| (now, format!("{e:?}"))));
                    session = None;
                }
            }
            if let Some((s, _)) = &mut session {
                s.handle_timeout(t);
                pump(s, t, peer_bound(now), &mut events);
            }
            for e in events {
                match e {
                    SessionEvent::Ready => {
                        log.extend(f.ready(t).map(|e| (now, format!("{e:?}"))));
                    }
                    SessionEvent::WaitedTooLong if f.switch_on_wait() => {
                        session = None;
                        log.extend(
                            f.failed(t, "peer not bound")
                                .map(|e| (now, format!("{e:?}"))),
                        );
                    }
                    SessionEvent::Waiting | SessionEvent::WaitedTooLong => {}
                    other => panic!("unexpected {other:?}"),
                }
            }
            // Dial as often as the failover says at this instant.
            while let FailoverNext::Dial { relay_index } = f.poll(t) {
                dials.push((now, relay_index));
                if !relay_up(relay_index, now) {
                    log.extend(f.failed(t, "refused").map(|e| (now, format!("{e:?}"))));
                    continue;
                }
                f.connected(t);
                let params = SessionParams {
                    tunnel_id: TID.into(),
                    direction: TunnelDirection::Egress,
                    protocol: TunnelProtocol::Udp,
                    bind_token: "00".repeat(32),
                    edge_id: "edge".into(),
                    software_version: "test".into(),
                };
                let mut s = RelaySession::new(params, t);
                s.handle_connected(t);
                let mut events = Vec::new();
                pump(&mut s, t, peer_bound(now), &mut events);
                if events.contains(&SessionEvent::Ready) {
                    log.extend(f.ready(t).map(|e| (now, format!("{e:?}"))));
                }
                session = Some((s, relay_index));
            }
            // The next instant anything happens.
            let next = [
                f.poll_timeout(),
                session.as_ref().and_then(|(s, _)| s.poll_timeout()),
            ]
            .into_iter()
            .flatten()
            .map(ms)
            .chain(scripted.iter().copied().filter(|&x| x > now))
            .chain([END])
            .min()
            .unwrap();
            assert!(next > now, "time moves on ({now})");
            now = next;
        }
        // Relay 0 refuses, relay 1 has no peer for 10 s: a full cycle, 1 s of back-off; the
        // same again, 2 s; the third time on relay 1 the peer binds (25 s). Relay 1
        // restarts at 60 s: relay 0, at once (it is up by then, and so is the peer).
        assert_eq!(
            dials,
            [
                (0, 0),
                (0, 1),
                (11_000, 0),
                (11_000, 1),
                (23_000, 0),
                (23_000, 1),
                (60_000, 0),
            ]
        );
        let kinds: Vec<(u64, &str)> = log
            .iter()
            .map(|(t, e)| (*t, e.split([' ', '{']).next().unwrap()))
            .collect();
        assert_eq!(
            kinds,
            [
                (0, "Failed"),
                (25_000, "Connected"),
                (60_000, "Lost"),
                (60_000, "Connected")
            ]
        );
        assert!(f.is_ready());
        assert_eq!(f.relay_index(), 0);
    }
}
