//! The deterministic twin of `five_percent_loss_at_120_ms_latency_loses_nothing`
//! (tests/srt_flow.rs): two srt-protocol connections, built from Quoll's own SRT options,
//! shake hands and carry a stream over the seeded network model (`testing::netsim`), on
//! fake time, with no sockets and no threads. The real-time test runs natively only,
//! because under qemu the emulator's own jitter is part of what it measures; this one runs
//! everywhere and replays exactly for a seed.
//!
//! Each endpoint is driven the way srt-tokio's connection task drives it
//! (`run_handler_loop` in vendor/srt-tokio/src/socket/factory.rs): send every queued
//! packet, release every due message, `check_timers`, then sleep until the timer, a
//! datagram or data to send; the handshake like `socket/call.rs` (a caller ticking every
//! 100 ms) and `socket/listen.rs`. Datagrams cross the model serialized, and are parsed on
//! arrival, as on a socket.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use srt_protocol::connection::{Connection, DuplexConnection};
use srt_protocol::packet::{Packet, ReceivePacketResult, SeqNumber, SocketId};
use srt_protocol::protocol::pending_connection::ConnectionResult;
use srt_protocol::protocol::pending_connection::connect::Connect;
use srt_protocol::protocol::pending_connection::listen::Listen;
use srt_protocol::settings::ConnInitSettings;

use super::Endpoint;
use crate::config::{SrtConfig, SrtMode};
use crate::testing::netsim::{Burst, Link, LinkConfig, Rng};

const CALLER: &str = "10.0.0.1:40000";
const LISTENER: &str = "10.0.0.2:9000";
/// srt-tokio's caller retries its handshake packet this often (`socket/call.rs`).
const CONNECT_TICK: Duration = Duration::from_millis(100);
/// Payload size: seven TS packets, like Quoll's outputs.
const PAYLOAD: usize = 1316;

/// What a run does.
#[derive(Debug, Clone, Copy)]
struct Scenario {
    seed: u64,
    latency_ms: u64,
    /// Sender → receiver.
    forward: LinkConfig,
    /// Receiver → sender (ACKs, NAKs).
    back: LinkConfig,
    /// Payloads sent, one every `interval`.
    payloads: u32,
    interval: Duration,
    /// The network drops every retransmitted data packet: SRT without ARQ, to show that the
    /// test sees what retransmission repairs.
    drop_retransmissions: bool,
}

impl Scenario {
    /// The real-time test's path: 5 % loss each way, 20 ms one way, 120 ms latency, about
    /// 5 Mbit/s for 3 s.
    fn five_percent(seed: u64) -> Self {
        let link = LinkConfig::delay(Duration::from_millis(20)).loss(0.05);
        Scenario {
            seed,
            latency_ms: 120,
            forward: link,
            back: link,
            payloads: 1500,
            interval: Duration::from_millis(2),
            drop_retransmissions: false,
        }
    }
}

/// What a run saw.
#[derive(Debug)]
struct Outcome {
    /// Payload numbers released by the receiver, in release order.
    released: Vec<u32>,
    /// Per released payload: the SRT sequence number srt-tokio would report with it
    /// (`released_seq`, which the 2022-7 merge orders raw TS by).
    seqs: Vec<u32>,
    /// Per released payload: release time minus the time it was handed to the sender.
    delays: Vec<Duration>,
    /// Packets the receiver skipped as too late (the holes TLPKTDROP gave up).
    skipped: u64,
    /// Data packets the receiver discarded as too late on arrival: mostly redundant
    /// retransmissions of packets already released (not a loss).
    late_arrivals: u64,
    /// Data packets the sender retransmitted.
    retransmitted: u64,
    /// Datagrams the model lost, both ways (handshake included).
    lost: u64,
    /// Fake time from the first handshake packet to connected (both sides).
    connect_time: Duration,
}

/// A datagram on the model: the sender's address and the bytes.
type Datagram = (SocketAddr, Vec<u8>);

fn wire(packet: &Packet) -> Vec<u8> {
    let mut v = Vec::with_capacity(packet.wire_size());
    packet.serialize(&mut v);
    v
}

fn parse((from, bytes): Datagram) -> ReceivePacketResult {
    let packet = Packet::parse(&mut &bytes[..], false).unwrap_or_else(|e| panic!("parse: {e:?}"));
    Ok((packet, from))
}

