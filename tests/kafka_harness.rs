//! Proves the test harness is a real Kafka with real transactions: committed and aborted
//! transactions are told apart by read_committed, and a second producer fences the first.

#![allow(clippy::unwrap_used)] // tests panic on failure, by design

mod common;

use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

fn transactional_producer(bootstrap: &str, txn_id: &str) -> BaseProducer {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("transactional.id", txn_id)
        .set("transaction.timeout.ms", "30000")
        .create()
        .expect("transactional producer");
    producer
        .init_transactions(Duration::from_secs(30))
        .expect("init_transactions");
    producer
}

fn send_batch(producer: &BaseProducer, topic: &str, tag: &str, n: usize) {
    for i in 0..n {
        let key = format!("{tag}-{i}");
        let value = format!("{{\"tag\":\"{tag}\",\"i\":{i}}}");
        loop {
            match producer.send(BaseRecord::to(topic).key(&key).payload(&value)) {
                Ok(()) => break,
                Err((e, _)) => {
                    assert!(
                        matches!(
                            e.rdkafka_error_code(),
                            Some(rdkafka::types::RDKafkaErrorCode::QueueFull)
                        ),
                        "send: {e}"
                    );
                    producer.poll(Duration::from_millis(10));
                }
            }
        }
    }
}

#[test]
fn read_committed_sees_only_the_committed_transaction() {
    let Some(bootstrap) = common::bootstrap() else {
        return;
    };
    let topic = common::rand_name("harness-txn");
    common::create_topic(&bootstrap, &topic, 3);

    let producer = transactional_producer(&bootstrap, &common::rand_name("txn"));
    producer.begin_transaction().expect("begin 1");
    send_batch(&producer, &topic, "committed", 1000);
    producer
        .commit_transaction(Duration::from_secs(30))
        .expect("commit");

    producer.begin_transaction().expect("begin 2");
    send_batch(&producer, &topic, "aborted", 1000);
    producer
        .flush(Duration::from_secs(30))
        .expect("flush before abort");
    producer
        .abort_transaction(Duration::from_secs(30))
        .expect("abort");

    let committed = common::read_all(
        &bootstrap,
        &topic,
        "read_committed",
        1000,
        Duration::from_secs(30),
    );
    assert_eq!(
        committed.len(),
        1000,
        "read_committed must see exactly the committed batch"
    );
    assert!(
        committed.iter().all(|r| r
            .key
            .as_deref()
            .is_some_and(|k| k.starts_with("committed-"))),
        "read_committed saw a record of the aborted transaction"
    );

    let all = common::read_all(
        &bootstrap,
        &topic,
        "read_uncommitted",
        2000,
        Duration::from_secs(30),
    );
    assert_eq!(all.len(), 2000, "read_uncommitted must see both batches");
    let aborted = all
        .iter()
        .filter(|r| r.key.as_deref().is_some_and(|k| k.starts_with("aborted-")));
    assert_eq!(aborted.count(), 1000);
}

#[test]
fn a_second_producer_with_the_same_transactional_id_fences_the_first() {
    let Some(bootstrap) = common::bootstrap() else {
        return;
    };
    let topic = common::rand_name("harness-fence");
    common::create_topic(&bootstrap, &topic, 1);
    let txn_id = common::rand_name("txn-fence");

    let first = transactional_producer(&bootstrap, &txn_id);
    first.begin_transaction().expect("begin");
    send_batch(&first, &topic, "zombie", 10);
    first.flush(Duration::from_secs(30)).expect("flush");

    let second = transactional_producer(&bootstrap, &txn_id);
    second.begin_transaction().expect("second begins");
    send_batch(&second, &topic, "live", 10);
    second
        .commit_transaction(Duration::from_secs(30))
        .expect("second commits");

    // the first producer's epoch is stale: its next transactional call fails fatally (fenced)
    let err = match first.send(BaseRecord::to(&topic).key("zombie-late").payload("late")) {
        Err((e, _)) => e,
        Ok(()) => first
            .commit_transaction(Duration::from_secs(30))
            .expect_err("zombie commit"),
    };
    // the error comes as a transaction error, or (a local send refused) as the client's
    // recorded fatal error
    let (code, fatal) = match &err {
        KafkaError::Transaction(rd) => (rd.code(), rd.is_fatal()),
        other => match first.client().fatal_error() {
            Some((code, _)) => (code, true),
            None => panic!("expected a fatal transaction error, got {other}"),
        },
    };
    assert!(fatal, "a fenced producer's error must be fatal, got {err}");
    assert!(
        matches!(
            code,
            rdkafka::types::RDKafkaErrorCode::Fenced
                | rdkafka::types::RDKafkaErrorCode::ProducerFenced
                | rdkafka::types::RDKafkaErrorCode::InvalidProducerEpoch
        ),
        "expected a fencing error code, got {code:?} ({err})"
    );

    let read = common::read_all(
        &bootstrap,
        &topic,
        "read_committed",
        10,
        Duration::from_secs(30),
    );
    assert_eq!(
        read.len(),
        10,
        "only the live producer's transaction is visible"
    );
    assert!(
        read.iter()
            .all(|r| r.key.as_deref().is_some_and(|k| k.starts_with("live-")))
    );
}
