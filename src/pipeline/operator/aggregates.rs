//! The aggregates' record-level logic: (previous state, record) → (new state, output), the
//! result a state stands for, the merge of two states (sessions), and windowed outputs.

use super::*;

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
            crate::pipeline::aggregate::update(other, previous, v)
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
