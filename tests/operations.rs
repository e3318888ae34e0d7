//! The `[admin]` listener on a running daemon: `/metrics` scraped and parsed as Prometheus
//! does, its counters checked against what was fed and what the output holds; `/readyz`
//! false while partitions restore and true after; `/livez` false while a pipeline loop is
//! stalled, and the daemon's exit when one stays stalled past `stuck_timeout`.

#![allow(clippy::unwrap_used)] // tests panic on failure, by design

mod common;

use std::time::{Duration, Instant};

use common::{CountPipeline, count_input, expected_counts};

/// A port nobody listens on now.
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into()
}

/// (status, body) of `GET http://127.0.0.1:port/path`; `None` while nothing listens.
fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut response = agent()
        .get(&format!("http://127.0.0.1:{port}{path}"))
        .call()
        .ok()?;
    let status = response.status().as_u16();
    let body = response.body_mut().read_to_string().ok()?;
    Some((status, body))
}

/// Every sample of `/metrics`, parsed by a Prometheus text-format parser.
fn scrape(port: u16) -> Vec<prometheus_parse::Sample> {
    let (status, body) = get(port, "/metrics").expect("/metrics answers");
    assert_eq!(status, 200, "{body}");
    let lines = body.lines().map(|l| Ok(l.to_string()));
    prometheus_parse::Scrape::parse(lines)
        .expect("the metrics parse")
        .samples
}

/// The sum of `metric`'s samples whose labels include every one of `labels`.
fn sum(samples: &[prometheus_parse::Sample], metric: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| s.metric == metric)
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            prometheus_parse::Value::Histogram(_) | prometheus_parse::Value::Summary(_) => 0.0,
        })
        .sum()
}

fn with_admin(cp: &CountPipeline, port: u16, extra: &str) {
    cp.rewrite_config("rocksdb", "300ms", |t| {
        t.replace(
            "\n[restart]",
            &format!("\n[admin]\nlisten = \"127.0.0.1:{port}\"\n{extra}\n[restart]"),
        )
    });
}

