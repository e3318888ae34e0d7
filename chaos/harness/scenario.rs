//! One scenario's frame: topics, the daemon, live input and a reader; the fault, injected by
//! the scenario's own function (`faults.rs`); then the input stops, the daemon catches up and
//! stops, and the verifier reads everything back.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::after;
use crate::brokers::Brokers;
use crate::daemon::{Daemon, Names, Settings, config};
use crate::late;
use crate::reader::{self, Reader};
use crate::stacks;
use crate::topics::{self, Feeder, Load};
use crate::verify::{self, Kind, Verdict};

/// What a fault function works with.
pub struct Ctx<'a> {
    pub bed: &'a Bed,
    pub names: Names,
    pub settings: Settings,
    /// The daemon the input flows through; a zombie scenario swaps in its replacement.
    pub daemon: Daemon,
    /// Other daemons that must end, and did (a zombie).
    pub retired: Vec<Daemon>,
    pub faults: u64,
    /// Expectations of the scenario itself that failed (an exit code, a missing detection).
    pub failures: Vec<String>,
    pub notes: Vec<String>,
    pub rng: rand::rngs::ThreadRng,
    pub feeder_started: Instant,
    /// The faults ran under a supervisor ([`Ctx::supervised_sleep_ms`]): an exit after the
    /// last one is restarted too.
    pub supervised: bool,
    /// Hanging transactions the brokers had before this scenario began (an earlier
    /// scenario's, on the same brokers): not this scenario's to count.
    pub hanging_before: Vec<String>,
}

/// The machine-wide parts: brokers, the flumen binary, the work directory, and how long.
pub struct Bed {
    pub brokers: Brokers,
    pub flumen: PathBuf,
    pub work: PathBuf,
    pub quick: bool,
    pub load: Load,
    pub replication: i32,
    /// How long the soak runs (`--soak-minutes`).
    pub soak: Duration,
    next_port: std::sync::atomic::AtomicU16,
}

impl Bed {
    pub fn new(brokers: Brokers, flumen: PathBuf, work: PathBuf, quick: bool, load: Load) -> Bed {
        let replication = if brokers.nodes >= 3 { 3 } else { 1 };
        Bed {
            brokers,
            flumen,
            work,
            quick,
            load,
            replication,
            soak: Duration::from_secs(3_600),
            next_port: std::sync::atomic::AtomicU16::new(19_700),
        }
    }

    pub fn admin_port(&self) -> u16 {
        self.next_port
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    /// `quick` in the quick set, `full` otherwise.
    pub fn pick<T>(&self, quick: T, full: T) -> T {
        if self.quick { quick } else { full }
    }
}

/// A scenario's row of the table.
#[derive(Default)]
pub struct Row {
    pub scenario: String,
    pub faults: u64,
    pub inputs: u64,
    pub bad_inputs: usize,
    /// Good inputs of the count pipeline (every well-formed record).
    pub good_inputs: usize,
    pub verdicts: Vec<(Kind, Verdict)>,
    pub hanging: Vec<String>,
    pub aborted_records: usize,
    pub longest_stall: Duration,
    pub stalls: usize,
    pub failures: Vec<String>,
    pub notes: Vec<String>,
    pub took: Duration,
}

impl Row {
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
            && self.hanging.is_empty()
            && self.verdicts.iter().all(|(_, v)| v.ok())
            && !self.verdicts.is_empty()
    }

    pub fn sum(&self, f: fn(&Verdict) -> usize) -> usize {
        self.verdicts.iter().map(|(_, v)| f(v)).sum()
    }
}

impl<'a> Ctx<'a> {
    /// Starts the daemon with `env` once more (after a crash or a stop).
    pub fn restart(&mut self, env: &[(&str, &str)]) -> Result<()> {
        self.daemon.start(env)
    }

    /// A second daemon of the same pipelines and instance id, with its own state directory
    /// (the checkpoint directory is shared, as instances share it).
    pub fn replacement(&self, name: &str) -> Result<Daemon> {
        let dir = self.bed.work.join(&self.names.prefix).join(name);
        let port = self.bed.admin_port();
        let text = config(&self.names, &self.settings, &dir.join("state"), port);
        let mut d = Daemon::new(&self.settings.program, &dir, &text, port)?;
        d.env = self.settings.env.clone();
        Ok(d)
    }

