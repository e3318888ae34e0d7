//! Checkpoints in a real S3-compatible object store (#15; S3Proxy started by `scripts/s3.sh`):
//! instances that share nothing but Kafka and the store restore each other's partitions, a
//! checkpoint uploads only what changed, a restart on the same disk downloads nothing, one on
//! a wiped disk restores from the store, and garbage collection keeps what restores need.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::{
    Daemon, S3, S3_CREDENTIALS, count_input, created, env, expected_counts, on_store, tool,
};

/// Lines of `log` saying a snapshot of `writer` was downloaded from the object store.
fn downloads_from(log: &str, writer: &str) -> usize {
    log.lines()
        .filter(|l| l.contains("snapshot downloaded") && l.contains(&format!("writer={writer}")))
        .count()
}

/// Lines of `log` saying `writer`'s transactional id was fenced as a departed writer.
fn fenced(log: &str, writer: &str) -> usize {
    log.lines()
        .filter(|l| l.contains("writer that left the group") && l.contains(writer))
        .count()
}

/// Deletes a daemon's local state and checkpoint copies (a pod rescheduled without its volume).
fn wipe(dir: &std::path::Path) {
    for sub in ["state", "checkpoints"] {
        let path = dir.join(sub);
        match std::fs::remove_dir_all(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => panic!("{}: {e}", path.display()),
        }
    }
}

#[test]
fn instances_without_a_shared_disk_restore_each_others_partitions_from_the_store() {
    let Some((mut cp, _, config)) = on_store("s3inst", 4) else {
        return;
    };
    let b_dir = tempfile::tempdir().unwrap();
    let mut b = Daemon::new(b_dir.path(), &config);
    let (writer_a, writer_b) = (
        format!("flumen-{}-a", cp.name),
        format!("flumen-{}-b", cp.name),
    );

    cp.daemon.start_with(&env("a"));
    let mut input = count_input(2_000, 60);
    cp.produce(&input);
    cp.assert_exact(&expected_counts(&input), Duration::from_secs(90));

    // b joins on its own disk: its share comes from a's checkpoints in the store
    b.start_with(&env("b"));
    b.wait_assigned();
    let batch = count_input(2_000, 60);
    cp.produce(&batch);
    input.extend(batch);
    cp.assert_exact(&expected_counts(&input), Duration::from_secs(120));
    let took = downloads_from(&b.all_logs(), &writer_a);
    assert!(took > 0, "b downloaded nothing of a's\n{}", b.all_logs());
    // a is a member of the group: nobody fences it
    assert_eq!(fenced(&b.all_logs(), &writer_a), 0, "{}", b.all_logs());

    // a dies and loses its disk: b takes every partition over from the store
    cp.daemon.kill9();
    wipe(cp.dir());
    let batch = count_input(2_000, 60);
    cp.produce(&batch);
    input.extend(batch);
    cp.assert_exact(&expected_counts(&input), Duration::from_secs(120));
    assert!(
        downloads_from(&b.all_logs(), &writer_a) > took,
        "b did not take a's partitions over\n{}",
        b.all_logs()
    );
    // a left the group with a transaction perhaps open: b fenced it before taking over
    assert!(fenced(&b.all_logs(), &writer_a) > 0, "{}", b.all_logs());

    // a comes back on an empty disk: its share comes back from b's checkpoints
    cp.daemon.start_with(&env("a"));
    cp.daemon.wait_assigned();
    let batch = count_input(2_000, 60);
    cp.produce(&batch);
    input.extend(batch);
    cp.assert_exact(&expected_counts(&input), Duration::from_secs(120));
    let a_logs = cp.daemon.all_logs();
    assert!(
        downloads_from(&a_logs, &writer_b) > 0,
        "a downloaded nothing of b's\n{a_logs}"
    );
    assert!(b.is_running(), "{}", b.all_logs());
}

/// One writer's checkpoints in the store: manifests by id, and files (key → size and when
/// it was written).
struct Stored {
    manifests: BTreeMap<u64, serde_json::Value>,
    files: BTreeMap<String, (u64, i64)>,
}

