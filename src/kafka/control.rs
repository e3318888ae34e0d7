//! A pipeline's control topic (`<group_id>-control`, one partition): requests that must reach
//! every thread of every instance, which do not know each other (the cut of an online
//! savepoint, `pipeline/task/cut.rs`). Every thread reads it without a group, so every one
//! sees every request; what a request means is the pipeline's business, here it is bytes.

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::message::Message as _;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer as _};
use rdkafka::{Offset, TopicPartitionList};

use super::{Error, Result, client};
use crate::config::KafkaConfig;

const TIMEOUT: Duration = Duration::from_secs(10);

/// The control topic of the pipeline whose consumer group is `group_id`.
pub fn topic_of(group_id: &str) -> String {
    format!("{group_id}-control")
}

/// A thread's reader of the control topic, from the requests written in the last `since`.
pub struct ControlReader {
    consumer: BaseConsumer,
    /// What was there when it started, for the first `poll`.
    backlog: Vec<Vec<u8>>,
}

impl ControlReader {
    pub fn new(kafka: &KafkaConfig, topic: &str, since: Duration) -> Result<Self> {
        let consumer: BaseConsumer = client::reader(kafka)
            .set("enable.partition.eof", "false")
            .set("fetch.wait.max.ms", "100")
            .create()
            .map_err(client("create control reader"))?;
        let since_ms = crate::checkpoint::now_unix_ms()
            .saturating_sub(u64::try_from(since.as_millis()).unwrap_or(u64::MAX));
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(
            topic,
            0,
            Offset::Offset(i64::try_from(since_ms).unwrap_or(0)),
        )
        .map_err(client("assign control reader"))?;
        let found = consumer
            .offsets_for_times(tpl, TIMEOUT)
            .map_err(client("find control requests"))?;
        let mut first = None;
        for e in found.elements() {
            e.error().map_err(client("find control requests"))?;
            if let Offset::Offset(o) = e.offset()
                && o >= 0
            {
                first = Some(o);
            }
        }
        // no request that recent: from the end
        let mut start = TopicPartitionList::new();
        start
            .add_partition_offset(topic, 0, first.map_or(Offset::End, Offset::Offset))
            .map_err(client("assign control reader"))?;
        consumer
            .assign(&start)
            .map_err(client("assign control reader"))?;
        let backlog = match first {
            Some(from) => Self::backlog(&consumer, topic, from)?,
            None => Vec::new(),
        };
        Ok(Self { consumer, backlog })
    }

    /// The requests already there, read to the end (so that a request and its end, both
    /// past, are heard together rather than one poll apart).
    fn backlog(consumer: &BaseConsumer, topic: &str, from: i64) -> Result<Vec<Vec<u8>>> {
        let (_, end) = consumer
            .fetch_watermarks(topic, 0, TIMEOUT)
            .map_err(client("find control requests"))?;
        let deadline = std::time::Instant::now() + TIMEOUT;
        let mut out = Vec::new();
        let mut next = from;
        while next < end {
            if std::time::Instant::now() >= deadline {
                return Err(Error::Timeout {
                    op: "read the control topic's recent requests",
                    after: TIMEOUT,
                });
            }
            match consumer.poll(Duration::from_millis(100)) {
                Some(Ok(m)) => {
                    out.push(m.payload().map(<[u8]>::to_vec).unwrap_or_default());
                    next = m.offset() + 1;
                }
                Some(Err(e)) => tracing::warn!(error = %e, "control topic read failed; retried"),
                None => {}
            }
        }
        Ok(out)
    }

    /// The requests that arrived since the last call, in order; never waits.
    pub fn poll(&mut self) -> Vec<Vec<u8>> {
        let mut out = std::mem::take(&mut self.backlog);
        while let Some(next) = self.consumer.poll(Duration::ZERO) {
            match next {
                Ok(m) => out.push(m.payload().map(<[u8]>::to_vec).unwrap_or_default()),
                Err(e) => tracing::warn!(error = %e, "control topic read failed; retried"),
            }
        }
        out
    }
}

/// Whether the control topic `topic` exists (instances older than it never created one).
pub fn exists(kafka: &KafkaConfig, topic: &str) -> Result<bool> {
    let consumer: BaseConsumer = client::reader(kafka)
        .set("allow.auto.create.topics", "false")
        .create()
        .map_err(client("create control reader"))?;
    let metadata = consumer
        .fetch_metadata(Some(topic), TIMEOUT)
        .map_err(client("read control topic metadata"))?;
    Ok(metadata
        .topics()
        .iter()
        .any(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty()))
}

/// Writes one request to `topic` and waits until the brokers have it.
pub fn send(kafka: &KafkaConfig, topic: &str, request: &[u8]) -> Result<()> {
    let producer: BaseProducer = client::control_writer(kafka)
        .create()
        .map_err(client("create control writer"))?;
    producer
        .send(
            BaseRecord::<(), [u8]>::to(topic)
                .partition(0)
                .payload(request),
        )
        .map_err(|(e, _)| client("send control request")(e))?;
    producer
        .flush(TIMEOUT)
        .map_err(client("send control request"))?;
    if producer.in_flight_count() > 0 {
        return Err(Error::Timeout {
            op: "send control request",
            after: TIMEOUT,
        });
    }
    Ok(())
}
