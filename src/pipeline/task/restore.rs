//! `--from-savepoint`: the savepoint becomes checkpoint N of this pipeline (made durable before
//! the consumer subscribes), and on the first assignment one Kafka transaction commits N's
//! offsets (the savepoint's source offsets; the repartition topic's current end) together with
//! the savepoint's in-flight repartition records. The commit waits for the assignment because
//! the broker takes a transactional offset commit only from a member of the group's current
//! generation (a restarted static member still holds its place for a session timeout). The
//! assignment itself starts the consumer at N's offsets (`Consumer::start_at`), so nothing is
//! fetched from the offsets committed before; the tasks then restore N. A crash before that commit
//! leaves the previous state in force; the next `--from-savepoint` start repeats the restore.
//!
//! Keyed state follows the key: with more partitions than the savepoint had, each key's state
//! goes to the partition Kafka's murmur2 partitioner gives its key now; time-ordered layouts
//! (windows, timers, stream joins) find the key inside each state key (`pipeline::rescale`),
//! and a task's watermarks go to every task at their minimum.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::Runner;
use crate::checkpoint::savepoint::{Savepoint, SourceOffset, target_partition};
use crate::checkpoint::{CheckpointId, Manifest, TaskSnapshot};
use crate::kafka::admin::Admin;
use crate::pipeline::{Error, Result, rescale};
use crate::position::{NextOffset, Partition};
use crate::state::namespaced;

/// A restore whose checkpoint is durable and whose transaction waits for the assignment.
pub(in crate::pipeline) struct RestoreTxn {
    id: CheckpointId,
    manifest: Manifest,
    offsets: Vec<(Partition, NextOffset)>,
    /// (repartition partition, key, value), in the savepoint's order.
    pending: Vec<(i32, crate::checkpoint::savepoint::PendingRecord)>,
    savepoint: PathBuf,
    keys: u64,
    from_partitions: i32,
}

