//! One incarnation of a pipeline: producer, consumer, tasks, checkpoints.
//!
//! A task is one assigned input partition (of the source topic, or of the repartition topic).
//! Stateful tasks own the keyed state of the keys arriving on their partition.
//! Savepoints are written by [`savepoint`] and restored by [`restore`].

mod checkpointer;
mod commits;
mod expiry;
mod keyed;
mod record;
mod restore;
mod savepoint;
mod streams;
mod tables;
mod unmatched;
mod windows;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::{Error, Inputs, Options, Result, chain};
use crate::checkpoint::protocol::{self, Action, Phase, Restore, TxnFailure};
use crate::checkpoint::savepoint::Savepoint;
use crate::checkpoint::{CheckpointId, GroupCommit, Manifest, NextOffset, Partition};
use crate::config::{Config, PipelineConfig};
use crate::control::Command;
use crate::kafka::admin::Admin;
use crate::kafka::consumer::{Consumer, Event};
use crate::kafka::producer::Producer;
use crate::pipeline::keyed::Keyed;
use crate::pipeline::topology::{Role, Topology};
use crate::pipeline::txn::Txn;
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
    /// watermark follows it), and the watermark of its last marker (`task/windows.rs`).
    max_event_time: i64,
    marker_sent: i64,
    /// It processed a record since its last marker (so it sends one even if its watermark
    /// stood still: stateful tasks must hear from it within their idle timeout).
    spoke: bool,
    /// Stateful tasks of a windowed aggregate.
    windows: Option<windows::WindowTask>,
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
    /// A join's table topic reader, and when the tables were last read (`task/tables.rs`).
    table_reader: Option<crate::kafka::reader::TableReader>,
    /// A `custom` step's operator, looked up once.
    custom: Option<std::sync::Arc<dyn crate::pipeline::custom::KeyedOperator>>,
    /// The keyed operator of the stateful tasks (`pipeline/keyed/`).
    keyed: Option<Keyed<'a>>,
    last_table_refresh: Instant,
    last_checkpoint: Instant,
    /// Deletes repartition records every task has counted (`task/commits.rs`).
    purge: Option<commits::Purge>,
}

/// Crash points for the recovery tests (`--features failpoints`, `FAILPOINTS=name=return`):
/// the process aborts on the spot, as a SIGKILL there would.
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

impl<'a> Runner<'a> {
    /// Rule 2: `init_transactions` first (fencing the previous incarnation and settling its
    /// transaction), then the topics, then the consumer. State is restored on assignment.
    /// With `restore`, the savepoint's state and offsets become a new checkpoint, durable
    /// before the consumer subscribes and committed on the first assignment.
    pub fn start(inputs: &Inputs<'a>, restore: Option<&Savepoint>) -> Result<Self> {
        let sink = &inputs.pipeline.sink;
        if let crate::config::Format::Avro { schema_id } = sink.format {
            // TopicNameStrategy, the Confluent serializers' default subject
            let subject = format!("{}-value", sink.topic);
            inputs
                .config
                .schemas
                .register(&subject, schema_id)
                .map_err(|e| {
                    Error::decode(e, |message| Error::SinkSchema {
                        topic: sink.topic.clone(),
                        message,
                    })
                })?;
        }
        let (runner, grown) = Self::prepare(inputs, restore, true)?;
        let (config, pipeline) = (inputs.config, inputs.pipeline);
        if grown {
            // This instance's static membership outlives a stop by a session timeout, and a
            // static member that rejoins gets its old assignment back without a rebalance:
            // with grown topics that would leave the new partitions unassigned. Join only once
            // the group has emptied, so the assignment is computed anew.
            let wait =
                crate::kafka::client::session_timeout(&config.kafka) + Duration::from_secs(10);
            tracing::info!(pipeline = %pipeline.name, ?wait, "partition counts changed since the savepoint: waiting for the group to empty before joining");
            if !runner
                .consumer
                .wait_for_empty_group(&pipeline.group_id, wait)?
            {
                tracing::warn!(pipeline = %pipeline.name, "the group still has members; new partitions may wait for the next rebalance");
            }
        }
        runner.consumer.subscribe(&runner.topology.topics())?;
        tracing::info!(pipeline = %pipeline.name, source = %pipeline.source.topic, sink = %pipeline.sink.topic,
            repartition = ?runner.topology.repartition_topic(), checkpoints = runner.checkpoints.manifests.len(), "pipeline started");
        Ok(runner)
    }

