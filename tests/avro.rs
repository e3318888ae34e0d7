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
