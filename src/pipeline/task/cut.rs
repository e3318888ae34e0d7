//! The consistent cut of a pipeline that keeps running on several threads or instances
//! (`flumen savepoint create` while the group has members), taken by barriers through the
//! repartition topic, which already carries records from every source task to every stateful
//! task. No instance knows the others: the request reaches every thread through the
//! pipeline's control topic (`kafka::control`).
//!
//! 1. The tool reads the group's commits (G0): where its read of the repartition topic starts.
//! 2. It asks for a cut (`Begin`). Each thread, for each source partition `p` it holds, sends
//!    a barrier `(cut, p, next offset s_p)` to every repartition partition in its open
//!    transaction, and takes no more records of `p`; from then on it deletes no checkpoint and
//!    purges no repartition record. Barriers are written after G0 was read, so each lies
//!    above G0's offset in every repartition partition `r`.
//! 3. The tool reads every `r` from G0 until it has the barrier of every source partition
//!    (read_committed: only committed barriers count). Then, the sources still waiting, it
//!    reads the commits again (G: `r` at `c_r`, with the checkpoint that holds its state
//!    there), and lets the sources go on (`Release`). Until the release every record in `r`
//!    came from a source record below its `s_p`: no source wrote after its barrier.
//! 4. The savepoint is each stateful partition's state at `c_r`, the records from `c_r` to its
//!    last barrier as in-flight records, and the source offsets `s_p`: every source record
//!    below `s_p` is in exactly one of state or in-flight records, none above is in either.
//!    Then `End`: the threads collect garbage again.
//!
//! G is read after every barrier arrived, so every thread that holds a source has heard the
//! request and keeps what G names; a thread that holds only stateful partitions hears it
//! within a loop turn, long before three more checkpoints would let it delete G's.
//! A thread that dies with a barrier uncommitted is replaced by the partition's next owner,
//! which hears the request again (a reader starts `CUT_LIMIT` back) and sends the barrier at
//! the partition's committed offset, which is the first barrier's. A source that went on past
//! its barrier before G was read (its thread's limit passed, or a next owner that had not heard
//! the request yet) fails the cut: the tool checks that G commits every source partition at
//! its barrier, and that every barrier of a source names the same offset. A thread that never
//! hears `Release` (the tool died) lets its sources go after `CUT_LIMIT`, and one that never
//! hears `End` collects garbage again after `KEEP_LIMIT`. One cut at a time.

mod take;
pub use take::{end_stop, request_stop};

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::Runner;
use crate::pipeline::Result;
use crate::pipeline::topology::Role;
use crate::position::{NextOffset, Partition};

/// How long a thread pauses its sources for a cut without hearing `Release`, counted from
/// when it heard `Begin` (a request older than that when heard is ignored); and how far back
/// a thread's reader of the control topic starts.
pub(super) const CUT_LIMIT: Duration = Duration::from_secs(60);
/// How long it keeps what the cut reads (checkpoints, repartition records) without hearing
/// `End`: the tool restores every partition's state after the release, which takes as long as
/// the state is large.
const KEEP_LIMIT: Duration = Duration::from_secs(600);
/// The header of a barrier (no key, no value): `<cut>/<source partition>/<next offset or ->`.
pub(super) const BARRIER_HEADER: &str = "flumen.barrier";

