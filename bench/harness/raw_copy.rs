//! The raw copy: read_committed consumer → producer, batched by librdkafka, no state and no
//! framework. In `tx` mode every interval ends with `send_offsets_to_transaction` and a commit:
//! the physical limit of an exactly-once Kafka-to-Kafka pipeline on this broker. In `idempotent`
//! mode there is no transaction (offsets committed every interval): at-least-once.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

#[derive(clap::Args)]
pub struct Args {
    #[arg(long)]
    bootstrap: String,
    #[arg(long)]
    input: String,
    #[arg(long)]
    output: String,
    #[arg(long)]
    group: String,
    /// Commit interval, e.g. "1s" or "100ms".
    #[arg(long, value_parser = humantime::parse_duration)]
    interval: Duration,
    #[arg(long, value_enum)]
    mode: Mode,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    Tx,
    Idempotent,
}

pub fn main(args: Args) -> Result<()> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &args.bootstrap)
        .set("group.id", &args.group)
        .set("group.instance.id", format!("{}-0", args.group))
        .set("isolation.level", "read_committed")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .context("consumer")?;
    let mut pc = ClientConfig::new();
    pc.set("bootstrap.servers", &args.bootstrap)
        .set("linger.ms", "5")
        .set("enable.idempotence", "true");
    if args.mode == Mode::Tx {
        pc.set("transactional.id", format!("{}-raw", args.group))
            .set("transaction.timeout.ms", "60000");
    }
    let producer: ThreadedProducer<DefaultProducerContext> = pc.create().context("producer")?;
    let t = Duration::from_secs(30);
    if args.mode == Mode::Tx {
        producer.init_transactions(t)?;
        producer.begin_transaction()?;
    }
    consumer.subscribe(&[&args.input])?;
    let mut last = Instant::now();
    let mut pending = 0u64;
    // runs until the harness sends SIGTERM (default action: exit), as it does to every engine
    loop {
        if let Some(m) = consumer.poll(Duration::from_millis(10)) {
            let m = m?;
            let mut rec = BaseRecord::to(&args.output);
            if let Some(k) = m.key() {
                rec = rec.key(k);
            }
            if let Some(p) = m.payload() {
                rec = rec.payload(p);
            }
            send(&producer, rec)?;
            pending += 1;
        }
        if last.elapsed() >= args.interval {
            last = Instant::now();
            if pending == 0 {
                continue;
            }
            pending = 0;
            let positions = consumer.position()?;
            match args.mode {
                Mode::Tx => {
                    drain(&producer, t)?;
                    let meta = consumer
                        .group_metadata()
                        .context("no consumer group metadata")?;
                    producer.send_offsets_to_transaction(&positions, &meta, t)?;
                    producer.commit_transaction(t)?;
                    producer.begin_transaction()?;
                }
                Mode::Idempotent => {
                    drain(&producer, t)?;
                    consumer.commit(&positions, CommitMode::Sync)?;
                }
            }
        }
    }
}

/// Waits until every record is acknowledged. rdkafka's `flush` (and librdkafka's flush inside
/// `commit_transaction`) waits in 100 ms slices while the producer's thread serves the delivery
/// reports; this checks every millisecond, as Flumen's producer does.
fn drain(producer: &ThreadedProducer<DefaultProducerContext>, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while producer.in_flight_count() > 0 {
        if Instant::now() > deadline {
            bail!("records still in flight after {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(())
}

fn send(
    producer: &ThreadedProducer<DefaultProducerContext>,
    mut rec: BaseRecord<'_, [u8], [u8]>,
) -> Result<()> {
    loop {
        match producer.send(rec) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                rec = r;
                std::thread::sleep(Duration::from_millis(1));
            }
            Err((e, _)) => bail!("produce: {e}"),
        }
    }
}
