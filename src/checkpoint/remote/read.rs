//! The reading side of the object store: listing writers and checkpoints, reading manifests,
//! downloading a snapshot with its checks, checking that a snapshot's files are there.

use std::path::Path;

use futures_util::{StreamExt as _, TryStreamExt as _};
use object_store::ObjectStoreExt as _;
use object_store::path::Path as Key;

use super::super::{CheckpointId, Manifest, TaskSnapshot};
use super::{CONCURRENCY, Error, Moved, Remote, Result, WRITERS, store_err};

impl Remote {
    pub(super) fn get(&self, key: &Key) -> Result<Vec<u8>> {
        self.wait(async {
            let got = self.store.get(key).await?;
            got.bytes().await
        })
        .map(|b| b.to_vec())
        .map_err(store_err("read", key))
    }

    /// Ids of `writer`'s (`None`: this writer's) checkpoints with a manifest, ascending.
    pub fn list(&self, writer: Option<&str>) -> Result<Vec<CheckpointId>> {
        let w = writer.map_or_else(|| self.writer.clone(), crate::checkpoint::tag::file_safe);
        let root = self.writer_root(&w);
        let listed = self
            .wait(self.store.list_with_delimiter(Some(&root)))
            .map_err(store_err("list", &root))?;
        let mut ids: Vec<CheckpointId> = listed
            .objects
            .iter()
            .filter_map(|o| o.location.filename())
            .filter_map(|n| n.strip_prefix("chk-")?.strip_suffix(".json")?.parse().ok())
            .map(CheckpointId)
            .collect();
        ids.sort_unstable();
        Ok(ids)
    }

    /// Checkpoint `id`'s manifest of `writer` (`None`: this writer).
    pub fn manifest(&self, writer: Option<&str>, id: CheckpointId) -> Result<Manifest> {
        let w = writer.map_or_else(|| self.writer.clone(), crate::checkpoint::tag::file_safe);
        let key = self.manifest_key(&w, id);
        let bytes = self.get(&key)?;
        let manifest =
            super::super::seal::decode_manifest(&bytes).map_err(|message| Error::Corrupt {
                key: key.to_string(),
                message,
            })?;
        if manifest.checkpoint != id {
            return Err(Error::Corrupt {
                key: key.to_string(),
                message: format!("the manifest says checkpoint {}", manifest.checkpoint),
            });
        }
        Ok(manifest)
    }

    /// The writers with checkpoints of this pipeline in the store (transactional ids), sorted.
    pub fn writers(&self) -> Result<Vec<String>> {
        let root = self.root.clone().join(WRITERS);
        let listed = self
            .wait(self.store.list_with_delimiter(Some(&root)))
            .map_err(store_err("list", &root))?;
        let mut writers: Vec<String> = listed
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename())
            .filter_map(crate::checkpoint::tag::from_file_safe)
            .collect();
        writers.sort();
        Ok(writers)
    }

    /// Downloads `task`'s files of `writer`'s (`None`: this writer's) checkpoint into `to`
    /// (emptied first), checking each one's length and CRC32C before it is written.
    pub fn download(&self, writer: Option<&str>, task: &TaskSnapshot, to: &Path) -> Result<Moved> {
        let w = writer.map_or_else(|| self.writer.clone(), crate::checkpoint::tag::file_safe);
        match std::fs::remove_dir_all(to) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(Error::Io {
                    op: "empty download dir",
                    path: to.to_path_buf(),
                    source,
                });
            }
        }
        std::fs::create_dir_all(to).map_err(|source| Error::Io {
            op: "create download dir",
            path: to.to_path_buf(),
            source,
        })?;
        let files: Vec<(Key, &crate::checkpoint::FileSum)> = task
            .files
            .iter()
            .map(|f| (self.file_key(&w, &Self::file_name(task, f)), f))
            .collect();
        let store = &self.store;
        let moved = Moved {
            files: files.len() as u64,
            bytes: files.iter().map(|(_, f)| f.len).sum(),
            copied_bytes: 0,
        };
        self.wait(
            futures_util::stream::iter(files)
                .map(|(key, f)| async move {
                    let got = store.get(&key).await.map_err(store_err("download", &key))?;
                    let bytes = got.bytes().await.map_err(store_err("download", &key))?;
                    let crc = crc32c::crc32c(&bytes);
                    if bytes.len() as u64 != f.len || crc != f.crc32c {
                        return Err(Error::Corrupt {
                            key: key.to_string(),
                            message: format!(
                                "length {} crc32c {crc:08x}, the manifest says length {} crc32c {:08x}",
                                bytes.len(),
                                f.len,
                                f.crc32c
                            ),
                        });
                    }
                    let path = to.join(&f.name);
                    tokio::fs::write(&path, &bytes)
                        .await
                        .map_err(|source| Error::Io {
                            op: "write",
                            path,
                            source,
                        })
                })
                .buffer_unordered(CONCURRENCY)
                .try_collect::<Vec<()>>(),
        )?;
        Ok(moved)
    }

    /// Checks that each file of `task` in `writer`'s (`None`: this writer's) checkpoint is in
    /// the store with its length.
    pub fn check_present(&self, writer: Option<&str>, task: &TaskSnapshot) -> Result<()> {
        let w = writer.map_or_else(|| self.writer.clone(), crate::checkpoint::tag::file_safe);
        for f in &task.files {
            let key = self.file_key(&w, &Self::file_name(task, f));
            let meta = self
                .wait(self.store.head(&key))
                .map_err(store_err("stat", &key))?;
            if meta.size != f.len {
                return Err(Error::Corrupt {
                    key: key.to_string(),
                    message: format!("length {}, the manifest says {}", meta.size, f.len),
                });
            }
        }
        Ok(())
    }
}
