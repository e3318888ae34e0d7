//! The command line without a broker: `validate` reports every problem at once.

#![allow(clippy::unwrap_used)] // tests panic on failure, by design

use std::process::Command;

#[test]
fn validate_prints_three_mistakes_with_line_and_column_and_exits_2() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("bad.toml");
    std::fs::write(
        &path,
        r#"[kafka]
bootstrap_servers = "127.0.0.1:19092"

[checkpoint]
interval = "soon"
dir = "data/checkpoints"

[state]
backend = "rocksdb"

[[pipelines]]
name = "counts"
source = { topic = "events", format = "yaml" }
sink = { topic = "counts", format = "json" }
operators = [
  { type = "key_by", field = "user" },
  { type = "count", field = "x" },
]
"#,
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_flumen"))
        .args(["validate", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("checkpoint.interval (5:12): invalid duration \"soon\""),
        "{stderr}"
    );
    assert!(
        stderr.contains("pipelines[0].source.format (13:39): unknown format \"yaml\""),
        "{stderr}"
    );
    assert!(
        stderr.contains("pipelines[0].operators[1].field (17:29): count does not take \"field\""),
        "{stderr}"
    );
    assert!(stderr.contains("3 problem(s)"), "{stderr}");
}

/// Zero and absurd durations are config errors at their place, not librdkafka's refusal at
/// run time (`transaction_timeout = "0s"`) or a checkpoint loop that never sleeps.
#[test]
fn validate_refuses_zero_and_absurd_durations_at_their_place() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("durations.toml");
    std::fs::write(
        &path,
        r#"[kafka]
bootstrap_servers = "127.0.0.1:19092"
transaction_timeout = "0s"

[checkpoint]
interval = "0s"
dir = "data/checkpoints"

[state]
backend = "rocksdb"

[restart]
max_backoff = "400days"

[[pipelines]]
name = "counts"
source = { topic = "events", format = "json", event_time = { idle_timeout = "0s" } }
sink = { topic = "counts", format = "json" }
operators = [
  { type = "dedupe", field = "id", ttl = "0ms" },
]
"#,
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_flumen"))
        .args(["validate", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    for expected in [
        "kafka.transaction_timeout (3:23): \"0s\" is out of range: must be between 10s and 15m",
        "checkpoint.interval (6:12): \"0s\" is out of range: must be between 10ms and 5m",
        "restart.max_backoff (13:15): \"400days\" is out of range",
        "pipelines[0].source.event_time.idle_timeout (17:77): \"0s\" is out of range",
        "pipelines[0].operators[0].ttl (20:42): \"0ms\" is out of range",
    ] {
        assert!(
            stderr.contains(expected),
            "missing {expected:?} in\n{stderr}"
        );
    }
}

#[test]
fn validate_accepts_the_examples() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/examples");
    for name in ["counts.toml", "quickstart.toml", "memory-passthrough.toml"] {
        let out = Command::new(env!("CARGO_BIN_EXE_flumen"))
            .args(["validate", "--config"])
            .arg(dir.join(name))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn help_documents_exit_codes() {
    let out = Command::new(env!("CARGO_BIN_EXE_flumen"))
        .arg("--help")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("Exit codes:") && stdout.contains("3  state cannot be restored"),
        "{stdout}"
    );
}

#[test]
fn the_readme_configuration_block_validates() {
    let readme =
        std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
            .unwrap();
    let section = readme
        .split("## Configuration")
        .nth(1)
        .expect("a Configuration section");
    let block = section
        .split("```toml\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("a toml block");
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("readme.toml");
    std::fs::write(&path, block).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_flumen"))
        .args(["validate", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn savepoint_commands_refuse_what_is_not_a_savepoint_and_stop_needs_a_daemon() {
    let tmp = tempfile::tempdir().unwrap();
    let flumen = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_flumen"))
            .args(args)
            .output()
            .unwrap()
    };
    let dir = tmp.path().display().to_string();
    let inspect = flumen(&["savepoint", "inspect", &dir]);
    assert_eq!(inspect.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&inspect.stderr).contains("is not a savepoint"));
    let delete = flumen(&["savepoint", "delete", &dir]);
    assert_eq!(delete.status.code(), Some(1));
    assert!(
        tmp.path().try_exists().unwrap(),
        "delete removed a non-savepoint"
    );
    let config = tmp.path().join("p.toml");
    std::fs::write(
        &config,
        format!(
            "[kafka]\nbootstrap_servers = \"127.0.0.1:1\"\n[checkpoint]\ninterval = \"1s\"\ndir = \"{dir}/chk\"\n[[pipelines]]\nname = \"p\"\nsource = {{ topic = \"a\" }}\nsink = {{ topic = \"b\" }}\n"
        ),
    )
    .unwrap();
    let stop = flumen(&["stop", "--config", &config.display().to_string()]);
    assert_eq!(stop.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&stop.stderr).contains("no running Flumen daemon"),
        "{}",
        String::from_utf8_lossy(&stop.stderr)
    );
    let listed = flumen(&["savepoint", "list", "--dir", &dir, "--output", "json"]);
    assert!(listed.status.success());
    assert_eq!(String::from_utf8_lossy(&listed.stdout).trim(), "[]");
}

/// `${VAR}` takes the environment's values (and defaults); a missing one is named at its
/// `line:col`; relative paths start at the config file's directory, and `validate` prints
/// where they lead.
#[test]
fn validate_expands_variables_and_resolves_paths_from_the_config_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("conf");
    std::fs::create_dir(&dir).unwrap();
    let path = dir.join("pipeline.toml");
    std::fs::write(
        &path,
        r#"instance_id = "${FLUMEN_TEST_POD:-pod-0}"

[kafka]
bootstrap_servers = "${FLUMEN_TEST_BROKERS}"

[checkpoint]
interval = "1s"
dir = "data/checkpoints"

[state]
backend = "rocksdb"
dir = "${FLUMEN_TEST_STATE:?where the live state goes}"

[[pipelines]]
name = "counts"
source = { topic = "events-${FLUMEN_TEST_ENV}", format = "json" }
sink = { topic = "counts", format = "json" }
"#,
    )
    .unwrap();
    let validate = |env: &[(&str, &str)]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_flumen"));
        cmd.args(["validate", "--config"]).arg(&path);
        for v in [
            "FLUMEN_TEST_POD",
            "FLUMEN_TEST_BROKERS",
            "FLUMEN_TEST_STATE",
            "FLUMEN_TEST_ENV",
        ] {
            cmd.env_remove(v);
        }
        cmd.envs(env.iter().copied());
        cmd.output().unwrap()
    };
    // the three missing ones at once, each at its place
    let out = validate(&[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(
            "kafka.bootstrap_servers (4:22): environment variable FLUMEN_TEST_BROKERS is not set"
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains(
            "state.dir (12:8): environment variable FLUMEN_TEST_STATE: where the live state goes"
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains(
            "pipelines[0].source.topic (16:28): environment variable FLUMEN_TEST_ENV is not set"
        ),
        "{stderr}"
    );
    assert!(stderr.contains("3 problem(s)"), "{stderr}");
    // set: the values are taken, and relative paths lead into the config's directory
    let out = validate(&[
        ("FLUMEN_TEST_BROKERS", "127.0.0.1:19092"),
        ("FLUMEN_TEST_STATE", "live"),
        ("FLUMEN_TEST_ENV", "prod"),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("counts: events-prod -> counts"), "{stdout}");
    assert!(
        stdout.contains("transactional id flumen-counts-pod-0"),
        "{stdout}"
    );
    let conf = std::fs::canonicalize(&dir).unwrap_or(dir.clone());
    let shown = |what: &str, rel: &str| {
        stdout.contains(&format!("{what}: {}", dir.join(rel).display()))
            || stdout.contains(&format!("{what}: {}", conf.join(rel).display()))
    };
    assert!(shown("checkpoints", "data/checkpoints"), "{stdout}");
    assert!(shown("state", "live"), "{stdout}");
    // for scripts: the same as JSON, problems included
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_flumen"));
    cmd.args(["validate", "--output", "json", "--config"])
        .arg(&path);
    let out = cmd.env_remove("FLUMEN_TEST_BROKERS").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["ok"], false);
    let problems = report["problems"].as_array().unwrap();
    assert!(
        problems
            .iter()
            .any(|p| p["path"] == "kafka.bootstrap_servers" && p["line"] == 4 && p["col"] == 22),
        "{report}"
    );
}
