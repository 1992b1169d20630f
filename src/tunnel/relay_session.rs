//! One connection to a relay, as the relay protocol sees it (`shared/spec/relay-protocol.md`,
//! "Control stream"), sans-IO.
//!
//! The async shell owns the QUIC connection; this machine owns every decision of the
//! conversation on it and none of the I/O, like `manager/link.rs`. The shell feeds it what
//! happened, with the current time:
//! - [`RelaySession::handle_connected`]: the QUIC connection is up and the control stream
//!   (the first bidirectional stream, opened by the edge) is open;
//! - [`RelaySession::handle_control`]: a message read on the control stream;
//! - [`RelaySession::handle_notification`]: the message of a stream the relay opened (the
//!   peer's comings and goings arrive that way, one message per stream);
//! - [`RelaySession::handle_timeout`]: [`RelaySession::poll_timeout`] was reached;
//! - [`RelaySession::close`]: the tunnel is being stopped.
//!
//! and performs what it asks: [`RelaySession::poll_transmit`] gives the messages to write on
//! the control stream, [`RelaySession::poll_event`] what happened ([`SessionEvent`]).
//!
//! The conversation: `hello` at once; the relay's `hello_ack` within [`HELLO_TIMEOUT`] (else
//! [`SessionEvent::HelloTimeout`]; a protocol version other than 2 is
//! [`SessionEvent::ProtocolMismatch`]); then `identify` and `tunnel_bind`, and a `ping` every
//! [`PING_INTERVAL`] from then on (liveness is QUIC's keep-alive: a `pong` is not awaited).
//! The relay answers `tunnel_waiting` (the peer has not bound: [`SessionEvent::Waiting`]) or
//! `tunnel_ready` (both ends are bound: [`SessionEvent::Ready`]). Waiting for the peer longer
//! than [`WAIT_LIMIT`] is [`SessionEvent::WaitedTooLong`], raised once per wait: the peer may
//! be on the other relay, and the failover machine (`failover.rs`) decides whether to move.
//! `tunnel_down` is the bind rejection ([`SessionEvent::BindRejected`], final) when its reason
//! is "bind authentication failed", or any reason naming authentication before the tunnel
//! was ever ready; otherwise the peer went away ([`SessionEvent::PeerDown`]) and the session
//! waits for it again. Messages about another tunnel, unknown types and `pong`s are ignored.
//!
//! After `HelloTimeout`, `ProtocolMismatch` or `BindRejected` the session is over
//! ([`SessionState::Failed`], [`SessionState::Rejected`]): the shell closes the connection and
//! reports the end to the failover machine.

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

use super::wire::{PROTOCOL_VERSION, RelayMsg};
use crate::config::{TunnelDirection, TunnelProtocol};

/// From the control stream's opening to the relay's `hello_ack` (the spec's connect timeout).
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(6);
/// How long the session waits for the peer to bind before saying so.
pub const WAIT_LIMIT: Duration = Duration::from_secs(10);
/// Between two `ping`s on the control stream, once the bind is sent.
pub const PING_INTERVAL: Duration = Duration::from_secs(15);
/// The relay's reason for a refused bind token.
pub const BIND_REJECTED_REASON: &str = "bind authentication failed";
/// `identify`'s limit on the edge's name.
pub const MAX_EDGE_ID_CHARS: usize = 64;

/// What the session binds.
#[derive(Clone)]
pub struct SessionParams {
    pub tunnel_id: String,
    pub direction: TunnelDirection,
    pub protocol: TunnelProtocol,
    /// `token::bind_token` of this end.
    pub bind_token: String,
    /// The node's name on the relay; cut to [`MAX_EDGE_ID_CHARS`].
    pub edge_id: String,
    /// This build's version, for `hello`.
    pub software_version: String,
}

impl fmt::Debug for SessionParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Not the bind token: whoever has it can bind as this end.
        f.debug_struct("SessionParams")
            .field("tunnel_id", &self.tunnel_id)
            .field("direction", &self.direction)
            .field("protocol", &self.protocol)
            .field("edge_id", &self.edge_id)
            .finish_non_exhaustive()
    }
}

