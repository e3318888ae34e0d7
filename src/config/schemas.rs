//! `[schemas]` and `[schema_registry]` as written: the config keeps where schemas come from,
//! the runtime loads them (`codec::avro::Registry::load`).

use std::path::PathBuf;
use std::time::Duration;

/// `[schemas]` and `[schema_registry]`.
#[derive(Debug, Clone, Default)]
pub struct SchemaSources {
    /// Confluent schema id → schema file.
    pub files: std::collections::BTreeMap<u32, PathBuf>,
    pub registry: Option<SchemaRegistryConfig>,
}

/// `[schema_registry]`: where writer schemas missing from `[schemas]` are fetched, and where
/// the sink's schema is registered.
#[derive(Clone)]
pub struct SchemaRegistryConfig {
    pub url: String,
    /// Per request.
    pub timeout: Duration,
    /// Where fetched schemas are kept (a directory per registry inside).
    pub cache_dir: PathBuf,
    /// HTTP basic user and password.
    pub auth: Option<(String, String)>,
}

impl std::fmt::Debug for SchemaRegistryConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SchemaRegistryConfig")
            .field("url", &self.url)
            .field("timeout", &self.timeout)
            .field("cache_dir", &self.cache_dir)
            .field("user", &self.auth.as_ref().map(|(user, _)| user))
            .finish_non_exhaustive()
    }
}
