//! Medians, min–max and ratios of the runs; the table printed and written to `bench/results/`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::Result;

use crate::engine::Engine;
use crate::latency::LatencyOutcome;
use crate::recovery::RecoveryOutcome;
use crate::workload::Workload;

pub struct Outcome {
    pub engine: Engine,
    pub workload: Workload,
    pub size: usize,
    pub interval: Duration,
    /// Records per wall-clock second, from the first committed output to the last.
    pub throughput: f64,
    /// Records per engine CPU-second over the same span.
    pub per_cpu_s: f64,
    pub cpu_s: f64,
    /// Peak resident set of the engine process (VmHWM).
    pub hwm_mb: f64,
    /// Flumen's checkpoint pause, p99 over the run (from its log); other engines: unknown.
    pub pause_p99_ms: Option<f64>,
    /// From the engine's start to its last committed output.
    pub wall_s: f64,
    pub broker_cpu_s: Option<f64>,
    /// The correctness gate: `Err` makes the run invalid, never averaged in.
    pub verdict: Result<(), String>,
}

/// The nearest-rank percentile `q` (0..=1) of sorted values.
pub fn percentile(sorted: &[f64], q: f64) -> Option<f64> {
    let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len().max(1)) - 1;
    sorted.get(i).copied()
}

fn verdict_text(v: &Result<(), String>) -> String {
    match v {
        Ok(()) => "valid".to_string(),
        Err(e) => format!("INVALID: {e}"),
    }
}

pub fn line(o: &Outcome) -> String {
    let v = verdict_text(&o.verdict);
    format!(
        "{:<14} {:<5} {:>4} B {:>5} ms: {:>9.0} rec/s, {:>9.0} rec/CPU-s, {:>6.1} CPU-s, peak RSS {:>6.0} MB, {:>5.1} s to done, broker {} CPU-s, checkpoint pause p99 {} ms; {v}",
        o.engine.name(),
        o.workload.name(),
        o.size,
        o.interval.as_millis(),
        o.throughput,
        o.per_cpu_s,
        o.cpu_s,
        o.hwm_mb,
        o.wall_s,
        o.broker_cpu_s
            .map(|b| format!("{b:.1}"))
            .unwrap_or_else(|| "?".into()),
        o.pause_p99_ms
            .map(|b| format!("{b:.1}"))
            .unwrap_or_else(|| "?".into()),
    )
}

type Key = (Workload, usize, u128);

struct Stat {
    median: f64,
    min: f64,
    max: f64,
}

fn stat(mut v: Vec<f64>) -> Option<Stat> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let m = v.len() / 2;
    let median = if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    };
    Some(Stat {
        median,
        min: v[0],
        max: v[v.len() - 1],
    })
}

fn cell(s: &Option<Stat>, unit: f64) -> String {
    match s {
        None => "–".into(),
        Some(s) if s.min == s.max => fmt(s.median / unit),
        Some(s) => format!(
            "{} ({}–{})",
            fmt(s.median / unit),
            fmt(s.min / unit),
            fmt(s.max / unit)
        ),
    }
}

fn fmt(x: f64) -> String {
    if x >= 100.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.1}")
    }
}

