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
use rdkafka::types::RDKafkaErrorCode;

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
    #[error("record of {size} bytes exceeds {} ({max})", whose_limit(.topic.as_deref()))]
    TooLarge {
        size: usize,
        max: usize,
        /// The topic whose `max.message.bytes` it is; `None`: the client's `message.max.bytes`.
        topic: Option<String>,
    },
    #[error("a produced record was not delivered: {0}")]
    Delivery(String),
    /// The broker refused a record for what it is: retried, it would be refused again.
    #[error(
        "the broker refused records produced to {topic} [{partition}] ({message}). A topic refuses a record whose timestamp is further from the broker's clock than its message.timestamp.after.max.ms (one hour ahead by default) or message.timestamp.before.max.ms allow, and Flumen stamps its outputs with this host's clock: check it against the broker's (NTP). A compacted topic refuses a record without a key. Nothing of the transaction was committed; the daemon stops, since retrying would meet the same records"
    )]
    Refused {
        topic: String,
        partition: i32,
        message: String,
    },
    #[error("the consumer group metadata is not available (the consumer has not joined)")]
    NoGroupMetadata,
    /// The group's committed offsets could not be read as stable (read_committed) in time.
    #[error(
        "the committed offsets of group {group:?} could not be read within {after:?} ({source}): the group coordinator is unreachable, or a transaction's pending offsets hold them. If this repeats while the brokers are up, a transaction whose markers the broker never wrote may hang (seen after a broker restart: Kafka's transaction coordinator skips partitions it finds without a leader): `kafka-transactions.sh --bootstrap-server HOST:PORT find-hanging --broker-id N --max-transaction-timeout 1` lists it; before ending it with `kafka-transactions.sh abort`, see the README's \"Hanging transactions\" (aborting what the coordinator committed rolls back part of a committed transaction)"
    )]
    UnstableOffsets {
        group: String,
        after: std::time::Duration,
        source: KafkaError,
    },
    /// librdkafka's group handler stayed without a coordinator (left without brokers by a
    /// broker restart, seen in the chaos suite's broker kills): the pipeline restarts with a
    /// new consumer, which joins.
    #[error(
        "the consumer of group {group:?} has been without a group coordinator for {after:?} (librdkafka's group handler in state {state:?}, join state {join_state:?}; its broker connections: {brokers}); restarting the pipeline with a new consumer"
    )]
    NoCoordinator {
        group: String,
        after: std::time::Duration,
        state: String,
        join_state: String,
        brokers: String,
    },
    #[error("timed out after {after:?}: {op}")]
    Timeout {
        op: &'static str,
        after: std::time::Duration,
    },
    /// A transactional call did not return within its limit (librdkafka waits for a lost
    /// group coordinator without one: `producer/bounded.rs`). The producer is given up to
    /// the call's thread; a new one fences it.
    #[error(
        "kafka {op} did not return within {after:?}; its producer is given up (a new one fences it and aborts its transaction, never committed), and the pipeline restarts. {running} transactional call(s) of this process are still running"
    )]
    Stuck {
        op: &'static str,
        after: std::time::Duration,
        /// Calls still running on their own threads, this one included.
        running: usize,
    },
    /// A transactional call on a producer given up after a stuck call (`Stuck`): not made.
    #[error("kafka {op} not called: the producer was given up after a call of it did not return")]
    GivenUp { op: &'static str },
    /// The brokers refused this client's credentials or TLS handshake (a wrong password, an
    /// unknown CA): librdkafka retries such errors forever, so a call that times out while one
    /// is known is this error, not a timeout.
    #[error("kafka {op} failed: the brokers refused the connection: {reason}")]
    Unauthenticated { op: &'static str, reason: String },
}

pub type Result<T> = std::result::Result<T, Error>;

/// Whose limit a too-large record exceeds, for its error.
fn whose_limit(topic: Option<&str>) -> String {
    topic.map_or_else(
        || "message.max.bytes".to_string(),
        |t| format!("max.message.bytes of topic {t:?}"),
    )
}

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
            } => transaction_failure(
                Flags {
                    fatal: rd.is_fatal(),
                    abortable: rd.txn_requires_abort(),
                    retriable: rd.is_retriable(),
                },
                rd.code(),
            ),
            // a failed delivery inside a transaction makes it abortable
            Self::Delivery(_) => TxnFailure::Abortable,
            // the same records would be refused again after the rewind
            Self::Refused { .. } => TxnFailure::Fatal,
            // too many producers given up in this process: a fresh process, not one more
            Self::Stuck { running, .. } if *running > producer::MAX_STUCK => TxnFailure::Fatal,
            Self::Stuck { .. } | Self::GivenUp { .. } => TxnFailure::Broken,
            Self::Client { source, .. } if fenced_or_fatal(source) => TxnFailure::Fatal,
            Self::Client { .. }
            | Self::NoGroupMetadata
            | Self::UnstableOffsets { .. }
            | Self::NoCoordinator { .. }
            | Self::Timeout { .. } => TxnFailure::Retriable,
            Self::MissingTopic(_)
            | Self::PartitionCount { .. }
            | Self::TooLarge { .. }
            | Self::Unauthenticated { .. } => TxnFailure::Fatal,
        }
    }
}

