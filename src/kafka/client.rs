//! Typed config → librdkafka `ClientConfig`. Engine-owned settings are applied after the
//! user's pass-through properties (which `config` already refused to contain them).

use rdkafka::config::ClientConfig;

use crate::config::KafkaConfig;

fn base(kafka: &KafkaConfig) -> ClientConfig {
    let mut cfg = ClientConfig::new();
    for (k, v) in &kafka.properties {
        cfg.set(k, v);
    }
    cfg.set("bootstrap.servers", &kafka.bootstrap_servers);
    cfg
}

const DEFAULT_SESSION_TIMEOUT_MS: u64 = 15_000;
const DEFAULT_MAX_POLL_INTERVAL_MS: u64 = 300_000;

/// A pass-through property in milliseconds, or `default_ms`.
fn property_ms(kafka: &KafkaConfig, key: &str, default_ms: u64) -> std::time::Duration {
    let ms = kafka
        .properties
        .iter()
        .find(|(k, _)| k == key)
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(default_ms);
    std::time::Duration::from_millis(ms)
}

/// The consumer's group session timeout (`session.timeout.ms`, default 15s).
pub fn session_timeout(kafka: &KafkaConfig) -> std::time::Duration {
    property_ms(kafka, "session.timeout.ms", DEFAULT_SESSION_TIMEOUT_MS)
}

/// The consumer's `max.poll.interval.ms` (librdkafka's default 300 s): how long the pipeline
/// thread may go without polling before the member is thrown out of the group.
pub fn max_poll_interval(kafka: &KafkaConfig) -> std::time::Duration {
    property_ms(kafka, "max.poll.interval.ms", DEFAULT_MAX_POLL_INTERVAL_MS)
}

/// The group consumer: read_committed, no auto commit (offsets commit inside transactions),
/// static membership so a restarted instance takes its partitions back without waiting out
/// its dead predecessor's session. A position out of range is an error, never a reset: the
/// records between were never processed (a partition never committed starts at its log
/// start explicitly, `consumer.rs`).
pub fn consumer(kafka: &KafkaConfig, group_id: &str, instance_id: Option<&str>) -> ClientConfig {
    let mut cfg = base(kafka);
    if let Some(id) = instance_id {
        cfg.set("group.instance.id", id);
    }
    cfg.set("group.id", group_id)
        .set("isolation.level", "read_committed")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "error")
        .set("enable.partition.eof", "false");
    // a grown topic (restore into more partitions) is noticed within seconds, not minutes:
    // the group leader rejoins when a subscribed topic's partition count changes
    if !kafka
        .properties
        .iter()
        .any(|(k, _)| k == "topic.metadata.refresh.interval.ms")
    {
        cfg.set("topic.metadata.refresh.interval.ms", "5000");
    }
    if !kafka
        .properties
        .iter()
        .any(|(k, _)| k == "session.timeout.ms")
    {
        cfg.set("session.timeout.ms", DEFAULT_SESSION_TIMEOUT_MS.to_string());
    }
    // the partitions' last stable offsets, for the lag metric and readiness (`consumer/ends.rs`)
    if !kafka
        .properties
        .iter()
        .any(|(k, _)| k == "statistics.interval.ms")
    {
        cfg.set("statistics.interval.ms", "2000");
    }
    cfg
}

/// The transactional producer. `message.timeout.ms` stays below the transaction timeout, as
/// librdkafka requires; murmur2 partitions by key as Kafka's Java clients do.
pub fn producer(kafka: &KafkaConfig, transactional_id: &str) -> ClientConfig {
    let mut cfg = base(kafka);
    let txn_ms = kafka.transaction_timeout.as_millis();
    cfg.set("transactional.id", transactional_id)
        .set("transaction.timeout.ms", txn_ms.to_string())
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("partitioner", "murmur2_random");
    if !kafka
        .properties
        .iter()
        .any(|(k, _)| k == "message.timeout.ms")
    {
        cfg.set("message.timeout.ms", (txn_ms / 2).to_string());
    }
    if !kafka.properties.iter().any(|(k, _)| k == "linger.ms") {
        cfg.set("linger.ms", "5");
    }
    cfg
}

/// A group-less read_committed reader that reports partition ends (savepoints).
pub fn reader(kafka: &KafkaConfig) -> ClientConfig {
    let mut cfg = base(kafka);
    cfg.set("group.id", "flumen-reader")
        .set("isolation.level", "read_committed")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "true");
    cfg
}

/// The control topic's writer (`kafka::control`): idempotent, not transactional (a request
/// is a command to the running instances, never pipeline data).
pub fn control_writer(kafka: &KafkaConfig) -> ClientConfig {
    let mut cfg = base(kafka);
    cfg.set("enable.idempotence", "true").set("acks", "all");
    cfg
}

/// An admin client (topic creation, metadata). Its metadata requests must never create a
/// topic: a broker with `auto.create.topics.enable` would answer "what partitions has X?"
/// by creating X with its default partition count.
pub fn admin(kafka: &KafkaConfig) -> ClientConfig {
    let mut cfg = base(kafka);
    cfg.set("allow.auto.create.topics", "false");
    cfg
}

/// The `message.max.bytes` the producer enforces (librdkafka's default unless overridden).
pub fn max_message_bytes(kafka: &KafkaConfig) -> usize {
    kafka
        .properties
        .iter()
        .find(|(k, _)| k == "message.max.bytes")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(1_000_000)
}
