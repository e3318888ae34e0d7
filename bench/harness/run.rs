//! The matrix of runs (sizes × intervals × repetitions, engines and workloads in a random
//! order each repetition) and one measured run.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::engine::{self, Engine, Programs, Spec};
use crate::latency::{self, LatencyOutcome};
use crate::recovery::{self, RecoveryOutcome};
use crate::report::{self, Outcome};
use crate::topics::{self, Reader};
use crate::workload::{self, Gate, Workload};

#[derive(clap::Args)]
pub struct Args {
    #[arg(long, default_value = "127.0.0.1:19092")]
    bootstrap: String,
    /// One size (100 B), one interval (1 s), one repetition, fewer records: under 10 minutes.
    #[arg(long)]
    quick: bool,
    /// Input records of ~100 B (the ~1 KB input has a quarter as many). Default 300,000 with
    /// --quick, else 2,000,000.
    #[arg(long)]
    records: Option<u64>,
    /// Record sizes in bytes. Default 100 with --quick, else 100,1000.
    #[arg(long, value_delimiter = ',')]
    sizes: Vec<usize>,
    /// Commit/checkpoint intervals. Default 1s with --quick, else 1s,100ms.
    #[arg(long, value_delimiter = ',', value_parser = humantime::parse_duration)]
    intervals: Vec<Duration>,
    /// Repetitions. Default 1 with --quick, else 3.
    #[arg(long)]
    reps: Option<u32>,
    #[arg(
        long,
        value_delimiter = ',',
        value_enum,
        default_value = "map,count,dedupe,window"
    )]
    workloads: Vec<Workload>,
    #[arg(
        long,
        value_delimiter = ',',
        value_enum,
        default_value = "flumen,kafka-streams,raw-tx,raw-idempotent"
    )]
    engines: Vec<Engine>,
    #[arg(long)]
    flumen: PathBuf,
    #[arg(long)]
    kafka_streams_jar: PathBuf,
    #[arg(long, default_value = "java")]
    java: PathBuf,
    /// Kafka Streams' num.stream.threads; 1 matches Flumen's one thread per pipeline.
    #[arg(long, default_value_t = 1)]
    ks_threads: u32,
    #[arg(long, default_value = "2g")]
    ks_heap: String,
    /// Flumen's `parallelism` (pipeline threads); the topics' partitions are shared among them.
    #[arg(long, default_value_t = 1)]
    flumen_threads: u32,
    /// The broker's pid, to report its CPU apart.
    #[arg(long)]
    broker_pid: Option<u32>,
    /// Where each run's config, state and log go (deleted after a valid run).
    #[arg(long, default_value = "/tmp/flumen-bench")]
    work_dir: PathBuf,
    /// Where the results table is written.
    #[arg(long, default_value = "bench/results")]
    results_dir: PathBuf,
    /// Skip the throughput runs (a recovery-only run: with --no-latency).
    #[arg(long, requires = "no_latency")]
    no_throughput: bool,
    /// Skip the latency runs.
    #[arg(long)]
    no_latency: bool,
    /// Offered rate of the latency runs, records/s (default: half the slowest exactly-once
    /// engine's median map throughput at the same interval).
    #[arg(long)]
    latency_rate: Option<f64>,
    /// Latency runs: seconds left out after the start, then seconds measured. Default 10 and 20
    /// with --quick, else 30 and 60.
    #[arg(long, value_parser = humantime::parse_duration)]
    latency_warmup: Option<Duration>,
    #[arg(long, value_parser = humantime::parse_duration)]
    latency_duration: Option<Duration>,
    /// Skip the recovery runs.
    #[arg(long)]
    no_recovery: bool,
    /// Recovery runs restart on a wiped disk (live state and local checkpoints deleted after
    /// the kill), as a partition moved to a new instance: Flumen restores from the object
    /// store (needs --object-store), Kafka Streams from its changelog topic.
    #[arg(long, requires = "object_store")]
    recovery_wipe: bool,
    /// Flumen's checkpoints in this S3-compatible store (scripts/s3.sh's endpoint, bucket
    /// `flumen`, its test credentials) instead of a local directory.
    #[arg(long)]
    object_store: Option<String>,
    /// State sizes (distinct keys) of the recovery runs. Default 10000,100000 with --quick,
    /// else 100000,1000000.
    #[arg(long, value_delimiter = ',')]
    recovery_keys: Vec<u64>,
    /// Seed of the run order (default: the clock).
    #[arg(long)]
    seed: Option<u64>,
}

