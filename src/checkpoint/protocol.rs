//! The checkpoint protocol's decisions, as pure functions of observed facts. No I/O here.
//!
//! Checkpoint N, in order: barrier (stop intake) → flush the producer → snapshot every stateful
//! task → write the manifest → fsync files and directories → rename `chk-N.tmp` to `chk-N` →
//! `send_offsets_to_transaction` → `commit_transaction` → local `COMMITTED` mark → GC.
//! The commit is the only atomic point; everything before it may be repeated or discarded.

use std::collections::BTreeMap;

use super::tag::CommitTag;
use super::{CheckpointId, Manifest};
use crate::position::{NextOffset, Partition, PartitionOffset};

/// What to restore for one stateful partition at start or on assignment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Restore {
    /// The group has no committed offset and no snapshot that read nothing of this partition
    /// either: the task starts empty (snapshots at an offset without a commit are leftovers of
    /// an aborted attempt).
    Fresh,
    /// This checkpoint's snapshot is the state as of the committed offset.
    From(CheckpointId),
    /// Offsets were committed, but no snapshot matches them: starting would lose or double
    /// state. Refuse unless the operator explicitly accepts empty state.
    NoMatch {
        committed: NextOffset,
        newest_available: Option<(CheckpointId, Option<NextOffset>)>,
    },
    /// The group's commit names a checkpoint that cannot be restored here: not in this store,
    /// of another pipeline or writer, without a snapshot of the partition, or at another
    /// offset. Refuse: any other snapshot would lose or repeat what that checkpoint did.
    Missing(Refusal),
}

/// Why the checkpoint a commit names cannot be restored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub tag: CommitTag,
    pub committed: NextOffset,
    pub why: String,
}

/// The checkpoint a tagged commit names: `named` is that id's manifest in this store, if any,
/// with the offset of the partition's snapshot in it (`None`: it has none).
pub fn restore_named(
    tag: &CommitTag,
    committed: NextOffset,
    named: Option<(&Manifest, Option<Option<NextOffset>>)>,
) -> Restore {
    let why = match named {
        None => "it is not in the checkpoint directory".to_string(),
        Some((m, _)) if m.pipeline != tag.pipeline => {
            format!("the checkpoint there is of pipeline {:?}", m.pipeline)
        }
        Some((m, _)) if m.writer.as_ref().is_some_and(|w| *w != tag.writer) => format!(
            "the checkpoint there was written by {:?}",
            m.writer.as_deref().unwrap_or_default()
        ),
        Some((_, None)) => "it has no snapshot of this partition".to_string(),
        Some((_, Some(at))) if at != Some(committed) => format!(
            "its snapshot of this partition is at offset {}, the commit at {committed}",
            at.map_or_else(|| "none".to_string(), |o| o.to_string())
        ),
        Some(_) => return Restore::From(tag.checkpoint),
    };
    Restore::Missing(Refusal {
        tag: tag.clone(),
        committed,
        why,
    })
}

/// Picks the snapshot whose recorded offset equals the group's committed offset.
///
/// `candidates` holds `(checkpoint, offset the task's snapshot was taken at)` for every
/// checkpoint on disk that has a snapshot of this partition, in any order. The newest match
/// wins: after a crash between commit and local mark the newest is unmarked, which is expected.
pub fn choose_restore(
    committed: Option<NextOffset>,
    candidates: &[(CheckpointId, Option<NextOffset>)],
) -> Restore {
    let Some(committed) = committed else {
        // the task read nothing of its partition yet, but its state may hold another input (a
        // stream-stream join buffers the other stream there, whose offsets did commit): the
        // newest snapshot that read nothing of it either (candidates agree with every
        // committed offset)
        return candidates
            .iter()
            .filter(|(_, offset)| offset.is_none())
            .map(|(id, _)| *id)
            .max()
            .map_or(Restore::Fresh, Restore::From);
    };
    let best = candidates
        .iter()
        .filter(|(_, offset)| *offset == Some(committed))
        .map(|(id, _)| *id)
        .max();
    match best {
        Some(id) => Restore::From(id),
        None => Restore::NoMatch {
            committed,
            newest_available: candidates.iter().max_by_key(|(id, _)| *id).copied(),
        },
    }
}

