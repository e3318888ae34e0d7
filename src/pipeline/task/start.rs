//! Starting an incarnation: the producer's `init_transactions` first (rule 2), the topics, the
//! checkpoint store, the consumer, the keyed operator; with a savepoint, its restore.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::checkpointer::Checkpointer;
use super::{Incarnation, Runner, commits, cut};
use crate::checkpoint::remote::Remote;
use crate::checkpoint::savepoint::Savepoint;
use crate::checkpoint::store::Store;
use crate::codec::avro::Registry;
use crate::kafka::admin::Admin;
use crate::kafka::consumer::Consumer;
use crate::kafka::control;
use crate::kafka::producer::{Limits, Producer};
use crate::pipeline::keyed::Keyed;
use crate::pipeline::topology::Topology;
use crate::pipeline::txn::Txn;
use crate::pipeline::{Error, Inputs, Result};

impl<'a> Runner<'a> {
    /// Rule 2: `init_transactions` first (fencing the previous incarnation and settling its
    /// transaction), then the topics, then the consumer. State is restored on assignment.
    /// With `restore`, the savepoint's state and offsets become a new checkpoint, durable
    /// before the consumer subscribes and committed on the first assignment.
    pub fn start(inputs: &Inputs<'a>, restore: Option<&Savepoint>) -> Result<Self> {
        let schemas = load_schemas(inputs)?;
        let sink = &inputs.pipeline.sink;
        if let crate::config::Format::Avro { schema_id } = sink.format {
            // TopicNameStrategy, the Confluent serializers' default subject
            let subject = format!("{}-value", sink.topic);
            schemas.register(&subject, schema_id).map_err(|e| {
                Error::decode(e, |message| Error::SinkSchema {
                    topic: sink.topic.clone(),
                    message,
                })
            })?;
        }
        let (runner, grown) = Self::prepare(inputs, restore, Incarnation::Member, schemas)?;
        let (config, pipeline) = (inputs.config, inputs.pipeline);
        if grown {
            // This instance's static membership outlives a stop by a session timeout, and a
            // static member that rejoins gets its old assignment back without a rebalance:
            // with grown topics that would leave the new partitions unassigned. Join only once
            // the group has emptied, so the assignment is computed anew.
            let wait =
                crate::kafka::client::session_timeout(&config.kafka) + Duration::from_secs(10);
            tracing::info!(pipeline = %pipeline.name, ?wait, "partition counts changed since the savepoint: waiting for the group to empty before joining");
            if !runner
                .consumer
                .wait_for_empty_group(&pipeline.group_id, wait)?
            {
                tracing::warn!(pipeline = %pipeline.name, "the group still has members; new partitions may wait for the next rebalance");
            }
        }
        runner.consumer.subscribe(&runner.topology.topics())?;
        tracing::info!(pipeline = %pipeline.name, source = %pipeline.source.topic, sink = %pipeline.sink.topic,
            repartition = ?runner.topology.repartition_topic(), checkpoints = runner.checkpoints.manifests.len(), "pipeline started");
        Ok(runner)
    }

    /// `flumen offsets reset --to-savepoint`: the restore of `--from-savepoint`, done by a
    /// tool while the pipeline is stopped (the group must be empty: the commit is a
    /// non-member's).
    pub fn restore_offline(inputs: &Inputs<'a>, savepoint: &Savepoint) -> Result<()> {
        let (mut runner, _) = Self::prepare(
            inputs,
            Some(savepoint),
            Incarnation::Offline,
            load_schemas(inputs)?,
        )?;
        runner.finish_restore()
    }

