//! Clock jumps (issue #17, item 13): the daemon's wall clock moved forward and back, tens of
//! minutes at a time, under live input, and SIGKILLs in between so restores happen under a
//! moved clock. The clock is Debian's libfaketime, preloaded into the daemon with its offset
//! in a file the scenario rewrites (read again every second); the monotonic clock is left
//! alone, as NTP's steps leave it. Only the daemon's clock moves, not the broker's, as when
//! one host's clock is stepped.
//!
//! Positions stay within 50 minutes of the true time: the broker refuses records stamped more
//! than `message.timestamp.after.max.ms` (an hour in Kafka 4) ahead of its clock, and the
//! daemon stops on that by design (defect 18), which `tests/exactly_once.rs` covers.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, bail};
use rand::Rng;

use crate::scenario::{Bed, Row, run};

/// The shim that lets libfaketime see librdkafka's timed waits (see the file).
const SHIM_SOURCE: &str = include_str!("../clock/cnd_timedwait.c");
const LIBFAKETIME: [&str; 3] = [
    "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1",
    "/usr/lib/aarch64-linux-gnu/faketime/libfaketimeMT.so.1",
    "/usr/lib/faketime/libfaketimeMT.so.1",
];
/// The farthest the daemon's clock goes from the true time, in minutes.
const REACH_MIN: i64 = 50;
/// The smallest jump, in minutes.
const JUMP_MIN: i64 = 10;

pub fn scenario(bed: &Bed) -> Result<Row> {
    let dir = bed.work.join(format!("clock-{:x}", rand::random::<u32>()));
    std::fs::create_dir_all(&dir)?;
    let preload = format!("{} {}", shim(&dir)?.display(), libfaketime()?);
    let clock = dir.join("offset");
    set_offset(&clock, 0)?;
    let jumps = bed.pick(4, 12);
    run(
        bed,
        "clock-jump",
        |s| {
            s.env = vec![
                ("LD_PRELOAD".into(), preload.clone()),
                (
                    "FAKETIME_TIMESTAMP_FILE".into(),
                    clock.display().to_string(),
                ),
                ("FAKETIME_CACHE_DURATION".into(), "1".into()),
                ("FAKETIME_DONT_FAKE_MONOTONIC".into(), "1".into()),
            ];
        },
        |c| {
            let mut at = 0;
            let mut seen = Vec::new();
            for i in 0..jumps {
                c.supervised_sleep_ms(4_000..8_000)?;
                let to = next_offset(&mut c.rng, at, i % 2 == 0);
                set_offset(&clock, to)?;
                c.faults += 1;
                // the daemon rereads the file within a second; its next log lines show it
                c.supervised_sleep_ms(3_000..4_000)?;
                let observed = log_offset_min(&c.daemon.last_log());
                let shown = observed.map_or_else(|| "no time stamp".into(), |o| format!("{o:+}"));
                seen.push(format!("{at:+} → {to:+} min (its log: {shown})"));
                if observed.is_none_or(|o| (o - to).abs() > 1) {
                    c.fail(format!(
                        "jump {i} to {to:+} min: the daemon's log shows {observed:?} min; the clock did not move, so the test did not test"
                    ));
                }
                at = to;
                if i % 3 == 2 {
                    // a restore under the moved clock
                    c.daemon.kill9()?;
                    c.restart(&[])?;
                }
            }
            c.supervised_sleep_ms(4_000..6_000)?;
            set_offset(&clock, 0)?;
            c.notes.push(format!(
                "{jumps} jumps of the daemon's wall clock, a SIGKILL after every third: {}",
                seen.join("; ")
            ));
            Ok(())
        },
    )
}

/// The next position of the clock, in minutes from the true time: at least [`JUMP_MIN`]
/// forward (or back) from `at`, within [`REACH_MIN`]; the other way when there is no room.
fn next_offset(rng: &mut impl Rng, at: i64, forward: bool) -> i64 {
    let (lo, hi) = if forward {
        (at + JUMP_MIN, REACH_MIN)
    } else {
        (-REACH_MIN, at - JUMP_MIN)
    };
    if lo > hi {
        return next_offset(rng, at, !forward);
    }
    rng.random_range(lo..=hi)
}

/// libfaketime's offset file: `+20m`, `-35m`.
fn set_offset(file: &Path, minutes: i64) -> Result<()> {
    std::fs::write(file, format!("{minutes:+}m\n"))
        .with_context(|| format!("writing {}", file.display()))
}

/// How far the time stamp of the log's last line is from now, in whole minutes.
fn log_offset_min(log: &str) -> Option<i64> {
    let stamp = log
        .lines()
        .rev()
        .find_map(|l| humantime::parse_rfc3339(l.split_whitespace().next()?).ok())?;
    let now = SystemTime::now();
    let minutes = |d: Duration| i64::try_from((d.as_secs() + 30) / 60).unwrap_or(i64::MAX);
    Some(match stamp.duration_since(now) {
        Ok(ahead) => minutes(ahead),
        Err(behind) => -minutes(behind.duration()),
    })
}

/// Compiles the shim into `dir`.
fn shim(dir: &Path) -> Result<PathBuf> {
    let source = dir.join("cnd_timedwait.c");
    let lib = dir.join("libcnd_timedwait.so");
    std::fs::write(&source, SHIM_SOURCE)?;
    let ok = Command::new("gcc")
        .args(["-O2", "-shared", "-fPIC", "-o"])
        .arg(&lib)
        .arg(&source)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        bail!(
            "clock-jump compiles a small preload shim with gcc, which failed or is missing (Debian: build-essential, scripts/setup.sh installs it)"
        );
    }
    Ok(lib)
}

fn libfaketime() -> Result<&'static str> {
    LIBFAKETIME
        .into_iter()
        .find(|p| Path::new(p).try_exists().unwrap_or(false))
        .context(
            "clock-jump needs Debian's libfaketime (libfaketimeMT.so.1), not found here: scripts/setup.sh --test installs it",
        )
}

#[cfg(test)]
mod tests {
    use super::{JUMP_MIN, REACH_MIN, log_offset_min, next_offset};

    #[test]
    fn jumps_stay_within_reach_and_are_long_enough() {
        let mut rng = rand::rng();
        let mut at = 0;
        for i in 0..1_000 {
            let to = next_offset(&mut rng, at, i % 2 == 0);
            assert!((-REACH_MIN..=REACH_MIN).contains(&to), "{at} → {to}");
            assert!((to - at).abs() >= JUMP_MIN, "{at} → {to}");
            at = to;
        }
    }

    #[test]
    fn the_log_s_offset_is_read_from_its_last_time_stamp() {
        let later = humantime::format_rfc3339_micros(
            std::time::SystemTime::now() + std::time::Duration::from_secs(20 * 60),
        );
        let log = format!("2020-01-01T00:00:00.000000Z INFO old\n{later} DEBUG new\n  at x\n");
        assert_eq!(log_offset_min(&log), Some(20));
        assert_eq!(log_offset_min("no stamp\n"), None);
    }
}
