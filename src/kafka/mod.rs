//! Everything that touches rdkafka (and so librdkafka): client settings ([`client`]), the
//! transactional producer ([`producer`]), the group consumer with rebalance events
//! ([`consumer`]), topic administration ([`admin`]), group-less readers ([`reader`]) and the
//! pipeline's control topic ([`control`]). No other module imports rdkafka.
//!
//! Every call here blocks; callers run them on the pipeline's own thread, never on the async
//! runtime.

pub mod admin;
pub mod client;
pub mod consumer;
pub mod control;
pub mod producer;
pub mod reader;

use rdkafka::error::KafkaError;

use crate::checkpoint::protocol::TxnFailure;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kafka {op} failed: {source}")]
    Client {
        op: &'static str,
        source: KafkaError,
    },
    #[error("topic {0:?} does not exist")]
    MissingTopic(String),
    #[error("topic {topic:?} has {actual} partitions, but {expected} are needed")]
    PartitionCount {
        topic: String,
        expected: i32,
        actual: i32,
    },
    #[error("record of {size} bytes exceeds message.max.bytes ({max})")]
    TooLarge { size: usize, max: usize },
    #[error("a produced record was not delivered: {0}")]
    Delivery(String),
    #[error("the consumer group metadata is not available (the consumer has not joined)")]
    NoGroupMetadata,
    #[error("timed out after {after:?}: {op}")]
    Timeout {
        op: &'static str,
        after: std::time::Duration,
    },
    /// The brokers refused this client's credentials or TLS handshake (a wrong password, an
    /// unknown CA): librdkafka retries such errors forever, so a call that times out while one
    /// is known is this error, not a timeout.
    #[error("kafka {op} failed: the brokers refused the connection: {reason}")]
    Unauthenticated { op: &'static str, reason: String },
}

pub type Result<T> = std::result::Result<T, Error>;

pub(crate) fn client(op: &'static str) -> impl FnOnce(KafkaError) -> Error {
    move |source| Error::Client { op, source }
}

impl Error {
    /// How a failed transactional call must be handled (librdkafka's error flags; anything
    /// unflagged counts as fatal, as librdkafka's documentation says).
    pub fn txn_failure(&self) -> TxnFailure {
        match self {
            Self::Client {
                source: KafkaError::Transaction(rd),
                ..
            } => {
                if rd.is_fatal() {
                    TxnFailure::Fatal
                } else if rd.txn_requires_abort() {
                    TxnFailure::Abortable
                } else if rd.is_retriable() {
                    TxnFailure::Retriable
                } else {
                    TxnFailure::Fatal
                }
            }
            // a failed delivery inside a transaction makes it abortable
            Self::Delivery(_) => TxnFailure::Abortable,
            Self::Client { source, .. } if fenced_or_fatal(source) => TxnFailure::Fatal,
            Self::Client { .. } | Self::NoGroupMetadata | Self::Timeout { .. } => {
                TxnFailure::Retriable
            }
            Self::MissingTopic(_)
            | Self::PartitionCount { .. }
            | Self::TooLarge { .. }
            | Self::Unauthenticated { .. } => TxnFailure::Fatal,
        }
    }
}

/// A client error (of a produce, a poll, any call) after which this process must not go on:
/// librdkafka's producer is in its fatal state, or this instance was fenced by a newer one with
/// the same transactional id or `group.instance.id` (a zombie after a pause). Restarting the
/// pipeline in-process would call `init_transactions` and join the group again, fencing the
/// new owner back (the chaos suite's zombie rounds ping-ponged so between two instances).
fn fenced_or_fatal(e: &KafkaError) -> bool {
    use rdkafka::types::RDKafkaErrorCode as Code;
    // librdkafka's only fatal consumer error is a fenced static member
    matches!(e, KafkaError::MessageConsumptionFatal(_))
        || matches!(
            e.rdkafka_error_code(),
            Some(
                Code::Fatal
                    | Code::Fenced
                    | Code::FencedInstanceId
                    | Code::ProducerFenced
                    | Code::InvalidProducerEpoch
            )
        )
}

#[cfg(test)]
mod tests {
    use rdkafka::types::RDKafkaErrorCode as Code;

    use super::*;

    #[test]
    fn a_fenced_or_fatal_client_error_is_fatal_whatever_the_call() {
        let client = |source| Error::Client {
            op: "produce",
            source,
        };
        for fatal in [
            KafkaError::MessageProduction(Code::Fatal),
            KafkaError::MessageConsumptionFatal(Code::FencedInstanceId),
            KafkaError::MessageConsumption(Code::FencedInstanceId),
            KafkaError::MessageProduction(Code::ProducerFenced),
            KafkaError::Global(Code::Fenced),
        ] {
            assert_eq!(client(fatal).txn_failure(), TxnFailure::Fatal);
        }
        for transient in [
            KafkaError::MessageProduction(Code::QueueFull),
            KafkaError::MessageConsumption(Code::BrokerTransportFailure),
            KafkaError::Global(Code::AllBrokersDown),
        ] {
            assert_eq!(client(transient).txn_failure(), TxnFailure::Retriable);
        }
    }
}