impl Error {
    /// This instance's static consumer membership was taken by a join with the same
    /// `group.instance.id`: a newer instance's, or its own rejoin after its session expired
    /// (librdkafka issue 3437). Reported by a poll (fatal, `fenced_or_fatal`) or by the group
    /// refusing a transaction's offsets (abortable); `Producer::ownership` tells the two
    /// causes apart.
    pub fn is_static_member_fenced(&self) -> bool {
        matches!(self, Self::Client { source, .. }
            if source.rdkafka_error_code() == Some(RDKafkaErrorCode::FencedInstanceId))
    }
}

/// librdkafka's flags on a failed transactional call.
#[derive(Debug, Clone, Copy, Default)]
struct Flags {
    fatal: bool,
    abortable: bool,
    retriable: bool,
}

/// A failed transactional call by its flags and code; unflagged counts as fatal, as
/// librdkafka's documentation says.
fn transaction_failure(flags: Flags, code: RDKafkaErrorCode) -> TxnFailure {
    if flags.fatal && code == RDKafkaErrorCode::InvalidTransactionalState {
        // the coordinator lost track of this producer's transaction (it restarted mid-abort,
        // seen under broker kills); fencing says PRODUCER_FENCED or INVALID_PRODUCER_EPOCH
        TxnFailure::Broken
    } else if flags.fatal {
        TxnFailure::Fatal
    } else if flags.abortable {
        TxnFailure::Abortable
    } else if flags.retriable {
        TxnFailure::Retriable
    } else {
        TxnFailure::Fatal
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
    fn a_fatal_invalid_txn_state_breaks_the_producer_but_fencing_ends_the_process() {
        let fatal = Flags {
            fatal: true,
            ..Flags::default()
        };
        assert_eq!(
            transaction_failure(fatal, Code::InvalidTransactionalState),
            TxnFailure::Broken
        );
        for fenced in [
            Code::ProducerFenced,
            Code::Fenced,
            Code::InvalidProducerEpoch,
            Code::TransactionalIdAuthorizationFailed,
        ] {
            assert_eq!(transaction_failure(fatal, fenced), TxnFailure::Fatal);
        }
        let abortable = Flags {
            abortable: true,
            ..Flags::default()
        };
        assert_eq!(
            transaction_failure(abortable, Code::InvalidTransactionalState),
            TxnFailure::Abortable
        );
        assert_eq!(
            transaction_failure(Flags::default(), Code::Unknown),
            TxnFailure::Fatal
        );
    }

    #[test]
    fn a_stuck_call_breaks_its_producer_until_too_many_are_stuck() {
        let stuck = |running| Error::Stuck {
            op: "send_offsets_to_transaction",
            after: std::time::Duration::from_secs(62),
            running,
        };
        assert_eq!(stuck(1).txn_failure(), TxnFailure::Broken);
        assert_eq!(stuck(producer::MAX_STUCK).txn_failure(), TxnFailure::Broken);
        assert_eq!(
            stuck(producer::MAX_STUCK + 1).txn_failure(),
            TxnFailure::Fatal
        );
        let given_up = Error::GivenUp {
            op: "abort_transaction",
        };
        assert_eq!(given_up.txn_failure(), TxnFailure::Broken);
    }

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
