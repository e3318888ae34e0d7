//! The operator plan a pipeline's `operators` list compiles to (`validate/plan.rs` builds it):
//! the steps before keyed state, the keyed operator, the steps after. The rest of the typed
//! config, one type per section of the file, is in `config/mod.rs`.

use super::{Format, OnError, Window};

/// The operator chain, split where keyed state begins.
///
/// `before` runs on source records (stateless steps and `key_by`). When `aggregate` is set its
/// state is keyed by the `key_by` field, or by the message key without one; `repartition` says
/// whether records first go through the internal repartition topic. `after` runs on the
/// aggregate's output (or, without an aggregate, right after `before`).
#[derive(Debug, Clone)]
pub struct Plan {
    pub before: Vec<Step>,
    pub aggregate: Option<Aggregate>,
    pub repartition: bool,
    pub after: Vec<Step>,
    /// Per-step `on_error` overrides, parallel to `before` and `after`.
    pub before_on_error: Vec<Option<OnError>>,
    pub after_on_error: Vec<Option<OnError>>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    Filter {
        field: String,
        predicate: Predicate,
    },
    Map {
        keep: Option<Vec<String>>,
        drop: Vec<String>,
        rename: Vec<(String, String)>,
    },
    KeyBy {
        field: String,
    },
    /// `filter` with `expr`: keeps the record when the jq program's first output is truthy
    /// (neither false nor null); no output drops it.
    Select {
        expr: String,
    },
    /// `map` with `expr`: the record's value becomes the jq program's output; no output
    /// drops the record, more than one is an error.
    Transform {
        expr: String,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum Predicate {
    Equals(serde_json::Value),
    NotEquals(serde_json::Value),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Aggregate {
    /// Stable operator id: names the state namespace in snapshots.
    pub id: String,
    pub kind: AggregateKind,
    /// The key's field in the output record (`key_by` field, or `key`).
    pub key_field: String,
    /// The aggregate's field in the output record.
    pub output: String,
    /// This operator's `on_error` override.
    pub on_error: Option<OnError>,
    pub emit: Emit,
    /// Event-time windows; `None`: one running result per key.
    pub window: Option<Window>,
    /// State TTL (ms): a key's state not updated for this long is forgotten, as with Flink's
    /// `StateTtlConfig` (update on write, never return expired).
    pub ttl_ms: Option<i64>,
    /// The clock of the TTL (`ttl_ms`, or dedupe's).
    pub ttl_time: TimeDomain,
}

/// A clock: the machine's, or the records' event time (whose "now" is the watermark).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TimeDomain {
    #[default]
    Processing,
    Event,
}

/// When an aggregate's result goes out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Emit {
    /// One output per input record, the running result (Flink's default for a non-windowed
    /// aggregation).
    EveryUpdate,
    /// Only each key's latest result, once per checkpoint (Kafka Streams' record cache, Flink's
    /// mini-batch): the same exactly-once final results with far fewer output records.
    OnCheckpoint,
    /// Windowed aggregates: one result per key and window, when the window closes (Flink's
    /// event-time trigger, Kafka Streams' `suppress(untilWindowCloses)`).
    OnWindowClose,
}

#[derive(Debug, Clone, PartialEq)]
pub enum AggregateKind {
    Count,
    Sum {
        field: String,
    },
    Min {
        field: String,
    },
    Max {
        field: String,
    },
    Avg {
        field: String,
    },
    First {
        field: String,
    },
    Last {
        field: String,
    },
    CountDistinct {
        field: String,
    },
    /// The latest `max` values of the field.
    Collect {
        field: String,
        max: usize,
    },
    /// Not an aggregate of values: passes the first record of each key and drops the others
    /// until `ttl_ms` (processing time) after that first one.
    Dedupe {
        ttl_ms: i64,
    },
    /// A stream-table join (enrichment): each record gets the value of its key in `table`, a
    /// topic read into keyed state, as field `into`; without a row, `null` (left) or dropped
    /// (inner).
    Join {
        table: String,
        into: String,
        inner: bool,
        /// The table's values: JSON or Avro.
        format: Format,
    },
    /// A windowed stream-stream join: each pair of a record of this stream and one of
    /// `stream` with the same key, at most `within_ms` apart in event time, goes out once as
    /// this record with the other under field `into`; with `mode` left or outer, a record
    /// that found no partner goes out once the watermark passes its bound.
    StreamJoin {
        stream: String,
        within_ms: i64,
        into: String,
        mode: StreamJoinMode,
        /// The other stream's values: JSON or Avro.
        format: Format,
    },
    /// A user-defined operator registered under `name` (`pipeline::custom`).
    Custom {
        name: String,
    },
}

/// Which unmatched records of a stream-stream join go out (Kafka Streams' `join`,
/// `leftJoin`, `outerJoin`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamJoinMode {
    /// Pairs only.
    Inner,
    /// Pairs, and each record of this stream that found none, with `into` null.
    Left,
    /// Pairs, and each record of either stream that found none.
    Outer,
}

impl AggregateKind {
    /// The operator type's name (`type = "…"` in the config, `kind` in savepoints).
    pub fn name(&self) -> &'static str {
        match self {
            Self::Count => "count",
            Self::Sum { .. } => "sum",
            Self::Min { .. } => "min",
            Self::Max { .. } => "max",
            Self::Avg { .. } => "avg",
            Self::First { .. } => "first",
            Self::Last { .. } => "last",
            Self::CountDistinct { .. } => "count_distinct",
            Self::Collect { .. } => "collect",
            Self::Dedupe { .. } => "dedupe",
            Self::Join { .. } => "join",
            Self::StreamJoin { .. } => "stream_join",
            Self::Custom { .. } => "custom",
        }
    }

    /// The record field it reads (none for count).
    pub fn field(&self) -> Option<&str> {
        match self {
            Self::Count
            | Self::Dedupe { .. }
            | Self::Join { .. }
            | Self::StreamJoin { .. }
            | Self::Custom { .. } => None,
            Self::Sum { field }
            | Self::Min { field }
            | Self::Max { field }
            | Self::Avg { field }
            | Self::First { field }
            | Self::Last { field }
            | Self::CountDistinct { field }
            | Self::Collect { field, .. } => Some(field),
        }
    }
}
