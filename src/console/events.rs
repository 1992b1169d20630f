//! `quoll events`: the event queue on the serial console, and the hidden
//! `quoll debug-raise-events` the crash tests drive.
//!
//! `quoll events` opens the segment files read-only and takes no lock, so it works the same
//! while the daemon runs and when it is stopped; it never changes a file (a torn tail is
//! left for the daemon's recovery to cut).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use serde_json::Value;

use crate::config::StorageConfig;
use crate::events::log::read_all;
use crate::events::storage::FsStorage;
use crate::events::{Event, Events, Record, Severity};

/// Width of the serial console.
const WIDTH: usize = 80;
/// Indent of a wrapped message line.
const INDENT: usize = 4;

struct Args {
    data_dir: PathBuf,
    json: bool,
    follow: bool,
    since: u64,
}

/// Why `quoll events`' command line was refused (exit status 2).
#[derive(Debug)]
enum ArgsError {
    /// lexopt's own: a missing value, a value that is not UTF-8.
    Parse(lexopt::Error),
    /// An option or argument `quoll events` does not take.
    Unexpected(lexopt::Error),
    /// `--since` is not a sequence number.
    Since(std::ffi::OsString),
}

impl std::fmt::Display for ArgsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ArgsError::Parse(e) => e.fmt(f),
            ArgsError::Unexpected(e) => write!(f, "unexpected {e}"),
            ArgsError::Since(v) => write!(f, "--since: {v:?} is not a sequence number"),
        }
    }
}

impl std::error::Error for ArgsError {}

impl From<lexopt::Error> for ArgsError {
    fn from(e: lexopt::Error) -> Self {
        ArgsError::Parse(e)
    }
}

fn parse_args(mut args: lexopt::Parser) -> Result<Args, ArgsError> {
    // On a box the board profile (from $QUOLL_BOARD or /etc/quoll/board) knows the data
    // partition, so `quoll events` on the serial console needs no flag.
    let default_dir = match crate::board::selected(None) {
        Ok(Some(b)) => b.paths.data_dir,
        _ => StorageConfig::DEFAULT_DATA_DIR.into(),
    };
    let mut a = Args {
        data_dir: default_dir,
        json: false,
        follow: false,
        since: 0,
    };
    loop {
        match args.next()? {
            Some(lexopt::Arg::Long("data-dir")) => {
                a.data_dir = args.value()?.into();
            }
            Some(lexopt::Arg::Long("json")) => a.json = true,
            Some(lexopt::Arg::Long("follow")) | Some(lexopt::Arg::Short('f')) => a.follow = true,
            Some(lexopt::Arg::Long("since")) => {
                let v = args.value()?;
                a.since = match v.to_string_lossy().parse() {
                    Ok(n) => n,
                    Err(_) => return Err(ArgsError::Since(v)),
                };
            }
            Some(other) => return Err(ArgsError::Unexpected(other.unexpected())),
            None => return Ok(a),
        }
    }
}

