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
