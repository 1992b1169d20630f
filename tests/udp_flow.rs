//! End to end over loopback with real ffmpeg: a generated TS pushed into quoll over UDP and
//! RTP comes out of its UDP and RTP outputs byte for byte.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::json;

fn config(
    api_port: u16,
    input: serde_json::Value,
    outputs: serde_json::Value,
    dir: &TempDir,
) -> serde_json::Value {
    json!({
        "version": 1,
        "server": { "listen_addr": "127.0.0.1", "listen_port": api_port },
        "storage": { "data_dir": dir.path().join("data") },
        "flows": [{ "id": "f1", "name": "test", "enabled": true, "input": input, "outputs": outputs }]
    })
}

/// Strip and check RTP headers: payload type 33, consecutive sequence numbers, one SSRC.
fn rtp_payloads(datagrams: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut last: Option<(u16, u32)> = None;
    for d in datagrams {
        assert!(d.len() > 12, "RTP datagram too short");
        assert_eq!(d[0] >> 6, 2, "RTP version");
        assert_eq!(d[1] & 0x7F, 33, "payload type MP2T");
        let seq = u16::from_be_bytes([d[2], d[3]]);
        let ssrc = u32::from_be_bytes([d[8], d[9], d[10], d[11]]);
        if let Some((s, x)) = last {
            assert_eq!(seq, s.wrapping_add(1), "RTP sequence must be consecutive");
            assert_eq!(ssrc, x, "one SSRC per output");
        }
        last = Some((seq, ssrc));
        out.extend_from_slice(&d[12..]);
    }
    out
}

fn total(d: &[Vec<u8>]) -> usize {
    d.iter().map(Vec::len).sum()
}

#[test]
fn ffmpeg_udp_in_comes_out_of_udp_and_rtp_outputs_byte_exact() {
    require_peers!("ffmpeg");
    let dir = TempDir::new("udp-e2e");
    let source = make_test_ts(dir.path(), 4);
    let (udp_rx, udp_port) = udp_receiver();
    let (rtp_rx, rtp_port) = udp_receiver();
    let in_port = free_udp_port();
    let q = Quoll::start(
        dir.path(),
        &config(
            free_tcp_port(),
            json!({ "type": "udp", "bind_addr": format!("127.0.0.1:{in_port}") }),
            json!([
                { "type": "udp", "id": "u", "dest_addr": format!("127.0.0.1:{udp_port}") },
                { "type": "rtp", "id": "r", "dest_addr": format!("127.0.0.1:{rtp_port}") }
            ]),
            &dir,
        ),
    );

    // The tee muxer writes the same muxed bytes to the network and to a reference file.
    let sent = dir.path().join("sent.ts");
    let mut ffmpeg = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-re", "-i"])
        .arg(&source)
        .args(["-map", "0", "-c", "copy", "-f", "tee"])
        .arg(format!(
            "[f=mpegts]udp://127.0.0.1:{in_port}?pkt_size=1316|[f=mpegts]{}",
            sent.display()
        ))
        .spawn()
        .expect("run ffmpeg");
    // Mid-stream (3 s into a 4 s stream, paced by -re) the input is live and has a whole
    // second of history: its bitrate must be about the 1 Mbit/s mux rate.
    let mut early = receive_until(&udp_rx, Duration::from_secs(30), |d| {
        total(d) >= 3 * 1_000_000 / 8
    });
    let (_, f) = q.api("GET", "/api/v1/flows/f1", None);
    let bps = f["input"]["bitrate_bps"].as_u64().unwrap();
    assert!(
        (500_000..2_000_000).contains(&bps),
        "bitrate_bps {bps} mid-stream"
    );
    assert!(ffmpeg.wait().unwrap().success());
    let reference = std::fs::read(&sent).unwrap();
    assert!(reference.len() > 100_000);

    let seen = total(&early);
    early.extend(receive_until(&udp_rx, Duration::from_secs(10), |d| {
        seen + total(d) >= reference.len()
    }));
    let udp = early;
    let rtp = receive_until(&rtp_rx, Duration::from_secs(10), |d| {
        total(d) >= reference.len() + 12 * d.len()
    });
    let udp_bytes: Vec<u8> = udp.concat();
    assert_eq!(udp_bytes.len(), reference.len(), "UDP output byte count");
    assert_eq!(
        checksum(&udp_bytes),
        checksum(&reference),
        "UDP output bytes differ from input"
    );
    let rtp_bytes = rtp_payloads(&rtp);
    assert_eq!(
        checksum(&rtp_bytes),
        checksum(&reference),
        "RTP output payload differs from input"
    );
    assert!(udp.iter().all(|d| d.len() % 188 == 0 && d.len() <= 1316));

    let (code, stats) = q.api("GET", "/api/v1/stats", None);
    assert_eq!(code, 200);
    let f = &stats["flows"][0];
    assert_eq!(f["id"], "f1");
    assert_eq!(f["state"], "running");
    assert_eq!(f["input"]["bytes"], reference.len() as u64);
    assert_eq!(f["input"]["packets"], (reference.len() / 188) as u64);
    assert_eq!(f["input"]["cc_errors"], 0);
    for o in f["outputs"].as_array().unwrap() {
        assert_eq!(o["packets"], (reference.len() / 188) as u64, "output {o}");
        assert_eq!(o["dropped"], 0);
    }

    let (status, log) = q.terminate();
    assert!(status.success(), "quoll exit {status:?}; log:\n{log}");
    assert!(log.contains("Flow 'f1' stopped"), "log:\n{log}");
}

#[test]
fn ffmpeg_rtp_in_is_depacketized_byte_exact() {
    require_peers!("ffmpeg");
    let dir = TempDir::new("rtp-e2e");
    let source = make_test_ts(dir.path(), 2);
    let (ref_rx, ref_port) = udp_receiver();
    let (out_rx, out_port) = udp_receiver();
    let in_port = free_udp_port();
    let q = Quoll::start(
        dir.path(),
        &config(
            free_tcp_port(),
            json!({ "type": "rtp", "bind_addr": format!("127.0.0.1:{in_port}"), "allowed_sources": ["127.0.0.1"] }),
            json!([{ "type": "udp", "id": "u", "dest_addr": format!("127.0.0.1:{out_port}") }]),
            &dir,
        ),
    );
    // Two identical rtp_mpegts legs: one into quoll, one straight to the test as reference.
    let status = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-re", "-i"])
        .arg(&source)
        .args(["-map", "0", "-c", "copy", "-f", "tee"])
        .arg(format!(
            "[f=rtp_mpegts]rtp://127.0.0.1:{in_port}|[f=rtp_mpegts]rtp://127.0.0.1:{ref_port}"
        ))
        .status()
        .expect("run ffmpeg");
    assert!(status.success());
    let reference = receive_until(&ref_rx, Duration::from_secs(2), |_| false);
    let reference: Vec<u8> = reference.iter().flat_map(|d| d[12..].to_vec()).collect();
    assert!(reference.len() > 100_000);
    let out = receive_until(&out_rx, Duration::from_secs(10), |d| {
        total(d) >= reference.len()
    });
    let out: Vec<u8> = out.concat();
    assert_eq!(out.len(), reference.len());
    assert_eq!(
        checksum(&out),
        checksum(&reference),
        "RTP payload did not come out unchanged"
    );

    let (_, stats) = q.api("GET", "/api/v1/flows/f1", None);
    assert_eq!(stats["input"]["type"], "rtp");
    assert_eq!(stats["input"]["rtp_lost"], 0);
    assert_eq!(stats["input"]["cc_errors"], 0);
    let (status, _) = q.terminate();
    assert!(status.success());
}
