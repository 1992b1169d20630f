//! Configuration: the JSON model (the manager's shape plus the edge's own blocks), validation
//! that names every problem by its JSON path, redaction of secrets, and atomic, durable writes.

pub mod budget;
mod json;
pub mod model;
pub mod redact;
pub mod store;
pub mod validate;

pub use budget::{Budget, LimitError};
pub use model::*;
pub use redact::{
    SECRET_KEYS, is_secret_key, redact_tunnel, redact_value, restore_secrets,
    restore_secrets_in_tunnel, strip_url_password,
};
pub use store::{ConfigFile, LoadError, SaveError};
pub use validate::{ConfigError, parse_fingerprint, validate};

/// The config `quoll run` uses when no `--config` is given: loopback only, works on a fresh
/// machine.
pub const EMBEDDED_DEFAULT: &str = include_str!("default.json");

/// Parse and validate a config document. Errors carry JSON paths: a syntax error is one
/// error at `$` with line and column; shape errors (wrong JSON type, missing field, unknown
/// `type`) are all reported; only a document of the right shape is then validated.
pub fn parse(text: &str) -> Result<Config, Vec<ConfigError>> {
    let cfg = parse_unvalidated(text)?;
    let errors = validate(&cfg);
    if errors.is_empty() {
        Ok(cfg)
    } else {
        Err(errors)
    }
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
