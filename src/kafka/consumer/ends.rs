//! How far each assigned partition can be read, from librdkafka's statistics (emitted every
//! `statistics.interval.ms` during `poll`, on the pipeline thread; no request of its own): the
//! last stable offset, which a read_committed reader cannot pass, the fetch position, and the
//! records fetched but not yet polled, and whether the partition's leader is up and fetched
//! from. The lag metric, readiness's "nothing to do" and windowed source tasks' markers read it.
//! The same statistics tell whether the consumer has its group coordinator: a pipeline whose
//! consumer stays without one is restarted with a new one (`Consumer::check_coordinator`).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

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
    /// Messages waiting in the consumer's queue: librdkafka counts the queue its partitions
    /// forward to, so every partition's, not this one's alone.
    pub queued: i64,
    /// The offset after the last message handed to the application, past transaction
    /// markers (`app_offset`); negative before the first.
    pub handed: i64,
    /// The partition's leader is known, its broker connection is up, and the partition is
    /// being fetched. Otherwise the last stable offset is only the last one heard of: while a
    /// leader moves (a broker of a cluster killed) records may pile up unseen behind it.
    pub fetching: bool,
    /// When librdkafka took these statistics (they reach the application only at its next
    /// poll: after a loop blocked for seconds, the latest one held may be that old).
    pub taken: Instant,
}

impl End {
    /// Everything readable has been fetched and polled, as far as anyone can tell: a partition
    /// whose leader cannot be reached is not read to its end (its records may wait there).
    /// Whether this was behind the cluster run's late drops is not shown (CHAOS.md, defect 12).
    /// Either everything up to the last stable offset was handed to the application, or
    /// everything was fetched and the consumer's whole queue is empty (before the first
    /// message handed over). `queued` alone kept a quiet partition "behind" for as long as
    /// any other partition's messages waited, and so from ever being declared idle.
    /// These ends, with what the application processed up to `next` (the offset after its
    /// last record) counted as handed over: librdkafka resets its own count on a seek.
    #[must_use]
    pub fn counting_processed(self, next: Option<i64>) -> Self {
        Self {
            handed: self.handed.max(next.unwrap_or(-1)),
            ..self
        }
    }

    pub fn read_to_end(&self) -> bool {
        self.fetching
            && self.last_stable >= 0
            && (self.handed >= self.last_stable
                || (self.queued == 0 && self.fetch_position >= self.last_stable))
    }
}

/// Whether a partition may still hold records its consumer has not read: anything but a
/// known end read to (no statistics yet, or none naming it, is not "nothing to read").
pub fn may_hold_unread(end: Option<End>) -> bool {
    end.is_none_or(|e| !e.read_to_end())
}

/// How long, as Kafka showed it, a partition has had nothing to read after `last` (when the
/// application processed its last record, or began to wait for one): from `last` to when its
/// latest statistics were taken, if they show it read to its end; zero without them, or when
/// they show it behind. The clock alone counts as quiet the time the application did not read
/// (a checkpoint that blocked the loop for longer than the idle timeout), although the
/// partition's records were waiting (CHAOS.md, defect 12).
pub fn quiet_since(end: Option<End>, last: Instant) -> Duration {
    match end {
        Some(e) if e.read_to_end() => e.taken.saturating_duration_since(last),
        _ => Duration::ZERO,
    }
}

pub(super) struct Ends {
    /// Made just before the client: librdkafka's `age` in each statistics document counts
    /// from the client's creation, a moment after.
    created: Instant,
    partitions: Mutex<HashMap<(String, i32), End>>,
    group: Mutex<Membership>,
}

impl Default for Ends {
    fn default() -> Self {
        Self {
            created: Instant::now(),
            partitions: Mutex::default(),
            group: Mutex::default(),
        }
    }
}

/// The consumer's standing in its group, from the `cgrp` section of the statistics: since
/// when its group handler has been without a group coordinator (any state but "up": querying
/// for one, waiting for its broker), if it is. A join or a rebalance under way has its
/// coordinator: it may rightly wait for other members up to the rebalance timeout.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Membership {
    /// librdkafka's group handler state and join state, as of the latest statistics.
    pub state: String,
    pub join_state: String,
    /// When the statistics first showed it without a coordinator, this time.
    pub without_coordinator_since: Option<Instant>,
    /// Each broker connection and its state (`name state`, sorted), for the error that says
    /// the consumer stayed without a coordinator.
    pub brokers: String,
}

impl Membership {
    /// Folds one statistics document's group handler in at `now`.
    fn observe(&mut self, cgrp: &CgrpStats, now: Instant) {
        self.state.clone_from(&cgrp.state);
        self.join_state.clone_from(&cgrp.join_state);
        if cgrp.state == "up" {
            self.without_coordinator_since = None;
        } else if self.without_coordinator_since.is_none() {
            self.without_coordinator_since = Some(now);
        }
    }