/// Quoll's connection settings for one side, with the socket id fixed so runs replay.
fn init_settings(mode: SrtMode, latency_ms: u64, sockid: u32) -> ConnInitSettings {
    let mut cfg = SrtConfig::new(
        mode,
        if mode == SrtMode::Caller {
            CALLER
        } else {
            LISTENER
        }
        .parse()
        .unwrap(),
    );
    if mode == SrtMode::Caller {
        cfg.remote_addr = Some(LISTENER.parse().unwrap());
    }
    cfg.latency_ms = latency_ms;
    let options = Endpoint::parse(&cfg).unwrap().options().unwrap();
    let mut s = ConnInitSettings::from(options);
    s.local_sockid = SocketId(sockid);
    s
}

/// The payload with number `n`: `n` in its first bytes, a pattern made from `n` after (so
/// a corrupted or misplaced payload shows).
fn payload(n: u32) -> Bytes {
    let mut d = vec![0u8; PAYLOAD];
    d[..4].copy_from_slice(&n.to_be_bytes());
    for (i, b) in d[4..].iter_mut().enumerate() {
        *b = (n as usize).wrapping_mul(31).wrapping_add(i) as u8;
    }
    d.into()
}

fn payload_number(d: &Bytes) -> u32 {
    assert_eq!(d.len(), PAYLOAD, "payload size");
    let n = u32::from_be_bytes(d[..4].try_into().unwrap());
    assert_eq!(d, &payload(n), "payload {n} corrupted");
    n
}

/// Sends one side's handshake packets into its link.
fn send_all(link: &mut Link<Datagram>, now: Instant, from: SocketAddr, packets: Vec<Packet>) {
    for p in packets {
        link.send(now, (from, wire(&p)));
    }
}

/// One endpoint after the handshake, as srt-tokio's connection task runs it.
struct Peer {
    conn: DuplexConnection,
    addr: SocketAddr,
    /// When `check_timers` asked to be woken.
    wake: Instant,
    /// Packets the receiver gave up as too late (TLPKTDROP) when releasing.
    skipped: u64,
}

impl Peer {
    fn new(connection: Connection, addr: SocketAddr, now: Instant) -> Self {
        Peer {
            conn: DuplexConnection::new(connection),
            addr,
            wake: now,
            skipped: 0,
        }
    }

    /// One turn of `run_handler_loop` after its input: every queued packet out, every due
    /// message released, the timers checked. Returns the released messages with the SRT
    /// sequence number of each.
    fn turn(
        &mut self,
        now: Instant,
        out: &mut Link<Datagram>,
        drop_retransmissions: bool,
        retransmitted: &mut u64,
    ) -> Vec<(u32, Bytes)> {
        while let Some((p, _)) = self.conn.next_packet(now) {
            if let Packet::Data(d) = &p
                && d.retransmitted
            {
                *retransmitted += 1;
                if drop_retransmissions {
                    continue;
                }
            }
            out.send(now, (self.addr, wire(&p)));
        }
        let mut released = Vec::new();
        let before = self.conn.statistics().rx_dropped_data;
        while let Some((_, data)) = self.conn.next_data(now) {
            released.push((self.conn.released_seq().as_raw(), data));
        }
        // `next_data` counts the packets it skipped as too late in `rx_dropped_data`, which
        // also counts a redundant retransmission that arrives after its packet went out.
        self.skipped += self.conn.statistics().rx_dropped_data - before;
        self.wake = self.conn.check_timers(now);
        released
    }
}