/// Whether a checkpoint's commit can be the group's current one: every offset it committed
/// equals the group's committed offset, for the partitions in `committed` (others are not
/// known here). A checkpoint whose commit failed or never ran differs somewhere, unless it moved
/// nothing, and then its state is its predecessor's.
pub fn consistent(
    checkpoint_offsets: &[PartitionOffset],
    committed: &BTreeMap<Partition, Option<NextOffset>>,
) -> bool {
    checkpoint_offsets.iter().all(|o| {
        let p = Partition {
            topic: o.topic.clone(),
            partition: o.partition,
        };
        committed.get(&p).is_none_or(|c| *c == Some(o.next_offset))
    })
}

/// How a failed transactional call is classified (from librdkafka's error flags).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnFailure {
    /// The call may be repeated; for `commit_transaction` the outcome is unknown.
    Retriable,
    /// The transaction must be aborted; the input is rewound to the last checkpoint.
    Abortable,
    /// This producer is unusable, but no other instance took its transactional id over (a
    /// fatal error that is not fencing: INVALID_TXN_STATE from a coordinator that restarted
    /// mid-abort; or a call of it that never returned was given up). Nothing can be aborted
    /// with it: a new incarnation's producer settles the transaction by rule 2, as after a
    /// commit of unknown outcome.
    Broken,
    /// The producer is fenced, or fatally misconfigured: the process must exit.
    Fatal,
}

/// What to do after `commit_transaction` failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitAction {
    /// Call `commit_transaction` again: safe, and the only safe thing while the outcome is open.
    Retry,
    /// The outcome is still unknown after the retries: drop the producer WITHOUT aborting and
    /// restart the pipeline; `init_transactions` then settles the transaction and the committed
    /// offsets say which checkpoint won (never abort after an unknown outcome).
    RestartWithoutAbort,
    /// The broker says the transaction cannot commit: abort it, restore the previous
    /// checkpoint, seek to its offsets.
    AbortAndRestore,
    /// Exit non-zero; a supervisor restarts the daemon, which fences this incarnation.
    Exit,
}

pub fn on_commit_failure(failure: TxnFailure, attempt: u32, max_retries: u32) -> CommitAction {
    match failure {
        TxnFailure::Retriable if attempt < max_retries => CommitAction::Retry,
        TxnFailure::Retriable | TxnFailure::Broken => CommitAction::RestartWithoutAbort,
        TxnFailure::Abortable => CommitAction::AbortAndRestore,
        TxnFailure::Fatal => CommitAction::Exit,
    }
}

/// Where in a checkpoint's way a transactional call failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Before `commit_transaction`: the flush, the timers' and windows' outputs,
    /// `send_offsets_to_transaction`. `written`: the checkpoint whose snapshot is on disk, if
    /// it got that far.
    BeforeCommit { written: Option<CheckpointId> },
    /// `commit_transaction` of checkpoint `id`, attempt `attempt` of at most `retries` more.
    Commit {
        id: CheckpointId,
        attempt: u32,
        retries: u32,
    },
    /// `abort_transaction`: on a revoke, or after an abortable failure.
    Abort,
}

/// What the runner does after a failed transactional call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Call `commit_transaction` again (its outcome is unknown; never abort then).
    RetryCommit,
    /// Abort; delete checkpoint `delete` (written, never committed: no restore may pick it);
    /// restore every task from the checkpoint the group's commits name; seek there; go on.
    AbortAndRewind { delete: Option<CheckpointId> },
    /// Restart the incarnation. No commit was attempted, so the next `init_transactions`
    /// aborting the open transaction loses nothing.
    Restart,
    /// Restart WITHOUT aborting: the commit's outcome is unknown; the next
    /// `init_transactions` settles it and the group's commits name the winner (rule 3).
    RestartWithoutAbort,
    /// Exit non-zero: fenced or fatal, an in-process restart would be fenced again.
    Exit,
}

