//! Faults on the checkpoint directory: corrupt files of the checkpoint the commit names, and a
//! checkpoint directory that runs out of space.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::scenario::{Bed, Ctx, Row, run};
use crate::verify::Kind;

/// The kinds of snapshot file, by what their name contains.
const KINDS: [&str; 5] = [".sst", "MANIFEST-", "CURRENT", "OPTIONS-", "manifest.json"];

#[derive(Clone, Copy, Debug)]
enum Damage {
    FlipByte,
    Truncate,
    Delete,
}

const DAMAGES: [Damage; 3] = [Damage::FlipByte, Damage::Truncate, Damage::Delete];

/// The newest checkpoint of `pipeline` with the local COMMITTED hint (after a clean stop it is
/// the one the group's commit names).
fn committed_checkpoint(checkpoints: &Path, pipeline: &str) -> Result<PathBuf> {
    let writers = checkpoints.join(pipeline).join("writers");
    let mut best: Option<PathBuf> = None;
    for w in std::fs::read_dir(&writers).with_context(|| writers.display().to_string())? {
        for chk in std::fs::read_dir(w?.path())? {
            let p = chk?.path();
            let name = p
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_string();
            if name.starts_with("chk-")
                && !name.ends_with(".tmp")
                && std::fs::metadata(p.join("COMMITTED")).is_ok()
            {
                let newer = best
                    .as_ref()
                    .and_then(|b| b.file_name().and_then(|n| n.to_str()).map(str::to_string))
                    .is_none_or(|b| name > b);
                if newer {
                    best = Some(p);
                }
            }
        }
    }
    best.with_context(|| format!("no committed checkpoint under {}", writers.display()))
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        if p.is_dir() {
            files_under(&p, out)?;
        } else if p.file_name().is_some_and(|n| n != "COMMITTED") {
            out.push(p);
        }
    }
    Ok(())
}

fn damage(file: &Path, how: Damage, rng: &mut impl rand::Rng) -> Result<()> {
    match how {
        Damage::Delete => std::fs::remove_file(file)?,
        Damage::Truncate => {
            let len = std::fs::metadata(file)?.len();
            let f = std::fs::OpenOptions::new().write(true).open(file)?;
            f.set_len(len / 2)?;
        }
        Damage::FlipByte => {
            let mut bytes = std::fs::read(file)?;
            if bytes.is_empty() {
                bytes.push(1);
            } else {
                let i = rng.random_range(0..bytes.len());
                bytes[i] ^= 1 << rng.random_range(0..8);
            }
            std::fs::write(file, bytes)?;
        }
    }
    Ok(())
}

/// Stops the daemon cleanly, damages one file of the count pipeline's committed checkpoint (each
/// kind of file in turn, each kind of damage), starts it: it must exit 3 naming the file, with
/// no output from that pipeline. The file is put back and the run goes on.
pub fn scenario(bed: &Bed) -> Result<Row> {
    let rounds = bed.pick(5, 30);
    run(
        bed,
        "corrupt-checkpoint",
        |_| {},
        |c| {
            let mut detected = 0;
            let mut times = Vec::new();
            for round in 0..rounds {
                c.sleep_ms(2_000..4_000);
                c.daemon.signal("TERM")?;
                let stopped = c.daemon.wait(Duration::from_secs(60))?;
                if !stopped.is_some_and(|s| s.success()) {
                    c.fail(format!(
                        "round {round}: the clean stop ended with {stopped:?}"
                    ));
                }
                let chk = committed_checkpoint(
                    &c.settings.checkpoint_dir,
                    &c.names.pipeline(Kind::Count),
                )?;
                let mut files = Vec::new();
                files_under(&chk, &mut files)?;
                let kind = KINDS[round % KINDS.len()];
                // 5 kinds and 3 damages are coprime: every 15 rounds meet every pair, and the
                // quick set's 5 rounds see all three damages (not only bit flips)
                let how = DAMAGES[round % DAMAGES.len()];
                let candidates: Vec<&PathBuf> = files
                    .iter()
                    .filter(|f| {
                        f.file_name()
                            .and_then(|n| n.to_str())
                            .is_some_and(|n| n.contains(kind))
                    })
                    .collect();
                let Some(&file) = candidates.get(round % candidates.len().max(1)) else {
                    c.notes.push(format!(
                        "round {round}: no {kind} file in {}",
                        chk.display()
                    ));
                    c.restart(&[])?;
                    continue;
                };
                let original = std::fs::read(file)?;
                damage(file, how, &mut c.rng)?;
                let sink = c.names.sink(Kind::Count);
                let before = sink_records(c, &sink);
                let began = Instant::now();
                c.restart(&[])?;
                let status = c.daemon.wait(Duration::from_secs(90))?;
                let took = began.elapsed();
                let log = c.daemon.last_log();
                let name = file
                    .file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or_default();
                std::thread::sleep(Duration::from_secs(2));
                let after = sink_records(c, &sink);
                match status {
                Some(s) if s.code() == Some(3) && log.contains(name) && after == before => {
                    detected += 1;
                    times.push(took);
                }
                other => c.fail(format!(
                    "round {round}: {how:?} of {} gave {other:?}, file named in the log: {}, count outputs {before} -> {after}",
                    file.display(),
                    log.contains(name)
                )),
            }
                if c.daemon.is_running() {
                    c.daemon.kill9()?;
                }
                std::fs::write(file, original)?;
                c.faults += 1;
                c.restart(&[])?;
                c.daemon.wait_ready(Duration::from_secs(120))?;
            }
            let slowest = times.iter().max().copied().unwrap_or_default();
            c.notes.push(format!(
            "{detected}/{rounds} damaged files detected (exit 3, file named, no output); slowest detection {slowest:.1?}"
        ));
            Ok(())
        },
    )
}

