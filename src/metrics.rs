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

mod families;
pub mod health;
pub mod status;
mod tally;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::registry::Registry;

pub use families::Outcome;
use families::{Families, OutcomeLabels, PartitionLabels, PipelineLabels};
pub use health::{Health, Phase};
pub use tally::{InputTally, OutputTally};

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
            partitions: Mutex::new(std::collections::BTreeSet::new()),
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
    /// The partitions whose lag or state gauges this thread set.
    partitions: Mutex<std::collections::BTreeSet<(String, i32)>>,
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

    /// Forgets the lag and state gauges of every partition of this pipeline (a new
    /// incarnation starts without partitions; those it gets back reappear at once).
    pub fn forget_partitions(&self) {
        let held = self
            .partitions
            .lock()
            .map(|mut p| std::mem::take(&mut *p))
            .unwrap_or_default();
        for (topic, partition) in held {
            self.lag(&topic, partition, None);
            self.state(&topic, partition, None);
        }
    }

    /// Remembers (or forgets) that this thread set a partition's gauges.
    fn hold(&self, topic: &str, partition: i32, held: bool) {
        if let Ok(mut p) = self.partitions.lock() {
            if held {
                p.insert((topic.to_string(), partition));
            } else {
                p.remove(&(topic.to_string(), partition));
            }
        }
    }

    /// A partition's lag; `None` forgets it (the partition went elsewhere).
    pub fn lag(&self, topic: &str, partition: i32, lag: Option<i64>) {
        let labels = self.partition(topic, partition);
        self.hold(topic, partition, lag.is_some());
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
        if size.is_some() {
            self.hold(topic, partition, true);
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_incarnation_forgets_the_partitions_of_the_last() {
        let metrics = Metrics::default();
        let p = metrics.pipeline("p", 0, Duration::from_secs(1));
        let other = metrics.pipeline("q", 0, Duration::from_secs(1));
        p.lag("in", 0, Some(5));
        p.state("rep", 1, Some((100, 2)));
        other.lag("in", 0, Some(7));
        let text = metrics.encode();
        assert!(
            text.contains("flumen_consumer_lag{pipeline=\"p\",topic=\"in\",partition=\"0\"} 5"),
            "{text}"
        );
        assert!(
            text.contains("flumen_state_keys{pipeline=\"p\",topic=\"rep\",partition=\"1\"} 2"),
            "{text}"
        );
        p.forget_partitions();
        let text = metrics.encode();
        assert!(!text.contains("pipeline=\"p\",topic=\"in\""), "{text}");
        assert!(!text.contains("pipeline=\"p\",topic=\"rep\""), "{text}");
        // another pipeline's stay
        assert!(
            text.contains("flumen_consumer_lag{pipeline=\"q\",topic=\"in\",partition=\"0\"} 7"),
            "{text}"
        );
    }
}
