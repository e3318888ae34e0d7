//! The error policy against the real broker: with `on_error = "dead_letter"`, a stream with
//! bad records (invalid JSON, a value a `sum` cannot add) through SIGKILLs: the dead-letter
//! topic holds exactly the bad records once each, with their headers, and the good records are
//! summed exactly once. Oversized outputs are caught before producing and follow the policy.

#![allow(clippy::unwrap_used)] // tests panic on failure, by design

mod common;

use std::collections::HashMap;
use std::time::Duration;

use rand::Rng;

use common::Daemon;

/// A dead letter's value and headers.
type DeadLetter = (String, HashMap<String, String>);

fn dead_letters(bootstrap: &str, topic: &str, want: usize) -> Vec<DeadLetter> {
    common::dead_letters(bootstrap, topic, want)
        .into_iter()
        .map(|(v, h)| (String::from_utf8_lossy(&v).into_owned(), h))
        .collect()
}

#[test]
fn bad_records_go_to_the_dead_letter_topic_exactly_once_through_kills() {
    let Some(bootstrap) = common::bootstrap() else {
        return;
    };
    let name = common::rand_name("dlq");
    let (source, sink, dlq) = (
        format!("{name}-in"),
        format!("{name}-sums"),
        format!("{name}-dlq"),
    );
    common::create_topic(&bootstrap, &source, 3);
    common::create_topic(&bootstrap, &sink, 3);
    common::create_topic(&bootstrap, &dlq, 1);
    let config = format!(
        r#"
[kafka]
bootstrap_servers = "{bootstrap}"

[checkpoint]
interval = "300ms"
dir = "{{DIR}}/checkpoints"

[state]
backend = "rocksdb"
dir = "{{DIR}}/state"

[restart]
initial_backoff = "200ms"

[[pipelines]]
name = "{name}"
source = {{ topic = "{source}", format = "json" }}
sink = {{ topic = "{sink}", format = "json" }}
on_error = "dead_letter"
dead_letter_topic = "{dlq}"
operators = [
  {{ type = "map", expr = '{{user, amount, id, scaled: ((.ratio // 1) - 1)}}' }},
  {{ type = "key_by", field = "user" }},
  {{ type = "sum", field = "amount" }},
]
"#
    );
    // 3,000 records, 3% bad: invalid JSON, a non-number amount (the sum fails), a ratio the
    // jq expression cannot subtract from
    let mut rng = rand::rng();
    let mut input = Vec::new();
    let mut bad = Vec::new();
    let mut sums: HashMap<String, Vec<i64>> = HashMap::new();
    for i in 0..3_000 {
        let user = format!("u{}", rng.random_range(0..40));
        let value = match i % 100 {
            17 => format!("{{\"user\":\"{user}\",\"amount\":"), // truncated JSON
            53 => format!("{{\"user\":\"{user}\",\"amount\":\"lots\",\"id\":{i}}}"),
            71 => format!("{{\"user\":\"{user}\",\"amount\":5,\"ratio\":\"x\",\"id\":{i}}}"),
            _ => {
                let amount = rng.random_range(1..100);
                let running = sums.entry(user.clone()).or_default();
                let next = running.last().copied().unwrap_or(0) + amount;
                running.push(next);
                format!("{{\"user\":\"{user}\",\"amount\":{amount},\"id\":{i}}}")
            }
        };
        if [17, 53, 71].contains(&(i % 100)) {
            bad.push(value.clone());
        }
        input.push((None, format!("k{i}"), value));
    }
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = Daemon::new(dir.path(), &config);
    daemon.start();
    for chunk in input.chunks(1_000) {
        common::produce_all(&bootstrap, &source, chunk);
        std::thread::sleep(Duration::from_millis(700));
        daemon.kill9();
        daemon.start();
    }
    let good: usize = sums.values().map(Vec::len).sum();
    let output = common::read_all(
        &bootstrap,
        &sink,
        "read_committed",
        good,
        Duration::from_secs(90),
    );
    let letters = dead_letters(&bootstrap, &dlq, bad.len());
    assert!(
        daemon.terminate(Duration::from_secs(30)).success(),
        "{}",
        daemon.all_logs()
    );

    // the good records, each once: per user as many outputs as good records, rising (amounts
    // are positive; the order across source partitions is not the input's) to the total
    let mut seen: HashMap<String, Vec<i64>> = HashMap::new();
    for r in &output {
        let v: serde_json::Value = serde_json::from_str(r.value.as_deref().unwrap()).unwrap();
        seen.entry(v["user"].as_str().unwrap().to_string())
            .or_default()
            .push(v["sum"].as_i64().unwrap());
    }
    assert_eq!(seen.len(), sums.len());
    for (user, want) in &sums {
        let got = &seen[user];
        assert_eq!(
            got.len(),
            want.len(),
            "user {user}: {got:?}\n{}",
            daemon.all_logs()
        );
        assert!(got.windows(2).all(|w| w[0] < w[1]), "user {user}: {got:?}");
        assert_eq!(got.last(), want.last(), "user {user}");
    }

    // the bad ones: each exactly once, with what failed where
    assert_eq!(letters.len(), bad.len(), "{}", daemon.all_logs());
    let mut classes: HashMap<String, usize> = HashMap::new();
    for (value, headers) in &letters {
        *classes
            .entry(headers["flumen.error.class"].clone())
            .or_default() += 1;
        assert!(
            headers.contains_key("flumen.source.offset")
                && headers.contains_key("flumen.error.message")
        );
        match headers["flumen.error.class"].as_str() {
            // the record as it came in, untouched
            "decode" => assert!(bad.contains(value), "{value:.80}"),
            // the sum failed after the repartition hop: the re-keyed record, same id
            "operator" if headers["flumen.source.topic"].ends_with("-repartition") => {
                assert_eq!(headers["flumen.error.stage"], "sum");
                let v: serde_json::Value = serde_json::from_str(value).unwrap();
                assert_eq!(v["amount"], "lots");
            }
            // the jq map failed at the source: the record as it came in
            "operator" => {
                assert_eq!(headers["flumen.error.stage"], "map");
                assert!(headers["flumen.error.message"].contains("jq"));
                assert!(
                    bad.contains(value) && value.contains("\"ratio\""),
                    "{value:.80}"
                );
            }
            other => panic!("unexpected class {other}"),
        }
    }
    assert_eq!(classes.len(), 2, "{classes:?}");
    assert_eq!(classes["decode"], 30, "{classes:?}");
    assert_eq!(classes["operator"], 60, "{classes:?}");
}

