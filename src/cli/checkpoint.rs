//! `flumen checkpoint list|inspect`: read-only views of the checkpoint store (a directory or
//! an object store: `checkpoint::catalog`).

use crate::pipeline::custom::Operators;
use std::path::Path;

use serde_json::json;

use super::{Output, exit, load_config, print_json, time_of};
use crate::checkpoint::catalog::Catalog;
use crate::checkpoint::{CheckpointId, Manifest};
use crate::pipeline::chain;

fn bytes_of(m: &Manifest) -> u64 {
    m.tasks.iter().flat_map(|t| &t.files).map(|f| f.len).sum()
}

/// One checkpoint as `checkpoint list` shows it.
struct Row {
    pipeline: String,
    writer: String,
    id: CheckpointId,
    /// The local hint; `None` in an object store, which keeps none.
    committed: Option<bool>,
    manifest: crate::checkpoint::catalog::Result<Manifest>,
}

/// A runtime for the object store's client, whose futures this thread waits for.
fn runtime() -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
    {
        Ok(r) => Some(r),
        Err(e) => {
            eprintln!("error: start the async runtime: {e}");
            None
        }
    }
}

fn committed_word(hint: Option<bool>) -> &'static str {
    match hint {
        Some(true) => "yes",
        Some(false) => "unknown",
        None => "-",
    }
}

pub fn list(ops: &Operators, config: &Path, pipeline: Option<&str>, output: Output) -> u8 {
    let cfg = match load_config(ops, config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let Some(runtime) = runtime() else {
        return exit::FAILURE;
    };
    let mut rows = Vec::new();
    for p in cfg
        .pipelines
        .iter()
        .filter(|p| pipeline.is_none_or(|n| n == p.name))
    {
        let listed = Catalog::open(&cfg.checkpoint, &p.name, runtime.handle()).and_then(|c| {
            let mut found = Vec::new();
            for writer in c.writers()? {
                for id in c.list(&writer)? {
                    found.push(Row {
                        pipeline: p.name.clone(),
                        writer: writer.clone(),
                        id,
                        committed: c.committed_hint(&writer, id),
                        manifest: c.manifest(&writer, id),
                    });
                }
            }
            Ok(found)
        });
        match listed {
            Ok(found) => rows.extend(found),
            Err(e) => {
                eprintln!("error: {}", chain(&e));
                return exit::FAILURE;
            }
        }
    }
    if output == Output::Json {
        let items: Vec<_> = rows
            .iter()
            .map(|r| match &r.manifest {
                Ok(m) => json!({"pipeline": r.pipeline, "writer": r.writer, "checkpoint": r.id, "committed_hint": r.committed, "bytes": bytes_of(m), "manifest": m}),
                Err(e) => json!({"pipeline": r.pipeline, "writer": r.writer, "checkpoint": r.id, "error": chain(e)}),
            })
            .collect();
        return print_json(&items);
    }
    if rows.is_empty() {
        let under = cfg.checkpoint.remote.as_ref().map_or_else(
            || cfg.checkpoint.dir.display().to_string(),
            |r| r.url.clone(),
        );
        println!("no checkpoints under {under}");
        return exit::OK;
    }
    println!(
        "{:<16}  {:<20}  {:>10}  {:<24}  {:>9}  {:>6}  {:>12}",
        "PIPELINE", "WRITER", "CHECKPOINT", "CREATED", "COMMITTED", "TASKS", "BYTES"
    );
    for r in &rows {
        let (p, w) = (&r.pipeline, &r.writer);
        match &r.manifest {
            Ok(m) => println!(
                "{p:<16}  {w:<20}  {:>10}  {:<24}  {:>9}  {:>6}  {:>12}",
                r.id.0,
                time_of(m.created_unix_ms),
                committed_word(r.committed),
                m.tasks.len(),
                bytes_of(m)
            ),
            Err(e) => println!("{p:<16}  {w:<20}  {:>10}  unreadable: {}", r.id.0, chain(e)),
        }
    }
    println!(
        "(COMMITTED is a local hint, none in an object store; the group's committed offsets decide which checkpoint is restored)"
    );
    exit::OK
}

pub fn inspect(
    ops: &Operators,
    config: &Path,
    pipeline: &str,
    writer: Option<&str>,
    id: Option<u64>,
    output: Output,
) -> u8 {
    let cfg = match load_config(ops, config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    // by default the writer of this config (its instance's transactional id)
    let own = cfg
        .pipelines
        .iter()
        .find(|p| p.name == pipeline)
        .map(|p| p.transactional_id.as_str());
    let Some(writer) = writer.or(own) else {
        eprintln!("error: no pipeline {pipeline:?} in {}", config.display());
        return exit::FAILURE;
    };
    let Some(runtime) = runtime() else {
        return exit::FAILURE;
    };
    let loaded = Catalog::open(&cfg.checkpoint, pipeline, runtime.handle()).and_then(|c| {
        let id = match id {
            Some(n) => CheckpointId(n),
            None => match c.list(writer)?.last() {
                Some(id) => *id,
                None => {
                    return Err(crate::checkpoint::store::Error::Corrupt {
                        path: c.location(writer, CheckpointId(0)).into(),
                        message: format!("no checkpoints of writer {writer:?}"),
                    }
                    .into());
                }
            },
        };
        let m = c.manifest(writer, id)?;
        let verified = c.verify(writer, id, &m).map_err(|e| chain(&e));
        Ok((
            c.location(writer, id),
            c.committed_hint(writer, id),
            m,
            verified,
        ))
    });
    let (dir, committed, m, verified) = match loaded {
        Ok(x) => x,
        Err(e) => {
            eprintln!("error: {}", chain(&e));
            return exit::FAILURE;
        }
    };
    let code = if verified.is_ok() {
        exit::OK
    } else {
        exit::STATE
    };
    if output == Output::Json {
        let printed = print_json(
            &json!({"path": dir, "committed_hint": committed, "verified": verified.is_ok(), "verify_error": verified.err(), "manifest": m}),
        );
        return printed.max(code);
    }
    println!("checkpoint  {} of {pipeline}", m.checkpoint);
    println!("writer      {writer}");
    println!("path        {dir}");
    println!("created     {}", time_of(m.created_unix_ms));
    println!(
        "committed   {}",
        match committed {
            Some(true) => "yes (local hint)",
            Some(false) => "unknown",
            None => "unknown (an object store keeps no hint)",
        }
    );
    println!("  {:<40}  NEXT OFFSET", "PARTITION");
    for o in &m.offsets {
        println!(
            "  {:<40}  {}",
            format!("{}/{}", o.topic, o.partition),
            o.next_offset
        );
    }
    println!(
        "  {:<40}  {:>11}  {:>6}  {:>12}",
        "STATEFUL TASK", "NEXT OFFSET", "FILES", "BYTES"
    );
    for t in &m.tasks {
        let off = t.next_offset.map_or_else(|| "-".into(), |o| o.to_string());
        let bytes: u64 = t.files.iter().map(|f| f.len).sum();
        println!(
            "  {:<40}  {off:>11}  {:>6}  {bytes:>12}",
            format!("{}/{}", t.topic, t.partition),
            t.files.len()
        );
    }
    match verified {
        Ok(()) if cfg.checkpoint.remote.is_some() => {
            println!(
                "files       ok (in the object store at their lengths; a restore checks CRC32C)"
            );
        }
        Ok(()) => println!("checksums   ok"),
        Err(e) => println!("checksums   FAILED: {e}"),
    }
    code
}
