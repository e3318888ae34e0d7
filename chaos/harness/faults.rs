//! The scenarios' faults, each injected repeatedly while input flows (`scenario::run` frames
//! them and checks the result). Counts come from `Bed::pick(quick, full)`.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rand::Rng;

use crate::proxy::Fate;
use crate::scenario::{Bed, Ctx, Row, run};

/// The scenarios, by name, in the order they run.
pub const ALL: [&str; 12] = [
    "sigkill",
    "failpoints",
    "broker-kill",
    "blackhole",
    "lost-commit-response",
    "zombie",
    "txn-timeout",
    "corrupt-checkpoint",
    "disk-full",
    "clock-jump",
    "sasl-ssl",
    "cluster",
];

pub fn run_named(bed: &Bed, name: &str) -> Result<Row> {
    match name {
        "sigkill" => sigkill(bed),
        "failpoints" => failpoints(bed),
        "broker-kill" => broker_kill(bed),
        "blackhole" => blackhole(bed),
        "lost-commit-response" => lost_commit_response(bed),
        "zombie" => zombie(bed),
        "txn-timeout" => txn_timeout(bed),
        "corrupt-checkpoint" => corrupt_checkpoint(bed),
        "disk-full" => disk_full(bed),
        "clock-jump" => crate::clock::scenario(bed),
        "sasl-ssl" => crate::security::scenario(bed),
        "cluster" => cluster(bed),
        "soak" => crate::soak::scenario(bed),
        other => bail!(
            "no scenario {other:?}; the scenarios: {}, soak (by hand)",
            ALL.join(", ")
        ),
    }
}

/// SIGKILL at random moments, restarting at once; every fifth stop a SIGTERM, which must exit
/// 0 (it finishes its checkpoint).
fn sigkill(bed: &Bed) -> Result<Row> {
    let kills = bed.pick(12, 110);
    run(
        bed,
        "sigkill",
        |_| {},
        |c| {
            let mut terms = 0;
            for i in 1..=kills {
                c.sleep_ms(1_000..6_000);
                if i % 5 == 0 {
                    c.daemon.signal("TERM")?;
                    match c.daemon.wait(Duration::from_secs(60))? {
                        Some(s) if s.success() => terms += 1,
                        other => c.fail(format!("SIGTERM {i} ended with {other:?}, not 0")),
                    }
                } else {
                    c.daemon.kill9()?;
                }
                c.faults += 1;
                c.restart(&[])?;
            }
            c.notes.push(format!(
                "{} SIGKILLs, {terms} SIGTERMs (exit 0)",
                kills - kills / 5
            ));
            Ok(())
        },
    )
}

/// The checkpoint protocol's crash points (`--features failpoints`), each several times: the
/// process aborts there at its K-th pass (K random), and is started again.
fn failpoints(bed: &Bed) -> Result<Row> {
    const POINTS: [&str; 6] = [
        "checkpoint::mid_snapshot",
        "checkpoint::after_snapshot",
        "checkpoint::before_commit",
        "checkpoint::after_commit",
        "restore::mid",
        "dead_letter::after_send",
    ];
    let runs = bed.pick(2, 20);
    run(
        bed,
        "failpoints",
        |_| {},
        |c| {
            for round in 0..runs {
                for point in POINTS {
                    let k = c.rng.random_range(1..5);
                    let spec = format!("{point}={k}*off->return");
                    c.daemon.kill9()?;
                    c.restart(&[("FAILPOINTS", &spec)])?;
                    let status = c.daemon.wait(Duration::from_secs(90))?;
                    let log = c.daemon.last_log();
                    match status {
                    Some(s) if !s.success() && log.contains(point) => c.faults += 1,
                    other => c.fail(format!(
                        "round {round}: no crash at {spec} ({other:?}); the build needs --features failpoints"
                    )),
                }
                }
            }
            c.restart(&[])?;
            c.notes
                .push(format!("{} points × {runs} runs", POINTS.len()));
            Ok(())
        },
    )
}

/// The single broker SIGKILLed at random moments (commits included: they come every 500 ms),
/// restarted after 1–5 s.
fn broker_kill(bed: &Bed) -> Result<Row> {
    let kills = bed.pick(3, 12);
    run(
        bed,
        "broker-kill",
        |_| {},
        |c| {
            for _ in 0..kills {
                c.supervised_sleep_ms(3_000..10_000)?;
                let node = c.rng.random_range(1..=c.bed.brokers.nodes);
                c.bed.brokers.kill(node)?;
                c.supervised_sleep_ms(1_000..5_000)?;
                c.bed.brokers.start_node(node)?;
                c.faults += 1;
            }
            Ok(())
        },
    )
}

