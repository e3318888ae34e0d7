//! A custom operator (`pipeline/custom.rs` has its API): the key's JSON state at `0 ‖ key`,
//! its timers in the layout of `pipeline/timers.rs` (fired by `task/timers.rs`), and what it
//! emits.

use std::sync::Arc;

use serde_json::Value;

use super::{Input, Step, StepError, record_error};
use crate::codec::Payload;
use crate::config::Aggregate;
use crate::pipeline::custom::{Context, KeyedOperator, Timer};
use crate::pipeline::operator::{Record, RecordError};
use crate::pipeline::timers;
use crate::state::{TaskState, namespaced};

pub struct Custom<'a> {
    agg: &'a Aggregate,
    operator: Arc<dyn KeyedOperator>,
}

impl<'a> Custom<'a> {
    pub fn new(agg: &'a Aggregate, operator: Arc<dyn KeyedOperator>) -> Self {
        Self { agg, operator }
    }

    pub fn step(&self, state: &TaskState, input: Input) -> Result<Step, StepError> {
        let Payload::Json(value) = &input.record.value else {
            return Err(record_error("custom", "the record has no fields"));
        };
        let key = input.key();
        let skey = namespaced(&self.agg.id, &timers::value_key(key));
        let previous = match state.get(&skey)? {
            None => None,
            Some(b) => Some(
                serde_json::from_slice(&b)
                    .map_err(|e| record_error("custom", format!("stored state is corrupt: {e}")))?,
            ),
        };
        let mut ctx = Context::new(key, previous, input.now_ms);
        if let Some(ts) = input.event_time {
            ctx = ctx.with_event_time(Some(ts), input.watermark);
        }
        self.operator.process(&mut ctx, value).map_err(|message| {
            StepError::Operator(RecordError {
                step: "custom",
                message,
                index: None,
            })
        })?;
        let (next, timer_list, outputs) = ctx.finish();
        Ok(self.effects(key, skey, (next, timer_list, outputs)))
    }

    /// A timer of `key` at `at` fired (`event_time`: one of event time): what the operator's
    /// `on_timer` or `on_event_timer` does. Deleting the fired timer is the caller's.
    pub fn fire(
        &self,
        state: &TaskState,
        key: &[u8],
        (at, event_time): (i64, bool),
        (now_ms, watermark): (i64, Option<i64>),
    ) -> Result<Step, StepError> {
        let fail = |message: String| {
            StepError::Operator(RecordError {
                step: "custom",
                message,
                index: None,
            })
        };
        let skey = namespaced(&self.agg.id, &timers::value_key(key));
        let previous = match state.get(&skey)? {
            None => None,
            Some(b) => Some(
                serde_json::from_slice(&b)
                    .map_err(|e| fail(format!("stored state is corrupt: {e}")))?,
            ),
        };
        let mut ctx = Context::new(key, previous, now_ms);
        if let Some(wm) = watermark {
            ctx = ctx.with_event_time(None, wm);
        }
        let fired = crate::pipeline::catch_panic(|| {
            if event_time {
                self.operator.on_event_timer(&mut ctx, at)
            } else {
                self.operator.on_timer(&mut ctx, at)
            }
        });
        fired
            .map_err(|m| format!("panicked: {m}"))
            .and_then(|r| r)
            .map_err(fail)?;
        Ok(self.effects(key, skey, ctx.finish()))
    }

