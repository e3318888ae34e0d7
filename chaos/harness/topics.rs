//! Kafka from the harness's side: topic creation, the live input (with poison pills), and the
//! read_committed reader that watches the outputs during the faults and reads them to their
//! end after. The harness's clients bootstrap on the brokers' own listeners, never through the
//! fault proxy, so a blackhole cuts only Flumen off.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rand::Rng;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use crate::verify::{FLUSH_USER, Rec};

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
    thread: Option<std::thread::JoinHandle<Result<()>>>,
}

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
        let thread = std::thread::spawn(move || -> Result<()> {
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
            finish(&p, &topic, id)
        });
        Ok(Feeder {
            stop,
            produced,
            thread: Some(thread),
        })
    }

    /// Stops the input: one record per partition far in event time closes every window, then
    /// everything is flushed.
    pub fn stop(mut self) -> Result<u64> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().map_err(|_| anyhow::anyhow!("feeder panicked"))??;
        }
        Ok(self.produced.load(Ordering::Relaxed))
    }
}

fn finish(p: &BaseProducer, topic: &str, last_id: u64) -> Result<()> {
    let far = now_ms() + 60_000;
    for partition in 0..PARTITIONS {
        let id = last_id + 1 + partition as u64;
        let user = format!("{FLUSH_USER}{partition}");
        let v = format!(r#"{{"user":"{user}","id":{id},"ts":{far}}}"#);
        send(p, topic, Some(partition), &user, Some(v.as_bytes()))?;
    }
    p.flush(Duration::from_secs(900))
        .context("flushing the input")
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

/// A read_committed reader of several topics from their beginning, running through the whole
/// scenario (the "consumer reading during the chaos"); notes when each record arrived.
pub struct Reader {
    consumer: Arc<BaseConsumer>,
    topics: Vec<String>,
    got: Arc<Mutex<Got>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<Result<()>>>,
}

#[derive(Default)]
struct Got {
    records: BTreeMap<String, Vec<Rec>>,
    /// When records of the first topic arrived (the stall figures).
    arrivals: Vec<Instant>,
}

/// What a reader read, and the partitions it could not read to their end (an open
/// transaction holds the last stable offset back: a hanging transaction).
pub struct Read {
    pub records: BTreeMap<String, Vec<Rec>>,
    pub arrivals: Vec<Instant>,
    pub behind: Vec<String>,
}

pub fn consumer(bootstrap: &str, isolation: &str) -> Result<BaseConsumer> {
    Ok(ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "flumen-chaos-reader")
        .set("isolation.level", isolation)
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .create()?)
}

fn assign_all(c: &BaseConsumer, topics: &[String]) -> Result<()> {
    let mut tpl = TopicPartitionList::new();
    for t in topics {
        for p in 0..PARTITIONS {
            tpl.add_partition_offset(t, p, Offset::Beginning)?;
        }
    }
    c.assign(&tpl)?;
    Ok(())
}

fn rec_of(m: &rdkafka::message::BorrowedMessage<'_>) -> Rec {
    Rec {
        partition: m.partition(),
        offset: m.offset(),
        key: m.key().map(<[u8]>::to_vec),
        value: m.payload().map(<[u8]>::to_vec),
    }
}

impl Reader {
    pub fn start(bootstrap: &str, topics: &[String]) -> Result<Reader> {
        let c = consumer(bootstrap, "read_committed")?;
        assign_all(&c, topics)?;
        let consumer = Arc::new(c);
        let got = Arc::new(Mutex::new(Got::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (c, g, s, first) = (
            consumer.clone(),
            got.clone(),
            stop.clone(),
            topics[0].clone(),
        );
        let thread = std::thread::spawn(move || -> Result<()> {
            while !s.load(Ordering::Relaxed) {
                // a broker down (the faults) is an error the client rides out
                let Some(Ok(m)) = c.poll(Duration::from_millis(100)) else {
                    continue;
                };
                let mut got = g.lock().map_err(|_| anyhow::anyhow!("reader poisoned"))?;
                if m.topic() == first {
                    got.arrivals.push(Instant::now());
                }
                got.records
                    .entry(m.topic().to_string())
                    .or_default()
                    .push(rec_of(&m));
            }
            Ok(())
        });
        Ok(Reader {
            consumer,
            topics: topics.to_vec(),
            got,
            stop,
            thread: Some(thread),
        })
    }

    /// Records read so far, per topic.
    pub fn counts(&self) -> std::collections::HashMap<String, usize> {
        self.got
            .lock()
            .map(|g| {
                g.records
                    .iter()
                    .map(|(t, r)| (t.clone(), r.len()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Reads on until the position reaches every partition's end (call it once no writer is
    /// open), or `timeout`; then stops.
    pub fn finish(mut self, timeout: Duration) -> Result<Read> {
        let deadline = Instant::now() + timeout;
        let behind = loop {
            let behind = behind(&self.consumer, &self.topics)
                .unwrap_or_else(|e| vec![format!("no watermarks: {e}")]);
            if behind.is_empty() || Instant::now() > deadline {
                break behind;
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().map_err(|_| anyhow::anyhow!("reader panicked"))??;
        }
        let mut got = self
            .got
            .lock()
            .map_err(|_| anyhow::anyhow!("reader poisoned"))?;
        Ok(Read {
            records: std::mem::take(&mut got.records),
            arrivals: std::mem::take(&mut got.arrivals),
            behind,
        })
    }
}

/// Partitions whose position is short of the high watermark.
fn behind(c: &BaseConsumer, topics: &[String]) -> Result<Vec<String>> {
    let positions = c.position()?;
    let mut out = Vec::new();
    for t in topics {
        for p in 0..PARTITIONS {
            let (_, high) = c.fetch_watermarks(t, p, Duration::from_secs(10))?;
            let at = positions
                .find_partition(t, p)
                .and_then(|e| match e.offset() {
                    Offset::Offset(o) => Some(o),
                    _ => None,
                })
                .unwrap_or(0);
            if at < high {
                out.push(format!("{t}/{p} at {at} of {high}"));
            }
        }
    }
    Ok(out)
}

/// Every record of `topic` with `isolation`, read to the end.
pub fn read_all(bootstrap: &str, topic: &str, isolation: &str) -> Result<Vec<Rec>> {
    let c = consumer(bootstrap, isolation)?;
    assign_all(&c, &[topic.to_string()])?;
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        while let Some(m) = c.poll(Duration::from_millis(200)) {
            if let Ok(m) = m {
                out.push(rec_of(&m));
            }
        }
        let left = behind(&c, &[topic.to_string()])
            .unwrap_or_else(|e| vec![format!("no watermarks: {e}")]);
        if left.is_empty() {
            return Ok(out);
        }
        if Instant::now() > deadline {
            bail!("{topic} not read to its end in 120 s: {}", left.join(", "));
        }
    }
}
