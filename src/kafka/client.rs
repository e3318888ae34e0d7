//! Typed config → librdkafka `ClientConfig`. Engine-owned settings are applied after the
//! user's pass-through properties (which `config` already refused to contain them).
//!
//! `[kafka.properties]` serve every client, as one `Properties` does in a Kafka Streams app;
//! each client gets those of its role only (librdkafka logs a CONFWARN for every property of
//! the other role, on every client it creates: `session.timeout.ms` on each producer).

use rdkafka::config::ClientConfig;

use crate::config::KafkaConfig;

/// What a client is, as librdkafka sees it (an admin client is a producer handle).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Consumer,
    Producer,
}

/// The consumer-only properties ("C" in librdkafka 2.12's CONFIGURATION.md), global and
/// topic-level; the engine sets several of them itself (refused in `[kafka.properties]`).
const CONSUMER_ONLY: &[&str] = &[
    "group.id",
    "group.instance.id",
    "partition.assignment.strategy",
    "session.timeout.ms",
    "heartbeat.interval.ms",
    "group.protocol.type",
    "group.protocol",
    "group.remote.assignor",
    "coordinator.query.interval.ms",
    "max.poll.interval.ms",
    "enable.auto.commit",
    "auto.commit.interval.ms",
    "enable.auto.offset.store",
    "queued.min.messages",
    "queued.max.messages.kbytes",
    "fetch.wait.max.ms",
    "fetch.queue.backoff.ms",
    "fetch.message.max.bytes",
    "max.partition.fetch.bytes",
    "fetch.max.bytes",
    "fetch.min.bytes",
    "fetch.error.backoff.ms",
    "offset.store.method",
    "isolation.level",
    "enable.partition.eof",
    "check.crcs",
    "auto.commit.enable",
    "auto.offset.reset",
    "offset.store.path",
    "offset.store.sync.interval.ms",
    "consume.callback.max.messages",
];

/// The producer-only properties ("P" in the same table).
const PRODUCER_ONLY: &[&str] = &[
    "transactional.id",
    "transaction.timeout.ms",
    "enable.idempotence",
    "enable.gapless.guarantee",
    "queue.buffering.max.messages",
    "queue.buffering.max.kbytes",
    "queue.buffering.max.ms",
    "linger.ms",
    "message.send.max.retries",
    "retries",
    "queue.buffering.backpressure.threshold",
    "compression.codec",
    "compression.type",
    "batch.num.messages",
    "batch.size",
    "delivery.report.only.error",
    "sticky.partitioning.linger.ms",
    "request.required.acks",
    "acks",
    "request.timeout.ms",
    "message.timeout.ms",
    "delivery.timeout.ms",
    "queuing.strategy",
    "produce.offset.report",
    "partitioner",
    "compression.level",
];

fn base(kafka: &KafkaConfig, role: Role) -> ClientConfig {
    let other = match role {
        Role::Consumer => PRODUCER_ONLY,
        Role::Producer => CONSUMER_ONLY,
    };
    let mut cfg = ClientConfig::new();
    // librdkafka (since 2.10) drops every broker a Metadata response leaves out, and a KRaft
    // broker restarting while its old registration is fenced leaves itself out: with one
    // broker, or all of them restarting, the client has no broker left and would wait the
    // default 5 minutes before bootstrapping again, delivering and fetching nothing
    // (CHAOS.md, finding 13). A user's own value, set below, wins.
    cfg.set(
        "metadata.recovery.rebootstrap.trigger.ms",
        REBOOTSTRAP_AFTER_MS.to_string(),
    );
    for (k, v) in kafka
        .properties
        .iter()
        .filter(|(k, _)| !other.contains(&k.as_str()))
    {
        cfg.set(k, v);
    }
    cfg.set("bootstrap.servers", &kafka.bootstrap_servers);
    cfg
}

