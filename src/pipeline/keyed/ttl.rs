//! A running aggregate with a state TTL (Flink's `StateTtlConfig`: update on write, never
//! return expired): `0 ‖ key → expiry ‖ state`, and one timer per key (`pipeline/timers.rs`)
//! by which `task/timers.rs` deletes the expired.

use super::{Input, Step, StepError, ttl_now};
use crate::config::{Aggregate, TimeDomain};
use crate::pipeline::{dedupe, operator, timers};
use crate::state::{TaskState, namespaced};

pub struct Ttl<'a> {
    agg: &'a Aggregate,
    ttl_ms: i64,
}

impl<'a> Ttl<'a> {
    pub fn new(agg: &'a Aggregate) -> Self {
        Self {
            agg,
            ttl_ms: agg.ttl_ms.unwrap_or_default(),
        }
    }

    pub fn time(&self) -> TimeDomain {
        self.agg.ttl_time
    }

    pub fn step(&self, state: &TaskState, input: Input) -> Result<Step, StepError> {
        let id = &self.agg.id;
        let key = input.key();
        let skey = namespaced(id, &timers::value_key(key));
        let now = ttl_now(self.agg.ttl_time, &input)?;
        let stored = state.get(&skey)?;
        let mut step = Step::default();
        // the previous write's timer goes: one timer entry per key
        if let Some(old) = stored.as_deref().and_then(dedupe::decode_expiry) {
            step.deletes
                .push(namespaced(id, &timers::timer_key(old, key)));
        }
        let previous = stored
            .as_deref()
            .and_then(|v| v.split_at_checked(8))
            .filter(|(expiry, _)| dedupe::decode_expiry(expiry).is_some_and(|e| e > now))
            .map(|(_, st)| st);
        let (next, out) = operator::aggregate(self.agg, previous, &input.record)?;
        // an out-of-order record (event time) never brings the expiry forward
        let live_expiry = previous
            .and(stored.as_deref().and_then(dedupe::decode_expiry))
            .unwrap_or(i64::MIN);
        let expiry = now.saturating_add(self.ttl_ms).max(live_expiry);
        let mut value = expiry.to_be_bytes().to_vec();
        value.extend_from_slice(&next);
        step.puts.push((skey, value));
        step.puts
            .push((namespaced(id, &timers::timer_key(expiry, key)), Vec::new()));
        step.outputs.push(out);
        Ok(step)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::tests::{Harness, aggregate, json_of};
    use crate::config::AggregateKind;

    #[test]
    fn state_older_than_the_ttl_is_forgotten() {
        let mut agg = aggregate(AggregateKind::Count);
        agg.ttl_ms = Some(100);
        let mut h = Harness::new(&agg);
        h.now_ms = 1_000;
        h.run("a", json!({"user": "a"}));
        h.now_ms = 1_099;
        assert_eq!(
            json_of(&h.run("a", json!({"user": "a"}))),
            [json!({"user": "a", "out": 2})]
        );
        // the second write moved the expiry to 1_199
        h.now_ms = 1_199;
        assert_eq!(
            json_of(&h.run("a", json!({"user": "a"}))),
            [json!({"user": "a", "out": 1})]
        );
    }

    #[test]
    fn one_timer_per_key() {
        let mut agg = aggregate(AggregateKind::Count);
        agg.ttl_ms = Some(100);
        let mut h = Harness::new(&agg);
        for now in [10, 20, 30] {
            h.now_ms = now;
            h.run("a", json!({"user": "a"}));
        }
        let (lo, hi) = crate::pipeline::timers::due_range(i64::MAX - 1);
        assert_eq!(h.keys_between(&lo, &hi), 1);
    }
}
