//! The wire format of `shared/spec/manager-protocol.md`, declared once as serde types:
//! [`ToManager`] for what the edge sends, [`FromManager`] for what the manager sends (with
//! [`Action`], a command's action). Both are tagged on `type`; every message after `auth`
//! carries `timestamp` before `payload`, in that order on the wire. The builders and
//! [`parse`] are pure: the caller passes the timestamp in.
//!
//! Secrets (the node secret, the registration token, the config objects a command pushes,
//! which may hold passphrases and keys) are held in [`Secret`], so every type here derives
//! `Debug` and still prints none of them.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

use crate::events::Record;
use crate::secret::{self, Secret};

/// The manager drops messages above 5 MB; the edge never sends one and ignores any it gets.
pub const MAX_MESSAGE_BYTES: usize = 5 * 1000 * 1000;
/// Manager-side limits on an event's fields.
pub const MAX_CATEGORY_BYTES: usize = 256;
pub const MAX_EVENT_MESSAGE_BYTES: usize = 10_000;

// ---------------------------------------------------------------------------------------
// Edge → manager

/// A message the edge sends. `timestamp` (RFC 3339 UTC) is required by the manager on every
/// message after `auth`: it silently drops one without.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ToManager {
    /// The first frame. The spec shows it without `timestamp` (the envelope rule starts
    /// after auth), and that is what is sent.
    Auth { payload: Auth },
    /// Right after auth, then every 15 s. The payload is open (extra fields are welcome).
    Health { timestamp: String, payload: Value },
    /// Every second while connected.
    Stats { timestamp: String, payload: Value },
    Event {
        timestamp: String,
        payload: EventPayload,
    },
    CommandAck {
        timestamp: String,
        payload: CommandAck,
    },
    /// The answer to `get_config`: the running config with its secrets stripped.
    ConfigResponse { timestamp: String, payload: Value },
    /// The answer to the manager's application-level `ping`.
    Pong { timestamp: String, payload: Empty },
}

impl ToManager {
    /// The text frame. Kept apart from `Display` on purpose: the `auth` frame holds the
    /// node's credentials, and this text must go to the socket, not to a log.
    pub fn to_json(&self) -> String {
        // Cannot fail: every map key is a string and the one flattened part is a struct.
        serde_json::to_string(self).expect("manager messages serialize")
    }

    /// The message as a JSON value (tests, and callers that inspect what is sent).
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).expect("manager messages serialize")
    }
}

/// The `auth` payload: the credentials, then the versions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Auth {
    #[serde(flatten)]
    pub credentials: Credentials,
    pub software_version: String,
    pub protocol_version: u32,
}

/// How the node authenticates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Credentials {
    /// The credentials the manager issued in `register_ack`.
    Node {
        #[serde(rename = "node_id")]
        id: String,
        #[serde(rename = "node_secret", serialize_with = "secret::serialize")]
        secret: Secret,
    },
    /// A one-time registration token (enrollment).
    Token {
        #[serde(rename = "registration_token", serialize_with = "secret::serialize")]
        token: Secret,
    },
}

/// The `event` payload (events seed): the manager enforces the category and message limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventPayload {
    pub severity: String,
    pub category: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flow_id: Option<String>,
    pub details: Map<String, Value>,
}

/// The `command_ack` payload: `data` on success, `error` and `error_code` on failure.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandAck {
    pub command_id: String,
    pub success: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
}

/// `{}`: the payload of a message that has nothing to say (`pong`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Empty {}

/// The first frame.
pub fn auth(creds: &Credentials, software_version: &str, protocol_version: u32) -> ToManager {
    ToManager::Auth {
        payload: Auth {
            credentials: creds.clone(),
            software_version: software_version.into(),
            protocol_version,
        },
    }
}

