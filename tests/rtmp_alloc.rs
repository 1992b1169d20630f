//! Allocations on the RTMP input path (socket -> chunk stream -> FLV -> remux -> ring -> UDP
//! output) per TS packet in steady state, with a counting global allocator, ffmpeg
//! publishing a live H.264 + AAC stream at about 3 Mbit/s. Unlike the UDP path
//! (tests/flow_alloc.rs: none at all) the RTMP path allocates per media message (a
//! message's payload, the access unit converted to Annex B); what is held here is that this
//! stays a small fraction of an allocation per TS packet, not one or more per packet.
//! Its own binary: the counter is process-wide, so no other test may run beside it.

// The counting global allocator (tests/support) is an `unsafe impl GlobalAlloc`.
#![allow(unsafe_code)]

#[path = "support/counting_alloc.rs"]
mod counting_alloc;

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use quoll::config::FlowConfig;
use quoll::events::Events;
use quoll::flow::FlowManager;

/// At most one allocation per this many TS packets out (measured: see the printed line).
const PACKETS_PER_ALLOCATION: u64 = 4;

#[test]
fn the_rtmp_input_allocates_per_message_not_per_packet() {
    require_peers!("ffmpeg");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async {
        let rx = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let _ = socket2::SockRef::from(&rx).set_recv_buffer_size(8 << 20);
        let port = common::free_tcp_port();
        let flow: FlowConfig = serde_json::from_value(serde_json::json!({
            "id": "alloc",
            "input": { "type": "rtmp", "listen_addr": format!("127.0.0.1:{port}"),
                       "app": "live", "stream_key": "k" },
            "outputs": [
                { "type": "udp", "id": "u", "dest_addr": rx.local_addr().unwrap().to_string() }
            ]
        }))
        .unwrap();
        let mut flows = FlowManager::new(Events::in_memory(16));
        flows.create(flow).await.unwrap();

        let mut publisher = Command::new("ffmpeg")
            .args(["-hide_banner", "-nostdin", "-loglevel", "error", "-re"])
            .args(["-f", "lavfi", "-i", "testsrc2=size=640x360:rate=25"])
            .args(["-f", "lavfi", "-i", "sine=frequency=1000:sample_rate=48000"])
            .args(["-t", "8", "-c:v", "libx264", "-preset", "ultrafast"])
            .args(["-b:v", "3M", "-g", "50", "-c:a", "aac", "-b:a", "64k"])
            .args(["-f", "flv", &format!("rtmp://127.0.0.1:{port}/live/k")])
            .stdin(Stdio::null())
            .spawn()
            .expect("start ffmpeg");

        // Receive for 2 s of warm-up (connection, sequence headers, buffers growing to their
        // working size), then count over 4 s. The receive loop itself allocates nothing.
        let mut buf = vec![0u8; 2048];
        let mut bytes = 0u64;
        let mut before = None;
        let start = tokio::time::Instant::now();
        loop {
            let now = tokio::time::Instant::now();
            if before.is_none() && now >= start + Duration::from_secs(2) && bytes > 0 {
                before = Some((counting_alloc::allocations(), bytes));
            }
            if now >= start + Duration::from_secs(6) {
                break;
            }
            let got = tokio::time::timeout(Duration::from_millis(200), rx.recv(&mut buf)).await;
            if let Ok(Ok(n)) = got {
                bytes += n as u64;
            }
        }
        let allocs_after = counting_alloc::allocations();
        let (allocs_before, bytes_before) = before.expect("no TS came out in the first 2 s");
        let _ = publisher.kill();
        let _ = publisher.wait();

        let packets = (bytes - bytes_before) / 188;
        let allocs = allocs_after - allocs_before;
        println!(
            "allocations during {packets} TS packets out of the RTMP input: {allocs} \
             ({:.3} per packet)",
            allocs as f64 / packets.max(1) as f64
        );
        assert!(packets > 2000, "only {packets} TS packets in 4 s");
        assert!(
            allocs * PACKETS_PER_ALLOCATION <= packets,
            "{allocs} allocations for {packets} TS packets"
        );
    });
}
