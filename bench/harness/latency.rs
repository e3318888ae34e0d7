//! End-to-end latency at a fixed offered rate (open loop): a generator sends map-workload
//! records of 100 B stamped with their *intended* send time (so a stalled engine cannot hide
//! its queueing, no coordinated omission); the read_committed reader computes now − stamp.
//! Records sent during the engine's start and a warm-up are left out of the percentiles.

use std::time::{Duration, Instant};

use anyhow::Result;
use rdkafka::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

use crate::engine::{self, Engine, Programs, Spec};
use crate::report;
use crate::topics::{self, Reader, now_us};
use crate::workload::{self, Gate, Workload};

pub struct Plan<'a> {
    pub bootstrap: &'a str,
    pub engine: Engine,
    pub interval: Duration,
    /// Records per second offered.
    pub rate: f64,
    pub warmup: Duration,
    pub measure: Duration,
    pub tag: &'a str,
    pub work_dir: &'a std::path::Path,
}

pub struct LatencyOutcome {
    pub engine: Engine,
    pub interval: Duration,
    pub rate: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub samples: usize,
    pub verdict: Result<(), String>,
}

const SIZE: usize = 100;

pub fn measure(programs: &Programs, p: &Plan<'_>) -> Result<LatencyOutcome> {
    let input = format!("bench-lat-in-{}", p.tag);
    let output = format!("bench-lat-out-{}", p.tag);
    topics::create(p.bootstrap, &[&input, &output])?;
    let total = (p.rate * (p.warmup + p.measure).as_secs_f64()) as u64;
    let reader = Reader::start(p.bootstrap, &output, Gate::copy(total, !p.engine.is_raw()))?;
    let dir = p.work_dir.join(p.tag);
    let mut child = engine::start(
        programs,
        &Spec {
            engine: p.engine,
            workload: Workload::Map,
            bootstrap: p.bootstrap,
            input: &input,
            output: &output,
            id: p.tag,
            interval: p.interval,
            dir: &dir,
        },
    )?;

    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", p.bootstrap)
        .set("linger.ms", "1")
        .create()?;
    let start = Instant::now();
    let start_us = now_us();
    for i in 0..total {
        let offset = Duration::from_secs_f64(i as f64 / p.rate);
        let ahead = offset.saturating_sub(start.elapsed());
        if ahead > Duration::from_millis(1) {
            producer.poll(Duration::ZERO);
            std::thread::sleep(ahead);
        }
        let ts = start_us + offset.as_micros() as u64;
        let (k, v) = workload::timed_record(i, SIZE, Some(ts));
        topics::send(
            &producer,
            BaseRecord::to(&input)
                .key(k.as_bytes())
                .payload(v.as_bytes()),
        )?;
    }
    // how late the last record was sent against its schedule (the flush after is not lag)
    let behind = start.elapsed().saturating_sub(p.warmup + p.measure);
    producer.flush(Duration::from_secs(30))?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !reader.complete.load(std::sync::atomic::Ordering::Relaxed) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(p.interval + Duration::from_secs(1));
    engine::stop(&mut child, Duration::from_secs(30))?;
    let gate = reader.gate.clone();
    let mut verdict = reader.finish(Duration::from_secs(60))?;
    if behind > Duration::from_millis(500) {
        let late = format!("the generator fell {behind:?} behind its schedule");
        verdict = Err(match verdict {
            Ok(()) => late,
            Err(e) => format!("{e}; {late}"),
        });
    }
    let from = start_us + p.warmup.as_micros() as u64;
    let to = start_us + (p.warmup + p.measure).as_micros() as u64;
    let mut l: Vec<f64> = gate
        .lock()
        .map_err(|_| anyhow::anyhow!("gate poisoned"))?
        .latencies(from, to)
        .into_iter()
        .map(|us| us as f64 / 1000.0)
        .collect();
    l.sort_by(|x, y| x.total_cmp(y));
    let pct = |q: f64| report::percentile(&l, q).unwrap_or(0.0);
    engine::clean_up(&dir, p.tag, verdict.is_ok());
    topics::delete_containing(p.bootstrap, p.tag)?;
    Ok(LatencyOutcome {
        engine: p.engine,
        interval: p.interval,
        rate: p.rate,
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        max_ms: pct(1.0),
        samples: l.len(),
        verdict,
    })
}
