//! SRT input: listener, caller or rendezvous, with an optional second leg merged hitlessly
//! (SMPTE 2022-7 style, `crate::srt::merge`).
//!
//! Each leg runs as its own future inside the input task (so aborting the task stops both).
//! A leg's payload goes through the same chunker, analyzer and ring as a UDP input's. Events
//! follow the seed's SRT and redundancy tables, latched with `ConnectionCycle` (disconnect
//! once per cycle, "connection failed" once per failing cycle, not per retry) and `LegWatch`.
//! A caller's retries and their latching are the `net::reconnect` machine's; a listener
//! latches its accepts and refusals with a `ConnectionCycle` of its own.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use futures::future::{FutureExt, LocalBoxFuture};
use srt_tokio::access::{RejectReason, ServerRejectReason};
use srt_tokio::{SrtListener, SrtSocket};
use tokio::net::UdpSocket;
use tokio::sync::Notify;

use super::{Feed, InputError};
use crate::config::{SrtConfig, SrtMode};
use crate::events::latch::{ConnectionCycle, LinkEvent};
use crate::events::{Event, Events};
use crate::net::reconnect::Next;
use crate::rtp;
use crate::srt::merge::{LegEvent, LegWatch, Merge, Verdict};
use crate::srt::{self, Endpoint, SrtError};
use crate::stats::{SrtInputSnapshot, SrtLinkSnapshot, bump};

/// How often connection counters are copied into the stats.
const STATS_EVERY: Duration = Duration::from_secs(1);
/// How often the redundancy legs are checked for silence.
const WATCH_EVERY: Duration = Duration::from_millis(100);
/// A caller's connection that lasted this long restarts its back-off from 250 ms; a shorter
/// one (a listener that accepts and drops) keeps slowing the retries down.
const STABLE_AFTER: Duration = Duration::from_secs(10);

struct Leg {
    ep: Endpoint,
    /// Bound at flow start (a bind failure is a start failure); used by the first attempt.
    socket: Option<UdpSocket>,
}

pub struct SrtInput {
    flow_id: String,
    events: Events,
    legs: Vec<Leg>,
}

/// State shared by the legs of one input (one task, borrowed between awaits only).
struct Core {
    flow_id: String,
    events: Events,
    feed: Feed,
    /// Two legs: merge and watch them.
    merge: Option<(Merge, LegWatch)>,
    /// Wakes the merge's release timer when something starts waiting for the other leg.
    release: Rc<Notify>,
    links: [SrtLinkSnapshot; 2],
    redundant: bool,
}

impl Core {
    /// A datagram from `leg`, carried by the SRT packet numbered `seq`.
    fn datagram(&mut self, leg: usize, seq: u32, data: Bytes) {
        let now = Instant::now();
        self.feed.count(data.len(), now);
        let Some((merge, watch)) = &mut self.merge else {
            let payload = match data.first() {
                Some(0x47) => &data[..],
                // RTP-wrapped TS (some encoders send it over SRT): strip the header.
                _ => match rtp::parse(&data) {
                    Ok(h) => &data[h.payload_offset..h.payload_offset + h.payload_len],
                    // Not RTP either: let the chunker resynchronise and count it.
                    Err(_) => &data[..],
                },
            };
            self.forward(payload, now);
            return;
        };
        watch.on_data(leg, now);
        let before = merge.next_deadline();
        if merge.offer(leg, now, seq, data) == Verdict::Malformed {
            bump(&self.feed.stats.malformed, 1);
        }
        let after = merge.next_deadline();
        if after.is_some() && (before.is_none() || after < before) {
            // Something waits for the other leg now (or sooner): the release timer re-arms.
            self.release.notify_one();
        }
        self.drain(now);
    }

    /// Forwards what the merge released, in order.
    fn drain(&mut self, now: Instant) {
        while let Some(d) = self.merge.as_mut().and_then(|(m, _)| m.pop()) {
            self.forward(&d, now);
        }
    }

    /// The merge's release timer fired: give up holes that waited the window.
    fn merge_tick(&mut self) {
        let now = Instant::now();
        if let Some((m, _)) = &mut self.merge {
            m.tick(now);
        }
        self.drain(now);
        self.publish();
    }

    fn merge_deadline(&self) -> Option<Instant> {
        self.merge.as_ref().and_then(|(m, _)| m.next_deadline())
    }

