//! A model-based test of the checkpoint protocol. A keyed count over one partition, whose timer
//! ("tick") sends every key's count out and zeroes it, runs against a model of the broker (one
//! transaction at a time; commits whose outcome is unknown and later turn out committed or
//! aborted; fencing, after which the next incarnation's `init_transactions` aborts what is
//! open) and of the checkpoint store (a snapshot written before its commit, garbage collected
//! after a later one). Failures and crashes are drawn at every step of a checkpoint; each
//! failure is answered by `protocol::after_failure`, each restore chosen by
//! `checkpoint::choose`, as the runner does.
//!
//! Asserted: every restore takes the checkpoint the group's commit names, and the committed
//! outputs, summed per key, are exactly the input's counts (no record lost, none twice).

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::{
    Action, Phase, Restore, TxnFailure, after_failure, choose_restore, next_id, to_delete,
};
use crate::checkpoint::tag::CommitTag;
use crate::checkpoint::{
    CheckpointId, GroupCommit, MANIFEST_FORMAT_VERSION, Manifest, TaskSnapshot,
};
use crate::position::{NextOffset, Partition, PartitionOffset};

const PIPELINE: &str = "model";
const WRITER: &str = "model-0";
/// Retries of a commit whose outcome is unknown (the runner's `COMMIT_RETRIES`).
const RETRIES: u32 = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    None,
    /// `send_offsets_to_transaction` fails, abortable.
    AbortableBeforeCommit,
    /// `commit_transaction` fails, abortable.
    AbortableAtCommit,
    /// Every commit attempt times out; the broker had committed the first.
    UnknownCommitted,
    /// Every commit attempt times out; the broker never committed.
    UnknownAborted,
    /// Another incarnation fenced this producer.
    Fenced,
    /// The producer broke (a fatal error that is not fencing) before the commit, or its
    /// `send_offsets_to_transaction` never returned and it was given up (`kafka::Error::Stuck`).
    BrokenBeforeCommit,
    /// The producer broke at the commit; the broker had committed.
    BrokenCommitted,
    /// The producer broke at the commit; the broker never committed.
    BrokenAborted,
    CrashAfterSnapshot,
    CrashBeforeCommit,
    /// The commit succeeded; the process died before its garbage collection.
    CrashAfterCommit,
}

#[derive(Debug, Clone)]
enum Op {
    Process(usize),
    Tick,
    Crash,
    Checkpoint(Fault),
}

type Counts = BTreeMap<u8, u64>;

type Chooser =
    fn(&BTreeMap<CheckpointId, Manifest>, &Partition, &BTreeMap<Partition, GroupCommit>) -> Restore;

/// The group's commit, the committed outputs, and the open transaction.
#[derive(Default)]
struct Broker {
    commit: Option<(i64, CheckpointId)>,
    outputs: Vec<(u8, u64)>,
    open: Vec<(u8, u64)>,
    open_offsets: Option<(i64, CheckpointId)>,
}

impl Broker {
    fn commit(&mut self) {
        self.outputs.append(&mut self.open);
        if let Some(c) = self.open_offsets.take() {
            self.commit = Some(c);
        }
    }

    fn abort(&mut self) {
        self.open.clear();
        self.open_offsets = None;
    }

    fn group_commits(&self) -> BTreeMap<Partition, GroupCommit> {
        self.commit
            .map(|(offset, id)| {
                let commit = GroupCommit {
                    offset: Some(NextOffset(offset)),
                    tag: Some(CommitTag::new(id, PIPELINE, WRITER)),
                };
                (partition(), commit)
            })
            .into_iter()
            .collect()
    }
}

struct World<'a> {
    input: &'a [u8],
    broker: Broker,
    manifests: BTreeMap<CheckpointId, Manifest>,
    snapshots: BTreeMap<CheckpointId, Counts>,
    state: Counts,
    position: i64,
    retain: usize,
    choose: Chooser,
}

fn partition() -> Partition {
    Partition {
        topic: "in".into(),
        partition: 0,
    }
}

fn manifest(id: CheckpointId, position: i64) -> Manifest {
    let p = partition();
    Manifest {
        format_version: MANIFEST_FORMAT_VERSION,
        checkpoint: id,
        pipeline: PIPELINE.into(),
        created_unix_ms: 0,
        writer: Some(WRITER.into()),
        restored_from: None,
        offsets: vec![PartitionOffset {
            topic: p.topic.clone(),
            partition: p.partition,
            next_offset: NextOffset(position),
        }],
        tasks: vec![TaskSnapshot {
            topic: p.topic,
            partition: p.partition,
            next_offset: Some(NextOffset(position)),
            dir: String::new(),
            files: Vec::new(),
        }],
    }
}

