//! Checkpoints in an object store (`[checkpoint] dir = "s3://bucket/prefix"`): the durable copy
//! that any instance restores from. Each checkpoint is first written to the local store
//! (`store.rs`, `checkpoint.local_dir`), then uploaded here before its Kafka commit.
//!
//! Layout under `<prefix>/<pipeline>/writers/<writer>/` (the writer `%XX`-escaped, as locally):
//! ```text
//! files/<task dir>/<name>.<len>.<crc32c>   a snapshot file, uploaded once, never overwritten
//! chk-00000000000000000007.json           checkpoint 7's manifest, written last (If-None-Match)
//! ```
//! - **Incremental**: a file's key is its task, name, length and CRC32C, so an SST (immutable,
//!   hard-linked from checkpoint to checkpoint) is uploaded by the first checkpoint that holds
//!   it and only referenced by later ones. The local store already knows every SST's CRC
//!   (cached by inode), so nothing is re-read to name it.
//! - **Complete or absent**: object stores have no rename; a manifest is written after all of
//!   its files, with `PutMode::Create`, so a manifest that exists names only uploaded files.
//! - **Per writer**: files and ids are the writer's own, so writers never collide and a writer
//!   collects only its own garbage: a file is deleted when no retained manifest of its writer
//!   references it, and the writer retains every checkpoint a group commit names (also of
//!   partitions that moved away: `protocol::to_delete`). A partition that moves to another
//!   writer is uploaded again, once, under the new writer's name.
//!
//! Reading (listing, manifests, downloads with their checks) is `remote/read.rs`.
//!
//! `object_store` is async; the pipeline threads (not the runtime's workers) wait for it
//! through a runtime handle.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures_util::{StreamExt as _, TryStreamExt as _};
use object_store::path::Path as Key;
use object_store::{ObjectStore, ObjectStoreExt as _, PutMode, PutOptions, PutPayload};

use super::{CheckpointId, Manifest, TaskSnapshot};
use crate::config::RemoteConfig;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("object store {url}: {source}")]
    Open {
        url: String,
        source: object_store::Error,
    },
    #[error("{op} {key} in the object store: {source}")]
    Store {
        op: &'static str,
        key: String,
        source: object_store::Error,
    },
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("checkpoint object {key} is corrupt: {message}")]
    Corrupt { key: String, message: String },
    #[error(
        "checkpoint {id} of writer {writer:?} already exists in the object store with other contents: another process writes as this writer (a second instance with the same instance_id?)"
    )]
    Collision { writer: String, id: CheckpointId },
}

pub type Result<T> = std::result::Result<T, Error>;

pub(super) fn store_err(
    op: &'static str,
    key: &Key,
) -> impl FnOnce(object_store::Error) -> Error + use<> {
    let key = key.to_string();
    move |source| Error::Store { op, key, source }
}

pub(super) const WRITERS: &str = "writers";
const FILES: &str = "files";
/// Files uploaded, copied or downloaded at once (each upload is held in memory: SSTs are up
/// to ~64 MB).
pub(super) const CONCURRENCY: usize = 4;

/// What one upload or download moved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Moved {
    pub files: u64,
    pub bytes: u64,
    /// Of those, copied inside the store (an upload: from another writer's files).
    pub copied_bytes: u64,
}

/// One pipeline's checkpoints in the object store, as `writer` sees them.
pub struct Remote {
    pub(super) store: Arc<dyn ObjectStore>,
    /// `<prefix>/<pipeline>`
    pub(super) root: Key,
    /// This writer's name in keys (`%XX`-escaped).
    pub(super) writer: String,
    /// Keys (under `files/`) of this writer's files known to be in the store.
    uploaded: HashSet<String>,
    /// Files of snapshots restored from other writers, by name: where they are in the store
    /// (a checkpoint copies them there, server-side, instead of uploading them again).
    /// (Behind a lock: restores note them through a shared reference.)
    origins: std::sync::Mutex<HashMap<String, Key>>,
    runtime: tokio::runtime::Handle,
    url: String,
}

impl Remote {
    /// The store of `pipeline` for `writer` (its transactional id); lists the writer's files
    /// already uploaded (a restart uploads only what is new).
    pub fn open(
        config: &RemoteConfig,
        pipeline: &str,
        writer: &str,
        runtime: tokio::runtime::Handle,
    ) -> Result<Self> {
        let mut remote = Self::new(config, pipeline, writer, runtime)?;
        let prefix = remote.files_root(&remote.writer);
        let listed: Vec<object_store::ObjectMeta> = remote
            .wait(remote.store.list(Some(&prefix)).try_collect())
            .map_err(store_err("list", &prefix))?;
        remote.uploaded = listed
            .into_iter()
            .filter_map(|o| relative(&prefix, &o.location))
            .collect();
        Ok(remote)
    }

