//! The daemon's figures, in Prometheus' terms, and each pipeline thread's health. A leaf: the
//! pipeline threads write here (counters are atomics; a record costs a few relaxed adds), the
//! admin listener (`admin.rs`) reads.
//!
//! Counts of records come in two kinds. *Processed* counts every record a thread handled,
//! again when a rewind makes it handle the record twice; *committed* counts a record once, when
//! the checkpoint whose transaction holds its effect commits (an incarnation's records since
//! its last commit are counted by [`InputTally`] and [`OutputTally`] until then, and forgotten
//! by an abort). So `committed` matches what read_committed readers of the outputs see, and
//! `processed − committed` is the work redone or not yet committed.

pub mod health;
pub mod status;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

pub use health::{Health, Phase};

/// One pipeline thread.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PipelineLabels {
    pub pipeline: String,
    pub thread: u32,
}

/// A topic a pipeline thread reads or writes.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TopicLabels {
    pub pipeline: String,
    pub topic: String,
}

/// One partition a pipeline reads (its consumer lag, the state of its task).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PartitionLabels {
    pub pipeline: String,
    pub topic: String,
    pub partition: i32,
}

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)] // the label values, as Prometheus shows them
pub enum Outcome {
    committed,
    aborted,
    failed,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub pipeline: String,
    pub thread: u32,
    pub outcome: Outcome,
}

type Seconds = Gauge<f64, std::sync::atomic::AtomicU64>;

