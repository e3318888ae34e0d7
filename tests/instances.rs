//! Several instances of one pipeline (#15): the same config, each instance's id from the
//! environment, one checkpoint directory they share, each its own live state. Partitions move
//! between them through the consumer group; whoever gets a partition restores it from the
//! checkpoint the group's commit names, whichever instance wrote it.

mod common;

use std::time::Duration;

use common::{CountPipeline, Daemon, count_input, expected_counts};

/// The keyed count's config for several instances (`common::for_instances`) with checkpoints in
/// `checkpoints` (shared) rather than under the daemon's own directory.
fn shared_config(cp: &CountPipeline, checkpoints: &std::path::Path) -> String {
    let text = common::count_config_of(cp);
    common::for_instances(&text.replace(
        "dir = \"{DIR}/checkpoints\"",
        &format!("dir = \"{}\"", checkpoints.display()),
    ))
}

/// Makes the pipeline's own daemon an instance of `shared_config` with checkpoints in its
/// `shared-checkpoints/`; returns that directory and the config for the other instances.
fn share(cp: &CountPipeline) -> (std::path::PathBuf, String) {
    let shared = cp.dir().join("shared-checkpoints");
    let config = shared_config(cp, &shared);
    std::fs::write(
        &cp.daemon.config,
        config.replace("{DIR}", &cp.dir().display().to_string()),
    )
    .expect("write config");
    (shared, config)
}

/// Lines of `log` saying a partition's state was restored from another writer's checkpoint.
fn restored_from(log: &str, writer: &str) -> usize {
    log.lines()
        .filter(|l| l.contains("state restored") && l.contains(&format!("writer={writer}")))
        .count()
}

#[test]
fn instances_share_a_pipeline_and_take_over_each_others_partitions() {
    let Some(mut cp) = CountPipeline::new("inst", 4, "rocksdb", "300ms") else {
        return;
    };
    // instance a is the pipeline's own daemon; b has its own directory (state, logs)
    let (shared, config) = share(&cp);
    let b_dir = tempfile::tempdir().unwrap();
    let mut b = Daemon::new(b_dir.path(), &config);
    let (writer_a, writer_b) = (
        format!("flumen-{}-a", cp.name),
        format!("flumen-{}-b", cp.name),
    );

    // a alone
    cp.daemon.start_with(&[("FLUMEN_INSTANCE", "a")]);
    let mut input = count_input(2_000, 60);
    cp.produce(&input);
    cp.assert_exact(&expected_counts(&input), Duration::from_secs(90));

    // b joins: a's partitions are shared, b restores its share from a's checkpoints
    b.start_with(&[("FLUMEN_INSTANCE", "b")]);
    b.wait_assigned();
    let batch = count_input(2_000, 60);
    cp.produce(&batch);
    input.extend(batch);
    cp.assert_exact(&expected_counts(&input), Duration::from_secs(120));
    let took = restored_from(&b.all_logs(), &writer_a);
    assert!(
        took > 0,
        "b restored nothing from a's checkpoints\n{}",
        b.all_logs()
    );

    // a dies for good: b takes every partition, restoring a's from a's checkpoints
    cp.daemon.kill9();
    let batch = count_input(2_000, 60);
    cp.produce(&batch);
    input.extend(batch);
    cp.assert_exact(&expected_counts(&input), Duration::from_secs(120));
    assert!(
        restored_from(&b.all_logs(), &writer_a) > took,
        "b did not take a's partitions over\n{}",
        b.all_logs()
    );

    // a comes back (its live state is stale): its partitions come back restored from b's
    cp.daemon.start_with(&[("FLUMEN_INSTANCE", "a")]);
    cp.daemon.wait_assigned();
    let batch = count_input(2_000, 60);
    cp.produce(&batch);
    input.extend(batch);
    cp.assert_exact(&expected_counts(&input), Duration::from_secs(120));
    let a_logs = cp.daemon.all_logs();
    assert!(
        restored_from(&a_logs, &writer_b) > 0,
        "a restored nothing from b's checkpoints\n{a_logs}"
    );
    assert!(b.is_running(), "{}", b.all_logs());

    // each writer keeps its own checkpoints in the shared directory, which the CLI lists and
    // verifies (run as instance a: its config reads the instance id from the environment)
    for writer in [&writer_a, &writer_b] {
        let dir = shared.join(&cp.name).join("writers").join(writer);
        let checkpoints = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .count();
        assert!(checkpoints > 0, "{} is empty", dir.display());
    }
    let config = cp.daemon.config.display().to_string();
    let rows = common::checkpoint_list(&config, &[("FLUMEN_INSTANCE", "a")]);
    for writer in [&writer_a, &writer_b] {
        assert!(
            rows.as_array()
                .unwrap()
                .iter()
                .any(|r| r["writer"] == **writer),
            "{writer} not listed: {rows}"
        );
    }
    let text = common::checkpoint_inspect(
        &config,
        &cp.name,
        &["--writer", &writer_b],
        &[("FLUMEN_INSTANCE", "a")],
    );
    assert!(
        text.contains("checksums   ok") && text.contains(&writer_b),
        "{text}"
    );
}

