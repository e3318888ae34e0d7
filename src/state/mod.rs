//! Keyed state: one store per stateful task (input partition), behind one API for both
//! backends. [`rocks`] keeps state in RocksDB (the only module that uses the rocksdb crate),
//! [`memory`] in a sorted map.
//!
//! Invariants:
//! - A live store is always created fresh: empty, or restored from a snapshot directory. The
//!   live directory of a crashed run is deleted, never reopened (it may hold uncommitted writes).
//! - `snapshot` writes a self-contained directory; the caller (checkpoint store) checksums and
//!   fsyncs it.
//! - Keys are namespaced by operator id ([`namespaced`]) so operators never see each other's keys.

pub mod kvfile;
mod memory;
mod rocks;

use std::path::{Path, PathBuf};

use crate::config::{Backend, StateConfig};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("rocksdb: {0}")]
    Rocks(String),
    #[error("{op} {}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("state snapshot {} is corrupt: {message}", path.display())]
    Corrupt { path: PathBuf, message: String },
}

pub type Result<T> = std::result::Result<T, Error>;

pub(crate) fn io<'a>(
    op: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |source| Error::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Resources shared by every store of one daemon (RocksDB's cache and write-buffer budget).
pub struct StateEnv {
    backend: Backend,
    rocks: Option<rocks::Shared>,
}

impl StateEnv {
    pub fn new(cfg: &StateConfig) -> Self {
        let rocks =
            (cfg.backend == Backend::RocksDb).then(|| rocks::Shared::new(cfg.memory_budget_bytes));
        Self {
            backend: cfg.backend,
            rocks,
        }
    }

    /// Bytes the RocksDB block cache holds (the write buffers are charged to it); `None` with
    /// the memory backend.
    pub fn block_cache_usage(&self) -> Option<u64> {
        self.rocks.as_ref().map(rocks::Shared::cache_usage)
    }

    /// Opens an empty store whose live files (if any) go to `live_dir`, deleting what was there.
    pub fn open_empty(&self, live_dir: &Path) -> Result<TaskState> {
        match (&self.rocks, self.backend) {
            (Some(shared), Backend::RocksDb) => {
                remove_dir_if_present(live_dir)?;
                Ok(TaskState::Rocks(rocks::RocksState::open(shared, live_dir)?))
            }
            _ => Ok(TaskState::Memory(memory::MemoryState::default())),
        }
    }

    /// Opens a store with the contents of `snapshot`, leaving the snapshot untouched. Both
    /// backends read both snapshot formats' own files only: a RocksDB snapshot restores into
    /// RocksDB, a memory snapshot into memory (portable savepoints come later).
    pub fn restore(&self, snapshot: &Path, live_dir: &Path) -> Result<TaskState> {
        match (&self.rocks, self.backend) {
            (Some(shared), Backend::RocksDb) => {
                remove_dir_if_present(live_dir)?;
                Ok(TaskState::Rocks(rocks::RocksState::restore(
                    shared, snapshot, live_dir,
                )?))
            }
            _ => Ok(TaskState::Memory(memory::MemoryState::restore(snapshot)?)),
        }
    }
}

/// The keyed state of one task.
pub enum TaskState {
    Rocks(rocks::RocksState),
    Memory(memory::MemoryState),
}

impl TaskState {
    /// Empty state in memory, for operators' unit tests.
    pub fn in_memory() -> Self {
        Self::Memory(memory::MemoryState::default())
    }

    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        match self {
            Self::Rocks(s) => s.get(key),
            Self::Memory(s) => Ok(s.get(key)),
        }
    }

    pub fn put(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        match self {
            Self::Rocks(s) => s.put(key, value),
            Self::Memory(s) => {
                s.put(key, value);
                Ok(())
            }
        }
    }

    pub fn delete(&mut self, key: &[u8]) -> Result<()> {
        match self {
            Self::Rocks(s) => s.delete(key),
            Self::Memory(s) => {
                s.delete(key);
                Ok(())
            }
        }
    }

    /// Calls `each` for the entries with `from <= key < to`, in key order, until it returns
    /// false. Time-ordered keys make this the timer scan: no full pass over the state.
    pub fn range(
        &self,
        from: &[u8],
        to: &[u8],
        each: impl FnMut(&[u8], &[u8]) -> Result<bool>,
    ) -> Result<()> {
        match self {
            Self::Rocks(s) => s.range(from, to, each),
            Self::Memory(s) => s.range(from, to, each),
        }
    }

    /// The keys with `from <= key < to`, in key order, at most `limit` of them (the due part of
    /// a time-ordered index, collected before it is deleted).
    pub fn keys_in(&self, from: &[u8], to: &[u8], limit: usize) -> Result<Vec<Vec<u8>>> {
        let mut keys = Vec::new();
        self.range(from, to, |k, _| {
            keys.push(k.to_vec());
            Ok(keys.len() < limit)
        })?;
        Ok(keys)
    }

    /// Writes a self-contained copy of the state into `dir` (which must not exist) and
    /// returns the names of the files written, relative to `dir`.
    pub fn snapshot(&mut self, dir: &Path) -> Result<Vec<String>> {
        match self {
            Self::Rocks(s) => s.snapshot(dir),
            Self::Memory(s) => s.snapshot(dir),
        }
    }

    /// Calls `each` for every entry, in key order.
    pub fn for_each(&self, each: impl FnMut(&[u8], &[u8]) -> Result<()>) -> Result<()> {
        match self {
            Self::Rocks(s) => s.for_each(each),
            Self::Memory(s) => s.for_each(each),
        }
    }

    /// Number of keys (estimated for RocksDB).
    pub fn approximate_keys(&self) -> u64 {
        match self {
            Self::Rocks(s) => s.approximate_keys(),
            Self::Memory(s) => s.len() as u64,
        }
    }

    /// (bytes, keys): RocksDB's estimates of live data (memtables included) and keys; in
    /// memory, the keys' and values' bytes and the key count.
    pub fn approximate_size(&self) -> (u64, u64) {
        match self {
            Self::Rocks(s) => (s.approximate_bytes(), s.approximate_keys()),
            Self::Memory(s) => (s.bytes(), s.len() as u64),
        }
    }
}