/// How long a client that reaches no broker waits before it bootstraps again.
const REBOOTSTRAP_AFTER_MS: u64 = 10_000;
const DEFAULT_SESSION_TIMEOUT_MS: u64 = 15_000;
const DEFAULT_MAX_POLL_INTERVAL_MS: u64 = 300_000;

/// A pass-through property in milliseconds, or `default_ms`.
fn property_ms(kafka: &KafkaConfig, key: &str, default_ms: u64) -> std::time::Duration {
    std::time::Duration::from_millis(property(kafka, key).unwrap_or(default_ms))
}

/// A `[kafka.properties]` setting parsed, if set and parseable.
pub fn property<T: std::str::FromStr>(kafka: &KafkaConfig, key: &str) -> Option<T> {
    kafka
        .properties
        .iter()
        .find(|(k, _)| k == key)
        .and_then(|(_, v)| v.parse().ok())
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
    let mut cfg = base(kafka, Role::Consumer);
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
    let mut cfg = base(kafka, Role::Producer);
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
    let mut cfg = base(kafka, Role::Consumer);
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
    let mut cfg = base(kafka, Role::Producer);
    cfg.set("enable.idempotence", "true").set("acks", "all");
    cfg
}

/// An admin client (topic creation, metadata). Its metadata requests must never create a
/// topic: a broker with `auto.create.topics.enable` would answer "what partitions has X?"
/// by creating X with its default partition count.
pub fn admin(kafka: &KafkaConfig) -> ClientConfig {
    let mut cfg = base(kafka, Role::Producer);
    cfg.set("allow.auto.create.topics", "false");
    cfg
}

/// The `message.max.bytes` the producer enforces (librdkafka's default unless overridden).
pub fn max_message_bytes(kafka: &KafkaConfig) -> usize {
    property(kafka, "message.max.bytes").unwrap_or(1_000_000)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A config of `properties` (the client's defaults otherwise).
    pub(crate) fn kafka(properties: &[(&str, &str)]) -> KafkaConfig {
        KafkaConfig {
            bootstrap_servers: "127.0.0.1:9092".into(),
            transaction_timeout: std::time::Duration::from_secs(60),
            properties: properties
                .iter()
                .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
                .collect(),
        }
    }

    #[test]
    fn each_client_gets_the_properties_of_its_role() {
        let k = kafka(&[
            ("session.timeout.ms", "20000"),
            ("fetch.min.bytes", "10"),
            ("linger.ms", "20"),
            ("compression.type", "zstd"),
            ("socket.keepalive.enable", "true"),
        ]);
        let consumer = consumer(&k, "g", None);
        let producer = producer(&k, "t");
        for c in [&consumer, &reader(&k)] {
            assert_eq!(c.get("fetch.min.bytes"), Some("10"));
            assert_eq!(c.get("compression.type"), None);
            assert_eq!(c.get("socket.keepalive.enable"), Some("true"));
        }
        assert_eq!(consumer.get("session.timeout.ms"), Some("20000"));
        assert_eq!(consumer.get("linger.ms"), None);
        for p in [&producer, &control_writer(&k), &admin(&k)] {
            assert_eq!(p.get("session.timeout.ms"), None);
            assert_eq!(p.get("fetch.min.bytes"), None);
            assert_eq!(p.get("socket.keepalive.enable"), Some("true"));
        }
        assert_eq!(producer.get("linger.ms"), Some("20"));
        assert_eq!(producer.get("compression.type"), Some("zstd"));
    }

    #[test]
    fn every_client_bootstraps_again_soon_unless_the_user_says_otherwise() {
        let k = kafka(&[]);
        let key = "metadata.recovery.rebootstrap.trigger.ms";
        for c in [
            consumer(&k, "g", None),
            producer(&k, "t"),
            reader(&k),
            control_writer(&k),
            admin(&k),
        ] {
            assert_eq!(c.get(key), Some("10000"));
        }
        let own = kafka(&[(key, "60000")]);
        assert_eq!(consumer(&own, "g", None).get(key), Some("60000"));
        assert_eq!(producer(&own, "t").get(key), Some("60000"));
    }
}