impl Runner<'_> {
    pub(super) fn mismatch(sp: &Savepoint, message: String) -> Error {
        Error::SavepointMismatch {
            dir: sp.dir.clone(),
            message,
        }
    }

    /// The offsets the restore commits: the savepoint's per source partition (a partition it
    /// never read, or a new one, from its beginning), the same for a stream join's other
    /// topic, the repartition topic's current end.
    fn restore_offsets(
        &self,
        sp: &Savepoint,
        admin: &Admin,
    ) -> Result<Vec<(Partition, NextOffset)>> {
        let source = &self.pipeline.source.topic;
        let mut offsets = self.recorded_offsets(source, &sp.manifest.offsets, admin)?;
        if let (Some((_, stream, ..)), Some(other)) =
            (self.stream_join(), &sp.manifest.other_stream)
        {
            // the same partition count as the source (a count change is refused)
            offsets.extend(self.recorded_offsets(stream, &other.offsets, admin)?);
        }
        if let Some(topic) = self.topology.repartition_topic() {
            for partition in 0..admin.partition_count(topic)? {
                let end = admin.watermarks(topic, partition)?.1;
                offsets.push((
                    Partition {
                        topic: topic.to_string(),
                        partition,
                    },
                    NextOffset(end),
                ));
            }
        }
        Ok(offsets)
    }

    /// `topic`'s offsets as a savepoint recorded them, per partition of the source's count; a
    /// partition it never read (or did not have) from the log start.
    fn recorded_offsets(
        &self,
        topic: &str,
        recorded: &[SourceOffset],
        admin: &Admin,
    ) -> Result<Vec<(Partition, NextOffset)>> {
        let mut offsets = Vec::new();
        for partition in 0..self.topology.source_partitions {
            let next = match recorded
                .iter()
                .find(|o| o.partition == partition)
                .and_then(|o| o.next_offset)
            {
                Some(o) => o,
                None => NextOffset(admin.watermarks(topic, partition)?.0),
            };
            let topic = topic.to_string();
            offsets.push((Partition { topic, partition }, next));
        }
        Ok(offsets)
    }

    /// Everything of a restore up to its transaction: offsets, state, checkpoint N. Returns
    /// whether a partition count changed since the savepoint.
    pub(super) fn restore_savepoint(&mut self, sp: &Savepoint, admin: &Admin) -> Result<bool> {
        let mut grown = sp.manifest.source_partitions != self.topology.source_partitions;
        let offsets = self.restore_offsets(sp, admin)?;
        let id = self.checkpoints.next_id;
        let staging = self.checkpoints.store.begin(id)?;
        let mut tasks = Vec::new();
        let mut files = Vec::new();
        let mut keys = 0u64;
        if let (Some(agg), Some(topic)) = (
            &self.pipeline.plan.aggregate,
            self.topology.stateful_topic(),
        ) {
            let count = admin.partition_count(topic)?;
            grown |= sp.manifest.state_partitions != count;
            let (states, restored) = self.redistribute(sp, agg, topic, count)?;
            keys = restored;
            for (partition, mut state) in states {
                let dir = format!("{topic}-{partition}");
                files.push(state.snapshot(&staging.join(&dir))?);
                let next_offset = offsets
                    .iter()
                    .find(|(p, _)| p.topic == topic && p.partition == partition)
                    .map(|(_, o)| *o);
                tasks.push(TaskSnapshot {
                    topic: topic.to_string(),
                    partition,
                    next_offset,
                    dir,
                    files: Vec::new(),
                });
            }
        }
        let mut manifest = Manifest::new(
            id,
            &self.pipeline.name,
            &self.pipeline.transactional_id,
            &offsets,
            tasks,
        );
        // later checkpoints carry it: the same --from-savepoint is not applied twice
        self.checkpoints.lineage = Some(sp.digest());
        manifest.restored_from.clone_from(&self.checkpoints.lineage);
        let manifest = self.checkpoints.finish(&staging, manifest, &files)?;
        let pending = pending_records(sp, admin, self.topology.repartition_topic())?;
        self.checkpoints.next_id = CheckpointId(id.0 + 1);
        // the first assignment starts here, whatever the group had committed before
        self.consumer.start_at(&offsets);
        self.restore_txn = Some(RestoreTxn {
            id,
            manifest,
            offsets,
            pending,
            savepoint: sp.dir.clone(),
            keys,
            from_partitions: sp.manifest.state_partitions,
        });
        Ok(grown)
    }

    /// The savepoint's keyed state of `agg`, each key in the task of the partition of `topic`
    /// (of `count`) its key hashes to now; entries every task holds (watermarks) merged and
    /// given to each. Returns the tasks' states and the keys restored.
    fn redistribute(
        &self,
        sp: &Savepoint,
        agg: &crate::config::Aggregate,
        topic: &str,
        count: i32,
    ) -> Result<(BTreeMap<i32, crate::state::TaskState>, u64)> {
        let total = sp.manifest.keys();
        let mut keys = 0u64;
        let mut states = BTreeMap::new();
        for partition in 0..count {
            let p = Partition {
                topic: topic.to_string(),
                partition,
            };
            states.insert(partition, self.env.open_empty(&self.live_dir(&p))?);
        }
        let moved = sp.manifest.state_partitions != count;
        // checked by `check_fit`: only movable layouts reach here with another count
        let layout = rescale::layout(agg).unwrap_or(rescale::Layout::Plain);
        let mut every_task: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        sp.read_state(&agg.id, |recorded, key, value| {
            let corrupt = |message: String| crate::state::Error::Corrupt {
                path: sp.dir.clone(),
                message,
            };
            let target = match rescale::route(layout, key) {
                _ if !moved => recorded,
                Some(rescale::Route::Key(k)) => {
                    target_partition(recorded, k, sp.manifest.state_partitions, count)
                }
                Some(rescale::Route::EveryTask) => {
                    let merged = match every_task.get(key) {
                        Some(old) => rescale::merge(old, value).ok_or_else(|| {
                            corrupt(format!("task entry {key:?} of {:?} is not a time", agg.id))
                        })?,
                        None => value.to_vec(),
                    };
                    every_task.insert(key.to_vec(), merged);
                    return Ok(());
                }
                None => {
                    return Err(corrupt(format!(
                        "state key {key:?} of {:?} has no record key to move it by",
                        agg.id
                    ))
                    .into());
                }
            };
            let state = states
                .get_mut(&target)
                .ok_or_else(|| corrupt(format!("key state for partition {target} of {count}")))?;
            state.put(&namespaced(&agg.id, key), value)?;
            keys += 1;
            if keys.is_multiple_of(10_000) {
                match self.progress {
                    Some(report) => report(keys, total),
                    None => tracing::info!(keys, total, "restoring savepoint state"),
                }
            }
            Ok(())
        })?;
        if let Some(report) = self.progress {
            report(keys, total);
        }
        for state in states.values_mut() {
            for (k, v) in &every_task {
                state.put(&namespaced(&agg.id, k), v)?;
            }
        }
        Ok((states, keys))
    }

    /// The restore's transaction, run on the first assignment (before its offsets are read):
    /// the in-flight records, then the offsets, in one commit.
    pub(super) fn finish_restore(&mut self) -> Result<()> {
        // kept until the commit succeeded: a failed attempt leaves the restore pending, so the
        // next incarnation repeats it
        let Some(r) = self.restore_txn.as_ref() else {
            return Ok(());
        };
        let id = r.id;
        self.txn.begin()?;
        if let Some(topic) = self.topology.repartition_topic() {
            for (partition, record) in &r.pending {
                let headers: Vec<(&str, &[u8])> = record
                    .headers
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_slice()))
                    .collect();
                self.txn.send_event(
                    topic,
                    Some(*partition),
                    record.key.as_deref(),
                    &record.value,
                    &headers,
                )?;
            }
        }
        self.txn.flush()?;
        let tag = self.checkpoints.tag(id).encode();
        self.txn.send_offsets(&r.offsets, &tag, &self.consumer)?;
        self.commit(id)?;
        fail::fail_point!("restore::after_commit", |_| {
            tracing::warn!(
                failpoint = "restore::after_commit",
                "failpoint: aborting the process"
            );
            std::process::abort()
        });
        let Some(r) = self.restore_txn.take() else {
            return Ok(());
        };
        self.checkpoints.committed += 1;
        self.checkpoints.manifests.insert(r.id, r.manifest);
        self.checkpoints.store.mark_committed(r.id)?;
        tracing::info!(pipeline = %self.pipeline.name, savepoint = %r.savepoint.display(), checkpoint = %r.id,
            keys = r.keys, pending = r.pending.len(), from_partitions = r.from_partitions,
            "restored from savepoint");
        Ok(())
    }
}