/// Committed records of `topic` by its high watermarks (markers included): enough to see a
/// change.
fn sink_records(c: &Ctx<'_>, topic: &str) -> i64 {
    let Ok(consumer) = crate::reader::consumer(&c.bed.brokers.direct, "read_committed") else {
        return -1;
    };
    (0..crate::topics::PARTITIONS)
        .map(|p| {
            rdkafka::consumer::Consumer::fetch_watermarks(
                &consumer,
                topic,
                p,
                Duration::from_secs(10),
            )
            .map_or(-1, |(_, h)| h)
        })
        .sum()
}

/// Two small tmpfs, one the checkpoint directory and one the live state's (RocksDB's own
/// files: its flushes at each snapshot, its compactions), filled up in turn while input
/// flows, then freed. Each full disk must be noticed (its path in a `No space left` line) and
/// the run must resume.
pub fn disk_full(bed: &Bed) -> Result<Row> {
    let checkpoints = mount_tmpfs(bed, "checkpoints")?;
    let state = match mount_tmpfs(bed, "state") {
        Ok(m) => m,
        Err(e) => {
            Command::new("umount").arg(&checkpoints).status().ok();
            return Err(e);
        }
    };
    let rounds = bed.pick(2, 6);
    let disks = [
        ("checkpoint", checkpoints.clone()),
        ("state", state.clone()),
    ];
    let row = run(
        bed,
        "disk-full",
        |s| {
            s.checkpoint_dir = checkpoints.join("checkpoints");
            s.state_dir = Some(state.join("state"));
        },
        |c| {
            for round in 0..rounds {
                let (kind, mount) = &disks[round % 2];
                c.sleep_ms(3_000..6_000);
                let filler = mount.join("filler");
                fill(&filler);
                std::thread::sleep(Duration::from_secs(8));
                std::fs::remove_file(&filler)?;
                c.faults += 1;
                if let Some(s) = c.daemon.wait(Duration::from_secs(5))? {
                    c.notes.push(format!(
                        "round {round}: the daemon exited ({s}) on the full {kind} disk; restarted"
                    ));
                    c.restart(&[])?;
                }
            }
            let logs: Vec<String> = (1..=c.daemon.runs)
                .map(|r| std::fs::read_to_string(c.daemon.log_path(r)).unwrap_or_default())
                .collect();
            for (kind, mount) in &disks {
                let path = mount.to_string_lossy();
                let noticed = logs
                    .iter()
                    .flat_map(|l| l.lines())
                    .filter(|l| l.contains("No space left") && l.contains(path.as_ref()))
                    .count();
                c.notes.push(format!(
                    "{noticed} log lines saying 'No space left' on the {kind} disk"
                ));
                if noticed == 0 {
                    c.fail(format!(
                        "the full {kind} disk was never noticed: the test did not test"
                    ));
                }
            }
            Ok(())
        },
    );
    for (_, mount) in &disks {
        Command::new("umount").arg(mount).status().ok();
    }
    row
}

/// A 32 MB tmpfs under the work directory (root only).
fn mount_tmpfs(bed: &Bed, what: &str) -> Result<PathBuf> {
    let mount = bed
        .work
        .join(format!("tmpfs-{what}-{:x}", rand::random::<u32>()));
    std::fs::create_dir_all(&mount)?;
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=32m", "tmpfs"])
        .arg(&mount)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        bail!(
            "disk-full needs a tmpfs (`mount -t tmpfs`, as root); this machine refused it, so the scenario cannot run here"
        );
    }
    Ok(mount)
}

/// Writes zeros to `path` until the file system is full.
fn fill(path: &Path) {
    use std::io::Write;
    let Ok(mut f) = std::fs::File::create(path) else {
        return;
    };
    let block = vec![0u8; 1 << 20];
    while f.write_all(&block).is_ok() {}
    f.sync_all().ok();
}
