//! Direct mode's shell (`shared/spec/relay-protocol.md`, "Direct mode"): the `ingress` edge is
//! a QUIC server on `direct_listen_addr` with its own certificate (`cert.rs`); the `egress`
//! edge dials `peer_addr` through the failover machine (one address, the same back-off and
//! latching as a relay). The dialling edge authenticates on the first stream it opens
//! ([`DirectClient`], [`DirectServer`]); then the data plane is the relay one.
//!
//! The server keeps accepting while it serves: a peer that restarted dials again before its
//! old connection has timed out, and its new connection, once authenticated, replaces the
//! old one. Connections that fail to authenticate are closed and counted
//! (`auth_failures`), and never disturb the one in service.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use quinn::{Connection, Endpoint, SendStream, VarInt};
use tokio::sync::mpsc;

use super::cert;
use super::direct_session::{DirectClient, DirectEvent, DirectServer};
use super::failover::{Failover, FailoverNext};
use super::quic;
use super::run::{
    Fatal, FrameReader, Incoming, Plane, Task, connection_reason, dial, is_stream_header,
    sleep_until, write_frame,
};
use super::status::{TunnelState, bump};
use super::tcp::Streams;
use super::wire::{self, PeerMsg};
use crate::config::TunnelDirection;
use crate::events::Event;
use crate::events::latch::LinkEvent;

const CLOSE_OK: VarInt = VarInt::from_u32(0);
/// Close code for a connection that failed to authenticate.
const CLOSE_AUTH: VarInt = VarInt::from_u32(1);
/// Accepted connections authenticating at once; more are refused.
const AUTHENTICATING_MAX: usize = 8;
/// How long a stopping end gives its last frames and its close to leave.
const CLOSE_GRACE: Duration = Duration::from_millis(300);
/// A replaced tunnel's task has ended when its replacement starts, but quinn's endpoint
/// driver may hold `direct_listen_addr` a moment longer: so many tries, this far apart.
const BIND_TRIES: u32 = 20;
const BIND_RETRY: Duration = Duration::from_millis(50);

/// The `ingress` edge: listen, authenticate, serve; until stopped.
pub async fn serve(task: &mut Task, plane: &mut Plane) -> Result<(), Fatal> {
    let listen = task.config.direct_listen_addr.ok_or(Fatal::Config(
        "direct_listen_addr is required on the ingress edge",
    ))?;
    let psk = task
        .config
        .tunnel_psk
        .clone()
        .ok_or(Fatal::Config("tunnel_psk is required in direct mode"))?;
    let cert = cert::load_or_create(&task.ctx.data_dir).map_err(Fatal::Cert)?;
    let server = quic::direct_server(&cert).map_err(Fatal::Quic)?;
    let mut tries = 0;
    let endpoint = loop {
        match quic::server_endpoint(server.clone(), listen) {
            Ok(e) => break e,
            Err(quic::QuicError::Bind { error, .. })
                if error.kind() == std::io::ErrorKind::AddrInUse && tries < BIND_TRIES =>
            {
                tries += 1;
                tokio::time::sleep(BIND_RETRY).await;
            }
            Err(e) => return Err(Fatal::Quic(e)),
        }
    };
    tracing::info!(tunnel = %task.config.id, %listen, "direct tunnel listening");
    let result = serve_on(task, plane, &endpoint, psk).await;
    endpoint.close(CLOSE_OK, b"tunnel stopped");
    let _ = tokio::time::timeout(CLOSE_GRACE, endpoint.wait_idle()).await;
    result
}

/// The connection in service, authenticated.
struct Current {
    conn: Connection,
    server: DirectServer,
    send: SendStream,
    reader: FrameReader,
    incoming: Incoming,
    streams: Streams,
    since: Instant,
}

/// What happened on the connection in service.
enum Step {
    /// Something for the session; go round again.
    Continue,
    /// It ended, for this reason.
    Ended(String),
}

