//! `flumen doctor --config FILE [--abort-hanging]`.

use crate::pipeline::custom::Operators;
use std::path::Path;

use super::offsets::with_inputs;
use super::{Output, exit, load_config, print_json};
use crate::kafka::admin::Admin;
use crate::tools::doctor::{self, Finding, Level};

pub fn run(ops: &Operators, config: &Path, abort_hanging: bool, output: Output) -> u8 {
    let cfg = match load_config(ops, config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let mut findings: Vec<Finding> = Vec::new();
    for (i, p) in cfg.pipelines.iter().enumerate() {
        let result = with_inputs(&cfg, ops, &p.name, |inputs| {
            let admin = Admin::new(&inputs.config.kafka, inputs.runtime.clone())?;
            let mut out = Vec::new();
            if i == 0 {
                out.push(doctor::transaction_timeout(inputs, &admin)?);
            }
            out.push(doctor::partition_counts(inputs, &admin)?);
            out.push(doctor::hanging_transactions(inputs, abort_hanging)?);
            Ok(out)
        });
        match result {
            Ok(f) => findings.extend(f),
            Err(e) => findings.push(Finding {
                level: Level::Problem,
                pipeline: Some(p.name.clone()),
                check: "doctor",
                message: format!("{e:#}"),
                action: None,
            }),
        }
    }
    let worst = findings.iter().map(|f| f.level).max().unwrap_or(Level::Ok);
    if output == Output::Json {
        print_json(&findings);
    } else {
        for f in &findings {
            let tag = match f.level {
                Level::Ok => "ok     ",
                Level::Warning => "WARNING",
                Level::Problem => "PROBLEM",
            };
            let scope = f
                .pipeline
                .as_deref()
                .map_or_else(String::new, |p| format!("[{p}] "));
            println!("{tag} {scope}{}: {}", f.check, f.message);
            if let Some(a) = &f.action {
                println!("        → {a}");
            }
        }
    }
    if worst == Level::Problem {
        exit::FAILURE
    } else {
        exit::OK
    }
}
