//! `flumen stop`, `flumen savepoint trigger|create|list|inspect|delete`.

use crate::pipeline::custom::Operators;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;

use super::{Output, exit, load_config, print_json, time_of};
use crate::checkpoint::savepoint::{self, Savepoint};
use crate::control;
use crate::pipeline::chain;
use crate::pipeline::operator::state_to_json;

/// Takes the savepoint of `pipeline`: of a stopped one from the checkpoints the group's
/// commits name (`Runner::savepoint_offline`), of a running one by a cut while it runs
/// (`online`).
pub fn create(
    ops: &Operators,
    config: &Path,
    pipeline: &str,
    (dir, stop): (Option<PathBuf>, bool),
    output: Output,
) -> u8 {
    let cfg = match load_config(ops, config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if stop {
        return report(stop_then_save(&cfg, ops, pipeline, dir), output);
    }
    let running = super::offsets::with_inputs(&cfg, ops, pipeline, |inputs| {
        match crate::tools::reset::ensure_stopped(inputs) {
            Ok(()) => Ok(false),
            Err(crate::pipeline::Error::PipelineRunning(_)) => Ok(true),
            Err(e) => Err(e.into()),
        }
    });
    let taken = match running {
        Ok(false) => super::offsets::with_inputs(&cfg, ops, pipeline, |inputs| {
            Ok(crate::pipeline::Runner::savepoint_offline(inputs, dir)?)
        }),
        Ok(true) => online(&cfg, ops, pipeline, dir),
        Err(e) => Err(e),
    };
    report(taken, output)
}

fn report(taken: anyhow::Result<control::Taken>, output: Output) -> u8 {
    match taken {
        Ok(t) if output == Output::Json => print_json(&t),
        Ok(t) => {
            println!(
                "{}\tsavepoint {}\t({} keys, {} in-flight records)",
                t.pipeline,
                t.path.display(),
                t.keys,
                t.pending
            );
            exit::OK
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            super::offsets::code_of(&e)
        }
    }
}

/// `savepoint create --stop`: every instance is asked through the control topic to take a
/// final checkpoint and stop; once the group is empty the savepoint is written from its
/// commits, and the request is ended (an instance started later goes on).
fn stop_then_save(
    cfg: &crate::config::Config,
    ops: &Operators,
    pipeline: &str,
    dir: Option<PathBuf>,
) -> anyhow::Result<control::Taken> {
    let group = &cfg
        .pipelines
        .iter()
        .find(|p| p.name == pipeline)
        .ok_or_else(|| anyhow::anyhow!("no pipeline {pipeline:?} in the config"))?
        .group_id;
    let id = crate::pipeline::request_stop(&cfg.kafka, group)?;
    let spinner = indicatif::ProgressBar::new_spinner().with_message(
        "waiting for every instance to stop (static members leave at their session timeout)",
    );
    spinner.enable_steady_tick(Duration::from_millis(120));
    let wait = crate::kafka::client::session_timeout(&cfg.kafka) + Duration::from_secs(60);
    let taken = super::offsets::with_inputs(cfg, ops, pipeline, |inputs| {
        crate::tools::reset::wait_until_stopped(inputs, wait)?;
        spinner.finish_and_clear();
        Ok(crate::pipeline::Runner::savepoint_offline(inputs, dir)?)
    });
    spinner.finish_and_clear();
    if let Err(e) = crate::pipeline::end_stop(&cfg.kafka, group, &id) {
        eprintln!(
            "warning: could not end the stop request ({e}); an instance started within a minute stops again"
        );
    }
    taken
}

/// The savepoint of `pipeline` while its instances run (`Runner::savepoint_online`), taken as
/// an observer: a writer id and a state directory of its own (deleted after), so that nothing
/// of a daemon on this machine is touched.
fn online(
    cfg: &crate::config::Config,
    ops: &Operators,
    pipeline: &str,
    dir: Option<PathBuf>,
) -> anyhow::Result<control::Taken> {
    let mut observer = cfg.clone();
    let own = format!("savepoint-{}", std::process::id());
    observer.state.dir = cfg.state.dir.join(format!(".{own}"));
    for p in &mut observer.pipelines {
        p.transactional_id = format!("{}-{own}", p.transactional_id);
    }
    let taken = super::offsets::with_inputs(&observer, ops, pipeline, |inputs| {
        Ok(crate::pipeline::Runner::savepoint_online(inputs, dir)?)
    });
    if let Err(e) = std::fs::remove_dir_all(&observer.state.dir)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        eprintln!(
            "warning: cannot delete {}: {e}",
            observer.state.dir.display()
        );
    }
    taken
}

