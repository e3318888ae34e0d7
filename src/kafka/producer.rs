//! The transactional producer. Every output (sink and repartition records) goes through it.
//! Calls block (librdkafka's transaction API is synchronous); the pipeline thread owns it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseRecord, Producer as _, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};

mod bounded;
mod deliveries;
mod limits;
mod ownership;

pub use bounded::MAX_STUCK;
pub use deliveries::DeliveryContext;
pub use limits::Limits;
pub use ownership::Ownership;

use super::consumer::Consumer;
use super::{Error, Result, client};
use crate::config::KafkaConfig;
use crate::position::{NextOffset, Partition};

/// What a record costs in a batch beyond its key and value (record and batch headers, as
/// librdkafka counts them against `message.max.bytes`), rounded up.
const RECORD_OVERHEAD: usize = 100;

pub struct Producer {
    /// Shared only with a call on a thread of its own (`bounded`), which keeps it if the call
    /// is given up as stuck.
    inner: Arc<ThreadedProducer<DeliveryContext>>,
    limits: Limits,
    timeout: Duration,
    /// How long a call bounded by Flumen waits: the transaction timeout, within half of
    /// `max.poll.interval.ms` (as a commit's retries), so the consumer stays in its group.
    limit: Duration,
    /// A call was given up as stuck: no other transactional call may be made (librdkafka
    /// refuses one while another runs, or waits for it).
    given_up: AtomicBool,
    /// Highest offset per partition written by a committed transaction of this producer.
    committed_max: BTreeMap<(String, i32), i64>,
}

impl Producer {
    /// A producer for records within `limits`; its batches fit every topic's limit.
    pub fn new(kafka: &KafkaConfig, transactional_id: &str, limits: Limits) -> Result<Self> {
        let mut config = super::client::producer(kafka, transactional_id);
        let configured = super::client::property(kafka, "batch.size");
        if let Some(size) = limits.batch_size(configured) {
            tracing::info!(
                transactional_id,
                batch_size = size,
                "batches kept under the smallest max.message.bytes of the topics written"
            );
            config.set("batch.size", size.to_string());
        }
        let inner = config
            .create_with_context(DeliveryContext::default())
            .map_err(client("create producer"))?;
        Ok(Self {
            inner: Arc::new(inner),
            limits,
            timeout: kafka.transaction_timeout,
            limit: kafka
                .transaction_timeout
                .min(super::client::max_poll_interval(kafka) / 2),
            given_up: AtomicBool::new(false),
            committed_max: BTreeMap::new(),
        })
    }

    /// Registers the transactional id, fencing any older producer with the same id and
    /// settling (committing or aborting) its open transaction.
    pub fn init(&self) -> Result<()> {
        self.inner.init_transactions(self.timeout).map_err(|e| {
            self.refused("init_transactions")
                .unwrap_or(client("init_transactions")(e))
        })
    }

    /// `Error::Unauthenticated` when librdkafka has reported refused credentials or a failed
    /// TLS handshake.
    fn refused(&self, op: &'static str) -> Option<super::Error> {
        let reason = self.inner.context().refused.lock().ok()?.clone()?;
        Some(super::Error::Unauthenticated { op, reason })
    }

    pub fn begin(&self) -> Result<()> {
        self.usable("begin_transaction")?;
        let context = self.inner.context();
        if let Ok(mut d) = context.deliveries.lock() {
            context.generation.store(d.begin(), Ordering::Relaxed);
        }
        self.inner
            .begin_transaction()
            .map_err(client("begin_transaction"))
    }

    /// The open transaction's generation, for the records sent in it.
    fn generation(&self) -> usize {
        self.inner.context().generation.load(Ordering::Relaxed)
    }

    /// Checks the size, then enqueues one record, waiting while librdkafka's queue is full.
    pub fn send(&self, topic: &str, key: Option<&[u8]>, value: &[u8]) -> Result<()> {
        self.send_to(topic, None, key, value)
    }

    /// Refuses a record for `topic` over the smaller of the client's `message.max.bytes` and
    /// the topic's `max.message.bytes` before it is produced. Key + value is a lower bound of
    /// the record's size; the check keeps an oversized record from failing inside the
    /// transaction (which would make it abortable, again and again).
    pub fn check_size(&self, topic: &str, key: Option<&[u8]>, value: &[u8]) -> Result<()> {
        self.check_size_with(topic, key, value, 0)
    }

