//! The daemon, as mini-redis's `server::run(listener, shutdown)` and Vector's topology have
//! one: a thread per pipeline, the control socket, and a shutdown with a deadline. `cli/run.rs`
//! loads the config and the savepoints, calls [`run`], and turns what it returns into an exit
//! code and messages.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::checkpoint::savepoint::Savepoint;
use crate::config::{Config, PipelineConfig};
use crate::pipeline::custom::Operators;
use crate::pipeline::{self, Inputs, Options};
use crate::state::StateEnv;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("start the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
    #[error(transparent)]
    Control(#[from] crate::control::Error),
    #[error(transparent)]
    Admin(#[from] crate::admin::Error),
    #[error(
        "pipeline {pipeline}: restoring a savepoint into parallelism = {parallelism} is not supported yet; \
         restore it with parallelism = 1, then raise parallelism (the threads take their partitions \
         from the checkpoints)"
    )]
    SavepointIntoThreads { pipeline: String, parallelism: u32 },
    #[error("spawn the thread of pipeline {pipeline}: {source}")]
    Spawn {
        pipeline: String,
        #[source]
        source: std::io::Error,
    },
}

/// How the daemon ended.
#[derive(Debug, Default)]
pub struct Stopped {
    /// The pipelines that failed, in the order they did, each with its error (also handed to
    /// `on_failure` as it happened). The first failure stops the others.
    pub failed: Vec<(String, pipeline::Error)>,
    /// Pipelines still running `shutdown_timeout` after shutdown began, or at a second
    /// signal (their threads are left behind), and which threads those were, as far as their
    /// health tells (`metrics::health::unfinished`).
    pub stuck: usize,
    pub unfinished: Vec<String>,
    /// A second SIGTERM or SIGINT ended the wait.
    pub interrupted: bool,
    /// A pipeline thread that did not come round its loop within `stuck_timeout` (which
    /// thread, for how long): the daemon stopped the others and gives up, so that its
    /// supervisor starts it again and every pipeline resumes from its last checkpoint.
    pub stuck_thread: Option<String>,
}

/// Runs every pipeline of `config` until `shutdown` (also cancelled by SIGTERM and SIGINT), a
/// `flumen stop`, or a pipeline's failure; then waits, at most `shutdown_timeout`, for the
/// others to finish their final checkpoint. `on_failure` hears of each pipeline's failure as
/// it happens.
pub fn run(
    config: Arc<Config>,
    operators: &Operators,
    options: Options,
    savepoints: BTreeMap<String, Savepoint>,
    shutdown: CancellationToken,
    on_failure: impl FnMut(&str, &pipeline::Error) + Send,
) -> Result<Stopped, Error> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .thread_name("flumen-runtime")
        .build()
        .map_err(Error::Runtime)?;
    let listener = {
        let _guard = runtime.enter();
        crate::control::bind(&config.state.dir)?
    };
    if let Some(p) = config
        .pipelines
        .iter()
        .find(|p| p.parallelism > 1 && savepoints.contains_key(&p.name))
    {
        return Err(Error::SavepointIntoThreads {
            pipeline: p.name.clone(),
            parallelism: p.parallelism,
        });
    }
    // one daemon per pipeline thread's writer: a second would fence it and share its state
    let _locks = config
        .pipelines
        .iter()
        .flat_map(PipelineConfig::threads)
        .map(|p| crate::control::lock_pipeline(&config.state.dir, &p.name, &p.transactional_id))
        .collect::<Result<Vec<_>, _>>()?;
    let admin = config
        .admin
        .as_ref()
        .map(|a| runtime.block_on(crate::admin::Listener::bind(a)))
        .transpose()?;
    let metrics = Arc::new(crate::metrics::Metrics::default());
    let env = Arc::new(StateEnv::new(&config.state));
    let shared = Shared {
        config: &config,
        env: &env,
        operators,
        metrics: &metrics,
    };
    let pipelines = Pipelines::spawn(&shared, options, savepoints, &shutdown, &runtime)?;
    let Pipelines {
        threads,
        control,
        done: done_rx,
    } = pipelines;
    let control_stop = CancellationToken::new();
    let admin_server = admin.map(|listener| {
        let served = crate::admin::Served {
            metrics: metrics.clone(),
            pipelines: control.clone(),
            interval: config.checkpoint.interval,
        };
        serve_admin(&runtime, listener, &config, served, &control_stop)
    });
    let server = runtime.spawn(crate::control::serve(
        listener,
        control,
        control_stop.clone(),
    ));
    let pipelines = threads.len();
    let shutdown_timeout = config.shutdown_timeout;
    let stuck_timeout = config.stuck_timeout;
    let servers = [Some(server), admin_server];
    let stopped = runtime.block_on(async move {
        let now = CancellationToken::new();
        tokio::spawn(crate::shutdown::cancel_on_signal(
            shutdown.clone(),
            now.clone(),
        ));
        let ends = Ends {
            pipelines,
            threads: metrics.threads(),
            stuck_timeout,
            deadline: shutdown_timeout,
            shutdown: &shutdown,
            now: &now,
        };
        let stopped = wait_for_pipelines(ends, done_rx, on_failure).await;
        control_stop.cancel();
        if !stopped.interrupted {
            drain(servers).await;
        }
        stopped
    });
    std::fs::remove_file(crate::control::socket_path(&config.state.dir)).ok();
    if stopped.stuck == 0 {
        // Every pipeline has reported; wait until its thread has also dropped what it holds
        // (its RocksDB stores, clients and its share of `env`), so that nothing native is
        // still being torn down while the process runs its exit handlers; but not for ever:
        // the final checkpoints are committed, and a client that does not close must not turn
        // a clean stop into a failed one (CHAOS.md, finding 16).
        join_within(threads, shutdown_timeout);
    }
    Ok(stopped)
}

