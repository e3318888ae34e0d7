//! `flumen offsets show|reset` against the real broker: every scenario as a dry run (nothing
//! moves) and executed (the broker's committed offsets are the plan's), the refusals, and
//! `--drop-state` on a keyed count.

#![allow(clippy::unwrap_used)] // tests panic on failure, by design

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::{Daemon, flumen};

/// (arguments, the plan's new offsets, the committed offsets after --execute)
type Case<'a> = (Vec<&'a str>, Vec<i64>, Vec<Option<i64>>);

const SESSION: &str = "6000"; // the broker's minimum: a stopped static member lingers this long

fn config(bootstrap: &str, name: &str, source: &str, sink: &str, operators: &str) -> String {
    format!(
        r#"
[kafka]
bootstrap_servers = "{bootstrap}"

[kafka.properties]
"session.timeout.ms" = "{SESSION}"

[checkpoint]
interval = "300ms"
dir = "{{DIR}}/checkpoints"

[state]
backend = "rocksdb"
dir = "{{DIR}}/state"

[[pipelines]]
name = "{name}"
source = {{ topic = "{source}", format = "json" }}
sink = {{ topic = "{sink}", format = "json" }}
operators = [{operators}]
"#
    )
}

struct Tool {
    config: String,
    pipeline: String,
}

impl Tool {
    fn run(&self, args: &[&str]) -> std::process::Output {
        let mut all = vec!["offsets"];
        all.extend_from_slice(&args[..1]);
        all.extend(["--config", &self.config, "--pipeline", &self.pipeline]);
        all.extend_from_slice(&args[1..]);
        flumen(&all)
    }

