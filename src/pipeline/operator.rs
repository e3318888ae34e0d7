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

/// Applies an aggregate to one record: returns the new state bytes and the output record.
pub fn aggregate(
    agg: &Aggregate,
    previous: Option<&[u8]>,
    record: &Record,
) -> Result<(Vec<u8>, Record), RecordError> {
    let key = record
        .key
        .as_deref()
        .ok_or_else(|| err("aggregate", "record has no key to group by"))?;
    let (state, result) = match &agg.kind {
        AggregateKind::Count => {
            let n = decode_count(previous)? + 1;
            (n.to_be_bytes().to_vec(), Value::from(n))
        }
        other @ (AggregateKind::Min { .. }
        | AggregateKind::Max { .. }
        | AggregateKind::Avg { .. }
        | AggregateKind::First { .. }
        | AggregateKind::Last { .. }
        | AggregateKind::CountDistinct { .. }
        | AggregateKind::Collect { .. }) => {
            let name = other.name();
            let field = other.field().unwrap_or_default();
            let v = object(name, &record.value)?
                .get(field)
                .ok_or_else(|| err(name, format!("field {field:?} is missing")))?;
            super::aggregate::update(other, previous, v)
                .map_err(|m| err(name, format!("field {field:?}: {m}")))?
        }
        AggregateKind::Dedupe { .. }
        | AggregateKind::Join { .. }
        | AggregateKind::StreamJoin { .. }
        | AggregateKind::Custom { .. } => {
            return Err(err(
                agg.kind.name(),
                "this operator keeps records, not a running value",
            ));
        }
        AggregateKind::Sum { field } => {
            let v = object("sum", &record.value)?
                .get(field)
                .ok_or_else(|| err("sum", format!("field {field:?} is missing")))?;
            let Value::Number(n) = v else {
                return Err(err(
                    "sum",
                    format!("field {field:?} is {}, not a number", kind(v)),
                ));
            };
            let sum = decode_sum(previous)?.add(n);
            (sum.encode(), sum.to_json())
        }
    };
    // the key in the output: the record's own field value when it still has it, else the key text
    let key_value = match &record.value {
        Payload::Json(Value::Object(m)) if m.contains_key(&agg.key_field) => {
            m[&agg.key_field].clone()
        }
        _ => Value::String(String::from_utf8_lossy(key).into_owned()),
    };
    let mut out = Map::new();
    out.insert(agg.key_field.clone(), key_value);
    out.insert(agg.output.clone(), result);
    Ok((
        state,
        Record {
            key: Some(key.to_vec()),
            value: Payload::Json(Value::Object(out)),
        },
    ))
}

/// The result an aggregate's stored state stands for (what a closing window reports).
pub fn result_of(kind: &AggregateKind, state: &[u8]) -> Result<Value, RecordError> {
    let name = kind.name();
    let json = || -> Result<Value, RecordError> {
        serde_json::from_slice(state)
            .map_err(|e| err(name, format!("stored state is corrupt: {e}")))
    };
    Ok(match kind {
        AggregateKind::Count => Value::from(decode_count(Some(state))?),
        AggregateKind::Sum { .. } => decode_sum(Some(state))?.to_json(),
        AggregateKind::Avg { .. } => {
            let s = json()?;
            let (sum, count) = (
                s["sum"].as_f64().unwrap_or(0.0),
                s["count"].as_u64().unwrap_or(0),
            );
            if count == 0 {
                Value::Null
            } else {
                Value::from(sum / count as f64)
            }
        }
        AggregateKind::CountDistinct { .. } => match json()? {
            Value::Array(a) => Value::from(a.len()),
            _ => return Err(err(name, "stored state is corrupt: not a list")),
        },
        AggregateKind::Min { .. }
        | AggregateKind::Max { .. }
        | AggregateKind::First { .. }
        | AggregateKind::Last { .. }
        | AggregateKind::Collect { .. } => json()?,
        AggregateKind::Dedupe { .. }
        | AggregateKind::Join { .. }
        | AggregateKind::StreamJoin { .. }
        | AggregateKind::Custom { .. } => {
            return Err(err(
                name,
                "this operator keeps records, not a running value",
            ));
        }
    })
}

