//! The event catalog of `shared/seeds/events-and-alarms.txt`: one constructor per row, so a
//! message, severity or category cannot be misspelled at a call site.
//!
//! Messages use plain ASCII quotes (the seed's typographic quotes are a rendering artefact
//! of its source page). The seed's tables are the contract: 10 categories, 47 events,
//! 21 info / 16 warning / 10 critical (its "By Severity" summary miscounts; the tables win).
//! Quoll adds two categories of its own, `storage` for the event log itself and `bridge` for
//! the RTSP->WebSocket bridge's sessions; they are kept out of the seed's counts and listed
//! separately in `docs/events.md`. The manager takes any category string (it only bounds
//! its length), so they are sent as they are, like the seed's.

use std::fmt;

use serde::Serialize;
use serde_json::{Map, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    pub const ALL: [Severity; 3] = [Severity::Info, Severity::Warning, Severity::Critical];

    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Category {
    Flow,
    Srt,
    Redundancy,
    Rtmp,
    Rtsp,
    Hls,
    Webrtc,
    Tunnel,
    Manager,
    Config,
    /// Quoll's own: the durable event log (not in the seed).
    Storage,
    /// Quoll's own: the RTSP->WebSocket bridge's sessions (not in the seed).
    Bridge,
}

impl Category {
    pub const ALL: [Category; 12] = [
        Category::Flow,
        Category::Srt,
        Category::Redundancy,
        Category::Rtmp,
        Category::Rtsp,
        Category::Hls,
        Category::Webrtc,
        Category::Tunnel,
        Category::Manager,
        Category::Config,
        Category::Storage,
        Category::Bridge,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Category::Flow => "flow",
            Category::Srt => "srt",
            Category::Redundancy => "redundancy",
            Category::Rtmp => "rtmp",
            Category::Rtsp => "rtsp",
            Category::Hls => "hls",
            Category::Webrtc => "webrtc",
            Category::Tunnel => "tunnel",
            Category::Manager => "manager",
            Category::Config => "config",
            Category::Storage => "storage",
            Category::Bridge => "bridge",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }

    /// Whether the category comes from the seed catalog (the manager knows it).
    pub fn is_seed(self) -> bool {
        !matches!(self, Category::Storage | Category::Bridge)
    }
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One operational event, as the manager receives it in an `event` message's payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Event {
    pub severity: Severity,
    pub category: Category,
    pub message: String,
    /// The flow or tunnel the event is about.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flow_id: Option<String>,
    #[serde(skip_serializing_if = "Map::is_empty")]
    pub details: Map<String, Value>,
}

use Category as C;
use Severity::{Critical, Info, Warning};

impl Event {
    /// Write the event to the process log at its severity's level: an operator reading the
    /// journal (`journalctl -p err`) sees critical events as errors.
    pub fn log(&self) {
        let (category, flow_id) = (self.category.as_str(), &self.flow_id);
        match self.severity {
            Critical => tracing::error!(category, ?flow_id, "{}", self.message),
            Warning => tracing::warn!(category, ?flow_id, "{}", self.message),
            Info => tracing::info!(category, ?flow_id, "{}", self.message),
        }
    }

    fn new(severity: Severity, category: Category, message: String, flow_id: Option<&str>) -> Self {
        Event {
            severity,
            category,
            message,
            flow_id: flow_id.map(str::to_owned),
            details: Map::new(),
        }
    }

    /// Attach one structured detail (peer address, error code, counts...).
    pub fn with_detail(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.details.insert(key.to_owned(), value.into());
        self
    }

    // ---- flow -------------------------------------------------------------------------

    pub fn flow_started(flow_id: &str) -> Self {
        Self::new(
            Info,
            C::Flow,
            format!("Flow '{flow_id}' started"),
            Some(flow_id),
        )
    }
    pub fn flow_stopped(flow_id: &str) -> Self {
        Self::new(
            Info,
            C::Flow,
            format!("Flow '{flow_id}' stopped"),
            Some(flow_id),
        )
    }
    pub fn flow_start_failed(flow_id: &str, error: &str) -> Self {
        Self::new(
            Critical,
            C::Flow,
            format!("Flow '{flow_id}' failed to start: {error}"),
            Some(flow_id),
        )
    }
    pub fn flow_input_lost(flow_id: &str, error: &str) -> Self {
        Self::new(
            Critical,
            C::Flow,
            format!("Flow input lost: {error}"),
            Some(flow_id),
        )
    }
    pub fn output_added(flow_id: &str, output_id: &str) -> Self {
        Self::new(
            Info,
            C::Flow,
            format!("Output '{output_id}' added to flow '{flow_id}'"),
            Some(flow_id),
        )
        .with_detail("output_id", output_id)
    }
    pub fn output_removed(flow_id: &str, output_id: &str) -> Self {
        Self::new(
            Info,
            C::Flow,
            format!("Output '{output_id}' removed from flow '{flow_id}'"),
            Some(flow_id),
        )
        .with_detail("output_id", output_id)
    }
    pub fn output_start_failed(flow_id: &str, output_id: &str, error: &str) -> Self {
        Self::new(
            Warning,
            C::Flow,
            format!("Output '{output_id}' failed to start on flow '{flow_id}': {error}"),
            Some(flow_id),
        )
        .with_detail("output_id", output_id)
    }

    // ---- srt --------------------------------------------------------------------------

    /// A listener input accepted a caller.
    pub fn srt_input_listener_connected(flow_id: &str) -> Self {
        Self::new(
            Info,
            C::Srt,
            "SRT input connected (mode=listener)".into(),
            Some(flow_id),
        )
    }
    /// A caller (or rendezvous) input reached its remote.
    pub fn srt_input_connected(flow_id: &str, mode: &str) -> Self {
        Self::new(
            Info,
            C::Srt,
            format!("SRT input connected (mode={mode})"),
            Some(flow_id),
        )
    }
    pub fn srt_input_redundant_leg1_connected(flow_id: &str) -> Self {
        Self::new(
            Info,
            C::Srt,
            "SRT input connected (mode=listener, redundant leg 1)".into(),
            Some(flow_id),
        )
    }
    pub fn srt_input_disconnected(flow_id: &str) -> Self {
        Self::new(
            Warning,
            C::Srt,
            "SRT input disconnected, reconnecting".into(),
            Some(flow_id),
        )
    }
    pub fn srt_input_connection_failed(flow_id: &str, error: &str) -> Self {
        Self::new(
            Critical,
            C::Srt,
            format!("SRT input connection failed: {error}"),
            Some(flow_id),
        )
    }
    pub fn srt_output_connected(flow_id: &str, output_id: &str) -> Self {
        Self::new(
            Info,
            C::Srt,
            format!("SRT output '{output_id}' connected"),
            Some(flow_id),
        )
        .with_detail("output_id", output_id)
    }
    pub fn srt_output_disconnected(flow_id: &str, output_id: &str) -> Self {
        Self::new(
            Warning,
            C::Srt,
            format!("SRT output '{output_id}' disconnected"),
            Some(flow_id),
        )
        .with_detail("output_id", output_id)
    }
    pub fn srt_output_stale(flow_id: &str, output_id: &str) -> Self {
        Self::new(
            Warning,
            C::Srt,
            format!("SRT output '{output_id}' stale connection detected"),
            Some(flow_id),
        )
        .with_detail("output_id", output_id)
    }
    pub fn srt_output_connection_failed(flow_id: &str, output_id: &str, error: &str) -> Self {
        Self::new(
            Critical,
            C::Srt,
            format!("SRT output '{output_id}' connection failed: {error}"),
            Some(flow_id),
        )
        .with_detail("output_id", output_id)
    }

    // ---- redundancy (SMPTE 2022-7) ----------------------------------------------------

    /// `leg` is 1 or 2.
    pub fn redundant_leg_lost(flow_id: &str, leg: u8) -> Self {
        Self::new(
            Warning,
            C::Redundancy,
            format!("Redundant leg {leg} lost"),
            Some(flow_id),
        )
        .with_detail("leg", leg)
    }
    pub fn redundant_legs_lost(flow_id: &str) -> Self {
        Self::new(
            Critical,
            C::Redundancy,
            "Both redundant legs lost".into(),
            Some(flow_id),
        )
    }

    // ---- rtmp -------------------------------------------------------------------------

    pub fn rtmp_publisher_connected(flow_id: &str) -> Self {
        Self::new(
            Info,
            C::Rtmp,
            "RTMP publisher connected".into(),
            Some(flow_id),
        )
    }
    pub fn rtmp_publisher_disconnected(flow_id: &str) -> Self {
        Self::new(
            Warning,
            C::Rtmp,
            "RTMP publisher disconnected".into(),
            Some(flow_id),
        )
    }
    pub fn rtmp_server_error(flow_id: &str, error: &str) -> Self {
        Self::new(
            Critical,
            C::Rtmp,
            format!("RTMP server error: {error}"),
            Some(flow_id),
        )
    }

    // ---- rtsp -------------------------------------------------------------------------

    pub fn rtsp_connected(flow_id: &str, url: &str) -> Self {
        Self::new(
            Info,
            C::Rtsp,
            format!("RTSP connected to {url}"),
            Some(flow_id),
        )
    }
    /// `retry_secs`: the delay before the next attempt.
    pub fn rtsp_disconnected(flow_id: &str, error: &str, retry_secs: impl fmt::Display) -> Self {
        Self::new(
            Warning,
            C::Rtsp,
            format!("RTSP input disconnected: {error}. Reconnecting in {retry_secs}s"),
            Some(flow_id),
        )
    }

    // ---- hls --------------------------------------------------------------------------

    pub fn hls_upload_failed(flow_id: &str, error: &str) -> Self {
        Self::new(
            Warning,
            C::Hls,
            format!("HLS segment upload failed: {error}"),
            Some(flow_id),
        )
    }
    pub fn hls_output_failed(flow_id: &str, error: &str) -> Self {
        Self::new(
            Critical,
            C::Hls,
            format!("HLS output failed: {error}"),
            Some(flow_id),
        )
    }

    // ---- webrtc -----------------------------------------------------------------------

    pub fn whip_publisher_connected(flow_id: &str) -> Self {
        Self::new(
            Info,
            C::Webrtc,
            "WHIP publisher connected".into(),
            Some(flow_id),
        )
    }
    pub fn whip_publisher_disconnected(flow_id: &str) -> Self {
        Self::new(
            Info,
            C::Webrtc,
            "WHIP publisher disconnected".into(),
            Some(flow_id),
        )
    }
    pub fn whep_connected(flow_id: &str) -> Self {
        Self::new(Info, C::Webrtc, "WHEP connected".into(), Some(flow_id))
    }
    pub fn whep_disconnected(flow_id: &str) -> Self {
        Self::new(Info, C::Webrtc, "WHEP disconnected".into(), Some(flow_id))
    }
    pub fn whep_viewer_connected(flow_id: &str) -> Self {
        Self::new(
            Info,
            C::Webrtc,
            "WHEP viewer connected".into(),
            Some(flow_id),
        )
    }
    pub fn whep_viewer_disconnected(flow_id: &str) -> Self {
        Self::new(
            Info,
            C::Webrtc,
            "WHEP viewer disconnected".into(),
            Some(flow_id),
        )
    }
    pub fn webrtc_session_failed(flow_id: &str, error: &str) -> Self {
        Self::new(
            Warning,
            C::Webrtc,
            format!("WebRTC session failed: {error}"),
            Some(flow_id),
        )
    }
    pub fn webrtc_session_creation_failed(flow_id: &str, error: &str) -> Self {
        Self::new(
            Warning,
            C::Webrtc,
            format!("WebRTC session creation failed: {error}"),
            Some(flow_id),
        )
    }

    // ---- tunnel (flow_id carries the tunnel id) ---------------------------------------

    pub fn tunnel_started(tunnel_id: &str, name: &str) -> Self {
        Self::new(
            Info,
            C::Tunnel,
            format!("Tunnel '{name}' started"),
            Some(tunnel_id),
        )
    }
    pub fn tunnel_stopped(tunnel_id: &str, name: &str) -> Self {
        Self::new(
            Info,
            C::Tunnel,
            format!("Tunnel '{name}' stopped"),
            Some(tunnel_id),
        )
    }
    pub fn tunnel_connected(tunnel_id: &str) -> Self {
        Self::new(
            Info,
            C::Tunnel,
            "Tunnel connected to relay".into(),
            Some(tunnel_id),
        )
    }
    pub fn tunnel_disconnected(tunnel_id: &str, reason: &str) -> Self {
        Self::new(
            Warning,
            C::Tunnel,
            format!("Tunnel disconnected from relay: {reason}"),
            Some(tunnel_id),
        )
    }
    pub fn tunnel_peer_disconnected(tunnel_id: &str, reason: &str) -> Self {
        Self::new(
            Warning,
            C::Tunnel,
            format!("Tunnel peer disconnected: {reason}"),
            Some(tunnel_id),
        )
    }
    pub fn tunnel_connect_failed(tunnel_id: &str, error: &str) -> Self {
        Self::new(
            Warning,
            C::Tunnel,
            format!("Tunnel connection to relay failed: {error}"),
            Some(tunnel_id),
        )
    }
    pub fn tunnel_failed(tunnel_id: &str, name: &str, error: &str) -> Self {
        Self::new(
            Critical,
            C::Tunnel,
            format!("Tunnel '{name}' failed: {error}"),
            Some(tunnel_id),
        )
    }
    pub fn tunnel_bind_rejected(tunnel_id: &str, reason: &str) -> Self {
        Self::new(
            Critical,
            C::Tunnel,
            format!("Tunnel bind rejected by relay: {reason}"),
            Some(tunnel_id),
        )
    }

    // ---- manager ----------------------------------------------------------------------

    pub fn manager_connected() -> Self {
        Self::new(Info, C::Manager, "Connected to manager".into(), None)
    }
    pub fn manager_connection_lost() -> Self {
        Self::new(
            Warning,
            C::Manager,
            "Manager connection lost, reconnecting".into(),
            None,
        )
    }
    pub fn manager_auth_failed(reason: &str) -> Self {
        Self::new(
            Critical,
            C::Manager,
            format!("Manager authentication failed: {reason}"),
            None,
        )
    }

    // ---- config -----------------------------------------------------------------------

    pub fn config_updated() -> Self {
        Self::new(Info, C::Config, "Configuration updated".into(), None)
    }
    pub fn config_persist_failed(error: &str) -> Self {
        Self::new(
            Warning,
            C::Config,
            format!("Failed to persist configuration: {error}"),
            None,
        )
    }

    // ---- storage (Quoll's own, not in the seed) ---------------------------------------

    /// The log hit its byte budget and its oldest segment went.
    pub fn events_dropped(
        count: impl fmt::Display + Into<Value> + Copy,
        first_seq: u64,
        last_seq: u64,
    ) -> Self {
        Self::new(
            Warning,
            C::Storage,
            format!("Event log full: {count} oldest events dropped"),
            None,
        )
        .with_detail("dropped", count)
        .with_detail("first_seq", first_seq)
        .with_detail("last_seq", last_seq)
    }
    /// Disk full, read-only or failing: events are kept in memory only until it recovers.
    pub fn event_log_degraded(error: &str) -> Self {
        Self::new(
            Warning,
            C::Storage,
            format!("Event log degraded to memory only: {error}"),
            None,
        )
    }
    pub fn event_log_recovered() -> Self {
        Self::new(Info, C::Storage, "Event log writable again".into(), None)
    }
    /// Recovery found records lost to damage (bit rot): `skipped` events nobody had been
    /// told about (the manager had not acknowledged them), exactly, with their sequence
    /// numbers in `ranges` (first, last). `exact` is false only when a segment was
    /// damaged beyond counting (header and every record); the count is then the most it
    /// can have held. Health says `degraded` until this event is acknowledged: delivered
    /// to the manager, or `quoll ctl ack-loss` (docs/events.md).
    pub fn event_log_corrupt(
        skipped: impl fmt::Display + Into<Value> + Copy,
        ranges: &[(u64, u64)],
        exact: bool,
    ) -> Self {
        /// Ranges listed in the details: enough for a few damaged spots, and the message
        /// stays far below the manager's 10 000-byte limit however many there are.
        const SHOWN: usize = 32;
        let mut e = Self::new(
            Warning,
            C::Storage,
            format!("Event log recovery skipped {skipped} corrupt records"),
            None,
        )
        .with_detail("skipped", skipped)
        .with_detail("exact", exact);
        if let (Some(first), Some(last)) = (ranges.first(), ranges.last()) {
            let shown: Vec<Value> = ranges
                .iter()
                .take(SHOWN)
                .map(|&(lo, hi)| Value::from(vec![lo, hi]))
                .collect();
            e = e
                .with_detail("first_seq", first.0)
                .with_detail("last_seq", last.1)
                .with_detail("ranges", shown);
            if ranges.len() > SHOWN {
                e = e.with_detail("ranges_not_shown", ranges.len() - SHOWN);
            }
        }
        e
    }

    /// Start-up found files a newer version wrote (this binary was rolled back): segments
    /// it cannot read and/or a cursor of a newer format. They are kept untouched; the
    /// details say what that means (`segments`, `cursor_version`, and `next_seq`: this run
    /// numbers its events from there, above anything the newer segments can hold).
    pub fn event_log_newer_format(
        files: impl fmt::Display + Into<Value> + Copy,
        segments: u64,
        cursor_version: Option<u16>,
        next_seq: u64,
    ) -> Self {
        let mut e = Self::new(
            Warning,
            C::Storage,
            format!("Event log holds {files} files of a newer version, kept unread"),
            None,
        )
        .with_detail("files", files)
        .with_detail("segments", segments)
        .with_detail("next_seq", next_seq);
        if let Some(v) = cursor_version {
            // Not overwritten: delivery restarts from the oldest record after each restart.
            e = e
                .with_detail("cursor_version", v)
                .with_detail("cursor", "kept; delivery position held in memory only");
        }
        e
    }

    // ---- bridge (Quoll's own, not in the seed) ----------------------------------------

    /// A bridge session reached `STREAM_MAX_RESTARTS` and stopped retrying
    /// (`shared/seeds/runtime-recovery.txt`: "enters an error state, logs an error event").
    ///
    /// Critical, not warning: the viewers of this camera see nothing from now on and Quoll
    /// will not try again by itself (only a new viewer retries), so somebody has to look at
    /// the camera or its credentials. That is the seed's meaning of critical ("service-
    /// impacting, investigate immediately"), the same level as `Flow input lost`; the
    /// seed's warnings are for conditions that are still being retried.
    ///
    /// The details carry the session snapshot's own names (`streamId`, `sessionId`,
    /// `restartCount`, `lastError`, `lastExitCode`, `lastExitSignal`), so the event can be
    /// matched with `/healthz` and the bridge's log lines field for field.
    pub fn bridge_stream_errored(
        stream_id: &str,
        session_id: u64,
        restarts: impl fmt::Display + Into<Value> + Copy,
        error: &str,
    ) -> Self {
        Self::new(
            Critical,
            C::Bridge,
            format!("Bridge stream '{stream_id}' stopped after {restarts} restarts: {error}"),
            None,
        )
        .with_detail("streamId", stream_id)
        .with_detail("sessionId", session_id)
        .with_detail("restartCount", restarts)
        .with_detail("lastError", error)
    }
    /// A stream whose `bridge_stream_errored` was raised delivers media again (a new viewer
    /// retried it). It clears the alarm, as a reconnection event does in the seed.
    pub fn bridge_stream_recovered(stream_id: &str, session_id: u64) -> Self {
        Self::new(
            Info,
            C::Bridge,
            format!("Bridge stream '{stream_id}' recovered"),
            None,
        )
        .with_detail("streamId", stream_id)
        .with_detail("sessionId", session_id)
    }
}

/// Every constructor once, with the seed's placeholder names as arguments, so each message
/// reads exactly like its row in the seed (`Flow '{id}' started`). The catalog test and
/// `docs/events.md` are checked against this list.
pub fn templates() -> Vec<Event> {
    let f = "{flow_id}";
    vec![
        Event::flow_started("{id}"),
        Event::flow_stopped("{id}"),
        Event::flow_start_failed("{id}", "{error}"),
        Event::flow_input_lost(f, "{error}"),
        Event::output_added("{flow_id}", "{id}"),
        Event::output_removed("{flow_id}", "{id}"),
        Event::output_start_failed("{flow_id}", "{id}", "{error}"),
        Event::srt_input_listener_connected(f),
        Event::srt_input_connected(f, "{mode}"),
        Event::srt_input_redundant_leg1_connected(f),
        Event::srt_input_disconnected(f),
        Event::srt_input_connection_failed(f, "{error}"),
        Event::srt_output_connected(f, "{id}"),
        Event::srt_output_disconnected(f, "{id}"),
        Event::srt_output_stale(f, "{id}"),
        Event::srt_output_connection_failed(f, "{id}", "{error}"),
        Event::redundant_leg_lost(f, 1),
        Event::redundant_leg_lost(f, 2),
        Event::redundant_legs_lost(f),
        Event::rtmp_publisher_connected(f),
        Event::rtmp_publisher_disconnected(f),
        Event::rtmp_server_error(f, "{error}"),
        Event::rtsp_connected(f, "{url}"),
        Event::rtsp_disconnected(f, "{error}", "{n}"),
        Event::hls_upload_failed(f, "{error}"),
        Event::hls_output_failed(f, "{error}"),
        Event::whip_publisher_connected(f),
        Event::whip_publisher_disconnected(f),
        Event::whep_connected(f),
        Event::whep_disconnected(f),
        Event::whep_viewer_connected(f),
        Event::whep_viewer_disconnected(f),
        Event::webrtc_session_failed(f, "{error}"),
        Event::webrtc_session_creation_failed(f, "{error}"),
        Event::tunnel_started("{tunnel_id}", "{name}"),
        Event::tunnel_stopped("{tunnel_id}", "{name}"),
        Event::tunnel_connected("{tunnel_id}"),
        Event::tunnel_disconnected("{tunnel_id}", "{reason}"),
        Event::tunnel_peer_disconnected("{tunnel_id}", "{reason}"),
        Event::tunnel_connect_failed("{tunnel_id}", "{error}"),
        Event::tunnel_failed("{tunnel_id}", "{name}", "{error}"),
        Event::tunnel_bind_rejected("{tunnel_id}", "{reason}"),
        Event::manager_connected(),
        Event::manager_connection_lost(),
        Event::manager_auth_failed("{reason}"),
        Event::config_updated(),
        Event::config_persist_failed("{error}"),
        Event::events_dropped("{count}", 0, 0),
        Event::event_log_degraded("{error}"),
        Event::event_log_recovered(),
        Event::event_log_corrupt("{n}", &[], true),
        Event::event_log_newer_format("{n}", 0, None, 0),
        Event::bridge_stream_errored("{id}", 0, "{n}", "{error}"),
        Event::bridge_stream_recovered("{id}", 0),
    ]
}

#[cfg(test)]
mod log_level_tests {
    use super::*;
    use crate::testing::capture_logs;

    #[test]
    fn events_are_logged_at_their_severity() {
        for (event, level) in [
            (Event::flow_input_lost("f1", "eof"), "ERROR"),
            (Event::srt_input_disconnected("f1"), "WARN"),
            (Event::flow_started("f1"), "INFO"),
        ] {
            let log = capture_logs(|| event.log());
            let line = log.lines().next().unwrap_or_default();
            assert!(
                line.contains(&format!(" {level} ")) && line.contains(&event.message),
                "{:?} logged as: {line}",
                event.severity
            );
        }
    }
}