/// Joins `threads` within `limit`, naming in a warning those still tearing down by then (they
/// are left to the process's exit).
fn join_within(threads: Vec<std::thread::JoinHandle<()>>, limit: Duration) {
    let began = std::time::Instant::now();
    while began.elapsed() < limit && threads.iter().any(|t| !t.is_finished()) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let (done, left): (Vec<_>, Vec<_>) = threads.into_iter().partition(|t| t.is_finished());
    for thread in done {
        if thread.join().is_err() {
            tracing::error!("a pipeline thread panicked while stopping");
        }
    }
    let names: Vec<String> = left
        .iter()
        .map(|t| t.thread().name().unwrap_or("a pipeline thread").to_string())
        .collect();
    if !names.is_empty() {
        tracing::warn!(threads = ?names, limit = ?limit, "every pipeline stopped, but these threads are still tearing down their clients or state; exiting without them");
    }
}

/// Lets a `flumen stop` in progress receive its answer: each server's task, at most 5 s.
async fn drain(servers: [Option<tokio::task::JoinHandle<()>>; 2]) {
    for server in servers.into_iter().flatten() {
        drop(tokio::time::timeout(Duration::from_secs(5), server).await);
    }
}

/// The admin listener's task, until `stop`.
fn serve_admin(
    runtime: &tokio::runtime::Runtime,
    listener: crate::admin::Listener,
    config: &Config,
    served: crate::admin::Served,
    stop: &CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tracing::info!(address = ?listener.local_addr(), "admin listener: /, /metrics, /livez, /readyz, /api/v1");
    let cfg = config.admin.clone();
    let stop = stop.clone();
    runtime.spawn(async move {
        if let Some(cfg) = cfg {
            crate::admin::serve(listener, &cfg, served, stop).await;
        }
    })
}

/// What every pipeline thread shares.
#[derive(Clone, Copy)]
struct Shared<'a> {
    config: &'a Arc<Config>,
    env: &'a Arc<StateEnv>,
    operators: &'a Operators,
    metrics: &'a crate::metrics::Metrics,
}

/// The pipelines' threads, their control channels, and where they report their end.
struct Pipelines {
    threads: Vec<std::thread::JoinHandle<()>>,
    control: Vec<(String, tokio::sync::mpsc::Sender<crate::control::Command>)>,
    done: tokio::sync::mpsc::Receiver<(String, pipeline::Result<()>)>,
}

