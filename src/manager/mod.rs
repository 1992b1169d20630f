//! The link to the central manager (`shared/spec/manager-protocol.md`): a WebSocket client
//! over TLS that authenticates (or enrolls with a registration token), reports health,
//! stats and events, and executes the manager's commands through `Node`.
//!
//! - `link.rs`: the sans-IO state machine (connect, auth, ping deadline, timers, backoff,
//!   `manager` events), driven on fake time in its tests;
//! - `client.rs`: the async shell (TCP, TLS, WebSocket, writer task);
//! - `protocol.rs`: the wire format; `commands.rs`: the command table;
//! - `outbox.rs`: the bounded outgoing queue; `tls.rs`: rustls, webpki roots and the pin;
//! - `feed.rs`: the [`feed::EventFeed`] the events are delivered from.

pub mod client;
pub mod commands;
pub mod feed;
pub mod link;
pub mod outbox;
pub mod protocol;

pub use client::run;
pub use feed::{EventFeed, LogFeed};
