//! Configuration: the JSON model (the manager's shape plus the edge's own blocks), validation
//! that names every problem by its JSON path, redaction of secrets, and atomic, durable writes.

pub mod budget;
mod declare;
mod error;
mod json;
pub mod model;
pub mod redact;
pub mod store;
pub mod validate;

pub use budget::{Budget, LimitError};
pub use error::{ConfigError, ErrorKind};
pub use model::*;
pub use redact::{
    SECRET_KEYS, is_secret_key, redact_tunnel, redact_userinfo, redact_value, restore_secrets,
    restore_secrets_in_tunnel, strip_url_password,
};
pub use store::{ConfigFile, LoadError, SaveError};
pub use validate::{parse_fingerprint, validate};

/// The config `quoll run` uses when no `--config` is given: loopback only, works on a fresh
/// machine.
pub const EMBEDDED_DEFAULT: &str = include_str!("default.json");

/// Parse and validate a config document. Errors carry JSON paths: a syntax error is one
/// error at `$` with line and column; otherwise every problem is reported in one pass: shape
/// errors (wrong JSON type, missing field, unknown `type`), then the value errors of
/// everything that could be read. A value error at or below a path with a shape error is
/// left out: a default or a gap stands there, and its complaint would be noise.
pub fn parse(text: &str) -> Result<Config, Vec<ConfigError>> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| vec![ConfigError::from_json(&e)])?;
    let mut errors = Vec::new();
    let Some(partial) = json::read_partial(value, &mut errors) else {
        return Err(errors);
    };
    let shape_errors = errors.len();
    for e in validate::validate_at(&partial.config, &partial.flow_index) {
        if !errors[..shape_errors]
            .iter()
            .any(|s| is_within(&e.path, &s.path))
        {
            errors.push(e);
        }
    }
    if errors.is_empty() {
        Ok(partial.config)
    } else {
        Err(errors)
    }
}

/// `path` is `prefix` or a field or element below it.
fn is_within(path: &str, prefix: &str) -> bool {
    path.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('.') || rest.starts_with('['))
}

/// Read a config document without validating its values (e.g. to inspect or round-trip a
/// config this build cannot run).
pub fn parse_unvalidated(text: &str) -> Result<Config, Vec<ConfigError>> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| vec![ConfigError::from_json(&e)])?;
    Config::from_value(value)
}

#[cfg(test)]
mod tests;

impl StorageConfig {
    /// The durable event log's settings.
    pub fn log_config(&self) -> crate::events::LogConfig {
        crate::events::LogConfig::new(
            self.event_log_max_bytes,
            std::time::Duration::from_millis(self.event_commit_max_delay_ms),
        )
    }
}
