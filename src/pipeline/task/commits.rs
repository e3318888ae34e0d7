//! What the group's commits say, and what the runner does with them: the checkpoint they name
//! (its state, and the savepoint it descends from), commits the group lost while checkpoints
//! remain (offsets expire `offsets.retention.minutes` after a group empties), committed
//! offsets the log no longer holds, and deleting repartition records every task has counted.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Runner, Task};
use crate::checkpoint::savepoint::Savepoint;
use crate::checkpoint::tag::CommitTag;
use crate::checkpoint::{GroupCommit, Manifest};
use crate::kafka::admin::Admin;
use crate::pipeline::{Error, Result, chain};
use crate::position::{NextOffset, Partition};

/// How often counted repartition records are deleted (Kafka Streams' `repartition.purge.interval.ms`).
const PURGE_INTERVAL: Duration = Duration::from_secs(30);

/// Deletes repartition records below the committed offsets, at most every `PURGE_INTERVAL`,
/// on a thread of its own: DeleteRecords waits up to its timeout for a broker that does not
/// answer (30 s), and on the pipeline thread that held checkpoints and outputs as long.
pub(super) struct Purge {
    admin: Arc<Admin>,
    last: Instant,
    /// The latest purge; a new one starts only once it has ended.
    running: Option<std::thread::JoinHandle<()>>,
}

impl Purge {
    pub(super) fn new(admin: Admin) -> Self {
        Self {
            admin: Arc::new(admin),
            last: Instant::now(),
            running: None,
        }
    }
}

/// Tasks of assigned partitions, and the positions of those whose commit was lost and taken
/// from the checkpoint instead (the consumer must seek there).
pub(super) type Restored = (Vec<(Partition, Task)>, Vec<(Partition, Option<NextOffset>)>);

