//! What can go wrong when changing flows, with the error codes the manager protocol and the
//! local API both use.

use std::fmt;
use std::io;

use crate::config::{ConfigError, ErrorKind, LimitError};
use crate::input::InputError;
use crate::output::OutputError;

/// The stable `error_code` of every error answer the node gives: the manager protocol's
/// `command_ack` and the local API's error body both take it from here (`as_str`), and the
/// API its HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    NotFound,
    /// The request or config is malformed or breaks a rule.
    ValidationError,
    /// A value the input or output refused when starting.
    InvalidValue,
    PortConflict,
    LimitExceeded,
    ConfigPersistFailed,
    BindFailed,
    /// The API route exists, not with this method.
    MethodNotAllowed,
    /// A manager command of a type this node does not know.
    UnknownAction,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::NotFound => "not_found",
            ErrorCode::ValidationError => "validation_error",
            ErrorCode::InvalidValue => "invalid_value",
            ErrorCode::PortConflict => "port_conflict",
            ErrorCode::LimitExceeded => LimitError::CODE,
            ErrorCode::ConfigPersistFailed => "config_persist_failed",
            ErrorCode::BindFailed => "bind_failed",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::UnknownAction => "unknown_action",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

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
        self.error_code().as_str()
    }

    pub fn error_code(&self) -> ErrorCode {
        match self {
            FlowError::NotFound(_)
            | FlowError::OutputNotFound { .. }
            | FlowError::TunnelNotFound(_) => ErrorCode::NotFound,
            FlowError::Persist(_) => ErrorCode::ConfigPersistFailed,
            FlowError::Invalid(errors)
                if errors.iter().any(|e| e.kind == ErrorKind::PortConflict) =>
            {
                ErrorCode::PortConflict
            }
            FlowError::Invalid(_) => ErrorCode::ValidationError,
            FlowError::LimitExceeded(_) => ErrorCode::LimitExceeded,
            FlowError::InputStart(InputError::Bind { source, .. })
            | FlowError::OutputStart {
                error: OutputError::Bind { source, .. },
                ..
            } if source.kind() == io::ErrorKind::AddrInUse => ErrorCode::PortConflict,
            FlowError::InputStart(InputError::BadConfig { .. })
            | FlowError::OutputStart {
                error: OutputError::BadConfig { .. },
                ..
            } => ErrorCode::InvalidValue,
            FlowError::InputStart(_) | FlowError::OutputStart { .. } => ErrorCode::BindFailed,
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
