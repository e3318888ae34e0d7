//! A consumed message: what the runner reads of a record, through borrowing accessors only.

use rdkafka::message::{Headers, Message as _};

use crate::position::Partition;

/// A consumed Kafka message (the pipeline's own record, decoded, is
/// `pipeline::operator::Record`). Its bytes are read only through borrowing accessors, so the
/// runner never owns them: today they are copied out of librdkafka's buffer; the performance
/// work (#18) can let a batch borrow that buffer instead by changing this type alone.
#[derive(Debug, Clone)]
pub struct Message {
    pub partition: i32,
    pub offset: i64,
    topic: String,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    timestamp: Option<i64>,
    /// The record's headers (empty for most records, so no allocation).
    headers: Vec<(String, Vec<u8>)>,
}

impl Message {
    pub fn topic(&self) -> &str {
        &self.topic
    }

    pub fn key(&self) -> Option<&[u8]> {
        self.key.as_deref()
    }

    pub fn value(&self) -> Option<&[u8]> {
        self.value.as_deref()
    }

    /// The record's Kafka timestamp (create or log-append time), in ms since the epoch.
    pub fn timestamp(&self) -> Option<i64> {
        self.timestamp
    }

    /// The value of the first header named `name` (a header without a value reads as empty).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_slice())
    }

    /// Its topic and partition, as a task is named.
    pub fn topic_partition(&self) -> Partition {
        Partition {
            topic: self.topic.clone(),
            partition: self.partition,
        }
    }
}

/// A consumed record, copied out of librdkafka's buffer.
pub(super) fn record_of(m: &rdkafka::message::BorrowedMessage<'_>) -> Message {
    Message {
        topic: m.topic().to_string(),
        partition: m.partition(),
        offset: m.offset(),
        key: m.key().map(<[u8]>::to_vec),
        value: m.payload().map(<[u8]>::to_vec),
        timestamp: m.timestamp().to_millis(),
        headers: m
            .headers()
            .map(|hs| {
                hs.iter()
                    .map(|h| (h.key.to_string(), h.value.unwrap_or_default().to_vec()))
                    .collect()
            })
            .unwrap_or_default(),
    }
}
