//! The engines under test, started as child processes, and what /proc says about them.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::workload::Workload;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, clap::ValueEnum)]
pub enum Engine {
    Flumen,
    KafkaStreams,
    /// The raw transactional copy: the physical limit of an exactly-once pipeline.
    RawTx,
    /// The raw copy without transactions (idempotent producer, at-least-once).
    RawIdempotent,
}

impl Engine {
    pub fn name(self) -> &'static str {
        match self {
            Engine::Flumen => "flumen",
            Engine::KafkaStreams => "kafka-streams",
            Engine::RawTx => "raw-copy-tx",
            Engine::RawIdempotent => "raw-copy-idem",
        }
    }

    pub fn is_raw(self) -> bool {
        matches!(self, Engine::RawTx | Engine::RawIdempotent)
    }
}

/// Where each engine's program is.
pub struct Programs {
    pub flumen: PathBuf,
    pub kafka_streams_jar: PathBuf,
    pub harness: PathBuf,
    pub java: PathBuf,
    pub ks_threads: u32,
    pub ks_heap: String,
    /// Flumen's `parallelism`.
    pub flumen_threads: u32,
    /// Flumen's checkpoints in this S3-compatible store (its endpoint), not on local disk.
    pub object_store: Option<String>,
}

/// The test credentials of `scripts/s3.sh`'s store.
const S3_CREDENTIALS: [(&str, &str); 2] = [
    ("AWS_ACCESS_KEY_ID", "flumen-test"),
    ("AWS_SECRET_ACCESS_KEY", "flumen-s3-canary"),
];

/// One engine run's inputs.
pub struct Spec<'a> {
    pub engine: Engine,
    pub workload: Workload,
    pub bootstrap: &'a str,
    pub input: &'a str,
    pub output: &'a str,
    /// Unique per run: the consumer group, transactional ids and application id derive from it.
    pub id: &'a str,
    pub interval: Duration,
    pub dir: &'a Path,
}

pub fn start(p: &Programs, s: &Spec<'_>) -> Result<Child> {
    std::fs::create_dir_all(s.dir)?;
    // appended: a restarted engine (recovery runs) keeps its first life's log
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(s.dir.join("engine.log"))?;
    let mut cmd = match s.engine {
        Engine::Flumen => {
            let config = s.dir.join("pipeline.toml");
            let mut text = flumen_config(s, p.flumen_threads);
            if let Some(endpoint) = &p.object_store {
                text = text.replace(
                    &format!("dir = \"{}/checkpoints\"", s.dir.display()),
                    &format!(
                        "dir = \"s3://flumen/bench-{}\"\nlocal_dir = \"{}/checkpoints\"\n\n[checkpoint.s3]\nendpoint = \"{endpoint}\"\nregion = \"us-east-1\"",
                        s.id,
                        s.dir.display()
                    ),
                );
            }
            std::fs::write(&config, text)?;
            let mut c = Command::new(&p.flumen);
            c.arg("run").arg("--config").arg(&config);
            c.envs(S3_CREDENTIALS);
            // the debug line of each committed checkpoint carries its duration (`took=`)
            c.env("RUST_LOG", "warn,flumen::pipeline::task=debug");
            c
        }
        Engine::KafkaStreams => {
            let mut c = Command::new(&p.java);
            c.arg(format!("-Xms{}", p.ks_heap))
                .arg(format!("-Xmx{}", p.ks_heap))
                .arg("-XX:+UseG1GC")
                .arg("-Dorg.slf4j.simpleLogger.defaultLogLevel=warn")
                .arg("-jar")
                .arg(&p.kafka_streams_jar)
                .arg(s.workload.name())
                .arg(s.bootstrap)
                .arg(s.input)
                .arg(s.output)
                .arg(s.id)
                .arg(s.interval.as_millis().to_string())
                .arg(p.ks_threads.to_string())
                .arg(s.dir.join("state"));
            c
        }
        Engine::RawTx | Engine::RawIdempotent => {
            let mut c = Command::new(&p.harness);
            c.arg("raw-copy")
                .args([
                    "--bootstrap",
                    s.bootstrap,
                    "--input",
                    s.input,
                    "--output",
                    s.output,
                ])
                .args(["--group", s.id])
                .arg("--interval")
                .arg(format!("{}ms", s.interval.as_millis()))
                .args([
                    "--mode",
                    if s.engine == Engine::RawTx {
                        "tx"
                    } else {
                        "idempotent"
                    },
                ]);
            c
        }
    };
    cmd.stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .current_dir(s.dir);
    cmd.spawn()
        .with_context(|| format!("starting {} ({:?})", s.engine.name(), cmd.get_program()))
}

