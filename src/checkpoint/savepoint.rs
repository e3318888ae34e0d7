//! Savepoints: portable, versioned, user-owned copies of a pipeline's state and offsets.
//!
//! Unlike a checkpoint (RocksDB's own files, disposable, garbage-collected) a savepoint holds
//! state in the canonical key/value format of [`crate::state::kvfile`], so it restores into
//! either backend and into a different partition count. Layout:
//! ```text
//! <savepoint>/
//!   _savepoint.json              the manifest (written last: a savepoint without it is not one)
//!   state/<operator-id>/<partition>.kv   keyed state of one operator on one partition, key order
//!   pending/<partition>.kv       repartition records committed but not yet consumed, offset order
//! ```
//! A pending entry is the record's key (empty without one) → `flags ‖ u32 headers ‖ (u32 len ‖
//! name ‖ u32 len ‖ value)* ‖ payload` (format 2; bit 0 of `flags`: the record has a key).
//! Headers carry event time and watermarks (`flumen.event_time`, `flumen.watermark`), so
//! event-time pipelines keep their in-flight records whole. Format 1 (the payload alone, always
//! keyed) is still read.
//! A savepoint is taken right after checkpoint N committed: its source offsets are N's, its
//! state is N's state, and `pending` holds what N had written to the repartition topic that the
//! stateful tasks had not read yet, so a restore loses nothing that was in flight.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::CheckpointId;
use super::store::{check_file, crc_of, fsync};
use crate::position::NextOffset;
use crate::state::kvfile;

/// Format 2 added the stream join's other topic and pending records with keys, format 3 the
/// manifest's own checksum (`checkpoint::seal`).
pub const FORMAT_VERSION: u32 = 3;
/// The first format whose manifest carries its own checksum.
const SEALED_FROM: u32 = 3;
/// The oldest format this Flumen reads.
const OLDEST_FORMAT_VERSION: u32 = 1;

/// One in-flight repartition record of a savepoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingRecord {
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
    pub headers: Vec<(String, Vec<u8>)>,
}

