use super::*;
use crate::config::{AggregateKind, Format, Step, TimeDomain};

const EXAMPLE: &str = r#"
[kafka]
bootstrap_servers = "127.0.0.1:19092"

[checkpoint]
interval = "1s"
dir = "data/checkpoints"

[state]
backend = "rocksdb"
dir = "data/state"

[[pipelines]]
name = "counts"
source = { topic = "events", format = "json" }
sink = { topic = "counts", format = "json" }
operators = [
  { type = "key_by", field = "user" },
  { type = "count" },
]
"#;

#[test]
fn the_issue_example_builds_a_repartitioned_count() {
    let c = from_str(EXAMPLE).unwrap();
    let p = &c.pipelines[0];
    assert_eq!(p.group_id, "flumen-counts");
    assert_eq!(p.transactional_id, "flumen-counts-0");
    assert_eq!(
        p.plan.before,
        vec![Step::KeyBy {
            field: "user".into()
        }]
    );
    assert!(p.plan.repartition);
    assert_eq!(
        p.repartition_topic().as_deref(),
        Some("flumen-counts-count-repartition")
    );
    let agg = p.plan.aggregate.as_ref().unwrap();
    assert_eq!(
        (agg.key_field.as_str(), agg.output.as_str()),
        ("user", "count")
    );
    assert_eq!(c.checkpoint.interval, Duration::from_secs(1));
    assert_eq!(c.kafka.transaction_timeout, Duration::from_secs(60));
}

#[test]
fn a_source_keyed_by_the_field_skips_the_repartition_topic() {
    let text = EXAMPLE.replace(
        r#"format = "json" }
sink"#,
        r#"format = "json", key_field = "user" }
sink"#,
    );
    let c = from_str(&text).unwrap();
    assert!(!c.pipelines[0].plan.repartition);
    assert_eq!(c.pipelines[0].repartition_topic(), None);
}

