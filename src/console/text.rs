//! Plain, line-oriented text for a serial terminal: every line fits the width, colour only
//! on a terminal that wants it.

use serde_json::Value;

/// Output settings of one `quoll ctl` run.
#[derive(Debug, Clone, Copy)]
pub struct Style {
    pub width: usize,
    pub color: bool,
}

/// The narrowest width honoured: a terminal or `COLUMNS` narrower than this still gets
/// lines of this width (below it a flow line would not even show its state column).
pub const MIN_WIDTH: usize = 30;

impl Style {
    /// For stdout: the terminal's width when it reports one (a serial line reports 0), else
    /// `$COLUMNS`, else 80, never below [`MIN_WIDTH`]; colour when stdout is a terminal and
    /// `NO_COLOR` is unset.
    pub fn detect() -> Self {
        use std::io::IsTerminal;
        let tty = std::io::stdout().is_terminal();
        let columns = std::env::var("COLUMNS")
            .ok()
            .and_then(|c| c.trim().parse().ok());
        Style {
            width: pick_width(tty.then(tty_columns).flatten(), columns),
            color: tty && std::env::var_os("NO_COLOR").is_none(),
        }
    }

    fn paint(&self, code: &str, s: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_owned()
        }
    }
}

fn pick_width(tty: Option<usize>, columns: Option<usize>) -> usize {
    tty.filter(|w| *w > 0)
        .or(columns.filter(|w| *w > 0))
        .unwrap_or(80)
        .max(MIN_WIDTH)
}

fn tty_columns() -> Option<usize> {
    crate::sys::stdout_columns()
}

/// Cut `s` to `width` characters, marking the cut with `~`.
pub fn fit(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(width.saturating_sub(1)).collect();
    out.push('~');
    out
}

