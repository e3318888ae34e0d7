//! Avro writer schemas from a schema registry (`[schema_registry] url`), against the real
//! broker. No Confluent-compatible registry can be installed on this machine (Confluent's is
//! not on Maven Central, Karapace is not on PyPI), so the registry here is [`FakeRegistry`]:
//! an HTTP server in the test that answers the two calls Flumen makes, as Confluent's API
//! documents them (`GET /schemas/ids/{id}`, `POST /subjects/{subject}/versions`), and counts
//! them. Kafka is real.
//!
//! Checked: writer ids found only in the registry are decoded with the local reader schema;
//! an id the registry does not have is a bad record (dead-lettered); after a SIGKILL the
//! fetched schemas come from the disk cache while the registry is down; a record whose id
//! needs the down registry is neither skipped nor dead-lettered, and is processed exactly once
//! when the registry is back; the sink's schema is registered under `{topic}-value`, and a
//! sink schema that the registry knows by another id stops the daemon with a message; HTTP
//! basic authentication (`username`, `password_env`) is sent, and a refusal is named.

#![allow(clippy::unwrap_used)] // tests panic on failure, by design

mod common;

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Read as _, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

use flumen::codec::avro::Registry;

fn schema_path(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("schemas")
        .join(name)
        .display()
        .to_string()
}

const V3: &str = r#"{"type":"record","name":"Purchase","namespace":"flumen.examples","fields":[
    {"name":"user","type":"string"},{"name":"amount","type":"long"},
    {"name":"country","type":"string","default":"NL"},
    {"name":"coupon","type":["null","string"],"default":null}]}"#;

#[derive(Default)]
struct Book {
    schemas: BTreeMap<u32, String>,
    /// GET /schemas/ids/{id} calls by id.
    gets: HashMap<u32, usize>,
    /// POST /subjects/{subject}/versions calls: subject → schema text.
    registered: Vec<(String, String)>,
    /// The `Authorization` header every call must carry, if any.
    authorization: Option<String>,
}

/// A Confluent-compatible schema registry of the test, on a fixed port that survives a stop.
struct FakeRegistry {
    port: u16,
    book: Arc<Mutex<Book>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeRegistry {
    fn start(schemas: &[(u32, &str)]) -> Self {
        let book = Book {
            schemas: schemas.iter().map(|(i, s)| (*i, s.to_string())).collect(),
            ..Book::default()
        };
        let mut r = FakeRegistry {
            port: 0,
            book: Arc::new(Mutex::new(book)),
            stop: Arc::new(AtomicBool::new(false)),
            thread: None,
        };
        r.serve();
        r
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn serve(&mut self) {
        let listener = TcpListener::bind(("127.0.0.1", self.port)).unwrap();
        self.port = listener.local_addr().unwrap().port();
        self.stop.store(false, Ordering::SeqCst);
        let (book, stop) = (self.book.clone(), self.stop.clone());
        self.thread = Some(std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                if let Ok(conn) = conn {
                    answer(conn, &book);
                }
            }
        }));
    }

    /// Stops answering: the port refuses connections until [`Self::serve`].
    fn down(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        TcpStream::connect(("127.0.0.1", self.port)).ok();
        self.thread.take().unwrap().join().unwrap();
    }

    fn gets(&self, id: u32) -> usize {
        self.book
            .lock()
            .unwrap()
            .gets
            .get(&id)
            .copied()
            .unwrap_or(0)
    }
}