    /// How long the consumer has been without a coordinator, as of `now` (zero with one).
    pub fn without_coordinator_for(&self, now: Instant) -> Duration {
        self.without_coordinator_since
            .map_or(Duration::ZERO, |t| now.saturating_duration_since(t))
    }
}

#[derive(Deserialize)]
struct Stats {
    /// Microseconds from the client's creation to these statistics.
    #[serde(default)]
    age: u64,
    #[serde(default)]
    topics: HashMap<String, TopicStats>,
    #[serde(default)]
    brokers: HashMap<String, BrokerStats>,
    /// Present for a consumer with a group.
    cgrp: Option<CgrpStats>,
}

#[derive(Deserialize)]
struct CgrpStats {
    #[serde(default)]
    state: String,
    #[serde(default)]
    join_state: String,
}

#[derive(Deserialize)]
struct BrokerStats {
    #[serde(default)]
    name: String,
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
    #[serde(default = "unknown_offset")]
    app_offset: i64,
    #[serde(default = "unknown_leader")]
    leader: i32,
    #[serde(default)]
    fetch_state: String,
}

fn unknown_leader() -> i32 {
    -1
}

fn unknown_offset() -> i64 {
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
        let taken = self.created + Duration::from_micros(stats.age);
        let mut ends = HashMap::new();
        for (topic, t) in stats.topics {
            for p in t.partitions.into_values() {
                // -1 is librdkafka's internal "unassigned" partition
                if p.desired && p.partition >= 0 {
                    let end = End {
                        last_stable: p.ls_offset,
                        fetch_position: p.next_offset,
                        queued: p.fetchq_cnt,
                        handed: p.app_offset,
                        fetching: p.fetch_state == "active" && up.contains(&p.leader),
                        taken,
                    };
                    ends.insert((topic.clone(), p.partition), end);
                }
            }
        }
        if let Ok(mut held) = self.partitions.lock() {
            *held = ends;
        }
        if let (Some(cgrp), Ok(mut m)) = (stats.cgrp, self.group.lock()) {
            m.observe(&cgrp, Instant::now());
            let mut brokers: Vec<String> = stats
                .brokers
                .values()
                .map(|b| format!("{} {}", b.name, b.state))
                .collect();
            brokers.sort();
            m.brokers = brokers.join(", ");
        }
    }
}

impl Consumer {
    /// The ends of `partition` as of the latest statistics; `None` before the first that
    /// named it.
    pub fn end_of(&self, partition: &Partition) -> Option<End> {
        let ends = self.inner.context().ends.partitions.lock().ok()?;
        ends.get(&(partition.topic.clone(), partition.partition))
            .copied()
    }

    /// The consumer's standing in its group as of the latest statistics.
    pub fn membership(&self) -> Membership {
        self.inner
            .context()
            .ends
            .group
            .lock()
            .map(|m| m.clone())
            .unwrap_or_default()
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
        let held = ends.partitions.lock().unwrap();
        assert_eq!(held.len(), 2);
        let zero = held[&("in".to_string(), 0)];
        assert!(zero.read_to_end());
        let one = held[&("in".to_string(), 1)];
        assert_eq!(one.last_stable, 50);
        assert!(!one.read_to_end());
        drop(held);
        // a document that does not parse keeps what was known
        ends.update(b"{not json");
        assert_eq!(ends.partitions.lock().unwrap().len(), 2);
    }