impl PendingRecord {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(5 + self.value.len());
        out.push(u8::from(self.key.is_some()));
        let n = u32::try_from(self.headers.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&n.to_be_bytes());
        for (name, value) in &self.headers {
            for part in [name.as_bytes(), value] {
                let len = u32::try_from(part.len()).unwrap_or(u32::MAX);
                out.extend_from_slice(&len.to_be_bytes());
                out.extend_from_slice(part);
            }
        }
        out.extend_from_slice(&self.value);
        out
    }

    fn decode(version: u32, key: &[u8], bytes: &[u8]) -> Option<Self> {
        if version == 1 {
            return Some(Self {
                key: Some(key.to_vec()),
                value: bytes.to_vec(),
                headers: Vec::new(),
            });
        }
        let (&flags, rest) = bytes.split_first()?;
        let (n, mut rest) = rest.split_first_chunk::<4>()?;
        let mut headers = Vec::new();
        for _ in 0..u32::from_be_bytes(*n) {
            let mut part = || -> Option<Vec<u8>> {
                let (len, tail) = rest.split_first_chunk::<4>()?;
                let len = usize::try_from(u32::from_be_bytes(*len)).ok()?;
                let (part, tail) = tail.split_at_checked(len)?;
                rest = tail;
                Some(part.to_vec())
            };
            let name = String::from_utf8(part()?).ok()?;
            headers.push((name, part()?));
        }
        Some(Self {
            key: (flags & 1 == 1).then(|| key.to_vec()),
            value: rest.to_vec(),
            headers,
        })
    }
}
pub const MANIFEST: &str = "_savepoint.json";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{op} {}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("savepoint file {} is corrupt: {message}", path.display())]
    Corrupt { path: PathBuf, message: String },
    #[error("{} is not a savepoint: it has no {MANIFEST}", .0.display())]
    NotASavepoint(PathBuf),
    #[error("{} already exists; a savepoint is never overwritten", .0.display())]
    Exists(PathBuf),
    #[error("savepoint {} has format version {found}; this Flumen reads versions {OLDEST_FORMAT_VERSION} to {FORMAT_VERSION}", path.display())]
    Version { path: PathBuf, found: u32 },
    #[error(transparent)]
    State(#[from] crate::state::Error),
    /// File checks shared with the checkpoint store (fsync, checksums).
    #[error(transparent)]
    Store(#[from] super::store::Error),
}

pub type Result<T> = std::result::Result<T, Error>;

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |source| Error::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SavepointManifest {
    pub format_version: u32,
    pub flumen_version: String,
    pub pipeline: String,
    pub created_unix_ms: u64,
    /// The checkpoint the savepoint was taken at.
    pub checkpoint: CheckpointId,
    pub source_topic: String,
    pub source_partitions: i32,
    /// Next offset per source partition; `None`: nothing read yet (restore starts at the
    /// partition's beginning).
    pub offsets: Vec<SourceOffset>,
    /// Partition count of the topic that carried keyed state (the repartition topic, or the
    /// source when it is already keyed); 0 for a stateless pipeline.
    pub state_partitions: i32,
    pub operators: Vec<OperatorState>,
    pub pending: Vec<DataFile>,
    /// A stream-stream join's other topic and its next offsets (format 2; absent in format 1,
    /// whose stream-join savepoints cannot be restored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub other_stream: Option<OtherStream>,
}

/// The other topic of a stream-stream join, read like the source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OtherStream {
    pub topic: String,
    pub offsets: Vec<SourceOffset>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceOffset {
    pub partition: i32,
    pub next_offset: Option<NextOffset>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperatorState {
    /// The operator's stable id (config `id`, default its type).
    pub id: String,
    pub kind: String,
    pub files: Vec<DataFile>,
}

/// One key/value file: its partition, path relative to the savepoint, entry count, checksum.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataFile {
    pub partition: i32,
    pub file: String,
    pub entries: u64,
    pub len: u64,
    pub crc32c: u32,
}

impl SavepointManifest {
    pub fn keys(&self) -> u64 {
        self.operators
            .iter()
            .flat_map(|o| &o.files)
            .map(|f| f.entries)
            .sum()
    }

    pub fn bytes(&self) -> u64 {
        self.operators
            .iter()
            .flat_map(|o| &o.files)
            .chain(&self.pending)
            .map(|f| f.len)
            .sum()
    }
}

/// A savepoint on disk, its manifest read.
#[derive(Debug, Clone)]
pub struct Savepoint {
    pub dir: PathBuf,
    pub manifest: SavepointManifest,
}

impl Savepoint {
    /// Reads the manifest of the savepoint in `dir` (or, when `dir` holds one savepoint per
    /// pipeline, in `dir/<pipeline>`).
    pub fn open(dir: &Path, pipeline: Option<&str>) -> Result<Self> {
        let dir = match pipeline {
            Some(p) if !present(&dir.join(MANIFEST))? && present(&dir.join(p).join(MANIFEST))? => {
                dir.join(p)
            }
            _ => dir.to_path_buf(),
        };
        let path = dir.join(MANIFEST);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::NotASavepoint(dir));
            }
            Err(e) => return Err(io("read", &path)(e)),
        };
        let version = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| v.get("format_version")?.as_u64());
        if let Some(found) = version
            .filter(|v| !(u64::from(OLDEST_FORMAT_VERSION)..=u64::from(FORMAT_VERSION)).contains(v))
        {
            return Err(Error::Version {
                path: dir,
                found: u32::try_from(found).unwrap_or(u32::MAX),
            });
        }
        let corrupt = |message| Error::Corrupt {
            path: path.clone(),
            message,
        };
        let (manifest, sealed): (SavepointManifest, bool) =
            super::seal::decode(&bytes).map_err(corrupt)?;
        super::seal::check_format(manifest.format_version, SEALED_FROM, sealed).map_err(corrupt)?;
        Ok(Self { dir, manifest })
    }

    /// What identifies this savepoint: its creation time and the CRC32C of its manifest (which
    /// holds every file's checksum), as written into the checkpoints its restore leads to.
    pub fn digest(&self) -> String {
        let bytes = serde_json::to_vec(&self.manifest).unwrap_or_default();
        format!(
            "{}@{:x}-{:08x}",
            self.manifest.pipeline,
            self.manifest.created_unix_ms,
            crc32c::crc32c(&bytes)
        )
    }

    /// Checks every file's presence, length and CRC32C against the manifest.
    pub fn verify(&self) -> Result<()> {
        let files = self
            .manifest
            .operators
            .iter()
            .flat_map(|o| &o.files)
            .chain(&self.manifest.pending);
        for f in files {
            let path = self.dir.join(&f.file);
            check_file(&path, f.len, f.crc32c, "missing savepoint file").map_err(|e| match e {
                // named as what it is: a savepoint file, not a checkpoint's
                super::store::Error::Corrupt { path, message } => Error::Corrupt { path, message },
                other => Error::Store(other),
            })?;
        }
        Ok(())
    }

    /// Every key of `operator`: `each(recorded partition, key, value)`.
    pub fn read_state(
        &self,
        operator: &str,
        mut each: impl FnMut(i32, &[u8], &[u8]) -> Result<()>,
    ) -> Result<()> {
        let Some(op) = self.manifest.operators.iter().find(|o| o.id == operator) else {
            return Ok(());
        };
        for f in &op.files {
            read_file(&self.dir.join(&f.file), f.partition, &mut each)?;
        }
        Ok(())
    }

    /// Every pending repartition record, in offset order per partition.
    pub fn read_pending(
        &self,
        mut each: impl FnMut(i32, PendingRecord) -> Result<()>,
    ) -> Result<()> {
        let version = self.manifest.format_version;
        for f in &self.manifest.pending {
            let path = self.dir.join(&f.file);
            read_file(&path, f.partition, &mut |partition, key, value| {
                let record =
                    PendingRecord::decode(version, key, value).ok_or_else(|| Error::Corrupt {
                        path: path.clone(),
                        message: "a pending record is cut short".into(),
                    })?;
                each(partition, record)
            })?;
        }
        Ok(())
    }
}

