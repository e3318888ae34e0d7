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
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::message::{DeliveryResult, Message as _};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext, PurgeConfig};

use crate::verify::FLUSH_USER;

pub const PARTITIONS: i32 = 4;

/// The `max.message.bytes` of the topics created `limited`: far below the client's
/// 1,000,000, so an output between the two (the oversized pill's) must be caught by Flumen
/// before it is produced, and its batches must fit.
pub const LIMITED_TOPIC_BYTES: usize = 10_000;

/// Creates `topics` with `PARTITIONS` partitions and `replication` replicas; `stamped`'s
/// records carry the time the broker appended them (the verifier tells by it whether a late
/// record was late by the config's terms: `late.rs`); `limited` ones take records of at most
/// [`LIMITED_TOPIC_BYTES`].
pub fn create(
    bootstrap: &str,
    topics: &[String],
    stamped: &str,
    limited: &[String],
    replication: i32,
) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let limited_bytes = LIMITED_TOPIC_BYTES.to_string();
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|t| {
            let new = NewTopic::new(t, PARTITIONS, TopicReplication::Fixed(replication));
            if t == stamped {
                new.set("message.timestamp.type", "LogAppendTime")
            } else if limited.contains(t) {
                new.set("max.message.bytes", &limited_bytes)
            } else {
                new
            }
        })
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
/// pipeline; a null value, a record only the sum rejects and an oversized one (`pill`) are
/// the others.
const PILLS: [&[u8]; 6] = [
    b"{\"user\":",                    // truncated JSON
    b"\xff\xfe not utf-8",            // invalid UTF-8
    b"[1,2,3]",                       // not an object
    b"{\"id\":1,\"ts\":1}",           // no user to key by
    b"{\"user\":{\"a\":1},\"ts\":1}", // a user that cannot be a key
    b"",                              // empty (null is below)
];