    /// The consumer's queue count is every partition's: a quiet partition handed everything to
    /// the application is read to its end however many of another partition's messages wait
    /// (else it was never declared idle while another partition streamed); one with messages
    /// not yet handed over is not, and neither is one fetched to its end but with messages of
    /// its own perhaps among those queued.
    #[test]
    fn a_partition_handed_over_to_its_end_is_read_to_its_end_whatever_else_is_queued() {
        let json = br#"{"name":"c","brokers":{"127.0.0.1:9092/1":{"nodeid":1,"state":"UP"}},
            "topics":{"in":{"topic":"in","partitions":{
            "0":{"partition":0,"desired":true,"ls_offset":12,"next_offset":12,"app_offset":12,"fetchq_cnt":13,"leader":1,"fetch_state":"active"},
            "1":{"partition":1,"desired":true,"ls_offset":900,"next_offset":900,"app_offset":887,"fetchq_cnt":13,"leader":1,"fetch_state":"active"},
            "2":{"partition":2,"desired":true,"ls_offset":12,"next_offset":12,"app_offset":-1001,"fetchq_cnt":13,"leader":1,"fetch_state":"active"}}}}}"#;
        let ends = Ends::default();
        ends.update(json);
        let held = ends.partitions.lock().unwrap();
        let at_end = |p: i32| held[&("in".to_string(), p)].read_to_end();
        assert!(at_end(0));
        assert!(!at_end(1));
        assert!(!at_end(2));
        // after a seek librdkafka has handed nothing over yet: what the task processed counts
        let end = |p: i32| held[&("in".to_string(), p)];
        assert!(end(2).counting_processed(Some(12)).read_to_end());
        assert!(!end(2).counting_processed(Some(11)).read_to_end());
        assert!(!end(2).counting_processed(None).read_to_end());
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
        let held = ends.partitions.lock().unwrap();
        let at_end = |p: i32| held[&("in".to_string(), p)].read_to_end();
        assert!(at_end(0));
        assert!(!at_end(1), "leader's broker down");
        assert!(!at_end(2), "no leader known");
        assert!(!at_end(3), "not fetching");
        let end = |p: i32| held.get(&("in".to_string(), p)).copied();
        assert!(!may_hold_unread(end(0)));
        assert!(may_hold_unread(end(1)));
        assert!(may_hold_unread(end(4)), "a partition no statistics name");
    }

    /// Quiet is what the statistics show: read to its end when they were taken, and for how
    /// long after the last record by then; statistics taken before it, or showing the
    /// partition behind, show no quiet however late they are read.
    #[test]
    fn quiet_counts_to_when_the_statistics_were_taken_not_to_when_they_are_read() {
        let json = |age_us: u64| {
            format!(
                r#"{{"age":{age_us},"brokers":{{"b:9/1":{{"nodeid":1,"state":"UP"}}}},
                "topics":{{"in":{{"partitions":{{
                "0":{{"partition":0,"desired":true,"ls_offset":9,"next_offset":9,"app_offset":9,"fetchq_cnt":0,"leader":1,"fetch_state":"active"}},
                "1":{{"partition":1,"desired":true,"ls_offset":9,"next_offset":9,"app_offset":7,"fetchq_cnt":2,"leader":1,"fetch_state":"active"}}}}}}}}}}"#
            )
        };
        let ends = Ends::default();
        let end = |p: i32| {
            ends.partitions
                .lock()
                .unwrap()
                .get(&("in".to_string(), p))
                .copied()
        };
        let last = ends.created + Duration::from_secs(10);
        // taken 2 s before the last record: no quiet, read 8 s after it or not
        ends.update(json(8_000_000).as_bytes());
        assert_eq!(quiet_since(end(0), last), Duration::ZERO);
        // taken 4 s after it, read to its end: 4 s
        ends.update(json(14_000_000).as_bytes());
        assert_eq!(quiet_since(end(0), last), Duration::from_secs(4));
        // behind, or not named: none
        assert_eq!(quiet_since(end(1), last), Duration::ZERO);
        assert_eq!(quiet_since(end(2), last), Duration::ZERO);
    }

    #[test]
    fn time_without_a_coordinator_counts_from_the_first_statistics_that_show_it() {
        let ends = Ends::default();
        let doc = |state: &str, join: &str| {
            format!(
                r#"{{"cgrp":{{"state":"{state}","join_state":"{join}"}},"topics":{{}},
                "brokers":{{"b:9/1":{{"name":"b:9/1","nodeid":1,"state":"UP"}},
                "GroupCoordinator":{{"name":"GroupCoordinator","nodeid":-1,"state":"DOWN"}}}}}}"#
            )
        };
        let out = |ends: &Ends| ends.group.lock().unwrap().without_coordinator_since;
        ends.update(doc("up", "steady").as_bytes());
        assert_eq!(out(&ends), None);
        ends.update(doc("up", "wait-join").as_bytes());
        assert_eq!(out(&ends), None, "a join has its coordinator");
        ends.update(doc("query-coord", "init").as_bytes());
        let since = out(&ends).expect("without a coordinator");
        ends.update(doc("wait-coord", "init").as_bytes());
        assert_eq!(
            out(&ends),
            Some(since),
            "still without: the first sighting counts"
        );
        let m = ends.group.lock().unwrap().clone();
        assert_eq!(
            (m.state.as_str(), m.join_state.as_str()),
            ("wait-coord", "init")
        );
        assert_eq!(m.brokers, "GroupCoordinator DOWN, b:9/1 UP");
        assert!(
            m.without_coordinator_for(since + Duration::from_secs(61)) >= Duration::from_secs(61)
        );
        ends.update(doc("up", "init").as_bytes());
        assert_eq!(out(&ends), None);
        assert_eq!(
            ends.group
                .lock()
                .unwrap()
                .without_coordinator_for(Instant::now()),
            Duration::ZERO
        );
    }
}