fn run(s: Scenario) -> Outcome {
    let caller_addr: SocketAddr = CALLER.parse().unwrap();
    let listener_addr: SocketAddr = LISTENER.parse().unwrap();
    let mut rng = Rng::new(s.seed);
    let t0 = Instant::now();
    let mut now = t0;
    // Sender (caller) → receiver (listener), and back.
    let mut forward = Link::new(s.forward, rng.next_u64());
    let mut back = Link::new(s.back, rng.next_u64());

    // Handshake, through the same lossy links.
    let mut connect = Connect::new(
        listener_addr,
        caller_addr.ip(),
        init_settings(SrtMode::Caller, s.latency_ms, 0x1111),
        None,
        SeqNumber::new_truncate(rng.next_u64() as u32),
    );
    let mut listen = Listen::new(
        init_settings(SrtMode::Listener, s.latency_ms, 0x2222),
        false,
    );
    let mut next_tick = now;
    let mut sender: Option<Peer> = None;
    let mut receiver: Option<Peer> = None;
    let mut retransmitted = 0;
    let take = |r: ConnectionResult| -> (Vec<Packet>, Option<Connection>) {
        match r {
            ConnectionResult::SendPacket((p, _)) => (vec![p], None),
            ConnectionResult::Connected(p, c) => (p.into_iter().map(|(p, _)| p).collect(), Some(c)),
            ConnectionResult::NoAction | ConnectionResult::NotHandled(_) => (vec![], None),
            other => panic!("handshake: {other:?}"),
        }
    };
    while sender.is_none() || receiver.is_none() {
        assert!(now - t0 < Duration::from_secs(2), "no connection in 2 s");
        if sender.is_none() && now >= next_tick {
            let (packets, _) = take(connect.handle_tick(now));
            send_all(&mut forward, now, caller_addr, packets);
            next_tick = now + CONNECT_TICK;
        }
        while let Some(d) = back.recv(now) {
            match &mut sender {
                Some(p) => {
                    p.conn.handle_packet_input(now, parse(d));
                    p.turn(now, &mut forward, false, &mut retransmitted);
                }
                None => {
                    let (packets, conn) = take(connect.handle_packet(parse(d), now));
                    send_all(&mut forward, now, caller_addr, packets);
                    if let Some(c) = conn {
                        sender = Some(Peer::new(c, caller_addr, now));
                    }
                }
            }
        }
        while let Some(d) = forward.recv(now) {
            match &mut receiver {
                // The caller repeats its conclusion when the answer was lost: the
                // connection's handshake answers it again.
                Some(r) => {
                    r.conn.handle_packet_input(now, parse(d));
                    r.turn(now, &mut back, false, &mut retransmitted);
                }
                None => {
                    let (packets, conn) = take(listen.handle_packet(now, parse(d)));
                    send_all(&mut back, now, listener_addr, packets);
                    if let Some(c) = conn {
                        receiver = Some(Peer::new(c, listener_addr, now));
                    }
                }
            }
        }
        if sender.is_some() && receiver.is_some() {
            break;
        }
        let tick = sender.is_none().then_some(next_tick);
        let next = [tick, forward.next_arrival(), back.next_arrival()];
        now = next.into_iter().flatten().min().expect("handshake stalled");
    }
    let connect_time = now - t0;
    let (mut sender, mut receiver) = (sender.unwrap(), receiver.unwrap());

    // Data: one payload every `interval`, then filler for a second so that a lost tail is
    // detected like any other loss (the real-time test's NullTail).
    let start = now;
    let filler_until =
        s.payloads + (Duration::from_secs(1).as_micros() / s.interval.as_micros()) as u32;
    let mut next_payload = 0u32;
    let mut sent_at = Vec::new();
    let mut released = Vec::new();
    let mut delays = Vec::new();
    let mut seqs = Vec::new();
    let end = start + s.interval * filler_until + Duration::from_millis(s.latency_ms) * 4;
    sender.wake = now;
    receiver.wake = now;
    let mut release = |got: Vec<(u32, Bytes)>, now: Instant, sent_at: &[Instant]| {
        for (seq, d) in got {
            let n = payload_number(&d);
            if n < s.payloads {
                released.push(n);
                seqs.push(seq);
                delays.push(now - sent_at[n as usize]);
            }
        }
    };
    while now < end {
        // The source.
        let mut sender_input = false;
        while next_payload < filler_until && start + s.interval * next_payload <= now {
            let n = next_payload;
            sender.conn.handle_data_input(now, Some((now, payload(n))));
            sent_at.push(now);
            next_payload += 1;
            sender_input = true;
        }
        // Each side wakes for a datagram, data to send or its timer, handles the input and
        // takes its turn; a side that got nothing and whose timer is not due sleeps on.
        while let Some(d) = back.recv(now) {
            sender.conn.handle_packet_input(now, parse(d));
            sender.turn(
                now,
                &mut forward,
                s.drop_retransmissions,
                &mut retransmitted,
            );
        }
        if sender_input || sender.wake <= now {
            sender.turn(
                now,
                &mut forward,
                s.drop_retransmissions,
                &mut retransmitted,
            );
        }
        while let Some(d) = forward.recv(now) {
            receiver.conn.handle_packet_input(now, parse(d));
            let got = receiver.turn(now, &mut back, false, &mut retransmitted);
            release(got, now, &sent_at);
        }
        if receiver.wake <= now {
            let got = receiver.turn(now, &mut back, false, &mut retransmitted);
            release(got, now, &sent_at);
        }
        assert!(sender.conn.is_open() && receiver.conn.is_open(), "closed");
        let source = (next_payload < filler_until).then(|| start + s.interval * next_payload);
        let next = [
            source,
            forward.next_arrival(),
            back.next_arrival(),
            Some(sender.wake),
            Some(receiver.wake),
        ];
        let next = next.into_iter().flatten().min().unwrap();
        // A timer in the past means "now" again; time only moves forward.
        now = next.max(now + Duration::from_micros(1)).min(end);
    }
    Outcome {
        released,
        seqs,
        delays,
        skipped: receiver.skipped,
        late_arrivals: receiver.conn.statistics().rx_dropped_data - receiver.skipped,
        retransmitted,
        lost: forward.stats().lost + back.stats().lost,
        connect_time,
    }
}