pub fn main(mut a: Args) -> Result<()> {
    let records = a
        .records
        .unwrap_or(if a.quick { 300_000 } else { 2_000_000 });
    if a.sizes.is_empty() {
        a.sizes = if a.quick { vec![100] } else { vec![100, 1000] };
    }
    if a.intervals.is_empty() {
        a.intervals = if a.quick {
            vec![Duration::from_secs(1)]
        } else {
            vec![Duration::from_secs(1), Duration::from_millis(100)]
        };
    }
    let reps = a.reps.unwrap_or(if a.quick { 1 } else { 3 });
    let seed = a.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
    });
    let programs = Programs {
        flumen: a.flumen.canonicalize().context("--flumen")?,
        kafka_streams_jar: a
            .kafka_streams_jar
            .canonicalize()
            .context("--kafka-streams-jar")?,
        harness: std::env::current_exe()?,
        java: a.java.clone(),
        ks_threads: a.ks_threads,
        ks_heap: a.ks_heap.clone(),
        flumen_threads: a.flumen_threads,
        object_store: a.object_store.clone(),
    };
    let ticks = engine::ticks_per_s();
    let run_id = format!("{:06x}", seed & 0xff_ffff);
    eprintln!("bench: run {run_id}, seed {seed}, {records} records of 100 B, {reps} repetition(s)");

    let mut rng = seed;
    let mut outcomes = Vec::new();
    let sizes = if a.no_throughput {
        &[][..]
    } else {
        &a.sizes[..]
    };
    for &size in sizes {
        let n = if size >= 500 { records / 4 } else { records };
        let input = format!("bench-in-{size}b-{run_id}");
        topics::create(&a.bootstrap, &[&input])?;
        let t = Instant::now();
        let t0 = workload::event_time_base(topics::now_us() / 1000);
        topics::preload(&a.bootstrap, &input, n, size, t0)?;
        eprintln!(
            "bench: preloaded {n} records of {size} B into {input} in {:.1}s",
            t.elapsed().as_secs_f64()
        );
        for &interval in &a.intervals {
            for rep in 0..reps {
                let mut order: Vec<(Engine, Workload)> = Vec::new();
                for &e in &a.engines {
                    if e.is_raw() {
                        order.push((e, Workload::Map)); // the raw copy ignores the transform
                    } else {
                        order.extend(a.workloads.iter().map(|&w| (e, w)));
                    }
                }
                shuffle(&mut order, &mut rng);
                for (engine, workload) in order {
                    let tag = format!(
                        "{}-{}-{size}b-{}ms-r{rep}-{run_id}",
                        engine.name(),
                        workload.name(),
                        interval.as_millis()
                    );
                    let o = measure(
                        &a,
                        &programs,
                        ticks,
                        &Run {
                            engine,
                            workload,
                            size,
                            records: n,
                            interval,
                            input: &input,
                            t0,
                            tag: &tag,
                        },
                    )?;
                    eprintln!("bench: {}", report::line(&o));
                    outcomes.push(o);
                }
            }
        }
    }
    let latencies = if a.no_latency {
        Vec::new()
    } else {
        latency_runs(&a, &programs, &outcomes, &run_id, &mut rng)?
    };
    let recoveries = if a.no_recovery {
        Vec::new()
    } else {
        recovery_runs(&a, &programs, reps, &run_id, &mut rng)?
    };
    // the inputs and anything a failed run left
    topics::delete_containing(&a.bootstrap, &format!("-{run_id}"))?;
    let mut table = report::table(&outcomes)?;
    table.push_str(&report::latency_table(&latencies)?);
    table.push_str(&report::recovery_table(&recoveries)?);
    println!("{table}");
    let path = report::write(
        &a.results_dir,
        a.quick,
        &table,
        &report::Facts {
            seed,
            records,
            reps,
            ks_threads: a.ks_threads,
            ks_heap: &a.ks_heap,
            flumen_threads: a.flumen_threads,
            flumen: &programs.flumen,
            java: &programs.java,
        },
    )?;
    eprintln!("bench: table written to {}", path.display());
    if outcomes.iter().any(|o| o.verdict.is_err())
        || latencies.iter().any(|l| l.verdict.is_err())
        || recoveries.iter().any(|r| r.verdict.is_err())
    {
        anyhow::bail!("some runs failed the correctness gate (marked INVALID above)");
    }
    Ok(())
}

