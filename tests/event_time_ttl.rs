//! TTLs in event time (`time = "event"`): a dedupe and a count with state TTL, whose "now" is
//! each record's event time, hours of it produced in seconds. Against a reference computed here
//! from the same input, through SIGKILLs: each record passes, or counts, exactly as the reference
//! says, once; and the expired keys are forgotten as the watermark passes them.

#![allow(clippy::unwrap_used)] // tests panic on failure, by design

mod common;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use rand::Rng;

const TTL_MS: i64 = 10 * 60_000;
const KEYS: usize = 150;

/// (key, event time, sequence number) in event-time order: per key, records 1 to 29 minutes
/// apart, so that some repeats fall within the TTL and some after it.
fn input() -> Vec<(String, i64, u64)> {
    let mut rng = rand::rng();
    let mut all = Vec::new();
    for k in 0..KEYS {
        let mut ts = 1_600_000_000_000 + rng.random_range(0..600_000);
        for seq in 0..rng.random_range(5..15u64) {
            all.push((format!("id{k}"), ts, seq));
            ts += [
                60_000, 300_000, 540_000, 599_999, 600_000, 660_000, 1_740_000,
            ][rng.random_range(0..7)];
        }
    }
    // event-time order overall, so each partition is in order and nothing is late
    all.sort_by_key(|(k, ts, _)| (*ts, k.clone()));
    all
}

/// The dedupe's reference: (key, seq) of the records that pass.
fn dedupe_reference(input: &[(String, i64, u64)]) -> Vec<(String, u64)> {
    let mut expiry: HashMap<&str, i64> = HashMap::new();
    let mut out = Vec::new();
    for (k, ts, seq) in input {
        let e = expiry.entry(k).or_insert(i64::MIN);
        if *e <= *ts {
            *e = ts + TTL_MS;
            out.push((k.clone(), *seq));
        }
    }
    out
}

/// The TTL count's reference: per key, the counts in order (a key idle for the TTL in event
/// time starts over at 1).
fn count_reference(input: &[(String, i64, u64)]) -> BTreeMap<String, Vec<u64>> {
    let mut state: HashMap<&str, (i64, u64)> = HashMap::new();
    let mut out: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for (k, ts, _) in input {
        let (expiry, n) = state.entry(k).or_insert((i64::MIN, 0));
        *n = if *expiry <= *ts { 1 } else { *n + 1 };
        *expiry = (*expiry).max(ts + TTL_MS);
        out.entry(k.clone()).or_default().push(*n);
    }
    out
}

#[test]
fn dedupe_and_state_ttl_in_event_time_match_the_reference_through_kills() {
    let Some(bootstrap) = common::bootstrap() else {
        return;
    };
    let name = common::rand_name("etttl");
    let source = format!("{name}-in");
    let (dedupe_out, count_out) = (format!("{name}-dedupe"), format!("{name}-count"));
    for t in [&source, &dedupe_out, &count_out] {
        common::create_topic(&bootstrap, t, 4);
    }
    let event_time = r#"{ field = "ts", format = "unix_ms", max_out_of_orderness = "0s" }"#;
    let config = common::engine_header(&bootstrap, "rocksdb")
        + &format!(
            r#"
[[pipelines]]
name = "{name}-dedupe"
source = {{ topic = "{source}", format = "json", event_time = {event_time} }}
sink = {{ topic = "{dedupe_out}", format = "json" }}
operators = [{{ type = "dedupe", ttl = "10m", time = "event" }}]

[[pipelines]]
name = "{name}-count"
source = {{ topic = "{source}", format = "json", event_time = {event_time} }}
sink = {{ topic = "{count_out}", format = "json" }}
operators = [{{ type = "count", ttl = "10m", time = "event" }}]
"#
        );
    let input = input();
    let records: Vec<(Option<i32>, String, String)> = input
        .iter()
        .map(|(k, ts, seq)| {
            (
                None,
                k.clone(),
                format!(r#"{{"id":"{k}","ts":{ts},"seq":{seq}}}"#),
            )
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = common::Daemon::new(dir.path(), &config);
    let feeder = {
        let (bootstrap, source) = (bootstrap.clone(), source.clone());
        let records = records.clone();
        std::thread::spawn(move || {
            for chunk in records.chunks(records.len().div_ceil(10)) {
                common::produce_all(&bootstrap, &source, chunk);
                std::thread::sleep(Duration::from_millis(700));
            }
        })
    };
    daemon.start();
    daemon.kill_randomly(5, 1_000..2_500);
    feeder.join().unwrap();

    let want = dedupe_reference(&input);
    let out = common::read_all(
        &bootstrap,
        &dedupe_out,
        "read_committed",
        want.len(),
        Duration::from_secs(120),
    );
    let mut got: Vec<(String, u64)> = out
        .iter()
        .map(|r| {
            let v: serde_json::Value = serde_json::from_str(r.value.as_deref().unwrap()).unwrap();
            (
                v["id"].as_str().unwrap().to_string(),
                v["seq"].as_u64().unwrap(),
            )
        })
        .collect();
    let mut want_sorted = want.clone();
    got.sort();
    want_sorted.sort();
    assert_eq!(
        got,
        want_sorted,
        "dedupe output differs from the reference ({} of {} input records pass)\n{}",
        want.len(),
        input.len(),
        daemon.all_logs()
    );
    assert!(
        want.len() > KEYS && want.len() < input.len(),
        "the input has repeats within and after the TTL"
    );

    let want = count_reference(&input);
    let out = common::read_all(
        &bootstrap,
        &count_out,
        "read_committed",
        input.len(),
        Duration::from_secs(120),
    );
    let mut got: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for r in &out {
        let v: serde_json::Value = serde_json::from_str(r.value.as_deref().unwrap()).unwrap();
        got.entry(v["key"].as_str().unwrap().to_string())
            .or_default()
            .push(v["count"].as_u64().unwrap());
    }
    assert_eq!(got, want, "{}", daemon.all_logs());
    assert!(
        want.values().flatten().filter(|&&n| n == 1).count() > KEYS,
        "some keys started over"
    );
    // the watermark passed most expiries: the state forgot them, not only ignored them
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
