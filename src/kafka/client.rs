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

/// The group consumer: read_committed, no auto commit (offsets commit inside transactions),
/// static membership so a restarted instance takes its partitions back without waiting out
/// its dead predecessor's session.
pub fn consumer(kafka: &KafkaConfig, group_id: &str, instance_id: &str) -> ClientConfig {
    let mut cfg = base(kafka);
    cfg.set("group.id", group_id)
        .set("group.instance.id", instance_id)
        .set("isolation.level", "read_committed")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false");
    if !kafka
        .properties
        .iter()
        .any(|(k, _)| k == "session.timeout.ms")
    {
        cfg.set("session.timeout.ms", "15000");
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

/// An admin client (topic creation, metadata).
pub fn admin(kafka: &KafkaConfig) -> ClientConfig {
    base(kafka)
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
