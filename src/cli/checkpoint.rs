//! `flumen checkpoint list|inspect`: read-only views of the checkpoint store.

use crate::pipeline::custom::Operators;
use std::path::Path;

use serde_json::json;

use super::{Output, exit, load_config, print_json, time_of};
use crate::checkpoint::store::Store;
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
    committed: bool,
    manifest: crate::checkpoint::store::Result<Manifest>,
}

pub fn list(ops: &Operators, config: &Path, pipeline: Option<&str>, output: Output) -> u8 {
    let cfg = match load_config(ops, config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let mut rows = Vec::new();
    for p in cfg
        .pipelines
        .iter()
        .filter(|p| pipeline.is_none_or(|n| n == p.name))
    {
        let listed = Store::writers(&cfg.checkpoint.dir, &p.name).and_then(|writers| {
            let mut found = Vec::new();
            for writer in writers {
                let store = Store::reader(&cfg.checkpoint.dir, &p.name, &writer)?;
                for id in store.list()? {
                    found.push(Row {
                        pipeline: p.name.clone(),
                        writer: writer.clone(),
                        id,
                        committed: store.is_committed(id),
                        manifest: store.manifest(id),
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
        println!("no checkpoints under {}", cfg.checkpoint.dir.display());
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
                if r.committed { "yes" } else { "unknown" },
                m.tasks.len(),
                bytes_of(m)
            ),
            Err(e) => println!("{p:<16}  {w:<20}  {:>10}  unreadable: {}", r.id.0, chain(e)),
        }
    }
    println!(
        "(COMMITTED is a local hint; the group's committed offsets decide which checkpoint is restored)"
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
    let loaded = Store::reader(&cfg.checkpoint.dir, pipeline, writer).and_then(|store| {
        let id = match id {
            Some(n) => CheckpointId(n),
            None => match store.list()?.last() {
                Some(id) => *id,
                None => {
                    return Err(crate::checkpoint::store::Error::Corrupt {
                        path: store.root().to_path_buf(),
                        message: "no checkpoints".into(),
                    });
                }
            },
        };
        let m = store.manifest(id)?;
        let mut verified = Ok(());
        for t in &m.tasks {
            if let Err(e) = store.verify(id, t) {
                verified = Err(chain(&e));
                break;
            }
        }
        Ok((store.dir_of(id), store.is_committed(id), m, verified))
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
    println!("path        {}", dir.display());
    println!("created     {}", time_of(m.created_unix_ms));
    println!(
        "committed   {}",
        if committed {
            "yes (local hint)"
        } else {
            "unknown"
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
        Ok(()) => println!("checksums   ok"),
        Err(e) => println!("checksums   FAILED: {e}"),
    }
    code
}