/// Two states of one aggregate as one (session windows merging): count, sum, min, max, avg and
/// count_distinct; the others cannot be merged (validation keeps them off sessions).
pub fn merge_states(kind: &AggregateKind, a: &[u8], b: &[u8]) -> Result<Vec<u8>, RecordError> {
    let name = kind.name();
    let json = |bytes: &[u8]| -> Result<Value, RecordError> {
        serde_json::from_slice(bytes)
            .map_err(|e| err(name, format!("stored state is corrupt: {e}")))
    };
    let encode = |v: Value| serde_json::to_vec(&v).map_err(|e| err(name, e.to_string()));
    match kind {
        AggregateKind::Count => {
            let n = decode_count(Some(a))?.saturating_add(decode_count(Some(b))?);
            Ok(n.to_be_bytes().to_vec())
        }
        AggregateKind::Sum { .. } => {
            let merged = match (decode_sum(Some(a))?, decode_sum(Some(b))?) {
                (Sum::Int(x), Sum::Int(y)) => x
                    .checked_add(y)
                    .map_or(Sum::Float(x as f64 + y as f64), Sum::Int),
                (x, y) => Sum::Float(x.as_f64() + y.as_f64()),
            };
            Ok(merged.encode())
        }
        AggregateKind::Min { .. } | AggregateKind::Max { .. } => {
            let (x, y) = (json(a)?, json(b)?);
            let (fx, fy) = (
                x.as_f64().unwrap_or(f64::NAN),
                y.as_f64().unwrap_or(f64::NAN),
            );
            let take_x = if matches!(kind, AggregateKind::Min { .. }) {
                fx <= fy
            } else {
                fx >= fy
            };
            encode(if take_x { x } else { y })
        }
        AggregateKind::Avg { .. } => {
            let (x, y) = (json(a)?, json(b)?);
            let sum = x["sum"].as_f64().unwrap_or(0.0) + y["sum"].as_f64().unwrap_or(0.0);
            let count = x["count"].as_u64().unwrap_or(0) + y["count"].as_u64().unwrap_or(0);
            encode(serde_json::json!({"sum": sum, "count": count}))
        }
        AggregateKind::CountDistinct { .. } => {
            let (Value::Array(mut x), Value::Array(y)) = (json(a)?, json(b)?) else {
                return Err(err(name, "stored state is corrupt: not a list"));
            };
            x.extend(y);
            x.sort_by(|p, q| {
                p.as_str()
                    .unwrap_or_default()
                    .cmp(q.as_str().unwrap_or_default())
            });
            x.dedup();
            encode(Value::Array(x))
        }
        _ => Err(err(
            name,
            "this aggregate cannot be merged (session windows)",
        )),
    }
}

/// A window's output: `{key_field, window_start, window_end, output}`, keyed `key@start`
/// (as Kafka Streams keys windowed results by key and window start).
pub fn window_output(agg: &Aggregate, key: &[u8], start: i64, end: i64, result: Value) -> Record {
    let mut out = Map::new();
    out.insert(
        agg.key_field.clone(),
        Value::String(String::from_utf8_lossy(key).into_owned()),
    );
    out.insert("window_start".into(), Value::from(start));
    out.insert("window_end".into(), Value::from(end));
    out.insert(agg.output.clone(), result);
    Record {
        key: Some(windowed_key(key, start)),
        value: Payload::Json(Value::Object(out)),
    }
}

/// `key@start`: the message key of a window's result.
pub fn windowed_key(key: &[u8], start: i64) -> Vec<u8> {
    let mut k = key.to_vec();
    k.push(b'@');
    k.extend_from_slice(start.to_string().as_bytes());
    k
}

/// Adds the window to an aggregate's running output (`emit = "every_update"` with a window).
pub fn with_window(mut out: Record, start: i64, end: i64) -> Record {
    if let Payload::Json(Value::Object(m)) = &mut out.value {
        m.insert("window_start".into(), Value::from(start));
        m.insert("window_end".into(), Value::from(end));
    }
    out.key = out.key.map(|k| windowed_key(&k, start));
    out
}

/// A stored aggregate value as JSON, for `savepoint inspect --key` (`kind` as in savepoints).
pub fn state_to_json(kind: &str, bytes: &[u8]) -> Option<Value> {
    match kind {
        "count" => decode_count(Some(bytes)).ok().map(Value::from),
        "sum" => decode_sum(Some(bytes)).ok().map(Sum::to_json),
        _ => serde_json::from_slice(bytes).ok(),
    }
}

