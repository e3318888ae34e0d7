//! The checkpoint N that `offsets reset --drop-state` writes before it moves the offsets:
//! empty state for the stateful partitions whose state the move invalidates, and the state the
//! group's commits name, hard-linked, for the others.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use super::Plan;
use crate::checkpoint::protocol::{self, Restore};
use crate::checkpoint::store::Store;
use crate::checkpoint::{CheckpointId, Foreign, GroupCommit, Manifest, TaskSnapshot};
use crate::kafka::consumer::Consumer;
use crate::pipeline::{Error, Inputs, Result};
use crate::position::{NextOffset, Partition};

/// Writes checkpoint N: empty state for the dropped stateful partitions (the repartition
/// topic's, at its end; or the moved source partitions, at their new offsets), the current
/// snapshot for the others. Adds the repartition offsets to `offsets`.
pub(super) fn drop_state(
    inputs: &Inputs<'_>,
    consumer: &Consumer,
    plan: &Plan,
    all_repartition: bool,
    dropped_source: &[i32],
    offsets: &mut Vec<(Partition, NextOffset)>,
) -> Result<(Store, CheckpointId)> {
    let pipeline = inputs.pipeline;
    if let Some(remote) = &inputs.config.checkpoint.remote {
        return Err(Error::StateChoice(format!(
            "offsets reset --drop-state writes a checkpoint, and does not yet write one into an object store ({}): \
             the checkpoint directory must be local or shared for it. Restore a savepoint instead (offsets reset --to-savepoint)",
            remote.url
        )));
    }
    let admin = crate::kafka::admin::Admin::new(&inputs.config.kafka, inputs.runtime.clone())?;
    let stateful = pipeline
        .repartition_topic()
        .unwrap_or_else(|| pipeline.source.topic.clone());
    let count = admin.partition_count(&stateful)?;
    let parts: Vec<Partition> = (0..count)
        .map(|partition| Partition {
            topic: stateful.clone(),
            partition,
        })
        .collect();
    let commits = consumer.commits(&parts)?;
    let mut next = Rewrite::begin(inputs, &commits)?;
    let mut tasks = Vec::new();
    for (p, commit) in commits {
        let current = commit.offset;
        let dir = format!("{}-{}", p.topic, p.partition);
        let next_offset = if all_repartition || dropped_source.contains(&p.partition) {
            let new = if all_repartition {
                let new = NextOffset(consumer.watermarks(&p.topic, p.partition)?.1);
                offsets.push((p.clone(), new));
                new
            } else {
                let row = plan.rows.iter().find(|r| r.partition == p.partition);
                NextOffset(row.map_or(0, |r| r.new))
            };
            next.empty(&dir)?;
            Some(new)
        } else {
            // N names it too: its commit carries every stateful partition's offset
            if let Some(o) = current
                && !offsets.iter().any(|(q, _)| *q == p)
            {
                offsets.push((p.clone(), o));
            }
            if !next.keep(&p, &dir)? {
                continue;
            }
            current
        };
        tasks.push(TaskSnapshot {
            topic: p.topic.clone(),
            partition: p.partition,
            next_offset,
            dir,
            files: Vec::new(),
        });
    }
    next.finish(offsets, tasks)
}

/// Checkpoint N as the offset reset writes it: the store, N's staging directory, the snapshot
/// files of the tasks so far, and what N is made from (the manifests, the group's commits).
struct Rewrite<'i> {
    inputs: &'i Inputs<'i>,
    store: Store,
    id: CheckpointId,
    staging: PathBuf,
    manifests: BTreeMap<CheckpointId, Manifest>,
    /// Other writers' checkpoints the commits name, and their stores (instances sharing the
    /// checkpoint directory).
    foreign: Foreign,
    readers: HashMap<String, Store>,
    commits: BTreeMap<Partition, GroupCommit>,
    /// The checkpoint N descends from: its predecessor's (the checkpoint the commits name, or
    /// else the newest marked committed).
    lineage: Option<String>,
    files: Vec<Vec<String>>,
}

impl<'i> Rewrite<'i> {
    fn begin(inputs: &'i Inputs<'i>, commits: &[(Partition, GroupCommit)]) -> Result<Self> {
        let pipeline = inputs.pipeline;
        let store = Store::open(
            &inputs.config.checkpoint.dir,
            &pipeline.name,
            &pipeline.transactional_id,
        )?;
        let mut manifests = BTreeMap::new();
        for id in store.list()? {
            manifests.insert(id, store.manifest(id)?);
        }
        let ids: Vec<CheckpointId> = manifests.keys().copied().collect();
        let id = protocol::next_id(&ids, None);
        let staging = store.begin(id)?;
        let (foreign, readers) = foreign_of(inputs, commits)?;
        let lineage = crate::checkpoint::named(commits, &pipeline.name)
            .or_else(|| ids.iter().rev().copied().find(|id| store.is_committed(*id)))
            .and_then(|id| manifests.get(&id))
            .and_then(|m| m.restored_from.clone());
        Ok(Self {
            inputs,
            store,
            id,
            staging,
            manifests,
            foreign,
            readers,
            commits: commits.iter().cloned().collect(),
            lineage,
            files: Vec::new(),
        })
    }

