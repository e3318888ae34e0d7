//! The offset reset plan of `flumen offsets reset`, free of I/O: the scenarios of
//! `kafka-consumer-groups --reset-offsets`, and the rule that state and offsets must agree.

use std::collections::BTreeMap;

use crate::pipeline::topology::Shape;

/// Where to move each selected partition's committed offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scenario {
    Earliest,
    Latest,
    /// An absolute offset (clamped into the partition's range).
    Offset(i64),
    /// Relative to the committed offset (clamped).
    ShiftBy(i64),
    /// The first offset whose timestamp is at or after a time (`--to-datetime`,
    /// `--by-duration`); the caller looks the offsets up and passes them in `PartitionView`.
    Timestamp(u64),
    /// `--from-file`: per partition; partitions not named keep their offset.
    Exact(BTreeMap<i32, i64>),
}

/// What the broker says about one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionView {
    pub partition: i32,
    pub committed: Option<i64>,
    pub low: i64,
    pub high: i64,
    /// For `Scenario::Timestamp`: the first offset at or after it, `None` if there is none.
    pub at_time: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct PlanRow {
    pub partition: i32,
    pub old: Option<i64>,
    pub new: i64,
    pub lag: i64,
}

impl PlanRow {
    pub fn changes(&self) -> bool {
        self.old != Some(self.new)
    }
}

/// The new offset of every partition in `views` (as kafka-consumer-groups computes it:
/// clamped into `[low, high]`, a time without a later record going to the end).
pub fn plan(scenario: &Scenario, views: &[PartitionView]) -> Vec<PlanRow> {
    views
        .iter()
        .map(|v| {
            let current = v.committed.unwrap_or(v.low);
            let wanted = match scenario {
                Scenario::Earliest => v.low,
                Scenario::Latest => v.high,
                Scenario::Offset(o) => *o,
                Scenario::ShiftBy(n) => current.saturating_add(*n),
                Scenario::Timestamp(_) => v.at_time.unwrap_or(v.high),
                Scenario::Exact(map) => map.get(&v.partition).copied().unwrap_or(current),
            };
            let new = wanted.clamp(v.low, v.high.max(v.low));
            PlanRow {
                partition: v.partition,
                old: v.committed,
                new,
                lag: v.high - new,
            }
        })
        .collect()
}

/// What a reset does to state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateAction {
    /// Nothing moves, or the pipeline has no state.
    Keep,
    /// Start these stateful partitions (of the source, or every repartition partition) empty.
    Drop {
        all_repartition: bool,
        source_partitions: Vec<i32>,
    },
}

/// The rule: offsets that move away from the latest snapshot need `--drop-state` (a savepoint
/// restore is the other way and is handled by `--to-savepoint`).
pub fn state_action(
    shape: Shape,
    rows: &[PlanRow],
    drop_state: bool,
) -> Result<StateAction, String> {
    let moved: Vec<i32> = rows
        .iter()
        .filter(|r| r.changes())
        .map(|r| r.partition)
        .collect();
    if moved.is_empty() || shape == Shape::Stateless {
        return Ok(StateAction::Keep);
    }
    if !drop_state {
        let which = match shape {
            Shape::Repartitioned => {
                "all keyed state (it is partitioned by key, not by source partition)".to_string()
            }
            _ => format!("the state of source partitions {moved:?}"),
        };
        return Err(format!(
            "moving offsets of partitions {moved:?} away from the latest snapshot would make state and offsets disagree; \
             pass --drop-state to start {which} empty, or use --to-savepoint DIR"
        ));
    }
    Ok(StateAction::Drop {
        all_repartition: shape == Shape::Repartitioned,
        source_partitions: if shape == Shape::Direct {
            moved
        } else {
            Vec::new()
        },
    })
}