/// A string source copied to a JSON sink (quotes escaped, so a value can double in size), bad
/// records dead-lettered; one partition each, the sink created with `sink_settings`:
/// (source, sink, dead-letter topic, config).
fn quoting_pipeline(
    bootstrap: &str,
    prefix: &str,
    kafka_extra: &str,
    sink_settings: &[(&str, &str)],
) -> (String, String, String, String) {
    let name = common::rand_name(prefix);
    let (source, sink, dlq) = (
        format!("{name}-in"),
        format!("{name}-out"),
        format!("{name}-dlq"),
    );
    common::create_topic(bootstrap, &source, 1);
    common::create_topic_with(bootstrap, &sink, 1, sink_settings);
    common::create_topic(bootstrap, &dlq, 1);
    let config = common::pipeline_config(
        bootstrap,
        &name,
        (&source, &sink),
        kafka_extra,
        &format!("on_error = \"dead_letter\"\ndead_letter_topic = \"{dlq}\""),
    )
    .replace(
        &format!("source = {{ topic = \"{source}\", format = \"json\" }}"),
        &format!("source = {{ topic = \"{source}\", format = \"string\" }}"),
    );
    (source, sink, dlq, config)
}

/// A string source to a JSON sink: escaping makes a value of quotes twice as long, over
/// `message.max.bytes`; those records are dead-lettered untouched, the rest copied, and
/// nothing makes the transaction abort in a loop.
#[test]
fn oversized_outputs_are_dead_lettered_before_producing() {
    let Some(bootstrap) = common::bootstrap() else {
        return;
    };
    let (source, sink, dlq, config) = quoting_pipeline(
        &bootstrap,
        "big",
        "[kafka.properties]\n\"message.max.bytes\" = \"3000\"\n",
        &[],
    );
    let big = "\"".repeat(2_000);
    let input = lines_and_quotes(60, 10, &big, "");
    let (out, letters) = copy_quotes(&bootstrap, (&source, &sink, &dlq), &config, &input, 54);
    assert_eq!(letters.len(), 6);
    for (value, headers) in &letters {
        assert_eq!(value, &big);
        assert_eq!(headers["flumen.error.class"], "too_large");
    }
    assert_eq!(out.len(), 54);
}

