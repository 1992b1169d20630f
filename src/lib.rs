//! Quoll: a live-media edge node. One input fanned out to N outputs per flow, MPEG-TS inside.
//!
//! Where things live: a packet enters in `input/`, waits in the flow's ring (`ts/ring.rs`),
//! and leaves through `output/`. Flows are created and supervised by `flow/`. Every
//! operational event is born in `events/`. `config/` holds the JSON model, its validation and
//! durable writes; `http/` the local API and who may use it; `secret.rs` how secrets are
//! compared and kept out of logs; `cli.rs` the command line.

pub mod board;
pub mod bridge;
pub mod cli;
pub mod config;
pub mod console;
pub mod daemon;
pub mod events;
pub mod flow;
pub mod http;
pub mod input;
pub mod manager;
pub mod net;
pub mod node;
pub mod output;
pub mod rauc;
pub mod rtp;
pub mod rtsp;
pub mod secret;
pub mod srt;
pub mod systemd;
#[cfg(test)]
mod testing;
pub mod time;
pub mod ts;
