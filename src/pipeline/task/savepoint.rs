//! Taking a savepoint on a running pipeline: force checkpoint N, then copy N's state (the live
//! state equals it: the thread takes no input meanwhile) into the canonical savepoint format,
//! with N's source offsets and the repartition records N committed that no task has read yet.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use super::start::load_schemas;
use super::{Incarnation, Runner};
use crate::checkpoint::CheckpointId;
use crate::checkpoint::savepoint::{
    Builder, FORMAT_VERSION, OperatorState, PendingRecord, SavepointManifest, SourceOffset,
};
use crate::config::AggregateKind;
use crate::control::{Command, Taken};
use crate::kafka::reader;
use crate::pipeline::topology::Role;
use crate::pipeline::{Error, Inputs, Result, chain};
use crate::position::{Partition, PartitionOffset};
use crate::state::split_namespaced;

/// How long a savepoint waits for the repartition topic's committed records to be readable.
const PENDING_TIMEOUT: Duration = Duration::from_secs(30);

pub(crate) fn kind_name(kind: &AggregateKind) -> &'static str {
    kind.name()
}

impl<'a> Runner<'a> {
    /// Handles one control command; `Ok(true)`: the pipeline must stop now.
    pub(super) fn on_command(&mut self, command: Command) -> Result<bool> {
        let Command { dir, stop, reply } = command;
        // before any checkpoint: an empty one would make garbage collection drop a real one
        if let Some(why) = self.not_ready() {
            drop(reply.send(Err(why)));
            return Ok(false);
        }
        let id = match self.try_checkpoint() {
            Ok(id) => id,
            Err(failed) => {
                let message = format!("checkpoint failed: {}", chain(&failed.error));
                drop(reply.send(Err(message)));
                self.after_failed_checkpoint(failed.phase, failed.error)?;
                return Ok(false);
            }
        };
        match self.write_savepoint(Some(id), dir, None) {
            Ok(taken) => {
                tracing::info!(pipeline = %self.pipeline.name, path = %taken.path.display(), checkpoint = taken.checkpoint,
                    keys = taken.keys, pending = taken.pending, "savepoint taken");
                drop(reply.send(Ok(taken)));
                Ok(stop)
            }
            Err(e) => {
                let message = chain(&e);
                tracing::warn!(pipeline = %self.pipeline.name, error = %message, "savepoint failed; the pipeline goes on");
                drop(reply.send(Err(message)));
                Ok(false)
            }
        }
    }

    /// Why a savepoint cannot be taken now (partitions not all assigned, a restore pending).
    fn not_ready(&self) -> Option<String> {
        if self.pipeline.parallelism > 1 {
            return Some(format!(
                "pipeline {:?} runs on several threads, each holding some partitions: take its \
                 savepoint with `flumen savepoint create --config FILE --pipeline NAME`, one cut \
                 of all of them while they run",
                self.pipeline.name
            ));
        }
        let count = |role: Role| self.tasks.values().filter(|t| t.role == role).count();
        let assigned = count(Role::Source) + count(Role::KeyedSource);
        let others = count(Role::OtherStream);
        let partitions = self.topology.source_partitions;
        if self.topology.other_stream().is_some() && i32::try_from(others).ok() != Some(partitions)
        {
            return Some(format!(
                "only {others} of {} partitions of the joined stream are assigned yet; try again in a moment",
                self.topology.source_partitions
            ));
        }
        if i32::try_from(assigned).ok() != Some(self.topology.source_partitions) {
            return Some(format!(
                "only {assigned} of {} source partitions are assigned to this instance; try again \
                 in a moment, or, if the pipeline runs on several instances, take its savepoint \
                 with `flumen savepoint create --config FILE --pipeline NAME`",
                self.topology.source_partitions
            ));
        }
        self.restore_txn
            .is_some()
            .then(|| "a restore is still being committed; try again in a moment".to_string())
    }

    /// `flumen savepoint create`: the savepoint of a stopped pipeline, however many threads
    /// and instances ran it. Every partition is restored here from the checkpoint its group
    /// commit names (whoever wrote it; fenced first if it wrote recently: `assign`), then all
    /// of them are written as one savepoint, with the repartition records committed but not
    /// yet counted as its pending records. The cut is consistent because every commit is
    /// final: a source offset and the repartition records of the source records below it
    /// committed in one transaction, and each repartition record is below its stateful task's
    /// committed offset (in the state) or above it (pending), never both.
    pub fn savepoint_offline(inputs: &Inputs<'a>, dir: Option<PathBuf>) -> Result<Taken> {
        let (mut runner, _) =
            Self::prepare(inputs, None, Incarnation::Offline, load_schemas(inputs)?)?;
        let partitions = runner.every_partition();
        runner.assign(&partitions)?;
        runner.write_savepoint(None, dir, None)
    }

    /// Every partition of every topic the pipeline reads.
    pub(super) fn every_partition(&self) -> Vec<Partition> {
        self.topology
            .topics()
            .into_iter()
            .flat_map(|topic| {
                (0..self.topology.source_partitions).map(move |partition| Partition {
                    topic: topic.to_string(),
                    partition,
                })
            })
            .collect()
    }