/// Bad record number `kind` (0..=8) with input id `id`, as (key, value): `PILLS`, a null
/// value, a string where the sum adds numbers (a good record to the count and the window, in
/// event time now), or a user so long that the count's and the sum's outputs exceed their
/// sinks' `max.message.bytes` (a good record to the window, whose sink takes it). That one
/// is keyed by its user, so that its dead letter has the same key before the count's
/// repartition hop and after it.
fn pill(kind: usize, id: u64) -> (String, Option<Vec<u8>>) {
    let key = format!("pill-{id}");
    match PILLS.get(kind) {
        Some(v) => (key, Some(v.to_vec())),
        None if kind == PILLS.len() => (key, None),
        None if kind == PILLS.len() + 1 => {
            let v = format!(r#"{{"user":"u0","id":"x","ts":{}}}"#, now_ms());
            (key, Some(v.into_bytes()))
        }
        None => {
            let user = format!("{key}-{}", "x".repeat(LIMITED_TOPIC_BYTES * 6 / 10));
            let v = format!(r#"{{"user":"{user}","id":{id},"ts":{}}}"#, now_ms());
            (user, Some(v.into_bytes()))
        }
    }
}

/// Live input at a steady rate in the background: `{"user","id","ts"}` keyed by user, and
/// `pill_percent` % poison pills. What reached the topic is read back for the reference.
pub struct Feeder {
    stop: Arc<AtomicBool>,
    pub produced: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<Result<Vec<String>>>>,
}

/// How long the live input's producer may deliver nothing, with records waiting, before it is
/// replaced (a broker restart left one idempotent producer delivering nothing for minutes in
/// the full set of 2026-12-03, and the row checked almost no input).
const STALL: Duration = Duration::from_secs(60);

/// Watches the live input's producer: a fatal error (an idempotent producer stops for good
/// after one), or nothing delivered for [`STALL`] while records wait.
struct Watch {
    in_flight: u64,
    progress: Instant,
}

impl Watch {
    fn new() -> Watch {
        Watch {
            in_flight: 0,
            progress: Instant::now(),
        }
    }

    /// Why `p` should be replaced, if it should.
    fn check(&mut self, p: &Feed) -> Option<String> {
        if let Some((code, reason)) = p.client().fatal_error() {
            return Some(format!("failed fatally ({code:?}: {reason})"));
        }
        let now = u64::try_from(p.in_flight_count()).unwrap_or(0);
        if now == 0 || now < self.in_flight {
            self.progress = Instant::now();
        }
        self.in_flight = now;
        (self.progress.elapsed() > STALL)
            .then(|| format!("delivered nothing for {STALL:?} ({now} records waiting)"))
    }
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

/// A record the broker never acknowledged, as a purge or a failure handed it back.
struct Unsent {
    key: Vec<u8>,
    value: Option<Vec<u8>>,
    partition: Option<i32>,
}

/// The live input's producer context: it keeps every record whose delivery failed (a purge of
/// a stalled producer hands back all it held), so that a new producer sends them again.
#[derive(Default)]
struct Keeper {
    unsent: std::sync::Mutex<Vec<Unsent>>,
}

impl ClientContext for Keeper {}

impl ProducerContext for Keeper {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, (): ()) {
        if let Err((_, m)) = result
            && let Ok(mut unsent) = self.unsent.lock()
        {
            unsent.push(Unsent {
                key: m.key().map(<[u8]>::to_vec).unwrap_or_default(),
                value: m.payload().map(<[u8]>::to_vec),
                partition: (m.partition() >= 0).then(|| m.partition()),
            });
        }
    }
}

type Feed = BaseProducer<Keeper>;

/// Purges `p` (it stalled), then sends every record it never delivered through a new producer;
/// how many. A purged record may have reached the broker after all: then it is in the topic
/// twice, which is one more input to the reference (read back from the topic), not a loss.
fn replace(p: &mut Feed, bootstrap: &str, topic: &str) -> Result<usize> {
    p.purge(PurgeConfig::default().queue().inflight());
    // the purged records' delivery reports come with the next polls
    let deadline = Instant::now() + Duration::from_secs(5);
    while p.in_flight_count() > 0 && Instant::now() < deadline {
        p.poll(Duration::from_millis(50));
    }
    let unsent = std::mem::take(
        &mut *p
            .context()
            .unsent
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?,
    );
    *p = producer(bootstrap)?;
    for u in &unsent {
        let mut rec: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic).key(&u.key[..]);
        if let Some(v) = &u.value {
            rec = rec.payload(&v[..]);
        }
        if let Some(part) = u.partition {
            rec = rec.partition(part);
        }
        produce(p, rec)?;
    }
    Ok(unsent.len())
}

fn producer(bootstrap: &str) -> Result<Feed> {
    Ok(ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        // rides out broker kills and restarts: a record is never given up
        .set("message.timeout.ms", "900000")
        .set("linger.ms", "5")
        // as Flumen's own clients: a broker restart can leave it without brokers (finding 13)
        .set("metadata.recovery.rebootstrap.trigger.ms", "10000")
        .create_with_context(Keeper::default())?)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Feeder {
    pub fn start(bootstrap: &str, topic: &str, load: Load) -> Result<Feeder> {
        let mut p = producer(bootstrap)?;
        let stop = Arc::new(AtomicBool::new(false));
        let produced = Arc::new(AtomicU64::new(0));
        let (s, n, topic) = (stop.clone(), produced.clone(), topic.to_string());
        let bootstrap = bootstrap.to_string();
        let thread = std::thread::spawn(move || -> Result<Vec<String>> {
            let mut rng = rand::rng();
            let started = Instant::now();
            let mut id: u64 = 0;
            let mut watch = Watch::new();
            let mut notes = Vec::new();
            while !s.load(Ordering::Relaxed) {
                let due = started.elapsed().as_secs_f64() * load.rate_per_s as f64;
                while (id as f64) < due {
                    id += 1;
                    let (key, value) = if rng.random_range(0..100) < load.pill_percent {
                        pill(rng.random_range(0..=PILLS.len() + 2), id)
                    } else {
                        let user = format!("u{}", rng.random_range(0..load.users));
                        let v = format!(r#"{{"user":"{user}","id":{id},"ts":{}}}"#, now_ms());
                        (user, Some(v.into_bytes()))
                    };
                    send(&p, &topic, None, &key, value.as_deref())?;
                    n.fetch_add(1, Ordering::Relaxed);
                }
                p.poll(Duration::from_millis(10));
                if let Some(why) = watch.check(&p) {
                    let resent = replace(&mut p, &bootstrap, &topic)?;
                    watch = Watch::new();
                    notes.push(format!(
                        "{:.0} s into the input, the harness's input producer {why}: replaced; the new one sent its {resent} undelivered records again",
                        started.elapsed().as_secs_f64()
                    ));
                }
            }
            notes.extend(finish(&mut p, &bootstrap, &topic, id)?);
            Ok(notes)
        });
        Ok(Feeder {
            stop,
            produced,
            thread: Some(thread),
        })
    }

    /// Stops the input: one record per partition far in event time closes every window, then
    /// everything is flushed. Returns the records produced, and a note for each time the
    /// producer stalled and was replaced (a new one sends what it never delivered).
    pub fn stop(mut self) -> Result<(u64, Vec<String>)> {
        self.stop.store(true, Ordering::Relaxed);
        let mut notes = Vec::new();
        if let Some(t) = self.thread.take() {
            notes = t.join().map_err(|_| anyhow::anyhow!("feeder panicked"))??;
        }
        Ok((self.produced.load(Ordering::Relaxed), notes))
    }
}

fn finish(p: &mut Feed, bootstrap: &str, topic: &str, last_id: u64) -> Result<Option<String>> {
    let far = now_ms() + 60_000;
    for partition in 0..PARTITIONS {
        let id = last_id + 1 + partition as u64;
        let user = format!("{FLUSH_USER}{partition}");
        let v = format!(r#"{{"user":"{user}","id":{id},"ts":{far}}}"#);
        send(p, topic, Some(partition), &user, Some(v.as_bytes()))?;
    }
    let Err(e) = p.flush(FLUSH) else {
        return Ok(None);
    };
    let resent = replace(p, bootstrap, topic)?;
    p.flush(FLUSH)
        .context("flushing the input's last records through a new producer")?;
    Ok(Some(format!(
        "the harness's input producer delivered nothing for {FLUSH:?} at the end ({e}): replaced; the new one sent its {resent} undelivered records again"
    )))
}

fn send<C: ProducerContext<DeliveryOpaque = ()>>(
    p: &BaseProducer<C>,
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
pub fn produce<C: ProducerContext>(
    p: &BaseProducer<C>,
    mut rec: BaseRecord<'_, [u8], [u8], C::DeliveryOpaque>,
) -> Result<()> {
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
