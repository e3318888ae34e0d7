//! The control socket and the daemon's locks: a client that connects and says nothing holds
//! up no `flumen stop`; a second daemon on the same state directory is refused before it
//! touches anything; what the daemon writes is its user's alone (0700 directories, a 0600
//! socket).

#![allow(clippy::unwrap_used)] // tests panic on failure, by design

mod common;

use std::os::unix::fs::PermissionsExt as _;
use std::time::{Duration, Instant};

use common::{CountPipeline, count_input, expected_counts};

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

#[test]
fn a_silent_client_does_not_block_stop_and_everything_is_private() {
    let Some(mut cp) = CountPipeline::new("ctl-silent", 2, "rocksdb", "300ms") else {
        return;
    };
    cp.daemon.start();
    let batch = count_input(500, 20);
    cp.produce(&batch);
    cp.assert_exact(&expected_counts(&batch), Duration::from_secs(90));

    let dir = cp.dir().to_path_buf();
    let socket = dir.join("state/control/flumen.sock");
    assert_eq!(mode(&socket), 0o600);
    for private in [
        dir.join("state/control"),
        dir.join("state").join(&cp.name),
        dir.join("checkpoints").join(&cp.name),
    ] {
        assert_eq!(mode(&private), 0o700, "{}", private.display());
    }

    // connects, and never sends a request
    let _silent = std::os::unix::net::UnixStream::connect(&socket).unwrap();
    let started = Instant::now();
    let config = cp.daemon.config.display().to_string();
    let savepoints = dir.join("savepoints");
    let mut stop = std::process::Command::new(env!("CARGO_BIN_EXE_flumen"))
        .args(["stop", "--config", &config, "--savepoint"])
        .arg(&savepoints)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let status = loop {
        if let Some(status) = stop.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(60) {
            stop.kill().unwrap();
            panic!(
                "flumen stop is still waiting behind a silent client\n{}",
                cp.daemon.all_logs()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "{status}\n{}", cp.daemon.all_logs());
    let exited = cp.daemon.wait(Duration::from_secs(30));
    assert!(
        exited.is_some_and(|s| s.success()),
        "{}",
        cp.daemon.all_logs()
    );
    assert_eq!(mode(&savepoints.join(&cp.name)), 0o700);
}

/// A second daemon with the same state directory (and its own checkpoint directory, so it
/// would bind a socket of its own) is refused at once, and the first runs on.
#[test]
fn a_second_daemon_on_the_same_state_directory_is_refused() {
    let Some(mut cp) = CountPipeline::new("ctl-twice", 2, "rocksdb", "300ms") else {
        return;
    };
    cp.daemon.start();
    let batch = count_input(300, 20);
    cp.produce(&batch);
    cp.assert_exact(&expected_counts(&batch), Duration::from_secs(90));

    let text = std::fs::read_to_string(&cp.daemon.config).unwrap();
    let second_dir = tempfile::tempdir().unwrap();
    let text = text.replace(
        &format!("{}/checkpoints", cp.dir().display()),
        &format!("{}/checkpoints", second_dir.path().display()),
    );
    let mut second = common::Daemon::new(second_dir.path(), &text);
    second.start();
    let status = second
        .wait(Duration::from_secs(30))
        .unwrap_or_else(|| panic!("the second daemon runs\n{}", second.all_logs()));
    let log = second.all_logs();
    assert!(!status.success(), "{log}");
    assert!(
        log.contains("another Flumen daemon already runs with this state directory"),
        "{log}"
    );
    assert!(cp.daemon.is_running(), "{}", cp.daemon.all_logs());
    assert!(cp.daemon.terminate(Duration::from_secs(30)).success());
}
