//! One incarnation of a pipeline: producer, consumer, tasks, checkpoints.
//!
//! A task is one assigned input partition (of the source topic, or of the repartition topic).
//! Stateful tasks own the keyed state of the keys arriving on their partition.
//! Savepoints are written by [`savepoint`] and restored by [`restore`].

/// Crash points for the recovery tests and the chaos suite (`--features failpoints`,
/// `FAILPOINTS=name=return`): the process aborts on the spot, as a SIGKILL there would.
/// Defined before the submodules, which use it.
macro_rules! crash_point {
    ($name:literal) => {
        fail::fail_point!($name, |_| {
            tracing::warn!(failpoint = $name, "failpoint: aborting the process");
            std::process::abort()
        })
    };
    ($name:literal, $cond:expr) => {
        fail::fail_point!($name, $cond, |_| {
            tracing::warn!(failpoint = $name, "failpoint: aborting the process");
            std::process::abort()
        })
    };
}

mod assign;
mod checkpoint;
mod checkpointer;
mod commits;
mod cut;
pub use cut::{end_stop, request_stop};
mod fit;
mod keyed;
mod observe;
mod policy;
mod record;
mod reset;
mod restore;
mod savepoint;
mod start;
mod stream_join;
mod table_join;
mod timers;
mod window;

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::{Options, Result};
use crate::config::{Config, PipelineConfig};
use crate::control::Command;
use crate::kafka::consumer::{Consumer, Event};
use crate::pipeline::keyed::Keyed;
use crate::pipeline::topology::{Role, Topology};
use crate::pipeline::txn::Txn;
use crate::position::{NextOffset, Partition};
use crate::state::{StateEnv, TaskState};
use checkpointer::Checkpointer;

/// Records taken per poll: enough to amortise the poll, few enough to check the clock often.
const BATCH: usize = 2_000;
/// How often `commit_transaction` is retried while its outcome is unknown.
const COMMIT_RETRIES: u32 = 3;

struct Task {
    /// What it does, by the topic of its partition.
    role: Role,
    /// Next offset to read, as reflected in `state`; `None` before the first record of a
    /// partition the group never committed.
    next_offset: Option<NextOffset>,
    state: Option<TaskState>,
    /// Source tasks of a windowed pipeline: the highest event time processed (its partition's
    /// watermark follows it), and the watermark of its last marker (`task/window.rs`).
    max_event_time: i64,
    marker_sent: i64,
    /// It processed a record since its last marker (so it sends one even if its watermark
    /// stood still).
    spoke: bool,
    /// Source tasks of a windowed pipeline: when it last processed a record (at the marker
    /// after it) or started, and when it last declared its partition idle, if it is
    /// (`window::marker_due`).
    quiet_since: Instant,
    idle_marked: Option<Instant>,
    /// Stateful tasks of a windowed aggregate.
    windows: Option<window::WindowTask>,
    /// Stateful tasks of a stream join: when the other stream's partition last had a record
    /// (from the task's start, so it has a full idle timeout to speak).
    other_heard: Instant,
    /// A checkpoint has expired the join buffers since the other stream went idle (so an idle
    /// pipeline checkpoints once for it, not every interval).
    other_idle_handled: bool,
}

impl Task {
    fn new(role: Role, next_offset: Option<NextOffset>, state: Option<TaskState>) -> Self {
        Self {
            role,
            next_offset,
            state,
            max_event_time: crate::pipeline::window::NO_WATERMARK,
            marker_sent: crate::pipeline::window::NO_WATERMARK,
            spoke: false,
            quiet_since: Instant::now(),
            idle_marked: None,
            windows: None,
            other_heard: Instant::now(),
            other_idle_handled: false,
        }
    }
}