fn seconds_histogram() -> Histogram {
    // 1 ms to ~33 s
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

/// Every metric family; cloning shares them (each is an `Arc` inside).
#[derive(Clone)]
struct Families {
    input_processed: Family<TopicLabels, Counter>,
    input_committed: Family<TopicLabels, Counter>,
    input_bytes: Family<TopicLabels, Counter>,
    output_records: Family<TopicLabels, Counter>,
    output_bytes: Family<TopicLabels, Counter>,
    skipped: Family<PipelineLabels, Counter>,
    dead_lettered: Family<PipelineLabels, Counter>,
    late: Family<PipelineLabels, Counter>,
    transactions: Family<OutcomeLabels, Counter>,
    checkpoints: Family<OutcomeLabels, Counter>,
    restarts: Family<PipelineLabels, Counter>,
    checkpoint_duration: Family<PipelineLabels, Histogram, fn() -> Histogram>,
    checkpoint_size: Family<PipelineLabels, Gauge>,
    checkpoint_last: Family<PipelineLabels, Seconds>,
    checkpoint_age: Family<PipelineLabels, Seconds>,
    restore_duration: Family<PipelineLabels, Histogram, fn() -> Histogram>,
    restore_bytes: Family<PipelineLabels, Counter>,
    lag: Family<PartitionLabels, Gauge>,
    state_bytes: Family<PartitionLabels, Gauge>,
    state_keys: Family<PartitionLabels, Gauge>,
    watermark_lag: Family<PipelineLabels, Seconds>,
    block_cache: Gauge,
}

impl Families {
    fn new() -> Self {
        Self {
            input_processed: Family::default(),
            input_committed: Family::default(),
            input_bytes: Family::default(),
            output_records: Family::default(),
            output_bytes: Family::default(),
            skipped: Family::default(),
            dead_lettered: Family::default(),
            late: Family::default(),
            transactions: Family::default(),
            checkpoints: Family::default(),
            restarts: Family::default(),
            checkpoint_duration: Family::new_with_constructor(seconds_histogram),
            checkpoint_size: Family::default(),
            checkpoint_last: Family::default(),
            checkpoint_age: Family::default(),
            restore_duration: Family::new_with_constructor(seconds_histogram),
            restore_bytes: Family::default(),
            lag: Family::default(),
            state_bytes: Family::default(),
            state_keys: Family::default(),
            watermark_lag: Family::default(),
            block_cache: Gauge::default(),
        }
    }

    fn register(&self, r: &mut Registry) {
        let f = self.clone();
        r.register(
            "flumen_input_records_processed",
            "Records read and processed, again when a rewind redoes them",
            f.input_processed,
        );
        r.register(
            "flumen_input_records_committed",
            "Records whose processing a committed checkpoint holds, each counted once",
            f.input_committed,
        );
        r.register_with_unit(
            "flumen_input_processed",
            "Key and value bytes of the records processed",
            Unit::Bytes,
            f.input_bytes,
        );
        r.register("flumen_output_records", "Records written in committed transactions, by topic (sink, dead letters, late records, internal topics)", f.output_records);
        r.register_with_unit(
            "flumen_output",
            "Key and value bytes written in committed transactions",
            Unit::Bytes,
            f.output_bytes,
        );
        r.register(
            "flumen_records_skipped",
            "Records skipped by on_error = \"skip\"",
            f.skipped,
        );
        r.register(
            "flumen_records_dead_lettered",
            "Records sent to the dead-letter topic",
            f.dead_lettered,
        );
        r.register(
            "flumen_records_late",
            "Records that came after every window they belong to had closed",
            f.late,
        );
        r.register(
            "flumen_transactions",
            "Kafka transactions ended, by outcome",
            f.transactions,
        );
        r.register("flumen_checkpoints", "Checkpoints ended, by outcome (aborted: rewound; failed: the incarnation restarts or exits)", f.checkpoints);
        r.register(
            "flumen_pipeline_restarts",
            "In-process restarts of a pipeline thread after a transient failure",
            f.restarts,
        );
        r.register_with_unit(
            "flumen_checkpoint_duration",
            "Time from a checkpoint's barrier to its commit and clean-up",
            Unit::Seconds,
            f.checkpoint_duration,
        );
        r.register_with_unit(
            "flumen_checkpoint_size",
            "Size of the last committed checkpoint's state files",
            Unit::Bytes,
            f.checkpoint_size,
        );
        r.register_with_unit(
            "flumen_checkpoint_last_committed_timestamp",
            "When the last checkpoint committed, in seconds since the Unix epoch",
            Unit::Seconds,
            f.checkpoint_last,
        );
        r.register_with_unit(
            "flumen_checkpoint_age",
            "Time since the last committed checkpoint",
            Unit::Seconds,
            f.checkpoint_age,
        );
        r.register_with_unit(
            "flumen_restore_duration",
            "Time to restore the state of newly assigned partitions",
            Unit::Seconds,
            f.restore_duration,
        );
        r.register_with_unit(
            "flumen_restore",
            "Snapshot bytes restored",
            Unit::Bytes,
            f.restore_bytes,
        );
        r.register("flumen_consumer_lag", "Records between the offset Flumen last committed and the partition's last stable offset", f.lag);
        r.register_with_unit("flumen_state_size", "A stateful task's state size (RocksDB's live-data estimate; in memory, keys and values)", Unit::Bytes, f.state_bytes);
        r.register(
            "flumen_state_keys",
            "A stateful task's keys (RocksDB's estimate)",
            f.state_keys,
        );
        r.register_with_unit(
            "flumen_watermark_lag",
            "Wall-clock time minus the event-time watermark of the pipeline's partitions",
            Unit::Seconds,
            f.watermark_lag,
        );
        r.register_with_unit(
            "flumen_block_cache_usage",
            "RocksDB block cache in use, shared by every store",
            Unit::Bytes,
            f.block_cache,
        );
    }
}

/// The registry, its families, and the health of every pipeline thread.
pub struct Metrics {
    registry: Registry,
    families: Families,
    health: Mutex<Vec<Arc<Health>>>,
}

impl Default for Metrics {
    fn default() -> Self {
        let families = Families::new();
        let mut registry = Registry::default();
        families.register(&mut registry);
        Self {
            registry,
            families,
            health: Mutex::new(Vec::new()),
        }
    }
}

impl Metrics {
    /// The handles of one pipeline thread, whose health the listener reports from now on.
    pub fn pipeline(&self, pipeline: &str, thread: u32, interval: Duration) -> PipelineMetrics {
        let health = Arc::new(Health::new(pipeline, thread, interval));
        if let Ok(mut all) = self.health.lock() {
            all.push(health.clone());
        }
        PipelineMetrics {
            labels: PipelineLabels {
                pipeline: pipeline.to_string(),
                thread,
            },
            families: self.families.clone(),
            health,
        }
    }

    /// The OpenMetrics text of every family, the checkpoints' ages brought up to now.
    pub fn encode(&self) -> String {
        let now = health::unix_seconds();
        for h in self.threads() {
            let labels = PipelineLabels {
                pipeline: h.pipeline.clone(),
                thread: h.thread,
            };
            if let Some(last) = h.last_commit_unix() {
                self.families
                    .checkpoint_age
                    .get_or_create(&labels)
                    .set((now - last).max(0.0));
            }
        }
        let mut text = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &self.registry) {
            // writing into a String fails only if a metric's encoding does
            tracing::warn!(error = %e, "encoding the metrics failed");
        }
        text
    }

    /// Every pipeline thread's health, in the order they started.
    pub fn threads(&self) -> Vec<Arc<Health>> {
        self.health.lock().map(|h| h.clone()).unwrap_or_default()
    }
}