/// What the shell learns from the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEvent {
    /// Both ends are bound: traffic can flow.
    Ready,
    /// Bound, the peer is not (yet, or any more: after `Ready` this follows the relay's
    /// `tunnel_waiting`).
    Waiting,
    /// The relay says the peer went away (`tunnel_down` with this reason); the session waits
    /// for it again.
    PeerDown { reason: String },
    /// The relay refused the bind token. Final.
    BindRejected { reason: String },
    /// Waiting for the peer for [`WAIT_LIMIT`]: time to try the other relay, if any.
    WaitedTooLong,
    /// No `hello_ack` within [`HELLO_TIMEOUT`]. Final.
    HelloTimeout,
    /// The relay speaks another protocol version. Final.
    ProtocolMismatch { version: u32 },
}

/// Where the session is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionState {
    /// Before the control stream is open.
    Idle,
    /// `hello` sent, waiting for `hello_ack`.
    Hello,
    /// `tunnel_bind` sent, no answer yet.
    Binding,
    /// Bound; the peer is not.
    Waiting,
    Ready,
    /// The bind token was refused. Final.
    Rejected,
    /// No or a wrong `hello_ack`. Final.
    Failed,
    /// [`RelaySession::close`] was called. Final.
    Closed,
}

impl SessionState {
    /// Whether `tunnel_bind` went out and the session is still on (so `close` unbinds).
    fn is_bound(self) -> bool {
        matches!(
            self,
            SessionState::Binding | SessionState::Waiting | SessionState::Ready
        )
    }

    fn is_over(self) -> bool {
        matches!(
            self,
            SessionState::Rejected | SessionState::Failed | SessionState::Closed
        )
    }
}

/// One relay connection's conversation: see the module docs.
#[derive(Debug)]
pub struct RelaySession {
    params: SessionParams,
    state: SessionState,
    /// `hello_ack` is due by then (state `Hello`).
    hello_deadline: Option<Instant>,
    /// Waiting for the peer is reported at this instant (bound, not ready).
    wait_deadline: Option<Instant>,
    /// The next `ping` (once bound).
    next_ping: Option<Instant>,
    /// Whether the tunnel was ever ready in this session: after that, a `tunnel_down`
    /// mentioning authentication is the peer's business, not a refusal of our token.
    was_ready: bool,
    transmit: VecDeque<RelayMsg>,
    events: VecDeque<SessionEvent>,
    /// Messages ignored (another tunnel's, unknown, out of place), for the logs.
    ignored: u64,
}

impl RelaySession {
    pub fn new(params: SessionParams, _now: Instant) -> Self {
        RelaySession {
            params,
            state: SessionState::Idle,
            hello_deadline: None,
            wait_deadline: None,
            next_ping: None,
            was_ready: false,
            transmit: VecDeque::new(),
            events: VecDeque::new(),
            ignored: 0,
        }
    }

    pub fn state(&self) -> SessionState {
        self.state
    }

    pub fn params(&self) -> &SessionParams {
        &self.params
    }

    /// Messages ignored so far.
    pub fn ignored(&self) -> u64 {
        self.ignored
    }

    /// The QUIC connection is up and the control stream open: say `hello`.
    pub fn handle_connected(&mut self, now: Instant) {
        if self.state != SessionState::Idle {
            return;
        }
        self.transmit.push_back(RelayMsg::Hello {
            protocol_version: PROTOCOL_VERSION,
            software_version: self.params.software_version.clone(),
        });
        self.state = SessionState::Hello;
        self.hello_deadline = Some(now + HELLO_TIMEOUT);
    }

    /// A message read on the control stream.
    pub fn handle_control(&mut self, msg: RelayMsg, now: Instant) {
        if self.state.is_over() {
            return;
        }
        match msg {
            RelayMsg::HelloAck {
                protocol_version, ..
            } if self.state == SessionState::Hello => self.hello_ack(protocol_version, now),
            // The relay may ping too: answering costs nothing.
            RelayMsg::Ping if self.state != SessionState::Idle => {
                self.transmit.push_back(RelayMsg::Pong)
            }
            msg => self.handle_tunnel_msg(msg, now),
        }
    }

