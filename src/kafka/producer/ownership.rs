//! Whether a producer still owns its transactional id, asked without fencing anyone.
//!
//! librdkafka's static consumer can be fenced by its own rejoin: its session expires (a
//! network outage longer than `session.timeout.ms`), it joins again with the same
//! `group.instance.id`, and a late answer to its old membership says `FencedInstanceId`
//! (librdkafka issue 3437). A newer instance with the same id says the same. A newer
//! instance runs `init_transactions` before it joins the group (rule 2), so its existence
//! shows in this producer's epoch: the transaction coordinator refuses it. `init_transactions`
//! would answer too, but by fencing the newer instance; the probe here asks by calls that
//! do not bump the epoch (librdkafka's own KIP-360 bump after an unknown producer id
//! aside).

use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode as Code;

use super::Producer;
use crate::kafka::Error;
use crate::kafka::consumer::Consumer;
use crate::position::{NextOffset, Partition};

/// The probe transaction's offset metadata (it is never committed).
const PROBE_TAG: &str = "flumen:ownership-probe";

/// The answer of [`Producer::ownership`].
#[derive(Debug)]
pub enum Ownership {
    /// The coordinator accepted this producer's epoch: no newer instance has registered the
    /// transactional id.
    Owner,
    /// The epoch was bumped since this producer's `init_transactions` (a newer instance, a
    /// peer fencing a writer that left the group, the coordinator aborting a transaction
    /// that outlived its timeout), or librdkafka's producer is in its fatal state.
    Lost(Error),
    /// No answer (a timeout, a broker away, a refusal that came before the coordinator):
    /// ownership cannot be told.
    Unknown(Error),
}

/// What the probe's offsets in the transaction tell.
#[derive(Debug, PartialEq, Eq)]
enum Sent {
    /// The transaction coordinator took the offsets at this producer's epoch.
    Accepted,
    Lost,
    Unknown,
}

impl Producer {
    /// Whether this producer's epoch is still its transactional id's current one: a
    /// transaction holding one offset of the group (`probe`), whose AddOffsetsToTxn the
    /// transaction coordinator accepts only at the current epoch, then aborted. Nothing here
    /// commits it: after a crash in between, the next `init_transactions` or the transaction
    /// timeout aborts it. `probe` should be a partition the group never reads (its control
    /// topic): on a broker without KIP-890's verification, a TxnOffsetCommit delayed past the
    /// abort could stay pending for the producer id's next commit. The group coordinator may
    /// refuse the offset itself (this consumer's membership is gone); that refusal comes after
    /// the transaction coordinator's answer. No transaction may be open.
    pub fn ownership(&self, probe: &(Partition, NextOffset), consumer: &Consumer) -> Ownership {
        if let Err(e) = self.begin() {
            return match judge(&e) {
                Sent::Lost => Ownership::Lost(e),
                _ => Ownership::Unknown(e),
            };
        }
        let sent = self.send_offsets(std::slice::from_ref(probe), PROBE_TAG, consumer);
        let verdict = match &sent {
            Ok(()) => Sent::Accepted,
            Err(e) => judge(e),
        };
        let aborted = self.abort();
        match (verdict, sent, aborted) {
            (Sent::Lost, Err(e), _) => Ownership::Lost(e),
            (Sent::Unknown, Err(e), _) => Ownership::Unknown(e),
            (_, _, Ok(())) => Ownership::Owner,
            // the abort's EndTxn is judged at the epoch too
            (_, _, Err(e)) if judge(&e) == Sent::Lost => Ownership::Lost(e),
            (_, _, Err(e)) => Ownership::Unknown(e),
        }
    }
}

fn judge(e: &Error) -> Sent {
    let Error::Client { source, .. } = e else {
        // stuck, given up, no group metadata: no answer from the coordinator
        return Sent::Unknown;
    };
    let fatal = matches!(source, KafkaError::Transaction(rd) if rd.is_fatal());
    judge_code(source.rdkafka_error_code(), fatal)
}

/// A failed send of the probe's offsets by its code and librdkafka's fatal flag.
fn judge_code(code: Option<Code>, fatal: bool) -> Sent {
    match code {
        Some(Code::ProducerFenced | Code::InvalidProducerEpoch | Code::Fenced) => Sent::Lost,
        _ if fatal => Sent::Lost,
        // only the group coordinator's TxnOffsetCommit answers so, and librdkafka sends it
        // once the transaction coordinator has accepted AddOffsetsToTxn at this epoch
        Some(
            Code::UnknownMemberId
            | Code::IllegalGeneration
            | Code::FencedInstanceId
            | Code::RebalanceInProgress
            | Code::StaleMemberEpoch,
        ) => Sent::Accepted,
        _ => Sent::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_newer_epoch_or_a_fatal_producer_is_lost_ownership() {
        for code in [
            Code::ProducerFenced,
            Code::InvalidProducerEpoch,
            Code::Fenced,
        ] {
            assert_eq!(judge_code(Some(code), false), Sent::Lost, "{code:?}");
        }
        assert_eq!(judge_code(Some(Code::FencedInstanceId), true), Sent::Lost);
        assert_eq!(judge_code(None, true), Sent::Lost);
    }

    #[test]
    fn the_group_refusing_the_offsets_comes_after_the_epoch_was_accepted() {
        for code in [
            Code::UnknownMemberId,
            Code::IllegalGeneration,
            Code::FencedInstanceId,
            Code::RebalanceInProgress,
            Code::StaleMemberEpoch,
        ] {
            assert_eq!(judge_code(Some(code), false), Sent::Accepted, "{code:?}");
        }
    }

    #[test]
    fn anything_else_tells_nothing() {
        for code in [
            Code::RequestTimedOut,
            Code::NotCoordinator,
            Code::GroupAuthorizationFailed,
            Code::BrokerTransportFailure,
            Code::State,
        ] {
            assert_eq!(judge_code(Some(code), false), Sent::Unknown, "{code:?}");
        }
        assert_eq!(judge_code(None, false), Sent::Unknown);
    }
}