    fn new(
        config: &RemoteConfig,
        pipeline: &str,
        writer: &str,
        runtime: tokio::runtime::Handle,
    ) -> Result<Self> {
        Ok(Self {
            store: connect(config)?,
            root: Key::from(config.prefix.as_str()).join(pipeline),
            writer: super::tag::file_safe(writer),
            uploaded: HashSet::new(),
            origins: std::sync::Mutex::new(HashMap::new()),
            runtime,
            url: config.url.clone(),
        })
    }

    /// The store of `pipeline`, to read other writers' checkpoints (the CLI, `doctor`): lists
    /// nothing at open.
    pub fn reader(
        config: &RemoteConfig,
        pipeline: &str,
        runtime: tokio::runtime::Handle,
    ) -> Result<Self> {
        Self::new(config, pipeline, "", runtime)
    }

    /// The writers with checkpoints of `pipeline` in the object store of `config`.
    pub fn writers_in(
        config: &RemoteConfig,
        pipeline: &str,
        runtime: tokio::runtime::Handle,
    ) -> Result<Vec<String>> {
        Self::reader(config, pipeline, runtime)?.writers()
    }

    /// Where checkpoints live, for messages: `s3://bucket/prefix/<pipeline>/writers/<writer>`.
    pub fn describe(&self, writer: Option<&str>) -> String {
        let w = writer.map_or_else(|| self.writer.clone(), super::tag::file_safe);
        format!("{} ({}/{WRITERS}/{w})", self.url, self.root)
    }

    pub(super) fn wait<F: std::future::Future>(&self, f: F) -> F::Output {
        self.runtime.block_on(f)
    }

    pub(super) fn writer_root(&self, safe_writer: &str) -> Key {
        self.root.clone().join(WRITERS).join(safe_writer)
    }

    pub(super) fn files_root(&self, safe_writer: &str) -> Key {
        self.writer_root(safe_writer).join(FILES)
    }

    pub(super) fn manifest_key(&self, safe_writer: &str, id: CheckpointId) -> Key {
        self.writer_root(safe_writer)
            .join(format!("chk-{:020}.json", id.0))
    }

    /// A task file's key relative to `files/`: task, name, length and checksum.
    pub(super) fn file_name(task: &TaskSnapshot, f: &super::FileSum) -> String {
        format!("{}/{}.{}.{:08x}", task.dir, f.name, f.len, f.crc32c)
    }

    pub(super) fn file_key(&self, safe_writer: &str, name: &str) -> Key {
        let mut key = self.files_root(safe_writer);
        for part in name.split('/') {
            key = key.join(part);
        }
        key
    }

    /// Uploads checkpoint `manifest` of this writer from its local directory `local`: the
    /// files not yet in the store, then the manifest (if it exists already with the same
    /// bytes, a retried write of ours: fine; with other bytes: [`Error::Collision`]).
    pub fn upload(&mut self, local: &Path, manifest: &Manifest) -> Result<Moved> {
        let mut todo = Vec::new();
        for task in &manifest.tasks {
            for f in &task.files {
                let name = Self::file_name(task, f);
                if !self.uploaded.contains(&name) {
                    todo.push((local.join(&task.dir).join(&f.name), name, f.len));
                }
            }
        }
        let mut moved = Moved {
            files: todo.len() as u64,
            bytes: todo.iter().map(|(_, _, len)| len).sum(),
            copied_bytes: 0,
        };
        let store = &self.store;
        let origins = self
            .origins
            .lock()
            .map(|mut o| std::mem::take(&mut *o))
            .unwrap_or_default();
        let keys: Vec<(PathBuf, Key, String, u64, Option<Key>)> = todo
            .into_iter()
            .map(|(path, name, len)| {
                let origin = origins.get(&name).cloned();
                (path, self.file_key(&self.writer, &name), name, len, origin)
            })
            .collect();
        let done: Vec<(String, u64)> = self.wait(
            futures_util::stream::iter(keys)
                .map(|(path, key, name, len, origin)| async move {
                    // a failed copy (the other writer's file gone) falls back to the upload
                    if let Some(from) = origin
                        && store.copy(&from, &key).await.is_ok()
                    {
                        return Ok((name, len));
                    }
                    let bytes = tokio::fs::read(&path).await.map_err(|source| Error::Io {
                        op: "read",
                        path: path.clone(),
                        source,
                    })?;
                    store
                        .put(&key, PutPayload::from(bytes))
                        .await
                        .map_err(store_err("upload", &key))?;
                    Ok::<_, Error>((name, 0))
                })
                .buffer_unordered(CONCURRENCY)
                .try_collect(),
        )?;
        moved.copied_bytes = done.iter().map(|(_, copied)| copied).sum();
        self.uploaded.extend(done.into_iter().map(|(name, _)| name));
        self.put_manifest(manifest)?;
        Ok(moved)
    }

