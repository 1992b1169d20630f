//! `GET /ws/stream/{streamId}`: the WebSocket upgrade (RFC 6455 handshake on hyper's
//! upgrade) and the client loop that sends the session's TS as binary frames.
//!
//! Frames are whole TS packets: everything the ring holds for the client when it wakes, up
//! to `MAX_FRAME` bytes, in one binary message. Frame parsing (the client's pings and close)
//! is tungstenite's, with small limits: a viewer has nothing to send but control frames.

use std::rc::Rc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode, header};
use hyper_util::rt::TokioIo;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};

use super::{Attached, Bridge, DetachReason, Refused};
use crate::ts::ring::Read;

/// Largest binary frame sent: about 50 chunks.
pub const MAX_FRAME: usize = 64 * 1024;
/// A frame that cannot be written for this long means a dead or stuck client.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(10);

type Body = Full<Bytes>;

/// The server side's limits: a viewer sends only control frames, so what it may send is
/// small; what we buffer for it is about two frames.
pub fn ws_config() -> WebSocketConfig {
    let mut config = WebSocketConfig::default();
    config.max_message_size = Some(64 << 10);
    config.max_frame_size = Some(16 << 10);
    // tungstenite zero-fills this much of its read buffer before every read attempt, and the
    // client loop polls for the viewer's frames each time it wakes (once per video frame):
    // the default 128 KiB was the loop's biggest cost.
    config.read_buffer_size = 4 << 10;
    config.write_buffer_size = 0;
    config.max_write_buffer_size = 2 * MAX_FRAME + (64 << 10);
    config
}

