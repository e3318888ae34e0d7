//! The stream-table join (`pipeline/table_join.rs` has the layout): the record gets its key's row,
//! which `task/table_join.rs` reads from the table topic into the same state.

use super::{Input, Step, StepError};
use crate::config::Aggregate;
use crate::pipeline::table_join;
use crate::state::{TaskState, namespaced};

pub struct TableJoin<'a> {
    agg: &'a Aggregate,
    into: &'a str,
    inner: bool,
}

impl<'a> TableJoin<'a> {
    pub fn new(agg: &'a Aggregate, into: &'a str, inner: bool) -> Self {
        Self { agg, into, inner }
    }

    pub fn step(&self, state: &TaskState, input: Input) -> Result<Step, StepError> {
        let row = state.get(&namespaced(&self.agg.id, &table_join::row_key(input.key())))?;
        let joined = table_join::enrich(input.record, self.into, row.as_deref(), self.inner)?;
        Ok(Step {
            outputs: joined.into_iter().collect(),
            ..Step::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::tests::{Harness, aggregate, json_of};
    use crate::config::{AggregateKind, Format};
    use crate::pipeline::table_join;
    use crate::state::namespaced;

    fn join_agg(inner: bool) -> crate::config::Aggregate {
        aggregate(AggregateKind::Join {
            table: "users".into(),
            into: "user".into(),
            inner,
            format: Format::Json,
        })
    }

    #[test]
    fn a_record_gets_its_keys_row() {
        let agg = join_agg(false);
        let mut h = Harness::new(&agg);
        h.put(
            &namespaced(&agg.id, &table_join::row_key(b"a")),
            br#"{"name":"Ann"}"#,
        );
        assert_eq!(
            json_of(&h.run("a", json!({"n": 1}))),
            [json!({"n": 1, "user": {"name": "Ann"}})]
        );
        assert_eq!(
            json_of(&h.run("b", json!({"n": 2}))),
            [json!({"n": 2, "user": null})]
        );
    }

    #[test]
    fn an_inner_join_drops_a_record_without_a_row() {
        let agg = join_agg(true);
        let mut h = Harness::new(&agg);
        assert!(h.run("b", json!({"n": 2})).is_empty());
    }
}
