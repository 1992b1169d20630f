//! Relay mode's shell: the failover machine (`failover.rs`) picks the relay and the time to
//! dial; each connection's conversation is a [`RelaySession`] (`relay_session.rs`) whose
//! messages this shell writes on the control stream, whose timers it keeps, and which it
//! feeds with what the control stream and the relay-opened streams bring. While the session
//! says `Ready` the data plane runs on the connection.
//!
//! Events: "connected" on each `Ready`, "peer disconnected" on each `PeerDown`, "connection
//! to relay failed" once per failing cycle (latched by the failover machine), "disconnected
//! from relay" when an established connection drops, "bind rejected" once per rejection
//! (then a long back-off, never a tight loop).

use std::time::{Duration, Instant};

use quinn::{Connection, VarInt};

use super::failover::{Failover, FailoverNext};
use super::quic;
use super::relay_session::{RelaySession, SessionEvent, SessionParams};
use super::run::{
    Fatal, Incoming, Plane, Task, connection_reason, dial, is_stream_header, sleep_until,
    write_frame,
};
use super::shared::Shared;
use super::status::{TunnelState, bump};
use super::tcp::Streams;
use super::token::bind_token;
use super::wire::{self, RelayMsg};
use crate::events::Event;
use crate::events::latch::LinkEvent;

/// How one connection to a relay ended.
#[derive(Debug)]
pub enum Outcome {
    /// The tunnel is being stopped (unbound and closed).
    Stopped,
    /// The relay refused the bind token.
    Rejected { reason: String },
    /// Bound, and the peer did not come within the wait limit: the failover may move.
    WaitedTooLong,
    /// The connection or the conversation ended: the relay went away, timed out, spoke
    /// another protocol version.
    Ended { reason: String },
}

/// Close code of a connection the edge ends.
const CLOSE_OK: VarInt = VarInt::from_u32(0);

/// How long a stopping tunnel gives its unbind, then its close, to leave: together within
/// the registry's `STOP_GRACE`.
const CLOSE_GRACE: Duration = Duration::from_millis(300);

/// The relay-mode task: dial, converse, carry, and again, until stopped.
pub async fn run(task: &mut Task, plane: &mut Plane) -> Result<(), Fatal> {
    let relays: Vec<String> = task.config.relays().iter().map(|r| r.to_string()).collect();
    if relays.is_empty() {
        return Err(Fatal::Config("relay_addr is required in relay mode"));
    }
    if task.config.tunnel_bind_secret.is_none() {
        return Err(Fatal::Config(
            "tunnel_bind_secret is required in relay mode",
        ));
    }
    let client = quic::client(&task.tls.trust(), quic::ALPN_RELAY).map_err(Fatal::Quic)?;
    let outbound = task.ctx.outbound.clone();
    let shared = plane.shared.clone();
    let mut failover = Failover::new(relays.len(), Instant::now());
    let mut connections = 0u64;
    loop {
        let now = Instant::now();
        let relay_index = match failover.poll(now) {
            FailoverNext::Dial { relay_index } => relay_index,
            FailoverNext::Wait(until) => {
                if shared.state() != TunnelState::Rejected {
                    shared.set_state(TunnelState::Backoff);
                }
                tokio::select! {
                    biased;
                    _ = task.stopped() => return Ok(()),
                    _ = sleep_until(Some(until)) => continue,
                }
            }
            // The dial below has the same deadline; nothing else is under way here.
            FailoverNext::TimedOut | FailoverNext::Idle => {
                let event = failover.failed(now, "connect timeout");
                raise(task, &shared, event, "connect timeout");
                continue;
            }
        };
        let relay = &relays[relay_index];
        shared.set_state(TunnelState::Connecting);
        shared.set_remote(Some(relay.clone()));
        let dialed = tokio::select! {
            biased;
            _ = task.stopped() => return Ok(()),
            r = dial(relay, &outbound, &client, quic::relay_sni(relay)) => r,
        };
        let (endpoint, conn) = match dialed {
            Ok(c) => c,
            Err(error) => {
                tracing::debug!(tunnel = %task.config.id, %relay, error, "relay connect failed");
                let event = failover.failed(Instant::now(), &error);
                raise(task, &shared, event, &error);
                continue;
            }
        };
        failover.connected(Instant::now());
        connections += 1;
        if connections > 1 {
            bump(&shared.counters.reconnects, 1);
        }
        tracing::debug!(tunnel = %task.config.id, %relay, "relay connected");
        let outcome = session(task, plane, &conn, &mut failover).await;
        let now = Instant::now();
        match outcome {
            Outcome::Stopped => {
                let _ = tokio::time::timeout(CLOSE_GRACE, endpoint.wait_idle()).await;
                return Ok(());
            }
            Outcome::Rejected { reason } => {
                shared.set_state(TunnelState::Rejected);
                shared.set_error(format!("bind rejected: {reason}"));
                if failover.rejected(now, &reason) {
                    task.ctx
                        .events
                        .raise(Event::tunnel_bind_rejected(&task.config.id, &reason));
                }
            }
            Outcome::WaitedTooLong => {
                let reason = format!("the peer did not bind on {relay}");
                let event = failover.failed(now, &reason);
                raise(task, &shared, event, &reason);
            }
            Outcome::Ended { reason } => {
                let event = if failover.is_ready() {
                    failover.disconnected(now, &reason)
                } else {
                    failover.failed(now, &reason)
                };
                raise(task, &shared, event, &reason);
            }
        }
        shared.set_remote(None);
    }
}

