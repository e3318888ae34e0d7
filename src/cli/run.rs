//! `flumen run --config FILE`: one thread per pipeline, SIGTERM/SIGINT to stop.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;

use super::{exit, report_config_error};
use crate::config::Config;
use crate::pipeline::{self, ErrorKind, Options, chain};
use crate::state::StateEnv;

/// How long pipelines get to finish their final checkpoint after SIGTERM.
const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(30);

pub fn run(path: &Path, allow_empty_state: bool) -> u8 {
    let config = match crate::config::load(path) {
        Ok(c) => Arc::new(c),
        Err(e) => return report_config_error(&e),
    };
    // crash points for the recovery tests; inert unless built with --features failpoints
    let _failpoints = fail::FailScenario::setup();
    match run_config(config, Options { allow_empty_state }) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            exit::FAILURE
        }
    }
}

fn run_config(config: Arc<Config>, options: Options) -> anyhow::Result<u8> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .thread_name("flumen-runtime")
        .build()
        .context("start the async runtime")?;
    let env = Arc::new(StateEnv::new(&config.state));
    let cancel = CancellationToken::new();
    // one message per pipeline, so the capacity is the pipeline count
    let (done_tx, mut done_rx) = tokio::sync::mpsc::channel(config.pipelines.len().max(1));
    for (index, pipeline) in config.pipelines.iter().enumerate() {
        let (config, env, cancel, handle, tx) = (
            config.clone(),
            env.clone(),
            cancel.clone(),
            runtime.handle().clone(),
            done_tx.clone(),
        );
        std::thread::Builder::new()
            .name(format!("pipeline-{}", pipeline.name))
            .spawn(move || {
                let pipeline = &config.pipelines[index];
                let result = pipeline::run(&config, pipeline, &env, options, &cancel, &handle);
                // the receiver only goes away when main is already exiting
                drop(tx.blocking_send((pipeline.name.clone(), result)));
            })
            .with_context(|| format!("spawn the thread of pipeline {}", pipeline.name))?;
    }
    drop(done_tx);
    let pipelines = config.pipelines.len();
    runtime.block_on(async move {
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
                    return Ok(exit::FAILURE);
                }
            }
        }
        Ok(code)
    })
}
