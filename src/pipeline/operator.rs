//! Record-level logic of the built-in operators, free of I/O: stateless steps transform one
//! record; an aggregate turns (previous state, record) into (new state, output record).

use serde_json::{Map, Value};

use crate::codec::Payload;
use crate::config::{Aggregate, AggregateKind, Predicate, Step};

/// A record inside the pipeline.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub key: Option<Vec<u8>>,
    pub value: Payload,
}

/// Why one record could not be processed (the caller adds topic, partition and offset).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{step}: {message}")]
pub struct RecordError {
    pub step: &'static str,
    pub message: String,
    /// The failing step's position in the slice `apply_steps` ran (for its `on_error`).
    pub index: Option<usize>,
}

fn err(step: &'static str, message: impl Into<String>) -> RecordError {
    RecordError {
        step,
        message: message.into(),
        index: None,
    }
}

fn object<'a>(
    step: &'static str,
    value: &'a Payload,
) -> Result<&'a Map<String, Value>, RecordError> {
    match value {
        Payload::Json(Value::Object(m)) => Ok(m),
        Payload::Json(other) => Err(err(
            step,
            format!("expected a JSON object, got {}", kind(other)),
        )),
        _ => Err(err(step, "expected a JSON object")),
    }
}

fn json_value<'a>(step: &'static str, value: &'a Payload) -> Result<&'a Value, RecordError> {
    match value {
        Payload::Json(v) => Ok(v),
        _ => Err(err(step, "an expression needs a JSON or Avro record")),
    }
}

/// How a JSON value is named in error messages ("a string", "an object", …).
pub(crate) fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Runs `steps` in order; `None` when a filter drops the record.
pub fn apply_steps(steps: &[Step], mut record: Record) -> Result<Option<Record>, RecordError> {
    for (i, step) in steps.iter().enumerate() {
        match apply_step(step, record) {
            Ok(Some(r)) => record = r,
            Ok(None) => return Ok(None),
            Err(e) => {
                return Err(RecordError {
                    index: Some(i),
                    ..e
                });
            }
        }
    }
    Ok(Some(record))
}

fn apply_step(step: &Step, mut record: Record) -> Result<Option<Record>, RecordError> {
    match step {
        Step::Filter { field, predicate } => {
            let actual = object("filter", &record.value)?.get(field);
            let keep = match predicate {
                Predicate::Equals(v) => actual == Some(v),
                Predicate::NotEquals(v) => actual != Some(v),
            };
            if !keep {
                return Ok(None);
            }
        }
        Step::Map { keep, drop, rename } => {
            let Payload::Json(Value::Object(map)) = &mut record.value else {
                return Err(err("map", "expected a JSON object"));
            };
            if let Some(keep) = keep {
                map.retain(|k, _| keep.contains(k));
            }
            for d in drop {
                map.remove(d);
            }
            for (from, to) in rename {
                if let Some(v) = map.remove(from) {
                    map.insert(to.clone(), v);
                }
            }
        }
        Step::Select { expr } => {
            let input = json_value("filter", &record.value)?;
            let out =
                crate::expr::run(expr, input, 1).map_err(|m| err("filter", format!("jq: {m}")))?;
            if !out.first().is_some_and(crate::expr::truthy) {
                return Ok(None);
            }
        }
        Step::Transform { expr } => {
            let input = json_value("map", &record.value)?;
            // two are enough to tell "more than one"
            let mut out =
                crate::expr::run(expr, input, 2).map_err(|m| err("map", format!("jq: {m}")))?;
            match out.len() {
                0 => return Ok(None),
                1 => record.value = Payload::Json(out.swap_remove(0)),
                n => {
                    return Err(err(
                        "map",
                        format!(
                            "jq: the expression yields {n} or more values for one record; a map yields one (or none to drop it)"
                        ),
                    ));
                }
            }
        }
        Step::KeyBy { field } => {
            let value = object("key_by", &record.value)?
                .get(field)
                .ok_or_else(|| err("key_by", format!("field {field:?} is missing")))?;
            record.key = Some(key_bytes("key_by", field, value)?);
        }
    }
    Ok(Some(record))
}

/// A key's bytes: strings as their UTF-8, numbers and booleans as their JSON text.
fn key_bytes(step: &'static str, field: &str, value: &Value) -> Result<Vec<u8>, RecordError> {
    match value {
        Value::String(s) => Ok(s.as_bytes().to_vec()),
        Value::Number(n) => Ok(n.to_string().into_bytes()),
        Value::Bool(b) => Ok(b.to_string().into_bytes()),
        other => Err(err(
            step,
            format!("field {field:?} is {}, which cannot be a key", kind(other)),
        )),
    }
}

mod aggregates;
pub use aggregates::{
    aggregate, merge_states, result_of, state_to_json, window_output, windowed_key, with_window,
};

#[cfg(test)]
mod tests;