/// `parallelism = 3`: three pipeline threads in one process, each a member of the group with
/// its own transactional id and checkpoints, killed with SIGKILL while input flows; then
/// parallelism lowered to 1, whose start fences the removed threads' transactional ids.
#[test]
fn three_threads_in_one_process_survive_kills_and_can_be_removed() {
    let Some(mut cp) = CountPipeline::new("threads", 6, "rocksdb", "300ms") else {
        return;
    };
    let with_threads = |n: u32| {
        move |text: String| {
            text.replace(
                "operators = [",
                &format!("parallelism = {n}\noperators = ["),
            )
        }
    };
    cp.rewrite_config("rocksdb", "300ms", with_threads(3));
    cp.daemon.start();
    let input = count_input(6_000, 120);
    let (first, rest) = input.split_at(3_000);
    cp.produce(first);
    let producer = cp.produce_slowly(rest, 300, Duration::from_millis(150));
    cp.daemon.kill_randomly(4, 700..2_000);
    producer.join().unwrap();
    cp.assert_exact(&expected_counts(&input), Duration::from_secs(120));
    let writers = cp.dir().join("checkpoints").join(&cp.name).join("writers");
    let mut names: Vec<String> = std::fs::read_dir(&writers)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let thread0 = format!("flumen-{}-0", cp.name);
    assert_eq!(
        names,
        [
            thread0.clone(),
            format!("{thread0}-thread-1"),
            format!("{thread0}-thread-2")
        ],
        "{}",
        cp.daemon.all_logs()
    );

    // one thread again: the two removed ones are fenced, their partitions restored by thread 0
    cp.daemon.kill9();
    cp.rewrite_config("rocksdb", "300ms", with_threads(1));
    cp.daemon.start();
    let more = count_input(1_000, 120);
    cp.produce(&more);
    let mut all = input.clone();
    all.extend(more);
    cp.assert_exact(&expected_counts(&all), Duration::from_secs(120));
    let log = cp.daemon.last_log();
    let fenced = log
        .lines()
        .filter(|l| l.contains("fenced the transactional id of a removed thread"))
        .count();
    assert_eq!(fenced, 2, "{log}");
}

/// Three instances under live input; twenty times a random one is killed with SIGKILL and
/// restarted after a random pause, every third time with its local state wiped (a pod
/// rescheduled without its volume): per-key counts exact, nothing lost, nothing twice.
#[test]
fn three_instances_survive_twenty_random_kills() {
    let Some(mut cp) = CountPipeline::new("inst3", 6, "rocksdb", "300ms") else {
        return;
    };
    let (_, config) = share(&cp);
    let (_dirs, mut others) = common::more_daemons(&config, 2);
    let ids = ["a", "b", "c"];
    cp.daemon.start_with(&[("FLUMEN_INSTANCE", ids[0])]);
    for (d, id) in others.iter_mut().zip(&ids[1..]) {
        d.start_with(&[("FLUMEN_INSTANCE", id)]);
    }
    let input = count_input(12_000, 200);
    let producer = cp.produce_slowly(&input, 400, Duration::from_millis(100));
    {
        let [b, c] = others.as_mut_slice() else {
            unreachable!("two other instances")
        };
        let env = |id: &str| vec![("FLUMEN_INSTANCE", id.to_string())];
        let wipe = |dir: &std::path::Path| std::fs::remove_dir_all(dir.join("state")).unwrap();
        common::kill_instances_randomly(&mut [&mut cp.daemon, b, c], &ids, 20, env, wipe);
    }
    producer.join().unwrap();
    cp.assert_exact(&expected_counts(&input), Duration::from_secs(180));
    for d in &mut others {
        assert!(d.is_running(), "{}", d.all_logs());
    }
}
