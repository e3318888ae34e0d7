//! Nothing is forgotten silently (rule 7): the repartition topic keeps its records until every
//! task has counted them (then Flumen deletes them), a group whose committed offsets are gone
//! resumes from its checkpoint, and a committed offset the log no longer holds stops the
//! restart, naming it, instead of silently starting from the earliest record.

#![allow(clippy::unwrap_used)] // tests panic on failure, by design

mod common;

use std::time::{Duration, Instant};

use common::{CountPipeline, count_input, expected_counts};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};

const OUTPUT_TIMEOUT: Duration = Duration::from_secs(90);

struct Admin {
    admin: AdminClient<DefaultClientContext>,
    rt: tokio::runtime::Runtime,
    bootstrap: String,
}

impl Admin {
    fn new(bootstrap: &str) -> Self {
        Self {
            admin: ClientConfig::new()
                .set("bootstrap.servers", bootstrap)
                .create()
                .unwrap(),
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
            bootstrap: bootstrap.to_string(),
        }
    }

    fn topic_config(&self, topic: &str, name: &str) -> Option<String> {
        let spec = ResourceSpecifier::Topic(topic);
        let got = self
            .rt
            .block_on(self.admin.describe_configs([&spec], &AdminOptions::new()))
            .unwrap();
        got.into_iter()
            .next()
            .unwrap()
            .unwrap()
            .get(name)
            .and_then(|e| e.value.clone())
    }

    /// Deletes the group once its (static) member's session has expired.
    fn delete_group(&self, group: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let got = self
                .rt
                .block_on(self.admin.delete_groups(&[group], &AdminOptions::new()))
                .unwrap();
            match &got[0] {
                Ok(_) => return,
                Err(e) if Instant::now() < deadline => {
                    eprintln!("delete group {group}: {e:?}; retrying");
                    std::thread::sleep(Duration::from_secs(1));
                }
                Err(e) => panic!("delete group {group}: {e:?}"),
            }
        }
    }

    fn delete_all_records(&self, topic: &str, partition: i32) {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, partition, Offset::End)
            .unwrap();
        let done = self
            .rt
            .block_on(self.admin.delete_records(&tpl, &AdminOptions::new()))
            .unwrap();
        done.elements()[0].error().unwrap();
    }

    /// (log start, the group's committed offset) of each partition of `topic`.
    fn starts_and_commits(&self, group: &str, topic: &str, partitions: i32) -> Vec<(i64, i64)> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .set("group.id", group)
            .create()
            .unwrap();
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition(topic, p);
        }
        let committed = consumer
            .committed_offsets(tpl, Duration::from_secs(10))
            .unwrap();
        (0..partitions)
            .map(|p| {
                let (low, _) = consumer
                    .fetch_watermarks(topic, p, Duration::from_secs(10))
                    .unwrap();
                let c = match committed.elements()[p as usize].offset() {
                    Offset::Offset(o) => o,
                    _ => -1,
                };
                (low, c)
            })
            .collect()
    }
}

fn repartition_topic(cp: &CountPipeline) -> String {
    format!("flumen-{}-count-repartition", cp.name)
}

