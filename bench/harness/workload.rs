//! The workloads: their input records, the Flumen pipeline for each, and the correctness gate
//! every run's read_committed output must pass (a run that loses or duplicates is invalid).

use std::collections::{HashMap, HashSet};

use serde::Deserialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, clap::ValueEnum)]
pub enum Workload {
    /// Pass-through with a JSON map: rename `amount` to `price`, drop `debug` (Nexmark q1 shape).
    Map,
    /// Re-key by `user` (a repartition topic), keyed running count (word count / q17 shape);
    /// each key's latest count out once per checkpoint/commit, in both engines.
    Count,
    /// Re-key by `ev` and pass the first record of each value (dedupe over a key space as large
    /// as the input: one new key per record, every tenth record a duplicate of an earlier one).
    Dedupe,
    /// Re-key by `user` and count per one-minute tumbling window of event time (the Kafka
    /// record timestamp); each closed window's count out once (Nexmark q5/q7 shape).
    Window,
}

impl Workload {
    pub fn name(self) -> &'static str {
        match self {
            Workload::Map => "map",
            Workload::Count => "count",
            Workload::Dedupe => "dedupe",
            Workload::Window => "window",
        }
    }

    /// The operators of Flumen's pipeline, as TOML.
    pub fn flumen_operators(self) -> &'static str {
        match self {
            Workload::Map => {
                r#"[{ type = "map", rename = { amount = "price" }, drop = ["debug"] }]"#
            }
            // each key's latest count once per checkpoint, as Kafka Streams' record cache emits
            Workload::Count => {
                r#"[{ type = "key_by", field = "user" }, { type = "count", emit = "on_checkpoint" }]"#
            }
            // remembered for longer than any run, as the Kafka Streams store keeps them
            Workload::Dedupe => r#"[{ type = "dedupe", field = "ev", ttl = "1h" }]"#,
            Workload::Window => {
                r#"[{ type = "key_by", field = "user" }, { type = "count", window = { type = "tumbling", size = "1m" } }]"#
            }
        }
    }

    /// What Flumen's source needs besides topic and format, as TOML fields.
    pub fn flumen_source_extra(self) -> &'static str {
        match self {
            // the Kafka timestamp; each source partition is in event-time order (see `event_time`)
            Workload::Window => r#", event_time = { max_out_of_orderness = "0s" }"#,
            _ => "",
        }
    }
}

/// The window workload's window size. The input spans `WINDOWS` windows of event time, whatever
/// the record count, so every run closes the same number of windows.
pub const WINDOW_MS: u64 = 60_000;
pub const WINDOWS: u64 = 16;
/// Kafka Streams' grace period: its stream time is the highest timestamp its task has seen, so
/// without one the records of a source partition that runs behind the others are dropped as
/// late. A small input is read one whole partition after another (3,000 records: a partition
/// is 3/16 of the span ahead of the others), hence six windows. Flumen needs no allowance: its
/// watermark is the minimum over the source partitions, each in event-time order.
pub const GRACE_MS: u64 = 6 * WINDOW_MS;

/// The event time (Kafka timestamp) of record `i` of `records`: from `t0` (a window boundary)
/// over `WINDOWS` windows, non-decreasing in `i`.
pub fn event_time(t0: u64, i: u64, records: u64) -> u64 {
    t0 + i * (WINDOWS * WINDOW_MS) / records.max(1)
}

/// A window boundary far enough in the past that the whole input's event time is too (a broker
/// refuses timestamps more than `log.message.timestamp.after.max.ms`, 1 h, ahead).
pub fn event_time_base(now_ms: u64) -> u64 {
    let t = now_ms.saturating_sub((WINDOWS + 2) * WINDOW_MS);
    t - t % WINDOW_MS
}

/// Distinct users of the count workload.
pub const USERS: u64 = 10_000;

/// Record `i` of the input: key = id, value = JSON of about `size` bytes. Deterministic, so the
/// reference needs no copy of the input.
pub fn record(i: u64, size: usize) -> (String, String) {
    record_of(i, size, &format!("u{}", mix(i) % USERS), None)
}

