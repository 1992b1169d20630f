//! Routes of the local API. Errors are JSON `{"error": "...", "error_code": "..."}` with
//! the codes of the manager protocol, so scripts can treat both alike.
//!
//! Every request passes `Access` first (Host, Content-Type, then the route's token): a
//! refused request reaches no route, so it can neither change nor read anything.

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode, header};
use serde::Serialize;
use serde_json::Value;

use super::access::{Access, HealthView};
use super::guard::Refusal;
use crate::config::{ConfigError, FlowConfig, OutputConfig};
use crate::flow::{ErrorCode, FlowError};
use crate::node::{BodySlot, FlowAction, Node};

/// Largest request body accepted: a flow config is a few KiB.
const MAX_BODY: usize = 1 << 20;

pub type Body = Full<Bytes>;

/// What `/healthz` tells a caller without a token: enough for a load balancer or a
/// monitor, nothing about flows, sessions or the software beyond its version.
#[derive(Serialize)]
struct HealthSummary {
    status: &'static str,
    version: &'static str,
}

pub async fn handle(node: &Node, access: &Access, req: Request<Incoming>) -> Response<Body> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    if let Err(r) = access.check_request(&req) {
        return refused(r, &method, &path);
    }
    if let ["api", "v1", ..] = segments.as_slice()
        && let Err(r) = access.check_api(&req)
    {
        return refused(r, &method, &path);
    }
    match (&method, segments.as_slice()) {
        #[cfg(feature = "rtsp")]
        (&Method::GET, ["ws", "stream", id]) => match access.check_viewer(&req) {
            Ok(()) => crate::bridge::ws::handle(node.bridge.clone(), id, req),
            Err(r) => refused(r, &method, &path),
        },
        (&Method::GET, ["healthz"]) => match access.health_view(&req) {
            Ok(HealthView::Full) => json(StatusCode::OK, &node.health().await),
            Ok(HealthView::Summary) => json(
                StatusCode::OK,
                &HealthSummary {
                    status: node.status(),
                    version: env!("CARGO_PKG_VERSION"),
                },
            ),
            Err(r) => refused(r, &method, &path),
        },
        (&Method::GET, ["api", "v1", "flows"]) => json(StatusCode::OK, &node.flows().await),
        (&Method::POST, ["api", "v1", "flows"]) => {
            match config_body(node, req, FlowConfig::from_value_at, BodySlot::NewFlow).await {
                Ok(flow) => respond(node.create_flow(flow).await, StatusCode::CREATED),
                Err(r) => r,
            }
        }
        (&Method::GET, ["api", "v1", "flows", id]) => respond(node.flow(id).await, StatusCode::OK),
        (&Method::DELETE, ["api", "v1", "flows", id]) => match node.delete_flow(id).await {
            Ok(()) => json(StatusCode::OK, &serde_json::json!({ "deleted": id })),
            Err(e) => flow_error(&e),
        },
        (
            &Method::POST,
            [
                "api",
                "v1",
                "flows",
                id,
                action @ ("start" | "stop" | "restart"),
            ],
        ) => {
            let action = match *action {
                "start" => FlowAction::Start,
                "stop" => FlowAction::Stop,
                _ => FlowAction::Restart,
            };
            respond(node.flow_action(id, action).await, StatusCode::OK)
        }
        (&Method::POST, ["api", "v1", "flows", id, "outputs"]) => {
            let id = id.to_string();
            let slot = BodySlot::NewOutput(&id);
            match config_body(node, req, OutputConfig::from_value_at, slot).await {
                Ok(output) => respond(node.add_output(&id, output).await, StatusCode::CREATED),
                Err(r) => r,
            }
        }
        (&Method::DELETE, ["api", "v1", "flows", id, "outputs", output_id]) => {
            respond(node.remove_output(id, output_id).await, StatusCode::OK)
        }
        (&Method::GET, ["api", "v1", "stats"]) => json(StatusCode::OK, &node.stats().await),
        // An HLS output's live playlist and its segments, from memory: the API's token.
        (&Method::GET, ["hls", flow_id, output_id, name]) => match access.check_api(&req) {
            Ok(()) => hls(node, flow_id, output_id, name),
            Err(r) => refused(r, &method, &path),
        },
        (_, ["healthz"] | ["api", "v1", ..] | ["ws", "stream", _] | ["hls", _, _, _])
            if known_path(&segments) =>
        {
            error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed",
                ErrorCode::MethodNotAllowed.as_str(),
            )
        }
        _ => error(
            StatusCode::NOT_FOUND,
            &format!("no route for {method} {path}"),
            ErrorCode::NotFound.as_str(),
        ),
    }
}

fn known_path(segments: &[&str]) -> bool {
    matches!(
        segments,
        ["healthz"]
            | ["ws", "stream", _]
            | ["api", "v1", "flows" | "stats"]
            | ["api", "v1", "flows", _]
            | [
                "api",
                "v1",
                "flows",
                _,
                "start" | "stop" | "restart" | "outputs"
            ]
            | ["api", "v1", "flows", _, "outputs", _]
            | ["hls", _, _, _]
    )
}