fn read_file(
    path: &Path,
    partition: i32,
    each: &mut impl FnMut(i32, &[u8], &[u8]) -> Result<()>,
) -> Result<()> {
    let mut failed = None;
    kvfile::read(path, |k, v| {
        if failed.is_none()
            && let Err(e) = each(partition, k, v)
        {
            failed = Some(e);
        }
        Ok(())
    })?;
    failed.map_or(Ok(()), Err)
}

/// Savepoints under `root` (one level: `root/<name>`, or two: `root/<pipeline>/<name>`),
/// oldest first. Unreadable ones are returned as errors next to their path.
pub fn list(root: &Path) -> Vec<(PathBuf, Result<Savepoint>)> {
    let mut found = Vec::new();
    let children = |dir: &Path| -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_dir() && !is_hidden(p))
            .collect();
        v.sort();
        v
    };
    for dir in children(root) {
        if has_manifest(&dir) {
            found.push((dir.clone(), Savepoint::open(&dir, None)));
            continue;
        }
        for sub in children(&dir) {
            if has_manifest(&sub) {
                found.push((sub.clone(), Savepoint::open(&sub, None)));
            }
        }
    }
    found.sort_by_key(|(p, r)| {
        (
            r.as_ref().map_or(0, |s| s.manifest.created_unix_ms),
            p.clone(),
        )
    });
    found
}

fn present(path: &Path) -> Result<bool> {
    path.try_exists().map_err(io("stat", path))
}

fn has_manifest(dir: &Path) -> bool {
    matches!(dir.join(MANIFEST).try_exists(), Ok(true))
}

fn is_hidden(p: &Path) -> bool {
    p.file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with('.'))
}

/// Deletes a savepoint directory, refusing anything that is not one.
pub fn delete(dir: &Path) -> Result<()> {
    if !present(&dir.join(MANIFEST))? {
        return Err(Error::NotASavepoint(dir.to_path_buf()));
    }
    std::fs::remove_dir_all(dir).map_err(io("delete savepoint", dir))
}

/// The partition Kafka's default partitioner (Java's, and librdkafka's `murmur2_random`)
/// gives `key` among `partitions`.
pub fn kafka_partition(key: &[u8], partitions: i32) -> i32 {
    let hash = murmur2::murmur2(key, murmur2::KAFKA_SEED) & 0x7fff_ffff;
    // partitions > 0 is checked by callers; max(1) keeps this total
    (hash % partitions.max(1).unsigned_abs()) as i32
}

/// Where a key's state goes on restore: its recorded partition while the count is unchanged,
/// else the partition its key hashes to now.
pub fn target_partition(recorded: i32, key: &[u8], old_count: i32, new_count: i32) -> i32 {
    if old_count == new_count {
        recorded
    } else {
        kafka_partition(key, new_count)
    }
}

mod builder;
pub use builder::Builder;

#[cfg(test)]
mod tests;
