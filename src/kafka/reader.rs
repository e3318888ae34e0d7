//! Reads a topic's committed records from given offsets up to its current end, without a
//! consumer group: a savepoint uses it to capture the repartition records that are committed
//! but not yet consumed, and a join ([`TableReader`]) to keep its table state current.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers as _, Message as _};
use rdkafka::{Offset, TopicPartitionList};

use super::{Error, Result, client};
use crate::config::KafkaConfig;
use crate::position::NextOffset;

/// A record read back, in offset order per partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
    /// Its headers (event time and watermarks of event-time pipelines), in order.
    pub headers: Vec<(String, Vec<u8>)>,
}

/// Reads `topic` from each `(partition, offset)` (`None`: the beginning) until the partition's
/// end, and at least past `must_reach[partition]`: the last offset this process's committed
/// transactions wrote there, whose commit marker may reach the partition a moment after the
/// commit returned (until then a read_committed fetch stops short of it).
pub fn read_to_end(
    kafka: &KafkaConfig,
    topic: &str,
    from: &[(i32, Option<NextOffset>)],
    must_reach: &BTreeMap<i32, i64>,
    timeout: Duration,
) -> Result<Vec<Pending>> {
    let consumer: BaseConsumer = super::client::reader(kafka)
        .create()
        .map_err(client("create reader"))?;
    read_with(&consumer, topic, from, must_reach, timeout)
}

/// Reads `topic`'s committed records from each `(partition, offset)` until `complete` says a
/// partition's record just read completes it (that record included, nothing after it), for
/// every partition, or until `timeout()` (asked again as the read goes on) has passed since it
/// began: an online savepoint reading up to the barriers of every source partition
/// (`pipeline/task/cut.rs`).
pub fn read_until(
    kafka: &KafkaConfig,
    topic: &str,
    from: &[(i32, Option<NextOffset>)],
    mut complete: impl FnMut(&Pending) -> bool,
    timeout: impl Fn() -> Duration,
) -> Result<Vec<Pending>> {
    let consumer: BaseConsumer = super::client::reader(kafka)
        .set("enable.partition.eof", "false")
        .set("fetch.wait.max.ms", "100")
        .create()
        .map_err(client("create reader"))?;
    assign_from(&consumer, topic, from)?;
    let mut open: BTreeSet<i32> = from.iter().map(|(p, _)| *p).collect();
    let began = Instant::now();
    let mut out = Vec::new();
    while !open.is_empty() {
        let limit = timeout();
        if began.elapsed() >= limit {
            return Err(Error::Timeout {
                op: "read a topic up to its barriers",
                after: limit,
            });
        }
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) if m.topic() == topic && open.contains(&m.partition()) => {
                let record = pending_of(&m);
                if complete(&record) {
                    open.remove(&m.partition());
                }
                out.push(record);
            }
            Some(Err(e)) => tracing::warn!(topic, error = %e, "reader error"),
            Some(Ok(_)) | None => {}
        }
    }
    Ok(out)
}

/// Assigns `consumer` each `(partition, offset)` of `topic` (`None`: the beginning).
fn assign_from(
    consumer: &BaseConsumer,
    topic: &str,
    from: &[(i32, Option<NextOffset>)],
) -> Result<()> {
    let mut tpl = TopicPartitionList::new();
    for (p, off) in from {
        let offset = off.map_or(Offset::Beginning, |o| Offset::Offset(o.0));
        tpl.add_partition_offset(topic, *p, offset)
            .map_err(client("assign reader"))?;
    }
    consumer.assign(&tpl).map_err(client("assign reader"))
}

fn pending_of(m: &rdkafka::message::BorrowedMessage<'_>) -> Pending {
    Pending {
        partition: m.partition(),
        offset: m.offset(),
        key: m.key().map(<[u8]>::to_vec),
        value: m.payload().map(<[u8]>::to_vec).unwrap_or_default(),
        headers: m.headers().map_or_else(Vec::new, |h| {
            (0..h.count())
                .map(|i| h.get(i))
                .map(|h| (h.key.to_string(), h.value.unwrap_or_default().to_vec()))
                .collect()
        }),
    }
}

/// A join's table topic, read to its end at assignment and at every refresh: one consumer kept
/// for the runner's life (assigned anew each time), fetching with a short wait.
pub struct TableReader {
    consumer: BaseConsumer,
}

impl TableReader {
    pub fn new(kafka: &KafkaConfig) -> Result<Self> {
        let consumer = super::client::reader(kafka)
            .set("fetch.wait.max.ms", "10")
            .create()
            .map_err(client("create table reader"))?;
        Ok(Self { consumer })
    }

    /// Every committed record of `topic` from each `(partition, offset)` to the end.
    pub fn read(
        &self,
        topic: &str,
        from: &[(i32, Option<NextOffset>)],
        timeout: Duration,
    ) -> Result<Vec<Pending>> {
        read_with(&self.consumer, topic, from, &BTreeMap::new(), timeout)
    }
}

fn read_with(
    consumer: &BaseConsumer,
    topic: &str,
    from: &[(i32, Option<NextOffset>)],
    must_reach: &BTreeMap<i32, i64>,
    timeout: Duration,
) -> Result<Vec<Pending>> {
    assign_from(consumer, topic, from)?;
    let mut last_seen: BTreeMap<i32, i64> = from
        .iter()
        .map(|(p, off)| (*p, off.map_or(-1, |o| o.0 - 1)))
        .collect();
    let mut at_end = BTreeSet::new();
    let mut out = Vec::new();
    let mut deadline = Instant::now() + timeout;
    loop {
        let done = last_seen.iter().all(|(p, seen)| {
            at_end.contains(p) && must_reach.get(p).is_none_or(|need| seen >= need)
        });
        if done {
            return Ok(out);
        }
        if Instant::now() >= deadline {
            return Err(Error::Timeout {
                op: "read a topic to its end",
                after: timeout,
            });
        }
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                // the time limit is on a stall, not on the whole read (a large table)
                deadline = Instant::now() + timeout;
                // a record fetched for an earlier assignment of this consumer
                let stale = last_seen
                    .get(&m.partition())
                    .is_none_or(|seen| m.offset() <= *seen);
                if m.topic() != topic || stale {
                    continue;
                }
                at_end.remove(&m.partition());
                last_seen.insert(m.partition(), m.offset());
                out.push(pending_of(&m));
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                at_end.insert(p);
            }
            Some(Err(e)) => tracing::warn!(topic, error = %e, "reader error"),
            None => {}
        }
    }
}
