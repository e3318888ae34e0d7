//! A panic is never a silent exit 0 nor a silently stalled pipeline. A panic in operator code
//! on a record (`examples/faulty_operator.rs`) is that record's error and follows `on_error`;
//! a panic anywhere else ends the daemon non-zero, naming the pipeline and the message.

#![allow(clippy::unwrap_used)] // tests panic on failure, by design

mod common;

use std::time::{Duration, Instant};

/// The poisoned record's offset (all records go to partition 0 of a fresh topic).
const POISON: i64 = 17;
const RECORDS: i64 = 40;

/// A daemon of `faulty_operator` whose pipeline meets one poisoned record, with `on_error`
/// (and `extra` lines); the input is produced. Returns (daemon, bootstrap, source, sink).
fn poisoned(on_error: &str, extra: &str) -> Option<(common::Daemon, String, String, String)> {
    let bootstrap = common::bootstrap()?;
    let name = common::rand_name("panic");
    let (source, sink) = (format!("{name}-in"), format!("{name}-out"));
    common::create_topic(&bootstrap, &source, 1);
    common::create_topic(&bootstrap, &sink, 1);
    let config = common::pipeline_config(
        &bootstrap,
        &name,
        (&source, &sink),
        "",
        &format!(
            "on_error = \"{on_error}\"\n{extra}\noperators = [{{ type = \"custom\", name = \"panic_on_poison\" }}]"
        ),
    );
    let dir = tempfile::tempdir().unwrap().keep();
    let mut daemon = common::Daemon::new(&dir, &config);
    daemon.program = common::example_binary("faulty_operator");
    let input: Vec<(Option<i32>, String, String)> = (0..RECORDS)
        .map(|i| {
            let poison = i == POISON;
            (
                Some(0),
                format!("k{}", i % 5),
                format!(r#"{{"id":{i},"poison":{poison}}}"#),
            )
        })
        .collect();
    common::produce_all(&bootstrap, &source, &input);
    Some((daemon, bootstrap, source, sink))
}

/// Waits for every record but the poisoned one on the read_committed sink, each once.
fn assert_all_but_the_poison(daemon: &common::Daemon, bootstrap: &str, sink: &str) {
    let want = usize::try_from(RECORDS - 1).unwrap();
    let output = common::read_all(
        bootstrap,
        sink,
        "read_committed",
        want,
        Duration::from_secs(60),
    );
    let mut ids: Vec<i64> = output
        .iter()
        .map(|r| {
            let v: serde_json::Value = serde_json::from_str(r.value.as_deref().unwrap()).unwrap();
            v["id"].as_i64().unwrap()
        })
        .collect();
    ids.sort_unstable();
    let expected: Vec<i64> = (0..RECORDS).filter(|i| *i != POISON).collect();
    assert_eq!(ids, expected, "{}", daemon.all_logs());
}

#[test]
fn a_panic_on_a_record_is_dead_lettered_and_the_pipeline_goes_on() {
    let dlq = common::rand_name("panic-dlq");
    let Some((mut daemon, bootstrap, source, sink)) =
        poisoned("dead_letter", &format!("dead_letter_topic = \"{dlq}\""))
    else {
        return;
    };
    common::create_topic(&bootstrap, &dlq, 1);
    daemon.start();
    assert_all_but_the_poison(&daemon, &bootstrap, &sink);
    let letters = common::dead_letters(&bootstrap, &dlq, 1);
    assert_eq!(letters.len(), 1, "{}", daemon.all_logs());
    let (value, headers) = &letters[0];
    assert_eq!(
        String::from_utf8_lossy(value),
        format!(r#"{{"id":{POISON},"poison":true}}"#)
    );
    assert_eq!(headers["flumen.source.topic"], source);
    assert_eq!(headers["flumen.source.offset"], POISON.to_string());
    assert_eq!(headers["flumen.error.class"], "panic");
    assert!(
        headers["flumen.error.message"].contains(&format!("cannot digest record {POISON}")),
        "{headers:?}"
    );
    assert!(daemon.is_running(), "{}", daemon.all_logs());
    let status = daemon.terminate(Duration::from_secs(30));
    assert!(status.success(), "{status}\n{}", daemon.all_logs());
}

#[test]
fn a_panic_on_a_record_is_skipped_with_skip() {
    let Some((mut daemon, bootstrap, _, sink)) = poisoned("skip", "") else {
        return;
    };
    daemon.start();
    assert_all_but_the_poison(&daemon, &bootstrap, &sink);
    assert!(daemon.is_running(), "{}", daemon.all_logs());
    let status = daemon.terminate(Duration::from_secs(30));
    let logs = daemon.all_logs();
    assert!(status.success(), "{status}\n{logs}");
    assert!(
        logs.contains("record skipped") && logs.contains("skipped=1"),
        "{logs}"
    );
}

#[test]
fn a_panic_on_a_record_with_fail_exits_4_naming_the_record() {
    let Some((mut daemon, _, source, _)) = poisoned("fail", "") else {
        return;
    };
    daemon.start();
    let status = daemon
        .wait(Duration::from_secs(60))
        .unwrap_or_else(|| panic!("still running\n{}", daemon.all_logs()));
    let logs = daemon.all_logs();
    assert_eq!(status.code(), Some(4), "{logs}");
    assert!(
        logs.contains(&format!(
            "{source}/0 offset {POISON}: panic: panicked: cannot digest record {POISON}"
        )),
        "{logs}"
    );
}

/// Two pipelines; one panics in its checkpoint (a failpoint's panic, outside any record): the
/// daemon stops non-zero naming it, instead of running on with one pipeline stalled.
#[test]
fn a_panic_outside_a_record_stops_the_daemon_non_zero() {
    let Some(bootstrap) = common::bootstrap() else {
        return;
    };
    let mut config = common::engine_header(&bootstrap, "memory");
    let mut names = Vec::new();
    for i in 0..2 {
        let name = common::rand_name(&format!("panic-two{i}"));
        let (source, sink) = (format!("{name}-in"), format!("{name}-out"));
        common::create_topic(&bootstrap, &source, 1);
        common::create_topic(&bootstrap, &sink, 1);
        config += &format!(
            "\n[[pipelines]]\nname = \"{name}\"\nsource = {{ topic = \"{source}\", format = \"json\" }}\nsink = {{ topic = \"{sink}\", format = \"json\" }}\n"
        );
        let input: Vec<(Option<i32>, String, String)> = (0..10)
            .map(|i| (None, format!("k{i}"), format!(r#"{{"id":{i}}}"#)))
            .collect();
        common::produce_all(&bootstrap, &source, &input);
        names.push(name);
    }
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = common::Daemon::new(dir.path(), &config);
    // the first checkpoint of either pipeline panics; the other goes on unharmed
    daemon.start_with(&[("FAILPOINTS", "checkpoint::after_snapshot=1*panic(boom)")]);
    let started = Instant::now();
    let status = daemon
        .wait(Duration::from_secs(60))
        .unwrap_or_else(|| panic!("still running\n{}", daemon.all_logs()));
    let logs = daemon.all_logs();
    assert_eq!(status.code(), Some(1), "{logs}");
    assert!(
        names
            .iter()
            .any(|n| logs.contains(&format!("error: pipeline {n}: panicked: boom"))),
        "{logs}"
    );
    eprintln!("stopped {:?} after the start", started.elapsed());
}
