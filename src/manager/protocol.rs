//! The wire format of `shared/spec/manager-protocol.md`: building what the edge sends and
//! reading what the manager sends. Pure functions; the caller passes the timestamp in.

use serde_json::{Map, Value, json};

use crate::events::Record;

/// The manager drops messages above 5 MB; the edge never sends one and ignores any it gets.
pub const MAX_MESSAGE_BYTES: usize = 5 * 1000 * 1000;
/// Manager-side limits on an event's fields.
pub const MAX_CATEGORY_BYTES: usize = 256;
pub const MAX_EVENT_MESSAGE_BYTES: usize = 10_000;

/// How the node authenticates.
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    /// A one-time registration token (enrollment).
    Token(String),
    /// The credentials the manager issued in `register_ack`.
    Node { id: String, secret: String },
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::Token(_) => f.write_str("Token(<redacted>)"),
            Credentials::Node { id, .. } => write!(f, "Node {{ id: {id:?}, secret: <redacted> }}"),
        }
    }
}

/// `{"type":kind,"timestamp":ts,"payload":payload}`: every message after `auth`.
pub fn envelope(kind: &str, timestamp: &str, payload: Value) -> Value {
    json!({ "type": kind, "timestamp": timestamp, "payload": payload })
}

/// The first frame. The spec shows it without `timestamp` (the envelope rule starts after
/// auth), and that is what is sent.
pub fn auth(creds: &Credentials, software_version: &str, protocol_version: u32) -> Value {
    let mut p = Map::new();
    match creds {
        Credentials::Token(t) => {
            p.insert("registration_token".into(), t.clone().into());
        }
        Credentials::Node { id, secret } => {
            p.insert("node_id".into(), id.clone().into());
            p.insert("node_secret".into(), secret.clone().into());
        }
    }
    p.insert("software_version".into(), software_version.into());
    p.insert("protocol_version".into(), protocol_version.into());
    json!({ "type": "auth", "payload": p })
}

/// An `event` message for a queued record: stamped with its raise time (not the send time),
/// and carrying `seq` and `raised_at` in `details`, because the manager stamps what it
/// stores with its receive time and a late delivery must still say when it happened.
pub fn event(record: &Record) -> Value {
    let raised_at = crate::time::rfc3339_millis(record.raised_at_ms);
    let e = &record.event;
    let mut p = Map::new();
    p.insert("severity".into(), e.severity.as_str().into());
    p.insert(
        "category".into(),
        truncate(e.category.as_str(), MAX_CATEGORY_BYTES).into(),
    );
    p.insert(
        "message".into(),
        truncate(&e.message, MAX_EVENT_MESSAGE_BYTES).into(),
    );
    if let Some(f) = &e.flow_id {
        p.insert("flow_id".into(), f.clone().into());
    }
    let mut details = e.details.clone();
    details.insert("seq".into(), record.seq.into());
    details.insert("raised_at".into(), raised_at.clone().into());
    p.insert("details".into(), Value::Object(details));
    envelope("event", &raised_at, Value::Object(p))
}

/// `command_ack` success.
pub fn ack_ok(timestamp: &str, command_id: &str, data: Option<Value>) -> Value {
    let mut p = Map::new();
    p.insert("command_id".into(), command_id.into());
    p.insert("success".into(), true.into());
    if let Some(d) = data {
        p.insert("data".into(), d);
    }
    envelope("command_ack", timestamp, Value::Object(p))
}

/// `command_ack` failure with one of the spec's error codes.
pub fn ack_err(timestamp: &str, command_id: &str, error: &str, code: &str) -> Value {
    envelope(
        "command_ack",
        timestamp,
        json!({ "command_id": command_id, "success": false, "error": error, "error_code": code }),
    )
}

/// Longest prefix of `s` within `max` bytes, cut on a character boundary.
fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// A message from the manager, as far as the link cares.
///
/// `Debug` is hand-written: a `register_ack` carries the node secret and a command's action
/// may carry passphrases and keys, and neither may reach a log line.
#[derive(Clone, PartialEq)]
pub enum Incoming {
    AuthOk,
    RegisterAck {
        node_id: String,
        node_secret: String,
    },
    AuthError {
        message: String,
    },
    Command {
        command_id: String,
        action: Value,
    },
    /// A `command` whose `action` is unusable; answered with `validation_error`.
    BadCommand {
        command_id: String,
        error: String,
    },
    /// Application-level `ping`: answered with `pong`.
    Ping,
    /// A `type` the edge does not handle (ignored, logged at debug).
    Other(String),
}