fn answer(conn: TcpStream, book: &Mutex<Book>) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let mut length = 0usize;
    let mut authorization = None;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                length = v.trim().parse().unwrap_or(0);
            } else if k.eq_ignore_ascii_case("authorization") {
                authorization = Some(v.trim().to_string());
            }
        }
    }
    let mut body = vec![0; length];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let mut book = book.lock().unwrap();
    let refused = book.authorization.is_some() && book.authorization != authorization;
    let (status, reply) = if refused {
        (401, json!({"error_code": 401, "message": "Unauthorized"}))
    } else if let (Some(id), "GET") = (path.strip_prefix("/schemas/ids/"), method) {
        let id: u32 = id.parse().unwrap_or(u32::MAX);
        *book.gets.entry(id).or_default() += 1;
        match book.schemas.get(&id) {
            Some(s) => (200, json!({ "schema": s })),
            None => (
                404,
                json!({"error_code": 40403, "message": "Schema not found"}),
            ),
        }
    } else if let (Some(rest), "POST") = (path.strip_prefix("/subjects/"), method) {
        let subject = rest.trim_end_matches("/versions").to_string();
        let text = serde_json::from_slice::<Value>(&body).unwrap()["schema"]
            .as_str()
            .unwrap()
            .to_string();
        book.registered.push((subject, text.clone()));
        let parsed: Value = serde_json::from_str(&text).unwrap();
        let known = book
            .schemas
            .iter()
            .find(|(_, s)| serde_json::from_str::<Value>(s).unwrap() == parsed)
            .map(|(id, _)| *id);
        let id = known.unwrap_or_else(|| {
            let id = book.schemas.keys().max().unwrap_or(&0) + 1;
            book.schemas.insert(id, text);
            id
        });
        (200, json!({ "id": id }))
    } else {
        (404, json!({"error_code": 404, "message": "no such call"}))
    };
    let reply = reply.to_string();
    let mut conn = conn;
    write!(
        conn,
        "HTTP/1.1 {status} X\r\nContent-Type: application/vnd.schemaregistry.v1+json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{reply}",
        reply.len()
    )
    .ok();
}

fn config(bootstrap: &str, name: &str, topics: (&str, &str, &str), url: &str) -> String {
    config_with(bootstrap, name, topics, url, "")
}

fn config_with(
    bootstrap: &str,
    name: &str,
    topics: (&str, &str, &str),
    url: &str,
    registry_extra: &str,
) -> String {
    let (source, sink, dlq) = topics;
    let top = format!(
        "\n[schemas]\n2 = \"{}\"\n\n[schema_registry]\nurl = \"{url}\"\ntimeout = \"2s\"\n{registry_extra}\n\
         [restart]\ninitial_backoff = \"200ms\"\nmax_backoff = \"1s\"\nmax_attempts = 1000\n",
        schema_path("purchase-v2.avsc")
    );
    let pipeline = format!("on_error = \"dead_letter\"\ndead_letter_topic = \"{dlq}\"\n");
    common::pipeline_config(bootstrap, name, (source, sink), &top, &pipeline)
        .replace(
            &format!("source = {{ topic = \"{source}\", format = \"json\" }}"),
            &format!("source = {{ topic = \"{source}\", format = \"avro\", schema_id = 2 }}"),
        )
        .replace(
            &format!("sink = {{ topic = \"{sink}\", format = \"json\" }}"),
            &format!("sink = {{ topic = \"{sink}\", format = \"avro\", schema_id = 2 }}"),
        )
}

/// Writer schemas by id for the test's producer (all ids local to it).
fn writers() -> Registry {
    let dir = tempfile::tempdir().unwrap();
    let v3 = dir.path().join("v3.avsc");
    std::fs::write(&v3, V3).unwrap();
    let mut r = Registry::default();
    r.add(1, Path::new(&schema_path("purchase-v1.avsc")))
        .unwrap();
    r.add(2, Path::new(&schema_path("purchase-v2.avsc")))
        .unwrap();
    r.add(3, &v3).unwrap();
    // id 99: a schema the registry never heard of
    r.add(99, Path::new(&schema_path("purchase-v1.avsc")))
        .unwrap();
    r
}

fn purchase(w: &Registry, id: u32, amount: u64) -> Vec<u8> {
    let user = format!("u{}", amount % 7);
    let v = match id {
        1 | 99 => json!({"user": user, "amount": amount}),
        2 => json!({"user": user, "amount": amount, "country": "BE"}),
        _ => json!({"user": user, "amount": amount, "country": "FR", "coupon": "C1"}),
    };
    w.encode(id, &v).unwrap()
}

