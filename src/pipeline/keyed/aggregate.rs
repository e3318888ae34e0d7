//! A running aggregate (count, sum, min, max, avg, first, last, count_distinct, collect): one
//! state per key, `key → state`, and the new result after every record.

use super::{Input, Step, StepError};
use crate::config::Aggregate;
use crate::pipeline::operator;
use crate::state::{TaskState, namespaced};

pub struct Running<'a> {
    agg: &'a Aggregate,
}

impl<'a> Running<'a> {
    pub fn new(agg: &'a Aggregate) -> Self {
        Self { agg }
    }

    pub fn step(&self, state: &TaskState, input: Input) -> Result<Step, StepError> {
        let skey = namespaced(&self.agg.id, input.key());
        let previous = state.get(&skey)?;
        let (next, out) = operator::aggregate(self.agg, previous.as_deref(), &input.record)?;
        Ok(Step {
            puts: vec![(skey, next)],
            outputs: vec![out],
            ..Step::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::tests::{Harness, aggregate, json_of};
    use crate::config::AggregateKind;

    #[test]
    fn counts_each_key_on_its_own() {
        let agg = aggregate(AggregateKind::Count);
        let mut h = Harness::new(&agg);
        assert_eq!(
            json_of(&h.run("a", json!({"user": "a"}))),
            [json!({"user": "a", "out": 1})]
        );
        assert_eq!(
            json_of(&h.run("b", json!({"user": "b"}))),
            [json!({"user": "b", "out": 1})]
        );
        assert_eq!(
            json_of(&h.run("a", json!({"user": "a"}))),
            [json!({"user": "a", "out": 2})]
        );
    }

    #[test]
    fn a_bad_field_is_the_operators_error_and_writes_nothing() {
        let agg = aggregate(AggregateKind::Sum { field: "n".into() });
        let mut h = Harness::new(&agg);
        h.run("a", json!({"user": "a", "n": 2}));
        let e = h.try_run("a", json!({"user": "a", "n": "x"})).err();
        assert!(
            matches!(e, Some(super::StepError::Operator(ref r)) if r.step == "sum"),
            "{e:?}"
        );
        assert_eq!(
            json_of(&h.run("a", json!({"user": "a", "n": 3}))),
            [json!({"user": "a", "out": 5})]
        );
    }
}
