//! Crashes at random moments and at chosen points of the checkpoint protocol: the keyed count
//! on the read_committed output stays exactly 1..=n per user.

#![allow(clippy::unwrap_used)] // tests panic on failure, by design

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// A keyed count on 4 partitions whose input is fed over `feed_for` in the background.
struct Scenario {
    pipeline: common::CountPipeline,
    expected: HashMap<String, u64>,
    feeder: Option<std::thread::JoinHandle<()>>,
}

impl Scenario {
    fn new(records: usize, users: usize, interval: &str, feed_for: Duration) -> Option<Self> {
        let pipeline = common::CountPipeline::new("crash", 4, "rocksdb", interval)?;
        let input = common::count_input(records, users);
        let expected = common::expected_counts(&input);
        let (bootstrap, source) = (pipeline.bootstrap.clone(), pipeline.source.clone());
        let feeder = std::thread::spawn(move || {
            let chunks = 20;
            for chunk in input.chunks(input.len().div_ceil(chunks)) {
                common::produce_all(&bootstrap, &source, chunk);
                std::thread::sleep(feed_for / chunks as u32);
            }
        });
        Some(Self {
            pipeline,
            expected,
            feeder: Some(feeder),
        })
    }

    fn daemon(&mut self) -> &mut common::Daemon {
        &mut self.pipeline.daemon
    }

    /// `kills` times: wait a random time in `pause_ms`, SIGKILL the daemon, start it again.
    fn kill_randomly(&mut self, kills: usize, pause_ms: std::ops::Range<u64>) {
        self.daemon().kill_randomly(kills, pause_ms);
    }

    fn finish_and_check(mut self) {
        if let Some(f) = self.feeder.take() {
            f.join().expect("feeder");
        }
        if !self.daemon().is_running() {
            self.daemon().start();
        }
        self.pipeline
            .assert_exact(&self.expected, Duration::from_secs(180));
        let status = self.daemon().terminate(Duration::from_secs(40));
        assert!(
            status.success(),
            "{status}\n{}",
            self.pipeline.daemon.all_logs()
        );
    }
}

#[test]
fn random_sigkills_lose_and_duplicate_nothing() {
    let Some(mut s) = Scenario::new(20_000, 500, "300ms", Duration::from_secs(20)) else {
        return;
    };
    s.daemon().start();
    let started = Instant::now();
    s.kill_randomly(10, 500..3_000);
    eprintln!("10 SIGKILLs in {:?}", started.elapsed());
    s.finish_and_check();
}

/// `emit = "on_checkpoint"` (each key's latest count once per checkpoint) through SIGKILLs: the
/// final counts are exact and no update is emitted twice; far fewer outputs than inputs.
#[test]
fn sigkills_with_emit_on_checkpoint_keep_final_counts_exact() {
    // 50 users: each checkpoint interval updates a user many times, and emits it once
    let Some(mut s) = Scenario::new(20_000, 50, "300ms", Duration::from_secs(15)) else {
        return;
    };
    s.pipeline.rewrite_config("rocksdb", "300ms", |t| {
        t.replace(
            r#"{ type = "count" }"#,
            r#"{ type = "count", emit = "on_checkpoint" }"#,
        )
    });
    s.daemon().start();
    s.kill_randomly(5, 1_000..3_000);
    if let Some(f) = s.feeder.take() {
        f.join().expect("feeder");
    }
    let deadline = Instant::now() + Duration::from_secs(180);
    let output = loop {
        let output = s.pipeline.output(s.expected.len(), Duration::from_secs(30));
        match common::check_final_counts(&output, &s.expected) {
            Ok(()) => break output,
            Err(e) if Instant::now() > deadline => {
                panic!("{e}\n{}", s.pipeline.daemon.all_logs())
            }
            Err(_) => std::thread::sleep(Duration::from_secs(1)),
        }
    };
    assert!(
        output.len() < 20_000 / 2,
        "{} outputs for 20,000 inputs: updates were not held until the checkpoint",
        output.len()
    );
    let status = s.daemon().terminate(Duration::from_secs(40));
    assert!(
        status.success(),
        "{status}\n{}",
        s.pipeline.daemon.all_logs()
    );
}

/// Starts with a failpoint that aborts the process at the (2 + round + 1)-th pass of `point`,
/// waits for that crash, and does it three times; then checks the output.
fn crash_at(point: &str) {
    let Some(mut s) = Scenario::new(8_000, 200, "300ms", Duration::from_secs(12)) else {
        return;
    };
    for round in 0..3 {
        let spec = format!("{point}={}*off->return", 2 + round);
        s.daemon().start_with(&[("FAILPOINTS", &spec)]);
        let status = s.daemon().wait(Duration::from_secs(60));
        let logs = s.pipeline.daemon.all_logs();
        let status = status.unwrap_or_else(|| panic!("no crash at {spec}\n{logs}"));
        assert!(
            !status.success(),
            "expected a crash at {spec}, got {status}\n{logs}"
        );
        assert!(
            s.pipeline.daemon.last_log().contains(point),
            "the crash was not the failpoint's\n{logs}"
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
