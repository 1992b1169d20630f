//! The real-process crash test: `quoll debug-raise-events` raises events as fast as the log
//! takes them and prints `durable <seq>` after each commit; it is killed with SIGKILL at
//! random moments, at least 50 times, restarted each time on the same data dir. Afterwards
//! `quoll events --json` must show every event whose durability was confirmed, in order,
//! and nothing that was not raised. Twice: with a 2 ms commit delay (many commits, the kill
//! lands in every phase of the cycle) and with the default 50 ms (the shipped setting:
//! big batches, the kill mostly lands while a batch gathers or syncs).

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;
use serde_json::Value;

const KILLS: u64 = 50;

struct Run {
    start: u64,
    confirmed: u64,
}

#[test]
fn sigkill_at_random_moments_never_loses_a_confirmed_event() {
    kill_and_check("events-crash", 2, 10);
}

#[test]
fn sigkill_with_the_default_commit_delay_never_loses_a_confirmed_event() {
    kill_and_check("events-crash-50", 50, 4);
}

/// `KILLS` runs at commit delay `delay_ms`, each killed after 1..=`max_commits` commits
/// plus a random part of one more commit window.
fn kill_and_check(tag: &str, delay_ms: u64, max_commits: u64) {
    let dir = TempDir::new(tag);
    let data = dir.path().join("data");
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    println!("seed {seed}");
    let mut rng = seed;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let started = Instant::now();
    let mut runs: BTreeMap<u64, Run> = BTreeMap::new();
    for run in 0..KILLS {
        let mut child = quoll()
            .args(["debug-raise-events", "--data-dir"])
            .arg(&data)
            .args(["--run", &run.to_string()])
            .args(["--window", "40", "--delay-ms", &delay_ms.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn quoll debug-raise-events");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = lines.next().expect("a start line").unwrap();
        let start: u64 = first
            .strip_prefix("start ")
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad start line {first:?}"));
        // Kill after a random number of commits: the raiser is then anywhere in raising,
        // appending or syncing the next batch.
        let commits = 1 + next() % max_commits;
        let mut confirmed = start - 1;
        for _ in 0..commits {
            let line = lines.next().expect("a durable line").unwrap();
            confirmed = line
                .strip_prefix("durable ")
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| panic!("bad line {line:?}"));
        }
        // Then a random part of two commit windows more, so the kill lands anywhere in the
        // raise / append / sync cycle, not just after a commit. This picks the crash
        // moment; nothing is waited for.
        std::thread::sleep(Duration::from_micros(next() % (2000 * delay_ms)));
        child.kill().expect("SIGKILL");
        let _ = child.wait();
        assert!(confirmed >= start, "run {run}: nothing confirmed");
        if let Some(prev) = runs.values().last() {
            assert!(start > prev.confirmed, "run {run} reuses confirmed seqs");
        }
        runs.insert(run, Run { start, confirmed });
        assert!(
            started.elapsed() < Duration::from_secs(240),
            "too slow: {run} kills in {:?}",
            started.elapsed()
        );
    }
    let kill_time = started.elapsed();

    let out = quoll()
        .args(["events", "--json", "--data-dir"])
        .arg(&data)
        .output()
        .expect("run quoll events");
    assert!(out.status.success(), "quoll events failed");
    let records: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();

    // In order.
    let seqs: Vec<u64> = records.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "sequence numbers out of order"
    );
    // Nothing invented or changed: each raiser record sits exactly at start + n of its run.
    let mut by_seq: BTreeMap<u64, &Value> = BTreeMap::new();
    for r in &records {
        let seq = r["seq"].as_u64().unwrap();
        by_seq.insert(seq, r);
        if r["category"] == "storage" {
            continue; // the log's own events (none expected; tolerated)
        }
        assert_eq!(r["message"], "Configuration updated", "{r}");
        let run = r["details"]["run"].as_u64().expect("details.run");
        let n = r["details"]["n"].as_u64().expect("details.n");
        let meta = runs
            .get(&run)
            .unwrap_or_else(|| panic!("record of unknown run: {r}"));
        assert_eq!(seq, meta.start + n, "record moved or invented: {r}");
    }
    // Every confirmed event is there.
    let mut confirmed_total = 0;
    for (run, meta) in &runs {
        for seq in meta.start..=meta.confirmed {
            let r = by_seq
                .get(&seq)
                .unwrap_or_else(|| panic!("run {run}: confirmed seq {seq} lost"));
            assert_eq!(r["details"]["run"].as_u64(), Some(*run), "seq {seq}");
            confirmed_total += 1;
        }
    }
    println!(
        "{KILLS} kills in {kill_time:?}; {} records on disk, {confirmed_total} confirmed, all present",
        records.len()
    );
}
