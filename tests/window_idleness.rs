//! Idleness is its source task's word (CHAOS.md, defect 12): a source partition that speaks
//! every few seconds must not be taken for idle because its stateful task spent that time in
//! slow checkpoints, or the watermark jumps past its records and drops them as late; once it
//! is read to its end and quiet, it is idle, and its last windows close.

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
    let Some(bootstrap) = common::bootstrap() else {
        return;
    };
    let name = common::rand_name("idleness");
    let (source, sink, late) = (
        format!("{name}-in"),
        format!("{name}-out"),
        format!("{name}-late"),
    );
    for t in [&source, &sink, &late] {
        common::create_topic(&bootstrap, t, 2);
    }
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
    daemon.start_with(&[("FAILPOINTS", "checkpoint::slow=sleep(2000)")]);
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
