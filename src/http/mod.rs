//! The local HTTP API.