/// A sink topic whose `max.message.bytes` is below the client's (4,000 bytes against
/// 1,000,000): an output over the topic's limit is dead-lettered before producing, and the
/// producer's batches fit the topic, so the broker refuses nothing and no transaction aborts
/// (the broker's limit is on a whole batch; a refused batch makes the transaction abortable,
/// and the rewind meets the same batch again).
#[test]
fn outputs_over_the_sink_topic_s_own_limit_are_dead_lettered_and_batches_fit_it() {
    let Some(bootstrap) = common::bootstrap() else {
        return;
    };
    let (source, sink, dlq, config) = quoting_pipeline(
        &bootstrap,
        "topic-limit",
        "",
        &[("max.message.bytes", "4000")],
    );
    // 3,000 B of quotes escape to 6,002 B of JSON: over the topic's limit, far under the
    // client's; the others (about 300 B each) fill batches of many records, from a backlog
    let big = "\"".repeat(3_000);
    let input = lines_and_quotes(3_000, 500, &big, &"x".repeat(300));
    let (out, letters) = copy_quotes(&bootstrap, (&source, &sink, &dlq), &config, &input, 2_994);
    assert_eq!(letters.len(), 6);
    for (value, headers) in &letters {
        assert_eq!(value, &big);
        assert_eq!(headers["flumen.error.class"], "too_large");
        assert!(
            headers["flumen.error.message"]
                .contains(&format!("max.message.bytes of topic {sink:?} (4000)")),
            "{headers:?}"
        );
    }
    assert_eq!(out.len(), 2_994);
}

/// `n` lines (`line {i} {pad}`), every `every`-th (from the 7th) `big` instead, one partition.
fn lines_and_quotes(
    n: usize,
    every: usize,
    big: &str,
    pad: &str,
) -> Vec<(Option<i32>, String, String)> {
    (0..n)
        .map(|i| {
            let v = if i % every == 7 % every {
                big.to_string()
            } else {
                format!("line {i} {pad}")
            };
            (Some(0), format!("k{i}"), v)
        })
        .collect()
}

/// Produces `input` as a backlog, runs the daemon until `want` outputs are committed, and
/// returns them with the dead letters (6 awaited); the daemon must stop with exit 0 and no
/// checkpoint may have aborted.
fn copy_quotes(
    bootstrap: &str,
    (source, sink, dlq): (&str, &str, &str),
    config: &str,
    input: &[(Option<i32>, String, String)],
    want: usize,
) -> (Vec<common::Read>, Vec<DeadLetter>) {
    common::produce_all(bootstrap, source, input);
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = Daemon::new(dir.path(), config);
    daemon.start();
    let out = common::read_all(
        bootstrap,
        sink,
        "read_committed",
        want,
        Duration::from_secs(90),
    );
    let letters = dead_letters(bootstrap, dlq, 6);
    let logs = daemon.all_logs();
    assert!(
        daemon.terminate(Duration::from_secs(30)).success(),
        "{logs}"
    );
    assert_eq!(out.len(), want, "{logs}");
    assert!(!logs.contains("checkpoint aborted"), "{logs}");
    (out, letters)
}