    /// [`Producer::check_size`] with `headers` bytes of headers (name and value lengths).
    pub fn check_size_with(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        value: &[u8],
        headers: usize,
    ) -> Result<()> {
        let size = value.len() + key.map_or(0, <[u8]>::len) + headers + RECORD_OVERHEAD;
        let limit = self.limits.of(topic);
        if size > limit.max {
            return Err(Error::TooLarge {
                size,
                max: limit.max,
                topic: limit.topic.map(str::to_string),
            });
        }
        Ok(())
    }

    /// Produces a record with headers (dead letters), checked like [`Producer::send`].
    pub fn send_with_headers(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[(&str, &[u8])],
    ) -> Result<()> {
        let header_bytes = headers.iter().map(|(k, v)| k.len() + v.len() + 10).sum();
        self.check_size_with(topic, key, value.unwrap_or_default(), header_bytes)?;
        let mut owned = rdkafka::message::OwnedHeaders::new_with_capacity(headers.len());
        for (k, v) in headers {
            owned = owned.insert(rdkafka::message::Header {
                key: k,
                value: Some(*v),
            });
        }
        let mut record: BaseRecord<'_, [u8], [u8], usize> =
            BaseRecord::with_opaque_to(topic, self.generation()).headers(owned);
        if let Some(v) = value {
            record = record.payload(v);
        }
        if let Some(k) = key {
            record = record.key(k);
        }
        self.enqueue(record)
    }

    /// A record with an explicit partition and headers (windowed pipelines' records through the
    /// repartition topic carry their event time and their source's watermark).
    pub fn send_event(
        &self,
        topic: &str,
        partition: Option<i32>,
        key: Option<&[u8]>,
        value: &[u8],
        headers: &[(&str, &[u8])],
    ) -> Result<()> {
        let header_bytes = headers.iter().map(|(k, v)| k.len() + v.len() + 10).sum();
        self.check_size_with(topic, key, value, header_bytes)?;
        let mut record: BaseRecord<'_, [u8], [u8], usize> =
            BaseRecord::with_opaque_to(topic, self.generation()).payload(value);
        if !headers.is_empty() {
            let mut owned = rdkafka::message::OwnedHeaders::new_with_capacity(headers.len());
            for (k, v) in headers {
                owned = owned.insert(rdkafka::message::Header {
                    key: k,
                    value: Some(*v),
                });
            }
            record = record.headers(owned);
        }
        if let Some(k) = key {
            record = record.key(k);
        }
        if let Some(p) = partition {
            record = record.partition(p);
        }
        self.enqueue(record)
    }

    /// [`Producer::send`] to an explicit partition (`None`: by the key's murmur2 hash).
    pub fn send_to(
        &self,
        topic: &str,
        partition: Option<i32>,
        key: Option<&[u8]>,
        value: &[u8],
    ) -> Result<()> {
        self.check_size(topic, key, value)?;
        let mut record: BaseRecord<'_, [u8], [u8], usize> =
            BaseRecord::with_opaque_to(topic, self.generation()).payload(value);
        if let Some(k) = key {
            record = record.key(k);
        }
        if let Some(p) = partition {
            record = record.partition(p);
        }
        self.enqueue(record)
    }

