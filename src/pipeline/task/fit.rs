//! Whether a savepoint fits the pipeline it is restored into, checked before any topic is
//! created or changed: its source topic and partitions, and its operators.

use super::Runner;
use super::savepoint::kind_name;
use crate::checkpoint::savepoint::Savepoint;
use crate::config::PipelineConfig;
use crate::pipeline::{Options, Result, rescale};

impl Runner<'_> {
    /// Checks that the savepoint fits this pipeline: same source topic, no fewer partitions,
    /// every operator with state still present (or `--allow-non-restored-state`).
    pub(super) fn check_fit(
        pipeline: &PipelineConfig,
        options: Options,
        source_partitions: i32,
        sp: &Savepoint,
    ) -> Result<()> {
        Self::check_partitions(pipeline, source_partitions, sp)?;
        Self::check_operators(pipeline, options, sp)
    }

    /// The savepoint's source topic and partitions fit: the same topic, no more partitions
    /// than it has now, and state that can follow its keys into more.
    fn check_partitions(
        pipeline: &PipelineConfig,
        source_partitions: i32,
        sp: &Savepoint,
    ) -> Result<()> {
        let m = &sp.manifest;
        if m.source_topic != pipeline.source.topic {
            return Err(Self::mismatch(
                sp,
                format!(
                    "it was taken from topic {:?}, this pipeline reads {:?}",
                    m.source_topic, pipeline.source.topic
                ),
            ));
        }
        if let Some(agg) = &pipeline.plan.aggregate
            && m.source_partitions != source_partitions
            && let Err(why) = rescale::layout(agg)
        {
            return Err(Self::mismatch(
                sp,
                format!(
                    "the state of {} {:?} cannot move from {} to {source_partitions} partitions: {why}",
                    agg.kind.name(),
                    agg.id,
                    m.source_partitions
                ),
            ));
        }
        if let Some(agg) = &pipeline.plan.aggregate
            && m.source_partitions != source_partitions
        {
            // keyed state moves with its key only where the repartition topic re-produces
            // every record of that key after the savepoint; a topic read as it is keeps a
            // key's older records in its old partition, where they would miss the moved state
            let direct = match &agg.kind {
                crate::config::AggregateKind::StreamJoin { stream, .. } => Some(stream.as_str()),
                _ if !pipeline.plan.repartition => Some(pipeline.source.topic.as_str()),
                _ => None,
            };
            if let Some(topic) = direct {
                return Err(Self::mismatch(
                    sp,
                    format!(
                        "the state of {} {:?} cannot move from {} to {source_partitions} partitions: \
                         topic {topic:?} is read as it is (not repartitioned), so a key's records \
                         still in its old partition would miss its moved state; restore before \
                         growing the topic",
                        agg.kind.name(),
                        agg.id,
                        m.source_partitions
                    ),
                ));
            }
        }
        if let Some(crate::config::AggregateKind::StreamJoin { stream, .. }) =
            pipeline.plan.aggregate.as_ref().map(|a| &a.kind)
            && m.other_stream.as_ref().is_none_or(|o| &o.topic != stream)
        {
            return Err(Self::mismatch(
                sp,
                format!(
                    "it holds no offsets of the joined stream {stream:?} (savepoints of stream \
                     joins keep them from format 2 on)"
                ),
            ));
        }
        if m.source_partitions > source_partitions {
            return Err(Self::mismatch(
                sp,
                format!(
                    "it has {} source partitions, topic {:?} has only {}",
                    m.source_partitions, m.source_topic, source_partitions
                ),
            ));
        }
        Ok(())
    }

    /// The savepoint's operators fit: each is this pipeline's of the same kind (or dropped
    /// with `--allow-non-restored-state`), and in-flight records have a repartition topic.
    fn check_operators(pipeline: &PipelineConfig, options: Options, sp: &Savepoint) -> Result<()> {
        let m = &sp.manifest;
        let current = pipeline.plan.aggregate.as_ref();
        for op in &m.operators {
            match current {
                Some(agg) if agg.id == op.id => {
                    let kind = kind_name(&agg.kind);
                    if kind != op.kind {
                        return Err(Self::mismatch(
                            sp,
                            format!(
                                "operator {:?} was a {} and is now a {kind}; give the new one another id",
                                op.id, op.kind
                            ),
                        ));
                    }
                }
                _ if options.allow_non_restored_state => {
                    tracing::warn!(operator = %op.id, "the savepoint's state of an operator this pipeline no longer has is dropped (--allow-non-restored-state)");
                }
                _ => {
                    return Err(Self::mismatch(
                        sp,
                        format!(
                            "it holds state of operator {:?}, which this pipeline does not have; \
                             pass --allow-non-restored-state to drop that state",
                            op.id
                        ),
                    ));
                }
            }
        }
        if let Some(agg) = current
            && !m.operators.iter().any(|o| o.id == agg.id)
        {
            tracing::info!(operator = %agg.id, "operator not in the savepoint; it starts empty");
        }
        let repartitions = pipeline.plan.repartition && pipeline.plan.aggregate.is_some();
        if !m.pending.is_empty() && !repartitions {
            return Err(Self::mismatch(
                sp,
                "it holds in-flight repartition records, but this pipeline no longer repartitions"
                    .into(),
            ));
        }
        Ok(())
    }
}
