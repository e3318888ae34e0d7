//! The Kafka commit names its checkpoint (offset-commit metadata), and a restore takes that
//! one. A checkpoint that moved no offset (here: a custom operator's processing-time timers
//! firing on an idle pipeline) has the same offsets as its predecessor; when it fails after
//! its snapshot was written, the restart must restore the predecessor, whose timers are still
//! due, and not the failed one, whose timers are gone with outputs that never committed.

#![allow(clippy::unwrap_used)] // tests panic on failure, by design

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::Value;

/// Every user's running outputs and timer outputs on the read_committed sink.
fn outputs(
    bootstrap: &str,
    sink: &str,
    want: usize,
) -> (BTreeMap<String, Vec<i64>>, BTreeMap<String, usize>) {
    let mut running: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    let mut timers: BTreeMap<String, usize> = BTreeMap::new();
    for r in common::read_all(
        bootstrap,
        sink,
        "read_committed",
        want,
        Duration::from_secs(10),
    ) {
        let v: Value = serde_json::from_str(r.value.as_deref().unwrap()).unwrap();
        let user = v["user"].as_str().unwrap().to_string();
        if v.get("first_second").is_some() {
            *timers.entry(user).or_default() += 1;
        } else {
            running
                .entry(user)
                .or_default()
                .push(v["purchases"].as_i64().unwrap());
        }
    }
    (running, timers)
}

/// `point` aborts the process in the first checkpoint that moves no offset: the one that
/// fires the timers, after the purchases committed.
fn timer_outputs_survive_a_crash_at(point: &str) {
    let Some(bootstrap) = common::bootstrap() else {
        return;
    };
    let name = common::rand_name("named");
    let (source, sink) = (format!("{name}-in"), format!("{name}-out"));
    // one partition: every purchase is in the first checkpoint, the timers in the next
    common::create_topic(&bootstrap, &source, 1);
    common::create_topic(&bootstrap, &sink, 1);
    let config = common::engine_header(&bootstrap, "rocksdb")
        + &format!(
            r#"
[[pipelines]]
name = "{name}"
source = {{ topic = "{source}", format = "json" }}
sink = {{ topic = "{sink}", format = "json" }}
operators = [{{ type = "custom", name = "spend_alert" }}]
"#
        );
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = common::Daemon::new(dir.path(), &config);
    daemon.program = common::example_binary("custom_operator");

    let users = 20;
    let purchases: Vec<(Option<i32>, String, String)> = (0..60)
        .map(|i| {
            let user = format!("u{}", i % users);
            let json = format!(r#"{{"user":"{user}","amount":{}}}"#, i + 1);
            (None, user, json)
        })
        .collect();
    common::produce_all(&bootstrap, &source, &purchases);

    daemon.start_with(&[("FAILPOINTS", &format!("{point}=return"))]);
    let status = daemon.wait(Duration::from_secs(60));
    let logs = daemon.all_logs();
    let status = status.unwrap_or_else(|| panic!("no crash at {point}\n{logs}"));
    assert!(
        !status.success() && logs.contains(point),
        "{status}\n{logs}"
    );
    // the purchases committed before the crash, the timers' outputs did not
    let (running, timers) = outputs(&bootstrap, &sink, purchases.len());
    assert_eq!(
        running.values().map(Vec::len).sum::<usize>(),
        purchases.len(),
        "{logs}"
    );
    assert!(
        timers.is_empty(),
        "timers fired in a checkpoint that moved an offset: {timers:?}\n{logs}"
    );

    // the restart restores the checkpoint the commit names, whose timers are still due
    daemon.start();
    let deadline = Instant::now() + Duration::from_secs(60);
    let (running, timers) = loop {
        let (running, timers) = outputs(&bootstrap, &sink, purchases.len() + users);
        if timers.len() >= users || Instant::now() > deadline {
            break (running, timers);
        }
        std::thread::sleep(Duration::from_secs(1));
    };
    let logs = daemon.all_logs();
    assert_eq!(
        timers.len(),
        users,
        "users whose timer output never came: {:?}\n{logs}",
        (0..users)
            .map(|u| format!("u{u}"))
            .filter(|u| !timers.contains_key(u))
            .collect::<Vec<_>>()
    );
    assert!(timers.values().all(|n| *n == 1), "{timers:?}\n{logs}");
    for (user, counts) in &running {
        assert_eq!(counts, &vec![1, 2, 3], "user {user}\n{logs}");
    }
    assert!(
        daemon.terminate(Duration::from_secs(30)).success(),
        "{}",
        daemon.all_logs()
    );
}

#[test]
fn a_timer_only_checkpoint_that_crashed_after_its_snapshot_is_not_restored() {
    timer_outputs_survive_a_crash_at("checkpoint::after_unmoved_snapshot");
}

#[test]
fn a_timer_only_checkpoint_whose_commit_was_lost_is_not_restored() {
    timer_outputs_survive_a_crash_at("checkpoint::before_unmoved_commit");
}
