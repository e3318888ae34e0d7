//! The command line's shape: every command, argument and help text (clap derive). `mod.rs`
//! runs what it parsed.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

use super::offsets;
use crate::telemetry::LogFormat;

pub(super) const EXIT_CODES: &str = "Exit codes:
  0  success (run: stopped by SIGTERM/SIGINT after a final checkpoint, or by `flumen stop`)
  1  runtime failure (Kafka unreachable after retries, fenced by another instance, I/O, no daemon to talk to)
  2  invalid config or usage
  3  state cannot be restored consistently (no snapshot matches the committed offsets, a snapshot or savepoint is corrupt, or a savepoint does not fit the pipeline)
  4  a record cannot be processed (the message names topic/partition/offset)";

/// How `list` and `inspect` print.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(super) enum Output {
    Text,
    Json,
}

#[derive(Debug, Parser)]
#[command(name = "flumen", version, about = "Exactly-once stateful stream processing for Apache Kafka", after_help = EXIT_CODES)]
pub struct Cli {
    /// Log line format on stderr (the level comes from RUST_LOG, default info).
    #[arg(long, global = true, value_enum, default_value = "text")]
    log_format: LogFormat,
    #[command(subcommand)]
    pub(super) command: Command,
}

impl Cli {
    pub fn log_format(&self) -> LogFormat {
        self.log_format
    }
}

