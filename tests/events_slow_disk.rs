//! The packet loop does not wait for the disk: a real UDP flow keeps forwarding, datagram by
//! datagram, while events are raised on every datagram and each `fdatasync` of the event
//! log takes 200 ms (a slow SD card).

use std::time::{Duration, Instant};

use quoll::config::FlowConfig;
use quoll::events::log::{Log, LogOptions};
use quoll::events::storage::{MemStorage, SlowSync};
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
        let slow = |d: &MemStorage| SlowSync {
            inner: d.clone(),
            sync_time: SYNC_TIME,
        };
        let d2 = disk.clone();
        let (events, _) = Events::open_with(
            Log::open(slow(&disk), lo),
            move || Log::open(slow(&d2), lo).map(|(l, _)| l),
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
        let mut worst = (Duration::ZERO, 0);
        let mut forwarded = 0u64;
        let syncs_before = disk.syncs();
        let started = Instant::now();
        // Run until the log has done at least five slow syncs (a second of disk time).
        while disk.syncs() < syncs_before + 5 {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "the writer stopped syncing"
            );
            let took = round_trip(forwarded).await;
            worst = worst.max((took, forwarded));
            forwarded += 1;
        }
        let status = events.status();
        println!(
            "forwarded {forwarded} datagrams in {:?} across {} syncs of {SYNC_TIME:?}; worst \
             round trip {:?} (datagram {}); durable seq {}",
            started.elapsed(),
            disk.syncs() - syncs_before,
            worst.0,
            worst.1,
            status.durable_seq
        );
        // Had a raise waited for a sync, one round trip would have taken >= 200 ms. Native
        // round trips take well under a millisecond; under qemu-user the writer thread's
        // work can stall the emulated runtime thread for tens of milliseconds, so the bound
        // there is the sync time itself.
        let bound = if std::env::var_os("QUOLL_RUNNER").is_some() {
            SYNC_TIME
        } else {
            SYNC_TIME / 2
        };
        assert!(
            worst.0 < bound,
            "datagram {} took {:?} while the disk was slow",
            worst.1,
            worst.0
        );
        assert!(forwarded > 100, "only {forwarded} datagrams forwarded");
        assert!(status.durable_seq > 0, "nothing became durable");
        flows.stop_all().await;
        events.close();
    });
}