/// The protocol's answer to a failure of `failure`'s class in `phase`.
pub fn after_failure(phase: Phase, failure: TxnFailure) -> Action {
    match (phase, failure) {
        (_, TxnFailure::Fatal) => Action::Exit,
        (
            Phase::Commit {
                id,
                attempt,
                retries,
            },
            failure,
        ) => match on_commit_failure(failure, attempt, retries) {
            CommitAction::Retry => Action::RetryCommit,
            CommitAction::RestartWithoutAbort => Action::RestartWithoutAbort,
            CommitAction::AbortAndRestore => Action::AbortAndRewind { delete: Some(id) },
            CommitAction::Exit => Action::Exit,
        },
        (Phase::BeforeCommit { written }, TxnFailure::Abortable) => {
            Action::AbortAndRewind { delete: written }
        }
        (Phase::BeforeCommit { .. } | Phase::Abort, _) => Action::Restart,
    }
}

/// The id for the next checkpoint: above every id on disk, so a leftover of a crashed attempt
/// is never overwritten or confused with a new one.
pub fn next_id(existing: &[CheckpointId], restored: Option<CheckpointId>) -> CheckpointId {
    let top = existing
        .iter()
        .copied()
        .chain(restored)
        .max()
        .map_or(0, |id| id.0);
    CheckpointId(top + 1)
}

/// Which checkpoints to delete after `latest` committed: all but the newest `retain` at or
/// below it, and but those the group's commits still `named` (partitions that moved to
/// another writer restore from them until it commits). Anything newer than `latest` is a
/// leftover and goes too.
pub fn to_delete(
    existing: &[CheckpointId],
    latest: CheckpointId,
    retain: usize,
    named: &[CheckpointId],
) -> Vec<CheckpointId> {
    let mut kept: Vec<CheckpointId> = existing
        .iter()
        .copied()
        .filter(|id| *id <= latest)
        .collect();
    kept.sort_unstable_by(|a, b| b.cmp(a));
    let keep: Vec<CheckpointId> = kept.into_iter().take(retain.max(1)).collect();
    let mut out: Vec<CheckpointId> = existing
        .iter()
        .copied()
        .filter(|id| !(keep.contains(id) || (named.contains(id) && *id <= latest)))
        .collect();
    out.sort_unstable();
    out
}