/// One pipeline thread's handles (each incarnation of the thread uses the same).
pub struct PipelineMetrics {
    labels: PipelineLabels,
    families: Families,
    pub health: Arc<Health>,
}

impl PipelineMetrics {
    /// Handles registered nowhere, for the offline tools.
    pub fn detached(pipeline: &str) -> Self {
        Metrics::default().pipeline(pipeline, 0, Duration::from_secs(1))
    }

    fn partition(&self, topic: &str, partition: i32) -> PartitionLabels {
        PartitionLabels {
            pipeline: self.labels.pipeline.clone(),
            topic: topic.to_string(),
            partition,
        }
    }

    pub fn inputs(&self) -> InputTally {
        InputTally {
            families: self.families.clone(),
            pipeline: self.labels.pipeline.clone(),
            topics: Vec::new(),
        }
    }

    pub fn outputs(&self) -> OutputTally {
        let f = &self.families;
        OutputTally {
            families: f.clone(),
            pipeline: self.labels.pipeline.clone(),
            topics: Vec::new(),
            committed: f
                .transactions
                .get_or_create_owned(&self.outcome(Outcome::committed)),
            aborted: f
                .transactions
                .get_or_create_owned(&self.outcome(Outcome::aborted)),
        }
    }

    pub fn skipped(&self) {
        self.families.skipped.get_or_create(&self.labels).inc();
    }

    pub fn dead_lettered(&self) {
        self.families
            .dead_lettered
            .get_or_create(&self.labels)
            .inc();
    }

    pub fn late(&self) {
        self.families.late.get_or_create(&self.labels).inc();
    }

    pub fn restarted(&self) {
        self.families.restarts.get_or_create(&self.labels).inc();
        self.health.update(|s| s.restarts += 1);
    }

    fn outcome(&self, outcome: Outcome) -> OutcomeLabels {
        OutcomeLabels {
            pipeline: self.labels.pipeline.clone(),
            thread: self.labels.thread,
            outcome,
        }
    }

    /// A checkpoint ended: committed (with its duration and state size), aborted or failed.
    pub fn checkpoint(&self, outcome: Outcome, took: Duration, size_bytes: Option<u64>) {
        self.families
            .checkpoints
            .get_or_create(&self.outcome(outcome))
            .inc();
        if outcome != Outcome::committed {
            return;
        }
        let f = &self.families;
        f.checkpoint_duration
            .get_or_create(&self.labels)
            .observe(took.as_secs_f64());
        if let Some(size) = size_bytes {
            f.checkpoint_size
                .get_or_create(&self.labels)
                .set(i64::try_from(size).unwrap_or(i64::MAX));
        }
        let now = health::unix_seconds();
        f.checkpoint_last.get_or_create(&self.labels).set(now);
        f.checkpoint_age.get_or_create(&self.labels).set(0.0);
        self.health.committed_at(now);
    }

    /// An assignment's restore took this long.
    pub fn restore_took(&self, took: Duration) {
        self.families
            .restore_duration
            .get_or_create(&self.labels)
            .observe(took.as_secs_f64());
    }

    /// A task's snapshot of this many bytes was restored.
    pub fn restored_bytes(&self, bytes: u64) {
        self.families
            .restore_bytes
            .get_or_create(&self.labels)
            .inc_by(bytes);
    }

    /// A partition's lag; `None` forgets it (the partition went elsewhere).
    pub fn lag(&self, topic: &str, partition: i32, lag: Option<i64>) {
        let labels = self.partition(topic, partition);
        match lag {
            Some(l) => {
                self.families.lag.get_or_create(&labels).set(l.max(0));
            }
            None => {
                self.families.lag.remove(&labels);
            }
        }
    }