fn stored(s3: &S3, pipeline: &str, writer: &str) -> Stored {
    let root = format!("{pipeline}/{pipeline}/writers/{writer}/");
    let mut stored = Stored {
        manifests: BTreeMap::new(),
        files: BTreeMap::new(),
    };
    for (key, size, written) in s3.objects(&root) {
        let rest = &key[root.len()..];
        if let Some(id) = rest
            .strip_prefix("chk-")
            .and_then(|r| r.strip_suffix(".json"))
        {
            let manifest = serde_json::from_slice(&s3.get(&key)).expect("manifest json");
            stored.manifests.insert(id.parse().expect("id"), manifest);
        } else if let Some(file) = rest.strip_prefix("files/") {
            stored.files.insert(file.to_string(), (size, written));
        }
    }
    stored
}

/// The files (keys under `files/`) and their total length that `manifest` references.
fn referenced(manifest: &serde_json::Value) -> (BTreeSet<String>, u64) {
    let mut keys = BTreeSet::new();
    let mut bytes = 0;
    for task in manifest["tasks"].as_array().expect("tasks") {
        for f in task["files"].as_array().expect("files") {
            let (name, len, crc) = (
                f["name"].as_str().expect("name"),
                f["len"].as_u64().expect("len"),
                f["crc32c"].as_u64().expect("crc"),
            );
            keys.insert(format!(
                "{}/{name}.{len}.{crc:08x}",
                task["dir"].as_str().expect("dir")
            ));
            bytes += len;
        }
    }
    (keys, bytes)
}

#[test]
fn a_checkpoint_uploads_what_changed_and_a_local_recovery_downloads_nothing() {
    let Some((mut cp, s3, _)) = on_store("s3inc", 1) else {
        return;
    };
    let writer = format!("flumen-{}-a", cp.name);
    cp.daemon.start_with(&env("a"));
    let mut input = count_input(40_000, 30_000);
    cp.produce(&input);
    cp.assert_exact(&expected_counts(&input), Duration::from_secs(120));

    // 1% of the keys change; the checkpoints after it upload only the new SST (and RocksDB's
    // small MANIFEST). A compaction in between rewrites everything: then change again.
    let mut measured = None;
    for _ in 0..3 {
        std::thread::sleep(Duration::from_secs(2));
        let before = stored(&s3, &cp.name, &writer);
        let batch = count_input(300, 300);
        cp.produce(&batch);
        input.extend(batch);
        cp.assert_exact(&expected_counts(&input), Duration::from_secs(60));
        std::thread::sleep(Duration::from_secs(2));
        let after = stored(&s3, &cp.name, &writer);
        let (Some((_, old)), Some((_, new))) = (
            before.manifests.last_key_value(),
            after.manifests.last_key_value(),
        ) else {
            panic!("no manifest in the store\n{}", cp.daemon.all_logs());
        };
        let ((old_files, _), (new_files, state_bytes)) = (referenced(old), referenced(new));
        let ssts = |f: &BTreeSet<String>| -> BTreeSet<String> {
            f.iter().filter(|k| k.contains(".sst.")).cloned().collect()
        };
        if !ssts(&old_files).is_subset(&ssts(&new_files)) {
            eprintln!("a compaction rewrote the state; changing keys again");
            continue;
        }
        // new objects, and old ones written again (a checkpoint that uploads a file it had
        // uploaded before)
        let uploaded: u64 = after
            .files
            .iter()
            .filter(|(k, (_, written))| before.files.get(*k).is_none_or(|(_, w)| w != written))
            .map(|(_, (size, _))| size)
            .sum();
        measured = Some((uploaded, state_bytes));
        break;
    }
    let (uploaded, state_bytes) = measured.expect("three compactions in a row");
    eprintln!("state {state_bytes} bytes, uploaded after 1% of keys changed: {uploaded} bytes");
    assert!(
        uploaded > 0 && uploaded * 10 < state_bytes,
        "uploaded {uploaded} bytes for a state of {state_bytes}\n{}",
        cp.daemon.all_logs()
    );

    // a restart on the same disk restores from local files: nothing downloaded
    cp.daemon.kill9();
    cp.daemon.start_with(&env("a"));
    let batch = count_input(500, 300);
    cp.produce(&batch);
    input.extend(batch);
    cp.assert_exact(&expected_counts(&input), Duration::from_secs(90));
    let log = cp.daemon.last_log();
    assert!(log.contains("state restored"), "{log}");
    assert_eq!(downloads_from(&log, &writer), 0, "{log}");

    // on a wiped disk the same checkpoint comes from the store
    cp.daemon.kill9();
    wipe(cp.dir());
    cp.daemon.start_with(&env("a"));
    let batch = count_input(500, 300);
    cp.produce(&batch);
    input.extend(batch);
    cp.assert_exact(&expected_counts(&input), Duration::from_secs(90));
    let log = cp.daemon.last_log();
    assert_eq!(downloads_from(&log, &writer), 1, "{log}");

    // stopped: at most `retain` (3) checkpoints are left, every file they reference is there
    // (the oldest restores as well as the newest), and no file is left that none references
    let status = cp.daemon.terminate(Duration::from_secs(30));
    assert!(status.success(), "{status:?}\n{}", cp.daemon.all_logs());
    let left = stored(&s3, &cp.name, &writer);
    assert!(
        (1..=3).contains(&left.manifests.len()),
        "{:?}",
        left.manifests.keys()
    );
    let mut needed = BTreeSet::new();
    for (id, m) in &left.manifests {
        let (files, _) = referenced(m);
        for f in &files {
            assert!(left.files.contains_key(f), "checkpoint {id} lacks {f}");
        }
        needed.extend(files);
    }
    let garbage: Vec<&String> = left.files.keys().filter(|f| !needed.contains(*f)).collect();
    assert!(
        garbage.is_empty(),
        "files no checkpoint references: {garbage:?}"
    );

    // the CLI lists and inspects the checkpoints in the store (not the local copies: wiped)
    wipe(cp.dir());
    let config = cp.daemon.config.display().to_string();
    let mut env = vec![("FLUMEN_INSTANCE", "a")];
    env.extend(S3_CREDENTIALS);
    let rows = common::checkpoint_list(&config, &env);
    let listed: Vec<u64> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["checkpoint"].as_u64().unwrap())
        .collect();
    let stored_ids: Vec<u64> = left.manifests.keys().copied().collect();
    assert_eq!(listed, stored_ids, "{rows}");
    let oldest = stored_ids[0].to_string();
    let text = common::checkpoint_inspect(&config, &cp.name, &["--id", &oldest], &env);
    assert!(
        text.contains("files       ok") && text.contains("s3://"),
        "{text}"
    );
}