    fn forward(&self, payload: &[u8], now: Instant) {
        self.feed.push(payload, now);
    }

    fn raise(&self, e: Event) {
        self.events.raise(e);
    }

    /// The "connected" event for `leg` of this input (the seed has the listener leg-1 row
    /// only; leg 2 uses the `{mode}` row with the same wording).
    fn connected_event(&self, leg: usize, mode: SrtMode) -> Event {
        let f = &self.flow_id;
        match (self.redundant, mode, leg) {
            (false, SrtMode::Listener, _) => Event::srt_input_listener_connected(f),
            (false, m, _) => Event::srt_input_connected(f, m.as_str()),
            (true, SrtMode::Listener, 0) => Event::srt_input_redundant_leg1_connected(f),
            (true, SrtMode::Listener, _) => {
                Event::srt_input_connected(f, "listener, redundant leg 2")
            }
            (true, m, _) => Event::srt_input_connected(f, m.as_str()),
        }
        .with_detail("leg", leg as u64 + 1)
    }

    fn link_event(&mut self, leg: usize, mode: SrtMode, ev: Option<LinkEvent>, error: &str) {
        match ev {
            Some(LinkEvent::Connected { .. }) => {
                self.links[leg].connected = true;
                self.links[leg].connects += 1;
                self.raise(self.connected_event(leg, mode));
            }
            Some(LinkEvent::Lost { .. }) => {
                self.links[leg].connected = false;
                self.raise(
                    Event::srt_input_disconnected(&self.flow_id).with_detail("leg", leg as u64 + 1),
                );
            }
            Some(LinkEvent::Failed) => self.raise(
                Event::srt_input_connection_failed(&self.flow_id, error)
                    .with_detail("leg", leg as u64 + 1),
            ),
            None => {}
        }
    }

    fn disconnected(&mut self, leg: usize) {
        self.links[leg].connected = false;
        if let Some((merge, watch)) = &mut self.merge {
            // A new connection numbers its packets afresh: the leg is placed again.
            merge.leg_reset(leg);
            let mut out = Vec::new();
            watch.on_disconnect(leg, Instant::now(), &mut out);
            self.leg_events(&out);
        }
    }

    fn leg_events(&self, out: &[LegEvent]) {
        for e in out {
            self.raise(match e {
                LegEvent::LegLost(n) => Event::redundant_leg_lost(&self.flow_id, *n),
                LegEvent::BothLost => Event::redundant_legs_lost(&self.flow_id),
            });
        }
    }

    fn link_stats(&mut self, leg: usize, s: &srt_tokio::SocketStatistics) {
        let l = &mut self.links[leg];
        l.rtt_ms = s.rx_average_rtt.as_secs_f64() * 1000.0;
        l.data_packets = s.rx_data;
        l.retransmits = s.rx_retransmit_data;
        l.lost = s.rx_loss_data;
        l.dropped = s.rx_dropped_data;
        l.decrypt_errors = s.rx_decrypt_errors;
        self.publish();
    }

    fn publish(&self) {
        let m = self
            .merge
            .as_ref()
            .map(|(m, _)| m.stats())
            .unwrap_or_default();
        self.feed.stats.srt.set(Some(SrtInputSnapshot {
            leg1: self.links[0],
            leg2: self.redundant.then_some(self.links[1]),
            duplicates: m.duplicates,
            late: m.late,
            filled: m.filled,
            gaps: m.gaps,
        }));
    }
}

impl SrtInput {
    /// Parse and bind every leg's UDP socket now.
    pub fn bind(cfg: &SrtConfig, flow_id: &str, events: &Events) -> Result<Self, InputError> {
        let legs = Endpoint::legs(cfg)
            .map_err(InputError::Srt)?
            .into_iter()
            .map(|ep| {
                let socket = ep.bind().map_err(InputError::Srt)?;
                Ok(Leg {
                    ep,
                    socket: Some(socket),
                })
            })
            .collect::<Result<Vec<_>, InputError>>()?;
        Ok(SrtInput {
            flow_id: flow_id.to_owned(),
            events: events.clone(),
            legs,
        })
    }

