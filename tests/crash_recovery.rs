//! Crashes at random moments and at chosen points of the checkpoint protocol: the keyed count
//! on the read_committed output stays exactly 1..=n per user.

#![allow(clippy::unwrap_used)] // tests panic on failure, by design

mod common;

use std::time::{Duration, Instant};

use rand::Rng;

struct Scenario {
    bootstrap: String,
    source: String,
    sink: String,
    expected: std::collections::HashMap<String, u64>,
    records: usize,
    feeder: Option<std::thread::JoinHandle<()>>,
    daemon: common::Daemon,
    _tmp: tempfile::TempDir,
}

impl Scenario {
    /// Topics with 4 partitions, and input fed over `feed_for` in the background.
    fn new(records: usize, users: usize, interval: &str, feed_for: Duration) -> Option<Self> {
        let bootstrap = common::bootstrap()?;
        let name = common::rand_name("crash");
        let (source, sink) = (format!("{name}-events"), format!("{name}-counts"));
        common::create_topic(&bootstrap, &source, 4);
        common::create_topic(&bootstrap, &sink, 4);
        let input = common::count_input(records, users);
        let expected = common::expected_counts(&input);
        let tmp = tempfile::tempdir().unwrap();
        let daemon = common::Daemon::new(
            tmp.path(),
            &common::count_config(&bootstrap, &name, &source, &sink, "rocksdb", interval),
        );
        let (b, s) = (bootstrap.clone(), source.clone());
        let feeder = std::thread::spawn(move || {
            let chunks = 20;
            let per = input.len().div_ceil(chunks);
            for chunk in input.chunks(per) {
                common::produce_all(&b, &s, chunk);
                std::thread::sleep(feed_for / chunks as u32);
            }
        });
        Some(Self {
            bootstrap,
            source,
            sink,
            expected,
            records,
            feeder: Some(feeder),
            daemon,
            _tmp: tmp,
        })
    }

    fn finish_and_check(mut self) {
        if let Some(f) = self.feeder.take() {
            f.join().expect("feeder");
        }
        if !self.daemon.is_running() {
            self.daemon.start();
        }
        let output = common::read_all(
            &self.bootstrap,
            &self.sink,
            "read_committed",
            self.records,
            Duration::from_secs(180),
        );
        if let Err(e) = common::check_counts(&output, &self.expected) {
            panic!(
                "{e}\n{} outputs for {} inputs (source {})\n{}",
                output.len(),
                self.records,
                self.source,
                self.daemon.all_logs()
            );
        }
        let status = self.daemon.terminate(Duration::from_secs(40));
        assert!(status.success(), "{status}\n{}", self.daemon.all_logs());
    }
}

#[test]
fn random_sigkills_lose_and_duplicate_nothing() {
    let Some(mut s) = Scenario::new(20_000, 500, "300ms", Duration::from_secs(20)) else {
        return;
    };
    let mut rng = rand::rng();
    s.daemon.start();
    let started = Instant::now();
    for kill in 0..10 {
        std::thread::sleep(Duration::from_millis(rng.random_range(500..3_000)));
        assert!(
            s.daemon.is_running(),
            "flumen exited on its own before kill {kill}\n{}",
            s.daemon.all_logs()
        );
        s.daemon.kill9();
        s.daemon.start();
    }
    eprintln!("10 SIGKILLs in {:?}", started.elapsed());
    s.finish_and_check();
}

/// Starts with a failpoint that aborts the process at the `after`+1-th pass of `point`,
/// waits for that crash, restarts, and repeats; then checks the output.
fn crash_at(point: &str) {
    let Some(mut s) = Scenario::new(8_000, 200, "300ms", Duration::from_secs(12)) else {
        return;
    };
    for round in 0..3 {
        let spec = format!("{point}={}*off->return", 2 + round);
        s.daemon.start_with(&[("FAILPOINTS", &spec)]);
        let status = s
            .daemon
            .wait(Duration::from_secs(60))
            .unwrap_or_else(|| panic!("no crash at {spec}\n{}", s.daemon.all_logs()));
        assert!(
            !status.success(),
            "expected a crash at {spec}, got {status}\n{}",
            s.daemon.all_logs()
        );
        assert!(
            s.daemon
                .last_log()
                .contains(&format!("failpoint = \"{point}\""))
                || s.daemon.last_log().contains(point),
            "the crash was not the failpoint's\n{}",
            s.daemon.all_logs()
        );
    }
    s.finish_and_check();
}

#[test]
fn crash_between_snapshot_and_commit() {
    crash_at("checkpoint::after_snapshot");
}

#[test]
fn crash_after_sending_offsets_before_commit() {
    crash_at("checkpoint::before_commit");
}

#[test]
fn crash_between_commit_and_local_mark() {
    crash_at("checkpoint::after_commit");
}