/// An `event` message for a queued record: stamped with its raise time (not the send time),
/// and carrying `seq` and `raised_at` in `details`, because the manager stamps what it
/// stores with its receive time and a late delivery must still say when it happened.
pub fn event(record: &Record) -> ToManager {
    let raised_at = crate::time::rfc3339_millis(record.raised_at_ms);
    let e = &record.event;
    let mut details = e.details.clone();
    details.insert("seq".into(), record.seq.into());
    details.insert("raised_at".into(), raised_at.clone().into());
    ToManager::Event {
        timestamp: raised_at,
        payload: EventPayload {
            severity: e.severity.as_str().into(),
            category: truncate(e.category.as_str(), MAX_CATEGORY_BYTES).into(),
            message: truncate(&e.message, MAX_EVENT_MESSAGE_BYTES).into(),
            flow_id: e.flow_id.clone(),
            details,
        },
    }
}

/// `command_ack` success.
pub fn ack_ok(timestamp: &str, command_id: &str, data: Option<Value>) -> ToManager {
    ToManager::CommandAck {
        timestamp: timestamp.into(),
        payload: CommandAck {
            command_id: command_id.into(),
            success: true,
            data,
            error: None,
            error_code: None,
        },
    }
}

/// `command_ack` failure with one of the spec's error codes.
pub fn ack_err(timestamp: &str, command_id: &str, error: &str, code: &str) -> ToManager {
    ToManager::CommandAck {
        timestamp: timestamp.into(),
        payload: CommandAck {
            command_id: command_id.into(),
            success: false,
            data: None,
            error: Some(error.into()),
            error_code: Some(code.into()),
        },
    }
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

// ---------------------------------------------------------------------------------------
// Manager → edge

/// A message the manager sends, as on the wire. Lenient where the manager is (`timestamp`
/// may be missing or odd inbound, unknown fields are ignored), strict about what the edge
/// acts on. [`parse`] reads it and hands the link an [`Incoming`].
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FromManager {
    AuthOk {
        #[serde(default)]
        timestamp: Field<String>,
    },
    RegisterAck {
        #[serde(default)]
        timestamp: Field<String>,
        payload: NodeCredentials,
    },
    /// `message` at the top level per the spec; tolerated in the payload too.
    AuthError {
        #[serde(default)]
        timestamp: Field<String>,
        #[serde(default)]
        message: Field<String>,
        #[serde(default)]
        payload: Field<Reason>,
    },
    Command {
        #[serde(default)]
        timestamp: Field<String>,
        payload: CommandPayload,
    },
    /// Application-level `ping`: answered with `pong`.
    Ping {
        #[serde(default)]
        timestamp: Field<String>,
    },
    /// A `type` the edge does not read ([`parse`] names it in [`Incoming::Other`]).
    #[serde(other)]
    Unknown,
}

/// `register_ack`: the node's permanent credentials.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct NodeCredentials {
    pub node_id: NonEmpty,
    #[serde(deserialize_with = "non_empty")]
    pub node_secret: Secret,
}

/// An `auth_error` reason given in the payload.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Reason {
    pub message: NonEmpty,
}

/// A `command`: without a usable `command_id` there is no one to answer, and the message
/// is ignored; an unusable `action` is answered.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct CommandPayload {
    pub command_id: NonEmpty,
    #[serde(default, deserialize_with = "action")]
    pub action: Field<Action>,
}

/// `action`: an object with a string `type`. Checked before the action is read, because
/// serde also takes a number for a variant (its index): `{"type": 1}` is not
/// `update_config`.
fn action<'de, D: Deserializer<'de>>(d: D) -> Result<Field<Action>, D::Error> {
    let v = Value::deserialize(d)?;
    Ok(match v.get("type") {
        Some(Value::String(_)) => Action::deserialize(v).map_or(Field::Invalid, Field::Given),
        _ => Field::Invalid,
    })
}