    /// Empty state for the task in `dir`.
    fn empty(&mut self, dir: &str) -> Result<()> {
        let live = self
            .inputs
            .config
            .state
            .dir
            .join(&self.inputs.pipeline.name)
            .join(dir);
        let mut state = self.inputs.env.open_empty(&live)?;
        self.files.push(state.snapshot(&self.staging.join(dir))?);
        Ok(())
    }

    /// The state of `p` as the checkpoint its commit names holds it (hard-linked), or empty
    /// when nothing was committed; `false` when that checkpoint has no task of `p`.
    fn keep(&mut self, p: &Partition, dir: &str) -> Result<bool> {
        let writer = &self.inputs.pipeline.transactional_id;
        let (own, foreign) = (&self.manifests, &self.foreign);
        match crate::checkpoint::choose_shared(writer, own, foreign, p, &self.commits) {
            Restore::Fresh => self.empty(dir)?,
            Restore::From(from) => {
                let other = crate::checkpoint::foreign_writer(self.commits.get(p), writer);
                let (manifest, store) = match other {
                    None => (self.manifests.get(&from), Some(&self.store)),
                    Some(w) => (
                        self.foreign.get(&(w.to_string(), from)),
                        self.readers.get(w),
                    ),
                };
                let task = manifest.and_then(|m| {
                    m.tasks
                        .iter()
                        .find(|t| t.topic == p.topic && t.partition == p.partition)
                });
                let (Some(task), Some(store)) = (task, store) else {
                    return Ok(false);
                };
                let src = store.verify(from, task)?;
                self.files.push(link_dir(&src, &self.staging.join(dir))?);
            }
            Restore::NoMatch { committed, .. } => {
                return Err(Error::NoMatchingSnapshot {
                    partition: p.clone(),
                    committed,
                    newest: "none matching".into(),
                    dir: self.store.root().display().to_string(),
                });
            }
            Restore::Missing(refusal) => {
                return Err(Error::named_checkpoint_missing(
                    p,
                    &refusal,
                    self.store.root(),
                ));
            }
        }
        Ok(true)
    }

    /// N's manifest, written and made durable.
    fn finish(
        mut self,
        offsets: &[(Partition, NextOffset)],
        tasks: Vec<TaskSnapshot>,
    ) -> Result<(Store, CheckpointId)> {
        let pipeline = self.inputs.pipeline;
        let mut manifest = Manifest::new(
            self.id,
            &pipeline.name,
            &pipeline.transactional_id,
            offsets,
            tasks,
        );
        manifest.restored_from = self.lineage;
        self.store.finish(&self.staging, manifest, &self.files)?;
        Ok((self.store, self.id))
    }
}

/// The other writers' checkpoints that `commits` name, with their stores: a partition whose
/// commit names one keeps that state.
fn foreign_of(
    inputs: &Inputs<'_>,
    commits: &[(Partition, GroupCommit)],
) -> Result<(Foreign, HashMap<String, Store>)> {
    let (dir, pipeline) = (&inputs.config.checkpoint.dir, inputs.pipeline);
    let (mut foreign, mut readers) = (Foreign::new(), HashMap::new());
    for (_, c) in commits {
        let Some(w) = crate::checkpoint::foreign_writer(Some(c), &pipeline.transactional_id) else {
            continue;
        };
        let Some(tag) = c.tag.as_ref().filter(|t| t.pipeline == pipeline.name) else {
            continue;
        };
        if !readers.contains_key(w) {
            readers.insert(w.to_string(), Store::reader(dir, &pipeline.name, w)?);
        }
        if let Some(store) = readers.get(w) {
            foreign.insert(
                (w.to_string(), tag.checkpoint),
                store.manifest(tag.checkpoint)?,
            );
        }
    }
    Ok((foreign, readers))
}

/// Hard-links (or copies) every file of a snapshot directory; returns the file names.
fn link_dir(from: &Path, to: &Path) -> Result<Vec<String>> {
    let io = |op: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| crate::state::Error::Io { op, path, source }
    };
    std::fs::create_dir_all(to).map_err(io("create snapshot dir", to))?;
    let mut names = Vec::new();
    for entry in std::fs::read_dir(from).map_err(io("list snapshot", from))? {
        let entry = entry.map_err(io("list snapshot", from))?;
        let target = to.join(entry.file_name());
        if std::fs::hard_link(entry.path(), &target).is_err() {
            std::fs::copy(entry.path(), &target)
                .map_err(io("copy snapshot file", &entry.path()))?;
        }
        names.push(entry.file_name().to_string_lossy().into_owned());
    }
    names.sort();
    Ok(names)
}
