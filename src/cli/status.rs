//! `flumen status --config FILE`: what the daemon's admin listener says of its pipelines
//! (`GET /api/v1/status`), as a table or as JSON.

use std::path::Path;

use super::{Output, exit, load_config, print_json};
use crate::pipeline::custom::Operators;

pub fn run(ops: &Operators, config: &Path, output: Output) -> u8 {
    let cfg = match load_config(ops, config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let Some(admin) = &cfg.admin else {
        eprintln!(
            "error: {} has no [admin] listen: status is read from the daemon's HTTP listener",
            config.display()
        );
        return exit::CONFIG;
    };
    let status = match crate::admin::client::status(admin) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {}", crate::pipeline::chain(&e));
            return exit::FAILURE;
        }
    };
    if output == Output::Json {
        return print_json(&status);
    }
    for t in &status.pipelines {
        let verdict = |ok: bool, reason: &Option<String>| {
            if ok {
                "yes".to_string()
            } else {
                format!("no ({})", reason.as_deref().unwrap_or(""))
            }
        };
        println!(
            "{} thread {}: {}; live {}; ready {}; {} records committed; {} restarts",
            t.pipeline,
            t.thread,
            t.phase,
            verdict(t.live.ok, &t.live.reason),
            verdict(t.ready.ok, &t.ready.reason),
            t.status.records_committed,
            t.status.restarts
        );
        println!(
            "  {:<40}  {:>9}  {:>10}  {:>10}  {:>8}  {:>12}",
            "TOPIC", "PARTITION", "POSITION", "COMMITTED", "LAG", "STATE-BYTES"
        );
        for p in &t.status.partitions {
            let n = |k: &str| {
                p[k].as_i64()
                    .map_or_else(|| "-".to_string(), |v| v.to_string())
            };
            println!(
                "  {:<40}  {:>9}  {:>10}  {:>10}  {:>8}  {:>12}",
                p["topic"].as_str().unwrap_or_default(),
                n("partition"),
                n("position"),
                n("committed"),
                n("lag"),
                n("state_bytes")
            );
        }
        if let Some(e) = &t.status.last_error {
            println!("  last error: {e}");
        }
    }
    exit::OK
}
