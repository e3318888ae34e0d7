//! Reading the outputs: a read_committed reader that runs through the faults (the "consumer
//! reading during the chaos", whose arrivals give the stall figures), and a fresh
//! read_committed reader after them, whose records the verdicts are made of. The two are
//! reconciled: the live reader must have seen nothing the fresh one does not (aborted or
//! rewritten data), and where it saw less, its client stopped short and the row says so.
//! Every reader bootstraps on the brokers' own listeners, never through the fault proxy.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use crate::topics::PARTITIONS;
use crate::verify::Rec;

/// A read_committed reader of several topics from their beginning, running through the whole
/// scenario; notes when each record arrived, and the errors its client reported.
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
    /// Each distinct error the client reported, and how often.
    errors: BTreeMap<String, u64>,
}

/// What a reader read, and the partitions it could not read to their end (an open
/// transaction holds the last stable offset back: a hanging transaction).
pub struct Read {
    pub records: BTreeMap<String, Vec<Rec>>,
    pub arrivals: Vec<Instant>,
    pub behind: Vec<String>,
    /// The client's errors, `N× message`.
    pub errors: Vec<String>,
}

pub fn consumer(bootstrap: &str, isolation: &str) -> Result<BaseConsumer> {
    Ok(ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "flumen-chaos-reader")
        .set("isolation.level", isolation)
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        // as Flumen's own clients: metadata a broker restart left wrong is not kept for
        // librdkafka's default 5 minutes, nor is a client left without brokers (finding 13)
        .set("topic.metadata.refresh.interval.ms", "5000")
        .set("metadata.recovery.rebootstrap.trigger.ms", "10000")
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
        timestamp: m.timestamp().to_millis().unwrap_or(-1),
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
                let Some(polled) = c.poll(Duration::from_millis(100)) else {
                    continue;
                };
                let mut got = g.lock().map_err(|_| anyhow::anyhow!("reader poisoned"))?;
                match polled {
                    // a broker down (the faults) is an error the client rides out; kept for
                    // the row in case it does not
                    Err(e) => *got.errors.entry(e.to_string()).or_default() += 1,
                    Ok(m) => {
                        if m.topic() == first {
                            got.arrivals.push(Instant::now());
                        }
                        got.records
                            .entry(m.topic().to_string())
                            .or_default()
                            .push(rec_of(&m));
                    }
                }
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
            errors: listed(&got.errors),
        })
    }
}

