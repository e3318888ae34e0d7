//! How far each assigned partition can be read, from librdkafka's statistics (emitted every
//! `statistics.interval.ms` during `poll`, on the pipeline thread; no request of its own): the
//! last stable offset, which a read_committed reader cannot pass, the fetch position, and the
//! records fetched but not yet polled. The lag metric and readiness's "nothing to do" read it.

use std::collections::HashMap;
use std::sync::Mutex;

use rdkafka::consumer::Consumer as _;
use serde::Deserialize;

use super::Consumer;
use crate::position::Partition;

/// One partition's ends, as of the latest statistics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct End {
    /// The last stable offset (transaction markers included in the count).
    pub last_stable: i64,
    /// The next offset the consumer fetches (past markers it has read).
    pub fetch_position: i64,
    /// Records fetched and waiting to be polled.
    pub queued: i64,
}

impl End {
    /// Everything readable has been fetched and polled.
    pub fn read_to_end(&self) -> bool {
        self.last_stable >= 0 && self.queued == 0 && self.fetch_position >= self.last_stable
    }
}

#[derive(Default)]
pub(super) struct Ends(Mutex<HashMap<(String, i32), End>>);

#[derive(Deserialize)]
struct Stats {
    #[serde(default)]
    topics: HashMap<String, TopicStats>,
}

#[derive(Deserialize)]
struct TopicStats {
    #[serde(default)]
    partitions: HashMap<String, PartitionStats>,
}

#[derive(Deserialize)]
struct PartitionStats {
    partition: i32,
    #[serde(default)]
    desired: bool,
    ls_offset: i64,
    next_offset: i64,
    fetchq_cnt: i64,
}

impl Ends {
    /// The partitions this consumer fetches, from one statistics JSON document; a document that
    /// does not parse changes nothing.
    pub(super) fn update(&self, json: &[u8]) {
        let Ok(stats) = serde_json::from_slice::<Stats>(json) else {
            return;
        };
        let mut ends = HashMap::new();
        for (topic, t) in stats.topics {
            for p in t.partitions.into_values() {
                // -1 is librdkafka's internal "unassigned" partition
                if p.desired && p.partition >= 0 {
                    let end = End {
                        last_stable: p.ls_offset,
                        fetch_position: p.next_offset,
                        queued: p.fetchq_cnt,
                    };
                    ends.insert((topic.clone(), p.partition), end);
                }
            }
        }
        if let Ok(mut held) = self.0.lock() {
            *held = ends;
        }
    }
}

impl Consumer {
    /// The ends of `partition` as of the latest statistics; `None` before the first that
    /// named it.
    pub fn end_of(&self, partition: &Partition) -> Option<End> {
        let ends = self.inner.context().ends.0.lock().ok()?;
        ends.get(&(partition.topic.clone(), partition.partition))
            .copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statistics_name_each_desired_partition_s_ends() {
        let json = br#"{"name":"c","topics":{"in":{"topic":"in","partitions":{
            "0":{"partition":0,"desired":true,"ls_offset":120,"next_offset":120,"fetchq_cnt":0,"hi_offset":121},
            "1":{"partition":1,"desired":true,"ls_offset":50,"next_offset":40,"fetchq_cnt":3},
            "-1":{"partition":-1,"desired":false,"ls_offset":-1001,"next_offset":-1001,"fetchq_cnt":0}}}}}"#;
        let ends = Ends::default();
        ends.update(json);
        let held = ends.0.lock().unwrap();
        assert_eq!(held.len(), 2);
        let zero = held[&("in".to_string(), 0)];
        assert!(zero.read_to_end());
        let one = held[&("in".to_string(), 1)];
        assert_eq!(one.last_stable, 50);
        assert!(!one.read_to_end());
        drop(held);
        // a document that does not parse keeps what was known
        ends.update(b"{not json");
        assert_eq!(ends.0.lock().unwrap().len(), 2);
    }
}
