//! The engine. Each pipeline runs on its own OS thread (like a Kafka Streams StreamThread):
//! every step of its loop (poll, RocksDB, the transaction calls, fsync) blocks, so none of it
//! may run on the async runtime, and one thread per pipeline keeps the checkpoint barrier
//! trivial: while the thread checkpoints, it takes no input.
//!
//! - [`task`]: the consume → process → checkpoint loop of one pipeline incarnation.
//! - [`txn`]: the transaction every write goes through.
//! - [`topology`]: which topics the pipeline reads and each task's role.
//! - [`keyed`]: the keyed step of a record, one file per operator kind, free of I/O.
//! - [`operator`]: what each built-in operator does to a record, free of I/O.
//! - [`run`] (here): the restart strategy around incarnations; [`freeze`]: whether the
//!   process was frozen meanwhile (then it exits instead of restarting).

pub mod aggregate;
pub mod custom;
pub mod dedupe;
mod freeze;
pub mod keyed;
pub mod operator;
pub mod rescale;
pub mod state_keys;
pub mod stream_join;
pub mod table_join;
mod task;
pub mod timers;
pub mod topology;
pub mod txn;
pub mod window;

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::checkpoint;
use crate::checkpoint::savepoint::{self, Savepoint};
use crate::config::{Config, PipelineConfig};
use crate::kafka;
use crate::position::{NextOffset, Partition};
use crate::state::{self, StateEnv};

pub use task::{Runner, end_stop, request_stop};