fn latency_runs(
    a: &Args,
    programs: &Programs,
    outcomes: &[Outcome],
    run_id: &str,
    rng: &mut u64,
) -> Result<Vec<LatencyOutcome>> {
    let warmup = a
        .latency_warmup
        .unwrap_or(Duration::from_secs(if a.quick { 10 } else { 30 }));
    let duration = a
        .latency_duration
        .unwrap_or(Duration::from_secs(if a.quick { 20 } else { 60 }));
    let mut engines: Vec<Engine> = a
        .engines
        .iter()
        .copied()
        .filter(|e| *e != Engine::RawIdempotent)
        .collect();
    let mut out = Vec::new();
    for &interval in &a.intervals {
        let rate = match a.latency_rate {
            Some(r) => r,
            None => {
                let slowest = engines
                    .iter()
                    .filter_map(|&e| {
                        report::median_throughput(outcomes, e, Workload::Map, 100, interval)
                    })
                    .min_by(|x, y| x.total_cmp(y));
                match slowest {
                    Some(t) => (t / 2.0).floor(),
                    None => {
                        eprintln!(
                            "bench: no valid 100 B map runs at {interval:?}: no latency runs (use --latency-rate)"
                        );
                        continue;
                    }
                }
            }
        };
        shuffle(&mut engines, rng);
        for &engine in &engines {
            let tag = format!("lat-{}-{}ms-{run_id}", engine.name(), interval.as_millis());
            let l = latency::measure(
                programs,
                &latency::Plan {
                    bootstrap: &a.bootstrap,
                    engine,
                    interval,
                    rate,
                    warmup,
                    measure: duration,
                    tag: &tag,
                    work_dir: &a.work_dir,
                },
            )?;
            eprintln!("bench: {}", report::latency_line(&l));
            out.push(l);
        }
    }
    Ok(out)
}

fn recovery_runs(
    a: &Args,
    programs: &Programs,
    reps: u32,
    run_id: &str,
    rng: &mut u64,
) -> Result<Vec<RecoveryOutcome>> {
    let sizes = if !a.recovery_keys.is_empty() {
        a.recovery_keys.clone()
    } else if a.quick {
        vec![10_000, 100_000]
    } else {
        vec![100_000, 1_000_000]
    };
    let mut engines: Vec<Engine> = a.engines.iter().copied().filter(|e| !e.is_raw()).collect();
    // the longest interval: recovery replays at most one interval, the worst case
    let interval = a
        .intervals
        .iter()
        .copied()
        .max()
        .unwrap_or(Duration::from_secs(1));
    let mut out = Vec::new();
    for &keys in &sizes {
        for rep in 0..reps {
            shuffle(&mut engines, rng);
            for &engine in &engines {
                let tag = format!("rec-{}-{keys}-r{rep}-{run_id}", engine.name());
                let r = recovery::measure(
                    programs,
                    &recovery::Plan {
                        bootstrap: &a.bootstrap,
                        engine,
                        keys,
                        interval,
                        tag: &tag,
                        work_dir: &a.work_dir,
                        wipe: a.recovery_wipe,
                    },
                )?;
                eprintln!("bench: {}", report::recovery_line(&r));
                out.push(r);
            }
        }
    }
    Ok(out)
}

struct Run<'a> {
    engine: Engine,
    workload: Workload,
    size: usize,
    records: u64,
    interval: Duration,
    input: &'a str,
    /// The input's first event time (the window workload's reference needs it).
    t0: u64,
    tag: &'a str,
}

/// Longest a run may go without output progress before it is called stalled.
const STALL: Duration = Duration::from_secs(90);