/// A repartition topic made by an older version (7 days' retention, one more setting): after
/// the start it keeps records forever, its other setting kept; after 30 s Flumen has deleted
/// the records every task counted, never one past the group's committed offset.
#[test]
fn the_repartition_topic_keeps_records_until_they_are_counted() {
    let Some(mut cp) = CountPipeline::new("keep", 2, "rocksdb", "300ms") else {
        return;
    };
    let admin = Admin::new(&cp.bootstrap);
    let topic = repartition_topic(&cp);
    let older = NewTopic::new(&topic, 2, TopicReplication::Fixed(1))
        .set("retention.ms", "604800000")
        .set("max.message.bytes", "2000000");
    let made = admin
        .rt
        .block_on(admin.admin.create_topics([&older], &AdminOptions::new()))
        .unwrap();
    made[0].as_ref().unwrap();

    let started = Instant::now();
    cp.daemon.start();
    let batch1 = count_input(2_000, 50);
    cp.produce(&batch1);
    cp.assert_exact(&expected_counts(&batch1), OUTPUT_TIMEOUT);
    assert_eq!(
        admin.topic_config(&topic, "retention.ms").as_deref(),
        Some("-1")
    );
    assert_eq!(
        admin.topic_config(&topic, "max.message.bytes").as_deref(),
        Some("2000000"),
        "the topic's other setting was dropped"
    );

    // the first checkpoint 30 s after the pipeline started (a moment after the process)
    // deletes what every task counted
    std::thread::sleep(Duration::from_secs(38).saturating_sub(started.elapsed()));
    let batch2 = count_input(1_000, 50);
    cp.produce(&batch2);
    let all: Vec<_> = batch1.iter().chain(&batch2).cloned().collect();
    cp.assert_exact(&expected_counts(&all), OUTPUT_TIMEOUT);
    let group = format!("flumen-{}", cp.name);
    let deadline = Instant::now() + Duration::from_secs(20);
    let seen = loop {
        let seen = admin.starts_and_commits(&group, &topic, 2);
        if seen.iter().all(|(low, _)| *low > 0) || Instant::now() > deadline {
            break seen;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(
        seen.iter()
            .all(|(low, committed)| *low > 0 && low <= committed),
        "(log start, committed) per partition: {seen:?}\n{}",
        cp.daemon.all_logs()
    );
    assert!(cp.daemon.terminate(Duration::from_secs(30)).success());
}

/// The group's committed offsets are deleted while the pipeline is stopped (as
/// `offsets.retention.minutes` does to an empty group): the restart resumes from the newest
/// checkpoint, and no count is produced twice.
#[test]
fn a_group_that_lost_its_offsets_resumes_from_its_checkpoint() {
    let Some(mut cp) = CountPipeline::new("lost", 2, "rocksdb", "300ms") else {
        return;
    };
    let admin = Admin::new(&cp.bootstrap);
    cp.daemon.start();
    let batch1 = count_input(2_000, 50);
    cp.produce(&batch1);
    cp.assert_exact(&expected_counts(&batch1), OUTPUT_TIMEOUT);
    assert!(cp.daemon.terminate(Duration::from_secs(30)).success());
    let group = format!("flumen-{}", cp.name);
    admin.delete_group(&group);
    assert!(
        admin
            .starts_and_commits(&group, &cp.source, 2)
            .iter()
            .all(|(_, c)| *c < 0),
        "the group still has offsets"
    );

    cp.daemon.start();
    let batch2 = count_input(1_000, 50);
    cp.produce(&batch2);
    let all: Vec<_> = batch1.iter().chain(&batch2).cloned().collect();
    cp.assert_exact(&expected_counts(&all), OUTPUT_TIMEOUT);
    assert!(
        cp.daemon
            .last_log()
            .contains("resuming them from the checkpoint"),
        "{}",
        cp.daemon.all_logs()
    );
    assert!(cp.daemon.terminate(Duration::from_secs(30)).success());
}

/// Records past the committed offset of a repartition partition (re-keyed records no task
/// has counted yet) are deleted while the pipeline is stopped: the restart stops with exit 3,
/// naming the partition, the offsets and what to do, instead of resetting to the earliest
/// record and losing them silently.
#[test]
fn records_deleted_past_a_committed_offset_stop_the_restart() {
    let Some(mut cp) = CountPipeline::new("gone", 2, "rocksdb", "300ms") else {
        return;
    };
    let admin = Admin::new(&cp.bootstrap);
    cp.daemon.start();
    let batch1 = count_input(1_000, 50);
    cp.produce(&batch1);
    cp.assert_exact(&expected_counts(&batch1), OUTPUT_TIMEOUT);
    assert!(cp.daemon.terminate(Duration::from_secs(30)).success());
    let topic = repartition_topic(&cp);
    // a repartition topic Flumen created keeps its records until Flumen deletes them
    assert_eq!(
        admin.topic_config(&topic, "retention.ms").as_deref(),
        Some("-1")
    );
    // three uncounted records, then deleted with everything before them
    let uncounted: Vec<(Option<i32>, String, String)> = (0..3)
        .map(|i| (Some(0), format!("u{i}"), format!(r#"{{"user":"u{i}"}}"#)))
        .collect();
    common::produce_all(&cp.bootstrap, &topic, &uncounted);
    admin.delete_all_records(&topic, 0);

    cp.daemon.start();
    let status = cp
        .daemon
        .wait(Duration::from_secs(60))
        .unwrap_or_else(|| panic!("the restart went on\n{}", cp.daemon.all_logs()));
    let log = cp.daemon.last_log();
    assert_eq!(status.code(), Some(3), "{log}");
    assert!(
        log.contains(&format!("{topic}/0: the group's committed offset"))
            && log.contains("is below the log start")
            && log.contains("flumen offsets reset"),
        "{log}"
    );
}
