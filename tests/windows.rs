//! Event-time windows against a reference computed here from the same input: out-of-order
//! records within the bound, late records (to the late topic), tumbling and hopping windows,
//! with and without a repartition topic, and a tumbling-window count through SIGKILLs.

#![allow(clippy::unwrap_used)] // tests panic on failure, by design

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use rand::Rng;

/// (user, window start, window end) → count.
type Windows = BTreeMap<(String, i64, i64), u64>;

struct Spec {
    size: i64,
    advance: i64,
    lateness: i64,
    ooo: i64,
}

/// Starts of the windows holding `ts` (an implementation apart from the engine's).
fn starts(s: &Spec, ts: i64) -> Vec<i64> {
    let mut out = Vec::new();
    let mut start = ts.div_euclid(s.advance) * s.advance;
    while start + s.size > ts {
        out.push(start);
        start -= s.advance;
    }
    out
}

/// Each partition's records in order → (the windows closed by the end with their counts,
/// the ids of the late records). A window closes once its partition's watermark (highest
/// event time − out-of-orderness − 1 ms) reaches its end − 1 ms + lateness.
fn reference(
    s: &Spec,
    partitions: &BTreeMap<i32, Vec<(String, i64, u64)>>,
) -> (Windows, BTreeSet<u64>) {
    let mut closed = Windows::new();
    let mut late = BTreeSet::new();
    for records in partitions.values() {
        let mut open = Windows::new();
        let mut max: Option<i64> = None;
        let is_closed = |end: i64, max: Option<i64>| {
            max.is_some_and(|m| {
                // watermark = max - ooo - 1; closed once it reaches end - 1 + lateness
                #[allow(clippy::int_plus_one)]
                let closed = end - 1 + s.lateness <= m - s.ooo - 1;
                closed
            })
        };
        for (user, ts, id) in records {
            let live: Vec<i64> = starts(s, *ts)
                .into_iter()
                .filter(|st| !is_closed(st + s.size, max))
                .collect();
            if live.is_empty() {
                late.insert(*id);
            }
            for st in live {
                *open.entry((user.clone(), st, st + s.size)).or_default() += 1;
            }
            max = Some(max.map_or(*ts, |m| m.max(*ts)));
        }
        for (k, n) in open {
            if is_closed(k.2, max) {
                closed.insert(k, n);
            }
        }
    }
    (closed, late)
}

/// Panics, naming a few differences and with every daemon log, unless `got` is `expected`.
fn assert_same_windows(got: &Windows, expected: &Windows, daemon: &common::Daemon) {
    if got != expected {
        let missing: Vec<_> = expected
            .iter()
            .filter(|(k, v)| got.get(*k) != Some(v))
            .take(5)
            .collect();
        let extra: Vec<_> = got
            .iter()
            .filter(|(k, v)| expected.get(*k) != Some(v))
            .take(5)
            .collect();
        panic!(
            "{} windows, expected {}; expected but not seen: {missing:?}; seen but not expected: {extra:?}\n{}",
            got.len(),
            expected.len(),
            daemon.all_logs()
        );
    }
}

/// Reads the sink (for up to 2 minutes) until every expected window is out, then panics
/// unless the windows are exactly `expected` and the late topic is empty.
fn assert_exact_windows_and_none_late(
    bootstrap: &str,
    (sink, late): (&str, &str),
    expected: &Windows,
    daemon: &common::Daemon,
) {
    let deadline = Instant::now() + Duration::from_secs(120);
    let got = loop {
        let output = common::read_all(
            bootstrap,
            sink,
            "read_committed",
            expected.len(),
            Duration::from_secs(20),
        );
        let got = windows_in(&output).unwrap_or_else(|e| panic!("{e}\n{}", daemon.all_logs()));
        if got.len() >= expected.len() || Instant::now() > deadline {
            break got;
        }
    };
    assert_same_windows(&got, expected, daemon);
    let late_read = common::read_all(bootstrap, late, "read_committed", 0, Duration::from_secs(3));
    assert!(late_read.is_empty(), "{} late records", late_read.len());
}