fn measure(a: &Args, programs: &Programs, ticks: f64, r: &Run<'_>) -> Result<Outcome> {
    let output = format!("bench-out-{}", r.tag);
    topics::create(&a.bootstrap, &[&output])?;
    let gate = match r.workload {
        Workload::Map => Gate::copy(r.records, !r.engine.is_raw()),
        Workload::Count => Gate::count(r.records),
        Workload::Dedupe => Gate::dedupe(r.records),
        Workload::Window => Gate::window(r.records, r.t0),
    };
    // the input records the complete output reflects (a window workload's last windows stay open)
    let target = gate.target();
    let reader = Reader::start(&a.bootstrap, &output, gate)?;
    let dir = a.work_dir.join(r.tag);
    let broker_before = a.broker_pid.and_then(|p| engine::usage(p, ticks).ok());
    let started = Instant::now();
    let mut child = engine::start(
        programs,
        &Spec {
            engine: r.engine,
            workload: r.workload,
            bootstrap: &a.bootstrap,
            input: r.input,
            output: &output,
            id: r.tag,
            interval: r.interval,
            dir: &dir,
        },
    )?;
    let pid = child.id();

    let mut first: Option<(Instant, u64, f64)> = None;
    let mut done: Option<(Instant, f64)> = None;
    let mut last_progress = (Instant::now(), 0u64);
    let mut problem = None;
    let mut usage = engine::Usage::default();
    loop {
        std::thread::sleep(Duration::from_millis(50));
        if let Some(status) = child.try_wait()? {
            problem = Some(format!("{} exited early: {status}", r.engine.name()));
            break;
        }
        usage = engine::usage(pid, ticks)?;
        let progress = reader.progress.load(std::sync::atomic::Ordering::Relaxed);
        let now = Instant::now();
        if progress > 0 && first.is_none() {
            first = Some((now, progress, usage.cpu_s));
        }
        if reader.complete.load(std::sync::atomic::Ordering::Relaxed) {
            done = Some((now, usage.cpu_s));
            break;
        }
        if progress != last_progress.1 {
            last_progress = (now, progress);
        } else if now - last_progress.0 > STALL {
            problem = Some(format!(
                "no output progress for {STALL:?} at {progress} of {target}"
            ));
            break;
        }
    }
    // let a duplicate that a late commit would write land before the output is read to its end
    std::thread::sleep(r.interval + Duration::from_secs(1));
    if let Ok(u) = engine::usage(pid, ticks) {
        usage.hwm_mb = u.hwm_mb;
    }
    let clean_stop = engine::stop(&mut child, Duration::from_secs(30))?;
    let broker_after = a.broker_pid.and_then(|p| engine::usage(p, ticks).ok());
    let mut verdict = reader.finish(Duration::from_secs(60))?;
    if let Some(p) = problem {
        verdict = Err(match verdict {
            Ok(()) => p,
            Err(e) => format!("{p}; {e}"),
        });
    }
    if !clean_stop {
        eprintln!(
            "bench: {} did not stop on SIGTERM within 30s; killed",
            r.tag
        );
    }
    let (throughput, per_cpu_s, cpu_s) = match (first, done) {
        (Some((t1, p1, c1)), Some((t2, c2))) if t2 - t1 > Duration::from_millis(300) => {
            let n = (target - p1.min(target)) as f64;
            (n / (t2 - t1).as_secs_f64(), n / (c2 - c1).max(1e-3), c2)
        }
        (_, Some((t2, c2))) => {
            let n = target as f64;
            (n / (t2 - started).as_secs_f64(), n / c2.max(1e-3), c2)
        }
        _ => (0.0, 0.0, usage.cpu_s),
    };
    let mut pauses = engine::flumen_checkpoint_pauses(&dir);
    pauses.sort_by(|x, y| x.total_cmp(y));
    let pause_p99_ms = report::percentile(&pauses, 0.99);
    engine::clean_up(&dir, r.tag, verdict.is_ok());
    topics::delete_containing(&a.bootstrap, r.tag)?;
    Ok(Outcome {
        engine: r.engine,
        workload: r.workload,
        size: r.size,
        interval: r.interval,
        throughput,
        per_cpu_s,
        cpu_s,
        hwm_mb: usage.hwm_mb,
        pause_p99_ms,
        wall_s: done
            .map(|(t, _)| (t - started).as_secs_f64())
            .unwrap_or(0.0),
        broker_cpu_s: match (broker_before, broker_after) {
            (Some(b), Some(a)) => Some(a.cpu_s - b.cpu_s),
            _ => None,
        },
        verdict,
    })
}

/// Fisher–Yates with splitmix64 steps: the order of one repetition.
fn shuffle<T>(v: &mut [T], state: &mut u64) {
    for i in (1..v.len()).rev() {
        *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = *state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        v.swap(i, (z % (i as u64 + 1)) as usize);
    }
}
