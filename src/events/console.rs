//! `quoll events`: the event queue on the serial console.

pub fn run(args: lexopt::Parser) -> std::process::ExitCode {
    let _ = args;
    eprintln!("quoll events: not available in this build");
    std::process::ExitCode::FAILURE
}

/// `quoll debug-raise-events`: for the real-process crash tests.
pub fn raise_for_test(args: lexopt::Parser) -> std::process::ExitCode {
    let _ = args;
    eprintln!("quoll debug-raise-events: not available in this build");
    std::process::ExitCode::FAILURE
}