async fn serve_on(
    task: &mut Task,
    plane: &mut Plane,
    endpoint: &Endpoint,
    psk: String,
) -> Result<(), Fatal> {
    let id = task.config.id.clone();
    let events = task.ctx.events.clone();
    let shared = plane.shared.clone();
    let (auth_tx, mut auth_rx) = mpsc::channel::<Current>(AUTHENTICATING_MAX);
    let mut authenticating = Streams::default();
    let mut current: Option<Current> = None;
    let mut out = Vec::new();
    let mut served = 0u64;
    shared.set_state(TunnelState::Connecting);
    loop {
        if let Some(cur) = &mut current {
            while let Some(msg) = cur.server.poll_transmit() {
                if let Err(e) = write_frame(&mut cur.send, &msg, &mut out).await {
                    tracing::debug!(error = %e, "direct tunnel control stream");
                    break;
                }
            }
        }
        tokio::select! {
            biased;
            _ = task.stopped() => {
                if let Some(cur) = current.take() {
                    cur.conn.close(CLOSE_OK, b"tunnel stopped");
                }
                return Ok(());
            }
            Some(new) = auth_rx.recv() => {
                if let Some(old) = current.take() {
                    old.conn.close(CLOSE_OK, b"replaced");
                    events.raise(Event::tunnel_disconnected(
                        &id,
                        "the peer connected again (replaced the old connection)",
                    ));
                }
                served += 1;
                if served > 1 {
                    bump(&shared.counters.reconnects, 1);
                }
                shared.set_remote(Some(new.conn.remote_address().to_string()));
                shared.set_state(TunnelState::Ready);
                plane.on_ready();
                events.raise(Event::tunnel_connected(&id));
                current = Some(new);
            }
            incoming = endpoint.accept() => {
                let Some(incoming) = incoming else {
                    // Only a closed endpoint stops accepting, and only this task closes it.
                    return Ok(());
                };
                if authenticating.live() >= AUTHENTICATING_MAX {
                    tracing::debug!(remote = %incoming.remote_address(), "too many peers authenticating: refused");
                    incoming.refuse();
                    continue;
                }
                let tx = auth_tx.clone();
                let psk = psk.clone();
                let id = id.clone();
                let shared = shared.clone();
                authenticating.spawn(async move {
                    match authenticate(incoming, id, psk).await {
                        Ok(cur) => {
                            let _ = tx.send(cur).await;
                        }
                        Err(AuthFailure { remote, reason, counted: true }) => {
                            tracing::warn!(%remote, reason, "direct tunnel peer refused");
                            bump(&shared.counters.auth_failures, 1);
                        }
                        Err(AuthFailure { remote, reason, counted: false }) => {
                            tracing::debug!(%remote, reason, "direct tunnel handshake failed");
                        }
                    }
                });
            }
            step = step(current.as_mut(), plane) => match step {
                Step::Continue => {}
                Step::Ended(reason) => {
                    let up = current.take().map(|c| {
                        // Gone already, or only its control stream: either way it is over.
                        c.conn.close(CLOSE_OK, b"ended");
                        c.since.elapsed()
                    });
                    tracing::info!(tunnel = %id, reason, up_secs = ?up.map(|d| d.as_secs()), "direct tunnel connection ended");
                    shared.set_remote(None);
                    shared.set_error(&reason);
                    shared.set_state(TunnelState::Connecting);
                    events.raise(Event::tunnel_disconnected(&id, &reason));
                }
            },
        }
    }
}

/// One step of the connection in service: a control message, a stream the peer opened, its
/// timers, or its end (the data plane runs until then). Pending forever without one.
async fn step(current: Option<&mut Current>, plane: &mut Plane) -> Step {
    let Some(cur) = current else {
        return std::future::pending().await;
    };
    tokio::select! {
        frame = cur.reader.next() => match frame {
            Ok(frame) => {
                match wire::decode::<PeerMsg>(&frame) {
                    Ok(msg) => cur.server.handle_msg(msg, Instant::now()),
                    Err(_) => cur.server.handle_malformed(Instant::now()),
                }
                Step::Continue
            }
            Err(e) => Step::Ended(
                cur.conn
                    .close_reason()
                    .map_or_else(|| format!("control stream: {e}"), |c| connection_reason(&c)),
            ),
        },
        opened = cur.incoming.next(&cur.conn) => match opened {
            Ok(opened) => {
                match opened.bi {
                    Some((s, r)) if is_stream_header(&opened.frame) => {
                        plane.incoming_tcp(&opened.frame, s, r, &mut cur.streams)
                    }
                    _ => tracing::debug!("direct tunnel stream that is no TCP stream ignored"),
                }
                Step::Continue
            }
            Err(e) => Step::Ended(connection_reason(&e)),
        },
        _ = sleep_until(cur.server.poll_timeout()) => {
            cur.server.handle_timeout(Instant::now());
            Step::Continue
        }
        e = plane.run(&cur.conn, &mut cur.streams) => Step::Ended(connection_reason(&e)),
    }
}

struct AuthFailure {
    remote: SocketAddr,
    reason: String,
    /// Whether it is an authentication failure (not a handshake that merely broke off).
    counted: bool,
}