fn flumen_config(s: &Spec<'_>, threads: u32) -> String {
    format!(
        r#"instance_id = "0"

[kafka]
bootstrap_servers = "{bootstrap}"

[checkpoint]
interval = "{interval}ms"
dir = "{dir}/checkpoints"

[state]
backend = "rocksdb"
dir = "{dir}/state"

[[pipelines]]
name = "bench"
group_id = "{id}"
transactional_id_prefix = "{id}"
parallelism = {threads}
source = {{ topic = "{input}", format = "json"{source_extra} }}
sink = {{ topic = "{output}", format = "json" }}
operators = {ops}
"#,
        bootstrap = s.bootstrap,
        interval = s.interval.as_millis(),
        dir = s.dir.display(),
        id = s.id,
        input = s.input,
        output = s.output,
        ops = s.workload.flumen_operators(),
        source_extra = s.workload.flumen_source_extra(),
    )
}

/// SIGTERM, then SIGKILL after `grace`; returns whether it stopped on SIGTERM.
pub fn stop(child: &mut Child, grace: Duration) -> Result<bool> {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()?;
    if !status.success() {
        bail!("kill -TERM {} failed", child.id());
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if child.try_wait()?.is_some() {
            return Ok(true);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill()?;
    child.wait()?;
    Ok(false)
}

/// Deletes a valid run's directory (config, state, log); keeps an invalid one's and says where.
/// `FLUMEN_BENCH_KEEP=1` keeps every run's (to read Flumen's checkpoint phases, say).
pub fn clean_up(dir: &Path, tag: &str, valid: bool) {
    if !valid || std::env::var("FLUMEN_BENCH_KEEP").as_deref() == Ok("1") {
        eprintln!("bench: {tag} kept for inspection: {}", dir.display());
    } else if let Err(e) = std::fs::remove_dir_all(dir) {
        eprintln!("bench: could not delete {}: {e}", dir.display());
    }
}

/// CPU seconds (user + system, all threads) and memory of a live process, from /proc.
#[derive(Clone, Copy, Debug, Default)]
pub struct Usage {
    pub cpu_s: f64,
    /// Peak resident set (VmHWM).
    pub hwm_mb: f64,
}

pub fn usage(pid: u32, ticks_per_s: f64) -> Result<Usage> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // fields after the parenthesised command name; utime and stime are fields 14 and 15
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("malformed /proc/pid/stat")?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 =
        f.get(11).context("utime")?.parse::<f64>()? + f.get(12).context("stime")?.parse::<f64>()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb = |name: &str| -> f64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    Ok(Usage {
        cpu_s: ticks / ticks_per_s,
        hwm_mb: kb("VmHWM:") / 1024.0,
    })
}

/// Clock ticks per second for /proc/pid/stat (`getconf CLK_TCK`, 100 on Linux).
pub fn ticks_per_s() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// Flumen's checkpoint durations in ms, from the `took=` of its "checkpoint committed" lines.
/// The pipeline thread processes nothing while it checkpoints, so this is the pause.
pub fn flumen_checkpoint_pauses(dir: &Path) -> Vec<f64> {
    let Ok(log) = std::fs::read_to_string(dir.join("engine.log")) else {
        return Vec::new();
    };
    log.lines()
        .filter(|l| l.contains("checkpoint committed"))
        .filter_map(|l| l.split_whitespace().find_map(|w| w.strip_prefix("took=")))
        .filter_map(debug_duration_ms)
        .collect()
}

/// Parses a `Duration`'s Debug form ("12.5ms", "1.2s", "950µs", "80ns") into ms.
fn debug_duration_ms(s: &str) -> Option<f64> {
    let s = s.trim_matches(|c: char| c == ',' || c == '"');
    for (unit, ms) in [("ms", 1.0), ("µs", 1e-3), ("ns", 1e-6), ("s", 1e3)] {
        if let Some(v) = s.strip_suffix(unit) {
            return v.parse::<f64>().ok().map(|v| v * ms);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::debug_duration_ms;

    #[test]
    fn duration_debug_forms_parse() {
        assert_eq!(debug_duration_ms("12.5ms"), Some(12.5));
        assert_eq!(debug_duration_ms("1.5s"), Some(1500.0));
        assert_eq!(debug_duration_ms("500µs"), Some(0.5));
        assert_eq!(debug_duration_ms("oops"), None);
    }
}
