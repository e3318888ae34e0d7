//! The keyed step of a record at its stateful task: an aggregate (running, windowed, session,
//! with a TTL), dedupe, a join (table or stream) or a custom operator. It reads the key's state
//! and writes nothing: what the record does goes into its [`Effect`], applied by
//! `task/record.rs` only once everything of the record has succeeded.

use serde_json::Value;

use super::record::{Effect, Out};
use super::{Runner, Task, windows};
use crate::codec::Payload;
use crate::config::{Aggregate, AggregateKind, Emit, TimeDomain};
use crate::kafka::consumer;
use crate::pipeline::operator::{self, Record, RecordError};
use crate::pipeline::stream_join::Side;
use crate::pipeline::window::{self, session};
use crate::pipeline::{Result, custom, dedupe, join, timers};
use crate::state::namespaced;

impl Runner<'_> {
    /// `rec`'s keyed step; the output it hands on to the `after` steps and the sink, if any
    /// (outputs it makes itself, as windows and joins do, go into `effect` directly).
    pub(super) fn keyed(
        &self,
        r: &consumer::Record,
        task: &Task,
        rec: Record,
        agg: &Aggregate,
        (event_time, from_source): (Option<i64>, bool),
        effect: &mut Effect,
    ) -> Result<Option<Record>> {
        let plan = &self.pipeline.plan;
        let err = |stage, message: String| Self::record_error(r, stage, message);
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
        Ok(match (&agg.window, event_time, task.windows.as_ref()) {
            (Some(w), Some(ts), Some(wt)) => {
                effect.watermark = self.input_watermark(r, ts, from_source);
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
                        return Ok(None);
                    }
                    let mut merged: Option<Vec<u8>> = None;
                    for i in absorbed {
                        let (s, e) = sessions[i];
                        let wkey = ns(&window::window_key(e, key));
                        let stored = state.get(&wkey)?.unwrap_or_default();
                        let (_, st) = session::split_value(&stored)
                            .ok_or_else(|| err("aggregate", "stored session is corrupt".into()))?;
                        merged = Some(match merged {
                            None => st.to_vec(),
                            Some(m) => {
                                operator::merge_states(&agg.kind, &m, st).map_err(step_err)?
                            }
                        });
                        effect.deletes.push(wkey);
                        effect.deletes.push(ns(&session::index_key(key, s)));
                    }
                    let (next, out) =
                        operator::aggregate(agg, merged.as_deref(), &rec).map_err(step_err)?;
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
                    let (next, out) =
                        operator::aggregate(agg, previous.as_deref(), &rec).map_err(step_err)?;
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
                return Ok(None);
            }
            _ => match &agg.kind {
                AggregateKind::Join { into, inner, .. } => {
                    let row = state.get(&namespaced(&agg.id, &join::row_key(key)))?;
                    match join::enrich(rec, into, row.as_deref(), *inner).map_err(step_err)? {
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
                    effect.watermark = self.input_watermark(r, ts, from_source);
                    let this_wm = task
                        .windows
                        .as_ref()
                        .map_or(window::NO_WATERMARK, |w| w.watermarks.current());
                    let Some(paired) = self.pair_up(
                        state,
                        Side::This,
                        (key, ts, (r.partition, r.offset)),
                        (value, this_wm, self.other_idle(task)),
                    )?
                    else {
                        effect.late = true;
                        return Ok(None);
                    };
                    effect.puts = paired.puts;
                    self.emit_values(r, key, paired.outputs, effect)?;
                    return Ok(None);
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
                    let previous =
                        match state.get(&skey)? {
                            None => None,
                            Some(b) => Some(serde_json::from_slice(&b).map_err(|e| {
                                err("custom", format!("stored state is corrupt: {e}"))
                            })?),
                        };
                    let mut ctx = custom::Context::new(key, previous, timers::now_ms());
                    if let Some(ts) = event_time {
                        effect.watermark = self.input_watermark(r, ts, from_source);
                        let wm = task
                            .windows
                            .as_ref()
                            .map_or(window::NO_WATERMARK, |w| w.watermarks.current());
                        ctx = ctx.with_event_time(Some(ts), wm);
                    }
                    op.process(&mut ctx, input).map_err(|m| {
                        step_err(RecordError {
                            step: "custom",
                            message: m,
                            index: None,
                        })
                    })?;
                    let (next, timer_list, outputs) = ctx.finish();
                    match next {
                        Some(Some(v)) => effect.puts.push((skey, v.to_string().into_bytes())),
                        Some(None) => effect.deletes.push(skey),
                        None => {}
                    }
                    for t in timer_list {
                        let tkey = match t {
                            custom::Timer::Processing(at) => timers::timer_key(at, key),
                            custom::Timer::Event(at) => timers::event_timer_key(at, key),
                        };
                        effect.puts.push((namespaced(&agg.id, &tkey), Vec::new()));
                    }
                    self.emit_values(r, key, outputs, effect)?;
                    return Ok(None);
                }
                AggregateKind::Dedupe { ttl_ms } => {
                    let ttl_ms = *ttl_ms;
                    let skey = namespaced(&agg.id, &timers::value_key(key));
                    let previous = state.get(&skey)?;
                    let now = self.ttl_now(r, agg, (event_time, from_source), effect)?;
                    let Some(expiry) = dedupe::admit(previous.as_deref(), now, ttl_ms) else {
                        return Ok(None); // a duplicate
                    };
                    effect.puts.push((skey, expiry.to_be_bytes().to_vec()));
                    effect.puts.push((
                        namespaced(&agg.id, &timers::timer_key(expiry, key)),
                        Vec::new(),
                    ));
                    operator::apply_steps(&plan.after, rec)
                        .map_err(|e| Self::step_error(r, e, &plan.after_on_error))?
                }
                _ if agg.ttl_ms.is_some() => {
                    // state TTL: `0 ‖ key → expiry ‖ state`, a timer per write
                    let ttl = agg.ttl_ms.unwrap_or_default();
                    let skey = namespaced(&agg.id, &timers::value_key(key));
                    let now = self.ttl_now(r, agg, (event_time, from_source), effect)?;
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
                    let (next, out) = operator::aggregate(agg, previous, &rec).map_err(step_err)?;
                    // an out-of-order record (event time) never brings the expiry forward
                    let live_expiry = previous
                        .and(stored.as_deref().and_then(dedupe::decode_expiry))
                        .unwrap_or(i64::MIN);
                    let expiry = now.saturating_add(ttl).max(live_expiry);
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
                    let (next, out) =
                        operator::aggregate(agg, previous.as_deref(), &rec).map_err(step_err)?;
                    effect.puts.push((skey, next));
                    operator::apply_steps(&plan.after, out)
                        .map_err(|e| Self::step_error(r, e, &plan.after_on_error))?
                }
            },
        })
    }

    /// The watermark `r` brings its task: its source partition's after event time `ts`, or the
    /// one its source task sent along through the repartition topic.
    fn input_watermark(
        &self,
        r: &consumer::Record,
        ts: i64,
        from_source: bool,
    ) -> Option<(i32, i64)> {
        if from_source {
            let et = self.pipeline.source.event_time.as_ref()?;
            Some((r.partition, window::watermark_after(et, ts)))
        } else {
            windows::parse_watermark(&r.headers)
        }
    }

    /// The time a TTL counts from for `r`: now, or in event time the record's own (so the
    /// result does not depend on when the record was processed), and then its watermark too.
    fn ttl_now(
        &self,
        r: &consumer::Record,
        agg: &Aggregate,
        (event_time, from_source): (Option<i64>, bool),
        effect: &mut Effect,
    ) -> Result<i64> {
        if agg.ttl_time == TimeDomain::Processing {
            return Ok(timers::now_ms());
        }
        let ts = event_time
            .ok_or_else(|| Self::record_error(r, "event_time", "the record has no event time"))?;
        effect.watermark = self.input_watermark(r, ts, from_source);
        Ok(ts)
    }

    /// Values an operator made for `key`: through the `after` steps, encoded, size-checked.
    fn emit_values(
        &self,
        r: &consumer::Record,
        key: &[u8],
        values: impl IntoIterator<Item = Value>,
        effect: &mut Effect,
    ) -> Result<()> {
        let plan = &self.pipeline.plan;
        for v in values {
            let out = Record {
                key: Some(key.to_vec()),
                value: Payload::Json(v),
            };
            if let Some(out) = operator::apply_steps(&plan.after, out)
                .map_err(|e| Self::step_error(r, e, &plan.after_on_error))?
            {
                let out: Out = self.encode_out(r, out)?;
                effect.sends.push(out);
            }
        }
        Ok(())
    }
}
