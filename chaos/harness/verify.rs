//! The verifier: what each pipeline should have written, computed from the source topic as
//! read back, against what its sink and dead-letter topic hold read_committed. Pure functions,
//! with unit tests; `scenario.rs` does the reading.
//!
//! Each pipeline emits one output per good input, so a reference is a sequence of values per
//! key: the count pipeline's 1..=n, the sum pipeline's running sums of the input ids (each
//! difference names one input, so a lost, repeated or reordered input shows), the window
//! pipeline's one count per closed window. Against it:
//! - **lost**: a reference value that no output carries;
//! - **duplicated**: an output value seen before for its key (a record emitted twice);
//! - **wrong**: an output value no correct run emits (an input counted twice in state);
//! - **reordered**: a key's outputs not in the reference's order.
//!
//! A window input in the window pipeline's late topic is not in its window's count: the
//! reference takes it out, and `late.rs` judges whether it was late by the config's terms.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde_json::Value;

/// One record read back.
#[derive(Clone, Debug)]
pub struct Rec {
    pub partition: i32,
    pub offset: i64,
    /// The Kafka timestamp, ms (the source topic's: when the broker appended the record).
    pub timestamp: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
}

/// The pipelines of a chaos run; each reads the same source.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// key_by user + count, every update.
    Count,
    /// key_by user + sum of `id` (the source is keyed by user: no repartition hop).
    Sum,
    /// key_by user + tumbling-window count in event time (`ts`).
    Window,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Count, Kind::Sum, Kind::Window];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Count => "count",
            Kind::Sum => "sum",
            Kind::Window => "window",
        }
    }
}

/// The window pipeline's size (its config says the same).
pub const WINDOW_MS: i64 = 2_000;
/// The prefix of the users whose records close the windows at the end (`flush-<partition>`,
/// one per source partition, as a user's records share a partition); their own windows never
/// close.
pub const FLUSH_USER: &str = "flush-";

/// A good input of one pipeline: its key (user), id and event time.
pub struct Good {
    pub user: String,
    pub id: f64,
    pub ts: i64,
}

/// A user this long makes the count's and the sum's outputs (key and value each carry it)
/// larger than their sinks take (`topics::LIMITED_TOPIC_BYTES`); the oversized pill's is
/// longer, every other user far shorter.
const OVERSIZED_USER: usize = crate::topics::LIMITED_TOPIC_BYTES / 2;

/// How `kind` takes `value`: `Some` when Flumen processes it, `None` when it is a bad record
/// (dead-lettered). Mirrors the operators: key_by needs an object with a string, number or
/// boolean `user`; sum needs a numeric `id`; the window needs an integer `ts`; the count's and
/// the sum's outputs must fit their sinks.
pub fn classify(kind: Kind, value: Option<&[u8]>) -> Option<Good> {
    let v: Value = serde_json::from_slice(value?).ok()?;
    let o = v.as_object()?;
    let user = match o.get("user")? {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        _ => return None,
    };
    let id = o.get("id").and_then(Value::as_f64);
    let ts = o.get("ts").and_then(Value::as_i64);
    if kind != Kind::Window && user.len() > OVERSIZED_USER {
        return None;
    }
    match kind {
        Kind::Count => Some(Good {
            user,
            id: 0.0,
            ts: 0,
        }),
        Kind::Sum => Some(Good {
            user,
            id: id?,
            ts: 0,
        }),
        Kind::Window => Some(Good {
            user,
            id: 0.0,
            ts: ts?,
        }),
    }
}

/// What one pipeline should write: values per output key in order, and its dead letters (the
/// source records' keys).
pub struct Reference {
    pub kind: Kind,
    pub per_key: HashMap<String, Vec<f64>>,
    pub bad: Vec<Vec<u8>>,
    pub good: usize,
}

/// The reference of `kind` over the source records, in source partition order (a user's
/// records share one partition).
pub fn reference(kind: Kind, source: &[Rec]) -> Reference {
    let mut by_partition: BTreeMap<i32, Vec<&Rec>> = BTreeMap::new();
    for r in source {
        by_partition.entry(r.partition).or_default().push(r);
    }
    let mut per_key: HashMap<String, Vec<f64>> = HashMap::new();
    let mut windows: BTreeMap<(String, i64), f64> = BTreeMap::new();
    let mut bad = Vec::new();
    let mut good = 0;
    for recs in by_partition.values_mut() {
        recs.sort_by_key(|r| r.offset);
        for r in recs.iter() {
            let Some(g) = classify(kind, r.value.as_deref()) else {
                bad.push(r.key.clone().unwrap_or_default());
                continue;
            };
            good += 1;
            match kind {
                Kind::Count => {
                    let seq = per_key.entry(g.user).or_default();
                    seq.push(seq.len() as f64 + 1.0);
                }
                Kind::Sum => {
                    let seq = per_key.entry(g.user).or_default();
                    let last = seq.last().copied().unwrap_or(0.0);
                    seq.push(last + g.id);
                }
                Kind::Window => {
                    if !g.user.starts_with(FLUSH_USER) {
                        let start = g.ts - g.ts.rem_euclid(WINDOW_MS);
                        *windows.entry((g.user, start)).or_default() += 1.0;
                    }
                }
            }
        }
    }
    for ((user, start), n) in windows {
        per_key.insert(format!("{user}@{start}"), vec![n]);
    }
    Reference {
        kind,
        per_key,
        bad,
        good,
    }
}

