//! Checkpoint N at run time, the protocol's steps in order (`checkpoint::protocol` has them and
//! the decisions after a failure; `task/checkpointer.rs` the store's side).

use std::time::{Duration, Instant};

use super::{COMMIT_RETRIES, Runner};
use crate::checkpoint::protocol::{self, Action, Phase};
use crate::checkpoint::{CheckpointId, GroupCommit, Manifest};
use crate::metrics::Outcome;
use crate::pipeline::{Error, Result, chain};
use crate::position::{NextOffset, Partition};

impl Runner<'_> {
    /// Checkpoint N (see `checkpoint::protocol`). A failure is answered by the protocol
    /// (`protocol::after_failure`): an abortable one aborts, rewinds and lets the loop go on;
    /// anything else is returned.
    pub(super) fn checkpoint(&mut self) -> Result<()> {
        let started = Instant::now();
        // the idleness test slows every checkpoint down here (`checkpoint::slow=sleep(ms)`)
        fail::fail_point!("checkpoint::slow");
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
    pub(super) fn after_failed_checkpoint(&mut self, phase: Option<Phase>, e: Error) -> Result<()> {
        let (Some(phase), Error::Kafka(k)) = (phase, &e) else {
            return Err(e);
        };
        let action = protocol::after_failure(phase, k.txn_failure());
        let outcome = match action {
            Action::AbortAndRewind { .. } => Outcome::aborted,
            _ => Outcome::failed,
        };
        self.observe_failed_checkpoint(outcome);
        match action {
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
    pub(super) fn try_checkpoint(&mut self) -> std::result::Result<CheckpointId, Box<Failed>> {
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
            .map(|o| (o.partition(), o.next_offset))
            .collect();
        self.send_offsets(id, &offsets)
            .map_err(Failed::at(before_commit(Some(id))))?;
        crash_point!("checkpoint::before_commit");
        crash_point!("checkpoint::before_unmoved_commit", unmoved);
        let _ = unmoved; // read only by the failpoints
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
    pub(super) fn barrier(&mut self) -> Result<()> {
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
    pub(super) fn after_commit(
        &mut self,
        id: CheckpointId,
        manifest: Manifest,
        offsets: &[(Partition, NextOffset)],
        begun: Instant,
    ) -> Result<()> {
        self.dirty = false;
        self.last_checkpoint = begun;
        self.observe_commit(&manifest, begun.elapsed());
        // an online savepoint's cut may still read older checkpoints and counted records
        let collect = !self.cut_reads();
        // a failed look-up only postpones garbage collection: the commit has happened
        let elsewhere = collect
            .then(|| self.commits_elsewhere())
            .transpose()
            .inspect_err(|e| tracing::warn!(pipeline = %self.pipeline.name, error = %chain(e), "cannot read the group's commits of partitions held elsewhere; this checkpoint deletes none"))
            .ok()
            .flatten();
        self.checkpoints
            .committed(id, manifest, elsewhere.as_deref())?;
        if collect {
            self.purge_counted(offsets);
        }
        Ok(())
    }

    /// The group's commits of the stateful partitions this incarnation does not hold (they are
    /// another instance's, or nobody's yet): they may still name a checkpoint of this writer,
    /// which garbage collection keeps. None to ask for when every one is held here.
    fn commits_elsewhere(&self) -> Result<Vec<(Partition, GroupCommit)>> {
        let elsewhere: Vec<Partition> = (0..self.topology.source_partitions)
            .filter_map(|n| self.topology.stateful_partition(n))
            .filter(|p| !self.tasks.contains_key(p))
            .collect();
        if elsewhere.is_empty() {
            return Ok(Vec::new());
        }
        Ok(self.consumer.commits(&elsewhere)?)
    }

    /// The offsets into the open transaction, each tagged with the checkpoint's name.
    pub(super) fn send_offsets(
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
    pub(super) fn snapshot(&mut self, id: CheckpointId) -> Result<Manifest> {
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
    pub(super) fn commit(&mut self, id: CheckpointId) -> Result<()> {
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
                    // retrying is progress: the loop is not stuck
                    self.metrics.health.beat();
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

/// A checkpoint that failed, and in which transactional call (`None`: not in one).
pub(super) struct Failed {
    pub(super) phase: Option<Phase>,
    pub(super) error: Error,
}

impl Failed {
    pub(super) fn at(phase: Option<Phase>) -> impl FnOnce(Error) -> Box<Self> {
        move |error| Box::new(Self { phase, error })
    }
}
