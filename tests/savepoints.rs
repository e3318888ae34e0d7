//! Savepoints against the real broker: stop-with-savepoint and restore, restoring an older
//! savepoint, restoring into more partitions, across backends, and the refusals.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{CountPipeline, check_counts, count_input, expected_counts, flumen};

const OUTPUT_TIMEOUT: Duration = Duration::from_secs(90);
const STOP_TIMEOUT: Duration = Duration::from_secs(60);

fn merged(
    a: &[(Option<i32>, String, String)],
    b: &[(Option<i32>, String, String)],
) -> Vec<(Option<i32>, String, String)> {
    a.iter().chain(b).cloned().collect()
}

/// `flumen stop --savepoint` stops the daemon with exit 0 after a savepoint.
fn stop_with_savepoint(cp: &mut CountPipeline, dir: &std::path::Path) -> std::path::PathBuf {
    let taken = cp.daemon.savepoint(Some(dir), true);
    assert_eq!(taken.len(), 1, "one pipeline, one savepoint: {taken:?}");
    let status = cp
        .daemon
        .wait(STOP_TIMEOUT)
        .unwrap_or_else(|| panic!("daemon still running after stop\n{}", cp.daemon.all_logs()));
    assert!(
        status.success(),
        "stop exit status {status}\n{}",
        cp.daemon.all_logs()
    );
    assert!(
        taken[0].join("_savepoint.json").try_exists().expect("stat"),
        "{taken:?}"
    );
    taken[0].clone()
}

fn restart_from(cp: &mut CountPipeline, savepoint: &std::path::Path) {
    cp.daemon.args = vec!["--from-savepoint".into(), savepoint.display().to_string()];
    cp.daemon.start();
    cp.daemon.args.clear();
}

/// Stop with a savepoint while records are still flowing (so some are in flight in the
/// repartition topic), restore into the in-memory backend, do it again, restore back into
/// RocksDB: every user's counts are 1..=n exactly once over the three runs.
#[test]
fn stop_with_savepoint_and_restore_continue_without_gap_or_repeat_across_backends() {
    let Some(mut cp) = CountPipeline::new("sp-stop", 4, "rocksdb", "500ms") else {
        return;
    };
    let sp_root = cp.dir().join("savepoints");
    let batch1 = count_input(4_000, 150);
    cp.daemon.start();
    cp.produce(&batch1);
    std::thread::sleep(Duration::from_millis(1500));
    let sp1 = stop_with_savepoint(&mut cp, &sp_root.join("one"));

    cp.rewrite_config("memory", "500ms", |t| t);
    let batch2 = count_input(3_000, 150);
    restart_from(&mut cp, &sp1);
    cp.produce(&batch2);
    std::thread::sleep(Duration::from_millis(1500));
    let sp2 = stop_with_savepoint(&mut cp, &sp_root.join("two"));
    assert!(
        cp.daemon.all_logs().contains("restored from savepoint"),
        "{}",
        cp.daemon.all_logs()
    );

    cp.rewrite_config("rocksdb", "500ms", |t| t);
    let batch3 = count_input(2_000, 150);
    restart_from(&mut cp, &sp2);
    cp.produce(&batch3);
    let all = merged(&merged(&batch1, &batch2), &batch3);
    cp.assert_exact(&expected_counts(&all), OUTPUT_TIMEOUT);
    assert!(cp.daemon.terminate(STOP_TIMEOUT).success());
}

