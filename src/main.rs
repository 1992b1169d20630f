fn main() -> std::process::ExitCode {
    quoll::cli::main()
}
