//! `dedupe` by a field within a TTL, against a reference computed here: through SIGKILLs each
//! id goes out exactly once, and after the TTL an id passes again.

#![allow(clippy::unwrap_used)] // tests panic on failure, by design

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use rand::Rng;
use rand::seq::SliceRandom;

fn ids_in(output: &[common::Read]) -> BTreeMap<u64, usize> {
    let mut seen = BTreeMap::new();
    for r in output {
        let v: serde_json::Value = serde_json::from_str(r.value.as_deref().unwrap()).unwrap();
        assert_eq!(
            r.key.as_deref(),
            Some(v["id"].to_string().as_str()),
            "keyed by the id"
        );
        *seen.entry(v["id"].as_u64().unwrap()).or_default() += 1;
    }
    seen
}

#[test]
fn dedupe_by_field_passes_each_id_once_through_kills_and_again_after_its_ttl() {
    let Some(bootstrap) = common::bootstrap() else {
        return;
    };
    let name = common::rand_name("dedupe");
    let (source, sink) = (format!("{name}-in"), format!("{name}-out"));
    common::create_topic(&bootstrap, &source, 4);
    common::create_topic(&bootstrap, &sink, 4);
    let config = common::engine_header(&bootstrap, "rocksdb")
        + &format!(
            r#"
[[pipelines]]
name = "{name}"
source = {{ topic = "{source}", format = "json" }}
sink = {{ topic = "{sink}", format = "json" }}
operators = [{{ type = "dedupe", field = "id", ttl = "15s" }}]
"#
        );
    // 5 chunks of 400 ids, each id 1 to 3 times within its chunk, randomly keyed (so the
    // dedupe goes through the repartition topic)
    let mut rng = rand::rng();
    let mut chunks = Vec::new();
    for c in 0..5u64 {
        let mut chunk = Vec::new();
        for id in c * 400..(c + 1) * 400 {
            for copy in 0..rng.random_range(1..=3) {
                chunk.push((
                    None,
                    format!("k{}", rng.random_range(0..1_000_000)),
                    format!(r#"{{"id":{id},"copy":{copy}}}"#),
                ));
            }
        }
        chunk.shuffle(&mut rng);
        chunks.push(chunk);
    }
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = common::Daemon::new(dir.path(), &config);
    daemon.start();
    for (i, chunk) in chunks.iter().enumerate() {
        common::produce_all(&bootstrap, &source, chunk);
        std::thread::sleep(Duration::from_millis(rng.random_range(500..1_200)));
        if i % 2 == 0 {
            daemon.kill9();
            daemon.start();
        }
    }
    let output = common::read_all(
        &bootstrap,
        &sink,
        "read_committed",
        2_000,
        Duration::from_secs(90),
    );
    let seen = ids_in(&output);
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).take(5).collect();
    assert!(
        twice.is_empty(),
        "ids out more than once: {twice:?}\n{}",
        daemon.all_logs()
    );
    assert_eq!(seen.len(), 2_000, "{}", daemon.all_logs());

    // past the TTL the ids are forgotten: 100 of them pass once more (twice sent each)
    std::thread::sleep(Duration::from_secs(17));
    let again: Vec<_> = (0..100u64)
        .flat_map(|id| {
            [0, 1].map(|copy| {
                (
                    None,
                    format!("again{id}"),
                    format!(r#"{{"id":{id},"copy":{copy}}}"#),
                )
            })
        })
        .collect();
    common::produce_all(&bootstrap, &source, &again);
    let output = common::read_all(
        &bootstrap,
        &sink,
        "read_committed",
        2_100,
        Duration::from_secs(60),
    );
    let seen = ids_in(&output);
    assert_eq!(output.len(), 2_100, "{}", daemon.all_logs());
    assert!((0..100).all(|id| seen[&id] == 2), "{seen:?}");
    assert!(
        daemon.all_logs().contains("expired keys forgotten"),
        "no expiry ran\n{}",
        daemon.all_logs()
    );
    assert!(
        daemon.terminate(Duration::from_secs(30)).success(),
        "{}",
        daemon.all_logs()
    );
}
