//! The `flumen` command line. One file per subcommand; each returns the process exit code.
//! This is the only module (with `main.rs`) that uses `anyhow`.

mod run;
mod validate;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::telemetry::LogFormat;

/// Exit codes, documented in `flumen --help`.
pub mod exit {
    pub const OK: u8 = 0;
    pub const FAILURE: u8 = 1;
    pub const CONFIG: u8 = 2;
    pub const STATE: u8 = 3;
    pub const BAD_RECORD: u8 = 4;
}

const EXIT_CODES: &str = "Exit codes:
  0  success (run: stopped by SIGTERM/SIGINT after a final checkpoint)
  1  runtime failure (Kafka unreachable after retries, fenced by another instance, I/O)
  2  invalid config or usage
  3  state cannot be restored consistently (no snapshot matches the committed offsets, or a snapshot is corrupt)
  4  a record cannot be processed (the message names topic/partition/offset)";

#[derive(Debug, Parser)]
#[command(name = "flumen", version, about = "Exactly-once stateful stream processing for Apache Kafka", after_help = EXIT_CODES)]
pub struct Cli {
    /// Log line format on stderr (the level comes from RUST_LOG, default info).
    #[arg(long, global = true, value_enum, default_value = "text")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

impl Cli {
    pub fn log_format(&self) -> LogFormat {
        self.log_format
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the pipelines of a config file until SIGTERM or SIGINT.
    Run {
        /// The pipeline config (TOML).
        #[arg(long, short)]
        config: PathBuf,
        /// Start partitions whose committed offsets match no snapshot with EMPTY state instead
        /// of refusing to start (that partition's state is lost).
        #[arg(long)]
        allow_empty_state: bool,
    },
    /// Check a config file without touching the network; print every problem.
    Validate {
        #[arg(long, short)]
        config: PathBuf,
    },
}

/// Runs the parsed command line and returns the process exit code.
pub fn run(cli: Cli) -> ExitCode {
    let code = match cli.command {
        Command::Run {
            config,
            allow_empty_state,
        } => run::run(&config, allow_empty_state),
        Command::Validate { config } => validate::run(&config),
    };
    ExitCode::from(code)
}

/// Prints a config load failure, one problem per line, and returns its exit code.
fn report_config_error(e: &crate::config::Error) -> u8 {
    match e {
        crate::config::Error::Invalid { path, problems } => {
            for p in problems {
                eprintln!("{}: {p}", path.display());
            }
            eprintln!("{}: {} problem(s)", path.display(), problems.len());
        }
        other => eprintln!("error: {}", crate::pipeline::chain(other)),
    }
    exit::CONFIG
}
