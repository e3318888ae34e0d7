//! In-memory backend: a sorted map, snapshotted as one sorted key/value file.
//!
//! File format (`state.kv`): the magic `FLUMENKV1\n`, then per entry
//! `u32 BE key length ‖ key ‖ u32 BE value length ‖ value`, in key order.

use std::collections::BTreeMap;
use std::io::{BufWriter, Read, Write};
use std::path::Path;

use super::{Error, Result, io};

const MAGIC: &[u8] = b"FLUMENKV1\n";
const FILE: &str = "state.kv";

#[derive(Default)]
pub struct MemoryState {
    map: BTreeMap<Vec<u8>, Vec<u8>>,
}

impl MemoryState {
    pub fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.map.get(key).cloned()
    }

    pub fn put(&mut self, key: &[u8], value: &[u8]) {
        self.map.insert(key.to_vec(), value.to_vec());
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn snapshot(&self, dir: &Path) -> Result<Vec<String>> {
        std::fs::create_dir(dir).map_err(io("create snapshot dir", dir))?;
        let path = dir.join(FILE);
        let file = std::fs::File::create(&path).map_err(io("create", &path))?;
        let mut w = BufWriter::new(file);
        let mut write = |bytes: &[u8]| w.write_all(bytes).map_err(io("write", &path));
        write(MAGIC)?;
        for (k, v) in &self.map {
            for part in [k, v] {
                let len = u32::try_from(part.len()).map_err(|_| Error::Corrupt {
                    path: path.clone(),
                    message: "an entry is larger than 4 GiB".into(),
                })?;
                write(&len.to_be_bytes())?;
                write(part)?;
            }
        }
        w.flush().map_err(io("write", &path))?;
        Ok(vec![FILE.to_string()])
    }

    pub fn restore(dir: &Path) -> Result<Self> {
        let path = dir.join(FILE);
        let mut bytes = Vec::new();
        std::fs::File::open(&path)
            .and_then(|mut f| f.read_to_end(&mut bytes))
            .map_err(io("read", &path))?;
        let corrupt = |message: &str| Error::Corrupt {
            path: path.clone(),
            message: message.into(),
        };
        let mut rest = bytes
            .strip_prefix(MAGIC)
            .ok_or_else(|| corrupt("bad magic"))?;
        let mut map = BTreeMap::new();
        let take = |rest: &mut &[u8]| -> Result<Vec<u8>> {
            let (len, tail) = rest
                .split_at_checked(4)
                .ok_or_else(|| corrupt("truncated length"))?;
            let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
            let (part, tail) = tail
                .split_at_checked(len)
                .ok_or_else(|| corrupt("truncated entry"))?;
            *rest = tail;
            Ok(part.to_vec())
        };
        while !rest.is_empty() {
            let k = take(&mut rest)?;
            let v = take(&mut rest)?;
            map.insert(k, v);
        }
        Ok(Self { map })
    }
}
