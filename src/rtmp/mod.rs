//! RTMP, sans-IO: what a publisher (OBS, FFmpeg, an encoder) sends a server, and how its
//! FLV media becomes MPEG-TS.
//!
//! Layers, each a state machine over bytes with no socket in sight: [`handshake`] (C0/C1/C2
//! against S0/S1/S2), [`chunk`] (the chunk stream: messages cut into interleaved chunks,
//! every declared size bounded), [`amf`] (AMF0 values of commands), [`session`] (the server
//! side of one connection: bytes in, replies and media out), [`flv`] (audio/video tag bodies
//! to Annex B and ADTS) and [`remux`] (media messages to TS through `ts::mux`). The async
//! shell is `input::rtmp`. The other direction, for the push output (`output::rtmp`):
//! [`mux`] (TS to FLV tags), [`publish`] (the client side of a publish) and [`url`] (where a
//! push goes, also read by config validation). Written here
//! rather than taken from a crate: see docs/rtmp.md.

pub mod amf;
pub mod chunk;
pub mod flv;
pub mod handshake;
pub mod mux;
pub mod publish;
pub mod remux;
pub mod session;
pub mod url;

#[cfg(test)]
mod props {
    //! Arbitrary bytes through every parser (the fuzz targets' properties, on proptest's
    //! budget): no panic, bounded memory.
    use super::chunk::{ChunkReader, Limits};
    use super::remux::Remux;
    use super::session::{Output, Session};
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn chunk_reader_survives_anything(data in prop::collection::vec(any::<u8>(), 0..4000), step in 1usize..300) {
            let limits = Limits { max_message: 4096, budget: 8192 };
            let mut r = ChunkReader::new(limits);
            let mut buf = Vec::new();
            'outer: for piece in data.chunks(step) {
                buf.extend_from_slice(piece);
                loop {
                    match r.read(&buf) {
                        Ok(Some((n, _))) => { buf.drain(..n); }
                        Ok(None) => break,
                        Err(_) => break 'outer,
                    }
                    prop_assert!(r.held() <= limits.budget);
                }
            }
        }

        #[test]
        fn session_and_remux_survive_anything(
            data in prop::collection::vec(any::<u8>(), 0..6000),
            accept in any::<bool>(),
        ) {
            // A valid publish first, then garbage: reaches commands and media.
            let mut wire = super::session::tests::client_publish("live", "k", 256);
            wire.extend_from_slice(&data);
            let mut s = Session::new(Limits::default(), 0);
            let (mut reply, mut out) = (Vec::new(), Vec::new());
            let mut remux = Remux::new();
            let mut ts = Vec::new();
            for piece in wire.chunks(500) {
                if s.feed(piece, &mut reply, &mut out).is_err() {
                    break;
                }
                for o in out.drain(..) {
                    match o {
                        Output::Publish { .. } if accept => s.accept_publish(&mut reply),
                        Output::Publish { .. } => s.refuse_publish(&mut reply),
                        Output::Media { type_id, timestamp, payload } => {
                            let _ = remux.feed(type_id, timestamp, &payload, &mut ts);
                        }
                        Output::Unpublish => {}
                    }
                }
            }
            prop_assert_eq!(ts.len() % 188, 0);
        }

        #[test]
        fn publisher_survives_any_server(data in prop::collection::vec(any::<u8>(), 0..6000), step in 1usize..700) {
            use super::publish::{Publisher, Target};
            let target = Target { app: "a".into(), tc_url: "rtmp://h/a".into(), key: "k".into() };
            let mut out = Vec::new();
            let mut p = Publisher::start(target, 0, &mut out);
            let mut wire = vec![3u8];
            wire.resize(1 + 2 * 1536, 0);
            wire.extend_from_slice(&data);
            for piece in wire.chunks(step) {
                out.clear();
                if p.feed(piece, &mut out).is_err() {
                    break;
                }
                prop_assert!(p.held() <= 256 * 1024);
                prop_assert!(out.len() < 64 * 1024);
            }
        }

        #[test]
        fn ts_to_flv_survives_anything(packets in prop::collection::vec(prop::collection::vec(any::<u8>(), 188), 0..40)) {
            let mut m = super::mux::FlvMux::new();
            let (mut tags, mut notices, mut dropped) = (Vec::new(), Vec::new(), Vec::new());
            for mut p in packets {
                p[0] = 0x47;
                m.push(&p, &mut tags, &mut notices, &mut dropped);
            }
            prop_assert!(tags.iter().all(|t| t.body.len() >= 2));
        }

        #[test]
        fn flv_tags_survive_anything(tags in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..64), 0..20)) {
            let mut r = Remux::new();
            let mut out = Vec::new();
            r.feed(9, 0, &[0x17, 0, 0, 0, 0, 1, 0x64, 0, 0x1f, 0xff, 0xe1, 0, 2, 0x67, 0x64, 1, 0, 2, 0x68, 0xee], &mut out).unwrap();
            r.feed(8, 0, &[0xaf, 0, 0x11, 0x90], &mut out).unwrap();
            for (i, t) in tags.iter().enumerate() {
                let _ = r.feed(8 + (i % 2) as u8, i as u32 * 20, t, &mut out);
                let _ = super::amf::decode_all(t);
            }
            prop_assert_eq!(out.len() % 188, 0);
        }
    }
}
