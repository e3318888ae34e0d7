//! The at-least-once stand-in that proves the verifier can fail: it reads the chaos config
//! Flumen reads (`run --config FILE`), runs its count and sum pipelines, and does what an
//! at-least-once processor does: produce the outputs (idempotent, not transactional), flush,
//! save its state to a file, and commit the offsets apart from all that, every 2 s (as a
//! consumer's auto-commit does). A kill replays the records since the last offset commit
//! against state that already counted them.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

use crate::topics::produce;
use crate::verify::{Kind, classify};

#[derive(clap::Args)]
pub struct Args {
    #[arg(long)]
    config: PathBuf,
}

struct Pipeline {
    kind: Kind,
    consumer: BaseConsumer,
    sink: String,
    dead_letters: String,
    state_file: PathBuf,
    state: HashMap<String, f64>,
    committed_at: std::time::Instant,
}

pub fn main(args: Args) -> Result<()> {
    exit_on_term()?;
    let text = std::fs::read_to_string(&args.config)?;
    let cfg: toml::Value = toml::from_str(&text)?;
    let bootstrap = cfg["kafka"]["bootstrap_servers"]
        .as_str()
        .context("kafka.bootstrap_servers")?;
    let state_dir = PathBuf::from(cfg["state"]["dir"].as_str().context("state.dir")?);
    std::fs::create_dir_all(&state_dir)?;
    if let Some(listen) = cfg.get("admin").and_then(|a| a["listen"].as_str()) {
        serve_ready(listen)?;
    }
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        .create()?;
    let mut pipelines = Vec::new();
    for p in cfg["pipelines"].as_array().context("pipelines")? {
        let name = p["name"].as_str().context("name")?;
        let kind = match p["operators"][1]["type"].as_str() {
            Some("count") => Kind::Count,
            Some("sum") => Kind::Sum,
            other => bail!("the stand-in runs count and sum, not {other:?}"),
        };
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("group.id", format!("standin-{name}"))
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("isolation.level", "read_committed")
            .create()?;
        consumer.subscribe(&[p["source"]["topic"].as_str().context("source")?])?;
        let state_file = state_dir.join(format!("{name}.json"));
        let state = match std::fs::read(&state_file) {
            Ok(b) => serde_json::from_slice(&b)?,
            Err(_) => HashMap::new(),
        };
        pipelines.push(Pipeline {
            kind,
            consumer,
            sink: p["sink"]["topic"].as_str().context("sink")?.to_string(),
            dead_letters: p["dead_letter_topic"].as_str().context("dlq")?.to_string(),
            state_file,
            state,
            committed_at: std::time::Instant::now(),
        });
    }
    loop {
        for p in &mut pipelines {
            batch(p, &producer)?;
        }
    }
}

/// One batch: outputs, flush, state file; the offsets every 2 s (at least once).
fn batch(p: &mut Pipeline, producer: &BaseProducer) -> Result<()> {
    let mut n = 0;
    while let Some(m) = p.consumer.poll(Duration::from_millis(100)) {
        let m = m?;
        let key = m.key().unwrap_or_default();
        match classify(p.kind, m.payload()) {
            Some(g) => {
                let v = p.state.entry(g.user.clone()).or_default();
                let field = match p.kind {
                    Kind::Sum => {
                        *v += g.id;
                        "sum"
                    }
                    _ => {
                        *v += 1.0;
                        "count"
                    }
                };
                let out = serde_json::json!({"user": g.user, field: *v}).to_string();
                produce(
                    producer,
                    BaseRecord::to(&p.sink)
                        .key(g.user.as_bytes())
                        .payload(out.as_bytes()),
                )?;
            }
            None => {
                let mut r: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(&p.dead_letters).key(key);
                if let Some(v) = m.payload() {
                    r = r.payload(v);
                }
                produce(producer, r)?;
            }
        }
        n += 1;
        if n >= 200 {
            break;
        }
    }
    if n == 0 {
        return Ok(());
    }
    producer.flush(Duration::from_secs(30))?;
    let tmp = p.state_file.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec(&p.state)?)?;
    std::fs::rename(&tmp, &p.state_file)?;
    if p.committed_at.elapsed() >= Duration::from_secs(2) {
        p.consumer.commit_consumer_state(CommitMode::Sync)?;
        p.committed_at = std::time::Instant::now();
    }
    Ok(())
}

/// `/readyz` (any path) answers 200: the harness waits for it.
fn serve_ready(listen: &str) -> Result<()> {
    let l = std::net::TcpListener::bind(listen)?;
    std::thread::spawn(move || {
        for mut c in l.incoming().flatten() {
            let mut buf = [0u8; 1024];
            if c.read(&mut buf).is_ok() {
                c.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
                    .ok();
            }
        }
    });
    Ok(())
}

/// SIGTERM ends the stand-in with 0, as a clean stop would (its kills are what it is for).
fn exit_on_term() -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::spawn(move || {
        rt.block_on(async {
            if let Ok(mut term) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            {
                term.recv().await;
            }
        });
        std::process::exit(0);
    });
    Ok(())
}