/// The violations of one pipeline; all zero on an exactly-once run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Verdict {
    /// Outputs checked.
    pub outputs: usize,
    pub lost: usize,
    pub duplicated: usize,
    pub wrong: usize,
    pub reordered: usize,
    pub dead_letters_lost: usize,
    pub dead_letters_duplicated: usize,
    /// The first few violations, in words.
    pub examples: Vec<String>,
}

impl Verdict {
    pub fn ok(&self) -> bool {
        self.lost
            + self.duplicated
            + self.wrong
            + self.reordered
            + self.dead_letters_lost
            + self.dead_letters_duplicated
            == 0
    }

    fn note(&mut self, s: String) {
        if self.examples.len() < 5 {
            self.examples.push(s);
        }
    }
}

/// The value an output carries for `kind`, and its key.
fn output_value(kind: Kind, r: &Rec) -> Result<(String, f64), String> {
    let at = format!("{}@{}", r.partition, r.offset);
    let v: Value = serde_json::from_slice(r.value.as_deref().unwrap_or(b"null"))
        .map_err(|e| format!("output {at} is not JSON: {e}"))?;
    let user = v["user"]
        .as_str()
        .ok_or_else(|| format!("output {at} has no user: {v}"))?;
    let (key, field) = match kind {
        Kind::Count => (user.to_string(), "count"),
        Kind::Sum => (user.to_string(), "sum"),
        Kind::Window => {
            let start = v["window_start"]
                .as_i64()
                .ok_or_else(|| format!("output {at} has no window_start: {v}"))?;
            (format!("{user}@{start}"), "count")
        }
    };
    let n = v[field]
        .as_f64()
        .ok_or_else(|| format!("output {at} has no {field}: {v}"))?;
    Ok((key, n))
}

/// Checks `outputs` (the sink, read_committed, in partition order) and `dead_letters` against
/// `reference`; a window pipeline's `late` records are out of their windows' counts, and those
/// late without cause are lost.
pub fn check(
    reference: &Reference,
    outputs: &[Rec],
    dead_letters: &[Rec],
    late: Option<&crate::late::Late>,
) -> Verdict {
    let mut verdict = Verdict {
        outputs: outputs.len(),
        ..Verdict::default()
    };
    let mut per_key = std::borrow::Cow::Borrowed(&reference.per_key);
    if let Some(late) = late {
        per_key = std::borrow::Cow::Owned(without_late(&mut verdict, &reference.per_key, late));
    }
    let mut got: HashMap<String, Vec<f64>> = HashMap::new();
    let mut sorted: Vec<&Rec> = outputs.iter().collect();
    sorted.sort_by_key(|r| (r.partition, r.offset));
    for r in sorted {
        match output_value(reference.kind, r) {
            Ok((key, n)) => got.entry(key).or_default().push(n),
            Err(e) => {
                verdict.wrong += 1;
                verdict.note(e);
            }
        }
    }
    for (key, want) in per_key.iter() {
        let seq = got.remove(key).unwrap_or_default();
        compare(&mut verdict, key, want, &seq);
    }
    // windows that had not closed when the run ended are not in the reference: the flush
    // user's; anything else is an output no correct run writes
    for (key, seq) in got {
        if key.starts_with(FLUSH_USER) && key.contains('@') {
            continue;
        }
        verdict.wrong += seq.len();
        verdict.note(format!("{key}: {} outputs for no input", seq.len()));
    }
    dead_letter_check(&mut verdict, &reference.bad, dead_letters);
    verdict
}

/// The window reference with `late`'s records out of their windows' counts (a window whose
/// every record was late has no output); a late record no window input accounts for is a
/// duplicate, and one late without cause is lost.
fn without_late(
    verdict: &mut Verdict,
    per_key: &HashMap<String, Vec<f64>>,
    late: &crate::late::Late,
) -> HashMap<String, Vec<f64>> {
    let mut out = per_key.clone();
    for (key, &n) in &late.per_window {
        let left = out.get(key).and_then(|w| w.first()).copied().unwrap_or(0.0) - n;
        if left < 0.0 {
            verdict.duplicated += (-left) as usize;
            verdict.note(format!(
                "{key}: {n} records in the late topic, more than its inputs"
            ));
        }
        if left > 0.0 {
            out.insert(key.clone(), vec![left]);
        } else {
            out.remove(key);
        }
    }
    verdict.lost += late.unexplained.len();
    for u in late.unexplained.iter().take(3) {
        verdict.note(u.clone());
    }
    out
}

