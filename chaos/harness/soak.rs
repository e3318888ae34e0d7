//! The soak (issue #17, item 12; by hand: `scripts/chaos.sh --scenarios soak`): an hour of
//! mixed faults the daemon survives in its own process (broker kills, short and long
//! blackholes, lost commit responses, pauses under the session timeout) under live input.
//! Besides the verifier's counts, it samples the daemon's resident memory, open files and
//! threads every few seconds and asks the brokers for their transactional ids: memory, files
//! and threads must be flat once warm, the ids no more than one per pipeline.
//!
//! SIGKILLs are left out on purpose: a new process starts flat, and the `sigkill` scenario
//! covers them.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::Result;
use rand::Rng;

use crate::faults::lose_commit_response;
use crate::proxy::Fate;
use crate::scenario::{Bed, Ctx, Row, run};

/// One look at the daemon's process.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    /// Since the soak began.
    pub at: Duration,
    pub pid: u32,
    pub rss_kib: u64,
    /// RocksDB's block cache (`flumen_block_cache_usage_bytes`): it fills up to
    /// `state.memory_budget_mb` by design (blocks of files compacted away stay until evicted),
    /// so growth is judged on the resident memory besides it.
    pub cache_kib: u64,
    pub fds: u64,
    pub threads: u64,
}

/// How much a process may grow between the first and the last third of its life once warm:
/// resident memory by this factor (medians), open files and threads by these counts (maxima;
/// connections to a restarted broker and librdkafka's threads for them come and go).
const RSS_GROWTH: f64 = 1.25;
const FD_GROWTH: u64 = 16;
const THREAD_GROWTH: u64 = 16;
const SAMPLE_EVERY_MS: u64 = 5_000;

pub fn scenario(bed: &Bed) -> Result<Row> {
    let length = bed.soak;
    run(
        bed,
        "soak",
        |s| s.transaction_timeout = "10s",
        |c| {
            let began = Instant::now();
            let mut samples = Vec::new();
            let mut ids = BTreeSet::new();
            let mut next_fault = began + calm(c);
            let mut next_ids = began;
            let mut injected = [0u64; FAULTS.len()];
            while began.elapsed() < length {
                let at = began.elapsed();
                let port = c.daemon.admin_port;
                if let Some(s) = c.daemon.pid().and_then(|pid| sample(pid, port, at)) {
                    samples.push(s);
                }
                if Instant::now() >= next_ids {
                    ids.extend(transactional_ids(c));
                    next_ids += Duration::from_secs(300);
                }
                if Instant::now() >= next_fault {
                    let f = pick_fault(c);
                    inject(c, f)?;
                    injected[f] += 1;
                    c.faults += 1;
                    next_fault = Instant::now() + calm(c);
                }
                c.supervised_sleep_ms(SAMPLE_EVERY_MS..SAMPLE_EVERY_MS + 1)?;
            }
            ids.extend(transactional_ids(c));
            let faults: Vec<String> = FAULTS
                .iter()
                .zip(injected)
                .map(|((name, _), n)| format!("{n} {name}"))
                .collect();
            c.notes.push(format!(
                "{} min of faults: {}",
                length.as_secs() / 60,
                faults.join(", ")
            ));
            let (notes, failures) = judge(&samples, length);
            c.notes.extend(notes);
            failures.into_iter().for_each(|f| c.fail(f));
            judge_ids(c, &ids);
            Ok(())
        },
    )
}

/// The faults, by name, with their weights (short blackholes twice as often as the others,
/// long ones, which cost a restart of every pipeline, half as often); `inject` takes an index.
const FAULTS: [(&str, u32); 5] = [
    ("broker kills", 2),
    ("short blackholes", 4),
    ("lost commit responses", 2),
    ("pauses", 2),
    ("long blackholes", 1),
];

fn pick_fault(c: &mut Ctx<'_>) -> usize {
    let total: u32 = FAULTS.iter().map(|f| f.1).sum();
    let mut roll = c.rng.random_range(0..total);
    for (i, (_, weight)) in FAULTS.iter().enumerate() {
        if roll < *weight {
            return i;
        }
        roll -= weight;
    }
    FAULTS.len() - 1
}