    /// The savepoint of the state and positions of every task now: at checkpoint `id`, just
    /// committed, or (`None`) at the tasks' positions (`savepoint_offline`, and an online cut,
    /// which passes the in-flight records it read up to its barriers as `in_flight`).
    pub(super) fn write_savepoint(
        &mut self,
        id: Option<CheckpointId>,
        dir: Option<PathBuf>,
        in_flight: Option<Vec<reader::Pending>>,
    ) -> Result<Taken> {
        let name = &self.pipeline.name;
        let source = &self.pipeline.source.topic;
        let positions: Vec<PartitionOffset> = match id {
            Some(id) => self
                .checkpoints
                .manifests
                .get(&id)
                .ok_or_else(|| Error::SavepointMismatch {
                    dir: self.checkpoints.store.dir_of(id),
                    message: "the checkpoint just committed is not known".into(),
                })?
                .offsets
                .clone(),
            None => self
                .tasks
                .iter()
                .filter_map(|(p, t)| t.next_offset.map(|o| PartitionOffset::new(p, o)))
                .collect(),
        };
        let id = id.unwrap_or(CheckpointId(0));
        let created_unix_ms = crate::checkpoint::now_unix_ms();
        let target = match dir {
            Some(d) => d.join(name),
            None => self
                .config
                .checkpoint
                .savepoint_dir
                .join(name)
                .join(format!("sp-{:06}-{created_unix_ms}", id.0)),
        };
        let mut builder = Builder::begin(&target)?;
        let (seen_ops, state_partitions) = self.write_state(&mut builder, &target)?;
        let pending = match in_flight {
            Some(records) => put_pending(&mut builder, records)?,
            None => self.write_pending(&mut builder)?,
        };
        let operators = self.operators_of(seen_ops);
        let partitions = self.topology.source_partitions;
        let offsets_of = |topic: &str| source_offsets(&positions, topic, partitions);
        let offsets = offsets_of(source);
        // co-partitioned with the source (checked at start): the same partition numbers
        let other_stream =
            self.stream_join().map(
                |(_, stream, ..)| crate::checkpoint::savepoint::OtherStream {
                    topic: stream.to_string(),
                    offsets: offsets_of(stream),
                },
            );
        let head = SavepointManifest {
            format_version: FORMAT_VERSION,
            flumen_version: env!("CARGO_PKG_VERSION").to_string(),
            pipeline: name.clone(),
            created_unix_ms,
            checkpoint: id,
            source_topic: source.clone(),
            source_partitions: self.topology.source_partitions,
            offsets,
            state_partitions,
            operators,
            pending: Vec::new(),
            other_stream,
        };
        let written = builder.finish(head)?;
        Ok(Taken {
            pipeline: name.clone(),
            path: target,
            checkpoint: id.0,
            keys: written.keys(),
            pending,
        })
    }

    /// The operators whose state the savepoint holds: the pipeline's, and any namespace no
    /// configured operator owns (not expected: restores skip such state), kept and declared,
    /// never silently dropped.
    fn operators_of(&self, mut seen: BTreeSet<String>) -> Vec<OperatorState> {
        let mut operators = Vec::new();
        if let Some(agg) = &self.pipeline.plan.aggregate {
            seen.remove(&agg.id);
            operators.push(OperatorState {
                id: agg.id.clone(),
                kind: kind_name(&agg.kind).to_string(),
                files: Vec::new(),
            });
        }
        for op in seen {
            operators.push(OperatorState {
                id: op,
                kind: "unknown".into(),
                files: Vec::new(),
            });
        }
        operators
    }

    /// Every stateful task's state into the savepoint, by operator; returns the operators
    /// seen and the number of stateful tasks.
    fn write_state(
        &self,
        builder: &mut Builder,
        target: &std::path::Path,
    ) -> Result<(BTreeSet<String>, i32)> {
        let mut seen_ops = BTreeSet::new();
        let mut state_partitions = 0;
        for (p, task) in &self.tasks {
            let Some(state) = &task.state else { continue };
            state_partitions += 1;
            state.for_each(|key, value| {
                let (op, key) =
                    split_namespaced(key).ok_or_else(|| crate::state::Error::Corrupt {
                        path: self.live_dir(p),
                        message: "a key outside every operator namespace".into(),
                    })?;
                if !seen_ops.contains(op) {
                    seen_ops.insert(op.to_string());
                }
                builder.put_state(op, p.partition, key, value).map_err(|e| {
                    crate::state::Error::Corrupt {
                        path: target.to_path_buf(),
                        message: chain(&e),
                    }
                })
            })?;
        }
        Ok((seen_ops, state_partitions))
    }

    /// The repartition records committed but not yet counted by their stateful task (read up
    /// to what this producer committed); returns how many.
    fn write_pending(&self, builder: &mut Builder) -> Result<u64> {
        let mut pending = 0;
        if let Some(topic) = self.topology.repartition_topic() {
            let from: Vec<_> = self
                .tasks
                .iter()
                .filter(|(p, _)| p.topic == topic)
                .map(|(p, t)| (p.partition, t.next_offset))
                .collect();
            let must_reach = self.txn.committed_max(topic);
            let records = reader::read_to_end(
                &self.config.kafka,
                topic,
                &from,
                &must_reach,
                PENDING_TIMEOUT,
            )?;
            pending = put_pending(builder, records)?;
        }
        Ok(pending)
    }
}

/// In-flight repartition records into the savepoint; returns how many.
fn put_pending(builder: &mut Builder, records: Vec<reader::Pending>) -> Result<u64> {
    let mut pending = 0;
    for r in records {
        let record = PendingRecord {
            key: r.key,
            value: r.value,
            headers: r.headers,
        };
        builder.put_pending(r.partition, &record)?;
        pending += 1;
    }
    Ok(pending)
}

/// The next offset `positions` hold for each partition of `topic`.
fn source_offsets(
    positions: &[PartitionOffset],
    topic: &str,
    partitions: i32,
) -> Vec<SourceOffset> {
    (0..partitions)
        .map(|partition| SourceOffset {
            partition,
            next_offset: positions
                .iter()
                .find(|o| o.topic == topic && o.partition == partition)
                .map(|o| o.next_offset),
        })
        .collect()
}
