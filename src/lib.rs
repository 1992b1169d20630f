//! Quoll: a live-media edge node. One input fanned out to N outputs per flow, MPEG-TS inside.
//!
//! Where things live: a packet enters in `input/`, waits in the flow's ring (`ts/ring.rs`),
//! and leaves through `output/`. Flows are created and supervised by `flow/`. Every
//! operational event is born in `events/`. `config/` holds the JSON model, its validation and
//! durable writes; `http/` the local API and who may use it; `secret.rs` how secrets are
//! compared and kept out of logs; `cli.rs` the command line. Syscalls std has no API for are
//! wrapped in `sys.rs` and `net/` (`mmsg`, `wake`, `gate`, `fdlimit`): the only modules where
//! `unsafe` is allowed (`[lints]` in Cargo.toml). The event log's test doubles
//! (`events::storage::{MemStorage, SlowSync, Counted}`) exist only in unit tests and with the
//! `test-util` feature.

/// Board profiles (`board/*.json`): paths, console, watchdog, socket buffers, first config.
pub mod board;
/// The RTSP->WebSocket bridge: on-demand camera sessions fanned out to browser clients
/// (the `rtsp` feature).
#[cfg(feature = "rtsp")]
pub mod bridge;
/// A build without the `rtsp` feature has no bridge: only the shapes `/healthz` and
/// `quoll ctl sessions` report, empty.
#[cfg(not(feature = "rtsp"))]
#[path = "bridge/absent.rs"]
pub mod bridge;
/// The command line: `quoll run`, `check-config`, `events`, `ctl`, `--version`.
pub mod cli;
/// The JSON config model, its validation, secret redaction and atomic, durable writes.
pub mod config;
/// The serial-console side: the local control socket, `quoll ctl` and `quoll events`.
pub mod console;
/// `quoll run`: the one-thread runtime, ordered startup and a clean stop on SIGTERM/SIGINT.
pub mod daemon;
/// Operational events: the typed catalog, the handle that raises them, the durable log.
pub mod events;
/// Flows: one input fanned out to N outputs over a ring, and the manager that runs them.
pub mod flow;
/// HLS output, sans-IO: segmenter, live playlist, upload queue, the windows the API serves.
/// Its shell (`output/hls.rs`, with hyper's client) is the cargo feature `hls`.
pub mod hls;
/// The local HTTP API and who may use it (access, guards, token files, listener limits).
pub mod http;
/// Flow inputs (UDP, RTP, SRT, RTSP): where packets enter; each one task writing the ring.
pub mod input;
/// The link to the central manager: WebSocket over TLS, enrollment, health, stats, commands.
pub mod manager;
/// Socket setup, the packet path's syscalls (batched I/O, wake-ups), listeners, reconnects.
pub mod net;
/// The running node: config, events, flows and the local API on one thread.
pub mod node;
/// Flow outputs: where packets leave; each one task holding a reader of the flow's ring.
pub mod output;
/// The A/B slot RAUC booted, for `health`.
pub mod rauc;
/// RTMP for publishers, sans-IO: handshake, chunk stream, AMF0, the server session, FLV to
/// MPEG-TS (the `rtmp` feature).
#[cfg(feature = "rtmp")]
pub mod rtmp;
/// RTP for MPEG-TS: header view and writer, receive-side sequence tracking.
pub mod rtp;
/// Pulling an RTSP camera with retina and remuxing it to MPEG-TS, no transcoding (the `rtsp`
/// feature).
#[cfg(feature = "rtsp")]
pub mod rtsp;
/// Secrets in memory: constant-time comparison and a holder `Debug` cannot print.
pub mod secret;
/// SRT plumbing shared by the SRT input and output: options, binding, reconnect, 2022-7 merge.
pub mod srt;
/// Input and output counters and their snapshots, bumped by the tasks and read by flow/,
/// http/ and manager/: below all of them, so inputs and outputs need not import `flow`.
pub mod stats;
/// The few syscalls outside the packet path std has no API for, as safe functions.
mod sys;
/// systemd service notifications (`sd_notify`): ready, watchdog, status, stopping.
pub mod systemd;
/// Helpers shared by the unit tests of several modules (compiled for tests only).
#[cfg(test)]
mod testing;
/// Wall-clock helpers (state machines never read the clock; the shells pass time in).
pub mod time;
/// MPEG-TS: packet views, chunking, continuity and PSI analysis, and the flow ring.
pub mod ts;
/// Tunnels to other edges over QUIC, through a relay or directly: the config's UUID in every
/// build, the engine with the `tunnels` feature.
pub mod tunnel;
