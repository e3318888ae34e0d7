//! `flumen offsets show|reset`, in the conventions of `kafka-consumer-groups --reset-offsets`:
//! a dry run prints the plan unless `--execute`.

use crate::pipeline::custom::Operators;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, anyhow, bail};
use serde_json::json;

use super::{Output, exit, load_config, print_json};
use crate::checkpoint::savepoint::Savepoint;
use crate::config::Config;
use crate::pipeline::{self, ErrorKind, Inputs, Options, Runner, chain};
use crate::state::StateEnv;
use crate::tools::reset::plan::{Scenario, parse_offsets_file};

/// Which scenario `reset` was given (exactly one, enforced by clap).
#[derive(Debug, Clone, Default, clap::Args)]
#[group(required = true, multiple = false)]
pub struct ScenarioArgs {
    /// The earliest offset still in the log.
    #[arg(long)]
    to_earliest: bool,
    /// The log end.
    #[arg(long)]
    to_latest: bool,
    /// The first record at or after this UTC time (`2026-11-24T09:00:00Z`).
    #[arg(long, value_name = "DATETIME")]
    to_datetime: Option<String>,
    /// The first record at or after now minus this (`15m`, `2h`, or ISO-8601 `PT15M`).
    #[arg(long, value_name = "DURATION")]
    by_duration: Option<String>,
    /// Move by N (negative: back).
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    shift_by: Option<i64>,
    /// This offset.
    #[arg(long, value_name = "OFFSET")]
    to_offset: Option<i64>,
    /// The committed offsets as they are (with --export: save them, to move back later with
    /// --from-file).
    #[arg(long)]
    to_current: bool,
    /// `topic,partition,offset` lines (kafka-consumer-groups' CSV).
    #[arg(long, value_name = "FILE")]
    from_file: Option<PathBuf>,
    /// State and offsets from a savepoint (the offline form of `run --from-savepoint`).
    #[arg(long, value_name = "DIR")]
    to_savepoint: Option<PathBuf>,
}

/// `--topic TOPIC[:P,P,...]` → the partitions selected (`None`: all).
fn selection(topic: Option<&str>, source: &str) -> anyhow::Result<Option<Vec<i32>>> {
    let Some(t) = topic else { return Ok(None) };
    let (name, parts) = t.split_once(':').map_or((t, None), |(n, p)| (n, Some(p)));
    if name != source {
        bail!("--topic {name}: the pipeline reads {source}");
    }
    parts
        .map(|p| {
            p.split(',')
                .map(|x| {
                    x.trim()
                        .parse::<i32>()
                        .with_context(|| format!("--topic: partition {x:?}"))
                })
                .collect()
        })
        .transpose()
}

/// ISO-8601 `PnDTnHnMnS` (the form kafka-consumer-groups takes), else humantime (`15m`).
fn parse_duration(text: &str) -> anyhow::Result<Duration> {
    let Some(rest) = text.strip_prefix('P') else {
        return humantime::parse_duration(text).with_context(|| format!("--by-duration {text:?}"));
    };
    let mut secs = 0u64;
    let mut number = String::new();
    let mut in_time = false;
    for c in rest.chars() {
        match c {
            'T' => in_time = true,
            '0'..='9' => number.push(c),
            unit => {
                let n: u64 = number
                    .parse()
                    .with_context(|| format!("--by-duration {text:?}"))?;
                number.clear();
                secs += n * match (unit, in_time) {
                    ('D', false) => 86_400,
                    ('H', true) => 3_600,
                    ('M', true) => 60,
                    ('S', true) => 1,
                    _ => bail!("--by-duration {text:?}: unsupported unit {unit}"),
                };
            }
        }
    }
    Ok(Duration::from_secs(secs))
}

fn scenario(args: &ScenarioArgs, source: &str) -> anyhow::Result<Scenario> {
    let now_ms = || {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    };
    Ok(if args.to_earliest {
        Scenario::Earliest
    } else if args.to_latest {
        Scenario::Latest
    } else if let Some(t) = &args.to_datetime {
        let at =
            humantime::parse_rfc3339_weak(t).with_context(|| format!("--to-datetime {t:?}"))?;
        Scenario::Timestamp(
            at.duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
        )
    } else if let Some(d) = &args.by_duration {
        let back = parse_duration(d)?.as_millis() as u64;
        Scenario::Timestamp(now_ms().saturating_sub(back))
    } else if let Some(n) = args.shift_by {
        Scenario::ShiftBy(n)
    } else if let Some(o) = args.to_offset {
        Scenario::Offset(o)
    } else if args.to_current {
        Scenario::ShiftBy(0)
    } else if let Some(f) = &args.from_file {
        let text = std::fs::read_to_string(f).with_context(|| format!("read {}", f.display()))?;
        Scenario::Exact(
            parse_offsets_file(&text, source).map_err(|e| anyhow!("{}: {e}", f.display()))?,
        )
    } else {
        bail!("no reset scenario given")
    })
}