pub fn run(args: lexopt::Parser) -> ExitCode {
    let args = match parse_args(args) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("quoll events: {e}");
            return ExitCode::from(2);
        }
    };
    if !args.data_dir.is_dir() {
        eprintln!(
            "quoll events: {}: no event log here (is storage.data_dir elsewhere?)",
            args.data_dir.display()
        );
        return ExitCode::FAILURE;
    }
    let mut out = std::io::stdout().lock();
    let mut shown = args.since.saturating_sub(1);
    let mut first = true;
    loop {
        let mut storage = FsStorage::read_only(&args.data_dir);
        let (records, acked, corrupt) = match read_all(&mut storage) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("quoll events: {}: {e}", args.data_dir.display());
                return ExitCode::FAILURE;
            }
        };
        let new: Vec<&Record> = records.iter().filter(|r| r.seq > shown).collect();
        if first && !args.json {
            let pending = records.iter().filter(|r| r.seq > acked).count();
            let _ = writeln!(out, "{}", summary(records.len(), pending, corrupt));
            let _ = writeln!(
                out,
                "  {:>7} {:<19} {:<4} {:<10} FLOW",
                "SEQ", "RAISED (UTC)", "SEV", "CATEGORY"
            );
        }
        first = false;
        for r in &new {
            let text = if args.json {
                json_line(r, r.seq <= acked)
            } else {
                text_lines(r, r.seq <= acked)
            };
            if writeln!(out, "{text}").is_err() {
                return ExitCode::SUCCESS; // closed pipe (| head)
            }
        }
        if let Some(last) = new.last() {
            shown = last.seq;
        }
        let _ = out.flush();
        if !args.follow {
            return ExitCode::SUCCESS;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// One short line (the directory is left out: a long path would not fit 80 columns).
fn summary(total: usize, pending: usize, corrupt: u64) -> String {
    let mut s = format!("# {total} events, {pending} not yet delivered (marked *)");
    if corrupt > 0 {
        s.push_str(&format!(", {corrupt} damaged skipped"));
    }
    s
}

/// One JSON object per line: the record, `raised_at` as RFC 3339 and `delivered`.
pub fn json_line(r: &Record, delivered: bool) -> String {
    let mut v = serde_json::to_value(r).unwrap_or(Value::Null);
    if let Value::Object(m) = &mut v {
        m.insert("raised_at".into(), r.raised_at().into());
        m.insert("delivered".into(), delivered.into());
    }
    v.to_string()
}

/// The 80-column view: a header line (mark, seq, time, severity, category, flow), then the
/// message wrapped at word boundaries.
pub fn text_lines(r: &Record, delivered: bool) -> String {
    let mark = if delivered { ' ' } else { '*' };
    let t = r.raised_at(); // 2026-04-02T12:00:00.000Z
    let when = format!("{} {}", &t[..10], &t[11..19]);
    let sev = match r.event.severity {
        Severity::Info => "INFO",
        Severity::Warning => "WARN",
        Severity::Critical => "CRIT",
    };
    let flow = r.event.flow_id.as_deref().unwrap_or("-");
    let mut head = format!(
        "{mark} {:>7} {when} {sev} {:<10} {flow}",
        r.seq,
        r.event.category.as_str()
    );
    truncate_to(&mut head, WIDTH);
    let mut out = head;
    for line in wrap(&r.event.message, WIDTH - INDENT) {
        out.push('\n');
        out.push_str(&" ".repeat(INDENT));
        out.push_str(&line);
    }
    out
}

fn truncate_to(s: &mut String, width: usize) {
    if s.chars().count() > width {
        let cut: String = s.chars().take(width - 3).collect();
        *s = cut + "...";
    }
}

/// Greedy word wrap; a word longer than the width is cut.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        let mut word: String = word.to_owned();
        while word.chars().count() > width {
            if !line.is_empty() {
                lines.push(std::mem::take(&mut line));
            }
            let head: String = word.chars().take(width).collect();
            word = word.chars().skip(width).collect();
            lines.push(head);
        }
        let needed = if line.is_empty() { 0 } else { 1 } + word.chars().count();
        if line.chars().count() + needed > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(&word);
    }
    if !line.is_empty() || lines.is_empty() {
        lines.push(line);
    }
    lines
}

// ---- debug-raise-events ------------------------------------------------------------------

