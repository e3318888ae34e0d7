//! One record through the plan, all or nothing: every step that can fail (decode, operators,
//! encode, the size check) runs before state is written or anything is produced, so the error
//! policy can skip or dead-letter a record without leaving half of its effect behind.

use super::Runner;
use crate::codec::{self, Payload};
use crate::config::{Emit, Format};
use crate::kafka::consumer;
use crate::pipeline::operator::{self, Record};
use crate::pipeline::topology::Role;
use crate::pipeline::window;
use crate::pipeline::{Error, Result};
use crate::position::NextOffset;

/// Keys held for `emit = "on_checkpoint"` before they are produced early (memory bound).
const PENDING_MAX: usize = 100_000;

/// What processing a record does, decided before anything is done.
#[derive(Default)]
pub(super) struct Effect {
    /// (state key, new value): one per window the record falls in, or the key's running value
    pub(super) puts: Vec<(Vec<u8>, Vec<u8>)>,
    /// State keys to delete (a custom operator cleared its state).
    pub(super) deletes: Vec<Vec<u8>>,
    pub(super) sends: Vec<Out>,
    /// Source tasks of a windowed pipeline: the record's event time.
    pub(super) event_time: Option<i64>,
    /// Stateful tasks of a windowed aggregate: (input, its watermark) to observe afterwards.
    pub(super) watermark: Option<(i32, i64)>,
    /// Every window of the record has closed.
    pub(super) late: bool,
}

pub(super) enum Dest {
    Sink,
    Repartition,
}

pub(super) struct Out {
    pub(super) dest: Dest,
    pub(super) key: Option<Vec<u8>>,
    pub(super) value: Vec<u8>,
    /// Repartition records of windowed pipelines: (event time, the watermark header).
    /// The event-time and watermark header values, as sent.
    pub(super) event: Option<(String, String)>,
}