fn calm(c: &mut Ctx<'_>) -> Duration {
    Duration::from_millis(c.rng.random_range(20_000..50_000))
}

fn inject(c: &mut Ctx<'_>, fault: usize) -> Result<()> {
    let proxies = &c.bed.brokers.proxies;
    match fault {
        0 => {
            let node = c.rng.random_range(1..=c.bed.brokers.nodes);
            c.bed.brokers.kill(node)?;
            c.supervised_sleep_ms(1_000..5_000)?;
            c.bed.brokers.start_node(node)?;
        }
        1 => {
            proxies.iter().for_each(|p| p.blackhole(true));
            c.supervised_sleep_ms(2_000..5_000)?;
            c.bed
                .brokers
                .proxies
                .iter()
                .for_each(|p| p.blackhole(false));
        }
        2 => {
            let fate = if c.rng.random_bool(0.5) {
                Fate::Drop
            } else {
                Fate::Delay(Duration::from_secs(40))
            };
            lose_commit_response(proxies, fate)?;
        }
        3 => {
            // a pause under the 10 s session timeout, as a long GC or a stalled disk makes
            c.daemon.signal("STOP")?;
            c.sleep_ms(2_000..6_000);
            c.daemon.signal("CONT")?;
        }
        _ => {
            proxies.iter().for_each(|p| p.blackhole(true));
            std::thread::sleep(Duration::from_secs(16)); // 1.6 × the transaction timeout
            c.bed
                .brokers
                .proxies
                .iter()
                .for_each(|p| p.blackhole(false));
        }
    }
    Ok(())
}

/// `/proc/PID`: resident memory, open files, threads; the block cache from `/metrics`;
/// `None` once the process is gone.
fn sample(pid: u32, admin_port: u16, at: Duration) -> Option<Sample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        line[name.len()..].split_whitespace().next()?.parse().ok()
    };
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count();
    let metrics = crate::daemon::fetch(admin_port, "/metrics");
    let cache_bytes: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("flumen_block_cache_usage_bytes "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0);
    Some(Sample {
        at,
        pid,
        rss_kib: field("VmRSS:")?,
        cache_kib: (cache_bytes / 1024.0) as u64,
        threads: field("Threads:")?,
        fds: u64::try_from(fds).ok()?,
    })
}

/// This scenario's transactional ids the brokers know (`kafka-transactions list`).
fn transactional_ids(c: &mut Ctx<'_>) -> Vec<String> {
    match c.bed.brokers.run(&["txn-list"]) {
        Ok(out) => out
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter(|id| id.contains(&c.names.prefix))
            .map(str::to_string)
            .collect(),
        Err(e) => {
            c.notes.push(format!(
                "the transactional ids could not be listed once: {e:#}"
            ));
            Vec::new()
        }
    }
}

/// One transactional id per pipeline (one thread each), stable across restarts.
fn judge_ids(c: &mut Ctx<'_>, ids: &BTreeSet<String>) {
    let bound = c.settings.kinds.len();
    let list = ids.iter().cloned().collect::<Vec<_>>().join(", ");
    if ids.is_empty() {
        c.fail("no transactional id of this scenario was ever listed".into());
    } else if ids.len() > bound {
        c.fail(format!(
            "{} transactional ids over the soak, more than one per pipeline ({bound}): {list}",
            ids.len()
        ));
    } else {
        c.notes.push(format!(
            "{} transactional ids over the soak: {list}",
            ids.len()
        ));
    }
}

/// The samples of each process that lived at least half the soak, after a warm-up of a
/// twelfth of it (five minutes of an hour): the first third against the last. Notes give the
/// figures; failures say what grew.
pub fn judge(samples: &[Sample], soak: Duration) -> (Vec<String>, Vec<String>) {
    let mut notes = Vec::new();
    let mut failures = Vec::new();
    let lives: Vec<&[Sample]> = samples.chunk_by(|a, b| a.pid == b.pid).collect();
    let span = |l: &[Sample]| match (l.first(), l.last()) {
        (Some(a), Some(b)) => b.at.saturating_sub(a.at),
        _ => Duration::ZERO,
    };
    // every process's figures, the short-lived ones too: a soak they fail still tells
    let each: Vec<String> = lives.iter().copied().map(summary).collect();
    if !each.is_empty() {
        notes.push(format!(
            "{} daemon processes, in turn: {}",
            each.len(),
            each.join("; ")
        ));
    }
    let judged: Vec<&[Sample]> = lives
        .iter()
        .copied()
        .filter(|l| span(l) >= soak / 2)
        .collect();
    if judged.is_empty() {
        let longest = lives.iter().map(|l| span(l)).max().unwrap_or_default();
        failures.push(format!(
            "no daemon process lived half the soak ({} processes, the longest {:.1} min): nothing to judge its growth by",
            lives.len(),
            longest.as_secs_f64() / 60.0
        ));
    }
    for life in judged {
        let (note, grew) = judge_life(life, soak);
        notes.extend(note);
        failures.extend(grew);
    }
    (notes, failures)
}