/// What is wrong with a run that should have lost nothing: payloads never released, out of
/// order or twice, or holes the receiver gave up.
fn losses(s: Scenario, o: &Outcome) -> Result<(), String> {
    let expected: Vec<u32> = (0..s.payloads).collect();
    let missing: Vec<u32> = expected
        .iter()
        .copied()
        .filter(|n| !o.released.contains(n))
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "seed {}: {} payloads never released: {missing:?} (skipped {}, late arrivals {}, retransmitted {}, lost {})",
            s.seed,
            missing.len(),
            o.skipped,
            o.late_arrivals,
            o.retransmitted,
            o.lost
        ));
    }
    if o.released != expected {
        return Err(format!("seed {}: out of order or repeated", s.seed));
    }
    if o.skipped != 0 {
        return Err(format!(
            "seed {}: {} packets skipped as too late",
            s.seed, o.skipped
        ));
    }
    Ok(())
}

fn assert_lossless(s: Scenario, o: &Outcome) {
    if let Err(e) = losses(s, o) {
        panic!("{e}");
    }
}

#[test]
fn five_percent_loss_at_120_ms_latency_loses_nothing_for_every_seed() {
    for seed in 1..=5 {
        let s = Scenario::five_percent(seed);
        let o = run(s);
        assert_lossless(s, &o);
        // The path really lost about 5 % each way, and SRT repaired it.
        let sent_estimate = u64::from(s.payloads) * 2;
        assert!(
            o.lost * 100 > sent_estimate * 3,
            "seed {seed}: lost {}",
            o.lost
        );
        assert!(o.retransmitted > 0, "seed {seed}");
        // Each payload comes with the sequence number of the packet that carried it,
        // retransmitted or not: consecutive from the first.
        for (i, seq) in o.seqs.iter().enumerate() {
            assert_eq!(
                seq.wrapping_sub(o.seqs[0]) & 0x7FFF_FFFF,
                i as u32,
                "seed {seed}"
            );
        }
        // TSBPD: every payload comes out at the same time after it went in, the latency
        // plus the one-way delay (the listener's time base starts when the caller's first
        // handshake packet arrives), whether it arrived at once or was retransmitted.
        let (min, max) = (
            o.delays.iter().min().unwrap(),
            o.delays.iter().max().unwrap(),
        );
        assert!(
            *min >= Duration::from_millis(139) && *max <= Duration::from_millis(141),
            "seed {seed}: release delays {min:?}..{max:?}"
        );
        assert!(o.connect_time < Duration::from_secs(1), "seed {seed}");
    }
}

#[test]
fn the_same_seed_replays_the_same_run() {
    let a = run(Scenario::five_percent(3));
    let b = run(Scenario::five_percent(3));
    assert_eq!(
        (a.released, a.delays, a.lost),
        (b.released, b.delays, b.lost)
    );
    assert_eq!(a.retransmitted, b.retransmitted);
}

#[test]
fn reordering_and_burst_loss_within_the_latency_lose_nothing() {
    for seed in 1..=3 {
        // Jitter up to 5 ms reorders datagrams 2 ms apart, on top of 5 % loss each way.
        let mut s = Scenario::five_percent(seed);
        s.forward = s.forward.jitter(Duration::from_millis(5), true);
        s.back = s.back.jitter(Duration::from_millis(5), true);
        assert_lossless(s, &run(s));
        // Bursts of 3 datagrams on average, about 2 % of the time, forward.
        let mut s = Scenario::five_percent(seed);
        s.forward = LinkConfig::delay(Duration::from_millis(20))
            .loss(0.01)
            .burst(Burst {
                enter: 0.007,
                leave: 0.33,
                loss: 1.0,
            });
        assert_lossless(s, &run(s));
    }
}

/// The test sees what it should: the same path without retransmissions, or with a latency
/// too short for one round trip, loses payloads, and `assert_lossless` says so.
#[test]
fn the_twin_fails_without_retransmission_or_latency() {
    let mut s = Scenario::five_percent(1);
    s.drop_retransmissions = true;
    let o = run(s);
    assert!(
        o.released.len() < s.payloads as usize - 30,
        "{}",
        o.released.len()
    );
    assert!(o.skipped > 30, "{o:?}");
    assert!(losses(s, &o).is_err());

    let mut s = Scenario::five_percent(1);
    s.latency_ms = 30;
    let o = run(s);
    assert!(o.skipped > 0, "skipped {}", o.skipped);
    assert!(losses(s, &o).is_err());
}
