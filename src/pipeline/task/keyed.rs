//! A record at its stateful task's keyed operator (`pipeline/keyed/`, one file per kind): the
//! runner's side of the step. It gathers what the step reads besides the state (the task's
//! watermark, the clock, the other stream's silence), maps the step's error to the record's,
//! and puts the step's outputs through the `after` steps and the encoder. Nothing is written
//! here: the [`Effect`] is applied by `task/record.rs` once all of the record has succeeded.

use super::record::Effect;
use super::{Runner, Task};
use crate::config::Aggregate;
use crate::kafka::consumer;
use crate::pipeline::keyed::{Input, StepError};
use crate::pipeline::operator::{Record, RecordError};
use crate::pipeline::{Result, timers, window};

impl Runner<'_> {
    /// `rec`'s keyed step, its outputs (through the `after` steps, encoded) into `effect`.
    pub(super) fn keyed(
        &self,
        r: &consumer::Message,
        task: &Task,
        rec: Record,
        agg: &Aggregate,
        (event_time, from_source): (Option<i64>, bool),
        effect: &mut Effect,
    ) -> Result<()> {
        let plan = &self.pipeline.plan;
        let (Some(keyed), Some(state)) = (self.keyed.as_ref(), task.state.as_ref()) else {
            return Err(Self::record_error(r, "aggregate", "task has no state"));
        };
        let step_err = |e: RecordError| {
            let e = RecordError {
                index: Some(0),
                ..e
            };
            Self::step_error(r, e, std::slice::from_ref(&agg.on_error))
        };
        // no key, no keyed state: never group keyless records under one empty key
        if rec.key.is_none() {
            return Err(step_err(RecordError {
                step: agg.kind.name(),
                message: "record has no key to group by".into(),
                index: None,
            }));
        }
        if let Some(ts) = event_time {
            effect.watermark = self.input_watermark(r, ts, from_source);
        }
        let input = Input {
            record: rec,
            event_time,
            watermark: task
                .windows
                .as_ref()
                .map_or(window::NO_WATERMARK, |w| w.watermarks.current()),
            now_ms: if keyed.reads_clock() {
                timers::now_ms()
            } else {
                0
            },
            at: (r.partition, r.offset),
            other_idle: keyed.stream_join().is_some() && self.other_idle(r.partition, task),
        };
        let step = keyed.step(state, input).map_err(|e| match e {
            StepError::Operator(e) => step_err(e),
            StepError::Record { stage, message } => Self::record_error(r, stage, message),
            StepError::State(e) => e.into(),
        })?;
        if step.late
            && let Some(w) = &agg.window
        {
            self.check_late(r, w)?;
        }
        effect.puts = step.puts;
        effect.deletes = step.deletes;
        effect.late = step.late;
        for out in step.outputs {
            if let Some(out) = crate::pipeline::operator::apply_steps(&plan.after, out)
                .map_err(|e| Self::step_error(r, e, &plan.after_on_error))?
            {
                effect.sends.push(self.encode_out(r, out)?);
            }
        }
        Ok(())
    }

    /// The watermark `r` brings its task: its source partition's after event time `ts`, or the
    /// one its source task sent along through the repartition topic.
    fn input_watermark(
        &self,
        r: &consumer::Message,
        ts: i64,
        from_source: bool,
    ) -> Option<(i32, i64)> {
        if from_source {
            let et = self.pipeline.source.event_time.as_ref()?;
            Some((r.partition, window::watermark_after(et, ts)))
        } else {
            r.header(window::WATERMARK_HEADER)
                .and_then(window::parse_watermark)
        }
    }
}
