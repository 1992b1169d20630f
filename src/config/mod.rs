//! Configuration: the JSON model (the manager's shape plus the edge's own blocks), validation
//! that names every problem by its JSON path, redaction of secrets, and atomic, durable writes.

pub mod budget;
mod declare;
mod error;
mod json;
pub mod model;
mod obj;
pub mod redact;
pub mod store;
pub mod validate;
mod value;

pub use budget::{Budget, LimitError};
pub use error::{ConfigError, ErrorKind};
pub use model::*;
pub use redact::{
    SECRET_KEYS, is_secret_key, redact_rtmp_url, redact_tunnel, redact_userinfo, redact_value,
    restore_secrets, restore_secrets_in_tunnel, strip_url_password,
};
pub use store::{ConfigFile, LoadError, SaveError};
pub use validate::{parse_fingerprint, validate};
pub use value::uuid_bytes;

/// The config `quoll run` uses when no `--config` is given: loopback only, works on a fresh
/// machine.
pub const EMBEDDED_DEFAULT: &str = include_str!("default.json");

/// Parse and validate a config document. Errors carry JSON paths: a syntax error is one
/// error at `$` with line and column; otherwise every problem is reported in one pass: the
/// reader's (wrong JSON type, missing field, unknown `type`, an address or mode that does
/// not parse), then the validator's, of everything that could be read. A validator error at
/// or below a path with a reader error is left out: a default, a stand-in or a gap stands
/// there, and its complaint would be noise. A block holding a value that did not parse is
/// left out of the rules between fields (`validate::validate_at`); its port conflicts and
/// the like are reported once the value is fixed.
pub fn parse(text: &str) -> Result<Config, Vec<ConfigError>> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| vec![ConfigError::from_json(&e)])?;
    let mut errors = Vec::new();
    let Some(partial) = json::read_partial(value, &mut errors) else {
        return Err(errors);
    };
    validate_read(partial, errors)
}

/// [`Config::from_value`] for a caller that validates next (startup, a manager push): when
/// the only problems are values that did not parse, the document is well-formed, and the
/// validator's problems with the rest come along, as [`parse`] gives them (and as when
/// validation parsed the values). Shape problems come alone, as from `from_value`.
pub fn read_value(value: serde_json::Value) -> Result<Config, Vec<ConfigError>> {
    let mut errors = Vec::new();
    let Some(partial) = json::read_partial(value, &mut errors) else {
        return Err(errors);
    };
    if errors.is_empty() {
        Ok(partial.config)
    } else if errors.iter().all(ConfigError::is_unparsed) {
        validate_read(partial, errors)
    } else {
        Err(errors)
    }
}

/// The validator's problems with what was read, after the reader's `errors`.
fn validate_read(
    partial: json::Partial,
    mut errors: Vec<ConfigError>,
) -> Result<Config, Vec<ConfigError>> {
    let shape_errors = errors.len();
    let unparsed: Vec<String> = errors
        .iter()
        .filter(|e| e.is_unparsed())
        .map(|e| block_of(&e.path).to_string())
        .collect();
    for e in validate::validate_at(&partial.config, &partial.flow_index, &unparsed) {
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

/// The block a field's path is in: `flows[0].input` of `flows[0].input.bind_addr` and of
/// `flows[0].input.allowed_sources[1]` (field keys hold no `.`).
fn block_of(path: &str) -> &str {
    path.rsplit_once('.').map_or("", |(block, _)| block)
}

/// `path` is `prefix` or a field or element below it.
fn is_within(path: &str, prefix: &str) -> bool {
    path.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('.') || rest.starts_with('['))
}

/// Read a config document without validating its values (e.g. to inspect or round-trip a
/// config this build cannot run). Addresses and modes are parsed: one that does not is an
/// error here ([`ConfigError::is_unparsed`]).
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