impl Runner<'_> {
    pub(super) fn process(&mut self, r: &consumer::Message) -> Result<()> {
        let p = r.topic_partition();
        let Some(task) = self.tasks.get(&p) else {
            tracing::warn!(partition = %p, offset = r.offset, "record of an unassigned partition ignored");
            return Ok(());
        };
        match task.role {
            Role::OtherStream => {
                self.count_input(r);
                return self.process_other(r);
            }
            Role::Stray => return Ok(()),
            Role::Source | Role::KeyedSource | Role::Keyed => {}
        }
        if task.next_offset.is_some_and(|n| r.offset < n.0) {
            return Ok(()); // already reflected in state
        }
        if self.held_by_cut(&p) {
            return Ok(()); // read again when the savepoint cut releases the source
        }
        if r.value().is_none_or(<[u8]>::is_empty) && r.header(super::cut::BARRIER_HEADER).is_some()
        {
            // an online savepoint's barrier: for its reader only
            if let Some(task) = self.tasks.get_mut(&p) {
                task.next_offset = Some(NextOffset(r.offset + 1));
            }
            self.dirty = true;
            return Ok(());
        }
        if task.windows.is_some()
            && r.value().is_none_or(<[u8]>::is_empty)
            && let Some((input, wm)) = r
                .header(window::WATERMARK_HEADER)
                .and_then(window::parse_watermark)
        {
            // a watermark marker from the repartition topic (an idle one: its source partition
            // is read to its end and quiet; one from before the task's restore may be stale)
            let idle = r.header(window::IDLE_HEADER).is_some()
                && task
                    .windows
                    .as_ref()
                    .is_some_and(|w| r.timestamp().is_some_and(|t| t >= w.since_ms));
            if let Some(task) = self.tasks.get_mut(&p) {
                task.next_offset = Some(NextOffset(r.offset + 1));
            }
            self.dirty = true;
            return self.observe_watermark(&p, input, (wm, idle));
        }
        // a record of the pipeline's (not a marker, not one read again): counted once here
        let bytes = r.key().map_or(0, <[u8]>::len) + r.value().map_or(0, <[u8]>::len);
        self.input_tally.record(r.topic(), bytes);
        // deciding has no effect yet, so a panic in it (an operator's, a codec's) is the
        // record's error and follows the error policy like any other
        let effect = crate::pipeline::catch_panic(|| self.decide(r, task))
            .map_err(|m| Self::record_error(r, "panic", format!("panicked: {m}")))??;
        if let Some(task) = self.tasks.get_mut(&p) {
            if let Some(state) = task.state.as_mut() {
                // deletes first: a merged session may be stored again under a key it deletes
                for key in &effect.deletes {
                    state.delete(key)?;
                }
                for (key, value) in &effect.puts {
                    state.put(key, value)?;
                }
            }
            if let Some(ts) = effect.event_time {
                task.max_event_time = task.max_event_time.max(ts);
                task.spoke = true;
            }
            task.next_offset = Some(NextOffset(r.offset + 1));
        }
        self.dirty = true;
        if effect.late {
            self.late_record(r)?;
        }
        for out in effect.sends {
            self.send_out(out)?;
        }
        if let Some((input, wm)) = effect.watermark {
            self.observe_watermark(&p, input, (wm, false))?;
        }
        Ok(())
    }

    fn send_out(&mut self, out: Out) -> Result<()> {
        match out {
            Out {
                dest: Dest::Sink,
                key: Some(key),
                value,
                ..
            } if self.emit_on_checkpoint() => {
                self.pending.insert(key, value);
                if self.pending.len() >= PENDING_MAX {
                    self.emit_pending()?;
                }
            }
            Out {
                dest: Dest::Repartition,
                key,
                value,
                event: Some((ts, header)),
            } => {
                let topic = self
                    .topology
                    .repartition_topic()
                    .ok_or_else(no_repartition_topic)?;
                self.txn.send_event(
                    topic,
                    None,
                    key.as_deref(),
                    &value,
                    &[
                        (window::EVENT_TIME_HEADER, ts.as_bytes()),
                        (window::WATERMARK_HEADER, header.as_bytes()),
                    ],
                )?;
            }
            Out {
                dest, key, value, ..
            } => {
                let topic = match dest {
                    Dest::Repartition => self
                        .topology
                        .repartition_topic()
                        .ok_or_else(no_repartition_topic)?,
                    Dest::Sink => &self.pipeline.sink.topic,
                };
                self.txn.send(topic, key.as_deref(), &value)?;
            }
        }
        Ok(())
    }

    /// A late record fits the late topic (checked before anything of it is done).
    pub(super) fn check_late(
        &self,
        r: &consumer::Message,
        w: &crate::config::Window,
    ) -> Result<()> {
        let Some(late_topic) = &w.late_topic else {
            return Ok(());
        };
        let headers =
            "flumen.pipelineflumen.source.topicflumen.source.partitionflumen.source.offset".len()
                + self.pipeline.name.len()
                + r.topic().len()
                + 30
                + 40;
        self.txn
            .check_size_with(late_topic, r.key(), r.value().unwrap_or_default(), headers)
            .map_err(|e| Self::record_error(r, "produce", e.to_string()))
    }

    /// A record all of whose windows have closed: to the window's `late_topic`, untouched
    /// with headers, or dropped; counted either way.
    fn late_record(&mut self, r: &consumer::Message) -> Result<()> {
        self.late += 1;
        self.metrics.late();
        let late_topic = self.windowed().and_then(|(_, w)| w.late_topic.clone());
        let Some(topic) = late_topic else {
            tracing::debug!(topic = %r.topic(), partition = r.partition, offset = r.offset, "late record dropped");
            return Ok(());
        };
        let (partition, offset) = (r.partition.to_string(), r.offset.to_string());
        let headers: [(&str, &[u8]); 4] = [
            ("flumen.pipeline", self.pipeline.name.as_bytes()),
            ("flumen.source.topic", r.topic().as_bytes()),
            ("flumen.source.partition", partition.as_bytes()),
            ("flumen.source.offset", offset.as_bytes()),
        ];
        self.txn
            .send_with_headers(&topic, r.key(), r.value(), &headers)?;
        Ok(())
    }

    fn emit_on_checkpoint(&self) -> bool {
        self.pipeline
            .plan
            .aggregate
            .as_ref()
            .is_some_and(|a| a.emit == Emit::OnCheckpoint)
    }

    /// Produces the held outputs (`emit = "on_checkpoint"`) into the open transaction: at each
    /// checkpoint, before the flush, and whenever `PENDING_MAX` keys are held.
    pub(super) fn emit_pending(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        for (key, value) in self.pending.drain() {
            self.txn
                .send(&self.pipeline.sink.topic, Some(&key), &value)?;
        }
        Ok(())
    }

    /// Everything that can fail about `r`, with no effect yet.
    fn decide(&self, r: &consumer::Message, task: &super::Task) -> Result<Effect> {
        let plan = &self.pipeline.plan;
        let from_source = task.role.reads_source();
        let format = if from_source {
            self.pipeline.source.format
        } else {
            Format::Json
        };
        let err = |stage, message: String| Self::record_error(r, stage, message);
        let value = codec::decode(format, r.value(), &self.schemas)
            .map_err(|e| Error::decode(e, |m| err("decode", m)))?;
        let event_time = self.event_time_of(r, from_source, &value)?;
        let record = Record {
            key: r.key().map(<[u8]>::to_vec),
            value,
        };
        let record = if from_source {
            operator::apply_steps(&plan.before, record)
                .map_err(|e| Self::step_error(r, e, &plan.before_on_error))?
        } else {
            Some(record)
        };
        let mut effect = Effect {
            event_time: event_time.filter(|_| from_source),
            ..Effect::default()
        };
        let output = match (record, &plan.aggregate) {
            (None, _) => None,
            (Some(rec), Some(_)) if from_source && plan.repartition => {
                effect
                    .sends
                    .push(self.to_repartition(r, task, rec, event_time)?);
                return Ok(effect);
            }
            (Some(rec), Some(agg)) => {
                self.keyed(r, task, rec, agg, (event_time, from_source), &mut effect)?;
                None
            }
            (Some(rec), None) => Some(rec),
        };
        if let Some(out) = output {
            effect.sends.push(self.encode_out(r, out)?);
        }
        Ok(effect)
    }

    /// The record's event time when the pipeline follows event time: a source record's from
    /// its field or Kafka timestamp, a repartition record's from its header.
    fn event_time_of(
        &self,
        r: &consumer::Message,
        from_source: bool,
        value: &Payload,
    ) -> Result<Option<i64>> {
        let err = |stage, message: String| Self::record_error(r, stage, message);
        if self.timed().is_none() {
            return Ok(None);
        }
        match &self.pipeline.source.event_time {
            Some(et) if from_source => {
                // the Kafka timestamp needs no fields (string and bytes sources too)
                let fields = match (&et.field, value) {
                    (None, _) => &serde_json::Value::Null,
                    (Some(_), Payload::Json(v)) => v,
                    (Some(_), _) => {
                        return Err(err("event_time", "the record has no fields".into()));
                    }
                };
                window::event_time(et, fields, r.timestamp())
                    .map(Some)
                    .map_err(|m| err("event_time", m))
            }
            _ => r
                .header(window::EVENT_TIME_HEADER)
                .and_then(window::parse_event_time)
                .or(r.timestamp())
                .map(Some)
                .ok_or_else(|| err("event_time", "the record has no event time".into())),
        }
    }

    /// A source record re-keyed for the repartition topic: encoded, with its event time and
    /// its partition's watermark in headers, size-checked.
    fn to_repartition(
        &self,
        r: &consumer::Message,
        task: &super::Task,
        rec: Record,
        event_time: Option<i64>,
    ) -> Result<Out> {
        let err = |stage, message: String| Self::record_error(r, stage, message);
        let bytes = codec::encode(Format::Json, &rec.value, &self.schemas)
            .map_err(|e| err("repartition", e.to_string()))?;
        let event = match (event_time, &self.pipeline.source.event_time) {
            (Some(ts), Some(et)) => {
                let wm = window::watermark_after(et, task.max_event_time.max(ts));
                Some((ts.to_string(), window::format_watermark(r.partition, wm)))
            }
            _ => None,
        };
        // the headers `send_out` adds, counted as the producer counts them
        let headers = event.as_ref().map_or(0, |(ts, wm)| {
            window::EVENT_TIME_HEADER.len()
                + ts.len()
                + window::WATERMARK_HEADER.len()
                + wm.len()
                + 20
        });
        let topic = self
            .topology
            .repartition_topic()
            .ok_or_else(no_repartition_topic)?;
        self.txn
            .check_size_with(topic, rec.key.as_deref(), &bytes, headers)
            .map_err(|e| err("produce", e.to_string()))?;
        Ok(Out {
            dest: Dest::Repartition,
            key: rec.key,
            value: bytes,
            event,
        })
    }

    /// An output for the sink: encoded and size-checked.
    pub(super) fn encode_out(&self, r: &consumer::Message, out: Record) -> Result<Out> {
        let bytes = codec::encode(self.pipeline.sink.format, &out.value, &self.schemas)
            .map_err(|e| Self::record_error(r, "encode", e.to_string()))?;
        self.txn
            .check_size(&self.pipeline.sink.topic, out.key.as_deref(), &bytes)
            .map_err(|e| Self::record_error(r, "produce", e.to_string()))?;
        Ok(Out {
            dest: Dest::Sink,
            key: out.key,
            value: bytes,
            event: None,
        })
    }
}

/// `Dest::Repartition` in a pipeline without a repartition topic (only repartitioning
/// pipelines make such outputs).
fn no_repartition_topic() -> Error {
    Error::StateChoice("an output for the repartition topic, but the pipeline has none".into())
}
