//! Removing secrets before a config leaves the node (`get_config` replies) or reaches a log.
//!
//! Secrets are removed, not masked: the manager pushes back what it read, and the edge keeps
//! its node-local secrets for every key a push omits, so a mask like "***" must never be
//! able to come back and overwrite a real passphrase.

use std::fmt;

use serde_json::Value;

use super::model::{
    BridgeConfig, BridgeStreamConfig, Config, FlowConfig, HlsOutputConfig, InputConfig,
    ManagerConfig, OutputConfig, RtmpInputConfig, RtmpOutputConfig, RtspInputConfig, ServerConfig,
    SrtConfig, TunnelConfig,
};

/// Keys whose value is a secret wherever they appear in the document, at any depth,
/// including inside unknown (`extra`) fields and blocks kept as raw JSON.
pub const SECRET_KEYS: &[&str] = &[
    "passphrase",
    "password",
    "bearer_token",
    "stream_key",
    "auth_token",
    "node_secret",
    "registration_token",
    "secret",
    "private_key",
    // An HLS output's extra request headers: usually an ingest token.
    "headers",
];

/// Keys holding URLs whose userinfo may carry a password (`rtsp://user:pass@cam/`): the
/// password part is removed, the rest kept.
const URL_KEYS: &[&str] = &["rtsp_url", "ingest_url"];

/// `rtsp://user:pass@host/p` -> `rtsp://user@host/p`; anything else unchanged.
pub fn strip_url_password(s: &str) -> String {
    match url::Url::parse(s) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(None);
            u.to_string()
        }
        _ => s.to_string(),
    }
}

/// An RTMP push URL with its stream key masked: `rtmp://host/app/KEY?q` ->
/// `rtmp://host/app/***` (the key is the last path segment and any query; a password in
/// the userinfo goes too). A URL that ends at the app (`rtmp://host/app`, the key given
/// apart) is unchanged. Masked rather than removed, unlike other secrets: the URL without
/// its key still says where the output pushes; `restore_secrets` puts the real URL back
/// when a masked one comes back from the manager.
pub fn redact_rtmp_url(s: &str) -> String {
    let Some(i) = s.find("://") else {
        // Not a URL: it could be anything, the key included.
        return "***".to_owned();
    };
    let rest = &s[i + 3..];
    let (authority, path) = match rest.find('/') {
        Some(slash) => (&rest[..slash], &rest[slash + 1..]),
        None => (rest.split('?').next().unwrap_or(rest), ""),
    };
    let authority = match authority.rfind('@') {
        Some(at) => format!("***@{}", &authority[at + 1..]),
        None => authority.to_owned(),
    };
    let (path, query) = match path.find('?') {
        Some(q) => (&path[..q], true),
        None => (path, false),
    };
    let path = path.trim_end_matches('/');
    let shown = match path.rfind('/') {
        Some(last) => format!("{}/***", &path[..last]),
        None if query => format!("{path}?***"),
        None => path.to_owned(),
    };
    format!("{}{authority}/{shown}", &s[..i + 3])
}

/// Every `scheme://userinfo@` in `text` becomes `scheme://***@`: for log lines, which may
/// quote a URL given to or printed by a peer (FFmpeg names the URL it failed to open).
/// The authority ends at the first `/ ? #`, quote, bracket or white space.
pub fn redact_userinfo(text: &str) -> std::borrow::Cow<'_, str> {
    let mut out = String::new();
    let mut copied = 0;
    let mut from = 0;
    while let Some(i) = text[from..].find("://") {
        let start = from + i + 3;
        let end = text[start..]
            .find(|c: char| {
                c.is_whitespace() || matches!(c, '/' | '?' | '#' | '\'' | '"' | '`' | '<' | '>')
            })
            .map_or(text.len(), |e| start + e);
        if let Some(at) = text[start..end].rfind('@') {
            out.push_str(&text[copied..start]);
            out.push_str("***");
            copied = start + at;
        }
        from = end;
    }
    if copied == 0 {
        return std::borrow::Cow::Borrowed(text);
    }
    out.push_str(&text[copied..]);
    std::borrow::Cow::Owned(out)
}

/// Keys that are secrets only inside `tunnels`: there `key` is the tunnel's shared key, while
/// elsewhere `key` is an ordinary word (e.g. a stream or object key).
const TUNNEL_SECRET_KEYS: &[&str] = &["key"];

/// Suffixes that make a key a secret anywhere (`tunnel_bind_secret`, `bind_token`, …): the
/// relay protocol's tunnel object carries `tunnel_bind_secret` and `tunnel_encryption_key`,
/// and a newer manager will add more of the same kind.
const SECRET_SUFFIXES: &[&str] = &["_secret", "_token", "_password", "_passphrase"];
/// Suffixes that make a key a secret inside `tunnels` (`tunnel_encryption_key`, `tunnel_psk`).
const TUNNEL_SECRET_SUFFIXES: &[&str] = &["_key", "_psk"];

/// Whether the value under `key` is a secret (`in_tunnel`: somewhere inside `tunnels`).
pub fn is_secret_key(key: &str, in_tunnel: bool) -> bool {
    SECRET_KEYS.contains(&key)
        || SECRET_SUFFIXES.iter().any(|s| key.ends_with(s))
        || (in_tunnel
            && (TUNNEL_SECRET_KEYS.contains(&key)
                || TUNNEL_SECRET_SUFFIXES.iter().any(|s| key.ends_with(s))))
}

