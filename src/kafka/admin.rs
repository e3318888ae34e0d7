//! Topic administration: partition counts, the internal repartition topic (kept forever, its
//! consumed records deleted by Flumen), broker settings.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::admin::{
    AdminClient, AdminOptions, AlterConfig, ConfigSource, NewPartitions, NewTopic,
    ResourceSpecifier, TopicReplication,
};
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaErrorCode;

use super::{Error, Result, client};
use crate::config::KafkaConfig;

const TIMEOUT: Duration = Duration::from_secs(30);

pub struct Admin {
    admin: AdminClient<DefaultClientContext>,
    runtime: tokio::runtime::Handle,
}

impl Admin {
    /// `runtime` drives rdkafka's admin futures; calls block the calling (non-runtime) thread.
    pub fn new(kafka: &KafkaConfig, runtime: tokio::runtime::Handle) -> Result<Self> {
        let admin = super::client::admin(kafka)
            .create()
            .map_err(client("create admin client"))?;
        Ok(Self { admin, runtime })
    }

    /// Partition count of `topic`, or `MissingTopic`.
    pub fn partition_count(&self, topic: &str) -> Result<i32> {
        let md = self
            .admin
            .inner()
            .fetch_metadata(Some(topic), TIMEOUT)
            .map_err(client("fetch metadata"))?;
        let Some(t) = md.topics().iter().find(|t| t.name() == topic) else {
            return Err(Error::MissingTopic(topic.to_string()));
        };
        if t.error().is_some() || t.partitions().is_empty() {
            return Err(Error::MissingTopic(topic.to_string()));
        }
        i32::try_from(t.partitions().len()).map_err(|_| Error::MissingTopic(topic.to_string()))
    }

    /// Creates the internal topic with `partitions` partitions unless it exists; an existing one
    /// must have exactly that many (keys would otherwise land on the wrong task). Its records
    /// are kept until Flumen deletes them (`retention.ms = -1`, as Kafka Streams' repartition
    /// topics): a record no task has counted yet must never expire. A topic created by an
    /// older version (7 days) is changed at start, its other settings kept.
    pub fn ensure_internal_topic(&self, topic: &str, partitions: i32) -> Result<()> {
        self.create_topic(topic, partitions, "-1")?;
        self.keep_forever(topic)
    }

    /// A pipeline's control topic (`kafka::control`): one partition, requests kept a day (a
    /// request matters for seconds; it is never a record of the pipeline's data).
    pub fn ensure_control_topic(&self, topic: &str) -> Result<()> {
        if self.partition_count(topic).is_ok() {
            return Ok(());
        }
        self.create_topic(topic, 1, "86400000")
    }