/// One key's outputs against its reference sequence.
fn compare(verdict: &mut Verdict, key: &str, want: &[f64], seq: &[f64]) {
    let index: HashMap<u64, usize> = want
        .iter()
        .enumerate()
        .map(|(i, v)| (v.to_bits(), i))
        .collect();
    let mut seen = HashSet::new();
    let mut last_index = None;
    for &v in seq {
        if !seen.insert(v.to_bits()) {
            verdict.duplicated += 1;
            verdict.note(format!("{key}: value {v} emitted again"));
            continue;
        }
        match index.get(&v.to_bits()) {
            None => {
                verdict.wrong += 1;
                verdict.note(format!("{key}: value {v} is not in the reference"));
            }
            Some(&i) => {
                if last_index.is_some_and(|l| i < l) {
                    verdict.reordered += 1;
                    verdict.note(format!("{key}: value {v} after a later one"));
                }
                last_index = Some(i);
            }
        }
    }
    let lost = want.iter().filter(|v| !seen.contains(&v.to_bits())).count();
    if lost > 0 {
        verdict.lost += lost;
        verdict.note(format!(
            "{key}: {lost} of {} reference values missing",
            want.len()
        ));
    }
}

/// Dead letters keep the bad record's key: each bad key once.
fn dead_letter_check(verdict: &mut Verdict, bad: &[Vec<u8>], dead_letters: &[Rec]) {
    let mut want: HashMap<&[u8], usize> = HashMap::new();
    for k in bad {
        *want.entry(k.as_slice()).or_default() += 1;
    }
    let mut got: HashMap<&[u8], usize> = HashMap::new();
    for r in dead_letters {
        *got.entry(r.key.as_deref().unwrap_or_default()).or_default() += 1;
    }
    for (k, n) in &want {
        let g = got.get(k).copied().unwrap_or(0);
        if g < *n {
            verdict.dead_letters_lost += n - g;
            verdict.note(format!(
                "dead letter {} missing",
                String::from_utf8_lossy(k)
            ));
        }
    }
    for (k, g) in &got {
        let n = want.get(k).copied().unwrap_or(0);
        if *g > n {
            verdict.dead_letters_duplicated += g - n;
            verdict.note(format!(
                "dead letter {} written {g} times, expected {n}",
                String::from_utf8_lossy(k)
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(partition: i32, offset: i64, key: &str, value: &str) -> Rec {
        Rec {
            partition,
            offset,
            timestamp: 0,
            key: Some(key.as_bytes().to_vec()),
            value: Some(value.as_bytes().to_vec()),
        }
    }

    fn source() -> Vec<Rec> {
        vec![
            rec(0, 0, "u1", r#"{"user":"u1","id":10,"ts":1000}"#),
            rec(0, 1, "pill-1", r#"{"user":"#),
            rec(0, 2, "u1", r#"{"user":"u1","id":11,"ts":1500}"#),
            rec(1, 0, "u2", r#"{"user":"u2","id":12,"ts":2500}"#),
            rec(1, 1, "pill-2", r#"{"user":"u2","id":"x","ts":2600}"#),
        ]
    }

    fn out(offset: i64, user: &str, field: &str, n: f64) -> Rec {
        rec(
            0,
            offset,
            user,
            &format!(r#"{{"user":"{user}","{field}":{n}}}"#),
        )
    }

    #[test]
    fn an_exact_count_passes_and_each_fault_is_named() {
        let r = reference(Kind::Count, &source());
        // the id-as-string pill is a good record to the count
        assert_eq!(r.good, 4);
        assert_eq!(r.bad, vec![b"pill-1".to_vec()]);
        let dlq = [rec(0, 0, "pill-1", "")];
        let exact = [
            out(0, "u1", "count", 1.0),
            out(1, "u2", "count", 1.0),
            out(2, "u1", "count", 2.0),
            out(3, "u2", "count", 2.0),
        ];
        assert!(check(&r, &exact, &dlq, None).ok());

        let lost = &exact[..3];
        let v = check(&r, lost, &dlq, None);
        assert_eq!((v.lost, v.ok()), (1, false));

        let mut twice = exact.to_vec();
        twice.push(out(4, "u1", "count", 2.0));
        assert_eq!(check(&r, &twice, &dlq, None).duplicated, 1);

        // at-least-once: state counted an input twice
        let mut counted_twice = exact.to_vec();
        counted_twice[2] = out(2, "u1", "count", 3.0);
        let v = check(&r, &counted_twice, &dlq, None);
        assert_eq!((v.wrong, v.lost), (1, 1));

        let v = check(&r, &exact, &[], None);
        assert_eq!(v.dead_letters_lost, 1);
        let v = check(&r, &exact, &[dlq[0].clone(), dlq[0].clone()], None);
        assert_eq!(v.dead_letters_duplicated, 1);
    }

    #[test]
    fn sums_name_each_input_in_order() {
        let r = reference(Kind::Sum, &source());
        assert_eq!(r.bad.len(), 2);
        assert_eq!(r.per_key["u1"], vec![10.0, 21.0]);
        let exact = [out(0, "u1", "sum", 10.0), out(1, "u1", "sum", 21.0)];
        let u2 = out(2, "u2", "sum", 12.0);
        let dlq = [rec(0, 0, "pill-1", ""), rec(0, 1, "pill-2", "")];
        let mut all = exact.to_vec();
        all.push(u2.clone());
        assert!(check(&r, &all, &dlq, None).ok());
        let swapped = [out(0, "u1", "sum", 21.0), out(1, "u1", "sum", 10.0), u2];
        assert_eq!(check(&r, &swapped, &dlq, None).reordered, 1);
    }

    #[test]
    fn windows_count_once_per_closed_window() {
        let mut src = source();
        src.push(rec(
            0,
            3,
            "flush-0",
            r#"{"user":"flush-0","id":13,"ts":99000}"#,
        ));
        let r = reference(Kind::Window, &src);
        assert_eq!(r.per_key["u1@0"], vec![2.0]);
        // the string id is bad to the sum only: the window counts it
        assert_eq!(r.per_key["u2@2000"], vec![2.0]);
        let w = |o: i64, user: &str, start: i64, n: u64| {
            rec(
                0,
                o,
                &format!("{user}@{start}"),
                &format!(
                    r#"{{"user":"{user}","window_start":{start},"window_end":{},"count":{n}}}"#,
                    start + WINDOW_MS
                ),
            )
        };
        let dlq = [rec(0, 0, "pill-1", "")];
        let exact = [w(0, "u1", 0, 2), w(1, "u2", 2000, 2)];
        assert!(check(&r, &exact, &dlq, None).ok());
        let twice = [w(0, "u1", 0, 2), w(1, "u2", 2000, 2), w(2, "u1", 0, 2)];
        assert_eq!(check(&r, &twice, &dlq, None).duplicated, 1);
        let partial = [w(0, "u1", 0, 1), w(1, "u2", 2000, 2)];
        let v = check(&r, &partial, &dlq, None);
        assert_eq!((v.wrong, v.lost), (1, 1));
        // one of u1's records late: its window counts the other; late and counted too is wrong,
        // late twice is a duplicate, late without cause is lost
        let late = |n: f64, unexplained: usize| crate::late::Late {
            per_window: HashMap::from([("u1@0".to_string(), n)]),
            explained: 1,
            unexplained: vec!["no cause".to_string(); unexplained],
        };
        assert!(check(&r, &partial, &dlq, Some(&late(1.0, 0))).ok());
        assert_eq!(check(&r, &exact, &dlq, Some(&late(1.0, 0))).wrong, 1);
        let v = check(&r, &exact[1..], &dlq, Some(&late(3.0, 0)));
        assert_eq!(v.duplicated, 1);
        assert!(check(&r, &exact[1..], &dlq, Some(&late(2.0, 0))).ok());
        assert_eq!(check(&r, &partial, &dlq, Some(&late(1.0, 1))).lost, 1);
    }

    #[test]
    fn an_oversized_user_is_a_dead_letter_of_the_count_and_the_sum_and_counted_by_the_window() {
        let user = format!("pill-9-{}", "x".repeat(OVERSIZED_USER));
        let big = rec(
            0,
            0,
            &user,
            &format!(r#"{{"user":"{user}","id":9,"ts":1000}}"#),
        );
        for kind in [Kind::Count, Kind::Sum] {
            let r = reference(kind, std::slice::from_ref(&big));
            assert_eq!((r.good, r.bad.clone()), (0, vec![user.as_bytes().to_vec()]));
        }
        let r = reference(Kind::Window, &[big]);
        assert_eq!((r.good, r.bad.len()), (1, 0));
        // a user at the limit is still good
        let fits = "u".repeat(OVERSIZED_USER);
        let v = format!(r#"{{"user":"{fits}","id":1,"ts":1}}"#);
        assert!(classify(Kind::Count, Some(v.as_bytes())).is_some());
    }
}