impl Runner<'_> {
    /// The tasks of `partitions` as the group's commits leave them: each at its committed
    /// offset (a partition never committed at its log start, so that every checkpoint commits
    /// a concrete offset for it, and its tag with it), stateful ones restored. A committed
    /// offset below the log start (records deleted before they were processed) refuses.
    pub(super) fn restore_tasks(&mut self, partitions: &[Partition]) -> Result<Restored> {
        let commits = self.consumer.commits(partitions)?;
        self.restore_tasks_at(partitions, commits)
    }

    /// `restore_tasks` at `commits` read before (an online savepoint's cut, `task/cut.rs`).
    pub(super) fn restore_tasks_at(
        &mut self,
        partitions: &[Partition],
        mut commits: Vec<(Partition, GroupCommit)>,
    ) -> Result<Restored> {
        let began = std::time::Instant::now();
        self.checkpoints.load_foreign(&commits);
        let adopted = self.adopt_lost_commits(&mut commits)?;
        let adopted_at = began.elapsed();
        let all: BTreeMap<Partition, GroupCommit> = commits.iter().cloned().collect();
        // the state restored descends from what its checkpoint descends from
        if let Some(lineage) = self.lineage_of(&commits) {
            self.checkpoints.lineage = lineage;
        }
        let mut plan = Vec::with_capacity(commits.len());
        let starts = self.consumer.log_starts(partitions)?;
        let ends = self.consumer.log_ends(partitions)?;
        for (p, commit) in &commits {
            let log_start = starts.get(p).copied().unwrap_or(0);
            let log_end = ends.get(p).copied().unwrap_or(i64::MAX);
            if let Some(committed) = commit.offset
                && (committed.0 < log_start || committed.0 > log_end)
            {
                return Err(self.out_of_range(p, committed, (log_start, log_end)));
            }
            plan.push((p.clone(), commit.offset, NextOffset(log_start)));
        }
        tracing::debug!(foreign_loaded = ?adopted_at, log_starts_read = ?began.elapsed(), "restore phases (time since it began)");
        // verifying and copying snapshots can take longer than max.poll.interval.ms: the
        // restore runs beside the poll loop, which keeps the group membership alive
        let tasks = self.while_polling(partitions, |runner| {
            plan.into_iter()
                .map(|(p, committed, log_start)| {
                    let mut task = runner.restore_task(&p, committed, &all)?;
                    task.next_offset = task.next_offset.or(Some(log_start));
                    Ok((p, task))
                })
                .collect::<Result<Vec<_>>>()
        })?;
        Ok((tasks, adopted))
    }

    /// Runs `work` on a helper thread while this one polls the consumer with `partitions`
    /// paused, so that a long restore never outlasts `max.poll.interval.ms` (which would make
    /// the member leave the group, be revoked, restore again: a loop without progress).
    /// Events the polls see wait, in order, for the next `poll_batch`.
    fn while_polling<R: Send>(
        &self,
        partitions: &[Partition],
        work: impl FnOnce(&Self) -> Result<R> + Send,
    ) -> Result<R> {
        // everything assigned: a record polled meanwhile would wait in the queue past a rewind
        let mut paused = self.consumer.assignment()?;
        for p in partitions {
            if !paused.contains(p) {
                paused.push(p.clone());
            }
        }
        self.consumer.pause(&paused)?;
        let outcome = std::thread::scope(|scope| {
            let worker = std::thread::Builder::new()
                .name(format!("restore-{}", self.pipeline.name))
                .spawn_scoped(scope, || work(self))
                .map_err(|e| Error::Panicked(format!("cannot start the restore thread: {e}")))?;
            let mut polled = Ok(());
            while !worker.is_finished() {
                if polled.is_ok() {
                    polled = self.consumer.keep_alive(Duration::from_millis(100));
                } else {
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
            let done = worker
                .join()
                .map_err(|p| Error::Panicked(crate::pipeline::panic_message(p.as_ref())))?;
            polled?;
            done
        });
        if let Err(e) = self.consumer.resume(&paused) {
            tracing::debug!(error = %chain(&e), "resume after the restore");
        }
        outcome
    }

    fn out_of_range(&self, p: &Partition, committed: NextOffset, log: (i64, i64)) -> Error {
        let name = &self.pipeline.name;
        let remedy = if self.topology.role(&p.topic) == Some(crate::pipeline::topology::Role::Keyed)
        {
            format!(
                "Restore a savepoint (flumen offsets reset --config FILE --pipeline {name} --to-savepoint DIR --execute), \
                 or start the keyed state over (flumen offsets reset --config FILE --pipeline {name} --to-earliest --drop-state --execute)"
            )
        } else {
            // below the log start, go on from the earliest record left; beyond the log end,
            // from the end (records written from now on)
            let to = if committed.0 > log.1 {
                "latest"
            } else {
                "earliest"
            };
            format!(
                "To go on without them: flumen offsets reset --config FILE --pipeline {name} --topic {}:{} --to-{to} --execute \
                 (with --drop-state or --to-savepoint DIR for keyed state)",
                p.topic, p.partition
            )
        };
        if committed.0 > log.1 {
            return Error::OffsetBeyondLogEnd {
                partition: p.clone(),
                committed,
                log_start: log.0,
                log_end: log.1,
                remedy,
            };
        }
        Error::OffsetOutOfRange {
            partition: p.clone(),
            committed,
            log_start: log.0,
            log_end: log.1,
            remedy,
        }
    }

    /// Partitions the group has no commit for, though a checkpoint committed their offsets:
    /// the group's offsets expired (`offsets.retention.minutes` after it emptied) or were
    /// deleted. Their commit is taken from the checkpoint the group's other commits name, or,
    /// when the group has none at all, from the newest checkpoint if it is marked committed
    /// (an unmarked newer one may have committed too: refused). Never an empty start from the
    /// earliest offsets, which would produce every output again.
    fn adopt_lost_commits(
        &self,
        commits: &mut [(Partition, GroupCommit)],
    ) -> Result<Vec<(Partition, Option<NextOffset>)>> {
        if commits.iter().all(|(_, c)| c.offset.is_some()) {
            return Ok(Vec::new());
        }
        let source = match self.named_checkpoint(commits) {
            Some(m) => Some(m),
            None if commits.iter().all(|(_, c)| c.offset.is_none()) => {
                self.newest_committed_checkpoint()?
            }
            None => None,
        };
        let Some(m) = source else {
            return Ok(Vec::new());
        };
        let writer = m
            .writer
            .as_deref()
            .unwrap_or(&self.pipeline.transactional_id);
        let tag = CommitTag::new(m.checkpoint, &m.pipeline, writer);
        let mut adopted = Vec::new();
        for (p, c) in commits.iter_mut().filter(|(_, c)| c.offset.is_none()) {
            let recorded = m.offsets.iter().find(|o| o.is_in(p));
            if let Some(o) = recorded {
                c.offset = Some(o.next_offset);
                c.tag = Some(tag.clone());
                adopted.push((p.clone(), c.offset));
            }
        }
        if !adopted.is_empty() {
            tracing::warn!(pipeline = %self.pipeline.name, checkpoint = %m.checkpoint, partitions = adopted.len(),
                "the group has no committed offset for partitions that checkpoint committed (expired after offsets.retention.minutes, or deleted); resuming them from the checkpoint");
        }
        Ok(adopted)
    }

    /// With no commit in the group at all: the newest checkpoint if it is marked committed;
    /// none if no checkpoint ever was (leftovers of attempts that never committed); refused if
    /// only an older one is marked, since the newer may have committed after all.
    fn newest_committed_checkpoint(&self) -> Result<Option<&Manifest>> {
        let Some((newest, m)) = self.checkpoints.manifests.iter().next_back() else {
            return Ok(None);
        };
        if self.checkpoints.store.is_committed(*newest) {
            return Ok(Some(m));
        }
        let marked = self
            .checkpoints
            .manifests
            .keys()
            .rev()
            .find(|id| self.checkpoints.store.is_committed(**id));
        match marked {
            None => Ok(None),
            Some(_) if self.options.allow_empty_state => Ok(None),
            Some(marked) => Err(Error::StateChoice(format!(
                "consumer group {} has no committed offsets (they expire offsets.retention.minutes after the group empties, or were deleted), \
                 but {} holds committed checkpoint {marked} and a newer checkpoint {newest} that may have committed after it; \
                 it cannot be told which to resume from. Delete {} to resume from {marked} (what {newest} produced is produced again), \
                 or restore a savepoint (flumen offsets reset --to-savepoint), or pass --allow-empty-state to start empty from the earliest offsets",
                self.pipeline.group_id,
                self.checkpoints.store.root().display(),
                self.checkpoints.store.dir_of(*newest).display(),
            ))),
        }
    }

    /// The savepoint lineage (`Manifest::restored_from`) of the checkpoint `commits` name
    /// (after lost commits were adopted), or of the newest checkpoint marked committed when
    /// they name none (commits written without a tag); `None` without either.
    fn lineage_of(&self, commits: &[(Partition, GroupCommit)]) -> Option<Option<String>> {
        let m = self.named_checkpoint(commits).or_else(|| {
            self.checkpoints
                .manifests
                .iter()
                .rev()
                .find(|(id, _)| self.checkpoints.store.is_committed(**id))
                .map(|(_, m)| m)
        })?;
        Some(m.restored_from.clone())
    }

    /// The newest checkpoint of this writer that one of `commits` names, if this store has
    /// it; else one of another writer's that they name (loaded by `load_foreign`).
    pub(super) fn named_checkpoint(
        &self,
        commits: &[(Partition, GroupCommit)],
    ) -> Option<&Manifest> {
        let writer = &self.pipeline.transactional_id;
        let tags = || {
            commits
                .iter()
                .filter_map(|(_, c)| c.tag.as_ref())
                .filter(|t| t.pipeline == self.pipeline.name)
        };
        let own = tags()
            .filter(|t| t.writer == *writer)
            .map(|t| t.checkpoint)
            .max()
            .and_then(|id| self.checkpoints.manifests.get(&id));
        own.or_else(|| {
            tags().find_map(|t| {
                self.checkpoints
                    .foreign
                    .get(&(t.writer.clone(), t.checkpoint))
            })
        })
    }

    /// `sp`, unless its restore already committed and the group's commits name a checkpoint
    /// descending from it: a service manager repeats `--from-savepoint` at every start, and
    /// applying it again would roll state and offsets back and produce everything since again.
    pub(super) fn unless_in_force<'s>(&self, sp: &'s Savepoint) -> Result<Option<&'s Savepoint>> {
        let parts: Vec<Partition> = (0..self.topology.source_partitions)
            .map(|partition| Partition {
                topic: self.pipeline.source.topic.clone(),
                partition,
            })
            .collect();
        let mut commits = self.consumer.commits(&parts)?;
        // commits the group lost (expired, deleted) are the checkpoint's, as at assignment
        self.adopt_lost_commits(&mut commits)?;
        let digest = sp.digest();
        match self.lineage_of(&commits) {
            Some(Some(lineage)) if lineage == digest => {
                tracing::info!(pipeline = %self.pipeline.name, savepoint = %sp.dir.display(),
                    "the savepoint was restored before and the pipeline has gone on from it; continuing from its latest checkpoint instead of restoring it again (--restore-again restores it once more)");
                Ok(None)
            }
            _ => Ok(Some(sp)),
        }
    }

    /// After a commit: deletes the repartition records below the offsets it committed (every
    /// task has counted them), at most every `PURGE_INTERVAL`, beside the pipeline (`Purge`).
    /// A failure is only logged: the records stay, and the next purge deletes them.
    pub(super) fn purge_counted(&mut self, committed: &[(Partition, NextOffset)]) {
        let (Some(purge), Some(topic)) = (self.purge.as_mut(), self.topology.repartition_topic())
        else {
            return;
        };
        if purge.last.elapsed() < PURGE_INTERVAL {
            return;
        }
        if purge.running.as_ref().is_some_and(|h| !h.is_finished()) {
            tracing::debug!(
                topic,
                "the last purge of counted repartition records is still running"
            );
            return;
        }
        purge.last = Instant::now();
        let below: Vec<(i32, i64)> = committed
            .iter()
            .filter(|(p, _)| p.topic == topic)
            .map(|(p, o)| (p.partition, o.0))
            .collect();
        if below.is_empty() {
            return;
        }
        let admin = Arc::clone(&purge.admin);
        let topic = topic.to_string();
        let spawned = std::thread::Builder::new()
            .name("flumen-purge".into())
            .spawn(move || {
                tracing::debug!(topic, ?below, "deleting counted repartition records");
                fail::fail_point!("admin::purge");
                match admin.delete_records_below(&topic, &below) {
                    Ok(starts) => {
                        tracing::debug!(topic, ?starts, "deleted counted repartition records");
                    }
                    Err(e) => {
                        tracing::warn!(topic, error = %chain(&e), "cannot delete counted repartition records; they stay until the next try");
                    }
                }
            });
        match spawned {
            Ok(handle) => purge.running = Some(handle),
            Err(e) => {
                tracing::warn!(error = %e, "cannot start a thread to delete counted repartition records; they stay until the next try");
            }
        }
    }
}
