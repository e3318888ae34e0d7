//! A user-defined keyed operator (`examples/custom_operator.rs`) registered in its own binary
//! and used from TOML: its keyed state and timers stay exact through SIGKILLs, every purchase
//! counted once and every user's timer fired once; the plain `flumen` binary refuses the config.

#![allow(clippy::unwrap_used)] // tests panic on failure, by design

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rand::Rng;
use serde_json::Value;

fn example_binary() -> std::path::PathBuf {
    common::example_binary("custom_operator")
}

#[test]
fn a_custom_operator_keeps_state_and_timers_exact_through_kills() {
    let Some(bootstrap) = common::bootstrap() else {
        return;
    };
    let name = common::rand_name("custom");
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
operators = [
  {{ type = "key_by", field = "user" }},
  {{ type = "custom", name = "spend_alert" }},
]
"#
        );
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = common::Daemon::new(dir.path(), &config);
    daemon.program = example_binary();

    // the operator's name is known to its binary only
    let plain = common::flumen(&["validate", "--config", daemon.config.to_str().unwrap()]);
    let said = String::from_utf8_lossy(&plain.stderr);
    assert_eq!(plain.status.code(), Some(2), "{said}");
    assert!(
        said.contains("no operator is registered as \"spend_alert\""),
        "{said}"
    );
    let own = std::process::Command::new(&daemon.program)
        .args(["validate", "--config", daemon.config.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        own.status.success(),
        "{}",
        String::from_utf8_lossy(&own.stderr)
    );

    let mut rng = rand::rng();
    let mut spent: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    let purchases: Vec<(Option<i32>, String, String)> = (0..3_000)
        .map(|i| {
            let user = format!("u{}", rng.random_range(0..30));
            let amount = rng.random_range(1..100);
            spent.entry(user.clone()).or_default().push(amount);
            (
                None,
                format!("k{i}"),
                format!(r#"{{"user":"{user}","amount":{amount}}}"#),
            )
        })
        .collect();
    daemon.start();
    for chunk in purchases.chunks(1_000) {
        common::produce_all(&bootstrap, &source, chunk);
        std::thread::sleep(Duration::from_millis(rng.random_range(400..1_200)));
        daemon.kill9();
        daemon.start();
    }

    let deadline = Instant::now() + Duration::from_secs(90);
    let (running, timers) = loop {
        let output = common::read_all(
            &bootstrap,
            &sink,
            "read_committed",
            purchases.len() + spent.len(),
            Duration::from_secs(30),
        );
        let mut running: BTreeMap<String, Vec<(i64, i64)>> = BTreeMap::new();
        let mut timers: BTreeMap<String, Vec<Value>> = BTreeMap::new();
        for r in &output {
            let v: Value = serde_json::from_str(r.value.as_deref().unwrap()).unwrap();
            let user = v["user"].as_str().unwrap().to_string();
            assert_eq!(r.key.as_deref(), Some(user.as_str()));
            if v.get("first_second").is_some() {
                timers
                    .entry(user)
                    .or_default()
                    .push(v["first_second"].clone());
            } else {
                running.entry(user).or_default().push((
                    v["purchases"].as_i64().unwrap(),
                    v["total"].as_i64().unwrap(),
                ));
            }
        }
        let done = running.values().map(Vec::len).sum::<usize>() >= purchases.len()
            && timers.len() >= spent.len();
        if done || Instant::now() > deadline {
            break (running, timers);
        }
        std::thread::sleep(Duration::from_secs(1));
    };
    for (user, amounts) in &spent {
        let got = &running[user];
        // every purchase once, in the order of its partition: 1, 2, … n purchases
        let counts: Vec<i64> = got.iter().map(|(n, _)| *n).collect();
        assert_eq!(
            counts,
            (1..=amounts.len() as i64).collect::<Vec<_>>(),
            "user {user}\n{}",
            daemon.all_logs()
        );
        assert_eq!(
            got.last().unwrap().1,
            amounts.iter().sum::<i64>(),
            "user {user}"
        );
        // the timer fired once, seeing the state as it was then
        let fired = timers
            .get(user)
            .unwrap_or_else(|| panic!("no timer output for {user}\n{}", daemon.all_logs()));
        assert_eq!(fired.len(), 1, "user {user}: {fired:?}");
        let (n, total) = (
            fired[0]["purchases"].as_i64().unwrap(),
            fired[0]["total"].as_i64().unwrap(),
        );
        assert!(
            got.contains(&(n, total)),
            "user {user}: the timer saw {n} purchases totalling {total}, never a state"
        );
    }
    assert!(
        daemon.terminate(Duration::from_secs(30)).success(),
        "{}",
        daemon.all_logs()
    );
}

/// `first_hour` (in the example binary): an event-time timer an hour after each user's first
/// purchase, in event time that runs hours ahead in seconds. Through SIGKILLs each user's
/// summary goes out once, when the watermark passes the timer, with exactly the purchases of
/// that hour.
#[test]
fn event_time_timers_fire_once_at_the_watermark_through_kills() {
    let Some(bootstrap) = common::bootstrap() else {
        return;
    };
    let name = common::rand_name("custom-et");
    let (source, sink) = (format!("{name}-in"), format!("{name}-out"));
    common::create_topic(&bootstrap, &source, 4);
    common::create_topic(&bootstrap, &sink, 4);
    let config = common::engine_header(&bootstrap, "rocksdb")
        + &format!(
            r#"
[[pipelines]]
name = "{name}"
source = {{ topic = "{source}", format = "json", event_time = {{ field = "ts", max_out_of_orderness = "0s" }} }}
sink = {{ topic = "{sink}", format = "json" }}
operators = [{{ type = "custom", name = "first_hour" }}]
"#
        );
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = common::Daemon::new(dir.path(), &config);
    daemon.program = example_binary();

    // 4,000 purchases of 40 users over 5 hours of event time, one every 4.5 s, keyed by user
    // (so each user's purchases reach the operator in event-time order, and its first hour is
    // the same in every run); then one record per partition 10 hours on, so the watermark
    // passes every timer
    const HOUR: i64 = 3_600_000;
    let t0 = 1_650_000_000_000i64;
    let mut rng = rand::rng();
    let mut reference: BTreeMap<String, (i64, i64, i64)> = BTreeMap::new();
    let mut purchases: Vec<(Option<i32>, String, String)> = Vec::new();
    for i in 0..4_000i64 {
        let ts = t0 + i * 4_500;
        let user = format!("u{}", rng.random_range(0..40));
        let amount = rng.random_range(1..100);
        let (first, total, n) = reference.entry(user.clone()).or_insert((ts, 0, 0));
        if ts < *first + HOUR {
            *total += amount;
            *n += 1;
        }
        purchases.push((
            None,
            user.clone(),
            format!(r#"{{"user":"{user}","amount":{amount},"ts":{ts}}}"#),
        ));
    }
    for p in 0..4 {
        purchases.push((
            Some(p),
            format!("end{p}"),
            format!(r#"{{"user":"end{p}","amount":0,"ts":{}}}"#, t0 + 10 * HOUR),
        ));
    }
    // in small steps of event time (about 7 minutes each), so that checkpoints, and timers,
    // come at many watermarks: a timer that fired before its time would miss purchases
    let feeder = {
        let (bootstrap, source) = (bootstrap.clone(), source.clone());
        std::thread::spawn(move || {
            for chunk in purchases.chunks(100) {
                common::produce_all(&bootstrap, &source, chunk);
                std::thread::sleep(Duration::from_millis(250));
            }
        })
    };
    daemon.start();
    daemon.kill_randomly(4, 1_500..3_000);
    feeder.join().unwrap();

    let deadline = Instant::now() + Duration::from_secs(90);
    let got = loop {
        let output = common::read_all(
            &bootstrap,
            &sink,
            "read_committed",
            reference.len(),
            Duration::from_secs(30),
        );
        let mut got: BTreeMap<String, Vec<(i64, i64, i64)>> = BTreeMap::new();
        for r in &output {
            let v: Value = serde_json::from_str(r.value.as_deref().unwrap()).unwrap();
            let user = v["user"].as_str().unwrap().to_string();
            let h = &v["first_hour"];
            got.entry(user).or_default().push((
                h["from"].as_i64().unwrap(),
                h["total"].as_i64().unwrap(),
                h["purchases"].as_i64().unwrap(),
            ));
        }
        if got.len() >= reference.len() || Instant::now() > deadline {
            break got;
        }
        std::thread::sleep(Duration::from_secs(1));
    };
    let want: BTreeMap<String, Vec<(i64, i64, i64)>> = reference
        .iter()
        .map(|(u, r)| (u.clone(), vec![*r]))
        .collect();
    assert_eq!(got, want, "{}", daemon.all_logs());
    assert!(
        daemon.terminate(Duration::from_secs(30)).success(),
        "{}",
        daemon.all_logs()
    );
}
