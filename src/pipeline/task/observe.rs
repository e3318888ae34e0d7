//! What the runner tells the metrics and the health probes (`crate::metrics`): a heartbeat each
//! time round the loop, its phase, the records it reads (through `input_tally`), and at each
//! commit the checkpoint's figures, the state's size and the partitions' lag.

use std::time::{Duration, Instant};

use super::Runner;
use crate::checkpoint::Manifest;
use crate::metrics::status::{CheckpointStatus, PartitionStatus};
use crate::metrics::{Outcome, Phase};
use crate::pipeline::topology::Role;

/// How often the lag and "nothing to do" are worked out from the consumer's statistics
/// (which librdkafka emits every 2 s).
const LAG_EVERY: Duration = Duration::from_secs(1);

/// How long a consumer may be without a group coordinator before its pipeline restarts with a
/// new one: three sessions, and at least a minute (finding one during a broker restart takes
/// seconds; a consumer left without brokers stays without for good).
fn no_coordinator_limit(kafka: &crate::config::KafkaConfig) -> Duration {
    (3 * crate::kafka::client::session_timeout(kafka)).max(Duration::from_secs(60))
}

impl Runner<'_> {
    /// Once round the loop: the heartbeat, and every [`LAG_EVERY`] the lag and the consumer's
    /// group coordinator (none for longer than [`no_coordinator_limit`]: an error, so that the
    /// pipeline restarts with a new consumer).
    pub(super) fn observe(&mut self) -> crate::pipeline::Result<()> {
        self.metrics.health.beat();
        // a member the group gives nothing (more threads than partitions) has nothing to
        // restore: running once the group has had a session's time to assign
        if self.tasks.is_empty()
            && self.metrics.health.phase() == Phase::Starting
            && self.started.elapsed() > crate::kafka::client::session_timeout(&self.config.kafka)
        {
            self.set_phase(Phase::Running);
        }
        if self.last_lag_check.elapsed() >= LAG_EVERY {
            self.last_lag_check = Instant::now();
            self.observe_lag();
            let now = crate::metrics::health::unix_seconds();
            self.metrics.health.update(|s| s.sample(now));
            self.metrics
                .health
                .set_no_coordinator(self.consumer.without_coordinator());
            self.consumer
                .check_coordinator(no_coordinator_limit(&self.config.kafka))?;
        }
        Ok(())
    }

    /// One record of the pipeline's processed (its key and value bytes).
    pub(super) fn count_input(&mut self, r: &crate::kafka::consumer::Message) {
        let bytes = r.key().map_or(0, <[u8]>::len) + r.value().map_or(0, <[u8]>::len);
        self.input_tally.record(r.topic(), bytes);
    }

    pub(super) fn set_phase(&self, phase: Phase) {
        self.metrics.health.set_phase(phase);
    }

    /// Each partition's lag behind its last stable offset, counted from the offset this
    /// thread last committed for it (the task's position when nothing was committed since it
    /// was assigned, which is the group's commit); and whether the thread has nothing to do.
    fn observe_lag(&mut self) {
        let committed = self
            .checkpoints
            .manifests
            .values()
            .next_back()
            .map(|m| &m.offsets);
        let mut caught_up = !self.dirty && self.pending.is_empty();
        let mut partitions = Vec::with_capacity(self.tasks.len());
        let known = self.metrics.health.partitions();
        for (p, task) in &self.tasks {
            if task.role == Role::Stray {
                continue;
            }
            let end = self.consumer.end_of(p);
            caught_up &= end.is_some_and(|e| e.read_to_end());
            let from = committed
                .and_then(|o| o.iter().find(|o| o.partition() == *p))
                .map(|o| o.next_offset.0)
                .or(task.next_offset.map(|o| o.0));
            let mut lag = None;
            if let (Some(end), Some(from)) = (end, from)
                && end.last_stable >= 0
            {
                // read to the end with all of it committed: no lag, though a transactional
                // topic's last marker keeps the last stable offset one past the last record
                let done = end.read_to_end() && task.next_offset.is_none_or(|n| n.0 <= from);
                lag = Some(if done { 0 } else { end.last_stable - from });
                self.metrics.lag(&p.topic, p.partition, lag);
            }
            // the state's size is measured at commits
            let before = known
                .iter()
                .find(|k| k.topic == p.topic && k.partition == p.partition);
            partitions.push(PartitionStatus {
                topic: p.topic.clone(),
                partition: p.partition,
                role: format!("{:?}", task.role),
                position: task.next_offset.map(|o| o.0),
                committed: from,
                lag,
                state_bytes: before.and_then(|b| b.state_bytes),
                state_keys: before.and_then(|b| b.state_keys),
            });
        }
        self.metrics.health.set_caught_up(caught_up);
        self.metrics.health.update(|s| s.partitions = partitions);
    }

    /// Partitions gone to another instance: their gauges go too.
    pub(super) fn forget_partitions(&self, partitions: &[crate::position::Partition]) {
        for p in partitions {
            self.metrics.lag(&p.topic, p.partition, None);
            self.metrics.state(&p.topic, p.partition, None);
        }
    }

    /// Checkpoint committed: the records since the last count once, its duration and size,
    /// each task's state, the block cache, the watermark.
    pub(super) fn observe_commit(&mut self, manifest: &Manifest, took: Duration) {
        let records = self.input_tally.committed(&self.pipeline.source.topic);
        let size = manifest
            .tasks
            .iter()
            .flat_map(|t| &t.files)
            .map(|f| f.len)
            .sum();
        self.metrics
            .checkpoint(Outcome::committed, took, Some(size));
        let checkpoint = CheckpointStatus {
            id: manifest.checkpoint.0,
            committed_unix: crate::metrics::health::unix_seconds(),
            duration_ms: took.as_secs_f64() * 1000.0,
            size_bytes: size,
        };
        let mut sizes = Vec::new();
        let mut watermark: Option<i64> = None;
        for (p, task) in &self.tasks {
            if let Some(state) = &task.state {
                let size = state.approximate_size();
                self.metrics.state(&p.topic, p.partition, Some(size));
                sizes.push((p.clone(), size));
            }
            if let Some(w) = &task.windows {
                let current = w.watermarks.current();
                watermark = Some(watermark.map_or(current, |m| m.min(current)));
            }
        }
        if let Some(w) = watermark.filter(|w| *w > crate::pipeline::window::NO_WATERMARK) {
            self.metrics.watermark(w);
        }
        self.metrics.block_cache(self.env.block_cache_usage());
        let offsets = &manifest.offsets;
        self.metrics.health.update(|s| {
            s.records_committed += records;
            s.checkpoint(checkpoint);
            for part in &mut s.partitions {
                let p = |x: &crate::position::Partition| {
                    x.topic == part.topic && x.partition == part.partition
                };
                if let Some(o) = offsets.iter().find(|o| p(&o.partition())) {
                    part.committed = Some(o.next_offset.0);
                }
                if let Some((_, (bytes, keys))) = sizes.iter().find(|(x, _)| p(x)) {
                    part.state_bytes = Some(*bytes);
                    part.state_keys = Some(*keys);
                }
            }
        });
    }

    /// A checkpoint did not commit: its records are processed again (aborted) or by the next
    /// incarnation (failed).
    pub(super) fn observe_failed_checkpoint(&mut self, outcome: Outcome) {
        self.input_tally.rewound();
        self.metrics.checkpoint(outcome, Duration::ZERO, None);
    }
}
