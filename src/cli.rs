//! The command line: `quoll run`, `quoll check-config`, `quoll events`, `quoll --version`.

use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "\
usage: quoll run [--config PATH] [--board NAME]
                                       run the node (embedded loopback default without
                                       --config; a board profile sets paths and defaults)
       quoll check-config PATH|--default
                                       validate a config file (or the embedded
                                       default), list every problem
       quoll events [--data-dir DIR] [--json] [--follow] [--since SEQ]
                                       print the event queue
       quoll ctl [--json] status|flows|events|sessions|tunnels|manager|health
                                       ask the running daemon (see quoll ctl --help)
       quoll --version";

pub fn main() -> ExitCode {
    let mut args = lexopt::Parser::from_env();
    let sub = match args.next() {
        Ok(Some(lexopt::Arg::Value(v))) => v.to_string_lossy().into_owned(),
        Ok(Some(lexopt::Arg::Long("version"))) | Ok(Some(lexopt::Arg::Short('V'))) => {
            println!("quoll {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Ok(Some(lexopt::Arg::Long("help"))) | Ok(Some(lexopt::Arg::Short('h'))) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        _ => return usage_error("expected a subcommand"),
    };
    match sub.as_str() {
        "run" => run(args),
        "check-config" => check_config(args),
        "events" => crate::console::events::run(args),
        "ctl" => crate::console::ctl::run(args),
        // Hidden: raises events at a high rate for the crash (kill -9) tests.
        "debug-raise-events" => crate::console::events::raise_for_test(args),
        other => usage_error(&format!("unknown subcommand '{other}'")),
    }
}

fn usage_error(msg: &str) -> ExitCode {
    eprintln!("quoll: {msg}\n{USAGE}");
    ExitCode::from(2)
}

fn run(mut args: lexopt::Parser) -> ExitCode {
    let mut config: Option<PathBuf> = None;
    let mut board: Option<String> = None;
    loop {
        match args.next() {
            Ok(Some(lexopt::Arg::Long("config"))) => match args.value() {
                Ok(v) => config = Some(v.into()),
                Err(e) => return usage_error(&e.to_string()),
            },
            Ok(Some(lexopt::Arg::Long("board"))) => match args.value() {
                Ok(v) => board = Some(v.to_string_lossy().into_owned()),
                Err(e) => return usage_error(&e.to_string()),
            },
            Ok(None) => break,
            Ok(Some(other)) => {
                return usage_error(&format!("run: unexpected {}", other.unexpected()));
            }
            Err(e) => return usage_error(&e.to_string()),
        }
    }
    let board = match crate::board::selected(board.as_deref()) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("quoll: {e}");
            return ExitCode::from(2);
        }
    };
    crate::daemon::run(config, board)
}

fn check_config(mut args: lexopt::Parser) -> ExitCode {
    let (name, text) = match args.next() {
        Ok(Some(lexopt::Arg::Long("default"))) => (
            "embedded default".to_string(),
            crate::config::EMBEDDED_DEFAULT.to_string(),
        ),
        Ok(Some(lexopt::Arg::Value(v))) => {
            let path = PathBuf::from(v);
            match std::fs::read_to_string(&path) {
                Ok(t) => (path.display().to_string(), t),
                Err(e) => {
                    eprintln!("{}: cannot read: {e}", path.display());
                    return ExitCode::FAILURE;
                }
            }
        }
        _ => return usage_error("check-config needs a PATH or --default"),
    };
    if let Ok(Some(extra)) = args.next() {
        return usage_error(&format!("check-config: unexpected {}", extra.unexpected()));
    }
    // The budget of the board this command runs on ($QUOLL_BOARD, /etc/quoll/board), as
    // `quoll run` would apply it.
    let budget = match crate::board::selected(None) {
        Ok(b) => crate::board::budget(b.as_ref().map(|b| b.board.as_str())),
        Err(e) => {
            eprintln!("quoll: {e}");
            return ExitCode::from(2);
        }
    };
    // Every shape and value problem in one pass, then the budget.
    match crate::config::parse(&text)
        .map_err(crate::flow::FlowError::Invalid)
        .and_then(|cfg| {
            crate::node::admit(&cfg, budget)?;
            Ok(cfg)
        }) {
        Ok(cfg) => {
            println!("{name}: ok ({} flows)", cfg.flows.len());
            ExitCode::SUCCESS
        }
        Err(crate::flow::FlowError::Invalid(errors)) => {
            for e in &errors {
                eprintln!("{e}");
            }
            eprintln!("{name}: {} problem(s)", errors.len());
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("{e}");
            eprintln!("{name}: over this node's budget ({})", e.code());
            ExitCode::FAILURE
        }
    }
}
