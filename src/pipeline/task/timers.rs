//! Time in keyed state at run time, at each checkpoint: `dedupe` forgets keys whose time is up,
//! and custom operators' due timers fire; both by one range scan over time-ordered keys per
//! task (`pipeline/timers.rs` has the layout).

use super::Runner;
use crate::codec;
use crate::config::{AggregateKind, TimeDomain};
use crate::pipeline::keyed::{Keyed, StepError};
use crate::pipeline::operator;
use crate::pipeline::{Error, Result, dedupe, timers};
use crate::position::Partition;
use crate::state::{namespaced, split_namespaced};

/// Keys forgotten per task and checkpoint at most, so one checkpoint's pause stays bounded;
/// the rest go at the next ones (a lookup ignores expired entries meanwhile).
const MAX_EXPIRED_PER_CHECKPOINT: usize = 100_000;

impl Runner<'_> {
    pub(super) fn expire_state(&mut self) -> Result<()> {
        let pipeline = self.pipeline;
        let Some(agg) = pipeline.plan.aggregate.as_ref() else {
            return Ok(());
        };
        // dedupe's keys, and the state of aggregates with a ttl: both keep the expiry first
        if !matches!(agg.kind, AggregateKind::Dedupe { .. }) && agg.ttl_ms.is_none() {
            return Ok(());
        }
        let event_time = agg.ttl_time == TimeDomain::Event;
        let wall = timers::now_ms();
        let mut forgotten = 0usize;
        for task in self.tasks.values_mut() {
            let Some(state) = task.state.as_mut() else {
                continue;
            };
            // in event time, a task's "now" is its watermark: no record it may still get is
            // older, late ones aside (they find their key forgotten)
            let now = match (&task.windows, event_time) {
                (_, false) => wall,
                (Some(w), true) => w.watermarks.current(),
                (None, true) => continue,
            };
            let (from, to) = timers::due_range(now);
            let (from, to) = (namespaced(&agg.id, &from), namespaced(&agg.id, &to));
            let due = state.keys_in(&from, &to, MAX_EXPIRED_PER_CHECKPOINT)?;
            for index_key in due {
                let Some((_, key)) = split_namespaced(&index_key)
                    .and_then(|(_, inner)| timers::split_timer_key(inner))
                else {
                    continue;
                };
                let live = namespaced(&agg.id, &timers::value_key(key));
                // the key may have been admitted again since: keep a newer entry
                let current = state.get(&live)?;
                if current
                    .as_deref()
                    .and_then(dedupe::decode_expiry)
                    .is_none_or(|e| e <= now)
                {
                    state.delete(&live)?;
                }
                state.delete(&index_key)?;
                forgotten += 1;
            }
        }
        if forgotten > 0 {
            tracing::debug!(pipeline = %pipeline.name, forgotten, "expired keys forgotten");
        }
        Ok(())
    }

    /// Whether a custom operator has a timer due (so an idle pipeline still checkpoints, and
    /// the timer fires within an interval of its time).
    pub(super) fn timer_due(&self) -> Result<bool> {
        let (Some(agg), Some(_)) = (
            self.pipeline.plan.aggregate.as_ref(),
            self.keyed.as_ref().and_then(Keyed::custom),
        ) else {
            return Ok(false);
        };
        let now = timers::now_ms();
        let (from, to) = timers::due_range(now);
        let (from, to) = (namespaced(&agg.id, &from), namespaced(&agg.id, &to));
        let mut due = false;
        for task in self.tasks.values() {
            if let Some(state) = &task.state {
                state.range(&from, &to, |_, _| {
                    due = true;
                    Ok(false)
                })?;
            }
            if due {
                break;
            }
        }
        Ok(due)
    }

    /// Custom operators' timers due now (processing time) or at the task's watermark (event
    /// time): `on_timer` / `on_event_timer`, its state changes and outputs (into the open
    /// transaction), and the timer deleted. At most `MAX_EXPIRED_PER_CHECKPOINT` of each per task.
    pub(super) fn fire_timers(&mut self) -> Result<()> {
        let pipeline = self.pipeline;
        let (Some(agg), Some(op)) = (
            pipeline.plan.aggregate.as_ref(),
            self.keyed.as_ref().and_then(Keyed::custom),
        ) else {
            return Ok(());
        };
        let now = timers::now_ms();
        let ns =
            |(from, to): (Vec<u8>, Vec<u8>)| (namespaced(&agg.id, &from), namespaced(&agg.id, &to));
        let (from, to) = ns(timers::due_range(now));
        let mut outputs: Vec<(Option<Vec<u8>>, Vec<u8>)> = Vec::new();
        for (p, task) in &mut self.tasks {
            let Some(state) = task.state.as_mut() else {
                continue;
            };
            let watermark = task.windows.as_ref().map(|w| w.watermarks.current());
            let mut due: Vec<(Vec<u8>, bool)> = state
                .keys_in(&from, &to, MAX_EXPIRED_PER_CHECKPOINT)?
                .into_iter()
                .map(|k| (k, false))
                .collect();
            if let Some(wm) = watermark {
                let (efrom, eto) = ns(timers::event_due_range(wm));
                due.extend(
                    state
                        .keys_in(&efrom, &eto, MAX_EXPIRED_PER_CHECKPOINT)?
                        .into_iter()
                        .map(|k| (k, true)),
                );
            }
            for (timer, event_time) in due {
                let Some((at, key)) =
                    split_namespaced(&timer).and_then(|(_, inner)| timers::split_timer_key(inner))
                else {
                    continue;
                };
                let key = key.to_vec();
                let fail = |message: String| Error::Timer {
                    partition: Partition::clone(p),
                    key: String::from_utf8_lossy(&key).into_owned(),
                    at,
                    message,
                };
                let step = match op.fire(state, &key, (at, event_time), (now, watermark)) {
                    Ok(step) => step,
                    Err(StepError::State(e)) => return Err(e.into()),
                    Err(StepError::Operator(e)) => return Err(fail(e.message)),
                    Err(StepError::Record { message, .. }) => return Err(fail(message)),
                };
                state.delete(&timer)?;
                for k in &step.deletes {
                    state.delete(k)?;
                }
                for (k, v) in &step.puts {
                    state.put(k, v)?;
                }
                for out in step.outputs {
                    let Some(out) = operator::apply_steps(&pipeline.plan.after, out)
                        .map_err(|e| fail(e.to_string()))?
                    else {
                        continue;
                    };
                    let bytes = codec::encode(pipeline.sink.format, &out.value, &self.schemas)
                        .map_err(|e| fail(e.to_string()))?;
                    self.txn
                        .check_size(&pipeline.sink.topic, out.key.as_deref(), &bytes)
                        .map_err(|e| fail(e.to_string()))?;
                    outputs.push((out.key, bytes));
                }
            }
        }
        for (key, bytes) in outputs {
            self.txn
                .send(&pipeline.sink.topic, key.as_deref(), &bytes)?;
        }
        Ok(())
    }
}
