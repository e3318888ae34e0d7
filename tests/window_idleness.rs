//! Idleness is what Kafka shows (CHAOS.md, defect 12): a source partition that speaks every
//! few seconds must not be taken for idle because its stateful task spent that time in slow
//! checkpoints, or its loop stalled, or the watermark jumps past its records and drops them as
//! late; once it is read to its end and quiet, it is idle, and its last windows close. The
//! same for a stream join's other stream, whose idleness releases the join's buffers.

#![allow(clippy::unwrap_used)] // tests panic on failure, by design

mod common;

use std::time::{Duration, Instant};

use rdkafka::producer::{BaseRecord, Producer};

/// Source partition 0 gets one record every 2.5 s, with event times of its own; partition 1 a
/// record every 100 ms, an hour ahead. Every checkpoint takes 2 s (a failpoint), the idle
/// timeout is 3 s: when the stateful task judged idleness by how long it had not heard from an
/// input, partition 0 was last heard up to 2.5 s before a checkpoint began, the first read
/// after it found partition 0 silent for over 3 s, the watermark jumped an hour ahead, and
/// partition 0's next record was late. Then both stop, partition 0 first: read to its end and
/// quiet, its source task declares it idle (in a checkpoint taken for nothing else) and its
/// last windows close: every record counted once.
#[test]
fn slow_checkpoints_do_not_make_a_sparse_partition_idle() {
    sparse_beside_dense("checkpoint::slow=sleep(2000)");
}

/// The same input; now the loop stalls for 8 s every 50 turns, six times (two or three of them
/// while the input runs), between a poll and the next check for a due idle marker. When the source task counted its partition's quiet on the
/// clock, with the latest statistics it held (taken before the stall, so "read to its end"),
/// partition 0 had been quiet for 8 s: idle, although its records had come meanwhile, and the
/// first of them was late. Quiet is now counted to when the statistics were taken.
#[test]
fn a_stalled_loop_does_not_make_a_sparse_partition_idle() {
    let stalls = ["50*off->1*sleep(8000)"; 6].join("->");
    sparse_beside_dense(&format!("pipeline::loop={stalls}->off"));
}

/// Runs [`feed`]'s input through a windowed count with `failpoints`: no record late, every one
/// of partition 0's counted once it goes idle at the end.
fn sparse_beside_dense(failpoints: &str) {
    let Some(bootstrap) = common::bootstrap() else {
        return;
    };
    let name = common::rand_name("idleness");
    let [source, sink, late] = common::create_topics(&bootstrap, &name, ["in", "out", "late"], 2);
    let dir = tempfile::tempdir().unwrap();
    let text = common::engine_header(&bootstrap, "rocksdb")
        + &format!(
            r#"
[[pipelines]]
name = "{name}"
source = {{ topic = "{source}", format = "json", event_time = {{ field = "ts", max_out_of_orderness = "0s", idle_timeout = "3s" }} }}
sink = {{ topic = "{sink}", format = "json" }}
operators = [
  {{ type = "key_by", field = "user" }},
  {{ type = "count", window = {{ type = "tumbling", size = "1s", late_topic = "{late}" }} }},
]
"#
        );
    let mut daemon = common::Daemon::new(dir.path(), &text);
    daemon.start_with(&[("FAILPOINTS", failpoints)]);
    daemon.wait_assigned();

    // about 30 s of both partitions, partition 1 half a second longer, then nothing:
    // partition 0, read to its end and quiet, is declared idle in a checkpoint taken for that
    // alone, just before partition 1 is, and its last windows close
    feed(&bootstrap, &source);
    let sparse = SPARSE_RECORDS;
    let deadline = Instant::now() + Duration::from_secs(120);
    let counted = loop {
        let output = common::read_all(
            &bootstrap,
            &sink,
            "read_committed",
            0,
            Duration::from_secs(3),
        );
        let counted: u64 = output
            .iter()
            .filter_map(|r| serde_json::from_str::<serde_json::Value>(r.value.as_deref()?).ok())
            .filter(|v| v["user"] == "sparse")
            .filter_map(|v| v["count"].as_u64())
            .sum();
        if counted >= sparse || Instant::now() > deadline {
            break counted;
        }
        std::thread::sleep(Duration::from_secs(1));
    };
    let late_read = common::read_all(
        &bootstrap,
        &late,
        "read_committed",
        0,
        Duration::from_secs(3),
    );
    let status = daemon.terminate(Duration::from_secs(60));
    assert!(status.success(), "{status}\n{}", daemon.all_logs());
    assert!(
        late_read.is_empty(),
        "{} of partition 0's {sparse} records dropped as late\n{}",
        late_read.len(),
        daemon.all_logs()
    );
    assert_eq!(counted, sparse, "{}", daemon.all_logs());
}

/// Records partition 0 gets, one every 2.5 s.
const SPARSE_RECORDS: u64 = 12;

