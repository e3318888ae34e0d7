use std::process::ExitCode;

fn main() -> ExitCode {
    flumen::cli::main()
}
