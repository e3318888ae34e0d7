//! `flumen doctor`: checks that find what makes exactly-once pipelines stall or refuse to
//! start, each with what to do.

use serde::Serialize;

use crate::checkpoint::catalog::Catalog;
use crate::kafka::admin::Admin;
use crate::kafka::producer::{Limits, Producer};
use crate::pipeline::{Inputs, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Ok,
    Warning,
    Problem,
}

#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub level: Level,
    pub pipeline: Option<String>,
    pub check: &'static str,
    pub message: String,
    /// What to do about it.
    pub action: Option<String>,
}

fn finding(
    level: Level,
    pipeline: Option<&str>,
    check: &'static str,
    message: String,
    action: Option<String>,
) -> Finding {
    Finding {
        level,
        pipeline: pipeline.map(str::to_string),
        check,
        message,
        action,
    }
}

/// The broker's `transaction.max.timeout.ms` against the configured transaction timeout and
/// checkpoint interval.
pub fn transaction_timeout(inputs: &Inputs<'_>, admin: &Admin) -> Result<Finding> {
    let cfg = inputs.config;
    let ours = cfg.kafka.transaction_timeout;
    let check = "transaction timeout";
    let Some(max) = admin
        .broker_config("transaction.max.timeout.ms")?
        .and_then(|v| v.parse::<u64>().ok())
    else {
        return Ok(finding(
            Level::Warning,
            None,
            check,
            "the broker did not report transaction.max.timeout.ms".into(),
            None,
        ));
    };
    let max = std::time::Duration::from_millis(max);
    Ok(if ours > max {
        finding(
            Level::Problem,
            None,
            check,
            format!(
                "kafka.transaction_timeout is {ours:?}, above the broker's transaction.max.timeout.ms ({max:?}): init_transactions will fail"
            ),
            Some(format!(
                "lower kafka.transaction_timeout to at most {max:?}, or raise the broker's transaction.max.timeout.ms"
            )),
        )
    } else if ours < cfg.checkpoint.interval * 3 {
        finding(
            Level::Warning,
            None,
            check,
            format!("kafka.transaction_timeout {ours:?} is less than 3 checkpoint intervals ({:?})", cfg.checkpoint.interval),
            Some("raise kafka.transaction_timeout, so a slow checkpoint is not aborted by the broker".into()),
        )
    } else {
        finding(
            Level::Ok,
            None,
            check,
            format!("{ours:?} ≤ broker maximum {max:?}, ≥ 3 × checkpoint interval"),
            None,
        )
    })
}

/// Partition counts now against the newest checkpoint's (keyed state would be on the wrong
/// partitions after a change).
pub fn partition_counts(inputs: &Inputs<'_>, admin: &Admin) -> Result<Finding> {
    let p = inputs.pipeline;
    let check = "partition counts";
    let source = admin.partition_count(&p.source.topic)?;
    let Some(stateful) = p.plan.aggregate.as_ref().map(|_| {
        p.repartition_topic()
            .unwrap_or_else(|| p.source.topic.clone())
    }) else {
        return Ok(finding(
            Level::Ok,
            Some(&p.name),
            check,
            format!("stateless; source has {source} partitions"),
            None,
        ));
    };
    // every writer's newest checkpoint (instances sharing the checkpoint directory each hold
    // the partitions they were assigned): the stateful partitions they hold together
    let catalog = Catalog::open(&inputs.config.checkpoint, &p.name, &inputs.runtime)?;
    let mut held = std::collections::BTreeSet::new();
    let mut latest = Vec::new();
    for writer in catalog.writers()? {
        if let Some(id) = catalog.list(&writer)?.last().copied() {
            let m = catalog.manifest(&writer, id)?;
            held.extend(m.tasks.iter().map(|t| t.partition));
            latest.push(format!("{writer}:{id}"));
        }
    }
    if latest.is_empty() {
        return Ok(finding(
            Level::Ok,
            Some(&p.name),
            check,
            "no checkpoints yet".into(),
            None,
        ));
    }
    let (snapshot, latest) = (held.len(), latest.join(", "));
    let now = admin.partition_count(&stateful).unwrap_or(source);
    let expected = usize::try_from(if p.plan.repartition { source } else { now }).unwrap_or(0);
    Ok(
        if snapshot != expected || (p.plan.repartition && now != source) {
            finding(
            Level::Problem,
            Some(&p.name),
            check,
            format!("the newest checkpoints ({latest}) hold state for {snapshot} partitions of {stateful}; the source {} has {source} partitions now", p.source.topic),
            Some("take a savepoint with the old layout (or use an existing one) and restore it: flumen run --from-savepoint DIR redistributes keyed state by key".into()),
        )
        } else {
            finding(
                Level::Ok,
                Some(&p.name),
                check,
                format!("{snapshot} keyed partitions, as in checkpoint {latest}"),
                None,
            )
        },
    )
}

/// Flumen's transactional ids are a known, bounded set (one per pipeline, instance and
/// thread), so a hanging transaction of ours is ended by registering the id again:
/// `init_transactions` aborts what the id left open. Transactions of other ids cannot be listed through
/// librdkafka (no ListTransactions/DescribeTransactions API).
pub fn hanging_transactions(inputs: &Inputs<'_>, abort: bool) -> Result<Finding> {
    let p = inputs.pipeline;
    let check = "open transactions";
    if !abort {
        return Ok(finding(
            Level::Ok,
            Some(&p.name),
            check,
            format!("transactional id {}: a daemon start, or --abort-hanging here, ends any transaction it left open", p.transactional_id),
            Some("to list every open transaction of the cluster: kafka-transactions.sh --bootstrap-server … list (librdkafka offers no such API)".into()),
        ));
    }
    crate::tools::reset::ensure_stopped(inputs)?;
    let mut ids = Vec::new();
    for thread in p.threads() {
        Producer::new(
            &inputs.config.kafka,
            &thread.transactional_id,
            Limits::client(&inputs.config.kafka),
        )?
        .init()?;
        ids.push(thread.transactional_id);
    }
    Ok(finding(
        Level::Ok,
        Some(&p.name),
        check,
        format!(
            "transactional ids {} re-registered: any transaction they left open is aborted",
            ids.join(", ")
        ),
        None,
    ))
}
