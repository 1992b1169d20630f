//! The packet loop does not wait for the disk: a real UDP flow keeps forwarding, datagram by
//! datagram, while events are raised on every datagram and the event log's `fdatasync` takes
//! 200 ms (a slow SD card) or, while the test holds it, does not return at all. Forwarding
//! during a held sync is the proof: anything that waited for the disk would wait forever,
//! so the check does not depend on how fast this machine schedules us.

use std::time::{Duration, Instant};

use quoll::config::FlowConfig;
use quoll::events::log::{Log, LogOptions};
use quoll::events::storage::{MemStorage, Slow, SlowSync, SyncGate};
use quoll::events::writer::WriterOptions;
use quoll::events::{Event, Events, LogConfig};
use quoll::flow::FlowManager;

const SYNC_TIME: Duration = Duration::from_millis(200);

#[test]
fn forwarding_continues_while_the_event_log_syncs_slowly() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async {
        let disk = MemStorage::new();
        let opts = WriterOptions::new(16 << 20, Duration::from_millis(10));
        let lo: LogOptions = opts.log;
        let gate = std::sync::Arc::new(SyncGate::default());
        let slow = |d: &MemStorage, g: &std::sync::Arc<SyncGate>| SlowSync {
            inner: d.clone(),
            tap: Slow {
                sync_time: SYNC_TIME,
                gate: g.clone(),
            },
        };
        let (d2, g2) = (disk.clone(), gate.clone());
        let (events, _) = Events::open_with(
            move || Log::open(slow(&d2, &g2), lo),
            LogConfig { writer: opts },
        );

        let out = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let in_port = std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let flow: FlowConfig = serde_json::from_value(serde_json::json!({
            "id": "slow",
            "input": { "type": "udp", "bind_addr": format!("127.0.0.1:{in_port}") },
            "outputs": [{ "type": "udp", "id": "u", "dest_addr": out.local_addr().unwrap().to_string() }]
        }))
        .unwrap();
        let mut flows = FlowManager::new(events.clone());
        flows.create(flow).await.unwrap();

        let tx = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let dest: std::net::SocketAddr = format!("127.0.0.1:{in_port}").parse().unwrap();
        let mut packet = [0xFFu8; 188 * 7];
        for p in packet.chunks_mut(188) {
            p[0] = 0x47;
            p[1] = 0x1F; // null PID: no continuity counter to keep
        }
        let mut buf = vec![0u8; 2048];
        let mut round_trip = async |n: u64| {
            events.raise(Event::config_updated().with_detail("n", n));
            let t = Instant::now();
            tx.send_to(&packet, dest).await.unwrap();
            let got = tokio::time::timeout(Duration::from_secs(5), out.recv(&mut buf))
                .await
                .expect("datagram forwarded")
                .unwrap();
            assert_eq!(got, packet.len());
            t.elapsed()
        };
        // Warm up first: under qemu the first pass through the code paths is translated,
        // which stalls for a while and has nothing to do with the disk.
        for n in 0..200 {
            round_trip(n).await;
        }
        // Hold the syncs: the one in progress (or the next) does not return until we say so.
        gate.hold();
        let deadline = Instant::now() + Duration::from_secs(30);
        while gate.in_sync() == 0 {
            assert!(Instant::now() < deadline, "the writer never started a sync");
            round_trip(0).await;
        }
        let held_since = Instant::now();
        let raised_before = events.status().next_seq;
        let mut forwarded = 0u64;
        let mut worst = Duration::ZERO;
        // Forward for at least the sync time, with an event raised for every datagram.
        while forwarded < 200 || held_since.elapsed() < SYNC_TIME {
            worst = worst.max(round_trip(forwarded).await);
            forwarded += 1;
        }
        assert_eq!(gate.in_sync(), 1, "the sync is still in progress");
        let status = events.status();
        assert!(
            status.durable_seq < raised_before,
            "nothing raised during the held sync can be durable yet"
        );
        println!(
            "forwarded {forwarded} datagrams ({forwarded} events raised) in {:?} while one \
             fdatasync was held; worst round trip {worst:?}",
            held_since.elapsed()
        );
        // Let the disk finish: everything raised becomes durable, in one or two commits.
        gate.release();
        let target = events.status().next_seq - 1;
        let deadline = Instant::now() + Duration::from_secs(30);
        while events.status().durable_seq < target {
            assert!(Instant::now() < deadline, "the log never caught up");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(disk.syncs() > 0);
        flows.stop_all().await;
        events.close();
    });
}