    /// What the operator did through its context: the key's state set or cleared, timers
    /// set, records emitted.
    fn effects(
        &self,
        key: &[u8],
        skey: Vec<u8>,
        (next, timer_list, outputs): (Option<Option<Value>>, Vec<Timer>, Vec<Value>),
    ) -> Step {
        let mut step = Step::default();
        match next {
            Some(Some(v)) => step.puts.push((skey, v.to_string().into_bytes())),
            Some(None) => step.deletes.push(skey),
            None => {}
        }
        for t in timer_list {
            let tkey = match t {
                Timer::Processing(at) => timers::timer_key(at, key),
                Timer::Event(at) => timers::event_timer_key(at, key),
            };
            step.puts
                .push((namespaced(&self.agg.id, &tkey), Vec::new()));
        }
        step.outputs = outputs
            .into_iter()
            .map(|v| Record {
                key: Some(key.to_vec()),
                value: Payload::Json(v),
            })
            .collect();
        step
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::{Value, json};

    use super::super::Keyed;
    use super::super::tests::{Harness, aggregate, json_of};
    use crate::config::AggregateKind;
    use crate::pipeline::custom::{Context, KeyedOperator};

    /// Sums `n` per key, emits the sum at 10 and more, and sets a timer a second on.
    struct Threshold;

    impl KeyedOperator for Threshold {
        fn process(&self, ctx: &mut Context, record: &Value) -> Result<(), String> {
            let n = record["n"].as_i64().ok_or("no n")?;
            let sum = ctx.state().and_then(Value::as_i64).unwrap_or(0) + n;
            ctx.set_state(json!(sum));
            if sum >= 10 {
                ctx.emit(json!({"key": ctx.key_text(), "sum": sum}));
                ctx.clear_state();
            }
            ctx.set_timer(ctx.now_ms() + 1_000);
            Ok(())
        }
    }

    #[test]
    fn state_outputs_and_timers_are_the_operators() {
        let agg = aggregate(AggregateKind::Custom {
            name: "threshold".into(),
        });
        let keyed = Keyed::new(&agg, None, Some(Arc::new(Threshold)));
        let Some(keyed) = keyed else {
            panic!("no operator");
        };
        let mut h = Harness::with(keyed);
        h.now_ms = 5;
        assert!(h.run("a", json!({"n": 4})).is_empty());
        let step = h.run_step("a", json!({"n": 7}));
        assert_eq!(json_of(&step.outputs), [json!({"key": "a", "sum": 11})]);
        assert_eq!(step.deletes.len(), 1, "cleared state");
        let (lo, hi) = crate::pipeline::timers::due_range(1_005);
        assert_eq!(h.keys_between(&lo, &hi), 1, "one timer per distinct time");
        let e = h.try_run("a", json!({"m": 1})).err();
        assert!(
            matches!(e, Some(super::StepError::Operator(ref r)) if r.message == "no n"),
            "{e:?}"
        );
    }

    /// Sums `n` per key; a timer ten ms on sends the sum out and clears it.
    struct Flush;

    impl KeyedOperator for Flush {
        fn process(&self, ctx: &mut Context, record: &Value) -> Result<(), String> {
            let sum = ctx.state().and_then(Value::as_i64).unwrap_or(0)
                + record["n"].as_i64().unwrap_or(0);
            ctx.set_state(json!(sum));
            ctx.set_timer(ctx.now_ms() + 10);
            Ok(())
        }

        fn on_timer(&self, ctx: &mut Context, at_ms: i64) -> Result<(), String> {
            let sum = ctx.state().cloned().unwrap_or(Value::Null);
            ctx.emit(json!({"key": ctx.key_text(), "sum": sum, "at": at_ms}));
            ctx.clear_state();
            Ok(())
        }
    }

    #[test]
    fn a_fired_timer_is_the_operators_on_timer() {
        let agg = aggregate(AggregateKind::Custom {
            name: "flush".into(),
        });
        let Some(keyed) = Keyed::new(&agg, None, Some(Arc::new(Flush))) else {
            panic!("no operator");
        };
        let mut h = Harness::with(keyed);
        h.now_ms = 5;
        h.run("a", json!({"n": 3}));
        h.run("a", json!({"n": 4}));
        let Some(op) = h.keyed().custom() else {
            panic!("not a custom operator");
        };
        let step = op.fire(h.state(), b"a", (15, false), (15, None));
        let Ok(step) = step else {
            panic!("{step:?}");
        };
        assert_eq!(
            json_of(&step.outputs),
            [json!({"key": "a", "sum": 7, "at": 15})]
        );
        assert_eq!(step.deletes.len(), 1, "the state is cleared");
        assert!(step.puts.is_empty(), "no new timer");
    }
}