    fn put_manifest(&self, manifest: &Manifest) -> Result<()> {
        let key = self.manifest_key(&self.writer, manifest.checkpoint);
        let bytes = super::seal::encode_manifest(manifest).map_err(|message| Error::Corrupt {
            key: key.to_string(),
            message,
        })?;
        let create = PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        let put = self.wait(
            self.store
                .put_opts(&key, PutPayload::from(bytes.clone()), create),
        );
        match put {
            Ok(_) => Ok(()),
            Err(object_store::Error::AlreadyExists { .. }) => {
                // a retried create reports our own write as existing: compare
                let there = self.get(&key)?;
                if there == bytes {
                    Ok(())
                } else {
                    Err(Error::Collision {
                        writer: self.writer.clone(),
                        id: manifest.checkpoint,
                    })
                }
            }
            Err(e) => Err(store_err("write manifest", &key)(e)),
        }
    }

    /// Notes that the live state of `task` was restored from `writer`'s checkpoint: its files
    /// that a later checkpoint of this writer holds are copied from there inside the store, not
    /// uploaded again (a partition that moved here).
    pub fn adopt(&self, writer: &str, task: &TaskSnapshot) {
        let w = super::tag::file_safe(writer);
        if let Ok(mut origins) = self.origins.lock() {
            for f in &task.files {
                let name = Self::file_name(task, f);
                let from = self.file_key(&w, &name);
                origins.insert(name, from);
            }
        }
    }

    /// Deletes this writer's checkpoints `ids` (manifests first, so none names a missing
    /// file), then every file of this writer that no manifest in `retained` references.
    pub fn delete<'m>(
        &mut self,
        ids: &[CheckpointId],
        retained: impl IntoIterator<Item = &'m Manifest>,
    ) -> Result<()> {
        for id in ids {
            let key = self.manifest_key(&self.writer, *id);
            match self.wait(self.store.delete(&key)) {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(store_err("delete", &key)(e)),
            }
        }
        let referenced: BTreeSet<String> = retained
            .into_iter()
            .flat_map(|m| {
                m.tasks
                    .iter()
                    .flat_map(|t| t.files.iter().map(move |f| Self::file_name(t, f)))
            })
            .collect();
        let garbage: Vec<String> = self
            .uploaded
            .iter()
            .filter(|n| !referenced.contains(*n))
            .cloned()
            .collect();
        for name in garbage {
            let key = self.file_key(&self.writer, &name);
            match self.wait(self.store.delete(&key)) {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(store_err("delete", &key)(e)),
            }
            self.uploaded.remove(&name);
        }
        Ok(())
    }
}

/// `key` relative to `prefix`, with `/` between parts.
fn relative(prefix: &Key, key: &Key) -> Option<String> {
    let parts: Vec<String> = key
        .prefix_match(prefix)?
        .map(|p| p.as_ref().to_string())
        .collect();
    (!parts.is_empty()).then(|| parts.join("/"))
}

/// The object store of `config`: S3 (or an S3-compatible server at `endpoint`), credentials
/// from the environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, or the instance's
/// role), as the AWS tools take them.
fn connect(config: &RemoteConfig) -> Result<Arc<dyn ObjectStore>> {
    let mut builder = object_store::aws::AmazonS3Builder::from_env()
        .with_url(&config.url)
        .with_bucket_name(&config.bucket);
    if let Some(endpoint) = &config.endpoint {
        builder = builder
            .with_endpoint(endpoint)
            .with_allow_http(endpoint.starts_with("http://"));
    }
    if let Some(region) = &config.region {
        builder = builder.with_region(region);
    }
    let store = builder.build().map_err(|source| Error::Open {
        url: config.url.clone(),
        source,
    })?;
    Ok(Arc::new(store))
}

mod read;
