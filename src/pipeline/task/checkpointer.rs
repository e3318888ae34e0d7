//! The checkpointer: the store, the manifests in it, the next checkpoint id, the count of
//! committed checkpoints and the lineage they carry. The runner asks it to write checkpoint
//! N's snapshot, to take note of N's commit (mark it, collect garbage), or to forget N
//! (aborted, never committed). Which checkpoint a restore takes is `checkpoint::choose`'s.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use crate::checkpoint::protocol;
use crate::checkpoint::store::Store;
use crate::checkpoint::tag::CommitTag;
use crate::checkpoint::{
    CheckpointId, Foreign, GroupCommit, MANIFEST_FORMAT_VERSION, Manifest, TaskSnapshot,
};
use crate::pipeline::{Result, chain};
use crate::position::{NextOffset, Partition, PartitionOffset};
use crate::state::TaskState;

pub(super) struct Checkpointer {
    pub store: Store,
    /// Every readable manifest in the store, by id.
    pub manifests: BTreeMap<CheckpointId, Manifest>,
    pub next_id: CheckpointId,
    /// Checkpoints committed by this incarnation.
    pub committed: u64,
    /// The digest of the savepoint whose restore the current state descends from
    /// (`Manifest::restored_from`), carried into every checkpoint.
    pub lineage: Option<String>,
    /// Other writers' checkpoints that the group's commits of this incarnation's partitions
    /// name (partitions that moved here), loaded at each assignment and rewind.
    pub foreign: Foreign,
    /// Other writers' stores, read only.
    readers: HashMap<String, Store>,
    /// `checkpoint.dir`, shared by the writers of the pipeline.
    dir: PathBuf,
    pipeline: String,
    /// The transactional id: the writer a commit's tag names.
    writer: String,
    retain: usize,
}

/// One task's part of a checkpoint: its partition, the offset its state reflects, its state
/// (stateful tasks only).
pub(super) type TaskPart<'t> = (&'t Partition, Option<NextOffset>, Option<&'t mut TaskState>);

impl Checkpointer {
    /// The store of `pipeline` written by `writer` under `dir`, with the manifests it holds
    /// (an unreadable one is logged and left out: it cannot be restored).
    pub fn open(dir: &Path, pipeline: &str, writer: &str, retain: usize) -> Result<Self> {
        let store = Store::open(dir, pipeline, writer)?;
        let mut manifests = BTreeMap::new();
        for id in store.list()? {
            match store.manifest(id) {
                Ok(m) => {
                    manifests.insert(id, m);
                }
                Err(e) => {
                    tracing::warn!(checkpoint = %id, error = %chain(&e), "unreadable checkpoint manifest; it cannot be restored")
                }
            }
        }
        let next_id = protocol::next_id(&manifests.keys().copied().collect::<Vec<_>>(), None);
        Ok(Self {
            store,
            manifests,
            next_id,
            committed: 0,
            lineage: None,
            foreign: Foreign::new(),
            readers: HashMap::new(),
            dir: dir.to_path_buf(),
            pipeline: pipeline.to_string(),
            writer: writer.to_string(),
            retain,
        })
    }

    /// Loads the other writers' checkpoints that `commits` name (partitions that moved here
    /// from another instance). One that cannot be read is left out, with a warning: the restore
    /// of its partitions is refused, naming it.
    pub fn load_foreign(&mut self, commits: &[(Partition, GroupCommit)]) {
        self.foreign.clear();
        for (p, c) in commits {
            let Some(writer) = crate::checkpoint::foreign_writer(Some(c), &self.writer) else {
                continue;
            };
            let Some(tag) = c.tag.as_ref().filter(|t| t.pipeline == self.pipeline) else {
                continue;
            };
            let key = (writer.to_string(), tag.checkpoint);
            if self.foreign.contains_key(&key) {
                continue;
            }
            if !self.readers.contains_key(writer) {
                match Store::reader(&self.dir, &self.pipeline, writer) {
                    Ok(store) => {
                        self.readers.insert(writer.to_string(), store);
                    }
                    Err(e) => {
                        tracing::warn!(partition = %p, writer, error = %chain(&e), "the checkpoint the group's commit names is another writer's, whose store cannot be read");
                        continue;
                    }
                }
            }
            let read = self.readers.get(writer).map(|s| s.manifest(tag.checkpoint));
            match read {
                Some(Ok(m)) => {
                    self.foreign.insert(key, m);
                }
                Some(Err(e)) => {
                    tracing::warn!(partition = %p, writer, checkpoint = %tag.checkpoint, error = %chain(&e), "the checkpoint the group's commit names cannot be read");
                }
                None => {}
            }
        }
    }