#[cfg(test)]
mod model;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_checkpoint_whose_every_offset_is_committed_is_consistent() {
        let po = |t: &str, p: i32, o: i64| PartitionOffset {
            topic: t.into(),
            partition: p,
            next_offset: NextOffset(o),
        };
        let part = |t: &str, p: i32| Partition {
            topic: t.into(),
            partition: p,
        };
        let committed = BTreeMap::from([
            (part("in", 0), Some(NextOffset(10))),
            (part("rep", 0), Some(NextOffset(7))),
        ]);
        assert!(consistent(&[po("in", 0, 10), po("rep", 0, 7)], &committed));
        // a restore checkpoint whose commit failed: the repartition offset matches (lag 0),
        // the source offset does not
        assert!(!consistent(&[po("in", 0, 3), po("rep", 0, 7)], &committed));
        // partitions not assigned here are not judged
        assert!(consistent(&[po("in", 0, 10), po("in", 1, 99)], &committed));
        assert!(!consistent(
            &[po("in", 0, 10)],
            &BTreeMap::from([(part("in", 0), None)])
        ));
    }
    use proptest::prelude::*;

    fn c(id: u64, off: Option<i64>) -> (CheckpointId, Option<NextOffset>) {
        (CheckpointId(id), off.map(NextOffset))
    }

    #[test]
    fn no_committed_offset_is_a_fresh_start_even_with_leftover_snapshots() {
        assert_eq!(choose_restore(None, &[c(1, Some(10))]), Restore::Fresh);
    }

    #[test]
    fn no_committed_offset_restores_a_snapshot_that_read_nothing_either() {
        // its state holds another input, whose offsets did commit
        assert_eq!(
            choose_restore(None, &[c(1, None), c(3, None), c(2, Some(10))]),
            Restore::From(CheckpointId(3))
        );
    }

    #[test]
    fn the_newest_snapshot_at_the_committed_offset_wins() {
        let cands = [
            c(1, Some(5)),
            c(2, Some(10)),
            c(3, Some(10)),
            c(4, Some(12)),
        ];
        assert_eq!(
            choose_restore(Some(NextOffset(10)), &cands),
            Restore::From(CheckpointId(3))
        );
    }

    #[test]
    fn a_committed_offset_without_a_snapshot_is_refused() {
        let cands = [c(1, Some(5)), c(2, Some(7))];
        assert_eq!(
            choose_restore(Some(NextOffset(6)), &cands),
            Restore::NoMatch {
                committed: NextOffset(6),
                newest_available: Some(c(2, Some(7)))
            }
        );
    }

    #[test]
    fn gc_keeps_what_a_commit_elsewhere_still_names() {
        let ids: Vec<_> = (1..=6).map(CheckpointId).collect();
        // a partition that moved to another writer still names 2 until that writer commits
        assert_eq!(
            to_delete(&ids, CheckpointId(5), 2, &[CheckpointId(2)]),
            [1, 3, 6].map(CheckpointId)
        );
        assert_eq!(
            to_delete(&ids, CheckpointId(5), 2, &[]),
            [1, 2, 3, 6].map(CheckpointId)
        );
    }

    #[test]
    fn an_unknown_commit_outcome_is_never_aborted() {
        for attempt in 0..10 {
            let a = on_commit_failure(TxnFailure::Retriable, attempt, 3);
            assert_ne!(a, CommitAction::AbortAndRestore);
        }
        assert_eq!(
            on_commit_failure(TxnFailure::Retriable, 3, 3),
            CommitAction::RestartWithoutAbort
        );
        assert_eq!(
            on_commit_failure(TxnFailure::Abortable, 0, 3),
            CommitAction::AbortAndRestore
        );
        assert_eq!(
            on_commit_failure(TxnFailure::Fatal, 0, 3),
            CommitAction::Exit
        );
        // a broken producer cannot retry, and must not abort an outcome it does not know
        assert_eq!(
            on_commit_failure(TxnFailure::Broken, 0, 3),
            CommitAction::RestartWithoutAbort
        );
    }

    proptest! {
        #[test]
        fn restore_never_picks_a_snapshot_at_another_offset(
            committed in proptest::option::of(0i64..20),
            cands in proptest::collection::vec((0u64..50, proptest::option::of(0i64..20)), 0..12),
        ) {
            let cands: Vec<_> = cands.into_iter().map(|(i, o)| c(i, o)).collect();
            match choose_restore(committed.map(NextOffset), &cands) {
                Restore::Fresh => {
                    prop_assert!(committed.is_none());
                    prop_assert!(!cands.iter().any(|(_, o)| o.is_none()));
                }
                Restore::From(id) => {
                    prop_assert!(cands.iter().any(|(i, o)| *i == id && *o == committed.map(NextOffset)));
                    prop_assert!(!cands.iter().any(|(i, o)| *i > id && *o == committed.map(NextOffset)));
                }
                Restore::Missing(_) => prop_assert!(false, "no tag, nothing named"),
                Restore::NoMatch { .. } => {
                    prop_assert!(committed.is_some());
                    prop_assert!(!cands.iter().any(|(_, o)| *o == committed.map(NextOffset)));
                }
            }
        }

        #[test]
        fn next_id_is_above_everything(ids in proptest::collection::vec(0u64..1000, 0..10), restored in proptest::option::of(0u64..1000)) {
            let ids: Vec<_> = ids.into_iter().map(CheckpointId).collect();
            let next = next_id(&ids, restored.map(CheckpointId));
            prop_assert!(ids.iter().all(|i| *i < next));
            prop_assert!(restored.is_none_or(|r| r < next.0));
        }

        #[test]
        fn gc_keeps_the_latest_and_retain_many(ids in proptest::collection::btree_set(0u64..100, 1..20), retain in 1usize..5) {
            let ids: Vec<_> = ids.into_iter().map(CheckpointId).collect();
            let latest = *ids.iter().max().unwrap();
            let deleted = to_delete(&ids, latest, retain, &[]);
            prop_assert!(!deleted.contains(&latest));
            prop_assert_eq!(ids.len() - deleted.len(), retain.min(ids.len()));
        }
    }
}
