use super::*;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn queue(capacity: usize, t0: Instant) -> (UploadQueue, Instant) {
    let q = UploadQueue::new(
        capacity,
        Playlist::new(3, ms(2000), 0),
        "index.m3u8".into(),
        Backoff::new(ms(500), ms(4000)),
    );
    (q, t0)
}

fn seg(q: &mut UploadQueue, n: u64) {
    q.push_segment(
        format!("seg-{n}.ts"),
        Bytes::from(vec![n as u8]),
        ms(2000),
        None,
    );
}

fn sent(next: Next) -> (Method, String) {
    match next {
        Next::Send(r) => (r.method, r.name),
        other => panic!("expected a request, got {other:?}"),
    }
}

fn put(name: &str) -> (Method, String) {
    (Method::Put, name.to_owned())
}

#[test]
fn each_stored_segment_is_followed_by_the_playlist() {
    let (mut q, t) = queue(3, Instant::now());
    assert_eq!(q.poll(t), Next::Idle);
    seg(&mut q, 0);
    seg(&mut q, 1);
    assert_eq!(sent(q.poll(t)), put("seg-0.ts"));
    assert_eq!(q.poll(t), Next::Busy);
    assert_eq!(q.finished(t, Outcome::Status(201)), None);
    match q.poll(t) {
        Next::Send(r) => {
            assert_eq!((r.method, r.name.as_str()), (Method::Put, "index.m3u8"));
            assert_eq!(r.content_type, PLAYLIST_CONTENT_TYPE);
            assert!(String::from_utf8_lossy(&r.body).ends_with("#EXTINF:2.000,\nseg-0.ts\n"));
        }
        other => panic!("{other:?}"),
    }
    q.finished(t, Outcome::Status(204));
    assert_eq!(sent(q.poll(t)), put("seg-1.ts"));
    q.finished(t, Outcome::Status(204));
    assert_eq!(sent(q.poll(t)), put("index.m3u8"));
    q.finished(t, Outcome::Status(204));
    assert_eq!(q.poll(t), Next::Idle);
    assert_eq!(q.stored(), 2);
}

#[test]
fn a_full_queue_drops_the_oldest_and_marks_the_hole() {
    let (mut q, t) = queue(2, Instant::now());
    for n in 0..5 {
        seg(&mut q, n);
    }
    assert_eq!(q.waiting(), 2);
    assert_eq!(q.dropped(), 3);
    assert_eq!(sent(q.poll(t)), put("seg-3.ts"));
    q.finished(t, Outcome::Status(201));
    assert_eq!(sent(q.poll(t)), put("index.m3u8"));
    q.finished(t, Outcome::Status(201));
    let text = q.playlist().render();
    assert!(
        text.contains("#EXT-X-MEDIA-SEQUENCE:0\n#EXT-X-DISCONTINUITY\n#EXTINF:2.000,\nseg-3.ts\n")
    );
}

#[test]
fn failures_back_off_and_the_event_is_latched_once_per_failing_run() {
    let (mut q, t0) = queue(3, Instant::now());
    seg(&mut q, 0);
    let mut t = t0;
    assert_eq!(sent(q.poll(t)), put("seg-0.ts"));
    let first = q.finished(t, Outcome::Failed("connection refused".into()));
    assert_eq!(first.as_deref(), Some("PUT seg-0.ts: connection refused"));
    // Back-off doubles from 500 ms: nothing is sent before each deadline, silently.
    for delay in [500, 1000, 2000, 4000, 4000] {
        assert_eq!(q.poll(t), Next::Wait(t + ms(delay)));
        assert_eq!(q.poll(t + ms(delay - 1)), Next::Wait(t + ms(delay)));
        t += ms(delay);
        assert_eq!(sent(q.poll(t)), put("seg-0.ts"));
        assert_eq!(q.finished(t, Outcome::Status(503)), None);
    }
    assert_eq!(q.failures(), 6);
    // The ingest is back: the same segment goes, and the back-off starts afresh.
    t += ms(4000);
    assert_eq!(sent(q.poll(t)), put("seg-0.ts"));
    assert_eq!(q.finished(t, Outcome::Status(201)), None);
    assert_eq!(sent(q.poll(t)), put("index.m3u8"));
    // A new failing run raises again.
    assert_eq!(
        q.finished(t, Outcome::Status(500)).as_deref(),
        Some("PUT index.m3u8: HTTP 500")
    );
    assert_eq!(q.poll(t), Next::Wait(t + ms(500)));
}

#[test]
fn segments_that_pile_up_while_failing_stay_bounded() {
    let (mut q, t) = queue(3, Instant::now());
    seg(&mut q, 0);
    assert_eq!(sent(q.poll(t)), put("seg-0.ts"));
    for n in 1..4 {
        seg(&mut q, n);
    }
    // The one in flight fails and comes back to a full queue: it is the oldest, dropped.
    q.finished(t, Outcome::Failed("timed out".into()));
    assert_eq!(q.waiting(), 3);
    assert_eq!(q.dropped(), 1);
    assert_eq!(sent(q.poll(t + ms(500))), put("seg-1.ts"));
}

#[test]
fn expired_segments_are_deleted_until_the_ingest_refuses_deletes() {
    let (mut q, t) = queue(8, Instant::now());
    let mut deletes = Vec::new();
    for n in 0..6 {
        seg(&mut q, n);
    }
    loop {
        match q.poll(t) {
            Next::Send(r) if r.method == Method::Delete => {
                deletes.push(r.name);
                // The first DELETE works, the second is refused: no more are sent.
                let status = if deletes.len() == 1 { 204 } else { 405 };
                assert_eq!(q.finished(t, Outcome::Status(status)), None);
            }
            Next::Send(_) => {
                q.finished(t, Outcome::Status(201));
            }
            Next::Idle => break,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(deletes, vec!["seg-0.ts", "seg-1.ts"]);
    assert!(!q.deletes_enabled());
    // A failed DELETE is not retried and raises nothing.
    let (mut q, t) = queue(8, Instant::now());
    for n in 0..4 {
        seg(&mut q, n);
    }
    let mut failed_delete = false;
    loop {
        match q.poll(t) {
            Next::Send(r) if r.method == Method::Delete => {
                assert!(!failed_delete);
                failed_delete = true;
                assert_eq!(q.finished(t, Outcome::Failed("reset".into())), None);
            }
            Next::Send(_) => {
                q.finished(t, Outcome::Status(201));
            }
            Next::Idle => break,
            other => panic!("{other:?}"),
        }
    }
    assert!(failed_delete && q.deletes_enabled());
}
