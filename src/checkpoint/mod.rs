//! Checkpoints: periodic, automatic, garbage-collected snapshots of every stateful task, each
//! described by a manifest that records the source offsets the state corresponds to.
//!
//! - [`protocol`]: the decisions (which snapshot to restore, what to do after a failed commit,
//!   what to delete), pure and unit/property tested.
//! - [`store`]: the directory layout, checksums, fsync and atomic rename.
//!
//! A checkpoint directory is durable before the Kafka transaction that commits its offsets; the
//! broker's committed offsets, read after `init_transactions`, decide which one is current.

pub mod protocol;
pub mod reset;
pub mod savepoint;
pub mod store;

use std::fmt;

use serde::{Deserialize, Serialize};

/// The number of a checkpoint within one pipeline; strictly increasing, never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CheckpointId(pub u64);

impl fmt::Display for CheckpointId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// An offset always means the next offset to read: the value `send_offsets_to_transaction`
/// takes and the consumer group stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NextOffset(pub i64);

impl fmt::Display for NextOffset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A topic partition.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Partition {
    pub topic: String,
    pub partition: i32,
}

impl fmt::Display for Partition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.topic, self.partition)
    }
}

/// `manifest.json` of one checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format_version: u32,
    pub checkpoint: CheckpointId,
    pub pipeline: String,
    pub created_unix_ms: u64,
    /// Every partition whose offset this checkpoint's transaction commits.
    pub offsets: Vec<PartitionOffset>,
    /// One entry per stateful task: its state as of `next_offset`.
    pub tasks: Vec<TaskSnapshot>,
}

pub const MANIFEST_FORMAT_VERSION: u32 = 1;

/// Milliseconds since the Unix epoch, now (0 if the clock is before it).
pub fn now_unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Manifest {
    /// A manifest created now, committing `offsets`, with `tasks` (their files are filled in
    /// by the store).
    pub fn new(
        checkpoint: CheckpointId,
        pipeline: &str,
        offsets: &[(Partition, NextOffset)],
        tasks: Vec<TaskSnapshot>,
    ) -> Self {
        Self {
            format_version: MANIFEST_FORMAT_VERSION,
            checkpoint,
            pipeline: pipeline.to_string(),
            created_unix_ms: now_unix_ms(),
            offsets: offsets
                .iter()
                .map(|(p, o)| PartitionOffset {
                    topic: p.topic.clone(),
                    partition: p.partition,
                    next_offset: *o,
                })
                .collect(),
            tasks,
        }
    }

    /// The snapshot offset of `partition`'s task in this checkpoint, if it has one.
    pub fn task_offset(&self, partition: &Partition) -> Option<Option<NextOffset>> {
        self.tasks
            .iter()
            .find(|t| t.topic == partition.topic && t.partition == partition.partition)
            .map(|t| t.next_offset)
    }
}

/// The restore candidates of `partition`: (checkpoint, snapshot offset) of every checkpoint
/// that has a snapshot of it and whose commit can be the current one (see
/// [`protocol::consistent`]) given the group's `committed` offsets.
pub fn candidates<'a>(
    manifests: impl IntoIterator<Item = (&'a CheckpointId, &'a Manifest)>,
    partition: &Partition,
    committed: &std::collections::BTreeMap<Partition, Option<NextOffset>>,
) -> Vec<(CheckpointId, Option<NextOffset>)> {
    manifests
        .into_iter()
        .filter(|(_, m)| protocol::consistent(&m.offsets, committed))
        .filter_map(|(id, m)| m.task_offset(partition).map(|o| (*id, o)))
        .collect()
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartitionOffset {
    pub topic: String,
    pub partition: i32,
    pub next_offset: NextOffset,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskSnapshot {
    pub topic: String,
    pub partition: i32,
    /// `None`: the task had read nothing yet (and the group had no offset for it).
    pub next_offset: Option<NextOffset>,
    /// Directory of the task's state files, relative to the checkpoint directory.
    pub dir: String,
    pub files: Vec<FileSum>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSum {
    pub name: String,
    pub len: u64,
    pub crc32c: u32,
}
