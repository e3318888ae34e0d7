//! The transaction every write of a pipeline goes through (exactly-once rule 4): the
//! transactional producer and whether a transaction is open. A write opens one when none is;
//! nothing else in the engine holds the producer, so no record, dead letter, marker or offset
//! can leave outside a transaction.
//!
//! Its life: `send*` (opens) … `send_offsets` (opens) → `commit_within` (closes on success;
//! an unknown outcome leaves it open for a retry, rule 3) or `abort` (closes).

use std::collections::BTreeMap;
use std::time::Duration;

use crate::kafka::Result;
use crate::kafka::consumer::Consumer;
use crate::kafka::producer::Producer;
use crate::metrics::OutputTally;
use crate::position::{NextOffset, Partition};

pub struct Txn {
    producer: Producer,
    open: bool,
    /// The open transaction's records by topic, counted in the metrics when it commits
    /// (markers and offsets are not records of the pipeline's).
    tally: Option<OutputTally>,
}

impl Txn {
    /// A producer whose `init_transactions` has run (rule 2: it fenced the previous
    /// incarnation).
    pub fn new(producer: Producer) -> Self {
        Self {
            producer,
            open: false,
            tally: None,
        }
    }

    /// [`Self::new`], whose transactions and records are counted in `tally`'s metrics.
    pub fn counted(producer: Producer, tally: OutputTally) -> Self {
        Self {
            tally: Some(tally),
            ..Self::new(producer)
        }
    }

    fn count(&mut self, topic: &str, key: Option<&[u8]>, value: Option<&[u8]>) {
        if let Some(t) = &mut self.tally {
            t.record(
                topic,
                key.map_or(0, <[u8]>::len) + value.map_or(0, <[u8]>::len),
            );
        }
    }

    fn ended(&mut self, committed: bool) {
        match (&mut self.tally, committed) {
            (Some(t), true) => t.committed(),
            (Some(t), false) => t.aborted(),
            (None, _) => {}
        }
    }

    pub fn is_open(&self) -> bool {
        self.open
    }

    /// Opens the transaction if none is open: a checkpoint commits one even when nothing was
    /// written since the last (its offsets and tag still move).
    pub fn begin(&mut self) -> Result<()> {
        if !self.open {
            self.producer.begin()?;
            self.open = true;
        }
        Ok(())
    }

    pub fn send(&mut self, topic: &str, key: Option<&[u8]>, value: &[u8]) -> Result<()> {
        self.begin()?;
        self.producer.send(topic, key, value)?;
        self.count(topic, key, Some(value));
        Ok(())
    }

    pub fn send_with_headers(
        &mut self,
        topic: &str,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[(&str, &[u8])],
    ) -> Result<()> {
        self.begin()?;
        self.producer
            .send_with_headers(topic, key, value, headers)?;
        self.count(topic, key, value);
        Ok(())
    }

    pub fn send_event(
        &mut self,
        topic: &str,
        partition: Option<i32>,
        key: Option<&[u8]>,
        value: &[u8],
        headers: &[(&str, &[u8])],
    ) -> Result<()> {
        self.begin()?;
        self.producer
            .send_event(topic, partition, key, value, headers)?;
        self.count(topic, key, Some(value));
        Ok(())
    }

    /// A marker (no key, no value, its headers) to every one of `partitions` partitions of
    /// `topic`, so that every task reading it hears it: a watermark, a savepoint's barrier.
    pub fn send_marker(
        &mut self,
        topic: &str,
        partitions: i32,
        headers: &[(&str, &[u8])],
    ) -> Result<()> {
        self.begin()?;
        for target in 0..partitions {
            self.producer
                .send_event(topic, Some(target), None, &[], headers)?;
        }
        Ok(())
    }

    /// Whether a record fits the producer's limit (checked before any effect of its input).
    pub fn check_size(&self, topic: &str, key: Option<&[u8]>, value: &[u8]) -> Result<()> {
        self.producer.check_size(topic, key, value)
    }

    /// [`Self::check_size`] with `headers` bytes of headers.
    pub fn check_size_with(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        value: &[u8],
        headers: usize,
    ) -> Result<()> {
        self.producer.check_size_with(topic, key, value, headers)
    }

    /// The limits the producer checks records against (for a producer made anew).
    pub fn limits(&self) -> &crate::kafka::producer::Limits {
        self.producer.limits()
    }

    /// Waits until every record sent is acknowledged (or one failed).
    pub fn flush(&self) -> Result<()> {
        self.producer.flush()
    }

    /// The consumer group's offsets into the transaction, each tagged with `metadata`.
    pub fn send_offsets(
        &mut self,
        offsets: &[(Partition, NextOffset)],
        metadata: &str,
        consumer: &Consumer,
    ) -> Result<()> {
        self.begin()?;
        self.producer.send_offsets(offsets, metadata, consumer)
    }

    /// Commits, waiting at most `timeout`. On an error the transaction stays open: its outcome
    /// may be unknown, and only the caller's rule decides between a retry and an abort.
    pub fn commit_within(&mut self, timeout: Duration) -> Result<()> {
        self.producer.commit_within(timeout)?;
        self.open = false;
        self.ended(true);
        Ok(())
    }

    /// [`Self::commit_within`] the transaction timeout (the offline tools).
    pub fn commit(&mut self) -> Result<()> {
        self.producer.commit()?;
        self.open = false;
        self.ended(true);
        Ok(())
    }

    /// Aborts the open transaction, if any. A failed abort leaves it open.
    pub fn abort(&mut self) -> Result<()> {
        if self.open {
            self.producer.abort()?;
            self.open = false;
            self.ended(false);
        }
        Ok(())
    }

    /// Aborts on the way out after an error: a failed abort is only logged, since the next
    /// start's `init_transactions` (or the broker's timeout) ends the transaction anyway.
    pub fn abort_on_error(&mut self) {
        if self.open {
            self.ended(false);
            if let Err(abort) = self.producer.abort() {
                tracing::warn!(error = %crate::pipeline::chain(&abort), "abort after an error failed");
            }
            self.open = false;
        }
    }

    /// Whether this writer still owns its transactional id, asked without fencing a newer
    /// one (`Producer::ownership`); the open transaction, if any, is aborted first.
    pub fn ownership(
        &mut self,
        probe: &(Partition, NextOffset),
        consumer: &Consumer,
    ) -> crate::kafka::producer::Ownership {
        use crate::kafka::producer::Ownership;
        if let Err(e) = self.abort() {
            return match e.txn_failure() {
                crate::checkpoint::protocol::TxnFailure::Fatal => Ownership::Lost(e),
                _ => Ownership::Unknown(e),
            };
        }
        self.producer.ownership(probe, consumer)
    }

    /// Highest offset per partition of `topic` this producer's committed transactions wrote.
    pub fn committed_max(&self, topic: &str) -> BTreeMap<i32, i64> {
        self.producer.committed_max(topic)
    }
}