    /// Runs until the task is dropped; returns only if a listener cannot be set up.
    pub async fn run(self, feed: Feed) -> InputError {
        let redundant = self.legs.len() > 1;
        let window = match (self.legs.first(), self.legs.get(1)) {
            (Some(a), Some(b)) => match b.ep.cfg.window_ms {
                Some(ms) => Duration::from_millis(ms),
                None => Merge::default_window([a.ep.cfg.latency_ms, b.ep.cfg.latency_ms]),
            },
            _ => Duration::ZERO,
        };
        let release = Rc::new(Notify::new());
        let core = RefCell::new(Core {
            flow_id: self.flow_id,
            events: self.events,
            feed,
            merge: redundant
                .then(|| (Merge::new(window), LegWatch::new(LegWatch::DEFAULT_TIMEOUT))),
            release: release.clone(),
            links: Default::default(),
            redundant,
        });
        core.borrow().publish();
        let core = &core;
        let legs: Vec<LocalBoxFuture<'_, InputError>> = self
            .legs
            .into_iter()
            .enumerate()
            .map(|(i, leg)| run_leg(i, leg, core).boxed_local())
            .collect();
        let watch = async {
            if !redundant {
                // Nothing to watch: no timer wake-ups for a single leg.
                return std::future::pending().await;
            }
            let mut tick = tokio::time::interval(WATCH_EVERY);
            let mut out = Vec::new();
            loop {
                tick.tick().await;
                let mut c = core.borrow_mut();
                if let Some((_, w)) = &mut c.merge {
                    out.clear();
                    w.tick(Instant::now(), &mut out);
                    c.leg_events(&out);
                }
            }
        };
        // The merge's timer: sleeps until a hole has waited the window (nothing to do, and
        // no wake-ups, while no datagram waits).
        let timer = async {
            if !redundant {
                return std::future::pending().await;
            }
            loop {
                let deadline = core.borrow().merge_deadline();
                match deadline {
                    Some(t) => tokio::select! {
                        _ = tokio::time::sleep_until(t.into()) => {}
                        _ = release.notified() => continue,
                    },
                    None => {
                        release.notified().await;
                        continue;
                    }
                }
                core.borrow_mut().merge_tick();
            }
        };
        tokio::select! {
            (e, _, _) = futures::future::select_all(legs) => e,
            never = watch => never,
            never = timer => never,
        }
    }
}

/// Waits for data on `sock`, or forever when there is none.
async fn next_data(sock: &mut Option<SrtSocket>) -> Option<Result<(u32, Bytes), std::io::Error>> {
    match sock {
        Some(s) => next_with_seq(s).await,
        None => std::future::pending().await,
    }
}

/// The next datagram and the SRT sequence number of the packet that carried it.
async fn next_with_seq(s: &mut SrtSocket) -> Option<Result<(u32, Bytes), std::io::Error>> {
    let d = s.next().await?;
    Some(d.map(|(_, bytes)| (s.last_seq().unwrap_or(0), bytes)))
}

async fn run_leg(idx: usize, leg: Leg, core: &RefCell<Core>) -> InputError {
    match leg.ep.mode {
        SrtMode::Listener => run_listener(idx, leg, core).await,
        SrtMode::Caller | SrtMode::Rendezvous => run_caller(idx, leg, core).await,
    }
}

