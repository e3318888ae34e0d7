//! The group consumer. librdkafka runs rebalance callbacks inside `poll`, on the calling
//! thread; the context records them and [`Consumer::poll_batch`] returns them in order with
//! the messages, so the pipeline sees "messages of the old assignment, then the revocation,
//! then the new assignment" exactly as they happened.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer as _, ConsumerContext, RebalanceProtocol};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

mod close;
mod ends;
mod group;
mod message;
mod offsets;

pub use ends::{End, Membership, may_hold_unread, quiet_since};
pub use message::Message;
use message::record_of;

use super::{Error, Result, client};
use crate::checkpoint::GroupCommit;
use crate::config::KafkaConfig;
use crate::position::{NextOffset, Partition};

/// What `poll_batch` observed, in order.
#[derive(Debug)]
pub enum Event {
    Message(Message),
    Assigned(Vec<Partition>),
    Revoked(Vec<Partition>),
}

#[derive(Default)]
pub struct RebalanceContext {
    // the mutexes are held only to push, drain or read; never across a call into librdkafka
    events: Mutex<VecDeque<Event>>,
    /// Where the next assignment starts instead of the committed offsets (a restore whose
    /// offsets commit only once the group has assigned the partitions).
    start_at: Mutex<HashMap<(String, i32), i64>>,
    /// Each fetched partition's ends, from librdkafka's statistics (`consumer/ends.rs`).
    ends: ends::Ends,
}

impl ClientContext for RebalanceContext {
    fn stats_raw(&self, statistics: &[u8]) {
        self.ends.update(statistics);
    }
}

impl ConsumerContext for RebalanceContext {
    /// The default rebalance handling, plus the restore's start offsets on assignment.
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let cooperative = matches!(
            consumer.rebalance_protocol(),
            RebalanceProtocol::Cooperative
        );
        let result = match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                self.apply_start_offsets(tpl);
                start_uncommitted_at_log_start(consumer, tpl);
                self.push(Event::Assigned(partitions(tpl)));
                if cooperative {
                    consumer.incremental_assign(tpl)
                } else {
                    consumer.assign(tpl)
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                self.push(Event::Revoked(partitions(tpl)));
                if cooperative {
                    consumer.incremental_unassign(tpl)
                } else {
                    consumer.unassign()
                }
            }
            other => {
                // as librdkafka's documentation (and rdkafka's default handler) do: drop the
                // assignment; the group assigns again
                tracing::warn!(error = ?other, "rebalance error; unassigning");
                // the pipeline must drop (and abort the work of) what it held, as on a revocation
                if let Ok(held) = consumer.assignment() {
                    self.push(Event::Revoked(partitions(&held)));
                }
                if cooperative {
                    consumer.incremental_unassign(tpl)
                } else {
                    consumer.unassign()
                }
            }
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, "applying a rebalance failed");
        }
    }
}

impl RebalanceContext {
    fn push(&self, event: Event) {
        if let Ok(mut q) = self.events.lock() {
            q.push_back(event);
        }
    }

    fn drain(&self, out: &mut Vec<Event>) -> bool {
        let Ok(mut q) = self.events.lock() else {
            return false;
        };
        let any = !q.is_empty();
        out.extend(q.drain(..));
        any
    }

    /// Drops queued records of `partitions`: their position was just moved (a seek), so what
    /// was fetched before is fetched again from there.
    fn forget_records(&self, partitions: &[Partition]) {
        if let Ok(mut q) = self.events.lock() {
            q.retain(|e| match e {
                Event::Message(r) => !partitions
                    .iter()
                    .any(|p| p.topic == r.topic() && p.partition == r.partition),
                _ => true,
            });
        }
    }

    /// Sets (and forgets) the start offsets of the partitions in `tpl` that have one.
    fn apply_start_offsets(&self, tpl: &mut TopicPartitionList) {
        let Ok(mut start) = self.start_at.lock() else {
            return;
        };
        if start.is_empty() {
            return;
        }
        let keys: Vec<(String, i32)> = tpl
            .elements()
            .iter()
            .map(|e| (e.topic().to_string(), e.partition()))
            .collect();
        for key in keys {
            if let Some(o) = start.remove(&key) {
                drop(tpl.set_partition_offset(&key.0, key.1, Offset::Offset(o)));
            }
        }
    }
}