/// How `run` treats state it cannot match to the group's committed offsets.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Start partitions whose committed offsets match no snapshot with empty state, instead
    /// of refusing to start. Loses that state; for operators who know why.
    pub allow_empty_state: bool,
    /// On restore from a savepoint, skip the state of operators the pipeline no longer has.
    pub allow_non_restored_state: bool,
    /// Restore the savepoint even if the group's commits show it restored already (a
    /// `--from-savepoint` repeated by a service manager after a crash is not applied again).
    pub restore_again: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{topic}/{partition} offset {offset}: {stage}: {message}")]
    Record {
        topic: String,
        partition: i32,
        offset: i64,
        stage: &'static str,
        message: String,
        /// The failing operator's `on_error` override, if it has one.
        policy: Option<crate::config::OnError>,
    },
    /// A closing window's result could not be made or produced (no input record to skip:
    /// the pipeline stops, naming the window).
    #[error("{partition}: window [{start}, {end}) of key {key:?}: {message}")]
    Window {
        partition: Partition,
        key: String,
        start: i64,
        end: i64,
        message: String,
    },
    /// A custom operator's timer failed (no input record to skip: the pipeline stops).
    #[error("{partition}: timer at {at} of key {key:?}: {message}")]
    Timer {
        partition: Partition,
        key: String,
        at: i64,
        message: String,
    },
    #[error(transparent)]
    Kafka(#[from] kafka::Error),
    #[error(transparent)]
    State(#[from] state::Error),
    #[error(transparent)]
    Checkpoint(#[from] checkpoint::store::Error),
    #[error(transparent)]
    Remote(#[from] checkpoint::remote::Error),
    #[error(transparent)]
    Savepoint(#[from] savepoint::Error),
    #[error("{0}")]
    PipelineRunning(String),
    #[error("{0}")]
    StateChoice(String),
    #[error("online savepoint: {0}")]
    Cut(String),
    #[error("cannot restore savepoint {}: {message}", dir.display())]
    SavepointMismatch {
        dir: std::path::PathBuf,
        message: String,
    },
    #[error(
        "{partition}: the group committed offset {committed}, but no checkpoint in {dir} has a snapshot at that offset (newest: {newest}); \
         refusing to start, as that would lose or double state. Restore the checkpoint directory, or pass --allow-empty-state to start this partition empty"
    )]
    NoMatchingSnapshot {
        partition: Partition,
        committed: NextOffset,
        newest: String,
        dir: String,
    },
    #[error(
        "{partition}: the group's committed offset {committed} is below the log start {log_start} (log end {log_end}): \
         records {committed}..{log_start} were deleted (retention, or delete-records) before this pipeline processed them. \
         Nothing was skipped; the pipeline stops. {remedy}"
    )]
    OffsetOutOfRange {
        partition: Partition,
        committed: NextOffset,
        log_start: i64,
        log_end: i64,
        /// What the operator can do, with the command.
        remedy: String,
    },
    #[error(
        "{partition}: the group's committed offset {committed} is beyond the log end {log_end} (log start {log_start}): \
         the broker no longer has records this pipeline processed and committed (an unclean leader election, a broker \
         whose disk lost its latest writes, a topic deleted and created again). Nothing is read past them; the pipeline \
         stops. {remedy}"
    )]
    OffsetBeyondLogEnd {
        partition: Partition,
        committed: NextOffset,
        log_start: i64,
        log_end: i64,
        remedy: String,
    },
    #[error(
        "{partition}: {message}; refusing to start, as any other snapshot would lose or repeat that checkpoint's work. \
         Restore the checkpoint directory, or pass --allow-empty-state to start this partition empty"
    )]
    NamedCheckpointMissing {
        partition: Partition,
        /// Which checkpoint the commit names, and why it cannot be restored.
        message: String,
    },
    #[error(
        "the outcome of committing checkpoint {0} is unknown after retries; restarting to settle it"
    )]
    UnknownCommitOutcome(checkpoint::CheckpointId),
    #[error(
        "the transactional producer failed fatally (fenced by another instance, or a fatal broker error): {0}"
    )]
    Fatal(kafka::Error),
    /// The process was frozen longer than the group session (`freeze.rs`) and then failed:
    /// another instance may own this pipeline thread's partitions and transactional id now.
    #[error(
        "this process was frozen for {frozen:?}, longer than the group session timeout: another instance may own its partitions and transactional id now, so it stops instead of restarting in-process; the failure after the freeze: {error}"
    )]
    Frozen { frozen: Duration, error: Box<Error> },
    /// The consumer's static membership was taken by its own rejoin after its session
    /// expired (librdkafka issue 3437), not by a newer instance: the producer still owns the
    /// transactional id (`Producer::ownership`). Restarts in-process.
    #[error(
        "the consumer was fenced by its own rejoin after its session expired (the producer still owns transactional id {transactional_id}, so no other instance has taken over): {error}"
    )]
    Rejoined {
        transactional_id: String,
        error: Box<Error>,
    },
    /// The consumer's static membership was taken and the producer no longer owns its
    /// transactional id, or cannot tell: stop (rule 3).
    #[error(
        "fenced as a static member of the group, and for transactional id {transactional_id} {verdict}: {error}"
    )]
    Fenced {
        transactional_id: String,
        verdict: &'static str,
        error: Box<Error>,
    },
    /// A panic outside the processing of one record (which is that record's error): the
    /// daemon stops non-zero, never silently with one pipeline less.
    #[error("panicked: {0}")]
    Panicked(String),
    /// The schema registry cannot be reached: restart with backoff and ask again.
    #[error("{0}")]
    SchemaRegistry(String),
    /// A sink's schema is refused by the schema registry, or has another id there.
    #[error("sink {topic}: {message}")]
    SinkSchema { topic: String, message: String },
}

