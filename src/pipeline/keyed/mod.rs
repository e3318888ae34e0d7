//! The keyed step of a record at its stateful task: one file per operator kind, each with one
//! `step(state, input) -> Step`. A step reads the key's state and writes nothing: what the
//! record does (state to put and delete, outputs, lateness) is its [`Step`], which the runner
//! applies only once everything of the record has succeeded (`task/record.rs`).
//!
//! The rule for names, one name in three places: `pipeline/<kind>.rs` holds a kind's state
//! layout and pure functions (`window`, `dedupe`, `table_join`, `stream_join`, `aggregate`,
//! `custom`, `timers`); `pipeline/keyed/<kind>.rs` its step; `pipeline/task/<kind>.rs` what the
//! runner does for it outside a record's step (closing windows, expiring keys and buffers,
//! firing timers, reading a table).
//!
//! | kind | file | state (in the operator's namespace) |
//! |---|---|---|
//! | running aggregate | `aggregate.rs` | key → state |
//! | aggregate with a TTL | `ttl.rs` | `0 ‖ key` → expiry ‖ state, a timer per key |
//! | tumbling or hopping window | `window.rs` | end ‖ key → state |
//! | session window | `session.rs` | end ‖ key → start ‖ state, and an index by start |
//! | dedupe | `dedupe.rs` | `0 ‖ key` → expiry, a timer per key |
//! | table join | `table_join.rs` | `0 ‖ key` → row (written by the table reader) |
//! | stream join | `stream_join.rs` | both streams' buffers (`pipeline/stream_join.rs`) |
//! | custom | `custom.rs` | `0 ‖ key` → JSON, timers |

mod aggregate;
pub mod custom;
mod dedupe;
mod session;
mod stream_join;
mod table_join;
mod ttl;
mod window;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use crate::config::{Aggregate, AggregateKind, EventTime, TimeDomain};
use crate::pipeline::custom::KeyedOperator;
use crate::pipeline::operator::{Record, RecordError};
use crate::state::TaskState;

pub use stream_join::{Paired, StreamJoin};

/// One record at its keyed step.
pub struct Input {
    /// A record with a key (the runner refuses keyless records before their step).
    pub record: Record,
    /// The record's event time, when the operator follows event time.
    pub event_time: Option<i64>,
    /// The task's watermark (`window::NO_WATERMARK` without one).
    pub watermark: i64,
    /// Processing time now (ms since the epoch).
    pub now_ms: i64,
    /// Where the record was read (partition, offset): names a stream join's buffer entry.
    pub at: (i32, i64),
    /// The other stream's partition has been quiet for its idle timeout (stream joins).
    pub other_idle: bool,
}

impl Input {
    pub fn key(&self) -> &[u8] {
        self.record.key.as_deref().unwrap_or_default()
    }
}

/// What a record does at its keyed step, decided before anything is done.
#[derive(Debug, Default, PartialEq)]
pub struct Step {
    /// (state key, new value), written after `deletes` (a merged session may be stored again
    /// under a key it deletes).
    pub puts: Vec<(Vec<u8>, Vec<u8>)>,
    pub deletes: Vec<Vec<u8>>,
    /// Records handed on to the `after` steps and the sink, in order.
    pub outputs: Vec<Record>,
    /// The record came after everything it could change had closed (windows, join buffers).
    pub late: bool,
}

/// Why a record's keyed step failed.
#[derive(Debug)]
pub enum StepError {
    /// The operator's own failure: its `on_error` override applies.
    Operator(RecordError),
    /// A record the operator cannot take at all (no event time, no fields): the pipeline's
    /// policy applies.
    Record {
        stage: &'static str,
        message: String,
    },
    State(crate::state::Error),
}

impl From<crate::state::Error> for StepError {
    fn from(e: crate::state::Error) -> Self {
        Self::State(e)
    }
}

impl From<RecordError> for StepError {
    fn from(e: RecordError) -> Self {
        Self::Operator(e)
    }
}

