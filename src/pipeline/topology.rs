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
//!
//! A pipeline is a source and a list of stateful [`Stage`]s (none, or one today:
//! `config/validate/plan.rs` refuses a second). Each stage says whether it re-keys through its
//! own repartition topic and which other stream it reads, so pipelines of several stateful
//! steps (#19) add stages rather than change the runner's questions: the role of a topic's
//! task, the topics to subscribe to, the topic whose partitions hold a stage's state.

use crate::config::{AggregateKind, PipelineConfig};
use crate::position::Partition;

/// How the pipeline's keyed state relates to its source partitions (the first stateful stage's
/// keying); the offset-reset tool decides by it which state an offset move invalidates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// No keyed operator: source tasks write to the sink, and offsets move freely.
    Stateless,
    /// The source is keyed as the operator needs: source tasks hold the keyed state, per
    /// source partition.
    Direct,
    /// Source tasks re-key into a repartition topic, whose tasks hold the keyed state: it is
    /// partitioned by key, not by source partition.
    Repartitioned,
}

impl Shape {
    pub fn of(pipeline: &PipelineConfig) -> Self {
        match (&pipeline.plan.aggregate, pipeline.plan.repartition) {
            (None, _) => Self::Stateless,
            (Some(_), false) => Self::Direct,
            (Some(_), true) => Self::Repartitioned,
        }
    }
}

/// One stateful step of the pipeline: its keyed operator's state lives in the tasks of
/// [`Stage::repartition`]'s partitions, or of its input's when it needs no re-keying.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    /// The internal topic the previous step re-keys into for this stage.
    pub repartition: Option<String>,
    /// A stream join's other stream.
    pub other_stream: Option<String>,
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
    /// The stateful steps, in order.
    pub stages: Vec<Stage>,
}

impl Topology {
    pub fn of(pipeline: &PipelineConfig, source_partitions: i32) -> Self {
        let stages = pipeline
            .plan
            .aggregate
            .iter()
            .map(|agg| Stage {
                repartition: pipeline.repartition_topic(),
                other_stream: match &agg.kind {
                    AggregateKind::StreamJoin { stream, .. } => Some(stream.clone()),
                    _ => None,
                },
            })
            .collect();
        Self {
            source: pipeline.source.topic.clone(),
            source_partitions,
            stages,
        }
    }

    pub fn shape(&self) -> Shape {
        match self.stages.first() {
            None => Shape::Stateless,
            Some(Stage {
                repartition: None, ..
            }) => Shape::Direct,
            Some(Stage {
                repartition: Some(_),
                ..
            }) => Shape::Repartitioned,
        }
    }

    /// The role of a partition of `topic`; `None` for a topic the pipeline does not read.
    pub fn role(&self, topic: &str) -> Option<Role> {
        if topic == self.source {
            return Some(match self.shape() {
                Shape::Direct => Role::KeyedSource,
                Shape::Stateless | Shape::Repartitioned => Role::Source,
            });
        }
        for stage in &self.stages {
            if stage.repartition.as_deref() == Some(topic) {
                return Some(Role::Keyed);
            }
            if stage.other_stream.as_deref() == Some(topic) {
                return Some(Role::OtherStream);
            }
        }
        None
    }

    /// The first stage's repartition topic.
    pub fn repartition_topic(&self) -> Option<&str> {
        self.stages.first()?.repartition.as_deref()
    }

    /// The first stage's other stream.
    pub fn other_stream(&self) -> Option<&str> {
        self.stages.first()?.other_stream.as_deref()
    }

    /// The topic whose partitions hold the (first stage's) keyed state.
    pub fn stateful_topic(&self) -> Option<&str> {
        let stage = self.stages.first()?;
        Some(stage.repartition.as_deref().unwrap_or(&self.source))
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
        for stage in &self.stages {
            topics.extend(stage.repartition.as_deref());
            topics.extend(stage.other_stream.as_deref());
        }
        topics
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A topology of `shape` (`Repartitioned` through `g-count-repartition`).
    fn topology(shape: Shape, other_stream: Option<&str>) -> Topology {
        let stage = Stage {
            repartition: (shape == Shape::Repartitioned).then(|| "g-count-repartition".into()),
            other_stream: other_stream.map(Into::into),
        };
        Topology {
            source: "in".into(),
            source_partitions: 3,
            stages: if shape == Shape::Stateless {
                vec![]
            } else {
                vec![stage]
            },
        }
    }

    #[test]
    fn each_topic_has_its_role() {
        let t = topology(Shape::Repartitioned, Some("clicks"));
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
