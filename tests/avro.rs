//! Avro end to end against the real broker: Confluent-framed records written with two writer
//! schemas (v1 and v2) are read with the v2 reader schema, counted per user and written as
//! Avro; records with a wrong magic byte or a truncated body go to the dead-letter topic.

#![allow(clippy::unwrap_used)] // tests panic on failure, by design

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use serde_json::json;

use flumen::codec::avro::Registry;

fn schema(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("schemas")
        .join(name)
        .display()
        .to_string()
}

#[test]
fn avro_of_two_writer_schemas_is_read_counted_and_written_as_avro() {
    let Some(bootstrap) = common::bootstrap() else {
        return;
    };
    let name = common::rand_name("avro");
    let (source, sink, dlq) = (
        format!("{name}-in"),
        format!("{name}-out"),
        format!("{name}-dlq"),
    );
    common::create_topic(&bootstrap, &source, 2);
    common::create_topic(&bootstrap, &sink, 2);
    common::create_topic(&bootstrap, &dlq, 1);
    let (v1, v2, counts) = (
        schema("purchase-v1.avsc"),
        schema("purchase-v2.avsc"),
        schema("user-count.avsc"),
    );
    let schemas = format!("\n[schemas]\n1 = \"{v1}\"\n2 = \"{v2}\"\n3 = \"{counts}\"\n");
    let pipeline = format!(
        r#"on_error = "dead_letter"
dead_letter_topic = "{dlq}"
operators = [
  {{ type = "key_by", field = "user" }},
  {{ type = "count" }},
]"#
    );
    let config = common::pipeline_config(&bootstrap, &name, (&source, &sink), &schemas, &pipeline)
        .replace(
            &format!("source = {{ topic = \"{source}\", format = \"json\" }}"),
            &format!("source = {{ topic = \"{source}\", format = \"avro\", schema_id = 2 }}"),
        )
        .replace(
            &format!("sink = {{ topic = \"{sink}\", format = \"json\" }}"),
            &format!("sink = {{ topic = \"{sink}\", format = \"avro\", schema_id = 3 }}"),
        );
    let mut registry = Registry::default();
    registry.add(1, Path::new(&v1)).unwrap();
    registry.add(2, Path::new(&v2)).unwrap();
    registry.add(3, Path::new(&counts)).unwrap();

    // 200 purchases over 10 users, alternately written with v1 and v2, and 2 broken records
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .create()
        .unwrap();
    let mut expected: HashMap<String, u64> = HashMap::new();
    let mut values: Vec<Vec<u8>> = Vec::new();
    for i in 0..200u64 {
        let user = format!("u{}", i % 10);
        *expected.entry(user.clone()).or_default() += 1;
        let v = if i % 2 == 0 {
            registry
                .encode(1, &json!({"user": user, "amount": i}))
                .unwrap()
        } else {
            registry
                .encode(2, &json!({"user": user, "amount": i, "country": "BE"}))
                .unwrap()
        };
        values.push(v);
    }
    let truncated = {
        let mut v = registry
            .encode(2, &json!({"user": "u1", "amount": 5, "country": "FR"}))
            .unwrap();
        v.truncate(v.len() - 3);
        v
    };
    values.push(b"{\"user\":\"json, not avro\"}".to_vec());
    values.push(truncated);
    for (i, v) in values.iter().enumerate() {
        let key = format!("k{i}");
        producer
            .send(BaseRecord::to(&source).key(&key).payload(v))
            .map_err(|(e, _)| e)
            .unwrap();
    }
    producer.flush(Duration::from_secs(30)).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let mut daemon = common::Daemon::new(dir.path(), &config);
    daemon.start();
    let out = common::read_all(
        &bootstrap,
        &sink,
        "read_committed",
        200,
        Duration::from_secs(60),
    );
    let letters = common::read_all(
        &bootstrap,
        &dlq,
        "read_committed",
        2,
        Duration::from_secs(30),
    );
    assert!(
        daemon.terminate(Duration::from_secs(30)).success(),
        "{}",
        daemon.all_logs()
    );

    // outputs are Avro of schema 3: per user the counts 1..=n
    let mut seen: HashMap<String, Vec<u64>> = HashMap::new();
    for r in &out {
        let bytes = r.raw.as_deref().unwrap();
        let v = registry
            .decode(3, bytes)
            .unwrap_or_else(|e| panic!("output not Avro: {e}"));
        seen.entry(v["user"].as_str().unwrap().to_string())
            .or_default()
            .push(v["count"].as_u64().unwrap());
    }
    assert_eq!(seen.len(), expected.len(), "{}", daemon.all_logs());
    for (user, n) in &expected {
        assert_eq!(seen[user], (1..=*n).collect::<Vec<_>>(), "user {user}");
    }
    assert_eq!(letters.len(), 2, "{}", daemon.all_logs());
}