/// Take an incoming connection through the handshake and `peer_auth`.
async fn authenticate(
    incoming: quinn::Incoming,
    tunnel_id: String,
    psk: String,
) -> Result<Current, AuthFailure> {
    let remote = incoming.remote_address();
    let fail = |reason: String, counted| AuthFailure {
        remote,
        reason,
        counted,
    };
    let now = Instant::now();
    let mut server = DirectServer::new(tunnel_id, psk, now);
    let deadline = server.poll_timeout();
    let handshake = async {
        let conn = incoming.await.map_err(|e| e.to_string())?;
        let (send, recv) = conn.accept_bi().await.map_err(|e| e.to_string())?;
        Ok::<_, String>((conn, send, recv))
    };
    let (conn, mut send, recv) = match tokio::time::timeout_at(
        tokio::time::Instant::from_std(
            deadline.unwrap_or(now + super::direct_session::AUTH_TIMEOUT),
        ),
        handshake,
    )
    .await
    {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => return Err(fail(e, false)),
        Err(_) => {
            return Err(fail(
                "no stream within the authentication time".into(),
                true,
            ));
        }
    };
    let mut reader = FrameReader::new(recv);
    let mut out = Vec::new();
    loop {
        while let Some(msg) = server.poll_transmit() {
            let _ = write_frame(&mut send, &msg, &mut out).await;
        }
        while let Some(event) = server.poll_event() {
            match event {
                DirectEvent::Authenticated => {
                    return Ok(Current {
                        conn,
                        server,
                        send,
                        reader,
                        incoming: Incoming::new(),
                        streams: Streams::default(),
                        since: Instant::now(),
                    });
                }
                DirectEvent::Close { reason } => {
                    // The answer was written above; let it leave before the close.
                    let _ = send.finish();
                    let _ = tokio::time::timeout(CLOSE_GRACE, send.stopped()).await;
                    conn.close(CLOSE_AUTH, b"authentication failed");
                    return Err(fail(reason, true));
                }
                DirectEvent::Rejected(_) | DirectEvent::TimedOut => {}
            }
        }
        tokio::select! {
            frame = reader.next() => match frame {
                Ok(frame) => match wire::decode::<PeerMsg>(&frame) {
                    Ok(msg) => server.handle_msg(msg, Instant::now()),
                    Err(_) => server.handle_malformed(Instant::now()),
                },
                Err(e) => return Err(fail(format!("before authenticating: {e}"), true)),
            },
            _ = sleep_until(server.poll_timeout()) => server.handle_timeout(Instant::now()),
        }
    }
}

/// How one connection of the dialling edge ended.
#[derive(Debug)]
pub enum Outcome {
    Stopped,
    /// The peer refused our token or never answered it: a failed attempt.
    Refused(String),
    /// The authenticated connection ended.
    Ended(String),
}

/// The `egress` edge's conversation on one connection: authenticate, then carry traffic
/// until the connection ends or the tunnel stops. `on_auth` runs once authenticated.
pub async fn client_session(
    task: &mut Task,
    plane: &mut Plane,
    conn: &Connection,
    mut on_auth: impl FnMut(),
) -> Outcome {
    let psk = task.config.tunnel_psk.clone().unwrap_or_default();
    let mut client = DirectClient::new(task.config.id.clone(), &psk, Instant::now());
    let (mut send, recv) = match conn.open_bi().await {
        Ok(s) => s,
        Err(e) => return Outcome::Refused(connection_reason(&e)),
    };
    client.handle_connected(Instant::now());
    let mut reader = FrameReader::new(recv);
    let mut incoming = Incoming::new();
    let mut streams = Streams::default();
    let mut out = Vec::new();
    let mut ready = false;
    loop {
        while let Some(msg) = client.poll_transmit() {
            if let Err(e) = write_frame(&mut send, &msg, &mut out).await {
                let reason = format!("control stream: {e}");
                return if ready {
                    Outcome::Ended(reason)
                } else {
                    Outcome::Refused(reason)
                };
            }
        }
        while let Some(event) = client.poll_event() {
            match event {
                DirectEvent::Authenticated => {
                    ready = true;
                    plane.on_ready();
                    on_auth();
                }
                DirectEvent::Rejected(reason) => {
                    conn.close(CLOSE_OK, b"refused");
                    return Outcome::Refused(format!("the peer refused our token: {reason}"));
                }
                DirectEvent::TimedOut => {
                    conn.close(CLOSE_OK, b"no answer");
                    return Outcome::Refused("the peer did not answer peer_auth".to_string());
                }
                DirectEvent::Close { .. } => {}
            }
        }
        tokio::select! {
            biased;
            _ = task.stopped() => {
                let _ = send.finish();
                conn.close(CLOSE_OK, b"tunnel stopped");
                return Outcome::Stopped;
            }
            frame = reader.next() => match frame {
                Ok(frame) => match wire::decode::<PeerMsg>(&frame) {
                    Ok(msg) => client.handle_msg(msg, Instant::now()),
                    Err(e) => tracing::debug!(error = %e, "direct tunnel frame ignored"),
                },
                Err(e) => {
                    let reason = conn
                        .close_reason()
                        .map_or_else(|| format!("control stream: {e}"), |c| connection_reason(&c));
                    return if ready { Outcome::Ended(reason) } else { Outcome::Refused(reason) };
                }
            },
            opened = incoming.next(conn) => match opened {
                Ok(opened) => match opened.bi {
                    Some((s, r)) if ready && is_stream_header(&opened.frame) => {
                        plane.incoming_tcp(&opened.frame, s, r, &mut streams)
                    }
                    _ => tracing::debug!("direct tunnel stream ignored"),
                },
                Err(e) => {
                    let reason = connection_reason(&e);
                    return if ready { Outcome::Ended(reason) } else { Outcome::Refused(reason) };
                }
            },
            _ = sleep_until(client.poll_timeout()) => client.handle_timeout(Instant::now()),
            e = plane.run(conn, &mut streams), if ready => return Outcome::Ended(connection_reason(&e)),
        }
    }
}