/// Flumen cut off from every broker (the proxies forward nothing): a few seconds at a time,
/// then once for longer than the transaction timeout.
fn blackhole(bed: &Bed) -> Result<Row> {
    let short = bed.pick(3, 10);
    run(
        bed,
        "blackhole",
        |s| s.transaction_timeout = "10s",
        |c| {
            let proxies = &c.bed.brokers.proxies;
            for _ in 0..short {
                c.supervised_sleep_ms(2_000..6_000)?;
                proxies.iter().for_each(|p| p.blackhole(true));
                c.supervised_sleep_ms(2_000..5_000)?;
                proxies.iter().for_each(|p| p.blackhole(false));
                c.faults += 1;
            }
            c.sleep_ms(2_000..4_000);
            proxies.iter().for_each(|p| p.blackhole(true));
            std::thread::sleep(Duration::from_secs(16)); // 1.6 × the transaction timeout
            proxies.iter().for_each(|p| p.blackhole(false));
            c.faults += 1;
            // a daemon that gave up (fenced, timed out) exits non-zero; its supervisor (here
            // the harness) starts it again
            if let Some(s) = c.daemon.wait(Duration::from_secs(30))? {
                c.notes.push(format!(
                    "after the long blackhole the daemon exited ({s}); restarted"
                ));
                c.restart(&[])?;
            }
            c.notes.push(format!(
                "{short} blackholes of 2-5 s, one of 16 s (transaction timeout 10 s)"
            ));
            Ok(())
        },
    )
}

/// The response to a commit (EndTxn) is dropped, or held until the client has timed out: the
/// broker committed, the client does not know (KAFKA-17754's shape).
fn lost_commit_response(bed: &Bed) -> Result<Row> {
    let n = bed.pick(3, 10);
    run(
        bed,
        "lost-commit-response",
        |_| {},
        |c| {
            let proxies = &c.bed.brokers.proxies;
            for i in 0..n {
                c.supervised_sleep_ms(2_000..5_000)?;
                let fate = if i % 2 == 0 {
                    Fate::Drop
                } else {
                    Fate::Delay(Duration::from_secs(40))
                };
                let seen = lose_commit_response(proxies, fate)?;
                c.notes.push(format!(
                    "lost response {i} ({fate:?}): the {seen}th commit after arming"
                ));
                c.faults += 1;
                // what the client does about it takes up to its request timeout
                std::thread::sleep(Duration::from_secs(10));
                if let Some(s) = c.daemon.wait(Duration::from_millis(10))? {
                    c.notes.push(format!(
                        "lost response {i}: the daemon exited ({s}); restarted"
                    ));
                    c.restart(&[])?;
                }
            }
            Ok(())
        },
    )
}

