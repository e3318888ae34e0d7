//! Secrets stay secret: a password planted in the config, run with `RUST_LOG=trace` (and
//! librdkafka's own debug contexts) through a start over SASL/SCRAM, a bad record that stops
//! the daemon, and a failed SASL handshake, appears in no log line and no error; a registry
//! URL with credentials in it is refused without being repeated.

#![allow(clippy::unwrap_used)] // tests panic on failure, by design

mod common;

use std::time::{Duration, Instant};

/// The SASL listener of `scripts/kafka.sh` (PORT+2) and its test user.
const USER: &str = "flumen-test";
const PASSWORD: &str = "flumen-scram-canary";
const WRONG: &str = "wrong-canary-9d2e";

fn sasl_bootstrap(bootstrap: &str) -> String {
    let (host, port) = bootstrap.rsplit_once(':').unwrap();
    format!("{host}:{}", port.parse::<u16>().unwrap() + 2)
}

fn config(bootstrap: &str, name: &str, (source, sink): (&str, &str), password: &str) -> String {
    format!(
        r#"
[kafka]
bootstrap_servers = "{}"

[kafka.properties]
"security.protocol" = "SASL_PLAINTEXT"
"sasl.mechanisms" = "SCRAM-SHA-256"
"sasl.username" = "{USER}"
"sasl.password" = "{password}"
"debug" = "conf,security,broker"

[checkpoint]
interval = "300ms"
dir = "{{DIR}}/checkpoints"

[state]
backend = "memory"
dir = "{{DIR}}/state"

[[pipelines]]
name = "{name}"
source = {{ topic = "{source}", format = "json" }}
sink = {{ topic = "{sink}", format = "json" }}
on_error = "fail"
operators = [{{ type = "map", keep = ["id"] }}]
"#,
        sasl_bootstrap(bootstrap)
    )
}

#[test]
fn a_planted_password_appears_in_no_log_and_no_error() {
    let Some(bootstrap) = common::bootstrap() else {
        return;
    };
    let name = common::rand_name("secrets");
    let (source, sink) = (format!("{name}-in"), format!("{name}-out"));
    common::create_topic(&bootstrap, &source, 1);
    common::create_topic(&bootstrap, &sink, 1);
    let mut input: Vec<(Option<i32>, String, String)> = (0..5)
        .map(|i| (Some(0), format!("k{i}"), format!(r#"{{"id":{i}}}"#)))
        .collect();
    input.push((Some(0), "bad".into(), "not json".into()));
    common::produce_all(&bootstrap, &source, &input);
    let trace = [("RUST_LOG", "trace")];

    // over SASL/SCRAM: the good records go through, the bad one stops the daemon (exit 4)
    let dir = tempfile::tempdir().unwrap();
    let mut good = common::Daemon::new(
        dir.path(),
        &config(&bootstrap, &name, (&source, &sink), PASSWORD),
    );
    good.start_with(&trace);
    let status = good
        .wait(Duration::from_secs(90))
        .unwrap_or_else(|| panic!("no stop at the bad record\n{}", good.all_logs()));
    let logs = good.all_logs();
    assert_eq!(status.code(), Some(4), "{}", tail(&logs));
    assert!(logs.contains("offset 5: decode"), "{}", tail(&logs));
    let out = common::read_all(
        &bootstrap,
        &sink,
        "read_committed",
        0,
        Duration::from_secs(5),
    );
    assert!(out.is_empty(), "the bad record's transaction was aborted");

    // a wrong password: the handshake fails, and says so
    let wrong_dir = tempfile::tempdir().unwrap();
    let mut wrong = common::Daemon::new(
        wrong_dir.path(),
        &config(&bootstrap, &name, (&source, &sink), WRONG),
    );
    wrong.start_with(&trace);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !wrong.last_log().contains("Authentication failed") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    wrong.kill9();
    let wrong_logs = wrong.all_logs();
    assert!(
        wrong_logs.contains("Authentication failed"),
        "no failed SASL handshake seen\n{}",
        tail(&wrong_logs)
    );

    // a registry URL with credentials: refused, not repeated
    let with_url = config(&bootstrap, &name, (&source, &sink), PASSWORD).replace(
        "[checkpoint]",
        &format!("[schema_registry]\nurl = \"http://{USER}:{WRONG}@127.0.0.1:1\"\n\n[checkpoint]"),
    );
    let url_dir = tempfile::tempdir().unwrap();
    let validate = common::Daemon::new(url_dir.path(), &with_url);
    let checked = common::flumen(&["validate", "--config", validate.config.to_str().unwrap()]);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
    assert_eq!(checked.status.code(), Some(2), "{said}");
    assert!(
        said.contains("credentials do not belong in the URL"),
        "{said}"
    );

    let lines = logs.lines().count() + wrong_logs.lines().count();
    for (what, text) in [
        ("good run", &logs),
        ("wrong run", &wrong_logs),
        ("validate", &said),
    ] {
        for secret in [PASSWORD, WRONG] {
            let leaks: Vec<&str> = text
                .lines()
                .filter(|l| l.contains(secret))
                .take(3)
                .collect();
            assert!(leaks.is_empty(), "{what} printed {secret:?}: {leaks:#?}");
        }
    }
    eprintln!("{lines} log lines searched");
    assert!(
        logs.contains(&format!("Authenticated as {USER} using SCRAM-SHA-256")),
        "the good run did not authenticate over SASL\n{}",
        tail(&logs)
    );
}

fn tail(logs: &str) -> String {
    let lines: Vec<&str> = logs.lines().collect();
    lines[lines.len().saturating_sub(60)..].join("\n")
}
