//! The other pipeline shapes against the real broker: a stateless bytes copy, a count keyed by
//! the message key over a string source (no repartition topic), filter + map + sum, and jq
//! expressions in filter and map.

#![allow(clippy::unwrap_used)] // tests panic on failure, by design

mod common;

use std::collections::HashMap;
use std::time::Duration;

#[test]
fn bytes_copy_string_count_and_filter_map_sum() {
    let Some(bootstrap) = common::bootstrap() else {
        return;
    };
    let n = common::rand_name("shapes");
    let t = |s: &str| format!("{n}-{s}");
    for topic in [
        "raw",
        "raw-copy",
        "clicks",
        "clicks-per-key",
        "buys",
        "spend",
        "shaped",
    ] {
        common::create_topic(&bootstrap, &t(topic), 3);
    }
    let config = format!(
        r#"
[kafka]
bootstrap_servers = "{bootstrap}"

[checkpoint]
interval = "300ms"
dir = "{{DIR}}/checkpoints"

[state]
backend = "memory"

[[pipelines]]
name = "{n}-copy"
source = {{ topic = "{raw}", format = "bytes" }}
sink = {{ topic = "{raw_copy}", format = "bytes" }}

[[pipelines]]
name = "{n}-clicks"
source = {{ topic = "{clicks}", format = "string" }}
sink = {{ topic = "{clicks_per_key}", format = "json" }}
operators = [{{ type = "count", output = "clicks" }}]

[[pipelines]]
name = "{n}-spend"
source = {{ topic = "{buys}", format = "json" }}
sink = {{ topic = "{spend}", format = "json" }}
operators = [
  {{ type = "filter", field = "country", equals = "NL" }},
  {{ type = "map", drop = ["country"], rename = {{ amount = "eur" }} }},
  {{ type = "key_by", field = "who" }},
  {{ type = "sum", field = "eur" }},
]

[[pipelines]]
name = "{n}-expr"
source = {{ topic = "{buys}", format = "json" }}
sink = {{ topic = "{shaped}", format = "json" }}
operators = [
  {{ type = "filter", expr = '.country != "DE" and .amount >= 5' }},
  {{ type = "map", expr = '{{customer: .who, cents: (.amount * 100), place: {{country}}}}' }},
]
"#,
        shaped = t("shaped"),
        raw = t("raw"),
        raw_copy = t("raw-copy"),
        clicks = t("clicks"),
        clicks_per_key = t("clicks-per-key"),
        buys = t("buys"),
        spend = t("spend"),
    );
    let tmp = tempfile::tempdir().unwrap();
    let mut daemon = common::Daemon::new(tmp.path(), &config);
    daemon.start();

    // bytes: not UTF-8, copied unchanged (keys and values)
    let raw: Vec<(Option<i32>, String, String)> = (0..50)
        .map(|i| (None, format!("r{i}"), format!("payload-{i}-\u{7f}")))
        .collect();
    common::produce_all(&bootstrap, &t("raw"), &raw);
    // string source, counted by message key (keyed by the producer, so no repartition)
    let clicks: Vec<_> = (0..60)
        .map(|i| (None, format!("k{}", i % 5), format!("click {i}")))
        .collect();
    common::produce_all(&bootstrap, &t("clicks"), &clicks);
    let buys = [
        ("ann", "NL", 10),
        ("bob", "BE", 99),
        ("ann", "NL", 5),
        ("bob", "NL", 1),
        ("ann", "DE", 7),
    ];
    let buys: Vec<_> = buys
        .iter()
        .enumerate()
        .map(|(i, (who, c, a))| {
            (
                Some(0), // one partition: the order of one customer's sums is defined
                format!("o{i}"),
                format!(r#"{{"who":"{who}","country":"{c}","amount":{a}}}"#),
            )
        })
        .collect();
    common::produce_all(&bootstrap, &t("buys"), &buys);

    let copy = common::read_all(
        &bootstrap,
        &t("raw-copy"),
        "read_committed",
        50,
        Duration::from_secs(60),
    );
    let mut got: Vec<_> = copy
        .iter()
        .map(|r| (r.key.clone().unwrap(), r.value.clone().unwrap()))
        .collect();
    let mut want: Vec<_> = raw.iter().map(|(_, k, v)| (k.clone(), v.clone())).collect();
    got.sort();
    want.sort();
    assert_eq!(got, want, "{}", daemon.all_logs());

    let counts = common::read_all(
        &bootstrap,
        &t("clicks-per-key"),
        "read_committed",
        60,
        Duration::from_secs(60),
    );
    let mut per_key: HashMap<String, Vec<u64>> = HashMap::new();
    for r in &counts {
        let v: serde_json::Value = serde_json::from_str(r.value.as_deref().unwrap()).unwrap();
        assert_eq!(v["key"].as_str(), r.key.as_deref(), "{v}");
        per_key
            .entry(r.key.clone().unwrap())
            .or_default()
            .push(v["clicks"].as_u64().unwrap());
    }
    assert_eq!(per_key.len(), 5, "{per_key:?}");
    for (k, seq) in &per_key {
        assert_eq!(seq, &(1..=12).collect::<Vec<u64>>(), "key {k}");
    }

    let spend = common::read_all(
        &bootstrap,
        &t("spend"),
        "read_committed",
        3,
        Duration::from_secs(60),
    );
    let mut values: Vec<String> = spend.iter().map(|r| r.value.clone().unwrap()).collect();
    values.sort();
    assert_eq!(
        values,
        // sorted as text; fields in the order the issue shows: key field, then the aggregate
        vec![
            r#"{"who":"ann","sum":10}"#,
            r#"{"who":"ann","sum":15}"#,
            r#"{"who":"bob","sum":1}"#
        ],
        "{}",
        daemon.all_logs()
    );

    // filter and map by jq expression: the same buys, reshaped (computed, renamed, nested)
    let shaped = common::read_all(
        &bootstrap,
        &t("shaped"),
        "read_committed",
        3,
        Duration::from_secs(60),
    );
    let mut values: Vec<String> = shaped.iter().map(|r| r.value.clone().unwrap()).collect();
    values.sort();
    assert_eq!(
        values,
        vec![
            r#"{"customer":"ann","cents":1000,"place":{"country":"NL"}}"#,
            r#"{"customer":"ann","cents":500,"place":{"country":"NL"}}"#,
            r#"{"customer":"bob","cents":9900,"place":{"country":"BE"}}"#
        ],
        "{}",
        daemon.all_logs()
    );
    assert!(daemon.terminate(Duration::from_secs(40)).success());
}
