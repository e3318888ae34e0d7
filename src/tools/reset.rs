//! `flumen offsets show|reset`: the group's offsets of a stopped pipeline, and moving them
//! with state kept consistent. Decisions are in [`plan`]; this is the I/O.
//!
//! A reset that moves stateful offsets writes a checkpoint first (empty state for what
//! `--drop-state` drops, the current snapshot for the rest, at the new offsets), then commits
//! the offsets in one transaction under the pipeline's transactional id, which also fences any
//! zombie of the daemon. It refuses while the group has members or the daemon's control socket
//! answers.

use serde::Serialize;

use crate::pipeline::{Error, Inputs, Result};
pub mod plan;

use self::plan::{PartitionView, PlanRow, Scenario, StateAction};
use crate::checkpoint::CheckpointId;
use crate::kafka::consumer::Consumer;
use crate::kafka::producer::{Limits, Producer};
use crate::pipeline::topology::Shape;
use crate::position::{NextOffset, Partition};

/// One partition as `offsets show` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct OffsetRow {
    pub topic: String,
    pub partition: i32,
    pub committed: Option<i64>,
    pub log_start: i64,
    pub log_end: i64,
    pub lag: Option<i64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub group: String,
    pub members: Vec<String>,
    pub rows: Vec<OffsetRow>,
}

/// The reset to show (dry run) or execute.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub group: String,
    pub topic: String,
    pub rows: Vec<PlanRow>,
    /// Stateful partitions that start empty.
    pub drops_state: bool,
    #[serde(skip)]
    action: StateAction,
}

fn consumer(inputs: &Inputs<'_>) -> Result<Consumer> {
    Ok(Consumer::new(
        &inputs.config.kafka,
        &inputs.pipeline.group_id,
        None,
    )?)
}

fn partitions_of(
    consumer: &Consumer,
    topic: &str,
    admin_count: i32,
) -> Result<Vec<(i32, i64, i64)>> {
    (0..admin_count)
        .map(|p| {
            let (low, high) = consumer.watermarks(topic, p)?;
            Ok((p, low, high))
        })
        .collect()
}

/// The group's committed offset of each partition in `ranges`.
fn committed_of(
    consumer: &Consumer,
    topic: &str,
    ranges: &[(i32, i64, i64)],
) -> Result<Vec<Option<i64>>> {
    let parts: Vec<Partition> = ranges
        .iter()
        .map(|(p, _, _)| Partition {
            topic: topic.to_string(),
            partition: *p,
        })
        .collect();
    Ok(consumer
        .committed(&parts)?
        .into_iter()
        .map(|(_, c)| c.map(|o| o.0))
        .collect())
}

/// The group's committed offsets, log ranges and lag for the source and repartition topics.
pub fn show(inputs: &Inputs<'_>) -> Result<Report> {
    let pipeline = inputs.pipeline;
    let consumer = consumer(inputs)?;
    let admin = crate::kafka::admin::Admin::new(&inputs.config.kafka, inputs.runtime.clone())?;
    let mut topics = vec![pipeline.source.topic.clone()];
    topics.extend(pipeline.repartition_topic());
    let mut rows = Vec::new();
    for topic in topics {
        let Ok(count) = admin.partition_count(&topic) else {
            continue;
        };
        let ranges = partitions_of(&consumer, &topic, count)?;
        let committed = committed_of(&consumer, &topic, &ranges)?;
        for ((p, low, high), committed) in ranges.into_iter().zip(committed) {
            rows.push(OffsetRow {
                topic: topic.clone(),
                partition: p,
                committed,
                log_start: low,
                log_end: high,
                lag: committed.map(|c| high - c),
            });
        }
    }
    Ok(Report {
        group: pipeline.group_id.clone(),
        members: consumer.group_members(&pipeline.group_id)?,
        rows,
    })
}

/// Refuses while the pipeline runs: live group members, or a daemon on the control socket.
pub fn ensure_stopped(inputs: &Inputs<'_>) -> Result<()> {
    let socket = crate::control::socket_path(&inputs.config.state.dir);
    if std::os::unix::net::UnixStream::connect(&socket).is_ok() {
        return Err(Error::PipelineRunning(format!(
            "a Flumen daemon answers at {}; stop it first (flumen stop, or SIGTERM)",
            socket.display()
        )));
    }
    let members = consumer(inputs)?.group_members(&inputs.pipeline.group_id)?;
    if !members.is_empty() {
        return Err(Error::PipelineRunning(format!(
            "consumer group {} has {} live member(s): {}; stop the pipeline first. A stopped \
             instance stays a (static) member until its session times out (session.timeout.ms, \
             15s by default): retry after that",
            inputs.pipeline.group_id,
            members.len(),
            members.join(", ")
        )));
    }
    Ok(())
}

/// Waits up to `wait` for the pipeline's group to empty (stopped static members stay until
/// their session times out), then as [`ensure_stopped`].
pub fn wait_until_stopped(inputs: &Inputs<'_>, wait: std::time::Duration) -> Result<()> {
    consumer(inputs)?.wait_for_empty_group(&inputs.pipeline.group_id, wait)?;
    ensure_stopped(inputs)
}