/// Asks the daemon of `config` for a savepoint of every pipeline, or of `pipeline` (and to
/// stop after it): over the admin API when `[admin]` has a token, else the control socket.
pub fn trigger(
    ops: &Operators,
    config: &Path,
    (dir, pipeline): (Option<PathBuf>, Option<String>),
    stop: bool,
    timeout: Duration,
    output: Output,
) -> u8 {
    let cfg = match load_config(ops, config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    // the daemon may run in another directory: make a relative target absolute here
    let dir = dir.map(|d| std::path::absolute(&d).unwrap_or(d));
    let request = control::Request {
        dir,
        stop,
        pipeline,
    };
    // the daemon answers once every savepoint is durable and committed
    let spinner = indicatif::ProgressBar::new_spinner().with_message("waiting for the savepoints");
    spinner.enable_steady_tick(Duration::from_millis(120));
    let answer = match cfg.admin.as_ref().filter(|a| a.token.is_some()) {
        Some(admin) => {
            crate::admin::client::savepoints(admin, &request, timeout).map_err(|e| chain(&e))
        }
        None => control::request(&cfg.state.dir, &request, timeout).map_err(|e| chain(&e)),
    };
    spinner.finish_and_clear();
    let response = match answer {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::FAILURE;
        }
    };
    if output == Output::Json {
        print_json(&response);
    }
    for t in response
        .savepoints
        .iter()
        .filter(|_| output == Output::Text)
    {
        println!(
            "{}\tsavepoint {}\t(checkpoint {}, {} keys, {} in-flight records)",
            t.pipeline,
            t.path.display(),
            t.checkpoint,
            t.keys,
            t.pending
        );
    }
    for e in &response.errors {
        eprintln!("error: {e}");
    }
    if !response.errors.is_empty() {
        return exit::FAILURE;
    }
    if stop {
        eprintln!("the daemon stops now that every pipeline has taken its savepoint");
    }
    exit::OK
}

pub fn list(ops: &Operators, config: Option<&Path>, dir: Option<&Path>, output: Output) -> u8 {
    let root = match (dir, config) {
        (Some(d), _) => d.to_path_buf(),
        (None, Some(c)) => match load_config(ops, c) {
            Ok(cfg) => cfg.checkpoint.savepoint_dir,
            Err(code) => return code,
        },
        (None, None) => return exit::CONFIG,
    };
    let found = savepoint::list(&root);
    if output == Output::Json {
        let items: Vec<_> = found
            .iter()
            .map(|(path, r)| match r {
                Ok(sp) => json!({"path": path, "manifest": sp.manifest, "keys": sp.manifest.keys(), "bytes": sp.manifest.bytes()}),
                Err(e) => json!({"path": path, "error": chain(e)}),
            })
            .collect();
        return print_json(&items);
    }
    if found.is_empty() {
        println!("no savepoints under {}", root.display());
        return exit::OK;
    }
    println!(
        "{:<24}  {:<16}  {:>10}  {:>10}  {:>12}  PATH",
        "CREATED", "PIPELINE", "CHECKPOINT", "KEYS", "BYTES"
    );
    for (path, r) in &found {
        match r {
            Ok(sp) => {
                let m = &sp.manifest;
                println!(
                    "{:<24}  {:<16}  {:>10}  {:>10}  {:>12}  {}",
                    time_of(m.created_unix_ms),
                    m.pipeline,
                    m.checkpoint,
                    m.keys(),
                    m.bytes(),
                    path.display()
                );
            }
            Err(e) => println!("{:<24}  unreadable: {}  {}", "-", chain(e), path.display()),
        }
    }
    exit::OK
}

