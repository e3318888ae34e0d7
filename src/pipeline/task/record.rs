//! One record through the plan, all or nothing: every step that can fail (decode, operators,
//! encode, the size check) runs before state is written or anything is produced, so the error
//! policy can skip or dead-letter a record without leaving half of its effect behind.

use super::Runner;
use crate::checkpoint::{NextOffset, Partition};
use crate::codec;
use crate::config::{Emit, Format, OnError};
use crate::kafka::consumer;
use crate::kafka::producer::Producer;
use crate::pipeline::operator::{self, Record, RecordError};
use crate::pipeline::{Error, Result, chain};
use crate::state::namespaced;

/// Keys held for `emit = "on_checkpoint"` before they are produced early (memory bound).
const PENDING_MAX: usize = 100_000;

/// What processing a record does, decided before anything is done.
struct Effect {
    /// (state key, new value)
    put: Option<(Vec<u8>, Vec<u8>)>,
    /// (topic is the repartition topic?, key, value)
    send: Option<(bool, Option<Vec<u8>>, Vec<u8>)>,
}

impl Runner<'_> {
    pub(super) fn record_error(
        r: &consumer::Record,
        stage: &'static str,
        message: impl ToString,
    ) -> Error {
        Error::Record {
            topic: r.topic.clone(),
            partition: r.partition,
            offset: r.offset,
            stage,
            message: message.to_string(),
            policy: None,
        }
    }

    /// An operator's error, with that operator's `on_error` override.
    fn step_error(r: &consumer::Record, e: RecordError, overrides: &[Option<OnError>]) -> Error {
        let policy = e.index.and_then(|i| overrides.get(i).cloned().flatten());
        Error::Record {
            topic: r.topic.clone(),
            partition: r.partition,
            offset: r.offset,
            stage: e.step,
            message: e.message,
            policy,
        }
    }

    /// Processes `r`; a record that cannot be processed follows the pipeline's error policy.
    pub(super) fn handle_record(&mut self, r: &consumer::Record) -> Result<()> {
        let e = match self.process(r) {
            Ok(()) => return Ok(()),
            Err(e @ Error::Record { .. }) => e,
            Err(other) => return Err(other),
        };
        let Error::Record {
            stage,
            message,
            policy,
            ..
        } = &e
        else {
            return Err(e);
        };
        let (stage, message) = (*stage, message.clone());
        let policy = policy
            .clone()
            .unwrap_or_else(|| self.pipeline.on_error.clone());
        let dead_letter_topic = self.pipeline.dead_letter_topic.as_deref();
        match (policy, dead_letter_topic) {
            (OnError::Fail, _) | (OnError::DeadLetter, None) => Err(self.abort_for(e)),
            (OnError::Skip, _) => {
                tracing::warn!(topic = %r.topic, partition = r.partition, offset = r.offset, stage, error = %message, "record skipped (on_error = \"skip\")");
                self.skipped += 1;
                self.mark_done(r);
                Ok(())
            }
            (OnError::DeadLetter, Some(topic)) => {
                let (partition, offset) = (r.partition.to_string(), r.offset.to_string());
                let headers: [(&str, &[u8]); 7] = [
                    ("flumen.pipeline", self.pipeline.name.as_bytes()),
                    ("flumen.source.topic", r.topic.as_bytes()),
                    ("flumen.source.partition", partition.as_bytes()),
                    ("flumen.source.offset", offset.as_bytes()),
                    ("flumen.error.stage", stage.as_bytes()),
                    ("flumen.error.class", error_class(stage).as_bytes()),
                    ("flumen.error.message", message.as_bytes()),
                ];
                begin_if_needed(&self.producer, &mut self.in_txn)?;
                match self.producer.send_with_headers(
                    topic,
                    r.key.as_deref(),
                    r.value.as_deref(),
                    &headers,
                ) {
                    Ok(()) => {}
                    // the dead letter itself is too large: nothing can take it
                    Err(crate::kafka::Error::TooLarge { .. }) => return Err(self.abort_for(e)),
                    Err(other) => return Err(Error::Kafka(other)),
                }
                tracing::debug!(topic = %r.topic, partition = r.partition, offset = r.offset, stage, "record dead-lettered");
                self.dead_lettered += 1;
                self.mark_done(r);
                Ok(())
            }
        }
    }

    /// A record stops the pipeline: abort the open transaction (nothing in it must survive; a
    /// failed abort is ended by the next start's `init_transactions` or the broker's timeout).
    fn abort_for(&mut self, e: Error) -> Error {
        if self.in_txn {
            if let Err(abort) = self.producer.abort() {
                tracing::warn!(error = %chain(&abort), "abort after a bad record failed");
            }
            self.in_txn = false;
        }
        e
    }

    /// The record's offset is consumed without an effect (skipped or dead-lettered).
    fn mark_done(&mut self, r: &consumer::Record) {
        let p = Partition {
            topic: r.topic.clone(),
            partition: r.partition,
        };
        if let Some(task) = self.tasks.get_mut(&p) {
            task.next_offset = Some(NextOffset(r.offset + 1));
            self.dirty = true;
        }
    }

    fn process(&mut self, r: &consumer::Record) -> Result<()> {
        let p = Partition {
            topic: r.topic.clone(),
            partition: r.partition,
        };
        let Some(task) = self.tasks.get(&p) else {
            tracing::warn!(partition = %p, offset = r.offset, "record of an unassigned partition ignored");
            return Ok(());
        };
        if task.next_offset.is_some_and(|n| r.offset < n.0) {
            return Ok(()); // already reflected in state
        }
        let effect = self.decide(r, task.state.as_ref())?;
        if let Some(task) = self.tasks.get_mut(&p) {
            if let (Some((key, value)), Some(state)) = (&effect.put, task.state.as_mut()) {
                state.put(key, value)?;
            }
            task.next_offset = Some(NextOffset(r.offset + 1));
        }
        match effect.send {
            Some((false, Some(key), value)) if self.emit_on_checkpoint() => {
                self.pending.insert(key, value);
                if self.pending.len() >= PENDING_MAX {
                    self.emit_pending()?;
                }
            }
            Some((to_repartition, key, value)) => {
                let topic = if to_repartition {
                    self.repartition_topic.as_deref().unwrap_or_default()
                } else {
                    &self.pipeline.sink.topic
                };
                begin_if_needed(&self.producer, &mut self.in_txn)?;
                self.producer.send(topic, key.as_deref(), &value)?;
            }
            None => {}
        }
        self.dirty = true;
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
        begin_if_needed(&self.producer, &mut self.in_txn)?;
        for (key, value) in self.pending.drain() {
            self.producer
                .send(&self.pipeline.sink.topic, Some(&key), &value)?;
        }
        Ok(())
    }

    /// Everything that can fail about `r`, with no effect yet.
    fn decide(
        &self,
        r: &consumer::Record,
        state: Option<&crate::state::TaskState>,
    ) -> Result<Effect> {
        let plan = &self.pipeline.plan;
        let from_source = r.topic == self.pipeline.source.topic;
        let format = if from_source {
            self.pipeline.source.format
        } else {
            Format::Json
        };
        let err = |stage, message: String| Self::record_error(r, stage, message);
        let value = codec::decode(format, r.value.as_deref(), &self.config.schemas)
            .map_err(|e| err("decode", e.to_string()))?;
        let record = Record {
            key: r.key.clone(),
            value,
        };
        let record = if from_source {
            operator::apply_steps(&plan.before, record)
                .map_err(|e| Self::step_error(r, e, &plan.before_on_error))?
        } else {
            Some(record)
        };
        let mut effect = Effect {
            put: None,
            send: None,
        };
        let output = match (record, &plan.aggregate) {
            (None, _) => None,
            (Some(rec), Some(_)) if from_source && plan.repartition => {
                let bytes = codec::encode(Format::Json, &rec.value, &self.config.schemas)
                    .map_err(|e| err("repartition", e.to_string()))?;
                self.producer
                    .check_size(rec.key.as_deref(), &bytes)
                    .map_err(|e| err("produce", e.to_string()))?;
                effect.send = Some((true, rec.key, bytes));
                return Ok(effect);
            }
            (Some(rec), Some(agg)) => {
                let state = state.ok_or_else(|| err("aggregate", "task has no state".into()))?;
                let key = namespaced(&agg.id, rec.key.as_deref().unwrap_or_default());
                let previous = state.get(&key)?;
                let (next, out) =
                    operator::aggregate(agg, previous.as_deref(), &rec).map_err(|e| {
                        let e = RecordError {
                            index: Some(0),
                            ..e
                        };
                        Self::step_error(r, e, std::slice::from_ref(&agg.on_error))
                    })?;
                effect.put = Some((key, next));
                operator::apply_steps(&plan.after, out)
                    .map_err(|e| Self::step_error(r, e, &plan.after_on_error))?
            }
            (Some(rec), None) => Some(rec),
        };
        if let Some(out) = output {
            let bytes = codec::encode(self.pipeline.sink.format, &out.value, &self.config.schemas)
                .map_err(|e| err("encode", e.to_string()))?;
            self.producer
                .check_size(out.key.as_deref(), &bytes)
                .map_err(|e| err("produce", e.to_string()))?;
            effect.send = Some((false, out.key, bytes));
        }
        Ok(effect)
    }
}

/// The dead letter's `flumen.error.class` header.
fn error_class(stage: &str) -> &'static str {
    match stage {
        "decode" => "decode",
        "produce" => "too_large",
        "encode" | "repartition" => "encode",
        _ => "operator",
    }
}

pub(super) fn begin_if_needed(producer: &Producer, in_txn: &mut bool) -> crate::kafka::Result<()> {
    if !*in_txn {
        producer.begin()?;
        *in_txn = true;
    }
    Ok(())
}
