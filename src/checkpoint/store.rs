//! On-disk checkpoint store of one pipeline's writer (a transactional id: one per instance).
//!
//! Layout under `checkpoint.dir/<pipeline>/writers/<writer>/` (the writer `%XX`-escaped):
//! ```text
//! chk-00000000000000000007/          one checkpoint, complete once renamed from .tmp
//!   manifest.json                    offsets, task list, per-file length and CRC32C, its own CRC32C
//!   <topic>-<partition>/...          each stateful task's snapshot files
//!   COMMITTED                        local hint, written after the Kafka commit
//! chk-00000000000000000008.<writer>.tmp/  being written; deleted on the writer's next start
//! ```
//! Each writer has its own ids and directory, so writers sharing `checkpoint.dir` (several
//! instances on a shared file system) never collide, and any of them can read another's
//! checkpoint (a partition that moved restores from the checkpoint its commit names, whoever
//! wrote it: [`Store::reader`]). Versions before writers had directories kept their
//! checkpoints in `<pipeline>/` itself; the writer that wrote them moves them into its own
//! directory when it opens the store.
//!
//! Durability: every file and directory is fsynced before the rename, and the parent after it,
//! so a checkpoint that exists under its final name is complete on disk.

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use super::{
    CheckpointId, FileSum, MANIFEST_FORMAT_OLDEST, MANIFEST_FORMAT_VERSION, Manifest, TaskSnapshot,
};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{op} {}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("checkpoint {} is corrupt: {message}", path.display())]
    Corrupt { path: PathBuf, message: String },
}

pub type Result<T> = std::result::Result<T, Error>;

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |source| Error::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

const MANIFEST: &str = "manifest.json";
/// The directory of writers' stores inside a pipeline's.
const WRITERS: &str = "writers";
const COMMITTED: &str = "COMMITTED";

pub struct Store {
    root: PathBuf,
    /// The writer's name in file names (its transactional id, `%XX`-escaped).
    writer: String,
    /// CRC32C of SST files already summed, by `<task dir>/<file>` with the file's inode: an SST
    /// is immutable and hard-linked from checkpoint to checkpoint, but its name is unique only
    /// within one task's DB (and within one restore of it), so the name alone is not a key.
    sums: HashMap<PathBuf, (u64, FileSum)>,
}

impl Store {
    /// Opens (creating, mode 0700) the store of `pipeline` for `writer` (its transactional id),
    /// deletes that writer's unfinished checkpoints and moves its checkpoints of the old layout
    /// into its directory. Other writers' files are theirs (a checkpoint directory may be
    /// shared).
    pub fn open(dir: &Path, pipeline: &str, writer: &str) -> Result<Self> {
        let pipeline_root = dir.join(pipeline);
        let writer = super::tag::file_safe(writer);
        let root = pipeline_root.join(WRITERS).join(&writer);
        private_dir(&pipeline_root).map_err(io("create checkpoint dir", &pipeline_root))?;
        private_dir(&root).map_err(io("create checkpoint dir", &root))?;
        for entry in std::fs::read_dir(&root).map_err(io("list", &root))? {
            let path = entry.map_err(io("list", &root))?.path();
            if path.extension().is_some_and(|e| e == "tmp") {
                std::fs::remove_dir_all(&path)
                    .map_err(io("remove unfinished checkpoint", &path))?;
            }
        }
        let store = Self {
            root,
            writer,
            sums: HashMap::new(),
        };
        store.adopt_old_layout(&pipeline_root)?;
        Ok(store)
    }

