//! The shape of a pipeline's tasks: which topics it reads, and what a task does by the topic of
//! its partition. Decided once from the config; the runner asks it, never compares topic names.
//!
//! ```text
//! Stateless      source ──────────────────────────────────────► sink
//! Direct         source (keyed as the operator needs; holds state) ──► sink
//! Repartitioned  source ──► <group>-<operator>-repartition (holds state) ──► sink
//!                                    ▲ a stream join's other stream joins the stateful task
//!                                      of its partition
//! ```

use crate::config::{AggregateKind, PipelineConfig};
use crate::position::Partition;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shape {
    /// No keyed operator: source tasks write to the sink.
    Stateless,
    /// The source is keyed as the operator needs: source tasks hold the keyed state.
    Direct,
    /// Source tasks re-key into this internal topic, whose tasks hold the keyed state.
    Repartitioned(String),
}

/// What the task of one partition does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Reads the source and hands records on (to the repartition topic or the sink).
    Source,
    /// Reads the source and holds the keyed state (`Shape::Direct`).
    KeyedSource,
    /// Reads the repartition topic and holds the keyed state.
    Keyed,
    /// Reads a stream join's other stream into the state of the stateful task of its
    /// partition.
    OtherStream,
    /// A partition of a topic the pipeline does not read (a static member gets its previous
    /// assignment back before the group rebalances to the new subscription, e.g. an operator
    /// renamed with its repartition topic): its records are ignored, its offset kept.
    Stray,
}

impl Role {
    /// Its records come from the source (decoded in the source's format, `before` steps run).
    pub fn reads_source(self) -> bool {
        matches!(self, Self::Source | Self::KeyedSource)
    }

    /// It owns keyed state, snapshotted at every checkpoint.
    pub fn holds_state(self) -> bool {
        matches!(self, Self::KeyedSource | Self::Keyed)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    pub source: String,
    /// The source's partition count (the repartition topic and joined topics have as many).
    pub source_partitions: i32,
    pub shape: Shape,
    /// A stream join's other stream.
    pub other_stream: Option<String>,
}

impl Topology {
    pub fn of(pipeline: &PipelineConfig, source_partitions: i32) -> Self {
        let shape = match (&pipeline.plan.aggregate, pipeline.repartition_topic()) {
            (None, _) => Shape::Stateless,
            (Some(_), None) => Shape::Direct,
            (Some(_), Some(topic)) => Shape::Repartitioned(topic),
        };
        let other_stream = match pipeline.plan.aggregate.as_ref().map(|a| &a.kind) {
            Some(AggregateKind::StreamJoin { stream, .. }) => Some(stream.clone()),
            _ => None,
        };
        Self {
            source: pipeline.source.topic.clone(),
            source_partitions,
            shape,
            other_stream,
        }
    }

    /// The role of a partition of `topic`; `None` for a topic the pipeline does not read.
    pub fn role(&self, topic: &str) -> Option<Role> {
        if topic == self.source {
            return Some(match self.shape {
                Shape::Direct => Role::KeyedSource,
                Shape::Stateless | Shape::Repartitioned(_) => Role::Source,
            });
        }
        if self.repartition_topic() == Some(topic) {
            return Some(Role::Keyed);
        }
        (self.other_stream.as_deref() == Some(topic)).then_some(Role::OtherStream)
    }

    pub fn repartition_topic(&self) -> Option<&str> {
        match &self.shape {
            Shape::Repartitioned(topic) => Some(topic),
            Shape::Stateless | Shape::Direct => None,
        }
    }

    /// The topic whose partitions hold the keyed state.
    pub fn stateful_topic(&self) -> Option<&str> {
        match &self.shape {
            Shape::Stateless => None,
            Shape::Direct => Some(&self.source),
            Shape::Repartitioned(topic) => Some(topic),
        }
    }

    /// The stateful partition that a co-partitioned topic's `partition` joins (the other
    /// stream's, the table's).
    pub fn stateful_partition(&self, partition: i32) -> Option<Partition> {
        Some(Partition {
            topic: self.stateful_topic()?.to_string(),
            partition,
        })
    }

    /// The topics the consumer subscribes to.
    pub fn topics(&self) -> Vec<&str> {
        let mut topics = vec![self.source.as_str()];
        topics.extend(self.repartition_topic());
        topics.extend(self.other_stream.as_deref());
        topics
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topology(shape: Shape, other_stream: Option<&str>) -> Topology {
        Topology {
            source: "in".into(),
            source_partitions: 3,
            shape,
            other_stream: other_stream.map(Into::into),
        }
    }

    #[test]
    fn each_topic_has_its_role() {
        let t = topology(
            Shape::Repartitioned("g-count-repartition".into()),
            Some("clicks"),
        );
        assert_eq!(t.role("in"), Some(Role::Source));
        assert_eq!(t.role("g-count-repartition"), Some(Role::Keyed));
        assert_eq!(t.role("clicks"), Some(Role::OtherStream));
        assert_eq!(t.role("out"), None);
        assert_eq!(t.topics(), ["in", "g-count-repartition", "clicks"]);
        assert_eq!(t.stateful_topic(), Some("g-count-repartition"));
    }

    #[test]
    fn a_direct_source_holds_the_state_and_a_stateless_one_none() {
        let direct = topology(Shape::Direct, None);
        assert_eq!(direct.role("in"), Some(Role::KeyedSource));
        assert!(Role::KeyedSource.holds_state() && Role::KeyedSource.reads_source());
        assert_eq!(
            direct.stateful_partition(2).map(|p| p.to_string()),
            Some("in/2".into())
        );
        let stateless = topology(Shape::Stateless, None);
        assert_eq!(stateless.role("in"), Some(Role::Source));
        assert!(!Role::Source.holds_state());
        assert_eq!(stateless.stateful_partition(0), None);
        assert_eq!(stateless.topics(), ["in"]);
    }
}
