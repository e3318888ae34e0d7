//! How large a record, and a batch, each topic a pipeline writes takes.
//!
//! The client refuses a record over its `message.max.bytes`; the broker refuses a *batch* over
//! the topic's `max.message.bytes`. A topic may allow less than the client (a topic set to
//! 64 KB beside librdkafka's 1,000,000 B): a record between the two limits, or a batch of many
//! small records over the topic's limit, was refused by the broker inside the transaction,
//! which made it abortable, and the rewind met the same records again, for ever. So each
//! record is checked against the smaller of the two limits for its topic before any effect of
//! its input (a too-large output follows the error policy), and the producer's `batch.size`
//! stays below the smallest limit of the topics it writes.

use std::collections::BTreeMap;

use crate::config::KafkaConfig;

/// What a batch costs beyond its records (Kafka's record batch header is 61 bytes), rounded up.
const BATCH_OVERHEAD: usize = 100;

/// librdkafka's default `batch.size`.
const DEFAULT_BATCH_SIZE: usize = 1_000_000;

/// The client's limit and the topics' own where smaller, by topic (a topic absent here has
/// only the client's; usually none is here, and the per-record check looks into an empty map).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    client: usize,
    topics: BTreeMap<String, usize>,
}

/// The limit a record is checked against, and whose it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Limit<'a> {
    pub(super) max: usize,
    /// The topic whose `max.message.bytes` it is; `None`: the client's `message.max.bytes`.
    pub(super) topic: Option<&'a str>,
}

impl Limits {
    /// The client's `message.max.bytes` alone (a producer that only fences, or a tool's).
    pub fn client(kafka: &KafkaConfig) -> Self {
        Self {
            client: super::super::client::max_message_bytes(kafka),
            topics: BTreeMap::new(),
        }
    }

    /// The client's limit and `topics`' `max.message.bytes`, those below it kept.
    pub fn with_topics(kafka: &KafkaConfig, mut topics: BTreeMap<String, usize>) -> Self {
        let client = Self::client(kafka);
        topics.retain(|_, max| *max < client.client);
        Self { topics, ..client }
    }

    /// The client's `message.max.bytes`.
    pub(super) fn client_max(&self) -> usize {
        self.client
    }

    /// The smaller of the client's limit and `topic`'s.
    pub(super) fn of<'a>(&self, topic: &'a str) -> Limit<'a> {
        match self.topics.get(topic) {
            Some(max) => Limit {
                max: *max,
                topic: Some(topic),
            },
            _ => Limit {
                max: self.client,
                topic: None,
            },
        }
    }

    /// The producer's `batch.size`: `configured` (librdkafka's default if unset), below every
    /// written topic's limit; `None` when no topic asks for less than `configured`.
    pub(super) fn batch_size(&self, configured: Option<usize>) -> Option<usize> {
        let configured = configured.unwrap_or(DEFAULT_BATCH_SIZE);
        let smallest = self.topics.values().copied().min()?;
        let fits = smallest.saturating_sub(BATCH_OVERHEAD).max(1);
        (fits < configured).then_some(fits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(topics: &[(&str, usize)]) -> Limits {
        let kafka = crate::kafka::client::tests::kafka(&[]);
        let topics = topics.iter().map(|(t, m)| ((*t).to_string(), *m)).collect();
        Limits::with_topics(&kafka, topics)
    }

    #[test]
    fn a_record_meets_the_smaller_of_its_topic_s_limit_and_the_client_s() {
        let l = limits(&[("small", 4_000), ("large", 8_000_000)]);
        assert_eq!(
            l.of("small"),
            Limit {
                max: 4_000,
                topic: Some("small")
            }
        );
        assert_eq!(
            l.of("large"),
            Limit {
                max: 1_000_000,
                topic: None
            }
        );
        assert_eq!(
            l.of("unknown"),
            Limit {
                max: 1_000_000,
                topic: None
            }
        );
    }

    #[test]
    fn batches_stay_below_the_smallest_topic_limit() {
        assert_eq!(
            limits(&[("small", 4_000), ("large", 8_000_000)]).batch_size(None),
            Some(3_900)
        );
        // no topic asks for less: librdkafka's own batch size stays
        assert_eq!(limits(&[("large", 8_000_000)]).batch_size(None), None);
        assert_eq!(limits(&[]).batch_size(None), None);
        // a configured batch size already below every limit stays too
        assert_eq!(limits(&[("small", 4_000)]).batch_size(Some(2_000)), None);
        assert_eq!(
            limits(&[("small", 4_000)]).batch_size(Some(16_384)),
            Some(3_900)
        );
    }
}