/// Parses `--from-file` lines `topic,partition,offset` (the CSV of kafka-consumer-groups
/// `--export`), keeping those of `topic`; errors name the line.
pub fn parse_offsets_file(text: &str, topic: &str) -> Result<BTreeMap<i32, i64>, String> {
    let mut out = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        let [t, p, o] = fields.as_slice() else {
            return Err(format!(
                "line {}: expected topic,partition,offset, got {line:?}",
                n + 1
            ));
        };
        let partition = p
            .parse::<i32>()
            .map_err(|e| format!("line {}: partition {p:?}: {e}", n + 1))?;
        let offset = o
            .parse::<i64>()
            .map_err(|e| format!("line {}: offset {o:?}: {e}", n + 1))?;
        if *t == topic {
            out.insert(partition, offset);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn view(partition: i32, committed: Option<i64>, low: i64, high: i64) -> PartitionView {
        PartitionView {
            partition,
            committed,
            low,
            high,
            at_time: None,
        }
    }

    #[test]
    fn each_scenario_gives_the_offsets_kafka_consumer_groups_would() {
        let v = [view(0, Some(50), 10, 100), view(1, None, 0, 40)];
        let new = |s: Scenario| plan(&s, &v).iter().map(|r| r.new).collect::<Vec<_>>();
        assert_eq!(new(Scenario::Earliest), vec![10, 0]);
        assert_eq!(new(Scenario::Latest), vec![100, 40]);
        assert_eq!(new(Scenario::Offset(70)), vec![70, 40]);
        assert_eq!(new(Scenario::Offset(-5)), vec![10, 0]);
        assert_eq!(new(Scenario::ShiftBy(-45)), vec![10, 0]);
        assert_eq!(new(Scenario::ShiftBy(20)), vec![70, 20]);
        assert_eq!(new(Scenario::Exact(BTreeMap::from([(1, 7)]))), vec![50, 7]);
        let timed = [
            PartitionView {
                at_time: Some(60),
                ..v[0]
            },
            v[1],
        ];
        let rows = plan(&Scenario::Timestamp(1), &timed);
        assert_eq!(rows.iter().map(|r| r.new).collect::<Vec<_>>(), vec![60, 40]);
        assert_eq!(rows[0].lag, 40);
    }

    #[test]
    fn moving_stateful_offsets_needs_a_choice() {
        let rows = plan(
            &Scenario::Earliest,
            &[view(0, Some(50), 0, 100), view(1, Some(0), 0, 9)],
        );
        assert_eq!(
            state_action(Shape::Stateless, &rows, false),
            Ok(StateAction::Keep)
        );
        let err = state_action(Shape::Repartitioned, &rows, false).unwrap_err();
        assert!(err.contains("--drop-state") && err.contains("[0]"), "{err}");
        assert_eq!(
            state_action(Shape::Direct, &rows, true),
            Ok(StateAction::Drop {
                all_repartition: false,
                source_partitions: vec![0]
            })
        );
        assert_eq!(
            state_action(Shape::Repartitioned, &rows, true),
            Ok(StateAction::Drop {
                all_repartition: true,
                source_partitions: vec![]
            })
        );
        // nothing moves: nothing to choose
        let still = plan(&Scenario::ShiftBy(0), &[view(0, Some(5), 0, 9)]);
        assert_eq!(
            state_action(Shape::Repartitioned, &still, false),
            Ok(StateAction::Keep)
        );
    }

    #[test]
    fn the_offsets_file_is_parsed_per_topic_and_errors_name_the_line() {
        let text = "events,0,12\nother,0,99\n\n# comment\nevents,1,7\n";
        assert_eq!(
            parse_offsets_file(text, "events"),
            Ok(BTreeMap::from([(0, 12), (1, 7)]))
        );
        let err = parse_offsets_file("events,0,12\nevents,x,1\n", "events").unwrap_err();
        assert!(err.starts_with("line 2:"), "{err}");
    }

    proptest! {
        #[test]
        fn new_offsets_stay_in_range(low in 0i64..1000, len in 0i64..1000, committed in proptest::option::of(-10i64..3000), shift in -5000i64..5000) {
            let v = [view(0, committed, low, low + len)];
            for s in [Scenario::Earliest, Scenario::Latest, Scenario::Offset(shift), Scenario::ShiftBy(shift)] {
                let r = plan(&s, &v)[0];
                prop_assert!(r.new >= low && r.new <= low + len);
                prop_assert_eq!(r.lag, low + len - r.new);
            }
        }
    }
}