impl Error {
    /// A decode error of a record: the registry's outage is the pipeline's (it restarts and
    /// tries again), anything else is the record's (its error policy applies).
    pub(crate) fn decode(e: crate::codec::Error, record: impl FnOnce(String) -> Self) -> Self {
        match e {
            crate::codec::Error::Registry(m) => Self::SchemaRegistry(m),
            other => record(other.to_string()),
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// What the daemon should do with an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// A record cannot be processed: stop (until the error policy of a later issue).
    BadRecord,
    /// State cannot be restored consistently: stop, the operator must act.
    State,
    /// Fenced or fatal: stop; restarting in-process would only be fenced again.
    Fatal,
    /// Transient: restart the pipeline with backoff.
    Transient,
}

impl Error {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Record { .. } | Self::Window { .. } | Self::Timer { .. } => ErrorKind::BadRecord,
            Self::NoMatchingSnapshot { .. }
            | Self::NamedCheckpointMissing { .. }
            | Self::OffsetOutOfRange { .. }
            | Self::OffsetBeyondLogEnd { .. }
            | Self::SavepointMismatch { .. }
            | Self::StateChoice(_)
            | Self::Savepoint(_)
            | Self::Checkpoint(checkpoint::store::Error::Corrupt { .. })
            | Self::Remote(checkpoint::remote::Error::Corrupt { .. }) => ErrorKind::State,
            Self::State(state::Error::Corrupt { .. }) => ErrorKind::State,
            Self::Fatal(_)
            | Self::Frozen { .. }
            | Self::Fenced { .. }
            | Self::Panicked(_)
            | Self::PipelineRunning(_)
            | Self::Cut(_)
            | Self::SinkSchema { .. }
            | Self::Remote(
                checkpoint::remote::Error::Open { .. }
                | checkpoint::remote::Error::Collision { .. },
            ) => ErrorKind::Fatal,
            Self::Kafka(e) if e.txn_failure() == checkpoint::protocol::TxnFailure::Fatal => {
                ErrorKind::Fatal
            }
            Self::Kafka(_)
            | Self::State(_)
            | Self::Checkpoint(_)
            | Self::Remote(_)
            | Self::UnknownCommitOutcome(_)
            | Self::Rejoined { .. }
            | Self::SchemaRegistry(_) => ErrorKind::Transient,
        }
    }
}

impl Error {
    /// The consumer's static membership was taken (`kafka::Error::is_static_member_fenced`).
    fn is_static_member_fenced(&self) -> bool {
        matches!(self, Self::Kafka(e) if e.is_static_member_fenced())
    }
}

impl From<checkpoint::catalog::Error> for Error {
    fn from(e: checkpoint::catalog::Error) -> Self {
        match e {
            checkpoint::catalog::Error::Local(e) => Self::Checkpoint(e),
            checkpoint::catalog::Error::Remote(e) => Self::Remote(e),
        }
    }
}

impl Error {
    /// The group's commit of `partition` names a checkpoint that cannot be restored from `dir`.
    pub(crate) fn named_checkpoint_missing(
        partition: &Partition,
        refusal: &checkpoint::protocol::Refusal,
        dir: &std::path::Path,
    ) -> Self {
        let checkpoint::protocol::Refusal {
            tag,
            committed,
            why,
        } = refusal;
        Self::NamedCheckpointMissing {
            partition: partition.clone(),
            message: format!(
                "the group's commit (offset {committed}) names checkpoint {} of pipeline {:?} written by {:?}, which cannot be restored from {}: {why}",
                tag.checkpoint,
                tag.pipeline,
                tag.writer,
                dir.display()
            ),
        }
    }
}

/// What one pipeline thread is given.
pub struct Inputs<'a> {
    pub config: &'a Config,
    pub pipeline: &'a PipelineConfig,
    pub env: &'a StateEnv,
    pub options: Options,
    pub cancel: CancellationToken,
    pub runtime: tokio::runtime::Handle,
    /// `--from-savepoint`: restored by the first incarnation that gets that far.
    pub savepoint: Option<Savepoint>,
    /// Told (keys done, keys in all) while a savepoint's state is restored and redistributed
    /// (the CLI draws a progress bar; the daemon logs instead).
    pub progress: Option<&'a (dyn Fn(u64, u64) + Sync)>,
    /// The custom operators the binary offers (`cli::main_with`).
    pub operators: &'a custom::Operators,
    /// The thread's metrics and health (`PipelineMetrics::detached` for the tools).
    pub metrics: &'a crate::metrics::PipelineMetrics,
}