    /// The message of a stream the relay opened (peer notifications).
    pub fn handle_notification(&mut self, msg: RelayMsg, now: Instant) {
        if self.state.is_over() {
            return;
        }
        self.handle_tunnel_msg(msg, now);
    }

    /// Time passed: the `hello_ack` deadline, the wait limit, the next ping.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.state.is_over() {
            return;
        }
        if self.hello_deadline.is_some_and(|t| now >= t) {
            self.hello_deadline = None;
            self.state = SessionState::Failed;
            self.events.push_back(SessionEvent::HelloTimeout);
            return;
        }
        if self.wait_deadline.is_some_and(|t| now >= t) {
            // Once per wait: the next one starts at the next `tunnel_waiting` or
            // `tunnel_down`.
            self.wait_deadline = None;
            self.events.push_back(SessionEvent::WaitedTooLong);
        }
        if let Some(t) = self.next_ping
            && now >= t
        {
            self.transmit.push_back(RelayMsg::Ping);
            // From now, not from when it was due: a late wake-up does not cause a burst.
            self.next_ping = Some(now + PING_INTERVAL);
        }
    }

    /// The tunnel is being stopped: unbind if bound. The shell writes the last messages, then
    /// closes the connection.
    pub fn close(&mut self) {
        if self.state.is_bound() {
            self.transmit.push_back(RelayMsg::TunnelUnbind {
                tunnel_id: self.params.tunnel_id.clone(),
            });
        }
        if !self.state.is_over() {
            self.state = SessionState::Closed;
        }
        self.hello_deadline = None;
        self.wait_deadline = None;
        self.next_ping = None;
    }

    /// The next message to write on the control stream.
    pub fn poll_transmit(&mut self) -> Option<RelayMsg> {
        self.transmit.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<SessionEvent> {
        self.events.pop_front()
    }

    /// When [`RelaySession::handle_timeout`] is due; `None` while nothing is timed.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [self.hello_deadline, self.wait_deadline, self.next_ping]
            .into_iter()
            .flatten()
            .min()
    }

    fn hello_ack(&mut self, version: u32, now: Instant) {
        self.hello_deadline = None;
        if version != PROTOCOL_VERSION {
            self.state = SessionState::Failed;
            self.events
                .push_back(SessionEvent::ProtocolMismatch { version });
            return;
        }
        let p = &self.params;
        self.transmit.push_back(RelayMsg::Identify {
            edge_id: p.edge_id.chars().take(MAX_EDGE_ID_CHARS).collect(),
        });
        self.transmit.push_back(RelayMsg::TunnelBind {
            tunnel_id: p.tunnel_id.clone(),
            direction: p.direction.as_str().to_string(),
            protocol: p.protocol.as_str().to_string(),
            bind_token: p.bind_token.clone(),
        });
        self.state = SessionState::Binding;
        // A relay that never answers the bind is a peer that never comes, as far as the
        // failover is concerned.
        self.wait_deadline = Some(now + WAIT_LIMIT);
        self.next_ping = Some(now + PING_INTERVAL);
    }

    /// `tunnel_waiting`, `tunnel_ready`, `tunnel_down` (from either stream); anything else,
    /// or any of them before the bind went out, is ignored.
    fn handle_tunnel_msg(&mut self, msg: RelayMsg, now: Instant) {
        let ours = |id: &str| id.eq_ignore_ascii_case(&self.params.tunnel_id);
        if !self.state.is_bound() {
            self.ignored += 1;
            return;
        }
        match msg {
            RelayMsg::TunnelWaiting { tunnel_id } if ours(&tunnel_id) => {
                if self.state != SessionState::Waiting {
                    self.start_waiting(now);
                    self.events.push_back(SessionEvent::Waiting);
                }
            }
            RelayMsg::TunnelReady { tunnel_id } if ours(&tunnel_id) => {
                self.wait_deadline = None;
                self.was_ready = true;
                if self.state != SessionState::Ready {
                    self.state = SessionState::Ready;
                    self.events.push_back(SessionEvent::Ready);
                }
            }
            RelayMsg::TunnelDown { tunnel_id, reason } if ours(&tunnel_id) => {
                if is_bind_rejection(&reason, self.was_ready) {
                    self.state = SessionState::Rejected;
                    self.wait_deadline = None;
                    self.next_ping = None;
                    self.events.push_back(SessionEvent::BindRejected { reason });
                } else {
                    // The wait for the peer starts again (it may be coming back through the
                    // other relay: the wait limit says when to follow it).
                    self.start_waiting(now);
                    self.events.push_back(SessionEvent::PeerDown { reason });
                }
            }
            // Pongs (keep-alive is QUIC's), unknown types, another tunnel's news.
            _ => self.ignored += 1,
        }
    }

    fn start_waiting(&mut self, now: Instant) {
        self.state = SessionState::Waiting;
        self.wait_deadline = Some(now + WAIT_LIMIT);
    }
}

