//! A read-only view of a pipeline's checkpoints, wherever `[checkpoint] dir` keeps them: a
//! local (or shared) directory, or an object store. The CLI (`checkpoint list|inspect`) and
//! `doctor` read through it; they create and delete nothing.

use std::path::PathBuf;

use super::remote::Remote;
use super::store::Store;
use super::{CheckpointId, Manifest};
use crate::config::CheckpointConfig;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Local(#[from] super::store::Error),
    #[error(transparent)]
    Remote(#[from] super::remote::Error),
}

pub type Result<T> = std::result::Result<T, Error>;

pub enum Catalog {
    Local { dir: PathBuf, pipeline: String },
    Remote(Box<Remote>),
}

impl Catalog {
    /// The checkpoints of `pipeline`; an object store is reached through `runtime`.
    pub fn open(
        config: &CheckpointConfig,
        pipeline: &str,
        runtime: &tokio::runtime::Handle,
    ) -> Result<Self> {
        Ok(match &config.remote {
            None => Self::Local {
                dir: config.dir.clone(),
                pipeline: pipeline.to_string(),
            },
            Some(remote) => {
                Self::Remote(Box::new(Remote::reader(remote, pipeline, runtime.clone())?))
            }
        })
    }

    /// The writers (transactional ids) with checkpoints of the pipeline, sorted.
    pub fn writers(&self) -> Result<Vec<String>> {
        Ok(match self {
            Self::Local { dir, pipeline } => Store::writers(dir, pipeline)?,
            Self::Remote(r) => r.writers()?,
        })
    }

    /// `writer`'s checkpoint ids, ascending.
    pub fn list(&self, writer: &str) -> Result<Vec<CheckpointId>> {
        Ok(match self {
            Self::Local { dir, pipeline } => Store::reader(dir, pipeline, writer)?.list()?,
            Self::Remote(r) => r.list(Some(writer))?,
        })
    }

    pub fn manifest(&self, writer: &str, id: CheckpointId) -> Result<Manifest> {
        Ok(match self {
            Self::Local { dir, pipeline } => Store::reader(dir, pipeline, writer)?.manifest(id)?,
            Self::Remote(r) => r.manifest(Some(writer), id)?,
        })
    }

    /// The local "committed" hint (an object store has none: `None`).
    pub fn committed_hint(&self, writer: &str, id: CheckpointId) -> Option<bool> {
        match self {
            Self::Local { dir, pipeline } => Store::reader(dir, pipeline, writer)
                .ok()
                .map(|s| s.is_committed(id)),
            Self::Remote(_) => None,
        }
    }

    /// Where checkpoint `id` of `writer` is, for people.
    pub fn location(&self, writer: &str, id: CheckpointId) -> String {
        match self {
            Self::Local { dir, pipeline } => Store::reader(dir, pipeline, writer).map_or_else(
                |_| dir.join(pipeline).display().to_string(),
                |s| s.dir_of(id).display().to_string(),
            ),
            Self::Remote(r) => format!("{}/chk-{:020}.json", r.describe(Some(writer)), id.0),
        }
    }

    /// Whether every file of `m` (checkpoint `id` of `writer`) is there as its manifest says:
    /// locally as a restore checks it; in an object store present with its length (a restore
    /// checks the CRC32C of what it downloads).
    pub fn verify(&self, writer: &str, id: CheckpointId, m: &Manifest) -> Result<()> {
        match self {
            Self::Local { dir, pipeline } => {
                let store = Store::reader(dir, pipeline, writer)?;
                for t in &m.tasks {
                    store.verify(id, t)?;
                }
            }
            Self::Remote(r) => {
                for t in &m.tasks {
                    r.check_present(Some(writer), t)?;
                }
            }
        }
        Ok(())
    }
}