    pub fn sleep_ms(&mut self, range: std::ops::Range<u64>) {
        use rand::Rng;
        std::thread::sleep(Duration::from_millis(self.rng.random_range(range)));
    }

    /// Sleeps as [`Ctx::sleep_ms`], watching the daemon as its supervisor would (systemd's
    /// `Restart=on-failure`, a pod's restart policy): one that exited (a fatal error exits
    /// non-zero, rule 3) is started again a second later, and the exit is noted. Without this a
    /// fatal exit in the middle of the faults stalled the run until the end of the scenario.
    pub fn supervised_sleep_ms(&mut self, range: std::ops::Range<u64>) -> Result<()> {
        use rand::Rng;
        self.supervised = true;
        let until = Instant::now() + Duration::from_millis(self.rng.random_range(range));
        loop {
            if let Some(status) = self.daemon.wait(Duration::ZERO)? {
                self.restart_exited(status, "during the faults")?;
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(());
            }
            std::thread::sleep(left.min(Duration::from_millis(250)));
        }
    }

    /// Notes the exit of the daemon with its cause, and starts it again a second later, as a
    /// supervisor would.
    pub fn restart_exited(&mut self, status: std::process::ExitStatus, when: &str) -> Result<()> {
        let log = self.daemon.last_log();
        let cause = exit_cause(&log);
        self.notes.push(format!(
            "the daemon exited ({status}) {when}; restarted as a supervisor would. Cause: {cause}"
        ));
        std::thread::sleep(Duration::from_secs(1));
        self.daemon.start(&[])
    }

    pub fn fail(&mut self, what: String) {
        eprintln!("chaos:   FAILED: {what}");
        self.failures.push(what);
    }
}

/// The cause of a daemon's exit in its log: Flumen's own `error:` line, which it writes last;
/// without one, the last line that says ERROR or fatal (rust-rdkafka's consumer logs an ERROR
/// of its own when dropped after a fence, before Flumen's line; it is not the cause).
fn exit_cause(log: &str) -> &str {
    // the daemon prints each failed pipeline's `error:` line as it fails; the first failure
    // stopped the others, whose lines follow (a pipeline restarting then names its last error)
    let first_error = log.lines().find(|l| l.starts_with("error:"));
    let last = |f: &dyn Fn(&str) -> bool| log.lines().rev().find(|l| f(l));
    first_error
        .or_else(|| last(&|l| l.contains("fatal") || l.contains("ERROR")))
        .unwrap_or_default()
        .trim()
}

