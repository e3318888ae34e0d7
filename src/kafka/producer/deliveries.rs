//! The delivery reports of the transactional producer's records, by transaction.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::AtomicUsize;

use rdkafka::ClientContext;
use rdkafka::error::KafkaError;
use rdkafka::message::Message as _;
use rdkafka::producer::{DeliveryResult, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;

/// Why a record was not delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Undelivered {
    pub(super) message: String,
    /// Where it was bound, when the broker refused it for what it is (`INVALID_RECORD`,
    /// `INVALID_TIMESTAMP`): the same record would be refused again, whatever is retried.
    pub(super) refused_at: Option<(String, i32)>,
}

impl Undelivered {
    fn of(e: &KafkaError, topic: &str, partition: i32) -> Self {
        let refused = matches!(
            e.rdkafka_error_code(),
            Some(RDKafkaErrorCode::InvalidRecord | RDKafkaErrorCode::InvalidTimestamp)
        );
        Self {
            message: e.to_string(),
            refused_at: refused.then(|| (topic.to_string(), partition)),
        }
    }
}

/// The delivery reports of the open transaction: the first failure (inside a transaction it
/// makes the commit fail, and knowing it before the commit lets the pipeline abort at once),
/// and the highest offset delivered per partition, which becomes "committed" with it.
///
/// Every record carries the generation of the transaction it was sent in, and a report of an
/// earlier generation is ignored: an aborted transaction's purged records may report after the
/// next `begin`, and must not fail (or count towards) a transaction they were never part of.
#[derive(Debug, Default)]
pub(super) struct Deliveries {
    generation: usize,
    pub(super) failed: Option<Undelivered>,
    pub(super) in_txn: BTreeMap<(String, i32), i64>,
}

impl Deliveries {
    /// A new transaction: forgets the last one's reports; returns its generation.
    pub(super) fn begin(&mut self) -> usize {
        self.generation = self.generation.wrapping_add(1);
        self.failed = None;
        self.in_txn.clear();
        self.generation
    }

    /// One delivery report of a record sent in `generation`: where it landed, or why not.
    pub(super) fn report(
        &mut self,
        generation: usize,
        outcome: std::result::Result<(&str, i32, i64), Undelivered>,
    ) {
        if generation != self.generation {
            return;
        }
        match outcome {
            Ok((topic, partition, offset)) => {
                let slot = self
                    .in_txn
                    .entry((topic.to_string(), partition))
                    .or_insert(-1);
                *slot = (*slot).max(offset);
            }
            // the first failure, unless a record refused for what it is comes later: the
            // refusal decides what to do (stop), the others (purged when librdkafka failed
            // the transaction, timed out) only follow from it
            Err(e) => {
                let keep = self
                    .failed
                    .as_ref()
                    .is_some_and(|f| f.refused_at.is_some() || e.refused_at.is_none());
                if !keep {
                    self.failed = Some(e);
                }
            }
        }
    }
}

#[derive(Default)]
pub struct DeliveryContext {
    pub(super) deliveries: Mutex<Deliveries>,
    /// The open transaction's generation, stamped on every record sent (read per record
    /// without the lock).
    pub(super) generation: AtomicUsize,
    /// The last authentication or TLS failure librdkafka reported (it retries them forever).
    pub(super) refused: Mutex<Option<String>>,
}

impl ClientContext for DeliveryContext {
    fn error(&self, error: KafkaError, reason: &str) {
        tracing::error!(error = %error, reason, "librdkafka error");
        if matches!(
            error.rdkafka_error_code(),
            Some(RDKafkaErrorCode::Authentication | RDKafkaErrorCode::SSL)
        ) && let Ok(mut r) = self.refused.lock()
        {
            *r = Some(reason.to_string());
        }
    }
}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, generation: usize) {
        let outcome = match result {
            Ok(m) => Ok((m.topic(), m.partition(), m.offset())),
            Err((e, m)) => Err(Undelivered::of(e, m.topic(), m.partition())),
        };
        if let Ok(mut d) = self.deliveries.lock() {
            d.report(generation, outcome);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Deliveries, Undelivered};

    fn failure(message: &str) -> Undelivered {
        Undelivered {
            message: message.to_string(),
            refused_at: None,
        }
    }

    #[test]
    fn a_late_report_of_an_aborted_transaction_does_not_poison_the_next() {
        let mut d = Deliveries::default();
        let first = d.begin();
        d.report(first, Ok(("out", 0, 7)));
        // aborted; its purged records report only after the next begin
        let second = d.begin();
        d.report(first, Err(failure("Local: Purged in queue")));
        d.report(first, Ok(("out", 1, 99)));
        assert_eq!(d.failed, None);
        assert!(d.in_txn.is_empty(), "{:?}", d.in_txn);
        d.report(second, Ok(("out", 0, 8)));
        d.report(second, Err(failure("Broker: Message too large")));
        d.report(second, Err(failure("a later failure")));
        assert_eq!(
            d.failed.as_ref().map(|f| f.message.as_str()),
            Some("Broker: Message too large")
        );
        assert_eq!(d.in_txn.get(&("out".to_string(), 0)), Some(&8));
        // the next transaction starts clean
        let third = d.begin();
        assert_ne!(third, second);
        assert_eq!(d.failed, None);
        assert!(d.in_txn.is_empty());
    }

    #[test]
    fn a_refused_record_s_report_wins_over_the_purges_before_it() {
        let mut d = Deliveries::default();
        let g = d.begin();
        d.report(g, Err(failure("Local: Purged in queue")));
        let refused = Undelivered {
            message: "Broker: Broker failed to validate record".into(),
            refused_at: Some(("out".into(), 0)),
        };
        d.report(g, Err(refused.clone()));
        d.report(g, Err(failure("Local: Message timed out")));
        assert_eq!(d.failed, Some(refused));
    }

    #[test]
    fn a_record_the_broker_refuses_for_what_it_is_is_told_from_a_failed_delivery() {
        use rdkafka::error::KafkaError;
        use rdkafka::types::RDKafkaErrorCode as Code;
        for code in [Code::InvalidRecord, Code::InvalidTimestamp] {
            let u = Undelivered::of(&KafkaError::MessageProduction(code), "out", 3);
            assert_eq!(u.refused_at, Some(("out".to_string(), 3)), "{code:?}");
        }
        for code in [
            Code::MessageTimedOut,
            Code::PurgeQueue,
            Code::NotLeaderForPartition,
        ] {
            let u = Undelivered::of(&KafkaError::MessageProduction(code), "out", 3);
            assert_eq!(u.refused_at, None, "{code:?}");
        }
        let refused = crate::kafka::Error::Refused {
            topic: "out".into(),
            partition: 3,
            message: "Broker: Broker failed to validate record".into(),
        };
        assert_eq!(
            refused.txn_failure(),
            crate::checkpoint::protocol::TxnFailure::Fatal
        );
    }
}
