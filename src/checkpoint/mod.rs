//! Checkpoints: periodic, automatic, garbage-collected snapshots of every stateful task, each
//! described by a manifest that records the source offsets the state corresponds to.
//!
//! - [`protocol`]: the decisions (which snapshot to restore, what to do after a failed commit,
//!   what to delete), pure and unit/property tested.
//! - [`store`]: the directory layout, checksums, fsync and atomic rename.
//! - [`seal`]: a manifest's file bytes, ending in the manifest's own checksum.
//! - [`catalog`]: a read-only view of the checkpoints wherever they are (CLI, doctor).
//! - [`remote`]: the copy in an object store (`checkpoint.dir = "s3://..."`), uploaded
//!   incrementally before the commit, which any instance restores from.
//!
//! A checkpoint directory is durable before the Kafka transaction that commits its offsets; the
//! broker's committed offsets, read after `init_transactions`, decide which one is current.

pub mod catalog;
pub mod protocol;
pub mod remote;
pub mod savepoint;
pub mod seal;
pub mod store;
pub mod tag;

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::position::{NextOffset, Partition, PartitionOffset};

/// The number of a checkpoint within one pipeline; strictly increasing, never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CheckpointId(pub u64);

impl fmt::Display for CheckpointId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
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
    /// The transactional id whose commit names this checkpoint (format 2 on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub writer: Option<String>,
    /// The digest of the savepoint whose restore this state descends from (set by the
    /// restore's checkpoint, carried by every later one): a `--from-savepoint` that is already
    /// in force is not applied again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restored_from: Option<String>,
    /// Every partition whose offset this checkpoint's transaction commits.
    pub offsets: Vec<PartitionOffset>,
    /// One entry per stateful task: its state as of `next_offset`.
    pub tasks: Vec<TaskSnapshot>,
}

/// Format 2 added `writer` and `restored_from`, format 3 the manifest's own checksum
/// ([`seal`]); formats 1 and 2 are still read.
pub const MANIFEST_FORMAT_VERSION: u32 = 3;
/// The oldest manifest format this version reads.
pub const MANIFEST_FORMAT_OLDEST: u32 = 1;

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
        writer: &str,
        offsets: &[(Partition, NextOffset)],
        tasks: Vec<TaskSnapshot>,
    ) -> Self {
        Self {
            format_version: MANIFEST_FORMAT_VERSION,
            checkpoint,
            pipeline: pipeline.to_string(),
            created_unix_ms: now_unix_ms(),
            writer: Some(writer.to_string()),
            restored_from: None,
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

/// What the group has committed for one partition: the offset, and the checkpoint its
/// metadata names (a [`tag::CommitTag`]; none for a commit written without one).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupCommit {
    pub offset: Option<NextOffset>,
    pub tag: Option<tag::CommitTag>,
}

impl GroupCommit {
    /// The group's commit as the broker returned it: offset and offset-commit metadata.
    pub fn read(offset: Option<NextOffset>, metadata: &str) -> Self {
        Self {
            offset,
            tag: tag::CommitTag::parse(metadata),
        }
    }
}

/// The newest checkpoint of `pipeline` that one of `commits` names (by its tag).
pub fn named(commits: &[(Partition, GroupCommit)], pipeline: &str) -> Option<CheckpointId> {
    commits
        .iter()
        .filter_map(|(_, c)| c.tag.as_ref())
        .filter(|t| t.pipeline == pipeline)
        .map(|t| t.checkpoint)
        .max()
}

/// Which snapshot restores `partition`, given the group's commits of every assigned partition.
///
/// A tagged commit names its checkpoint: that one is restored if this store has it, written
/// by the same pipeline and writer, with a snapshot of `partition` at the committed offset;
/// anything else is refused ([`protocol::Restore::Missing`]). An untagged commit is matched by
/// offsets, as before tags existed: the newest snapshot at the committed offset among the
/// checkpoints whose every offset agrees with the group's ([`protocol::consistent`]).
pub fn choose<'a>(
    manifests: impl IntoIterator<Item = (&'a CheckpointId, &'a Manifest)>,
    partition: &Partition,
    commits: &std::collections::BTreeMap<Partition, GroupCommit>,
) -> protocol::Restore {
    let commit = commits.get(partition).cloned().unwrap_or_default();
    if let (Some(tag), Some(offset)) = (&commit.tag, commit.offset) {
        let named = manifests
            .into_iter()
            .find(|(id, _)| **id == tag.checkpoint)
            .map(|(_, m)| m);
        return protocol::restore_named(tag, offset, named.map(|m| (m, m.task_offset(partition))));
    }
    let offsets: std::collections::BTreeMap<Partition, Option<NextOffset>> =
        commits.iter().map(|(p, c)| (p.clone(), c.offset)).collect();
    let candidates: Vec<(CheckpointId, Option<NextOffset>)> = manifests
        .into_iter()
        .filter(|(_, m)| protocol::consistent(&m.offsets, &offsets))
        .filter_map(|(id, m)| m.task_offset(partition).map(|o| (*id, o)))
        .collect();
    protocol::choose_restore(commit.offset, &candidates)
}

/// Other writers' checkpoints that commits name, by (writer, id): a partition that moved from
/// one instance to another restores from the checkpoint of the writer that committed it last.
pub type Foreign = std::collections::BTreeMap<(String, CheckpointId), Manifest>;

/// The other writer whose checkpoint `commit` names, if it names one (`writer` is this one).
pub fn foreign_writer<'c>(commit: Option<&'c GroupCommit>, writer: &str) -> Option<&'c str> {
    let tag = commit?.tag.as_ref()?;
    (tag.writer != writer).then_some(tag.writer.as_str())
}