/// A mixed Avro stream, 1% each of five kinds of bad record — JSON instead of Avro, a wrong
/// magic byte, truncated Avro, a value the jq expression refuses, an output over
/// `message.max.bytes` — under `dead_letter`, through SIGKILLs: the dead-letter topic holds
/// exactly those records once each, untouched and classified, and every good record (of two
/// writer schemas) is out exactly once.
#[test]
fn a_mixed_stream_with_bad_records_is_dead_lettered_exactly_once_through_kills() {
    let Some(bootstrap) = common::bootstrap() else {
        return;
    };
    let name = common::rand_name("mixed");
    let (source, sink, dlq) = (
        format!("{name}-in"),
        format!("{name}-out"),
        format!("{name}-dlq"),
    );
    common::create_topic(&bootstrap, &source, 3);
    common::create_topic(&bootstrap, &sink, 3);
    common::create_topic(&bootstrap, &dlq, 1);
    let (v1, v2) = (schema("purchase-v1.avsc"), schema("purchase-v2.avsc"));
    let top = format!(
        "\n[kafka.properties]\n\"message.max.bytes\" = \"3000\"\n\n[schemas]\n1 = \"{v1}\"\n2 = \"{v2}\"\n"
    );
    let pipeline = format!(
        r#"on_error = "dead_letter"
dead_letter_topic = "{dlq}"
operators = [
  {{ type = "map", expr = 'if .country == "ERR" then error("country ERR is refused") else {{user, id: .amount, country, pad: (if .country == "BIG" then ("x" * 4000) else "" end)}} end' }},
]"#
    );
    let config = common::pipeline_config(&bootstrap, &name, (&source, &sink), &top, &pipeline)
        .replace(
            &format!("source = {{ topic = \"{source}\", format = \"json\" }}"),
            &format!("source = {{ topic = \"{source}\", format = \"avro\", schema_id = 2 }}"),
        );
    let mut registry = Registry::default();
    registry.add(1, Path::new(&v1)).unwrap();
    registry.add(2, Path::new(&v2)).unwrap();

    let mut values: Vec<Vec<u8>> = Vec::new();
    let mut good = std::collections::BTreeSet::new();
    let mut bad: HashMap<Vec<u8>, &str> = HashMap::new();
    for i in 0..5_000u64 {
        let user = format!("u{}", i % 17);
        let avro = |country: &str| {
            registry
                .encode(2, &json!({"user": user, "amount": i, "country": country}))
                .unwrap()
        };
        let (v, class) = match i % 100 {
            11 => (
                format!(r#"{{"user":"{user}","amount":{i}}}"#).into_bytes(),
                Some("decode"),
            ),
            23 => {
                let mut v = avro("FR");
                v.truncate(v.len() - 3);
                (v, Some("decode"))
            }
            37 => {
                let mut v = avro("FR");
                v[0] = 7;
                (v, Some("decode"))
            }
            51 => (avro("ERR"), Some("operator")),
            79 => (avro("BIG"), Some("too_large")),
            n if n % 2 == 0 => (
                registry
                    .encode(1, &json!({"user": user, "amount": i}))
                    .unwrap(),
                None,
            ),
            _ => (avro("BE"), None),
        };
        match class {
            Some(c) => {
                assert!(bad.insert(v.clone(), c).is_none(), "inputs are distinct");
            }
            None => {
                good.insert(i);
            }
        }
        values.push(v);
    }
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .create()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = common::Daemon::new(dir.path(), &config);
    daemon.start();
    for (c, chunk) in values.chunks(1_000).enumerate() {
        for (i, v) in chunk.iter().enumerate() {
            let key = format!("k{c}-{i}");
            producer
                .send(BaseRecord::to(&source).key(&key).payload(v))
                .map_err(|(e, _)| e)
                .unwrap();
        }
        producer.flush(Duration::from_secs(30)).unwrap();
        std::thread::sleep(Duration::from_millis(600));
        daemon.kill9();
        daemon.start();
    }
    let out = common::read_all(
        &bootstrap,
        &sink,
        "read_committed",
        good.len(),
        Duration::from_secs(90),
    );
    let letters = common::dead_letters(&bootstrap, &dlq, bad.len());
    assert!(
        daemon.terminate(Duration::from_secs(30)).success(),
        "{}",
        daemon.all_logs()
    );

    let mut ids: Vec<u64> = out
        .iter()
        .map(|r| {
            let v: serde_json::Value = serde_json::from_str(r.value.as_deref().unwrap()).unwrap();
            // v1 records read with the v2 reader schema take its default
            let want = if v["id"].as_u64().unwrap().is_multiple_of(2) {
                "NL"
            } else {
                "BE"
            };
            assert_eq!(v["country"], want, "{v}");
            v["id"].as_u64().unwrap()
        })
        .collect();
    ids.sort_unstable();
    let want: Vec<u64> = good.iter().copied().collect();
    assert_eq!(
        ids.len(),
        want.len(),
        "good records out {} times for {}\n{}",
        ids.len(),
        want.len(),
        daemon.all_logs()
    );
    assert_eq!(ids, want);

    assert_eq!(letters.len(), bad.len(), "{}", daemon.all_logs());
    let mut seen = std::collections::HashSet::new();
    for (value, headers) in &letters {
        let class = bad
            .get(value)
            .unwrap_or_else(|| panic!("dead letter not one of the bad inputs: {value:.40?}"));
        assert!(seen.insert(value.clone()), "dead-lettered twice");
        assert_eq!(headers["flumen.error.class"], *class, "{headers:?}");
        assert_eq!(headers["flumen.source.topic"], source);
        assert!(headers["flumen.source.offset"].parse::<i64>().is_ok());
    }
}

/// A stream-table join whose table is Avro of two writer schemas (read with the v2 reader
/// schema, v1 rows taking its default) enriches a JSON stream; a table record that is not Avro
/// is skipped with a warning naming it, and its key stays without a row.
#[test]
fn an_avro_table_of_two_writer_schemas_enriches_a_json_stream() {
    let Some(bootstrap) = common::bootstrap() else {
        return;
    };
    let name = common::rand_name("avro-join");
    let (table, source, sink) = (
        format!("{name}-table"),
        format!("{name}-in"),
        format!("{name}-out"),
    );
    for t in [&table, &source, &sink] {
        common::create_topic(&bootstrap, t, 4);
    }
    let (v1, v2) = (schema("purchase-v1.avsc"), schema("purchase-v2.avsc"));
    let mut registry = Registry::default();
    registry.add(1, Path::new(&v1)).unwrap();
    registry.add(2, Path::new(&v2)).unwrap();

    // rows keyed by user: even users written with v1 (no country: the reader's default "NL"),
    // odd ones with v2; u7's row is JSON, not Avro. Partitioned like the stream (murmur2, the
    // Java clients' default): the table must be co-partitioned with it
    let producer = common::producer(&bootstrap);
    let mut rows: HashMap<String, serde_json::Value> = HashMap::new();
    for i in 0..20u64 {
        let user = format!("u{i}");
        let value = if i == 7 {
            br#"{"user":"u7","amount":7}"#.to_vec()
        } else if i % 2 == 0 {
            rows.insert(
                user.clone(),
                json!({"user": user, "amount": i, "country": "NL"}),
            );
            registry
                .encode(1, &json!({"user": user, "amount": i}))
                .unwrap()
        } else {
            rows.insert(
                user.clone(),
                json!({"user": user, "amount": i, "country": "BE"}),
            );
            registry
                .encode(2, &json!({"user": user, "amount": i, "country": "BE"}))
                .unwrap()
        };
        producer
            .send(BaseRecord::to(&table).key(&user).payload(&value))
            .map_err(|(e, _)| e)
            .unwrap();
    }
    producer.flush(Duration::from_secs(30)).unwrap();

    let config = common::engine_header(&bootstrap, "rocksdb")
        + &format!(
            r#"
[schemas]
1 = "{v1}"
2 = "{v2}"

[[pipelines]]
name = "{name}"
source = {{ topic = "{source}", format = "json" }}
sink = {{ topic = "{sink}", format = "json" }}
operators = [
  {{ type = "join", table = "{table}", into = "profile", format = "avro", schema_id = 2 }},
]
"#
        );
    // 400 events keyed by user (the table's key), over u0..u19
    let events: Vec<(Option<i32>, String, String)> = (0..400u64)
        .map(|id| {
            let user = format!("u{}", id % 20);
            (
                None,
                user.clone(),
                format!(r#"{{"user":"{user}","id":{id}}}"#),
            )
        })
        .collect();
    common::produce_all(&bootstrap, &source, &events);
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = common::Daemon::new(dir.path(), &config);
    daemon.start();
    let out = common::read_all(
        &bootstrap,
        &sink,
        "read_committed",
        events.len(),
        Duration::from_secs(60),
    );
    assert_eq!(out.len(), events.len(), "{}", daemon.all_logs());
    for r in &out {
        let v: serde_json::Value = serde_json::from_str(r.value.as_deref().unwrap()).unwrap();
        let user = v["user"].as_str().unwrap();
        let want = rows.get(user).cloned().unwrap_or(serde_json::Value::Null);
        assert_eq!(v["profile"], want, "{v}\n{}", daemon.all_logs());
    }
    let logs = daemon.all_logs();
    assert!(
        logs.contains("table record skipped") && logs.contains("wrong magic byte"),
        "the JSON row of u7 is not named\n{logs}"
    );
    assert!(
        daemon.terminate(Duration::from_secs(30)).success(),
        "{logs}"
    );
}

/// A stream-stream join whose other stream is Avro of two writer schemas (payment v1 without
/// `method`, v2 with it) read with the v2 reader schema: every pair of a JSON order and an
/// Avro payment within 1 s goes out once, v1 payments with the reader's default; a payment
/// that is JSON, not Avro, is dead-lettered with its place.
#[test]
fn an_avro_other_stream_of_two_writer_schemas_joins_a_json_stream() {
    let Some(bootstrap) = common::bootstrap() else {
        return;
    };
    let name = common::rand_name("avro-sjoin");
    let (orders, payments, sink, dlq) = (
        format!("{name}-orders"),
        format!("{name}-payments"),
        format!("{name}-out"),
        format!("{name}-dlq"),
    );
    for t in [&orders, &payments, &sink] {
        common::create_topic(&bootstrap, t, 4);
    }
    common::create_topic(&bootstrap, &dlq, 1);
    let (v1, v2) = (schema("payment-v1.avsc"), schema("payment-v2.avsc"));
    let mut registry = Registry::default();
    registry.add(11, Path::new(&v1)).unwrap();
    registry.add(12, Path::new(&v2)).unwrap();
    let config = common::engine_header(&bootstrap, "rocksdb")
        + &format!(
            r#"
[schemas]
11 = "{v1}"
12 = "{v2}"

[[pipelines]]
name = "{name}"
source = {{ topic = "{orders}", format = "json", event_time = {{ field = "ts", max_out_of_orderness = "5s" }} }}
sink = {{ topic = "{sink}", format = "json" }}
on_error = "dead_letter"
dead_letter_topic = "{dlq}"
operators = [
  {{ type = "key_by", field = "user" }},
  {{ type = "join", stream = "{payments}", within = "1s", into = "payment", format = "avro", schema_id = 12 }},
]
"#
        );
    let base = 1_700_000_000_000i64;
    let mut order_recs = Vec::new();
    let mut pay_rows = Vec::new();
    for i in 0..300i64 {
        let user = format!("u{}", i % 30);
        let ts = base + i * 40;
        order_recs.push((
            None,
            format!("o{i}"),
            json!({"order": i, "user": user, "ts": ts}).to_string(),
        ));
        // payments 0.5 s to 1.5 s after the order of the same index, of another user mix
        let user = format!("u{}", (i * 7) % 30);
        pay_rows.push((i, user, ts + 500 + (i % 3) * 500));
    }
    let mut expected = std::collections::BTreeSet::new();
    for (o, rec) in order_recs.iter().enumerate() {
        let v: serde_json::Value = serde_json::from_str(&rec.2).unwrap();
        for (p, pu, pt) in &pay_rows {
            if v["user"] == pu.as_str() && (v["ts"].as_i64().unwrap() - pt).abs() <= 1_000 {
                expected.insert((o as i64, *p));
            }
        }
    }
    assert!(
        expected.len() > 100,
        "a weak input: {} pairs",
        expected.len()
    );
    common::produce_all(&bootstrap, &orders, &order_recs);
    // keyed by user with the Java clients' partitioner, co-partitioned with the re-keyed orders
    let producer = common::producer(&bootstrap);
    let mut bad = Vec::new();
    for (i, user, ts) in &pay_rows {
        let value = if i % 2 == 0 {
            registry
                .encode(11, &json!({"payment": i, "user": user, "ts": ts}))
                .unwrap()
        } else {
            registry
                .encode(
                    12,
                    &json!({"payment": i, "user": user, "ts": ts, "method": "iban"}),
                )
                .unwrap()
        };
        producer
            .send(BaseRecord::to(&payments).key(user).payload(&value))
            .map_err(|(e, _)| e)
            .unwrap();
        if *i == 150 {
            let json = format!(r#"{{"payment":-1,"user":"{user}","ts":{ts}}}"#).into_bytes();
            producer
                .send(BaseRecord::to(&payments).key(user).payload(&json))
                .map_err(|(e, _)| e)
                .unwrap();
            bad.push(json);
        }
    }
    producer.flush(Duration::from_secs(30)).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let mut daemon = common::Daemon::new(dir.path(), &config);
    daemon.start();
    let out = common::read_all(
        &bootstrap,
        &sink,
        "read_committed",
        expected.len(),
        Duration::from_secs(60),
    );
    let mut got = std::collections::BTreeSet::new();
    for r in &out {
        let v: serde_json::Value = serde_json::from_str(r.value.as_deref().unwrap()).unwrap();
        let (o, p) = (
            v["order"].as_i64().unwrap(),
            v["payment"]["payment"].as_i64().unwrap(),
        );
        let method = if p % 2 == 0 { "card" } else { "iban" };
        assert_eq!(v["payment"]["method"], method, "{v}");
        assert!(got.insert((o, p)), "pair {o}/{p} out twice");
    }
    assert_eq!(got, expected, "{}", daemon.all_logs());
    let letters = common::dead_letters(&bootstrap, &dlq, 1);
    assert_eq!(letters.len(), 1, "{}", daemon.all_logs());
    assert_eq!(letters[0].0, bad[0]);
    assert_eq!(letters[0].1["flumen.source.topic"], payments);
    assert!(
        letters[0].1["flumen.error.message"].contains("wrong magic byte"),
        "{:?}",
        letters[0].1
    );
    assert!(
        daemon.terminate(Duration::from_secs(30)).success(),
        "{}",
        daemon.all_logs()
    );
}
