//! What is wrong with a config document, and where: [`ConfigError`] and the JSON-path
//! helpers the reader (`json.rs`) and the validator (`validate.rs`) both use. It sits below
//! both so neither imports the other.

use std::fmt;

use serde_json::Value;

/// What sort of problem a [`ConfigError`] is. Callers decide on it (e.g. the `port_conflict`
/// error code) instead of searching the message text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Not valid JSON at all (the error is at `$`, with line and column).
    Syntax,
    /// The value has the wrong JSON type (`expected u16`, `expected an object`, …).
    Type,
    /// A required field is absent.
    Missing,
    /// A tag names no known variant (input/output `type`, SRT `mode`).
    Unknown,
    /// A known input/output `type` this build does not run.
    Unsupported,
    /// A number outside its allowed range (or a length outside its bounds).
    Range,
    /// A UDP port that another input or output already binds.
    PortConflict,
    /// Any other value that is not acceptable (an address that does not parse, a rule
    /// between fields, a command's own checks).
    Invalid,
}

/// One problem in a config document, e.g.
/// `flows[0].outputs[1].dest_addr: "x" is not a socket address`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub kind: ErrorKind,
    /// JSON path of the offending value (`$` for the document itself).
    pub path: String,
    pub message: String,
}

impl ConfigError {
    /// An [`ErrorKind::Invalid`] value at `path`.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self::of(ErrorKind::Invalid, path, message)
    }

    pub fn of(kind: ErrorKind, path: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            kind,
            path: path.into(),
            message: message.into(),
        }
    }

    /// A JSON syntax error (serde_json's message carries line and column).
    pub fn from_json(e: &serde_json::Error) -> Self {
        Self::of(ErrorKind::Syntax, "$", format!("not valid JSON: {e}"))
    }

    /// A value the reader could not parse into its type (an address, a mode): the reader's
    /// errors of kind [`ErrorKind::Invalid`]; its others are about the document's shape. A
    /// body whose only problems are of this kind is well-formed, and is answered like a
    /// validation failure (the API, manager commands).
    pub fn is_unparsed(&self) -> bool {
        self.kind == ErrorKind::Invalid
    }

    /// The same problem with its path's prefix `from` (a request body's own root, `""` for
    /// none) replaced by `to`: `input.bind_addr` from `""` to `flows[2]` is
    /// `flows[2].input.bind_addr`. A path outside `from` is kept.
    pub fn moved(self, from: &str, to: &str) -> Self {
        let rest = if from.is_empty() {
            Some(self.path.as_str())
        } else {
            self.path
                .strip_prefix(from)
                .and_then(|r| match r.as_bytes().first() {
                    None => Some(""),
                    Some(b'.') => Some(&r[1..]),
                    Some(b'[') => Some(r),
                    Some(_) => None,
                })
        };
        let path = match rest {
            None => return self,
            Some("" | "$") => to.to_string(),
            Some(r) if r.starts_with('[') => format!("{to}{r}"),
            Some(r) => child(to, r),
        };
        self.at(path)
    }

    /// The same problem at `path` (e.g. under the `config.` of a manager push).
    pub fn at(self, path: impl Into<String>) -> Self {
        ConfigError {
            path: path.into(),
            ..self
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

impl std::error::Error for ConfigError {}

/// Appends a key to a JSON path (`""` is the document root).
pub(crate) fn child(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// Appends an array index to a JSON path.
pub(crate) fn index(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

/// The path as shown to a person: the root is `$`.
pub(crate) fn shown(path: &str) -> String {
    if path.is_empty() {
        "$".to_string()
    } else {
        path.to_string()
    }
}

/// `s` as a JSON string literal, for messages.
pub(crate) fn quoted(s: &str) -> String {
    Value::String(s.to_string()).to_string()
}

/// A short description of a JSON value for "expected X, found Y" messages.
pub(crate) fn kind_of(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("boolean `{b}`"),
        Value::Number(n) => format!("number `{n}`"),
        Value::String(s) => format!("string {}", quoted(s)),
        Value::Array(_) => "an array".into(),
        Value::Object(_) => "an object".into(),
    }
}