impl Incoming {
    /// The message's `type` as the manager sent it (for a command, `command`); safe to log.
    pub fn kind(&self) -> &str {
        match self {
            Incoming::AuthOk => "auth_ok",
            Incoming::RegisterAck { .. } => "register_ack",
            Incoming::AuthError { .. } => "auth_error",
            Incoming::Command { .. } | Incoming::BadCommand { .. } => "command",
            Incoming::Ping => "ping",
            Incoming::Other(kind) => kind,
        }
    }
}

impl std::fmt::Debug for Incoming {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Incoming::AuthOk => f.write_str("AuthOk"),
            Incoming::RegisterAck { node_id, .. } => f
                .debug_struct("RegisterAck")
                .field("node_id", node_id)
                .field("node_secret", &"<redacted>")
                .finish(),
            Incoming::AuthError { message } => f
                .debug_struct("AuthError")
                .field("message", message)
                .finish(),
            Incoming::Command { command_id, action } => f
                .debug_struct("Command")
                .field("command_id", command_id)
                .field("action", &action_kind(action))
                .finish(),
            Incoming::BadCommand { command_id, error } => f
                .debug_struct("BadCommand")
                .field("command_id", command_id)
                .field("error", error)
                .finish(),
            Incoming::Ping => f.write_str("Ping"),
            Incoming::Other(kind) => f.debug_tuple("Other").field(kind).finish(),
        }
    }
}

/// A command action's `type` and nothing else (the rest may hold secrets), for logs.
pub fn action_kind(action: &Value) -> &str {
    action.get("type").and_then(Value::as_str).unwrap_or("?")
}

/// Why a manager message was ignored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    NotJson(String),
    NotAnObject,
    NoType,
    /// A known `type` with a missing or mistyped field.
    BadField {
        kind: String,
        field: &'static str,
    },
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ParseError::NotJson(e) => write!(f, "not JSON: {e}"),
            ParseError::NotAnObject => f.write_str("not a JSON object"),
            ParseError::NoType => f.write_str("no string `type`"),
            ParseError::BadField { kind, field } => {
                write!(f, "`{kind}` message without a valid `{field}`")
            }
        }
    }
}

