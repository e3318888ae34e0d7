//! `flumen validate --config FILE`: parse and validate, no network, every problem at once.

use crate::pipeline::custom::Operators;
use std::path::Path;

use super::{Output, exit, print_json, report_config_error};

pub fn run(ops: &Operators, path: &Path, output: Output) -> u8 {
    match (crate::config::load(path, &ops.names()), output) {
        (Ok(config), Output::Json) => json(path, &config),
        (Err(crate::config::Error::Invalid { problems, .. }), Output::Json) => {
            print_json(&serde_json::json!({"config": path, "ok": false, "problems": problems}));
            exit::CONFIG
        }
        (Ok(config), Output::Text) => {
            println!(
                "{}: ok ({} pipeline(s))",
                path.display(),
                config.pipelines.len()
            );
            for p in &config.pipelines {
                let repartition = p
                    .repartition_topic()
                    .map_or_else(String::new, |t| format!(" via {t}"));
                println!(
                    "  {}: {} -> {}{repartition} (group {}, transactional id {})",
                    p.name, p.source.topic, p.sink.topic, p.group_id, p.transactional_id
                );
            }
            // relative paths start at the config file's directory: show where they lead
            let cp = &config.checkpoint;
            match &cp.remote {
                Some(remote) => println!(
                    "  checkpoints: {} (local copies: {})",
                    remote.url,
                    cp.dir.display()
                ),
                None => println!("  checkpoints: {}", cp.dir.display()),
            }
            println!("  savepoints: {}", cp.savepoint_dir.display());
            println!("  state: {}", config.state.dir.display());
            for (id, file) in &config.schemas.files {
                println!("  schema {id}: {}", file.display());
            }
            if let Some(admin) = &config.admin {
                println!("  admin: http://{}", admin.listen);
            }
            exit::OK
        }
        (Err(e), _) => report_config_error(&e),
    }
}

/// The validated config's pipelines and the paths it leads to, as JSON.
fn json(path: &Path, config: &crate::config::Config) -> u8 {
    let pipelines: Vec<_> = config
        .pipelines
        .iter()
        .map(|p| {
            serde_json::json!({
                "name": p.name, "source": p.source.topic, "sink": p.sink.topic,
                "repartition_topic": p.repartition_topic(), "group_id": p.group_id,
                "transactional_id": p.transactional_id, "parallelism": p.parallelism,
            })
        })
        .collect();
    let cp = &config.checkpoint;
    print_json(&serde_json::json!({
        "config": path,
        "ok": true,
        "pipelines": pipelines,
        "checkpoints": cp.remote.as_ref().map_or_else(|| cp.dir.display().to_string(), |r| r.url.clone()),
        "local_checkpoints": cp.dir,
        "savepoints": cp.savepoint_dir,
        "state": config.state.dir,
        "schemas": config.schemas.files,
        "admin": config.admin.as_ref().map(|a| a.listen.to_string()),
    }))
}
