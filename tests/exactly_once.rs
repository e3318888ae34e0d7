//! The keyed count of issue #3 against the real broker: every user's counts appear exactly
//! once each, in order, on the read_committed output.

#![allow(clippy::unwrap_used)] // tests panic on failure, by design

mod common;

use std::time::Duration;

fn keyed_count_is_exact(backend: &str) {
    let Some(mut p) = common::CountPipeline::new("counts", 4, backend, "1s") else {
        return;
    };
    let input = common::count_input(20_000, 500);
    p.daemon.start();
    p.produce(&input);
    p.assert_exact(&common::expected_counts(&input), Duration::from_secs(120));
    let status = p.daemon.terminate(Duration::from_secs(40));
    assert!(
        status.success(),
        "SIGTERM must stop flumen with exit 0, got {status}\n{}",
        p.daemon.all_logs()
    );
    assert!(
        p.daemon.last_log().contains("pipeline stopped"),
        "{}",
        p.daemon.last_log()
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
    let Some(mut p) = common::CountPipeline::new("poison", 1, "rocksdb", "200ms") else {
        return;
    };
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
    p.daemon.start();
    p.produce(&good);
    p.assert_exact(&expected, Duration::from_secs(60));

    p.produce(&[(Some(0), "bad".into(), "{\"user\": oops".into())]);
    let status = p
        .daemon
        .wait(Duration::from_secs(60))
        .unwrap_or_else(|| panic!("flumen kept running\n{}", p.daemon.all_logs()));
    assert_eq!(status.code(), Some(4), "{}", p.daemon.all_logs());
    let log = p.daemon.last_log();
    assert!(
        log.contains(&format!(
            "{}/0 offset 100: decode: value is not valid JSON",
            p.source
        )),
        "{log}"
    );

    // nothing committed was lost, and a restart stops at the same record again
    p.assert_exact(&expected, Duration::from_secs(30));
    p.daemon.start();
    let status = p.daemon.wait(Duration::from_secs(60)).expect("stops again");
    assert_eq!(status.code(), Some(4), "{}", p.daemon.all_logs());
}

#[test]
fn committed_offsets_without_their_snapshot_refuse_to_start() {
    let Some(mut p) = common::CountPipeline::new("refuse", 2, "rocksdb", "200ms") else {
        return;
    };
    let input = common::count_input(500, 20);
    p.daemon.start();
    p.produce(&input);
    p.assert_exact(&common::expected_counts(&input), Duration::from_secs(60));
    p.daemon.kill9();

    // the group has committed offsets, but the snapshots are gone: starting would recount
    std::fs::remove_dir_all(p.dir().join("checkpoints")).unwrap();
    p.daemon.start();
    let status = p
        .daemon
        .wait(Duration::from_secs(60))
        .unwrap_or_else(|| panic!("flumen started anyway\n{}", p.daemon.all_logs()));
    assert_eq!(status.code(), Some(3), "{}", p.daemon.all_logs());
    // the commit names its checkpoint, which is gone
    assert!(
        p.daemon.last_log().contains("names checkpoint")
            && p.daemon
                .last_log()
                .contains("it is not in the checkpoint directory"),
        "{}",
        p.daemon.last_log()
    );
    assert!(
        p.daemon.last_log().contains("--allow-empty-state"),
        "{}",
        p.daemon.last_log()
    );

    // the explicit flag starts those partitions empty: new records count from 1 again
    p.daemon.args = vec!["--allow-empty-state".into()];
    p.daemon.start();
    p.produce(&[(Some(0), "k".into(), "{\"user\":\"fresh\"}".into())]);
    let after = p.output(input.len() + 1, Duration::from_secs(60));
    let fresh: Vec<_> = after
        .iter()
        .filter(|r| r.key.as_deref() == Some("fresh"))
        .collect();
    assert_eq!(fresh.len(), 1, "{}", p.daemon.all_logs());
    assert!(
        fresh[0].value.as_deref().unwrap().contains("\"count\":1"),
        "{:?}",
        fresh[0]
    );
    assert!(
        p.daemon.last_log().contains("starting EMPTY"),
        "{}",
        p.daemon.last_log()
    );
    assert!(p.daemon.terminate(Duration::from_secs(40)).success());
}

/// A `send_offsets_to_transaction` that never returns (librdkafka waits for a lost group
/// coordinator without a limit: CHAOS.md, finding 15) costs the pipeline a restart after its
/// limit, not the daemon's life: the producer is given up, the next one fences it, and every
/// record still counts once.
#[test]
fn a_send_offsets_that_never_returns_restarts_the_pipeline_not_the_daemon() {
    let Some(mut p) = common::CountPipeline::new("stuck-offsets", 2, "rocksdb", "300ms") else {
        return;
    };
    // the call's limit is the transaction timeout (its least, 10 s); the stuck watch, which
    // recovered before (exit 1), waits far longer
    p.rewrite_config("rocksdb", "300ms", |t| {
        let t = t.replace("[kafka]\n", "[kafka]\ntransaction_timeout = \"10s\"\n");
        format!("stuck_timeout = \"120s\"\n{t}")
    });
    // the fourth call is held for ten minutes, as librdkafka held it
    p.daemon.start_with(&[(
        "FAILPOINTS",
        "producer::send_offsets=3*off->1*sleep(600000)",
    )]);
    let input = common::count_input(600, 20);
    let feeder = p.produce_slowly(&input, 20, Duration::from_millis(300));
    feeder.join().unwrap();
    p.assert_exact(&common::expected_counts(&input), Duration::from_secs(90));
    let log = p.daemon.all_logs();
    assert!(p.daemon.is_running(), "the daemon exited\n{log}");
    assert!(
        log.contains("kafka send_offsets_to_transaction did not return within 12s"),
        "{log}"
    );
    // the new producer goes on committing
    let more = common::count_input(200, 20);
    p.produce(&more);
    let all: Vec<_> = input.iter().chain(&more).cloned().collect();
    p.assert_exact(&common::expected_counts(&all), Duration::from_secs(60));
    let status = p.daemon.terminate(Duration::from_secs(40));
    assert!(status.success(), "{status}\n{}", p.daemon.all_logs());
}

/// Deleting the repartition records every task has counted (every 30 s, as Kafka Streams'
/// purge) waits for the broker up to its timeout; it runs beside the pipeline, which goes on
/// checkpointing and producing. On the pipeline thread it held both for as long.
#[test]
fn a_slow_purge_of_counted_repartition_records_does_not_hold_the_pipeline() {
    let Some(mut p) = common::CountPipeline::new("slow-purge", 2, "rocksdb", "300ms") else {
        return;
    };
    // every purge waits a minute before it asks the broker
    p.daemon
        .start_with(&[("FAILPOINTS", "admin::purge=sleep(60000)")]);
    let began = std::time::Instant::now();
    let first = common::count_input(200, 20);
    p.produce(&first);
    p.assert_exact(&common::expected_counts(&first), Duration::from_secs(60));
    // the first purge follows the first commit after 30 s; the input goes on through it
    std::thread::sleep(Duration::from_secs(32).saturating_sub(began.elapsed()));
    let more = common::count_input(400, 20);
    p.produce_slowly(&more, 20, Duration::from_millis(300))
        .join()
        .unwrap();
    let all: Vec<_> = first.iter().chain(&more).cloned().collect();
    // the purge sleeps until about 90 s after the start: every count comes before that
    p.assert_exact(&common::expected_counts(&all), Duration::from_secs(20));
    let log = p.daemon.all_logs();
    assert!(
        log.contains("deleting counted repartition records"),
        "no purge began\n{log}"
    );
    assert!(
        began.elapsed() < Duration::from_secs(85),
        "{:?}",
        began.elapsed()
    );
    let status = p.daemon.terminate(Duration::from_secs(40));
    assert!(status.success(), "{status}\n{}", p.daemon.all_logs());
}

/// Clock skew between this host and the broker: Flumen stamps each output with this host's
/// clock, and the broker refuses a record whose timestamp is further from its own clock than
/// the topic allows (`message.timestamp.after.max.ms`, one hour ahead by default in Kafka 4;
/// `message.timestamp.before.max.ms`, unlimited behind by default). Refused records made every
/// transaction abortable, and the rewind met them again (CHAOS.md, defect 18): the daemon must
/// stop instead, saying why, having committed nothing; once the skew is gone it resumes
/// exactly. The skew is made on the broker's side, by a sink topic that takes records at most
/// 1 ms older than its clock (the daemon's own clock moved is the chaos suite's clock-jump
/// scenario).
#[test]
fn records_the_broker_refuses_for_their_timestamps_stop_the_daemon_naming_the_clock() {
    let Some(mut cp) = common::CountPipeline::new("clock-skew", 2, "rocksdb", "300ms") else {
        return;
    };
    // the sink, made again: it refuses a record stamped more than 1 ms before the broker's clock
    let sink = format!("{}-skewed", cp.sink);
    common::create_topic_with(
        &cp.bootstrap,
        &sink,
        2,
        &[("message.timestamp.before.max.ms", "1")],
    );
    let sink_line = format!("sink = {{ topic = \"{}\"", cp.sink);
    let skewed_line = format!("sink = {{ topic = \"{sink}\"");
    cp.rewrite_config("rocksdb", "300ms", |t| t.replace(&sink_line, &skewed_line));
    let input = common::count_input(300, 20);
    cp.produce(&input);
    cp.daemon.start();
    let status = cp.daemon.wait(Duration::from_secs(90));
    let log = cp.daemon.last_log();
    let status = status.unwrap_or_else(|| panic!("the daemon did not stop\n{log}"));
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(
        log.contains("the broker refused records produced to")
            && log.contains("message.timestamp.after.max.ms"),
        "{log}"
    );
    // nothing of the refused transactions is visible
    let out = common::read_all(
        &cp.bootstrap,
        &sink,
        "read_committed",
        0,
        Duration::from_secs(5),
    );
    assert!(out.is_empty(), "{} outputs\n{log}", out.len());
    // the skew gone (the daemon back on its first sink), the run resumes: every record once
    cp.rewrite_config("rocksdb", "300ms", |t| t);
    cp.daemon.start();
    cp.assert_exact(&common::expected_counts(&input), Duration::from_secs(60));
    assert!(cp.daemon.terminate(Duration::from_secs(30)).success());
}

/// A consumer in the pipeline's group with its `group.instance.id` (the instance's
/// transactional id), joined until it holds an assignment: the broker replaces the daemon's
/// static membership with it, so the daemon's consumer is told `FencedInstanceId`, as after
/// its own rejoin once a network outage outlived its session (librdkafka issue 3437).
fn take_static_membership(p: &common::CountPipeline, instance: &str) {
    use rdkafka::ClientConfig;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &p.bootstrap)
        .set("group.id", format!("flumen-{}", p.name))
        .set("group.instance.id", instance)
        .set("enable.auto.commit", "false")
        .set("session.timeout.ms", "10000")
        .create()
        .unwrap();
    consumer.subscribe(&[p.source.as_str()]).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while consumer.assignment().unwrap().count() == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the stand-in never joined"
        );
        let _ = consumer.poll(Duration::from_millis(200));
    }
}