async fn run_listener(idx: usize, mut leg: Leg, core: &RefCell<Core>) -> InputError {
    let ep = &leg.ep;
    let opts = match ep.options() {
        Ok(o) => o,
        Err(e) => return InputError::Srt(e),
    };
    let Some(socket) = leg.socket.take() else {
        return InputError::Srt(SrtError::Options("listener socket missing".into()));
    };
    let (listener, mut incoming) = match SrtListener::builder()
        .set(|o| *o = opts)
        .socket(socket)
        .bind(ep.local)
        .await
    {
        Ok(l) => l,
        Err(source) => {
            return InputError::Srt(SrtError::Bind {
                addr: ep.local,
                source,
            });
        }
    };
    let mut cycle = ConnectionCycle::new(Instant::now());
    let mut current: Option<SrtSocket> = None;
    let mut rejected_seen = 0u64;
    let mut tick = tokio::time::interval(STATS_EVERY / 2);
    loop {
        tokio::select! {
            req = incoming.incoming().next() => {
                let Some(req) = req else {
                    return InputError::Srt(SrtError::Options("listener stopped".into()));
                };
                if current.is_some() {
                    // One caller feeds an input; a second one is refused, as libsrt
                    // listeners in srt-live-transmit do.
                    let _ = req.reject(RejectReason::Server(ServerRejectReason::Overload)).await;
                    continue;
                }
                let remote = req.remote();
                match req.accept(None).await {
                    Ok(s) => {
                        tracing::info!(flow_id = %core.borrow().flow_id, leg = idx + 1, %remote, "SRT caller accepted");
                        current = Some(s);
                        let ev = cycle.connected(Instant::now());
                        core.borrow_mut().link_event(idx, ep.mode, ev, "");
                    }
                    Err(e) => {
                        let ev = cycle.attempt_failed(Instant::now());
                        let msg = SrtError::Connect { remote, source: e }.to_string();
                        core.borrow_mut().link_event(idx, ep.mode, ev, &msg);
                    }
                }
            }
            data = next_data(&mut current) => match data {
                Some(Ok((seq, bytes))) => core.borrow_mut().datagram(idx, seq, bytes),
                _ => {
                    current = None;
                    let ev = cycle.lost(Instant::now());
                    let mut c = core.borrow_mut();
                    c.link_event(idx, ep.mode, ev, "");
                    c.disconnected(idx);
                }
            },
            _ = tick.tick() => {
                // A caller refused in the handshake (wrong or missing passphrase) never
                // reaches `incoming`: the listener's counters tell.
                let rejected = listener.latest_statistics().cx_rejected;
                if rejected > rejected_seen {
                    rejected_seen = rejected;
                    {
                        let mut c = core.borrow_mut();
                        c.links[idx].rejected = rejected;
                        c.publish();
                    }
                    if current.is_none() {
                        let ev = cycle.attempt_failed(Instant::now());
                        let msg = SrtError::CallerRejected { local: ep.local, count: rejected }.to_string();
                        core.borrow_mut().link_event(idx, ep.mode, ev, &msg);
                    }
                }
                if let Some(s) = &current {
                    core.borrow_mut().link_stats(idx, &s.latest_statistics());
                }
            }
        }
    }
}

async fn run_caller(idx: usize, mut leg: Leg, core: &RefCell<Core>) -> InputError {
    let ep = leg.ep.clone();
    let Some(remote) = ep.remote else {
        return InputError::Srt(SrtError::BadConfig {
            field: "remote_addr",
            value: String::new(),
        });
    };
    // Options are checked before the first attempt so a bad one is not retried forever.
    if let Err(e) = ep.options() {
        return InputError::Srt(e);
    }
    let mut link = srt::reconnect(STABLE_AFTER, Instant::now());
    loop {
        if let Next::Wait(until) = link.poll(Instant::now()) {
            tokio::time::sleep_until(until.into()).await;
            continue;
        }
        let attempt = async {
            let socket = match leg.socket.take() {
                Some(s) => s,
                None => ep.bind()?,
            };
            let b = SrtSocket::builder().set(|o| *o = ep.options().unwrap_or_default());
            let b = b.socket(socket);
            let r = match ep.mode {
                SrtMode::Rendezvous => b.rendezvous(remote).await,
                _ => b.call(remote, ep.cfg.stream_id.as_deref()).await,
            };
            r.map_err(|e| SrtError::from_connect(remote, e))
        };
        match attempt.await {
            Ok(mut sock) => {
                let ev = link.connected(Instant::now());
                core.borrow_mut().link_event(idx, ep.mode, ev, "");
                let mut tick = tokio::time::interval(STATS_EVERY);
                loop {
                    tokio::select! {
                        d = next_with_seq(&mut sock) => match d {
                            Some(Ok((seq, bytes))) => core.borrow_mut().datagram(idx, seq, bytes),
                            _ => break,
                        },
                        _ = tick.tick() => core.borrow_mut().link_stats(idx, &sock.latest_statistics()),
                    }
                }
                drop(sock);
                let down = link.disconnected(Instant::now(), "connection closed");
                let mut c = core.borrow_mut();
                c.link_event(idx, ep.mode, down.event, "");
                c.disconnected(idx);
            }
            Err(e) => {
                tracing::debug!(flow_id = %core.borrow().flow_id, leg = idx + 1, "SRT connect failed: {e}");
                let msg = e.to_string();
                let down = link.failed(Instant::now(), &msg);
                core.borrow_mut().link_event(idx, ep.mode, down.event, &msg);
            }
        }
    }
}
