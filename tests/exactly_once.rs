//! The keyed count of issue #3 against the real broker: every user's counts appear exactly
//! once each, in order, on the read_committed output.

#![allow(clippy::unwrap_used)] // tests panic on failure, by design

mod common;

use std::time::Duration;

fn keyed_count_is_exact(backend: &str) {
    let Some(bootstrap) = common::bootstrap() else {
        return;
    };
    let name = common::rand_name("counts");
    let (source, sink) = (format!("{name}-events"), format!("{name}-counts"));
    common::create_topic(&bootstrap, &source, 4);
    common::create_topic(&bootstrap, &sink, 4);
    let input = common::count_input(20_000, 500);
    let expected = common::expected_counts(&input);

    let tmp = tempfile::tempdir().unwrap();
    let mut daemon = common::Daemon::new(
        tmp.path(),
        &common::count_config(&bootstrap, &name, &source, &sink, backend, "1s"),
    );
    daemon.start();
    common::produce_all(&bootstrap, &source, &input);

    let output = common::read_all(
        &bootstrap,
        &sink,
        "read_committed",
        input.len(),
        Duration::from_secs(120),
    );
    if let Err(e) = common::check_counts(&output, &expected) {
        panic!("{e}\n{} outputs read\n{}", output.len(), daemon.all_logs());
    }
    let status = daemon.terminate(Duration::from_secs(40));
    assert!(
        status.success(),
        "SIGTERM must stop flumen with exit 0, got {status}\n{}",
        daemon.all_logs()
    );
    assert!(
        daemon.last_log().contains("pipeline stopped"),
        "{}",
        daemon.last_log()
    );
}

#[test]
fn keyed_count_with_rocksdb_is_exactly_once() {
    keyed_count_is_exact("rocksdb");
}

#[test]
fn keyed_count_with_memory_state_is_exactly_once() {
    keyed_count_is_exact("memory");
}

#[test]
fn a_record_that_is_not_json_stops_the_daemon_naming_its_place() {
    let Some(bootstrap) = common::bootstrap() else {
        return;
    };
    let name = common::rand_name("poison");
    let (source, sink) = (format!("{name}-events"), format!("{name}-counts"));
    common::create_topic(&bootstrap, &source, 1);
    common::create_topic(&bootstrap, &sink, 1);
    let good: Vec<_> = (0..100)
        .map(|i| {
            (
                Some(0),
                format!("k{i}"),
                format!("{{\"user\":\"u{}\"}}", i % 7),
            )
        })
        .collect();
    let expected = common::expected_counts(&good);

    let tmp = tempfile::tempdir().unwrap();
    let mut daemon = common::Daemon::new(
        tmp.path(),
        &common::count_config(&bootstrap, &name, &source, &sink, "rocksdb", "200ms"),
    );
    daemon.start();
    common::produce_all(&bootstrap, &source, &good);
    let before = common::read_all(
        &bootstrap,
        &sink,
        "read_committed",
        100,
        Duration::from_secs(60),
    );
    common::check_counts(&before, &expected)
        .unwrap_or_else(|e| panic!("{e}\n{}", daemon.all_logs()));

    common::produce_all(
        &bootstrap,
        &source,
        &[(Some(0), "bad".into(), "{\"user\": oops".into())],
    );
    let status = daemon
        .wait(Duration::from_secs(60))
        .unwrap_or_else(|| panic!("flumen kept running\n{}", daemon.all_logs()));
    assert_eq!(status.code(), Some(4), "{}", daemon.all_logs());
    let log = daemon.last_log();
    assert!(
        log.contains(&format!(
            "{source}/0 offset 100: decode: value is not valid JSON"
        )),
        "{log}"
    );

    // nothing committed was lost, and a restart stops at the same record again
    let after = common::read_all(
        &bootstrap,
        &sink,
        "read_committed",
        100,
        Duration::from_secs(30),
    );
    common::check_counts(&after, &expected).unwrap();
    daemon.start();
    let status = daemon.wait(Duration::from_secs(60)).expect("stops again");
    assert_eq!(status.code(), Some(4), "{}", daemon.all_logs());
}

#[test]
fn committed_offsets_without_their_snapshot_refuse_to_start() {
    let Some(bootstrap) = common::bootstrap() else {
        return;
    };
    let name = common::rand_name("refuse");
    let (source, sink) = (format!("{name}-events"), format!("{name}-counts"));
    common::create_topic(&bootstrap, &source, 2);
    common::create_topic(&bootstrap, &sink, 2);
    let input = common::count_input(500, 20);
    let expected = common::expected_counts(&input);

    let tmp = tempfile::tempdir().unwrap();
    let mut daemon = common::Daemon::new(
        tmp.path(),
        &common::count_config(&bootstrap, &name, &source, &sink, "rocksdb", "200ms"),
    );
    daemon.start();
    common::produce_all(&bootstrap, &source, &input);
    let output = common::read_all(
        &bootstrap,
        &sink,
        "read_committed",
        input.len(),
        Duration::from_secs(60),
    );
    common::check_counts(&output, &expected)
        .unwrap_or_else(|e| panic!("{e}\n{}", daemon.all_logs()));
    daemon.kill9();

    // the group has committed offsets, but the snapshots are gone: starting would recount
    std::fs::remove_dir_all(tmp.path().join("checkpoints")).unwrap();
    daemon.start();
    let status = daemon
        .wait(Duration::from_secs(60))
        .unwrap_or_else(|| panic!("flumen started anyway\n{}", daemon.all_logs()));
    assert_eq!(status.code(), Some(3), "{}", daemon.all_logs());
    assert!(
        daemon.last_log().contains("no checkpoint in"),
        "{}",
        daemon.last_log()
    );
    assert!(
        daemon.last_log().contains("--allow-empty-state"),
        "{}",
        daemon.last_log()
    );

    // the explicit flag starts those partitions empty: new records count from 1 again
    daemon.args = vec!["--allow-empty-state".into()];
    daemon.start();
    common::produce_all(
        &bootstrap,
        &source,
        &[(Some(0), "k".into(), "{\"user\":\"fresh\"}".into())],
    );
    let after = common::read_all(
        &bootstrap,
        &sink,
        "read_committed",
        input.len() + 1,
        Duration::from_secs(60),
    );
    let fresh: Vec<_> = after
        .iter()
        .filter(|r| r.key.as_deref() == Some("fresh"))
        .collect();
    assert_eq!(fresh.len(), 1, "{}", daemon.all_logs());
    assert!(
        fresh[0].value.as_deref().unwrap().contains("\"count\":1"),
        "{:?}",
        fresh[0]
    );
    assert!(
        daemon.last_log().contains("starting EMPTY"),
        "{}",
        daemon.last_log()
    );
    assert!(daemon.terminate(Duration::from_secs(40)).success());
}