fn produce(bootstrap: &str, topic: &str, values: &[Vec<u8>]) {
    use rdkafka::producer::{BaseRecord, Producer};
    let producer = common::producer(bootstrap);
    for (i, v) in values.iter().enumerate() {
        producer
            .send(BaseRecord::to(topic).key(&format!("k{i}")).payload(v))
            .map_err(|(e, _)| e)
            .unwrap();
    }
    producer.flush(Duration::from_secs(30)).unwrap();
}

/// Output amounts → the decoded records (schema 2, local), asserting no amount twice.
fn outputs(bootstrap: &str, sink: &str, min: usize, wait: Duration) -> BTreeMap<u64, Value> {
    let reader = writers();
    let mut out = BTreeMap::new();
    for r in common::read_all(bootstrap, sink, "read_committed", min, wait) {
        let v = reader.decode(2, r.raw.as_deref().unwrap()).unwrap();
        let amount = v["amount"].as_u64().unwrap();
        assert!(out.insert(amount, v).is_none(), "amount {amount} out twice");
    }
    out
}

#[test]
fn writer_schemas_come_from_the_registry_and_its_cache_and_an_outage_loses_nothing() {
    let Some(bootstrap) = common::bootstrap() else {
        return;
    };
    let name = common::rand_name("registry");
    let (source, sink, dlq) = (
        format!("{name}-in"),
        format!("{name}-out"),
        format!("{name}-dlq"),
    );
    // one partition: a record held back holds back those after it, observably
    common::create_topic(&bootstrap, &source, 1);
    common::create_topic(&bootstrap, &sink, 1);
    common::create_topic(&bootstrap, &dlq, 1);
    let v1 = std::fs::read_to_string(schema_path("purchase-v1.avsc")).unwrap();
    let v2 = std::fs::read_to_string(schema_path("purchase-v2.avsc")).unwrap();
    let mut registry = FakeRegistry::start(&[(1, &v1), (2, &v2), (3, V3)]);
    let w = writers();

    // 100 records of writer ids 1 and 2, and one of id 99, which the registry lacks
    let mut batch: Vec<Vec<u8>> = (0..100)
        .map(|i| purchase(&w, 1 + i as u32 % 2, i))
        .collect();
    batch.insert(50, purchase(&w, 99, 10_000));
    produce(&bootstrap, &source, &batch);

    let dir = tempfile::tempdir().unwrap();
    let mut daemon = common::Daemon::new(
        dir.path(),
        &config(&bootstrap, &name, (&source, &sink, &dlq), &registry.url()),
    );
    daemon.start();
    let out = outputs(&bootstrap, &sink, 100, Duration::from_secs(60));
    assert_eq!(out.len(), 100, "{}", daemon.all_logs());
    assert_eq!(out[&0]["country"], "NL", "v1 takes the reader's default");
    assert_eq!(out[&1]["country"], "BE");
    let letters = common::dead_letters(&bootstrap, &dlq, 1);
    assert_eq!(letters.len(), 1, "{}", daemon.all_logs());
    assert_eq!(
        letters[0].0, batch[50],
        "the dead letter is the id-99 record, untouched"
    );
    assert!(
        letters[0].1["flumen.error.message"].contains("schema id 99 is not in the registry"),
        "{:?}",
        letters[0].1
    );
    {
        let book = registry.book.lock().unwrap();
        assert_eq!(
            book.registered.len(),
            1,
            "the sink's schema registered once"
        );
        assert_eq!(book.registered[0].0, format!("{sink}-value"));
    }
    assert_eq!(registry.gets(1), 1, "id 1 fetched once, then kept");
    assert_eq!(registry.gets(2), 0, "id 2 is local ([schemas])");

    // the registry goes down and the daemon is killed: the restarted daemon decodes id 1 from
    // its disk cache, and finds its sink registration there too
    registry.down();
    daemon.kill9();
    daemon.start();
    let batch: Vec<Vec<u8>> = (100..150).map(|i| purchase(&w, 1, i)).collect();
    produce(&bootstrap, &source, &batch);
    let out = outputs(&bootstrap, &sink, 150, Duration::from_secs(60));
    assert_eq!(out.len(), 150, "{}", daemon.all_logs());

    // id 3 is in no cache and the registry is down: that record waits, and those behind it
    let mut batch = vec![purchase(&w, 3, 150)];
    batch.extend((151..161).map(|i| purchase(&w, 1, i)));
    produce(&bootstrap, &source, &batch);
    std::thread::sleep(Duration::from_secs(6));
    let out = outputs(&bootstrap, &sink, 151, Duration::from_secs(3));
    assert_eq!(out.len(), 150, "nothing passes the held record");
    assert!(
        daemon.all_logs().contains("unavailable"),
        "the outage is logged: {}",
        daemon.all_logs()
    );

    // back up: every record exactly once, the id-3 one resolved to the reader schema
    registry.serve();
    let out = outputs(&bootstrap, &sink, 161, Duration::from_secs(60));
    assert_eq!(out.len(), 161, "{}", daemon.all_logs());
    assert_eq!(
        out.keys().copied().collect::<Vec<_>>(),
        (0..161).collect::<Vec<_>>()
    );
    assert_eq!(out[&150]["country"], "FR");
    assert!(
        out[&150].get("coupon").is_none(),
        "v3's added field is dropped by the reader"
    );
    assert_eq!(
        registry.gets(1),
        1,
        "the restarted daemon read id 1 from its disk cache"
    );
    assert_eq!(registry.gets(3), 1);
    assert_eq!(common::dead_letters(&bootstrap, &dlq, 1).len(), 1);
    assert!(
        daemon.terminate(Duration::from_secs(30)).success(),
        "{}",
        daemon.all_logs()
    );
}