/// Runs one scenario: `tweak` adjusts the settings, `fault` injects its faults while input
/// flows.
pub fn run(
    bed: &Bed,
    scenario: &str,
    tweak: impl FnOnce(&mut Settings),
    fault: impl FnOnce(&mut Ctx<'_>) -> Result<()>,
) -> Result<Row> {
    let began = Instant::now();
    let names = Names::new(scenario);
    eprintln!("chaos: {scenario} ({})", names.prefix);
    topics::create(
        &bed.brokers.direct,
        &names.topics(),
        &names.source,
        &[names.sink(Kind::Count), names.sink(Kind::Sum)],
        bed.replication,
    )?;
    let dir = bed.work.join(&names.prefix).join("a");
    let mut settings = Settings {
        bootstrap: bed.brokers.bootstrap.clone(),
        interval: "500ms",
        transaction_timeout: "15s",
        checkpoint_dir: bed.work.join(&names.prefix).join("checkpoints"),
        state_dir: None,
        instance_id: "chaos".into(),
        properties: vec![("session.timeout.ms".into(), "10000".into())],
        kinds: Kind::ALL.to_vec(),
        program: bed.flumen.clone(),
        env: Vec::new(),
    };
    tweak(&mut settings);
    let port = bed.admin_port();
    let state = settings
        .state_dir
        .clone()
        .unwrap_or_else(|| dir.join("state"));
    let text = config(&names, &settings, &state, port);
    let mut daemon = Daemon::new(&settings.program, &dir, &text, port)?;
    daemon.env = settings.env.clone();
    daemon.start(&[])?;
    let stacks = stacks::Watcher::start(port, bed.work.join(&names.prefix));
    daemon.wait_ready(Duration::from_secs(120))?;
    let reader = Reader::start(&bed.brokers.direct, &watched(&names, &settings.kinds))?;
    let hanging_before = bed.brokers.hanging().unwrap_or_default();
    let feeder = Feeder::start(&bed.brokers.direct, &names.source, bed.load)?;
    let mut ctx = Ctx {
        bed,
        names: names.clone(),
        settings,
        daemon,
        retired: Vec::new(),
        faults: 0,
        failures: Vec::new(),
        notes: Vec::new(),
        rng: rand::rng(),
        feeder_started: Instant::now(),
        supervised: false,
        hanging_before,
    };
    let faulted = fault(&mut ctx);
    let fault_window = (ctx.feeder_started, Instant::now());
    let (inputs, stalled) = feeder.stop()?;
    ctx.notes.extend(stalled);
    if let Err(e) = faulted {
        ctx.fail(format!("the fault injection failed: {e:#}"));
    }
    let row = finish(bed, scenario, ctx, reader, inputs, fault_window, began);
    stacks.stop();
    row
}

/// A row whose input mostly never reached the topic checks too little to pass: less than 90%
/// of the records produced (the far-future closing records aside) read back from the source.
fn too_little_input(produced: u64, in_topic: usize) -> Option<String> {
    let in_topic = u64::try_from(in_topic).unwrap_or(u64::MAX);
    (in_topic.saturating_mul(10) < produced.saturating_mul(9)).then(|| {
        format!(
            "could not run: only {in_topic} of the {produced} input records produced reached the source topic (the harness's input producer stalled), too few to check"
        )
    })
}

/// The input has stopped: the daemon catches up, is healthy and stops cleanly; the outputs
/// are read to their end and checked.
fn finish(
    bed: &Bed,
    scenario: &str,
    mut ctx: Ctx<'_>,
    reader: Reader,
    inputs: u64,
    fault_window: (Instant, Instant),
    began: Instant,
) -> Result<Row> {
    let names = ctx.names.clone();
    let source = reader::read_all(&bed.brokers.direct, &names.source, "read_uncommitted")?;
    if let Some(short) = too_little_input(inputs, source.len()) {
        ctx.fail(short);
    }
    let references: Vec<_> = ctx
        .settings
        .kinds
        .iter()
        .map(|&k| verify::reference(k, &source))
        .collect();
    after::settle(&mut ctx, &references, &reader)?;
    let live = reader.finish(Duration::from_secs(30))?;
    let read = reader::read_to_end(
        &bed.brokers.direct,
        &watched(&names, &ctx.settings.kinds),
        "read_committed",
        Duration::from_secs(120),
    )?;
    after::reconcile(&mut ctx, &live, &read);
    let hanging = after::hanging(bed, &mut ctx, &read);
    let mut row = Row {
        scenario: scenario.to_string(),
        faults: ctx.faults,
        inputs,
        bad_inputs: references.first().map(|r| r.bad.len()).unwrap_or(0),
        good_inputs: references.first().map(|r| r.good).unwrap_or(0),
        hanging,
        ..Row::default()
    };
    let late = judge_late(&mut ctx, &source)?;
    for r in &references {
        let empty = Vec::new();
        let out = read.records.get(&names.sink(r.kind)).unwrap_or(&empty);
        let dlq = read
            .records
            .get(&names.dead_letters(r.kind))
            .unwrap_or(&empty);
        let late = late.as_ref().filter(|_| r.kind == Kind::Window);
        row.verdicts
            .push((r.kind, verify::check(r, out, dlq, late)));
    }
    let uncommitted = reader::read_all(
        &bed.brokers.direct,
        &names.sink(Kind::Count),
        "read_uncommitted",
    )
    .context("reading the count sink read_uncommitted")?;
    let committed = read
        .records
        .get(&names.sink(Kind::Count))
        .map_or(0, Vec::len);
    row.aborted_records = uncommitted.len().saturating_sub(committed);
    let (stalls, longest) = after::stalls(&live.arrivals, fault_window);
    row.stalls = stalls;
    row.longest_stall = longest;
    row.failures = std::mem::take(&mut ctx.failures);
    row.notes = std::mem::take(&mut ctx.notes);
    row.took = began.elapsed();
    if !row.passed() {
        keep_logs(&ctx);
    } else if std::env::var_os("FLUMEN_CHAOS_KEEP").is_none() {
        std::fs::remove_dir_all(bed.work.join(&names.prefix)).ok();
    }
    Ok(row)
}

/// The sink and dead-letter topics of `kinds`, sinks first (the first one's arrivals give the
/// stall figures).
/// The window pipeline's late records, judged (`late.rs`); a note says how many were late by
/// the config's terms.
fn judge_late(ctx: &mut Ctx<'_>, source: &[verify::Rec]) -> Result<Option<late::Late>> {
    if !ctx.settings.kinds.contains(&Kind::Window) {
        return Ok(None);
    }
    let records = reader::read_all(&ctx.bed.brokers.direct, &ctx.names.late(), "read_committed")
        .context("reading the window pipeline's late topic")?;
    let judged = late::judge(source, &records, verify::WINDOW_MS);
    if judged.explained > 0 {
        ctx.notes.push(format!(
            "window pipeline: {} records late by the config's terms (their source partition had no record for the idle timeout before they arrived), each in the late topic and out of its window's count",
            judged.explained
        ));
    }
    Ok(Some(judged))
}

fn watched(names: &Names, kinds: &[Kind]) -> Vec<String> {
    let sinks = kinds.iter().map(|&k| names.sink(k));
    sinks
        .chain(kinds.iter().map(|&k| names.dead_letters(k)))
        .collect()
}

/// A failed scenario's directory (its daemons' logs, state and checkpoints) outlives later
/// runs: it is marked, and [`clear_work_dir`] leaves marked directories alone.
fn keep_logs(ctx: &Ctx<'_>) {
    let dir = ctx.bed.work.join(&ctx.names.prefix);
    if let Err(e) = std::fs::write(dir.join(KEPT), "failed; delete this directory by hand\n") {
        eprintln!("chaos:   cannot mark {} as kept: {e}", dir.display());
    }
    eprintln!(
        "chaos:   logs kept in {} (later runs leave it; delete it by hand)",
        dir.display()
    );
}

/// The marker of a failed scenario's directory.
const KEPT: &str = "KEPT";

/// Empties the work directory for a run, but for failed scenarios' directories.
pub fn clear_work_dir(work: &std::path::Path) -> Result<()> {
    if let Ok(entries) = std::fs::read_dir(work) {
        for e in entries.flatten() {
            let path = e.path();
            if path.join(KEPT).try_exists().unwrap_or(true) {
                eprintln!(
                    "chaos: an earlier failed scenario's logs stay in {}",
                    path.display()
                );
            } else if path.is_dir() {
                std::fs::remove_dir_all(&path).ok();
            } else {
                std::fs::remove_file(&path).ok();
            }
        }
    }
    std::fs::create_dir_all(work)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{exit_cause, too_little_input};

    #[test]
    fn an_exit_s_cause_is_flumen_s_error_line_before_a_client_s_error() {
        // the cluster run 100440Z: rust-rdkafka's drop, after a fence, logs beside Flumen's line
        let log = "2026-12-03T09:40:01Z ERROR pipeline failed\n\
                   error: pipeline count: fenced by a newer instance\n\
                   2026-12-03T09:40:02Z ERROR rdkafka::consumer: Failed to close consumer queue on drop: FencedInstanceId\n";
        assert_eq!(
            exit_cause(log),
            "error: pipeline count: fenced by a newer instance"
        );
        // the cluster run 162837Z: the first failure stopped the others, which printed theirs
        let log = "error: pipeline count: FencedInstanceId
                   error: pipeline window: send_offsets_to_transaction did not return
";
        assert_eq!(exit_cause(log), "error: pipeline count: FencedInstanceId");
        let log = "INFO ok\n  ERROR rdkafka::consumer: Failed to close\nINFO bye\n";
        assert_eq!(exit_cause(log), "ERROR rdkafka::consumer: Failed to close");
        assert_eq!(exit_cause("INFO ok\n"), "");
    }

    #[test]
    fn a_row_whose_input_mostly_never_reached_the_topic_cannot_pass() {
        // the blackhole row of the 2026-12-03 full set: 459 of 37,279 in the topic, a PASS
        let e = too_little_input(37_279, 459).unwrap_or_default();
        assert!(e.starts_with("could not run: only 459 of the 37279"), "{e}");
        assert_eq!(too_little_input(37_279, 37_279), None);
        // records a replaced producer dropped are few, and the row still checks the rest
        assert_eq!(too_little_input(1_000, 900), None);
        assert!(too_little_input(1_000, 899).is_some());
    }
}