/// Arms every proxy to lose the next commit's response (`fate`) and waits until one has;
/// how many commits passed the proxies meanwhile (the one lost among them).
pub fn lose_commit_response(proxies: &[crate::proxy::Proxy], fate: Fate) -> Result<u64> {
    let before: u64 = proxies.iter().map(|p| p.lost()).sum();
    let commits: u64 = proxies.iter().map(|p| p.commits()).sum();
    proxies.iter().for_each(|p| p.arm(fate));
    let began = Instant::now();
    while proxies.iter().map(|p| p.lost()).sum::<u64>() == before {
        if began.elapsed() > Duration::from_secs(60) {
            proxies.iter().for_each(|p| p.disarm());
            bail!("no commit came through the proxies in 60 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // disarm the proxies that saw no commit (one coordinator takes them all)
    proxies.iter().for_each(|p| p.disarm());
    Ok(proxies.iter().map(|p| p.commits()).sum::<u64>() - commits)
}

/// SIGSTOP past the session and transaction timeouts; a replacement with the same instance id
/// takes over; SIGCONT: the zombie must add nothing and exit non-zero.
fn zombie(bed: &Bed) -> Result<Row> {
    let rounds = bed.pick(1, 5);
    run(
        bed,
        "zombie",
        |s| s.transaction_timeout = "10s",
        |c| {
            for round in 0..rounds {
                c.sleep_ms(3_000..6_000);
                c.daemon.signal("STOP")?;
                std::thread::sleep(Duration::from_secs(14)); // > 10 s session and txn timeouts
                let mut b = c.replacement(&format!("replacement-{round}"))?;
                b.start(&[])?;
                b.wait_ready(Duration::from_secs(120))?;
                let mut zombie = std::mem::replace(&mut c.daemon, b);
                zombie.signal("CONT")?;
                match zombie.wait(Duration::from_secs(90))? {
                    Some(s) if !s.success() => {
                        c.faults += 1;
                        let log = zombie.last_log();
                        let cause = log.lines().rev().find(|l| l.starts_with("error:"));
                        c.notes.push(format!(
                            "round {round}: the zombie exited ({s}): {}",
                            cause
                                .unwrap_or("no error line")
                                .chars()
                                .take(300)
                                .collect::<String>()
                        ));
                    }
                    other => c.fail(format!("the zombie did not exit non-zero: {other:?}")),
                }
                c.retired.push(zombie);
            }
            Ok(())
        },
    )
}

/// A pause before the commit longer than the transaction timeout: the broker aborts the
/// transaction, the commit fails, and checkpoint N-1 is where the run resumes.
fn txn_timeout(bed: &Bed) -> Result<Row> {
    let rounds = bed.pick(2, 6);
    run(
        bed,
        "txn-timeout",
        |s| s.transaction_timeout = "10s",
        |c| {
            for _ in 0..rounds {
                let k = c.rng.random_range(2..6);
                let spec = format!("checkpoint::before_commit={k}*off->1*sleep(15000)");
                c.daemon.kill9()?;
                c.restart(&[("FAILPOINTS", &spec)])?;
                std::thread::sleep(Duration::from_secs(25));
                c.faults += 1;
                let exited = c.daemon.wait(Duration::from_millis(10))?;
                c.notes.push(match exited {
                    Some(s) => format!("exit {s} after the timed-out commit"),
                    None => "recovered in process after the timed-out commit".into(),
                });
            }
            c.daemon.kill9()?;
            c.restart(&[])?;
            Ok(())
        },
    )
}

fn corrupt_checkpoint(bed: &Bed) -> Result<Row> {
    crate::corrupt::scenario(bed)
}

fn disk_full(bed: &Bed) -> Result<Row> {
    crate::corrupt::disk_full(bed)
}

/// Three nodes: the transaction coordinator's broker killed (hard) and stopped (clean),
/// a partition leader's, and a rolling restart.
fn cluster(bed: &Bed) -> Result<Row> {
    if bed.brokers.nodes < 3 {
        bail!("the cluster scenario needs --nodes 3");
    }
    let rounds = bed.pick(1, 3);
    run(
        bed,
        "cluster",
        |_| {},
        |c| {
            for round in 0..rounds {
                let txn_id = format!(
                    "flumen-{}-chaos",
                    c.names.pipeline(crate::verify::Kind::Count)
                );
                for hard in [true, false] {
                    c.supervised_sleep_ms(3_000..6_000)?;
                    let node = c
                        .bed
                        .brokers
                        .coordinator_of(&txn_id)
                        .with_context(|| format!("the coordinator of {txn_id}"))?;
                    bounce(c, node, hard)?;
                    c.notes.push(format!(
                        "round {round}: coordinator node {node} {}",
                        if hard { "killed" } else { "stopped" }
                    ));
                }
                c.supervised_sleep_ms(3_000..6_000)?;
                let node = c.rng.random_range(1..=3);
                bounce(c, node, true)?;
                for node in 1..=3 {
                    c.supervised_sleep_ms(2_000..4_000)?;
                    bounce(c, node, false)?;
                }
                c.notes.push(format!(
                    "round {round}: node {node} killed; rolling restart"
                ));
            }
            Ok(())
        },
    )
}

fn bounce(c: &mut Ctx<'_>, node: usize, hard: bool) -> Result<()> {
    if hard {
        c.bed.brokers.kill(node)?;
    } else {
        c.bed.brokers.stop_node(node)?;
    }
    c.supervised_sleep_ms(2_000..5_000)?;
    c.bed.brokers.start_node(node)?;
    c.faults += 1;
    Ok(())
}
