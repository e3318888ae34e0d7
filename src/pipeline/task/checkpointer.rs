//! The checkpointer: the store, the manifests in it, the next checkpoint id, the count of
//! committed checkpoints and the lineage they carry. The runner asks it to write checkpoint
//! N's snapshot, to take note of N's commit (mark it, collect garbage), or to forget N
//! (aborted, never committed). Which checkpoint a restore takes is `checkpoint::choose`'s.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use crate::checkpoint::protocol;
use crate::checkpoint::remote::{Moved, Remote};
use crate::checkpoint::store::Store;
use crate::checkpoint::tag::CommitTag;
use crate::checkpoint::{
    CheckpointId, Foreign, GroupCommit, MANIFEST_FORMAT_VERSION, Manifest, TaskSnapshot,
};
use crate::config::RemoteConfig;
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
    /// The object store's copy, when `checkpoint.dir` is one: every checkpoint is uploaded
    /// before its commit, and a snapshot not on local disk is downloaded from it.
    remote: Option<Remote>,
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
    /// The store of `pipeline` written by `writer` under `dir` (and in the object store
    /// `remote`), with the manifests it holds (an unreadable one is logged and left out: it
    /// cannot be restored).
    pub fn open(
        dir: &Path,
        remote: Option<(&RemoteConfig, tokio::runtime::Handle)>,
        pipeline: &str,
        writer: &str,
        retain: usize,
    ) -> Result<Self> {
        let store = Store::open(dir, pipeline, writer)?;
        let remote = remote
            .map(|(config, runtime)| Remote::open(config, pipeline, writer, runtime))
            .transpose()?;
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
        if let Some(remote) = &remote {
            // the object store's are the durable ones: those the local disk lacks (a new
            // machine, a wiped volume) are restored from there
            for id in remote.list(None)? {
                if manifests.contains_key(&id) {
                    continue;
                }
                match remote.manifest(None, id) {
                    Ok(m) => {
                        manifests.insert(id, m);
                    }
                    Err(e) => {
                        tracing::warn!(checkpoint = %id, error = %chain(&e), "unreadable checkpoint manifest in the object store; it cannot be restored")
                    }
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
            remote,
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
            if let Some(remote) = &self.remote {
                match remote.manifest(Some(writer), tag.checkpoint) {
                    Ok(m) => {
                        self.foreign.insert(key, m);
                    }
                    Err(e) => {
                        tracing::warn!(partition = %p, writer, checkpoint = %tag.checkpoint, error = %chain(&e), "the checkpoint the group's commit names cannot be read from the object store");
                    }
                }
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

    /// The directory of `snapshot` in checkpoint `id` of `writer` (`None`: this writer),
    /// checked against the manifest: on local disk if it is there (local recovery: nothing
    /// downloaded), else downloaded from the object store (each file's CRC32C checked).
    pub fn verify(
        &self,
        writer: Option<&str>,
        id: CheckpointId,
        snapshot: &TaskSnapshot,
    ) -> Result<PathBuf> {
        let local = match writer {
            None => Some(&self.store),
            Some(w) => self.readers.get(w),
        };
        let Some(remote) = &self.remote else {
            return Ok(self.store_of(writer)?.verify(id, snapshot)?);
        };
        if let Some(w) = writer {
            // another writer's files: copied inside the store by this writer's next checkpoint
            remote.adopt(w, snapshot);
        }
        if let Some(store) = local.filter(|s| s.holds(id, snapshot)) {
            match store.verify(id, snapshot) {
                Ok(dir) => return Ok(dir),
                Err(e) => {
                    tracing::warn!(pipeline = %self.pipeline, checkpoint = %id, task = %snapshot.dir, error = %chain(&e),
                        "the local copy of the snapshot does not match its manifest; downloading it from the object store");
                }
            }
        }
        let to = self
            .downloads()
            .join(crate::checkpoint::tag::file_safe(
                writer.unwrap_or(&self.writer),
            ))
            .join(format!("chk-{:020}", id.0))
            .join(&snapshot.dir);
        let started = std::time::Instant::now();
        let Moved { files, bytes, .. } = remote.download(writer, snapshot, &to)?;
        tracing::info!(pipeline = %self.pipeline, checkpoint = %id, task = %snapshot.dir,
            writer = %writer.unwrap_or(&self.writer), files, bytes, took = ?started.elapsed(),
            "snapshot downloaded from the object store");
        Ok(to)
    }

    /// Deletes what restores downloaded (their state is in the live stores by now: RocksDB's
    /// restore hard-links the SSTs, the memory backend reads its file).
    pub fn forget_downloads(&self) {
        let dir = self.downloads();
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot delete downloaded snapshots")
            }
        }
    }

    /// Where this writer's restores put what they download: its own directory, since the
    /// threads of one instance restore at the same time.
    fn downloads(&self) -> PathBuf {
        self.dir
            .join(&self.pipeline)
            .join("downloads")
            .join(crate::checkpoint::tag::file_safe(&self.writer))
    }

    /// Where checkpoint `id` of `writer` (`None`: this writer) is, for messages.
    pub fn dir_of(&self, writer: Option<&str>, id: CheckpointId) -> PathBuf {
        if let Some(remote) = &self.remote {
            return PathBuf::from(format!("{}/chk-{:020}", remote.describe(writer), id.0));
        }
        self.store_of(writer)
            .map_or_else(|_| self.store.dir_of(id), |s| s.dir_of(id))
    }

    /// Where this writer's checkpoints are, for messages.
    pub fn location(&self) -> String {
        self.remote.as_ref().map_or_else(
            || self.store.root().display().to_string(),
            |r| r.describe(None),
        )
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

    /// The other writers of the pipeline whose newest checkpoint was written less than
    /// `max_age` ago: those that may have left a transaction open that the broker has not yet
    /// timed out.
    pub fn recent_writers(&self, max_age: std::time::Duration) -> Result<Vec<String>> {
        let since = crate::checkpoint::now_unix_ms()
            .saturating_sub(u64::try_from(max_age.as_millis()).unwrap_or(u64::MAX));
        let mut recent = Vec::new();
        for w in self.other_writers()? {
            let newest = match &self.remote {
                Some(r) => match r.list(Some(&w))?.last() {
                    Some(id) => Some(r.manifest(Some(&w), *id)?),
                    None => None,
                },
                None => {
                    let store = Store::reader(&self.dir, &self.pipeline, &w)?;
                    match store.list()?.last() {
                        Some(id) => Some(store.manifest(*id)?),
                        None => None,
                    }
                }
            };
            if newest.is_some_and(|m| m.created_unix_ms >= since) {
                recent.push(w);
            }
        }
        Ok(recent)
    }

    /// The pipeline's other writers (threads and instances) that ever checkpointed.
    pub fn other_writers(&self) -> Result<Vec<String>> {
        let writers = match &self.remote {
            Some(r) => r.writers()?,
            None => Store::writers(&self.dir, &self.pipeline)?,
        };
        Ok(writers.into_iter().filter(|w| *w != self.writer).collect())
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
                crash_point!("checkpoint::mid_snapshot");
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
        self.finish(&staging, manifest, &files)
    }

    /// Makes a checkpoint written into `staging` durable: on local disk (`Store::finish`),
    /// then in the object store if there is one. Returns the manifest as written.
    pub fn finish(
        &mut self,
        staging: &Path,
        manifest: Manifest,
        files: &[Vec<String>],
    ) -> Result<Manifest> {
        let id = manifest.checkpoint;
        self.store.finish(staging, manifest, files)?;
        let manifest = self.store.manifest(id)?;
        if let Some(remote) = &mut self.remote {
            let started = std::time::Instant::now();
            let moved = remote.upload(&self.store.dir_of(id), &manifest)?;
            tracing::debug!(pipeline = %self.pipeline, checkpoint = %id, files = moved.files,
                bytes = moved.bytes - moved.copied_bytes, copied_bytes = moved.copied_bytes,
                took = ?started.elapsed(), "checkpoint uploaded to the object store");
        }
        Ok(manifest)
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
        let local: Vec<CheckpointId> = self.store.list()?;
        let here: Vec<CheckpointId> = delete
            .iter()
            .filter(|d| local.contains(d))
            .copied()
            .collect();
        self.store.delete(&here)?;
        for d in &delete {
            self.manifests.remove(d);
        }
        if let Some(remote) = &mut self.remote {
            remote.delete(&delete, self.manifests.values())?;
        }
        Ok(())
    }

    /// Checkpoint `id` was aborted, so never committed: it must not stay where a restore
    /// could pick it. A failure is only logged (the tag-based restore ignores it anyway).
    pub fn discard(&mut self, id: CheckpointId) {
        if let Err(d) = self.store.delete(&[id]) {
            tracing::warn!(checkpoint = %id, error = %chain(&d), "cannot delete an aborted checkpoint");
        }
        self.manifests.remove(&id);
        if let Some(remote) = &mut self.remote
            && let Err(d) = remote.delete(&[id], self.manifests.values())
        {
            tracing::warn!(checkpoint = %id, error = %chain(&d), "cannot delete an aborted checkpoint from the object store");
        }
    }
}
