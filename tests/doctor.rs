//! `flumen doctor` against the real broker: a healthy pipeline, a grown source topic, and a
//! transaction left open under the pipeline's transactional id, ended by --abort-hanging.

#![allow(clippy::unwrap_used)] // tests panic on failure, by design

mod common;

use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

use common::{CountPipeline, count_input, flumen};

fn doctor(cp: &CountPipeline, extra: &[&str]) -> (Option<i32>, serde_json::Value) {
    let config = cp.daemon.config.display().to_string();
    let mut args = vec!["doctor", "--config", config.as_str(), "--output", "json"];
    args.extend_from_slice(extra);
    let out = flumen(&args);
    let v = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    (out.status.code(), v)
}

fn level(v: &serde_json::Value, check: &str) -> String {
    v.as_array()
        .unwrap()
        .iter()
        .find(|f| f["check"] == check)
        .map(|f| f["level"].as_str().unwrap().to_string())
        .unwrap_or_else(|| panic!("no {check} finding in {v}"))
}

#[test]
fn doctor_finds_grown_partitions_and_ends_a_hanging_transaction() {
    let Some(mut cp) = CountPipeline::new("doctor", 2, "memory", "300ms") else {
        return;
    };
    let input = count_input(200, 10);
    cp.daemon.start();
    cp.produce(&input);
    cp.output(200, Duration::from_secs(60));
    assert!(cp.daemon.terminate(Duration::from_secs(30)).success());

    let (code, v) = doctor(&cp, &[]);
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(level(&v, "transaction timeout"), "ok", "{v}");
    assert_eq!(level(&v, "partition counts"), "ok", "{v}");

    // a transaction left open under the pipeline's id blocks read_committed readers of the sink
    let txn_id = format!("flumen-{}-0", cp.name);
    let zombie: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", &cp.bootstrap)
        .set("transactional.id", &txn_id)
        .set("transaction.timeout.ms", "600000")
        .create()
        .unwrap();
    zombie.init_transactions(Duration::from_secs(30)).unwrap();
    zombie.begin_transaction().unwrap();
    zombie
        .send(
            BaseRecord::to(&cp.sink)
                .key("z")
                .payload("open")
                .partition(0),
        )
        .unwrap();
    zombie.flush(Duration::from_secs(10)).unwrap();
    std::mem::forget(zombie); // gone without ending its transaction, as a crashed process
    common::produce_all(
        &cp.bootstrap,
        &cp.sink,
        &[(Some(0), "after".into(), "{}".into())],
    );
    let blocked = cp.output(201, Duration::from_secs(3));
    assert_eq!(
        blocked.len(),
        200,
        "the open transaction should hold read_committed back"
    );

    // refused while the stopped daemon's static member lingers (its session timeout)
    let deadline = std::time::Instant::now() + Duration::from_secs(40);
    let (code, v) = loop {
        let (code, v) = doctor(&cp, &["--abort-hanging"]);
        if !v.to_string().contains("live member") || std::time::Instant::now() > deadline {
            break (code, v);
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(code, Some(0), "{v}");
    let freed = cp.output(201, Duration::from_secs(30));
    assert_eq!(
        freed.len(),
        201,
        "after --abort-hanging the later record is readable"
    );
    assert!(freed.iter().all(|r| r.value.as_deref() != Some("open")));

    // the source grew: the newest checkpoint no longer fits
    common::grow_topic(&cp.bootstrap, &cp.source, 4);
    let (code, v) = doctor(&cp, &[]);
    assert_eq!(code, Some(1), "{v}");
    assert_eq!(level(&v, "partition counts"), "problem", "{v}");
}
