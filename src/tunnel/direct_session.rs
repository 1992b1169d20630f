//! Direct mode's authentication (`shared/spec/relay-protocol.md`, "Direct mode"), sans-IO:
//! the two ends of the stream the dialling edge opens first.
//!
//! - [`DirectClient`], the `egress` edge that dials `peer_addr`: sends `peer_auth` with its
//!   [`peer_token`] as soon as the stream is open and expects `peer_auth_ok` within
//!   [`AUTH_TIMEOUT`]; `peer_auth_error` is [`DirectEvent::Rejected`], silence
//!   [`DirectEvent::TimedOut`]. Once in, it pings every [`PING_INTERVAL`].
//! - [`DirectServer`], the `ingress` edge listening on `direct_listen_addr`, one per accepted
//!   connection: the first frame must be this tunnel's `peer_auth` with a token that
//!   [`verify_peer_token`] accepts, within [`AUTH_TIMEOUT`] of the accept. Anything else
//!   (another tunnel, a wrong token, another message, a frame that is not JSON, nothing) is
//!   answered `peer_auth_error` "Invalid token" and [`DirectEvent::Close`]: the shell writes
//!   the answer, then closes the connection, and counts an authentication failure. Once in,
//!   it answers pings.
//!
//! Both have the shape of `relay_session.rs`: `handle_*` with the time, `poll_transmit`
//! (frames to write), `poll_event`, `poll_timeout`. After authentication the data plane is
//! the relay one (`seal.rs`).

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

use super::token::{peer_token, verify_peer_token};
use super::wire::PeerMsg;

/// From the stream's opening (client) or the accept (server) to the end of authentication.
pub const AUTH_TIMEOUT: Duration = Duration::from_secs(6);
/// Between the client's pings once authenticated.
pub const PING_INTERVAL: Duration = Duration::from_secs(15);
/// What the server tells a client it refuses, whatever the cause (the spec's wording; the
/// precise cause stays in the server's [`DirectEvent::Close`]).
pub const INVALID_TOKEN: &str = "Invalid token";

/// What either end learns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DirectEvent {
    /// Authenticated: the data plane may start.
    Authenticated,
    /// Client: the server refused us (`peer_auth_error` with this reason). Final.
    Rejected(String),
    /// Client: no answer within [`AUTH_TIMEOUT`]. Final.
    TimedOut,
    /// Server: the client failed to authenticate; write the pending answer, then close the
    /// connection. Final.
    Close { reason: String },
}

/// Where either end is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirectState {
    /// Client: the stream is not open yet.
    Idle,
    Authenticating,
    Authenticated,
    /// Refused, timed out, or (server) the client failed. Final.
    Failed,
}

/// The dialling end: see the module docs.
pub struct DirectClient {
    tunnel_id: String,
    token: String,
    state: DirectState,
    deadline: Option<Instant>,
    next_ping: Option<Instant>,
    transmit: VecDeque<PeerMsg>,
    events: VecDeque<DirectEvent>,
}

