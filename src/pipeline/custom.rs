//! User-defined keyed operators: a Rust trait a user implements in their own binary, registered
//! by name before the command line runs, and used from TOML as
//! `{ type = "custom", name = "…" }` in the keyed place of a pipeline (after `key_by`).
//!
//! ```no_run
//! use flumen::{Context, KeyedOperator};
//! use serde_json::{Value, json};
//!
//! struct Total;
//! impl KeyedOperator for Total {
//!     fn process(&self, ctx: &mut Context, record: &Value) -> Result<(), String> {
//!         let amount = record["amount"].as_i64().ok_or("amount is not an integer")?;
//!         let total = ctx.state().and_then(Value::as_i64).unwrap_or(0) + amount;
//!         ctx.set_state(json!(total));
//!         let user = ctx.key_text();
//!         ctx.emit(json!({ "user": user, "total": total }));
//!         Ok(())
//!     }
//! }
//!
//! fn main() -> std::process::ExitCode {
//!     flumen::register_operator("total", Total);
//!     flumen::cli::main()
//! }
//! ```
//!
//! Each key's state is a JSON value in the pipeline's state backend, in every checkpoint and
//! savepoint. Timers are kept in state as well (time-ordered keys): a processing-time timer
//! fires at the first checkpoint at or after its time, an event-time timer (with the source's
//! `event_time`) at the first checkpoint at which the task's watermark has reached it. Outputs
//! go through the transaction like every output: exactly once through crashes.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock, RwLock};

use serde_json::Value;

/// A keyed operator: called with one record of one key at a time, on the pipeline's thread.
pub trait KeyedOperator: Send + Sync + 'static {
    /// Processes `record` of key `ctx.key()`. An error follows the pipeline's `on_error`.
    fn process(&self, ctx: &mut Context, record: &Value) -> Result<(), String>;

    /// A timer set with [`Context::set_timer`] for this key is due (`at_ms`: its time).
    fn on_timer(&self, ctx: &mut Context, at_ms: i64) -> Result<(), String> {
        let _ = (ctx, at_ms);
        Ok(())
    }

    /// An event-time timer set with [`Context::set_event_timer`] for this key is due: the
    /// watermark has reached `at_ms` (and [`Context::watermark_ms`] says where it is).
    fn on_event_timer(&self, ctx: &mut Context, at_ms: i64) -> Result<(), String> {
        let _ = (ctx, at_ms);
        Ok(())
    }
}

/// What an operator sees of its key, and what it asks for.
#[derive(Debug)]
pub struct Context {
    key: Vec<u8>,
    state: Option<Value>,
    state_changed: bool,
    timers: Vec<Timer>,
    outputs: Vec<Value>,
    now_ms: i64,
    /// The record's event time, and the task's watermark, with the source's `event_time`.
    event_time_ms: Option<i64>,
    watermark_ms: Option<i64>,
}

/// A timer an operator set: when, and on which clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timer {
    Processing(i64),
    Event(i64),
}

impl Context {
    pub(crate) fn new(key: &[u8], state: Option<Value>, now_ms: i64) -> Self {
        Self {
            key: key.to_vec(),
            state,
            state_changed: false,
            timers: Vec::new(),
            outputs: Vec::new(),
            now_ms,
            event_time_ms: None,
            watermark_ms: None,
        }
    }

    /// The same, in a pipeline with event time: the record's (none for a timer) and the
    /// task's watermark.
    pub(crate) fn with_event_time(mut self, event_time: Option<i64>, watermark: i64) -> Self {
        self.event_time_ms = event_time;
        self.watermark_ms = Some(watermark);
        self
    }

    /// The record's key (the `key_by` field's value, or the message key).
    pub fn key(&self) -> &[u8] {
        &self.key
    }

    /// The key as text (lossy UTF-8).
    pub fn key_text(&self) -> String {
        String::from_utf8_lossy(&self.key).into_owned()
    }

    /// This key's state, if any.
    pub fn state(&self) -> Option<&Value> {
        self.state.as_ref()
    }

    pub fn set_state(&mut self, value: Value) {
        self.state = Some(value);
        self.state_changed = true;
    }

    pub fn clear_state(&mut self) {
        self.state = None;
        self.state_changed = true;
    }

    /// Produces `value` (to the pipeline's next steps and sink), keyed by this key.
    pub fn emit(&mut self, value: Value) {
        self.outputs.push(value);
    }

    /// Calls `on_timer` for this key at the first checkpoint at or after `at_ms` (processing
    /// time, ms since the epoch). Setting the same time twice sets one timer.
    pub fn set_timer(&mut self, at_ms: i64) {
        self.timers.push(Timer::Processing(at_ms));
    }

    /// Calls `on_event_timer` for this key at the first checkpoint at which the task's
    /// watermark has reached `at_ms` (event time, ms). Needs the source's `event_time`; without
    /// it the timer never fires. Setting the same time twice sets one timer.
    pub fn set_event_timer(&mut self, at_ms: i64) {
        self.timers.push(Timer::Event(at_ms));
    }