#[test]
fn credentials_are_sent_and_a_sink_schema_of_another_id_stops_the_daemon() {
    let Some(bootstrap) = common::bootstrap() else {
        return;
    };
    let name = common::rand_name("registry-id");
    let (source, sink, dlq) = (
        format!("{name}-in"),
        format!("{name}-out"),
        format!("{name}-dlq"),
    );
    for t in [&source, &sink, &dlq] {
        common::create_topic(&bootstrap, t, 1);
    }
    let v2 = std::fs::read_to_string(schema_path("purchase-v2.avsc")).unwrap();
    let registry = FakeRegistry::start(&[(12, &v2)]);
    // "flumen:s3cret", as HTTP basic authentication sends it
    registry.book.lock().unwrap().authorization = Some("Basic Zmx1bWVuOnMzY3JldA==".into());
    let topics = (source.as_str(), sink.as_str(), dlq.as_str());

    // without credentials the registry refuses, and the daemon says so
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = common::Daemon::new(
        dir.path(),
        &config(&bootstrap, &name, topics, &registry.url()),
    );
    daemon.start();
    let status = daemon
        .wait(Duration::from_secs(60))
        .unwrap_or_else(|| panic!("the daemon kept running: {}", daemon.all_logs()));
    assert!(!status.success());
    assert!(
        daemon.all_logs().contains("HTTP 401: Unauthorized"),
        "{}",
        daemon.all_logs()
    );

    let dir = tempfile::tempdir().unwrap();
    let auth = "username = \"flumen\"\npassword_env = \"FLUMEN_TEST_REGISTRY_PASSWORD\"\n";
    let mut daemon = common::Daemon::new(
        dir.path(),
        &config_with(&bootstrap, &name, topics, &registry.url(), auth),
    );
    daemon.start_with(&[("FLUMEN_TEST_REGISTRY_PASSWORD", "s3cret")]);
    let status = daemon
        .wait(Duration::from_secs(60))
        .unwrap_or_else(|| panic!("the daemon kept running: {}", daemon.all_logs()));
    assert!(!status.success());
    let log = daemon.all_logs();
    assert!(
        log.contains("as schema id 12") && log.contains("list it as schemas.12"),
        "{log}"
    );
}