#[derive(Debug, Serialize, Deserialize)]
struct Request {
    cut: String,
    phase: Phase,
    created_unix_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Phase {
    /// Send barriers, pause the sources, keep what the cut reads.
    Begin,
    /// The barriers are read: the sources go on.
    Release,
    /// The savepoint is written (or failed): collect garbage again; a `Stop` of this request
    /// is over (a thread started after it goes on).
    End,
    /// Every thread takes a final checkpoint and stops (`savepoint create --stop`: the
    /// savepoint is then written from the group's commits).
    Stop,
}

/// A thread's part in a cut.
pub(super) struct Cut {
    id: String,
    /// When the sources go on without `Release`, and the cut ends without `End`.
    until: Instant,
    keep_until: Instant,
    /// The sources wait for `Release`.
    sources_held: bool,
    /// Source partitions whose barrier is in the open or a committed transaction.
    marked: BTreeSet<Partition>,
}

impl Runner<'_> {
    /// The control topic's new requests (every loop turn; never waits), and the cut's limit.
    pub(super) fn hear_control(&mut self) -> Result<()> {
        let Some(reader) = self.control.as_mut() else {
            return Ok(());
        };
        for bytes in reader.poll() {
            let request: Request = match serde_json::from_slice(&bytes) {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(pipeline = %self.pipeline.name, error = %e, "unreadable control request ignored");
                    continue;
                }
            };
            self.on_request(request)?;
        }
        let now = Instant::now();
        if self
            .cut
            .as_ref()
            .is_some_and(|c| c.sources_held && now >= c.until)
        {
            tracing::warn!(pipeline = %self.pipeline.name, "savepoint cut not released within {CUT_LIMIT:?}; the sources go on (the cut fails)");
            self.release_sources()?;
        }
        if self.cut.as_ref().is_some_and(|c| now >= c.keep_until) {
            tracing::warn!(pipeline = %self.pipeline.name, "savepoint cut not ended within {KEEP_LIMIT:?}; collecting garbage again");
            self.end_cut()?;
        }
        Ok(())
    }

    fn on_request(&mut self, request: Request) -> Result<()> {
        let current = self.cut.as_ref().is_some_and(|c| c.id == request.cut);
        let age = Duration::from_millis(
            crate::checkpoint::now_unix_ms().saturating_sub(request.created_unix_ms),
        );
        match request.phase {
            Phase::Stop if age < CUT_LIMIT => {
                tracing::info!(pipeline = %self.pipeline.name, request = %request.cut, "asked to stop (savepoint create --stop)");
                self.stop_requested = Some(request.cut);
                return Ok(());
            }
            Phase::End if self.stop_requested.as_ref() == Some(&request.cut) => {
                self.stop_requested = None;
            }
            _ => {}
        }
        match request.phase {
            Phase::Begin if !current && age < CUT_LIMIT => {
                if let Some(active) = &self.cut {
                    // one cut at a time: the other tool hears of no barrier from here and fails
                    tracing::warn!(pipeline = %self.pipeline.name, cut = %request.cut, active = %active.id,
                        "savepoint cut requested while another is under way; ignored");
                    return Ok(());
                }
                tracing::info!(pipeline = %self.pipeline.name, cut = %request.cut, "savepoint cut requested: barriers sent, sources paused");
                let now = Instant::now();
                self.cut = Some(Cut {
                    id: request.cut,
                    until: now + CUT_LIMIT,
                    keep_until: now + KEEP_LIMIT,
                    sources_held: true,
                    marked: BTreeSet::new(),
                });
                self.hold_cut()
            }
            Phase::Release if current => self.release_sources(),
            Phase::End if current => self.end_cut(),
            _ => Ok(()),
        }
    }

    /// Barriers for the source partitions held that have none yet, and their records paused
    /// (after a start, an assignment or a rewind too).
    pub(super) fn hold_cut(&mut self) -> Result<()> {
        let (Some(cut), Some(topic)) = (self.cut.as_mut(), self.topology.repartition_topic())
        else {
            return Ok(());
        };
        if !cut.sources_held {
            return Ok(());
        }
        cut.marked.retain(|p| self.tasks.contains_key(p));
        for (p, task) in &self.tasks {
            if task.role != Role::Source || cut.marked.contains(p) {
                continue;
            }
            let offset = task
                .next_offset
                .map_or("-".to_string(), |o| o.0.to_string());
            let header = format!("{}/{}/{offset}", cut.id, p.partition);
            self.txn.send_marker(
                topic,
                self.topology.source_partitions,
                &[(BARRIER_HEADER, header.as_bytes())],
            )?;
            cut.marked.insert(p.clone());
            self.dirty = true;
        }
        let paused: Vec<Partition> = cut.marked.iter().cloned().collect();
        self.consumer.pause(&paused)?;
        Ok(())
    }

    /// Whether records of `p` wait for the cut's release (they are read again from the
    /// task's position then).
    pub(super) fn held_by_cut(&self, p: &Partition) -> bool {
        self.cut
            .as_ref()
            .is_some_and(|c| c.sources_held && c.marked.contains(p))
    }

    /// Whether the cut may still read checkpoints and repartition records (garbage
    /// collection and purges wait).
    pub(super) fn cut_reads(&self) -> bool {
        self.cut.is_some()
    }

    /// An aborted transaction took its barriers with it: they are sent again.
    pub(super) fn barriers_aborted(&mut self) {
        if let Some(cut) = self.cut.as_mut() {
            cut.marked.clear();
        }
    }

    fn release_sources(&mut self) -> Result<()> {
        let Some(cut) = self.cut.as_mut() else {
            return Ok(());
        };
        if !cut.sources_held {
            return Ok(());
        }
        cut.sources_held = false;
        let marked = std::mem::take(&mut cut.marked);
        let positions: Vec<(Partition, Option<NextOffset>)> = marked
            .iter()
            .filter_map(|p| self.tasks.get(p).map(|t| (p.clone(), t.next_offset)))
            .collect();
        let partitions: Vec<Partition> = positions.iter().map(|(p, _)| p.clone()).collect();
        // records fetched before the pause and skipped are read again
        self.consumer.seek(&positions)?;
        self.consumer.resume(&partitions)?;
        tracing::info!(pipeline = %self.pipeline.name, partitions = partitions.len(), "savepoint cut released: sources go on");
        Ok(())
    }

    fn end_cut(&mut self) -> Result<()> {
        self.release_sources()?;
        self.cut = None;
        Ok(())
    }
}
