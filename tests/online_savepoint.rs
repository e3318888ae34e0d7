//! A savepoint taken while the pipeline keeps running on several instances (#15): one cut of
//! every partition through barriers in the repartition topic (`pipeline/task/cut.rs`),
//! requested through the pipeline's control topic; and a stop of every instance with a
//! savepoint (`savepoint create --stop`). Real broker, real object store.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::{
    CountPipeline, Daemon, Read, count_input, created, env, expected_counts, on_store, since, tool,
};

fn logs_say(d: &Daemon, what: &str) -> usize {
    d.all_logs().lines().filter(|l| l.contains(what)).count()
}

/// Two instances (a and b, with c ready) counting on the test store, and `savepoint create
/// <extra>` run while more input flows.
struct Saved {
    cp: CountPipeline,
    others: Vec<Daemon>,
    _dirs: Vec<tempfile::TempDir>,
    _saves: tempfile::TempDir,
    cfg: String,
    /// Every record produced, once `producer` is joined.
    input: Vec<(Option<i32>, String, String)>,
    producer: std::thread::JoinHandle<()>,
    savepoint: String,
}

fn saved_under_input(prefix: &str, extra: &[&str]) -> Option<Saved> {
    let (mut cp, _, config) = on_store(prefix, 4)?;
    let (dirs, mut others) = common::more_daemons(&config, 2);
    let cfg = cp.daemon.config.display().to_string();
    let saves = tempfile::tempdir().expect("tempdir");
    let mut input = common::two_counting(&mut cp, &mut others[0]);
    let batch = count_input(6_000, 80);
    let producer = cp.produce_slowly(&batch, 50, Duration::from_millis(40));
    input.extend(batch);
    std::thread::sleep(Duration::from_millis(1_000));
    let into = saves.path().join("sp").display().to_string();
    let args = [
        "savepoint",
        "create",
        "--config",
        &cfg,
        "--pipeline",
        &cp.name,
    ];
    let out = tool("a", &[&args[..], extra, &["--dir", &into]].concat());
    eprintln!("{}", String::from_utf8_lossy(&out.stdout));
    let savepoint = created(&out);
    Some(Saved {
        cp,
        others,
        _dirs: dirs,
        _saves: saves,
        cfg,
        input,
        producer,
        savepoint,
    })
}

/// Two instances count under live input. `savepoint create` cuts while both run, and they go
/// on untouched (their counts stay exact). Then both stop, the pipeline is reset to the
/// savepoint and restored into three instances with more input: every key's count is exact
/// again, so the cut held each source record exactly once (in the state, in flight, or after
/// the source offsets).
#[test]
fn a_savepoint_taken_while_two_instances_run_is_one_consistent_cut() {
    let Some(Saved {
        mut cp,
        mut others,
        cfg,
        mut input,
        producer,
        savepoint: sp,
        _dirs: _keep_dirs,
        _saves: _keep_saves,
    }) = saved_under_input("s3cut", &[])
    else {
        return;
    };
    producer.join().unwrap();
    cp.assert_exact(&expected_counts(&input), Duration::from_secs(120));
    for (d, id) in [(&mut cp.daemon, "a"), (&mut others[0], "b")] {
        assert!(d.is_running(), "instance {id}\n{}", d.all_logs());
        assert_eq!(
            logs_say(d, "savepoint cut released"),
            1,
            "instance {id} paused its sources and went on once\n{}",
            d.all_logs()
        );
    }

    // stopped, reset to the cut, and restored into three instances
    for d in [&mut cp.daemon, &mut others[0]] {
        let status = d.terminate(Duration::from_secs(60));
        assert!(status.success(), "{status:?}\n{}", d.all_logs());
    }
    let before = cp.output(0, Duration::from_secs(5));
    common::offsets_reset(&cfg, &cp.name, &["--to-savepoint", &sp]);
    let batch = count_input(2_000, 80);
    cp.produce(&batch);
    input.extend(batch);
    cp.daemon.start_with(&env("a"));
    for (d, id) in others.iter_mut().zip(["b", "c"]) {
        d.start_with(&env(id));
    }
    // from the savepoint on, each user's counts go up by one per record and end at the
    // user's exact count: a record the cut lost ends one short, one it held twice one over
    let expected = expected_counts(&input);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let after = since(&before, &cp.output(0, Duration::from_secs(3)));
        match continues_to(&after, &expected) {
            Ok(()) => break,
            Err(e) if Instant::now() > deadline => panic!("{e}\n{}", cp.daemon.all_logs()),
            Err(_) => std::thread::sleep(Duration::from_secs(1)),
        }
    }
    for d in &mut others {
        assert!(d.is_running(), "{}", d.all_logs());
    }
}

/// Whether each user's counts in `output` rise by one and end at `expected`.
fn continues_to(output: &[Read], expected: &HashMap<String, u64>) -> Result<(), String> {
    let mut counts: HashMap<String, Vec<u64>> = HashMap::new();
    for r in output {
        let v: serde_json::Value = serde_json::from_str(r.value.as_deref().unwrap_or("null"))
            .map_err(|e| e.to_string())?;
        let user = v["user"].as_str().ok_or("output without user")?.to_string();
        let count = v["count"].as_u64().ok_or("output without count")?;
        counts.entry(user).or_default().push(count);
    }
    for (user, n) in expected {
        let got = counts.get(user).map(Vec::as_slice).unwrap_or_default();
        let rising = got.windows(2).all(|w| w[1] == w[0] + 1);
        if !rising || got.last() != Some(n) {
            return Err(format!(
                "user {user}: counts since the restore {:?}..{:?} ({} values, rising: {rising}), want the last {n}",
                got.first(),
                got.last(),
                got.len()
            ));
        }
    }
    Ok(())
}

/// `savepoint create --stop` on two instances under live input: both take a final checkpoint
/// and exit 0, the savepoint is written from their commits, and restored into three instances
/// the counts go on with every output of the whole run exactly once (nothing was output after
/// the savepoint, so the restore repeats nothing).
#[test]
fn stop_with_savepoint_of_two_instances_restores_into_three_exactly_once() {
    let Some(Saved {
        mut cp,
        mut others,
        cfg,
        input,
        producer,
        savepoint: sp,
        _dirs: _keep_dirs,
        _saves: _keep_saves,
    }) = saved_under_input("s3stop", &["--stop"])
    else {
        return;
    };
    for (d, id) in [(&mut cp.daemon, "a"), (&mut others[0], "b")] {
        let status = d.wait(Duration::from_secs(5));
        assert!(
            status.is_some_and(|s| s.success()),
            "instance {id} did not exit 0 by itself: {status:?}\n{}",
            d.all_logs()
        );
    }
    producer.join().unwrap();

    common::offsets_reset(&cfg, &cp.name, &["--to-savepoint", &sp]);
    cp.daemon.start_with(&env("a"));
    for (d, id) in others.iter_mut().zip(["b", "c"]) {
        d.start_with(&env(id));
    }
    cp.assert_exact(&expected_counts(&input), Duration::from_secs(120));
    for d in &mut others {
        assert!(d.is_running(), "{}", d.all_logs());
    }
}