    /// Processing time now, ms since the epoch.
    pub fn now_ms(&self) -> i64 {
        self.now_ms
    }

    /// The record's event time (ms), with the source's `event_time`; `None` in a timer.
    pub fn event_time_ms(&self) -> Option<i64> {
        self.event_time_ms
    }

    /// The task's watermark (ms): no record with an earlier event time is expected any more.
    /// `None` without the source's `event_time`.
    pub fn watermark_ms(&self) -> Option<i64> {
        self.watermark_ms
    }

    /// (the new state if it changed: `Some(None)` cleared, timers set, outputs)
    pub(crate) fn finish(self) -> (Option<Option<Value>>, Vec<Timer>, Vec<Value>) {
        (
            self.state_changed.then_some(self.state),
            self.timers,
            self.outputs,
        )
    }
}

/// The custom operators a binary offers, by the name a config's `{ type = "custom", name }`
/// gives: a value handed to `cli::main_with` (validation checks the names against it; the
/// runner takes the operator from it).
#[derive(Clone, Default)]
pub struct Operators {
    by_name: BTreeMap<String, Arc<dyn KeyedOperator>>,
}

impl Operators {
    pub fn new() -> Self {
        Self::default()
    }

    /// `operator` as `name` (a second registration of a name replaces the first).
    #[must_use]
    pub fn with(mut self, name: &str, operator: impl KeyedOperator) -> Self {
        self.by_name.insert(name.to_string(), Arc::new(operator));
        self
    }

    /// Those registered with [`register_operator`] (how binaries registered them before
    /// `cli::main_with`; `cli::main` still takes these).
    pub fn registered() -> Self {
        let by_name = registry().read().map(|r| r.clone()).unwrap_or_default();
        Self { by_name }
    }

    /// The operator registered as `name`.
    pub fn get(&self, name: &str) -> Option<Arc<dyn KeyedOperator>> {
        self.by_name.get(name).cloned()
    }

    /// The registered names (for validation and its messages).
    pub fn names(&self) -> Vec<String> {
        self.by_name.keys().cloned().collect()
    }
}

type Registry = RwLock<BTreeMap<String, Arc<dyn KeyedOperator>>>;

fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(|| RwLock::new(BTreeMap::new()))
}

/// Makes `operator` usable as `{ type = "custom", name = "<name>" }` by `flumen::cli::main()`;
/// call it before. A second registration of a name replaces the first. New binaries may build
/// an [`Operators`] value and call `flumen::cli::main_with` instead.
pub fn register_operator(name: &str, operator: impl KeyedOperator) {
    if let Ok(mut r) = registry().write() {
        r.insert(name.to_string(), Arc::new(operator));
    }
}

/// The operator registered with [`register_operator`] as `name`.
pub fn lookup(name: &str) -> Option<Arc<dyn KeyedOperator>> {
    registry().read().ok()?.get(name).cloned()
}

/// The names registered with [`register_operator`].
pub fn registered() -> Vec<String> {
    registry()
        .read()
        .map(|r| r.keys().cloned().collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    struct Echo;
    impl KeyedOperator for Echo {
        fn process(&self, ctx: &mut Context, record: &Value) -> Result<(), String> {
            let n = ctx.state().and_then(Value::as_i64).unwrap_or(0) + 1;
            ctx.set_state(json!(n));
            ctx.set_timer(ctx.now_ms() + 10);
            if let Some(t) = ctx.event_time_ms() {
                ctx.set_event_timer(t + 5);
            }
            ctx.emit(json!({"seen": n, "record": record}));
            Ok(())
        }
    }

    #[test]
    fn a_registered_operator_runs_with_its_context() {
        register_operator("echo-test", Echo);
        assert!(registered().contains(&"echo-test".to_string()));
        let op = lookup("echo-test").unwrap();
        let mut ctx = Context::new(b"k", Some(json!(4)), 1_000);
        op.process(&mut ctx, &json!({"a": 1})).unwrap();
        let (state, timers, outputs) = ctx.finish();
        assert_eq!(state, Some(Some(json!(5))));
        assert_eq!(timers, [Timer::Processing(1_010)]);
        assert_eq!(outputs, [json!({"seen": 5, "record": {"a": 1}})]);
        let mut ctx = Context::new(b"k", None, 0);
        op.on_timer(&mut ctx, 5).unwrap();
        assert_eq!(ctx.finish(), (None, vec![], vec![]));
        let mut ctx = Context::new(b"k", None, 1_000).with_event_time(Some(70), 60);
        assert_eq!(ctx.watermark_ms(), Some(60));
        op.process(&mut ctx, &json!({})).unwrap();
        assert_eq!(ctx.finish().1, [Timer::Processing(1_010), Timer::Event(75)]);
        assert!(lookup("nope").is_none());
    }
}