#[test]
fn three_mistakes_are_reported_together_with_line_and_column() {
    let text = EXAMPLE
        .replace(r#"interval = "1s""#, r#"interval = "1 fortnightly""#)
        .replace(r#"backend = "rocksdb""#, r#"backend = "leveldb""#)
        .replace(r#"{ type = "count" }"#, r#"{ type = "countt" }"#);
    let problems = from_str(&text).unwrap_err();
    let shown: Vec<String> = problems.iter().map(ToString::to_string).collect();
    assert_eq!(problems.len(), 3, "{shown:#?}");
    assert!(
        shown[0].starts_with("checkpoint.interval (6:12): invalid duration"),
        "{}",
        shown[0]
    );
    assert!(
        shown[1].starts_with("state.backend (10:11): unknown backend \"leveldb\""),
        "{}",
        shown[1]
    );
    assert!(
        shown[2].starts_with(
            "pipelines[0].operators[1].type (19:12): unknown operator type \"countt\""
        ),
        "{}",
        shown[2]
    );
}

#[test]
fn unknown_keys_are_rejected_with_their_place() {
    let text = EXAMPLE.replace("[checkpoint]\n", "[checkpoint]\nintervall = \"2s\"\n");
    let problems = from_str(&text).unwrap_err();
    assert_eq!(problems.len(), 1);
    let p = &problems[0];
    assert_eq!(
        (p.path.as_str(), p.line, p.col),
        ("checkpoint.intervall", 6, 1),
        "{p}"
    );
    assert!(
        p.message.starts_with(
            "unknown key `intervall`; did you mean `interval`? (expected one of `interval`, `dir`"
        ),
        "{p}"
    );

    let text = EXAMPLE.replace(
        r#"{ type = "count" }"#,
        r#"{ type = "count", colour = "red" }"#,
    );
    let problems = from_str(&text).unwrap_err();
    assert!(
        problems[0]
            .message
            .starts_with("unknown key `colour` (expected one of"),
        "{}",
        problems[0]
    );
}

#[test]
fn unknown_keys_hide_no_other_problem() {
    // two typos, a bad value and a missing variable, all in one report, in the file's order
    let text = EXAMPLE
        .replace("interval = \"1s\"", "interval = \"1 parsec\"")
        .replace("backend = \"rocksdb\"", "backend = \"rocksdb\"\nbudget = 3")
        .replace(
            r#"{ type = "key_by", field = "user" }"#,
            r#"{ type = "key_by", feld = "user" }"#,
        )
        .replace(
            r#"topic = "counts""#,
            r#"topic = "counts-${FLUMEN_TEST_NEVER_SET}""#,
        );
    let shown: Vec<String> = from_str(&text)
        .unwrap_err()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(shown.len(), 5, "{shown:#?}");
    assert!(
        shown[0].starts_with("checkpoint.interval (6:12): invalid duration"),
        "{shown:#?}"
    );
    assert!(
        shown[1].starts_with("state.budget (11:1): unknown key `budget`"),
        "{shown:#?}"
    );
    assert!(
        shown[2].starts_with(
            "pipelines[0].sink.topic (17:26): environment variable FLUMEN_TEST_NEVER_SET is not set"
        ),
        "{shown:#?}"
    );
    assert!(
        shown[4].starts_with(
            "pipelines[0].operators[0].feld (19:22): unknown key `feld`; did you mean `field`?"
        ),
        "{shown:#?}"
    );
    // with its field misspelt, the key_by has none
    assert!(
        shown[3].starts_with("pipelines[0].operators[0].field (19:3): key_by needs a field"),
        "{shown:#?}"
    );
}

#[test]
fn engine_owned_kafka_properties_are_refused() {
    let text = EXAMPLE.replace(
        "[checkpoint]",
        "[kafka.properties]\n\"enable.auto.commit\" = true\n\"isolation.level\" = \"read_uncommitted\"\n\"security.protocol\" = \"SASL_SSL\"\n\n[checkpoint]",
    );
    let problems = from_str(&text).unwrap_err();
    let shown: Vec<String> = problems.iter().map(ToString::to_string).collect();
    assert_eq!(problems.len(), 2, "{shown:#?}");
    assert!(
        shown[0].contains("\"enable.auto.commit\" is owned by Flumen"),
        "{}",
        shown[0]
    );
    assert!(
        shown[1].contains("\"isolation.level\" is owned by Flumen"),
        "{}",
        shown[1]
    );
}

#[test]
fn a_transaction_timeout_too_short_for_the_interval_is_refused() {
    let text = EXAMPLE
        .replace(
            "[checkpoint]",
            "transaction_timeout = \"10s\"\n\n[checkpoint]",
        )
        .replace(r#"interval = "1s""#, r#"interval = "5s""#);
    let problems = from_str(&text).unwrap_err();
    assert!(
        problems[0]
            .to_string()
            .starts_with("kafka.transaction_timeout"),
        "{}",
        problems[0]
    );
}

#[test]
fn operators_reject_options_of_other_types_and_bad_order() {
    let text = EXAMPLE.replace(
        r#"{ type = "key_by", field = "user" },"#,
        r#"{ type = "key_by", field = "user", equals = 3 }, { type = "count" },"#,
    );
    let problems = from_str(&text).unwrap_err();
    let shown: Vec<String> = problems.iter().map(ToString::to_string).collect();
    assert!(
        shown
            .iter()
            .any(|s| s.contains("key_by does not take \"equals\"")),
        "{shown:#?}"
    );
    assert!(
        shown.iter().any(|s| s.contains("only one aggregate")),
        "{shown:#?}"
    );
}

#[test]
fn every_example_config_validates() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/examples");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            // as `flumen validate` reads them: relative paths from the file's directory
            if let Err(e) = crate::config::load(&path, &[]) {
                panic!("{}: {e:#?}", path.display());
            }
            n += 1;
        }
    }
    assert!(n >= 3, "expected the example configs in {}", dir.display());
}

#[test]
fn line_col_counts_characters() {
    assert_eq!(line_col("ab\ncdé f", 8), (2, 5));
    assert_eq!(line_col("", 0), (1, 1));
}

#[test]
fn the_error_policy_is_checked_with_its_topic() {
    let with = |extra: &str| EXAMPLE.replace("sink = {", &format!("{extra}\nsink = {{"));
    assert_eq!(
        from_str(EXAMPLE).unwrap().pipelines[0].on_error,
        OnError::Fail
    );
    let c = from_str(&with("on_error = \"skip\"")).unwrap();
    assert_eq!(c.pipelines[0].on_error, OnError::Skip);
    let c = from_str(&with(
        "on_error = \"dead_letter\"\ndead_letter_topic = \"bad\"",
    ))
    .unwrap();
    assert_eq!(c.pipelines[0].on_error, OnError::DeadLetter);
    assert_eq!(c.pipelines[0].dead_letter_topic.as_deref(), Some("bad"));
    // an operator may override the pipeline's policy; dead_letter there needs the topic too
    let step = EXAMPLE.replace(
        r#"{ type = "count" }"#,
        r#"{ type = "count", on_error = "skip" }"#,
    );
    let c = from_str(&step).unwrap();
    let agg = c.pipelines[0].plan.aggregate.as_ref().unwrap();
    assert_eq!(agg.on_error, Some(OnError::Skip));
    let step = EXAMPLE.replace(
        r#"{ type = "key_by", field = "user" }"#,
        r#"{ type = "key_by", field = "user", on_error = "dead_letter" }"#,
    );
    let e = from_str(&step)
        .unwrap_err()
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>();
    assert!(e.join("\n").contains("needs dead_letter_topic"), "{e:?}");
    let c = from_str(&step.replace("sink = {", "dead_letter_topic = \"bad\"\nsink = {")).unwrap();
    assert_eq!(
        c.pipelines[0].plan.before_on_error,
        vec![Some(OnError::DeadLetter)]
    );
    assert_eq!(c.pipelines[0].on_error, OnError::Fail);
    let errs = |text: String| {
        from_str(&text)
            .unwrap_err()
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    };
    let e = errs(with("on_error = \"ignore\""));
    assert!(
        e.contains("pipelines[0].on_error (16:12): unknown error policy \"ignore\""),
        "{e}"
    );
    let e = errs(with("on_error = \"dead_letter\""));
    assert!(e.contains("needs dead_letter_topic"), "{e}");
    let e = errs(with("dead_letter_topic = \"bad\""));
    assert!(
        e.contains("pipelines[0].dead_letter_topic") && e.contains("only used with"),
        "{e}"
    );
    let e = errs(with(
        "on_error = \"dead_letter\"\ndead_letter_topic = \"events\"",
    ));
    assert!(e.contains("must differ from the source"), "{e}");
}

#[test]
fn avro_needs_a_listed_schema_id_and_schema_files_are_checked() {
    let schemas = concat!(env!("CARGO_MANIFEST_DIR"), "/schemas");
    let text = |source: &str, table: &str| {
        EXAMPLE
            .replace(r#"source = { topic = "events", format = "json" }"#, source)
            .replace("[[pipelines]]", &format!("{table}\n[[pipelines]]"))
    };
    let table = format!("[schemas]\n2 = \"{schemas}/purchase-v2.avsc\"\n");
    let ok = from_str(&text(
        r#"source = { topic = "events", format = "avro", schema_id = 2 }"#,
        &table,
    ))
    .unwrap();
    assert_eq!(ok.pipelines[0].source.format, Format::Avro { schema_id: 2 });
    let errs = |t: String| {
        from_str(&t)
            .unwrap_err()
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    };
    let e = errs(text(
        r#"source = { topic = "events", format = "avro" }"#,
        &table,
    ));
    assert!(e.contains("needs schema_id"), "{e}");
    let e = errs(text(
        r#"source = { topic = "events", format = "avro", schema_id = 7 }"#,
        &table,
    ));
    assert!(
        e.contains("pipelines[0].source.schema_id") && e.contains("schema id 7 is not listed"),
        "{e}"
    );
    let e = errs(text(
        r#"source = { topic = "events", format = "json", schema_id = 2 }"#,
        &table,
    ));
    assert!(e.contains("only used with format = \"avro\""), "{e}");
    let e = errs(text(
        r#"source = { topic = "events", format = "json" }"#,
        "[schemas]\n5 = \"no/such.avsc\"\n",
    ));
    assert!(e.contains("schemas.5") && e.contains("no/such.avsc"), "{e}");
}

#[test]
fn emit_is_every_update_unless_on_checkpoint_and_anything_else_is_named() {
    let c = from_str(EXAMPLE).unwrap();
    let agg = c.pipelines[0].plan.aggregate.as_ref().unwrap();
    assert_eq!(agg.emit, crate::config::Emit::EveryUpdate);

    let held = EXAMPLE.replace(
        r#"{ type = "count" }"#,
        r#"{ type = "count", emit = "on_checkpoint" }"#,
    );
    let c = from_str(&held).unwrap();
    let agg = c.pipelines[0].plan.aggregate.as_ref().unwrap();
    assert_eq!(agg.emit, crate::config::Emit::OnCheckpoint);

    let wrong = EXAMPLE.replace(
        r#"{ type = "count" }"#,
        r#"{ type = "count", emit = "later" }"#,
    );
    let shown = problems(&wrong);
    assert!(
        shown
            .iter()
            .any(|s| s.starts_with("pipelines[0].operators[1].emit (")
                && s.contains("unknown emit \"later\"")),
        "{shown:#?}"
    );
    let on_map = EXAMPLE.replace(
        r#"{ type = "key_by", field = "user" },"#,
        r#"{ type = "map", drop = ["x"], emit = "on_checkpoint" }, { type = "key_by", field = "user" },"#,
    );
    let shown = problems(&on_map);
    assert!(
        shown
            .iter()
            .any(|s| s.contains("map does not take \"emit\"")),
        "{shown:#?}"
    );
}

#[test]
fn windows_are_typed_and_need_event_time() {
    let windowed = EXAMPLE
        .replace(
            r#"source = { topic = "events", format = "json" }"#,
            r#"source = { topic = "events", format = "json", event_time = { field = "ts", format = "unix_s", max_out_of_orderness = "5s" } }"#,
        )
        .replace(
            r#"{ type = "count" }"#,
            r#"{ type = "count", window = { type = "hopping", size = "1m", advance = "15s", allowed_lateness = "2s", late_topic = "late" } }"#,
        );
    let c = from_str(&windowed).unwrap();
    let p = &c.pipelines[0];
    let et = p.source.event_time.as_ref().unwrap();
    assert_eq!(
        (et.field.as_deref(), et.format, et.max_out_of_orderness),
        (
            Some("ts"),
            crate::config::TimeFormat::UnixS,
            Duration::from_secs(5)
        )
    );
    assert_eq!(et.idle_timeout, Duration::from_secs(30));
    let agg = p.plan.aggregate.as_ref().unwrap();
    assert_eq!(agg.emit, crate::config::Emit::OnWindowClose);
    assert_eq!(
        agg.window,
        Some(crate::config::Window {
            size_ms: 60_000,
            advance_ms: 15_000,
            gap_ms: None,
            allowed_lateness_ms: 2_000,
            late_topic: Some("late".into()),
        })
    );

    let no_event_time = EXAMPLE.replace(
        r#"{ type = "count" }"#,
        r#"{ type = "count", window = { type = "tumbling", size = "1m" } }"#,
    );
    let shown = problems(&no_event_time);
    assert!(
        shown
            .iter()
            .any(|s| s.starts_with("pipelines[0].operators[1].window (")
                && s.contains("source.event_time")),
        "{shown:#?}"
    );

    let wrong = windowed
        .replace(r#"advance = "15s""#, r#"advance = "2m""#)
        .replace(r#"format = "unix_s""#, r#"format = "iso""#)
        .replace(
            r#"type = "count","#,
            r#"type = "count", emit = "on_checkpoint","#,
        );
    let shown = problems(&wrong);
    for (path, words) in [
        (
            "pipelines[0].operators[1].window.advance (",
            "must not exceed",
        ),
        (
            "pipelines[0].source.event_time.format (",
            "unknown time format \"iso\"",
        ),
        (
            "pipelines[0].operators[1].emit (",
            "\"on_window_close\" or \"every_update\"",
        ),
    ] {
        assert!(
            shown
                .iter()
                .any(|s| s.starts_with(path) && s.contains(words)),
            "{path} {words}: {shown:#?}"
        );
    }
    let hasty = windowed.replace(
        r#"max_out_of_orderness = "5s""#,
        r#"max_out_of_orderness = "5s", idle_timeout = "2s""#,
    );
    assert!(
        problems(&hasty).iter().any(|s| s
            .starts_with("pipelines[0].source.event_time.idle_timeout (")
            && s.contains("3 checkpoint intervals")),
        "{:#?}",
        problems(&hasty)
    );
    let session = windowed.replace(r#"type = "hopping""#, r#"type = "session""#);
    let shown = problems(&session);
    assert!(
        shown
            .iter()
            .any(|s| s.starts_with("pipelines[0].operators[1].window.size (")
                && s.contains("takes gap")),
        "{shown:#?}"
    );
    let session = windowed.replace(
        r#"type = "hopping", size = "1m", advance = "15s""#,
        r#"type = "session", gap = "30s""#,
    );
    let w = from_str(&session).unwrap().pipelines[0]
        .plan
        .aggregate
        .clone()
        .unwrap()
        .window
        .unwrap();
    assert_eq!(w.gap_ms, Some(30_000));
    let not_mergeable = session.replace(r#"type = "count""#, r#"type = "first", field = "x""#);
    assert!(
        problems(&not_mergeable)
            .iter()
            .any(|s| s.contains("session windows merge")),
    );
}

#[test]
fn expressions_compile_at_validation_and_errors_point_into_them() {
    let ok = EXAMPLE.replace(
        r#"{ type = "key_by", field = "user" },"#,
        r#"{ type = "filter", expr = '.n > 1' }, { type = "map", expr = '{user, n}' }, { type = "key_by", field = "user" },"#,
    );
    let c = from_str(&ok).unwrap();
    assert_eq!(
        c.pipelines[0].plan.before[..2],
        [
            Step::Select {
                expr: ".n > 1".into()
            },
            Step::Transform {
                expr: "{user, n}".into()
            }
        ]
    );
    let wrong = EXAMPLE.replace(
        r#"{ type = "key_by", field = "user" },"#,
        "{ type = \"map\", expr = '.a | nosuch(1)' },\n  { type = \"filter\", expr = '.a', field = \"b\", equals = 1 },\n  { type = \"key_by\", field = \"user\" },",
    );
    let shown = problems(&wrong);
    // line 18 of the file; `nosuch` is the 6th character of the program, after `expr = '`
    let col = r#"  { type = "map", expr = '.a | "#.len() + 1;
    assert!(
        shown.iter().any(
            |s| s.starts_with(&format!("pipelines[0].operators[0].expr (18:{col})"))
                && s.contains("nosuch")
        ),
        "{shown:#?}"
    );
    assert!(
        shown
            .iter()
            .any(|s| s.starts_with("pipelines[0].operators[1].field (")
                && s.contains("either expr or field")),
        "{shown:#?}"
    );
}

/// The problems `text` is refused with, as shown to the user.
fn problems(text: &str) -> Vec<String> {
    from_str(text)
        .unwrap_err()
        .iter()
        .map(ToString::to_string)
        .collect()
}

#[test]
fn ttl_time_is_processing_by_default_event_with_the_source_event_time() {
    let c =
        from_str(&EXAMPLE.replace(r#"{ type = "count" }"#, r#"{ type = "count", ttl = "1h" }"#))
            .unwrap();
    let agg = c.pipelines[0].plan.aggregate.as_ref().unwrap();
    assert_eq!(
        (agg.ttl_ms, agg.ttl_time),
        (Some(3_600_000), TimeDomain::Processing)
    );

    let event = EXAMPLE
        .replace(
            r#"source = { topic = "events", format = "json" }"#,
            r#"source = { topic = "events", format = "json", event_time = { field = "ts" } }"#,
        )
        .replace(
            r#"{ type = "count" }"#,
            r#"{ type = "dedupe", ttl = "10m", time = "event" }"#,
        )
        .replace(r#"  { type = "key_by", field = "user" },"#, "");
    let c = from_str(&event).unwrap();
    let agg = c.pipelines[0].plan.aggregate.as_ref().unwrap();
    assert_eq!(agg.ttl_time, TimeDomain::Event);

    let shown = problems(&EXAMPLE.replace(
        r#"{ type = "count" }"#,
        r#"{ type = "count", ttl = "1h", time = "event" }"#,
    ));
    assert!(
        shown
            .iter()
            .any(|s| s.starts_with("pipelines[0].operators[1].time (")
                && s.contains("source.event_time")),
        "{shown:#?}"
    );
    let shown = problems(&EXAMPLE.replace(
        r#"{ type = "count" }"#,
        r#"{ type = "count", time = "wall" }"#,
    ));
    assert!(
        shown
            .iter()
            .any(|s| s.starts_with("pipelines[0].operators[1].time (")
                && s.contains("unknown time \"wall\"")),
        "{shown:#?}"
    );
    assert!(
        shown.iter().any(|s| s.contains("add a ttl")),
        "time without ttl: {shown:#?}"
    );
}

#[test]
fn a_join_reads_its_table_as_json_or_avro() {
    let with = |op: &str| {
        EXAMPLE.replace(r#"{ type = "count" }"#, op).replace(
            "[[pipelines]]",
            "[schemas]\n2 = \"schemas/purchase-v2.avsc\"\n\n[[pipelines]]",
        )
    };
    let c = from_str(&with(
        r#"{ type = "join", table = "t", into = "row", format = "avro", schema_id = 2 }"#,
    ))
    .unwrap();
    let kind = &c.pipelines[0].plan.aggregate.as_ref().unwrap().kind;
    assert!(
        matches!(
            kind,
            AggregateKind::Join {
                format: Format::Avro { schema_id: 2 },
                ..
            }
        ),
        "{kind:?}"
    );
    let shown = problems(&with(
        r#"{ type = "join", table = "t", into = "row", format = "bytes" }"#,
    ));
    assert!(
        shown
            .iter()
            .any(|s| s.starts_with("pipelines[0].operators[1].format (")
                && s.contains("\"json\" or \"avro\"")),
        "{shown:#?}"
    );
    let shown = problems(&with(
        r#"{ type = "join", table = "t", into = "row", format = "avro", schema_id = 9 }"#,
    ));
    assert!(
        shown
            .iter()
            .any(|s| s.starts_with("pipelines[0].operators[1].schema_id (")),
        "{shown:#?}"
    );
}

#[test]
fn a_schema_registry_needs_an_http_url_and_a_positive_timeout() {
    let with = |table: &str| EXAMPLE.replace("[[pipelines]]", &format!("{table}\n[[pipelines]]"));
    let ok = from_str(&with(
        "[schema_registry]\nurl = \"https://registry.example:8081/\"\ntimeout = \"3s\"\n",
    ));
    assert!(ok.is_ok(), "{ok:?}");
    let p = problems(&with(
        "[schema_registry]\nurl = \"registry:8081\"\ntimeout = \"0s\"\n",
    ));
    assert!(
        p.iter().any(|m| m.starts_with("schema_registry.url (14:7)")
            && m.contains("\"registry:8081\" is not a registry URL")),
        "{p:?}"
    );
    let p = problems(&with(
        "[schema_registry]\nurl = \"http://r:8081\"\ntimeout = \"0s\"\n",
    ));
    assert!(
        p.iter()
            .any(|m| m.starts_with("schema_registry.timeout (15:11)")
                && m.contains("out of range: must be between 1ms and 10m")),
        "{p:?}"
    );
    let p = problems(&with(
        "[schema_registry]\nurl = \"http://r:8081\"\nuser = \"x\"\n",
    ));
    assert!(
        p.iter()
            .any(|m| m.contains("unknown key `user`; did you mean `username`?")),
        "{p:?}"
    );
}

#[test]
fn a_join_of_two_streams_is_inner_left_or_outer() {
    let join = |mode: &str| {
        EXAMPLE
            .replace(
                r#"source = { topic = "events", format = "json" }"#,
                r#"source = { topic = "events", format = "json", event_time = { field = "ts" } }"#,
            )
            .replace(
                r#"{ type = "count" }"#,
                &format!(
                    r#"{{ type = "join", stream = "pays", within = "1m", into = "p"{mode} }}"#
                ),
            )
    };
    let kind = |text: &str| {
        let c = from_str(text).unwrap();
        match &c.pipelines[0].plan.aggregate.as_ref().unwrap().kind {
            AggregateKind::StreamJoin { mode, .. } => *mode,
            other => panic!("{other:?}"),
        }
    };
    use crate::config::StreamJoinMode;
    assert_eq!(kind(&join("")), StreamJoinMode::Inner);
    assert_eq!(kind(&join(r#", mode = "left""#)), StreamJoinMode::Left);
    assert_eq!(kind(&join(r#", mode = "outer""#)), StreamJoinMode::Outer);
    let p = problems(&join(r#", mode = "full""#));
    assert!(
        p.iter()
            .any(|m| m.starts_with("pipelines[0].operators[1].mode (")
                && m.contains("unknown mode \"full\"")
                && m.contains("\"outer\"")),
        "{p:?}"
    );
}

#[test]
fn registry_credentials_need_both_halves_and_one_password() {
    let with = |lines: &str| {
        EXAMPLE.replace(
            "[[pipelines]]",
            &format!("[schema_registry]\nurl = \"http://r:8081\"\n{lines}\n[[pipelines]]"),
        )
    };
    assert!(from_str(&with("username = \"u\"\npassword = \"p\"")).is_ok());
    let p = problems(&with("username = \"u\""));
    assert!(
        p.iter().any(|m| m.starts_with("schema_registry.username (")
            && m.contains("needs password or password_env")),
        "{p:?}"
    );
    let p = problems(&with("password = \"p\""));
    assert!(
        p.iter().any(|m| m.contains("a password needs a username")),
        "{p:?}"
    );
    let p = problems(&with(
        "username = \"u\"\npassword = \"p\"\npassword_env = \"X\"",
    ));
    assert!(p.iter().any(|m| m.contains("not both")), "{p:?}");
    let p = problems(&with(
        "username = \"u\"\npassword_env = \"FLUMEN_TEST_SURELY_UNSET_VARIABLE\"",
    ));
    assert!(
        p.iter()
            .any(|m| m.starts_with("schema_registry.password_env (")
                && m.contains("FLUMEN_TEST_SURELY_UNSET_VARIABLE is not set")),
        "{p:?}"
    );
}

#[test]
fn zero_and_absurd_durations_are_refused_at_their_place() {
    let text = EXAMPLE
        .replace(r#"interval = "1s""#, r#"interval = "0s""#)
        .replace(
            "[checkpoint]",
            "transaction_timeout = \"0s\"\n\n[checkpoint]",
        );
    let p = problems(&text);
    assert!(
        p.iter().any(|m| m.starts_with("checkpoint.interval (8:12)")
            && m.contains("\"0s\" is out of range: must be between 10ms and 5m")),
        "{p:?}"
    );
    assert!(
        p.iter()
            .any(|m| m.starts_with("kafka.transaction_timeout (5:23)")
                && m.contains("must be between 10s and 15m")),
        "{p:?}"
    );
    let absurd = EXAMPLE.replace(r#"interval = "1s""#, r#"interval = "3days""#);
    let p = problems(&absurd);
    assert!(
        p.iter()
            .any(|m| m.starts_with("checkpoint.interval") && m.contains("out of range")),
        "{p:?}"
    );
}

#[test]
fn secrets_are_never_printed_and_urls_carry_no_credentials() {
    let with = |table: &str| EXAMPLE.replace("[[pipelines]]", &format!("{table}\n[[pipelines]]"));
    let config = from_str(&with(
        "[kafka.properties]\n\"sasl.password\" = \"canary-0451\"\n\"ssl.key.password\" = \"canary-0452\"\n\"sasl.username\" = \"alice\"\n",
    ))
    .unwrap();
    let shown = format!("{config:?} {:#?}", config.kafka);
    assert!(!shown.contains("canary-045"), "{shown}");
    assert!(
        shown.contains("alice") && shown.contains("<redacted>"),
        "{shown}"
    );
    let p = problems(&with(
        "[schema_registry]\nurl = \"https://bob:canary-0453@registry:8081\"\n",
    ));
    assert!(
        p.iter().any(|m| m.starts_with("schema_registry.url (14:7)")
            && m.contains("set schema_registry.username and schema_registry.password_env")),
        "{p:?}"
    );
    assert!(p.iter().all(|m| !m.contains("canary-0453")), "{p:?}");
}

#[test]
fn the_instance_id_may_come_from_the_environment() {
    let with = |line: &str| format!("{line}\n{EXAMPLE}");
    let p = problems(&with(
        "instance_id_env = \"FLUMEN_TEST_SURELY_UNSET_VARIABLE\"",
    ));
    assert!(
        p.iter().any(|m| m.starts_with("instance_id_env (1:")
            && m.contains("FLUMEN_TEST_SURELY_UNSET_VARIABLE is not set")),
        "{p:?}"
    );
    let p = problems(&with("instance_id = \"a\"\ninstance_id_env = \"X\""));
    assert!(p.iter().any(|m| m.contains("not both")), "{p:?}");
    // a value that cannot be part of a transactional id is named with its variable
    let p = problems(&with("instance_id_env = \"PATH\""));
    assert!(
        p.iter()
            .any(|m| m.starts_with("instance_id_env (PATH) (") && m.contains("[A-Za-z0-9._-]")),
        "{p:?}"
    );
    let c = from_str(&with("instance_id = \"pod-7\"")).unwrap();
    assert_eq!(c.pipelines[0].transactional_id, "flumen-counts-pod-7");
}