    /// Checkpoints of the layout before writers had directories, in `<pipeline>/`: this
    /// writer's (its manifest names it, or names no writer: format 1) move into its directory,
    /// and its unfinished ones (`chk-N.<writer>.tmp`, `chk-N.tmp`) are deleted.
    fn adopt_old_layout(&self, pipeline_root: &Path) -> Result<()> {
        let own_tmp = format!(".{}.tmp", self.writer);
        for entry in std::fs::read_dir(pipeline_root).map_err(io("list", pipeline_root))? {
            let path = entry.map_err(io("list", pipeline_root))?.path();
            let Some(name) = path.file_name().map(|n| n.to_string_lossy().into_owned()) else {
                continue;
            };
            let Some(rest) = name.strip_prefix("chk-") else {
                continue;
            };
            let digits = |n: &str| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit());
            if name.ends_with(&own_tmp) || rest.strip_suffix(".tmp").is_some_and(digits) {
                std::fs::remove_dir_all(&path)
                    .map_err(io("remove unfinished checkpoint", &path))?;
            } else if digits(rest) {
                let bytes = std::fs::read(path.join(MANIFEST)).unwrap_or_default();
                let writer = super::seal::decode_manifest(&bytes)
                    .ok()
                    .map(|m| m.writer.map(|w| super::tag::file_safe(&w)));
                let ours = writer.is_some_and(|w| w.is_none_or(|w| w == self.writer));
                let to = self.root.join(&name);
                let taken = to.try_exists().map_err(io("stat", &to))?;
                if ours && !taken {
                    std::fs::rename(&path, &to).map_err(io("move checkpoint", &path))?;
                    fsync(&self.root)?;
                    fsync(pipeline_root)?;
                }
            }
        }
        Ok(())
    }

    /// Opens `writer`'s store of `pipeline` for reading only (a restore of a partition that
    /// moved, the CLI): creates and deletes nothing.
    pub fn reader(dir: &Path, pipeline: &str, writer: &str) -> Result<Self> {
        let writer = super::tag::file_safe(writer);
        let root = dir.join(pipeline).join(WRITERS).join(&writer);
        std::fs::metadata(&root).map_err(io("open checkpoint dir", &root))?;
        Ok(Self {
            root,
            writer,
            sums: HashMap::new(),
        })
    }

    /// The writers with a store of `pipeline` under `dir` (transactional ids), sorted.
    pub fn writers(dir: &Path, pipeline: &str) -> Result<Vec<String>> {
        let root = dir.join(pipeline).join(WRITERS);
        let entries = match std::fs::read_dir(&root) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io("list", &root)(e)),
        };
        let mut writers = Vec::new();
        for entry in entries {
            let name = entry.map_err(io("list", &root))?.file_name();
            if let Some(w) = super::tag::from_file_safe(&name.to_string_lossy()) {
                writers.push(w);
            }
        }
        writers.sort();
        Ok(writers)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn dir_of(&self, id: CheckpointId) -> PathBuf {
        self.root.join(format!("chk-{:020}", id.0))
    }

    /// Ids of the complete (renamed) checkpoints, ascending.
    pub fn list(&self) -> Result<Vec<CheckpointId>> {
        let mut ids = Vec::new();
        for entry in std::fs::read_dir(&self.root).map_err(io("list", &self.root))? {
            let name = entry.map_err(io("list", &self.root))?.file_name();
            let name = name.to_string_lossy();
            if let Some(n) = name
                .strip_prefix("chk-")
                .and_then(|n| n.parse::<u64>().ok())
            {
                ids.push(CheckpointId(n));
            }
        }
        ids.sort_unstable();
        Ok(ids)
    }

    pub fn manifest(&self, id: CheckpointId) -> Result<Manifest> {
        let path = self.dir_of(id).join(MANIFEST);
        let bytes = std::fs::read(&path).map_err(io("read", &path))?;
        let manifest = super::seal::decode_manifest(&bytes).map_err(|message| Error::Corrupt {
            path: path.clone(),
            message,
        })?;
        let known = MANIFEST_FORMAT_OLDEST..=MANIFEST_FORMAT_VERSION;
        if !known.contains(&manifest.format_version) || manifest.checkpoint != id {
            return Err(Error::Corrupt {
                path,
                message: format!(
                    "manifest says version {} checkpoint {}, expected version {MANIFEST_FORMAT_OLDEST} to {MANIFEST_FORMAT_VERSION} checkpoint {id}",
                    manifest.format_version, manifest.checkpoint
                ),
            });
        }
        Ok(manifest)
    }

    pub fn is_committed(&self, id: CheckpointId) -> bool {
        std::fs::metadata(self.dir_of(id).join(COMMITTED)).is_ok()
    }

    /// Starts checkpoint `id`: returns its empty staging directory.
    pub fn begin(&self, id: CheckpointId) -> Result<PathBuf> {
        let tmp = self
            .root
            .join(format!("chk-{:020}.{}.tmp", id.0, self.writer));
        match std::fs::remove_dir_all(&tmp) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(Error::Io {
                    op: "remove stale staging dir",
                    path: tmp,
                    source: e,
                });
            }
        }
        std::fs::create_dir_all(&tmp).map_err(io("create staging dir", &tmp))?;
        Ok(tmp)
    }

    /// Checksums the task files, writes the manifest, fsyncs everything and renames the
    /// staging directory to its final name. After this returns the checkpoint is durable.
    pub fn finish(
        &mut self,
        staging: &Path,
        mut manifest: Manifest,
        task_files: &[Vec<String>],
    ) -> Result<()> {
        for (task, files) in manifest.tasks.iter_mut().zip(task_files) {
            let dir = staging.join(&task.dir);
            task.files = files
                .iter()
                .map(|f| self.sum(&dir.join(f), f))
                .collect::<Result<_>>()?;
            for f in files {
                fsync(&dir.join(f))?;
            }
            fsync(&dir)?;
        }
        let path = staging.join(MANIFEST);
        let bytes = super::seal::encode_manifest(&manifest).map_err(|message| Error::Corrupt {
            path: path.clone(),
            message,
        })?;
        std::fs::write(&path, bytes).map_err(io("write", &path))?;
        fsync(&path)?;
        fsync(staging)?;
        let last = self.dir_of(manifest.checkpoint);
        std::fs::rename(staging, &last).map_err(io("rename checkpoint", staging))?;
        fsync(&self.root)
    }

    fn sum(&mut self, path: &Path, name: &str) -> Result<FileSum> {
        use std::os::unix::fs::MetadataExt as _;
        let meta = std::fs::metadata(path).map_err(io("stat", path))?;
        let (len, inode) = (meta.len(), meta.ino());
        let task_dir = path.parent().and_then(Path::file_name).unwrap_or_default();
        let key = Path::new(task_dir).join(name);
        let cacheable = name.ends_with(".sst");
        if cacheable
            && let Some((ino, s)) = self.sums.get(&key)
            && *ino == inode
            && s.len == len
        {
            return Ok(s.clone());
        }
        let sum = FileSum {
            name: name.to_string(),
            len,
            crc32c: crc_of(path)?,
        };
        if cacheable {
            self.sums.insert(key, (inode, sum.clone()));
        }
        Ok(sum)
    }

    /// Forgets every cached checksum (a task's DB was rebuilt from a snapshot: it may reuse file
    /// names for new contents).
    pub fn forget_sums(&mut self) {
        self.sums.clear();
    }

    /// Writes the local "the Kafka commit of this checkpoint succeeded" hint.
    pub fn mark_committed(&self, id: CheckpointId) -> Result<()> {
        let path = self.dir_of(id).join(COMMITTED);
        std::fs::write(&path, b"").map_err(io("write", &path))?;
        fsync(&path)
    }

    /// Checks a task snapshot's files against the manifest (presence, length, CRC32C); returns
    /// its directory.
    ///
    /// SSTs included: RocksDB checks a block's checksum only when it reads it, so a corrupt SST
    /// in a checkpoint used to surface as a read error of some key later — a restart from the
    /// same checkpoint, again and again, and outputs of other keys committed meanwhile (the
    /// chaos suite's corrupt-checkpoint scenario found it). A restore now reads every file once.
    pub fn verify(&self, id: CheckpointId, task: &TaskSnapshot) -> Result<PathBuf> {
        let dir = self.dir_of(id).join(&task.dir);
        for f in &task.files {
            check_file(&dir.join(&f.name), f.len, f.crc32c, "stat snapshot file")?;
        }
        Ok(dir)
    }

    /// Whether checkpoint `id` holds `task`'s snapshot directory here (local recovery).
    pub fn holds(&self, id: CheckpointId, task: &TaskSnapshot) -> bool {
        self.dir_of(id).join(&task.dir).is_dir()
    }

    /// Deletes checkpoints by id.
    pub fn delete(&mut self, ids: &[CheckpointId]) -> Result<()> {
        for id in ids {
            let dir = self.dir_of(*id);
            std::fs::remove_dir_all(&dir).map_err(io("delete checkpoint", &dir))?;
        }
        if !ids.is_empty() {
            // forget sums of SSTs no checkpoint links any more
            let root = self.root.clone();
            self.sums.retain(|name, _| still_linked(&root, name));
        }
        Ok(())
    }
}