/// Windows read from the sink; panics on a window emitted twice.
fn windows_in(output: &[common::Read]) -> Result<Windows, String> {
    let mut out = Windows::new();
    for r in output {
        let v: serde_json::Value =
            serde_json::from_str(r.value.as_deref().unwrap_or("null")).unwrap();
        let user = v["user"]
            .as_str()
            .ok_or(format!("no user in {v}"))?
            .to_string();
        let (start, end) = (
            v["window_start"].as_i64().unwrap(),
            v["window_end"].as_i64().unwrap(),
        );
        let expected_key = format!("{user}@{start}");
        if r.key.as_deref() != Some(expected_key.as_str()) {
            return Err(format!("key {:?}, expected {expected_key}", r.key));
        }
        if out
            .insert((user.clone(), start, end), v["count"].as_u64().unwrap())
            .is_some()
        {
            return Err(format!("window {user} [{start}, {end}) emitted twice"));
        }
    }
    Ok(out)
}

fn config(
    bootstrap: &str,
    name: &str,
    topics: (&str, &str, &str),
    backend: &str,
    source_extra: &str,
    window: &str,
) -> String {
    let (source, sink, late) = topics;
    common::engine_header(bootstrap, backend)
        + &format!(
            r#"
[[pipelines]]
name = "{name}"
source = {{ topic = "{source}", format = "json", {source_extra} event_time = {{ field = "ts", max_out_of_orderness = "2s" }} }}
sink = {{ topic = "{sink}", format = "json" }}
operators = [
  {{ type = "key_by", field = "user" }},
  {{ type = "count", window = {{ {window}, late_topic = "{late}" }} }},
]
"#
        )
}

/// Input per partition: users pinned to partitions, event times mostly rising with jitter
/// below the out-of-orderness bound, some records far behind (late), then one record per
/// partition far in the future so every window of the test's users closes.
fn input(partitions: i32, per_partition: usize) -> BTreeMap<i32, Vec<(String, i64, u64)>> {
    let mut rng = rand::rng();
    let mut out = BTreeMap::new();
    let mut id = 0u64;
    for p in 0..partitions {
        let mut records = Vec::new();
        for i in 0..per_partition {
            let user = format!("u{}", p + partitions * rng.random_range(0..5));
            let base = 1_700_000_000_000 + i as i64 * 37;
            let ts = if rng.random_range(0..100) < 3 {
                base - 30_000 // far behind: late
            } else {
                base - rng.random_range(0..1_500)
            };
            records.push((user, ts, id));
            id += 1;
        }
        records.push((format!("end{p}"), 1_900_000_000_000, id));
        id += 1;
        out.insert(p, records);
    }
    out
}

