//! The table of a run, printed and written to `chaos/results/<UTC time>[-quick].md`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Result;

use crate::scenario::Row;

fn secs(d: std::time::Duration) -> String {
    format!("{:.1}", d.as_secs_f64())
}

pub fn table(rows: &[Row]) -> Result<String, std::fmt::Error> {
    let mut t = String::new();
    writeln!(
        t,
        "| scenario | faults | inputs (bad) | good inputs per pipeline | outputs checked | lost | duplicated | wrong | reordered | dead letters lost / dup | hanging | aborted records seen uncommitted | stalls > 5 s | longest stall (s) | took (s) | result |"
    )?;
    writeln!(
        t,
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
    )?;
    for r in rows {
        writeln!(
            t,
            "| {} | {} | {} ({}) | {} | {} | {} | {} | {} | {} | {} / {} | {} | {} | {} | {} | {} | {} |",
            r.scenario,
            r.faults,
            r.inputs,
            r.bad_inputs,
            r.good_inputs,
            r.sum(|v| v.outputs),
            r.sum(|v| v.lost),
            r.sum(|v| v.duplicated),
            r.sum(|v| v.wrong),
            r.sum(|v| v.reordered),
            r.sum(|v| v.dead_letters_lost),
            r.sum(|v| v.dead_letters_duplicated),
            r.hanging.len(),
            r.aborted_records,
            r.stalls,
            secs(r.longest_stall),
            secs(r.took),
            if r.passed() { "PASS" } else { "**FAIL**" },
        )?;
    }
    Ok(t)
}

/// Notes, failures and the verifier's examples, per scenario.
pub fn details(rows: &[Row]) -> Result<String, std::fmt::Error> {
    let mut t = String::new();
    for r in rows {
        writeln!(t, "- **{}**", r.scenario)?;
        for n in &r.notes {
            writeln!(t, "  - {n}")?;
        }
        for (k, v) in &r.verdicts {
            for e in &v.examples {
                writeln!(t, "  - {} pipeline: {e}", k.name())?;
            }
        }
        for f in &r.failures {
            writeln!(t, "  - FAILED: {}", f.replace('\n', "\n    "))?;
        }
        for h in r.hanging.iter().take(5) {
            writeln!(
                t,
                "  - not readable to its end (a hanging transaction): {h}"
            )?;
        }
    }
    Ok(t)
}

pub struct Setup<'a> {
    pub quick: bool,
    pub layout: crate::brokers::Layout,
    pub load: String,
    pub flumen: &'a Path,
    /// The commit checked out when the suite started (HEAD may move during a long run).
    pub git: String,
}

/// The commit checked out now, short, with `+changes` when the tree differs from it.
pub fn git_head() -> String {
    let head = out("git", &["rev-parse", "--short", "HEAD"]);
    if out("git", &["status", "--porcelain", "--untracked-files=no"]).is_empty() {
        head
    } else {
        format!("{head}+changes")
    }
}

fn out(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

pub fn write(dir: &Path, rows: &[Row], s: &Setup<'_>) -> Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let stamp = out("date", &["-u", "+%Y-%m-%dT%H%M%SZ"]);
    let name = format!("{stamp}{}.md", if s.quick { "-quick" } else { "" });
    let path = dir.join(name);
    let mut text = String::new();
    writeln!(
        text,
        "# Chaos run {stamp}{}\n",
        if s.quick { " (quick set)" } else { "" }
    )?;
    writeln!(
        text,
        "- Flumen: {} (`{}`), git {}",
        out(&s.flumen.display().to_string(), &["--version"]),
        s.flumen.display(),
        s.git
    )?;
    writeln!(
        text,
        "- Brokers: {} node(s), {}, Apache Kafka from scripts/kafka/pom.xml, transaction.version {}",
        s.layout.nodes,
        if s.layout.dedicated_controller {
            "brokers only, beside a dedicated KRaft controller"
        } else {
            "each a combined broker and KRaft controller"
        },
        s.layout
            .txn_version
            .map_or("default".to_string(), |v| v.to_string())
    )?;
    writeln!(text, "- Input: {}", s.load)?;
    writeln!(
        text,
        "- Machine: {} cores, {}\n",
        out("nproc", &[]),
        out("uname", &["-sr"])
    )?;
    text.push_str(&table(rows)?);
    text.push('\n');
    text.push_str(&details(rows)?);
    std::fs::write(&path, text)?;
    Ok(path)
}