    /// `flumen offsets reset --to-savepoint`: the restore of `--from-savepoint`, done by a
    /// tool while the pipeline is stopped (the group must be empty: the commit is a
    /// non-member's).
    pub fn restore_offline(inputs: &Inputs<'a>, savepoint: &Savepoint) -> Result<()> {
        let (mut runner, _) = Self::prepare(inputs, Some(savepoint), false)?;
        runner.finish_restore()
    }

    /// Everything of `start` but joining the group; with `restore`, everything of it up to
    /// its transaction. Returns whether a restore found grown partition counts.
    fn prepare(
        inputs: &Inputs<'a>,
        restore: Option<&Savepoint>,
        static_member: bool,
    ) -> Result<(Self, bool)> {
        let (config, pipeline, env) = (inputs.config, inputs.pipeline, inputs.env);
        let producer = Producer::new(&config.kafka, &pipeline.transactional_id)?;
        producer.init()?;
        let admin = Admin::new(&config.kafka, inputs.runtime.clone())?;
        let partitions = admin.partition_count(&pipeline.source.topic)?;
        admin.partition_count(&pipeline.sink.topic)?;
        if let Some(topic) = &pipeline.dead_letter_topic {
            admin.partition_count(topic)?;
        }
        let late_topic = pipeline
            .plan
            .aggregate
            .as_ref()
            .and_then(|a| a.window.as_ref()?.late_topic.as_ref());
        if let Some(topic) = late_topic {
            admin.partition_count(topic)?;
        }
        if let Some(sp) = restore {
            // before any topic is created or changed
            Self::check_fit(pipeline, inputs.options, partitions, sp)?;
        }
        let repartition_topic = pipeline.repartition_topic();
        if let Some(t) = &repartition_topic {
            if restore.is_some() && admin.partition_count(t).is_ok() {
                // restoring into more source partitions: the keyed state follows the keys
                admin.grow_partitions(t, partitions)?;
            }
            admin.ensure_internal_topic(t, partitions)?;
        }
        let checkpoints = Checkpointer::open(
            &config.checkpoint.dir,
            &pipeline.name,
            &pipeline.transactional_id,
            config.checkpoint.retain,
        )?;
        let consumer = Consumer::new(
            &config.kafka,
            &pipeline.group_id,
            static_member.then_some(pipeline.transactional_id.as_str()),
        )?;
        let mut runner = Self {
            config,
            pipeline,
            env,
            options: inputs.options,
            cancel: inputs.cancel.clone(),
            txn: Txn::new(producer),
            consumer,
            checkpoints,
            tasks: BTreeMap::new(),
            topology: Topology::of(pipeline, partitions),
            progress: inputs.progress,
            skipped: 0,
            dead_lettered: 0,
            late: 0,
            restore_txn: None,
            dirty: false,
            pending: HashMap::new(),
            table_reader: None,
            custom: None,
            keyed: None,
            last_table_refresh: Instant::now(),
            last_checkpoint: Instant::now(),
            purge: None,
        };
        // joins read a topic co-partitioned with the keyed stream, which has the source's
        // partition count (the repartition topic is created with it), as Kafka Streams requires
        let joined = runner
            .stream_join()
            .map(|(_, stream, ..)| stream)
            .or(runner.joined_table().map(|(_, table)| table));
        if let Some(topic) = joined {
            let count = admin.partition_count(topic)?;
            if count != partitions {
                return Err(Error::StateChoice(format!(
                    "join topic {topic:?} has {count} partitions and the keyed stream {partitions}; a join needs both partitioned alike"
                )));
            }
        }
        if runner.joined_table().is_some() {
            runner.table_reader = Some(crate::kafka::reader::TableReader::new(&config.kafka)?);
        }
        if let Some(crate::config::AggregateKind::Custom { name }) =
            pipeline.plan.aggregate.as_ref().map(|a| &a.kind)
        {
            runner.custom = Some(crate::pipeline::custom::lookup(name).ok_or_else(|| {
                Error::StateChoice(format!("no operator is registered as {name:?}"))
            })?);
        }
        if let Some(agg) = &pipeline.plan.aggregate {
            let event_time = pipeline.source.event_time.as_ref();
            runner.keyed = Keyed::new(agg, event_time, runner.custom.clone());
        }
        let restore = match restore {
            Some(sp) if static_member && !inputs.options.restore_again => {
                runner.unless_in_force(sp)?
            }
            other => other,
        };
        let grown = match restore {
            Some(sp) => runner.restore_savepoint(sp, &admin)?,
            None => false,
        };
        if runner.topology.repartition_topic().is_some() {
            runner.purge = Some(commits::Purge::new(admin));
        }
        Ok((runner, grown))
    }

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
        loop {
            if let Ok(command) = commands.try_recv()
                && self.on_command(command)?
            {
                tracing::info!(pipeline = %self.pipeline.name, checkpoints = self.checkpoints.committed, "pipeline stopped after its savepoint");
                return Ok(());
            }
            if self.cancel.is_cancelled() {
                return self.shutdown();
            }
            if self.table_reader.is_some() && self.last_table_refresh.elapsed() >= interval {
                self.refresh_tables()?;
                self.last_table_refresh = Instant::now();
            }
            let due = self.last_checkpoint.elapsed() >= interval;
            if due && !self.dirty && self.custom.is_some() && self.timer_due()? {
                self.dirty = true;
            }
            if due && !self.dirty && self.join_went_idle() {
                // the other stream's silence may release buffered records
                self.dirty = true;
            }
            if self.dirty && due {
                self.checkpoint()?;
            }
            let until_checkpoint = interval.saturating_sub(self.last_checkpoint.elapsed());
            let wait = until_checkpoint.clamp(Duration::from_millis(1), Duration::from_millis(100));
            // partitions whose position a rebalance moved (a rewind, an adopted commit): their
            // records later in this batch were fetched before, and are fetched again
            let mut moved: Vec<Partition> = Vec::new();
            for event in self.consumer.poll_batch(BATCH, wait)? {
                match event {
                    Event::Record(r)
                        if moved
                            .iter()
                            .any(|p| p.topic == r.topic && p.partition == r.partition) => {}
                    Event::Record(r) => self.handle_record(&r)?,
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

    /// New partitions: restore each stateful one from the checkpoint the group's commit names
    /// (`checkpoint::choose`). The consumer starts fetching at that same committed offset.
    /// Returns the partitions whose position was moved (commits taken from the checkpoint).
    fn assign(&mut self, partitions: &[Partition]) -> Result<Vec<Partition>> {
        // a restore commits now; its offsets are where the consumer starts (`start_at`)
        self.finish_restore()?;
        self.checkpoints.store.forget_sums();
        let (tasks, adopted) = self.restore_tasks(partitions)?;
        for (p, task) in tasks {
            self.tasks.insert(p, task);
        }
        // positions of commits the group lost, taken from the checkpoint instead
        if !adopted.is_empty() {
            self.consumer.seek(&adopted)?;
        }
        self.hear_other_stream_anew();
        // a join's table is current before the first stream record of its tasks
        self.refresh_tables()?;
        tracing::info!(pipeline = %self.pipeline.name, partitions = partitions.len(), "partitions assigned");
        Ok(adopted.into_iter().map(|(p, _)| p).collect())
    }

    /// The task of `p` at the group's `committed` offset; `all` holds the commits of every
    /// assigned partition (for commits without a tag, only checkpoints whose every offset is
    /// committed are candidates).
    fn restore_task(
        &self,
        p: &Partition,
        committed: Option<NextOffset>,
        all: &BTreeMap<Partition, GroupCommit>,
    ) -> Result<Task> {
        let Some(role) = self.topology.role(&p.topic) else {
            return Err(Error::StateChoice(format!(
                "{p} was assigned, but the pipeline does not read its topic"
            )));
        };
        if !role.holds_state() {
            return Ok(Task::new(role, committed, None));
        }
        let live = self.live_dir(p);
        let state = match crate::checkpoint::choose(&self.checkpoints.manifests, p, all) {
            Restore::Fresh => self.env.open_empty(&live)?,
            Restore::From(id) => {
                let snapshot = self.checkpoints.manifests.get(&id).and_then(|m| {
                    m.tasks
                        .iter()
                        .find(|t| t.topic == p.topic && t.partition == p.partition)
                });
                let Some(snapshot) = snapshot else {
                    return Err(crate::checkpoint::store::Error::Corrupt {
                        path: self.checkpoints.store.dir_of(id),
                        message: format!("no snapshot of {p}"),
                    }
                    .into());
                };
                // the recovery tests slow the restore down here (`restore::slow=sleep(ms)`)
                fail::fail_point!("restore::slow");
                let dir = self.checkpoints.store.verify(id, snapshot)?;
                let state = self.env.restore(&dir, &live)?;
                tracing::info!(partition = %p, checkpoint = %id, offset = ?committed, keys = state.approximate_keys(), "state restored");
                state
            }
            refused @ (Restore::NoMatch { .. } | Restore::Missing(_))
                if self.options.allow_empty_state =>
            {
                tracing::warn!(partition = %p, ?refused, "no snapshot matches the group's commit; starting EMPTY (--allow-empty-state)");
                self.env.open_empty(&live)?
            }
            Restore::NoMatch {
                committed,
                newest_available,
            } => {
                return Err(Error::NoMatchingSnapshot {
                    partition: p.clone(),
                    committed,
                    newest: newest_available.map_or_else(
                        || "none".to_string(),
                        |(id, off)| format!("checkpoint {id} at offset {off:?}"),
                    ),
                    dir: self.checkpoints.store.root().display().to_string(),
                });
            }
            Restore::Missing(refusal) => {
                return Err(Error::named_checkpoint_missing(
                    p,
                    &refusal,
                    self.checkpoints.store.root(),
                ));
            }
        };
        let windows = self.restore_windows(p, &state)?;
        let mut task = Task::new(role, committed, Some(state));
        task.windows = windows;
        Ok(task)
    }

    fn live_dir(&self, p: &Partition) -> PathBuf {
        self.config
            .state
            .dir
            .join(&self.pipeline.name)
            .join(format!("{}-{}", p.topic, p.partition))
    }

    /// Partitions taken away: their uncommitted work is dropped with the open transaction
    /// (the group generation changed, so it could not commit anyway); partitions kept are
    /// rewound to the last checkpoint.
    /// Returns the partitions kept, whose position the rewind moved.
    fn revoke(&mut self, partitions: &[Partition]) -> Result<Vec<Partition>> {
        self.abort_open_transaction()?;
        for p in partitions {
            self.tasks.remove(p);
        }
        if !self.tasks.is_empty() {
            self.rewind()?;
        }
        tracing::info!(pipeline = %self.pipeline.name, partitions = partitions.len(), "partitions revoked");
        Ok(self.tasks.keys().cloned().collect())
    }

    fn abort_open_transaction(&mut self) -> Result<()> {
        self.txn.abort().map_err(fatal_or_transient)?;
        // outputs of work the rewind redoes
        self.pending.clear();
        self.dirty = false;
        Ok(())
    }

    /// Restores every task from the checkpoint the group's commits name and seeks there.
    fn rewind(&mut self) -> Result<()> {
        let partitions: Vec<Partition> = self.tasks.keys().cloned().collect();
        self.tasks.clear();
        self.checkpoints.store.forget_sums();
        let mut positions = Vec::with_capacity(partitions.len());
        for (p, task) in self.restore_tasks(&partitions)?.0 {
            positions.push((p.clone(), task.next_offset));
            self.tasks.insert(p, task);
        }
        self.hear_other_stream_anew();
        self.refresh_tables()?;
        self.consumer.seek(&positions)?;
        Ok(())
    }

    /// Every task's other stream gets a full idle timeout from now: restoring the tasks one by
    /// one may itself take longer than that, and nothing has been read yet.
    fn hear_other_stream_anew(&mut self) {
        let now = Instant::now();
        for task in self.tasks.values_mut() {
            task.other_heard = now;
            task.other_idle_handled = false;
        }
    }

    /// Checkpoint N (see `checkpoint::protocol`). A failure is answered by the protocol
    /// (`protocol::after_failure`): an abortable one aborts, rewinds and lets the loop go on;
    /// anything else is returned.
    fn checkpoint(&mut self) -> Result<()> {
        let started = Instant::now();
        match self.try_checkpoint() {
            Ok(id) => {
                tracing::debug!(pipeline = %self.pipeline.name, checkpoint = %id, took = ?started.elapsed(), "checkpoint committed");
                Ok(())
            }
            Err(failed) => self.after_failed_checkpoint(failed.phase, failed.error),
        }
    }

    /// What the protocol says to do after a transactional call failed in `phase`; errors that
    /// are not a transactional call's (`phase` is `None`) are returned.
    fn after_failed_checkpoint(&mut self, phase: Option<Phase>, e: Error) -> Result<()> {
        let (Some(phase), Error::Kafka(k)) = (phase, &e) else {
            return Err(e);
        };
        match protocol::after_failure(phase, k.txn_failure()) {
            Action::AbortAndRewind { delete } => {
                if let Some(id) = delete {
                    self.checkpoints.discard(id);
                }
                tracing::warn!(pipeline = %self.pipeline.name, error = %chain(&e), "checkpoint aborted; rewinding to the last committed checkpoint");
                self.abort_open_transaction()?;
                self.rewind()?;
                self.last_checkpoint = Instant::now();
                Ok(())
            }
            Action::RetryCommit | Action::Restart | Action::RestartWithoutAbort | Action::Exit => {
                Err(e)
            }
        }
    }

    /// The protocol's steps in order: open the transaction, everything due at a checkpoint
    /// into it (held outputs, closed windows, timers, join releases, watermark markers),
    /// flush, snapshot, the offsets tagged with the checkpoint's name, commit, mark, clean up.
    fn try_checkpoint(&mut self) -> std::result::Result<CheckpointId, Box<Failed>> {
        // checkpoints start every interval (fixed rate, as Flink triggers them and Kafka
        // Streams commits), not one interval after the previous one ended
        let begun = Instant::now();
        let id = self.checkpoints.next_id;
        let before_commit = |written| Some(Phase::BeforeCommit { written });
        self.barrier().map_err(Failed::at(before_commit(None)))?;
        let flushed = begun.elapsed();
        let manifest = self.snapshot(id).map_err(Failed::at(before_commit(None)))?;
        let snapshotted = begun.elapsed();
        crash_point!("checkpoint::after_snapshot");
        // a checkpoint that moved no offset (timers, an idle join's release): its offsets are
        // its predecessor's, so only the commit's tag tells the two apart
        #[cfg(feature = "failpoints")]
        let unmoved = self
            .checkpoints
            .manifests
            .range(..id)
            .next_back()
            .is_some_and(|(_, before)| before.offsets == manifest.offsets);
        #[cfg(not(feature = "failpoints"))]
        let unmoved = false;
        crash_point!("checkpoint::after_unmoved_snapshot", unmoved);
        let offsets: Vec<(Partition, NextOffset)> = manifest
            .offsets
            .iter()
            .map(|o| {
                (
                    Partition {
                        topic: o.topic.clone(),
                        partition: o.partition,
                    },
                    o.next_offset,
                )
            })
            .collect();
        self.send_offsets(id, &offsets)
            .map_err(Failed::at(before_commit(Some(id))))?;
        crash_point!("checkpoint::before_commit");
        crash_point!("checkpoint::before_unmoved_commit", unmoved);
        let commit_phase = Phase::Commit {
            id,
            attempt: 0,
            retries: 0,
        };
        self.commit(id).map_err(Failed::at(Some(commit_phase)))?;
        crash_point!("checkpoint::after_commit");
        let committed = begun.elapsed();
        self.after_commit(id, manifest, &offsets, begun)
            .map_err(Failed::at(None))?;
        tracing::debug!(pipeline = %self.pipeline.name, checkpoint = %id, flushed = ?flushed,
            snapshotted = ?snapshotted, committed = ?committed, cleaned = ?begun.elapsed(),
            "checkpoint phases (time since it began)");
        Ok(id)
    }

    /// The barrier: the transaction opened, everything due at a checkpoint sent into it,
    /// and flushed.
    fn barrier(&mut self) -> Result<()> {
        self.txn.begin()?;
        self.emit_pending()?;
        self.close_all_windows()?;
        if let Err(e) = self.fire_timers() {
            return Err(match e {
                e @ Error::Timer { .. } => self.abort_for(e),
                other => other,
            });
        }
        if let Err(e) = self.expire_join_buffers() {
            return Err(match e {
                e @ Error::Timer { .. } => self.abort_for(e),
                other => other,
            });
        }
        self.send_markers()?;
        self.txn.flush()?;
        Ok(())
    }

    /// Checkpoint `id` committed: count it, mark it, delete what the repartition topic and the
    /// store no longer need.
    fn after_commit(
        &mut self,
        id: CheckpointId,
        manifest: Manifest,
        offsets: &[(Partition, NextOffset)],
        begun: Instant,
    ) -> Result<()> {
        self.dirty = false;
        self.last_checkpoint = begun;
        self.checkpoints.committed(id, manifest)?;
        self.purge_counted(offsets);
        Ok(())
    }

    /// The offsets into the open transaction, each tagged with the checkpoint's name.
    fn send_offsets(
        &mut self,
        id: CheckpointId,
        offsets: &[(Partition, NextOffset)],
    ) -> Result<()> {
        if !offsets.is_empty() {
            let tag = self.checkpoints.tag(id).encode();
            self.txn.send_offsets(offsets, &tag, &self.consumer)?;
        }
        Ok(())
    }

    /// Snapshots every stateful task and makes checkpoint `id` durable on disk.
    fn snapshot(&mut self, id: CheckpointId) -> Result<Manifest> {
        self.persist_watermarks()?;
        self.expire_state()?;
        let tasks = self
            .tasks
            .iter_mut()
            .map(|(p, task)| (p, task.next_offset, task.state.as_mut()));
        self.checkpoints.write(id, tasks)
    }

    /// Rule 3: retry while the outcome is unknown, never abort then. All attempts together
    /// stay within half of `max.poll.interval.ms` (and the transaction timeout), so that the
    /// consumer is not thrown out of the group while the pipeline thread waits here.
    fn commit(&mut self, id: CheckpointId) -> Result<()> {
        let budget = self
            .config
            .kafka
            .transaction_timeout
            .min(crate::kafka::client::max_poll_interval(&self.config.kafka) / 2);
        let deadline = Instant::now() + budget;
        let mut attempt = 0;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Err(e) = self.txn.commit_within(left) else {
                return Ok(());
            };
            let attempts_left = if Instant::now() < deadline {
                COMMIT_RETRIES
            } else {
                attempt
            };
            let phase = Phase::Commit {
                id,
                attempt,
                retries: attempts_left,
            };
            match protocol::after_failure(phase, e.txn_failure()) {
                Action::RetryCommit => {
                    tracing::warn!(checkpoint = %id, attempt, error = %chain(&e), "commit outcome unknown; retrying the commit");
                    attempt += 1;
                    let pause = Duration::from_millis(200 << attempt.min(4));
                    std::thread::sleep(
                        pause.min(deadline.saturating_duration_since(Instant::now())),
                    );
                }
                Action::RestartWithoutAbort => return Err(Error::UnknownCommitOutcome(id)),
                Action::AbortAndRewind { .. } | Action::Restart => return Err(e.into()),
                Action::Exit => return Err(Error::Fatal(e)),
            }
        }
    }
}

fn fatal_or_transient(e: crate::kafka::Error) -> Error {
    if e.txn_failure() == TxnFailure::Fatal {
        Error::Fatal(e)
    } else {
        Error::Kafka(e)
    }
}

/// A checkpoint that failed, and in which transactional call (`None`: not in one).
pub(super) struct Failed {
    pub(super) phase: Option<Phase>,
    pub(super) error: Error,
}

impl Failed {
    fn at(phase: Option<Phase>) -> impl FnOnce(Error) -> Box<Self> {
        move |error| Box::new(Self { phase, error })
    }
}
