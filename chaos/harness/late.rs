//! The window pipeline's late records (its `late_topic`). Every good input is counted in its
//! window or written there, once: `verify::check` takes the late ones out of each window's
//! reference. And every late one must be late by the configuration's own terms: its source
//! partition had no record for the idle timeout before it reached the topic, so the others
//! rightly moved the watermark on. A record that came in a steady stream of its partition
//! has no cause to be late (CHAOS.md, defect 12), and counts as lost. The source topic stamps
//! its records with their append time, which tells the two apart. Pure functions, with unit
//! tests.

use std::collections::HashMap;

use serde_json::Value;

use crate::verify::Rec;

/// The window pipeline's `idle_timeout` (its config says the same).
pub const IDLE_TIMEOUT_MS: i64 = 10_000;

/// How long before a late record's arrival its partition's quiet stretch may have ended: the
/// records held behind a stalled partition arrive in a burst after it (the harness's input
/// producer, replaced after a minute without a delivery, sends them again at once).
const BURST_MS: i64 = 60_000;

/// The late records, judged.
#[derive(Debug, Default)]
pub struct Late {
    /// Late records per window output key (`user@start`).
    pub per_window: HashMap<String, f64>,
    /// Late records whose partition was quiet for the idle timeout before they arrived.
    pub explained: usize,
    /// The others, in words (each one counts as lost).
    pub unexplained: Vec<String>,
}

/// A window input's identity: user, id (as bits) and event time.
type Ident = (String, u64, i64);

fn ident(value: Option<&[u8]>) -> Option<Ident> {
    let v: Value = serde_json::from_slice(value?).ok()?;
    let user = v.get("user")?.as_str()?.to_string();
    let id = v.get("id")?.as_f64()?.to_bits();
    Some((user, id, v.get("ts")?.as_i64()?))
}

/// Judges `late` (the late topic, read_committed) against `source` (the input topic, its
/// records stamped with their append time).
pub fn judge(source: &[Rec], late: &[Rec], window_ms: i64) -> Late {
    let mut by_partition: HashMap<i32, Vec<&Rec>> = HashMap::new();
    let mut at: HashMap<Ident, (i32, i64)> = HashMap::new();
    for r in source {
        by_partition.entry(r.partition).or_default().push(r);
        if let Some(i) = ident(r.value.as_deref()) {
            // a record sent twice (a replaced producer's) is judged by its later arrival
            let e = at.entry(i).or_insert((r.partition, r.offset));
            e.1 = e.1.max(r.offset);
        }
    }
    for recs in by_partition.values_mut() {
        recs.sort_by_key(|r| r.offset);
    }
    let mut out = Late::default();
    for r in late {
        let Some((user, id, ts)) = ident(r.value.as_deref()) else {
            out.unexplained.push(format!(
                "late record {}@{} is no window input",
                r.partition, r.offset
            ));
            continue;
        };
        let start = ts - ts.rem_euclid(window_ms);
        *out.per_window.entry(format!("{user}@{start}")).or_default() += 1.0;
        let Some(&(partition, offset)) = at.get(&(user.clone(), id, ts)) else {
            out.unexplained.push(format!(
                "late record {user} id {} is in no input",
                f64::from_bits(id)
            ));
            continue;
        };
        let recs = by_partition.get(&partition).map_or(&[][..], Vec::as_slice);
        if quiet_before(recs, offset) {
            out.explained += 1;
        } else {
            out.unexplained.push(format!(
                "{user}@{start}: a record late although source partition {partition} had a record at least every {} s before it arrived (offset {offset})",
                IDLE_TIMEOUT_MS / 1_000
            ));
        }
    }
    out
}

/// Whether the partition whose records are `recs` (in offset order) had a stretch of at least
/// the idle timeout without a record that ended within [`BURST_MS`] before the record at
/// `offset` arrived.
fn quiet_before(recs: &[&Rec], offset: i64) -> bool {
    let Some(i) = recs.iter().position(|r| r.offset == offset) else {
        return false;
    };
    let arrived = recs[i].timestamp;
    let mut j = i;
    while j > 0 && recs[j].timestamp >= arrived - BURST_MS {
        if recs[j].timestamp - recs[j - 1].timestamp >= IDLE_TIMEOUT_MS {
            return true;
        }
        j -= 1;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(partition: i32, offset: i64, timestamp: i64, user: &str, id: i64, ts: i64) -> Rec {
        Rec {
            partition,
            offset,
            timestamp,
            key: Some(user.as_bytes().to_vec()),
            value: Some(format!(r#"{{"user":"{user}","id":{id},"ts":{ts}}}"#).into_bytes()),
        }
    }

    #[test]
    fn a_record_is_late_by_the_config_s_terms_only_after_its_partition_was_quiet() {
        // partition 0: steady, a record a second; partition 1: a record, 15 s of nothing,
        // then the held records, created during the stall, in a burst
        let mut source = Vec::new();
        for i in 0..30 {
            source.push(rec(
                0,
                i,
                1_000_000 + i * 1_000,
                "a",
                i,
                1_000_000 + i * 1_000,
            ));
        }
        source.push(rec(1, 0, 1_000_000, "b", 100, 1_000_000));
        for i in 1..10 {
            let created = 1_000_000 + i * 1_000;
            source.push(rec(1, i, 1_016_000 + i, "b", 100 + i, created));
        }
        let late = vec![
            rec(1, 3, 0, "b", 103, 1_003_000),
            rec(0, 20, 0, "a", 20, 1_020_000),
            rec(5, 5, 0, "zz", 7, 1),
        ];
        let judged = judge(&source, &late, 2_000);
        assert_eq!(judged.explained, 1);
        assert_eq!(judged.unexplained.len(), 2, "{:?}", judged.unexplained);
        assert!(judged.unexplained[0].contains("partition 0"));
        assert_eq!(judged.per_window["b@1002000"], 1.0);
        assert_eq!(judged.per_window["a@1020000"], 1.0);
        // a quiet stretch that ended over a minute before the arrival explains nothing
        let mut later = source.clone();
        for i in 10..84 {
            later.push(rec(
                1,
                i,
                1_007_000 + i * 1_000,
                "b",
                100 + i,
                1_007_000 + i * 1_000,
            ));
        }
        later.push(rec(1, 84, 1_091_500, "b", 300, 1_000_500));
        let judged = judge(&later, &[rec(1, 84, 0, "b", 300, 1_000_500)], 2_000);
        assert_eq!(judged.explained, 0, "{:?}", judged.unexplained);
        // ... and a record that arrived after its partition's quiet stretch is late rightly
        later.push(rec(1, 85, 1_102_000, "b", 301, 1_000_600));
        let judged = judge(&later, &[rec(1, 85, 0, "b", 301, 1_000_600)], 2_000);
        assert_eq!(judged.explained, 1, "{:?}", judged.unexplained);
    }
}
