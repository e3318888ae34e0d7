//! Configuration: TOML text → [`raw`] serde mirror → [`validate`] (collects every error) →
//! the typed [`Config`] below, whose values cannot hold invalid states.
//!
//! `flumen validate` and `flumen run` call the same [`load`]; neither does network I/O here.

mod interpolate;
mod parse;
mod plan;
pub mod raw;
mod schemas;
mod secrets;
mod validate;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use plan::{Aggregate, AggregateKind, Emit, Plan, Predicate, Step, StreamJoinMode, TimeDomain};
pub use schemas::{SchemaRegistryConfig, SchemaSources};
pub use secrets::{SECRET_PROPERTIES, is_secret};
pub use validate::{from_str, reserved_kafka_property};

/// One problem in a config file, located as `key.path (line:col)`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Problem {
    pub path: String,
    pub line: usize,
    pub col: usize,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({}:{}): {}",
            self.path, self.line, self.col, self.message
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read config file {path}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} problem(s) in {}", problems.len(), path.display())]
    Invalid {
        path: PathBuf,
        problems: Vec<Problem>,
    },
}

pub type Result<T> = std::result::Result<T, Error>;

/// Reads and validates a config file; `operators` are the names of the custom operators the
/// binary offers (what `{ type = "custom", name }` may name).
pub fn load(path: &Path, operators: &[String]) -> Result<Config> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let base = std::path::absolute(path)
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf));
    validate::from_str_with(&text, operators, base.as_deref()).map_err(|problems| Error::Invalid {
        path: path.to_path_buf(),
        problems,
    })
}

#[derive(Debug, Clone)]
pub struct Config {
    pub kafka: KafkaConfig,
    pub checkpoint: CheckpointConfig,
    pub state: StateConfig,
    pub restart: RestartConfig,
    pub instance_id: String,
    /// Avro schemas by Confluent schema id (`[schemas]`) and the schema registry, as written
    /// (checked; the runtime loads them: `codec::avro::Registry::load`).
    pub schemas: SchemaSources,
    /// `[admin]`: the HTTP listener, if configured.
    pub admin: Option<AdminConfig>,
    /// How long pipelines get to finish once shutdown began.
    pub shutdown_timeout: Duration,
    /// How long a pipeline thread may be stuck in one turn of its loop before the daemon exits.
    pub stuck_timeout: Duration,
    pub pipelines: Vec<PipelineConfig>,
}

/// `[admin]` as written: where to listen and where the token is (the daemon reads it).
#[derive(Debug, Clone)]
pub struct AdminConfig {
    pub listen: std::net::SocketAddr,
    pub token: Option<TokenSource>,
    pub liveness_timeout: Duration,
}

/// Where the admin API's bearer token is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    File(PathBuf),
    Env(String),
}

#[derive(Clone)]
pub struct KafkaConfig {
    pub bootstrap_servers: String,
    pub transaction_timeout: Duration,
    /// librdkafka pass-through settings, none of them engine-owned.
    pub properties: Vec<(String, String)>,
}

#[derive(Debug, Clone)]
pub struct CheckpointConfig {
    pub interval: Duration,
    /// The local checkpoint directory: `[checkpoint] dir`, or with an object store there,
    /// `local_dir` (where checkpoints are written before their upload and kept for local
    /// recovery).
    pub dir: PathBuf,
    /// `[checkpoint] dir` when it is an object store URL: the durable copy.
    pub remote: Option<RemoteConfig>,
    /// How many committed checkpoints to keep per pipeline.
    pub retain: usize,
    /// Default directory of triggered savepoints.
    pub savepoint_dir: PathBuf,
}

/// An object store holding checkpoints: `s3://<bucket>/<prefix>` with `[checkpoint.s3]`.
/// Credentials come from the environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteConfig {
    /// As written: `s3://bucket/prefix`.
    pub url: String,
    pub bucket: String,
    /// Key prefix inside the bucket, without leading or trailing `/` (may be empty).
    pub prefix: String,
    /// An S3-compatible server's URL (`http://127.0.0.1:19300`); AWS itself without it.
    pub endpoint: Option<String>,
    pub region: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    RocksDb,
    Memory,
}

#[derive(Debug, Clone)]
pub struct StateConfig {
    pub backend: Backend,
    pub dir: PathBuf,
    /// One budget shared by every RocksDB instance: block cache plus write buffers.
    pub memory_budget_bytes: usize,
}