pub struct Runner<'a> {
    config: &'a Config,
    pipeline: &'a PipelineConfig,
    env: &'a StateEnv,
    options: Options,
    cancel: CancellationToken,
    /// Every write goes through it (`pipeline/txn.rs`).
    txn: Txn,
    /// Its producer was registered (`init_transactions`) again once this incarnation was a
    /// member of the group (`task/assign.rs`: why).
    registered_as_member: bool,
    consumer: Consumer,
    /// The store, its manifests, checkpoint ids and the commit count.
    checkpoints: Checkpointer,
    tasks: BTreeMap<Partition, Task>,
    /// Which topics it reads, and what each partition's task does.
    topology: Topology,
    progress: Option<&'a (dyn Fn(u64, u64) + Sync)>,
    /// Records skipped and dead-lettered by the error policy in this incarnation.
    skipped: u64,
    dead_lettered: u64,
    /// Records that came after all their windows closed.
    late: u64,
    /// `--from-savepoint`: checkpoint written, transaction due on the first assignment.
    restore_txn: Option<restore::RestoreTxn>,
    dirty: bool,
    /// `emit = "on_checkpoint"`: each key's latest output (key → encoded value), produced at the
    /// next checkpoint, inside its transaction (`task/record.rs`).
    pending: HashMap<Vec<u8>, Vec<u8>>,
    /// A join's table topic reader, and when the tables were last read (`task/table_join.rs`).
    table_reader: Option<crate::kafka::reader::TableReader>,
    /// The Avro schemas and the registry's client, loaded from `config.schemas`.
    schemas: std::sync::Arc<crate::codec::avro::Registry>,
    /// The keyed operator of the stateful tasks (`pipeline/keyed/`).
    keyed: Option<Keyed<'a>>,
    last_table_refresh: Instant,
    last_checkpoint: Instant,
    /// Deletes repartition records every task has counted (`task/commits.rs`).
    purge: Option<commits::Purge>,
    /// The pipeline's control topic, read by the daemon's threads, and the cut of an online
    /// savepoint it asked for (`task/cut.rs`).
    control: Option<crate::kafka::control::ControlReader>,
    cut: Option<cut::Cut>,
    /// A `Stop` request heard (its id): the loop takes a final checkpoint and returns.
    stop_requested: Option<String>,
    /// The thread's metrics and health (`task/observe.rs`); the records read since the last
    /// commit; when the lag was last computed.
    metrics: &'a crate::metrics::PipelineMetrics,
    input_tally: crate::metrics::InputTally,
    last_lag_check: Instant,
    /// When the loop began.
    started: Instant,
}

/// What an incarnation is to the pipeline's group and producers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Incarnation {
    /// The daemon: a static member; its producer registered (fencing its predecessor).
    Member,
    /// A tool on a stopped pipeline: not a member; registers the producer (fencing a zombie).
    Offline,
    /// A tool beside running instances (an online savepoint): not a member, registers no
    /// producer, writes no Kafka record but the control topic's requests.
    Observer,
}

impl<'a> Runner<'a> {
    pub fn committed_checkpoints(&self) -> u64 {
        self.checkpoints.committed
    }

    /// A `--from-savepoint` restore still waits for its commit.
    pub fn restore_pending(&self) -> bool {
        self.restore_txn.is_some()
    }

    /// The loop: poll a batch, process it, checkpoint every interval, until cancelled or
    /// told to stop (after a savepoint) through `commands`.
    pub fn run(&mut self, commands: &mut tokio::sync::mpsc::Receiver<Command>) -> Result<()> {
        let interval = self.config.checkpoint.interval;
        // running once its first assignment is restored (`task/assign.rs`), or, given nothing,
        // after a session's time (`task/observe.rs`)
        self.started = Instant::now();
        loop {
            self.observe()?;
            // the liveness test stalls the loop here (`pipeline::loop=…sleep(ms)`)
            fail::fail_point!("pipeline::loop");
            if let Ok(command) = commands.try_recv()
                && self.on_command(command)?
            {
                tracing::info!(pipeline = %self.pipeline.name, checkpoints = self.checkpoints.committed, "pipeline stopped after its savepoint");
                return Ok(());
            }
            if self.cancel.is_cancelled() {
                return self.shutdown();
            }
            self.hear_control()?;
            if self.stop_requested.is_some() {
                return self.shutdown();
            }
            if self.table_reader.is_some() && self.last_table_refresh.elapsed() >= interval {
                self.refresh_tables()?;
                self.last_table_refresh = Instant::now();
            }
            let due = self.last_checkpoint.elapsed() >= interval;
            if due
                && !self.dirty
                && self.keyed.as_ref().and_then(Keyed::custom).is_some()
                && self.timer_due()?
            {
                self.dirty = true;
            }
            if due && !self.dirty && self.idle_marker_due() {
                // a quiet source partition says so, though nothing else is to be committed
                self.dirty = true;
            }
            if due && !self.dirty && self.join_went_idle() {
                // the other stream's silence may release buffered records
                self.dirty = true;
            }
            if self.dirty && due {
                self.checkpoint()?;
            }
            // nothing to checkpoint: no hurry (a wait of 1 ms once the interval had passed
            // spun idle pipelines at full CPU, starving the brokers on a small machine)
            let wait = if self.dirty {
                let until_checkpoint = interval.saturating_sub(self.last_checkpoint.elapsed());
                until_checkpoint.clamp(Duration::from_millis(1), Duration::from_millis(100))
            } else {
                Duration::from_millis(100)
            };
            // partitions whose position a rebalance moved (a rewind, an adopted commit): their
            // records later in this batch were fetched before, and are fetched again
            let mut moved: Vec<Partition> = Vec::new();
            for event in self.consumer.poll_batch(BATCH, wait)? {
                match event {
                    Event::Message(r)
                        if moved
                            .iter()
                            .any(|p| p.topic == r.topic() && p.partition == r.partition) => {}
                    Event::Message(r) => self.handle_record(&r)?,
                    Event::Assigned(ps) => moved.extend(self.assign(&ps)?),
                    Event::Revoked(ps) => moved.extend(self.revoke(&ps)?),
                }
            }
        }
    }

