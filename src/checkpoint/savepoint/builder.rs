//! Writing a savepoint: state and pending records into `.kv` files of a staging directory,
//! the manifest last, everything fsynced, then the rename into place.

use super::*;

/// Writes a savepoint into a staging directory and renames it into place when complete.
pub struct Builder {
    staging: PathBuf,
    target: PathBuf,
    state: BTreeMap<(String, i32), kvfile::Writer>,
    pending: BTreeMap<i32, kvfile::Writer>,
}

impl Builder {
    /// Refuses an existing `target`; stages next to it.
    pub fn begin(target: &Path) -> Result<Self> {
        if std::fs::symlink_metadata(target).is_ok() {
            return Err(Error::Exists(target.to_path_buf()));
        }
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "savepoint".into());
        let staging = target.with_file_name(format!(".{name}.tmp"));
        if std::fs::symlink_metadata(&staging).is_ok() {
            std::fs::remove_dir_all(&staging).map_err(io("remove stale staging dir", &staging))?;
        }
        // the savepoint directory is the daemon's user's alone (0700), from its creation
        crate::checkpoint::store::private_dir(&staging)
            .map_err(io("create savepoint dir", &staging))?;
        std::fs::create_dir_all(staging.join("state"))
            .map_err(io("create savepoint dir", &staging))?;
        std::fs::create_dir_all(staging.join("pending"))
            .map_err(io("create savepoint dir", &staging))?;
        Ok(Self {
            staging,
            target: target.to_path_buf(),
            state: BTreeMap::new(),
            pending: BTreeMap::new(),
        })
    }

    /// Adds one key of `operator` on `partition`; per operator and partition, keys must come
    /// in ascending order (a backend's iteration order).
    pub fn put_state(
        &mut self,
        operator: &str,
        partition: i32,
        key: &[u8],
        value: &[u8],
    ) -> Result<()> {
        let slot = (operator.to_string(), partition);
        if !self.state.contains_key(&slot) {
            let dir = self.staging.join("state").join(operator);
            std::fs::create_dir_all(&dir).map_err(io("create savepoint dir", &dir))?;
            let w = kvfile::Writer::create(&dir.join(format!("{partition}.kv")))?;
            self.state.insert(slot.clone(), w);
        }
        if let Some(w) = self.state.get_mut(&slot) {
            w.put(key, value)?;
        }
        Ok(())
    }

    /// Adds one pending repartition record of `partition`.
    pub fn put_pending(&mut self, partition: i32, record: &PendingRecord) -> Result<()> {
        if !self.pending.contains_key(&partition) {
            let path = self.staging.join("pending").join(format!("{partition}.kv"));
            self.pending
                .insert(partition, kvfile::Writer::create(&path)?);
        }
        if let Some(w) = self.pending.get_mut(&partition) {
            w.put(record.key.as_deref().unwrap_or_default(), &record.encode())?;
        }
        Ok(())
    }

    /// Completes the files, fills in `manifest.operators[].files` and `manifest.pending`,
    /// writes the manifest, fsyncs and renames into place.
    pub fn finish(self, mut manifest: SavepointManifest) -> Result<SavepointManifest> {
        let Self {
            staging,
            target,
            state,
            pending,
        } = self;
        for ((operator, partition), w) in state {
            let file = format!("state/{operator}/{partition}.kv");
            let data = done(&staging, file, partition, w)?;
            match manifest.operators.iter_mut().find(|o| o.id == operator) {
                Some(o) => o.files.push(data),
                None => {
                    return Err(Error::Corrupt {
                        path: staging.join(&data.file),
                        message: format!("state of undeclared operator {operator:?}"),
                    });
                }
            }
        }
        manifest.pending.clear();
        for (partition, w) in pending {
            let file = format!("pending/{partition}.kv");
            manifest.pending.push(done(&staging, file, partition, w)?);
        }
        for dir in std::iter::once(staging.join("state"))
            .chain(
                manifest
                    .operators
                    .iter()
                    .map(|o| staging.join("state").join(&o.id)),
            )
            .chain(std::iter::once(staging.join("pending")))
        {
            if present(&dir)? {
                fsync(&dir)?;
            }
        }
        let path = staging.join(MANIFEST);
        let sealed = manifest.format_version >= SEALED_FROM;
        let bytes = crate::checkpoint::seal::encode(&manifest, sealed).map_err(|message| {
            Error::Corrupt {
                path: path.clone(),
                message,
            }
        })?;
        std::fs::write(&path, bytes).map_err(io("write", &path))?;
        fsync(&path)?;
        fsync(&staging)?;
        std::fs::rename(&staging, &target).map_err(io("rename savepoint into place", &target))?;
        if let Some(parent) = target.parent().filter(|p| !p.as_os_str().is_empty()) {
            fsync(parent)?;
        }
        Ok(manifest)
    }
}

fn done(staging: &Path, file: String, partition: i32, w: kvfile::Writer) -> Result<DataFile> {
    let (entries, len) = w.finish()?;
    let crc32c = crc_of(&staging.join(&file))?;
    Ok(DataFile {
        partition,
        file,
        entries,
        len,
        crc32c,
    })
}
