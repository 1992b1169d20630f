//! SRT output: a listener feeding up to `max_connections` callers, or a caller that
//! reconnects forever with back-off (`net::reconnect`). With `redundancy`, each leg is fed
//! independently (the receiving end merges them).
//!
//! The output holds one ring reader per leg and copies each chunk once into a `Bytes` that
//! every connection of the leg shares (srt-tokio takes owned `Bytes`). A connection whose
//! srt-tokio queue is full has the chunk counted as dropped rather than stalling the others.
//! Connections that stop acknowledging are dropped as stale (`StaleDetector`).

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use futures::future::{FutureExt, LocalBoxFuture};
use srt_tokio::access::{RejectReason, ServerRejectReason};
use srt_tokio::{SrtIncoming, SrtListener, SrtSocket};
use tokio::net::UdpSocket;

use super::OutputError;
use crate::config::{SrtConfig, SrtMode};
use crate::events::latch::{ConnectionCycle, LinkEvent};
use crate::events::{Event, Events};
use crate::net::reconnect::{Next, Reconnect};
use crate::srt::{self, Endpoint, SrtError, StaleDetector};
use crate::stats::{OutputStats, SrtOutputSnapshot, bump};
use crate::ts::ring::{FlowRing, Read};

/// How often connections are checked (closed, stale) and stats refreshed.
const CHECK_EVERY: Duration = Duration::from_millis(250);
/// A caller's connection that lasted this long restarts its back-off from 250 ms: one check
/// interval, as it always has been here, so a receiver that restarts gets its stream back
/// after 250 ms rather than after the back-off its absence had built up.
const STABLE_AFTER: Duration = CHECK_EVERY;

pub struct SrtOutput {
    flow_id: String,
    output_id: String,
    events: Events,
    legs: Vec<(Endpoint, Option<UdpSocket>)>,
}

struct Conn {
    sock: SrtSocket,
    remote: SocketAddr,
    stale: StaleDetector,
}

/// Per-leg SRT counters, summed into the output's snapshot.
type Shared = Rc<RefCell<[SrtOutputSnapshot; 2]>>;

impl SrtOutput {
    pub fn bind(
        cfg: &SrtConfig,
        flow_id: &str,
        output_id: &str,
        events: &Events,
    ) -> Result<Self, OutputError> {
        let legs = Endpoint::legs(cfg)
            .map_err(OutputError::Srt)?
            .into_iter()
            .map(|ep| {
                ep.options().map_err(OutputError::Srt)?;
                let s = ep.bind().map_err(OutputError::Srt)?;
                Ok((ep, Some(s)))
            })
            .collect::<Result<Vec<_>, OutputError>>()?;
        Ok(SrtOutput {
            flow_id: flow_id.to_owned(),
            output_id: output_id.to_owned(),
            events: events.clone(),
            legs,
        })
    }

    /// Feeds every leg until the task is dropped.
    pub async fn run(self, ring: Rc<FlowRing>, stats: Rc<OutputStats>) {
        let shared: Shared = Rc::default();
        stats.srt.set(Some(SrtOutputSnapshot::default()));
        let ctx = Ctx {
            flow_id: self.flow_id,
            output_id: self.output_id,
            events: self.events,
        };
        let ctx = &ctx;
        let legs: Vec<LocalBoxFuture<'_, ()>> = self
            .legs
            .into_iter()
            .enumerate()
            .map(|(i, (ep, sock))| {
                run_leg(
                    i,
                    ep,
                    sock,
                    ring.clone(),
                    stats.clone(),
                    shared.clone(),
                    ctx,
                )
                .boxed_local()
            })
            .collect();
        futures::future::join_all(legs).await;
    }
}

struct Ctx {
    flow_id: String,
    output_id: String,
    events: Events,
}

impl Ctx {
    fn raise(&self, e: Event) {
        self.events.raise(e);
    }
}

