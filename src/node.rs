//! The running node: config, events, flows and the local API on one thread.
