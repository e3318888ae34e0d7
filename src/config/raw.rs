//! The serde mirror of the TOML file: every struct denies unknown fields, and values that need
//! a semantic check keep their source span (`Spanned`) so errors can name `line:col`.
//! Nothing here is validated; `config::validate` turns it into typed values.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Root {
    pub kafka: Spanned<Kafka>,
    pub checkpoint: Spanned<Checkpoint>,
    pub state: Option<Spanned<State>>,
    pub restart: Option<Spanned<Restart>>,
    /// Names this daemon instance inside each pipeline's consumer group (static membership) and
    /// its transactional id; stable across restarts. Default "0".
    pub instance_id: Option<Spanned<String>>,
    /// The environment variable holding `instance_id` (a pod's name, a host name), so that one
    /// config file serves every instance.
    pub instance_id_env: Option<Spanned<String>>,
    /// How long pipelines get to take their final checkpoint once the daemon is told to stop
    /// (SIGTERM, SIGINT, a pipeline's failure); default "30s".
    pub shutdown_timeout: Option<Spanned<String>>,
    /// How long a pipeline thread may go without coming round its loop (a call into librdkafka
    /// that does not return) before the daemon gives up and exits 1, for its supervisor to
    /// start it again; default the larger of 3 minutes and the liveness timeout plus 60 s.
    pub stuck_timeout: Option<Spanned<String>>,
    /// Avro schemas by Confluent schema id: `1 = "schemas/purchase-v1.avsc"`.
    pub schemas: Option<BTreeMap<Spanned<String>, Spanned<String>>>,
    /// A Confluent-compatible schema registry for writer ids `[schemas]` lacks.
    pub schema_registry: Option<Spanned<SchemaRegistry>>,
    /// The HTTP listener for metrics, health and the admin API (off without it).
    pub admin: Option<Spanned<Admin>>,
    pub pipelines: Spanned<Vec<Spanned<Pipeline>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchemaRegistry {
    /// `http://host:port` or `https://…` (system CA roots).
    pub url: Spanned<String>,
    /// Per request; default "10s".
    pub timeout: Option<Spanned<String>>,
    /// Fetched schemas, kept across restarts; default `{state.dir}/schema-registry`.
    pub cache_dir: Option<Spanned<String>>,
    /// HTTP basic authentication (Confluent's `basic.auth.user.info`): the user, with
    /// `password` or the environment variable named by `password_env`.
    pub username: Option<Spanned<String>>,
    pub password: Option<Spanned<String>>,
    pub password_env: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Admin {
    /// `host:port`, e.g. "127.0.0.1:9249".
    pub listen: Spanned<String>,
    /// The bearer token that requests which change something must carry: read from this
    /// file, or from the environment variable `token_env` names.
    pub token_file: Option<Spanned<String>>,
    pub token_env: Option<Spanned<String>>,
    /// How long a pipeline thread may go without finishing a loop before `/livez` fails;
    /// default the larger of 90 s and the transaction timeout plus 30 s.
    pub liveness_timeout: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Kafka {
    pub bootstrap_servers: Spanned<String>,
    pub transaction_timeout: Option<Spanned<String>>,
    pub properties: Option<BTreeMap<Spanned<String>, Spanned<toml::Value>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    pub interval: Spanned<String>,
    pub dir: Spanned<String>,
    pub retain: Option<Spanned<i64>>,
    /// Where triggered savepoints go by default (`flumen savepoint trigger` without `--dir`).
    pub savepoint_dir: Option<Spanned<String>>,
    /// With an object-store `dir`: where checkpoints are written first and kept for local
    /// recovery.
    pub local_dir: Option<Spanned<String>>,
    /// With an `s3://` `dir`: the endpoint and region (an S3-compatible server).
    pub s3: Option<Spanned<S3>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3 {
    pub endpoint: Option<Spanned<String>>,
    pub region: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct State {
    pub backend: Spanned<String>,
    pub dir: Option<Spanned<String>>,
    pub memory_budget_mb: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Restart {
    pub initial_backoff: Option<Spanned<String>>,
    pub max_backoff: Option<Spanned<String>>,
    pub max_attempts: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pipeline {
    pub name: Spanned<String>,
    pub group_id: Option<Spanned<String>>,
    pub transactional_id_prefix: Option<Spanned<String>>,
    /// Pipeline threads in this instance (default 1), as Kafka Streams' stream threads.
    pub parallelism: Option<Spanned<i64>>,
    pub source: Spanned<Source>,
    pub sink: Spanned<Sink>,
    #[serde(default)]
    pub operators: Vec<Spanned<Operator>>,
    /// What a record that cannot be processed does: "fail" (default), "skip", "dead_letter".
    pub on_error: Option<Spanned<String>>,
    /// The dead-letter topic (required by `on_error = "dead_letter"`).
    pub dead_letter_topic: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Source {
    pub topic: Spanned<String>,
    pub format: Option<Spanned<String>>,
    /// Declares that the message key already equals this field, so `key_by` on it needs no
    /// repartition topic.
    pub key_field: Option<Spanned<String>>,
    /// With `format = "avro"`: the reader schema's id in `[schemas]`.
    pub schema_id: Option<Spanned<i64>>,
    /// Where each record's event time comes from, and how watermarks follow it.
    pub event_time: Option<Spanned<EventTime>>,
}

/// `source.event_time`: the record field (or, without `field`, the Kafka timestamp).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventTime {
    pub field: Option<Spanned<String>>,
    /// "unix_ms" (default), "unix_s" or "rfc3339".
    pub format: Option<Spanned<String>>,
    pub max_out_of_orderness: Option<Spanned<String>>,
    pub idle_timeout: Option<Spanned<String>>,
}

/// An aggregate's `window = { ... }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Window {
    /// "tumbling", "hopping" or "session".
    #[serde(rename = "type")]
    pub kind: Spanned<String>,
    /// Tumbling and hopping windows: their length.
    pub size: Option<Spanned<String>>,
    /// Session windows: the inactivity that ends a session.
    pub gap: Option<Spanned<String>>,
    /// Hopping windows: how far each window starts after the previous one.
    pub advance: Option<Spanned<String>>,
    pub allowed_lateness: Option<Spanned<String>>,
    /// Late records go here (untouched, with headers); without it they are dropped.
    pub late_topic: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sink {
    pub topic: Spanned<String>,
    pub format: Option<Spanned<String>>,
    /// With `format = "avro"`: the writer schema's id in `[schemas]`.
    pub schema_id: Option<Spanned<i64>>,
}

/// One step of `operators = [...]`. A flat struct rather than a tagged enum, so unknown keys
/// stay rejected (serde's internally tagged enums bypass `deny_unknown_fields`); which fields a
/// `type` allows is checked in `validate`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Operator {
    #[serde(rename = "type")]
    pub kind: Spanned<String>,
    pub id: Option<Spanned<String>>,
    pub field: Option<Spanned<String>>,
    pub equals: Option<Spanned<toml::Value>>,
    pub not_equals: Option<Spanned<toml::Value>>,
    pub keep: Option<Spanned<Vec<String>>>,
    pub drop: Option<Spanned<Vec<String>>>,
    pub rename: Option<Spanned<BTreeMap<String, String>>>,
    /// Output field name of an aggregate (default: the aggregate's type, `count` or `sum`).
    pub output: Option<Spanned<String>>,
    /// This step's error policy, overriding the pipeline's.
    pub on_error: Option<Spanned<String>>,
    /// `collect`: how many of the latest values to keep (default 100).
    pub max: Option<Spanned<i64>>,
    /// Aggregates: "every_update" (default) or "on_checkpoint"; windowed aggregates:
    /// "on_window_close" (default) or "every_update".
    pub emit: Option<Spanned<String>>,
    /// `filter` and `map`: a jq program (jaq) instead of field/equals or keep/drop/rename.
    pub expr: Option<Spanned<String>>,
    /// `join`: the compacted topic read into keyed state (keyed like the stream).
    pub table: Option<Spanned<String>>,
    /// `join` of two streams: the other stream's topic (co-partitioned, keyed like this one).
    pub stream: Option<Spanned<String>>,
    /// `join` of two streams: how far apart in event time two records may be to join.
    pub within: Option<Spanned<String>>,
    /// `join`: the output field that takes the table's value.
    pub into: Option<Spanned<String>>,
    /// `join`: with a table "left" (default: no table row gives null) or "inner" (drops the
    /// record); with a stream "inner" (default), "left" or "outer".
    pub mode: Option<Spanned<String>>,
    /// `join`: the format of the table's or the other stream's values, "json" (default) or
    /// "avro" with `schema_id` (the reader schema, in `[schemas]`).
    pub format: Option<Spanned<String>>,
    pub schema_id: Option<Spanned<i64>>,
    /// `custom`: the name a user-defined operator was registered under.
    pub name: Option<Spanned<String>>,
    /// `dedupe`: how long a key is remembered; aggregates: state TTL.
    pub ttl: Option<Spanned<String>>,
    /// The clock of `ttl`: "processing" (default) or "event" (the source's event time).
    pub time: Option<Spanned<String>>,
    /// Aggregates: per-key windows in event time.
    pub window: Option<Spanned<Window>>,
}
