//! A restore that takes longer than `max.poll.interval.ms` keeps the member in its group: the
//! snapshots are verified and copied beside the poll loop, which goes on polling with the
//! partitions paused. On the poll thread itself the member would be thrown out, revoked, and
//! restore again, in a loop without progress.

#![allow(clippy::unwrap_used)] // tests panic on failure, by design

mod common;

use std::time::{Duration, Instant};

use common::{CountPipeline, count_input, expected_counts};

#[test]
fn a_restore_longer_than_the_poll_interval_keeps_its_place_in_the_group() {
    let Some(mut cp) = CountPipeline::new("slow-restore", 2, "rocksdb", "300ms") else {
        return;
    };
    // librdkafka wants max.poll.interval.ms ≥ session.timeout.ms; brokers refuse sessions
    // under 6 s
    cp.rewrite_config("rocksdb", "300ms", |t| {
        t.replace(
            "\n[checkpoint]",
            "\n[kafka.properties]\n\"max.poll.interval.ms\" = \"7000\"\n\"session.timeout.ms\" = \"6000\"\n\n[checkpoint]",
        )
    });
    cp.daemon.start();
    let batch1 = count_input(1_000, 40);
    cp.produce(&batch1);
    cp.assert_exact(&expected_counts(&batch1), Duration::from_secs(90));
    cp.daemon.kill9();

    // each of the two stateful tasks takes 10 s to restore: 20 s in all, past the 7 s
    let started = Instant::now();
    cp.daemon
        .start_with(&[("FAILPOINTS", "restore::slow=sleep(10000)")]);
    let batch2 = count_input(1_000, 40);
    cp.produce(&batch2);
    let all: Vec<_> = batch1.iter().chain(&batch2).cloned().collect();
    cp.assert_exact(&expected_counts(&all), Duration::from_secs(120));
    let log = cp.daemon.last_log();
    eprintln!("restored and caught up in {:?}", started.elapsed());
    assert!(
        !log.contains("partitions revoked"),
        "the member lost its partitions during the restore\n{log}"
    );
    assert!(cp.daemon.terminate(Duration::from_secs(30)).success());
}
