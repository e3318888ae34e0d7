//! How a daemon stops: a teardown that hangs after the final checkpoints does not turn a
//! clean stop into a failed one (CHAOS.md, finding 16); a pipeline that cannot finish holds a
//! stop up for at most `shutdown_timeout`, and a second signal not at all.

#![allow(clippy::unwrap_used)] // tests panic on failure, by design

mod common;

use std::time::{Duration, Instant};

use common::{CountPipeline, count_input, expected_counts};

fn sigterm(pid: u32) {
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// A pipeline that cannot finish (here: a restore slowed to 30 s) holds up a stop for at most
/// `shutdown_timeout`; a second SIGTERM ends the daemon at once. Both exit non-zero.
#[test]
fn a_stop_waits_at_most_the_shutdown_timeout_and_a_second_signal_not_at_all() {
    let Some(mut cp) = CountPipeline::new("ops-shutdown", 1, "rocksdb", "300ms") else {
        return;
    };
    cp.rewrite_config("rocksdb", "300ms", |t| {
        format!("shutdown_timeout = \"3s\"\n{t}")
    });
    cp.daemon.start();
    let input = count_input(100, 10);
    cp.produce(&input);
    cp.assert_exact(&expected_counts(&input), Duration::from_secs(90));
    assert!(cp.daemon.terminate(Duration::from_secs(30)).success());

    for second_signal in [false, true] {
        cp.daemon
            .start_with(&[("FAILPOINTS", "restore::slow=sleep(30000)")]);
        let began = Instant::now();
        while !cp.daemon.last_log().contains("assignment received") {
            assert!(
                began.elapsed() < Duration::from_secs(60),
                "{}",
                cp.daemon.all_logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let pid = cp.daemon.pid().unwrap();
        let asked = Instant::now();
        sigterm(pid);
        if second_signal {
            std::thread::sleep(Duration::from_millis(500));
            sigterm(pid);
        }
        let status = cp
            .daemon
            .wait(Duration::from_secs(20))
            .expect("the daemon exits");
        let took = asked.elapsed();
        let log = cp.daemon.last_log();
        assert_eq!(status.code(), Some(1), "{log}");
        if second_signal {
            assert!(took < Duration::from_secs(3), "{took:?}\n{log}");
            assert!(log.contains("a second signal: exiting at once"), "{log}");
        } else {
            assert!(
                took >= Duration::from_secs(3) && took < Duration::from_secs(10),
                "{took:?}\n{log}"
            );
            // naming the thread it waited for, and where that thread was
            assert!(
                log.contains("after shutdown began (shutdown_timeout)")
                    && log.contains(&format!(
                        "pipeline {} (thread 0) in phase Restoring",
                        cp.name
                    )),
                "{log}"
            );
        }
    }
}

/// A pipeline whose teardown hangs (a failpoint stalls it for a minute, as a client that does
/// not close would) after its final checkpoint: a SIGTERM still ends the daemon with exit 0,
/// within its two limits (`shutdown_timeout` for the pipelines to report, the same again for
/// their threads), naming the thread left behind; the next run counts every record once.
/// Before the fix the daemon waited for the teardown and exited 1 (finding 16).
#[test]
fn a_teardown_that_hangs_after_the_final_checkpoint_still_exits_0() {
    let Some(mut cp) = CountPipeline::new("stop-teardown", 2, "rocksdb", "300ms") else {
        return;
    };
    cp.rewrite_config("rocksdb", "300ms", |t| {
        format!("shutdown_timeout = \"4s\"\n{t}")
    });
    let input = count_input(100, 10);
    cp.produce(&input);
    cp.daemon
        .start_with(&[("FAILPOINTS", "pipeline::close=sleep(60000)")]);
    cp.assert_exact(&expected_counts(&input), Duration::from_secs(90));
    let asked = Instant::now();
    sigterm(cp.daemon.pid().unwrap());
    let status = cp.daemon.wait(Duration::from_secs(60));
    let took = asked.elapsed();
    let log = cp.daemon.last_log();
    let status = status.unwrap_or_else(|| panic!("the daemon did not stop\n{log}"));
    eprintln!("the daemon stopped {took:?} after SIGTERM: {status}");
    assert!(status.success(), "{status} after {took:?}\n{log}");
    assert!(took < Duration::from_secs(15), "{took:?}\n{log}");
    assert!(
        log.contains("pipeline stopped") && log.contains("still tearing down"),
        "{log}"
    );
    // the next run resumes from the final checkpoint: nothing counted twice
    cp.daemon.start();
    let more = count_input(50, 10);
    cp.produce(&more);
    let all: Vec<_> = input.iter().chain(&more).cloned().collect();
    cp.assert_exact(&expected_counts(&all), Duration::from_secs(90));
    assert!(cp.daemon.terminate(Duration::from_secs(30)).success());
}
