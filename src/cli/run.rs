//! `flumen run --config FILE`: the config and savepoints loaded and checked, then the daemon
//! (`daemon::run`: one thread per pipeline, SIGTERM/SIGINT to stop, a control socket for
//! savepoints and `flumen stop`); its end becomes the exit code.

use crate::pipeline::custom::Operators;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::{exit, report_config_error};
use crate::checkpoint::savepoint::Savepoint;
use crate::config::Config;
use crate::daemon;
use crate::pipeline::{self, ErrorKind, Options, chain};

pub fn run(ops: &Operators, path: &Path, options: Options, from_savepoint: Option<&Path>) -> u8 {
    let config = match crate::config::load(path, &ops.names()) {
        Ok(c) => Arc::new(c),
        Err(e) => return report_config_error(&e),
    };
    // every savepoint is read and verified before anything touches Kafka
    let savepoints = match from_savepoint.map(|dir| load_savepoints(&config, dir)) {
        None => BTreeMap::new(),
        Some(Ok(s)) => s,
        Some(Err(message)) => {
            eprintln!("error: {message}");
            return exit::STATE;
        }
    };
    // crash points for the recovery tests; inert unless built with --features failpoints
    let _failpoints = fail::FailScenario::setup();
    match run_config(config, ops, options, savepoints) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            exit::FAILURE
        }
    }
}

fn load_savepoints(config: &Config, dir: &Path) -> Result<BTreeMap<String, Savepoint>, String> {
    let mut out = BTreeMap::new();
    for p in &config.pipelines {
        let sp = Savepoint::open(dir, Some(&p.name))
            .and_then(|sp| sp.verify().map(|()| sp))
            .map_err(|e| format!("pipeline {}: {}", p.name, chain(&e)))?;
        if sp.manifest.pipeline != p.name {
            if config.pipelines.len() > 1 {
                return Err(format!(
                    "pipeline {}: {} is the savepoint of pipeline {:?}",
                    p.name,
                    sp.dir.display(),
                    sp.manifest.pipeline
                ));
            }
            tracing::warn!(savepoint = %sp.dir.display(), taken_by = %sp.manifest.pipeline, pipeline = %p.name, "restoring a savepoint of another pipeline name");
        }
        out.insert(p.name.clone(), sp);
    }
    Ok(out)
}

fn run_config(
    config: Arc<Config>,
    ops: &Operators,
    options: Options,
    savepoints: BTreeMap<String, Savepoint>,
) -> anyhow::Result<u8> {
    let report = |name: &str, e: &pipeline::Error| {
        eprintln!("error: pipeline {name}: {}", chain(e));
        if let pipeline::Error::Record {
            topic,
            partition,
            offset,
            ..
        } = e
        {
            eprintln!(
                "hint: set on_error = \"skip\" or \"dead_letter\" for pipeline {name}, or move past the record \
                 once the daemon is stopped: flumen offsets reset --config FILE --pipeline {name} \
                 --topic {topic}:{partition} --to-offset {} --execute (with --drop-state for keyed state)",
                offset + 1
            );
        }
    };
    let deadline = config.shutdown_timeout;
    let stopped = daemon::run(
        config,
        ops,
        options,
        savepoints,
        CancellationToken::new(),
        report,
    )?;
    // the failures' own codes first: a stop cut short does not hide a bad record's 4
    let failed = stopped
        .failed
        .iter()
        .map(|(_, e)| match e.kind() {
            ErrorKind::BadRecord => exit::BAD_RECORD,
            ErrorKind::State => exit::STATE,
            ErrorKind::Fatal | ErrorKind::Transient => exit::FAILURE,
        })
        .max();
    if stopped.interrupted {
        eprintln!(
            "error: a second signal: exiting at once; {} pipeline(s) took no final checkpoint and resume from their last",
            stopped.stuck
        );
        return Ok(failed.unwrap_or(exit::FAILURE).max(exit::FAILURE));
    }
    if let Some(stuck) = &stopped.stuck_thread {
        eprintln!(
            "error: {stuck}; exiting so that a supervisor starts the daemon again (each pipeline \
             resumes from its last checkpoint)"
        );
        return Ok(failed.unwrap_or(exit::FAILURE).max(exit::FAILURE));
    }
    if stopped.stuck > 0 {
        eprintln!(
            "error: {} pipeline(s) still running {:?} after shutdown began (shutdown_timeout): {}; exiting",
            stopped.stuck,
            deadline,
            stopped.unfinished.join("; ")
        );
        return Ok(failed.unwrap_or(exit::FAILURE).max(exit::FAILURE));
    }
    Ok(failed.unwrap_or(exit::OK))
}