/// Partitions of `tpl` without a start offset that the group never committed start at their
/// log start, explicitly: with `auto.offset.reset = error` librdkafka moves no position by
/// itself, so that a committed offset the log no longer holds stops the pipeline.
fn start_uncommitted_at_log_start(
    consumer: &BaseConsumer<RebalanceContext>,
    tpl: &mut TopicPartitionList,
) {
    let mut ask = TopicPartitionList::new();
    for e in tpl.elements() {
        if e.offset() == Offset::Invalid {
            ask.add_partition(e.topic(), e.partition());
        }
    }
    if ask.count() == 0 {
        return;
    }
    let committed = match consumer.committed_offsets(ask, TIMEOUT) {
        Ok(c) => c,
        Err(e) => {
            // the consumer reports the unresolved positions as errors; the pipeline restarts
            tracing::warn!(error = %e, "cannot read the group's committed offsets on assignment");
            return;
        }
    };
    for e in committed.elements() {
        if !matches!(e.offset(), Offset::Offset(o) if o >= 0) {
            drop(tpl.set_partition_offset(e.topic(), e.partition(), Offset::Beginning));
        }
    }
}

fn tpl_of(partitions: &[Partition]) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::new();
    for p in partitions {
        tpl.add_partition(&p.topic, p.partition);
    }
    tpl
}

/// A consumer error: broker and fetch errors are reported here and retried by librdkafka, so
/// the pipeline only needs to know of fatal ones and of a position out of range
/// (`auto.offset.reset = error`: the restart's assignment names the partition and what to do).
fn consumer_error(e: rdkafka::error::KafkaError) -> Result<()> {
    tracing::warn!(error = %e, "consumer error");
    let out_of_range = matches!(
        e,
        rdkafka::error::KafkaError::MessageConsumption(
            rdkafka::types::RDKafkaErrorCode::AutoOffsetReset
        )
    );
    if out_of_range || matches!(e, rdkafka::error::KafkaError::MessageConsumptionFatal(_)) {
        return Err(Error::Client {
            op: "consume",
            source: e,
        });
    }
    Ok(())
}

fn partitions(tpl: &TopicPartitionList) -> Vec<Partition> {
    tpl.elements()
        .iter()
        .map(|e| Partition {
            topic: e.topic().to_string(),
            partition: e.partition(),
        })
        .collect()
}

pub struct Consumer {
    inner: BaseConsumer<RebalanceContext>,
    group: String,
}

/// Time limit of the consumer's blocking coordinator calls.
const TIMEOUT: Duration = Duration::from_secs(30);

impl Consumer {
    /// `instance_id`: static membership (the daemon); `None` for a tool that never joins and
    /// commits as a non-member, which the broker allows while the group is empty.
    pub fn new(kafka: &KafkaConfig, group_id: &str, instance_id: Option<&str>) -> Result<Self> {
        let inner = super::client::consumer(kafka, group_id, instance_id)
            .create_with_context(RebalanceContext::default())
            .map_err(client("create consumer"))?;
        Ok(Self {
            inner,
            group: group_id.to_string(),
        })
    }

    /// The next assignment of these partitions starts at these offsets, not the committed.
    pub fn start_at(&self, offsets: &[(Partition, NextOffset)]) {
        if let Ok(mut start) = self.inner.context().start_at.lock() {
            for (p, o) in offsets {
                start.insert((p.topic.clone(), p.partition), o.0);
            }
        }
    }

    pub fn subscribe(&self, topics: &[&str]) -> Result<()> {
        self.inner.subscribe(topics).map_err(client("subscribe"))
    }

    /// Polls up to `max` records, waiting at most `wait` for the first. Rebalance events end
    /// the batch so that the caller handles them before any later record.
    pub fn poll_batch(&self, max: usize, wait: Duration) -> Result<Vec<Event>> {
        let mut out = Vec::new();
        let deadline = Instant::now() + wait;
        let mut records = 0;
        while records < max {
            let timeout = if records == 0 {
                deadline.saturating_duration_since(Instant::now())
            } else {
                Duration::ZERO
            };
            let polled = self.inner.poll(timeout);
            let rebalanced = self.inner.context().drain(&mut out);
            match polled {
                Some(Ok(m)) => {
                    records += 1;
                    out.push(Event::Message(record_of(&m)));
                }
                Some(Err(e)) => consumer_error(e)?,
                None if records > 0 || Instant::now() >= deadline => break,
                None => {}
            }
            if rebalanced {
                break;
            }
        }
        Ok(out)
    }

    /// An error once the consumer has been without a group coordinator longer than `limit`:
    /// librdkafka, left without brokers by a broker restart, did not rejoin and sat with
    /// nothing assigned, silently (CHAOS.md, finding 13). A consumer given no partitions by a
    /// group it is in, or waiting in a long rebalance, has its coordinator, and never this.
    pub fn check_coordinator(&self, limit: Duration) -> Result<()> {
        let m = self.membership();
        let after = m.without_coordinator_for(Instant::now());
        if after <= limit {
            return Ok(());
        }
        Err(Error::NoCoordinator {
            group: self.group.clone(),
            after,
            state: m.state,
            join_state: m.join_state,
            brokers: m.brokers,
        })
    }

