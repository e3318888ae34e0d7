//! The windowed stream-stream join at run time (`pipeline/stream_join.rs` has the layout): a
//! record of either stream is buffered in the keyed state of the stateful task with its
//! partition and joined with the other stream's buffered records of its key within the bound.
//! The other stream's topic is consumed by the group like the source, so its offsets commit
//! in the checkpoint's transaction with the state that buffered it.

mod unmatched;

use serde_json::Value;

use super::Runner;
use crate::codec::{self, Payload};
use crate::config::{Aggregate, AggregateKind, StreamJoinMode};
use crate::kafka::consumer;
use crate::pipeline::keyed::Keyed;
use crate::pipeline::operator::{self, Record};
use crate::pipeline::stream_join::{self, Side};
use crate::pipeline::{Result, timers, window};
use crate::position::NextOffset;
use crate::state::namespaced;
use unmatched::Unmatched;

/// Cleanup work per task and checkpoint at most (the rest goes at the next ones).
const MAX_EXPIRED_PER_CHECKPOINT: usize = 100_000;

type StreamJoinParts<'a> = (&'a Aggregate, &'a str, i64, &'a str, StreamJoinMode);

impl<'a> Runner<'a> {
    /// The join's aggregate, other topic, bound and output field, for a stream-stream join.
    pub(super) fn stream_join(&self) -> Option<(&'a Aggregate, &'a str, i64, &'a str)> {
        self.stream_join_mode()
            .map(|(agg, stream, within, into, _)| (agg, stream, within, into))
    }