/// The reset plan of `scenario` for `partitions` of the source (all when `None`).
pub fn plan(
    inputs: &Inputs<'_>,
    scenario: &Scenario,
    partitions: Option<&[i32]>,
    drop_state: bool,
) -> Result<Plan> {
    let pipeline = inputs.pipeline;
    let topic = &pipeline.source.topic;
    let consumer = consumer(inputs)?;
    let admin = crate::kafka::admin::Admin::new(&inputs.config.kafka, inputs.runtime.clone())?;
    let count = admin.partition_count(topic)?;
    let mut ranges = partitions_of(&consumer, topic, count)?;
    if let Some(only) = partitions {
        if let Some(bad) = only.iter().find(|p| !(0..count).contains(*p)) {
            return Err(Error::PipelineRunning(format!(
                "topic {topic} has no partition {bad} (it has {count})"
            )));
        }
        ranges.retain(|(p, _, _)| only.contains(p));
    }
    let committed = committed_of(&consumer, topic, &ranges)?;
    let at_time = match scenario {
        Scenario::Timestamp(ms) => {
            let ids: Vec<i32> = ranges.iter().map(|(p, _, _)| *p).collect();
            consumer.offsets_for_time(topic, &ids, i64::try_from(*ms).unwrap_or(i64::MAX))?
        }
        _ => Vec::new(),
    };
    let views: Vec<PartitionView> = ranges
        .iter()
        .zip(&committed)
        .map(|((p, low, high), c)| PartitionView {
            partition: *p,
            committed: *c,
            low: *low,
            high: *high,
            at_time: at_time.iter().find(|(q, _)| q == p).and_then(|(_, o)| *o),
        })
        .collect();
    let rows = plan::plan(scenario, &views);
    let action = plan::state_action(Shape::of(inputs.pipeline), &rows, drop_state)
        .map_err(Error::StateChoice)?;
    Ok(Plan {
        group: pipeline.group_id.clone(),
        topic: topic.clone(),
        drops_state: action != StateAction::Keep,
        rows,
        action,
    })
}

/// Applies `plan`: a checkpoint at the new offsets (when state is involved), then the offsets
/// in one transaction. Returns the checkpoint written, if any.
pub fn execute(inputs: &Inputs<'_>, plan: &Plan) -> Result<Option<CheckpointId>> {
    ensure_stopped(inputs)?;
    let pipeline = inputs.pipeline;
    let consumer = consumer(inputs)?;
    let offsets: Vec<(Partition, NextOffset)> = plan
        .rows
        .iter()
        .filter(|r| r.changes())
        .map(|r| {
            (
                Partition {
                    topic: plan.topic.clone(),
                    partition: r.partition,
                },
                NextOffset(r.new),
            )
        })
        .collect();
    if let StateAction::Drop {
        all_repartition,
        source_partitions,
    } = &plan.action
    {
        let dropped = dropped(inputs, &consumer, plan, *all_repartition, source_partitions)?;
        // the runner's producer fences a zombie of the daemon and commits
        let id = crate::pipeline::Runner::reset_offline(inputs, &offsets, &dropped)?;
        tracing::info!(group = %plan.group, partitions = offsets.len(), dropped = dropped.len(), checkpoint = %id, "offsets reset");
        return Ok(Some(id));
    }
    // offsets only: no record
    let producer = Producer::new(
        &inputs.config.kafka,
        &pipeline.transactional_id,
        Limits::client(&inputs.config.kafka),
    )?;
    // fences a zombie of the daemon and settles its open transaction
    producer.init()?;
    let mut txn = crate::pipeline::txn::Txn::new(producer);
    txn.begin()?;
    if !offsets.is_empty() {
        // no checkpoint names this commit: the metadata is empty, as kafka-consumer-groups
        // writes it (a stateless pipeline, or nothing stateful moved)
        txn.send_offsets(&offsets, "", &consumer)?;
    }
    txn.commit()?;
    tracing::info!(group = %plan.group, partitions = offsets.len(), "offsets reset");
    Ok(None)
}

/// The stateful partitions whose state the move invalidates, each with the offset it starts
/// from empty: every repartition partition at its end, or the moved source partitions of a
/// source-keyed pipeline at their new offsets.
fn dropped(
    inputs: &Inputs<'_>,
    consumer: &Consumer,
    plan: &Plan,
    all_repartition: bool,
    source_partitions: &[i32],
) -> Result<Vec<(Partition, NextOffset)>> {
    if !all_repartition {
        return Ok(source_partitions
            .iter()
            .map(|n| {
                let row = plan.rows.iter().find(|r| r.partition == *n);
                let p = Partition {
                    topic: plan.topic.clone(),
                    partition: *n,
                };
                (p, NextOffset(row.map_or(0, |r| r.new)))
            })
            .collect());
    }
    let Some(topic) = inputs.pipeline.repartition_topic() else {
        return Ok(Vec::new());
    };
    let admin = crate::kafka::admin::Admin::new(&inputs.config.kafka, inputs.runtime.clone())?;
    (0..admin.partition_count(&topic)?)
        .map(|n| {
            let end = NextOffset(consumer.watermarks(&topic, n)?.1);
            let p = Partition {
                topic: topic.clone(),
                partition: n,
            };
            Ok((p, end))
        })
        .collect()
}