    /// The committed offsets of the source, from `offsets show --output json`.
    fn committed(&self, topic: &str) -> Vec<Option<i64>> {
        let out = self.run(&["show", "--output", "json"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["rows"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["topic"] == topic)
            .map(|r| r["committed"].as_i64())
            .collect()
    }

    /// A reset as JSON: the plan's new offsets; panics unless it succeeds.
    fn reset(&self, args: &[&str]) -> Vec<i64> {
        let mut all = vec!["reset"];
        all.extend_from_slice(args);
        all.extend(["--output", "json"]);
        let out = self.run(&all);
        assert!(
            out.status.success(),
            "{all:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["plan"]["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["new"].as_i64().unwrap())
            .collect()
    }

    /// Waits until the stopped daemon's static member has left the group.
    fn wait_until_stopped(&self) {
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            let out = self.run(&["reset", "--to-latest"]);
            let err = String::from_utf8_lossy(&out.stderr).into_owned();
            if !err.contains("live member") {
                return;
            }
            assert!(Instant::now() < deadline, "group never emptied: {err}");
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

#[test]
fn every_scenario_dry_run_then_execute_matches_the_broker() {
    let Some(bootstrap) = common::bootstrap() else {
        return;
    };
    let name = common::rand_name("reset");
    let (source, sink) = (format!("{name}-in"), format!("{name}-out"));
    common::create_topic(&bootstrap, &source, 2);
    common::create_topic(&bootstrap, &sink, 2);
    let half = |from: usize| -> Vec<(Option<i32>, String, String)> {
        (0..100)
            .map(|i| {
                (
                    Some((i % 2) as i32),
                    format!("k{i}"),
                    format!("{{\"n\":{}}}", from + i),
                )
            })
            .collect()
    };
    common::produce_all(&bootstrap, &source, &half(0));
    std::thread::sleep(Duration::from_millis(1500));
    let middle = std::time::SystemTime::now();
    // --by-duration is evaluated when each command runs: leave it seconds of slack
    std::thread::sleep(Duration::from_millis(3000));
    common::produce_all(&bootstrap, &source, &half(100));

    let dir = tempfile::tempdir().unwrap();
    let mut daemon = Daemon::new(dir.path(), &config(&bootstrap, &name, &source, &sink, ""));
    daemon.start();
    let copied = common::read_all(
        &bootstrap,
        &sink,
        "read_committed",
        200,
        Duration::from_secs(60),
    );
    assert_eq!(copied.len(), 200, "{}", daemon.all_logs());
    let tool = Tool {
        config: daemon.config.display().to_string(),
        pipeline: name.clone(),
    };
    // while the daemon runs, a reset is refused
    let out = tool.run(&["reset", "--to-earliest"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("stop it first"));
    assert!(daemon.terminate(Duration::from_secs(30)).success());
    tool.wait_until_stopped();
    assert_eq!(tool.committed(&source), vec![Some(100), Some(100)]);

    let topic_p0 = format!("{source}:0");
    let at = humantime::format_rfc3339_millis(middle).to_string();
    let since = format!("{}ms", middle.elapsed().unwrap().as_millis());
    let file = dir.path().join("offsets.csv");
    std::fs::write(&file, format!("{source},0,5\n{source},1,7\nother,0,1\n")).unwrap();
    let file = file.display().to_string();
    let cases: Vec<Case<'_>> = vec![
        (
            vec!["--by-duration", &since],
            vec![50, 50],
            vec![Some(50), Some(50)],
        ),
        (vec!["--to-earliest"], vec![0, 0], vec![Some(0), Some(0)]),
        (
            vec!["--to-latest"],
            vec![100, 100],
            vec![Some(100), Some(100)],
        ),
        (
            vec!["--to-offset", "30", "--topic", &topic_p0],
            vec![30],
            vec![Some(30), Some(100)],
        ),
        (
            vec!["--shift-by", "-10"],
            vec![20, 90],
            vec![Some(20), Some(90)],
        ),
        (
            vec!["--to-datetime", &at],
            vec![50, 50],
            vec![Some(50), Some(50)],
        ),
        (
            vec!["--shift-by", "5"],
            vec![55, 55],
            vec![Some(55), Some(55)],
        ),
        (
            vec!["--from-file", &file],
            vec![5, 7],
            vec![Some(5), Some(7)],
        ),
    ];
    for (args, plan, after) in cases {
        let before = tool.committed(&source);
        assert_eq!(tool.reset(&args), plan, "dry run {args:?}");
        assert_eq!(
            tool.committed(&source),
            before,
            "a dry run moved offsets: {args:?}"
        );
        let mut exec = args.clone();
        exec.push("--execute");
        assert_eq!(tool.reset(&exec), plan, "{args:?}");
        assert_eq!(tool.committed(&source), after, "{args:?}");
    }
    // --to-current --export saves the offsets as the CSV --from-file takes back after a move
    let out = tool.run(&["reset", "--to-current", "--export"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let exported = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(exported, format!("{source},0,5\n{source},1,7\n"));
    let saved = dir.path().join("saved.csv");
    std::fs::write(&saved, &exported).unwrap();
    let saved = saved.display().to_string();
    tool.reset(&["--to-earliest", "--execute"]);
    assert_eq!(tool.committed(&source), vec![Some(0), Some(0)]);
    assert_eq!(
        tool.reset(&["--from-file", &saved, "--dry-run"]),
        vec![5, 7]
    );
    assert_eq!(
        tool.committed(&source),
        vec![Some(0), Some(0)],
        "--dry-run moved offsets"
    );
    tool.reset(&["--from-file", &saved, "--execute"]);
    assert_eq!(tool.committed(&source), vec![Some(5), Some(7)]);
    let out = tool.run(&["reset", "--to-earliest", "--dry-run", "--execute"]);
    assert_eq!(out.status.code(), Some(2), "--dry-run with --execute");
    // the daemon resumes from the reset offsets: 95 + 93 more copies
    daemon.start();
    let again = common::read_all(
        &bootstrap,
        &sink,
        "read_committed",
        388,
        Duration::from_secs(60),
    );
    assert!(daemon.terminate(Duration::from_secs(30)).success());
    assert_eq!(again.len(), 388, "{}", daemon.all_logs());
}

#[test]
fn a_stateful_reset_needs_a_choice_and_drop_state_restarts_the_counts() {
    let Some(bootstrap) = common::bootstrap() else {
        return;
    };
    let name = common::rand_name("reset-state");
    let (source, sink) = (format!("{name}-events"), format!("{name}-counts"));
    common::create_topic(&bootstrap, &source, 2);
    common::create_topic(&bootstrap, &sink, 2);
    let input = common::count_input(300, 20);
    common::produce_all(&bootstrap, &source, &input);
    let ops = r#"{ type = "key_by", field = "user" }, { type = "count" }"#;
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = Daemon::new(dir.path(), &config(&bootstrap, &name, &source, &sink, ops));
    daemon.start();
    let first = common::read_all(
        &bootstrap,
        &sink,
        "read_committed",
        300,
        Duration::from_secs(60),
    );
    common::check_counts(&first, &common::expected_counts(&input)).unwrap();
    let savepoint = daemon.savepoint(None, false).remove(0);
    assert!(daemon.terminate(Duration::from_secs(30)).success());
    let tool = Tool {
        config: daemon.config.display().to_string(),
        pipeline: name.clone(),
    };
    tool.wait_until_stopped();

    let refused = tool.run(&["reset", "--to-earliest", "--execute"]);
    assert_eq!(refused.status.code(), Some(3));
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("--drop-state") && err.contains("--to-savepoint"),
        "{err}"
    );
    assert_eq!(tool.committed(&source).iter().flatten().sum::<i64>(), 300);

    assert_eq!(
        tool.reset(&["--to-earliest", "--drop-state", "--execute"])
            .iter()
            .sum::<i64>(),
        0
    );
    daemon.start();
    let both = common::read_all(
        &bootstrap,
        &sink,
        "read_committed",
        600,
        Duration::from_secs(60),
    );
    assert!(daemon.terminate(Duration::from_secs(30)).success());
    // every user counted from 1 again: each count value appears exactly twice
    let mut per_user: HashMap<String, Vec<u64>> = HashMap::new();
    for r in &both {
        let v: serde_json::Value = serde_json::from_str(r.value.as_deref().unwrap()).unwrap();
        per_user
            .entry(v["user"].as_str().unwrap().to_string())
            .or_default()
            .push(v["count"].as_u64().unwrap());
    }
    assert_eq!(both.len(), 600, "{}", daemon.all_logs());
    for (user, n) in common::expected_counts(&input) {
        let mut got = per_user.remove(&user).unwrap_or_default();
        got.sort_unstable();
        let want: Vec<u64> = (1..=n).flat_map(|c| [c, c]).collect();
        assert_eq!(got, want, "user {user}");
    }

    // back to the savepoint taken after the first run: its counts continue
    tool.wait_until_stopped();
    let sp = savepoint.display().to_string();
    let dry = tool.run(&["reset", "--to-savepoint", &sp]);
    assert!(
        dry.status.success(),
        "{}",
        String::from_utf8_lossy(&dry.stderr)
    );
    assert_eq!(tool.committed(&source).iter().flatten().sum::<i64>(), 300);
    let exec = tool.run(&["reset", "--to-savepoint", &sp, "--execute"]);
    assert!(
        exec.status.success(),
        "{}",
        String::from_utf8_lossy(&exec.stderr)
    );
    let more = common::count_input(200, 20);
    common::produce_all(&bootstrap, &source, &more);
    daemon.start();
    let all = common::read_all(
        &bootstrap,
        &sink,
        "read_committed",
        800,
        Duration::from_secs(60),
    );
    assert!(daemon.terminate(Duration::from_secs(30)).success());
    assert_eq!(all.len(), 800, "{}", daemon.all_logs());
    let before: HashMap<String, u64> = common::expected_counts(&input);
    let mut latest: HashMap<String, Vec<u64>> = HashMap::new();
    for r in all.iter().filter(|r| {
        !both
            .iter()
            .any(|b| b.partition == r.partition && b.offset == r.offset)
    }) {
        let v: serde_json::Value = serde_json::from_str(r.value.as_deref().unwrap()).unwrap();
        latest
            .entry(v["user"].as_str().unwrap().to_string())
            .or_default()
            .push(v["count"].as_u64().unwrap());
    }
    for (user, m) in common::expected_counts(&more) {
        let n = before.get(&user).copied().unwrap_or(0);
        let got = latest.remove(&user).unwrap_or_default();
        assert_eq!(got, ((n + 1)..=(n + m)).collect::<Vec<_>>(), "user {user}");
    }
}