/// Runs `f` with the inputs of one pipeline of `config` and a runtime for the admin client.
pub(super) fn with_inputs<T>(
    config: &Config,
    operators: &Operators,
    pipeline: &str,
    f: impl FnOnce(&Inputs<'_>) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let p = config
        .pipelines
        .iter()
        .find(|p| p.name == pipeline)
        .ok_or_else(|| anyhow!("no pipeline {pipeline:?} in the config"))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("start the async runtime")?;
    // the admin client's futures need a runtime that runs while this thread blocks
    let handle = runtime.handle().clone();
    let env = StateEnv::new(&config.state);
    let metrics = crate::metrics::PipelineMetrics::detached(&p.name);
    let inputs = Inputs {
        config,
        pipeline: p,
        env: &env,
        options: Options::default(),
        cancel: tokio_util::sync::CancellationToken::new(),
        runtime: handle,
        savepoint: None,
        progress: None,
        operators,
        metrics: &metrics,
    };
    std::thread::scope(|s| {
        let driver = s.spawn(|| runtime.block_on(inputs.cancel.cancelled()));
        let out = f(&inputs);
        inputs.cancel.cancel();
        drop(driver.join());
        out
    })
}

pub(super) fn code_of(e: &anyhow::Error) -> u8 {
    match e
        .downcast_ref::<pipeline::Error>()
        .map(pipeline::Error::kind)
    {
        Some(ErrorKind::State) => exit::STATE,
        _ => exit::FAILURE,
    }
}

pub fn show(ops: &Operators, config: &Path, pipeline: &str, output: Output) -> u8 {
    let cfg = match load_config(ops, config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let report = match with_inputs(&cfg, ops, pipeline, |i| Ok(crate::tools::reset::show(i)?)) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e:#}");
            return code_of(&e);
        }
    };
    if output == Output::Json {
        return print_json(&report);
    }
    println!(
        "group {} ({} live member(s){})",
        report.group,
        report.members.len(),
        if report.members.is_empty() {
            String::new()
        } else {
            format!(": {}", report.members.join(", "))
        }
    );
    println!(
        "{:<40}  {:>9}  {:>14}  {:>10}  {:>10}  {:>8}",
        "TOPIC", "PARTITION", "CURRENT-OFFSET", "LOG-START", "LOG-END", "LAG"
    );
    for r in &report.rows {
        let c = r.committed.map_or_else(|| "-".into(), |c| c.to_string());
        let lag = r.lag.map_or_else(|| "-".into(), |l| l.to_string());
        println!(
            "{:<40}  {:>9}  {c:>14}  {:>10}  {:>10}  {lag:>8}",
            r.topic, r.partition, r.log_start, r.log_end
        );
    }
    exit::OK
}

pub struct ResetArgs<'a> {
    pub ops: &'a Operators,
    pub config: &'a Path,
    pub pipeline: &'a str,
    pub topic: Option<&'a str>,
    pub scenario: &'a ScenarioArgs,
    pub drop_state: bool,
    pub execute: bool,
    /// Print the plan as `topic,partition,offset` lines (what --from-file reads).
    pub export: bool,
    pub output: Output,
}