fn plain(status: StatusCode, text: &str) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(text.to_owned())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn header_has(req: &Request<Incoming>, name: header::HeaderName, token: &str) -> bool {
    req.headers().get_all(name).iter().any(|v| {
        v.to_str()
            .map(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
            .unwrap_or(false)
    })
}

/// Answers the upgrade request and, on success, spawns the client loop on the upgraded
/// connection.
pub fn handle(bridge: Rc<Bridge>, stream_id: &str, req: Request<Incoming>) -> Response<Body> {
    if !bridge.has_stream(stream_id) {
        return plain(
            StatusCode::NOT_FOUND,
            &format!("no bridge stream {stream_id:?}\n"),
        );
    }
    let key = req.headers().get(header::SEC_WEBSOCKET_KEY).cloned();
    let ok = header_has(&req, header::CONNECTION, "upgrade")
        && header_has(&req, header::UPGRADE, "websocket")
        && req
            .headers()
            .get(header::SEC_WEBSOCKET_VERSION)
            .is_some_and(|v| v == "13");
    let Some(key) = key.filter(|_| ok) else {
        let mut r = plain(
            StatusCode::UPGRADE_REQUIRED,
            "this is a WebSocket endpoint (ws://HOST:PORT/ws/stream/{streamId})\n",
        );
        r.headers_mut().insert(
            header::SEC_WEBSOCKET_VERSION,
            header::HeaderValue::from_static("13"),
        );
        return r;
    };
    let accept = derive_accept_key(key.as_bytes());
    let stream_id = stream_id.to_owned();
    tokio::task::spawn_local(async move {
        match hyper::upgrade::on(req).await {
            Ok(upgraded) => {
                let ws = WebSocketStream::from_raw_socket(
                    TokioIo::new(upgraded),
                    Role::Server,
                    Some(ws_config()),
                )
                .await;
                client(bridge, &stream_id, ws).await;
            }
            Err(e) => tracing::debug!(streamId = %stream_id, "websocket upgrade failed: {e}"),
        }
    });
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert(
        header::UPGRADE,
        header::HeaderValue::from_static("websocket"),
    );
    h.insert(
        header::CONNECTION,
        header::HeaderValue::from_static("Upgrade"),
    );
    if let Ok(v) = header::HeaderValue::from_str(&accept) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    r
}

async fn close<S>(ws: &mut S, code: CloseCode, reason: &str)
where
    S: futures_util::Sink<Message> + Unpin,
{
    // A close frame's reason has room for 123 bytes (RFC 6455 5.5: 125 with the code).
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let frame = CloseFrame {
        code,
        reason: reason[..end].to_owned().into(),
    };
    let _ =
        tokio::time::timeout(Duration::from_secs(1), ws.send(Message::Close(Some(frame)))).await;
}

/// Why a client loop ended.
enum End {
    Closed,
    Failed,
    Kicked,
    Slow,
}

/// One viewer: attach, send the ring's TS until the client leaves, detach.
pub async fn client<S>(bridge: Rc<Bridge>, stream_id: &str, mut ws: WebSocketStream<S>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let Attached {
        client,
        session_id,
        ring,
        kick,
    } = match bridge.attach(stream_id) {
        Ok(a) => a,
        Err(Refused::Full) => {
            close(
                &mut ws,
                CloseCode::Again,
                "stream has its maximum of clients",
            )
            .await;
            return;
        }
        Err(Refused::UnknownStream) => {
            close(&mut ws, CloseCode::Policy, "unknown stream").await;
            return;
        }
    };
    let max_lags = bridge.settings.max_client_lags;
    let mut reader = ring.ring.borrow().reader();
    let mut frame = BytesMut::with_capacity(MAX_FRAME);
    let mut lags = 0u32;
    // Gathers what the ring holds for this client into `frame` (up to one frame). While a
    // send is on its way (`probe_only`) it takes nothing and only checks whether the client
    // has been lapped: the client's queue is the ring, nothing more. Returns false when the
    // client has lagged `max_lags` times.
    let mut gather =
        |frame: &mut BytesMut, reader: &mut crate::ts::ring::Reader, probe_only: bool| -> bool {
            let r = ring.ring.borrow();
            loop {
                let full = probe_only || frame.len() + crate::ts::ring::CHUNK_BYTES > MAX_FRAME;
                let mut probe = reader.clone();
                match r.read(&mut probe) {
                    Read::Empty => break,
                    Read::Chunk(_) if full => break,
                    Read::Chunk(c) => {
                        frame.extend_from_slice(c.data);
                        *reader = probe;
                    }
                    Read::Lagged(packets) => {
                        // Exactly the chunks between the client's position and the head.
                        let chunks = probe.seq() - reader.seq();
                        *reader = probe;
                        lags += 1;
                        let c = &bridge.counters;
                        c.lagged_chunks.set(c.lagged_chunks.get() + chunks);
                        c.lag_events.set(c.lag_events.get() + 1);
                        tracing::warn!(
                            streamId = %stream_id,
                            sessionId = session_id,
                            pid = %super::LogPid(bridge.session_pid(stream_id)),
                            client,
                            lost_chunks = chunks,
                            lost_packets = packets,
                            lags,
                            reason = "slow client",
                            "client fell a whole queue behind"
                        );
                        // Nothing gathered is ever dropped here: the frame is empty at every
                        // gather's start (split off before each send), and a lap can only be
                        // found by a gather's first read (reads move the cursor towards the head).
                        debug_assert!(frame.is_empty(), "a lap found after gathering");
                    }
                }
            }
            lags < max_lags
        };
    let end = 'outer: loop {
        let notified = ring.notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if !gather(&mut frame, &mut reader, false) {
            break 'outer End::Slow;
        }
        if !frame.is_empty() {
            let n = frame.len();
            let msg = Message::Binary(frame.split().freeze());
            if frame.capacity() < MAX_FRAME {
                frame.reserve(MAX_FRAME);
            }
            let send = tokio::time::timeout(SEND_TIMEOUT, ws.send(msg));
            tokio::pin!(send);
            loop {
                let more = ring.notify.notified();
                tokio::pin!(more);
                more.as_mut().enable();
                tokio::select! {
                    r = &mut send => match r {
                        Ok(Ok(())) => {
                            let c = &bridge.counters;
                            c.frames_sent.set(c.frames_sent.get() + 1);
                            c.bytes_sent.set(c.bytes_sent.get() + n as u64);
                            break;
                        }
                        _ => break 'outer End::Failed,
                    },
                    // While the frame is on its way, keep the queue moving (and notice a
                    // client that cannot keep up at all).
                    _ = &mut more => {
                        if !gather(&mut frame, &mut reader, true) {
                            break 'outer End::Slow;
                        }
                    }
                    _ = kick.notified() => break 'outer End::Kicked,
                }
            }
            continue;
        }
        tokio::select! {
            _ = &mut notified => {}
            _ = kick.notified() => break End::Kicked,
            m = ws.next() => match m {
                None | Some(Err(_)) => break End::Failed,
                Some(Ok(Message::Close(_))) => break End::Closed,
                // Pings are answered by tungstenite on the next write or flush.
                Some(Ok(_)) => {
                    if ws.flush().await.is_err() {
                        break End::Failed;
                    }
                }
            },
        }
    };
    if matches!(end, End::Slow) {
        let c = &bridge.counters;
        c.slow_disconnects.set(c.slow_disconnects.get() + 1);
    }
    match end {
        End::Closed => bridge.detach(client, DetachReason::Close),
        End::Failed => bridge.detach(client, DetachReason::Error),
        End::Kicked => {
            match kick.error() {
                Some(error) => close(&mut ws, CloseCode::Error, &error).await,
                None => close(&mut ws, CloseCode::Away, "stream stopped").await,
            }
            bridge.detach(client, DetachReason::Close);
        }
        End::Slow => {
            close(&mut ws, CloseCode::Policy, "client too slow").await;
            bridge.detach(client, DetachReason::Error);
        }
    }
}
