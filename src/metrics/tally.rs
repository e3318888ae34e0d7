//! The records an incarnation reads and a transaction writes, counted as processed at once and
//! as committed when the checkpoint commits (`metrics.rs` says why both).

use prometheus_client::metrics::counter::Counter;

use super::families::{Families, TopicLabels};

/// Counts per topic: processed at once, committed at the checkpoint's commit.
pub(super) struct TopicCount {
    topic: String,
    records: Counter,
    bytes: Counter,
    committed: Counter,
    pending: u64,
}

/// The records an incarnation reads, by topic (a handful: the source, a repartition topic, a
/// join's other stream).
pub struct InputTally {
    pub(super) families: Families,
    pub(super) pipeline: String,
    pub(super) topics: Vec<TopicCount>,
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
    pub(super) families: Families,
    pub(super) pipeline: String,
    /// topic, records, bytes (this transaction's)
    pub(super) topics: Vec<(String, u64, u64)>,
    pub(super) committed: Counter,
    pub(super) aborted: Counter,
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