/// One row per workload, size, interval and engine: medians (min–max) of the valid runs;
/// then the ratios the targets are stated in.
pub fn table(outcomes: &[Outcome]) -> Result<String, std::fmt::Error> {
    let measured: BTreeSet<Workload> = outcomes
        .iter()
        .filter(|o| !o.engine.is_raw())
        .map(|o| o.workload)
        .collect();
    let mut groups: BTreeMap<Key, BTreeMap<Engine, Vec<&Outcome>>> = BTreeMap::new();
    for o in outcomes {
        // the raw copy ran once per size and interval; it is the baseline of every workload
        let workloads = if o.engine.is_raw() && !measured.is_empty() {
            measured.iter().copied().collect()
        } else {
            vec![o.workload]
        };
        for w in workloads {
            groups
                .entry((w, o.size, o.interval.as_millis()))
                .or_default()
                .entry(o.engine)
                .or_default()
                .push(o);
        }
    }
    let mut t = String::new();
    writeln!(
        t,
        "| workload | record | interval | engine | valid runs | k records/s | k records/CPU-s | peak RSS MB | broker CPU-s | checkpoint pause p99 ms |"
    )?;
    writeln!(t, "|---|---|---|---|---|---|---|---|---|---|")?;
    let mut ratios = String::new();
    for ((w, size, ms), engines) in &groups {
        let mut med: BTreeMap<Engine, (f64, f64, f64)> = BTreeMap::new();
        for (e, runs) in engines {
            let valid: Vec<&&Outcome> = runs.iter().filter(|o| o.verdict.is_ok()).collect();
            let tp = stat(valid.iter().map(|o| o.throughput).collect());
            let pc = stat(valid.iter().map(|o| o.per_cpu_s).collect());
            let rss = stat(valid.iter().map(|o| o.hwm_mb).collect());
            let broker = stat(valid.iter().filter_map(|o| o.broker_cpu_s).collect());
            let pause = stat(valid.iter().filter_map(|o| o.pause_p99_ms).collect());
            if let (Some(a), Some(b), Some(c)) = (&tp, &pc, &rss) {
                med.insert(*e, (a.median, b.median, c.median));
            }
            writeln!(
                t,
                "| {} | {size} B | {ms} ms | {} | {}/{} | {} | {} | {} | {} | {} |",
                w.name(),
                e.name(),
                valid.len(),
                runs.len(),
                cell(&tp, 1000.0),
                cell(&pc, 1000.0),
                cell(&rss, 1.0),
                cell(&broker, 1.0),
                cell(&pause, 1.0),
            )?;
        }
        let f = med.get(&Engine::Flumen);
        let ks = med.get(&Engine::KafkaStreams);
        let raw = med.get(&Engine::RawTx);
        let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) if b > 0.0 => format!("{:.2}×", a / b),
            _ => "–".into(),
        };
        writeln!(
            ratios,
            "| {} | {size} B | {ms} ms | {} | {} | {} |",
            w.name(),
            ratio(f.map(|x| x.1), ks.map(|x| x.1)),
            ratio(ks.map(|x| x.2), f.map(|x| x.2)),
            ratio(f.map(|x| x.0), raw.map(|x| x.0)),
        )?;
    }
    writeln!(t)?;
    writeln!(
        t,
        "| workload | record | interval | Flumen ÷ Kafka Streams, records/CPU-s (target ≥ 3×) | Kafka Streams ÷ Flumen, peak RSS (target ≥ 4×) | Flumen ÷ raw tx copy, records/s (target ≥ 0.9 map, ≥ 0.6 keyed) |"
    )?;
    writeln!(t, "|---|---|---|---|---|---|")?;
    t.push_str(&ratios);
    Ok(t)
}

pub struct Facts<'a> {
    pub seed: u64,
    pub records: u64,
    pub reps: u32,
    pub ks_threads: u32,
    pub ks_heap: &'a str,
    pub flumen_threads: u32,
    pub flumen: &'a Path,
    pub java: &'a Path,
}

/// Writes the table with the date, versions and machine facts to `dir`; returns the file.
pub fn write(dir: &Path, quick: bool, table: &str, f: &Facts<'_>) -> Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let date = out("date", &["-u", "+%Y-%m-%dT%H%M%SZ"]);
    let path = dir.join(format!("{date}{}.md", if quick { "-quick" } else { "" }));
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .next()
                .map(|l| l.split_whitespace().nth(1).unwrap_or("?").to_string())
        })
        .and_then(|kb| kb.parse::<f64>().ok())
        .map(|kb| format!("{:.1} GiB", kb / 1024.0 / 1024.0))
        .unwrap_or_else(|| "?".into());
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
            })
        })
        .unwrap_or_else(|| "?".into());
    let java = Command::new(f.java)
        .arg("-version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stderr).ok())
        .and_then(|s| s.lines().next().map(str::to_string))
        .unwrap_or_else(|| "?".into());
    let body = format!(
        "# flumen-bench {kind}, {date}\n\n\
         - flumen {flumen} (git {git}), {java}, Kafka Streams and broker {kafka}\n\
         - machine: {cores} cores ({cpu}), {mem}; the broker, the engine and the harness share it\n\
         - {records} records of 100 B (a quarter as many of 1 KB), {reps} repetition(s), seed {seed}; \
           Flumen: parallelism {flumen_threads}; \
           Kafka Streams: {threads} stream threads, heap {heap}, exactly_once_v2\n\n{table}",
        kind = if quick { "--quick" } else { "full run" },
        flumen = out(&f.flumen.to_string_lossy(), &["--version"]),
        git = out("git", &["rev-parse", "--short", "HEAD"]),
        kafka = std::env::var("FLUMEN_BENCH_KAFKA").unwrap_or_else(|_| "?".into()),
        cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        records = f.records,
        reps = f.reps,
        seed = f.seed,
        threads = f.ks_threads,
        flumen_threads = f.flumen_threads,
        heap = f.ks_heap,
    );
    std::fs::write(&path, body)?;
    Ok(path)
}

