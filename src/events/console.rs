//! `quoll events`: the event queue on the serial console.

pub fn run(args: lexopt::Parser) -> std::process::ExitCode {
    let _ = args;
    eprintln!("quoll events: not available in this build");
    std::process::ExitCode::FAILURE
}