#[derive(Debug, Subcommand)]
pub(super) enum Command {
    /// Run the pipelines of a config file until SIGTERM or SIGINT.
    Run {
        /// The pipeline config (TOML).
        #[arg(long, short)]
        config: PathBuf,
        /// Start partitions whose committed offsets match no snapshot with EMPTY state instead
        /// of refusing to start (that partition's state is lost).
        #[arg(long)]
        allow_empty_state: bool,
        /// Restore state and offsets from this savepoint (a savepoint directory, or one
        /// holding a savepoint per pipeline) before processing.
        #[arg(long, short = 's', value_name = "DIR")]
        from_savepoint: Option<PathBuf>,
        /// With --from-savepoint: drop the state of operators the config no longer has
        /// instead of refusing to start.
        #[arg(long, requires = "from_savepoint")]
        allow_non_restored_state: bool,
        /// With --from-savepoint: restore it even when the group's last commit shows it was
        /// restored already and the pipeline went on from it (by default such a start
        /// continues from the latest checkpoint, so a repeated command line after a crash
        /// does not roll back and produce everything since again).
        #[arg(long, requires = "from_savepoint")]
        restore_again: bool,
    },
    /// Print the completion script of a shell (bash, zsh, fish, elvish, powershell) to stdout:
    /// `flumen completions bash > /etc/bash_completion.d/flumen`.
    Completions {
        /// The shell to complete for.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Check a config file without touching the network; print every problem.
    Validate {
        /// The pipeline config (TOML).
        #[arg(long, short)]
        config: PathBuf,
        /// How it is printed: text, or json for scripts.
        #[arg(long, value_enum, default_value = "text")]
        output: Output,
    },
    /// Take a savepoint of every pipeline of a running daemon, then stop it (exit 0).
    Stop {
        /// The pipeline config (TOML).
        #[arg(long, short)]
        config: PathBuf,
        /// Write the savepoints to DIR/<pipeline> (default: under checkpoint.savepoint_dir).
        #[arg(long, value_name = "DIR")]
        savepoint: Option<PathBuf>,
        /// How long to wait for the savepoints.
        #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
        timeout: Duration,
        /// How the savepoints taken are printed: text, or json for scripts.
        #[arg(long, value_enum, default_value = "text")]
        output: Output,
    },
    /// Savepoints: trigger on a running daemon, list, inspect, delete.
    #[command(subcommand)]
    Savepoint(SavepointCommand),
    /// Checkpoints (automatic, disposable): list and inspect.
    #[command(subcommand)]
    Checkpoint(CheckpointCommand),
    /// The consumer group's offsets of a pipeline: show, and reset with state kept consistent.
    #[command(subcommand)]
    Offsets(OffsetsCommand),
    /// A running daemon's pipelines: phase, liveness and readiness, partitions with their
    /// offsets, lag and state, the last checkpoints (over its [admin] listener).
    Status {
        /// The pipeline config (TOML) of the daemon; it needs [admin] listen.
        #[arg(long, short)]
        config: PathBuf,
        /// How it is printed: text, or json for scripts.
        #[arg(long, value_enum, default_value = "text")]
        output: Output,
    },
    /// Check transaction settings against the broker, partition counts against the latest
    /// checkpoint, and end transactions Flumen's ids left open (--abort-hanging).
    Doctor {
        /// The pipeline config (TOML).
        #[arg(long, short)]
        config: PathBuf,
        /// Re-register each pipeline's transactional id (pipeline stopped), which aborts any
        /// transaction it left open.
        #[arg(long)]
        abort_hanging: bool,
        /// How it is printed: text, or json for scripts.
        #[arg(long, value_enum, default_value = "text")]
        output: Output,
    },
}

#[derive(Debug, Subcommand)]
pub(super) enum OffsetsCommand {
    /// Committed offset, log range and lag per partition, and the group's live members.
    Show {
        /// The pipeline config (TOML).
        #[arg(long, short)]
        config: PathBuf,
        /// The pipeline's name in the config.
        #[arg(long)]
        pipeline: String,
        /// How it is printed: text, or json for scripts.
        #[arg(long, value_enum, default_value = "text")]
        output: Output,
    },
    /// Move the group's offsets (dry run unless --execute). The pipeline must be stopped.
    Reset {
        /// The pipeline config (TOML).
        #[arg(long, short)]
        config: PathBuf,
        /// The pipeline's name in the config.
        #[arg(long)]
        pipeline: String,
        /// `TOPIC` or `TOPIC:0,2`: the source partitions to move (default: all).
        #[arg(long)]
        topic: Option<String>,
        #[command(flatten)]
        scenario: offsets::ScenarioArgs,
        /// Start the keyed state the move invalidates EMPTY (required when stateful offsets
        /// move, unless --to-savepoint).
        #[arg(long)]
        drop_state: bool,
        /// Apply the plan (without it: print it only).
        #[arg(long, conflicts_with = "dry_run")]
        execute: bool,
        /// Print the plan and change nothing (the default; as kafka-consumer-groups).
        #[arg(long)]
        dry_run: bool,
        /// Print the plan as `topic,partition,offset` lines, the file --from-file takes.
        #[arg(long, conflicts_with = "output")]
        export: bool,
        /// How the plan is printed.
        #[arg(long, value_enum, default_value = "text")]
        output: Output,
    },
}

#[derive(Debug, Subcommand)]
pub(super) enum SavepointCommand {
    /// Take a savepoint of every pipeline of a running daemon; it keeps running.
    Trigger {
        /// The pipeline config (TOML).
        #[arg(long, short)]
        config: PathBuf,
        /// Write the savepoints to DIR/<pipeline> (default: under checkpoint.savepoint_dir).
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        /// Only this pipeline (default: every pipeline of the daemon).
        #[arg(long)]
        pipeline: Option<String>,
        /// How long to wait for the savepoints.
        #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
        timeout: Duration,
        /// How the savepoints taken are printed: text, or json for scripts.
        #[arg(long, value_enum, default_value = "text")]
        output: Output,
    },
    /// Take a savepoint of a pipeline however many threads and instances run it: while they
    /// run, one cut by barriers (their sources pause for about a checkpoint interval); when all
    /// are stopped, from the checkpoints the group's commits name.
    Create {
        /// The pipeline config (TOML).
        #[arg(long, short)]
        config: PathBuf,
        /// The pipeline's name in the config.
        #[arg(long)]
        pipeline: String,
        /// Stop every instance first (each takes a final checkpoint; a daemon with no other
        /// pipeline exits 0), then take the savepoint: nothing is output after it.
        #[arg(long)]
        stop: bool,
        /// Write the savepoint to DIR/<pipeline> (default: under checkpoint.savepoint_dir).
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        /// How the savepoint taken is printed: text, or json for scripts.
        #[arg(long, value_enum, default_value = "text")]
        output: Output,
    },
    /// List the savepoints under checkpoint.savepoint_dir (or --dir).
    List {
        /// The pipeline config (TOML).
        #[arg(long, short, required_unless_present = "dir")]
        config: Option<PathBuf>,
        /// A directory of savepoints (default: the config's checkpoint.savepoint_dir).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// How it is printed: text, or json for scripts.
        #[arg(long, value_enum, default_value = "text")]
        output: Output,
    },
    /// Show a savepoint: operators, partitions, offsets, key counts, sizes; verify checksums.
    Inspect {
        /// The savepoint directory.
        path: PathBuf,
        /// Print this key's state in every operator.
        #[arg(long)]
        key: Option<String>,
        /// How it is printed: text, or json for scripts.
        #[arg(long, value_enum, default_value = "text")]
        output: Output,
    },
    /// Delete a savepoint directory (refuses anything that is not one).
    Delete {
        /// The savepoint directory to delete.
        path: PathBuf,
        /// How it is printed: text, or json for scripts.
        #[arg(long, value_enum, default_value = "text")]
        output: Output,
    },
}

#[derive(Debug, Subcommand)]
pub(super) enum CheckpointCommand {
    /// List the checkpoints of every pipeline (or one).
    List {
        /// The pipeline config (TOML).
        #[arg(long, short)]
        config: PathBuf,
        /// Only this pipeline (default: every one).
        #[arg(long)]
        pipeline: Option<String>,
        /// How it is printed: text, or json for scripts.
        #[arg(long, value_enum, default_value = "text")]
        output: Output,
    },
    /// Show one checkpoint (default: the newest) of a pipeline.
    Inspect {
        /// The pipeline config (TOML).
        #[arg(long, short)]
        config: PathBuf,
        /// The pipeline's name in the config.
        #[arg(long)]
        pipeline: String,
        /// Whose checkpoint: a transactional id (default: this config's instance).
        #[arg(long)]
        writer: Option<String>,
        /// The checkpoint id (default: the newest).
        #[arg(long)]
        id: Option<u64>,
        /// How it is printed: text, or json for scripts.
        #[arg(long, value_enum, default_value = "text")]
        output: Output,
    },
}