/// Three instances that share only Kafka and the object store, under live input; twenty times
/// a random one is killed with SIGKILL and restarted after a random pause, every third time on
/// a wiped disk (live state and local checkpoint copies gone): per-key counts exact.
#[test]
fn three_instances_on_their_own_disks_survive_twenty_random_kills() {
    let Some((mut cp, _, config)) = on_store("s3kill", 6) else {
        return;
    };
    let (_dirs, mut others) = common::more_daemons(&config, 2);
    let ids = ["a", "b", "c"];
    cp.daemon.start_with(&env(ids[0]));
    for (d, id) in others.iter_mut().zip(&ids[1..]) {
        d.start_with(&env(id));
    }
    let input = count_input(12_000, 200);
    let producer = cp.produce_slowly(&input, 400, Duration::from_millis(100));
    {
        let [b, c] = others.as_mut_slice() else {
            unreachable!("two other instances")
        };
        let env = |id: &str| {
            let mut vars = vec![("FLUMEN_INSTANCE", id.to_string())];
            vars.extend(S3_CREDENTIALS.map(|(k, v)| (k, v.to_string())));
            vars
        };
        common::kill_instances_randomly(&mut [&mut cp.daemon, b, c], &ids, 20, env, wipe);
    }
    producer.join().unwrap();
    cp.assert_exact(&expected_counts(&input), Duration::from_secs(180));
    for d in &mut others {
        assert!(d.is_running(), "{}", d.all_logs());
    }
    assert!(cp.daemon.is_running(), "{}", cp.daemon.all_logs());
}

