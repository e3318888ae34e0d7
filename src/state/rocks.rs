//! RocksDB backend.
//!
//! - One block cache and one write-buffer manager (charged to that cache) are shared by every
//!   store of the daemon, so `state.memory_budget_mb` bounds all of them together.
//! - Writes skip the WAL: durability comes from checkpoints, and a crashed run's live DB is
//!   never reopened anyway.
//! - A snapshot is a RocksDB checkpoint: the memtable is flushed and the SST files are hard
//!   links, so its cost does not grow with the state. Restore hard-links the immutable SSTs back
//!   and copies the rest, so RocksDB never writes into a snapshot.

use std::path::Path;

use rocksdb::checkpoint::Checkpoint;
use rocksdb::{
    BlockBasedOptions, Cache, DB, IteratorMode, Options, WriteBufferManager, WriteOptions,
};

use super::{Error, Result, io};

fn rocks(e: rocksdb::Error) -> Error {
    Error::Rocks(e.into_string())
}

pub struct Shared {
    cache: Cache,
    write_buffers: WriteBufferManager,
}

impl Shared {
    pub fn new(budget_bytes: usize) -> Self {
        let cache = Cache::new_lru_cache(budget_bytes);
        let write_buffers = WriteBufferManager::new_write_buffer_manager_with_cache(
            budget_bytes / 4,
            false,
            cache.clone(),
        );
        Self {
            cache,
            write_buffers,
        }
    }

    pub fn cache_usage(&self) -> u64 {
        self.cache.get_usage() as u64
    }

    fn options(&self) -> Options {
        let mut block = BlockBasedOptions::default();
        block.set_block_cache(&self.cache);
        block.set_bloom_filter(10.0, false);
        block.set_cache_index_and_filter_blocks(true);
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.set_block_based_table_factory(&block);
        opts.set_write_buffer_manager(&self.write_buffers);
        opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
        opts.set_max_background_jobs(2);
        opts.set_keep_log_file_num(2);
        opts
    }
}

pub struct RocksState {
    db: DB,
    write: WriteOptions,
}

impl RocksState {
    pub fn open(shared: &Shared, live_dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(live_dir).map_err(io("create live state dir", live_dir))?;
        let db = DB::open(&shared.options(), live_dir).map_err(rocks)?;
        let mut write = WriteOptions::default();
        write.disable_wal(true);
        Ok(Self { db, write })
    }

    pub fn restore(shared: &Shared, snapshot: &Path, live_dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(live_dir).map_err(io("create live state dir", live_dir))?;
        let entries = std::fs::read_dir(snapshot).map_err(io("list snapshot", snapshot))?;
        for entry in entries {
            let entry = entry.map_err(io("list snapshot", snapshot))?;
            let from = entry.path();
            let to = live_dir.join(entry.file_name());
            let is_sst = from.extension().is_some_and(|e| e == "sst");
            // SSTs are immutable: a hard link is safe and free; everything else RocksDB may
            // rewrite, so it is copied
            if !(is_sst && std::fs::hard_link(&from, &to).is_ok()) {
                std::fs::copy(&from, &to).map_err(io("copy snapshot file", &from))?;
            }
        }
        Self::open(shared, live_dir)
    }

    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.db.get(key).map_err(rocks)
    }

    pub fn put(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        self.db.put_opt(key, value, &self.write).map_err(rocks)
    }

    /// Every entry in key order.
    pub fn delete(&mut self, key: &[u8]) -> Result<()> {
        self.db.delete_opt(key, &self.write).map_err(rocks)
    }

    /// Entries with `from <= key < to`, in key order, until `each` returns false. The upper
    /// bound goes to RocksDB, so the scan never reads past it (tombstones included).
    pub fn range(
        &self,
        from: &[u8],
        to: &[u8],
        mut each: impl FnMut(&[u8], &[u8]) -> Result<bool>,
    ) -> Result<()> {
        let mut opts = rocksdb::ReadOptions::default();
        opts.set_iterate_lower_bound(from.to_vec());
        opts.set_iterate_upper_bound(to.to_vec());
        let iter = self
            .db
            .iterator_opt(IteratorMode::From(from, rocksdb::Direction::Forward), opts);
        for item in iter {
            let (k, v) = item.map_err(rocks)?;
            if !each(&k, &v)? {
                break;
            }
        }
        Ok(())
    }

    pub fn for_each(&self, mut each: impl FnMut(&[u8], &[u8]) -> Result<()>) -> Result<()> {
        for item in self.db.iterator(IteratorMode::Start) {
            let (k, v) = item.map_err(rocks)?;
            each(&k, &v)?;
        }
        Ok(())
    }

    pub fn snapshot(&mut self, dir: &Path) -> Result<Vec<String>> {
        // with the WAL off the checkpoint flushes the memtable first (log_size_for_flush = 0)
        self.db.flush().map_err(rocks)?;
        Checkpoint::new(&self.db)
            .and_then(|c| c.create_checkpoint(dir))
            .map_err(rocks)?;
        let mut files = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(io("list snapshot", dir))? {
            let entry = entry.map_err(io("list snapshot", dir))?;
            files.push(entry.file_name().to_string_lossy().into_owned());
        }
        files.sort();
        Ok(files)
    }

    /// Live data in SST files plus the memtables.
    pub fn approximate_bytes(&self) -> u64 {
        [
            "rocksdb.estimate-live-data-size",
            "rocksdb.cur-size-all-mem-tables",
        ]
        .iter()
        .filter_map(|p| self.db.property_int_value(*p).ok().flatten())
        .sum()
    }

    pub fn approximate_keys(&self) -> u64 {
        self.db
            .property_int_value("rocksdb.estimate-num-keys")
            .ok()
            .flatten()
            .unwrap_or(0)
    }
}