/// Raise what the failover machine says (already latched) and note the error.
fn raise(task: &Task, shared: &Shared, event: Option<LinkEvent>, reason: &str) {
    shared.set_error(reason);
    let id = &task.config.id;
    match event {
        Some(LinkEvent::Failed) => task
            .ctx
            .events
            .raise(Event::tunnel_connect_failed(id, reason)),
        Some(LinkEvent::Lost { .. }) => task
            .ctx
            .events
            .raise(Event::tunnel_disconnected(id, reason)),
        Some(LinkEvent::Connected { .. }) => task.ctx.events.raise(Event::tunnel_connected(id)),
        None => 0,
    };
}

/// One connection's conversation, from the control stream's opening to its end.
pub async fn session(
    task: &mut Task,
    plane: &mut Plane,
    conn: &Connection,
    failover: &mut Failover,
) -> Outcome {
    let config = &task.config;
    let params = SessionParams {
        tunnel_id: config.id.clone(),
        direction: config.direction,
        protocol: config.protocol,
        bind_token: bind_token(
            config.tunnel_bind_secret.as_deref().unwrap_or_default(),
            &config.id,
            config.direction,
        ),
        edge_id: task.ctx.edge_id.clone(),
        software_version: env!("CARGO_PKG_VERSION").to_string(),
    };
    let mut session = RelaySession::new(params, Instant::now());
    let (mut send, recv) = match conn.open_bi().await {
        Ok(s) => s,
        Err(e) => {
            return Outcome::Ended {
                reason: connection_reason(&e),
            };
        }
    };
    session.handle_connected(Instant::now());
    let mut control = super::run::FrameReader::new(recv);
    let mut incoming = Incoming::new();
    let mut streams = Streams::default();
    let mut out = Vec::new();
    let mut ready = false;
    let id = config.id.clone();
    let events = task.ctx.events.clone();
    let shared = plane.shared.clone();
    loop {
        while let Some(msg) = session.poll_transmit() {
            if let Err(e) = write_frame(&mut send, &msg, &mut out).await {
                return Outcome::Ended {
                    reason: format!("control stream: {e}"),
                };
            }
        }
        while let Some(event) = session.poll_event() {
            match event {
                SessionEvent::Ready => {
                    ready = true;
                    shared.set_state(TunnelState::Ready);
                    plane.on_ready();
                    // Latched: a peer that comes back on the same connection is no new
                    // connection to the relay.
                    if let Some(LinkEvent::Connected { .. }) = failover.ready(Instant::now()) {
                        events.raise(Event::tunnel_connected(&id));
                    }
                }
                SessionEvent::Waiting => {
                    ready = false;
                    shared.set_state(TunnelState::Waiting);
                }
                SessionEvent::PeerDown { reason } => {
                    ready = false;
                    shared.set_state(TunnelState::Waiting);
                    shared.set_error(format!("peer: {reason}"));
                    events.raise(Event::tunnel_peer_disconnected(&id, &reason));
                }
                SessionEvent::BindRejected { reason } => {
                    conn.close(CLOSE_OK, b"bind rejected");
                    return Outcome::Rejected { reason };
                }
                SessionEvent::WaitedTooLong if !failover.switch_on_wait() => {
                    tracing::debug!(tunnel = %id, "still waiting for the peer (no other relay)");
                }
                SessionEvent::WaitedTooLong => {
                    session.close();
                    flush_and_close(&mut session, &mut send, conn, &mut out).await;
                    return Outcome::WaitedTooLong;
                }
                SessionEvent::HelloTimeout => {
                    conn.close(CLOSE_OK, b"no hello_ack");
                    return Outcome::Ended {
                        reason: "the relay did not answer hello".to_string(),
                    };
                }
                SessionEvent::ProtocolMismatch { version } => {
                    conn.close(CLOSE_OK, b"protocol version");
                    return Outcome::Ended {
                        reason: format!("the relay speaks protocol version {version}, not 2"),
                    };
                }
            }
        }
        tokio::select! {
            biased;
            _ = task.stopped() => {
                session.close();
                flush_and_close(&mut session, &mut send, conn, &mut out).await;
                return Outcome::Stopped;
            }
            frame = control.next() => match frame {
                Ok(frame) => match wire::decode::<RelayMsg>(&frame) {
                    Ok(msg) => session.handle_control(msg, Instant::now()),
                    Err(e) => tracing::debug!(error = %e, "relay control frame ignored"),
                },
                Err(e) => {
                    return Outcome::Ended {
                        reason: conn
                            .close_reason()
                            .map_or_else(|| format!("control stream: {e}"), |c| connection_reason(&c)),
                    };
                }
            },
            opened = incoming.next(conn) => match opened {
                Ok(opened) if is_stream_header(&opened.frame) => match opened.bi {
                    Some((s, r)) if ready => plane.incoming_tcp(&opened.frame, s, r, &mut streams),
                    Some((mut s, mut r)) => {
                        let _ = s.reset(VarInt::from_u32(1));
                        let _ = r.stop(VarInt::from_u32(1));
                    }
                    None => {}
                },
                Ok(opened) => match wire::decode::<RelayMsg>(&opened.frame) {
                    Ok(msg) => session.handle_notification(msg, Instant::now()),
                    Err(e) => tracing::debug!(error = %e, "relay notification ignored"),
                },
                Err(e) => return Outcome::Ended { reason: connection_reason(&e) },
            },
            _ = sleep_until(session.poll_timeout()) => session.handle_timeout(Instant::now()),
            e = plane.run(conn, &mut streams), if ready => {
                return Outcome::Ended { reason: connection_reason(&e) };
            }
        }
    }
}

/// Write the session's last messages (the unbind), then close the connection. Bounded: a
/// relay that does not read gets the close anyway.
async fn flush_and_close(
    session: &mut RelaySession,
    send: &mut quinn::SendStream,
    conn: &Connection,
    out: &mut Vec<u8>,
) {
    let flush = async {
        while let Some(msg) = session.poll_transmit() {
            write_frame(send, &msg, out).await?;
        }
        let _ = send.finish();
        // Let the bytes leave before the close frame overtakes them.
        let _ = send.stopped().await;
        Ok::<(), quinn::WriteError>(())
    };
    let _ = tokio::time::timeout(CLOSE_GRACE, flush).await;
    conn.close(CLOSE_OK, b"tunnel stopped");
}
