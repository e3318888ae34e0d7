//! The metric families and their labels: what `/metrics` shows, registered once per daemon.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

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

pub(super) type Seconds = Gauge<f64, std::sync::atomic::AtomicU64>;

fn seconds_histogram() -> Histogram {
    // 1 ms to ~33 s
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

/// Every metric family; cloning shares them (each is an `Arc` inside).
#[derive(Clone)]
pub(super) struct Families {
    pub(super) input_processed: Family<TopicLabels, Counter>,
    pub(super) input_committed: Family<TopicLabels, Counter>,
    pub(super) input_bytes: Family<TopicLabels, Counter>,
    pub(super) output_records: Family<TopicLabels, Counter>,
    pub(super) output_bytes: Family<TopicLabels, Counter>,
    pub(super) skipped: Family<PipelineLabels, Counter>,
    pub(super) dead_lettered: Family<PipelineLabels, Counter>,
    pub(super) late: Family<PipelineLabels, Counter>,
    pub(super) transactions: Family<OutcomeLabels, Counter>,
    pub(super) checkpoints: Family<OutcomeLabels, Counter>,
    pub(super) restarts: Family<PipelineLabels, Counter>,
    pub(super) checkpoint_duration: Family<PipelineLabels, Histogram, fn() -> Histogram>,
    pub(super) checkpoint_size: Family<PipelineLabels, Gauge>,
    pub(super) checkpoint_last: Family<PipelineLabels, Seconds>,
    pub(super) checkpoint_age: Family<PipelineLabels, Seconds>,
    pub(super) restore_duration: Family<PipelineLabels, Histogram, fn() -> Histogram>,
    pub(super) restore_bytes: Family<PipelineLabels, Counter>,
    pub(super) lag: Family<PartitionLabels, Gauge>,
    pub(super) state_bytes: Family<PartitionLabels, Gauge>,
    pub(super) state_keys: Family<PartitionLabels, Gauge>,
    pub(super) watermark_lag: Family<PipelineLabels, Seconds>,
    pub(super) block_cache: Gauge,
}

impl Families {
    pub(super) fn new() -> Self {
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

    pub(super) fn register(&self, r: &mut Registry) {
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
        self.register_checkpoints(r);
    }

    /// Checkpoints, restores, state and lag.
    fn register_checkpoints(&self, r: &mut Registry) {
        let f = self.clone();
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
