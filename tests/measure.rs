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
        let watcher = tail_consumer(&p.bootstrap, &p.sink, 4);
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

fn tail_consumer(bootstrap: &str, topic: &str, partitions: i32) -> BaseConsumer {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", common::rand_name("tail"))
        .set("isolation.level", "read_committed")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::End).unwrap();
    }
    c.assign(&tpl).unwrap();
    // let the assignment settle on the end offsets before the kill
    for _ in 0..10 {
        c.poll(Duration::from_millis(50));
    }
    c
}

/// Seconds since the Unix epoch of a log line's leading RFC 3339 UTC timestamp
/// (`2026-12-02T00:01:28.178726Z`).
fn log_time(line: &str) -> Option<f64> {
    let ts = line.get(..27)?;
    let num = |a: usize, b: usize| ts.get(a..b)?.parse::<i64>().ok();
    let (y, m, d) = (num(0, 4)?, num(5, 7)?, num(8, 10)?);
    let (hh, mm) = (num(11, 13)?, num(14, 16)?);
    let secs: f64 = ts.get(17..26)?.parse().ok()?;
    // days from the civil date (Howard Hinnant's algorithm)
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some((days * 86_400 + hh * 3_600 + mm * 60) as f64 + secs)
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// The `bytes=` of each "checkpoint uploaded" line of `log`.
fn uploads(log: &str) -> Vec<u64> {
    log.lines()
        .filter(|l| l.contains("checkpoint uploaded to the object store"))
        .filter_map(|l| l.split("bytes=").nth(1)?.split(' ').next()?.parse().ok())
        .collect()
}

/// A partition with `MEASURE_STATE_MB` (default 100) of keyed state moves to another instance
/// when its owner is killed: the time from the new owner's assignment, and from the kill, to
/// the first committed output after it; and the bytes each checkpoint uploads. Checkpoints in
/// the object store of `scripts/s3.sh`; a `last` aggregate keeps ~1 KB (incompressible) per key.
#[test]
#[ignore = "measurement; run by hand with --ignored --nocapture (broker and object store running)"]
fn measure_moved_partition_restore_from_the_object_store() {
    use rand::Rng as _;
    let mb: usize = std::env::var("MEASURE_STATE_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let keys = mb * 1_000;
    let Some(mut cp) = common::CountPipeline::new("moved", 1, "rocksdb", "1s") else {
        return;
    };
    let s3 = common::s3();
    let text = common::count_config(
        &cp.bootstrap,
        &cp.name,
        &cp.source,
        &cp.sink,
        "rocksdb",
        "1s",
    )
    .replace(
        "{ type = \"count\" }",
        "{ type = \"last\", field = \"pad\", emit = \"on_checkpoint\" }",
    )
    .replace(
        "[state]\nbackend",
        "[state]\nmemory_budget_mb = 512\nbackend",
    );
    let config = common::for_instances(&s3.checkpoints_in(&text, &cp.name));
    std::fs::write(
        &cp.daemon.config,
        config.replace("{DIR}", &cp.dir().display().to_string()),
    )
    .unwrap();
    let b_dir = tempfile::tempdir().unwrap();
    let mut b = common::Daemon::new(b_dir.path(), &config);
    let env = |i: &'static str| {
        let mut e = vec![("FLUMEN_INSTANCE", i)];
        e.extend(common::S3_CREDENTIALS);
        e
    };
    let pad = |rng: &mut rand::rngs::ThreadRng| -> String {
        (0..1_000)
            .map(|_| char::from(rng.sample(rand::distr::Alphanumeric)))
            .collect()
    };
    let mut rng = rand::rng();
    let filled = Instant::now();
    for chunk in (0..keys).collect::<Vec<_>>().chunks(20_000) {
        let records: Vec<(Option<i32>, String, String)> = chunk
            .iter()
            .map(|i| {
                let v = format!("{{\"user\":\"u{i}\",\"pad\":\"{}\"}}", pad(&mut rng));
                (None, format!("k{i}"), v)
            })
            .collect();
        cp.produce(&records);
    }
    println!(
        "produced {keys} records of ~1 KB in {:.1}s",
        filled.elapsed().as_secs_f64()
    );
    cp.daemon.start_with(&env("a"));
    let started = Instant::now();
    while common::end_offsets(&cp.bootstrap, &cp.sink)
        .iter()
        .sum::<i64>()
        < keys as i64
    {
        assert!(cp.daemon.is_running(), "{}", cp.daemon.last_log());
        assert!(started.elapsed() < Duration::from_secs(1_800), "too slow");
        std::thread::sleep(Duration::from_millis(500));
    }
    std::thread::sleep(Duration::from_secs(3));
    println!(
        "state filled: {keys} keys in {:.1}s; uploads so far (bytes): {:?}",
        started.elapsed().as_secs_f64(),
        uploads(&cp.daemon.last_log())
    );
    // 1% of the keys change: what the next checkpoints upload
    let before = uploads(&cp.daemon.last_log()).len();
    let changed: Vec<(Option<i32>, String, String)> = (0..keys / 100)
        .map(|i| {
            let v = format!("{{\"user\":\"u{i}\",\"pad\":\"{}\"}}", pad(&mut rng));
            (None, format!("k{i}"), v)
        })
        .collect();
    cp.produce(&changed);
    std::thread::sleep(Duration::from_secs(4));
    println!(
        "after 1% of the keys changed, checkpoints uploaded (bytes): {:?}",
        &uploads(&cp.daemon.last_log())[before..]
    );

    b.start_with(&env("b"));
    std::thread::sleep(Duration::from_secs(5));
    let watcher = tail_consumer(&cp.bootstrap, &cp.sink, 1);
    let killed = unix_now();
    cp.daemon.kill9();
    cp.produce(&[(
        None,
        "probe".into(),
        "{\"user\":\"probe\",\"pad\":\"p\"}".into(),
    )]);
    let out = loop {
        if let Some(m) = watcher.poll(Duration::from_millis(20)) {
            m.expect("read");
            break unix_now();
        }
        assert!(unix_now() - killed < 600.0, "no output\n{}", b.last_log());
    };
    let log = b.last_log();
    let assigned = log
        .lines()
        .filter(|l| l.contains("assignment received") && !l.contains("partitions=0"))
        .filter_map(log_time)
        .find(|t| *t >= killed)
        .expect("b's assignment after the kill");
    let downloaded: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("snapshot downloaded"))
        .collect();
    println!("moved partition ({mb} MB of state): {downloaded:?}");
    // b's way from its assignment to the output, for the figures' reading
    for line in log
        .lines()
        .filter(|l| log_time(l).is_some_and(|t| t >= assigned - 0.5))
        .take(40)
    {
        println!("  b: {line}");
    }
    println!(
        "moved partition ({mb} MB of state): assignment → next committed output {:.1}s; kill → output {:.1}s (session timeout 6s)",
        out - assigned,
        out - killed
    );
    assert!(b.terminate(Duration::from_secs(60)).success());
}