/// The time a TTL counts from: now, or in event time the record's own (so the result does not
/// depend on when the record was processed).
fn ttl_now(time: TimeDomain, input: &Input) -> Result<i64, StepError> {
    match time {
        TimeDomain::Processing => Ok(input.now_ms),
        TimeDomain::Event => input
            .event_time
            .ok_or_else(|| record_error("event_time", "the record has no event time")),
    }
}

fn record_error(stage: &'static str, message: impl Into<String>) -> StepError {
    StepError::Record {
        stage,
        message: message.into(),
    }
}

/// The pipeline's keyed operator, of one of the kinds.
pub enum Keyed<'a> {
    Aggregate(aggregate::Running<'a>),
    Ttl(ttl::Ttl<'a>),
    Window(window::Windowed<'a>),
    Session(session::Sessions<'a>),
    Dedupe(dedupe::Dedupe<'a>),
    TableJoin(table_join::TableJoin<'a>),
    StreamJoin(StreamJoin<'a>),
    Custom(custom::Custom<'a>),
}

impl<'a> Keyed<'a> {
    /// The operator of `agg`; `operator` is the registered operator of a `custom` step.
    /// `None` when a `custom` step's operator is missing.
    pub fn new(
        agg: &'a Aggregate,
        event_time: Option<&EventTime>,
        operator: Option<Arc<dyn KeyedOperator>>,
    ) -> Option<Self> {
        Some(match (&agg.kind, &agg.window) {
            (AggregateKind::Join { into, inner, .. }, _) => {
                Self::TableJoin(table_join::TableJoin::new(agg, into, *inner))
            }
            (
                AggregateKind::StreamJoin {
                    within_ms,
                    into,
                    mode,
                    ..
                },
                _,
            ) => Self::StreamJoin(StreamJoin::new(agg, (*within_ms, into, *mode), event_time)),
            (AggregateKind::Custom { .. }, _) => Self::Custom(custom::Custom::new(agg, operator?)),
            (AggregateKind::Dedupe { ttl_ms }, _) => {
                Self::Dedupe(dedupe::Dedupe::new(agg, *ttl_ms))
            }
            (_, Some(w)) if w.gap_ms.is_some() => Self::Session(session::Sessions::new(agg, w)),
            (_, Some(w)) => Self::Window(window::Windowed::new(agg, w)),
            (_, None) if agg.ttl_ms.is_some() => Self::Ttl(ttl::Ttl::new(agg)),
            (_, None) => Self::Aggregate(aggregate::Running::new(agg)),
        })
    }

    /// Whether its step reads processing time (`Input::now_ms`; others get 0, sparing the
    /// clock on the hot path).
    pub fn reads_clock(&self) -> bool {
        match self {
            Self::Ttl(_) | Self::Dedupe(_) => self.time() == TimeDomain::Processing,
            Self::Custom(_) => true,
            _ => false,
        }
    }

    fn time(&self) -> TimeDomain {
        match self {
            Self::Ttl(op) => op.time(),
            Self::Dedupe(op) => op.time(),
            _ => TimeDomain::Processing,
        }
    }

    /// What `input` does to its key's state in `state`.
    pub fn step(&self, state: &TaskState, input: Input) -> Result<Step, StepError> {
        match self {
            Self::Aggregate(op) => op.step(state, input),
            Self::Ttl(op) => op.step(state, input),
            Self::Window(op) => op.step(state, input),
            Self::Session(op) => op.step(state, input),
            Self::Dedupe(op) => op.step(state, input),
            Self::TableJoin(op) => op.step(state, input),
            Self::StreamJoin(op) => op.step(state, input),
            Self::Custom(op) => op.step(state, input),
        }
    }

    /// The custom operator, for its timers.
    pub fn custom(&self) -> Option<&custom::Custom<'a>> {
        match self {
            Self::Custom(c) => Some(c),
            _ => None,
        }
    }

    /// The stream join, for the other stream's records and the buffers' expiry.
    pub fn stream_join(&self) -> Option<&StreamJoin<'a>> {
        match self {
            Self::StreamJoin(j) => Some(j),
            _ => None,
        }
    }
}
