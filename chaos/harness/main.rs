//! `flumen-chaos`: the chaos suite behind `scripts/chaos.sh` (issue #17). Not part of the
//! product: built only with `--features chaos`; the library's layering rules (rdkafka only in
//! `kafka/`) do not apply to it. Layout:
//!
//! - `brokers`: the suite's own brokers (`scripts/kafka.sh`, one node or three), each behind
//!   a `proxy`: a TCP proxy that reads Kafka's framing, for blackholes and lost commit
//!   responses.
//! - `topics`: topic creation, the live input with poison pills.
//! - `after`: once the faults end: the daemon settles; hanging transactions, the live reader
//!   against the fresh one, the stalls.
//! - `reader`: the read_committed reader through the faults, the fresh one after them, and
//!   their reconciliation.
//! - `daemon`: the pipelines' config and the `flumen run` child process.
//! - `scenario`: one scenario's frame (input, fault, catch-up, clean stop, verification);
//!   `faults` and `corrupt`: the faults themselves.
//! - `verify`: the reference computed from the source topic and the checks against it.
//! - `soak`: an hour of mixed faults, the daemon's memory, files and threads sampled.
//! - `clock`: the daemon's wall clock moved with libfaketime.
//! - `security`: SASL_SSL, and a canary password that must appear nowhere.
//! - `standin`: an at-least-once processor, run in Flumen's place once to show the verifier
//!   failing.
//! - `report`: the table, printed and written to `chaos/results/`.

mod after;
mod brokers;
mod clock;
mod corrupt;
mod daemon;
mod faults;
mod late;
mod proxy;
mod reader;
mod report;
mod scenario;
mod security;
mod soak;
mod stacks;
mod standin;
mod topics;
mod verify;

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Parser;

#[derive(Parser)]
#[command(
    name = "flumen-chaos",
    about = "Flumen's chaos suite: faults under live input, and a verifier"
)]
enum Cmd {
    /// Run scenarios and print the table.
    Suite(Box<SuiteArgs>),
    /// The at-least-once stand-in (started by `suite` in Flumen's place).
    Run(standin::Args),
}

#[derive(clap::Args)]
struct SuiteArgs {
    /// The flumen binary (built with --features failpoints).
    #[arg(long)]
    flumen: PathBuf,
    /// The project's root (scripts/kafka.sh).
    #[arg(long, default_value = ".")]
    root: PathBuf,
    /// Fewer faults per scenario (the CI set).
    #[arg(long)]
    quick: bool,
    /// Comma-separated scenarios (default: every one that runs on `--nodes`), plus
    /// `at-least-once` (the verifier's own test) and `soak` (an hour, by hand; never by default).
    #[arg(long, value_delimiter = ',')]
    scenarios: Vec<String>,
    /// Brokers: 1, or 3 for a KRaft cluster.
    #[arg(long, default_value_t = 1)]
    nodes: usize,
    /// The brokers' `transaction.version` (1 or 2, KIP-890); the broker's default otherwise.
    #[arg(long)]
    txn_version: Option<u8>,
    /// One KRaft controller of its own beside the brokers (production's layout), instead of
    /// nodes that are broker and controller in one (CHAOS.md, finding 11).
    #[arg(long)]
    dedicated_controller: bool,
    /// First broker port (the test broker has 19092).
    #[arg(long, default_value_t = 19_400)]
    base_port: u16,
    #[arg(long, default_value_t = 300)]
    rate: u64,
    #[arg(long, default_value_t = 200)]
    users: u64,
    #[arg(long, default_value_t = 1)]
    pill_percent: u64,
    /// How long the soak runs (named only: `--scenarios soak`).
    #[arg(long, default_value_t = 60)]
    soak_minutes: u64,
    #[arg(long, default_value = "/tmp/flumen-chaos")]
    work_dir: PathBuf,
    #[arg(long, default_value = "chaos/results")]
    results_dir: PathBuf,
}

fn main() -> Result<()> {
    match Cmd::parse() {
        Cmd::Suite(a) => suite(*a),
        Cmd::Run(a) => standin::main(a),
    }
}

fn suite(a: SuiteArgs) -> Result<()> {
    let load = topics::Load {
        rate_per_s: a.rate,
        users: a.users,
        pill_percent: a.pill_percent,
    };
    let mut names: Vec<String> = if a.scenarios.is_empty() {
        let mut all: Vec<String> = faults::ALL.iter().map(|s| s.to_string()).collect();
        if a.nodes < 3 {
            all.retain(|s| s != "cluster");
        }
        all.push("at-least-once".into());
        all
    } else {
        a.scenarios.clone()
    };
    names.dedup();
    let git = report::git_head();
    scenario::clear_work_dir(&a.work_dir)?;
    let layout = brokers::Layout {
        nodes: a.nodes,
        txn_version: a.txn_version,
        dedicated_controller: a.dedicated_controller,
    };
    let brokers = brokers::Brokers::start(&a.root, layout, a.base_port)?;
    let mut bed = scenario::Bed::new(brokers, a.flumen.clone(), a.work_dir.clone(), a.quick, load);
    bed.soak = std::time::Duration::from_secs(a.soak_minutes * 60);
    let mut rows = Vec::new();
    let mut standin_failed = None;
    for name in &names {
        let row = if name == "at-least-once" {
            standin(&bed)
        } else {
            faults::run_named(&bed, name)
        };
        match row {
            Ok(row) => {
                eprintln!("{}", report::table(std::slice::from_ref(&row))?);
                if name == "at-least-once" {
                    standin_failed = Some(!row.passed());
                }
                rows.push(row);
            }
            Err(e) => {
                eprintln!("chaos: {name} could not run: {e:#}");
                rows.push(scenario::Row {
                    scenario: name.clone(),
                    failures: vec![format!("could not run: {e:#}")],
                    ..scenario::Row::default()
                });
            }
        }
    }
    let table = report::table(&rows)?;
    let path = report::write(
        &a.results_dir,
        &rows,
        &report::Setup {
            quick: a.quick,
            layout,
            load: format!(
                "{} records/s, {} users, {}% poison pills, 4 partitions",
                a.rate, a.users, a.pill_percent
            ),
            flumen: &a.flumen,
            git,
        },
    )?;
    println!("{table}\n{}", report::details(&rows)?);
    println!("written to {}", path.display());
    let failed: Vec<&str> = rows
        .iter()
        .filter(|r| r.scenario != "at-least-once" && !r.passed())
        .map(|r| r.scenario.as_str())
        .collect();
    if standin_failed == Some(false) {
        bail!("the verifier passed the at-least-once stand-in: it cannot be trusted");
    }
    if !failed.is_empty() {
        bail!("failed: {}", failed.join(", "));
    }
    Ok(())
}

/// The verifier's own test: the at-least-once stand-in under SIGKILLs must FAIL.
fn standin(bed: &scenario::Bed) -> Result<scenario::Row> {
    let kills = bed.pick(6, 20);
    let program = std::env::current_exe()?;
    scenario::run(
        bed,
        "at-least-once",
        |s| {
            s.program = program;
            s.kinds = vec![verify::Kind::Count, verify::Kind::Sum];
        },
        |c| {
            for _ in 0..kills {
                c.sleep_ms(1_000..3_000);
                c.daemon.kill9()?;
                c.faults += 1;
                c.restart(&[])?;
            }
            Ok(())
        },
    )
}
