//! Manager commands, executed through `Node` (the one door for changes: validation first,
//! then the change, then an atomic write of the config file).

use serde_json::{Value, json};

use super::protocol::{self, Action, Field, ToManager};
use crate::config::{ConfigError, FlowConfig, OutputConfig};
use crate::events::Event;
use crate::flow::FlowError;
use crate::node::{BodySlot, FlowAction, Node, StartFailure};

/// What a command produced, before it is stamped and sent.
#[derive(Debug)]
pub enum Reply {
    Ok(Option<Value>),
    Err {
        error: String,
        code: &'static str,
    },
    /// `get_config`: the redacted config, sent twice (see [`Reply::into_messages`]).
    Config(Value),
}

impl Reply {
    /// The messages to send, in order. `get_config` gets a `command_ack` carrying the
    /// config and then a `config_response`: a v0.4 manager waits for one or the other
    /// depending on where the request came from, and clears its cached config on any
    /// `command_ack`, so the ack must come first (manager-protocol.md, `config_response`).
    pub fn into_messages(self, timestamp: &str, command_id: &str) -> Vec<ToManager> {
        match self {
            Reply::Ok(data) => vec![protocol::ack_ok(timestamp, command_id, data)],
            Reply::Err { error, code } => {
                vec![protocol::ack_err(timestamp, command_id, &error, code)]
            }
            Reply::Config(cfg) => vec![
                protocol::ack_ok(timestamp, command_id, Some(cfg.clone())),
                ToManager::ConfigResponse {
                    timestamp: timestamp.into(),
                    payload: cfg,
                },
            ],
        }
    }
}

fn err(e: &FlowError) -> Reply {
    Reply::Err {
        error: e.to_string(),
        code: e.code(),
    }
}

fn invalid(path: &str, message: &str) -> Reply {
    err(&FlowError::Invalid(vec![ConfigError::new(path, message)]))
}

/// A flow or output the config reader read from a command, or the answer. Only values that
/// did not parse: the validation answer at the config's paths (`flows[N]…`), as when
/// validation parsed them (`Node::unparsed_body`); else the body's problems at its own
/// paths (`flow.input…`).
async fn refused_body<T>(
    node: &Node,
    read: Result<T, Vec<ConfigError>>,
    root: &str,
    slot: BodySlot<'_>,
) -> Result<T, Reply> {
    let errors = match read {
        Ok(t) => return Ok(t),
        Err(errors) => errors,
    };
    if let Some(e) = node.unparsed_body(&errors, root, slot).await {
        return Err(err(&e));
    }
    // A value that did not parse beside a shape problem waits until the shape is right.
    let shape = errors.into_iter().filter(|e| !e.is_unparsed()).collect();
    Err(err(&FlowError::Invalid(shape)))
}

/// A required field of the action, or the `validation_error` that names it.
fn required<T>(field: Field<T>, name: &str) -> Result<T, Reply> {
    match field {
        Field::Given(v) => Ok(v),
        Field::Missing => Err(invalid(name, "missing required field")),
        // Only the ids can be unusable: any JSON value is read as a config object, and
        // its reader says what is wrong with it.
        Field::Invalid => Err(invalid(name, "expected a non-empty string")),
    }
}

/// `required!(flow_id)`: the field's value, or return the answer naming `flow_id`.
macro_rules! required {
    ($field:ident) => {
        required($field, stringify!($field))?
    };
}

/// Run one action. Config changes that succeed raise "Configuration updated"; a failed
/// write raises the persist warning (in `Node`) and answers `config_persist_failed`.
pub async fn execute(node: &Node, action: Action) -> Reply {
    match run(node, action).await {
        Ok(r) | Err(r) => r,
    }
}

