//! The event catalog of `shared/seeds/events-and-alarms.txt`: one constructor per row, so a
//! message, severity or category cannot be misspelled at a call site. The constructors and
//! `templates()` (the list the catalog test and `docs/events.md` are checked against) are
//! generated from one table (`catalog!` below): adding an event is adding a row.
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
}

/// The seed's placeholder for the flow an event is about, in `templates()`.
const F: &str = "{flow_id}";

/// The catalog, one row per event: the constructor and its arguments, then
///
/// ```text
/// => severity category [in <argument carrying the flow or tunnel id>] "message"
///    [details { "key": value, ... }]      structured details, in this order
///    [then |e| { ... }]                   anything a table cannot say (optional details)
///    seed [args] [args]...;               arguments for `templates()` (one entry each)
/// ```
///
/// The message is a `format!` string over the arguments. Both the constructors and
/// `templates()` are generated from it, so adding an event is adding a row.
macro_rules! catalog {
    ($(
        $(#[$doc:meta])*
        $name:ident ( $($arg:ident : $ty:ty),* $(,)? )
            => $sev:ident $cat:ident $(in $flow:ident)? $msg:literal
            $(details { $($key:literal : $val:expr),* $(,)? })?
            $(then |$e:ident| $finish:block)?
            seed $([$($tmpl:expr),*])+ ;
    )*) => {
        impl Event {
            $(
                $(#[$doc])*
                pub fn $name($($arg: $ty),*) -> Self {
                    let event = Self::new($sev, C::$cat, format!($msg), catalog!(@flow $($flow)?))
                        $($(.with_detail($key, $val))*)?;
                    $(let $e = event; let event = $finish;)?
                    event
                }
            )*
        }

        /// Every constructor once (twice for the redundant leg, as the seed has a row for
        /// each), with the seed's placeholder names as arguments, so each message reads
        /// exactly like its row in the seed (`Flow '{id}' started`). The catalog test and
        /// `docs/events.md` are checked against this list.
        pub fn templates() -> Vec<Event> {
            vec![$($(Event::$name($($tmpl),*)),+),*]
        }
    };
    (@flow) => { None };
    (@flow $flow:ident) => { Some($flow) };
}

catalog! {
    // ---- flow -------------------------------------------------------------------------

    flow_started(flow_id: &str)
        => Info Flow in flow_id "Flow '{flow_id}' started"
        seed ["{id}"];
    flow_stopped(flow_id: &str)
        => Info Flow in flow_id "Flow '{flow_id}' stopped"
        seed ["{id}"];
    flow_start_failed(flow_id: &str, error: &str)
        => Critical Flow in flow_id "Flow '{flow_id}' failed to start: {error}"
        seed ["{id}", "{error}"];
    flow_input_lost(flow_id: &str, error: &str)
        => Critical Flow in flow_id "Flow input lost: {error}"
        seed [F, "{error}"];
    output_added(flow_id: &str, output_id: &str)
        => Info Flow in flow_id "Output '{output_id}' added to flow '{flow_id}'"
        details { "output_id": output_id }
        seed [F, "{id}"];
    output_removed(flow_id: &str, output_id: &str)
        => Info Flow in flow_id "Output '{output_id}' removed from flow '{flow_id}'"
        details { "output_id": output_id }
        seed [F, "{id}"];
    output_start_failed(flow_id: &str, output_id: &str, error: &str)
        => Warning Flow in flow_id
            "Output '{output_id}' failed to start on flow '{flow_id}': {error}"
        details { "output_id": output_id }
        seed [F, "{id}", "{error}"];

    // ---- srt --------------------------------------------------------------------------

    /// A listener input accepted a caller.
    srt_input_listener_connected(flow_id: &str)
        => Info Srt in flow_id "SRT input connected (mode=listener)"
        seed [F];
    /// A caller (or rendezvous) input reached its remote.
    srt_input_connected(flow_id: &str, mode: &str)
        => Info Srt in flow_id "SRT input connected (mode={mode})"
        seed [F, "{mode}"];
    srt_input_redundant_leg1_connected(flow_id: &str)
        => Info Srt in flow_id "SRT input connected (mode=listener, redundant leg 1)"
        seed [F];
    srt_input_disconnected(flow_id: &str)
        => Warning Srt in flow_id "SRT input disconnected, reconnecting"
        seed [F];
    srt_input_connection_failed(flow_id: &str, error: &str)
        => Critical Srt in flow_id "SRT input connection failed: {error}"
        seed [F, "{error}"];
    srt_output_connected(flow_id: &str, output_id: &str)
        => Info Srt in flow_id "SRT output '{output_id}' connected"
        details { "output_id": output_id }
        seed [F, "{id}"];
    srt_output_disconnected(flow_id: &str, output_id: &str)
        => Warning Srt in flow_id "SRT output '{output_id}' disconnected"
        details { "output_id": output_id }
        seed [F, "{id}"];
    srt_output_stale(flow_id: &str, output_id: &str)
        => Warning Srt in flow_id "SRT output '{output_id}' stale connection detected"
        details { "output_id": output_id }
        seed [F, "{id}"];
    srt_output_connection_failed(flow_id: &str, output_id: &str, error: &str)
        => Critical Srt in flow_id "SRT output '{output_id}' connection failed: {error}"
        details { "output_id": output_id }
        seed [F, "{id}", "{error}"];

    // ---- redundancy (SMPTE 2022-7) ----------------------------------------------------

    /// `leg` is 1 or 2.
    redundant_leg_lost(flow_id: &str, leg: u8)
        => Warning Redundancy in flow_id "Redundant leg {leg} lost"
        details { "leg": leg }
        seed [F, 1] [F, 2];
    redundant_legs_lost(flow_id: &str)
        => Critical Redundancy in flow_id "Both redundant legs lost"
        seed [F];

    // ---- rtmp -------------------------------------------------------------------------

    rtmp_publisher_connected(flow_id: &str)
        => Info Rtmp in flow_id "RTMP publisher connected"
        seed [F];
    rtmp_publisher_disconnected(flow_id: &str)
        => Warning Rtmp in flow_id "RTMP publisher disconnected"
        seed [F];
    rtmp_server_error(flow_id: &str, error: &str)
        => Critical Rtmp in flow_id "RTMP server error: {error}"
        seed [F, "{error}"];

    // ---- rtsp -------------------------------------------------------------------------

    rtsp_connected(flow_id: &str, url: &str)
        => Info Rtsp in flow_id "RTSP connected to {url}"
        seed [F, "{url}"];
    /// `retry_secs`: the delay before the next attempt.
    rtsp_disconnected(flow_id: &str, error: &str, retry_secs: impl fmt::Display)
        => Warning Rtsp in flow_id "RTSP input disconnected: {error}. Reconnecting in {retry_secs}s"
        seed [F, "{error}", "{n}"];

    // ---- hls --------------------------------------------------------------------------

    /// The first failed PUT of a failing run (the upload queue latches it).
    hls_upload_failed(flow_id: &str, output_id: &str, error: &str)
        => Warning Hls in flow_id "HLS segment upload failed: {error}"
        details { "output_id": output_id }
        seed [F, "{id}", "{error}"];
    /// The output's task ended on an error retrying cannot mend.
    hls_output_failed(flow_id: &str, output_id: &str, error: &str)
        => Critical Hls in flow_id "HLS output failed: {error}"
        details { "output_id": output_id }
        seed [F, "{id}", "{error}"];

    // ---- webrtc -----------------------------------------------------------------------

    whip_publisher_connected(flow_id: &str)
        => Info Webrtc in flow_id "WHIP publisher connected"
        seed [F];
    whip_publisher_disconnected(flow_id: &str)
        => Info Webrtc in flow_id "WHIP publisher disconnected"
        seed [F];
    whep_connected(flow_id: &str)
        => Info Webrtc in flow_id "WHEP connected"
        seed [F];
    whep_disconnected(flow_id: &str)
        => Info Webrtc in flow_id "WHEP disconnected"
        seed [F];
    whep_viewer_connected(flow_id: &str)
        => Info Webrtc in flow_id "WHEP viewer connected"
        seed [F];
    whep_viewer_disconnected(flow_id: &str)
        => Info Webrtc in flow_id "WHEP viewer disconnected"
        seed [F];
    webrtc_session_failed(flow_id: &str, error: &str)
        => Warning Webrtc in flow_id "WebRTC session failed: {error}"
        seed [F, "{error}"];
    webrtc_session_creation_failed(flow_id: &str, error: &str)
        => Warning Webrtc in flow_id "WebRTC session creation failed: {error}"
        seed [F, "{error}"];

    // ---- tunnel (flow_id carries the tunnel id) ---------------------------------------

    tunnel_started(tunnel_id: &str, name: &str)
        => Info Tunnel in tunnel_id "Tunnel '{name}' started"
        seed ["{tunnel_id}", "{name}"];
    tunnel_stopped(tunnel_id: &str, name: &str)
        => Info Tunnel in tunnel_id "Tunnel '{name}' stopped"
        seed ["{tunnel_id}", "{name}"];
    tunnel_connected(tunnel_id: &str)
        => Info Tunnel in tunnel_id "Tunnel connected to relay"
        seed ["{tunnel_id}"];
    tunnel_disconnected(tunnel_id: &str, reason: &str)
        => Warning Tunnel in tunnel_id "Tunnel disconnected from relay: {reason}"
        seed ["{tunnel_id}", "{reason}"];
    tunnel_peer_disconnected(tunnel_id: &str, reason: &str)
        => Warning Tunnel in tunnel_id "Tunnel peer disconnected: {reason}"
        seed ["{tunnel_id}", "{reason}"];
    tunnel_connect_failed(tunnel_id: &str, error: &str)
        => Warning Tunnel in tunnel_id "Tunnel connection to relay failed: {error}"
        seed ["{tunnel_id}", "{error}"];
    tunnel_failed(tunnel_id: &str, name: &str, error: &str)
        => Critical Tunnel in tunnel_id "Tunnel '{name}' failed: {error}"
        seed ["{tunnel_id}", "{name}", "{error}"];
    tunnel_bind_rejected(tunnel_id: &str, reason: &str)
        => Critical Tunnel in tunnel_id "Tunnel bind rejected by relay: {reason}"
        seed ["{tunnel_id}", "{reason}"];
    /// Quoll's own, not in the seed (the spec asks for it: `tunnel_tls.insecure_skip_verify`
    /// "must say so loudly (a warning event each time a tunnel starts)"); the catalog test
    /// keeps it out of the seed's rows.
    tunnel_tls_insecure(tunnel_id: &str, name: &str)
        => Warning Tunnel in tunnel_id
            "Tunnel '{name}' started without certificate verification (insecure_skip_verify)"
        seed ["{tunnel_id}", "{name}"];

    // ---- manager ----------------------------------------------------------------------

    manager_connected()
        => Info Manager "Connected to manager"
        seed [];
    manager_connection_lost()
        => Warning Manager "Manager connection lost, reconnecting"
        seed [];
    manager_auth_failed(reason: &str)
        => Critical Manager "Manager authentication failed: {reason}"
        seed ["{reason}"];

    // ---- config -----------------------------------------------------------------------

    config_updated()
        => Info Config "Configuration updated"
        seed [];
    config_persist_failed(error: &str)
        => Warning Config "Failed to persist configuration: {error}"
        seed ["{error}"];

    // ---- storage (Quoll's own, not in the seed) ---------------------------------------

    /// The log hit its byte budget and its oldest segment went.
    events_dropped(count: impl fmt::Display + Into<Value> + Copy, first_seq: u64, last_seq: u64)
        => Warning Storage "Event log full: {count} oldest events dropped"
        details { "dropped": count, "first_seq": first_seq, "last_seq": last_seq }
        seed ["{count}", 0, 0];
    /// Disk full, read-only or failing: events are kept in memory only until it recovers.
    event_log_degraded(error: &str)
        => Warning Storage "Event log degraded to memory only: {error}"
        seed ["{error}"];
    event_log_recovered()
        => Info Storage "Event log writable again"
        seed [];
    /// Recovery found records lost to damage (bit rot): `skipped` events nobody had been
    /// told about (the manager had not acknowledged them), exactly, with their sequence
    /// numbers in `ranges` (first, last). `exact` is false only when a segment was
    /// damaged beyond counting (header and every record); the count is then the most it
    /// can have held. Health says `degraded` until this event is acknowledged: delivered
    /// to the manager, or `quoll ctl ack-loss` (docs/events.md).
    event_log_corrupt(
        skipped: impl fmt::Display + Into<Value> + Copy,
        ranges: &[(u64, u64)],
        exact: bool,
    )
        => Warning Storage "Event log recovery skipped {skipped} corrupt records"
        details { "skipped": skipped, "exact": exact }
        then |e| { with_ranges(e, ranges) }
        seed ["{n}", &[], true];
    /// Start-up found files a newer version wrote (this binary was rolled back): segments
    /// it cannot read and/or a cursor of a newer format. They are kept untouched; the
    /// details say what that means (`segments`, `cursor_version`, and `next_seq`: this run
    /// numbers its events from there, above anything the newer segments can hold).
    event_log_newer_format(
        files: impl fmt::Display + Into<Value> + Copy,
        segments: u64,
        cursor_version: Option<u16>,
        next_seq: u64,
    )
        => Warning Storage "Event log holds {files} files of a newer version, kept unread"
        details { "files": files, "segments": segments, "next_seq": next_seq }
        then |e| {
            match cursor_version {
                // Not overwritten: delivery restarts from the oldest record after each
                // restart.
                Some(v) => e
                    .with_detail("cursor_version", v)
                    .with_detail("cursor", "kept; delivery position held in memory only"),
                None => e,
            }
        }
        seed ["{n}", 0, None, 0];

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
    bridge_stream_errored(
        stream_id: &str,
        session_id: u64,
        restarts: impl fmt::Display + Into<Value> + Copy,
        error: &str,
    )
        => Critical Bridge "Bridge stream '{stream_id}' stopped after {restarts} restarts: {error}"
        details {
            "streamId": stream_id,
            "sessionId": session_id,
            "restartCount": restarts,
            "lastError": error,
        }
        seed ["{id}", 0, "{n}", "{error}"];
    /// A stream whose `bridge_stream_errored` was raised delivers media again (a new viewer
    /// retried it). It clears the alarm, as a reconnection event does in the seed.
    bridge_stream_recovered(stream_id: &str, session_id: u64)
        => Info Bridge "Bridge stream '{stream_id}' recovered"
        details { "streamId": stream_id, "sessionId": session_id }
        seed ["{id}", 0];
}

/// The damaged ranges of `event_log_corrupt`, in its details: the first and last sequence
/// number lost, and the ranges themselves.
fn with_ranges(mut e: Event, ranges: &[(u64, u64)]) -> Event {
    /// Ranges listed in the details: enough for a few damaged spots, and the message
    /// stays far below the manager's 10 000-byte limit however many there are.
    const SHOWN: usize = 32;
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
