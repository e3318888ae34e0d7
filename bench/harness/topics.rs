//! Topics: creation, the preloaded input, and the read_committed reader that feeds a run's
//! output to its gate while the engine runs.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use crate::workload::{self, Gate};

pub const PARTITIONS: i32 = 4;

fn admin(bootstrap: &str) -> Result<(AdminClient<DefaultClientContext>, tokio::runtime::Runtime)> {
    let admin = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("allow.auto.create.topics", "false")
        .create()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    Ok((admin, rt))
}

pub fn create(bootstrap: &str, topics: &[&str]) -> Result<()> {
    let (admin, rt) = admin(bootstrap)?;
    let new: Vec<_> = topics
        .iter()
        .map(|t| NewTopic::new(t, PARTITIONS, TopicReplication::Fixed(1)))
        .collect();
    let results = rt.block_on(admin.create_topics(&new, &AdminOptions::new()))?;
    for r in results {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((t, e)) => bail!("creating topic {t}: {e}"),
        }
    }
    Ok(())
}

/// Deletes every topic whose name contains `needle`: a run's own topics and those its engine
/// made (Flumen's and Kafka Streams' repartition and changelog topics carry the run's tag).
/// Without this, a full run leaves thousands of partitions that overload the single-node
/// broker's controller at its next start.
pub fn delete_containing(bootstrap: &str, needle: &str) -> Result<()> {
    let (admin, rt) = admin(bootstrap)?;
    let metadata = admin
        .inner()
        .fetch_metadata(None, Duration::from_secs(30))
        .context("listing topics")?;
    let doomed: Vec<&str> = metadata
        .topics()
        .iter()
        .map(|t| t.name())
        .filter(|n| n.contains(needle))
        .collect();
    if doomed.is_empty() {
        return Ok(());
    }
    for r in rt.block_on(admin.delete_topics(&doomed, &AdminOptions::new()))? {
        if let Err((t, e)) = r {
            eprintln!("bench: could not delete topic {t}: {e}");
        }
    }
    Ok(())
}

/// Produces `records` input records of about `size` bytes to `topic`, record `i` with the
/// Kafka timestamp `workload::event_time(t0, i, records)` (the window workload's event time).
pub fn preload(bootstrap: &str, topic: &str, records: u64, size: usize, t0: u64) -> Result<()> {
    preload_with(bootstrap, topic, records, |i| {
        let (k, v) = workload::record(i, size);
        (k, v, Some(workload::event_time(t0, i, records)))
    })
}

/// Produces records `make(0..records)` (key, value, timestamp in ms or the producer's clock)
/// to `topic`.
pub fn preload_with(
    bootstrap: &str,
    topic: &str,
    records: u64,
    make: impl Fn(u64) -> (String, String, Option<u64>),
) -> Result<()> {
    let p: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "20")
        .set("batch.size", "1000000")
        .set("queue.buffering.max.messages", "1000000")
        .create()?;
    for i in 0..records {
        let (k, v, ts) = make(i);
        let mut rec = BaseRecord::to(topic)
            .key(k.as_bytes())
            .payload(v.as_bytes());
        if let Some(ts) = ts {
            rec = rec.timestamp(ts as i64);
        }
        send(&p, rec).with_context(|| format!("preloading {topic}"))?;
        if i % 10_000 == 0 {
            p.poll(Duration::ZERO);
        }
    }
    p.flush(Duration::from_secs(120)).context("preload flush")?;
    Ok(())
}

/// Enqueues one record, serving delivery reports while librdkafka's queue is full.
pub fn send(p: &BaseProducer, mut rec: BaseRecord<'_, [u8], [u8]>) -> Result<()> {
    loop {
        match p.send(rec) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                rec = r;
                p.poll(Duration::from_millis(1));
            }
            Err((e, _)) => bail!("produce: {e}"),
        }
    }
}

/// Reads `topic` from the beginning with read_committed on a thread, feeding every record to
/// the gate and publishing the gate's progress.
pub struct Reader {
    pub gate: Arc<Mutex<Gate>>,
    pub progress: Arc<AtomicU64>,
    pub complete: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<Result<()>>>,
    consumer: Arc<BaseConsumer>,
    topic: String,
}

impl Reader {
    pub fn start(bootstrap: &str, topic: &str, gate: Gate) -> Result<Reader> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("group.id", format!("{topic}-reader"))
            .set("isolation.level", "read_committed")
            .set("enable.auto.commit", "false")
            .create()?;
        let mut tpl = TopicPartitionList::new();
        for p in 0..PARTITIONS {
            tpl.add_partition_offset(topic, p, Offset::Beginning)?;
        }
        consumer.assign(&tpl)?;
        let consumer = Arc::new(consumer);
        let gate = Arc::new(Mutex::new(gate));
        let progress = Arc::new(AtomicU64::new(0));
        let complete = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let (c, g, p, d, s) = (
            consumer.clone(),
            gate.clone(),
            progress.clone(),
            complete.clone(),
            stop.clone(),
        );
        let thread = std::thread::spawn(move || -> Result<()> {
            while !s.load(Ordering::Relaxed) {
                let Some(m) = c.poll(Duration::from_millis(50)) else {
                    continue;
                };
                let m = m?;
                let at = At {
                    topic: m.topic(),
                    partition: m.partition(),
                    offset: m.offset(),
                };
                let mut gate = g.lock().map_err(|_| anyhow::anyhow!("gate poisoned"))?;
                gate.feed(at, m.payload().unwrap_or_default(), now_us());
                p.store(gate.progress(), Ordering::Relaxed);
                if gate.complete() {
                    d.store(true, Ordering::Relaxed);
                }
            }
            Ok(())
        });
        Ok(Reader {
            gate,
            progress,
            complete,
            stop,
            thread: Some(thread),
            consumer,
            topic: topic.to_string(),
        })
    }

    /// Reads on until the consumer's position reaches the end of every partition (call it after
    /// the engine stopped, so no transaction is open), then stops; returns the gate's verdict.
    pub fn finish(mut self, timeout: Duration) -> Result<Result<(), String>> {
        let deadline = std::time::Instant::now() + timeout;
        let mut behind = Vec::new();
        loop {
            behind.clear();
            let positions = self.consumer.position()?;
            for p in 0..PARTITIONS {
                let (_, high) =
                    self.consumer
                        .fetch_watermarks(&self.topic, p, Duration::from_secs(10))?;
                let at = positions
                    .find_partition(&self.topic, p)
                    .and_then(|e| match e.offset() {
                        Offset::Offset(o) => Some(o),
                        _ => None,
                    })
                    .unwrap_or(0);
                if at < high {
                    behind.push(format!("{}/{p} at {at} of {high}", self.topic));
                }
            }
            if behind.is_empty() || std::time::Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().map_err(|_| anyhow::anyhow!("reader panicked"))??;
        }
        let gate = self
            .gate
            .lock()
            .map_err(|_| anyhow::anyhow!("gate poisoned"))?;
        let verdict = gate.verdict();
        if behind.is_empty() {
            return Ok(verdict);
        }
        let unread = format!("output not read to its end: {}", behind.join(", "));
        Ok(Err(match verdict {
            Ok(()) => unread,
            Err(e) => format!("{e}; {unread}"),
        }))
    }
}

/// topic/partition@offset of an output record, for the gate's messages.
struct At<'a> {
    topic: &'a str,
    partition: i32,
    offset: i64,
}

impl std::fmt::Display for At<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}@{}", self.topic, self.partition, self.offset)
    }
}

/// Wall-clock µs since the epoch: latency is measured on one host, one clock.
pub fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}
