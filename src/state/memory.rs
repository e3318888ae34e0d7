//! In-memory backend: a sorted map, snapshotted as one sorted key/value file (`state.kv`, the
//! format of [`super::kvfile`]).

use std::collections::BTreeMap;
use std::path::Path;

use super::{Result, io, kvfile};

const FILE: &str = "state.kv";

#[derive(Default)]
pub struct MemoryState {
    map: BTreeMap<Vec<u8>, Vec<u8>>,
    /// Bytes of every key and value held.
    bytes: u64,
}

impl MemoryState {
    pub fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.map.get(key).cloned()
    }

    pub fn put(&mut self, key: &[u8], value: &[u8]) {
        self.bytes += (key.len() + value.len()) as u64;
        if let Some(old) = self.map.insert(key.to_vec(), value.to_vec()) {
            self.bytes -= (key.len() + old.len()) as u64;
        }
    }

    pub fn delete(&mut self, key: &[u8]) {
        if let Some(old) = self.map.remove(key) {
            self.bytes -= (key.len() + old.len()) as u64;
        }
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn range(
        &self,
        from: &[u8],
        to: &[u8],
        mut each: impl FnMut(&[u8], &[u8]) -> Result<bool>,
    ) -> Result<()> {
        if from >= to {
            return Ok(());
        }
        for (k, v) in self.map.range::<[u8], _>((
            std::ops::Bound::Included(from),
            std::ops::Bound::Excluded(to),
        )) {
            if !each(k, v)? {
                break;
            }
        }
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn for_each(&self, mut each: impl FnMut(&[u8], &[u8]) -> Result<()>) -> Result<()> {
        for (k, v) in &self.map {
            each(k, v)?;
        }
        Ok(())
    }

    pub fn snapshot(&self, dir: &Path) -> Result<Vec<String>> {
        std::fs::create_dir(dir).map_err(io("create snapshot dir", dir))?;
        let mut w = kvfile::Writer::create(&dir.join(FILE))?;
        for (k, v) in &self.map {
            w.put(k, v)?;
        }
        w.finish()?;
        Ok(vec![FILE.to_string()])
    }

    pub fn restore(dir: &Path) -> Result<Self> {
        let mut state = Self::default();
        kvfile::read(&dir.join(FILE), |k, v| {
            state.put(k, v);
            Ok(())
        })?;
        Ok(state)
    }
}
