//! How far each assigned partition can be read, from librdkafka's statistics (emitted every
//! `statistics.interval.ms` during `poll`, on the pipeline thread; no request of its own): the
//! last stable offset, which a read_committed reader cannot pass, the fetch position, and the
//! records fetched but not yet polled, and whether the partition's leader is up and fetched
//! from. The lag metric, readiness's "nothing to do" and windowed source tasks' markers read it.

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
    /// The partition's leader is known, its broker connection is up, and the partition is
    /// being fetched. Otherwise the last stable offset is only the last one heard of: while a
    /// leader moves (a broker of a cluster killed) records may pile up unseen behind it.
    pub fetching: bool,
}

impl End {
    /// Everything readable has been fetched and polled, as far as anyone can tell: a partition
    /// whose leader cannot be reached is not read to its end (its records may wait there).
    /// Whether this was behind the cluster run's late drops is not shown (CHAOS.md, defect 12).
    pub fn read_to_end(&self) -> bool {
        self.fetching
            && self.last_stable >= 0
            && self.queued == 0
            && self.fetch_position >= self.last_stable
    }
}

#[derive(Default)]
pub(super) struct Ends(Mutex<HashMap<(String, i32), End>>);

#[derive(Deserialize)]
struct Stats {
    #[serde(default)]
    topics: HashMap<String, TopicStats>,
    #[serde(default)]
    brokers: HashMap<String, BrokerStats>,
}

#[derive(Deserialize)]
struct BrokerStats {
    nodeid: i32,
    #[serde(default)]
    state: String,
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
    #[serde(default = "unknown_leader")]
    leader: i32,
    #[serde(default)]
    fetch_state: String,
}

fn unknown_leader() -> i32 {
    -1
}

impl Ends {
    /// The partitions this consumer fetches, from one statistics JSON document; a document that
    /// does not parse changes nothing.
    pub(super) fn update(&self, json: &[u8]) {
        let Ok(stats) = serde_json::from_slice::<Stats>(json) else {
            return;
        };
        // UPDATE: librdkafka's passing state of a broker connection that is up
        let up: Vec<i32> = stats
            .brokers
            .values()
            .filter(|b| b.nodeid >= 0 && matches!(b.state.as_str(), "UP" | "UPDATE"))
            .map(|b| b.nodeid)
            .collect();
        let mut ends = HashMap::new();
        for (topic, t) in stats.topics {
            for p in t.partitions.into_values() {
                // -1 is librdkafka's internal "unassigned" partition
                if p.desired && p.partition >= 0 {
                    let end = End {
                        last_stable: p.ls_offset,
                        fetch_position: p.next_offset,
                        queued: p.fetchq_cnt,
                        fetching: p.fetch_state == "active" && up.contains(&p.leader),
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
        let json = br#"{"name":"c","brokers":{"127.0.0.1:9092/1":{"nodeid":1,"state":"UP"}},
            "topics":{"in":{"topic":"in","partitions":{
            "0":{"partition":0,"desired":true,"ls_offset":120,"next_offset":120,"fetchq_cnt":0,"hi_offset":121,"leader":1,"fetch_state":"active"},
            "1":{"partition":1,"desired":true,"ls_offset":50,"next_offset":40,"fetchq_cnt":3,"leader":1,"fetch_state":"active"},
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

    /// A partition at its last known end is not read to its end while its leader is down,
    /// unknown, or its fetch not running: records may be waiting behind a moving leader.
    #[test]
    fn a_partition_whose_leader_cannot_be_reached_is_not_read_to_its_end() {
        let json = br#"{"brokers":{
              "127.0.0.1:9092/1":{"nodeid":1,"state":"UP"},
              "127.0.0.1:9093/2":{"nodeid":2,"state":"DOWN"},
              "127.0.0.1:9092/bootstrap":{"nodeid":-1,"state":"UP"}},
            "topics":{"in":{"partitions":{
            "0":{"partition":0,"desired":true,"ls_offset":9,"next_offset":9,"fetchq_cnt":0,"leader":1,"fetch_state":"active"},
            "1":{"partition":1,"desired":true,"ls_offset":9,"next_offset":9,"fetchq_cnt":0,"leader":2,"fetch_state":"active"},
            "2":{"partition":2,"desired":true,"ls_offset":9,"next_offset":9,"fetchq_cnt":0,"leader":-1,"fetch_state":"active"},
            "3":{"partition":3,"desired":true,"ls_offset":9,"next_offset":9,"fetchq_cnt":0,"leader":1,"fetch_state":"offset-query"}}}}}"#;
        let ends = Ends::default();
        ends.update(json);
        let held = ends.0.lock().unwrap();
        let at_end = |p: i32| held[&("in".to_string(), p)].read_to_end();
        assert!(at_end(0));
        assert!(!at_end(1), "leader's broker down");
        assert!(!at_end(2), "no leader known");
        assert!(!at_end(3), "not fetching");
    }
}