impl Config {
    /// The whole config as JSON with every secret removed: safe to send in a
    /// `config_response` or to log.
    pub fn redacted(&self) -> Value {
        let mut v = self.to_value();
        redact_value(&mut v);
        v
    }
}

/// `Debug` of every config type that holds a secret, directly or below it: the type's name
/// and its redacted JSON. Derived `Debug` would print passphrases and passwords to whatever
/// logs a config (or a flow view holding one) at debug level; this cannot, and it also
/// covers secrets inside `extra` and `tunnels`, which field-by-field impls would miss.
macro_rules! redacted_debug {
    ($($t:ident => $to_value:expr),* $(,)?) => {$(
        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let to_value: fn(&$t) -> Value = $to_value;
                let mut v = to_value(self);
                redact_value(&mut v);
                write!(f, concat!(stringify!($t), " {}"), v)
            }
        }
    )*};
}

redacted_debug! {
    Config => Config::to_value,
    ServerConfig => ServerConfig::to_value,
    FlowConfig => FlowConfig::to_value,
    InputConfig => InputConfig::to_value,
    OutputConfig => OutputConfig::to_value,
    SrtConfig => |c| InputConfig::Srt(c.clone()).to_value(),
    RtspInputConfig => |c| InputConfig::Rtsp(c.clone()).to_value(),
    HlsOutputConfig => HlsOutputConfig::to_value,
    RtmpInputConfig => |c| InputConfig::Rtmp(c.clone()).to_value(),
    RtmpOutputConfig => RtmpOutputConfig::to_value,
    BridgeConfig => BridgeConfig::to_value,
    BridgeStreamConfig => BridgeStreamConfig::to_value,
    ManagerConfig => ManagerConfig::to_value,
    TunnelConfig => |t| {
        let mut v = t.to_value();
        redact_tunnel(&mut v);
        v
    },
}

/// Removes secrets from a config document (or any part of one) in place. A top-level
/// `tunnels` array, or a value that is itself a tunnel list's element, gets the tunnel rules:
/// pass the whole document, or call `redact_tunnel` for a single tunnel object.
pub fn redact_value(v: &mut Value) {
    walk(v, false);
}

/// Removes secrets from one tunnel object (e.g. the `tunnel` of a `create_tunnel` command
/// before it is logged), including its `key`.
pub fn redact_tunnel(v: &mut Value) {
    walk(v, true);
}

fn walk(v: &mut Value, in_tunnel: bool) {
    match v {
        Value::Object(map) => {
            map.retain(|k, _| !is_secret_key(k, in_tunnel));
            if is_rtmp(map) {
                for key in RTMP_URL_KEYS {
                    if let Some(Value::String(u)) = map.get_mut(*key) {
                        *u = redact_rtmp_url(u);
                    }
                }
            }
            for (k, child) in map.iter_mut() {
                if URL_KEYS.contains(&k.as_str())
                    && let Value::String(u) = child
                {
                    *u = strip_url_password(u);
                }
                walk(child, in_tunnel || k == "tunnels");
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|i| walk(i, in_tunnel)),
        _ => {}
    }
}

/// Puts back into `pushed` every secret that `local` has and `pushed` omits, at any depth.
/// A config the manager read through `get_config` has its secrets removed; when it comes
/// back in `update_config`, the node's own secrets must survive. Array elements are paired
/// by their `id` when they have one (flows, outputs, tunnels), else by position.
pub fn restore_secrets(pushed: &mut Value, local: &Value) {
    restore(pushed, local, false);
}

/// [`restore_secrets`] for one tunnel object (its `key` included).
pub fn restore_secrets_in_tunnel(pushed: &mut Value, local: &Value) {
    restore(pushed, local, true);
}

/// An RTMP output's URL keys: their last path segment may be the stream key.
const RTMP_URL_KEYS: &[&str] = &["url", "dest_url"];

/// An RTMP output's object (an input has no URL).
fn is_rtmp(map: &serde_json::Map<String, Value>) -> bool {
    map.get("type").and_then(Value::as_str) == Some("rtmp")
        && RTMP_URL_KEYS.iter().any(|k| map.contains_key(*k))
}

fn restore(pushed: &mut Value, local: &Value, in_tunnel: bool) {
    match (pushed, local) {
        (Value::Object(p), Value::Object(l)) => {
            // A masked RTMP URL that names the same place as the local one gets its key back.
            if is_rtmp(p) {
                for key in RTMP_URL_KEYS {
                    if let (Some(Value::String(pu)), Some(Value::String(lu))) =
                        (p.get(*key), l.get(*key))
                        && pu != lu
                        && *pu == redact_rtmp_url(lu)
                    {
                        p.insert((*key).into(), Value::String(lu.clone()));
                    }
                }
            }
            for (k, lv) in l {
                let secret = is_secret_key(k, in_tunnel);
                match p.get_mut(k) {
                    None if secret => {
                        p.insert(k.clone(), lv.clone());
                    }
                    Some(pv) => restore(pv, lv, in_tunnel || k == "tunnels"),
                    None => {}
                }
            }
        }
        (Value::Array(p), Value::Array(l)) => {
            for (i, pv) in p.iter_mut().enumerate() {
                let by_id = pv.get("id").and_then(Value::as_str).and_then(|id| {
                    l.iter()
                        .find(|lv| lv.get("id").and_then(Value::as_str) == Some(id))
                });
                let counterpart = match by_id {
                    Some(lv) => Some(lv),
                    None if pv.get("id").is_none() => l.get(i),
                    None => None,
                };
                if let Some(lv) = counterpart {
                    restore(pv, lv, in_tunnel);
                }
            }
        }
        _ => {}
    }
}