/// Polls `check` every 200 ms until it is `Ok`, failing with its last error after `timeout`.
fn eventually<T>(timeout: Duration, mut check: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        match check() {
            Ok(v) => return v,
            Err(e) if Instant::now() > deadline => panic!("{e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

#[test]
fn metrics_count_what_was_fed_and_readiness_follows_the_restore() {
    let Some(mut cp) = CountPipeline::new("ops-metrics", 2, "rocksdb", "300ms") else {
        return;
    };
    let port = free_port();
    with_admin(&cp, port, "");
    cp.daemon.start();
    let input = count_input(2_000, 50);
    cp.produce(&input);
    cp.assert_exact(&expected_counts(&input), Duration::from_secs(90));
    let output = cp.output(2_000, Duration::from_secs(30));
    let repartition = format!("flumen-{}-count-repartition", cp.name);

    // the commit that made the output visible is counted right after it returns
    let samples = eventually(Duration::from_secs(15), || {
        let s = scrape(port);
        let committed = sum(
            &s,
            "flumen_input_records_committed_total",
            &[("topic", &cp.source)],
        );
        let out = sum(&s, "flumen_output_records_total", &[("topic", &cp.sink)]);
        if committed == 2_000.0 && out == output.len() as f64 {
            Ok(s)
        } else {
            Err(format!(
                "committed inputs {committed} (fed 2000), committed outputs {out} (the sink holds {})",
                output.len()
            ))
        }
    });
    let s = &samples;
    let processed = sum(
        s,
        "flumen_input_records_processed_total",
        &[("topic", &cp.source)],
    );
    assert!(processed >= 2_000.0, "processed {processed}");
    // every source record crossed the repartition topic once, committed
    let through = sum(s, "flumen_output_records_total", &[("topic", &repartition)]);
    let read_back = sum(
        s,
        "flumen_input_records_committed_total",
        &[("topic", &repartition)],
    );
    assert_eq!((through, read_back), (2_000.0, 2_000.0));
    assert!(
        sum(
            s,
            "flumen_input_processed_bytes_total",
            &[("topic", &cp.source)]
        ) > 0.0
    );
    assert!(sum(s, "flumen_transactions_total", &[("outcome", "committed")]) >= 1.0);
    assert!(sum(s, "flumen_checkpoint_duration_seconds_count", &[]) >= 1.0);
    assert_eq!(sum(s, "flumen_records_skipped_total", &[]), 0.0);
    // both stateful partitions report their state
    let states = s
        .iter()
        .filter(|x| {
            x.metric == "flumen_state_size_bytes" && x.labels.get("topic") == Some(&repartition)
        })
        .count();
    assert_eq!(
        states, 2,
        "state gauges of the repartition topic's partitions"
    );
    assert!(sum(s, "flumen_block_cache_usage_bytes", &[]) > 0.0);
    // caught up: no lag on any partition, and the probes say yes
    eventually(Duration::from_secs(15), || {
        let s = scrape(port);
        let lags: Vec<f64> = s
            .iter()
            .filter(|x| x.metric == "flumen_consumer_lag")
            .map(|x| match x.value {
                prometheus_parse::Value::Gauge(v) => v,
                _ => -1.0,
            })
            .collect();
        // 2 source and 2 repartition partitions
        if lags.len() == 4 && lags.iter().all(|l| *l == 0.0) {
            Ok(())
        } else {
            Err(format!("consumer lag {lags:?}"))
        }
    });
    let (live, body) = get(port, "/livez").unwrap();
    assert_eq!(live, 200, "{body}");
    let (ready, body) = get(port, "/readyz").unwrap();
    assert_eq!(ready, 200, "{body}");
    let report: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(report["pipelines"][0]["phase"], "running", "{body}");
    assert!(cp.daemon.terminate(Duration::from_secs(30)).success());

    // restart with each partition's restore slowed: not ready while it restores, alive
    // throughout, ready once restored
    cp.daemon
        .start_with(&[("FAILPOINTS", "restore::slow=sleep(4000)")]);
    let body = eventually(Duration::from_secs(30), || match get(port, "/readyz") {
        Some((503, body)) if body.contains("\"restoring\"") => Ok(body),
        other => Err(format!("/readyz during the restore: {other:?}")),
    });
    assert!(body.contains("restoring the state"), "{body}");
    let (live, body) = get(port, "/livez").unwrap();
    assert_eq!(live, 200, "alive while restoring: {body}");
    eventually(Duration::from_secs(60), || match get(port, "/readyz") {
        Some((200, _)) => Ok(()),
        other => Err(format!("/readyz after the restore: {other:?}")),
    });
    let s = scrape(port);
    assert!(sum(s.as_slice(), "flumen_restore_duration_seconds_count", &[]) >= 1.0);
    assert!(sum(&s, "flumen_restore_bytes_total", &[]) > 0.0);
    // nothing more was fed: nothing more is output
    let more = count_input(300, 50);
    cp.produce(&more);
    let all: Vec<_> = input.iter().chain(&more).cloned().collect();
    cp.assert_exact(&expected_counts(&all), Duration::from_secs(60));
    assert!(cp.daemon.terminate(Duration::from_secs(30)).success());
}

#[test]
fn livez_fails_while_a_pipeline_loop_is_stalled() {
    let Some(mut cp) = CountPipeline::new("ops-livez", 1, "rocksdb", "300ms") else {
        return;
    };
    let port = free_port();
    // the shortest liveness timeout allowed: the transaction timeout (its least, 10 s) + 10 s
    cp.rewrite_config("rocksdb", "300ms", |t| {
        t.replace("[kafka]\n", "[kafka]\ntransaction_timeout = \"10s\"\n").replace(
            "\n[restart]",
            &format!("\n[admin]\nlisten = \"127.0.0.1:{port}\"\nliveness_timeout = \"20s\"\n\n[restart]"),
        )
    });
    // the loop runs freely for a while, then one iteration stalls for 30 s (as a call into
    // librdkafka that does not return would)
    cp.daemon
        .start_with(&[("FAILPOINTS", "pipeline::loop=150*off->1*sleep(30000)")]);
    let body = eventually(Duration::from_secs(90), || match get(port, "/livez") {
        Some((503, body)) => Ok(body),
        other => Err(format!("/livez never failed: {other:?}")),
    });
    let report: serde_json::Value = serde_json::from_str(&body).unwrap();
    let reason = report["pipelines"][0]["reason"]
        .as_str()
        .unwrap_or_default();
    assert!(reason.contains("has not come round its loop"), "{body}");
    // once the loop comes round again it is alive, and it processed what came meanwhile
    eventually(Duration::from_secs(30), || match get(port, "/livez") {
        Some((200, _)) => Ok(()),
        other => Err(format!("/livez after the stall: {other:?}")),
    });
    let input = count_input(200, 20);
    cp.produce(&input);
    cp.assert_exact(&expected_counts(&input), Duration::from_secs(60));
    assert!(cp.daemon.terminate(Duration::from_secs(30)).success());
}

#[test]
fn a_daemon_with_a_stuck_pipeline_thread_exits_and_the_next_run_resumes() {
    let Some(mut cp) = CountPipeline::new("ops-stuck", 1, "rocksdb", "300ms") else {
        return;
    };
    // the shortest stuck timeout allowed: the transaction timeout (its least, 10 s) + 10 s
    cp.rewrite_config("rocksdb", "300ms", |t| {
        let t = t.replace("[kafka]\n", "[kafka]\ntransaction_timeout = \"10s\"\n");
        format!("stuck_timeout = \"20s\"\nshutdown_timeout = \"5s\"\n{t}")
    });
    let input = count_input(200, 20);
    cp.produce(&input);
    // the loop runs for a while, then one iteration stalls for 10 minutes, as a call into
    // librdkafka that never returns did (CHAOS.md, finding 15)
    cp.daemon
        .start_with(&[("FAILPOINTS", "pipeline::loop=150*off->1*sleep(600000)")]);
    let began = Instant::now();
    let status = cp.daemon.wait(Duration::from_secs(180));
    let log = cp.daemon.last_log();
    let status = status.unwrap_or_else(|| panic!("the daemon did not give up\n{log}"));
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(
        log.contains("(thread 0) has not come round its loop for")
            && log.contains("(stuck_timeout 20 s)")
            && log.contains("exiting so that a supervisor starts the daemon again"),
        "{log}"
    );
    eprintln!("the daemon gave up after {:?}", began.elapsed());
    // the next run resumes from the last checkpoint: every record counted once
    cp.daemon.start();
    let more = count_input(100, 20);
    cp.produce(&more);
    let all: Vec<_> = input.iter().chain(&more).cloned().collect();
    cp.assert_exact(&expected_counts(&all), Duration::from_secs(60));
    assert!(cp.daemon.terminate(Duration::from_secs(30)).success());
}

/// `chromium`, which `scripts/setup.sh --test` installs; a missing browser fails the test.
fn chromium() -> std::path::PathBuf {
    for name in ["chromium", "chromium-browser"] {
        for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()) {
            let path = dir.join(name);
            if path.is_file() {
                return path;
            }
        }
    }
    panic!(
        "chromium is not installed: run scripts/setup.sh --test (as root) or apt-get install chromium"
    );
}

/// The page at `url` as headless Chromium renders it (its DOM after load), and the browser's
/// log, where console messages and page errors appear.
fn browse(url: &str, profile: &std::path::Path) -> (String, String) {
    let out = std::process::Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--enable-logging=stderr",
            "--v=0",
            "--virtual-time-budget=3000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(["--dump-dom", url])
        .output()
        .expect("run chromium");
    assert!(
        out.status.success(),
        "chromium: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn post_savepoints(port: u16, token: Option<&str>, body: &str) -> (u16, String) {
    let mut request = agent()
        .post(&format!("http://127.0.0.1:{port}/api/v1/savepoints"))
        .content_type("application/json");
    if let Some(t) = token {
        request = request.header("Authorization", &format!("Bearer {t}"));
    }
    let mut response = request.send(body.as_bytes()).unwrap();
    let status = response.status().as_u16();
    (status, response.body_mut().read_to_string().unwrap())
}

#[test]
fn the_admin_api_takes_savepoints_only_with_the_token_and_the_page_shows_the_pipeline() {
    let Some(mut cp) = CountPipeline::new("ops-api", 2, "rocksdb", "300ms") else {
        return;
    };
    let port = free_port();
    let token = "s3cr3t-t0ken-0f-the-admin-api";
    let token_file = cp.dir().join("admin.token");
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    with_admin(
        &cp,
        port,
        &format!("token_file = \"{}\"", token_file.display()),
    );
    cp.daemon.start();
    let input = count_input(300, 30);
    cp.produce(&input);
    cp.assert_exact(&expected_counts(&input), Duration::from_secs(90));

    // no token, a wrong one: refused, and no savepoint is written
    let savepoints = cp.dir().join("savepoints");
    let body = format!("{{\"dir\": \"{}\"}}", savepoints.display());
    let (status, text) = post_savepoints(port, None, &body);
    assert_eq!(status, 401, "{text}");
    let (status, text) = post_savepoints(port, Some("not-the-token-at-all"), &body);
    assert_eq!(status, 403, "{text}");
    assert!(
        !savepoints.try_exists().unwrap(),
        "a refused request wrote {}",
        savepoints.display()
    );
    // the CLI goes over the API with the config's token: one pipeline, by name
    let config = cp.daemon.config.display().to_string();
    let out = common::flumen(&[
        "savepoint",
        "trigger",
        "--config",
        &config,
        "--pipeline",
        &cp.name,
        "--dir",
        &savepoints.display().to_string(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(savepoints.join(&cp.name).is_dir(), "{stdout}");
    let out = common::flumen(&[
        "savepoint",
        "trigger",
        "--config",
        &config,
        "--pipeline",
        "nope",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no pipeline \"nope\" runs here"));

    // a body over the limit is refused; a client that sends nothing holds up nobody and is
    // dropped once the header timeout (10 s) passes
    let (status, _) = post_savepoints(port, Some(token), &"x".repeat(100_000));
    assert_eq!(status, 413);
    let mut silent = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let connected = Instant::now();
    assert_eq!(get(port, "/livez").map(|(s, _)| s), Some(200));
    silent
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut byte = [0u8; 1];
    let read = std::io::Read::read(&mut silent, &mut byte);
    let held = connected.elapsed();
    assert!(
        held >= Duration::from_secs(9) && held < Duration::from_secs(25),
        "the silent connection ended after {held:?}: {read:?}"
    );
    // the status, as JSON
    let status: serde_json::Value = eventually(Duration::from_secs(15), || {
        let (code, body) = get(port, "/api/v1/status").ok_or("no answer")?;
        let s: serde_json::Value = serde_json::from_str(&body).map_err(|e| e.to_string())?;
        let p = &s["pipelines"][0];
        match (
            code,
            p["records_committed"].as_u64(),
            p["partitions"].as_array().map(Vec::len),
        ) {
            (200, Some(300), Some(4)) => Ok(s),
            other => Err(format!("status {other:?}: {body}")),
        }
    });
    let p = &status["pipelines"][0];
    assert_eq!(p["ready"]["ok"], true, "{p}");
    assert!(!p["checkpoints"].as_array().unwrap().is_empty(), "{p}");
    // and through the CLI
    let out = common::flumen(&["status", "--config", &config, "--output", "json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cli: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(cli["pipelines"][0]["records_committed"], 300, "{cli}");
    let out = common::flumen(&["status", "--config", &config]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("300 records committed") && text.contains("ready yes"),
        "{text}"
    );

    // the page, in a real browser: it loads without a console error and shows the figures
    let profile = tempfile::tempdir().unwrap();
    let (dom, log) = browse(&format!("http://127.0.0.1:{port}/"), profile.path());
    assert!(
        dom.contains(&format!("id=\"pipeline-{}-0\"", cp.name)),
        "{dom}"
    );
    assert!(dom.contains("<b class=\"records\">300</b>"), "{dom}");
    assert!(dom.contains(&format!("{}/0", cp.source)), "{dom}");
    assert!(
        dom.contains("<polyline") || dom.contains("collecting samples"),
        "{dom}"
    );
    let errors: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(":CONSOLE(") || l.contains("Uncaught"))
        .collect();
    assert!(errors.is_empty(), "console messages: {errors:#?}");
    assert!(cp.daemon.terminate(Duration::from_secs(30)).success());
}