    /// Everything of `start` but joining the group; with `restore`, everything of it up to
    /// its transaction. Returns whether a restore found grown partition counts.
    pub(super) fn prepare(
        inputs: &Inputs<'a>,
        restore: Option<&Savepoint>,
        incarnation: Incarnation,
        schemas: Arc<Registry>,
    ) -> Result<(Self, bool)> {
        let (config, pipeline, env) = (inputs.config, inputs.pipeline, inputs.env);
        let static_member = incarnation == Incarnation::Member;
        let admin = Admin::new(&config.kafka, inputs.runtime.clone())?;
        // topics' own limits where they can be read (a user without DescribeConfigs, a
        // broker slow to answer: the client's limit alone, as before they were read)
        let topic_limits = admin
            .max_message_bytes(&written_topics(pipeline))
            .unwrap_or_else(|e| {
                tracing::warn!(pipeline = %pipeline.name, error = %crate::pipeline::chain(&e), "cannot read the max.message.bytes of the topics written; records are checked against the client's message.max.bytes only");
                BTreeMap::new()
            });
        let limits = Limits::with_topics(&config.kafka, topic_limits);
        let producer = Producer::new(&config.kafka, &pipeline.transactional_id, limits)?;
        if incarnation != Incarnation::Observer {
            producer.init()?;
            if pipeline.thread == 0 {
                fence_removed_threads(inputs)?;
            }
        }
        let partitions = Self::check_topics(inputs, restore, &admin)?;
        // every thread of the daemon hears the pipeline's control topic (`task/cut.rs`)
        let control = if static_member {
            let topic = control::topic_of(&pipeline.group_id);
            admin.ensure_control_topic(&topic)?;
            Some(control::ControlReader::new(
                &config.kafka,
                &topic,
                cut::CUT_LIMIT,
            )?)
        } else {
            None
        };
        let checkpoints = Checkpointer::open(
            &config.checkpoint.dir,
            config
                .checkpoint
                .remote
                .as_ref()
                .map(|r| (r, inputs.runtime.clone())),
            &pipeline.name,
            &pipeline.transactional_id,
            config.checkpoint.retain,
        )?;
        let consumer = Consumer::new(
            &config.kafka,
            &pipeline.group_id,
            static_member.then_some(pipeline.transactional_id.as_str()),
        )?;
        let mut runner = Self {
            config,
            pipeline,
            env,
            options: inputs.options,
            cancel: inputs.cancel.clone(),
            txn: Txn::counted(producer, inputs.metrics.outputs()),
            registered_as_member: false,
            consumer,
            checkpoints,
            tasks: BTreeMap::new(),
            topology: Topology::of(pipeline, partitions),
            progress: inputs.progress,
            skipped: 0,
            dead_lettered: 0,
            late: 0,
            restore_txn: None,
            dirty: false,
            pending: HashMap::new(),
            table_reader: None,
            schemas,
            keyed: None,
            last_table_refresh: Instant::now(),
            last_checkpoint: Instant::now(),
            purge: None,
            control,
            cut: None,
            stop_requested: None,
            metrics: inputs.metrics,
            input_tally: inputs.metrics.inputs(),
            last_lag_check: Instant::now(),
            started: Instant::now(),
        };
        runner.attach_operators(inputs, &admin, partitions)?;
        let restore = match restore {
            Some(sp) if static_member && !inputs.options.restore_again => {
                runner.unless_in_force(sp)?
            }
            other => other,
        };
        let grown = match restore {
            Some(sp) => {
                // a savepoint's state can take minutes to redistribute: alive, not ready
                runner.set_phase(crate::metrics::Phase::Restoring);
                let grown = runner.restore_savepoint(sp, &admin)?;
                runner.set_phase(crate::metrics::Phase::Starting);
                grown
            }
            None => false,
        };
        if runner.topology.repartition_topic().is_some() {
            runner.purge = Some(commits::Purge::new(admin));
        }
        Ok((runner, grown))
    }

    /// The topics an incarnation needs: the source's partition count (returned), the sink
    /// and the error topics exist, a savepoint fits, and the repartition topic is there
    /// (grown with the source when restoring into more partitions).
    fn check_topics(
        inputs: &Inputs<'a>,
        restore: Option<&Savepoint>,
        admin: &Admin,
    ) -> Result<i32> {
        let pipeline = inputs.pipeline;
        let partitions = admin.partition_count(&pipeline.source.topic)?;
        admin.partition_count(&pipeline.sink.topic)?;
        if let Some(topic) = &pipeline.dead_letter_topic {
            admin.partition_count(topic)?;
        }
        if let Some(topic) = late_topic(pipeline) {
            admin.partition_count(topic)?;
        }
        if let Some(sp) = restore {
            // before any topic is created or changed
            Self::check_fit(pipeline, inputs.options, partitions, sp)?;
        }
        let repartition_topic = pipeline.repartition_topic();
        if let Some(t) = &repartition_topic {
            if restore.is_some() && admin.partition_count(t).is_ok() {
                // restoring into more source partitions: the keyed state follows the keys
                admin.grow_partitions(t, partitions)?;
            }
            admin.ensure_internal_topic(t, partitions)?;
        }
        Ok(partitions)
    }