    /// A stateful task's size; `None` forgets it.
    pub fn state(&self, topic: &str, partition: i32, size: Option<(u64, u64)>) {
        let labels = self.partition(topic, partition);
        let f = &self.families;
        match size {
            Some((bytes, keys)) => {
                f.state_bytes
                    .get_or_create(&labels)
                    .set(i64::try_from(bytes).unwrap_or(i64::MAX));
                f.state_keys
                    .get_or_create(&labels)
                    .set(i64::try_from(keys).unwrap_or(i64::MAX));
            }
            None => {
                f.state_bytes.remove(&labels);
                f.state_keys.remove(&labels);
            }
        }
    }

    pub fn block_cache(&self, bytes: Option<u64>) {
        if let Some(b) = bytes {
            self.families
                .block_cache
                .set(i64::try_from(b).unwrap_or(i64::MAX));
        }
    }

    /// The event-time watermark (ms since the epoch) the pipeline's partitions have reached.
    pub fn watermark(&self, watermark_ms: i64) {
        let lag = health::unix_seconds() - watermark_ms as f64 / 1000.0;
        self.families
            .watermark_lag
            .get_or_create(&self.labels)
            .set(lag);
    }
}

/// Counts per topic: processed at once, committed at the checkpoint's commit.
struct TopicCount {
    topic: String,
    records: Counter,
    bytes: Counter,
    committed: Counter,
    pending: u64,
}

/// The records an incarnation reads, by topic (a handful: the source, a repartition topic, a
/// join's other stream).
pub struct InputTally {
    families: Families,
    pipeline: String,
    topics: Vec<TopicCount>,
}

impl InputTally {
    /// One record processed, with `bytes` of key and value.
    pub fn record(&mut self, topic: &str, bytes: usize) {
        let i = match self.topics.iter().position(|t| t.topic == topic) {
            Some(i) => i,
            None => {
                let labels = TopicLabels {
                    pipeline: self.pipeline.clone(),
                    topic: topic.to_string(),
                };
                let f = &self.families;
                self.topics.push(TopicCount {
                    topic: topic.to_string(),
                    records: f.input_processed.get_or_create_owned(&labels),
                    bytes: f.input_bytes.get_or_create_owned(&labels),
                    committed: f.input_committed.get_or_create_owned(&labels),
                    pending: 0,
                });
                self.topics.len() - 1
            }
        };
        let t = &mut self.topics[i];
        t.records.inc();
        t.bytes.inc_by(bytes as u64);
        t.pending += 1;
    }

    /// A checkpoint committed everything processed so far; returns how many records of
    /// `topic` that was.
    pub fn committed(&mut self, topic: &str) -> u64 {
        let mut of_topic = 0;
        for t in &mut self.topics {
            let n = std::mem::take(&mut t.pending);
            t.committed.inc_by(n);
            if t.topic == topic {
                of_topic = n;
            }
        }
        of_topic
    }

    /// The work since the last commit is dropped (an abort, a rewind): it is processed again.
    pub fn rewound(&mut self) {
        for t in &mut self.topics {
            t.pending = 0;
        }
    }
}

/// The records a transaction writes, by topic, counted once it commits; and the transactions.
pub struct OutputTally {
    families: Families,
    pipeline: String,
    /// topic, records, bytes (this transaction's)
    topics: Vec<(String, u64, u64)>,
    committed: Counter,
    aborted: Counter,
}

impl OutputTally {
    pub fn record(&mut self, topic: &str, bytes: usize) {
        match self.topics.iter_mut().find(|(t, ..)| t == topic) {
            Some((_, n, b)) => {
                *n += 1;
                *b += bytes as u64;
            }
            None => self.topics.push((topic.to_string(), 1, bytes as u64)),
        }
    }

    pub fn committed(&mut self) {
        self.committed.inc();
        for (topic, n, b) in &mut self.topics {
            let labels = TopicLabels {
                pipeline: self.pipeline.clone(),
                topic: topic.clone(),
            };
            self.families
                .output_records
                .get_or_create(&labels)
                .inc_by(std::mem::take(n));
            self.families
                .output_bytes
                .get_or_create(&labels)
                .inc_by(std::mem::take(b));
        }
    }

    pub fn aborted(&mut self) {
        self.aborted.inc();
        for (_, n, b) in &mut self.topics {
            *n = 0;
            *b = 0;
        }
    }
}