/// Whether some checkpoint still holds `<task dir>/<file>`.
fn still_linked(root: &Path, task_file: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(root) else {
        return false;
    };
    entries
        .flatten()
        .any(|chk| std::fs::metadata(chk.path().join(task_file)).is_ok())
}

/// Checks a file's presence (`missing`: the error's words when it is absent), length and
/// CRC32C against what a manifest recorded.
pub(super) fn check_file(path: &Path, len: u64, crc32c: u32, missing: &'static str) -> Result<()> {
    check_len(path, len, missing)?;
    let crc = crc_of(path)?;
    if crc != crc32c {
        return Err(Error::Corrupt {
            path: path.to_path_buf(),
            message: format!("crc32c {crc:08x}, manifest says {crc32c:08x}"),
        });
    }
    Ok(())
}

fn check_len(path: &Path, len: u64, missing: &'static str) -> Result<()> {
    // a file the manifest lists and the disk lacks is damage, as a wrong length is: retrying
    // the restore cannot bring it back (the chaos suite's deleted SSTs looped restarts)
    let actual = match std::fs::metadata(path) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::Corrupt {
                path: path.to_path_buf(),
                message: format!("{missing}: the manifest lists it, the directory lacks it"),
            });
        }
        Err(e) => return Err(io(missing, path)(e)),
    };
    if actual != len {
        return Err(Error::Corrupt {
            path: path.to_path_buf(),
            message: format!("length {actual}, manifest says {len}"),
        });
    }
    Ok(())
}

pub(super) fn crc_of(path: &Path) -> Result<u32> {
    let mut file = File::open(path).map_err(io("open", path))?;
    let mut buf = vec![0u8; 1 << 16];
    let mut crc = 0u32;
    loop {
        let n = file.read(&mut buf).map_err(io("read", path))?;
        if n == 0 {
            return Ok(crc);
        }
        crc = crc32c::crc32c_append(crc, &buf[..n]);
    }
}

/// Creates `path` (and missing parents) with mode 0700, or sets an existing one to it:
/// checkpoints, savepoints, live state and the control socket are the daemon's user's alone.
pub fn private_dir(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
}

pub(super) fn fsync(path: &Path) -> Result<()> {
    File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(io("fsync", path))
}

#[cfg(test)]
mod tests;