/// The savepoint's in-flight repartition records, each for the partition of `topic` its key
/// hashes to now (markers of a moved layout dropped: new ones follow).
fn pending_records(
    sp: &Savepoint,
    admin: &Admin,
    topic: Option<&str>,
) -> Result<Vec<(i32, crate::checkpoint::savepoint::PendingRecord)>> {
    let mut pending = Vec::new();
    if let Some(topic) = topic {
        let count = admin.partition_count(topic)?;
        let moved = sp.manifest.state_partitions != count;
        sp.read_pending(|recorded, record| {
            // a watermark marker was sent to each partition of the old count; the moved
            // tasks start from the merged watermarks, and new markers follow
            if moved
                && record.value.is_empty()
                && record.headers.iter().any(|(k, v)| {
                    k == crate::pipeline::window::WATERMARK_HEADER
                        && crate::pipeline::window::parse_watermark(v).is_some()
                })
            {
                return Ok(());
            }
            // an idle marker in flight is stale by the time the savepoint is restored: an
            // ordinary marker now (the partition, if still quiet, says so again)
            let mut record = record;
            record
                .headers
                .retain(|(k, _)| k != crate::pipeline::window::IDLE_HEADER);
            let key = record.key.as_deref().unwrap_or_default();
            let target = target_partition(recorded, key, sp.manifest.state_partitions, count);
            pending.push((target, record));
            Ok(())
        })?;
    }
    Ok(pending)
}