/// One process that lived half the soak: its figure note, and what grew too much.
fn judge_life(life: &[Sample], soak: Duration) -> (Option<String>, Vec<String>) {
    let mut failures = Vec::new();
    let start = life.first().map_or(Duration::ZERO, |s| s.at);
    let warm: Vec<Sample> = life
        .iter()
        .copied()
        .filter(|s| s.at.saturating_sub(start) >= soak / 12)
        .collect();
    let third = warm.len() / 3;
    if third == 0 {
        failures.push("too few samples after the warm-up to judge".into());
        return (None, failures);
    }
    let (early, late) = (&warm[..third], &warm[warm.len() - third..]);
    let pid = life.first().map_or(0, |s| s.pid);
    let besides = |s: &Sample| s.rss_kib.saturating_sub(s.cache_kib);
    let rest = (median(early, besides), median(late, besides));
    let cache = (
        median(early, |s| s.cache_kib),
        median(late, |s| s.cache_kib),
    );
    let fds = (max(early, |s| s.fds), max(late, |s| s.fds));
    let threads = (max(early, |s| s.threads), max(late, |s| s.threads));
    let growth = rest.1 as f64 / rest.0.max(1) as f64;
    let mib = |kib: u64| kib as f64 / 1024.0;
    let span = life
        .last()
        .map_or(Duration::ZERO, |s| s.at.saturating_sub(start));
    let note = format!(
        "process {pid}, {:.1} min, {} samples after {:.1} min of warm-up, first third → last third: resident memory besides the block cache (median) {:.1} → {:.1} MiB (×{growth:.2}; peak resident {:.1}), block cache {:.1} → {:.1} MiB, open files (max) {} → {}, threads (max) {} → {}",
        span.as_secs_f64() / 60.0,
        warm.len(),
        (soak / 12).as_secs_f64() / 60.0,
        mib(rest.0),
        mib(rest.1),
        mib(max(life, |s| s.rss_kib)),
        mib(cache.0),
        mib(cache.1),
        fds.0,
        fds.1,
        threads.0,
        threads.1,
    );
    if growth > RSS_GROWTH {
        failures.push(format!(
            "process {pid}: resident memory besides the block cache grew ×{growth:.2} (more than ×{RSS_GROWTH})"
        ));
    }
    if fds.1 > fds.0 + FD_GROWTH {
        failures.push(format!(
            "process {pid}: open files grew from {} to {} (more than {FD_GROWTH})",
            fds.0, fds.1
        ));
    }
    if threads.1 > threads.0 + THREAD_GROWTH {
        failures.push(format!(
            "process {pid}: threads grew from {} to {} (more than {THREAD_GROWTH})",
            threads.0, threads.1
        ));
    }
    (Some(note), failures)
}

/// One process's figures over its whole life.
fn summary(l: &[Sample]) -> String {
    let span = match (l.first(), l.last()) {
        (Some(a), Some(b)) => b.at.saturating_sub(a.at),
        _ => Duration::ZERO,
    };
    let mib = |kib: u64| kib as f64 / 1024.0;
    let least = |f: fn(&Sample) -> u64| l.iter().map(f).min().unwrap_or(0);
    format!(
        "{:.1} min, memory {:.1} → {:.1} MiB (peak {:.1}; block cache at the end {:.1}), files {}–{}, threads {}–{}",
        span.as_secs_f64() / 60.0,
        mib(l.first().map_or(0, |s| s.rss_kib)),
        mib(l.last().map_or(0, |s| s.rss_kib)),
        mib(max(l, |s| s.rss_kib)),
        mib(l.last().map_or(0, |s| s.cache_kib)),
        least(|s| s.fds),
        max(l, |s| s.fds),
        least(|s| s.threads),
        max(l, |s| s.threads),
    )
}

