//! The field aggregates beyond count and sum: min, max, avg, first, last, count_distinct and a
//! bounded collect. Their state is JSON (small, and readable in `savepoint inspect --key`).
//! Pure: previous state and a field value in, next state and the output value out.

use serde_json::{Value, json};

use crate::config::AggregateKind;

/// Next state bytes and the aggregate's output value, or why the value cannot be added.
pub fn update(
    kind: &AggregateKind,
    previous: Option<&[u8]>,
    value: &Value,
) -> Result<(Vec<u8>, Value), String> {
    let prev: Option<Value> = match previous {
        None => None,
        Some(b) => {
            Some(serde_json::from_slice(b).map_err(|e| format!("stored state is corrupt: {e}"))?)
        }
    };
    let number = || {
        value
            .as_f64()
            .ok_or_else(|| format!("{} is not a number", super::operator::kind(value)))
    };
    let (state, out) = match kind {
        AggregateKind::Min { .. } => extreme(prev, value, number()?, |p, n| p <= n),
        AggregateKind::Max { .. } => extreme(prev, value, number()?, |p, n| p >= n),
        AggregateKind::Avg { .. } => avg(prev.as_ref(), number()?),
        AggregateKind::First { .. } => {
            let v = prev.unwrap_or_else(|| value.clone());
            (v.clone(), v)
        }
        AggregateKind::Last { .. } => (value.clone(), value.clone()),
        AggregateKind::CountDistinct { .. } => count_distinct(prev, value),
        AggregateKind::Collect { max, .. } => collect(prev, value, *max),
        AggregateKind::Count
        | AggregateKind::Sum { .. }
        | AggregateKind::Dedupe { .. }
        | AggregateKind::Join { .. }
        | AggregateKind::StreamJoin { .. }
        | AggregateKind::Custom { .. } => {
            return Err("count and sum are not field aggregates".into());
        }
    };
    let bytes = serde_json::to_vec(&state).map_err(|e| e.to_string())?;
    Ok((bytes, out))
}

/// (state, output) of min or max: the previous value stays while `keep(previous, n)`.
fn extreme(
    prev: Option<Value>,
    value: &Value,
    n: f64,
    keep: fn(f64, f64) -> bool,
) -> (Value, Value) {
    let keep_prev = prev
        .as_ref()
        .and_then(Value::as_f64)
        .is_some_and(|p| keep(p, n));
    let v = if keep_prev {
        prev.unwrap_or(Value::Null)
    } else {
        value.clone()
    };
    (v.clone(), v)
}

/// (state, output) of avg: the state is the sum and the count.
fn avg(prev: Option<&Value>, n: f64) -> (Value, Value) {
    let (sum, count) = prev.map_or((0.0, 0u64), |p| {
        (
            p["sum"].as_f64().unwrap_or(0.0),
            p["count"].as_u64().unwrap_or(0),
        )
    });
    let (sum, count) = (sum + n, count + 1);
    (
        json!({"sum": sum, "count": count}),
        json!(sum / count as f64),
    )
}

/// (state, output) of count_distinct: the state is the sorted canonical texts seen.
fn count_distinct(prev: Option<Value>, value: &Value) -> (Value, Value) {
    let mut seen: Vec<Value> = match prev {
        Some(Value::Array(a)) => a,
        _ => Vec::new(),
    };
    let text = canonical(value);
    if let Err(at) = seen.binary_search_by(|s| s.as_str().unwrap_or_default().cmp(text.as_str())) {
        seen.insert(at, Value::String(text));
    }
    let n = seen.len();
    (Value::Array(seen), json!(n))
}

/// (state, output) of collect: the last `max` values, oldest first.
fn collect(prev: Option<Value>, value: &Value, max: usize) -> (Value, Value) {
    let mut items: Vec<Value> = match prev {
        Some(Value::Array(a)) => a,
        _ => Vec::new(),
    };
    items.push(value.clone());
    if items.len() > max {
        let excess = items.len() - max;
        items.drain(..excess);
    }
    let v = Value::Array(items);
    (v.clone(), v)
}

/// One text per distinct JSON value (object keys keep their order, as received).
fn canonical(v: &Value) -> String {
    v.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn run(kind: &AggregateKind, values: &[Value]) -> Vec<Value> {
        let mut state: Option<Vec<u8>> = None;
        values
            .iter()
            .map(|v| {
                let (s, out) = update(kind, state.as_deref(), v).unwrap();
                state = Some(s);
                out
            })
            .collect()
    }

    fn field() -> String {
        "x".into()
    }

    #[test]
    fn each_aggregate_against_its_definition() {
        let vals = [json!(5), json!(2), json!(9), json!(2)];
        assert_eq!(
            run(&AggregateKind::Min { field: field() }, &vals),
            [json!(5), json!(2), json!(2), json!(2)]
        );
        assert_eq!(
            run(&AggregateKind::Max { field: field() }, &vals),
            [json!(5), json!(5), json!(9), json!(9)]
        );
        assert_eq!(
            run(&AggregateKind::Avg { field: field() }, &vals),
            [json!(5.0), json!(3.5), json!(16.0 / 3.0), json!(4.5)]
        );
        assert_eq!(
            run(&AggregateKind::First { field: field() }, &vals),
            [json!(5), json!(5), json!(5), json!(5)]
        );
        assert_eq!(
            run(&AggregateKind::Last { field: field() }, &vals),
            vals.to_vec()
        );
        assert_eq!(
            run(&AggregateKind::CountDistinct { field: field() }, &vals),
            [json!(1), json!(2), json!(3), json!(3)]
        );
        assert_eq!(
            run(
                &AggregateKind::Collect {
                    field: field(),
                    max: 2
                },
                &vals
            )
            .last(),
            Some(&json!([9, 2]))
        );
        let err = update(&AggregateKind::Avg { field: field() }, None, &json!("x")).unwrap_err();
        assert!(err.contains("a string is not a number"), "{err}");
    }

    proptest! {
        #[test]
        fn count_distinct_equals_the_set_size(xs in proptest::collection::vec(0i64..20, 1..60)) {
            let vals: Vec<Value> = xs.iter().map(|x| json!(x)).collect();
            let out = run(&AggregateKind::CountDistinct { field: field() }, &vals);
            let distinct: std::collections::BTreeSet<_> = xs.iter().collect();
            prop_assert_eq!(out.last().cloned(), Some(json!(distinct.len())));
        }

        #[test]
        fn min_and_max_are_the_extremes(xs in proptest::collection::vec(-1000i64..1000, 1..60)) {
            let vals: Vec<Value> = xs.iter().map(|x| json!(x)).collect();
            let min = run(&AggregateKind::Min { field: field() }, &vals);
            let max = run(&AggregateKind::Max { field: field() }, &vals);
            prop_assert_eq!(min.last().cloned(), Some(json!(xs.iter().min().copied())));
            prop_assert_eq!(max.last().cloned(), Some(json!(xs.iter().max().copied())));
        }
    }
}
