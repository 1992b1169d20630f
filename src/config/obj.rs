//! The reader's and writer's tools every config block uses: [`Obj`], one JSON object being
//! read (known keys taken out, every problem recorded with its path, the rest kept as
//! `extra`); [`Fields`], what `config_struct!` makes of a block; [`Custom`], a field type
//! with a reader of its own (tagged inputs and outputs, SRT mode and second leg, bridge
//! streams; written in `json.rs`). At the bottom of `config/`: it knows no block.

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::error::{ConfigError, ErrorKind, child, index, kind_of, shown};
use super::value::ConfigValue;

/// The keys of an object a block does not know, kept for the round trip.
pub type Extra = Map<String, Value>;

/// A field type read and written by code of its own (the `custom` mode of
/// `config_struct!`), because it is not a list of keys.
pub(crate) trait Custom: Sized {
    /// Takes `key` out of `o`; `None` when it could not be read (the reason is recorded).
    fn read_field(o: &mut Obj<'_>, key: &str) -> Option<Self>;
    fn write_field(&self, m: &mut Map<String, Value>, key: &str);
}

/// A block the macro declared: read from, written to and checked against JSON.
pub(crate) trait Fields: Sized {
    /// Reads the known keys out of `o`; the keys left are `extra`. `None` when a required
    /// part could not be read (the reason is in `o`'s error list).
    fn read_fields(o: Obj<'_>) -> Option<Self>;
    /// Writes the known keys in declaration order, then `extra`.
    fn write_fields(&self, m: &mut Map<String, Value>);

    /// Reads the block at `path` (an object).
    fn read_at(v: Value, path: String, errors: &mut Vec<ConfigError>) -> Option<Self> {
        Obj::new(v, path, errors).and_then(Self::read_fields)
    }
}

/// A known value as JSON. The types declared (strings, numbers, booleans, lists of them)
/// always serialize; `null` stands in should one ever not.
pub(crate) fn to_json<T: Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

/// A typed value ([`ConfigValue`]) as its canonical text.
pub(crate) fn write_text<T: ConfigValue>(v: &T, m: &mut Map<String, Value>, key: &str) {
    m.insert(key.into(), Value::String(v.to_text()));
}

/// Unknown keys go after the known ones; a known key always wins, so a hand-built `extra`
/// that repeats one (say `type`) can never produce a duplicate or contradicting key.
pub(crate) fn put_extra(m: &mut Map<String, Value>, extra: &Extra) {
    for (k, v) in extra {
        if !m.contains_key(k) {
            m.insert(k.clone(), v.clone());
        }
    }
}

/// One JSON object being read: known keys are taken out, the rest is `extra`.
pub(crate) struct Obj<'e> {
    map: Map<String, Value>,
    pub(crate) path: String,
    pub(crate) errors: &'e mut Vec<ConfigError>,
}

impl<'e> Obj<'e> {
    pub(crate) fn new(v: Value, path: String, errors: &'e mut Vec<ConfigError>) -> Option<Self> {
        match v {
            Value::Object(map) => Some(Obj { map, path, errors }),
            other => {
                errors.push(ConfigError::of(
                    ErrorKind::Type,
                    shown(&path),
                    format!("expected an object, found {}", kind_of(&other)),
                ));
                None
            }
        }
    }

    pub(crate) fn err(&mut self, kind: ErrorKind, key: &str, message: impl Into<String>) {
        let p = child(&self.path, key);
        self.errors.push(ConfigError::of(kind, p, message));
    }

    /// Converts one value; a type error is recorded at `path` and gives `None`.
    pub(crate) fn convert<T: DeserializeOwned>(&mut self, key: &str, v: Value) -> Option<T> {
        match serde_json::from_value::<T>(v) {
            Ok(t) => Some(t),
            Err(e) => {
                self.err(ErrorKind::Type, key, e.to_string());
                None
            }
        }
    }

    /// A required field. Absent: "missing required field".
    pub(crate) fn required<T: DeserializeOwned>(&mut self, key: &str) -> Option<T> {
        match self.map.shift_remove(key) {
            Some(v) => self.convert(key, v),
            None => {
                self.err(ErrorKind::Missing, key, "missing required field");
                None
            }
        }
    }

    /// A field with a default when absent. A present but wrong value is an error (and the
    /// default stands in, so reading can go on and find further problems).
    pub(crate) fn defaulted<T: DeserializeOwned>(&mut self, key: &str, default: T) -> T {
        match self.map.shift_remove(key) {
            Some(v) => self.convert(key, v).unwrap_or(default),
            None => default,
        }
    }

    /// An optional field: absent or `null` is `None`.
    pub(crate) fn optional<T: DeserializeOwned>(&mut self, key: &str) -> Option<T> {
        match self.map.shift_remove(key) {
            None | Some(Value::Null) => None,
            Some(v) => self.convert(key, v),
        }
    }

