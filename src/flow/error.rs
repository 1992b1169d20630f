//! What can go wrong when changing flows, with the error codes the manager protocol and the
//! local API both use.

use std::fmt;
use std::io;

use crate::config::{ConfigError, LimitError};
use crate::input::InputError;
use crate::output::OutputError;

#[derive(Debug)]
pub enum FlowError {
    NotFound(String),
    OutputNotFound {
        flow_id: String,
        output_id: String,
    },
    /// The change would make the config invalid; nothing was changed.
    Invalid(Vec<ConfigError>),
    /// The change would take the node over a resource budget; nothing was changed.
    LimitExceeded(LimitError),
    InputStart(InputError),
    TunnelNotFound(String),
    /// The change is live, but writing the config file failed.
    Persist(String),
    OutputStart {
        output_id: String,
        error: OutputError,
    },
}

impl FlowError {
    /// The `error_code` of the manager protocol's `command_ack` and the API's error body.
    pub fn code(&self) -> &'static str {
        match self {
            FlowError::NotFound(_)
            | FlowError::OutputNotFound { .. }
            | FlowError::TunnelNotFound(_) => "not_found",
            FlowError::Persist(_) => "config_persist_failed",
            // Validation words a clash as "UDP port N on IP is already bound by …".
            FlowError::Invalid(errors)
                if errors
                    .iter()
                    .any(|e| e.message.contains("is already bound by")) =>
            {
                "port_conflict"
            }
            FlowError::Invalid(_) => "validation_error",
            FlowError::LimitExceeded(_) => LimitError::CODE,
            FlowError::InputStart(InputError::Bind { source, .. })
            | FlowError::OutputStart {
                error: OutputError::Bind { source, .. },
                ..
            } if source.kind() == io::ErrorKind::AddrInUse => "port_conflict",
            FlowError::InputStart(InputError::BadConfig { .. })
            | FlowError::OutputStart {
                error: OutputError::BadConfig { .. },
                ..
            } => "invalid_value",
            FlowError::InputStart(_) | FlowError::OutputStart { .. } => "bind_failed",
        }
    }
}

impl fmt::Display for FlowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FlowError::NotFound(id) => write!(f, "flow '{id}' not found"),
            FlowError::OutputNotFound { flow_id, output_id } => {
                write!(f, "output '{output_id}' not found in flow '{flow_id}'")
            }
            FlowError::Invalid(errors) => {
                for (i, e) in errors.iter().enumerate() {
                    if i > 0 {
                        f.write_str("; ")?;
                    }
                    write!(f, "{e}")?;
                }
                Ok(())
            }
            FlowError::LimitExceeded(e) => write!(f, "{e}"),
            FlowError::InputStart(e) => write!(f, "input: {e}"),
            FlowError::TunnelNotFound(id) => write!(f, "tunnel '{id}' not found"),
            FlowError::Persist(e) => write!(f, "failed to persist configuration: {e}"),
            FlowError::OutputStart { output_id, error } => {
                write!(f, "output '{output_id}': {error}")
            }
        }
    }
}

impl std::error::Error for FlowError {}
