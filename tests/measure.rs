//! Figures for the closing notes, not timed assertions: `cargo test --release --test measure
//! -- --ignored --nocapture` prints the example pipeline's throughput and its recovery time
//! after SIGKILL. The outputs are still checked for exactness. (The benchmark suite with peers
//! is issue #6.)

#![allow(clippy::unwrap_used)] // tests panic on failure, by design

mod common;

use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};

#[test]
#[ignore = "measurement; run by hand with --ignored --nocapture"]
fn measure_keyed_count_throughput_and_recovery() {
    let records: usize = std::env::var("MEASURE_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let interval = std::env::var("MEASURE_INTERVAL").unwrap_or_else(|_| "1s".into());
    let Some(mut p) = common::CountPipeline::new("measure", 4, "rocksdb", &interval) else {
        return;
    };
    let input = common::count_input(records, 10_000);
    let expected = common::expected_counts(&input);
    p.produce(&input);

    let started = Instant::now();
    p.daemon.start();
    let output = p.output(records, Duration::from_secs(600));
    let took = started.elapsed();
    common::check_counts(&output, &expected)
        .unwrap_or_else(|e| panic!("{e}\n{}", p.daemon.last_log()));
    println!(
        "throughput: {records} records (key_by + count over 10,000 users, 4 partitions, repartitioned, rocksdb, checkpoint {interval}): {:.1}s from start to the last committed output = {:.0} records/s",
        took.as_secs_f64(),
        records as f64 / took.as_secs_f64()
    );

    // recovery: SIGKILL while idle-but-subscribed, restart, produce one record, time to its output
    let mut samples = Vec::new();
    for _ in 0..3 {
        let watcher = tail_consumer(&p.bootstrap, &p.sink);
        p.daemon.kill9();
        let restarted = Instant::now();
        p.daemon.start();
        p.produce(&[(None, "x".into(), "{\"user\":\"recovery\"}".into())]);
        loop {
            if let Some(m) = watcher.poll(Duration::from_millis(20)) {
                m.expect("read");
                break;
            }
            assert!(
                restarted.elapsed() < Duration::from_secs(120),
                "no output after restart\n{}",
                p.daemon.last_log()
            );
        }
        samples.push(restarted.elapsed());
    }
    println!(
        "recovery after SIGKILL (restart → next committed output, checkpoint {interval}): {samples:?}"
    );
    assert!(p.daemon.terminate(Duration::from_secs(40)).success());
}

fn tail_consumer(bootstrap: &str, topic: &str) -> BaseConsumer {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", common::rand_name("tail"))
        .set("isolation.level", "read_committed")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..4 {
        tpl.add_partition_offset(topic, p, Offset::End).unwrap();
    }
    c.assign(&tpl).unwrap();
    // let the assignment settle on the end offsets before the kill
    for _ in 0..10 {
        c.poll(Duration::from_millis(50));
    }
    c
}
