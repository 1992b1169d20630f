//! RTMP, sans-IO: what a publisher (OBS, FFmpeg, an encoder) sends a server, and how its
//! FLV media becomes MPEG-TS.
//!
//! Layers, each a state machine over bytes with no socket in sight: [`handshake`] (C0/C1/C2
//! against S0/S1/S2), [`chunk`] (the chunk stream: messages cut into interleaved chunks,
//! every declared size bounded), [`amf`] (AMF0 values of commands), [`session`] (the server
//! side of one connection: bytes in, replies and media out), [`flv`] (audio/video tag bodies
//! to Annex B and ADTS) and [`remux`] (media messages to TS through `ts::mux`). The async
//! shell is `input::rtmp`. Written here rather than taken from a crate: see docs/rtmp.md.

pub mod amf;
pub mod chunk;
pub mod flv;
pub mod handshake;
pub mod remux;
pub mod session;
