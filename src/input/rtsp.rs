//! The `rtsp` flow input: pulls a camera (see `crate::rtsp`) and writes its TS into the
//! flow's ring through the same chunker and analyzer as the UDP inputs.
//!
//! It reconnects forever, `reconnect_delay_secs` apart. `timeout_secs` bounds a connection
//! attempt and a stall (a playing stream that delivers nothing). The retries and their
//! latching are a `net::reconnect` machine's, with a fixed back-off. Events follow the
//! seed's RTSP rows: "RTSP connected to {url}" on each successful PLAY, and "RTSP input
//! disconnected: {error}. Reconnecting in {n}s" once per connection cycle (the first failure
//! while unreachable, or the drop of a playing stream).

use crate::net::outbound::Policy;
use std::time::{Duration, Instant};

use super::{Feed, InputError};
use crate::config::RtspInputConfig;
use crate::events::{Event, Events};
use crate::net::reconnect::{Backoff, Next, Reconnect};
use crate::rtsp::{self, Source};

pub struct RtspInput {
    source: Source,
    timeout: Duration,
    reconnect_delay: Duration,
}

impl RtspInput {
    /// `outbound`: `security.outbound_allow`, checked on the camera's resolved address at
    /// each connect.
    pub fn new(cfg: &RtspInputConfig, outbound: Policy) -> Result<Self, InputError> {
        let source = Source::new(
            &cfg.rtsp_url,
            cfg.username.as_deref(),
            cfg.password.as_deref(),
            cfg.transport,
        )
        .map_err(|_| InputError::BadConfig {
            field: "rtsp_url",
            value: crate::config::strip_url_password(&cfg.rtsp_url),
        })?
        .with_outbound(outbound);
        Ok(RtspInput {
            source,
            timeout: Duration::from_secs(cfg.timeout_secs.max(1)),
            reconnect_delay: Duration::from_secs(cfg.reconnect_delay_secs.max(1)),
        })
    }

    /// Pull, reconnecting, until the task is dropped.
    pub async fn run(self, feed: Feed, events: Events, flow_id: String) -> InputError {
        // A fixed delay (`reconnect_delay_secs`) between attempts, so nothing to restart
        // after a stable connection.
        let backoff = Backoff::fixed(self.reconnect_delay);
        let mut link = Reconnect::new(backoff, Duration::ZERO, Instant::now());
        let url = self.source.shown().to_owned();
        let mut out = Vec::with_capacity(64 * 1024);
        loop {
            if let Next::Wait(until) = link.poll(Instant::now()) {
                tokio::time::sleep_until(until.into()).await;
                continue;
            }
            match rtsp::connect(&self.source, self.timeout).await {
                Err(e) => {
                    tracing::warn!(flow_id = %flow_id, url = %url, "rtsp connect failed: {e}");
                    let down = link.failed(Instant::now(), &e);
                    if down.event.is_some() {
                        let retry = down.delay.as_secs();
                        events.raise(Event::rtsp_disconnected(&flow_id, &e.to_string(), retry));
                    }
                }
                Ok(mut puller) => {
                    tracing::info!(flow_id = %flow_id, url = %url, codecs = %puller.codecs, "rtsp playing");
                    if link.connected(Instant::now()).is_some() {
                        events.raise(Event::rtsp_connected(&flow_id, &url));
                    }
                    let e = loop {
                        out.clear();
                        match tokio::time::timeout(self.timeout, puller.next(&mut out)).await {
                            Err(_) => {
                                break format!("no media for {} s", self.timeout.as_secs());
                            }
                            Ok(Err(e)) => break e.to_string(),
                            Ok(Ok(())) => {}
                        }
                        if out.is_empty() {
                            continue;
                        }
                        let now = Instant::now();
                        feed.count(out.len(), now);
                        feed.push(&out, now);
                    };
                    tracing::warn!(flow_id = %flow_id, url = %url, "rtsp stream lost: {e}");
                    let down = link.disconnected(Instant::now(), &e);
                    if down.event.is_some() {
                        let retry = down.delay.as_secs();
                        events.raise(Event::rtsp_disconnected(&flow_id, &e, retry));
                    }
                }
            }
            // Bound the buffer: one huge frame must not keep megabytes forever.
            out.shrink_to(256 * 1024);
        }
    }
}