/// `on_error = "skip"`: bad records are counted and passed over, the rest processed.
#[test]
fn skipped_records_are_counted_and_passed_over() {
    let Some(bootstrap) = common::bootstrap() else {
        return;
    };
    let name = common::rand_name("skip");
    let (source, sink) = (format!("{name}-in"), format!("{name}-out"));
    for t in [&source, &sink] {
        common::create_topic(&bootstrap, t, 2);
    }
    let config = common::pipeline_config(
        &bootstrap,
        &name,
        (&source, &sink),
        "",
        "on_error = \"skip\"\noperators = [{ type = \"filter\", field = \"keep\", equals = true }]",
    );
    let input: Vec<(Option<i32>, String, String)> = (0..100)
        .map(|i| {
            let v = if i % 10 == 0 {
                "{not json".to_string()
            } else {
                format!("{{\"keep\":true,\"i\":{i}}}")
            };
            (None, format!("k{i}"), v)
        })
        .collect();
    common::produce_all(&bootstrap, &source, &input);
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = Daemon::new(dir.path(), &config);
    daemon.start();
    let out = common::read_all(
        &bootstrap,
        &sink,
        "read_committed",
        90,
        Duration::from_secs(60),
    );
    assert!(
        daemon.terminate(Duration::from_secs(30)).success(),
        "{}",
        daemon.all_logs()
    );
    assert_eq!(out.len(), 90, "{}", daemon.all_logs());
    let log = daemon.all_logs();
    assert_eq!(log.matches("record skipped").count(), 10, "{log}");
    assert!(log.contains("skipped=10"), "{log}");
}

/// An operator's `on_error` overrides the pipeline's: the `sum` skips amounts it cannot add,
/// while a record that is not JSON at all still stops the pipeline (its policy: fail, exit 4).
#[test]
fn an_operator_policy_overrides_the_pipeline_policy() {
    let Some(bootstrap) = common::bootstrap() else {
        return;
    };
    let name = common::rand_name("step-policy");
    let (source, sink) = (format!("{name}-in"), format!("{name}-out"));
    for t in [&source, &sink] {
        common::create_topic(&bootstrap, t, 2);
    }
    let config = common::pipeline_config(
        &bootstrap,
        &name,
        (&source, &sink),
        "",
        r#"operators = [
  { type = "key_by", field = "user" },
  { type = "sum", field = "amount", on_error = "skip" },
]"#,
    );
    let input: Vec<(Option<i32>, String, String)> = (0..100)
        .map(|i| {
            let amount = if i % 20 == 0 {
                "\"x\"".to_string()
            } else {
                i.to_string()
            };
            (
                None,
                format!("k{i}"),
                format!("{{\"user\":\"u{}\",\"amount\":{amount}}}", i % 7),
            )
        })
        .collect();
    common::produce_all(&bootstrap, &source, &input);
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = Daemon::new(dir.path(), &config);
    daemon.start();
    let out = common::read_all(
        &bootstrap,
        &sink,
        "read_committed",
        95,
        Duration::from_secs(60),
    );
    assert_eq!(out.len(), 95, "{}", daemon.all_logs());
    assert_eq!(daemon.all_logs().matches("record skipped").count(), 5);
    common::produce_all(
        &bootstrap,
        &source,
        &[(Some(0), "bad".into(), "{not json".into())],
    );
    let status = daemon
        .wait(Duration::from_secs(60))
        .expect("the daemon stops on the bad record");
    assert_eq!(status.code(), Some(4), "{}", daemon.all_logs());
    assert!(
        daemon.last_log().contains("hint: set on_error"),
        "{}",
        daemon.last_log()
    );
}