async fn run(node: &Node, action: Action) -> Result<Reply, Reply> {
    let changed = |r: Result<Value, FlowError>| match r {
        Ok(data) => {
            node.events.raise(Event::config_updated());
            Ok(Reply::Ok(Some(data)))
        }
        Err(e) => Err(err(&e)),
    };
    let view = |v: crate::flow::FlowView| {
        let mut v = serde_json::to_value(v).unwrap_or(Value::Null);
        crate::config::redact_value(&mut v);
        v
    };
    let lifecycle = async |flow_id: protocol::NonEmpty, a: FlowAction| -> Result<Reply, Reply> {
        // Lifecycle only: the stored config does not change.
        let v = node.flow_action(&flow_id, a).await.map_err(|e| err(&e))?;
        Ok(Reply::Ok(Some(view(v))))
    };
    match action {
        Action::GetConfig => Ok(Reply::Config(node.config().await.redacted())),
        Action::UpdateConfig { config } => {
            let cfg = required!(config).into_inner();
            let diff = node.update_config(cfg).await.map_err(|e| err(&e))?;
            if diff.changed {
                node.events.raise(Event::config_updated());
            }
            let data = json!({
                "changed": diff.changed,
                "created": diff.created,
                "updated": diff.updated,
                "deleted": diff.deleted,
                "unchanged": diff.unchanged,
                "restart_required": diff.restart_required,
            });
            match diff.failed.first() {
                None => Ok(Reply::Ok(Some(data))),
                Some((id, e)) => Err(Reply::Err {
                    error: format!(
                        "configuration applied and saved, but flow '{id}' failed to start: {e}"
                    ),
                    code: e.code(),
                }),
            }
        }
        Action::CreateFlow { flow } => {
            let flow = FlowConfig::from_value_at(required!(flow).into_inner(), "flow");
            let flow = refused_body(node, flow, "flow", BodySlot::NewFlow).await?;
            // All or nothing: a flow that fails to start is not kept, so the failed ack is
            // the whole truth and the manager's retry is a fresh create.
            changed(
                node.create_flow_with(flow, StartFailure::RollBack)
                    .await
                    .map(view),
            )
        }
        Action::UpdateFlow { flow_id, flow } => {
            let id = required!(flow_id);
            let flow = FlowConfig::from_value_at(required!(flow).into_inner(), "flow");
            let flow = refused_body(node, flow, "flow", BodySlot::Flow(&id)).await?;
            // All or nothing: on a start failure the previous config is back (and running
            // if it ran).
            changed(
                node.update_flow_with(&id, flow, StartFailure::RollBack)
                    .await
                    .map(view),
            )
        }
        Action::DeleteFlow { flow_id } => {
            let id = required!(flow_id);
            changed(
                node.delete_flow(&id)
                    .await
                    .map(|()| json!({ "flow_id": &*id, "deleted": true })),
            )
        }
        Action::StartFlow { flow_id } => lifecycle(required!(flow_id), FlowAction::Start).await,
        Action::StopFlow { flow_id } => lifecycle(required!(flow_id), FlowAction::Stop).await,
        Action::RestartFlow { flow_id } => lifecycle(required!(flow_id), FlowAction::Restart).await,
        Action::AddOutput { flow_id, output } => {
            let id = required!(flow_id);
            let output = OutputConfig::from_value_at(required!(output).into_inner(), "output");
            let output = refused_body(node, output, "output", BodySlot::NewOutput(&id)).await?;
            changed(node.add_output(&id, output).await.map(view))
        }
        Action::RemoveOutput { flow_id, output_id } => {
            let id = required!(flow_id);
            let output_id = required!(output_id);
            changed(node.remove_output(&id, &output_id).await.map(view))
        }
        Action::CreateTunnel { tunnel } => {
            let tunnel = required!(tunnel).into_inner();
            let id = tunnel.get("id").cloned().unwrap_or(Value::Null);
            match node.create_tunnel(tunnel).await.map_err(|e| err(&e))? {
                true => {
                    node.events.raise(Event::config_updated());
                    Ok(Reply::Ok(Some(tunnel_data(node, id, false))))
                }
                false => Ok(Reply::Ok(Some(tunnel_data(node, id, true)))),
            }
        }
        Action::DeleteTunnel { tunnel_id } => {
            let id = required!(tunnel_id);
            changed(
                node.delete_tunnel(&id)
                    .await
                    .map(|()| json!({ "tunnel_id": &*id, "deleted": true })),
            )
        }
        Action::Unknown { kind } => Err(Reply::Err {
            error: format!("unknown action {kind:?}"),
            code: crate::node::ErrorCode::UnknownAction.as_str(),
        }),
    }
}

/// The truth about a stored tunnel: `running` when its task runs (it is enabled, this build
/// has the tunnel engine, and it has not failed for good, say on a `local_addr` in use).
fn tunnel_data(node: &Node, id: Value, unchanged: bool) -> Value {
    let running = id.as_str().is_some_and(|id| {
        node.tunnel_status()
            .iter()
            .any(|t| t.id == id && t.state != crate::tunnel::status::TunnelState::Stopped)
    });
    let mut data = json!({
        "tunnel_id": id,
        "stored": true,
        "unchanged": unchanged,
        "running": running,
    });
    if !cfg!(feature = "tunnels") {
        data["note"] = "tunnel config stored; this build has no tunnel engine".into();
    }
    data
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::InputError;

    /// `invalid_value` is for a value that passed validation but the system refused. No
    /// UDP/RTP/SRT value this build validates is refused that way at start (validation
    /// parses every address first), so it cannot be provoked end to end; the mapping from
    /// the start error to the ack is checked here.
    #[test]
    fn a_refused_value_is_acked_as_invalid_value() {
        let e = FlowError::InputStart(InputError::BadConfig {
            field: "bind_addr",
            value: "x".into(),
        });
        let [msg] = &err(&e).into_messages("2026-04-02T12:00:00.000Z", "c1")[..] else {
            panic!("one message")
        };
        let msg = msg.to_value();
        assert_eq!(msg["payload"]["success"], false);
        assert_eq!(msg["payload"]["error_code"], "invalid_value");
        assert_eq!(
            msg["payload"]["error"],
            "input: bind_addr: \"x\" is not valid"
        );
    }

    #[test]
    fn get_config_is_acked_first_then_answered_with_config_response() {
        let cfg = json!({"version": 1, "flows": []});
        let msgs: Vec<Value> = Reply::Config(cfg.clone())
            .into_messages("2026-04-02T12:00:00.000Z", "c7")
            .iter()
            .map(ToManager::to_value)
            .collect();
        let kinds: Vec<&str> = msgs.iter().map(|m| m["type"].as_str().unwrap()).collect();
        assert_eq!(kinds, ["command_ack", "config_response"]);
        assert_eq!(msgs[0]["payload"]["command_id"], "c7");
        assert_eq!(msgs[0]["payload"]["success"], true);
        assert_eq!(msgs[0]["payload"]["data"], cfg);
        assert_eq!(msgs[1]["payload"], cfg);
    }
}