/// `quoll debug-raise-events --data-dir DIR [--run N] [--count N] [--budget BYTES]
/// [--window N] [--delay-ms MS]`
///
/// Opens the log like the daemon does, prints `start <next seq>`, then raises events as
/// fast as the log takes them (at most `--window` (2000) not yet durable, so the queue never
/// overflows) and prints `durable <seq>` after every commit. A line is printed only after
/// its `fdatasync` returned, so every seq up to the last line printed must survive a kill.
/// Each event carries `run` and `n` (its index in the run) in its details.
pub fn raise_for_test(mut args: lexopt::Parser) -> ExitCode {
    let mut window: u64 = 2000;
    let mut delay_ms = StorageConfig::DEFAULT_EVENT_COMMIT_MAX_DELAY_MS;
    let mut data_dir: Option<PathBuf> = None;
    let mut run: u64 = 0;
    let mut count: u64 = u64::MAX;
    let mut budget = StorageConfig::DEFAULT_EVENT_LOG_MAX_BYTES;
    loop {
        let parsed = match args.next() {
            Ok(Some(lexopt::Arg::Long("data-dir"))) => {
                args.value().map(|v| data_dir = Some(v.into()))
            }
            Ok(Some(lexopt::Arg::Long(
                k @ ("run" | "count" | "budget" | "window" | "delay-ms"),
            ))) => {
                let k = k.to_owned();
                args.value().map(|v| {
                    let n = v.to_string_lossy().parse().unwrap_or(0);
                    match k.as_str() {
                        "run" => run = n,
                        "count" => count = n,
                        "window" => window = n.max(1),
                        "delay-ms" => delay_ms = n.max(1),
                        _ => budget = n,
                    }
                })
            }
            Ok(None) => break,
            Ok(Some(other)) => {
                eprintln!("debug-raise-events: unexpected {}", other.unexpected());
                return ExitCode::from(2);
            }
            Err(e) => Err(e),
        };
        if let Err(e) = parsed {
            eprintln!("debug-raise-events: {e}");
            return ExitCode::from(2);
        }
    }
    let Some(dir) = data_dir else {
        eprintln!("debug-raise-events: --data-dir is required");
        return ExitCode::from(2);
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("debug-raise-events: {e}");
            return ExitCode::FAILURE;
        }
    };
    let storage = StorageConfig {
        event_log_max_bytes: budget,
        event_commit_max_delay_ms: delay_ms,
        ..StorageConfig::default()
    };
    rt.block_on(async move {
        let (events, _) = Events::open(&dir, storage.log_config());
        let mut durable = events.durable_watch().expect("a durable log");
        let mut stdout = std::io::stdout();
        let start = events.status().next_seq;
        let _ = writeln!(stdout, "start {start}");
        let mut n = 0u64;
        let mut last_seq = 0u64;
        loop {
            let done = *durable.borrow_and_update();
            while n < count && last_seq.saturating_sub(done) < window {
                last_seq = events.raise(
                    Event::config_updated()
                        .with_detail("run", run)
                        .with_detail("n", n),
                );
                n += 1;
            }
            if n >= count && done >= last_seq {
                break;
            }
            if durable.changed().await.is_err() {
                break;
            }
            let d = *durable.borrow();
            if writeln!(stdout, "durable {d}").is_err() {
                break;
            }
        }
        events.close();
        let _ = writeln!(stdout, "done {last_seq}");
    });
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(message: &str, flow: Option<&str>) -> Record {
        let mut e = Event::flow_started("f1");
        e.message = message.into();
        e.flow_id = flow.map(Into::into);
        Record {
            seq: 42,
            raised_at_ms: 1_775_131_200_000,
            event: e,
        }
    }

    #[test]
    fn text_view_fits_80_columns() {
        let long = "word ".repeat(60) + &"x".repeat(200);
        let flow = "a-very-long-flow-identifier-that-goes-on-and-on-and-on-for-ever";
        let text = text_lines(&record(&long, Some(flow)), false);
        for line in text.lines() {
            assert!(line.chars().count() <= WIDTH, "too wide: {line:?}");
        }
        let first = text.lines().next().unwrap();
        assert!(first.starts_with("*      42 2026-04-02 12:00:00 INFO flow"));
        let short = text_lines(&record("Flow 'f1' started", Some("f1")), true);
        assert_eq!(
            short,
            "       42 2026-04-02 12:00:00 INFO flow       f1\n    Flow 'f1' started"
        );
    }

    #[test]
    fn json_line_marks_delivery() {
        let v: Value = serde_json::from_str(&json_line(&record("m", None), true)).unwrap();
        assert_eq!(v["seq"], 42);
        assert_eq!(v["delivered"], true);
        assert_eq!(v["raised_at"], "2026-04-02T12:00:00.000Z");
        assert_eq!(v["severity"], "info");
        assert!(v.get("flow_id").is_none());
    }
}