/// Runs one pipeline until `cancel` (or a stop command), restarting it after transient
/// failures with exponential backoff (reset by every committed checkpoint). Its end goes to
/// `report` as soon as it is known (after the final checkpoint), before the last incarnation
/// is torn down: a teardown that hangs in a client cannot hold up a stop that already
/// committed (CHAOS.md, finding 16).
pub fn run(
    inputs: &Inputs<'_>,
    commands: &mut tokio::sync::mpsc::Receiver<crate::control::Command>,
    report: impl FnOnce(Result<()>),
) {
    let (pipeline, cancel) = (inputs.pipeline, &inputs.cancel);
    let restart = &inputs.config.restart;
    let mut attempt = 0u32;
    let mut backoff = restart.initial_backoff;
    let mut restore = inputs.savepoint.as_ref();
    let health = &inputs.metrics.health;
    let end = |result: Result<()>, runner: Option<Runner<'_>>| {
        report(result);
        if let Some(runner) = runner {
            runner.close();
        }
    };
    loop {
        let mut committed = 0u64;
        health.set_phase(crate::metrics::Phase::Starting);
        let watch = freeze::Watch::start();
        let mut incarnation = None;
        let result = Runner::start(inputs, restore).and_then(|runner| {
            let runner = incarnation.insert(runner);
            // a panic outside a record's processing ends the pipeline, reported before the
            // teardown like any end (the daemon's own catch is for the teardown itself)
            let r =
                catch_panic(|| runner.run(commands)).unwrap_or_else(|m| Err(Error::Panicked(m)));
            committed = runner.committed_checkpoints();
            // once the restore committed, later incarnations resume from it
            if !runner.restore_pending() {
                restore = None;
            }
            r
        });
        // a failure that would restart in-process stops the daemon after a freeze; the others
        // stop it anyway, with their own exit code
        let lease = crate::kafka::client::session_timeout(&inputs.config.kafka);
        let result = result.map_err(|error| match watch.frozen_longer_than(lease) {
            Some(frozen) if error.kind() == ErrorKind::Transient => Error::Frozen {
                frozen,
                error: Box::new(error),
            },
            // fenced as a static member, not frozen: by a newer instance, or by its own
            // rejoin; only the producer's epoch tells (CHAOS.md, finding 20)
            None if error.is_static_member_fenced() && !cancel.is_cancelled() => {
                match incarnation.as_mut() {
                    Some(runner) => runner.after_member_fenced(error),
                    None => error,
                }
            }
            _ => error,
        });
        let error = match result {
            Ok(()) => {
                health.set_phase(crate::metrics::Phase::Stopped);
                return end(Ok(()), incarnation);
            }
            Err(e) if e.kind() != ErrorKind::Transient || cancel.is_cancelled() => {
                health.failed(crate::metrics::Phase::Failed, chain(&e));
                return end(Err(e), incarnation);
            }
            Err(e) => e,
        };
        if let Some(runner) = incarnation {
            runner.close();
        }
        if committed > 0 {
            attempt = 0;
            backoff = restart.initial_backoff;
        }
        attempt += 1;
        if attempt > restart.max_attempts {
            tracing::error!(pipeline = %pipeline.name, attempts = attempt - 1, "giving up after repeated failures");
            health.failed(crate::metrics::Phase::Failed, chain(&error));
            return end(Err(error), None);
        }
        inputs.metrics.restarted();
        // the next incarnation starts without partitions: their gauges come back with them
        inputs.metrics.forget_partitions();
        health.failed(crate::metrics::Phase::Restarting, chain(&error));
        tracing::warn!(pipeline = %pipeline.name, error = %chain(&error), attempt, backoff = ?backoff, "pipeline failed; restarting");
        if sleep_unless_cancelled(backoff, cancel) {
            health.set_phase(crate::metrics::Phase::Stopped);
            return end(Ok(()), None);
        }
        backoff = (backoff * 2).min(restart.max_backoff);
    }
}

/// Runs `f`, turning a panic into its message: operator and codec code panicking on a record
/// is that record's error, and a pipeline thread that panics is reported, never lost.
pub fn catch_panic<T>(f: impl FnOnce() -> T) -> std::result::Result<T, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|p| panic_message(p.as_ref()))
}

/// The message of a panic's payload.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_string())
}

/// Sleeps up to `d`; true when cancelled meanwhile.
fn sleep_unless_cancelled(d: Duration, cancel: &CancellationToken) -> bool {
    let step = Duration::from_millis(50);
    let mut left = d;
    while !left.is_zero() {
        if cancel.is_cancelled() {
            return true;
        }
        let s = left.min(step);
        std::thread::sleep(s);
        left -= s;
    }
    cancel.is_cancelled()
}

/// An error with its sources, `a: b: c`.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