fn median(s: &[Sample], f: impl Fn(&Sample) -> u64) -> u64 {
    let mut v: Vec<u64> = s.iter().map(f).collect();
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or(0)
}

fn max(s: &[Sample], f: impl Fn(&Sample) -> u64) -> u64 {
    s.iter().map(f).max().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::{Sample, judge};
    use std::time::Duration;

    fn life(
        pid: u32,
        from_s: u64,
        to_s: u64,
        grow: impl Fn(u64) -> (u64, u64, u64),
    ) -> Vec<Sample> {
        (from_s..to_s)
            .step_by(5)
            .map(|t| {
                let (rss_kib, fds, threads) = grow(t);
                Sample {
                    at: Duration::from_secs(t),
                    pid,
                    rss_kib,
                    cache_kib: 0,
                    fds,
                    threads,
                }
            })
            .collect()
    }

    const HOUR: Duration = Duration::from_secs(3_600);

    #[test]
    fn a_flat_process_passes_with_its_figures_noted() {
        // a warm-up that triples memory is not growth; a little jitter later is not either
        let s = life(7, 0, 3_600, |t| {
            (
                if t < 300 {
                    20_000 + t * 100
                } else {
                    60_000 + t % 7
                },
                40 + t % 3,
                30,
            )
        });
        let (notes, failures) = judge(&s, HOUR);
        assert_eq!(failures, Vec::<String>::new());
        assert!(
            notes[0].starts_with("1 daemon processes, in turn: 59.9 min, memory 19.5 → 58.6 MiB"),
            "{notes:?}"
        );
        assert!(notes[1].contains("58.6 → 58.6 MiB (×1.00"), "{notes:?}");
    }

    #[test]
    fn a_block_cache_filling_up_is_not_growth() {
        let mut s = life(7, 0, 3_600, |t| (40_000 + t * 10, 40, 30));
        s.iter_mut().for_each(|x| x.cache_kib = x.at.as_secs() * 10);
        let (notes, failures) = judge(&s, HOUR);
        assert_eq!(failures, Vec::<String>::new());
        assert!(notes[1].contains("39.1 → 39.1 MiB (×1.00"), "{notes:?}");
    }

    #[test]
    fn growth_of_memory_files_or_threads_fails() {
        // a leak of 50 KiB per sample
        let s = life(7, 0, 3_600, |t| {
            (40_000 + t * 10, 40 + t / 100, 30 + t / 120)
        });
        let (_, failures) = judge(&s, HOUR);
        assert_eq!(failures.len(), 3, "{failures:?}");
        assert!(
            failures[0].contains("resident memory besides the block cache grew ×1.45"),
            "{failures:?}"
        );
        assert!(failures[1].contains("open files grew from"), "{failures:?}");
        assert!(failures[2].contains("threads grew from"), "{failures:?}");
    }

    #[test]
    fn a_soak_of_short_lived_processes_cannot_pass() {
        let mut s = life(1, 0, 1_500, |_| (40_000, 40, 30));
        s.extend(life(2, 1_500, 3_000, |_| (40_000, 40, 30)));
        s.extend(life(3, 3_000, 3_600, |t| (40_000 + t * 100, 40, 30)));
        let (notes, failures) = judge(&s, HOUR);
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(
            notes[0].starts_with("3 daemon processes, in turn: 24.9 min"),
            "{notes:?}"
        );
        assert_eq!(failures.len(), 1);
        assert!(
            failures[0].contains(
                "no daemon process lived half the soak (3 processes, the longest 24.9 min)"
            ),
            "{failures:?}"
        );
        // a long life after short ones is judged alone
        s.extend(life(4, 3_600, 7_200, |_| (50_000, 41, 31)));
        let (notes, failures) = judge(&s, HOUR);
        assert_eq!((notes.len(), failures.len()), (2, 0), "{failures:?}");
        assert!(notes[1].starts_with("process 4, 59.9 min"), "{notes:?}");
    }
}
