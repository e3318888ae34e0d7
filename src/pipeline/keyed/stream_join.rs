//! The windowed stream-stream join (`pipeline/stream_join.rs` has the layout): a record of
//! either stream is buffered in its key's state and paired with the other stream's buffered
//! records of the key within the bound. This stream's records come through [`StreamJoin::step`],
//! the other's through `task/stream_join.rs`, both by [`StreamJoin::pair_up`].

use serde_json::Value;

use super::{Input, Step, StepError, record_error};
use crate::codec::Payload;
use crate::config::{Aggregate, EventTime, StreamJoinMode};
use crate::pipeline::operator::Record;
use crate::pipeline::stream_join::{self, Side};
use crate::pipeline::timers;
use crate::state::{TaskState, namespaced};

pub struct StreamJoin<'a> {
    pub agg: &'a Aggregate,
    pub within_ms: i64,
    pub into: &'a str,
    pub mode: StreamJoinMode,
    /// The source's bound on out-of-orderness (ms): the other stream's watermark follows its
    /// highest event time by as much.
    pub out_of_orderness_ms: i64,
}

/// What a record does to the join: state to write, and the pairs it completes.
pub struct Paired {
    pub puts: Vec<(Vec<u8>, Vec<u8>)>,
    pub outputs: Vec<Value>,
}

impl<'a> StreamJoin<'a> {
    pub fn new(
        agg: &'a Aggregate,
        (within_ms, into, mode): (i64, &'a str, StreamJoinMode),
        event_time: Option<&EventTime>,
    ) -> Self {
        let out_of_orderness_ms = event_time.map_or(0, |et| {
            i64::try_from(et.max_out_of_orderness.as_millis()).unwrap_or(i64::MAX)
        });
        Self {
            agg,
            within_ms,
            into,
            mode,
            out_of_orderness_ms,
        }
    }

    pub fn step(&self, state: &TaskState, input: Input) -> Result<Step, StepError> {
        let (Some(ts), Payload::Json(value)) = (input.event_time, &input.record.value) else {
            return Err(record_error(
                "stream_join",
                "the record has no event time or no fields",
            ));
        };
        let key = input.key();
        let found = self.pair_up(
            state,
            Side::This,
            (key, ts, input.at),
            (value, input.watermark, input.other_idle),
        )?;
        let Some(paired) = found else {
            return Ok(Step {
                late: true,
                ..Step::default()
            });
        };
        let outputs = paired
            .outputs
            .into_iter()
            .map(|v| Record {
                key: Some(key.to_vec()),
                value: Payload::Json(v),
            })
            .collect();
        Ok(Step {
            puts: paired.puts,
            outputs,
            ..Step::default()
        })
    }

    /// Buffers the record of `side` (key `key`, event time `ts`, read at `at`) and pairs it
    /// with the other side's; `None` when it is late (older than the cleanup has reached).
    pub fn pair_up(
        &self,
        state: &TaskState,
        side: Side,
        (key, ts, at): (&[u8], i64, (i32, i64)),
        (value, this_wm, other_idle): (&Value, i64, bool),
    ) -> crate::state::Result<Option<Paired>> {
        let ns = |k: &[u8]| namespaced(&self.agg.id, k);
        let other_max = state
            .get(&ns(&stream_join::max_key(Side::Other)))?
            .as_deref()
            .and_then(stream_join::decode_time);
        let ooo = self.out_of_orderness_ms;
        if stream_join::late_before(this_wm, other_max, other_idle, ooo).is_some_and(|w| ts < w) {
            return Ok(None);
        }
        let entry = stream_join::entry_key(side, key, ts, at.0, at.1);
        let mut puts = vec![
            (ns(&entry), value.to_string().into_bytes()),
            (ns(&timers::timer_key(ts, &entry)), Vec::new()),
        ];
        if side == Side::Other && other_max.is_none_or(|m| ts > m) {
            puts.push((ns(&stream_join::max_key(side)), ts.to_be_bytes().to_vec()));
        }
        let (lo, hi) = stream_join::partners(
            side.opposite(),
            key,
            ts.saturating_sub(self.within_ms),
            ts.saturating_add(self.within_ms),
        );
        let mut outputs = Vec::new();
        let mut corrupt = None;
        let mark_partners = stream_join::emits_unmatched(self.mode, side.opposite());
        state.range(&ns(&lo), &ns(&hi), |k, v| {
            match serde_json::from_slice::<Value>(v) {
                Ok(other) => {
                    let pair = match side {
                        Side::This => stream_join::joined(value, &other, self.into),
                        Side::Other => stream_join::joined(&other, value, self.into),
                    };
                    outputs.extend(pair);
                    if mark_partners && let Some((_, partner)) = crate::state::split_namespaced(k) {
                        puts.push((ns(&stream_join::matched_key(partner)), Vec::new()));
                    }
                }
                Err(e) => corrupt = Some(e.to_string()),
            }
            Ok(true)
        })?;
        if !outputs.is_empty() && stream_join::emits_unmatched(self.mode, side) {
            puts.push((ns(&stream_join::matched_key(&entry)), Vec::new()));
        }
        if let Some(e) = corrupt {
            return Err(crate::state::Error::Corrupt {
                path: std::path::PathBuf::from(&self.agg.id),
                message: format!("a buffered join record is not JSON: {e}"),
            });
        }
        Ok(Some(Paired { puts, outputs }))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::tests::{Harness, aggregate, json_of};
    use super::Side;
    use crate::config::{AggregateKind, Format, StreamJoinMode};

    fn join_agg() -> crate::config::Aggregate {
        aggregate(AggregateKind::StreamJoin {
            stream: "clicks".into(),
            within_ms: 10,
            into: "click".into(),
            mode: StreamJoinMode::Inner,
            format: Format::Json,
        })
    }

    #[test]
    fn records_within_the_bound_pair_up_once() {
        let agg = join_agg();
        let mut h = Harness::new(&agg);
        let Some(join) = h.keyed().stream_join() else {
            panic!("not a stream join");
        };
        // the other stream's record, as task/stream_join.rs buffers it
        let state = h.state();
        let paired = join
            .pair_up(
                state,
                Side::Other,
                (b"a", 100, (0, 7)),
                (&json!({"c": 1}), i64::MIN, false),
            )
            .ok()
            .flatten()
            .map(|p| p.puts);
        for (k, v) in paired.unwrap_or_default() {
            h.put(&k, &v);
        }
        let step = h.run_at("a", json!({"v": 1}), 105);
        assert_eq!(json_of(&step.outputs), [json!({"v": 1, "click": {"c": 1}})]);
        assert!(
            h.run_at("a", json!({"v": 2}), 111).outputs.is_empty(),
            "11 ms apart"
        );
        assert!(
            h.run_at("b", json!({"v": 3}), 100).outputs.is_empty(),
            "another key"
        );
    }

    #[test]
    fn a_record_behind_the_joins_watermark_is_late() {
        let agg = join_agg();
        let mut h = Harness::new(&agg);
        h.watermark = 1_000;
        h.other_idle = true;
        let step = h.run_at("a", json!({"v": 1}), 500);
        assert!(step.late && step.puts.is_empty());
        assert!(!h.run_at("a", json!({"v": 1}), 1_000).late);
    }
}