/// Record `i` with `"ts"`, its intended send time in µs since the epoch (latency runs).
pub fn timed_record(i: u64, size: usize, ts_us: Option<u64>) -> (String, String) {
    record_of(i, size, &format!("u{}", mix(i) % USERS), ts_us)
}

/// Record `i` of user `user`, with `"ts"` when given.
pub fn record_of(i: u64, size: usize, user: &str, ts_us: Option<u64>) -> (String, String) {
    let amount = mix(i ^ 0x5bd1_e995) % 100_000;
    let ts = ts_us.map(|t| format!(r#""ts":{t},"#)).unwrap_or_default();
    let ev = event_of(i);
    let head = format!(
        r#"{{"id":{i},"ev":{ev},{ts}"user":"{user}","amount":{amount},"debug":false,"pad":""#
    );
    let pad = size.saturating_sub(head.len() + 2).max(1);
    (i.to_string(), format!("{head}{}\"}}", "x".repeat(pad)))
}

/// The dedupe key of record `i`: its own id, but every tenth record repeats the one nine before.
pub fn event_of(i: u64) -> u64 {
    if i % 10 == 9 { i - 9 } else { i }
}

/// Distinct dedupe keys among the first `records` records.
pub fn distinct_events(records: u64) -> u64 {
    records - records / 10
}

fn mix(mut x: u64) -> u64 {
    // splitmix64: a fixed, well-spread sequence without a dependency
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// What the output must be, for `records` input records.
pub fn expected_counts(records: u64) -> HashMap<String, u64> {
    let mut m = HashMap::new();
    for i in 0..records {
        *m.entry(format!("u{}", mix(i) % USERS)).or_insert(0) += 1;
    }
    m
}

/// The window workload's reference: the count of each (user, window start), and whether the
/// window must close in every engine: its end plus Kafka Streams' grace lies at least a second
/// of event time before the input's last record (so each of its tasks has seen a later one).
pub fn expected_windows(records: u64, t0: u64) -> HashMap<(String, u64), (u64, bool)> {
    let last = event_time(t0, records.saturating_sub(1), records);
    let mut m: HashMap<(String, u64), (u64, bool)> = HashMap::new();
    for i in 0..records {
        let t = event_time(t0, i, records);
        let start = t - t % WINDOW_MS;
        let must_close = start + WINDOW_MS + GRACE_MS + 1_000 <= last;
        let e = m
            .entry((format!("u{}", mix(i) % USERS), start))
            .or_insert((0, must_close));
        e.0 += 1;
    }
    m
}

/// The gate: fed every output record in read order, it knows how much input the output
/// reflects (progress), whether the output is complete, and what is wrong with it.
pub enum Gate {
    /// Every input id exactly once (copy and map). `mapped` checks the map was applied.
    Copy {
        records: u64,
        mapped: bool,
        /// Dedupe: each `ev` once (`records` is then the distinct count), instead of each `id`.
        by_event: bool,
        seen: HashSet<u64>,
        outputs: u64,
        errors: Vec<String>,
        /// (intended send time, latency) in µs of records that carry `"ts"`.
        latencies: Vec<(u64, u64)>,
    },
    /// Per key, counts strictly increasing and the last one equal to the reference.
    Count {
        expected: HashMap<String, u64>,
        last: HashMap<String, u64>,
        /// Keys whose last count equals the reference: `complete` in O(1) per record.
        at_target: usize,
        reflected: u64,
        errors: Vec<String>,
    },
    /// Each (key, window) once with its exact count; every window that must close, closed.
    Window {
        expected: HashMap<(String, u64), (u64, bool)>,
        must_close: usize,
        /// Input records the must-close windows hold.
        target: u64,
        seen: HashSet<(String, u64)>,
        closed: usize,
        reflected: u64,
        errors: Vec<String>,
    },
}

#[derive(Deserialize)]
struct CopyValue {
    id: u64,
    ev: Option<u64>,
    ts: Option<u64>,
    price: Option<serde_json::Value>,
    amount: Option<serde_json::Value>,
    debug: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct WindowValue {
    user: String,
    window_start: u64,
    window_end: u64,
    count: u64,
}

#[derive(Deserialize)]
struct CountValue {
    user: String,
    count: u64,
}

const MAX_ERRORS: usize = 5;

impl Gate {
    pub fn copy(records: u64, mapped: bool) -> Gate {
        Gate::Copy {
            records,
            mapped,
            by_event: false,
            seen: HashSet::with_capacity(records as usize),
            outputs: 0,
            errors: Vec::new(),
            latencies: Vec::new(),
        }
    }

    /// Dedupe: each distinct `ev` of the input exactly once.
    pub fn dedupe(records: u64) -> Gate {
        match Gate::copy(distinct_events(records), false) {
            Gate::Copy {
                records,
                mapped,
                seen,
                outputs,
                errors,
                latencies,
                ..
            } => Gate::Copy {
                records,
                mapped,
                by_event: true,
                seen,
                outputs,
                errors,
                latencies,
            },
            other => other,
        }
    }

    pub fn count(records: u64) -> Gate {
        Gate::count_of(expected_counts(records))
    }

    /// A count gate with its reference given.
    pub fn count_of(expected: HashMap<String, u64>) -> Gate {
        Gate::Count {
            expected,
            last: HashMap::new(),
            at_target: 0,
            reflected: 0,
            errors: Vec::new(),
        }
    }

    /// The window workload's gate, for `records` records from event time `t0`.
    pub fn window(records: u64, t0: u64) -> Gate {
        let expected = expected_windows(records, t0);
        let must: Vec<u64> = expected
            .values()
            .filter(|(_, must)| *must)
            .map(|(n, _)| *n)
            .collect();
        Gate::Window {
            must_close: must.len(),
            target: must.iter().sum(),
            expected,
            seen: HashSet::new(),
            closed: 0,
            reflected: 0,
            errors: Vec::new(),
        }
    }

    /// How many input records the complete output reflects.
    pub fn target(&self) -> u64 {
        match self {
            Gate::Copy { records, .. } => *records,
            Gate::Count { expected, .. } => expected.values().sum(),
            Gate::Window { target, .. } => *target,
        }
    }

    /// Takes one output record, read at `now_us` (µs since the epoch).
    /// `at` names the record in error messages (formatted only then).
    pub fn feed(&mut self, at: impl std::fmt::Display, value: &[u8], now_us: u64) {
        match self {
            Gate::Copy {
                mapped,
                by_event,
                seen,
                outputs,
                errors,
                latencies,
                ..
            } => {
                *outputs += 1;
                match serde_json::from_slice::<CopyValue>(value) {
                    Ok(v) => {
                        if let Some(ts) = v.ts {
                            latencies.push((ts, now_us.saturating_sub(ts)));
                        }
                        let (what, key) = if *by_event {
                            ("ev", v.ev.unwrap_or(u64::MAX))
                        } else {
                            ("id", v.id)
                        };
                        if *by_event && v.ev != Some(event_of(v.id)) {
                            note(errors, format!("{at}: id {} has ev {:?}", v.id, v.ev));
                        }
                        if !seen.insert(key) {
                            note(errors, format!("{at}: {what} {key} output twice"));
                        }
                        let applied = v.price.is_some() && v.amount.is_none() && v.debug.is_none();
                        if *mapped && !applied {
                            note(errors, format!("{at}: id {} not mapped", v.id));
                        }
                    }
                    Err(e) => note(errors, format!("{at}: not a copy of an input record: {e}")),
                }
            }
            Gate::Count {
                expected,
                last,
                at_target,
                reflected,
                errors,
            } => match serde_json::from_slice::<CountValue>(value) {
                Ok(v) => {
                    let Some(&want) = expected.get(&v.user) else {
                        note(errors, format!("{at}: unknown key {}", v.user));
                        return;
                    };
                    let prev = last.insert(v.user.clone(), v.count).unwrap_or(0);
                    if prev == want {
                        *at_target -= 1;
                    }
                    if v.count == want {
                        *at_target += 1;
                    }
                    if v.count <= prev {
                        note(
                            errors,
                            format!("{at}: {} counted {} after {prev}", v.user, v.count),
                        );
                    } else {
                        *reflected += v.count - prev;
                    }
                }
                Err(e) => note(errors, format!("{at}: not a count: {e}")),
            },
            Gate::Window {
                expected,
                seen,
                closed,
                reflected,
                errors,
                ..
            } => match serde_json::from_slice::<WindowValue>(value) {
                Ok(v) => {
                    let w = (v.user, v.window_start);
                    let Some(&(want, must)) = expected.get(&w) else {
                        note(errors, format!("{at}: no input for window {w:?}"));
                        return;
                    };
                    if v.window_end != v.window_start + WINDOW_MS {
                        note(
                            errors,
                            format!("{at}: window {w:?} ends at {}", v.window_end),
                        );
                    }
                    if v.count != want {
                        note(
                            errors,
                            format!("{at}: window {w:?} counted {} of {want}", v.count),
                        );
                    }
                    if !seen.insert(w.clone()) {
                        note(errors, format!("{at}: window {w:?} emitted twice"));
                    } else if must {
                        *closed += 1;
                        *reflected += want;
                    }
                }
                Err(e) => note(errors, format!("{at}: not a window count: {e}")),
            },
        }
    }

    /// Latencies in µs of the records whose intended send time lies in `from..to`.
    pub fn latencies(&self, from: u64, to: u64) -> Vec<u64> {
        match self {
            Gate::Copy { latencies, .. } => latencies
                .iter()
                .filter(|(ts, _)| (from..to).contains(ts))
                .map(|&(_, l)| l)
                .collect(),
            Gate::Count { .. } | Gate::Window { .. } => Vec::new(),
        }
    }

    /// How many input records the output reflects so far.
    pub fn progress(&self) -> u64 {
        match self {
            Gate::Copy { seen, .. } => seen.len() as u64,
            Gate::Count { reflected, .. } | Gate::Window { reflected, .. } => *reflected,
        }
    }

    pub fn complete(&self) -> bool {
        match self {
            Gate::Copy { records, seen, .. } => seen.len() as u64 >= *records,
            Gate::Count {
                expected,
                at_target,
                ..
            } => *at_target == expected.len(),
            Gate::Window {
                must_close, closed, ..
            } => closed == must_close,
        }
    }

    /// The verdict once the output has been read to its end: `Ok` or what is wrong.
    pub fn verdict(&self) -> Result<(), String> {
        let mut errors = match self {
            Gate::Copy { errors, .. }
            | Gate::Count { errors, .. }
            | Gate::Window { errors, .. } => errors.clone(),
        };
        match self {
            Gate::Copy {
                records,
                seen,
                outputs,
                ..
            } => {
                if (seen.len() as u64) < *records {
                    errors.push(format!(
                        "{} of {records} ids missing",
                        *records - seen.len() as u64
                    ));
                }
                if *outputs != *records {
                    errors.push(format!("{outputs} outputs for {records} inputs"));
                }
            }
            Gate::Count { expected, last, .. } => {
                let wrong = expected
                    .iter()
                    .filter(|(k, n)| last.get(*k) != Some(n))
                    .count();
                if wrong > 0 {
                    errors.push(format!(
                        "{wrong} of {} keys end with a wrong count",
                        expected.len()
                    ));
                }
            }
            Gate::Window {
                must_close, closed, ..
            } => {
                if closed < must_close {
                    errors.push(format!(
                        "{} of {must_close} windows that must close are missing",
                        must_close - closed
                    ));
                }
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("; "))
        }
    }
}

fn note(errors: &mut Vec<String>, e: String) {
    if errors.len() < MAX_ERRORS {
        errors.push(e);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_have_the_asked_size_and_parse() {
        for size in [100, 1000] {
            let (_, v) = record(42, size);
            assert!(v.len().abs_diff(size) <= 1, "{} bytes for {size}", v.len());
            let parsed: serde_json::Value = serde_json::from_str(&v).expect("json");
            assert_eq!(parsed["id"], 42);
        }
    }

    #[test]
    fn copy_gate_catches_a_duplicate_and_a_loss() {
        let mut g = Gate::copy(3, false);
        for i in [0, 1, 1] {
            g.feed("t/0@0", record(i, 100).1.as_bytes(), 0);
        }
        let e = g.verdict().expect_err("duplicate and loss");
        assert!(
            e.contains("output twice") && e.contains("1 of 3 ids missing"),
            "{e}"
        );
        g.feed("t/0@3", record(2, 100).1.as_bytes(), 0);
        assert!(g.complete());
    }

    #[test]
    fn dedupe_gate_wants_each_event_once() {
        let mut g = Gate::dedupe(20);
        for i in 0..20 {
            if i % 10 != 9 {
                g.feed(i, record(i, 100).1.as_bytes(), 0);
            }
        }
        assert!(g.complete());
        assert_eq!(g.verdict(), Ok(()));
        // the duplicate of record 0 passed as well: ev 0 twice
        g.feed(99, record(9, 100).1.as_bytes(), 0);
        assert!(g.verdict().unwrap_err().contains("ev 0 output twice"));
    }

    #[test]
    fn count_gate_catches_a_replayed_count() {
        let expected = expected_counts(50);
        let mut g = Gate::count(50);
        let (user, n) = expected.iter().next().expect("a key");
        for c in 1..=*n {
            g.feed(
                "o",
                format!(r#"{{"user":"{user}","count":{c}}}"#).as_bytes(),
                0,
            );
        }
        assert!(g.verdict().is_err(), "other keys are missing");
        g.feed(
            "o",
            format!(r#"{{"user":"{user}","count":{n}}}"#).as_bytes(),
            0,
        );
        assert!(g.verdict().expect_err("replay").contains("counted"));
    }

    #[test]
    fn window_gate_wants_each_closed_window_once_with_its_count() {
        let t0 = event_time_base(1_800_000_000_000);
        let records = 3_200; // 200 per window
        let expected = expected_windows(records, t0);
        let starts: HashSet<u64> = expected.keys().map(|(_, s)| *s).collect();
        assert_eq!(starts.len() as u64, WINDOWS);
        let must: Vec<_> = expected.iter().filter(|(_, (_, m))| *m).collect();
        let must_starts: HashSet<u64> = must.iter().map(|((_, s), _)| *s).collect();
        // the last window stays open everywhere, the grace holds back 6 more in Kafka Streams
        assert_eq!(must_starts.len() as u64, WINDOWS - 7);
        assert_eq!(
            expected.values().map(|(n, _)| n).sum::<u64>(),
            records,
            "every record in one window"
        );
        let out = |user: &str, start: u64, count: u64| {
            format!(
                r#"{{"user":"{user}","window_start":{start},"window_end":{},"count":{count}}}"#,
                start + WINDOW_MS
            )
        };
        let mut g = Gate::window(records, t0);
        for ((user, start), (n, _)) in &must {
            g.feed("o", out(user, *start, *n).as_bytes(), 0);
        }
        assert!(g.complete());
        assert_eq!(g.progress(), g.target());
        assert_eq!(g.verdict(), Ok(()));
        let ((user, start), (n, _)) = must[0];
        g.feed("o", out(user, *start, *n).as_bytes(), 0);
        assert!(g.verdict().unwrap_err().contains("emitted twice"));
        let mut g = Gate::window(records, t0);
        g.feed("o", out(user, *start, n + 1).as_bytes(), 0);
        let e = g.verdict().unwrap_err();
        assert!(
            e.contains("counted") && e.contains("must close are missing"),
            "{e}"
        );
    }

    #[test]
    fn count_gate_is_complete_only_while_every_key_is_at_its_count() {
        let expected: HashMap<String, u64> = [("a".to_string(), 2), ("b".to_string(), 1)].into();
        let mut g = Gate::count_of(expected);
        let feed = |g: &mut Gate, user: &str, c: u64| {
            g.feed(
                "o",
                format!(r#"{{"user":"{user}","count":{c}}}"#).as_bytes(),
                0,
            );
        };
        feed(&mut g, "a", 2);
        assert!(!g.complete(), "b is missing");
        feed(&mut g, "b", 1);
        assert!(g.complete());
        feed(&mut g, "a", 3); // a duplicate pushes a past its count
        assert!(!g.complete());
    }
}