/// Input records: partition, key, value.
type Input = Vec<(Option<i32>, String, String)>;

/// A count pipeline of one instance named `solo`, started and counting exactly.
fn solo(prefix: &str) -> Option<(common::CountPipeline, Input)> {
    let mut p = common::CountPipeline::new(prefix, 2, "rocksdb", "300ms")?;
    p.rewrite_config("rocksdb", "300ms", |t| {
        format!("instance_id = \"solo\"\n{t}")
    });
    p.daemon.start();
    let first = common::count_input(200, 20);
    p.produce(&first);
    p.assert_exact(&common::expected_counts(&first), Duration::from_secs(60));
    Some((p, first))
}

/// CHAOS.md, finding 20: the static consumer fenced by its own rejoin (here, by a stand-in
/// with its instance id that holds no producer) is not a newer instance: the producer still
/// owns the transactional id, and the pipeline restarts in its process, where the daemon
/// exited 1 before and needed a supervisor after every network outage longer than a session.
#[test]
fn a_static_member_fenced_without_a_newer_owner_restarts_in_process() {
    let Some((mut p, first)) = solo("own-rejoin") else {
        return;
    };
    take_static_membership(&p, &format!("flumen-{}-solo", p.name));
    let more = common::count_input(300, 20);
    p.produce(&more);
    let all: Vec<_> = first.iter().chain(&more).cloned().collect();
    p.assert_exact(&common::expected_counts(&all), Duration::from_secs(90));
    assert!(p.daemon.is_running(), "{}", p.daemon.all_logs());
    let log = p.daemon.all_logs();
    assert!(
        log.contains("fenced by its own rejoin"),
        "no in-process restart after the fence\n{log}"
    );
    let status = p.daemon.terminate(Duration::from_secs(40));
    assert!(status.success(), "{status}\n{}", p.daemon.all_logs());
}

/// The same fence after a newer instance registered the transactional id (it runs
/// `init_transactions` before it joins, as Flumen does): the daemon stops non-zero, naming
/// the newer owner, and restarts nothing that would fence it back (CHAOS.md, defect 5).
#[test]
fn a_static_member_fenced_by_a_newer_owner_stops_the_daemon() {
    use rdkafka::ClientConfig;
    use rdkafka::producer::{BaseProducer, Producer};
    let Some((mut p, _)) = solo("newer-owner") else {
        return;
    };
    let id = format!("flumen-{}-solo", p.name);
    let newer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &p.bootstrap)
        .set("transactional.id", &id)
        .create()
        .unwrap();
    newer.init_transactions(Duration::from_secs(30)).unwrap();
    take_static_membership(&p, &id);
    let status = p.daemon.wait(Duration::from_secs(60));
    let log = p.daemon.all_logs();
    assert!(
        status.is_some_and(|s| !s.success()),
        "{status:?}: the daemon must stop non-zero\n{log}"
    );
    assert!(!log.contains("fenced by its own rejoin"), "{log}");
}
