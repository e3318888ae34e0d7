//! What the operator kinds' unit tests share: an operator over the memory backend, fed one
//! record at a time, whose steps are applied as the runner applies them.

use serde_json::Value;

use super::{Input, Keyed, Step, StepError};
use crate::codec::Payload;
use crate::config::{Aggregate, AggregateKind, Emit, TimeDomain, Window};
use crate::pipeline::operator::Record;
use crate::pipeline::window::NO_WATERMARK;
use crate::state::{TaskState, namespaced};

/// The operator's id: its state namespace.
const ID: &str = "agg";

/// An aggregate of `kind` keyed by field `user`, with output field `out`, emitting updates.
pub fn aggregate(kind: AggregateKind) -> Aggregate {
    Aggregate {
        id: ID.into(),
        kind,
        key_field: "user".into(),
        output: "out".into(),
        on_error: None,
        emit: Emit::EveryUpdate,
        window: None,
        ttl_ms: None,
        ttl_time: TimeDomain::Processing,
    }
}

/// Windows of `size_ms` every `advance_ms`, closing at their end; emitting on close.
pub fn window(size_ms: i64, advance_ms: i64) -> Window {
    Window {
        size_ms,
        advance_ms,
        gap_ms: None,
        allowed_lateness_ms: 0,
        late_topic: None,
    }
}

pub fn json_of(records: &[Record]) -> Vec<Value> {
    records
        .iter()
        .map(|r| match &r.value {
            Payload::Json(v) => v.clone(),
            other => Value::String(format!("{other:?}")),
        })
        .collect()
}

pub struct Harness<'a> {
    keyed: Keyed<'a>,
    state: TaskState,
    pub watermark: i64,
    pub now_ms: i64,
    pub other_idle: bool,
    offset: i64,
}

impl<'a> Harness<'a> {
    pub fn new(agg: &'a Aggregate) -> Self {
        match Keyed::new(agg, None, None) {
            Some(keyed) => Self::with(keyed),
            None => panic!("{} needs an operator", agg.kind.name()),
        }
    }

    pub fn with(keyed: Keyed<'a>) -> Self {
        Self {
            keyed,
            state: TaskState::in_memory(),
            watermark: NO_WATERMARK,
            now_ms: 0,
            other_idle: false,
            offset: 0,
        }
    }

    pub fn keyed(&self) -> &Keyed<'a> {
        &self.keyed
    }

    pub fn state(&self) -> &TaskState {
        &self.state
    }

    pub fn put(&mut self, key: &[u8], value: &[u8]) {
        if let Err(e) = self.state.put(key, value) {
            panic!("put: {e}");
        }
    }

    /// Keys of the operator's namespace in `[from, to)`.
    pub fn keys_between(&self, from: &[u8], to: &[u8]) -> usize {
        match self
            .state
            .keys_in(&namespaced(ID, from), &namespaced(ID, to), usize::MAX)
        {
            Ok(keys) => keys.len(),
            Err(e) => panic!("range: {e}"),
        }
    }

    /// The step of a record of `key` with fields `value` (event time `event_time`), applied
    /// to the state when it succeeds (deletes first, as the runner does).
    pub fn try_run_with(
        &mut self,
        key: &str,
        value: Value,
        event_time: Option<i64>,
    ) -> Result<Step, StepError> {
        self.offset += 1;
        let input = Input {
            record: Record {
                key: Some(key.as_bytes().to_vec()),
                value: Payload::Json(value),
            },
            event_time,
            watermark: self.watermark,
            now_ms: self.now_ms,
            at: (0, self.offset),
            other_idle: self.other_idle,
        };
        let step = self.keyed.step(&self.state, input)?;
        for k in &step.deletes {
            self.state.delete(k)?;
        }
        for (k, v) in &step.puts {
            self.state.put(k, v)?;
        }
        Ok(step)
    }

    pub fn try_run(&mut self, key: &str, value: Value) -> Result<Step, StepError> {
        self.try_run_with(key, value, None)
    }

    pub fn run_step(&mut self, key: &str, value: Value) -> Step {
        match self.try_run(key, value) {
            Ok(step) => step,
            Err(e) => panic!("step failed: {e:?}"),
        }
    }

    /// The outputs of a record without event time.
    pub fn run(&mut self, key: &str, value: Value) -> Vec<Record> {
        self.run_step(key, value).outputs
    }

    /// The step of a record at event time `ts`.
    pub fn run_at(&mut self, key: &str, value: Value, ts: i64) -> Step {
        match self.try_run_with(key, value, Some(ts)) {
            Ok(step) => step,
            Err(e) => panic!("step failed: {e:?}"),
        }
    }
}
