//! Each config block is declared once, with [`config_struct!`]: one line per field names its
//! type, how it is read (required, defaulted, optional, …), how it is written back, and
//! optionally the check of its own value. From that the macro makes the struct (with its
//! `extra`), its reader (every problem with its JSON path, unknown keys into `extra`), its
//! writer (known keys in declaration order, then `extra`, which never overwrites a known
//! key) and `check_fields` (each field's own check, in declaration order). Rules between
//! fields (port conflicts, a caller needs a `remote_addr`, …) stay code in `validate.rs`.
//!
//! A field line is `name: Type => mode [check = f];`, the JSON key being the field's name.
//! Modes (reading / writing):
//! - `required`: absent is "missing required field" / always written.
//! - `default(expr)`: absent takes `expr` / always written.
//! - `optional`: an `Option`, absent or `null` is `None` / written when `Some`.
//! - `strings`: an `Option<Vec<String>>` whose elements are checked one by one / when `Some`.
//! - `list`, `list_if_any`: a `Vec<String>`, absent is empty / always, or when not empty.
//! - `section`, `section_or_null`, `optional_section`: a nested block (absent, or also
//!   `null`, gives its `Default` / `None`; a block that cannot be read stands in the same
//!   way, its problems being recorded) / always, always, when `Some`.
//! - `external`: not a key of this object (e.g. a bridge stream's id is its key in
//!   `streams`), `Default` when read / not written.
//! - `parsed`, `parsed_default(expr)`, `parsed_opt`: a typed value written as a JSON string
//!   (`SocketAddr`, `IpAddr`, a mode: see `value.rs`), parsed once by the reader, which
//!   reports a string that does not parse at the key's path (kind `Invalid`) and reads on
//!   with a stand-in (the type's, the default, `None`) / written as its canonical text:
//!   required, with a default, optional (`Option`, written when `Some`); `parsed_list`: an
//!   `Option<Vec<T>>` of them, each element reported at its index / written when `Some`.
//! - `custom`: the type's own reader and writer ([`Custom`](super::obj::Custom), in `json.rs`).
//!
//! `[if f]` after the mode writes the field only when `f(&block)` holds.
//!
//! A check is a `Fn(&T, path, &mut Vec<ConfigError>)`; [`check`] holds the usual ones.

macro_rules! config_read {
    ($o:ident, $key:expr, required) => {
        $o.required($key)
    };
    ($o:ident, $key:expr, default($d:expr)) => {
        Some($o.defaulted($key, $d))
    };
    ($o:ident, $key:expr, optional) => {
        Some($o.optional($key))
    };
    ($o:ident, $key:expr, strings) => {
        Some($o.optional_strings($key))
    };
    ($o:ident, $key:expr, list) => {
        Some($o.optional_strings($key).unwrap_or_default())
    };
    ($o:ident, $key:expr, list_if_any) => {
        Some($o.optional_strings($key).unwrap_or_default())
    };
    ($o:ident, $key:expr, section) => {
        Some($o.section($key, false))
    };
    ($o:ident, $key:expr, section_or_null) => {
        Some($o.section($key, true))
    };
    ($o:ident, $key:expr, optional_section) => {
        Some($o.optional_section($key))
    };
    ($o:ident, $key:expr, external) => {
        Some(Default::default())
    };
    ($o:ident, $key:expr, parsed) => {
        $o.parsed($key)
    };
    ($o:ident, $key:expr, parsed_default($d:expr)) => {
        Some($o.parsed_defaulted($key, $d))
    };
    ($o:ident, $key:expr, parsed_opt) => {
        Some($o.parsed_optional($key))
    };
    ($o:ident, $key:expr, parsed_list) => {
        Some($o.parsed_list($key))
    };
    ($o:ident, $key:expr, custom) => {
        $crate::config::obj::Custom::read_field(&mut $o, $key)
    };
}