    /// The keyed operator and what it reads besides the stream: a join's topic is checked
    /// co-partitioned, a table gets its reader, a custom step its operator.
    fn attach_operators(
        &mut self,
        inputs: &Inputs<'a>,
        admin: &Admin,
        partitions: i32,
    ) -> Result<()> {
        let (config, pipeline) = (inputs.config, inputs.pipeline);
        // joins read a topic co-partitioned with the keyed stream, which has the source's
        // partition count (the repartition topic is created with it), as Kafka Streams requires
        let joined = self
            .stream_join()
            .map(|(_, stream, ..)| stream)
            .or(self.joined_table().map(|(_, table)| table));
        if let Some(topic) = joined {
            let count = admin.partition_count(topic)?;
            if count != partitions {
                return Err(Error::StateChoice(format!(
                    "join topic {topic:?} has {count} partitions and the keyed stream {partitions}; a join needs both partitioned alike"
                )));
            }
        }
        if self.joined_table().is_some() {
            self.table_reader = Some(crate::kafka::reader::TableReader::new(&config.kafka)?);
        }
        let operator = match pipeline.plan.aggregate.as_ref().map(|a| &a.kind) {
            Some(crate::config::AggregateKind::Custom { name }) => {
                Some(inputs.operators.get(name).ok_or_else(|| {
                    Error::StateChoice(format!("no operator is registered as {name:?}"))
                })?)
            }
            _ => None,
        };
        if let Some(agg) = &pipeline.plan.aggregate {
            let event_time = pipeline.source.event_time.as_ref();
            self.keyed = Keyed::new(agg, event_time, operator);
        }
        Ok(())
    }
}

/// The config's schemas, loaded: its files read and parsed, the registry's client made.
pub(super) fn load_schemas(inputs: &Inputs<'_>) -> Result<Arc<Registry>> {
    Registry::load(&inputs.config.schemas)
        .map(Arc::new)
        .map_err(|m| Error::SchemaRegistry(format!("cannot load the schemas: {m}")))
}

/// Threads of this instance that a lower `parallelism` removed (their writers are in the
/// checkpoint directory): `init_transactions` on each transactional id aborts whatever it
/// left open, so that no transaction of a thread that will never run again holds back
/// read_committed readers of the partitions its successors now own.
fn fence_removed_threads(inputs: &Inputs<'_>) -> Result<()> {
    let (config, pipeline) = (inputs.config, inputs.pipeline);
    let prefix = format!("{}-thread-", pipeline.transactional_id);
    let writers = match &config.checkpoint.remote {
        Some(remote) => Remote::writers_in(remote, &pipeline.name, inputs.runtime.clone())?,
        None => Store::writers(&config.checkpoint.dir, &pipeline.name)?,
    };
    for writer in writers {
        let removed = writer
            .strip_prefix(&prefix)
            .and_then(|k| k.parse::<u32>().ok())
            .is_some_and(|k| k >= pipeline.parallelism);
        if removed {
            Producer::new(&config.kafka, &writer, Limits::client(&config.kafka))?.init()?;
            tracing::info!(pipeline = %pipeline.name, transactional_id = %writer, "fenced the transactional id of a removed thread");
        }
    }
    Ok(())
}

/// The topics the pipeline writes records to: its sink, dead-letter, late and repartition
/// topics (whose limits its producer keeps to, `kafka::producer::Limits`).
fn written_topics(pipeline: &crate::config::PipelineConfig) -> Vec<String> {
    let mut topics = vec![pipeline.sink.topic.clone()];
    topics.extend(pipeline.dead_letter_topic.clone());
    topics.extend(late_topic(pipeline).cloned());
    topics.extend(pipeline.repartition_topic());
    topics
}

/// The window's late topic, if the pipeline has one.
fn late_topic(pipeline: &crate::config::PipelineConfig) -> Option<&String> {
    pipeline
        .plan
        .aggregate
        .as_ref()
        .and_then(|a| a.window.as_ref()?.late_topic.as_ref())
}