fn produce(
    bootstrap: &str,
    topic: &str,
    input: &BTreeMap<i32, Vec<(String, i64, u64)>>,
    repartition: bool,
) {
    let records: Vec<(Option<i32>, String, String)> = input
        .iter()
        .flat_map(|(p, rs)| {
            rs.iter().map(move |(user, ts, id)| {
                // with a repartition topic the message key is unrelated to the user
                let key = if repartition {
                    format!("k{id}")
                } else {
                    user.clone()
                };
                (
                    Some(*p),
                    key,
                    format!(r#"{{"user":"{user}","ts":{ts},"id":{id}}}"#),
                )
            })
        })
        .collect();
    common::produce_all(bootstrap, topic, &records);
}

fn run_against_reference(spec: &Spec, window: &str, backend: &str) {
    let Some(bootstrap) = common::bootstrap() else {
        return;
    };
    let name = common::rand_name("window");
    let [source, sink, late] = common::create_topics(&bootstrap, &name, ["in", "out", "late"], 2);
    let data = input(2, 3_000);
    let (expected, expected_late) = reference(spec, &data);
    assert!(
        expected.len() > 50 && expected_late.len() > 50,
        "a weak test input"
    );
    produce(&bootstrap, &source, &data, false);
    let dir = tempfile::tempdir().unwrap();
    let text = config(
        &bootstrap,
        &name,
        (&source, &sink, &late),
        backend,
        r#"key_field = "user","#,
        window,
    );
    let mut daemon = common::Daemon::new(dir.path(), &text);
    daemon.start();
    let output = common::read_all(
        &bootstrap,
        &sink,
        "read_committed",
        expected.len(),
        Duration::from_secs(60),
    );
    let got = windows_in(&output).unwrap_or_else(|e| panic!("{e}\n{}", daemon.all_logs()));
    let late_read = common::read_all(
        &bootstrap,
        &late,
        "read_committed",
        expected_late.len(),
        Duration::from_secs(30),
    );
    let late_ids: BTreeSet<u64> = late_read
        .iter()
        .map(|r| {
            serde_json::from_str::<serde_json::Value>(r.value.as_deref().unwrap()).unwrap()["id"]
                .as_u64()
                .unwrap()
        })
        .collect();
    let status = daemon.terminate(Duration::from_secs(30));
    assert!(status.success(), "{status}\n{}", daemon.all_logs());
    assert_same_windows(&got, &expected, &daemon);
    assert_eq!(
        late_read.len(),
        expected_late.len(),
        "late records written more than once"
    );
    assert_eq!(late_ids, expected_late);
    assert!(
        daemon
            .all_logs()
            .contains(&format!("late={}", expected_late.len())),
        "the late count is not reported\n{}",
        daemon.all_logs()
    );
}

/// Session windows per partition (a reference apart from the engine): each record opens
/// `[ts, ts + gap)`, merging the key's open sessions it overlaps; sessions close as the
/// partition's watermark passes; a record whose merged session is already closed is late.
fn session_reference(
    s: &Spec,
    gap: i64,
    partitions: &BTreeMap<i32, Vec<(String, i64, u64)>>,
) -> (Windows, BTreeSet<u64>) {
    let mut closed = Windows::new();
    let mut late = BTreeSet::new();
    for records in partitions.values() {
        // user → open sessions (start, end, count)
        let mut open: BTreeMap<String, Vec<(i64, i64, u64)>> = BTreeMap::new();
        let mut wm: Option<i64> = None;
        let is_closed = |end: i64, wm: Option<i64>| wm.is_some_and(|w| end - 1 + s.lateness <= w);
        for (user, ts, id) in records {
            let sessions = open.entry(user.clone()).or_default();
            let (mut start, mut end, mut count) = (*ts, ts + gap, 1u64);
            while let Some(i) = sessions.iter().position(|(a, b, _)| *a < end && start < *b) {
                let (a, b, n) = sessions.remove(i);
                start = start.min(a);
                end = end.max(b);
                count += n;
            }
            if is_closed(end, wm) {
                // nothing was absorbed: an open session would have kept the merged one open
                late.insert(*id);
                continue;
            }
            sessions.push((start, end, count));
            let m = wm.map_or(ts - s.ooo - 1, |w| w.max(ts - s.ooo - 1));
            wm = Some(m);
            for (u, list) in open.iter_mut() {
                list.retain(|(a, b, n)| {
                    if is_closed(*b, wm) {
                        closed.insert((u.clone(), *a, *b), *n);
                        false
                    } else {
                        true
                    }
                });
            }
        }
    }
    (closed, late)
}

#[test]
fn session_windows_match_the_reference() {
    let Some(bootstrap) = common::bootstrap() else {
        return;
    };
    let spec = Spec {
        size: 0,
        advance: 0,
        lateness: 200,
        ooo: 2_000,
    };
    let gap = 100;
    let name = common::rand_name("session");
    let [source, sink, late] = common::create_topics(&bootstrap, &name, ["in", "out", "late"], 2);
    let data = input(2, 3_000);
    let (expected, expected_late) = session_reference(&spec, gap, &data);
    assert!(
        expected.len() > 100 && expected.values().any(|n| *n > 1),
        "a weak test input"
    );
    produce(&bootstrap, &source, &data, false);
    let dir = tempfile::tempdir().unwrap();
    let text = config(
        &bootstrap,
        &name,
        (&source, &sink, &late),
        "rocksdb",
        r#"key_field = "user","#,
        r#"type = "session", gap = "100ms", allowed_lateness = "200ms""#,
    );
    let mut daemon = common::Daemon::new(dir.path(), &text);
    daemon.start();
    let output = common::read_all(
        &bootstrap,
        &sink,
        "read_committed",
        expected.len(),
        Duration::from_secs(60),
    );
    let got = windows_in(&output).unwrap_or_else(|e| panic!("{e}\n{}", daemon.all_logs()));
    let late_read = common::read_all(
        &bootstrap,
        &late,
        "read_committed",
        expected_late.len(),
        Duration::from_secs(30),
    );
    let status = daemon.terminate(Duration::from_secs(30));
    assert!(status.success(), "{status}\n{}", daemon.all_logs());
    assert_same_windows(&got, &expected, &daemon);
    assert_eq!(late_read.len(), expected_late.len());
}

#[test]
fn tumbling_windows_match_the_reference_with_out_of_order_and_late_records() {
    let spec = Spec {
        size: 1_000,
        advance: 1_000,
        lateness: 500,
        ooo: 2_000,
    };
    run_against_reference(
        &spec,
        r#"type = "tumbling", size = "1s", allowed_lateness = "500ms""#,
        "memory",
    );
}

#[test]
fn hopping_windows_match_the_reference() {
    let spec = Spec {
        size: 3_000,
        advance: 1_000,
        lateness: 0,
        ooo: 2_000,
    };
    run_against_reference(
        &spec,
        r#"type = "hopping", size = "3s", advance = "1s""#,
        "rocksdb",
    );
}

/// A tumbling-window count through a repartition topic (watermarks carried by records and
/// markers), fed while it is SIGKILLed 5 times: every window exactly once, with the exact count.
#[test]
fn tumbling_count_through_sigkills_emits_every_window_once() {
    let Some(bootstrap) = common::bootstrap() else {
        return;
    };
    let name = common::rand_name("wkill");
    let (source, sink, late) = (
        format!("{name}-in"),
        format!("{name}-out"),
        format!("{name}-late"),
    );
    for t in [&source, &sink, &late] {
        common::create_topic(&bootstrap, t, 4);
    }
    let size = 1_000;
    // Records within the out-of-orderness bound are never late whatever the interleaving of
    // partitions at the repartition topic. In the second half, 2% are 10 s behind ("far"):
    // whether one is late depends on that interleaving, so the check takes the late topic's
    // word for it and requires every far record either there once or counted in its window.
    // A restore that forgot its watermark would count a far record into a window already
    // emitted, and emit that window twice.
    let mut rng = rand::rng();
    let mut data: BTreeMap<i32, Vec<(String, i64, u64)>> = BTreeMap::new();
    let mut far: BTreeMap<u64, (String, i64)> = BTreeMap::new();
    let total = 24_000u64;
    for id in 0..total {
        let p = (id % 4) as i32;
        let user = format!("u{}", rng.random_range(0..40));
        let mut ts = 1_700_000_000_000 + id as i64 - rng.random_range(0..1_000);
        if id >= total / 2 && rng.random_range(0..100) < 2 {
            ts -= 10_000;
            far.insert(id, (user.clone(), ts));
        }
        data.entry(p).or_default().push((user, ts, id));
    }
    let window_of = |ts: i64| {
        let st = ts.div_euclid(size) * size;
        (st, st + size)
    };
    let mut normal = Windows::new();
    for rs in data.values() {
        for (user, ts, id) in rs {
            if !far.contains_key(id) {
                let (st, end) = window_of(*ts);
                *normal.entry((user.clone(), st, end)).or_default() += 1;
            }
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let text = config(
        &bootstrap,
        &name,
        (&source, &sink, &late),
        "rocksdb",
        "",
        r#"type = "tumbling", size = "1s""#,
    );
    let mut daemon = common::Daemon::new(dir.path(), &text);
    let feeder = {
        let (bootstrap, source, data) = (bootstrap.clone(), source.clone(), data.clone());
        std::thread::spawn(move || {
            let chunks = 20;
            let per = data.values().next().map_or(0, Vec::len).div_ceil(chunks);
            for c in 0..chunks {
                let chunk: BTreeMap<i32, Vec<_>> = data
                    .iter()
                    .map(|(p, rs)| (*p, rs.iter().skip(c * per).take(per).cloned().collect()))
                    .collect();
                produce(&bootstrap, &source, &chunk, true);
                std::thread::sleep(Duration::from_millis(750));
            }
            // every partition's watermark far past the last window
            let end: BTreeMap<i32, Vec<_>> = (0..4)
                .map(|p| {
                    (
                        p,
                        vec![(format!("end{p}"), 1_900_000_000_000, total + p as u64)],
                    )
                })
                .collect();
            produce(&bootstrap, &source, &end, true);
        })
    };
    daemon.start();
    daemon.kill_randomly(5, 1_000..3_000);
    feeder.join().unwrap();
    let deadline = Instant::now() + Duration::from_secs(180);
    let (got, expected, late_ids) = loop {
        let late_read = common::read_all(
            &bootstrap,
            &late,
            "read_committed",
            0,
            Duration::from_secs(5),
        );
        let mut late_ids = BTreeSet::new();
        for r in &late_read {
            let v: serde_json::Value = serde_json::from_str(r.value.as_deref().unwrap()).unwrap();
            let id = v["id"].as_u64().unwrap();
            assert!(
                far.contains_key(&id),
                "record {id} went late but was within the bound"
            );
            assert!(
                late_ids.insert(id),
                "record {id} written to the late topic twice"
            );
        }
        let mut expected = normal.clone();
        for (id, (user, ts)) in &far {
            if !late_ids.contains(id) {
                let (st, end) = window_of(*ts);
                *expected.entry((user.clone(), st, end)).or_default() += 1;
            }
        }
        let output = common::read_all(
            &bootstrap,
            &sink,
            "read_committed",
            expected.len(),
            Duration::from_secs(30),
        );
        let got = windows_in(&output).unwrap_or_else(|e| panic!("{e}\n{}", daemon.all_logs()));
        if got == expected || Instant::now() > deadline {
            break (got, expected, late_ids);
        }
        std::thread::sleep(Duration::from_secs(1));
    };
    assert_same_windows(&got, &expected, &daemon);
    eprintln!(
        "{} windows exact; {} of {} far records late",
        got.len(),
        late_ids.len(),
        far.len()
    );
    let status = daemon.terminate(Duration::from_secs(40));
    assert!(status.success(), "{status}\n{}", daemon.all_logs());
}

/// Stop with a savepoint while records flow (some in flight in the repartition topic, with
/// their event time and watermark headers, and watermark markers), restore into the memory
/// backend, do it again, restore back into RocksDB: every window of the input out exactly
/// once with its exact count over the three runs.
#[test]
fn a_windowed_count_stops_with_savepoints_and_restores_across_backends() {
    let Some(bootstrap) = common::bootstrap() else {
        return;
    };
    let name = common::rand_name("wsave");
    let (source, sink, late) = (
        format!("{name}-in"),
        format!("{name}-out"),
        format!("{name}-late"),
    );
    for t in [&source, &sink, &late] {
        common::create_topic(&bootstrap, t, 4);
    }
    let size = 1_000;
    let dir = tempfile::tempdir().unwrap();
    let text = |backend: &str| {
        config(
            &bootstrap,
            &name,
            (&source, &sink, &late),
            backend,
            "",
            r#"type = "tumbling", size = "1s""#,
        )
        .replace("{DIR}", &dir.path().display().to_string())
    };
    let mut daemon = common::Daemon::new(dir.path(), &text("rocksdb"));
    // records flow until both savepoints are taken, whatever the daemon's start-up time, so
    // each savepoint's checkpoint wrote repartition records and markers no task had read yet
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let feeder = {
        let (bootstrap, source, stop) = (bootstrap.clone(), source.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut rng = rand::rng();
            let mut produced: Vec<(String, i64)> = Vec::new();
            let mut id = 0u64;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let mut chunk: BTreeMap<i32, Vec<(String, i64, u64)>> = BTreeMap::new();
                // small chunks, close together: every poll of the daemon finds records, so
                // the checkpoint a savepoint forces always carries some that no task has read
                for _ in 0..50 {
                    let user = format!("u{}", rng.random_range(0..40));
                    // within the 2 s out-of-orderness whatever the interleaving: never late
                    let ts = 1_700_000_000_000 + id as i64 - rng.random_range(0..1_000);
                    chunk
                        .entry((id % 4) as i32)
                        .or_default()
                        .push((user.clone(), ts, id));
                    produced.push((user, ts));
                    id += 1;
                }
                produce(&bootstrap, &source, &chunk, true);
                std::thread::sleep(Duration::from_millis(20));
            }
            let end: BTreeMap<i32, Vec<_>> = (0..4)
                .map(|p| {
                    (
                        p,
                        vec![(format!("end{p}"), 1_900_000_000_000, id + p as u64)],
                    )
                })
                .collect();
            produce(&bootstrap, &source, &end, true);
            produced
        })
    };
    daemon.start();
    let mut pending = 0;
    // two stop-with-savepoint and restore cycles at least, alternating the backend; whether a
    // savepoint's checkpoint carries records no task has read yet depends on when the request
    // meets the daemon's loop (about one in three catch none), so up to six cycles run until
    // one has
    let mut rng = rand::rng();
    let mut i = 0;
    while i < 2 || (pending == 0 && i < 6) {
        let backend = ["memory", "rocksdb"][i % 2];
        // records flow through both hops: this run has committed checkpoints of its own;
        // then a random moment, not in step with the checkpoints
        let began = std::time::Instant::now();
        while daemon.last_log().matches("checkpoint committed").count() < 3 {
            assert!(
                began.elapsed() < Duration::from_secs(60) && daemon.is_running(),
                "no checkpoint committed\n{}",
                daemon.all_logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        std::thread::sleep(Duration::from_millis(rng.random_range(0..400)));
        let taken = daemon.savepoint(Some(&dir.path().join(format!("sp{i}"))), true);
        assert_eq!(taken.len(), 1, "{taken:?}");
        let status = daemon
            .wait(Duration::from_secs(60))
            .unwrap_or_else(|| panic!("still running after stop\n{}", daemon.all_logs()));
        assert!(status.success(), "{}", daemon.all_logs());
        let log = daemon.last_log();
        pending += log
            .lines()
            .filter(|l| l.contains("savepoint taken"))
            .filter_map(|l| {
                l.split("pending=")
                    .nth(1)?
                    .split_whitespace()
                    .next()?
                    .parse::<u64>()
                    .ok()
            })
            .sum::<u64>();
        std::fs::write(&daemon.config, text(backend)).unwrap();
        daemon.args = vec!["--from-savepoint".into(), taken[0].display().to_string()];
        daemon.start();
        daemon.args.clear();
        i += 1;
    }
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let produced = feeder.join().unwrap();
    let mut expected = Windows::new();
    for (user, ts) in produced {
        let st = ts.div_euclid(size) * size;
        *expected.entry((user, st, st + size)).or_default() += 1;
    }
    assert_exact_windows_and_none_late(&bootstrap, (&sink, &late), &expected, &daemon);
    assert!(
        daemon.all_logs().contains("restored from savepoint"),
        "{}",
        daemon.all_logs()
    );
    eprintln!("in-flight records carried by the {i} savepoints: {pending}");
    assert!(
        pending > 0,
        "no savepoint held in-flight records: a weak run\n{}",
        daemon.all_logs()
    );
    assert!(
        daemon.terminate(Duration::from_secs(30)).success(),
        "{}",
        daemon.all_logs()
    );
}

/// A windowed count saved at 4 source partitions (with windows open and records in flight),
/// restored after the topics grew to 8: each key's open windows move to the partition its key
/// hashes to now, the watermarks to every task, and every window of the input comes out once
/// with its exact count.
#[test]
fn a_windowed_count_saved_at_four_partitions_restores_into_eight() {
    let Some(bootstrap) = common::bootstrap() else {
        return;
    };
    let name = common::rand_name("wgrow");
    let (source, sink, late) = (
        format!("{name}-in"),
        format!("{name}-out"),
        format!("{name}-late"),
    );
    for t in [&source, &sink, &late] {
        common::create_topic(&bootstrap, t, 4);
    }
    let size = 1_000;
    let mut rng = rand::rng();
    // (partition, user, ts, id): the first half on 4 partitions, the second on 8
    let total = 12_000u64;
    let mut first: BTreeMap<i32, Vec<(String, i64, u64)>> = BTreeMap::new();
    let mut second: BTreeMap<i32, Vec<(String, i64, u64)>> = BTreeMap::new();
    let mut expected = Windows::new();
    for id in 0..total {
        let user = format!("u{}", rng.random_range(0..60));
        let ts = 1_700_000_000_000 + id as i64 - rng.random_range(0..1_000);
        let st = ts.div_euclid(size) * size;
        *expected.entry((user.clone(), st, st + size)).or_default() += 1;
        if id < total / 2 {
            first
                .entry((id % 4) as i32)
                .or_default()
                .push((user, ts, id));
        } else {
            second
                .entry((id % 8) as i32)
                .or_default()
                .push((user, ts, id));
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let text = config(
        &bootstrap,
        &name,
        (&source, &sink, &late),
        "rocksdb",
        "",
        r#"type = "tumbling", size = "1s""#,
    );
    let mut daemon = common::Daemon::new(dir.path(), &text);
    daemon.start();
    produce(&bootstrap, &source, &first, true);
    // some windows closed and out, many open (the last second of each partition)
    let before = common::read_all(
        &bootstrap,
        &sink,
        "read_committed",
        1,
        Duration::from_secs(60),
    );
    assert!(!before.is_empty(), "{}", daemon.all_logs());
    let taken = daemon.savepoint(Some(&dir.path().join("sp")), true);
    assert_eq!(taken.len(), 1, "{taken:?}");
    let status = daemon
        .wait(Duration::from_secs(60))
        .unwrap_or_else(|| panic!("still running after stop\n{}", daemon.all_logs()));
    assert!(status.success(), "{}", daemon.all_logs());
    for t in [&source, &sink, &late] {
        common::grow_topic(&bootstrap, t, 8);
    }
    daemon.args = vec!["--from-savepoint".into(), taken[0].display().to_string()];
    daemon.start();
    daemon.args.clear();
    produce(&bootstrap, &source, &second, true);
    let end: BTreeMap<i32, Vec<_>> = (0..8)
        .map(|p| {
            (
                p,
                vec![(format!("end{p}"), 1_900_000_000_000, total + p as u64)],
            )
        })
        .collect();
    produce(&bootstrap, &source, &end, true);
    assert_exact_windows_and_none_late(&bootstrap, (&sink, &late), &expected, &daemon);
    assert!(
        daemon.all_logs().contains("from_partitions=4"),
        "{}",
        daemon.all_logs()
    );
    assert!(
        daemon.terminate(Duration::from_secs(30)).success(),
        "{}",
        daemon.all_logs()
    );
}