/// Word-wraps `s` to `width` columns, continuation lines indented by two spaces. For error
/// messages: read on an 80-column serial console, they must be neither cut nor overflow.
pub fn wrap(s: &str, width: usize) -> Vec<String> {
    let width = width.max(8);
    let mut lines: Vec<String> = Vec::new();
    let mut line = String::new();
    for word in s.split_whitespace() {
        let mut rest = word;
        while !rest.is_empty() {
            let indent = if lines.is_empty() { 0 } else { 2 };
            let used = line.chars().count();
            let start = if used == 0 { indent } else { used + 1 };
            if start + rest.chars().count() <= width {
                line.push_str(if used == 0 { &"  "[..indent] } else { " " });
                line.push_str(rest);
                rest = "";
            } else if used > 0 {
                lines.push(std::mem::take(&mut line));
            } else {
                // A word longer than a whole line (a path, a URL): split it.
                let split = rest
                    .char_indices()
                    .nth(width - indent)
                    .map_or(rest.len(), |(i, _)| i);
                line.push_str(&"  "[..indent]);
                line.push_str(&rest[..split]);
                lines.push(std::mem::take(&mut line));
                rest = &rest[split..];
            }
        }
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("-")
}

fn u64_of(v: &Value, key: &str) -> u64 {
    v.get(key).and_then(Value::as_u64).unwrap_or(0)
}

pub fn duration(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m {s}s"),
        (0, _, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}

fn mbps(bps: u64) -> String {
    format!("{:.2}", bps as f64 / 1e6)
}

/// Where the flows table's STATE column starts: after the FLOW cell and two spaces.
const STATE_COLUMN: usize = 20 + 2;

/// Colour the `len` characters of `line` that start at character `start`, if the line holds
/// them all (a cut line keeps its plain tail).
fn paint_at(style: &Style, line: &str, start: usize, len: usize, state: &str) -> String {
    let mut bounds = line.char_indices().map(|(i, _)| i).chain([line.len()]);
    let (Some(a), Some(b)) = (bounds.nth(start), bounds.nth(len.saturating_sub(1))) else {
        return line.to_owned();
    };
    if len == 0 {
        return line.to_owned();
    }
    format!(
        "{}{}{}",
        &line[..a],
        state_color(style, state, &line[a..b]),
        &line[b..]
    )
}

/// Cells padded to the widths, joined by two spaces, the whole line fitted.
fn row(cells: &[(&str, usize)], width: usize) -> String {
    let mut line = String::new();
    for (i, (text, w)) in cells.iter().enumerate() {
        if i > 0 {
            line.push_str("  ");
        }
        if i + 1 == cells.len() {
            line.push_str(text);
        } else {
            line.push_str(&format!("{:<w$}", fit(text, *w)));
        }
    }
    fit(line.trim_end(), width)
}

fn state_color(style: &Style, state: &str, text: &str) -> String {
    match state {
        "running" | "ok" | "connected" | "ready" => style.paint("32", text),
        "error" | "critical" | "errored" => style.paint("31", text),
        "degraded" | "warning" | "stopped" => style.paint("33", text),
        _ => text.to_owned(),
    }
}

/// `quoll ctl status` (and `health`).
pub fn status(h: &Value, style: &Style) -> Vec<String> {
    let w = style.width;
    let st = str_of(h, "status");
    let ident = format!(
        "quoll {} (rev {})",
        str_of(h, "version"),
        str_of(h, "git_rev")
    );
    let verdict = format!("status: {st}");
    // On a narrow terminal the verdict gets a line of its own rather than being cut off.
    let mut lines = if ident.chars().count() + 2 + verdict.chars().count() <= w {
        vec![format!("{ident}  {verdict}")]
    } else {
        vec![fit(&verdict, w), fit(&ident, w)]
    };
    lines.push(fit(
        &format!(
            "uptime {}  flows {}/{} running",
            duration(u64_of(h, "uptime_secs")),
            u64_of(h, "active_flows"),
            u64_of(h, "total_flows")
        ),
        w,
    ));
    let mut extra = Vec::new();
    if let Some(b) = h.get("board").and_then(Value::as_str) {
        extra.push(format!("board {b}"));
    }
    if let Some(s) = h.get("boot_slot").and_then(Value::as_str) {
        extra.push(format!("slot {s}"));
    }
    if !extra.is_empty() {
        lines.push(fit(&extra.join("  "), w));
    }
    // Why the event log degrades the node, in words (the verdict alone does not say).
    let log = &h["event_log"];
    if log["durable"].as_bool() == Some(false) {
        lines.push(fit("event log: memory only (the disk failed)", w));
    }
    let lost = u64_of(log, "lost_unacked");
    if lost > 0 {
        lines.push(fit(
            &format!("event log: {lost} events lost to disk damage; quoll ctl ack-loss"),
            w,
        ));
    }
    if style.color {
        lines[0] = lines[0].replacen(
            &format!("status: {st}"),
            &format!("status: {}", state_color(style, st, st)),
            1,
        );
    }
    lines
}

/// `quoll ctl ack-loss`: what was acknowledged.
pub fn ack_loss(v: &Value) -> String {
    if v["acknowledged"].as_bool() == Some(true) {
        format!(
            "acknowledged: {} events lost (report seq {})",
            u64_of(v, "lost"),
            u64_of(v, "loss_seq")
        )
    } else {
        "nothing to acknowledge: no event loss reported".to_owned()
    }
}

/// `quoll ctl flows`: one line per flow, one indented line per output.
pub fn flows(list: &Value, style: &Style) -> Vec<String> {
    let w = style.width;
    let flows = list.as_array().map(Vec::as_slice).unwrap_or(&[]);
    if flows.is_empty() {
        return vec!["no flows".into()];
    }
    let mut lines = vec![row(
        &[
            ("FLOW", 20),
            ("STATE", 8),
            ("INPUT", 5),
            ("MBIT/S", 7),
            ("CC ERR", 7),
            ("OUTPUTS", 0),
        ],
        w,
    )];
    for f in flows {
        let input = f.get("input").cloned().unwrap_or(Value::Null);
        let outputs = f.get("outputs").and_then(Value::as_array);
        let state = str_of(f, "state");
        let line = row(
            &[
                (str_of(f, "id"), 20),
                (state, 8),
                (str_of(&input, "type"), 5),
                (&mbps(u64_of(&input, "bitrate_bps")), 7),
                (&u64_of(&input, "cc_errors").to_string(), 7),
                (&outputs.map_or(0, Vec::len).to_string(), 0),
            ],
            w,
        );
        // Colour the STATE cell by position: the state word may also occur in the flow id.
        lines.push(if style.color {
            let shown = fit(state, 8).chars().count();
            paint_at(style, &line, STATE_COLUMN, shown, state)
        } else {
            line
        });
        if let Some(err) = f.get("error").and_then(Value::as_str) {
            lines.push(fit(&format!("  error: {err}"), w));
        }
        for o in outputs.into_iter().flatten() {
            lines.push(fit(
                &format!(
                    "  -> {} {} {}  pkts {}  dropped {}  errors {}",
                    str_of(o, "id"),
                    str_of(o, "type"),
                    str_of(o, "state"),
                    u64_of(o, "packets"),
                    u64_of(o, "dropped"),
                    u64_of(o, "send_errors")
                ),
                w,
            ));
        }
    }
    lines
}

/// One line per event: sequence number, UTC time, severity, category, message.
pub fn events(list: &Value, style: &Style) -> Vec<String> {
    let w = style.width;
    let evs = list.as_array().map(Vec::as_slice).unwrap_or(&[]);
    if evs.is_empty() {
        return vec!["no events".into()];
    }
    evs.iter()
        .map(|e| {
            let sev = str_of(e, "severity");
            let mark = match e.get("delivered").and_then(Value::as_bool) {
                Some(true) => " ",
                Some(false) => "*",
                None => " ",
            };
            let time = e
                .get("raised_at_ms")
                .and_then(Value::as_u64)
                .map(|ms| crate::time::rfc3339_millis(ms)[11..19].to_owned())
                .unwrap_or_else(|| "-".into());
            let line = fit(
                &format!(
                    "{mark}{:>6} {time} {:<4} {:<8} {}",
                    u64_of(e, "seq"),
                    &sev[..sev.len().min(4)],
                    str_of(e, "category"),
                    str_of(e, "message")
                ),
                w,
            );
            if style.color {
                let short = &sev[..sev.len().min(4)];
                line.replacen(short, &state_color(style, sev, short), 1)
            } else {
                line
            }
        })
        .collect()
}

/// Each tunnel: id, name, what it carries and how, its state and its counters.
pub fn tunnels(list: &Value, style: &Style) -> Vec<String> {
    one_line_each(list, "no tunnels", style, |t| {
        let s = &t["stats"];
        format!(
            "{}  {}  {} {} {}  {}  {}  in {} pkts {} bps  out {} pkts {} bps  replays {}  auth failures {}",
            str_of(t, "id"),
            str_of(t, "name"),
            str_of(t, "protocol"),
            str_of(t, "mode"),
            str_of(t, "direction"),
            str_of(t, "state"),
            t.get("remote").and_then(Value::as_str).unwrap_or("-"),
            u64_of(s, "packets_in"),
            u64_of(s, "bitrate_in_bps"),
            u64_of(s, "packets_out"),
            u64_of(s, "bitrate_out_bps"),
            u64_of(s, "replays_dropped"),
            u64_of(s, "auth_failures"),
        )
    })
}

pub fn sessions(list: &Value, style: &Style) -> Vec<String> {
    one_line_each(list, "no bridge sessions", style, |s| {
        format!(
            "{}  {}  {}  clients {}  restarts {}",
            str_of(s, "streamId"),
            str_of(s, "sessionId"),
            str_of(s, "state"),
            u64_of(s, "clientCount"),
            u64_of(s, "restartCount")
        )
    })
}

/// One line per element of the array `list`, cut to the console's width, or `empty`
/// alone when there is none.
fn one_line_each(
    list: &Value,
    empty: &str,
    style: &Style,
    line: impl Fn(&Value) -> String,
) -> Vec<String> {
    let items = list.as_array().map(Vec::as_slice).unwrap_or(&[]);
    if items.is_empty() {
        return vec![empty.into()];
    }
    items.iter().map(|i| fit(&line(i), style.width)).collect()
}

pub fn manager(m: &Value, style: &Style) -> Vec<String> {
    let cfg = m.get("config").unwrap_or(&Value::Null);
    let enabled = cfg.get("enabled").and_then(Value::as_bool).unwrap_or(false);
    if cfg.is_null() || !enabled {
        return vec!["manager link: not configured".into()];
    }
    let link = m.get("link").unwrap_or(&Value::Null);
    let never = link.get("ever_connected") == Some(&Value::Bool(false));
    let mut lines = vec![fit(
        &format!(
            "manager link: {}{}",
            m.get("state").and_then(Value::as_str).unwrap_or("enabled"),
            if never { " (never reached)" } else { "" }
        ),
        style.width,
    )];
    if let Some(e) = link.get("last_error").and_then(Value::as_str) {
        lines.push(fit(&format!("  last error: {e}"), style.width));
    }
    for url in cfg
        .get("urls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        lines.push(fit(
            &format!("  {}", url.as_str().unwrap_or("?")),
            style.width,
        ));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn wrap_keeps_every_word_within_the_width() {
        let msg = "quoll ctl: the quoll daemon is not running (no answer on \
                   /run/quoll/a-very-long-directory-name-that-goes-on-and-on-and-on-past-eighty/ctl.sock: \
                   No such file or directory (os error 2)); `quoll events` still reads the event log";
        let lines = wrap(msg, 80);
        assert!(lines.len() > 2, "{lines:?}");
        assert!(lines.iter().all(|l| l.chars().count() <= 80), "{lines:?}");
        assert!(lines[1..].iter().all(|l| l.starts_with("  ")), "{lines:?}");
        let words = |s: &str| s.split_whitespace().collect::<String>();
        assert_eq!(words(&lines.join(" ")), words(msg), "nothing lost");
        assert_eq!(wrap("short one", 80), ["short one"]);
        assert!(wrap("", 80).is_empty());
    }

    #[test]
    fn manager_says_when_it_was_never_reached() {
        let m = json!({
            "config": {"enabled": true, "urls": ["wss://manager.example:8443/ws/node"]},
            "state": "waiting to reconnect",
            "link": {"ever_connected": false, "last_error": "tcp connect: Connection refused (os error 111) while trying every address of manager.example"},
        });
        let lines = manager(&m, &PLAIN);
        assert_eq!(
            lines[0],
            "manager link: waiting to reconnect (never reached)"
        );
        assert!(
            lines[1].starts_with("  last error: tcp connect"),
            "{lines:?}"
        );
        assert!(lines.iter().all(|l| l.chars().count() <= 80), "{lines:?}");
    }

    const PLAIN: Style = Style {
        width: 80,
        color: false,
    };

    #[test]
    fn width_falls_back_from_tty_to_columns_to_80() {
        assert_eq!(pick_width(Some(132), Some(100)), 132);
        assert_eq!(pick_width(Some(0), Some(100)), 100, "serial line: no size");
        assert_eq!(pick_width(None, None), 80);
        // COLUMNS is honoured down to the floor.
        assert_eq!(pick_width(None, Some(32)), 32);
        assert_eq!(pick_width(None, Some(MIN_WIDTH)), MIN_WIDTH);
        assert_eq!(pick_width(None, Some(10)), MIN_WIDTH);
        assert_eq!(pick_width(Some(12), None), MIN_WIDTH);
    }

    #[test]
    fn only_the_state_column_is_coloured() {
        let list = json!([
            {"id": "running-feed", "state": "running", "input": {"type": "udp"}},
            {"id": "stopped-ingest-east", "state": "error", "input": {"type": "srt"}},
        ]);
        let style = Style {
            width: 80,
            color: true,
        };
        let lines = flows(&list, &style);
        let want = format!("{:<22}\x1b[32mrunning\x1b[0m   udp", "running-feed");
        assert!(lines[1].starts_with(&want), "{:?}", lines[1]);
        let want = format!("{:<22}\x1b[31merror\x1b[0m     srt", "stopped-ingest-east");
        assert!(lines[2].starts_with(&want), "{:?}", lines[2]);
        // Stripped of colour, the same as the plain rendering.
        let plain = flows_lines(&list, &PLAIN);
        for (c, p) in lines.iter().zip(&plain) {
            assert_eq!(
                &c.replace("\x1b[32m", "")
                    .replace("\x1b[31m", "")
                    .replace("\x1b[0m", ""),
                p
            );
        }
        // A line cut before the state column stays plain (and within the width).
        let narrow = Style {
            width: 21,
            color: true,
        };
        for l in flows(&list, &narrow) {
            assert!(!l.contains('\x1b'), "{l:?}");
        }
    }

    #[test]
    fn long_values_are_cut_to_the_width() {
        let flows = json!([{
            "id": "a-very-long-flow-identifier-that-goes-on", "state": "running",
            "error": "x".repeat(300),
            "input": { "type": "udp", "bitrate_bps": 20_000_000, "cc_errors": 3 },
            "outputs": [{ "id": "o".repeat(200), "type": "udp", "state": "running",
                          "packets": 1, "dropped": 0, "send_errors": 0 }]
        }]);
        for width in [MIN_WIDTH, 33, 40, 80, 132] {
            let style = Style {
                width,
                color: false,
            };
            for line in flows_lines(&flows, &style) {
                assert!(line.chars().count() <= width, "{width}: {line:?}");
            }
        }
        let lines = flows_lines(&flows, &PLAIN);
        assert!(lines[1].contains("20.00"), "{lines:?}");
        assert!(lines[1].starts_with("a-very-long-flow"), "{lines:?}");
    }

    fn flows_lines(v: &Value, s: &Style) -> Vec<String> {
        flows(v, s)
    }

    #[test]
    fn colour_only_when_asked() {
        let h = json!({"status": "ok", "version": "0.1.0", "git_rev": "abc",
                       "uptime_secs": 3700, "active_flows": 1, "total_flows": 2});
        let plain = status(&h, &PLAIN);
        assert!(plain.iter().all(|l| !l.contains('\x1b')));
        assert_eq!(plain[1], "uptime 1h 1m  flows 1/2 running");
        let coloured = status(
            &h,
            &Style {
                width: 80,
                color: true,
            },
        );
        assert!(coloured[0].contains("\x1b[32mok\x1b[0m"));
    }

    #[test]
    fn a_narrow_status_keeps_its_verdict_whole() {
        let h = json!({"status": "degraded", "version": "0.1.0", "git_rev": "0123456789ab",
                       "uptime_secs": 5, "active_flows": 0, "total_flows": 0});
        let wide = status(&h, &PLAIN);
        assert_eq!(wide[0], "quoll 0.1.0 (rev 0123456789ab)  status: degraded");
        let narrow = Style {
            width: MIN_WIDTH,
            color: true,
        };
        let lines = status(&h, &narrow);
        assert_eq!(lines[0], "status: \x1b[33mdegraded\x1b[0m");
        assert_eq!(lines[1], "quoll 0.1.0 (rev 0123456789ab)");
        assert_eq!(lines[2], "uptime 5s  flows 0/0 running");
    }

    #[test]
    fn events_show_pending_marks_and_utc_times() {
        let evs = json!([
            {"seq": 7, "raised_at_ms": 1_700_000_000_000u64, "severity": "critical",
             "category": "flow", "message": "Flow input lost: boom", "delivered": false},
            {"seq": 8, "raised_at_ms": 1_700_000_001_000u64, "severity": "info",
             "category": "flow", "message": "Flow 'f' started", "delivered": true}
        ]);
        let lines = events(&evs, &PLAIN);
        assert_eq!(
            lines[0],
            "*     7 22:13:20 crit flow     Flow input lost: boom"
        );
        assert_eq!(lines[1], "      8 22:13:21 info flow     Flow 'f' started");
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(duration(5), "5s");
        assert_eq!(duration(65), "1m 5s");
        assert_eq!(duration(7_260), "2h 1m");
        assert_eq!(duration(90_000), "1d 1h");
    }
}