fn decode_count(previous: Option<&[u8]>) -> Result<u64, RecordError> {
    match previous {
        None => Ok(0),
        Some(b) => <[u8; 8]>::try_from(b)
            .map(u64::from_be_bytes)
            .map_err(|_| err("count", "stored count is corrupt")),
    }
}

/// A running sum: exact as an integer until it overflows or meets a fraction, then a float.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Sum {
    Int(i64),
    Float(f64),
}

impl Sum {
    fn add(self, n: &serde_json::Number) -> Self {
        match (self, n.as_i64()) {
            (Self::Int(a), Some(b)) => a
                .checked_add(b)
                .map_or(Self::Float(a as f64 + b as f64), Self::Int),
            (s, _) => Self::Float(s.as_f64() + n.as_f64().unwrap_or(0.0)),
        }
    }

    fn as_f64(self) -> f64 {
        match self {
            Self::Int(i) => i as f64,
            Self::Float(f) => f,
        }
    }

    fn encode(self) -> Vec<u8> {
        let (tag, bytes) = match self {
            Self::Int(i) => (0u8, i.to_be_bytes()),
            Self::Float(f) => (1u8, f.to_bits().to_be_bytes()),
        };
        let mut out = vec![tag];
        out.extend_from_slice(&bytes);
        out
    }

    fn to_json(self) -> Value {
        match self {
            Self::Int(i) => Value::from(i),
            Self::Float(f) => Value::from(f),
        }
    }
}

