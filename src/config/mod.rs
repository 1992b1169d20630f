//! Configuration: the JSON model (the manager's shape plus the edge's own blocks), validation
//! that names every problem by its JSON path, and atomic, durable writes.

pub mod model;
pub mod store;
pub mod validate;

pub use model::*;
pub use validate::{ConfigError, validate};

/// The config `quoll run` uses when no `--config` is given: loopback only, works on a fresh
/// machine.
pub const EMBEDDED_DEFAULT: &str = include_str!("default.json");

/// Parse and validate a config document.
pub fn parse(text: &str) -> Result<Config, Vec<ConfigError>> {
    let cfg: Config = serde_json::from_str(text).map_err(|e| vec![ConfigError::from_json(&e)])?;
    let errors = validate(&cfg);
    if errors.is_empty() {
        Ok(cfg)
    } else {
        Err(errors)
    }
}