fn out(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "?".into())
}

/// The median records/s of an engine's valid runs of one workload, size and interval.
pub fn median_throughput(
    outcomes: &[Outcome],
    engine: Engine,
    workload: Workload,
    size: usize,
    interval: Duration,
) -> Option<f64> {
    stat(
        outcomes
            .iter()
            .filter(|o| {
                o.engine == engine
                    && o.workload == workload
                    && o.size == size
                    && o.interval == interval
                    && o.verdict.is_ok()
            })
            .map(|o| o.throughput)
            .collect(),
    )
    .map(|s| s.median)
}

pub fn latency_line(l: &LatencyOutcome) -> String {
    let v = verdict_text(&l.verdict);
    format!(
        "latency {:<14} {:>5} ms at {:.0} rec/s: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms over {} records; {v}",
        l.engine.name(),
        l.interval.as_millis(),
        l.rate,
        l.p50_ms,
        l.p99_ms,
        l.max_ms,
        l.samples,
    )
}

/// End-to-end latency rows, against the target p99 ≤ interval + 25 ms.
pub fn latency_table(ls: &[LatencyOutcome]) -> Result<String, std::fmt::Error> {
    if ls.is_empty() {
        return Ok(String::new());
    }
    let mut t = String::from(
        "\n| latency, map 100 B | interval | offered rec/s | p50 ms | p99 ms | max ms | records | p99 ≤ interval + 25 ms | gate |\n|---|---|---|---|---|---|---|---|---|\n",
    );
    for l in ls {
        let ok = l.p99_ms <= l.interval.as_millis() as f64 + 25.0;
        writeln!(
            t,
            "| {} | {} ms | {:.0} | {:.1} | {:.1} | {:.1} | {} | {} | {} |",
            l.engine.name(),
            l.interval.as_millis(),
            l.rate,
            l.p50_ms,
            l.p99_ms,
            l.max_ms,
            l.samples,
            if ok { "yes" } else { "no" },
            if l.verdict.is_ok() {
                "valid"
            } else {
                "INVALID"
            },
        )?;
    }
    Ok(t)
}

pub fn recovery_line(r: &RecoveryOutcome) -> String {
    format!(
        "recovery {:<14} {:>8} keys ({:.1} MB of local state{}): filled in {:.1} s, SIGKILL → next committed output {:.2} s; {}",
        r.engine.name(),
        r.keys,
        r.state_bytes as f64 / 1e6,
        if r.wiped { ", wiped" } else { "" },
        r.fill_s,
        r.recovery_s,
        verdict_text(&r.verdict),
    )
}

/// Recovery rows per engine and state size, against the target ≤ 5 s + one interval.
pub fn recovery_table(rs: &[RecoveryOutcome]) -> Result<String, std::fmt::Error> {
    if rs.is_empty() {
        return Ok(String::new());
    }
    let mut groups: BTreeMap<(u64, Engine), Vec<&RecoveryOutcome>> = BTreeMap::new();
    for r in rs {
        groups.entry((r.keys, r.engine)).or_default().push(r);
    }
    let wiped = rs.iter().any(|r| r.wiped);
    let mut t = format!(
        "\n| recovery after SIGKILL{}, count | keys in state | local state, MB | valid runs | s to next committed output | ≤ 5 s + interval |\n|---|---|---|---|---|---|\n",
        if wiped {
            " on a wiped disk (Flumen: from the object store; Kafka Streams: from its changelog)"
        } else {
            ""
        }
    );
    for ((keys, engine), runs) in &groups {
        let valid: Vec<&&RecoveryOutcome> = runs.iter().filter(|r| r.verdict.is_ok()).collect();
        let s = stat(valid.iter().map(|r| r.recovery_s).collect());
        let target = runs
            .first()
            .map(|r| 5.0 + r.interval.as_secs_f64())
            .unwrap_or(6.0);
        let ok = match &s {
            Some(s) => {
                if s.median <= target {
                    "yes"
                } else {
                    "no"
                }
            }
            None => "–",
        };
        writeln!(
            t,
            "| {} | {keys} | {:.1} | {}/{} | {} | {ok} |",
            engine.name(),
            runs.iter().map(|r| r.state_bytes).max().unwrap_or(0) as f64 / 1e6,
            valid.len(),
            runs.len(),
            cell(&s, 1.0),
        )?;
    }
    Ok(t)
}
