//! The canonical key/value file: memory-backend snapshots and savepoint state use it, so its
//! bytes never depend on a backend's internal files.
//!
//! Format: the magic `FLUMENKV1\n`, then per entry `u32 BE key length ‖ key ‖ u32 BE value
//! length ‖ value`. Writers of state files write entries in key order; readers do not rely on
//! it (pending records keep their offset order).

use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use super::{Error, Result, io};

const MAGIC: &[u8] = b"FLUMENKV1\n";

/// Streams entries into a new file; [`Writer::finish`] flushes and fsyncs it.
pub struct Writer {
    path: PathBuf,
    out: BufWriter<std::fs::File>,
    entries: u64,
    bytes: u64,
}

impl Writer {
    pub fn create(path: &Path) -> Result<Self> {
        let file = std::fs::File::create_new(path).map_err(io("create", path))?;
        let mut w = Self {
            path: path.to_path_buf(),
            out: BufWriter::new(file),
            entries: 0,
            bytes: 0,
        };
        w.write(MAGIC)?;
        Ok(w)
    }

    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.bytes += bytes.len() as u64;
        self.out.write_all(bytes).map_err(io("write", &self.path))
    }

    pub fn put(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        for part in [key, value] {
            let len = u32::try_from(part.len()).map_err(|_| Error::Corrupt {
                path: self.path.clone(),
                message: "an entry is larger than 4 GiB".into(),
            })?;
            self.write(&len.to_be_bytes())?;
            self.write(part)?;
        }
        self.entries += 1;
        Ok(())
    }

    /// Flushes and fsyncs; returns (entries, file length).
    pub fn finish(self) -> Result<(u64, u64)> {
        let Self {
            path,
            out,
            entries,
            bytes,
        } = self;
        let file = out.into_inner().map_err(|e| Error::Io {
            op: "write",
            path: path.clone(),
            source: e.into_error(),
        })?;
        file.sync_all().map_err(io("fsync", &path))?;
        Ok((entries, bytes))
    }
}

/// Reads a whole file and calls `each` per entry, in file order.
pub fn read(path: &Path, mut each: impl FnMut(&[u8], &[u8]) -> Result<()>) -> Result<u64> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(io("read", path))?;
    let corrupt = |message: &str| Error::Corrupt {
        path: path.to_path_buf(),
        message: message.into(),
    };
    let mut rest = bytes
        .strip_prefix(MAGIC)
        .ok_or_else(|| corrupt("bad magic (not a Flumen key/value file)"))?;
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
    let mut n = 0;
    while !rest.is_empty() {
        let k = take(&mut rest)?;
        let v = take(&mut rest)?;
        each(&k, &v)?;
        n += 1;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_order_and_bytes() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("a.kv");
        let mut w = Writer::create(&path).unwrap();
        w.put(b"b", b"2").unwrap();
        w.put(b"", b"").unwrap();
        w.put(b"a", &[0, 255]).unwrap();
        let (entries, len) = w.finish().unwrap();
        assert_eq!(entries, 3);
        assert_eq!(len, std::fs::metadata(&path).unwrap().len());
        let mut got = Vec::new();
        read(&path, |k, v| {
            got.push((k.to_vec(), v.to_vec()));
            Ok(())
        })
        .unwrap();
        assert_eq!(
            got,
            vec![
                (b"b".to_vec(), b"2".to_vec()),
                (vec![], vec![]),
                (b"a".to_vec(), vec![0, 255])
            ]
        );
    }

    #[test]
    fn a_truncated_file_is_corrupt_and_named() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("t.kv");
        let mut w = Writer::create(&path).unwrap();
        w.put(b"key", b"value").unwrap();
        w.finish().unwrap();
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 2]).unwrap();
        let err = read(&path, |_, _| Ok(())).unwrap_err().to_string();
        assert!(err.contains("t.kv") && err.contains("truncated"), "{err}");
    }
}