    /// A value written as a string and held as its type ([`ConfigValue`]): a wrong JSON
    /// type is a type error (`None`), a string that does not parse is recorded (kind
    /// `Invalid`, the path of the key) and its type's stand-in is read instead.
    fn parse_value<T: ConfigValue>(&mut self, key: &str, v: Value) -> Option<T> {
        let text: String = self.convert(key, v)?;
        Some(T::from_text(&text).unwrap_or_else(|message| {
            self.err(ErrorKind::Invalid, key, message);
            T::STAND_IN
        }))
    }

    /// A required typed value (see `parse_value`). Absent: "missing required field".
    pub(crate) fn parsed<T: ConfigValue>(&mut self, key: &str) -> Option<T> {
        match self.map.shift_remove(key) {
            Some(v) => self.parse_value(key, v),
            None => {
                self.err(ErrorKind::Missing, key, "missing required field");
                None
            }
        }
    }

    /// A typed value with a default: absent, of the wrong type or not parsing, it is
    /// `default` (the last two recorded).
    pub(crate) fn parsed_defaulted<T: ConfigValue>(&mut self, key: &str, default: T) -> T {
        match self.map.shift_remove(key) {
            Some(v) => match self.convert::<String>(key, v) {
                Some(text) => T::from_text(&text).unwrap_or_else(|message| {
                    self.err(ErrorKind::Invalid, key, message);
                    default
                }),
                None => default,
            },
            None => default,
        }
    }

    /// An optional typed value: absent or `null` is `None`, and so is one of the wrong
    /// type or not parsing (recorded).
    pub(crate) fn parsed_optional<T: ConfigValue>(&mut self, key: &str) -> Option<T> {
        match self.map.shift_remove(key) {
            None | Some(Value::Null) => None,
            Some(v) => {
                let text: String = self.convert(key, v)?;
                match T::from_text(&text) {
                    Ok(t) => Some(t),
                    Err(message) => {
                        self.err(ErrorKind::Invalid, key, message);
                        None
                    }
                }
            }
        }
    }

    /// An optional array of typed values (see `parse_value`), each element reported at its
    /// own index; the elements that parse are kept.
    pub(crate) fn parsed_list<T: ConfigValue>(&mut self, key: &str) -> Option<Vec<T>> {
        let texts = self.optional_strings(key)?;
        let p = child(&self.path, key);
        let mut out = Vec::with_capacity(texts.len());
        for (i, text) in texts.iter().enumerate() {
            match T::from_text(text) {
                Ok(t) => out.push(t),
                Err(message) => {
                    self.errors
                        .push(ConfigError::of(ErrorKind::Invalid, index(&p, i), message))
                }
            }
        }
        Some(out)
    }

    /// Whether the object still holds `key` with a value other than `null` (a key is
    /// taken out when its field is read, so this sees the fields not read yet).
    pub(crate) fn has(&self, key: &str) -> bool {
        self.map.get(key).is_some_and(|v| !v.is_null())
    }

    /// An optional array of strings, each element checked with its own index in the path.
    pub(crate) fn optional_strings(&mut self, key: &str) -> Option<Vec<String>> {
        let p = child(&self.path, key);
        match self.map.shift_remove(key) {
            None | Some(Value::Null) => None,
            Some(Value::Array(items)) => {
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.into_iter().enumerate() {
                    match item {
                        Value::String(s) => out.push(s),
                        other => self.errors.push(ConfigError::of(
                            ErrorKind::Type,
                            index(&p, i),
                            format!("expected a string, found {}", kind_of(&other)),
                        )),
                    }
                }
                Some(out)
            }
            Some(other) => {
                self.err(
                    ErrorKind::Type,
                    key,
                    format!("expected an array of strings, found {}", kind_of(&other)),
                );
                None
            }
        }
    }

    /// A nested block: absent (or `null`, when `null_is_absent`) is its `Default`; one that
    /// cannot be read stands in the same way, its problems recorded.
    pub(crate) fn section<T: Fields + Default>(&mut self, key: &str, null_is_absent: bool) -> T {
        match self.map.shift_remove(key) {
            None => T::default(),
            Some(Value::Null) if null_is_absent => T::default(),
            Some(v) => T::read_at(v, child(&self.path, key), self.errors).unwrap_or_default(),
        }
    }

    /// A nested block that may be left out: absent or `null` is `None`, and so is one that
    /// cannot be read (its problems recorded).
    pub(crate) fn optional_section<T: Fields>(&mut self, key: &str) -> Option<T> {
        match self.map.shift_remove(key) {
            None | Some(Value::Null) => None,
            Some(v) => T::read_at(v, child(&self.path, key), self.errors),
        }
    }

    /// An array's items; absent is `None`, and so is another JSON type (recorded).
    pub(crate) fn array(&mut self, key: &str) -> Option<Vec<Value>> {
        match self.map.shift_remove(key)? {
            Value::Array(items) => Some(items),
            other => {
                let message = format!("expected an array, found {}", kind_of(&other));
                self.err(ErrorKind::Type, key, message);
                None
            }
        }
    }

    /// Takes a sub-object's raw value (absent: `None`).
    pub(crate) fn take(&mut self, key: &str) -> Option<Value> {
        self.map.shift_remove(key)
    }

    pub(crate) fn rest(self) -> Extra {
        self.map
    }
}
