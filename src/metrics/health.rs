//! Each pipeline thread's health, as `/livez` and `/readyz` judge it.
//!
//! - *Alive*: the thread's loop beat its heartbeat within the liveness timeout (a thread stuck
//!   in a librdkafka call, a lock or a loop beats no more). A restore, a restart's backoff and
//!   a thread that stopped after a savepoint are alive.
//! - *Ready*: the thread runs (its assigned partitions restored), its consumer has a group
//!   coordinator, and either it committed a checkpoint within three intervals (plus 10 s), or
//!   has nothing to do: nothing processed since its last commit and every partition read up to
//!   its last stable offset. (A consumer left without brokers holds nothing and reads nothing:
//!   it looked caught up, CHAOS.md finding 13.)
//!
//! The judgments are pure functions of the figures (`judge_live`, `judge_ready`).

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::status::Status;

mod judge;
pub use judge::{Judged, commit_grace, judge_live, judge_ready, judge_stuck};

/// What a pipeline thread is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Registering its producer, joining the group, restoring a savepoint.
    Starting,
    /// Restoring the state of newly assigned partitions (or rewinding to a checkpoint).
    Restoring,
    Running,
    /// Waiting to restart after a transient failure.
    Restarting,
    /// Stopped after a savepoint or a stop request; the daemon may run other pipelines.
    Stopped,
    Failed,
}

const PHASES: [Phase; 6] = [
    Phase::Starting,
    Phase::Restoring,
    Phase::Running,
    Phase::Restarting,
    Phase::Stopped,
    Phase::Failed,
];

/// The monotonic clock's origin for heartbeats.
fn origin() -> Instant {
    static ORIGIN: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *ORIGIN.get_or_init(Instant::now)
}