    /// Why the consumer has no group coordinator (librdkafka's group state and for how long),
    /// while the statistics show it without one; for readiness.
    pub fn without_coordinator(&self) -> Option<String> {
        let m = self.membership();
        m.without_coordinator_since.map(|_| {
            format!(
                "librdkafka's group handler in state {:?} for {:.0} s",
                m.state,
                m.without_coordinator_for(Instant::now()).as_secs_f64()
            )
        })
    }

    /// One poll that keeps the group membership alive while the pipeline thread waits for
    /// work it handed off (a restore, with the partitions paused): rebalance events, and any
    /// record of a partition assigned meanwhile, stay queued in order for the next
    /// [`Consumer::poll_batch`].
    pub fn keep_alive(&self, wait: Duration) -> Result<()> {
        match self.inner.poll(wait) {
            Some(Ok(m)) => self.inner.context().push(Event::Message(record_of(&m))),
            Some(Err(e)) => consumer_error(e)?,
            None => {}
        }
        Ok(())
    }

    /// Stops fetching `partitions`; their positions are kept.
    pub fn pause(&self, partitions: &[Partition]) -> Result<()> {
        if partitions.is_empty() {
            return Ok(());
        }
        self.inner
            .pause(&tpl_of(partitions))
            .map_err(client("pause"))
    }

    /// Fetches `partitions` again (one revoked meanwhile is no longer ours: ignored).
    pub fn resume(&self, partitions: &[Partition]) -> Result<()> {
        if partitions.is_empty() {
            return Ok(());
        }
        self.inner
            .resume(&tpl_of(partitions))
            .map_err(client("resume"))
    }

    /// The group's committed offsets for `partitions` (stable: read_committed consumers ask
    /// with require_stable, so pending transactional offsets are waited for).
    pub fn committed(
        &self,
        partitions: &[Partition],
    ) -> Result<Vec<(Partition, Option<NextOffset>)>> {
        Ok(self
            .commits(partitions)?
            .into_iter()
            .map(|(p, c)| (p, c.offset))
            .collect())
    }

    /// The group's commits of `partitions` with their offset-commit metadata, which names the
    /// checkpoint each belongs to (stable, as [`Consumer::committed`]).
    pub fn commits(&self, partitions: &[Partition]) -> Result<Vec<(Partition, GroupCommit)>> {
        let got = self
            .inner
            .committed_offsets(tpl_of(partitions), TIMEOUT)
            .map_err(|source| match source.rdkafka_error_code() {
                // read_committed asks for stable offsets: librdkafka waits while a transaction
                // holds pending offsets of the group, and says only "timed out"
                Some(rdkafka::types::RDKafkaErrorCode::OperationTimedOut) => {
                    Error::UnstableOffsets {
                        group: self.group.clone(),
                        after: TIMEOUT,
                        source,
                    }
                }
                _ => Error::Client {
                    op: "fetch committed offsets",
                    source,
                },
            })?;
        Ok(got
            .elements()
            .iter()
            .map(|e| {
                let p = Partition {
                    topic: e.topic().to_string(),
                    partition: e.partition(),
                };
                let off = match e.offset() {
                    Offset::Offset(o) if o >= 0 => Some(NextOffset(o)),
                    _ => None,
                };
                // rdkafka panics on metadata that is not UTF-8 (another tool's): it names nothing
                let metadata = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    e.metadata().to_string()
                }))
                .unwrap_or_default();
                (p, GroupCommit::read(off, &metadata))
            })
            .collect())
    }

    /// Moves the fetch positions (after an abort: back to the restored checkpoint's offsets).
    pub fn seek(&self, positions: &[(Partition, Option<NextOffset>)]) -> Result<()> {
        if positions.is_empty() {
            return Ok(()); // librdkafka refuses an empty list
        }
        let mut tpl = TopicPartitionList::new();
        for (p, off) in positions {
            let offset = off.map_or(Offset::Beginning, |o| Offset::Offset(o.0));
            tpl.add_partition_offset(&p.topic, p.partition, offset)
                .map_err(client("seek"))?;
        }
        let result = self
            .inner
            .seek_partitions(tpl, TIMEOUT)
            .map_err(client("seek"))?;
        for e in result.elements() {
            if let Err(err) = e.error() {
                return Err(Error::Client {
                    op: "seek",
                    source: err,
                });
            }
        }
        let moved: Vec<Partition> = positions.iter().map(|(p, _)| p.clone()).collect();
        self.inner.context().forget_records(&moved);
        Ok(())
    }

    /// The partitions assigned now.
    pub fn assignment(&self) -> Result<Vec<Partition>> {
        let tpl = self.inner.assignment().map_err(client("assignment"))?;
        Ok(partitions(&tpl))
    }

    pub(super) fn group_metadata(&self) -> Result<rdkafka::consumer::ConsumerGroupMetadata> {
        self.inner.group_metadata().ok_or(Error::NoGroupMetadata)
    }
}
