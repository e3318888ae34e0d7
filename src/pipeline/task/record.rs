//! One record through the plan, all or nothing: every step that can fail (decode, operators,
//! encode, the size check) runs before state is written or anything is produced, so the error
//! policy can skip or dead-letter a record without leaving half of its effect behind.

use super::{Runner, windows};
use crate::checkpoint::{NextOffset, Partition};
use crate::codec::{self, Payload};
use crate::config::{AggregateKind, Emit, Format, OnError};
use crate::kafka::consumer;
use crate::kafka::producer::Producer;
use crate::pipeline::operator::{self, Record, RecordError};
use crate::pipeline::stream_join::Side;
use crate::pipeline::window::session;
use crate::pipeline::{Error, Result, chain};
use crate::pipeline::{custom, dedupe, join, timers, window};
use crate::state::namespaced;

/// Keys held for `emit = "on_checkpoint"` before they are produced early (memory bound).
const PENDING_MAX: usize = 100_000;

/// What processing a record does, decided before anything is done.
#[derive(Default)]
struct Effect {
    /// (state key, new value): one per window the record falls in, or the key's running value
    puts: Vec<(Vec<u8>, Vec<u8>)>,
    /// State keys to delete (a custom operator cleared its state).
    deletes: Vec<Vec<u8>>,
    sends: Vec<Out>,
    /// Source tasks of a windowed pipeline: the record's event time.
    event_time: Option<i64>,
    /// Stateful tasks of a windowed aggregate: (input, its watermark) to observe afterwards.
    watermark: Option<(i32, i64)>,
    /// Every window of the record has closed.
    late: bool,
}

enum Dest {
    Sink,
    Repartition,
}

