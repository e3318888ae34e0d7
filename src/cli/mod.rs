//! The `flumen` command line. One file per subcommand; each returns the process exit code.
//! This is the only module (with `main.rs`) that uses `anyhow`.

mod args;
mod checkpoint;
mod doctor;
mod offsets;
mod run;
mod savepoint;
mod status;
mod validate;

use crate::pipeline::custom::Operators;
use std::process::ExitCode;
use std::time::Duration;

pub use args::Cli;
use args::{CheckpointCommand, Command, OffsetsCommand, Output, SavepointCommand};

/// Exit codes, documented in `flumen --help`.
pub mod exit {
    pub const OK: u8 = 0;
    pub const FAILURE: u8 = 1;
    pub const CONFIG: u8 = 2;
    pub const STATE: u8 = 3;
    pub const BAD_RECORD: u8 = 4;
}

/// The whole `flumen` program with the operators registered by
/// [`crate::register_operator`] (none in the `flumen` binary itself).
pub fn main() -> ExitCode {
    main_with(&Operators::registered())
}

/// The whole `flumen` program: parses the command line, sets up logging, runs, with the custom
/// operators a binary of its own offers (`Operators::new().with("name", operator)`).
pub fn main_with(operators: &Operators) -> ExitCode {
    let cli = <Cli as clap::Parser>::parse();
    crate::telemetry::init(cli.log_format());
    run_with(cli, operators)
}

/// Runs the parsed command line with the operators of [`crate::register_operator`].
pub fn run(cli: Cli) -> ExitCode {
    run_with(cli, &Operators::registered())
}

/// Runs the parsed command line and returns the process exit code.
pub fn run_with(cli: Cli, ops: &Operators) -> ExitCode {
    let code = match cli.command {
        Command::Completions { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut command, "flumen", &mut std::io::stdout());
            exit::OK
        }
        Command::Run {
            config,
            allow_empty_state,
            from_savepoint,
            allow_non_restored_state,
            restore_again,
        } => run::run(
            ops,
            &config,
            crate::pipeline::Options {
                allow_empty_state,
                allow_non_restored_state,
                restore_again,
            },
            from_savepoint.as_deref(),
        ),
        Command::Validate { config, output } => validate::run(ops, &config, output),
        Command::Stop {
            config,
            savepoint: dir,
            timeout,
            output,
        } => savepoint::trigger(ops, &config, (dir, None), true, timeout, output),
        Command::Savepoint(c) => match c {
            SavepointCommand::Trigger {
                config,
                dir,
                pipeline,
                timeout,
                output,
            } => savepoint::trigger(ops, &config, (dir, pipeline), false, timeout, output),
            SavepointCommand::Create {
                config,
                pipeline,
                stop,
                dir,
                output,
            } => savepoint::create(ops, &config, &pipeline, (dir, stop), output),
            SavepointCommand::List {
                config,
                dir,
                output,
            } => savepoint::list(ops, config.as_deref(), dir.as_deref(), output),
            SavepointCommand::Inspect { path, key, output } => {
                savepoint::inspect(&path, key.as_deref(), output)
            }
            SavepointCommand::Delete { path, output } => savepoint::delete(&path, output),
        },
        Command::Offsets(OffsetsCommand::Show {
            config,
            pipeline,
            output,
        }) => offsets::show(ops, &config, &pipeline, output),
        Command::Offsets(OffsetsCommand::Reset {
            config,
            pipeline,
            topic,
            scenario,
            drop_state,
            execute,
            dry_run: _,
            export,
            output,
        }) => offsets::reset(&offsets::ResetArgs {
            ops,
            config: &config,
            pipeline: &pipeline,
            topic: topic.as_deref(),
            scenario: &scenario,
            drop_state,
            execute,
            export,
            output,
        }),
        Command::Status { config, output } => status::run(ops, &config, output),
        Command::Doctor {
            config,
            abort_hanging,
            output,
        } => doctor::run(ops, &config, abort_hanging, output),
        Command::Checkpoint(c) => match c {
            CheckpointCommand::List {
                config,
                pipeline,
                output,
            } => checkpoint::list(ops, &config, pipeline.as_deref(), output),
            CheckpointCommand::Inspect {
                config,
                pipeline,
                writer,
                id,
                output,
            } => checkpoint::inspect(ops, &config, &pipeline, writer.as_deref(), id, output),
        },
    };
    ExitCode::from(code)
}

/// Loads a config for a command that needs only its paths, printing problems on failure.
fn load_config(ops: &Operators, path: &std::path::Path) -> Result<crate::config::Config, u8> {
    crate::config::load(path, &ops.names()).map_err(|e| report_config_error(&e))
}

/// Prints `value` as pretty JSON on stdout.
fn print_json(value: &impl serde::Serialize) -> u8 {
    match serde_json::to_string_pretty(value) {
        Ok(s) => {
            println!("{s}");
            exit::OK
        }
        Err(e) => {
            eprintln!("error: {e}");
            exit::FAILURE
        }
    }
}

/// `2026-11-24T09:00:00.123Z` from Unix milliseconds.
fn time_of(unix_ms: u64) -> String {
    let t = std::time::UNIX_EPOCH + Duration::from_millis(unix_ms);
    humantime::format_rfc3339_millis(t).to_string()
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

#[cfg(test)]
mod tests;