pub fn reset(a: &ResetArgs<'_>) -> u8 {
    let cfg = match load_config(a.ops, a.config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let result = with_inputs(&cfg, a.ops, a.pipeline, |inputs| {
        if let Some(dir) = &a.scenario.to_savepoint {
            return to_savepoint(inputs, dir, a.execute, a.output);
        }
        let source = &inputs.pipeline.source.topic;
        let scenario = scenario(a.scenario, source)?;
        let only = selection(a.topic, source)?;
        let plan = crate::tools::reset::plan(inputs, &scenario, only.as_deref(), a.drop_state)?;
        if a.export {
            // kafka-consumer-groups' --export: CSV on stdout, for --from-file
            for r in &plan.rows {
                println!("{},{},{}", plan.topic, r.partition, r.new);
            }
        } else if a.output == Output::Json {
            print_json(&json!({"plan": plan, "executed": a.execute}));
        } else {
            println!(
                "{:<40}  {:>9}  {:>14}  {:>10}  {:>8}",
                "TOPIC", "PARTITION", "CURRENT-OFFSET", "NEW-OFFSET", "LAG"
            );
            for r in &plan.rows {
                let old = r.old.map_or_else(|| "-".into(), |o| o.to_string());
                println!(
                    "{:<40}  {:>9}  {old:>14}  {:>10}  {:>8}",
                    plan.topic, r.partition, r.new, r.lag
                );
            }
            if plan.drops_state {
                println!("state: the affected keyed state starts EMPTY (--drop-state)");
            }
        }
        if !a.execute {
            // the refusals a real run would meet are checked in the dry run too
            crate::tools::reset::ensure_stopped(inputs)?;
            eprintln!("dry run: nothing changed; add --execute to apply");
            return Ok(());
        }
        let written = crate::tools::reset::execute(inputs, &plan)?;
        eprintln!(
            "offsets of group {} reset{}",
            plan.group,
            written.map_or_else(String::new, |id| format!(" (state: checkpoint {id})"))
        );
        Ok(())
    });
    match result {
        Ok(()) => exit::OK,
        Err(e) => {
            eprintln!("error: {e:#}");
            code_of(&e)
        }
    }
}

fn to_savepoint(
    inputs: &Inputs<'_>,
    dir: &Path,
    execute: bool,
    output: Output,
) -> anyhow::Result<()> {
    let sp = Savepoint::open(dir, Some(&inputs.pipeline.name)).map_err(|e| anyhow!(chain(&e)))?;
    sp.verify().map_err(|e| anyhow!(chain(&e)))?;
    let report = crate::tools::reset::show(inputs)?;
    let rows: Vec<_> = sp
        .manifest
        .offsets
        .iter()
        .map(|o| {
            let current = report
                .rows
                .iter()
                .find(|r| r.topic == sp.manifest.source_topic && r.partition == o.partition);
            json!({
                "topic": sp.manifest.source_topic,
                "partition": o.partition,
                "old": current.and_then(|r| r.committed),
                "new": o.next_offset.map(|n| n.0),
                "lag": current.and_then(|r| o.next_offset.map(|n| r.log_end - n.0)),
            })
        })
        .collect();
    if output == Output::Json {
        print_json(&json!({"savepoint": sp.dir, "plan": rows, "executed": execute}));
    } else {
        println!(
            "{:<40}  {:>9}  {:>14}  {:>10}  {:>8}",
            "TOPIC", "PARTITION", "CURRENT-OFFSET", "NEW-OFFSET", "LAG"
        );
        for r in &rows {
            let s = |k: &str| {
                r[k].as_i64()
                    .map_or_else(|| "-".to_string(), |v| v.to_string())
            };
            println!(
                "{:<40}  {:>9}  {:>14}  {:>10}  {:>8}",
                sp.manifest.source_topic,
                r["partition"],
                s("old"),
                s("new"),
                s("lag")
            );
        }
        println!(
            "state: from savepoint {} ({} keys)",
            sp.dir.display(),
            sp.manifest.keys()
        );
    }
    crate::tools::reset::ensure_stopped(inputs)?;
    if !execute {
        eprintln!("dry run: nothing changed; add --execute to apply");
        return Ok(());
    }
    let bar = indicatif::ProgressBar::new(sp.manifest.keys()).with_style(
        indicatif::ProgressStyle::with_template(
            "restoring state {bar:40} {pos}/{len} keys ({eta})",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let report = |done: u64, _total: u64| bar.set_position(done);
    let with_progress = Inputs {
        progress: Some(&report),
        savepoint: None,
        options: inputs.options,
        cancel: inputs.cancel.clone(),
        runtime: inputs.runtime.clone(),
        ..*inputs
    };
    Runner::restore_offline(&with_progress, &sp)?;
    bar.finish_and_clear();
    eprintln!(
        "state and offsets of {} restored from {}",
        inputs.pipeline.name,
        sp.dir.display()
    );
    Ok(())
}