#[derive(Debug, Clone)]
pub struct RestartConfig {
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// Consecutive failed attempts before the daemon gives up (a committed checkpoint resets it).
    pub max_attempts: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    String,
    Bytes,
    /// Confluent wire format; the reader schema (source) or the writer schema (sink) is the
    /// one with this id in `[schemas]`.
    Avro {
        schema_id: u32,
    },
}

impl Format {
    /// Records of this format have fields (JSON, Avro records).
    pub fn is_structured(self) -> bool {
        matches!(self, Self::Json | Self::Avro { .. })
    }
}

#[derive(Debug, Clone)]
pub struct PipelineConfig {
    pub name: String,
    pub group_id: String,
    /// The transactional id of this thread of the pipeline (see [`PipelineConfig::thread`]):
    /// the writer of its checkpoints and its static member id.
    pub transactional_id: String,
    /// Pipeline threads in this instance, each a member of the group with its own consumer,
    /// producer, transactional id and tasks.
    pub parallelism: u32,
    /// Which of them this is (0 as written; [`PipelineConfig::thread`] gives the others).
    pub thread: u32,
    pub source: SourceConfig,
    pub sink: SinkConfig,
    pub plan: Plan,
    /// The pipeline's error policy; operators may override it (`Plan`).
    pub on_error: OnError,
    /// Where `dead_letter` records go (set whenever any policy of the pipeline is `dead_letter`).
    pub dead_letter_topic: Option<String>,
}

/// The error policy: what a record that cannot be processed (bad input, a failing operator,
/// an oversized output) does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OnError {
    /// Stop the daemon (exit 4), naming the record.
    Fail,
    /// Count it and go on.
    Skip,
    /// Write it, untouched, with headers that say what failed, to the pipeline's
    /// `dead_letter_topic` in the same transaction as the outputs.
    DeadLetter,
}

#[derive(Debug, Clone)]
pub struct SourceConfig {
    pub topic: String,
    pub format: Format,
    pub key_field: Option<String>,
    pub event_time: Option<EventTime>,
}

/// Where a record's event time comes from, and how the watermark follows it: each source
/// partition's watermark is its highest event time minus `max_out_of_orderness` (minus 1 ms,
/// as Flink's bounded-out-of-orderness strategy).
#[derive(Debug, Clone, PartialEq)]
pub struct EventTime {
    /// The record field; `None`: the Kafka record timestamp.
    pub field: Option<String>,
    pub format: TimeFormat,
    pub max_out_of_orderness: Duration,
    /// A source partition with no news for this long no longer holds the watermark back.
    pub idle_timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeFormat {
    /// A number of milliseconds since the Unix epoch.
    UnixMs,
    /// A number of seconds since the Unix epoch (fractions kept to the millisecond).
    UnixS,
    /// An RFC 3339 string in UTC (`2026-11-30T10:00:00Z`, `…00.250Z`).
    Rfc3339,
}

/// Per-key event-time windows of an aggregate: `[start, start + size)`, a new one every
/// `advance` (tumbling: `advance == size`), aligned to the epoch; or sessions (`gap_ms`). All in
/// milliseconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    pub size_ms: i64,
    pub advance_ms: i64,
    /// Session windows: a record opens `[t, t + gap)`, and windows of a key that overlap merge
    /// (Flink's session windows); `size_ms` and `advance_ms` are then the gap.
    pub gap_ms: Option<i64>,
    /// A window closes (emits, and later records for it are late) once the watermark passes
    /// its end plus this.
    pub allowed_lateness_ms: i64,
    pub late_topic: Option<String>,
}

#[derive(Debug, Clone)]
pub struct SinkConfig {
    pub topic: String,
    pub format: Format,
}

impl PipelineConfig {
    /// Thread `k` of this pipeline: thread 0's transactional id is the instance's,
    /// `<prefix>-<instance>`, as before threads existed; thread `k > 0` has
    /// `<prefix>-<instance>-thread-<k>`. Bounded by `parallelism` and stable across restarts.
    pub fn thread(&self, k: u32) -> Self {
        let mut thread = self.clone();
        thread.thread = k;
        if k > 0 {
            thread.transactional_id = format!("{}-thread-{k}", self.transactional_id);
        }
        thread
    }

    /// Every thread of this pipeline.
    pub fn threads(&self) -> impl Iterator<Item = Self> + '_ {
        (0..self.parallelism).map(|k| self.thread(k))
    }

    /// The internal topic between re-keying and keyed state, when the plan needs one.
    pub fn repartition_topic(&self) -> Option<String> {
        let agg = self.plan.aggregate.as_ref()?;
        self.plan
            .repartition
            .then(|| format!("{}-{}-repartition", self.group_id, agg.id))
    }
}
