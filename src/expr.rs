//! The `expr` of `filter` and `map` steps: jq programs, run by jaq (`jaq-core`, `jaq-std`,
//! `jaq-json`). Why jq: record pipelines are JSON reshaping, which jq was made for (compute,
//! rename, drop and nest fields in one expression), most Kafka users already know it, and jaq
//! is a maintained, pure-Rust implementation (see ARCHITECTURE.md).
//!
//! A compiled program holds reference-counted values and stays on the pipeline thread that
//! compiled it: each thread keeps its own cache by program text. The config validator compiles
//! every program once up front, so a program that does not compile never reaches a pipeline.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use jaq_core::load::{self, Arena, File, Loader};
use jaq_core::{Compiler, Ctx, Vars, data};
use jaq_json::Val;
use serde::Deserialize;
use serde_json::Value;

type Filter = jaq_core::Filter<data::JustLut<Val>>;

/// Why a program does not compile, at a byte offset into it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompileError {
    pub offset: usize,
    pub message: String,
}

/// Compiles `code` with jq's standard library.
fn compile(code: &str) -> Result<Filter, Vec<CompileError>> {
    let defs = jaq_core::defs()
        .chain(jaq_std::defs())
        .chain(jaq_json::defs());
    let funs = jaq_core::funs()
        .chain(jaq_std::funs())
        .chain(jaq_json::funs());
    let loader = Loader::new(defs);
    let arena = Arena::default();
    // error positions are slices of `code`
    let offset = |s: &str| {
        (s.as_ptr() as usize)
            .checked_sub(code.as_ptr() as usize)
            .filter(|o| *o <= code.len())
            .unwrap_or(0)
    };
    let modules = loader
        .load(&arena, File { code, path: () })
        .map_err(|errs| {
            let mut out = Vec::new();
            for (_, e) in errs {
                match e {
                    load::Error::Io(v) => out.extend(v.into_iter().map(|(_, m)| CompileError {
                        offset: 0,
                        message: m,
                    })),
                    load::Error::Lex(v) => {
                        out.extend(v.into_iter().map(|(expect, at)| CompileError {
                            offset: offset(at),
                            message: format!("expected {}", expect.as_str()),
                        }))
                    }
                    load::Error::Parse(v) => {
                        out.extend(v.into_iter().map(|(expect, at)| CompileError {
                            offset: offset(at),
                            message: format!("expected {}", expect.as_str()),
                        }))
                    }
                }
            }
            out
        })?;
    Compiler::default()
        .with_funs(funs)
        .compile(modules)
        .map_err(|errs| {
            errs.into_iter()
                .flat_map(|(_, v)| v)
                .map(|(name, undefined)| CompileError {
                    offset: offset(name),
                    message: format!("undefined {} {name:?}", undefined.as_str()),
                })
                .collect()
        })
}

/// Checks that `code` compiles (config validation).
pub fn check(code: &str) -> Result<(), Vec<CompileError>> {
    compile(code).map(drop)
}

thread_local! {
    static CACHE: RefCell<HashMap<String, Rc<Filter>>> = RefCell::new(HashMap::new());
}

fn cached(code: &str) -> Result<Rc<Filter>, String> {
    CACHE.with(|cache| {
        if let Some(f) = cache.borrow().get(code) {
            return Ok(Rc::clone(f));
        }
        let f = Rc::new(compile(code).map_err(|errs| {
            errs.first()
                .map_or_else(|| "does not compile".to_string(), |e| e.message.clone())
        })?);
        cache.borrow_mut().insert(code.to_string(), Rc::clone(&f));
        Ok(f)
    })
}

/// The first `max` values `code` yields for `input`, or its first error. Never more than `max`
/// are computed (`repeat(.)` stays bounded), and `halt` is an error of the record, not an exit
/// of the process (jaq's `unwrap_valr` would exit).
pub fn run(code: &str, input: &Value, max: usize) -> Result<Vec<Value>, String> {
    let filter = cached(code)?;
    let val = Val::deserialize(input).map_err(|e| format!("input: {e}"))?;
    let ctx = Ctx::<data::JustLut<Val>>::new(&filter.lut, Vars::new([]));
    let mut out = Vec::new();
    for r in filter.id.run((ctx, val)).take(max) {
        let v = r.map_err(|exn| match exn.get_err() {
            Ok(e) => e.to_string(),
            Err(_) => "halt stops a jq program, not a pipeline: use error(...)".to_string(),
        })?;
        // jaq prints its values as JSON; values JSON cannot hold (byte strings, non-string keys)
        // fail here
        let text = v.to_string();
        out.push(
            serde_json::from_str(&text)
                .map_err(|e| format!("the result {text} is not JSON: {e}"))?,
        );
    }
    Ok(out)
}

/// jq's truthiness: everything but `false` and `null`.
pub fn truthy(v: &Value) -> bool {
    !matches!(v, Value::Null | Value::Bool(false))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reshapes_computes_and_nests() {
        let out = run(
            "{user, total: (.price * .qty), address: {city}} | del(.missing)",
            &json!({"user": "u1", "price": 2.5, "qty": 4, "city": "Utrecht", "x": 1}),
            2,
        )
        .unwrap();
        assert_eq!(
            out,
            [json!({"user": "u1", "total": 10.0, "address": {"city": "Utrecht"}})]
        );
        assert_eq!(
            run(".a[]", &json!({"a": [1, 2]}), 5).unwrap(),
            [json!(1), json!(2)]
        );
        assert_eq!(run("empty", &json!(1), 1).unwrap(), Vec::<Value>::new());
        // an endless program is cut at what is asked
        assert_eq!(run("repeat(.)", &json!(1), 2).unwrap().len(), 2);
        assert!(truthy(
            &run(".n > 3 and .s == \"x\"", &json!({"n": 4, "s": "x"}), 1).unwrap()[0]
        ));
    }

    #[test]
    fn runtime_errors_are_reported_not_panicked() {
        let e = run(".a + 1", &json!({"a": "text"}), 1).unwrap_err();
        assert!(e.contains("text"), "{e}");
        let e = run("error(\"custom\")", &json!(null), 1).unwrap_err();
        assert!(e.contains("custom"), "{e}");
        // halt would exit the process: it is an error of the record instead
        let e = run("halt", &json!(null), 1).unwrap_err();
        assert!(e.contains("halt"), "{e}");
        let e = run("\"bye\" | halt_error", &json!(null), 1).unwrap_err();
        assert!(e.contains("halt"), "{e}");
    }

    #[test]
    fn compile_errors_name_their_place() {
        let errs = check(".a | nosuchfunction(1)").unwrap_err();
        assert_eq!(errs[0].offset, 5, "{errs:?}");
        assert!(errs[0].message.contains("nosuchfunction"), "{errs:?}");
        let errs = check("{a: }").unwrap_err();
        assert!(!errs.is_empty());
        assert!(check(".a | select(.b) | {c: .d}").is_ok());
    }
}