/// A client's errors as `N× message`.
fn listed(errors: &BTreeMap<String, u64>) -> Vec<String> {
    errors.iter().map(|(e, n)| format!("{n}× {e}")).collect()
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

/// Every record of `topics` with `isolation`, from a fresh client, read until each partition's
/// position reaches its high watermark or `timeout` passes; what is still behind then is
/// returned with the records (a hanging transaction, when read_committed).
pub fn read_to_end(
    bootstrap: &str,
    topics: &[String],
    isolation: &str,
    timeout: Duration,
) -> Result<Read> {
    let c = consumer(bootstrap, isolation)?;
    assign_all(&c, topics)?;
    let mut got = Got::default();
    let deadline = Instant::now() + timeout;
    loop {
        while let Some(m) = c.poll(Duration::from_millis(200)) {
            match m {
                Ok(m) => got
                    .records
                    .entry(m.topic().to_string())
                    .or_default()
                    .push(rec_of(&m)),
                Err(e) => *got.errors.entry(e.to_string()).or_default() += 1,
            }
        }
        let left = behind(&c, topics).unwrap_or_else(|e| vec![format!("no watermarks: {e}")]);
        if left.is_empty() || Instant::now() > deadline {
            return Ok(Read {
                records: got.records,
                arrivals: Vec::new(),
                behind: left,
                errors: listed(&got.errors),
            });
        }
    }
}

/// Every record of `topic` with `isolation`, read to the end within 120 s.
pub fn read_all(bootstrap: &str, topic: &str, isolation: &str) -> Result<Vec<Rec>> {
    let topics = [topic.to_string()];
    let mut read = read_to_end(bootstrap, &topics, isolation, Duration::from_secs(120))?;
    if !read.behind.is_empty() {
        bail!(
            "{topic} not read to its end in 120 s: {}",
            read.behind.join(", ")
        );
    }
    Ok(read.records.remove(topic).unwrap_or_default())
}

/// What the live reader's records say against the fresh reader's.
#[derive(Debug, Default, PartialEq)]
pub struct Reconciled {
    /// Records the live reader saw that the fresh read_committed reader does not: data a
    /// read_committed consumer must never see (aborted, or rewritten after a truncation).
    pub unseen_by_fresh: Vec<String>,
    /// Partitions on which the live reader stopped short of what the fresh reader read.
    pub short: Vec<String>,
}

/// Compares, per topic and partition, the offsets the live reader saw with the fresh
/// reader's. Extra records count only where the fresh reader reached its end.
pub fn reconcile(live: &Read, fresh: &Read) -> Reconciled {
    let offsets = |recs: Option<&Vec<Rec>>| -> BTreeMap<i32, BTreeSet<i64>> {
        let mut by: BTreeMap<i32, BTreeSet<i64>> = BTreeMap::new();
        for r in recs.into_iter().flatten() {
            by.entry(r.partition).or_default().insert(r.offset);
        }
        by
    };
    let topics: BTreeSet<&String> = live.records.keys().chain(fresh.records.keys()).collect();
    let mut out = Reconciled::default();
    for t in topics {
        let (l, f) = (offsets(live.records.get(t)), offsets(fresh.records.get(t)));
        for p in 0..PARTITIONS {
            let (lp, fp) = (l.get(&p).cloned(), f.get(&p).cloned());
            let (lp, fp) = (lp.unwrap_or_default(), fp.unwrap_or_default());
            let extra = lp.difference(&fp).count();
            if extra > 0 && fresh.behind.is_empty() {
                out.unseen_by_fresh.push(format!(
                    "{t}/{p}: {extra} record(s) seen during the faults that a fresh read_committed reader does not see"
                ));
            }
            let missing = fp.difference(&lp).count();
            if missing > 0 {
                let last = lp
                    .last()
                    .map_or("nothing".to_string(), |o| format!("offset {o}"));
                out.short.push(format!(
                    "{t}/{p}: {missing} fewer (read to {last} of {})",
                    fp.last().map_or(0, |o| o + 1)
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(topic: &str, recs: &[(i32, i64)], behind: &[&str]) -> Read {
        let records = recs
            .iter()
            .map(|&(partition, offset)| Rec {
                partition,
                offset,
                timestamp: 0,
                key: None,
                value: None,
            })
            .collect();
        Read {
            records: BTreeMap::from([(topic.to_string(), records)]),
            arrivals: Vec::new(),
            behind: behind.iter().map(|s| s.to_string()).collect(),
            errors: Vec::new(),
        }
    }

    #[test]
    fn a_live_reader_that_stopped_short_is_named_per_partition() {
        let live = read("out", &[(0, 0), (0, 1), (1, 0)], &[]);
        let fresh = read("out", &[(0, 0), (0, 1), (1, 0), (1, 1), (1, 2)], &[]);
        let r = reconcile(&live, &fresh);
        assert!(r.unseen_by_fresh.is_empty());
        assert_eq!(r.short, vec!["out/1: 2 fewer (read to offset 0 of 3)"]);
    }

    #[test]
    fn records_only_the_live_reader_saw_are_reported_unless_the_fresh_one_hangs() {
        let live = read("out", &[(2, 5), (2, 6)], &[]);
        let fresh = read("out", &[(2, 5)], &[]);
        let r = reconcile(&live, &fresh);
        assert_eq!(r.unseen_by_fresh.len(), 1);
        assert!(r.unseen_by_fresh[0].starts_with("out/2: 1 record(s)"));
        let hanging = read("out", &[(2, 5)], &["out/2 at 6 of 9"]);
        assert!(reconcile(&live, &hanging).unseen_by_fresh.is_empty());
    }
}