/// A caller's connection state, as its [`Reconnect`] machine last said.
enum Dial {
    /// Backing off until the machine's deadline.
    Waiting(std::pin::Pin<Box<tokio::time::Sleep>>),
    Connecting(LocalBoxFuture<'static, Result<SrtSocket, SrtError>>),
    /// Connected, or a listener (which never dials).
    Idle,
}

/// Asks the machine what the caller does next: dial now, or wait until its deadline.
fn next_dial(link: &mut Reconnect, ep: &Endpoint, socket: Option<UdpSocket>) -> Dial {
    match link.poll(Instant::now()) {
        Next::Connect => dial(ep, socket),
        Next::Wait(until) => Dial::Waiting(Box::pin(tokio::time::sleep_until(until.into()))),
        // Up, or dialing (no deadline of the machine's: srt-tokio's handshake has its own).
        Next::TimedOut | Next::Idle => Dial::Idle,
    }
}

fn dial(ep: &Endpoint, socket: Option<UdpSocket>) -> Dial {
    let ep = ep.clone();
    Dial::Connecting(
        async move {
            let remote = ep.remote.ok_or(SrtError::BadConfig {
                field: "remote_addr",
                value: String::new(),
            })?;
            let socket = match socket {
                Some(s) => s,
                None => ep.bind()?,
            };
            let opts = ep.options()?;
            let b = SrtSocket::builder().set(|o| *o = opts).socket(socket);
            let r = match ep.mode {
                SrtMode::Rendezvous => b.rendezvous(remote).await,
                _ => b.call(remote, ep.cfg.stream_id.as_deref()).await,
            };
            r.map_err(|e| SrtError::from_connect(remote, e))
        }
        .boxed_local(),
    )
}

async fn poll_dial(d: &mut Dial) -> Option<Result<SrtSocket, SrtError>> {
    match d {
        Dial::Waiting(s) => {
            s.as_mut().await;
            None
        }
        Dial::Connecting(f) => Some(f.await),
        Dial::Idle => std::future::pending().await,
    }
}

async fn next_request(
    incoming: &mut Option<(SrtListener, SrtIncoming)>,
) -> Option<srt_tokio::ConnectionRequest> {
    match incoming {
        Some((_, i)) => i.incoming().next().await,
        None => std::future::pending().await,
    }
}

#[allow(clippy::too_many_arguments)]
async fn run_leg(
    idx: usize,
    ep: Endpoint,
    mut socket: Option<UdpSocket>,
    ring: Rc<FlowRing>,
    stats: Rc<OutputStats>,
    shared: Shared,
    ctx: &Ctx,
) {
    let (flow, out) = (&ctx.flow_id, &ctx.output_id);
    let listener_mode = ep.mode == SrtMode::Listener;
    let max = ep
        .cfg
        .max_connections
        .unwrap_or(SrtConfig::DEFAULT_MAX_CONNECTIONS) as usize;
    let mut listener = None;
    if listener_mode {
        let opts = match ep.options() {
            Ok(o) => o,
            Err(e) => {
                ctx.raise(Event::srt_output_connection_failed(
                    flow,
                    out,
                    &e.to_string(),
                ));
                return;
            }
        };
        let Some(sock) = socket.take() else { return };
        match SrtListener::builder()
            .set(|o| *o = opts)
            .socket(sock)
            .bind(ep.local)
            .await
        {
            Ok(l) => listener = Some(l),
            Err(e) => {
                let e = SrtError::Bind {
                    addr: ep.local,
                    source: e,
                };
                ctx.raise(Event::srt_output_connection_failed(
                    flow,
                    out,
                    &e.to_string(),
                ));
                return;
            }
        }
    }
    // A caller's retries and their events are its machine's; a listener latches its
    // refused handshakes per cycle (a cycle ends when its last caller has gone).
    let mut link = srt::reconnect(STABLE_AFTER, Instant::now());
    let mut cycle = ConnectionCycle::new(Instant::now());
    let mut dial_state = if listener_mode {
        Dial::Idle
    } else {
        next_dial(&mut link, &ep, socket.take())
    };
    let mut conns: Vec<Conn> = Vec::new();
    let mut snap = SrtOutputSnapshot::default();
    let mut rejected_seen = 0u64;
    let mut reader = ring.ring.borrow().reader();
    let mut tick = tokio::time::interval(CHECK_EVERY);
    // Counters are the output's, not per leg: leg 1 counts them.
    let counts = idx == 0;

    loop {
        let notified = ring.notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        loop {
            let r = ring.ring.borrow();
            match r.read(&mut reader) {
                Read::Empty => break,
                Read::Lagged(missed) => {
                    if counts {
                        bump(&stats.dropped, missed);
                    }
                }
                Read::Chunk(chunk) => {
                    if conns.is_empty() {
                        continue;
                    }
                    let packets = chunk.packets() as u64;
                    let data = Bytes::copy_from_slice(chunk.data);
                    let now = Instant::now();
                    let mut sent = false;
                    for c in &mut conns {
                        match c.sock.try_send(now, data.clone()) {
                            Ok(()) => sent = true,
                            // srt-tokio's queue is full: this peer misses the chunk.
                            Err(_) => {
                                if counts {
                                    bump(&stats.dropped, packets);
                                }
                            }
                        }
                    }
                    if counts && sent {
                        bump(&stats.datagrams, 1);
                        bump(&stats.packets, packets);
                        bump(&stats.bytes, data.len() as u64);
                    }
                }
            }
        }

        tokio::select! {
            _ = &mut notified => {}
            req = next_request(&mut listener) => {
                let Some(req) = req else {
                    ctx.raise(Event::srt_output_connection_failed(flow, out, "listener stopped"));
                    return;
                };
                if conns.len() >= max {
                    snap.refused += 1;
                    tracing::warn!(flow_id = %flow, output_id = %out, remote = %req.remote(),
                        "SRT caller refused: {max} connection(s) already fed");
                    let _ = req.reject(RejectReason::Server(ServerRejectReason::Overload)).await;
                    continue;
                }
                let remote = req.remote();
                if let Ok(sock) = req.accept(None).await {
                    cycle.connected(Instant::now());
                    snap.connects += 1;
                    conns.push(Conn { sock, remote, stale: StaleDetector::new(StaleDetector::DEFAULT_TIMEOUT, Instant::now()) });
                    ctx.raise(Event::srt_output_connected(flow, out).with_detail("remote", remote.to_string()));
                }
            }
            res = poll_dial(&mut dial_state) => match res {
                // The back-off wait is over: dial again.
                None => dial_state = next_dial(&mut link, &ep, None),
                Some(Ok(sock)) => {
                    let remote = sock.settings().remote;
                    dial_state = Dial::Idle;
                    if let Some(LinkEvent::Connected { .. }) = link.connected(Instant::now()) {
                        ctx.raise(Event::srt_output_connected(flow, out).with_detail("remote", remote.to_string()));
                    }
                    snap.connects += 1;
                    conns.push(Conn { sock, remote, stale: StaleDetector::new(StaleDetector::DEFAULT_TIMEOUT, Instant::now()) });
                    // Start at the live head: what queued while connecting is stale.
                    reader = ring.ring.borrow().reader();
                }
                Some(Err(e)) => {
                    let msg = e.to_string();
                    if link.failed(Instant::now(), &msg).event == Some(LinkEvent::Failed) {
                        ctx.raise(Event::srt_output_connection_failed(flow, out, &msg));
                    }
                    tracing::debug!(flow_id = %flow, output_id = %out, "SRT connect failed: {e}");
                    dial_state = next_dial(&mut link, &ep, None);
                }
            },
            _ = tick.tick() => {
                let now = Instant::now();
                let mut i = 0;
                let (mut rtt, mut retrans, mut lost, mut dropped) = (0f64, 0u64, 0u64, 0u64);
                while i < conns.len() {
                    let c = &mut conns[i];
                    let s = c.sock.latest_statistics();
                    let closed = c.sock.is_closed();
                    let stale = !closed && c.stale.update(now, s.rx_ack + s.rx_light_ack, s.tx_data);
                    if closed || stale {
                        let c = conns.swap_remove(i);
                        // A listener reports each peer that goes; a caller its link's drop
                        // (the machine's latched "disconnected").
                        let lost = if listener_mode {
                            true
                        } else {
                            let why = if stale { "stopped acknowledging" } else { "connection closed" };
                            let down = link.disconnected(now, why);
                            dial_state = next_dial(&mut link, &ep, None);
                            matches!(down.event, Some(LinkEvent::Lost { .. }))
                        };
                        if stale {
                            snap.stale += 1;
                            tracing::warn!(flow_id = %flow, output_id = %out, remote = %c.remote,
                                "SRT peer stopped acknowledging: dropped");
                            ctx.raise(Event::srt_output_stale(flow, out).with_detail("remote", c.remote.to_string()));
                        } else if lost {
                            ctx.raise(Event::srt_output_disconnected(flow, out).with_detail("remote", c.remote.to_string()));
                        }
                        drop(c);
                        if listener_mode && conns.is_empty() {
                            // A fresh cycle: the next refused handshake is reported again.
                            cycle = ConnectionCycle::new(now);
                        }
                        continue;
                    }
                    rtt = rtt.max(s.tx_average_rtt.as_secs_f64() * 1000.0);
                    retrans += s.tx_retransmit_data;
                    lost += s.tx_loss_data;
                    dropped += s.tx_dropped_data;
                    i += 1;
                }
                if let Some((l, _)) = &listener {
                    let rejected = l.latest_statistics().cx_rejected;
                    if rejected > rejected_seen {
                        rejected_seen = rejected;
                        snap.rejected = rejected;
                        if conns.is_empty() && cycle.attempt_failed(now) == Some(LinkEvent::Failed) {
                            let e = SrtError::CallerRejected { local: ep.local, count: rejected };
                            ctx.raise(Event::srt_output_connection_failed(flow, out, &e.to_string()));
                        }
                    }
                }
                snap.connections = conns.len() as u64;
                snap.rtt_ms = rtt;
                snap.retransmits = retrans;
                snap.lost = lost;
                snap.dropped = dropped;
                let total = {
                    let mut legs = shared.borrow_mut();
                    legs[idx.min(1)] = snap;
                    legs.iter().fold(SrtOutputSnapshot::default(), |a, b| SrtOutputSnapshot {
                        connections: a.connections + b.connections,
                        connects: a.connects + b.connects,
                        stale: a.stale + b.stale,
                        refused: a.refused + b.refused,
                        rejected: a.rejected + b.rejected,
                        rtt_ms: a.rtt_ms.max(b.rtt_ms),
                        retransmits: a.retransmits + b.retransmits,
                        lost: a.lost + b.lost,
                        dropped: a.dropped + b.dropped,
                    })
                };
                stats.srt.set(Some(total));
            }
        }
    }
}