impl<'a> World<'a> {
    fn new(input: &'a [u8], retain: usize, choose: Chooser) -> Self {
        Self {
            input,
            broker: Broker::default(),
            manifests: BTreeMap::new(),
            snapshots: BTreeMap::new(),
            state: Counts::new(),
            position: 0,
            retain,
            choose,
        }
    }

    /// Restores the task from the checkpoint chosen for the group's commit, at its offset.
    fn restore(&mut self) -> Result<(), String> {
        let commits = self.broker.group_commits();
        match (self.choose)(&self.manifests, &partition(), &commits) {
            Restore::Fresh => {
                self.state = Counts::new();
                self.position = 0;
            }
            Restore::From(id) => {
                let (offset, named) = self.broker.commit.ok_or("restored without a commit")?;
                if id != named {
                    return Err(format!("restored {id}, the commit names {named}"));
                }
                self.state = self.snapshots.get(&id).cloned().ok_or("no snapshot")?;
                self.position = offset;
            }
            refused => return Err(format!("refused to start: {refused:?}")),
        }
        Ok(())
    }

    /// A new incarnation: its `init_transactions` aborts an open transaction.
    fn restart(&mut self) -> Result<(), String> {
        self.broker.abort();
        self.restore()
    }

    fn act(&mut self, action: Action) -> Result<(), String> {
        match action {
            Action::AbortAndRewind { delete } => {
                self.broker.abort();
                if let Some(id) = delete {
                    self.manifests.remove(&id);
                    self.snapshots.remove(&id);
                }
                self.restore()
            }
            Action::Restart | Action::RestartWithoutAbort | Action::Exit => self.restart(),
            Action::RetryCommit => Err("a retry outside the commit loop".into()),
        }
    }

    fn apply(&mut self, op: &Op) -> Result<(), String> {
        match op {
            Op::Process(n) => {
                for _ in 0..*n {
                    let Some(key) = usize::try_from(self.position)
                        .ok()
                        .and_then(|i| self.input.get(i))
                    else {
                        break;
                    };
                    *self.state.entry(*key).or_default() += 1;
                    self.position += 1;
                }
                Ok(())
            }
            Op::Tick => {
                for (key, count) in &mut self.state {
                    if *count > 0 {
                        self.broker.open.push((*key, *count));
                        *count = 0;
                    }
                }
                Ok(())
            }
            Op::Crash => self.restart(),
            Op::Checkpoint(fault) => self.checkpoint(*fault),
        }
    }

    fn checkpoint(&mut self, fault: Fault) -> Result<(), String> {
        let ids: Vec<CheckpointId> = self.manifests.keys().copied().collect();
        let id = next_id(&ids, None);
        self.manifests.insert(id, manifest(id, self.position));
        self.snapshots.insert(id, self.state.clone());
        if fault == Fault::CrashAfterSnapshot {
            return self.restart();
        }
        self.broker.open_offsets = Some((self.position, id));
        let commit = |attempt| Phase::Commit {
            id,
            attempt,
            retries: RETRIES,
        };
        match fault {
            Fault::AbortableBeforeCommit => {
                let written = Some(id);
                self.act(after_failure(
                    Phase::BeforeCommit { written },
                    TxnFailure::Abortable,
                ))
            }
            Fault::CrashBeforeCommit => self.restart(),
            Fault::AbortableAtCommit => self.act(after_failure(commit(0), TxnFailure::Abortable)),
            Fault::Fenced => self.act(after_failure(commit(0), TxnFailure::Fatal)),
            Fault::BrokenBeforeCommit => self.act(after_failure(
                Phase::BeforeCommit { written: Some(id) },
                TxnFailure::Broken,
            )),
            Fault::BrokenCommitted | Fault::BrokenAborted => {
                if fault == Fault::BrokenCommitted {
                    self.broker.commit();
                }
                self.act(after_failure(commit(0), TxnFailure::Broken))
            }
            Fault::UnknownCommitted | Fault::UnknownAborted => {
                if fault == Fault::UnknownCommitted {
                    self.broker.commit();
                }
                let mut attempt = 0;
                loop {
                    match after_failure(commit(attempt), TxnFailure::Retriable) {
                        Action::RetryCommit => attempt += 1,
                        other => return self.act(other),
                    }
                }
            }
            Fault::None | Fault::CrashAfterCommit | Fault::CrashAfterSnapshot => {
                self.broker.commit();
                if fault == Fault::CrashAfterCommit {
                    return self.restart();
                }
                let ids: Vec<CheckpointId> = self.manifests.keys().copied().collect();
                for old in to_delete(&ids, id, self.retain, &[]) {
                    self.manifests.remove(&old);
                    self.snapshots.remove(&old);
                }
                Ok(())
            }
        }
    }

