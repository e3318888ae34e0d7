//! After the faults: the daemon settles (ready, caught up, stopped with exit 0), and what is
//! read back is judged beyond the verdicts of `verify`: hanging transactions, the live
//! reader against the fresh one, and the stalls.

use std::time::{Duration, Instant};

use anyhow::Result;

use crate::daemon::tail;
use crate::reader::{self, Read, Reader};
use crate::scenario::{Bed, Ctx};
use crate::verify;

/// A gap in committed output longer than this, while input flows, is a stall.
const STALL: Duration = Duration::from_secs(5);

/// The input has stopped: the daemon (restarted if a fault ended it) becomes ready, catches
/// up (every sink and dead-letter topic holds at least what the reference asks, as the live
/// reader counts), answers `/readyz` and exits 0 on SIGTERM; what does not is a failure.
pub fn settle(ctx: &mut Ctx<'_>, references: &[verify::Reference], reader: &Reader) -> Result<()> {
    let names = ctx.names.clone();
    if !ctx.daemon.is_running() {
        ctx.daemon.start(&[])?;
    }
    let mut ready = ctx.daemon.wait_ready(Duration::from_secs(180));
    if ready.is_err() && ctx.supervised {
        // the last fault may end the daemon a moment after the loop (fenced by the
        // coordinator's abort of a transaction that outlived the timeout): supervised still
        if let Some(status) = ctx.daemon.wait(Duration::ZERO)? {
            ctx.restart_exited(status, "after the last fault")?;
            ready = ctx.daemon.wait_ready(Duration::from_secs(180));
        }
    }
    if let Err(e) = ready {
        ctx.fail(format!("not ready after the faults: {e:#}"));
    }
    let deadline = Instant::now() + Duration::from_secs(180);
    let want: Vec<(String, usize)> = references
        .iter()
        .flat_map(|r| {
            let outputs: usize = r.per_key.values().map(Vec::len).sum();
            [
                (names.sink(r.kind), outputs),
                (names.dead_letters(r.kind), r.bad.len()),
            ]
        })
        .collect();
    while Instant::now() < deadline {
        let have = reader.counts();
        if want
            .iter()
            .all(|(t, n)| have.get(t).copied().unwrap_or(0) >= *n)
        {
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    std::thread::sleep(Duration::from_secs(2)); // a late duplicate would show now
    if ctx.daemon.probe("/readyz") != 200 {
        ctx.fail("/readyz does not answer 200 after catching up".into());
    }
    match ctx.daemon.terminate(Duration::from_secs(60))? {
        Some(s) if s.success() => {}
        other => {
            let log = tail(&ctx.daemon.last_log(), 20);
            ctx.fail(format!(
                "the final SIGTERM ended with {other:?}, not 0:\n{log}"
            ));
        }
    }
    Ok(())
}

/// Partitions the fresh reader could not read to their end, transactions find-hanging lists
/// (those left by an earlier scenario noted, not counted) and the markers Kafka dropped.
pub fn hanging(bed: &Bed, ctx: &mut Ctx<'_>, read: &Read) -> Vec<String> {
    let mut hanging = read.behind.clone();
    match bed.brokers.hanging() {
        Ok(h) => {
            let before: Vec<String> = ctx.hanging_before.iter().map(|l| hanging_key(l)).collect();
            let (old, new): (Vec<String>, Vec<String>) = h
                .into_iter()
                .partition(|l| before.contains(&hanging_key(l)));
            if !old.is_empty() {
                ctx.notes.push(format!(
                    "{} hanging transaction(s) left by an earlier scenario on these brokers, not counted here",
                    old.len()
                ));
            }
            hanging.extend(new.into_iter().map(|l| format!("find-hanging: {l}")));
        }
        Err(e) => ctx.fail(format!("kafka-transactions find-hanging failed: {e:#}")),
    }
    match bed.brokers.marker_skips(&ctx.names.prefix) {
        Ok(skips) => crate::brokers::attribute(&skips, &mut ctx.notes, &mut hanging),
        Err(e) => ctx.notes.push(format!(
            "the brokers' logs could not be searched for dropped markers: {e:#}"
        )),
    }
    hanging
}

/// The verdicts are made of the fresh reader's records; the live reader must have seen none
/// the fresh one does not, and where it saw fewer, its client stopped short: a note, since the
/// outputs are whole (and the stall figures, which come from it, overstate).
pub fn reconcile(ctx: &mut Ctx<'_>, live: &Read, fresh: &Read) {
    let r = reader::reconcile(live, fresh);
    for u in r.unseen_by_fresh {
        ctx.fail(format!("aborted data seen: {u}"));
    }
    if !r.short.is_empty() {
        let errors = if live.errors.is_empty() {
            "none".to_string()
        } else {
            live.errors.join("; ")
        };
        ctx.notes.push(format!(
            "the reader that ran through the faults stopped short of what a fresh read_committed reader read (its stall figures overstate): {}; its client's errors: {errors}",
            r.short.join("; ")
        ));
    } else if !live.behind.is_empty() {
        ctx.notes.push(format!(
            "the reader that ran through the faults was not at the end 30 s after the stop, a fresh one was: {}",
            live.behind.join("; ")
        ));
    }
}

/// A find-hanging row without its columns that grow with time (last timestamp, duration):
/// topic, partition, producer id and epoch, coordinator epoch, start offset.
fn hanging_key(line: &str) -> String {
    line.split_whitespace()
        .take(6)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Gaps between committed outputs within the fault window: how many exceed `STALL`, and the
/// longest.
pub fn stalls(arrivals: &[Instant], (from, to): (Instant, Instant)) -> (usize, Duration) {
    let mut inside: Vec<Instant> = arrivals
        .iter()
        .copied()
        .filter(|t| *t >= from && *t <= to)
        .collect();
    inside.sort();
    inside.insert(0, from);
    inside.push(to);
    let gaps: Vec<Duration> = inside.windows(2).map(|w| w[1] - w[0]).collect();
    (
        gaps.iter().filter(|g| **g > STALL).count(),
        gaps.into_iter().max().unwrap_or_default(),
    )
}
