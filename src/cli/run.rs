//! `flumen run --config FILE`: one thread per pipeline, SIGTERM/SIGINT to stop, a control
//! socket for savepoints and `flumen stop`.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;

use super::{exit, report_config_error};
use crate::checkpoint::savepoint::Savepoint;
use crate::config::Config;
use crate::pipeline::{self, ErrorKind, Inputs, Options, chain};
use crate::state::StateEnv;

/// How long pipelines get to finish their final checkpoint after SIGTERM.
const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(30);

pub fn run(path: &Path, options: Options, from_savepoint: Option<&Path>) -> u8 {
    let config = match crate::config::load(path) {
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
    match run_config(config, options, savepoints) {
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
    options: Options,
    mut savepoints: BTreeMap<String, Savepoint>,
) -> anyhow::Result<u8> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .thread_name("flumen-runtime")
        .build()
        .context("start the async runtime")?;
    let listener = {
        let _guard = runtime.enter();
        crate::control::bind(&config.state.dir)?
    };
    // one daemon per pipeline and writer: a second would fence this one and share its state
    let _locks = config
        .pipelines
        .iter()
        .map(|p| crate::control::lock_pipeline(&config.state.dir, &p.name, &p.transactional_id))
        .collect::<Result<Vec<_>, _>>()?;
    let env = Arc::new(StateEnv::new(&config.state));
    let cancel = CancellationToken::new();
    // one message per pipeline, so the capacity is the pipeline count
    let (done_tx, mut done_rx) = tokio::sync::mpsc::channel(config.pipelines.len().max(1));
    let mut threads = Vec::with_capacity(config.pipelines.len());
    let mut control = Vec::with_capacity(config.pipelines.len());
    for (index, pipeline) in config.pipelines.iter().enumerate() {
        // one control request at a time per pipeline
        let (command_tx, mut commands) = tokio::sync::mpsc::channel(1);
        control.push((pipeline.name.clone(), command_tx));
        let savepoint = savepoints.remove(&pipeline.name);
        let (config, env, cancel, handle, tx) = (
            config.clone(),
            env.clone(),
            cancel.clone(),
            runtime.handle().clone(),
            done_tx.clone(),
        );
        let thread = std::thread::Builder::new()
            .name(format!("pipeline-{}", pipeline.name))
            .spawn(move || {
                let pipeline = &config.pipelines[index];
                let inputs = Inputs {
                    config: &config,
                    pipeline,
                    env: &env,
                    options,
                    cancel,
                    runtime: handle,
                    savepoint,
                    progress: None,
                };
                // a panic not caught at a record ends the daemon non-zero, naming the pipeline
                let result = pipeline::catch_panic(|| pipeline::run(&inputs, &mut commands))
                    .unwrap_or_else(|m| Err(pipeline::Error::Panicked(m)));
                // the receiver only goes away when main is already exiting
                drop(tx.blocking_send((pipeline.name.clone(), result)));
            })
            .with_context(|| format!("spawn the thread of pipeline {}", pipeline.name))?;
        threads.push(thread);
    }
    drop(done_tx);
    let pipelines = config.pipelines.len();
    let control_stop = CancellationToken::new();
    let server = runtime.spawn(crate::control::serve(
        listener,
        control,
        control_stop.clone(),
    ));
    let code = runtime.block_on(async move {
        tokio::spawn(crate::shutdown::cancel_on_signal(cancel.clone()));
        let mut finished = 0;
        let mut code = exit::OK;
        let deadline = tokio::time::sleep(Duration::MAX.min(Duration::from_secs(u64::from(u32::MAX))));
        tokio::pin!(deadline);
        let mut deadline_armed = false;
        while finished < pipelines {
            tokio::select! {
                done = done_rx.recv() => {
                    let Some((name, result)) = done else { break };
                    finished += 1;
                    if let Err(e) = result {
                        eprintln!("error: pipeline {name}: {}", chain(&e));
                        if let pipeline::Error::Record { topic, partition, offset, .. } = &e {
                            eprintln!(
                                "hint: set on_error = \"skip\" or \"dead_letter\" for pipeline {name}, or move past the record \
                                 once the daemon is stopped: flumen offsets reset --config FILE --pipeline {name} \
                                 --topic {topic}:{partition} --to-offset {} --execute (with --drop-state for keyed state)",
                                offset + 1
                            );
                        }
                        code = code.max(match e.kind() {
                            ErrorKind::BadRecord => exit::BAD_RECORD,
                            ErrorKind::State => exit::STATE,
                            ErrorKind::Fatal | ErrorKind::Transient => exit::FAILURE,
                        });
                        cancel.cancel();
                    }
                }
                () = cancel.cancelled(), if !deadline_armed => {
                    deadline_armed = true;
                    deadline.as_mut().reset(tokio::time::Instant::now() + SHUTDOWN_DEADLINE);
                }
                () = &mut deadline, if deadline_armed => {
                    eprintln!("error: {} pipeline(s) still running {SHUTDOWN_DEADLINE:?} after shutdown began; exiting", pipelines - finished);
                    return Err(exit::FAILURE);
                }
            }
        }
        // let a `flumen stop` in progress receive its answer
        control_stop.cancel();
        drop(tokio::time::timeout(Duration::from_secs(5), server).await);
        Ok(code)
    });
    std::fs::remove_file(crate::control::socket_path(&config.state.dir)).ok();
    match code {
        Ok(code) => {
            // Every pipeline has reported; wait until its thread has also dropped what it
            // holds (its RocksDB stores, clients and its share of `env`), so that nothing
            // native is still being torn down while the process runs its exit handlers.
            for thread in threads {
                if thread.join().is_err() {
                    tracing::error!("a pipeline thread panicked while stopping");
                }
            }
            drop(env);
            Ok(code)
        }
        // a pipeline is stuck past the deadline: its thread cannot be joined
        Err(code) => Ok(code),
    }
}
