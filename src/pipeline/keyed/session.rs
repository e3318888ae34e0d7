//! A session window aggregate (`pipeline/window/session.rs` has the layout): a record opens
//! `[t, t + gap)`, merging every session of its key it overlaps, `end ‖ key → start ‖ state`
//! with an index `key ‖ start → end` to find a key's sessions.

use super::{Input, Step, StepError, record_error};
use crate::config::{Aggregate, Emit, Window};
use crate::pipeline::operator;
use crate::pipeline::window::{self, session};
use crate::state::{TaskState, namespaced};

pub struct Sessions<'a> {
    agg: &'a Aggregate,
    window: &'a Window,
    gap_ms: i64,
}

impl<'a> Sessions<'a> {
    pub fn new(agg: &'a Aggregate, window: &'a Window) -> Self {
        Self {
            agg,
            window,
            gap_ms: window.gap_ms.unwrap_or(window.size_ms),
        }
    }

    pub fn step(&self, state: &TaskState, input: Input) -> Result<Step, StepError> {
        let ts = input
            .event_time
            .ok_or_else(|| record_error("event_time", "the record has no event time"))?;
        let key = input.key();
        let ns = |k: &[u8]| namespaced(&self.agg.id, k);
        let (lo, hi) = session::index_range(key);
        let mut sessions = Vec::new();
        state.range(&ns(&lo), &ns(&hi), |k, v| {
            if let (Some(s), Ok(e)) = (session::start_of_index_key(k), <[u8; 8]>::try_from(v)) {
                sessions.push((s, i64::from_be_bytes(e)));
            }
            Ok(true)
        })?;
        let ((start, end), absorbed) = session::merge(&sessions, ts, self.gap_ms);
        let mut step = Step::default();
        if window::is_closed(self.window, end, input.watermark) {
            step.late = true;
            return Ok(step);
        }
        let mut merged: Option<Vec<u8>> = None;
        for i in absorbed {
            let Some(&(s, e)) = sessions.get(i) else {
                continue;
            };
            let wkey = ns(&window::window_key(e, key));
            let stored = state.get(&wkey)?.unwrap_or_default();
            let (_, st) = session::split_value(&stored)
                .ok_or_else(|| record_error("aggregate", "stored session is corrupt"))?;
            merged = Some(match merged {
                None => st.to_vec(),
                Some(m) => operator::merge_states(&self.agg.kind, &m, st)?,
            });
            step.deletes.push(wkey);
            step.deletes.push(ns(&session::index_key(key, s)));
        }
        let (next, out) = operator::aggregate(self.agg, merged.as_deref(), &input.record)?;
        step.puts.push((
            ns(&window::window_key(end, key)),
            session::value(start, &next),
        ));
        step.puts.push((
            ns(&session::index_key(key, start)),
            end.to_be_bytes().to_vec(),
        ));
        if self.agg.emit == Emit::EveryUpdate {
            step.outputs.push(operator::with_window(out, start, end));
        }
        Ok(step)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::tests::{Harness, aggregate, json_of, window};
    use crate::config::{AggregateKind, Emit};

    #[test]
    fn a_record_between_two_sessions_merges_them() {
        let mut agg = aggregate(AggregateKind::Count);
        let mut w = window(10, 10);
        w.gap_ms = Some(10);
        agg.window = Some(w);
        agg.emit = Emit::EveryUpdate;
        let mut h = Harness::new(&agg);
        h.run_at("a", json!({"user": "a"}), 0);
        h.run_at("a", json!({"user": "a"}), 18);
        // [9, 19) overlaps [0, 10) and [18, 28)
        let step = h.run_at("a", json!({"user": "a"}), 9);
        assert_eq!(
            json_of(&step.outputs),
            [json!({"user": "a", "out": 3, "window_start": 0, "window_end": 28})]
        );
        assert_eq!(
            step.deletes.len(),
            4,
            "both sessions and their index entries go"
        );
        // one session and its index entry are left
        assert_eq!(h.keys_between(&[], &[0xff; 64]), 2);
    }

    #[test]
    fn a_session_the_watermark_closed_takes_no_record() {
        let mut agg = aggregate(AggregateKind::Count);
        let mut w = window(10, 10);
        w.gap_ms = Some(10);
        agg.window = Some(w);
        let mut h = Harness::new(&agg);
        h.watermark = 100;
        assert!(h.run_at("a", json!({"user": "a"}), 50).late);
        assert!(!h.run_at("a", json!({"user": "a"}), 95).late);
    }
}