    /// Enqueues one record, waiting while librdkafka's queue is full.
    fn enqueue(&self, mut record: BaseRecord<'_, [u8], [u8], usize>) -> Result<()> {
        loop {
            match self.inner.send(record) {
                Ok(()) => return Ok(()),
                Err((e, r)) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::QueueFull) => {
                    record = r;
                    std::thread::sleep(Duration::from_millis(1));
                }
                // librdkafka's own size check, which counts what ours estimates
                Err((e, r))
                    if e.rdkafka_error_code() == Some(RDKafkaErrorCode::MessageSizeTooLarge) =>
                {
                    let size = r.payload.map_or(0, <[u8]>::len) + r.key.map_or(0, <[u8]>::len);
                    return Err(Error::TooLarge {
                        size,
                        max: self.limits.client_max(),
                        topic: None,
                    });
                }
                Err((e, _)) => {
                    return Err(Error::Client {
                        op: "produce",
                        source: e,
                    });
                }
            }
        }
    }

    /// Waits until every enqueued record is acknowledged, and reports a failed delivery.
    ///
    /// Not rdkafka's `flush`: it polls in 100 ms slices while this producer's own thread serves
    /// the delivery reports, so every flush with a record still in flight took 100 ms (every
    /// checkpoint under load, measured with the benchmark). The thread serves the reports; this
    /// only waits for librdkafka's queue to empty, checking every millisecond.
    pub fn flush(&self) -> Result<()> {
        let deadline = Instant::now() + self.timeout;
        while self.inner.in_flight_count() > 0 {
            if Instant::now() >= deadline {
                return Err(Error::Client {
                    op: "flush",
                    source: KafkaError::Flush(RDKafkaErrorCode::OperationTimedOut),
                });
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let failed = self
            .inner
            .context()
            .deliveries
            .lock()
            .ok()
            .and_then(|d| d.failed.clone());
        match failed {
            None => Ok(()),
            Some(deliveries::Undelivered {
                message,
                refused_at: Some((topic, partition)),
            }) => Err(Error::Refused {
                topic,
                partition,
                message,
            }),
            Some(f) => Err(Error::Delivery(f.message)),
        }
    }

    /// Adds the consumer group's offsets to the open transaction, each with `metadata` (the
    /// commit tag naming the checkpoint they belong to; ASCII).
    pub fn send_offsets(
        &self,
        offsets: &[(Partition, NextOffset)],
        metadata: &str,
        consumer: &Consumer,
    ) -> Result<()> {
        let mut tpl = TopicPartitionList::new();
        for (p, o) in offsets {
            let mut e = tpl.add_partition(&p.topic, p.partition);
            e.set_offset(Offset::Offset(o.0))
                .map_err(client("send_offsets_to_transaction"))?;
            e.set_metadata(metadata);
        }
        let cgm = consumer.group_metadata()?;
        self.usable("send_offsets_to_transaction")?;
        let limit = self.limit;
        let sent = bounded::call(
            &self.inner,
            "send_offsets_to_transaction",
            limit,
            move |p| {
                // the stuck-call test holds the call here (`producer::send_offsets=sleep(ms)`),
                // as librdkafka held it for a lost group coordinator
                fail::fail_point!("producer::send_offsets");
                p.send_offsets_to_transaction(&tpl, &cgm, limit)
            },
        );
        if matches!(sent, Err(Error::Stuck { .. })) {
            self.given_up.store(true, Ordering::Release);
        }
        sent
    }

    /// `Error::GivenUp` once a call of this producer was given up: its transactional state is
    /// the stuck call's, and only a new producer's `init_transactions` ends it.
    fn usable(&self, op: &'static str) -> Result<()> {
        if self.given_up.load(Ordering::Acquire) {
            return Err(Error::GivenUp { op });
        }
        Ok(())
    }

    pub fn commit(&mut self) -> Result<()> {
        self.commit_within(self.timeout)
    }

    /// `commit_transaction`, waiting at most `timeout` (a timed-out commit's outcome is
    /// unknown: retriable).
    pub fn commit_within(&mut self, timeout: Duration) -> Result<()> {
        self.usable("commit_transaction")?;
        self.inner
            .commit_transaction(timeout)
            .map_err(client("commit_transaction"))?;
        if let Ok(d) = self.inner.context().deliveries.lock() {
            for (k, v) in &d.in_txn {
                let slot = self.committed_max.entry(k.clone()).or_insert(-1);
                *slot = (*slot).max(*v);
            }
        }
        Ok(())
    }

    /// The limits records are checked against.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Highest offset per partition of `topic` that a committed transaction of this producer
    /// wrote (partitions it never wrote are absent).
    pub fn committed_max(&self, topic: &str) -> BTreeMap<i32, i64> {
        self.committed_max
            .iter()
            .filter(|((t, _), _)| t == topic)
            .map(|((_, p), o)| (*p, *o))
            .collect()
    }

    pub fn abort(&self) -> Result<()> {
        self.usable("abort_transaction")?;
        self.inner
            .abort_transaction(self.timeout)
            .map_err(client("abort_transaction"))
    }
}
