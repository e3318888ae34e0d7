//! A tumbling or hopping window aggregate (`pipeline/window.rs` has the layout): the record
//! updates every window holding its event time that the watermark has not closed, `end ‖ key
//! → state`; with none left open it is late. `task/window.rs` closes and emits windows as the
//! watermark passes them.

use super::{Input, Step, StepError, record_error};
use crate::config::{Aggregate, Emit, Window};
use crate::pipeline::{operator, window};
use crate::state::{TaskState, namespaced};

pub struct Windowed<'a> {
    agg: &'a Aggregate,
    window: &'a Window,
}

impl<'a> Windowed<'a> {
    pub fn new(agg: &'a Aggregate, window: &'a Window) -> Self {
        Self { agg, window }
    }

    pub fn step(&self, state: &TaskState, input: Input) -> Result<Step, StepError> {
        let ts = input
            .event_time
            .ok_or_else(|| record_error("event_time", "the record has no event time"))?;
        let key = input.key();
        let w = self.window;
        let mut step = Step::default();
        let open = window::windows_of(w, ts)
            .into_iter()
            .filter(|(_, end)| !window::is_closed(w, *end, input.watermark));
        for (start, end) in open {
            let skey = namespaced(&self.agg.id, &window::window_key(end, key));
            let previous = state.get(&skey)?;
            let (next, out) = operator::aggregate(self.agg, previous.as_deref(), &input.record)?;
            step.puts.push((skey, next));
            if self.agg.emit == Emit::EveryUpdate {
                step.outputs.push(operator::with_window(out, start, end));
            }
        }
        step.late = step.puts.is_empty();
        Ok(step)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::tests::{Harness, aggregate, json_of, window};
    use crate::config::{AggregateKind, Emit};

    #[test]
    fn hopping_windows_each_count_and_closed_ones_make_the_record_late() {
        let mut agg = aggregate(AggregateKind::Count);
        agg.window = Some(window(10, 5));
        agg.emit = Emit::EveryUpdate;
        let mut h = Harness::new(&agg);
        let step = h.run_at("a", json!({"user": "a"}), 12);
        assert_eq!(
            json_of(&step.outputs),
            [
                json!({"user": "a", "out": 1, "window_start": 5, "window_end": 15}),
                json!({"user": "a", "out": 1, "window_start": 10, "window_end": 20}),
            ]
        );
        // the watermark closed [5, 15): only [10, 20) takes the next record
        h.watermark = 14;
        let step = h.run_at("a", json!({"user": "a"}), 13);
        assert_eq!(
            json_of(&step.outputs),
            [json!({"user": "a", "out": 2, "window_start": 10, "window_end": 20})]
        );
        assert!(!step.late);
        h.watermark = 19;
        let step = h.run_at("a", json!({"user": "a"}), 13);
        assert!(step.late && step.puts.is_empty() && step.outputs.is_empty());
    }

    #[test]
    fn on_window_close_emits_nothing_per_record() {
        let mut agg = aggregate(AggregateKind::Count);
        agg.window = Some(window(10, 10));
        agg.emit = Emit::OnWindowClose;
        let mut h = Harness::new(&agg);
        let step = h.run_at("a", json!({"user": "a"}), 3);
        assert!(step.outputs.is_empty());
        assert_eq!(step.puts.len(), 1);
    }
}
