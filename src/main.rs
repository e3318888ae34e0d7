use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = flumen::cli::Cli::parse();
    flumen::telemetry::init(cli.log_format());
    flumen::cli::run(cli)
}