    /// Runs `ops`, then the rest of the input and a clean tick and checkpoint; the committed
    /// outputs per key.
    fn run(mut self, ops: &[Op]) -> Result<Counts, String> {
        self.restore()?;
        for op in ops {
            self.apply(op)?;
        }
        self.apply(&Op::Process(self.input.len()))?;
        self.apply(&Op::Tick)?;
        self.checkpoint(Fault::None)?;
        let mut out = Counts::new();
        for (key, count) in self.broker.outputs {
            *out.entry(key).or_default() += count;
        }
        Ok(out)
    }
}

fn expected(input: &[u8]) -> Counts {
    let mut out = Counts::new();
    for key in input {
        *out.entry(*key).or_default() += 1;
    }
    out
}

/// The restore before commits named their checkpoint: the newest snapshot at the committed
/// offset.
fn by_offsets_alone(
    manifests: &BTreeMap<CheckpointId, Manifest>,
    p: &Partition,
    commits: &BTreeMap<Partition, GroupCommit>,
) -> Restore {
    let committed = commits.get(p).and_then(|c| c.offset);
    let candidates: Vec<(CheckpointId, Option<NextOffset>)> = manifests
        .iter()
        .filter_map(|(id, m)| m.task_offset(p).map(|o| (*id, o)))
        .collect();
    choose_restore(committed, &candidates)
}

fn by_name(
    manifests: &BTreeMap<CheckpointId, Manifest>,
    p: &Partition,
    commits: &BTreeMap<Partition, GroupCommit>,
) -> Restore {
    crate::checkpoint::choose(manifests, p, commits)
}

fn fault() -> impl Strategy<Value = Fault> {
    prop_oneof![
        4 => Just(Fault::None),
        1 => Just(Fault::AbortableBeforeCommit),
        1 => Just(Fault::AbortableAtCommit),
        1 => Just(Fault::UnknownCommitted),
        1 => Just(Fault::UnknownAborted),
        1 => Just(Fault::Fenced),
        1 => Just(Fault::BrokenBeforeCommit),
        1 => Just(Fault::BrokenCommitted),
        1 => Just(Fault::BrokenAborted),
        1 => Just(Fault::CrashAfterSnapshot),
        1 => Just(Fault::CrashBeforeCommit),
        1 => Just(Fault::CrashAfterCommit),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0usize..6).prop_map(Op::Process),
        2 => Just(Op::Tick),
        1 => Just(Op::Crash),
        3 => fault().prop_map(Op::Checkpoint),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn every_record_is_counted_once_through_any_failures(
        input in proptest::collection::vec(0u8..3, 0..30),
        ops in proptest::collection::vec(op(), 0..40),
        retain in 1usize..4,
    ) {
        let out = World::new(&input, retain, by_name).run(&ops);
        prop_assert_eq!(out, Ok(expected(&input)));
    }
}

/// The model can fail: restoring by offsets alone takes a snapshot whose checkpoint never
/// committed when it moved no offset (a tick's), and the tick's outputs are lost.
#[test]
fn restoring_by_offsets_alone_loses_a_ticks_outputs() {
    let input = [0, 0, 1];
    let ops = [
        Op::Process(3),
        Op::Checkpoint(Fault::None),
        Op::Tick,
        Op::Checkpoint(Fault::CrashAfterSnapshot),
    ];
    let old = World::new(&input, 2, by_offsets_alone).run(&ops);
    assert_ne!(
        old,
        Ok(expected(&input)),
        "the old restore should lose the tick"
    );
    let new = World::new(&input, 2, by_name).run(&ops);
    assert_eq!(new, Ok(expected(&input)));
}
