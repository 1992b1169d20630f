//! A damaged event log on a real start: a flipped bit in a segment header hides nothing, the
//! records that are really gone are reported exactly (one warning), `/healthz` says
//! `degraded` until `quoll ctl ack-loss`, the OTA gate passes meanwhile, and after a restart
//! the acknowledged loss is not reported again. On the way: an existing data directory an
//! older quoll left open (0755, files 0644) is made owner-only at start.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::*;
use quoll::events::codec;
use serde_json::json;

#[test]
fn header_damage_hides_nothing_and_real_loss_degrades_health_until_acknowledged() {
    let dir = TempDir::new("events-loss");
    let data = dir.path().join("data");
    let run = dir.path().join("run");
    raise_events(&data, &["--count", "20", "--delay-ms", "2"]);
    let seg = data.join(codec::segment_name(1));
    let bytes = std::fs::read(&seg).unwrap();
    let frames = codec::scan_frames(&bytes, codec::HEADER_LEN, 1).frames;
    assert_eq!(frames.len(), 20);
    // One bit of the header's base, and the payloads of records 6 and 7.
    let mut damaged = bytes.clone();
    damaged[9] ^= 0x04;
    for f in &frames[5..7] {
        damaged[f.offset + codec::FRAME_OVERHEAD + 2] ^= 0x01;
    }
    std::fs::write(&seg, &damaged).unwrap();
    // As an older quoll left it: readable by all.
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&seg, std::fs::Permissions::from_mode(0o644)).unwrap();

    let q = Quoll::start(dir.path(), &node_config(free_tcp_port(), &data, json!([])));
    assert_owner_only(&data, 1);
    let (code, h) = q.api("GET", "/healthz", None);
    assert_eq!(code, 200);
    assert_eq!(h["status"], "degraded", "{h}");
    assert_eq!(h["event_log"]["durable"], true, "{h}");
    assert_eq!(h["event_log"]["lost_unacked"], 2, "{h}");
    assert_eq!(h["event_log"]["loss_seq"], 21, "{h}");

    // Every intact record is there, the two damaged ones are reported, exactly.
    q.wait_event("Event log recovery skipped", Duration::from_secs(20));
    let recs = q.events();
    let seqs: Vec<u64> = recs.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    let want: Vec<u64> = (1..=21).filter(|q| *q != 6 && *q != 7).collect();
    assert_eq!(seqs[..want.len()], want[..], "{seqs:?}");
    let report = &recs[want.len() - 1];
    assert_eq!(
        report["message"],
        "Event log recovery skipped 2 corrupt records"
    );
    assert_eq!(report["severity"], "warning");
    assert_eq!(report["details"]["ranges"], json!([[6, 7]]));
    assert_eq!(report["details"]["exact"], true);

    // The operator's view: not healthy, and why; the OTA gate passes all the same.
    let (code, out, err) = ctl_output(&run, &["health"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("status is degraded"), "{err}");
    assert!(
        out.contains("event log: 2 events lost to disk damage"),
        "{out}"
    );
    let (code, _, err) = ctl_output(&run, &["health", "--boot-check", "--timeout", "5"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("2 events were lost"), "{err}");

    let (code, out, err) = ctl_output(&run, &["ack-loss"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "acknowledged: 2 events lost (report seq 21)");
    let (_, h) = q.api("GET", "/healthz", None);
    assert_eq!(h["status"], "ok", "{h}");
    assert_eq!(h["event_log"]["lost_unacked"], 0, "{h}");
    let (code, out, _) = ctl_output(&run, &["ack-loss"]);
    assert_eq!(code, 0);
    assert_eq!(out.trim(), "nothing to acknowledge: no event loss reported");
    q.stop();
    assert!(data.join(codec::LOSS_ACK_FILE).exists());
    assert_owner_only(&data, 1);

    // A restart: the acknowledged loss is history now, health is ok from the start.
    let q = Quoll::start(dir.path(), &node_config(free_tcp_port(), &data, json!([])));
    let (_, h) = q.api("GET", "/healthz", None);
    assert_eq!(h["status"], "ok", "{h}");
    q.stop();
    let reports = read_events(&data)
        .into_iter()
        .filter(|r| r["category"] == "storage")
        .count();
    assert_eq!(reports, 1, "the loss is reported once");
}
