//! Flows: one input fanned out to N outputs over a ring, and the manager that runs them.

pub mod error;
pub mod manager;

pub use error::{ErrorCode, FlowError};
pub use manager::{FlowManager, FlowState, FlowView};
