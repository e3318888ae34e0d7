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
//! - [`error`]: the engine's errors and their kinds (stop, restart, the operator acts).
//! - [`run`] (here): the restart strategy around incarnations; [`freeze`]: whether the
//!   process was frozen meanwhile (then it exits instead of restarting).

pub mod aggregate;
pub mod custom;
pub mod dedupe;
mod error;
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

use crate::checkpoint::savepoint::Savepoint;
use crate::config::{Config, PipelineConfig};
use crate::state::StateEnv;

pub use error::{Error, ErrorKind, Result, chain};
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