/// [`choose`] among writers sharing a checkpoint directory: a commit that names another
/// writer's checkpoint is answered from `foreign` (the caller loaded the checkpoints commits
/// name), any other from this `writer`'s own manifests.
pub fn choose_shared<'a>(
    writer: &str,
    own: impl IntoIterator<Item = (&'a CheckpointId, &'a Manifest)>,
    foreign: &Foreign,
    partition: &Partition,
    commits: &std::collections::BTreeMap<Partition, GroupCommit>,
) -> protocol::Restore {
    let commit = commits.get(partition);
    if let (Some(other), Some(c)) = (foreign_writer(commit, writer), commit)
        && let (Some(tag), Some(offset)) = (&c.tag, c.offset)
    {
        let named = foreign.get(&(other.to_string(), tag.checkpoint));
        return protocol::restore_named(tag, offset, named.map(|m| (m, m.task_offset(partition))));
    }
    choose(own, partition, commits)
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::protocol::Restore;
    use super::tag::CommitTag;
    use super::*;

    fn part(p: i32) -> Partition {
        Partition {
            topic: "in".into(),
            partition: p,
        }
    }

    /// Checkpoint `id` with a snapshot of partition 0 at `at` (and its offsets at `at`).
    fn manifest(id: u64, at: i64) -> (CheckpointId, Manifest) {
        let task = TaskSnapshot {
            topic: "in".into(),
            partition: 0,
            next_offset: Some(NextOffset(at)),
            dir: "in-0".into(),
            files: Vec::new(),
        };
        let offsets = [(part(0), NextOffset(at))];
        let id = CheckpointId(id);
        (id, Manifest::new(id, "p", "w", &offsets, vec![task]))
    }

    fn commit(at: i64, tag: Option<u64>) -> BTreeMap<Partition, GroupCommit> {
        let metadata = tag.map_or_else(String::new, |id| {
            CommitTag::new(CheckpointId(id), "p", "w").encode()
        });
        BTreeMap::from([(part(0), GroupCommit::read(Some(NextOffset(at)), &metadata))])
    }

    #[test]
    fn a_tagged_commit_restores_the_checkpoint_it_names_not_the_newest_at_its_offset() {
        // 3 moved no offset (timers fired) and its commit was lost: the group names 2
        let manifests = BTreeMap::from([manifest(1, 5), manifest(2, 10), manifest(3, 10)]);
        assert_eq!(
            choose(&manifests, &part(0), &commit(10, Some(2))),
            Restore::From(CheckpointId(2))
        );
        // offset matching alone (a commit without a tag) takes the newest: 3
        assert_eq!(
            choose(&manifests, &part(0), &commit(10, None)),
            Restore::From(CheckpointId(3))
        );
    }

    #[test]
    fn a_commit_of_another_writer_restores_that_writers_checkpoint() {
        // this writer ("w") has a checkpoint 2 at offset 10 too: ids are per writer
        let own = BTreeMap::from([manifest(2, 10)]);
        let theirs = |at: i64| {
            let (id, mut m) = manifest(2, at);
            m.writer = Some("v".into());
            Foreign::from([(("v".to_string(), id), m)])
        };
        let mut commits = commit(12, None);
        commits.insert(
            part(0),
            GroupCommit::read(
                Some(NextOffset(12)),
                &CommitTag::new(CheckpointId(2), "p", "v").encode(),
            ),
        );
        assert_eq!(
            choose_shared("w", &own, &theirs(12), &part(0), &commits),
            Restore::From(CheckpointId(2))
        );
        // not loaded (or gone): refused, never this writer's checkpoint of the same id
        let refused = choose_shared("w", &own, &Foreign::new(), &part(0), &commits);
        assert!(matches!(refused, Restore::Missing(_)), "{refused:?}");
        let stale = choose_shared("w", &own, &theirs(10), &part(0), &commits);
        assert!(matches!(stale, Restore::Missing(_)), "{stale:?}");
        // this writer's own commit is answered from its own manifests
        assert_eq!(
            choose_shared("w", &own, &theirs(12), &part(0), &commit(10, Some(2))),
            Restore::From(CheckpointId(2))
        );
    }

    #[test]
    fn a_named_checkpoint_that_is_missing_or_disagrees_is_refused() {
        let manifests = BTreeMap::from([manifest(1, 5), manifest(2, 10)]);
        let why = |restore: Restore| match restore {
            Restore::Missing(refusal) => refusal.why,
            other => panic!("{other:?}"),
        };
        let gone = why(choose(&manifests, &part(0), &commit(10, Some(7))));
        assert!(gone.contains("not in the checkpoint directory"), "{gone}");
        let moved = why(choose(&manifests, &part(0), &commit(12, Some(2))));
        assert!(moved.contains("at offset 10, the commit at 12"), "{moved}");
        let other = why(choose(&manifests, &part(1), &{
            let mut c = commit(10, Some(2));
            c.insert(part(1), c[&part(0)].clone());
            c
        }));
        assert!(other.contains("no snapshot of this partition"), "{other}");
        let mut foreign = commit(10, None);
        foreign.insert(
            part(0),
            GroupCommit::read(
                Some(NextOffset(10)),
                &CommitTag::new(CheckpointId(2), "p", "someone-else").encode(),
            ),
        );
        let writer = why(choose(&manifests, &part(0), &foreign));
        assert!(writer.contains("written by \"w\""), "{writer}");
    }
}