macro_rules! config_write {
    ($m:ident, $key:expr, $v:expr, required) => {{
        $m.insert($key.into(), $crate::config::obj::to_json($v));
    }};
    ($m:ident, $key:expr, $v:expr, default($d:expr)) => {
        $crate::config::declare::config_write!($m, $key, $v, required)
    };
    ($m:ident, $key:expr, $v:expr, list) => {
        $crate::config::declare::config_write!($m, $key, $v, required)
    };
    ($m:ident, $key:expr, $v:expr, optional) => {
        if let Some(v) = $v {
            $m.insert($key.into(), $crate::config::obj::to_json(v));
        }
    };
    ($m:ident, $key:expr, $v:expr, strings) => {
        $crate::config::declare::config_write!($m, $key, $v, optional)
    };
    ($m:ident, $key:expr, $v:expr, list_if_any) => {
        if !$v.is_empty() {
            $crate::config::declare::config_write!($m, $key, $v, required)
        }
    };
    ($m:ident, $key:expr, $v:expr, section) => {{
        $m.insert($key.into(), $v.to_value());
    }};
    ($m:ident, $key:expr, $v:expr, section_or_null) => {
        $crate::config::declare::config_write!($m, $key, $v, section)
    };
    ($m:ident, $key:expr, $v:expr, optional_section) => {
        if let Some(v) = $v {
            $m.insert($key.into(), v.to_value());
        }
    };
    ($m:ident, $key:expr, $v:expr, external) => {};
    ($m:ident, $key:expr, $v:expr, parsed) => {
        $crate::config::obj::write_text($v, $m, $key)
    };
    ($m:ident, $key:expr, $v:expr, parsed_default($d:expr)) => {
        $crate::config::obj::write_text($v, $m, $key)
    };
    ($m:ident, $key:expr, $v:expr, parsed_opt) => {
        if let Some(v) = $v {
            $crate::config::obj::write_text(v, $m, $key)
        }
    };
    ($m:ident, $key:expr, $v:expr, parsed_list) => {
        if let Some(v) = $v {
            let texts = v
                .iter()
                .map(|t| serde_json::Value::String($crate::config::value::ConfigValue::to_text(t)));
            $m.insert($key.into(), serde_json::Value::Array(texts.collect()));
        }
    };
    ($m:ident, $key:expr, $v:expr, custom) => {
        $crate::config::obj::Custom::write_field($v, $m, $key)
    };
}

/// A field's value when its key is absent (blocks declared `with Default`).
macro_rules! config_default {
    (default($d:expr)) => {
        $d
    };
    (parsed_default($d:expr)) => {
        $d
    };
    (optional) => {
        None
    };
    (parsed_opt) => {
        None
    };
    (parsed_list) => {
        None
    };
    ($mode:ident $(($($arg:expr),*))?) => {
        Default::default()
    };
}