struct Out {
    dest: Dest,
    key: Option<Vec<u8>>,
    value: Vec<u8>,
    /// Repartition records of windowed pipelines: (event time, the watermark header).
    event: Option<(i64, String)>,
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
    pub(super) fn step_error(
        r: &consumer::Record,
        e: RecordError,
        overrides: &[Option<OnError>],
    ) -> Error {
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
    pub(super) fn abort_for(&mut self, e: Error) -> Error {
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
        if self
            .stream_join()
            .is_some_and(|(_, stream, ..)| stream == r.topic)
        {
            return self.process_other(r);
        }
        let Some(task) = self.tasks.get(&p) else {
            tracing::warn!(partition = %p, offset = r.offset, "record of an unassigned partition ignored");
            return Ok(());
        };
        if task.next_offset.is_some_and(|n| r.offset < n.0) {
            return Ok(()); // already reflected in state
        }
        if task.windows.is_some()
            && r.value.as_deref().is_none_or(<[u8]>::is_empty)
            && let Some((input, wm)) = windows::parse_watermark(&r.headers)
        {
            // a watermark marker from the repartition topic
            if let Some(task) = self.tasks.get_mut(&p) {
                task.next_offset = Some(NextOffset(r.offset + 1));
            }
            self.dirty = true;
            return self.observe_watermark(&p, input, wm);
        }
        let effect = self.decide(r, task)?;
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
            self.observe_watermark(&p, input, wm)?;
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
                let topic = self.repartition_topic.as_deref().unwrap_or_default();
                begin_if_needed(&self.producer, &mut self.in_txn)?;
                let ts = ts.to_string();
                self.producer.send_event(
                    topic,
                    None,
                    key.as_deref(),
                    &value,
                    &[
                        (windows::EVENT_TIME_HEADER, ts.as_bytes()),
                        (windows::WATERMARK_HEADER, header.as_bytes()),
                    ],
                )?;
            }
            Out {
                dest, key, value, ..
            } => {
                let topic = match dest {
                    Dest::Repartition => self.repartition_topic.as_deref().unwrap_or_default(),
                    Dest::Sink => &self.pipeline.sink.topic,
                };
                begin_if_needed(&self.producer, &mut self.in_txn)?;
                self.producer.send(topic, key.as_deref(), &value)?;
            }
        }
        Ok(())
    }

    /// A late record fits the late topic (checked before anything of it is done).
    fn check_late(&self, r: &consumer::Record, w: &crate::config::Window) -> Result<()> {
        if w.late_topic.is_none() {
            return Ok(());
        }
        let headers =
            "flumen.pipelineflumen.source.topicflumen.source.partitionflumen.source.offset".len()
                + self.pipeline.name.len()
                + r.topic.len()
                + 30
                + 40;
        self.producer
            .check_size_with(
                r.key.as_deref(),
                r.value.as_deref().unwrap_or_default(),
                headers,
            )
            .map_err(|e| Self::record_error(r, "produce", e.to_string()))
    }

    /// A record all of whose windows have closed: to the window's `late_topic`, untouched
    /// with headers, or dropped; counted either way.
    fn late_record(&mut self, r: &consumer::Record) -> Result<()> {
        self.late += 1;
        let late_topic = self.windowed().and_then(|(_, w)| w.late_topic.clone());
        let Some(topic) = late_topic else {
            tracing::debug!(topic = %r.topic, partition = r.partition, offset = r.offset, "late record dropped");
            return Ok(());
        };
        let (partition, offset) = (r.partition.to_string(), r.offset.to_string());
        let headers: [(&str, &[u8]); 4] = [
            ("flumen.pipeline", self.pipeline.name.as_bytes()),
            ("flumen.source.topic", r.topic.as_bytes()),
            ("flumen.source.partition", partition.as_bytes()),
            ("flumen.source.offset", offset.as_bytes()),
        ];
        begin_if_needed(&self.producer, &mut self.in_txn)?;
        self.producer
            .send_with_headers(&topic, r.key.as_deref(), r.value.as_deref(), &headers)?;
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
    fn decide(&self, r: &consumer::Record, task: &super::Task) -> Result<Effect> {
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
        let timed = self.timed().is_some();
        let event_time = match (timed, &self.pipeline.source.event_time) {
            (true, Some(et)) if from_source => {
                // the Kafka timestamp needs no fields (string and bytes sources too)
                let fields = match (&et.field, &value) {
                    (None, _) => &serde_json::Value::Null,
                    (Some(_), Payload::Json(v)) => v,
                    (Some(_), _) => {
                        return Err(err("event_time", "the record has no fields".into()));
                    }
                };
                Some(
                    window::event_time(et, fields, r.timestamp)
                        .map_err(|m| err("event_time", m))?,
                )
            }
            (true, _) => Some(
                windows::parse_event_time(&r.headers)
                    .or(r.timestamp)
                    .ok_or_else(|| err("event_time", "the record has no event time".into()))?,
            ),
            (false, _) => None,
        };
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
            event_time: event_time.filter(|_| from_source),
            ..Effect::default()
        };
        let output = match (record, &plan.aggregate) {
            (None, _) => None,
            (Some(rec), Some(_)) if from_source && plan.repartition => {
                let bytes = codec::encode(Format::Json, &rec.value, &self.config.schemas)
                    .map_err(|e| err("repartition", e.to_string()))?;
                let event = match (event_time, &self.pipeline.source.event_time) {
                    (Some(ts), Some(et)) => {
                        let wm = window::watermark_after(et, task.max_event_time.max(ts));
                        Some((ts, windows::format_watermark(r.partition, wm)))
                    }
                    _ => None,
                };
                // the headers `send_out` adds, counted as the producer counts them
                let headers = event.as_ref().map_or(0, |(ts, wm)| {
                    windows::EVENT_TIME_HEADER.len()
                        + ts.to_string().len()
                        + windows::WATERMARK_HEADER.len()
                        + wm.len()
                        + 20
                });
                self.producer
                    .check_size_with(rec.key.as_deref(), &bytes, headers)
                    .map_err(|e| err("produce", e.to_string()))?;
                effect.sends.push(Out {
                    dest: Dest::Repartition,
                    key: rec.key,
                    value: bytes,
                    event,
                });
                return Ok(effect);
            }
            (Some(rec), Some(agg)) => {
                let state = task
                    .state
                    .as_ref()
                    .ok_or_else(|| err("aggregate", "task has no state".into()))?;
                let step_err = |e: RecordError| {
                    let e = RecordError {
                        index: Some(0),
                        ..e
                    };
                    Self::step_error(r, e, std::slice::from_ref(&agg.on_error))
                };
                // no key, no keyed state: never group keyless records under one empty key
                let Some(key) = rec.key.as_deref() else {
                    return Err(step_err(RecordError {
                        step: agg.kind.name(),
                        message: "record has no key to group by".into(),
                        index: None,
                    }));
                };
                match (&agg.window, event_time, task.windows.as_ref()) {
                    (Some(w), Some(ts), Some(wt)) => {
                        // the input's watermark: its own, or the one its source sent along
                        effect.watermark = if from_source {
                            self.pipeline
                                .source
                                .event_time
                                .as_ref()
                                .map(|et| (r.partition, window::watermark_after(et, ts)))
                        } else {
                            windows::parse_watermark(&r.headers)
                        };
                        let current = wt.watermarks.current();
                        let mut outputs = Vec::new();
                        if let Some(gap) = w.gap_ms {
                            let ns = |k: &[u8]| namespaced(&agg.id, k);
                            let (lo, hi) = session::index_range(key);
                            let mut sessions = Vec::new();
                            state.range(&ns(&lo), &ns(&hi), |k, v| {
                                if let (Some(s), Ok(e)) =
                                    (session::start_of_index_key(k), <[u8; 8]>::try_from(v))
                                {
                                    sessions.push((s, i64::from_be_bytes(e)));
                                }
                                Ok(true)
                            })?;
                            let ((start, end), absorbed) = session::merge(&sessions, ts, gap);
                            if window::is_closed(w, end, current) {
                                effect.late = true;
                                self.check_late(r, w)?;
                                return Ok(effect);
                            }
                            let mut merged: Option<Vec<u8>> = None;
                            for i in absorbed {
                                let (s, e) = sessions[i];
                                let wkey = ns(&window::window_key(e, key));
                                let stored = state.get(&wkey)?.unwrap_or_default();
                                let (_, st) = session::split_value(&stored).ok_or_else(|| {
                                    err("aggregate", "stored session is corrupt".into())
                                })?;
                                merged = Some(match merged {
                                    None => st.to_vec(),
                                    Some(m) => operator::merge_states(&agg.kind, &m, st)
                                        .map_err(step_err)?,
                                });
                                effect.deletes.push(wkey);
                                effect.deletes.push(ns(&session::index_key(key, s)));
                            }
                            let (next, out) = operator::aggregate(agg, merged.as_deref(), &rec)
                                .map_err(step_err)?;
                            effect.puts.push((
                                ns(&window::window_key(end, key)),
                                session::value(start, &next),
                            ));
                            effect.puts.push((
                                ns(&session::index_key(key, start)),
                                end.to_be_bytes().to_vec(),
                            ));
                            if agg.emit == Emit::EveryUpdate {
                                outputs.push(operator::with_window(out, start, end));
                            }
                        }
                        let open: Vec<(i64, i64)> = if w.gap_ms.is_some() {
                            Vec::new()
                        } else {
                            window::windows_of(w, ts)
                                .into_iter()
                                .filter(|(_, end)| !window::is_closed(w, *end, current))
                                .collect()
                        };
                        effect.late = w.gap_ms.is_none() && open.is_empty();
                        if effect.late {
                            self.check_late(r, w)?;
                        }
                        for (start, end) in open {
                            let skey = namespaced(&agg.id, &window::window_key(end, key));
                            let previous = state.get(&skey)?;
                            let (next, out) = operator::aggregate(agg, previous.as_deref(), &rec)
                                .map_err(step_err)?;
                            effect.puts.push((skey, next));
                            if agg.emit == Emit::EveryUpdate {
                                outputs.push(operator::with_window(out, start, end));
                            }
                        }
                        for out in outputs {
                            if let Some(out) = operator::apply_steps(&plan.after, out)
                                .map_err(|e| Self::step_error(r, e, &plan.after_on_error))?
                            {
                                effect.sends.push(self.encode_out(r, out)?);
                            }
                        }
                        return Ok(effect);
                    }
                    _ => match &agg.kind {
                        AggregateKind::Join { into, inner, .. } => {
                            let row = state.get(&namespaced(&agg.id, &join::row_key(key)))?;
                            match join::enrich(rec, into, row.as_deref(), *inner)
                                .map_err(step_err)?
                            {
                                None => None,
                                Some(out) => operator::apply_steps(&plan.after, out)
                                    .map_err(|e| Self::step_error(r, e, &plan.after_on_error))?,
                            }
                        }
                        AggregateKind::StreamJoin { .. } => {
                            let (Some(ts), Payload::Json(value)) = (event_time, &rec.value) else {
                                return Err(err(
                                    "stream_join",
                                    "the record has no event time or no fields".into(),
                                ));
                            };
                            // this stream's watermark, as for windows: its own, or its source's
                            effect.watermark = if from_source {
                                self.pipeline
                                    .source
                                    .event_time
                                    .as_ref()
                                    .map(|et| (r.partition, window::watermark_after(et, ts)))
                            } else {
                                windows::parse_watermark(&r.headers)
                            };
                            let this_wm = task
                                .windows
                                .as_ref()
                                .map_or(window::NO_WATERMARK, |w| w.watermarks.current());
                            let Some(paired) = self.pair_up(
                                state,
                                Side::This,
                                (key, ts, (r.partition, r.offset)),
                                (value, this_wm),
                            )?
                            else {
                                effect.late = true;
                                return Ok(effect);
                            };
                            effect.puts = paired.puts;
                            for v in paired.outputs {
                                let out = Record {
                                    key: Some(key.to_vec()),
                                    value: Payload::Json(v),
                                };
                                if let Some(out) = operator::apply_steps(&plan.after, out)
                                    .map_err(|e| Self::step_error(r, e, &plan.after_on_error))?
                                {
                                    effect.sends.push(self.encode_out(r, out)?);
                                }
                            }
                            return Ok(effect);
                        }
                        AggregateKind::Custom { name } => {
                            let Some(op) = self.custom.as_ref() else {
                                return Err(err(
                                    "custom",
                                    format!("no operator is registered as {name:?}"),
                                ));
                            };
                            let Payload::Json(input) = &rec.value else {
                                return Err(err("custom", "the record has no fields".into()));
                            };
                            let skey = namespaced(&agg.id, &timers::value_key(key));
                            let previous = match state.get(&skey)? {
                                None => None,
                                Some(b) => Some(serde_json::from_slice(&b).map_err(|e| {
                                    err("custom", format!("stored state is corrupt: {e}"))
                                })?),
                            };
                            let now =
                                i64::try_from(crate::checkpoint::now_unix_ms()).unwrap_or(i64::MAX);
                            let mut ctx = custom::Context::new(key, previous, now);
                            op.process(&mut ctx, input).map_err(|m| {
                                step_err(RecordError {
                                    step: "custom",
                                    message: m,
                                    index: None,
                                })
                            })?;
                            let (next, timer_list, outputs) = ctx.finish();
                            match next {
                                Some(Some(v)) => {
                                    effect.puts.push((skey, v.to_string().into_bytes()))
                                }
                                Some(None) => effect.deletes.push(skey),
                                None => {}
                            }
                            for at in timer_list {
                                effect.puts.push((
                                    namespaced(&agg.id, &timers::timer_key(at, key)),
                                    Vec::new(),
                                ));
                            }
                            for v in outputs {
                                let out = Record {
                                    key: Some(key.to_vec()),
                                    value: Payload::Json(v),
                                };
                                if let Some(out) = operator::apply_steps(&plan.after, out)
                                    .map_err(|e| Self::step_error(r, e, &plan.after_on_error))?
                                {
                                    effect.sends.push(self.encode_out(r, out)?);
                                }
                            }
                            return Ok(effect);
                        }
                        AggregateKind::Dedupe { ttl_ms } => {
                            let ttl_ms = *ttl_ms;
                            let skey = namespaced(&agg.id, &dedupe::live_key(key));
                            let previous = state.get(&skey)?;
                            let now =
                                i64::try_from(crate::checkpoint::now_unix_ms()).unwrap_or(i64::MAX);
                            let Some(expiry) = dedupe::admit(previous.as_deref(), now, ttl_ms)
                            else {
                                return Ok(effect); // a duplicate
                            };
                            effect.puts.push((skey, expiry.to_be_bytes().to_vec()));
                            effect.puts.push((
                                namespaced(&agg.id, &dedupe::expiry_key(expiry, key)),
                                Vec::new(),
                            ));
                            operator::apply_steps(&plan.after, rec)
                                .map_err(|e| Self::step_error(r, e, &plan.after_on_error))?
                        }
                        _ if agg.ttl_ms.is_some() => {
                            // state TTL: `0 ‖ key → expiry ‖ state`, a timer per write
                            let ttl = agg.ttl_ms.unwrap_or_default();
                            let skey = namespaced(&agg.id, &timers::value_key(key));
                            let now =
                                i64::try_from(crate::checkpoint::now_unix_ms()).unwrap_or(i64::MAX);
                            let stored = state.get(&skey)?;
                            // the previous write's timer goes: one timer entry per key
                            if let Some(old) = stored.as_deref().and_then(dedupe::decode_expiry) {
                                effect
                                    .deletes
                                    .push(namespaced(&agg.id, &timers::timer_key(old, key)));
                            }
                            let previous = stored
                                .as_deref()
                                .and_then(|v| v.split_at_checked(8))
                                .filter(|(expiry, _)| {
                                    dedupe::decode_expiry(expiry).is_some_and(|e| e > now)
                                })
                                .map(|(_, st)| st);
                            let (next, out) =
                                operator::aggregate(agg, previous, &rec).map_err(step_err)?;
                            let expiry = now.saturating_add(ttl);
                            let mut value = expiry.to_be_bytes().to_vec();
                            value.extend_from_slice(&next);
                            effect.puts.push((skey, value));
                            effect.puts.push((
                                namespaced(&agg.id, &timers::timer_key(expiry, key)),
                                Vec::new(),
                            ));
                            operator::apply_steps(&plan.after, out)
                                .map_err(|e| Self::step_error(r, e, &plan.after_on_error))?
                        }
                        _ => {
                            let skey = namespaced(&agg.id, key);
                            let previous = state.get(&skey)?;
                            let (next, out) = operator::aggregate(agg, previous.as_deref(), &rec)
                                .map_err(step_err)?;
                            effect.puts.push((skey, next));
                            operator::apply_steps(&plan.after, out)
                                .map_err(|e| Self::step_error(r, e, &plan.after_on_error))?
                        }
                    },
                }
            }
            (Some(rec), None) => Some(rec),
        };
        if let Some(out) = output {
            effect.sends.push(self.encode_out(r, out)?);
        }
        Ok(effect)
    }

    /// An output for the sink: encoded and size-checked.
    fn encode_out(&self, r: &consumer::Record, out: Record) -> Result<Out> {
        let bytes = codec::encode(self.pipeline.sink.format, &out.value, &self.config.schemas)
            .map_err(|e| Self::record_error(r, "encode", e.to_string()))?;
        self.producer
            .check_size(out.key.as_deref(), &bytes)
            .map_err(|e| Self::record_error(r, "produce", e.to_string()))?;
        Ok(Out {
            dest: Dest::Sink,
            key: out.key,
            value: bytes,
            event: None,
        })
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