    /// Creates `topic` unless it exists, and waits until its metadata shows `partitions`.
    fn create_topic(&self, topic: &str, partitions: i32, retention_ms: &str) -> Result<()> {
        let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(-1))
            .set("cleanup.policy", "delete")
            .set("retention.ms", retention_ms);
        let opts = AdminOptions::new().operation_timeout(Some(TIMEOUT));
        let results = self
            .runtime
            .block_on(self.admin.create_topics([&new], &opts))
            .map_err(client("create topic"))?;
        for r in results {
            match r {
                Ok(_) => tracing::info!(topic, partitions, "created internal topic"),
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((_, code)) => {
                    return Err(Error::Client {
                        op: "create topic",
                        source: rdkafka::error::KafkaError::AdminOp(code),
                    });
                }
            }
        }
        // metadata can lag creation for a moment
        let mut actual = 0;
        for _ in 0..50 {
            match self.partition_count(topic) {
                Ok(n) => {
                    actual = n;
                    break;
                }
                Err(Error::MissingTopic(_)) => std::thread::sleep(Duration::from_millis(100)),
                Err(e) => return Err(e),
            }
        }
        if actual != partitions {
            return Err(Error::PartitionCount {
                topic: topic.to_string(),
                expected: partitions,
                actual,
            });
        }
        Ok(())
    }

    /// Sets `retention.ms = -1` on `topic` unless it has it. AlterConfigs replaces a topic's
    /// whole dynamic config, so every other setting made on the topic is written back with it.
    fn keep_forever(&self, topic: &str) -> Result<()> {
        let spec = ResourceSpecifier::Topic(topic);
        let opts = AdminOptions::new().request_timeout(Some(TIMEOUT));
        let results = self
            .runtime
            .block_on(self.admin.describe_configs([&spec], &opts))
            .map_err(client("describe topic configs"))?;
        let admin_op = |op, code| Error::Client {
            op,
            source: rdkafka::error::KafkaError::AdminOp(code),
        };
        let Some(resource) = results.into_iter().next() else {
            return Ok(());
        };
        let resource = resource.map_err(|code| admin_op("describe topic configs", code))?;
        let was = resource.get("retention.ms").and_then(|e| e.value.clone());
        if was.as_deref() == Some("-1") {
            return Ok(());
        }
        let mut alter = AlterConfig::new(ResourceSpecifier::Topic(topic));
        for e in &resource.entries {
            if e.source != ConfigSource::DynamicTopic || e.name == "retention.ms" {
                continue;
            }
            let Some(value) = &e.value else {
                tracing::warn!(topic, setting = %e.name, "cannot keep a sensitive topic setting; retention of the internal topic left as it is");
                return Ok(());
            };
            alter = alter.set(&e.name, value);
        }
        alter = alter.set("retention.ms", "-1");
        let results = self
            .runtime
            .block_on(self.admin.alter_configs([&alter], &opts))
            .map_err(client("alter topic configs"))?;
        for r in results {
            r.map_err(|(_, code)| admin_op("alter topic configs", code))?;
        }
        tracing::info!(topic, was = ?was, "the internal topic now keeps its records until Flumen deletes them (retention.ms = -1)");
        Ok(())
    }

    /// Deletes the records of `topic` below each partition's offset (the group's committed
    /// offsets: records every task has counted). Returns the new log starts.
    pub fn delete_records_below(
        &self,
        topic: &str,
        below: &[(i32, i64)],
    ) -> Result<Vec<(i32, i64)>> {
        let mut tpl = rdkafka::TopicPartitionList::new();
        for (partition, offset) in below {
            tpl.add_partition_offset(topic, *partition, rdkafka::Offset::Offset(*offset))
                .map_err(client("delete records"))?;
        }
        let opts = AdminOptions::new().operation_timeout(Some(TIMEOUT));
        let done = self
            .runtime
            .block_on(self.admin.delete_records(&tpl, &opts))
            .map_err(client("delete records"))?;
        let mut out = Vec::new();
        for e in done.elements() {
            e.error().map_err(client("delete records"))?;
            if let rdkafka::Offset::Offset(o) = e.offset() {
                out.push((e.partition(), o));
            }
        }
        Ok(out)
    }

    /// (low, high) watermark of one partition.
    pub fn watermarks(&self, topic: &str, partition: i32) -> Result<(i64, i64)> {
        self.admin
            .inner()
            .fetch_watermarks(topic, partition, TIMEOUT)
            .map_err(client("fetch watermarks"))
    }

    /// Raises `topic` to `partitions` partitions (never lowers; Kafka cannot).
    pub fn grow_partitions(&self, topic: &str, partitions: i32) -> Result<()> {
        let current = self.partition_count(topic)?;
        if current >= partitions {
            return Ok(());
        }
        let wanted = usize::try_from(partitions).unwrap_or_default();
        let new = NewPartitions::new(topic, wanted);
        let opts = AdminOptions::new().operation_timeout(Some(TIMEOUT));
        let results = self
            .runtime
            .block_on(self.admin.create_partitions([&new], &opts))
            .map_err(client("create partitions"))?;
        for r in results {
            if let Err((_, code)) = r {
                return Err(Error::Client {
                    op: "create partitions",
                    source: rdkafka::error::KafkaError::AdminOp(code),
                });
            }
        }
        tracing::info!(
            topic,
            from = current,
            to = partitions,
            "grew the topic's partitions"
        );
        for _ in 0..50 {
            if self.partition_count(topic)? >= partitions {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(Error::PartitionCount {
            topic: topic.to_string(),
            expected: partitions,
            actual: self.partition_count(topic)?,
        })
    }

    /// Each of `topics`' `max.message.bytes`; a topic that does not exist yet gets the
    /// broker's `message.max.bytes`, the default it will be created with. A topic whose
    /// setting cannot be read is left out (the client's limit applies to it).
    pub fn max_message_bytes(&self, topics: &[String]) -> Result<BTreeMap<String, usize>> {
        let specs: Vec<ResourceSpecifier<'_>> =
            topics.iter().map(|t| ResourceSpecifier::Topic(t)).collect();
        let results = self.describe_configs(&specs, "describe topic configs")?;
        let mut limits = BTreeMap::new();
        let mut missing = Vec::new();
        for (topic, r) in topics.iter().zip(results) {
            let value = match r {
                Ok(resource) => resource
                    .get("max.message.bytes")
                    .and_then(|e| e.value.as_deref()?.parse().ok()),
                Err(RDKafkaErrorCode::UnknownTopicOrPartition) => {
                    missing.push(topic);
                    None
                }
                Err(_) => None,
            };
            if let Some(v) = value {
                limits.insert(topic.clone(), v);
            }
        }
        if !missing.is_empty()
            && let Some(v) = self
                .broker_config("message.max.bytes")
                .ok()
                .flatten()
                .and_then(|v| v.parse().ok())
        {
            for t in missing {
                limits.insert(t.clone(), v);
            }
        }
        Ok(limits)
    }

    /// The settings of `specs`, each resource's own result.
    fn describe_configs(
        &self,
        specs: &[ResourceSpecifier<'_>],
        op: &'static str,
    ) -> Result<Vec<rdkafka::admin::ConfigResourceResult>> {
        let opts = AdminOptions::new().request_timeout(Some(TIMEOUT));
        self.runtime
            .block_on(self.admin.describe_configs(specs, &opts))
            .map_err(client(op))
    }

    /// A broker setting (of the first broker in the metadata), `None` if not reported.
    pub fn broker_config(&self, name: &str) -> Result<Option<String>> {
        let md = self
            .admin
            .inner()
            .fetch_metadata(None, TIMEOUT)
            .map_err(client("fetch metadata"))?;
        let Some(broker) = md.brokers().first() else {
            return Ok(None);
        };
        let spec = ResourceSpecifier::Broker(broker.id());
        let results = self.describe_configs(&[spec], "describe broker configs")?;
        for r in results {
            let resource = r.map_err(|code| Error::Client {
                op: "describe broker configs",
                source: rdkafka::error::KafkaError::AdminOp(code),
            })?;
            if let Some(entry) = resource.get(name) {
                return Ok(entry.value.clone());
            }
        }
        Ok(None)
    }
}