    /// The snapshot of `p` in checkpoint `id` of `writer` (`None`: this writer).
    pub fn snapshot_of(
        &self,
        writer: Option<&str>,
        id: CheckpointId,
        p: &Partition,
    ) -> Option<&TaskSnapshot> {
        let manifest = match writer {
            None => self.manifests.get(&id),
            Some(w) => self.foreign.get(&(w.to_string(), id)),
        };
        manifest?
            .tasks
            .iter()
            .find(|t| t.topic == p.topic && t.partition == p.partition)
    }

    /// Checks `snapshot`'s files in checkpoint `id` of `writer` (`None`: this writer) against
    /// their checksums; returns its directory.
    pub fn verify(
        &self,
        writer: Option<&str>,
        id: CheckpointId,
        snapshot: &TaskSnapshot,
    ) -> Result<PathBuf> {
        let store = self.store_of(writer)?;
        Ok(store.verify(id, snapshot)?)
    }

    /// Where checkpoint `id` of `writer` (`None`: this writer) is, for messages.
    pub fn dir_of(&self, writer: Option<&str>, id: CheckpointId) -> PathBuf {
        self.store_of(writer)
            .map_or_else(|_| self.store.dir_of(id), |s| s.dir_of(id))
    }

    fn store_of(&self, writer: Option<&str>) -> Result<&Store> {
        match writer {
            None => Ok(&self.store),
            Some(w) => self.readers.get(w).ok_or_else(|| {
                crate::checkpoint::store::Error::Corrupt {
                    path: self.dir.join(&self.pipeline),
                    message: format!("the store of writer {w:?} was not opened"),
                }
                .into()
            }),
        }
    }

    /// What checkpoint `id`'s commit says of it (`checkpoint::tag`).
    pub fn tag(&self, id: CheckpointId) -> CommitTag {
        CommitTag::new(id, &self.pipeline, &self.writer)
    }

    /// Writes checkpoint `id` durably (files, manifest, fsync, rename): every task's offset,
    /// and every stateful task's snapshot. Returns the manifest as written, with checksums.
    pub fn write<'t>(
        &mut self,
        id: CheckpointId,
        tasks: impl IntoIterator<Item = TaskPart<'t>>,
    ) -> Result<Manifest> {
        let staging = self.store.begin(id)?;
        let mut snapshots = Vec::new();
        let mut files = Vec::new();
        let mut offsets = Vec::new();
        for (p, next_offset, state) in tasks {
            if let Some(o) = next_offset {
                offsets.push(PartitionOffset::new(p, o));
            }
            if let Some(state) = state {
                let dir = format!("{}-{}", p.topic, p.partition);
                files.push(state.snapshot(&staging.join(&dir))?);
                snapshots.push(TaskSnapshot {
                    topic: p.topic.clone(),
                    partition: p.partition,
                    next_offset,
                    dir,
                    files: Vec::new(),
                });
            }
        }
        let manifest = Manifest {
            format_version: MANIFEST_FORMAT_VERSION,
            checkpoint: id,
            pipeline: self.pipeline.clone(),
            created_unix_ms: crate::checkpoint::now_unix_ms(),
            writer: Some(self.writer.clone()),
            restored_from: self.lineage.clone(),
            offsets,
            tasks: snapshots,
        };
        self.store.finish(&staging, manifest, &files)?;
        Ok(self.store.manifest(id)?)
    }

    /// Checkpoint `id` committed: count it, mark it, and delete all but the newest `retain`
    /// (and anything newer than it: leftovers), keeping those of this writer that `elsewhere`
    /// still name (the group's commits of partitions that moved to another writer, which
    /// restores from them until it commits). Without `elsewhere` (it could not be read),
    /// nothing is deleted this time.
    pub fn committed(
        &mut self,
        id: CheckpointId,
        manifest: Manifest,
        elsewhere: Option<&[(Partition, GroupCommit)]>,
    ) -> Result<()> {
        self.committed += 1;
        self.next_id = CheckpointId(id.0 + 1);
        self.manifests.insert(id, manifest);
        self.store.mark_committed(id)?;
        let Some(elsewhere) = elsewhere else {
            return Ok(());
        };
        let existing: Vec<CheckpointId> = self.manifests.keys().copied().collect();
        let named: Vec<CheckpointId> = elsewhere
            .iter()
            .filter_map(|(_, c)| c.tag.as_ref())
            .filter(|t| t.pipeline == self.pipeline && t.writer == self.writer)
            .map(|t| t.checkpoint)
            .collect();
        let delete = protocol::to_delete(&existing, id, self.retain, &named);
        self.store.delete(&delete)?;
        for d in delete {
            self.manifests.remove(&d);
        }
        Ok(())
    }

    /// Checkpoint `id` was aborted, so never committed: it must not stay where a restore
    /// could pick it. A failure is only logged (the tag-based restore ignores it anyway).
    pub fn discard(&mut self, id: CheckpointId) {
        if let Err(d) = self.store.delete(&[id]) {
            tracing::warn!(checkpoint = %id, error = %chain(&d), "cannot delete an aborted checkpoint");
        }
    }
}