/// The direct-mode task: serve (`ingress`) or dial (`egress`) until stopped.
pub async fn run(task: &mut Task, plane: &mut Plane) -> Result<(), Fatal> {
    if task.config.tunnel_psk.is_none() {
        return Err(Fatal::Config("tunnel_psk is required in direct mode"));
    }
    match task.config.direction {
        TunnelDirection::Ingress => serve(task, plane).await,
        TunnelDirection::Egress => dial_peer(task, plane).await,
    }
}

/// The `egress` edge: dial `peer_addr` with the failover machine over one address (its
/// connect timeout, back-off and latched events), authenticate, carry; again, until stopped.
async fn dial_peer(task: &mut Task, plane: &mut Plane) -> Result<(), Fatal> {
    let peer = task
        .config
        .peer_addr
        .clone()
        .ok_or(Fatal::Config("peer_addr is required on the egress edge"))?;
    let client = quic::client(&task.tls.trust(), quic::ALPN_DIRECT).map_err(Fatal::Quic)?;
    let outbound = task.ctx.outbound.clone();
    let shared = plane.shared.clone();
    let events = task.ctx.events.clone();
    let id = task.config.id.clone();
    let mut failover = Failover::new(1, Instant::now());
    let mut connections = 0u64;
    let raise = |event: Option<LinkEvent>, reason: &str| {
        shared.set_error(reason);
        match event {
            Some(LinkEvent::Failed) => {
                events.raise(Event::tunnel_connect_failed(&id, reason));
            }
            Some(LinkEvent::Lost { .. }) => {
                events.raise(Event::tunnel_disconnected(&id, reason));
            }
            Some(LinkEvent::Connected { .. }) | None => {}
        }
    };
    loop {
        let now = Instant::now();
        match failover.poll(now) {
            FailoverNext::Dial { .. } => {}
            FailoverNext::Wait(until) => {
                shared.set_state(TunnelState::Backoff);
                tokio::select! {
                    biased;
                    _ = task.stopped() => return Ok(()),
                    _ = sleep_until(Some(until)) => continue,
                }
            }
            FailoverNext::TimedOut | FailoverNext::Idle => {
                raise(failover.failed(now, "connect timeout"), "connect timeout");
                continue;
            }
        }
        shared.set_state(TunnelState::Connecting);
        shared.set_remote(Some(peer.clone()));
        let dialed = tokio::select! {
            biased;
            _ = task.stopped() => return Ok(()),
            r = dial(&peer, &outbound, &client, quic::SNI_DIRECT) => r,
        };
        let (endpoint, conn) = match dialed {
            Ok(c) => c,
            Err(error) => {
                tracing::debug!(tunnel = %id, %peer, error, "direct peer connect failed");
                raise(failover.failed(Instant::now(), &error), &error);
                continue;
            }
        };
        failover.connected(Instant::now());
        connections += 1;
        if connections > 1 {
            bump(&shared.counters.reconnects, 1);
        }
        let outcome = client_session(task, plane, &conn, || {
            shared.set_state(TunnelState::Ready);
            if let Some(LinkEvent::Connected { .. }) = failover.ready(Instant::now()) {
                events.raise(Event::tunnel_connected(&id));
            }
        })
        .await;
        let now = Instant::now();
        match outcome {
            Outcome::Stopped => {
                let _ = tokio::time::timeout(CLOSE_GRACE, endpoint.wait_idle()).await;
                return Ok(());
            }
            Outcome::Refused(reason) => raise(failover.failed(now, &reason), &reason),
            Outcome::Ended(reason) => raise(failover.disconnected(now, &reason), &reason),
        }
        shared.set_remote(None);
    }
}
