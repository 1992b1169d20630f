//! The bridge in a build without the `rtsp` feature: nothing runs, validation refuses a
//! `bridge` block with streams, and what the manager and `quoll ctl` read keeps its shape.
//! `/healthz` still has its `bridge` block (no streams, sessions or clients; the block's
//! timing) and its `sessions` list, always empty. The default build compiles this file in
//! its tests too, to hold the two to the same values with no bridge configured.

use serde::Serialize;

// The one `bridge` block (`health.rs`); in the default build's tests this file is a child
// of the real bridge module, which already has it.
#[cfg(not(feature = "rtsp"))]
#[path = "health.rs"]
mod health;
#[cfg(feature = "rtsp")]
pub use super::BridgeHealth;
#[cfg(not(feature = "rtsp"))]
pub use health::BridgeHealth;
/// A bridge session: none exists in this build, so a list of them is always `[]`.
#[derive(Debug, Clone, Serialize)]
pub enum SessionSnapshot {}

/// The bridge's workers: none to replace in this build (`Node::start_with_launcher` takes
/// `None`).
pub enum Launcher {}