fn monotonic_ms() -> u64 {
    u64::try_from(origin().elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Seconds since the Unix epoch, now.
pub fn unix_seconds() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

pub struct Health {
    pub pipeline: String,
    pub thread: u32,
    interval: Duration,
    beat_ms: AtomicU64,
    phase: AtomicU8,
    /// `f64` bits of the last commit's Unix time; 0 before the first.
    last_commit: AtomicU64,
    caught_up: AtomicBool,
    /// Why the consumer has no group coordinator, while it has none.
    no_coordinator: Mutex<Option<String>>,
    error: Mutex<Option<String>>,
    status: Mutex<Status>,
}

impl Health {
    pub fn new(pipeline: &str, thread: u32, interval: Duration) -> Self {
        Self {
            pipeline: pipeline.to_string(),
            thread,
            interval,
            beat_ms: AtomicU64::new(monotonic_ms()),
            phase: AtomicU8::new(0),
            last_commit: AtomicU64::new(0),
            caught_up: AtomicBool::new(false),
            no_coordinator: Mutex::new(None),
            error: Mutex::new(None),
            status: Mutex::new(Status::default()),
        }
    }

    /// The loop came round.
    pub fn beat(&self) {
        self.beat_ms.store(monotonic_ms(), Ordering::Relaxed);
    }

    pub fn set_phase(&self, phase: Phase) {
        let n = PHASES.iter().position(|p| *p == phase).unwrap_or(0);
        self.phase
            .store(u8::try_from(n).unwrap_or(0), Ordering::Relaxed);
        self.beat();
    }

    pub fn phase(&self) -> Phase {
        PHASES[usize::from(self.phase.load(Ordering::Relaxed)).min(PHASES.len() - 1)]
    }

    /// The last failure (a restart's cause, or the error that ended the thread).
    pub fn failed(&self, phase: Phase, error: String) {
        self.update(|s| s.last_error = Some(error.clone()));
        if let Ok(mut e) = self.error.lock() {
            *e = Some(error);
        }
        self.set_phase(phase);
    }

    /// Changes the thread's status (`metrics/status.rs`).
    pub fn update(&self, change: impl FnOnce(&mut Status)) {
        if let Ok(mut s) = self.status.lock() {
            change(&mut s);
        }
    }

    /// A copy of the partitions of the thread's status.
    pub fn partitions(&self) -> Vec<super::status::PartitionStatus> {
        self.status
            .lock()
            .map(|s| s.partitions.clone())
            .unwrap_or_default()
    }

    /// A copy of the thread's status.
    pub fn status(&self) -> Status {
        self.status.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// The liveness and readiness verdicts, for the status.
    pub fn verdicts(&self, liveness_timeout: Duration) -> (Result<(), String>, Result<(), String>) {
        let error = self.error();
        let live = judge_live(
            self.phase(),
            self.since_beat(),
            liveness_timeout,
            error.as_deref(),
        );
        (live, self.ready())
    }

    pub(super) fn committed_at(&self, unix_seconds: f64) {
        self.last_commit
            .store(unix_seconds.to_bits(), Ordering::Relaxed);
    }

    pub fn last_commit_unix(&self) -> Option<f64> {
        let bits = self.last_commit.load(Ordering::Relaxed);
        (bits != 0).then(|| f64::from_bits(bits))
    }

    /// Nothing processed since the last commit, and every partition read to its end.
    pub fn set_caught_up(&self, caught_up: bool) {
        self.caught_up.store(caught_up, Ordering::Relaxed);
    }

    /// The consumer's group coordinator: `None` while it has one, or why it has none.
    pub fn set_no_coordinator(&self, why: Option<String>) {
        if let Ok(mut n) = self.no_coordinator.lock() {
            *n = why;
        }
    }

    fn no_coordinator(&self) -> Option<String> {
        self.no_coordinator.lock().ok().and_then(|n| n.clone())
    }

    /// The readiness verdict.
    fn ready(&self) -> Result<(), String> {
        let error = self.error();
        judge_ready(
            Judged {
                phase: self.phase(),
                since_commit: self.since_commit(),
                caught_up: self.caught_up.load(Ordering::Relaxed),
                no_coordinator: self.no_coordinator().as_deref(),
            },
            self.interval,
            error.as_deref(),
        )
    }

    fn since_beat(&self) -> Duration {
        Duration::from_millis(monotonic_ms().saturating_sub(self.beat_ms.load(Ordering::Relaxed)))
    }

    fn since_commit(&self) -> Option<Duration> {
        self.last_commit_unix()
            .map(|t| Duration::from_secs_f64((unix_seconds() - t).max(0.0)))
    }

    fn error(&self) -> Option<String> {
        self.error.lock().ok().and_then(|e| e.clone())
    }

    fn report(&self, verdict: Result<(), String>) -> ThreadReport {
        ThreadReport {
            pipeline: self.pipeline.clone(),
            thread: self.thread,
            phase: self.phase(),
            ok: verdict.is_ok(),
            reason: verdict.err(),
            seconds_since_heartbeat: self.since_beat().as_secs_f64(),
            seconds_since_checkpoint: self.since_commit().map(|d| d.as_secs_f64()),
        }
    }
}

/// The first thread, if any, whose loop has not come round within `limit` while it should
/// (`stuck_timeout`, past which the daemon gives up on itself): its pipeline, thread and how
/// long it has been.
pub fn stuck(threads: &[std::sync::Arc<Health>], limit: Duration) -> Option<String> {
    threads.iter().find_map(|h| {
        judge_stuck(h.phase(), h.since_beat(), limit)
            .map(|reason| format!("pipeline {} (thread {}) {reason}", h.pipeline, h.thread))
    })
}

/// The threads that have not ended (neither stopped nor failed), each as `pipeline P (thread
/// K) in phase X, its loop last seen N s ago`: what a stop that ran out of time waited for.
pub fn unfinished(threads: &[std::sync::Arc<Health>]) -> Vec<String> {
    threads
        .iter()
        .filter(|h| !matches!(h.phase(), Phase::Stopped | Phase::Failed))
        .map(|h| {
            format!(
                "pipeline {} (thread {}) in phase {:?}, its loop last seen {:.1} s ago",
                h.pipeline,
                h.thread,
                h.phase(),
                h.since_beat().as_secs_f64()
            )
        })
        .collect()
}

/// A probe's answer: the body of `/livez` and `/readyz`.
#[derive(Debug, Serialize)]
pub struct Report {
    pub ok: bool,
    pub pipelines: Vec<ThreadReport>,
}

#[derive(Debug, Serialize)]
pub struct ThreadReport {
    pub pipeline: String,
    pub thread: u32,
    pub phase: Phase,
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub seconds_since_heartbeat: f64,
    pub seconds_since_checkpoint: Option<f64>,
}

pub fn liveness(threads: &[std::sync::Arc<Health>], timeout: Duration) -> Report {
    let pipelines: Vec<ThreadReport> = threads
        .iter()
        .map(|h| {
            let error = h.error();
            h.report(judge_live(
                h.phase(),
                h.since_beat(),
                timeout,
                error.as_deref(),
            ))
        })
        .collect();
    Report {
        ok: pipelines.iter().all(|p| p.ok),
        pipelines,
    }
}

pub fn readiness(threads: &[std::sync::Arc<Health>]) -> Report {
    let pipelines: Vec<ThreadReport> = threads.iter().map(|h| h.report(h.ready())).collect();
    Report {
        ok: !pipelines.is_empty() && pipelines.iter().all(|p| p.ok),
        pipelines,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn the_daemon_s_check_names_the_stuck_thread() {
        let fresh = std::sync::Arc::new(Health::new("p", 3, S));
        fresh.set_phase(Phase::Running);
        assert_eq!(stuck(std::slice::from_ref(&fresh), 180 * S), None);
        let old = std::sync::Arc::new(Health::new("q", 1, S));
        old.set_phase(Phase::Running);
        old.beat_ms.store(0, Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(20));
        fresh.beat();
        let e = stuck(&[fresh, old], Duration::from_millis(10)).unwrap_or_default();
        assert!(
            e.starts_with("pipeline q (thread 1) has not come round"),
            "{e}"
        );
    }

    #[test]
    fn a_thread_without_a_group_coordinator_is_not_ready_until_it_has_one_again() {
        let h = Health::new("p", 0, S);
        h.set_phase(Phase::Running);
        h.set_caught_up(true);
        assert!(h.ready().is_ok());
        h.set_no_coordinator(Some("state \"wait-broker\"".to_string()));
        assert!(h.ready().is_err());
        h.set_no_coordinator(None);
        assert!(h.ready().is_ok());
        h.set_no_coordinator(Some("state \"wait-broker\"".to_string()));
        assert!(!readiness(&[std::sync::Arc::new(h)]).ok);
    }

    #[test]
    fn a_phase_reads_back_as_set() {
        let h = Health::new("p", 0, S);
        for p in PHASES {
            h.set_phase(p);
            assert_eq!(h.phase(), p);
        }
    }
}