pub fn inspect(path: &Path, key: Option<&str>, output: Output) -> u8 {
    let sp = match Savepoint::open(path, None) {
        Ok(sp) => sp,
        Err(e) => {
            eprintln!("error: {}", chain(&e));
            return exit::STATE;
        }
    };
    let verified = sp.verify().map_err(|e| chain(&e));
    let found = match key.map(|k| find_key(&sp, k.as_bytes())) {
        None => None,
        Some(Ok(v)) => Some(v),
        Some(Err(e)) => {
            eprintln!("error: {}", chain(&e));
            return exit::STATE;
        }
    };
    if output == Output::Json {
        let mut v = json!({
            "path": sp.dir,
            "manifest": sp.manifest,
            "keys": sp.manifest.keys(),
            "bytes": sp.manifest.bytes(),
            "verified": verified.is_ok(),
        });
        if let Err(e) = &verified {
            v["verify_error"] = json!(e);
        }
        if let (Some(k), Some(found)) = (key, &found) {
            v["key"] = json!({"key": k, "state": found.iter().map(|(op, p, s)| json!({"operator": op, "partition": p, "value": s})).collect::<Vec<_>>()});
        }
        let code = print_json(&v);
        return if verified.is_err() { exit::STATE } else { code };
    }
    let m = &sp.manifest;
    println!("savepoint   {}", sp.dir.display());
    println!(
        "pipeline    {} (Flumen {}, format {})",
        m.pipeline, m.flumen_version, m.format_version
    );
    println!("created     {}", time_of(m.created_unix_ms));
    println!("checkpoint  {}", m.checkpoint);
    println!(
        "source      {} ({} partitions)",
        m.source_topic, m.source_partitions
    );
    print_offsets(&m.offsets);
    if let Some(other) = &m.other_stream {
        println!("joined      {} (the other stream of a join)", other.topic);
        print_offsets(&other.offsets);
    }
    println!("state       {} keyed partitions", m.state_partitions);
    println!(
        "  {:<16}  {:<8}  {:>9}  {:>10}  {:>12}",
        "OPERATOR", "KIND", "PARTITION", "KEYS", "BYTES"
    );
    for op in &m.operators {
        if op.files.is_empty() {
            println!(
                "  {:<16}  {:<8}  {:>9}  {:>10}  {:>12}",
                op.id, op.kind, "-", 0, 0
            );
        }
        for f in &op.files {
            println!(
                "  {:<16}  {:<8}  {:>9}  {:>10}  {:>12}",
                op.id, op.kind, f.partition, f.entries, f.len
            );
        }
    }
    let pending: u64 = m.pending.iter().map(|f| f.entries).sum();
    println!("in flight   {pending} repartition records");
    println!("total       {} keys, {} bytes", m.keys(), m.bytes());
    if let (Some(k), Some(found)) = (key, &found) {
        if found.is_empty() {
            println!("key {k:?}: no state");
        }
        for (op, p, value) in found {
            println!("key {k:?}: operator {op} (partition {p}) = {value}");
        }
    }
    match verified {
        Ok(()) => {
            println!("checksums   ok");
            exit::OK
        }
        Err(e) => {
            println!("checksums   FAILED: {e}");
            exit::STATE
        }
    }
}

fn print_offsets(offsets: &[crate::checkpoint::savepoint::SourceOffset]) {
    println!("  {:>9}  NEXT OFFSET", "PARTITION");
    for o in offsets {
        let off = o
            .next_offset
            .map_or_else(|| "beginning".to_string(), |n| n.to_string());
        println!("  {:>9}  {off}", o.partition);
    }
}

/// (operator, partition, value as JSON) of `key` in every operator.
fn find_key(
    sp: &Savepoint,
    key: &[u8],
) -> savepoint::Result<Vec<(String, i32, serde_json::Value)>> {
    let mut found = Vec::new();
    for op in &sp.manifest.operators {
        sp.read_state(&op.id, |partition, k, v| {
            if k == key {
                let value =
                    state_to_json(&op.kind, v).unwrap_or_else(|| json!(format!("{v:02x?}")));
                found.push((op.id.clone(), partition, value));
            }
            Ok(())
        })?;
    }
    Ok(found)
}

pub fn delete(path: &Path, output: Output) -> u8 {
    match savepoint::delete(path) {
        Ok(()) if output == Output::Json => print_json(&json!({"deleted": path})),
        Ok(()) => {
            println!("deleted savepoint {}", path.display());
            exit::OK
        }
        Err(e) => {
            eprintln!("error: {}", chain(&e));
            exit::FAILURE
        }
    }
}
