//! Recovery after SIGKILL at a given state size: the `count` workload over `keys` distinct keys
//! (so the state holds `keys` entries), run to the end; then the engine is killed with SIGKILL,
//! restarted at once on the same local state (or, with `wipe`, on a wiped disk: a partition
//! moved to a new instance; Flumen restores from its object store, Kafka Streams replays its
//! changelog), and one new record is sent. The figure is the time from the restart to that
//! record's committed output. The output must still pass the gate: every key counted exactly
//! once, the new record included.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::Result;
use rdkafka::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

use crate::engine::{self, Engine, Programs, Spec};
use crate::topics::{self, Reader};
use crate::workload::{self, Gate, Workload};

pub struct Plan<'a> {
    pub bootstrap: &'a str,
    pub engine: Engine,
    pub keys: u64,
    pub interval: Duration,
    pub tag: &'a str,
    pub work_dir: &'a std::path::Path,
    /// Restart on a wiped disk.
    pub wipe: bool,
}

pub struct RecoveryOutcome {
    pub engine: Engine,
    pub keys: u64,
    pub interval: Duration,
    /// From the first start to the output of every key.
    pub fill_s: f64,
    /// From the restart after SIGKILL to the new record's committed output.
    pub recovery_s: f64,
    /// Whether the restart was on a wiped disk.
    pub wiped: bool,
    /// The engine's local state directory's size at the kill (bytes).
    pub state_bytes: u64,
    pub verdict: Result<(), String>,
}

const SIZE: usize = 100;
const STALL: Duration = Duration::from_secs(180);

pub fn measure(programs: &Programs, p: &Plan<'_>) -> Result<RecoveryOutcome> {
    let input = format!("bench-rec-in-{}", p.tag);
    let output = format!("bench-rec-out-{}", p.tag);
    topics::create(p.bootstrap, &[&input, &output])?;
    topics::preload_with(p.bootstrap, &input, p.keys, |i| {
        let (k, v) = workload::record_of(i, SIZE, &format!("k{i}"), None);
        (k, v, None)
    })?;
    let mut expected: HashMap<String, u64> = (0..p.keys).map(|i| (format!("k{i}"), 1)).collect();
    expected.insert("probe".into(), 1);
    let reader = Reader::start(p.bootstrap, &output, Gate::count_of(expected))?;
    let dir = p.work_dir.join(p.tag);
    let spec = Spec {
        engine: p.engine,
        workload: Workload::Count,
        bootstrap: p.bootstrap,
        input: &input,
        output: &output,
        id: p.tag,
        interval: p.interval,
        dir: &dir,
    };
    let started = Instant::now();
    let mut child = engine::start(programs, &spec)?;
    let mut problem = wait_for(&reader, |progress| progress >= p.keys, &mut child);
    let fill_s = started.elapsed().as_secs_f64();

    let (mut recovery_s, mut state_bytes) = (0.0, 0);
    if problem.is_none() {
        child.kill()?;
        child.wait()?;
        state_bytes = size_of(&dir.join("state"));
        if p.wipe {
            for sub in ["state", "checkpoints"] {
                match std::fs::remove_dir_all(dir.join(sub)) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        let restarted = Instant::now();
        child = engine::start(programs, &spec)?;
        let producer: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", p.bootstrap)
            .create()?;
        let (k, v) = workload::record_of(p.keys, SIZE, "probe", None);
        topics::send(
            &producer,
            BaseRecord::to(&input)
                .key(k.as_bytes())
                .payload(v.as_bytes()),
        )?;
        producer.flush(Duration::from_secs(30))?;
        problem = wait_for(&reader, |_| false, &mut child);
        recovery_s = restarted.elapsed().as_secs_f64();
    }
    std::thread::sleep(p.interval + Duration::from_secs(1));
    engine::stop(&mut child, Duration::from_secs(30))?;
    let mut verdict = reader.finish(Duration::from_secs(60))?;
    if let Some(pr) = problem {
        verdict = Err(match verdict {
            Ok(()) => pr,
            Err(e) => format!("{pr}; {e}"),
        });
    }
    engine::clean_up(&dir, p.tag, verdict.is_ok());
    topics::delete_containing(p.bootstrap, p.tag)?;
    Ok(RecoveryOutcome {
        engine: p.engine,
        keys: p.keys,
        interval: p.interval,
        fill_s,
        recovery_s,
        wiped: p.wipe,
        state_bytes,
        verdict,
    })
}

/// Bytes of the files under `dir` (0 if it is missing).
fn size_of(dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => size_of(&e.path()),
            Ok(_) => e.metadata().map_or(0, |m| m.len()),
            Err(_) => 0,
        })
        .sum()
}

/// Waits until the gate is complete or `enough(progress)`; returns what went wrong instead.
fn wait_for(
    reader: &Reader,
    enough: impl Fn(u64) -> bool,
    child: &mut std::process::Child,
) -> Option<String> {
    let mut last = (Instant::now(), 0u64);
    loop {
        std::thread::sleep(Duration::from_millis(20));
        let progress = reader.progress.load(std::sync::atomic::Ordering::Relaxed);
        if reader.complete.load(std::sync::atomic::Ordering::Relaxed) || enough(progress) {
            return None;
        }
        match child.try_wait() {
            Ok(Some(status)) => return Some(format!("engine exited early: {status}")),
            Ok(None) => {}
            Err(e) => return Some(format!("engine: {e}")),
        }
        if progress != last.1 {
            last = (Instant::now(), progress);
        } else if last.0.elapsed() > STALL {
            return Some(format!("no output progress for {STALL:?} at {progress}"));
        }
    }
}