/// A command's action (manager-protocol.md, "Manager → edge"). Every field is read on its
/// own ([`Field`]), so a missing or mistyped one is answered with its name rather than
/// making the whole action unreadable. The config objects (`config`, `flow`, `output`,
/// `tunnel`) stay JSON for the config reader, which reports their problems with JSON paths.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Action {
    GetConfig,
    UpdateConfig {
        #[serde(default)]
        config: Field<Secret<Value>>,
    },
    CreateFlow {
        #[serde(default)]
        flow: Field<Secret<Value>>,
    },
    UpdateFlow {
        #[serde(default)]
        flow_id: Field<NonEmpty>,
        #[serde(default)]
        flow: Field<Secret<Value>>,
    },
    DeleteFlow {
        #[serde(default)]
        flow_id: Field<NonEmpty>,
    },
    StartFlow {
        #[serde(default)]
        flow_id: Field<NonEmpty>,
    },
    StopFlow {
        #[serde(default)]
        flow_id: Field<NonEmpty>,
    },
    RestartFlow {
        #[serde(default)]
        flow_id: Field<NonEmpty>,
    },
    AddOutput {
        #[serde(default)]
        flow_id: Field<NonEmpty>,
        #[serde(default)]
        output: Field<Secret<Value>>,
    },
    RemoveOutput {
        #[serde(default)]
        flow_id: Field<NonEmpty>,
        #[serde(default)]
        output_id: Field<NonEmpty>,
    },
    CreateTunnel {
        #[serde(default)]
        tunnel: Field<Secret<Value>>,
    },
    DeleteTunnel {
        #[serde(default)]
        tunnel_id: Field<NonEmpty>,
    },
    /// An action this build does not know: answered with `unknown_action`. (Tried only
    /// when the tagged variants fail, which with every field a [`Field`] means: an unknown
    /// `type`.)
    #[serde(untagged)]
    Unknown {
        #[serde(rename = "type")]
        kind: String,
    },
}

/// One part of a message read on its own: absent, present but not what the edge can use,
/// or the value. Used with `#[serde(default)]`, so that an explicit `null` is `Invalid`
/// (or, for a JSON value, `Given(null)`) and not `Missing`.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Field<T> {
    #[default]
    Missing,
    Invalid,
    Given(T),
}

impl<'de, T: DeserializeOwned> Deserialize<'de> for Field<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        Ok(T::deserialize(v).map_or(Field::Invalid, Field::Given))
    }
}

/// A string that names something (an id, a command id): empty is as good as missing.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct NonEmpty(#[serde(deserialize_with = "non_empty")] pub String);

impl std::ops::Deref for NonEmpty {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

fn non_empty<'de, D: Deserializer<'de>, T: From<String>>(d: D) -> Result<T, D::Error> {
    let s = String::deserialize(d)?;
    if s.is_empty() {
        return Err(serde::de::Error::invalid_value(
            serde::de::Unexpected::Str(""),
            &"a non-empty string",
        ));
    }
    Ok(T::from(s))
}

/// A message from the manager, as far as the link cares: [`FromManager`] with its
/// payload taken apart and its lenient parts settled.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    AuthOk,
    RegisterAck {
        node_id: String,
        node_secret: Secret,
    },
    AuthError {
        message: String,
    },
    Command {
        command_id: String,
        action: Action,
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

/// What [`Incoming::BadCommand`] says.
pub const BAD_ACTION: &str = "action: expected an object with a string `type`";

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

/// Why a manager message was ignored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    NotJson(String),
    NotAnObject,
    NoType,
    /// A known `type` with a missing or unusable field (serde's account of it).
    Malformed {
        kind: String,
        error: String,
    },
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ParseError::NotJson(e) => write!(f, "not JSON: {e}"),
            ParseError::NotAnObject => f.write_str("not a JSON object"),
            ParseError::NoType => f.write_str("no string `type`"),
            ParseError::Malformed { kind, error } => write!(f, "`{kind}` message: {error}"),
        }
    }
}

