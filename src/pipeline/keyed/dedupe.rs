//! Dedupe within a TTL (`pipeline/dedupe.rs` has the layout): the first record of a key passes
//! and is remembered until the TTL after it; the others meanwhile are dropped.

use super::{Input, Step, StepError, ttl_now};
use crate::config::{Aggregate, TimeDomain};
use crate::pipeline::{dedupe, timers};
use crate::state::{TaskState, namespaced};

pub struct Dedupe<'a> {
    agg: &'a Aggregate,
    ttl_ms: i64,
}

impl<'a> Dedupe<'a> {
    pub fn new(agg: &'a Aggregate, ttl_ms: i64) -> Self {
        Self { agg, ttl_ms }
    }

    pub fn time(&self) -> TimeDomain {
        self.agg.ttl_time
    }

    pub fn step(&self, state: &TaskState, input: Input) -> Result<Step, StepError> {
        let id = &self.agg.id;
        let key = input.key();
        let skey = namespaced(id, &timers::value_key(key));
        let previous = state.get(&skey)?;
        let now = ttl_now(self.agg.ttl_time, &input)?;
        let Some(expiry) = dedupe::admit(previous.as_deref(), now, self.ttl_ms) else {
            return Ok(Step::default()); // a duplicate
        };
        let timer = namespaced(id, &timers::timer_key(expiry, key));
        Ok(Step {
            puts: vec![(skey, expiry.to_be_bytes().to_vec()), (timer, Vec::new())],
            outputs: vec![input.record],
            ..Step::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::tests::{Harness, aggregate, json_of};
    use crate::config::{AggregateKind, TimeDomain};

    #[test]
    fn the_first_passes_and_duplicates_drop_until_the_ttl() {
        let agg = aggregate(AggregateKind::Dedupe { ttl_ms: 50 });
        let mut h = Harness::new(&agg);
        h.now_ms = 100;
        assert_eq!(json_of(&h.run("a", json!({"n": 1}))), [json!({"n": 1})]);
        h.now_ms = 149;
        assert!(h.run("a", json!({"n": 2})).is_empty());
        assert_eq!(json_of(&h.run("b", json!({"n": 3}))), [json!({"n": 3})]);
        h.now_ms = 150;
        assert_eq!(json_of(&h.run("a", json!({"n": 4}))), [json!({"n": 4})]);
    }

    #[test]
    fn in_event_time_the_records_own_time_counts() {
        let mut agg = aggregate(AggregateKind::Dedupe { ttl_ms: 50 });
        agg.ttl_time = TimeDomain::Event;
        let mut h = Harness::new(&agg);
        h.now_ms = 1_000_000; // ignored
        assert_eq!(h.run_at("a", json!({"n": 1}), 10).outputs.len(), 1);
        assert!(h.run_at("a", json!({"n": 2}), 59).outputs.is_empty());
        assert_eq!(h.run_at("a", json!({"n": 3}), 60).outputs.len(), 1);
        let e = h.try_run("a", json!({"n": 4})).err();
        assert!(
            matches!(
                e,
                Some(super::StepError::Record {
                    stage: "event_time",
                    ..
                })
            ),
            "{e:?}"
        );
    }
}
