//! Every thread's stack of a daemon whose pipeline thread is stuck (CHAOS.md, finding 15: the
//! daemon exits 1 once a thread has not come round its loop for `stuck_timeout`, but which
//! call held it was a guess). While a scenario runs, a watcher probes the daemon's `/livez`
//! every few seconds; at its first 503 for a process (a thread silent past the liveness
//! timeout, well before `stuck_timeout`) it attaches gdb and writes every thread's backtrace
//! beside the daemon's logs (`stacks-<pid>.txt`). Without gdb it says so once.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How often `/livez` is probed.
const EVERY: Duration = Duration::from_secs(5);
/// How long gdb may take to attach and walk the threads.
const GDB_LIMIT: Duration = Duration::from_secs(60);

pub struct Watcher {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watcher {
    /// Watches the daemon answering on `admin_port` whose command line names a path under
    /// `dir` (where the stacks are written).
    pub fn start(admin_port: u16, dir: PathBuf) -> Watcher {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut dumped: Vec<u32> = Vec::new();
            let mut no_gdb = false;
            while !s.load(Ordering::Relaxed) {
                std::thread::sleep(EVERY);
                if no_gdb || crate::daemon::probe(admin_port, "/livez") != 503 {
                    continue;
                }
                let Some(pid) = daemon_pid(&dir).filter(|p| !dumped.contains(p)) else {
                    continue;
                };
                dumped.push(pid);
                match dump(pid, &dir) {
                    Ok(path) => eprintln!(
                        "chaos:   /livez said 503: the stacks of the daemon (pid {pid}) are in {}",
                        path.display()
                    ),
                    Err(e) => {
                        eprintln!("chaos:   /livez said 503, and no stacks: {e}");
                        no_gdb = true;
                    }
                }
            }
        });
        Watcher {
            stop,
            thread: Some(thread),
        }
    }

    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take()
            && t.join().is_err()
        {
            eprintln!("chaos:   the stacks watcher panicked");
        }
    }
}

/// The `flumen run` process whose command line names a path under `dir`.
fn daemon_pid(dir: &Path) -> Option<u32> {
    let needle = dir.to_string_lossy().into_owned();
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        (cmdline.contains(" run --config ") && cmdline.contains(&needle)).then_some(pid)
    })
}

/// Writes every thread's backtrace of `pid` (gdb, batch mode) to `dir`.
fn dump(pid: u32, dir: &Path) -> Result<PathBuf, String> {
    let path = dir.join(format!("stacks-{pid}.txt"));
    let out = std::fs::File::create(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let err = out.try_clone().map_err(|e| e.to_string())?;
    let mut gdb = Command::new("gdb")
        .args([
            "-p",
            &pid.to_string(),
            "-batch",
            "-ex",
            "thread apply all bt",
        ])
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|e| format!("gdb could not be started ({e}); install gdb for stacks"))?;
    let began = Instant::now();
    while began.elapsed() < GDB_LIMIT {
        if let Ok(Some(_)) = gdb.try_wait() {
            return Ok(path);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    gdb.kill().ok();
    gdb.wait().ok();
    Err(format!(
        "gdb took over {GDB_LIMIT:?}; what it wrote is in {}",
        path.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A process whose command line names the directory is found, and gdb writes its stack.
    #[test]
    fn the_daemon_under_a_directory_is_found_and_its_stacks_written() {
        let dir = std::env::temp_dir().join(format!("chaos-stacks-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("a").join("flumen.toml");
        let mut child = Command::new("sh")
            .args(["-c", "sleep 30", "run", "--config"])
            .arg(&config)
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(daemon_pid(&dir), Some(child.id()));
        assert_eq!(daemon_pid(&dir.join("elsewhere")), None);
        let dumped = dump(child.id(), &dir);
        child.kill().ok();
        child.wait().ok();
        match dumped {
            Ok(path) => {
                let text = std::fs::read_to_string(path).unwrap();
                assert!(text.contains("#0"), "no frame in gdb's output: {text}");
            }
            // a machine without gdb: the error says what to install
            Err(e) => assert!(e.contains("install gdb"), "{e}"),
        }
        std::fs::remove_dir_all(&dir).ok();
    }
}