/// Reads one text frame from the manager. Never panics: garbage is an error to count.
pub fn parse(text: &str) -> Result<Incoming, ParseError> {
    let v: Value = serde_json::from_str(text).map_err(|e| ParseError::NotJson(e.to_string()))?;
    let kind = match &v {
        Value::Object(m) => match m.get("type") {
            Some(Value::String(s)) => s.clone(),
            _ => return Err(ParseError::NoType),
        },
        _ => return Err(ParseError::NotAnObject),
    };
    let msg = FromManager::deserialize(&v).map_err(|e| ParseError::Malformed {
        kind: kind.clone(),
        error: e.to_string(),
    })?;
    Ok(match msg {
        FromManager::AuthOk { .. } => Incoming::AuthOk,
        FromManager::RegisterAck { payload, .. } => Incoming::RegisterAck {
            node_id: payload.node_id.0,
            node_secret: payload.node_secret,
        },
        FromManager::AuthError {
            message, payload, ..
        } => Incoming::AuthError {
            message: match (message, payload) {
                (Field::Given(m), _) => m,
                (_, Field::Given(r)) => r.message.0,
                _ => "no reason given".into(),
            },
        },
        FromManager::Command { payload, .. } => {
            let command_id = payload.command_id.0;
            match payload.action {
                Field::Given(action) => Incoming::Command { command_id, action },
                Field::Missing | Field::Invalid => Incoming::BadCommand {
                    command_id,
                    error: BAD_ACTION.into(),
                },
            }
        }
        FromManager::Ping { .. } => Incoming::Ping,
        FromManager::Unknown => Incoming::Other(kind),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::Event;
    use serde_json::json;

    const TS: &str = "2026-04-02T12:00:00Z";
    const NODE_ID: &str = "11111111-2222-4333-8444-555555555555";
    const SECRET: &str = "s3cret-66666666-7777-4888-9999-000000000000";

    /// `msg` is sent as exactly `literal`, and `literal` reads back as `msg`.
    fn round_trip(msg: &ToManager, literal: &str) {
        assert_eq!(msg.to_json(), literal);
        assert_eq!(&serde_json::from_str::<ToManager>(literal).unwrap(), msg);
    }

    fn node() -> Credentials {
        Credentials::Node {
            id: NODE_ID.into(),
            secret: SECRET.into(),
        }
    }

    // -- Edge → manager, byte for byte against the spec's examples ----------------------

    #[test]
    fn auth_frames_match_the_spec() {
        let returning = auth(&node(), "0.1.0", 1);
        round_trip(
            &returning,
            &format!(
                r#"{{"type":"auth","payload":{{"node_id":"{NODE_ID}","node_secret":"{SECRET}","software_version":"0.1.0","protocol_version":1}}}}"#
            ),
        );
        let new = auth(
            &Credentials::Token {
                token: SECRET.into(),
            },
            "0.1.0",
            1,
        );
        round_trip(
            &new,
            &format!(
                r#"{{"type":"auth","payload":{{"registration_token":"{SECRET}","software_version":"0.1.0","protocol_version":1}}}}"#
            ),
        );
        for m in [&returning, &new] {
            let text = format!("{m:?} {m:#?}");
            assert!(!text.contains("s3cret"), "{text}");
            assert!(text.contains("0.1.0"), "{text}");
        }
        assert!(!format!("{:?}", node()).contains("s3cret"));
    }

    #[test]
    fn health_and_stats_are_the_envelope_around_their_payload() {
        round_trip(
            &ToManager::Health {
                timestamp: TS.into(),
                payload: json!({"status": "ok", "version": "0.1.0", "uptime_secs": 5,
                                "active_flows": 1, "total_flows": 2}),
            },
            r#"{"type":"health","timestamp":"2026-04-02T12:00:00Z","payload":{"status":"ok","version":"0.1.0","uptime_secs":5,"active_flows":1,"total_flows":2}}"#,
        );
        round_trip(
            &ToManager::Stats {
                timestamp: TS.into(),
                payload: json!({"flows": [{"id": "flow-1", "state": "running",
                                           "input": {"bitrate_bps": 1000}}],
                                "tunnels": [{"state": "ready",
                                             "stats": {"bitrate_in_bps": 1, "bitrate_out_bps": 2}}],
                                "uptime_secs": 5, "active_flows": 1, "total_flows": 1}),
            },
            r#"{"type":"stats","timestamp":"2026-04-02T12:00:00Z","payload":{"flows":[{"id":"flow-1","state":"running","input":{"bitrate_bps":1000}}],"tunnels":[{"state":"ready","stats":{"bitrate_in_bps":1,"bitrate_out_bps":2}}],"uptime_secs":5,"active_flows":1,"total_flows":1}}"#,
        );
    }

    #[test]
    fn event_carries_raise_time_and_seq() {
        let r = Record {
            seq: 7,
            raised_at_ms: 1_775_131_200_000,
            event: Event::srt_input_disconnected("flow-1").with_detail("peer", "10.0.0.1:9000"),
        };
        round_trip(
            &event(&r),
            r#"{"type":"event","timestamp":"2026-04-02T12:00:00.000Z","payload":{"severity":"warning","category":"srt","message":"SRT input disconnected, reconnecting","flow_id":"flow-1","details":{"peer":"10.0.0.1:9000","seq":7,"raised_at":"2026-04-02T12:00:00.000Z"}}}"#,
        );
        let no_flow = event(&Record {
            seq: 1,
            raised_at_ms: 0,
            event: Event::manager_connected(),
        });
        assert!(no_flow.to_value()["payload"].get("flow_id").is_none());
    }

    #[test]
    fn command_acks_and_the_config_response_match_the_spec() {
        round_trip(
            &ack_ok(TS, "c1", Some(json!({"flow_id": "f", "deleted": true}))),
            r#"{"type":"command_ack","timestamp":"2026-04-02T12:00:00Z","payload":{"command_id":"c1","success":true,"data":{"flow_id":"f","deleted":true}}}"#,
        );
        round_trip(
            &ack_ok(TS, "c1", None),
            r#"{"type":"command_ack","timestamp":"2026-04-02T12:00:00Z","payload":{"command_id":"c1","success":true}}"#,
        );
        round_trip(
            &ack_err(TS, "c2", "human text", "validation_error"),
            r#"{"type":"command_ack","timestamp":"2026-04-02T12:00:00Z","payload":{"command_id":"c2","success":false,"error":"human text","error_code":"validation_error"}}"#,
        );
        round_trip(
            &ToManager::ConfigResponse {
                timestamp: TS.into(),
                payload: json!({"version": 1, "server": {"listen_addr": "127.0.0.1", "listen_port": 8080},
                                "flows": [], "tunnels": []}),
            },
            r#"{"type":"config_response","timestamp":"2026-04-02T12:00:00Z","payload":{"version":1,"server":{"listen_addr":"127.0.0.1","listen_port":8080},"flows":[],"tunnels":[]}}"#,
        );
        round_trip(
            &ToManager::Pong {
                timestamp: TS.into(),
                payload: Empty {},
            },
            r#"{"type":"pong","timestamp":"2026-04-02T12:00:00Z","payload":{}}"#,
        );
    }

    #[test]
    fn long_messages_are_cut_on_a_char_boundary() {
        let s = "é".repeat(6000);
        let t = truncate(&s, MAX_EVENT_MESSAGE_BYTES);
        assert!(t.len() <= MAX_EVENT_MESSAGE_BYTES && t.len() >= MAX_EVENT_MESSAGE_BYTES - 1);
    }

    // -- Manager → edge, field by field against the spec's examples ---------------------

    fn wire(text: &str) -> FromManager {
        serde_json::from_str(text).unwrap()
    }

    #[test]
    fn auth_replies_read_every_field() {
        let ok = r#"{"type":"auth_ok","timestamp":"2026-04-02T12:00:00Z"}"#;
        assert!(matches!(wire(ok), FromManager::AuthOk { timestamp: Field::Given(t) } if t == TS));
        assert_eq!(parse(ok), Ok(Incoming::AuthOk));

        let ack = format!(
            r#"{{"type":"register_ack","timestamp":"2026-04-02T12:00:00Z","payload":{{"node_id":"{NODE_ID}","node_secret":"{SECRET}"}}}}"#
        );
        let FromManager::RegisterAck { timestamp, payload } = wire(&ack) else {
            panic!("register_ack")
        };
        assert_eq!(timestamp, Field::Given(TS.into()));
        assert_eq!(*payload.node_id, *NODE_ID);
        assert_eq!(payload.node_secret.expose(), SECRET);
        let parsed = parse(&ack).unwrap();
        assert_eq!(
            parsed,
            Incoming::RegisterAck {
                node_id: NODE_ID.into(),
                node_secret: SECRET.into()
            }
        );
        let text = format!("{:?} {parsed:?} {parsed:#?}", wire(&ack));
        assert!(!text.contains("s3cret"), "{text}");
        assert!(text.contains(NODE_ID), "{text}");

        let err = r#"{"type":"auth_error","message":"Invalid node secret"}"#;
        assert!(matches!(
            wire(err),
            FromManager::AuthError { timestamp: Field::Missing, message: Field::Given(m), payload: Field::Missing }
                if m == "Invalid node secret"
        ));
        assert_eq!(
            parse(err),
            Ok(Incoming::AuthError {
                message: "Invalid node secret".into()
            })
        );
    }

    #[test]
    fn ping_reads_every_field() {
        let ping = r#"{"type":"ping","timestamp":"2026-04-02T12:00:00Z"}"#;
        assert!(matches!(wire(ping), FromManager::Ping { timestamp: Field::Given(t) } if t == TS));
        assert_eq!(parse(ping), Ok(Incoming::Ping));
    }

    #[test]
    fn auth_error_reason_is_read_leniently() {
        let reason = |text: &str| match parse(text) {
            Ok(Incoming::AuthError { message }) => message,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            reason(r#"{"type":"auth_error","payload":{"message":"locked out"}}"#),
            "locked out"
        );
        assert_eq!(reason(r#"{"type":"auth_error"}"#), "no reason given");
        assert_eq!(
            reason(r#"{"type":"auth_error","message":5,"payload":{"message":""}}"#),
            "no reason given"
        );
        assert_eq!(
            reason(r#"{"type":"auth_error","message":"top","payload":{"message":"inner"}}"#),
            "top"
        );
    }

    fn command(action: Value) -> String {
        json!({"type": "command", "timestamp": TS,
               "payload": {"command_id": "c-1", "action": action}})
        .to_string()
    }

    fn action(action: Value) -> Action {
        match parse(&command(action)) {
            Ok(Incoming::Command { command_id, action }) => {
                assert_eq!(command_id, "c-1");
                action
            }
            other => panic!("{other:?}"),
        }
    }

    fn given<T>(v: T) -> Field<T> {
        Field::Given(v)
    }

    fn id(s: &str) -> Field<NonEmpty> {
        given(NonEmpty(s.into()))
    }

    fn blob(v: Value) -> Field<Secret<Value>> {
        given(Secret::from(v))
    }

    #[test]
    fn every_action_of_the_spec_reads_field_by_field() {
        let flow = json!({"id": "flow-1", "name": "Main", "enabled": true,
            "input": {"type": "srt", "mode": "listener", "local_addr": "0.0.0.0:9000", "latency_ms": 120},
            "outputs": [{"type": "udp", "id": "out-1", "name": "LAN", "dest_addr": "239.1.1.1:5000", "dscp": 46}]});
        let config = json!({"version": 1, "server": {"listen_addr": "127.0.0.1", "listen_port": 8080},
                            "flows": [flow.clone()], "tunnels": []});
        let output = flow["outputs"][0].clone();
        let tunnel = json!({"id": "t-1", "tunnel_encryption_key": "ab"});
        let cases = [
            (json!({"type": "get_config"}), Action::GetConfig),
            (
                json!({"type": "update_config", "config": config}),
                Action::UpdateConfig {
                    config: blob(config.clone()),
                },
            ),
            (
                json!({"type": "create_flow", "flow": flow}),
                Action::CreateFlow {
                    flow: blob(flow.clone()),
                },
            ),
            (
                json!({"type": "update_flow", "flow_id": "flow-1", "flow": flow}),
                Action::UpdateFlow {
                    flow_id: id("flow-1"),
                    flow: blob(flow.clone()),
                },
            ),
            (
                json!({"type": "delete_flow", "flow_id": "flow-1"}),
                Action::DeleteFlow {
                    flow_id: id("flow-1"),
                },
            ),
            (
                json!({"type": "start_flow", "flow_id": "flow-1"}),
                Action::StartFlow {
                    flow_id: id("flow-1"),
                },
            ),
            (
                json!({"type": "stop_flow", "flow_id": "flow-1"}),
                Action::StopFlow {
                    flow_id: id("flow-1"),
                },
            ),
            (
                json!({"type": "restart_flow", "flow_id": "flow-1"}),
                Action::RestartFlow {
                    flow_id: id("flow-1"),
                },
            ),
            (
                json!({"type": "add_output", "flow_id": "flow-1", "output": output}),
                Action::AddOutput {
                    flow_id: id("flow-1"),
                    output: blob(output.clone()),
                },
            ),
            (
                json!({"type": "remove_output", "flow_id": "flow-1", "output_id": "out-1"}),
                Action::RemoveOutput {
                    flow_id: id("flow-1"),
                    output_id: id("out-1"),
                },
            ),
            (
                json!({"type": "create_tunnel", "tunnel": tunnel}),
                Action::CreateTunnel {
                    tunnel: blob(tunnel.clone()),
                },
            ),
            (
                json!({"type": "delete_tunnel", "tunnel_id": "t-1"}),
                Action::DeleteTunnel {
                    tunnel_id: id("t-1"),
                },
            ),
            (
                json!({"type": "reboot_the_moon", "when": "now"}),
                Action::Unknown {
                    kind: "reboot_the_moon".into(),
                },
            ),
        ];
        for (json, expected) in cases {
            assert_eq!(action(json.clone()), expected, "{json}");
        }
    }

    #[test]
    fn a_missing_or_unusable_action_field_is_kept_apart_for_its_answer() {
        assert_eq!(
            action(json!({"type": "update_flow", "flow_id": "", "extra": 1})),
            Action::UpdateFlow {
                flow_id: Field::Invalid,
                flow: Field::Missing
            }
        );
        assert_eq!(
            action(json!({"type": "add_output", "flow_id": 5, "output": null})),
            Action::AddOutput {
                flow_id: Field::Invalid,
                output: blob(Value::Null)
            }
        );
        assert_eq!(
            action(json!({"type": "delete_tunnel", "tunnel_id": null})),
            Action::DeleteTunnel {
                tunnel_id: Field::Invalid
            }
        );
        assert_eq!(
            action(json!({"type": "get_config", "extra": {"a": 1}})),
            Action::GetConfig
        );
    }

    #[test]
    fn debug_of_messages_with_secrets_shows_none() {
        let secret_flow = json!({"id": "f", "input": {"type": "srt", "passphrase": "s3cret-pass"},
                                 "outputs": [{"type": "rtmp", "stream_key": "s3cret-key"}]});
        let texts = [
            command(json!({"type": "update_config", "config": {"flows": [secret_flow]}})),
            command(json!({"type": "create_flow", "flow": secret_flow})),
            command(json!({"type": "update_flow", "flow_id": "f", "flow": secret_flow})),
            command(
                json!({"type": "add_output", "flow_id": "f", "output": secret_flow["outputs"][0]}),
            ),
            command(
                json!({"type": "create_tunnel", "tunnel": {"id": "t", "tunnel_encryption_key": "s3cret-k",
                                                             "tunnel_bind_secret": "s3cret-b"}}),
            ),
            format!(
                r#"{{"type":"register_ack","payload":{{"node_id":"n","node_secret":"{SECRET}"}}}}"#
            ),
        ];
        for text in &texts {
            let debug = format!("{:?} {:#?} {:?}", wire(text), wire(text), parse(text));
            assert!(!debug.contains("s3cret"), "{debug}");
        }
        // The type and the ids still show: that is what a log line needs.
        let debug = format!("{:?}", parse(&texts[2]));
        assert!(
            debug.contains("UpdateFlow") && debug.contains("\"f\""),
            "{debug}"
        );
    }

    #[test]
    fn garbage_is_an_error_never_a_panic() {
        assert!(matches!(parse("{"), Err(ParseError::NotJson(_))));
        assert_eq!(parse("[1]"), Err(ParseError::NotAnObject));
        assert_eq!(parse(r#"{"type":1}"#), Err(ParseError::NoType));
        assert_eq!(parse(r#"{"no_type":1}"#), Err(ParseError::NoType));
        assert_eq!(
            parse(r#"{"type":"zzz","payload":5}"#),
            Ok(Incoming::Other("zzz".into()))
        );
        for bad in [
            r#"{"type":"register_ack","payload":{"node_id":"a"}}"#,
            r#"{"type":"register_ack","payload":{"node_id":"","node_secret":"b"}}"#,
            r#"{"type":"register_ack","payload":5}"#,
            r#"{"type":"register_ack"}"#,
            r#"{"type":"command","payload":{"action":{"type":"get_config"}}}"#,
            r#"{"type":"command","payload":{"command_id":"","action":{"type":"get_config"}}}"#,
            r#"{"type":"command","payload":{"command_id":7}}"#,
            r#"{"type":"command"}"#,
        ] {
            let e = parse(bad).unwrap_err();
            assert!(matches!(e, ParseError::Malformed { .. }), "{bad}: {e:?}");
        }
        assert_eq!(
            parse(r#"{"type":"register_ack","payload":{"node_id":"a"}}"#)
                .unwrap_err()
                .to_string(),
            "`register_ack` message: missing field `node_secret`"
        );
        for bad_action in [
            json!(5),
            json!("nope"),
            json!({"type": 1}),
            json!({}),
            json!(null),
        ] {
            assert_eq!(
                parse(&command(bad_action.clone())),
                Ok(Incoming::BadCommand {
                    command_id: "c-1".into(),
                    error: BAD_ACTION.into()
                }),
                "{bad_action}"
            );
        }
        assert_eq!(
            parse(r#"{"type":"command","payload":{"command_id":"c"}}"#),
            Ok(Incoming::BadCommand {
                command_id: "c".into(),
                error: BAD_ACTION.into()
            })
        );
        // Lenient where the manager is: no or an odd timestamp, extra fields.
        assert_eq!(parse(r#"{"type":"ping"}"#), Ok(Incoming::Ping));
        assert_eq!(
            parse(r#"{"type":"ping","timestamp":5,"payload":[1],"x":{}}"#),
            Ok(Incoming::Ping)
        );
        assert_eq!(
            parse(r#"{"type":"auth_ok","payload":"x"}"#),
            Ok(Incoming::AuthOk)
        );
    }

    /// Every prefix of every example, and every example with one byte replaced by each of a
    /// few troublesome characters: an error or a message, never a panic.
    #[test]
    fn mangled_frames_never_panic() {
        let examples = [
            r#"{"type":"auth_ok","timestamp":"2026-04-02T12:00:00Z"}"#.to_string(),
            format!(
                r#"{{"type":"register_ack","timestamp":"t","payload":{{"node_id":"n","node_secret":"{SECRET}"}}}}"#
            ),
            r#"{"type":"auth_error","message":"Invalid node secret","payload":{"message":"m"}}"#
                .to_string(),
            command(
                json!({"type": "update_flow", "flow_id": "f", "flow": {"id": "f", "outputs": [1]}}),
            ),
            command(json!({"type": "remove_output", "flow_id": "f", "output_id": "o"})),
            r#"{"type":"ping","timestamp":"t"}"#.to_string(),
        ];
        for ex in &examples {
            for end in 0..=ex.len() {
                let _ = parse(&ex[..end]);
            }
            for at in 0..ex.len() {
                for c in ["\"", "{", "}", "1", "[", "\\", "null", ""] {
                    let mangled = format!("{}{c}{}", &ex[..at], &ex[at + 1..]);
                    let _ = parse(&mangled);
                }
            }
        }
    }
}
