//! Partitions assigned and revoked: each task restored from the checkpoint the group's commits
//! name (`checkpoint::choose`), and a rewind of every task to it after an abort.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use super::{Runner, Task};
use crate::checkpoint::GroupCommit;
use crate::checkpoint::protocol::{self, Action, Phase, Restore};
use crate::kafka::producer::{Limits, Producer};
use crate::pipeline::topology::Role;
use crate::pipeline::{Error, Result};
use crate::position::{NextOffset, Partition};

impl Runner<'_> {
    /// New partitions: restore each stateful one from the checkpoint the group's commit names
    /// (`checkpoint::choose`). The consumer starts fetching at that same committed offset.
    /// Returns the partitions whose position was moved (commits taken from the checkpoint).
    pub(super) fn assign(&mut self, partitions: &[Partition]) -> Result<Vec<Partition>> {
        tracing::info!(pipeline = %self.pipeline.name, partitions = partitions.len(), "assignment received; restoring");
        self.set_phase(crate::metrics::Phase::Restoring);
        let began = Instant::now();
        // a restore commits now; its offsets are where the consumer starts (`start_at`)
        if !self.registered_as_member && !self.checkpoints.other_writers()?.is_empty() {
            // another member fences the writers it does not see in the group; this one may
            // have registered its producer at start before it joined, and been fenced in
            // between: registering again now, as a member, is safe from that (a pipeline that
            // only this writer ever ran has no such peer, and saves the second registration)
            let producer = Producer::new(
                &self.config.kafka,
                &self.pipeline.transactional_id,
                self.txn.limits().clone(),
            )?;
            producer.init()?;
            self.txn = crate::pipeline::txn::Txn::counted(producer, self.metrics.outputs());
            self.registered_as_member = true;
        }
        self.finish_restore()?;
        self.fence_departed_writers()?;
        self.checkpoints.store.forget_sums();
        let restored = self.restore_tasks(partitions);
        self.checkpoints.forget_downloads();
        let (tasks, adopted) = restored?;
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
        self.hold_cut()?;
        self.metrics.restore_took(began.elapsed());
        self.set_phase(crate::metrics::Phase::Running);
        tracing::info!(pipeline = %self.pipeline.name, partitions = partitions.len(), "partitions assigned");
        Ok(adopted.into_iter().map(|(p, _)| p).collect())
    }

    /// Writers of this pipeline that left the group (an instance gone for good, a thread
    /// removed elsewhere) and checkpointed recently enough to have left a transaction open are
    /// fenced (`init_transactions` on their ids) before the group's commits are read: what
    /// their open transaction holds (offsets sent for partitions that are ours now, outputs
    /// before read_committed readers) is aborted now rather than at the transaction timeout.
    /// Members of the group are never fenced; a writer that never checkpointed is left to the
    /// timeout.
    fn fence_departed_writers(&mut self) -> Result<()> {
        let max_age = self.config.kafka.transaction_timeout
            + self.config.checkpoint.interval * 2
            + std::time::Duration::from_secs(15);
        let recent = self.checkpoints.recent_writers(max_age)?;
        if recent.is_empty() {
            return Ok(());
        }
        let members = self.consumer.member_instances(&self.pipeline.group_id)?;
        for writer in recent.iter().filter(|w| !members.contains(w)) {
            Producer::new(
                &self.config.kafka,
                writer,
                Limits::client(&self.config.kafka),
            )?
            .init()?;
            tracing::info!(pipeline = %self.pipeline.name, transactional_id = %writer,
                "fenced the transactional id of a writer that left the group");
        }
        Ok(())
    }

    /// The task of `p` at the group's `committed` offset; `all` holds the commits of every
    /// assigned partition (for commits without a tag, only checkpoints whose every offset is
    /// committed are candidates).
    pub(super) fn restore_task(
        &self,
        p: &Partition,
        committed: Option<NextOffset>,
        all: &BTreeMap<Partition, GroupCommit>,
    ) -> Result<Task> {
        let role = self.topology.role(&p.topic).unwrap_or_else(|| {
            tracing::warn!(partition = %p, "assigned a partition of a topic this pipeline does not read; its records are ignored until the group rebalances");
            Role::Stray
        });
        if !role.holds_state() {
            return Ok(Task::new(role, committed, None));
        }
        let live = self.live_dir(p);
        let writer = &self.pipeline.transactional_id;
        let (own, foreign) = (&self.checkpoints.manifests, &self.checkpoints.foreign);
        let state = match crate::checkpoint::choose_shared(writer, own, foreign, p, all) {
            Restore::Fresh => self.env.open_empty(&live)?,
            Restore::From(id) => {
                // another writer's, when the partition moved here from another instance
                let from = crate::checkpoint::foreign_writer(all.get(p), writer);
                let Some(snapshot) = self.checkpoints.snapshot_of(from, id, p) else {
                    return Err(crate::checkpoint::store::Error::Corrupt {
                        path: self.checkpoints.dir_of(from, id),
                        message: format!("no snapshot of {p}"),
                    }
                    .into());
                };
                // the recovery tests slow the restore down here (`restore::slow=sleep(ms)`)
                fail::fail_point!("restore::slow");
                let dir = self.checkpoints.verify(from, id, snapshot)?;
                crash_point!("restore::mid");
                self.metrics
                    .restored_bytes(snapshot.files.iter().map(|f| f.len).sum());
                let state = self.env.restore(&dir, &live)?;
                tracing::info!(partition = %p, checkpoint = %id, writer = %from.unwrap_or(writer), offset = ?committed, keys = state.approximate_keys(), "state restored");
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
                    dir: self.checkpoints.location(),
                });
            }
            Restore::Missing(refusal) => {
                return Err(Error::named_checkpoint_missing(
                    p,
                    &refusal,
                    std::path::Path::new(&self.checkpoints.location()),
                ));
            }
        };
        let windows = self.restore_windows(p, &state)?;
        let mut task = Task::new(role, committed, Some(state));
        task.windows = windows;
        Ok(task)
    }

    /// Where the live state of `p` is while this thread holds it: thread 0 of a pipeline in
    /// `<state.dir>/<pipeline>/`, thread `k` in `thread-<k>/` under it, so that a partition
    /// moving between the threads of one instance never has two stores in one directory.
    pub(super) fn live_dir(&self, p: &Partition) -> PathBuf {
        let mut dir = self.config.state.dir.join(&self.pipeline.name);
        if self.pipeline.thread > 0 {
            dir = dir.join(format!("thread-{}", self.pipeline.thread));
        }
        dir.join(format!("{}-{}", p.topic, p.partition))
    }

    /// Partitions taken away: their uncommitted work is dropped with the open transaction
    /// (the group generation changed, so it could not commit anyway); partitions kept are
    /// rewound to the last checkpoint.
    /// Returns the partitions kept, whose position the rewind moved.
    pub(super) fn revoke(&mut self, partitions: &[Partition]) -> Result<Vec<Partition>> {
        self.abort_open_transaction()?;
        for p in partitions {
            self.tasks.remove(p);
        }
        self.forget_partitions(partitions);
        if !self.tasks.is_empty() {
            self.rewind()?;
        }
        tracing::info!(pipeline = %self.pipeline.name, partitions = partitions.len(), "partitions revoked");
        Ok(self.tasks.keys().cloned().collect())
    }

    pub(super) fn abort_open_transaction(&mut self) -> Result<()> {
        self.txn.abort().map_err(failed_abort)?;
        // outputs and counts of work the rewind redoes
        self.pending.clear();
        self.input_tally.rewound();
        self.dirty = false;
        self.barriers_aborted();
        Ok(())
    }

    /// Restores every task from the checkpoint the group's commits name and seeks there.
    pub(super) fn rewind(&mut self) -> Result<()> {
        self.set_phase(crate::metrics::Phase::Restoring);
        let partitions: Vec<Partition> = self.tasks.keys().cloned().collect();
        self.tasks.clear();
        self.checkpoints.store.forget_sums();
        let mut positions = Vec::with_capacity(partitions.len());
        let restored = self.restore_tasks(&partitions);
        self.checkpoints.forget_downloads();
        for (p, task) in restored?.0 {
            positions.push((p.clone(), task.next_offset));
            self.tasks.insert(p, task);
        }
        self.hear_other_stream_anew();
        self.refresh_tables()?;
        self.consumer.seek(&positions)?;
        self.hold_cut()?;
        self.set_phase(crate::metrics::Phase::Running);
        Ok(())
    }

    /// Every task's other stream gets a full idle timeout from now: restoring the tasks one by
    /// one may itself take longer than that, and nothing has been read yet.
    pub(super) fn hear_other_stream_anew(&mut self) {
        let now = Instant::now();
        for task in self.tasks.values_mut() {
            task.other_heard = now;
            task.other_idle_handled = false;
        }
    }
}

/// A failed `abort_transaction`, as the protocol answers it: fatal exits, anything else
/// restarts the incarnation (whose `init_transactions` ends the transaction).
fn failed_abort(e: crate::kafka::Error) -> Error {
    match protocol::after_failure(Phase::Abort, e.txn_failure()) {
        Action::Exit => Error::Fatal(e),
        Action::RetryCommit
        | Action::AbortAndRewind { .. }
        | Action::Restart
        | Action::RestartWithoutAbort => Error::Kafka(e),
    }
}