/// `len(namespace) ‖ namespace ‖ key`: the length prefix keeps namespaces from overlapping.
pub fn namespaced(namespace: &str, key: &[u8]) -> Vec<u8> {
    let ns = namespace.as_bytes();
    let len = u8::try_from(ns.len()).unwrap_or(u8::MAX);
    let ns = &ns[..usize::from(len)];
    let mut out = Vec::with_capacity(1 + ns.len() + key.len());
    out.push(len);
    out.extend_from_slice(ns);
    out.extend_from_slice(key);
    out
}

/// Splits a [`namespaced`] key into (namespace, key); `None` for a key not made by it.
pub fn split_namespaced(key: &[u8]) -> Option<(&str, &[u8])> {
    let (&len, rest) = key.split_first()?;
    let (ns, key) = rest.split_at_checked(usize::from(len))?;
    Some((std::str::from_utf8(ns).ok()?, key))
}

fn remove_dir_if_present(dir: &Path) -> Result<()> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::Io {
            op: "remove stale live state",
            path: dir.to_path_buf(),
            source: e,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn env(backend: Backend) -> StateEnv {
        StateEnv::new(&StateConfig {
            backend,
            dir: PathBuf::new(),
            memory_budget_bytes: 16 << 20,
        })
    }

    fn round_trip(backend: Backend) {
        let tmp = tempfile::tempdir().unwrap();
        let env = env(backend);
        let mut s = env.open_empty(&tmp.path().join("live")).unwrap();
        for i in 0u32..1000 {
            s.put(
                &namespaced("count", &i.to_be_bytes()),
                &(u64::from(i) * 2).to_be_bytes(),
            )
            .unwrap();
        }
        s.snapshot(&tmp.path().join("snap")).unwrap();
        // writes after the snapshot must not leak into it
        s.put(&namespaced("count", &7u32.to_be_bytes()), b"later")
            .unwrap();
        drop(s);
        let r = env
            .restore(&tmp.path().join("snap"), &tmp.path().join("live2"))
            .unwrap();
        assert_eq!(
            r.get(&namespaced("count", &7u32.to_be_bytes())).unwrap(),
            Some(14u64.to_be_bytes().to_vec())
        );
        assert_eq!(
            r.get(&namespaced("count", &999u32.to_be_bytes())).unwrap(),
            Some(1998u64.to_be_bytes().to_vec())
        );
        assert_eq!(
            r.get(&namespaced("sum", &7u32.to_be_bytes())).unwrap(),
            None
        );
    }

    #[test]
    fn rocksdb_snapshot_restores_exactly_the_snapshot() {
        round_trip(Backend::RocksDb);
    }

    #[test]
    fn memory_snapshot_restores_exactly_the_snapshot() {
        round_trip(Backend::Memory);
    }

    fn range_and_delete(backend: Backend) {
        let tmp = tempfile::tempdir().unwrap();
        let mut s = env(backend).open_empty(&tmp.path().join("live")).unwrap();
        for i in 0u8..10 {
            s.put(&[1, i], &[i]).unwrap();
        }
        s.put(&[2, 0], b"other").unwrap();
        s.delete(&[1, 4]).unwrap();
        let mut seen = Vec::new();
        s.range(&[1, 2], &[1, 7], |k, _| {
            seen.push(k[1]);
            Ok(true)
        })
        .unwrap();
        assert_eq!(seen, vec![2, 3, 5, 6]);
        let mut first = Vec::new();
        s.range(&[1], &[2], |k, _| {
            first.push(k[1]);
            Ok(first.len() < 3)
        })
        .unwrap();
        assert_eq!(first, vec![0, 1, 2]);
    }

    #[test]
    fn rocksdb_range_is_bounded_and_sees_deletes() {
        range_and_delete(Backend::RocksDb);
    }

    #[test]
    fn memory_range_is_bounded_and_sees_deletes() {
        range_and_delete(Backend::Memory);
    }

    #[test]
    fn open_empty_never_reuses_a_live_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let env = env(Backend::RocksDb);
        let live = tmp.path().join("live");
        let mut s = env.open_empty(&live).unwrap();
        s.put(b"k", b"uncommitted").unwrap();
        drop(s);
        let s = env.open_empty(&live).unwrap();
        assert_eq!(s.get(b"k").unwrap(), None);
    }

    proptest! {
        #[test]
        fn namespaces_never_collide(a in "[a-z]{0,8}", b in "[a-z]{0,8}", ka in proptest::collection::vec(any::<u8>(), 0..8), kb in proptest::collection::vec(any::<u8>(), 0..8)) {
            prop_assume!(a != b);
            prop_assert_ne!(namespaced(&a, &ka), namespaced(&b, &kb));
        }

        #[test]
        fn split_inverts_namespaced(ns in "[a-z_]{0,12}", key in proptest::collection::vec(any::<u8>(), 0..16)) {
            let joined = namespaced(&ns, &key);
            prop_assert_eq!(split_namespaced(&joined), Some((ns.as_str(), key.as_slice())));
        }
    }
}
