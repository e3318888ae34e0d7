//! A Flumen binary whose keyed operator panics on a poisoned record, for the tests of what a
//! panic in operator code does (it is the record's error: the pipeline's `on_error` applies).
//!
//! `panic_on_poison`: counts each key's records and emits `{"id", "seen"}` per record; a record
//! with `"poison": true` panics inside `process`, as a buggy operator would.

use std::process::ExitCode;

use flumen::{Context, KeyedOperator};
use serde_json::{Value, json};

struct PanicOnPoison;

impl KeyedOperator for PanicOnPoison {
    fn process(&self, ctx: &mut Context, record: &Value) -> Result<(), String> {
        if record["poison"] == json!(true) {
            // a bug in an operator, not an error it reports
            #[allow(clippy::panic)]
            {
                panic!("cannot digest record {}", record["id"]);
            }
        }
        let seen = ctx.state().and_then(Value::as_i64).unwrap_or(0) + 1;
        ctx.set_state(json!(seen));
        ctx.emit(json!({"id": record["id"], "seen": seen}));
        Ok(())
    }
}

fn main() -> ExitCode {
    flumen::register_operator("panic_on_poison", PanicOnPoison);
    flumen::cli::main()
}