/// A pipeline running on two instances is stopped and saved (`savepoint create`, one cut of
/// every partition from the checkpoints its commits name, whoever wrote them), restored into
/// one instance, saved again and restored into three: the counts go on exactly.
#[test]
fn a_savepoint_of_two_instances_restores_into_one_and_into_three() {
    let Some((mut cp, _, config)) = on_store("s3sp", 4) else {
        return;
    };
    let (_dirs, mut others) = common::more_daemons(&config, 2);
    let (cfg, name) = (cp.daemon.config.display().to_string(), cp.name.clone());
    let saves = tempfile::tempdir().unwrap();
    let create = |into: &str| {
        let args = ["savepoint", "create", "--config", &cfg, "--pipeline", &name];
        tool("a", &[&args[..], &["--dir", into]].concat())
    };
    let stop = |d: &mut Daemon| {
        let status = d.terminate(Duration::from_secs(60));
        assert!(status.success(), "{status:?}\n{}", d.all_logs());
    };

    // two instances, input while both run
    let mut input = common::two_counting(&mut cp, &mut others[0]);
    // killed while a batch is under way: the checkpoints the commits name leave repartition
    // records that no stateful task has counted, which the savepoint must carry
    let batch = count_input(4_000, 80);
    let producer = cp.produce_slowly(&batch, 100, Duration::from_millis(40));
    input.extend(batch);
    std::thread::sleep(Duration::from_millis(1_200));
    cp.daemon.kill9();
    others[0].kill9();
    producer.join().unwrap();
    let into = saves.path().join("two").display().to_string();
    let taken = create(&into);
    eprintln!("{}", String::from_utf8_lossy(&taken.stdout));
    let sp = created(&taken);

    // into one instance: what came while it was stopped is counted on top of the savepoint
    let reset = |sp: &str| common::offsets_reset(&cfg, &name, &["--to-savepoint", sp]);
    reset(&sp);
    let batch = count_input(1_000, 80);
    cp.produce(&batch);
    input.extend(batch);
    cp.daemon.start_with(&env("a"));
    cp.assert_exact(&expected_counts(&input), Duration::from_secs(120));
    stop(&mut cp.daemon);

    // saved again from one instance, restored into three
    let into = saves.path().join("one").display().to_string();
    let sp = created(&create(&into));
    reset(&sp);
    cp.daemon.start_with(&env("a"));
    for (d, id) in others.iter_mut().zip(["b", "c"]) {
        d.start_with(&env(id));
    }
    let batch = count_input(1_000, 80);
    cp.produce(&batch);
    input.extend(batch);
    cp.assert_exact(&expected_counts(&input), Duration::from_secs(120));
    for d in &mut others {
        assert!(d.is_running(), "{}", d.all_logs());
    }
}

/// `offsets reset --to-earliest --drop-state` on a pipeline whose checkpoints are in the object
/// store: the checkpoint it writes (empty state at the repartition topic's end) is uploaded and
/// named by the commit, so a restart on a wiped disk restores it from the store and counts
/// every record again from 1, exactly once.
#[test]
fn a_reset_that_drops_state_writes_its_checkpoint_into_the_store() {
    let Some((mut cp, _, _)) = on_store("s3drop", 2) else {
        return;
    };
    let cfg = cp.daemon.config.display().to_string();
    cp.daemon.start_with(&env("a"));
    let input = count_input(1_000, 40);
    cp.produce(&input);
    let expected = expected_counts(&input);
    cp.assert_exact(&expected, Duration::from_secs(120));
    let status = cp.daemon.terminate(Duration::from_secs(60));
    assert!(status.success(), "{status:?}\n{}", cp.daemon.all_logs());
    let before = cp.output(0, Duration::from_secs(5));
    common::offsets_reset(&cfg, &cp.name, &["--to-earliest", "--drop-state"]);
    wipe(cp.dir());
    cp.daemon.start_with(&env("a"));
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let again = common::since(&before, &cp.output(0, Duration::from_secs(3)));
        match common::check_counts(&again, &expected) {
            Ok(()) => break,
            Err(e) if std::time::Instant::now() > deadline => {
                panic!("{e}\n{}", cp.daemon.all_logs())
            }
            Err(_) => std::thread::sleep(Duration::from_secs(1)),
        }
    }
}
