//! `flumen validate --config FILE`: parse and validate, no network, every problem at once.

use crate::pipeline::custom::Operators;
use std::path::Path;

use super::{exit, report_config_error};

pub fn run(ops: &Operators, path: &Path) -> u8 {
    match crate::config::load(path, &ops.names()) {
        Ok(config) => {
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
        Err(e) => report_config_error(&e),
    }
}
