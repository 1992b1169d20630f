//! A whole RTMP server session on arbitrary bytes after a valid handshake: never panics,
//! replies stay small, and a publish request may be accepted or refused at any point.
#![no_main]

use libfuzzer_sys::fuzz_target;
use quoll::rtmp::chunk::Limits;
use quoll::rtmp::remux::Remux;
use quoll::rtmp::session::{Output, Session};

fuzz_target!(|data: &[u8]| {
    let mut s = Session::new(
        Limits {
            max_message: 256 * 1024,
            budget: 512 * 1024,
        },
        0,
    );
    let (mut reply, mut out) = (Vec::new(), Vec::new());
    // A handshake, so the fuzzer reaches the chunk stream at once.
    let mut hs = vec![3u8];
    hs.resize(1 + 2 * 1536, 0);
    s.feed(&hs, &mut reply, &mut out).expect("handshake");
    let accept = data.first().is_some_and(|b| b & 1 == 1);
    let mut remux = Remux::new();
    let mut ts = Vec::new();
    for piece in data.get(1..).unwrap_or(&[]).chunks(777) {
        reply.clear();
        if s.feed(piece, &mut reply, &mut out).is_err() {
            return;
        }
        assert!(reply.len() < 64 * 1024);
        for o in out.drain(..) {
            match o {
                Output::Publish { .. } if accept => s.accept_publish(&mut reply),
                Output::Publish { .. } => s.refuse_publish(&mut reply),
                Output::Media {
                    type_id,
                    timestamp,
                    payload,
                } => {
                    ts.clear();
                    let _ = remux.feed(type_id, timestamp, &payload, &mut ts);
                    assert_eq!(ts.len() % 188, 0);
                }
                Output::Unpublish => {}
            }
        }
    }
});