    /// SIGTERM: finish the current checkpoint (so nothing processed is redone), then stop.
    fn shutdown(&mut self) -> Result<()> {
        if self.dirty {
            tracing::info!(pipeline = %self.pipeline.name, "final checkpoint before stopping");
            self.checkpoint()?;
        }
        tracing::info!(pipeline = %self.pipeline.name, checkpoints = self.checkpoints.committed, skipped = self.skipped,
            dead_lettered = self.dead_lettered, late = self.late, "pipeline stopped");
        Ok(())
    }
}

impl Runner<'_> {
    /// After the consumer's static membership was taken (`error`): a newer instance with the
    /// same id ran `init_transactions` before it joined (rule 2), so if this producer still
    /// owns the transactional id, the join was the consumer's own rejoin after its session
    /// expired (librdkafka issue 3437), and the pipeline restarts in-process
    /// (`Error::Rejoined`). Otherwise (the epoch was bumped, or no answer) the daemon stops
    /// (`Error::Fenced`, rule 3), whatever kind `error` was: a restart would fence the owner.
    pub fn after_member_fenced(&mut self, error: super::Error) -> super::Error {
        use crate::kafka::producer::Ownership;
        let transactional_id = self.pipeline.transactional_id.clone();
        // a partition the group never reads: its control topic (`Producer::ownership`)
        let probe = Partition {
            topic: crate::kafka::control::topic_of(&self.pipeline.group_id),
            partition: 0,
        };
        let (verdict, cause) = match self.txn.ownership(&(probe, NextOffset(0)), &self.consumer) {
            Ownership::Owner => {
                return super::Error::Rejoined {
                    transactional_id,
                    error: Box::new(error),
                };
            }
            Ownership::Lost(e) => (
                "its epoch was bumped since this producer registered it (a newer instance, a peer fencing a writer that left the group, or the coordinator aborting a timed-out transaction)",
                e,
            ),
            Ownership::Unknown(e) => ("whether another instance took it over cannot be told", e),
        };
        tracing::error!(pipeline = %self.pipeline.name, %transactional_id, error = %super::chain(&cause),
            "fenced as a static member, and {verdict}: stopping");
        super::Error::Fenced {
            transactional_id,
            verdict,
            error: Box::new(error),
        }
    }
}

/// How long a stop or a restart waits for the consumer to close (`Consumer::close`).
const CLOSE_WITHIN: Duration = Duration::from_secs(10);
/// A part of the teardown that takes longer is named in a warning.
const SLOW_PART: Duration = Duration::from_secs(2);

impl Runner<'_> {
    /// Tears the incarnation down part by part: the consumer within [`CLOSE_WITHIN`] (or on a
    /// thread of its own), then the producer, the readers, the state. Each part's time is
    /// logged, and a slow one is named (CHAOS.md, finding 16: a teardown held a stop up and
    /// left no trace of which part).
    pub fn close(self) {
        // the stop test stalls the teardown here (`pipeline::close=sleep(ms)`)
        fail::fail_point!("pipeline::close");
        let pipeline = self.pipeline.name.clone();
        let Self {
            consumer,
            txn,
            table_reader,
            control,
            purge,
            keyed,
            tasks,
            checkpoints,
            ..
        } = self;
        timed(&pipeline, "consumer", || {
            consumer.close(CLOSE_WITHIN);
        });
        timed(&pipeline, "producer and readers", || {
            drop((txn, table_reader, control, purge));
        });
        timed(&pipeline, "state", || drop((keyed, tasks, checkpoints)));
    }
}

/// Runs one part of a teardown, logging how long it took.
fn timed(pipeline: &str, part: &str, f: impl FnOnce()) {
    let began = Instant::now();
    f();
    let took = began.elapsed();
    if took > SLOW_PART {
        tracing::warn!(pipeline, part, took = ?took, "a slow teardown");
    } else {
        tracing::debug!(pipeline, part, took = ?took, "torn down");
    }
}