/// Whether a `tunnel_down` reason is the relay refusing our bind token: the spec's exact
/// reason, or (before the tunnel was ever ready, when nothing else can have gone wrong with
/// the peer) any reason that speaks of authentication.
fn is_bind_rejection(reason: &str, was_ready: bool) -> bool {
    reason == BIND_REJECTED_REASON
        || (!was_ready && reason.to_ascii_lowercase().contains("authentication"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::Clock;

    const TID: &str = "0192f3a4-5b6c-7d8e-9fa0-b1c2d3e4f5a6";
    const SEC: u64 = 1000;

    fn params() -> SessionParams {
        SessionParams {
            tunnel_id: TID.into(),
            direction: TunnelDirection::Egress,
            protocol: TunnelProtocol::Udp,
            bind_token: "ab".repeat(32),
            edge_id: "edge-1".into(),
            software_version: "0.1.0".into(),
        }
    }

    fn drain_tx(s: &mut RelaySession) -> Vec<RelayMsg> {
        std::iter::from_fn(|| s.poll_transmit()).collect()
    }

    fn drain_ev(s: &mut RelaySession) -> Vec<SessionEvent> {
        std::iter::from_fn(|| s.poll_event()).collect()
    }

    fn ack() -> RelayMsg {
        RelayMsg::HelloAck {
            protocol_version: 2,
            software_version: "relay".into(),
        }
    }

    fn ready() -> RelayMsg {
        RelayMsg::TunnelReady {
            tunnel_id: TID.into(),
        }
    }

    fn waiting() -> RelayMsg {
        RelayMsg::TunnelWaiting {
            tunnel_id: TID.into(),
        }
    }

    fn down(reason: &str) -> RelayMsg {
        RelayMsg::TunnelDown {
            tunnel_id: TID.into(),
            reason: reason.into(),
        }
    }

    /// Connected and acknowledged at t=0: the bind is out.
    fn bound(c: &Clock) -> RelaySession {
        let mut s = RelaySession::new(params(), c.t(0));
        s.handle_connected(c.t(0));
        s.handle_control(ack(), c.t(0));
        drain_tx(&mut s);
        s
    }

    #[test]
    fn hello_then_identify_and_bind_after_the_ack() {
        let c = Clock::new();
        let mut s = RelaySession::new(params(), c.t(0));
        assert_eq!(s.state(), SessionState::Idle);
        assert_eq!(s.poll_timeout(), None);
        assert_eq!(s.poll_transmit(), None, "nothing before the stream is open");
        s.handle_connected(c.t(100));
        assert_eq!(
            drain_tx(&mut s),
            [RelayMsg::Hello {
                protocol_version: 2,
                software_version: "0.1.0".into()
            }]
        );
        assert_eq!(s.state(), SessionState::Hello);
        assert_eq!(s.poll_timeout(), Some(c.t(6_100)));
        s.handle_control(ack(), c.t(2_000));
        assert_eq!(
            drain_tx(&mut s),
            [
                RelayMsg::Identify {
                    edge_id: "edge-1".into()
                },
                RelayMsg::TunnelBind {
                    tunnel_id: TID.into(),
                    direction: "egress".into(),
                    protocol: "udp".into(),
                    bind_token: "ab".repeat(32),
                }
            ]
        );
        assert_eq!(s.state(), SessionState::Binding);
        assert_eq!(drain_ev(&mut s), []);
        // The wait limit runs from the bind.
        assert_eq!(s.poll_timeout(), Some(c.t(12_000)));
        // A second ack changes nothing.
        s.handle_control(ack(), c.t(2_500));
        assert_eq!(drain_tx(&mut s), []);
        // An ingress TCP end binds as such, and a long edge id is cut to 64 characters.
        let mut p = params();
        p.direction = TunnelDirection::Ingress;
        p.protocol = TunnelProtocol::Tcp;
        p.edge_id = "é".repeat(100);
        let mut s = RelaySession::new(p, c.t(0));
        s.handle_connected(c.t(0));
        s.handle_control(ack(), c.t(0));
        let tx = drain_tx(&mut s);
        assert!(matches!(&tx[1], RelayMsg::Identify { edge_id } if edge_id.chars().count() == 64));
        assert!(
            matches!(&tx[2], RelayMsg::TunnelBind { direction, protocol, .. }
            if direction == "ingress" && protocol == "tcp")
        );
    }

    #[test]
    fn no_hello_ack_within_6_s_is_a_hello_timeout() {
        let c = Clock::new();
        let mut s = RelaySession::new(params(), c.t(0));
        s.handle_connected(c.t(0));
        drain_tx(&mut s);
        s.handle_timeout(c.t(5_999));
        assert_eq!(drain_ev(&mut s), []);
        s.handle_timeout(c.t(6_000));
        assert_eq!(drain_ev(&mut s), [SessionEvent::HelloTimeout]);
        assert_eq!(s.state(), SessionState::Failed);
        assert_eq!(s.poll_timeout(), None);
        // Over: a late ack does nothing, close sends nothing.
        s.handle_control(ack(), c.t(6_001));
        s.close();
        assert_eq!(drain_tx(&mut s), []);
        assert_eq!(s.state(), SessionState::Failed);
    }

    #[test]
    fn another_protocol_version_is_a_mismatch() {
        let c = Clock::new();
        let mut s = RelaySession::new(params(), c.t(0));
        s.handle_connected(c.t(0));
        drain_tx(&mut s);
        s.handle_control(
            RelayMsg::HelloAck {
                protocol_version: 3,
                software_version: String::new(),
            },
            c.t(10),
        );
        assert_eq!(
            drain_ev(&mut s),
            [SessionEvent::ProtocolMismatch { version: 3 }]
        );
        assert_eq!(
            drain_tx(&mut s),
            [],
            "no bind to a relay we do not understand"
        );
        assert_eq!(s.state(), SessionState::Failed);
    }

    #[test]
    fn waiting_then_ready_from_either_stream() {
        let c = Clock::new();
        let mut s = bound(&c);
        s.handle_control(waiting(), c.t(100));
        assert_eq!(drain_ev(&mut s), [SessionEvent::Waiting]);
        assert_eq!(s.state(), SessionState::Waiting);
        // Repeated: no new event, and the wait limit runs from the first.
        s.handle_control(waiting(), c.t(5_000));
        assert_eq!(drain_ev(&mut s), []);
        assert_eq!(s.poll_timeout(), Some(c.t(10_100)));
        // The peer binds later: the relay says so on a new stream.
        s.handle_notification(ready(), c.t(7_000));
        assert_eq!(drain_ev(&mut s), [SessionEvent::Ready]);
        assert_eq!(s.state(), SessionState::Ready);
        // No wait limit when ready; only the ping is timed.
        assert_eq!(s.poll_timeout(), Some(c.t(15_000)));
        s.handle_timeout(c.t(10_100));
        assert_eq!(drain_ev(&mut s), []);
        // Ready straight after the bind (the peer was there first), on the control stream.
        let mut s = bound(&c);
        s.handle_control(ready(), c.t(50));
        assert_eq!(drain_ev(&mut s), [SessionEvent::Ready]);
        s.handle_notification(ready(), c.t(60));
        assert_eq!(drain_ev(&mut s), [], "already ready");
    }

    #[test]
    fn waiting_more_than_10_s_is_reported_once_per_wait() {
        let c = Clock::new();
        let mut s = bound(&c);
        s.handle_control(waiting(), c.t(500));
        drain_ev(&mut s);
        s.handle_timeout(c.t(10_499));
        assert_eq!(drain_ev(&mut s), []);
        s.handle_timeout(c.t(10_500));
        assert_eq!(drain_ev(&mut s), [SessionEvent::WaitedTooLong]);
        // Still waiting (the shell decides whether to move), but not reported again.
        assert_eq!(s.state(), SessionState::Waiting);
        s.handle_timeout(c.t(14_000));
        assert_eq!(drain_ev(&mut s), []);
        // The peer may still come.
        s.handle_notification(ready(), c.t(14_500));
        assert_eq!(drain_ev(&mut s), [SessionEvent::Ready]);
        // A relay that never answers the bind: the same limit, from the bind.
        let mut s = bound(&c);
        s.handle_timeout(c.t(10 * SEC));
        assert_eq!(drain_ev(&mut s), [SessionEvent::WaitedTooLong]);
        assert_eq!(s.state(), SessionState::Binding);
    }

    #[test]
    fn the_peer_going_away_is_peer_down_and_waiting_again() {
        let c = Clock::new();
        let mut s = bound(&c);
        s.handle_notification(ready(), c.t(100));
        drain_ev(&mut s);
        s.handle_notification(down("peer disconnected"), c.t(30_000));
        assert_eq!(
            drain_ev(&mut s),
            [SessionEvent::PeerDown {
                reason: "peer disconnected".into()
            }]
        );
        assert_eq!(s.state(), SessionState::Waiting);
        // The wait limit runs from the drop: the peer may come back via the other relay.
        s.handle_timeout(c.t(39_999));
        assert_eq!(drain_ev(&mut s), []);
        s.handle_timeout(c.t(40_000));
        assert_eq!(drain_ev(&mut s), [SessionEvent::WaitedTooLong]);
        s.handle_notification(ready(), c.t(41_000));
        assert_eq!(drain_ev(&mut s), [SessionEvent::Ready]);
        // After having been ready, a reason that mentions authentication is the peer's.
        s.handle_notification(down("peer authentication expired"), c.t(42_000));
        assert!(matches!(
            drain_ev(&mut s)[..],
            [SessionEvent::PeerDown { .. }]
        ));
        // A reason-less tunnel_down is a peer down too.
        s.handle_notification(down(""), c.t(43_000));
        assert_eq!(
            drain_ev(&mut s),
            [SessionEvent::PeerDown {
                reason: String::new()
            }]
        );
    }

    #[test]
    fn bind_authentication_failed_is_a_rejection_and_final() {
        let c = Clock::new();
        let mut s = bound(&c);
        s.handle_control(down("bind authentication failed"), c.t(100));
        assert_eq!(
            drain_ev(&mut s),
            [SessionEvent::BindRejected {
                reason: "bind authentication failed".into()
            }]
        );
        assert_eq!(s.state(), SessionState::Rejected);
        assert_eq!(s.poll_timeout(), None, "no ping, no wait limit");
        s.handle_notification(ready(), c.t(200));
        s.handle_timeout(c.t(60_000));
        assert_eq!(drain_ev(&mut s), []);
        s.close();
        assert_eq!(drain_tx(&mut s), [], "not bound: nothing to unbind");
        // Before the first ready, another wording about authentication is a rejection too.
        let mut s = bound(&c);
        s.handle_control(waiting(), c.t(10));
        s.handle_notification(down("Authentication failed: unknown token"), c.t(100));
        assert_eq!(
            drain_ev(&mut s),
            [
                SessionEvent::Waiting,
                SessionEvent::BindRejected {
                    reason: "Authentication failed: unknown token".into()
                }
            ]
        );
        // The spec's exact reason is a rejection even after a ready (the relay re-checked).
        let mut s = bound(&c);
        s.handle_control(ready(), c.t(10));
        s.handle_notification(down(BIND_REJECTED_REASON), c.t(100));
        assert!(matches!(
            drain_ev(&mut s)[..],
            [SessionEvent::Ready, SessionEvent::BindRejected { .. }]
        ));
    }

    #[test]
    fn other_tunnels_unknown_types_and_pongs_are_ignored() {
        let c = Clock::new();
        let other = "0192f3a4-5b6c-7d8e-9fa0-b1c2d3e4f5a7";
        let mut s = bound(&c);
        for msg in [
            RelayMsg::TunnelReady {
                tunnel_id: other.into(),
            },
            RelayMsg::TunnelDown {
                tunnel_id: other.into(),
                reason: BIND_REJECTED_REASON.into(),
            },
            RelayMsg::TunnelWaiting {
                tunnel_id: other.into(),
            },
            RelayMsg::Unknown,
            RelayMsg::Pong,
            // Messages only the edge sends.
            RelayMsg::TunnelUnbind {
                tunnel_id: TID.into(),
            },
            RelayMsg::Identify {
                edge_id: "x".into(),
            },
        ] {
            s.handle_control(msg.clone(), c.t(100));
            s.handle_notification(msg, c.t(100));
        }
        assert_eq!(drain_ev(&mut s), []);
        assert_eq!(drain_tx(&mut s), []);
        assert_eq!(s.state(), SessionState::Binding);
        assert_eq!(s.ignored(), 14);
        // The tunnel id matches whatever the case.
        s.handle_notification(
            RelayMsg::TunnelReady {
                tunnel_id: TID.to_uppercase(),
            },
            c.t(200),
        );
        assert_eq!(drain_ev(&mut s), [SessionEvent::Ready]);
        // Tunnel news before the bind went out is ignored.
        let mut s = RelaySession::new(params(), c.t(0));
        s.handle_connected(c.t(0));
        s.handle_notification(ready(), c.t(1));
        assert_eq!(drain_ev(&mut s), []);
        assert_eq!(s.state(), SessionState::Hello);
    }

    #[test]
    fn pings_every_15_s_once_bound_and_the_relays_pings_are_answered() {
        let c = Clock::new();
        let mut s = RelaySession::new(params(), c.t(0));
        s.handle_connected(c.t(0));
        drain_tx(&mut s);
        s.handle_control(ack(), c.t(1_000));
        drain_tx(&mut s);
        s.handle_control(ready(), c.t(1_100));
        let mut pings = Vec::new();
        let mut now = 1_100;
        while now < 61_000 {
            let t = s.poll_timeout().unwrap();
            now = (t - c.t(0)).as_millis() as u64;
            s.handle_timeout(t);
            for m in drain_tx(&mut s) {
                assert_eq!(m, RelayMsg::Ping);
                pings.push(now);
            }
        }
        assert_eq!(pings, [16_000, 31_000, 46_000, 61_000]);
        // A late wake-up sends one ping and counts the next from then.
        s.handle_timeout(c.t(80_000));
        assert_eq!(drain_tx(&mut s), [RelayMsg::Ping]);
        assert_eq!(s.poll_timeout(), Some(c.t(95_000)));
        s.handle_control(RelayMsg::Ping, c.t(80_001));
        assert_eq!(drain_tx(&mut s), [RelayMsg::Pong]);
        // Pings from a notification stream are not answered (nobody reads that way back).
        s.handle_notification(RelayMsg::Ping, c.t(80_002));
        assert_eq!(drain_tx(&mut s), []);
    }

    #[test]
    fn close_unbinds_when_bound() {
        let c = Clock::new();
        let mut s = bound(&c);
        s.handle_control(ready(), c.t(5));
        s.close();
        assert_eq!(
            drain_tx(&mut s),
            [RelayMsg::TunnelUnbind {
                tunnel_id: TID.into()
            }]
        );
        assert_eq!(s.state(), SessionState::Closed);
        assert_eq!(s.poll_timeout(), None);
        s.close();
        assert_eq!(drain_tx(&mut s), [], "once");
        // Closed before the ack: nothing was bound.
        let mut s = RelaySession::new(params(), c.t(0));
        s.handle_connected(c.t(0));
        drain_tx(&mut s);
        s.close();
        assert_eq!(drain_tx(&mut s), []);
        s.handle_timeout(c.t(7_000));
        assert_eq!(drain_ev(&mut s), [], "no hello timeout after close");
    }

    #[test]
    fn params_debug_hides_the_bind_token() {
        let shown = format!("{:?}", params());
        assert!(shown.contains(TID));
        assert!(!shown.contains("abab"), "{shown}");
    }
}