    /// [`Self::stream_join`] with the join's mode.
    fn stream_join_mode(&self) -> Option<StreamJoinParts<'a>> {
        let pipeline: &'a crate::config::PipelineConfig = self.pipeline;
        let agg = pipeline.plan.aggregate.as_ref()?;
        match &agg.kind {
            AggregateKind::StreamJoin {
                stream,
                within_ms,
                into,
                mode,
                ..
            } => Some((agg, stream.as_str(), *within_ms, into.as_str(), *mode)),
            _ => None,
        }
    }

    /// The format of the joined table's or other stream's values.
    pub(super) fn joined_format(&self) -> crate::config::Format {
        match self.pipeline.plan.aggregate.as_ref().map(|a| &a.kind) {
            Some(AggregateKind::StreamJoin { format, .. } | AggregateKind::Join { format, .. }) => {
                *format
            }
            _ => crate::config::Format::Json,
        }
    }

    /// Whether a stateful task's other stream has gone idle since the buffers were last
    /// expired.
    pub(super) fn join_went_idle(&self) -> bool {
        self.stream_join().is_some()
            && self.tasks.iter().any(|(p, t)| {
                t.state.is_some() && !t.other_idle_handled && self.other_idle(p.partition, t)
            })
    }

    /// Whether the other stream's partition of the stateful task `task` (partition `n`; the
    /// topics are co-partitioned) is idle: read to its end and without a record for the idle
    /// timeout, as Kafka showed it (`consumer::quiet_since`). The clock alone counts a loop
    /// blocked by a checkpoint for longer than the idle timeout as silence, although the
    /// stream spoke, and its records, read a moment later, would be late (CHAOS.md, defect 12).
    pub(super) fn other_idle(&self, n: i32, task: &super::Task) -> bool {
        let (Some(et), Some((_, stream, ..))) =
            (self.pipeline.source.event_time.as_ref(), self.stream_join())
        else {
            return false;
        };
        // silence on the clock bounds what the statistics can show (they were taken by now):
        // the per-record path stops here while the stream speaks
        if task.other_heard.elapsed() < et.idle_timeout {
            return false;
        }
        let p = crate::position::Partition {
            topic: stream.to_string(),
            partition: n,
        };
        // what its task processed counts as handed over: librdkafka forgets on a seek
        let processed = self.tasks.get(&p).and_then(|t| t.next_offset).map(|o| o.0);
        let end = self
            .consumer
            .end_of(&p)
            .map(|e| e.counting_processed(processed));
        consumer::quiet_since(end, task.other_heard) >= et.idle_timeout
    }

    /// A record of the other stream: into the state of the stateful task of its partition.
    pub(super) fn process_other(&mut self, r: &consumer::Message) -> Result<()> {
        let p = r.topic_partition();
        let Some(task) = self.tasks.get(&p) else {
            tracing::warn!(partition = %p, offset = r.offset, "record of an unassigned partition ignored");
            return Ok(());
        };
        if task.next_offset.is_some_and(|n| r.offset < n.0) {
            return Ok(());
        }
        let err = |stage, message: String| Self::record_error(r, stage, message);
        let Some(target) = self.topology.stateful_partition(r.partition) else {
            return Err(err(
                "stream_join",
                "the pipeline has no stateful task".into(),
            ));
        };
        let (value, key, ts) = self.read_other(r)?;
        let stateful = self.tasks.get(&target);
        let state = stateful.and_then(|t| t.state.as_ref()).ok_or_else(|| {
            err(
                "stream_join",
                format!("{target} is not assigned here: the topics must be co-partitioned"),
            )
        })?;
        let this_wm = stateful
            .and_then(|t| t.windows.as_ref())
            .map_or(window::NO_WATERMARK, |w| w.watermarks.current());
        let Some(join) = self.keyed.as_ref().and_then(Keyed::stream_join) else {
            return Err(err("stream_join", "the pipeline has no stream join".into()));
        };
        let paired = join.pair_up(
            state,
            Side::Other,
            (key, ts, (r.partition, r.offset)),
            (&value, this_wm, false),
        )?;
        // every output checked before anything is written
        let sends = match &paired {
            Some(paired) => self.encode_pairs(r, key, &paired.outputs)?,
            None => Vec::new(),
        };
        if let Some(t) = self.tasks.get_mut(&target) {
            t.other_heard = std::time::Instant::now();
            t.other_idle_handled = false;
        }
        match paired {
            Some(paired) => {
                if let Some(state) = self.tasks.get_mut(&target).and_then(|t| t.state.as_mut()) {
                    for (k, v) in &paired.puts {
                        state.put(k, v)?;
                    }
                }
            }
            None => {
                self.late += 1;
                self.metrics.late();
            }
        }
        if let Some(task) = self.tasks.get_mut(&p) {
            task.next_offset = Some(NextOffset(r.offset + 1));
        }
        self.dirty = true;
        for out in sends {
            self.txn
                .send(&self.pipeline.sink.topic, out.key.as_deref(), &out.value)?;
        }
        Ok(())
    }

    /// A record of the other stream, decoded: its fields, key and event time.
    fn read_other<'r>(&self, r: &'r consumer::Message) -> Result<(Value, &'r [u8], i64)> {
        let err = |stage, message: String| Self::record_error(r, stage, message);
        let value = crate::pipeline::catch_panic(|| {
            codec::decode(self.joined_format(), r.value(), &self.schemas)
        })
        .map_err(|m| err("panic", format!("panicked: {m}")))?
        .map_err(|e| crate::pipeline::Error::decode(e, |m| err("decode", m)))?;
        let Payload::Json(value) = value else {
            return Err(err("decode", "expected a JSON record".into()));
        };
        let key = r
            .key()
            .ok_or_else(|| err("stream_join", "record has no key to join by".into()))?;
        let ts = match &self.pipeline.source.event_time {
            Some(et) => {
                window::event_time(et, &value, r.timestamp()).map_err(|m| err("event_time", m))?
            }
            None => return Err(err("event_time", "no event time is configured".into())),
        };
        Ok((value, key, ts))
    }

    /// The pairs a record of the other stream completed, through the `after` steps, encoded
    /// and size-checked.
    fn encode_pairs(
        &self,
        r: &consumer::Message,
        key: &[u8],
        outputs: &[Value],
    ) -> Result<Vec<super::record::Out>> {
        let plan = &self.pipeline.plan;
        let mut sends = Vec::new();
        for v in outputs {
            let out = Record {
                key: Some(key.to_vec()),
                value: Payload::Json(v.clone()),
            };
            if let Some(out) = operator::apply_steps(&plan.after, out)
                .map_err(|e| Self::step_error(r, e, &plan.after_on_error))?
            {
                sends.push(self.encode_out(r, out)?);
            }
        }
        Ok(sends)
    }

    /// Deletes buffered records no future record that is not late can join, and sends out
    /// those of them that never found a partner when the mode asks for them (in the
    /// checkpoint's transaction, before its flush; the deletions are in its snapshot).
    pub(super) fn expire_join_buffers(&mut self) -> Result<()> {
        let Some((agg, stream, within, into, mode)) = self.stream_join_mode() else {
            return Ok(());
        };
        let ooo = self
            .keyed
            .as_ref()
            .and_then(Keyed::stream_join)
            .map_or(0, |j| j.out_of_orderness_ms);
        let ns = |k: &[u8]| namespaced(&agg.id, k);
        let mut outputs = Vec::new();
        let idle: std::collections::BTreeSet<i32> = self
            .tasks
            .iter()
            .filter(|(p, t)| t.state.is_some() && self.other_idle(p.partition, t))
            .map(|(p, _)| p.partition)
            .collect();
        for (p, task) in &mut self.tasks {
            let idle = idle.contains(&p.partition);
            let Some(state) = task.state.as_mut() else {
                continue;
            };
            let this_wm = task
                .windows
                .as_ref()
                .map_or(window::NO_WATERMARK, |w| w.watermarks.current());
            let other_max = state
                .get(&ns(&stream_join::max_key(Side::Other)))?
                .as_deref()
                .and_then(stream_join::decode_time);
            // an entry older than the watermark minus `within` can only meet late records
            let Some(cutoff) = stream_join::late_before(this_wm, other_max, idle, ooo)
                .map(|w| w.saturating_sub(within))
            else {
                // no watermark of this stream yet: nothing to release until it has one, and
                // its records will make the next checkpoint anyway (no checkpoint per interval)
                task.other_idle_handled |= idle;
                continue;
            };
            // the time index in the layout of `pipeline::timers`: entries older than the cutoff
            let (lo, hi) = timers::due_range(cutoff.saturating_sub(1));
            let due = state.keys_in(&ns(&lo), &ns(&hi), MAX_EXPIRED_PER_CHECKPOINT)?;
            // an idle stream's release is done once nothing due is left for a next checkpoint
            task.other_idle_handled |= idle && due.len() < MAX_EXPIRED_PER_CHECKPOINT;
            for index in due {
                if let Some((at, entry)) = crate::state::split_namespaced(&index)
                    .and_then(|(_, inner)| timers::split_timer_key(inner))
                {
                    if let Some((side, key)) = stream_join::entry_parts(entry)
                        && stream_join::emits_unmatched(mode, side)
                    {
                        let marker = ns(&stream_join::matched_key(entry));
                        if state.get(&marker)?.is_some() {
                            state.delete(&marker)?;
                        } else if let Some(v) = state.get(&ns(entry))? {
                            let output = serde_json::from_slice::<Value>(&v)
                                .map_err(|e| e.to_string())
                                .and_then(|r| {
                                    stream_join::unmatched(side, &r, into)
                                        .ok_or_else(|| "not a record with fields".to_string())
                                });
                            let (partition, offset) =
                                stream_join::entry_origin(entry).unwrap_or((p.partition, -1));
                            let topic = match side {
                                Side::This => p.topic.clone(),
                                Side::Other => stream.to_string(),
                            };
                            outputs.push(Unmatched {
                                task: p.clone(),
                                at,
                                key: key.to_vec(),
                                origin: (topic, partition, offset),
                                stored: v,
                                output,
                            });
                        }
                    }
                    state.delete(&ns(entry))?;
                }
                state.delete(&index)?;
            }
        }
        self.send_unmatched(outputs)
    }
}