impl fmt::Debug for DirectClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Not the token: it authenticates as this end.
        f.debug_struct("DirectClient")
            .field("tunnel_id", &self.tunnel_id)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl DirectClient {
    /// The client of `tunnel_id`, authenticating with `psk` (`tunnel_psk`).
    pub fn new(tunnel_id: String, psk: &str, _now: Instant) -> Self {
        DirectClient {
            token: peer_token(psk, &tunnel_id),
            tunnel_id,
            state: DirectState::Idle,
            deadline: None,
            next_ping: None,
            transmit: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    pub fn state(&self) -> DirectState {
        self.state
    }

    /// The connection is up and the stream open: authenticate.
    pub fn handle_connected(&mut self, now: Instant) {
        if self.state != DirectState::Idle {
            return;
        }
        self.transmit.push_back(PeerMsg::PeerAuth {
            tunnel_id: self.tunnel_id.clone(),
            token: self.token.clone(),
        });
        self.state = DirectState::Authenticating;
        self.deadline = Some(now + AUTH_TIMEOUT);
    }

    /// A message from the server.
    pub fn handle_msg(&mut self, msg: PeerMsg, now: Instant) {
        match (self.state, msg) {
            (DirectState::Authenticating, PeerMsg::PeerAuthOk { tunnel_id })
                if tunnel_id.eq_ignore_ascii_case(&self.tunnel_id) =>
            {
                self.state = DirectState::Authenticated;
                self.deadline = None;
                self.next_ping = Some(now + PING_INTERVAL);
                self.events.push_back(DirectEvent::Authenticated);
            }
            (DirectState::Authenticating, PeerMsg::PeerAuthError { reason }) => {
                self.fail(DirectEvent::Rejected(reason));
            }
            (DirectState::Authenticating | DirectState::Authenticated, PeerMsg::Ping) => {
                self.transmit.push_back(PeerMsg::Pong)
            }
            // Pongs, unknown types, another tunnel's acceptance (then the timeout decides),
            // anything after the end.
            _ => {}
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        if self.deadline.is_some_and(|t| now >= t) {
            self.fail(DirectEvent::TimedOut);
            return;
        }
        if let Some(t) = self.next_ping
            && now >= t
        {
            self.transmit.push_back(PeerMsg::Ping);
            self.next_ping = Some(now + PING_INTERVAL);
        }
    }

    pub fn poll_transmit(&mut self) -> Option<PeerMsg> {
        self.transmit.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<DirectEvent> {
        self.events.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadline.or(self.next_ping)
    }

    fn fail(&mut self, event: DirectEvent) {
        self.state = DirectState::Failed;
        self.deadline = None;
        self.next_ping = None;
        self.events.push_back(event);
    }
}

/// The listening end, one per accepted connection: see the module docs.
pub struct DirectServer {
    tunnel_id: String,
    psk: String,
    state: DirectState,
    deadline: Option<Instant>,
    transmit: VecDeque<PeerMsg>,
    events: VecDeque<DirectEvent>,
}

impl fmt::Debug for DirectServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the PSK.
        f.debug_struct("DirectServer")
            .field("tunnel_id", &self.tunnel_id)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl DirectServer {
    /// The server side of a connection accepted at `now` for `tunnel_id`, checking tokens
    /// against `psk` (`tunnel_psk`).
    pub fn new(tunnel_id: String, psk: String, now: Instant) -> Self {
        DirectServer {
            tunnel_id,
            psk,
            state: DirectState::Authenticating,
            deadline: Some(now + AUTH_TIMEOUT),
            transmit: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    pub fn state(&self) -> DirectState {
        self.state
    }

    /// A message from the client.
    pub fn handle_msg(&mut self, msg: PeerMsg, _now: Instant) {
        match self.state {
            DirectState::Authenticating => match msg {
                PeerMsg::PeerAuth { tunnel_id, token } => {
                    if !tunnel_id.eq_ignore_ascii_case(&self.tunnel_id) {
                        self.refuse(format!("peer_auth for another tunnel ({tunnel_id})"));
                    } else if !verify_peer_token(&self.psk, &self.tunnel_id, &token) {
                        self.refuse("invalid peer token".to_string());
                    } else {
                        self.state = DirectState::Authenticated;
                        self.deadline = None;
                        self.transmit.push_back(PeerMsg::PeerAuthOk {
                            tunnel_id: self.tunnel_id.clone(),
                        });
                        self.events.push_back(DirectEvent::Authenticated);
                    }
                }
                other => self.refuse(format!("expected peer_auth first, got {}", kind(&other))),
            },
            DirectState::Authenticated => {
                if msg == PeerMsg::Ping {
                    self.transmit.push_back(PeerMsg::Pong);
                }
            }
            DirectState::Idle | DirectState::Failed => {}
        }
    }

    /// A frame that did not decode as a [`PeerMsg`]: before authentication, a failure;
    /// after, ignored.
    pub fn handle_malformed(&mut self, _now: Instant) {
        if self.state == DirectState::Authenticating {
            self.refuse("malformed first frame".to_string());
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        if self.deadline.is_some_and(|t| now >= t) {
            self.refuse(format!("no peer_auth within {} s", AUTH_TIMEOUT.as_secs()));
        }
    }

    pub fn poll_transmit(&mut self) -> Option<PeerMsg> {
        self.transmit.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<DirectEvent> {
        self.events.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadline
    }

    fn refuse(&mut self, reason: String) {
        self.state = DirectState::Failed;
        self.deadline = None;
        self.transmit.push_back(PeerMsg::PeerAuthError {
            reason: INVALID_TOKEN.to_string(),
        });
        self.events.push_back(DirectEvent::Close { reason });
    }
}

/// A message's `type`, for a log line.
fn kind(msg: &PeerMsg) -> &'static str {
    match msg {
        PeerMsg::PeerAuth { .. } => "peer_auth",
        PeerMsg::PeerAuthOk { .. } => "peer_auth_ok",
        PeerMsg::PeerAuthError { .. } => "peer_auth_error",
        PeerMsg::Ping => "ping",
        PeerMsg::Pong => "pong",
        PeerMsg::Unknown => "an unknown type",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::Clock;

    const TID: &str = "0192f3a4-5b6c-7d8e-9fa0-b1c2d3e4f5a6";
    const PSK: &str = "ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100";

    fn tx<I: Iterator<Item = PeerMsg>>(it: I) -> Vec<PeerMsg> {
        it.collect()
    }

    fn client_tx(c: &mut DirectClient) -> Vec<PeerMsg> {
        tx(std::iter::from_fn(|| c.poll_transmit()))
    }

    fn server_tx(s: &mut DirectServer) -> Vec<PeerMsg> {
        tx(std::iter::from_fn(|| s.poll_transmit()))
    }

    fn server_ev(s: &mut DirectServer) -> Vec<DirectEvent> {
        std::iter::from_fn(|| s.poll_event()).collect()
    }

    fn client_ev(c: &mut DirectClient) -> Vec<DirectEvent> {
        std::iter::from_fn(|| c.poll_event()).collect()
    }

    fn server(c: &Clock) -> DirectServer {
        DirectServer::new(TID.into(), PSK.into(), c.t(0))
    }

    /// The client's frames fed to the server and back, as the two shells would.
    #[test]
    fn client_and_server_authenticate_each_other() {
        let c = Clock::new();
        let mut client = DirectClient::new(TID.into(), PSK, c.t(0));
        let mut server = server(&c);
        assert_eq!(client.poll_transmit(), None);
        client.handle_connected(c.t(100));
        let auth = client_tx(&mut client);
        assert!(matches!(&auth[..], [PeerMsg::PeerAuth { tunnel_id, token }]
            if tunnel_id == TID && *token == peer_token(PSK, TID)));
        assert_eq!(client.state(), DirectState::Authenticating);
        for m in auth {
            server.handle_msg(m, c.t(150));
        }
        assert_eq!(server_ev(&mut server), [DirectEvent::Authenticated]);
        assert_eq!(server.state(), DirectState::Authenticated);
        assert_eq!(server.poll_timeout(), None);
        let ok = server_tx(&mut server);
        assert_eq!(
            ok,
            [PeerMsg::PeerAuthOk {
                tunnel_id: TID.into()
            }]
        );
        for m in ok {
            client.handle_msg(m, c.t(200));
        }
        assert_eq!(client_ev(&mut client), [DirectEvent::Authenticated]);
        assert_eq!(client.state(), DirectState::Authenticated);
        // The client pings every 15 s, the server answers.
        assert_eq!(client.poll_timeout(), Some(c.t(15_200)));
        client.handle_timeout(c.t(15_200));
        for m in client_tx(&mut client) {
            assert_eq!(m, PeerMsg::Ping);
            server.handle_msg(m, c.t(15_201));
        }
        assert_eq!(server_tx(&mut server), [PeerMsg::Pong]);
        client.handle_msg(PeerMsg::Pong, c.t(15_202));
        assert_eq!(client_ev(&mut client), []);
        assert_eq!(client.poll_timeout(), Some(c.t(30_200)));
        // And the client answers the server's pings.
        client.handle_msg(PeerMsg::Ping, c.t(16_000));
        assert_eq!(client_tx(&mut client), [PeerMsg::Pong]);
    }

    #[test]
    fn the_client_is_rejected_or_times_out_after_6_s() {
        let c = Clock::new();
        let mut client = DirectClient::new(TID.into(), PSK, c.t(0));
        client.handle_connected(c.t(0));
        client_tx(&mut client);
        client.handle_msg(
            PeerMsg::PeerAuthError {
                reason: "Invalid token".into(),
            },
            c.t(50),
        );
        assert_eq!(
            client_ev(&mut client),
            [DirectEvent::Rejected("Invalid token".into())]
        );
        assert_eq!(client.state(), DirectState::Failed);
        assert_eq!(client.poll_timeout(), None);
        // Silence, or another tunnel's acceptance: timed out at 6 s, not before.
        let mut client = DirectClient::new(TID.into(), PSK, c.t(0));
        client.handle_connected(c.t(1_000));
        client.handle_msg(
            PeerMsg::PeerAuthOk {
                tunnel_id: "0192f3a4-5b6c-7d8e-9fa0-b1c2d3e4f5a7".into(),
            },
            c.t(1_100),
        );
        client.handle_msg(PeerMsg::Unknown, c.t(1_200));
        client.handle_timeout(c.t(6_999));
        assert_eq!(client_ev(&mut client), []);
        assert_eq!(client.poll_timeout(), Some(c.t(7_000)));
        client.handle_timeout(c.t(7_000));
        assert_eq!(client_ev(&mut client), [DirectEvent::TimedOut]);
        // A late acceptance changes nothing.
        client.handle_msg(
            PeerMsg::PeerAuthOk {
                tunnel_id: TID.into(),
            },
            c.t(7_001),
        );
        assert_eq!(client_ev(&mut client), []);
        assert_eq!(client.state(), DirectState::Failed);
    }

    #[test]
    fn the_server_refuses_anything_but_a_valid_peer_auth_first() {
        let c = Clock::new();
        let wrong_psk = "00".repeat(32);
        let other = "0192f3a4-5b6c-7d8e-9fa0-b1c2d3e4f5a7";
        let cases: Vec<(PeerMsg, &str)> = vec![
            (
                PeerMsg::PeerAuth {
                    tunnel_id: TID.into(),
                    token: peer_token(&wrong_psk, TID),
                },
                "invalid peer token",
            ),
            (
                PeerMsg::PeerAuth {
                    tunnel_id: TID.into(),
                    token: "garbage".into(),
                },
                "invalid peer token",
            ),
            (
                // A valid token of another tunnel, presented for this one.
                PeerMsg::PeerAuth {
                    tunnel_id: TID.into(),
                    token: peer_token(PSK, other),
                },
                "invalid peer token",
            ),
            (
                PeerMsg::PeerAuth {
                    tunnel_id: other.into(),
                    token: peer_token(PSK, other),
                },
                "another tunnel",
            ),
            (PeerMsg::Ping, "got ping"),
            (PeerMsg::Unknown, "got an unknown type"),
        ];
        for (msg, why) in cases {
            let mut s = server(&c);
            s.handle_msg(msg.clone(), c.t(10));
            assert_eq!(
                server_tx(&mut s),
                [PeerMsg::PeerAuthError {
                    reason: "Invalid token".into()
                }],
                "{msg:?}"
            );
            let ev = server_ev(&mut s);
            assert!(
                matches!(&ev[..], [DirectEvent::Close { reason }] if reason.contains(why)),
                "{msg:?}: {ev:?}"
            );
            assert_eq!(s.state(), DirectState::Failed);
            // Final: a valid auth afterwards is not accepted.
            s.handle_msg(
                PeerMsg::PeerAuth {
                    tunnel_id: TID.into(),
                    token: peer_token(PSK, TID),
                },
                c.t(20),
            );
            assert_eq!(server_tx(&mut s), []);
            assert_eq!(server_ev(&mut s), []);
        }
        // A first frame that is not a message at all.
        let mut s = server(&c);
        s.handle_malformed(c.t(10));
        assert_eq!(server_tx(&mut s).len(), 1);
        assert!(
            matches!(&server_ev(&mut s)[..], [DirectEvent::Close { reason }]
            if reason == "malformed first frame")
        );
        // After authentication a malformed frame is ignored.
        let mut s = server(&c);
        s.handle_msg(
            PeerMsg::PeerAuth {
                tunnel_id: TID.to_uppercase(),
                token: peer_token(PSK, TID),
            },
            c.t(10),
        );
        assert_eq!(server_ev(&mut s), [DirectEvent::Authenticated]);
        s.handle_malformed(c.t(20));
        s.handle_msg(PeerMsg::Unknown, c.t(20));
        assert_eq!(server_ev(&mut s), []);
        assert_eq!(server_tx(&mut s).len(), 1, "only the peer_auth_ok");
    }

    #[test]
    fn the_server_closes_a_silent_client_after_6_s() {
        let c = Clock::new();
        let mut s = server(&c);
        assert_eq!(s.poll_timeout(), Some(c.t(6_000)));
        s.handle_timeout(c.t(5_999));
        assert_eq!(server_ev(&mut s), []);
        s.handle_timeout(c.t(6_000));
        assert_eq!(
            server_tx(&mut s),
            [PeerMsg::PeerAuthError {
                reason: "Invalid token".into()
            }]
        );
        assert_eq!(
            server_ev(&mut s),
            [DirectEvent::Close {
                reason: "no peer_auth within 6 s".into()
            }]
        );
        assert_eq!(s.poll_timeout(), None);
    }

    #[test]
    fn debug_shows_no_secret() {
        let c = Clock::new();
        let client = DirectClient::new(TID.into(), PSK, c.t(0));
        let server = server(&c);
        let shown = format!("{client:?} {server:?}");
        assert!(shown.contains(TID));
        assert!(!shown.contains(PSK) && !shown.contains(&peer_token(PSK, TID)[..20]));
    }
}
