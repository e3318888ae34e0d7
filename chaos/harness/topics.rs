//! Kafka from the harness's side: topic creation and the live input (with poison pills); the
//! outputs are read by `reader`. The harness's clients bootstrap on the brokers' own
//! listeners, never through the fault proxy, so a blackhole cuts only Flumen off.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rand::Rng;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

use crate::verify::FLUSH_USER;

pub const PARTITIONS: i32 = 4;

/// Creates `topics` with `PARTITIONS` partitions and `replication` replicas.
pub fn create(bootstrap: &str, topics: &[String], replication: i32) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|t| NewTopic::new(t, PARTITIONS, TopicReplication::Fixed(replication)))
        .collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    for r in rt.block_on(admin.create_topics(&new, &opts))? {
        if let Err((t, e)) = r {
            bail!("creating topic {t}: {e}");
        }
    }
    Ok(())
}

/// The kinds of bad record in the input (`pill-<id>` keys), each a bad record to every
/// pipeline; a null value and a record only the sum rejects (`pill`) are the others.
const PILLS: [&[u8]; 6] = [
    b"{\"user\":",                    // truncated JSON
    b"\xff\xfe not utf-8",            // invalid UTF-8
    b"[1,2,3]",                       // not an object
    b"{\"id\":1,\"ts\":1}",           // no user to key by
    b"{\"user\":{\"a\":1},\"ts\":1}", // a user that cannot be a key
    b"",                              // empty (null is below)
];

/// Bad record number `kind` (0..=7): `PILLS`, a null value, or a string where the sum adds
/// numbers (a good record to the count and the window, in event time now).
fn pill(kind: usize) -> Option<Vec<u8>> {
    match PILLS.get(kind) {
        Some(v) => Some(v.to_vec()),
        None if kind == PILLS.len() => None,
        None => Some(format!(r#"{{"user":"u0","id":"x","ts":{}}}"#, now_ms()).into_bytes()),
    }
}

/// Live input at a steady rate in the background: `{"user","id","ts"}` keyed by user, and
/// `pill_percent` % poison pills. What reached the topic is read back for the reference.
pub struct Feeder {
    stop: Arc<AtomicBool>,
    pub produced: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<Result<Option<String>>>>,
}

/// How long the input's last records may take to reach the topic before the producer is taken
/// for stalled (a broker restart can leave a librdkafka producer delivering nothing, for good).
const FLUSH: Duration = Duration::from_secs(120);

/// The live input's shape.
#[derive(Clone, Copy)]
pub struct Load {
    pub rate_per_s: u64,
    pub users: u64,
    pub pill_percent: u64,
}

fn producer(bootstrap: &str) -> Result<BaseProducer> {
    Ok(ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        // rides out broker kills and restarts: a record is never given up
        .set("message.timeout.ms", "900000")
        .set("linger.ms", "5")
        // as Flumen's own clients: a broker restart can leave it without brokers (finding 13)
        .set("metadata.recovery.rebootstrap.trigger.ms", "10000")
        .create()?)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Feeder {
    pub fn start(bootstrap: &str, topic: &str, load: Load) -> Result<Feeder> {
        let p = producer(bootstrap)?;
        let stop = Arc::new(AtomicBool::new(false));
        let produced = Arc::new(AtomicU64::new(0));
        let (s, n, topic) = (stop.clone(), produced.clone(), topic.to_string());
        let bootstrap = bootstrap.to_string();
        let thread = std::thread::spawn(move || -> Result<Option<String>> {
            let mut rng = rand::rng();
            let started = Instant::now();
            let mut id: u64 = 0;
            while !s.load(Ordering::Relaxed) {
                let due = started.elapsed().as_secs_f64() * load.rate_per_s as f64;
                while (id as f64) < due {
                    id += 1;
                    let (key, value) = if rng.random_range(0..100) < load.pill_percent {
                        let kind = rng.random_range(0..=PILLS.len() + 1);
                        (format!("pill-{id}"), pill(kind))
                    } else {
                        let user = format!("u{}", rng.random_range(0..load.users));
                        let v = format!(r#"{{"user":"{user}","id":{id},"ts":{}}}"#, now_ms());
                        (user, Some(v.into_bytes()))
                    };
                    send(&p, &topic, None, &key, value.as_deref())?;
                    n.fetch_add(1, Ordering::Relaxed);
                }
                p.poll(Duration::from_millis(10));
            }
            finish(&p, &bootstrap, &topic, id)
        });
        Ok(Feeder {
            stop,
            produced,
            thread: Some(thread),
        })
    }

    /// Stops the input: one record per partition far in event time closes every window, then
    /// everything is flushed. Returns the records produced, and a note when the producer
    /// stalled and a new one sent the last records (what the stalled one never delivered is
    /// not in the topic, and the reference, read back from the topic, does not count it).
    pub fn stop(mut self) -> Result<(u64, Option<String>)> {
        self.stop.store(true, Ordering::Relaxed);
        let mut note = None;
        if let Some(t) = self.thread.take() {
            note = t.join().map_err(|_| anyhow::anyhow!("feeder panicked"))??;
        }
        Ok((self.produced.load(Ordering::Relaxed), note))
    }
}

fn finish(p: &BaseProducer, bootstrap: &str, topic: &str, last_id: u64) -> Result<Option<String>> {
    let far = now_ms() + 60_000;
    let last = |p: &BaseProducer| -> Result<()> {
        for partition in 0..PARTITIONS {
            let id = last_id + 1 + partition as u64;
            let user = format!("{FLUSH_USER}{partition}");
            let v = format!(r#"{{"user":"{user}","id":{id},"ts":{far}}}"#);
            send(p, topic, Some(partition), &user, Some(v.as_bytes()))?;
        }
        Ok(())
    };
    last(p)?;
    let Err(e) = p.flush(FLUSH) else {
        return Ok(None);
    };
    let undelivered = p.in_flight_count();
    p.purge(rdkafka::producer::PurgeConfig::default().queue().inflight());
    let fresh = producer(bootstrap)?;
    last(&fresh)?;
    fresh
        .flush(FLUSH)
        .context("flushing the input's last records through a new producer")?;
    Ok(Some(format!(
        "the harness's input producer delivered nothing for {FLUSH:?} ({e}; {undelivered} records undelivered, dropped; the reference counts what reached the topic); a new producer sent the last records"
    )))
}

fn send(
    p: &BaseProducer,
    topic: &str,
    partition: Option<i32>,
    key: &str,
    value: Option<&[u8]>,
) -> Result<()> {
    let mut rec: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic).key(key.as_bytes());
    if let Some(v) = value {
        rec = rec.payload(v);
    }
    if let Some(part) = partition {
        rec = rec.partition(part);
    }
    produce(p, rec)
}

/// Sends `rec`, waiting while the producer's queue is full.
pub fn produce(p: &BaseProducer, mut rec: BaseRecord<'_, [u8], [u8]>) -> Result<()> {
    loop {
        match p.send(rec) {
            Ok(()) => return Ok(()),
            Err((e, back))
                if e.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::QueueFull) =>
            {
                p.poll(Duration::from_millis(50));
                rec = back;
            }
            Err((e, _)) => bail!("producing: {e}"),
        }
    }
}
