//! A Flumen binary with its own keyed operator, usable from TOML as
//! `{ type = "custom", name = "spend_alert" }` next to the built-ins.
//!
//! `spend_alert`: per user it keeps the running total of `amount` (its keyed state, in every
//! checkpoint) and emits it with every purchase; a user's first purchase also sets a timer one
//! second later, when one summary of that user's first second goes out.
//!
//! `first_hour` (event time: the source needs `event_time`): a user's first purchase sets an
//! event-time timer an hour after it; once the watermark has passed it, one summary of the
//! purchases of that first hour goes out. Run it like `flumen`:
//!
//! ```text
//! cargo run --example custom_operator -- run --config pipeline.toml
//! ```

use std::process::ExitCode;

use flumen::{Context, KeyedOperator};
use serde_json::{Value, json};

struct SpendAlert;

impl KeyedOperator for SpendAlert {
    fn process(&self, ctx: &mut Context, record: &Value) -> Result<(), String> {
        let amount = record["amount"]
            .as_i64()
            .ok_or_else(|| format!("amount is {}, not an integer", record["amount"]))?;
        let mut state = ctx
            .state()
            .cloned()
            .unwrap_or_else(|| json!({"total": 0, "purchases": 0}));
        let total = state["total"].as_i64().unwrap_or(0) + amount;
        let purchases = state["purchases"].as_i64().unwrap_or(0) + 1;
        if purchases == 1 {
            ctx.set_timer(ctx.now_ms() + 1_000);
        }
        state["total"] = json!(total);
        state["purchases"] = json!(purchases);
        ctx.set_state(state);
        let user = ctx.key_text();
        ctx.emit(json!({"user": user, "total": total, "purchases": purchases}));
        Ok(())
    }

    fn on_timer(&self, ctx: &mut Context, at_ms: i64) -> Result<(), String> {
        let state = ctx.state().cloned().unwrap_or(Value::Null);
        let user = ctx.key_text();
        ctx.emit(json!({
            "user": user,
            "first_second": {"at": at_ms, "total": state["total"], "purchases": state["purchases"]},
        }));
        Ok(())
    }
}

struct FirstHour;

const HOUR_MS: i64 = 3_600_000;

impl KeyedOperator for FirstHour {
    fn process(&self, ctx: &mut Context, record: &Value) -> Result<(), String> {
        let at = ctx
            .event_time_ms()
            .ok_or("first_hour needs the source's event_time")?;
        let amount = record["amount"]
            .as_i64()
            .ok_or_else(|| format!("amount is {}, not an integer", record["amount"]))?;
        let mut state = match ctx.state() {
            Some(s) => s.clone(),
            None => {
                ctx.set_event_timer(at + HOUR_MS);
                json!({"first": at, "total": 0, "purchases": 0})
            }
        };
        let first = state["first"].as_i64().unwrap_or(at);
        if at < first + HOUR_MS {
            state["total"] = json!(state["total"].as_i64().unwrap_or(0) + amount);
            state["purchases"] = json!(state["purchases"].as_i64().unwrap_or(0) + 1);
            ctx.set_state(state);
        }
        Ok(())
    }

    fn on_event_timer(&self, ctx: &mut Context, _at_ms: i64) -> Result<(), String> {
        let state = ctx.state().cloned().unwrap_or(Value::Null);
        let user = ctx.key_text();
        ctx.emit(json!({
            "user": user,
            "first_hour": {"from": state["first"], "total": state["total"], "purchases": state["purchases"]},
        }));
        Ok(())
    }
}

fn main() -> ExitCode {
    let operators = flumen::Operators::new()
        .with("spend_alert", SpendAlert)
        .with("first_hour", FirstHour);
    flumen::cli::main_with(&operators)
}
