//! The transactional producer. Every output (sink and repartition records) goes through it.
//! Calls block (librdkafka's transaction API is synchronous); the pipeline thread owns it.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::error::KafkaError;
use rdkafka::message::Message as _;
use rdkafka::producer::{
    BaseRecord, DeliveryResult, Producer as _, ProducerContext, ThreadedProducer,
};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use super::consumer::Consumer;
use super::{Error, Result, client};
use crate::checkpoint::{NextOffset, Partition};
use crate::config::KafkaConfig;

/// What a record costs in a batch beyond its key and value (record and batch headers, as
/// librdkafka counts them against `message.max.bytes`), rounded up.
const RECORD_OVERHEAD: usize = 100;

/// Remembers the first failed delivery: inside a transaction it makes the commit fail, and
/// knowing it before the commit lets the pipeline abort at once. Also the highest offset
/// delivered per partition in the open transaction, which becomes "committed" with it.
#[derive(Default)]
pub struct Context {
    failed: Mutex<Option<String>>,
    in_txn: Mutex<BTreeMap<(String, i32), i64>>,
}

impl ClientContext for Context {}

impl ProducerContext for Context {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, (): ()) {
        if let Ok(m) = result
            && let Ok(mut max) = self.in_txn.lock()
        {
            let slot = max
                .entry((m.topic().to_string(), m.partition()))
                .or_insert(-1);
            *slot = (*slot).max(m.offset());
        }
        if let Err((e, _)) = result
            && let Ok(mut f) = self.failed.lock()
            && f.is_none()
        {
            *f = Some(e.to_string());
        }
    }
}

pub struct Producer {
    inner: ThreadedProducer<Context>,
    max_bytes: usize,
    timeout: Duration,
    /// Highest offset per partition written by a committed transaction of this producer.
    committed_max: BTreeMap<(String, i32), i64>,
}

impl Producer {
    pub fn new(kafka: &KafkaConfig, transactional_id: &str) -> Result<Self> {
        let inner = super::client::producer(kafka, transactional_id)
            .create_with_context(Context::default())
            .map_err(client("create producer"))?;
        Ok(Self {
            inner,
            max_bytes: super::client::max_message_bytes(kafka),
            timeout: kafka.transaction_timeout,
            committed_max: BTreeMap::new(),
        })
    }

    /// Registers the transactional id, fencing any older producer with the same id and
    /// settling (committing or aborting) its open transaction.
    pub fn init(&self) -> Result<()> {
        self.inner
            .init_transactions(self.timeout)
            .map_err(client("init_transactions"))
    }

    pub fn begin(&self) -> Result<()> {
        if let Ok(mut f) = self.inner.context().failed.lock() {
            *f = None;
        }
        if let Ok(mut m) = self.inner.context().in_txn.lock() {
            m.clear();
        }
        self.inner
            .begin_transaction()
            .map_err(client("begin_transaction"))
    }

    /// Checks the size, then enqueues one record, waiting while librdkafka's queue is full.
    pub fn send(&self, topic: &str, key: Option<&[u8]>, value: &[u8]) -> Result<()> {
        self.send_to(topic, None, key, value)
    }

    /// Refuses a record over `message.max.bytes` before it is produced. Key + value is a lower
    /// bound of the record's size; the check keeps an oversized record from failing inside the
    /// transaction (which would make it abortable, again and again).
    pub fn check_size(&self, key: Option<&[u8]>, value: &[u8]) -> Result<()> {
        self.check_size_with(key, value, 0)
    }

    /// [`Producer::check_size`] with `headers` bytes of headers (name and value lengths).
    pub fn check_size_with(&self, key: Option<&[u8]>, value: &[u8], headers: usize) -> Result<()> {
        let size = value.len() + key.map_or(0, <[u8]>::len) + headers + RECORD_OVERHEAD;
        if size > self.max_bytes {
            return Err(Error::TooLarge {
                size,
                max: self.max_bytes,
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
        self.check_size_with(key, value.unwrap_or_default(), header_bytes)?;
        let mut owned = rdkafka::message::OwnedHeaders::new_with_capacity(headers.len());
        for (k, v) in headers {
            owned = owned.insert(rdkafka::message::Header {
                key: k,
                value: Some(*v),
            });
        }
        let mut record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic).headers(owned);
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
        self.check_size_with(key, value, header_bytes)?;
        let mut record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic).payload(value);
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
        self.check_size(key, value)?;
        let mut record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic).payload(value);
        if let Some(k) = key {
            record = record.key(k);
        }
        if let Some(p) = partition {
            record = record.partition(p);
        }
        self.enqueue(record)
    }

    /// Enqueues one record, waiting while librdkafka's queue is full.
    fn enqueue(&self, mut record: BaseRecord<'_, [u8], [u8]>) -> Result<()> {
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
                        max: self.max_bytes,
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
            .failed
            .lock()
            .ok()
            .and_then(|f| f.clone());
        failed.map_or(Ok(()), |e| Err(Error::Delivery(e)))
    }

    /// Adds the consumer group's offsets to the open transaction.
    pub fn send_offsets(
        &self,
        offsets: &[(Partition, NextOffset)],
        consumer: &Consumer,
    ) -> Result<()> {
        let mut tpl = TopicPartitionList::new();
        for (p, o) in offsets {
            tpl.add_partition_offset(&p.topic, p.partition, Offset::Offset(o.0))
                .map_err(client("send_offsets_to_transaction"))?;
        }
        let cgm = consumer.group_metadata()?;
        self.inner
            .send_offsets_to_transaction(&tpl, &cgm, self.timeout)
            .map_err(client("send_offsets_to_transaction"))
    }

    pub fn commit(&mut self) -> Result<()> {
        self.inner
            .commit_transaction(self.timeout)
            .map_err(client("commit_transaction"))?;
        if let Ok(m) = self.inner.context().in_txn.lock() {
            for (k, v) in m.iter() {
                let slot = self.committed_max.entry(k.clone()).or_insert(-1);
                *slot = (*slot).max(*v);
            }
        }
        Ok(())
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
        self.inner
            .abort_transaction(self.timeout)
            .map_err(client("abort_transaction"))
    }
}