/// Declares a config block; see the module documentation. `with Default` also makes its
/// `Default`: every field as if its key were absent.
macro_rules! config_struct {
    (
        $(#[$meta:meta])*
        pub struct $name:ident with Default { $($body:tt)* }
    ) => {
        $crate::config::declare::config_struct! {
            $(#[$meta])*
            pub struct $name { $($body)* }
        }
        $crate::config::declare::config_struct!(@default $name { $($body)* });
    };
    (@default $name:ident {
        $(
            $(#[$fmeta:meta])*
            $field:ident: $ty:ty => $mode:ident $(($($arg:expr),*))? $([if $when:expr])? $(check = $check:expr)?;
        )*
    }) => {
        impl Default for $name {
            fn default() -> Self {
                $name {
                    $( $field: $crate::config::declare::config_default!(
                        $mode $(($($arg),*))?
                    ), )*
                    extra: $crate::config::obj::Extra::new(),
                }
            }
        }
    };
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $(
                $(#[$fmeta:meta])*
                $field:ident: $ty:ty => $mode:ident $(($($arg:expr),*))? $([if $when:expr])? $(check = $check:expr)?;
            )*
        }
    ) => {
        $(#[$meta])*
        pub struct $name {
            $( $(#[$fmeta])* pub $field: $ty, )*
            /// The keys this build does not know, kept to be written back.
            pub extra: $crate::config::obj::Extra,
        }

        impl $crate::config::obj::Fields for $name {
            fn read_fields(mut o: $crate::config::obj::Obj<'_>) -> Option<Self> {
                $(
                    let $field: Option<$ty> = $crate::config::declare::config_read!(
                        o, stringify!($field), $mode $(($($arg),*))?
                    );
                )*
                Some($name {
                    $( $field: $field?, )*
                    extra: o.rest(),
                })
            }

            fn write_fields(&self, m: &mut serde_json::Map<String, serde_json::Value>) {
                $(
                    if true $(&& ($when)(self))? {
                        $crate::config::declare::config_write!(
                            m, stringify!($field), &self.$field, $mode $(($($arg),*))?
                        );
                    }
                )*
                $crate::config::obj::put_extra(m, &self.extra);
            }
        }

        impl $name {
            /// The block as JSON: known keys in declaration order, then `extra`.
            pub fn to_value(&self) -> serde_json::Value {
                let mut m = serde_json::Map::new();
                $crate::config::obj::Fields::write_fields(self, &mut m);
                serde_json::Value::Object(m)
            }

            /// Each field's own check, in declaration order, with `path` the block's.
            #[allow(unused_variables, clippy::ptr_arg)]
            pub fn check_fields(&self, path: &str, errors: &mut Vec<$crate::config::ConfigError>) {
                $( $(
                    let check = $check;
                    check(
                        &self.$field,
                        &$crate::config::error::child(path, stringify!($field)),
                        errors,
                    );
                )? )*
            }
        }
    };
}

pub(crate) use {config_default, config_read, config_struct, config_write};

/// The usual field checks. They take the field's own type (`&String`, not `&str`): a
/// check is applied to `&self.field`, and wrapped by `opt` and `each` by that type.
#[allow(clippy::ptr_arg)]
pub(crate) mod check {
    use std::fmt::Display;
    use std::ops::RangeInclusive;

    use crate::config::error::{ConfigError, ErrorKind, index, quoted};

    type Errors = Vec<ConfigError>;

    /// `v` within `r`: "5000 is out of range (1..=1000)".
    pub(crate) fn range<T: PartialOrd + Display>(
        r: RangeInclusive<T>,
    ) -> impl Fn(&T, &str, &mut Vec<ConfigError>) {
        move |v, path, errors| {
            if !r.contains(v) {
                errors.push(ConfigError::of(
                    ErrorKind::Range,
                    path,
                    format!("{v} is out of range ({}..={})", r.start(), r.end()),
                ));
            }
        }
    }

    /// `check` when the value is there.
    pub(crate) fn opt<T>(
        check: impl Fn(&T, &str, &mut Vec<ConfigError>),
    ) -> impl Fn(&Option<T>, &str, &mut Vec<ConfigError>) {
        move |v, path, errors| {
            if let Some(v) = v {
                check(v, path, errors);
            }
        }
    }

    /// `check` on each element, at its own index.
    pub(crate) fn each<T>(
        check: impl Fn(&T, &str, &mut Vec<ConfigError>),
    ) -> impl Fn(&Vec<T>, &str, &mut Vec<ConfigError>) {
        move |v, path, errors| {
            for (i, item) in v.iter().enumerate() {
                check(item, &index(path, i), errors);
            }
        }
    }

    /// A string that `test` accepts, else `"<value>" <why>`.
    pub(crate) fn string(
        test: impl Fn(&str) -> Result<(), &'static str>,
    ) -> impl Fn(&String, &str, &mut Vec<ConfigError>) {
        move |v, path, errors| {
            if let Err(why) = test(v) {
                errors.push(ConfigError::new(path, format!("{} {why}", quoted(v))));
            }
        }
    }

    /// One of `allowed`: `"x" is not one of copy, mpeg1video`. (Only the bridge's
    /// `ffmpeg_video` uses it today, so a build without the bridge leaves it unused.)
    #[cfg_attr(not(feature = "rtsp"), allow(dead_code))]
    pub(crate) fn one_of(
        allowed: &'static [&'static str],
    ) -> impl Fn(&String, &str, &mut Vec<ConfigError>) {
        move |v, path, errors| {
            if !allowed.contains(&v.as_str()) {
                errors.push(ConfigError::new(
                    path,
                    format!("{} is not one of {}", quoted(v), allowed.join(", ")),
                ));
            }
        }
    }

    pub(crate) fn not_empty(v: &String, path: &str, errors: &mut Vec<ConfigError>) {
        if v.is_empty() {
            errors.push(ConfigError::new(path, "must not be empty"));
        }
    }

    pub(crate) fn at_least_1(v: &u32, path: &str, errors: &mut Vec<ConfigError>) {
        if *v == 0 {
            errors.push(ConfigError::of(
                ErrorKind::Range,
                path,
                "must be at least 1",
            ));
        }
    }

    pub(crate) fn not_zero(v: &u16, path: &str, errors: &mut Errors) {
        if *v == 0 {
            errors.push(ConfigError::new(path, "must not be 0"));
        }
    }

    /// An entry of `server.allowed_hosts`: a DNS name as a `Host` header carries it,
    /// without a port (any port is accepted) and without wildcards (each name is listed).
    pub(crate) fn host_name(h: &str) -> Result<(), &'static str> {
        if h.is_empty() || h.len() > 253 {
            return Err("is not a host name (1 to 253 characters)");
        }
        if !h
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
        {
            return Err(
                "is not a host name (letters, digits, '.', '-' and '_' only: no port, no scheme, no wildcard)",
            );
        }
        if h.starts_with('.') || h.ends_with('.') || h.contains("..") {
            return Err("is not a host name (empty label)");
        }
        Ok(())
    }

    /// A UUID in its usual text form, 8-4-4-4-12 hex digits (a tunnel's `id`).
    pub(crate) fn uuid(v: &str) -> Result<(), &'static str> {
        match crate::config::uuid_bytes(v) {
            Some(_) => Ok(()),
            None => Err("is not a UUID (8-4-4-4-12 hex digits)"),
        }
    }

    /// `host:port` with a port (a relay or a direct peer; a name is resolved when dialled).
    pub(crate) fn host_port(v: &str) -> Result<(), &'static str> {
        const WANT: &str = "is not host:port (e.g. relay.example.com:4433 or [2001:db8::1]:4433)";
        match crate::net::outbound::split_host_port(v) {
            Some((host, port))
                if port != 0
                    && (host.parse::<std::net::IpAddr>().is_ok() || host_name(host).is_ok()) =>
            {
                Ok(())
            }
            _ => Err(WANT),
        }
    }

    /// 64 hex digits (a 32-byte key or secret as the manager writes it).
    pub(crate) fn hex_key(v: &str) -> Result<(), &'static str> {
        if v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()) {
            Ok(())
        } else {
            Err("is not 64 hex digits")
        }
    }

    /// A SHA-256 fingerprint: 64 hex digits, colons allowed.
    pub(crate) fn fingerprint(v: &str) -> Result<(), &'static str> {
        match crate::config::parse_fingerprint(v) {
            Some(_) => Ok(()),
            None => Err("is not a SHA-256 fingerprint (64 hex digits, colons allowed)"),
        }
    }

    /// An entry of `bridge.allowed_origins`: an origin as browsers send it in `Origin`,
    /// `http://host[:port]` or `https://host[:port]`, nothing after the authority.
    pub(crate) fn origin(o: &str) -> Result<(), &'static str> {
        const WANT: &str =
            "is not an origin (expected http://host[:port] or https://host[:port], no path)";
        let Some(authority) = o
            .strip_prefix("http://")
            .or_else(|| o.strip_prefix("https://"))
        else {
            return Err(WANT);
        };
        if authority.is_empty()
            || authority
                .bytes()
                .any(|b| !b.is_ascii_graphic() || matches!(b, b'/' | b'?' | b'#' | b'@' | b','))
        {
            return Err(WANT);
        }
        Ok(())
    }
}