impl Pipelines {
    /// One thread per pipeline thread (`pipeline-<name>`, `pipeline-<name>-<k>`), each running
    /// `pipeline::run` (thread 0 with the pipeline's savepoint, if any) and reporting its end.
    fn spawn(
        shared: &Shared<'_>,
        options: Options,
        mut savepoints: BTreeMap<String, Savepoint>,
        shutdown: &CancellationToken,
        runtime: &tokio::runtime::Runtime,
    ) -> Result<Self, Error> {
        let Shared {
            config,
            env,
            operators,
            metrics,
        } = *shared;
        let all: Vec<PipelineConfig> = config
            .pipelines
            .iter()
            .flat_map(PipelineConfig::threads)
            .collect();
        // one message per thread, so the capacity is the thread count
        let (done_tx, done) = tokio::sync::mpsc::channel(all.len().max(1));
        let mut threads = Vec::with_capacity(all.len());
        let mut control = Vec::with_capacity(config.pipelines.len());
        for pipeline in all {
            // one control request at a time per pipeline, heard by its thread 0 (savepoints
            // of several threads are refused there)
            let (command_tx, mut commands) = tokio::sync::mpsc::channel(1);
            let name = match pipeline.thread {
                0 => {
                    control.push((pipeline.name.clone(), command_tx));
                    format!("pipeline-{}", pipeline.name)
                }
                k => format!("pipeline-{}-{k}", pipeline.name),
            };
            let savepoint = savepoints.remove(&pipeline.name);
            let label = format!("{} (thread {})", pipeline.name, pipeline.thread);
            let operators = operators.clone();
            let thread_metrics =
                metrics.pipeline(&pipeline.name, pipeline.thread, config.checkpoint.interval);
            let (config, env, cancel, handle, tx) = (
                config.clone(),
                env.clone(),
                shutdown.clone(),
                runtime.handle().clone(),
                done_tx.clone(),
            );
            let spawned = std::thread::Builder::new().name(name).spawn(move || {
                let inputs = Inputs {
                    config: &config,
                    pipeline: &pipeline,
                    env: &env,
                    options,
                    cancel,
                    runtime: handle,
                    savepoint,
                    progress: None,
                    operators: &operators,
                    metrics: &thread_metrics,
                };
                // the receiver only goes away when the daemon is already exiting
                let mut reported = false;
                let report = |result| {
                    reported = true;
                    drop(tx.blocking_send((pipeline.name.clone(), result)));
                };
                // a panic not caught at a record ends the daemon non-zero, naming the pipeline
                if let Err(m) = pipeline::catch_panic(|| pipeline::run(&inputs, &mut commands, report)) {
                    if reported {
                        tracing::error!(pipeline = %pipeline.name, "the pipeline's teardown panicked: {m}");
                    } else {
                        drop(tx.blocking_send((pipeline.name.clone(), Err(pipeline::Error::Panicked(m)))));
                    }
                }
            });
            threads.push(spawned.map_err(|source| Error::Spawn {
                pipeline: label,
                source,
            })?);
        }
        drop(done_tx);
        Ok(Self {
            threads,
            control,
            done,
        })
    }
}

/// What the daemon waits for at the end: its pipelines, within `deadline` once `shutdown`
/// began, or until `now`; meanwhile it watches each thread's heartbeat (`threads`) for one
/// stuck longer than `stuck_timeout`.
struct Ends<'a> {
    pipelines: usize,
    threads: Vec<Arc<crate::metrics::Health>>,
    stuck_timeout: Duration,
    deadline: Duration,
    shutdown: &'a CancellationToken,
    now: &'a CancellationToken,
}

/// Collects every pipeline's end; the first failure, or the first thread stuck past
/// `ends.stuck_timeout`, cancels the others, and once shutdown began they have `ends.deadline`
/// (none after a second signal).
async fn wait_for_pipelines(
    ends: Ends<'_>,
    mut done: tokio::sync::mpsc::Receiver<(String, pipeline::Result<()>)>,
    mut on_failure: impl FnMut(&str, &pipeline::Error),
) -> Stopped {
    let Ends {
        pipelines,
        threads,
        stuck_timeout,
        deadline: grace,
        shutdown,
        now,
    } = ends;
    let mut stopped = Stopped::default();
    let mut finished = 0;
    let deadline = tokio::time::sleep(Duration::from_secs(u64::from(u32::MAX)));
    tokio::pin!(deadline);
    let mut deadline_armed = false;
    let mut watch = tokio::time::interval(Duration::from_secs(1));
    watch.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while finished < pipelines {
        tokio::select! {
            end = done.recv() => {
                let Some((name, result)) = end else { break };
                finished += 1;
                if let Err(e) = result {
                    on_failure(&name, &e);
                    stopped.failed.push((name, e));
                    shutdown.cancel();
                }
            }
            () = shutdown.cancelled(), if !deadline_armed => {
                deadline_armed = true;
                deadline.as_mut().reset(tokio::time::Instant::now() + grace);
            }
            () = &mut deadline, if deadline_armed => {
                stopped.stuck = pipelines - finished;
                stopped.unfinished = crate::metrics::health::unfinished(&threads);
                break;
            }
            _ = watch.tick(), if stopped.stuck_thread.is_none() => {
                // a thread stuck in a call that never returns cannot be stopped or restarted
                // from here; only a new process frees what it holds
                if let Some(stuck) = crate::metrics::health::stuck(&threads, stuck_timeout) {
                    tracing::error!("{stuck}: giving up on the daemon so that it starts again");
                    stopped.stuck_thread = Some(stuck);
                    shutdown.cancel();
                }
            }
            () = now.cancelled() => {
                stopped.stuck = pipelines - finished;
                stopped.unfinished = crate::metrics::health::unfinished(&threads);
                stopped.interrupted = true;
                break;
            }
        }
    }
    stopped
}
