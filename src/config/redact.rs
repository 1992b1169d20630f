//! Removing secrets before a config leaves the node (`get_config` replies) or reaches a log.
//!
//! Secrets are removed, not masked: the manager pushes back what it read, and the edge keeps
//! its node-local secrets for every key a push omits, so a mask like "***" must never be
//! able to come back and overwrite a real passphrase.

use serde_json::Value;

use super::model::Config;

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
];

/// Keys holding URLs whose userinfo may carry a password (`rtsp://user:pass@cam/`): the
/// password part is removed, the rest kept.
const URL_KEYS: &[&str] = &["rtsp_url"];

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

/// Keys that are secrets only inside `tunnels`: there `key` is the tunnel's shared key, while
/// elsewhere `key` is an ordinary word (e.g. a stream or object key).
const TUNNEL_SECRET_KEYS: &[&str] = &["key"];

impl Config {
    /// The whole config as JSON with every secret removed: safe to send in a
    /// `config_response` or to log.
    pub fn redacted(&self) -> Value {
        let mut v = self.to_value();
        redact_value(&mut v);
        v
    }
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
            map.retain(|k, _| {
                !(SECRET_KEYS.contains(&k.as_str())
                    || (in_tunnel && TUNNEL_SECRET_KEYS.contains(&k.as_str())))
            });
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
