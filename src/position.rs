//! Positions in Kafka, the one vocabulary every module uses: a topic [`Partition`], the
//! [`NextOffset`] to read in it, and both together as a [`PartitionOffset`] (what a checkpoint
//! records and a commit carries). A leaf: it depends on nothing of Flumen.

use std::fmt;

use serde::{Deserialize, Serialize};

/// An offset always means the next offset to read: the value `send_offsets_to_transaction`
/// takes and the consumer group stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NextOffset(pub i64);

impl fmt::Display for NextOffset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A topic partition.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Partition {
    pub topic: String,
    pub partition: i32,
}

impl fmt::Display for Partition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.topic, self.partition)
    }
}

/// A partition and the next offset to read in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartitionOffset {
    pub topic: String,
    pub partition: i32,
    pub next_offset: NextOffset,
}

impl PartitionOffset {
    pub fn new(partition: &Partition, next_offset: NextOffset) -> Self {
        Self {
            topic: partition.topic.clone(),
            partition: partition.partition,
            next_offset,
        }
    }

    pub fn partition(&self) -> Partition {
        Partition {
            topic: self.topic.clone(),
            partition: self.partition,
        }
    }

    /// Whether it is a position in `partition`.
    pub fn is_in(&self, partition: &Partition) -> bool {
        self.topic == partition.topic && self.partition == partition.partition
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_position_knows_its_partition() {
        let p = Partition {
            topic: "in".into(),
            partition: 3,
        };
        let o = PartitionOffset::new(&p, NextOffset(7));
        assert_eq!(o.partition(), p);
        assert!(o.is_in(&p));
        assert!(!o.is_in(&Partition {
            topic: "in".into(),
            partition: 4,
        }));
        assert_eq!(format!("{p} at {}", o.next_offset), "in/3 at 7");
    }
}