/// Reads one text frame from the manager. Lenient where the manager is (a missing
/// `timestamp` is fine inbound), strict about what the edge acts on.
pub fn parse(text: &str) -> Result<Incoming, ParseError> {
    let v: Value = serde_json::from_str(text).map_err(|e| ParseError::NotJson(e.to_string()))?;
    let Value::Object(mut m) = v else {
        return Err(ParseError::NotAnObject);
    };
    let kind = match m.get("type") {
        Some(Value::String(s)) => s.clone(),
        _ => return Err(ParseError::NoType),
    };
    let bad = |field| ParseError::BadField {
        kind: kind.clone(),
        field,
    };
    let mut payload = match m.remove("payload") {
        Some(Value::Object(p)) => Some(p),
        _ => None,
    };
    let mut string = |field: &'static str| -> Result<String, ParseError> {
        match payload.as_mut().and_then(|p| p.remove(field)) {
            Some(Value::String(s)) if !s.is_empty() => Ok(s),
            _ => Err(bad(field)),
        }
    };
    match kind.as_str() {
        "auth_ok" => Ok(Incoming::AuthOk),
        "register_ack" => {
            let node_id = string("node_id")?;
            let node_secret = string("node_secret")?;
            Ok(Incoming::RegisterAck {
                node_id,
                node_secret,
            })
        }
        "auth_error" => {
            // Top-level `message` per the spec; tolerate it in the payload too.
            let message = match m.remove("message") {
                Some(Value::String(s)) => s,
                _ => string("message").unwrap_or_else(|_| "no reason given".into()),
            };
            Ok(Incoming::AuthError { message })
        }
        "command" => {
            let command_id = string("command_id")?;
            match payload.as_mut().and_then(|p| p.remove("action")) {
                Some(Value::Object(a)) if matches!(a.get("type"), Some(Value::String(_))) => {
                    Ok(Incoming::Command {
                        command_id,
                        action: Value::Object(a),
                    })
                }
                _ => Ok(Incoming::BadCommand {
                    command_id,
                    error: "action: expected an object with a string `type`".into(),
                }),
            }
        }
        "ping" => Ok(Incoming::Ping),
        _ => Ok(Incoming::Other(kind)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::Event;

    #[test]
    fn event_carries_raise_time_and_seq() {
        let r = Record {
            seq: 7,
            raised_at_ms: 1_775_131_200_000,
            event: Event::flow_started("f1"),
        };
        let v = event(&r);
        assert_eq!(v["type"], "event");
        assert_eq!(v["timestamp"], "2026-04-02T12:00:00.000Z");
        assert_eq!(v["payload"]["severity"], "info");
        assert_eq!(v["payload"]["category"], "flow");
        assert_eq!(v["payload"]["message"], "Flow 'f1' started");
        assert_eq!(v["payload"]["flow_id"], "f1");
        assert_eq!(v["payload"]["details"]["seq"], 7);
        assert_eq!(
            v["payload"]["details"]["raised_at"],
            "2026-04-02T12:00:00.000Z"
        );
    }

    #[test]
    fn long_messages_are_cut_on_a_char_boundary() {
        let s = "é".repeat(6000);
        let t = truncate(&s, MAX_EVENT_MESSAGE_BYTES);
        assert!(t.len() <= MAX_EVENT_MESSAGE_BYTES && t.len() >= MAX_EVENT_MESSAGE_BYTES - 1);
    }

    #[test]
    fn auth_frames_match_the_spec() {
        let t = auth(&Credentials::Token("tok".into()), "0.1.0", 1);
        assert_eq!(
            t,
            json!({"type":"auth","payload":{"registration_token":"tok","software_version":"0.1.0","protocol_version":1}})
        );
        let n = auth(
            &Credentials::Node {
                id: "i".into(),
                secret: "s".into(),
            },
            "0.1.0",
            1,
        );
        assert_eq!(
            n.to_string(),
            r#"{"type":"auth","payload":{"node_id":"i","node_secret":"s","software_version":"0.1.0","protocol_version":1}}"#
        );
        assert!(!format!("{:?}", Credentials::Token("tok".into())).contains("tok"));
    }

    #[test]
    fn incoming_debug_hides_secrets() {
        let ack =
            parse(r#"{"type":"register_ack","payload":{"node_id":"a","node_secret":"s3cret"}}"#)
                .unwrap();
        let cmd = parse(
            r#"{"type":"command","payload":{"command_id":"c","action":{"type":"create_tunnel","tunnel":{"tunnel_encryption_key":"s3cret"}}}}"#,
        )
        .unwrap();
        let text = format!("{ack:?} {cmd:?}");
        assert!(!text.contains("s3cret"), "{text}");
        assert!(
            text.contains("create_tunnel") && text.contains("\"a\""),
            "{text}"
        );
        assert_eq!((ack.kind(), cmd.kind()), ("register_ack", "command"));
    }

    #[test]
    fn parses_what_the_manager_sends() {
        assert_eq!(
            parse(r#"{"type":"auth_ok","timestamp":"2026-04-02T12:00:00Z"}"#),
            Ok(Incoming::AuthOk)
        );
        assert_eq!(
            parse(r#"{"type":"auth_error","message":"Invalid node secret"}"#),
            Ok(Incoming::AuthError {
                message: "Invalid node secret".into()
            })
        );
        assert_eq!(
            parse(r#"{"type":"register_ack","payload":{"node_id":"a","node_secret":"b"}}"#),
            Ok(Incoming::RegisterAck {
                node_id: "a".into(),
                node_secret: "b".into()
            })
        );
        assert!(matches!(
            parse(r#"{"type":"register_ack","payload":{"node_id":"a"}}"#),
            Err(ParseError::BadField { .. })
        ));
        assert_eq!(
            parse(
                r#"{"type":"command","payload":{"command_id":"c","action":{"type":"get_config"}}}"#
            ),
            Ok(Incoming::Command {
                command_id: "c".into(),
                action: json!({"type":"get_config"})
            })
        );
        assert!(matches!(
            parse(r#"{"type":"command","payload":{"command_id":"c","action":5}}"#),
            Ok(Incoming::BadCommand { .. })
        ));
        assert_eq!(
            parse(r#"{"type":"zzz"}"#),
            Ok(Incoming::Other("zzz".into()))
        );
        assert!(matches!(parse("{"), Err(ParseError::NotJson(_))));
        assert_eq!(parse("[1]"), Err(ParseError::NotAnObject));
        assert_eq!(parse(r#"{"type":1}"#), Err(ParseError::NoType));
    }
}