/// `GET /hls/{flow_id}/{output_id}/{index.m3u8 | segment}`.
fn hls(node: &Node, flow_id: &str, output_id: &str, name: &str) -> Response<Body> {
    use crate::hls::Served;
    let (body, content_type, cache) = match node.hls.get(flow_id, output_id, name) {
        // The playlist changes with every segment; a segment never changes.
        Some(Served::Playlist(text)) => (
            Bytes::from(text),
            crate::hls::upload::PLAYLIST_CONTENT_TYPE,
            "no-cache",
        ),
        Some(Served::Segment(data)) => {
            (data, crate::hls::upload::SEGMENT_CONTENT_TYPE, "max-age=60")
        }
        None => {
            return error(
                StatusCode::NOT_FOUND,
                &format!("no HLS {name} for output '{output_id}' of flow '{flow_id}'"),
                ErrorCode::NotFound.as_str(),
            );
        }
    };
    let mut resp = Response::new(Full::new(body));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    h.insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static(cache),
    );
    resp
}

/// A flow or output body read by the config reader, or the error response to send instead.
/// Not JSON, or not the shape of one (a wrong JSON type, a missing field): "invalid JSON
/// body". Only values that did not parse (an address, a mode): the body is well-formed, and
/// the answer is validation's, at the path it names them by (`Node::unparsed_body`), as
/// when validation parsed them.
async fn config_body<T>(
    node: &Node,
    req: Request<Incoming>,
    read: fn(Value, &str) -> Result<T, Vec<ConfigError>>,
    slot: BodySlot<'_>,
) -> Result<T, Response<Body>> {
    let bytes = body(req).await?;
    let invalid = |message: String| {
        error(
            StatusCode::BAD_REQUEST,
            &format!("invalid JSON body: {message}"),
            ErrorCode::ValidationError.as_str(),
        )
    };
    let value: Value = serde_json::from_slice(&bytes).map_err(|e| invalid(e.to_string()))?;
    let errors = match read(value, "") {
        Ok(t) => return Ok(t),
        Err(errors) => errors,
    };
    if let Some(e) = node.unparsed_body(&errors, "", slot).await {
        return Err(flow_error(&e));
    }
    // The shape problems, as serde reported them when the body was deserialized in one go;
    // a value that did not parse beside them waits until the shape is right.
    let shape: Vec<String> = errors
        .iter()
        .filter(|e| !e.is_unparsed())
        .map(ToString::to_string)
        .collect();
    Err(invalid(shape.join("; ")))
}

/// Read a request body, or the error response to send instead.
async fn body(req: Request<Incoming>) -> Result<Bytes, Response<Body>> {
    let bytes = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return Err(if e.is::<http_body_util::LengthLimitError>() {
                error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "request body over 1 MiB",
                    ErrorCode::ValidationError.as_str(),
                )
            } else {
                error(
                    StatusCode::BAD_REQUEST,
                    &format!("cannot read body: {e}"),
                    ErrorCode::ValidationError.as_str(),
                )
            });
        }
    };
    Ok(bytes)
}

/// A request `Access` turned away. Logged at debug only: a scanner knocking must not fill
/// the log (and the request's token, right or wrong, is never logged).
fn refused(r: Refusal, method: &Method, path: &str) -> Response<Body> {
    tracing::debug!(%method, path, code = r.code(), "request refused");
    let mut resp = error(r.status(), r.message(), r.code());
    if r == Refusal::Unauthorized {
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
    }
    resp
}

fn respond<T: Serialize>(result: Result<T, FlowError>, ok: StatusCode) -> Response<Body> {
    match result {
        Ok(v) => json(ok, &v),
        Err(e) => flow_error(&e),
    }
}

fn flow_error(e: &FlowError) -> Response<Body> {
    let code = e.error_code();
    error(status(code), &e.to_string(), code.as_str())
}

/// The HTTP status of a node error.
fn status(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::NotFound => StatusCode::NOT_FOUND,
        ErrorCode::ValidationError | ErrorCode::InvalidValue | ErrorCode::UnknownAction => {
            StatusCode::BAD_REQUEST
        }
        // A budget depends on what the node already holds: the same request succeeds once
        // flows are deleted or the limit is raised, so 409 like a port conflict.
        ErrorCode::PortConflict | ErrorCode::LimitExceeded => StatusCode::CONFLICT,
        ErrorCode::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        ErrorCode::ConfigPersistFailed | ErrorCode::BindFailed => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn error(status: StatusCode, message: &str, code: &str) -> Response<Body> {
    json(
        status,
        &serde_json::json!({ "error": message, "error_code": code }),
    )
}

fn json<T: Serialize>(status: StatusCode, value: &T) -> Response<Body> {
    let body =
        serde_json::to_vec(value).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}").into_bytes());
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    resp
}