/// Partition 1 a record every 100 ms, an hour ahead in event time; partition 0 one in 25 of
/// them, [`SPARSE_RECORDS`] in all; partition 1 stops half a second after partition 0's last.
fn feed(bootstrap: &str, source: &str) {
    let producer = common::producer(bootstrap);
    let base = 1_700_000_000_000i64;
    let (mut sparse, mut n) = (0u64, 0i64);
    while sparse < SPARSE_RECORDS || n % 25 != 5 {
        let (partition, user, ts) = if n % 25 == 0 && sparse < SPARSE_RECORDS {
            sparse += 1;
            (0, "sparse", base + i64::try_from(sparse).unwrap() * 1_000)
        } else {
            (1, "dense", base + 3_600_000 + n * 100)
        };
        n += 1;
        let value = format!(r#"{{"user":"{user}","ts":{ts},"id":{n}}}"#);
        let key = format!("k{n}");
        producer
            .send(
                BaseRecord::to(source)
                    .partition(partition)
                    .key(&key)
                    .payload(&value),
            )
            .map_err(|(e, _)| e)
            .unwrap();
        std::thread::sleep(Duration::from_millis(100));
    }
    producer.flush(Duration::from_secs(30)).unwrap();
}

/// A stream join (orders re-keyed by user, payments keyed by user, within 1 s, idle timeout
/// 3 s): twelve orders of one user wait in the join's buffer, ten seconds of event time
/// apart, and a payment for each comes every 2.5 s, while other orders an hour ahead in event
/// time stream past. The loop stalls for 8 s now and then. When the other stream's idleness
/// was its silence on the clock, a stall made the payments idle, the next checkpoint released
/// the buffered orders against the orders' watermark an hour ahead, and the payments after it
/// found no partner. Every order must pair with its payment, once.
#[test]
fn a_stalled_loop_does_not_make_a_join_s_other_stream_idle() {
    let Some(bootstrap) = common::bootstrap() else {
        return;
    };
    let name = common::rand_name("join-idleness");
    let [orders, payments, sink] =
        common::create_topics(&bootstrap, &name, ["orders", "payments", "out"], 1);
    let dir = tempfile::tempdir().unwrap();
    let text = common::engine_header(&bootstrap, "rocksdb")
        + &format!(
            r#"
[[pipelines]]
name = "{name}"
source = {{ topic = "{orders}", format = "json", event_time = {{ field = "ts", max_out_of_orderness = "0s", idle_timeout = "3s" }} }}
sink = {{ topic = "{sink}", format = "json" }}
operators = [
  {{ type = "key_by", field = "user" }},
  {{ type = "join", stream = "{payments}", within = "1s", into = "payment" }},
]
"#
        );
    let base = 1_700_000_000_000i64;
    let pairs = 12i64;
    let order = |k: i64| {
        let v = format!(r#"{{"order":{k},"user":"u","ts":{}}}"#, base + k * 10_000);
        (Some(0), format!("o{k}"), v)
    };
    let payment = |k: i64| {
        let v = format!(
            r#"{{"payment":{k},"user":"u","ts":{}}}"#,
            base + k * 10_000 + 100
        );
        (Some(0), "u".to_string(), v)
    };
    common::produce_all(
        &bootstrap,
        &orders,
        &(0..pairs).map(order).collect::<Vec<_>>(),
    );
    common::produce_all(&bootstrap, &payments, &[payment(0)]);
    let mut daemon = common::Daemon::new(dir.path(), &text);
    let stalls = ["50*off->1*sleep(8000)"; 6].join("->");
    let failpoints = format!("pipeline::loop={stalls}->off");
    daemon.start_with(&[("FAILPOINTS", failpoints.as_str())]);
    daemon.wait_assigned();
    // orders of another user every 100 ms, an hour ahead; a payment every 2.5 s
    let producer = common::producer(&bootstrap);
    for n in 0..(pairs - 1) * 25 {
        let (topic, (_, key, value)) = if n % 25 == 24 {
            (&payments, payment(n / 25 + 1))
        } else {
            let v = format!(
                r#"{{"order":-1,"user":"d","ts":{}}}"#,
                base + 3_600_000 + n * 100
            );
            (&orders, (None, format!("d{n}"), v))
        };
        producer
            .send(BaseRecord::to(topic).partition(0).key(&key).payload(&value))
            .map_err(|(e, _)| e)
            .unwrap();
        std::thread::sleep(Duration::from_millis(100));
    }
    producer.flush(Duration::from_secs(30)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let got = loop {
        let output = common::read_all(
            &bootstrap,
            &sink,
            "read_committed",
            0,
            Duration::from_secs(3),
        );
        let got: Vec<(i64, i64)> = output
            .iter()
            .filter_map(|r| serde_json::from_str::<serde_json::Value>(r.value.as_deref()?).ok())
            .map(|v| {
                (
                    v["order"].as_i64().unwrap(),
                    v["payment"]["payment"].as_i64().unwrap(),
                )
            })
            .collect();
        if got.len() >= usize::try_from(pairs).unwrap() || Instant::now() > deadline {
            break got;
        }
        std::thread::sleep(Duration::from_secs(1));
    };
    let status = daemon.terminate(Duration::from_secs(60));
    assert!(status.success(), "{status}\n{}", daemon.all_logs());
    let expected: Vec<(i64, i64)> = (0..pairs).map(|k| (k, k)).collect();
    let mut sorted = got.clone();
    sorted.sort_unstable();
    assert_eq!(
        sorted,
        expected,
        "pairs out: {got:?}\n{}",
        daemon.all_logs()
    );
}