fn decode_sum(previous: Option<&[u8]>) -> Result<Sum, RecordError> {
    let Some(b) = previous else {
        return Ok(Sum::Int(0));
    };
    let corrupt = || err("sum", "stored sum is corrupt");
    let (tag, rest) = b.split_first().ok_or_else(corrupt)?;
    let bytes = <[u8; 8]>::try_from(rest).map_err(|_| corrupt())?;
    match tag {
        0 => Ok(Sum::Int(i64::from_be_bytes(bytes))),
        1 => Ok(Sum::Float(f64::from_bits(u64::from_be_bytes(bytes)))),
        _ => Err(corrupt()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rec(v: Value) -> Record {
        Record {
            key: None,
            value: Payload::Json(v),
        }
    }

    fn count_agg() -> Aggregate {
        Aggregate {
            id: "count".into(),
            kind: AggregateKind::Count,
            key_field: "user".into(),
            output: "count".into(),
            on_error: None,
            emit: crate::config::Emit::EveryUpdate,
            window: None,
            ttl_ms: None,
            ttl_time: crate::config::TimeDomain::Processing,
        }
    }

    #[test]
    fn key_by_then_count_emits_running_counts() {
        let steps = [Step::KeyBy {
            field: "user".into(),
        }];
        let r = apply_steps(&steps, rec(json!({"user": "u7", "x": 1})))
            .unwrap()
            .unwrap();
        assert_eq!(r.key.as_deref(), Some(&b"u7"[..]));
        let (s1, out1) = aggregate(&count_agg(), None, &r).unwrap();
        let (_, out2) = aggregate(&count_agg(), Some(&s1), &r).unwrap();
        assert_eq!(out1.value, Payload::Json(json!({"user": "u7", "count": 1})));
        assert_eq!(out2.value, Payload::Json(json!({"user": "u7", "count": 2})));
        assert_eq!(out2.key.as_deref(), Some(&b"u7"[..]));
    }

    #[test]
    fn filter_and_map() {
        let steps = [
            Step::Filter {
                field: "country".into(),
                predicate: Predicate::Equals(json!("NL")),
            },
            Step::Map {
                keep: Some(vec!["user".into(), "country".into()]),
                drop: vec![],
                rename: vec![("user".into(), "customer".into())],
            },
        ];
        assert_eq!(
            apply_steps(&steps, rec(json!({"country": "BE"}))).unwrap(),
            None
        );
        let out = apply_steps(
            &steps,
            rec(json!({"country": "NL", "user": "a", "secret": 1})),
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            out.value,
            Payload::Json(json!({"customer": "a", "country": "NL"}))
        );
    }

    #[test]
    fn sum_is_exact_for_integers_and_falls_back_to_float() {
        let agg = Aggregate {
            id: "sum".into(),
            kind: AggregateKind::Sum { field: "n".into() },
            key_field: "key".into(),
            output: "sum".into(),
            on_error: None,
            emit: crate::config::Emit::EveryUpdate,
            window: None,
            ttl_ms: None,
            ttl_time: crate::config::TimeDomain::Processing,
        };
        let mut r = rec(json!({"n": i64::MAX}));
        r.key = Some(b"k".to_vec());
        let (s, out) = aggregate(&agg, None, &r).unwrap();
        assert_eq!(
            out.value,
            Payload::Json(json!({"key": "k", "sum": i64::MAX}))
        );
        let r2 = Record {
            key: Some(b"k".to_vec()),
            value: Payload::Json(json!({"n": 1.5})),
        };
        let (_, out) = aggregate(&agg, Some(&s), &r2).unwrap();
        let Payload::Json(v) = out.value else {
            panic!()
        };
        assert!(v["sum"].is_f64());
    }

    #[test]
    fn result_of_state_matches_the_running_output() {
        let kinds = [
            AggregateKind::Count,
            AggregateKind::Sum { field: "n".into() },
            AggregateKind::Avg { field: "n".into() },
            AggregateKind::Min { field: "n".into() },
            AggregateKind::CountDistinct { field: "n".into() },
            AggregateKind::Collect {
                field: "n".into(),
                max: 2,
            },
        ];
        for kind in kinds {
            let agg = Aggregate {
                kind: kind.clone(),
                ..count_agg()
            };
            let mut state: Option<Vec<u8>> = None;
            let mut last = Value::Null;
            for n in [3, 1, 3, 7] {
                let r = Record {
                    key: Some(b"k".to_vec()),
                    value: Payload::Json(json!({"user": "k", "n": n})),
                };
                let (s, out) = aggregate(&agg, state.as_deref(), &r).unwrap();
                state = Some(s);
                let Payload::Json(v) = out.value else {
                    panic!()
                };
                last = v[&agg.output].clone();
            }
            assert_eq!(
                result_of(&kind, state.as_deref().unwrap()).unwrap(),
                last,
                "{}",
                kind.name()
            );
        }
    }

    #[test]
    fn merged_states_equal_one_pass_over_both_halves() {
        let kinds = [
            AggregateKind::Count,
            AggregateKind::Sum { field: "n".into() },
            AggregateKind::Min { field: "n".into() },
            AggregateKind::Max { field: "n".into() },
            AggregateKind::Avg { field: "n".into() },
            AggregateKind::CountDistinct { field: "n".into() },
        ];
        let values = [3, 1, 3, 7, 2, 9];
        for kind in kinds {
            let agg = Aggregate {
                kind: kind.clone(),
                ..count_agg()
            };
            let run = |vals: &[i64]| {
                let mut state: Option<Vec<u8>> = None;
                for n in vals {
                    let r = Record {
                        key: Some(b"k".to_vec()),
                        value: Payload::Json(json!({"user": "k", "n": n})),
                    };
                    state = Some(aggregate(&agg, state.as_deref(), &r).unwrap().0);
                }
                state.unwrap()
            };
            let whole = run(&values);
            let merged = merge_states(&kind, &run(&values[..2]), &run(&values[2..])).unwrap();
            assert_eq!(
                result_of(&kind, &merged).unwrap(),
                result_of(&kind, &whole).unwrap(),
                "{}",
                kind.name()
            );
        }
        assert!(merge_states(&AggregateKind::First { field: "n".into() }, b"1", b"2").is_err());
    }

    #[test]
    fn window_outputs_carry_key_and_window() {
        let out = window_output(&count_agg(), b"u1", 60_000, 120_000, json!(4));
        assert_eq!(out.key.as_deref(), Some(&b"u1@60000"[..]));
        assert_eq!(
            out.value,
            Payload::Json(
                json!({"user": "u1", "window_start": 60000, "window_end": 120000, "count": 4})
            )
        );
    }

    #[test]
    fn a_missing_key_field_is_a_record_error() {
        let e = apply_steps(
            &[Step::KeyBy {
                field: "user".into(),
            }],
            rec(json!({"x": 1})),
        )
        .unwrap_err();
        assert_eq!(e.step, "key_by");
        assert!(e.message.contains("\"user\""));
    }
}