/// Restoring an older savepoint: its state is what `inspect --key` shows, and the outputs
/// produced after it are produced again, identically (the documented effect of a replay).
#[test]
fn restoring_an_older_savepoint_reproduces_the_outputs_after_it() {
    let Some(mut cp) = CountPipeline::new("sp-old", 4, "rocksdb", "500ms") else {
        return;
    };
    let batch1 = count_input(2_000, 50);
    let batch2 = count_input(1_500, 50);
    cp.daemon.start();
    cp.produce(&batch1);
    let first = cp.output(batch1.len(), OUTPUT_TIMEOUT);
    check_counts(&first, &expected_counts(&batch1)).unwrap();
    let taken = cp.daemon.savepoint(None, false);
    assert_eq!(taken.len(), 1);
    let old = &taken[0];

    // the savepoint holds batch 1's counts, readable per key
    let counts1 = expected_counts(&batch1);
    let (user, n) = counts1.iter().next().unwrap();
    let out = flumen(&[
        "savepoint",
        "inspect",
        &old.display().to_string(),
        "--key",
        user,
        "--output",
        "json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["keys"], serde_json::json!(counts1.len()), "{v}");
    assert_eq!(v["verified"], serde_json::json!(true));
    assert_eq!(v["key"]["state"][0]["value"], serde_json::json!(n), "{v}");
    let listed = flumen(&[
        "savepoint",
        "list",
        "--config",
        &cp.daemon.config.display().to_string(),
    ]);
    assert!(String::from_utf8_lossy(&listed.stdout).contains(&old.display().to_string()));

    cp.produce(&batch2);
    let both = merged(&batch1, &batch2);
    let before = cp.output(both.len(), OUTPUT_TIMEOUT);
    check_counts(&before, &expected_counts(&both)).unwrap();
    assert!(cp.daemon.terminate(STOP_TIMEOUT).success());

    restart_from(&mut cp, old);
    let after = cp.output(both.len() + batch2.len(), OUTPUT_TIMEOUT);
    assert!(cp.daemon.terminate(STOP_TIMEOUT).success());
    let as_pairs = |reads: &[common::Read]| {
        let mut m: HashMap<(String, String), u32> = HashMap::new();
        for r in reads {
            *m.entry((
                r.key.clone().unwrap_or_default(),
                r.value.clone().unwrap_or_default(),
            ))
            .or_default() += 1;
        }
        m
    };
    // the replayed tail equals the original outputs of batch 2, record for record
    let original_tail = as_pairs(
        &before[..]
            .iter()
            .filter(|r| {
                !first
                    .iter()
                    .any(|f| f.partition == r.partition && f.offset == r.offset)
            })
            .cloned()
            .collect::<Vec<_>>(),
    );
    let replayed: Vec<common::Read> = after
        .iter()
        .filter(|r| {
            !before
                .iter()
                .any(|b| b.partition == r.partition && b.offset == r.offset)
        })
        .cloned()
        .collect();
    assert_eq!(replayed.len(), batch2.len(), "{}", cp.daemon.all_logs());
    assert_eq!(as_pairs(&replayed), original_tail);

    // the checkpoints behind it, listed and verified
    let config = cp.daemon.config.display().to_string();
    let v = common::checkpoint_list(&config, &[]);
    assert!(!v.as_array().unwrap().is_empty(), "{v}");
    let text = common::checkpoint_inspect(&config, &cp.name, &[], &[]);
    assert!(text.contains("checksums   ok"), "{text}");
}

/// A savepoint of a 4-partition source restored after the topic grew to 8: the repartition
/// topic grows with it, each key's count moves to the partition its key hashes to now, and
/// the counts continue exactly.
#[test]
fn a_savepoint_of_four_partitions_restores_into_eight() {
    let Some(mut cp) = CountPipeline::new("sp-grow", 4, "rocksdb", "500ms") else {
        return;
    };
    let batch1 = count_input(3_000, 200);
    cp.daemon.start();
    cp.produce(&batch1);
    cp.output(batch1.len(), OUTPUT_TIMEOUT);
    let target = cp.dir().join("sp");
    let sp = stop_with_savepoint(&mut cp, &target);
    common::grow_topic(&cp.bootstrap, &cp.source, 8);
    common::grow_topic(&cp.bootstrap, &cp.sink, 8);
    restart_from(&mut cp, &sp);
    let batch2 = count_input(3_000, 200);
    cp.produce(&batch2);
    cp.assert_exact(&expected_counts(&merged(&batch1, &batch2)), OUTPUT_TIMEOUT);
    assert!(cp.daemon.terminate(STOP_TIMEOUT).success());
    let repartition = format!("flumen-{}-count-repartition", cp.name);
    assert_eq!(common::end_offsets(&cp.bootstrap, &repartition).len(), 8);
    assert!(
        cp.daemon.all_logs().contains("from_partitions=4"),
        "{}",
        cp.daemon.all_logs()
    );
}

/// A savepoint with a flipped byte, or a missing file, is refused with exit 3 naming the
/// file, before anything reaches Kafka; an operator the config lost needs
/// --allow-non-restored-state.
#[test]
fn corrupt_or_unfitting_savepoints_are_refused() {
    let Some(mut cp) = CountPipeline::new("sp-bad", 2, "memory", "500ms") else {
        return;
    };
    let batch1 = count_input(500, 20);
    cp.daemon.start();
    cp.produce(&batch1);
    cp.output(batch1.len(), OUTPUT_TIMEOUT);
    let target = cp.dir().join("sp");
    let sp = stop_with_savepoint(&mut cp, &target);
    let sink_end = common::end_offsets(&cp.bootstrap, &cp.sink);

    let copy = |name: &str| {
        let to = cp.dir().join(name);
        let status = std::process::Command::new("cp")
            .arg("-r")
            .arg(&sp)
            .arg(&to)
            .status()
            .unwrap();
        assert!(status.success());
        to
    };
    let flipped = copy("flipped");
    let state_file = flipped.join("state/count/0.kv");
    let mut bytes = std::fs::read(&state_file).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x40;
    std::fs::write(&state_file, bytes).unwrap();
    let missing = copy("missing");
    std::fs::remove_file(missing.join("state/count/1.kv")).unwrap();

    for (dir, file) in [
        (&flipped, "state/count/0.kv"),
        (&missing, "state/count/1.kv"),
    ] {
        cp.daemon.args = vec!["--from-savepoint".into(), dir.display().to_string()];
        cp.daemon.start();
        cp.daemon.args.clear();
        let status = cp.daemon.wait(STOP_TIMEOUT).expect("refused at once");
        assert_eq!(status.code(), Some(3), "{}", cp.daemon.last_log());
        assert!(
            cp.daemon.last_log().contains(file),
            "{}",
            cp.daemon.last_log()
        );
        assert!(
            !cp.daemon.last_log().contains("pipeline started"),
            "{}",
            cp.daemon.last_log()
        );
    }
    assert_eq!(common::end_offsets(&cp.bootstrap, &cp.sink), sink_end);

    // the count operator gets another id: its state has no home
    cp.rewrite_config("memory", "500ms", |t| {
        t.replace(
            r#"{ type = "count" }"#,
            r#"{ type = "count", id = "tally" }"#,
        )
    });
    restart_from(&mut cp, &sp);
    let status = cp.daemon.wait(STOP_TIMEOUT).expect("refused at once");
    assert_eq!(status.code(), Some(3), "{}", cp.daemon.last_log());
    assert!(
        cp.daemon.last_log().contains("--allow-non-restored-state"),
        "{}",
        cp.daemon.last_log()
    );
    cp.daemon.args = vec![
        "--from-savepoint".into(),
        sp.display().to_string(),
        "--allow-non-restored-state".into(),
    ];
    cp.daemon.start();
    cp.daemon.args.clear();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !cp.daemon.last_log().contains("restored from savepoint") {
        assert!(
            std::time::Instant::now() < deadline && cp.daemon.is_running(),
            "{}",
            cp.daemon.all_logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let status = cp.daemon.terminate(STOP_TIMEOUT);
    assert!(status.success(), "{status}\n{}", cp.daemon.all_logs());
}

/// A pipeline that counts by the source's own key (no `key_by`, no repartition topic) cannot
/// move its state to a grown topic: a key's records still in its old partition would miss
/// it. The restore is refused with exit 3 and the reason, before anything is written.
#[test]
fn a_savepoint_of_a_keyed_source_is_not_moved_to_more_partitions() {
    let Some(mut cp) = CountPipeline::new("sp-keyed", 2, "memory", "500ms") else {
        return;
    };
    cp.rewrite_config("memory", "500ms", |t| {
        t.replace(r#"{ type = "key_by", field = "user" },"#, "")
    });
    let batch = count_input(300, 20);
    cp.daemon.start();
    cp.produce(&batch);
    cp.output(batch.len(), OUTPUT_TIMEOUT);
    let target = cp.dir().join("sp");
    let sp = stop_with_savepoint(&mut cp, &target);
    common::grow_topic(&cp.bootstrap, &cp.source, 4);
    let sink_end = common::end_offsets(&cp.bootstrap, &cp.sink);
    restart_from(&mut cp, &sp);
    let status = cp.daemon.wait(STOP_TIMEOUT).expect("refused at once");
    assert_eq!(status.code(), Some(3), "{}", cp.daemon.last_log());
    assert!(
        cp.daemon
            .last_log()
            .contains("is read as it is (not repartitioned)"),
        "{}",
        cp.daemon.last_log()
    );
    assert_eq!(common::end_offsets(&cp.bootstrap, &cp.sink), sink_end);
}

/// A service manager keeps `--from-savepoint S` on its command line: after a SIGKILL the same
/// start continues from the latest checkpoint instead of rolling back to S (which would
/// produce every output since S again), and so does a crash right after the restore's own
/// commit (which would produce S's in-flight records again). `--restore-again` is the way
/// back to S.
#[test]
fn the_same_from_savepoint_after_a_crash_continues_instead_of_restoring_again() {
    let Some(mut cp) = CountPipeline::new("sp-again", 4, "rocksdb", "500ms") else {
        return;
    };
    let sp_root = cp.dir().join("savepoints");
    let batch1 = count_input(3_000, 100);
    cp.daemon.start();
    cp.produce(&batch1);
    std::thread::sleep(Duration::from_millis(1500));
    let sp1 = stop_with_savepoint(&mut cp, &sp_root.join("one"));

    // every start from now on carries the same arguments
    cp.daemon.args = vec!["--from-savepoint".into(), sp1.display().to_string()];
    cp.daemon.start();
    let batch2 = count_input(2_000, 100);
    cp.produce(&batch2);
    let so_far = merged(&batch1, &batch2);
    cp.assert_exact(&expected_counts(&so_far), OUTPUT_TIMEOUT);
    cp.daemon.kill9();
    cp.daemon.start();
    let batch3 = count_input(2_000, 100);
    cp.produce(&batch3);
    let so_far = merged(&so_far, &batch3);
    cp.assert_exact(&expected_counts(&so_far), OUTPUT_TIMEOUT);
    assert!(
        cp.daemon
            .last_log()
            .contains("continuing from its latest checkpoint instead of restoring it again"),
        "{}",
        cp.daemon.all_logs()
    );

    // a second savepoint while records flow (some in flight in the repartition topic); its
    // restore crashes right after its commit, and the same arguments start again
    let batch4 = count_input(3_000, 100);
    cp.produce(&batch4);
    std::thread::sleep(Duration::from_millis(300));
    cp.daemon.args.clear();
    let sp2 = stop_with_savepoint(&mut cp, &sp_root.join("two"));
    cp.daemon.args = vec!["--from-savepoint".into(), sp2.display().to_string()];
    cp.daemon
        .start_with(&[("FAILPOINTS", "restore::after_commit=return")]);
    let status = cp.daemon.wait(STOP_TIMEOUT);
    let logs = cp.daemon.all_logs();
    let status = status.unwrap_or_else(|| panic!("no crash after the restore's commit\n{logs}"));
    assert!(
        !status.success() && cp.daemon.last_log().contains("restore::after_commit"),
        "{status}\n{logs}"
    );
    cp.daemon.start();
    let batch5 = count_input(1_000, 100);
    cp.produce(&batch5);
    let all = merged(&merged(&so_far, &batch4), &batch5);
    cp.assert_exact(&expected_counts(&all), OUTPUT_TIMEOUT);
    assert!(cp.daemon.terminate(STOP_TIMEOUT).success());
}
