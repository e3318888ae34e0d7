//! Shared test helpers: the broker from `FLUMEN_TEST_BOOTSTRAP`, random names, and small
//! producers and readers built on rdkafka directly (the tests check Flumen from outside).
#![allow(dead_code)]

mod instances;
#[allow(unused_imports)]
pub use instances::*;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rand::Rng;
use rand::distr::Alphanumeric;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};

/// How long a test waits for the broker to answer metadata before failing.
const BROKER_TIMEOUT: Duration = Duration::from_secs(10);

/// The broker every integration test runs against.
///
/// Returns `None` only when `FLUMEN_SKIP_KAFKA_TESTS=1` is set explicitly. Otherwise a broker
/// that does not answer fails the test with a message that says how to start one.
pub fn bootstrap() -> Option<String> {
    if std::env::var("FLUMEN_SKIP_KAFKA_TESTS").as_deref() == Ok("1") {
        eprintln!("FLUMEN_SKIP_KAFKA_TESTS=1: skipping a test that needs a Kafka broker");
        return None;
    }
    let servers =
        std::env::var("FLUMEN_TEST_BOOTSTRAP").unwrap_or_else(|_| "127.0.0.1:19092".to_string());
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &servers)
        .set("socket.connection.setup.timeout.ms", "3000")
        .create()
        .expect("create metadata client");
    if let Err(e) = consumer.fetch_metadata(None, BROKER_TIMEOUT) {
        panic!(
            "no Kafka broker answers at {servers} (FLUMEN_TEST_BOOTSTRAP): {e}\n\
             start one with `scripts/kafka.sh start` and export FLUMEN_TEST_BOOTSTRAP=$(scripts/kafka.sh status), \
             or run everything with `scripts/test.sh`"
        );
    }
    Some(servers)
}

pub fn rand_suffix() -> String {
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(10)
        .map(char::from)
        .collect()
}

pub fn rand_name(prefix: &str) -> String {
    format!("{prefix}-{}", rand_suffix())
}

/// An admin client and a runtime to drive its futures.
fn admin(bootstrap: &str) -> (AdminClient<DefaultClientContext>, tokio::runtime::Runtime) {
    let admin = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("admin client");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    (admin, rt)
}

/// Creates `{name}-{suffix}` for each of `suffixes`, `partitions` each; their names.
pub fn create_topics<const N: usize>(
    bootstrap: &str,
    name: &str,
    suffixes: [&str; N],
    partitions: i32,
) -> [String; N] {
    let topics = suffixes.map(|s| format!("{name}-{s}"));
    for t in &topics {
        create_topic(bootstrap, t, partitions);
    }
    topics
}

pub fn create_topic(bootstrap: &str, topic: &str, partitions: i32) {
    create_topic_with(bootstrap, topic, partitions, &[]);
}

/// [`create_topic`] with topic settings (`("max.message.bytes", "4000")`).
pub fn create_topic_with(bootstrap: &str, topic: &str, partitions: i32, settings: &[(&str, &str)]) {
    let (admin, rt) = admin(bootstrap);
    let mut new = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    for (k, v) in settings {
        new = new.set(k, v);
    }
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(20)));
    let results = rt
        .block_on(admin.create_topics([&new], &opts))
        .expect("create_topics");
    for r in results {
        r.unwrap_or_else(|(t, e)| panic!("create topic {t}: {e}"));
    }
}

/// A non-transactional producer with Java's murmur2 partitioner, for test input.
pub fn producer(bootstrap: &str) -> ThreadedProducer<DefaultProducerContext> {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("partitioner", "murmur2_random")
        .set("linger.ms", "5")
        .create()
        .expect("producer")
}

/// Produces `(partition, key, value)` records and waits until all are acknowledged.
pub fn produce_all(bootstrap: &str, topic: &str, records: &[(Option<i32>, String, String)]) {
    let p = producer(bootstrap);
    for (partition, key, value) in records {
        let mut rec = BaseRecord::to(topic)
            .key(key.as_str())
            .payload(value.as_str());
        if let Some(part) = partition {
            rec = rec.partition(*part);
        }
        let mut rec = Some(rec);
        while let Some(r) = rec.take() {
            if let Err((e, r)) = p.send(r) {
                assert!(
                    matches!(
                        e.rdkafka_error_code(),
                        Some(rdkafka::types::RDKafkaErrorCode::QueueFull)
                    ),
                    "produce: {e}"
                );
                std::thread::sleep(Duration::from_millis(5));
                rec = Some(r);
            }
        }
    }
    p.flush(Duration::from_secs(30)).expect("flush test input");
}

/// Produces a tombstone (a record without a value) for `key`, and waits for it.
pub fn tombstone(bootstrap: &str, topic: &str, key: &str) {
    let p = producer(bootstrap);
    p.send(BaseRecord::<str, str>::to(topic).key(key))
        .map_err(|(e, _)| e)
        .expect("produce tombstone");
    p.flush(Duration::from_secs(30)).expect("flush tombstone");
}

/// One record read back from a topic.
#[derive(Debug, Clone)]
pub struct Read {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<String>,
    pub value: Option<String>,
    /// The value's bytes as read (binary formats).
    pub raw: Option<Vec<u8>>,
    /// The record's Kafka timestamp (ms): for a daemon's output, about when it was processed.
    pub timestamp: Option<i64>,
}

/// Reads every record of `topic` from the beginning until its end offsets (the last stable
/// offsets under read_committed) and at least `min_records` were read, or `timeout` passes.
pub fn read_all(
    bootstrap: &str,
    topic: &str,
    isolation: &str,
    min_records: usize,
    timeout: Duration,
) -> Vec<Read> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", rand_name("reader"))
        .set("isolation.level", isolation)
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .create()
        .expect("reader");
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("metadata");
    let partitions: Vec<i32> = md.topics()[0].partitions().iter().map(|p| p.id()).collect();
    let mut tpl = TopicPartitionList::new();
    for p in &partitions {
        tpl.add_partition_offset(topic, *p, Offset::Beginning)
            .expect("tpl");
    }
    consumer.assign(&tpl).expect("assign");
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    let mut positions: HashMap<i32, i64> = HashMap::new();
    loop {
        while let Some(m) = consumer.poll(Duration::from_millis(100)) {
            let m = m.expect("read");
            positions.insert(m.partition(), m.offset() + 1);
            out.push(Read {
                partition: m.partition(),
                offset: m.offset(),
                key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
                value: m.payload().map(|v| String::from_utf8_lossy(v).into_owned()),
                raw: m.payload().map(<[u8]>::to_vec),
                timestamp: m.timestamp().to_millis(),
            });
        }
        if out.len() >= min_records && caught_up(&consumer, topic, &partitions, &positions) {
            return out;
        }
        if Instant::now() > deadline {
            return out;
        }
    }
}

fn caught_up(
    consumer: &BaseConsumer,
    topic: &str,
    partitions: &[i32],
    positions: &HashMap<i32, i64>,
) -> bool {
    partitions.iter().all(|p| {
        // read_committed: the high watermark may lie past the last stable offset (an open or
        // just-aborted transaction), so compare the position with the consumer's own view.
        // A broker slow to answer (a loaded machine) means "not yet": the caller's deadline
        // decides.
        let Ok((_, high)) = consumer.fetch_watermarks(topic, *p, Duration::from_secs(5)) else {
            return false;
        };
        let pos = positions.get(p).copied().unwrap_or(0);
        pos >= high || consumer_lag_zero(consumer, topic, *p)
    })
}

fn consumer_lag_zero(consumer: &BaseConsumer, topic: &str, partition: i32) -> bool {
    let Ok(pos) = consumer.position() else {
        return false;
    };
    let Some(elem) = pos.find_partition(topic, partition) else {
        return false;
    };
    let Offset::Offset(position) = elem.offset() else {
        return false;
    };
    consumer
        .fetch_watermarks(topic, partition, Duration::from_secs(5))
        .is_ok_and(|(_, high)| position >= high)
}

/// A `flumen run` child process with its own config, state and checkpoint directories.
pub struct Daemon {
    pub dir: std::path::PathBuf,
    pub config: std::path::PathBuf,
    child: Option<std::process::Child>,
    runs: usize,
    /// Extra arguments of `flumen run` for the next starts.
    pub args: Vec<String>,
    /// The program run (`flumen`, or a binary with its own operators).
    pub program: std::path::PathBuf,
}

impl Daemon {
    /// Writes `config_toml` (with `{DIR}` replaced by the daemon's directory) to `dir`.
    pub fn new(dir: &std::path::Path, config_toml: &str) -> Self {
        let config = dir.join("pipeline.toml");
        std::fs::write(
            &config,
            config_toml.replace("{DIR}", &dir.display().to_string()),
        )
        .expect("write config");
        Self {
            dir: dir.to_path_buf(),
            config,
            child: None,
            runs: 0,
            args: Vec::new(),
            program: env!("CARGO_BIN_EXE_flumen").into(),
        }
    }

    pub fn start(&mut self) {
        self.start_with(&[]);
    }

    /// Starts `flumen run`, its stderr going to `run-N.log` in the daemon's directory.
    pub fn start_with(&mut self, env: &[(&str, &str)]) {
        assert!(self.child.is_none(), "daemon already running");
        self.runs += 1;
        let log = std::fs::File::create(self.log_path(self.runs)).expect("log file");
        let mut cmd = std::process::Command::new(&self.program);
        cmd.arg("run")
            .arg("--config")
            .arg(&self.config)
            .args(&self.args);
        cmd.env("RUST_LOG", "info,flumen=debug");
        cmd.env_remove("FAILPOINTS");
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.stdout(std::process::Stdio::null()).stderr(log);
        self.child = Some(cmd.spawn().expect("spawn flumen"));
    }

    pub fn log_path(&self, run: usize) -> std::path::PathBuf {
        self.dir.join(format!("run-{run}.log"))
    }

    /// The stderr of the latest run.
    pub fn last_log(&self) -> String {
        std::fs::read_to_string(self.log_path(self.runs)).unwrap_or_default()
    }

    /// Every run's stderr, for failure messages.
    pub fn all_logs(&self) -> String {
        (1..=self.runs)
            .map(|r| {
                format!(
                    "--- run {r} ---\n{}",
                    std::fs::read_to_string(self.log_path(r)).unwrap_or_default()
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// `kills` times: wait a random time in `pause_ms`, SIGKILL the daemon, start it again.
    /// Panics, with every log, if it exited on its own before a kill.
    pub fn kill_randomly(&mut self, kills: usize, pause_ms: std::ops::Range<u64>) {
        let mut rng = rand::rng();
        for kill in 0..kills {
            std::thread::sleep(Duration::from_millis(rng.random_range(pause_ms.clone())));
            assert!(
                self.is_running(),
                "flumen exited on its own before kill {kill}\n{}",
                self.all_logs()
            );
            self.kill9();
            self.start();
        }
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().expect("SIGKILL");
            c.wait().expect("reap");
        }
    }

    /// SIGTERM, then waits up to `timeout` for the exit status.
    pub fn terminate(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let pid = self.child.as_ref().expect("running").id();
        let status = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status()
            .expect("kill");
        assert!(status.success());
        self.wait(timeout).unwrap_or_else(|| {
            panic!(
                "flumen did not stop within {timeout:?}\n{}",
                self.all_logs()
            )
        })
    }

    /// Waits for the process to exit by itself.
    pub fn wait(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            let child = self.child.as_mut()?;
            if let Some(status) = child.try_wait().expect("try_wait") {
                self.child = None;
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until the daemon's current run has had partitions assigned (a member that joins
    /// gets its share only once the group has rebalanced, which may take seconds under load).
    pub fn wait_assigned(&mut self) {
        let began = Instant::now();
        while !self.last_log().contains("partitions assigned") {
            assert!(
                began.elapsed() < Duration::from_secs(90) && self.is_running(),
                "no partitions assigned\n{}",
                self.all_logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The running daemon's process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(std::process::Child::id)
    }

    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().expect("try_wait").is_none())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The keyed-count input: `records` JSON events over `users` users, each with a unique id,
/// keyed randomly (so the count must go through the repartition topic to be right).
pub fn count_input(records: usize, users: usize) -> Vec<(Option<i32>, String, String)> {
    let mut rng = rand::rng();
    (0..records)
        .map(|i| {
            let user = format!("u{}", rng.random_range(0..users));
            let key = format!("k{}", rng.random_range(0..1_000_000));
            (
                None,
                key,
                format!("{{\"user\":\"{user}\",\"id\":{i},\"pad\":\"xxxxxxxxxxxxxxxx\"}}"),
            )
        })
        .collect()
}

/// Expected count per user of `count_input` records.
pub fn expected_counts(input: &[(Option<i32>, String, String)]) -> HashMap<String, u64> {
    let mut out = HashMap::new();
    for (_, _, v) in input {
        let v: serde_json::Value = serde_json::from_str(v).expect("input json");
        *out.entry(v["user"].as_str().expect("user").to_string())
            .or_insert(0) += 1;
    }
    out
}

/// Checks the sink of a keyed count read with read_committed: per user, the counts are
/// exactly 1..=n in order, each once, with Kafka key = user. Returns a description of the
/// first violation.
/// `emit = "on_checkpoint"`: per user, counts strictly increasing (no update emitted twice)
/// and the last one the expected count; no other users.
pub fn check_final_counts(output: &[Read], expected: &HashMap<String, u64>) -> Result<(), String> {
    let mut last: HashMap<String, u64> = HashMap::new();
    for r in output {
        let v: serde_json::Value = serde_json::from_str(r.value.as_deref().unwrap_or("null"))
            .map_err(|e| format!("output at {}/{} is not JSON: {e}", r.partition, r.offset))?;
        let (Some(user), Some(count)) = (v["user"].as_str(), v["count"].as_u64()) else {
            return Err(format!(
                "output at {}/{} is not a count: {v}",
                r.partition, r.offset
            ));
        };
        if !expected.contains_key(user) {
            return Err(format!("unexpected user {user} in output"));
        }
        let prev = last.insert(user.to_string(), count).unwrap_or(0);
        if count <= prev {
            return Err(format!(
                "user {user}: count {count} after {prev} (a duplicate update)"
            ));
        }
    }
    for (user, n) in expected {
        if last.get(user) != Some(n) {
            return Err(format!(
                "user {user}: last count {:?}, expected {n}",
                last.get(user)
            ));
        }
    }
    Ok(())
}

pub fn check_counts(output: &[Read], expected: &HashMap<String, u64>) -> Result<(), String> {
    let mut seen: HashMap<String, Vec<u64>> = HashMap::new();
    for r in output {
        let v: serde_json::Value = serde_json::from_str(r.value.as_deref().unwrap_or("null"))
            .map_err(|e| format!("output at {}/{} is not JSON: {e}", r.partition, r.offset))?;
        let user = v["user"]
            .as_str()
            .ok_or_else(|| format!("output without user: {v}"))?
            .to_string();
        if r.key.as_deref() != Some(user.as_str()) {
            return Err(format!("output key {:?} differs from user {user}", r.key));
        }
        let count = v["count"]
            .as_u64()
            .ok_or_else(|| format!("output without count: {v}"))?;
        seen.entry(user).or_default().push(count);
    }
    for (user, n) in expected {
        let got = seen.remove(user).unwrap_or_default();
        let want: Vec<u64> = (1..=*n).collect();
        if got != want {
            let dupes = got.len() as i64 - *n as i64;
            return Err(format!(
                "user {user}: expected counts 1..={n}, got {} values ({dupes:+} vs expected), first: {:?}",
                got.len(),
                &got[..got.len().min(20)]
            ));
        }
    }
    if let Some((user, got)) = seen.into_iter().next() {
        return Err(format!("unexpected user {user} in output: {got:?}"));
    }
    Ok(())
}

/// The top of a test daemon's config: the broker, 300 ms checkpoints and state under the
/// daemon's `{DIR}`, quick restarts; the `[[pipelines]]` follow.
pub fn engine_header(bootstrap: &str, backend: &str) -> String {
    format!(
        r#"
[kafka]
bootstrap_servers = "{bootstrap}"

[checkpoint]
interval = "300ms"
dir = "{{DIR}}/checkpoints"

[state]
backend = "{backend}"
dir = "{{DIR}}/state"

[restart]
initial_backoff = "200ms"
"#
    )
}

/// The engine config of the keyed-count tests.
pub fn count_config(
    bootstrap: &str,
    name: &str,
    source: &str,
    sink: &str,
    backend: &str,
    interval: &str,
) -> String {
    format!(
        r#"
[kafka]
bootstrap_servers = "{bootstrap}"

[checkpoint]
interval = "{interval}"
dir = "{{DIR}}/checkpoints"

[state]
backend = "{backend}"
dir = "{{DIR}}/state"

[restart]
initial_backoff = "200ms"
max_backoff = "2s"

[[pipelines]]
name = "{name}"
source = {{ topic = "{source}", format = "json" }}
sink = {{ topic = "{sink}", format = "json" }}
operators = [
  {{ type = "key_by", field = "user" }},
  {{ type = "count" }},
]
"#
    )
}

/// A keyed-count pipeline (`count_config`) on fresh topics, with its daemon, not yet started.
/// Fields drop in order: the daemon is killed before its directory goes.
pub struct CountPipeline {
    pub bootstrap: String,
    pub name: String,
    pub source: String,
    pub sink: String,
    pub daemon: Daemon,
    _dir: tempfile::TempDir,
}

impl CountPipeline {
    /// `None` only when `FLUMEN_SKIP_KAFKA_TESTS=1`.
    pub fn new(prefix: &str, partitions: i32, backend: &str, interval: &str) -> Option<Self> {
        let bootstrap = bootstrap()?;
        let name = rand_name(prefix);
        let (source, sink) = (format!("{name}-events"), format!("{name}-counts"));
        create_topic(&bootstrap, &source, partitions);
        create_topic(&bootstrap, &sink, partitions);
        let dir = tempfile::tempdir().expect("tempdir");
        let config = count_config(&bootstrap, &name, &source, &sink, backend, interval);
        let daemon = Daemon::new(dir.path(), &config);
        Some(Self {
            bootstrap,
            name,
            source,
            sink,
            daemon,
            _dir: dir,
        })
    }

    pub fn dir(&self) -> &std::path::Path {
        &self.daemon.dir
    }

    /// Rewrites the daemon's config: `count_config` with another backend and interval, then
    /// `edit` applied to the text.
    pub fn rewrite_config(&self, backend: &str, interval: &str, edit: impl Fn(String) -> String) {
        let text = count_config(
            &self.bootstrap,
            &self.name,
            &self.source,
            &self.sink,
            backend,
            interval,
        );
        let text = edit(text).replace("{DIR}", &self.daemon.dir.display().to_string());
        std::fs::write(&self.daemon.config, text).expect("write config");
    }

    pub fn produce(&self, records: &[(Option<i32>, String, String)]) {
        produce_all(&self.bootstrap, &self.source, records);
    }

    /// The sink, read with read_committed (see `read_all`).
    pub fn output(&self, min_records: usize, timeout: Duration) -> Vec<Read> {
        read_all(
            &self.bootstrap,
            &self.sink,
            "read_committed",
            min_records,
            timeout,
        )
    }

    /// Produces `records` from a thread, `chunk` at a time with `pause` between: live input.
    pub fn produce_slowly(
        &self,
        records: &[(Option<i32>, String, String)],
        chunk: usize,
        pause: Duration,
    ) -> std::thread::JoinHandle<()> {
        let (bootstrap, source, records) = (
            self.bootstrap.clone(),
            self.source.clone(),
            records.to_vec(),
        );
        std::thread::spawn(move || {
            for part in records.chunks(chunk) {
                produce_all(&bootstrap, &source, part);
                std::thread::sleep(pause);
            }
        })
    }

    /// Reads the sink and panics, with every daemon log, unless the counts are exact.
    pub fn assert_exact(&self, expected: &HashMap<String, u64>, timeout: Duration) {
        let want: u64 = expected.values().sum();
        let output = self.output(usize::try_from(want).expect("count"), timeout);
        if let Err(e) = check_counts(&output, expected) {
            panic!(
                "{e}\n{} outputs for {want} inputs (source {})\n{}",
                output.len(),
                self.source,
                self.daemon.all_logs()
            );
        }
    }
}

/// Runs the `flumen` binary with `args` and returns its output.
pub fn flumen(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_flumen"))
        .args(args)
        .output()
        .expect("run flumen")
}

impl Daemon {
    /// `flumen savepoint trigger` (or `flumen stop` when `stop`) against this daemon, retried
    /// while it is still starting; returns the savepoint directory of each pipeline.
    pub fn savepoint(
        &mut self,
        dir: Option<&std::path::Path>,
        stop: bool,
    ) -> Vec<std::path::PathBuf> {
        let config = self.config.display().to_string();
        let dir = dir.map(|d| d.display().to_string());
        let mut args = vec![];
        if stop {
            args.extend(["stop", "--config", config.as_str()]);
            if let Some(d) = &dir {
                args.extend(["--savepoint", d.as_str()]);
            }
        } else {
            args.extend(["savepoint", "trigger", "--config", config.as_str()]);
            if let Some(d) = &dir {
                args.extend(["--dir", d.as_str()]);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let out = flumen(&args);
            if out.status.success() {
                let stdout = String::from_utf8_lossy(&out.stdout);
                return stdout
                    .lines()
                    .filter_map(|l| l.split('\t').nth(1)?.strip_prefix("savepoint "))
                    .map(std::path::PathBuf::from)
                    .collect();
            }
            let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
            // the daemon is starting (no socket yet, or partitions not assigned yet)
            let starting =
                stderr.contains("no running Flumen daemon") || stderr.contains("try again");
            assert!(
                starting && Instant::now() < deadline && self.is_running(),
                "{args:?} failed: {stderr}\n{}",
                self.all_logs()
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }
}

/// Raises `topic` to `partitions` partitions.
pub fn grow_topic(bootstrap: &str, topic: &str, partitions: usize) {
    let (admin, rt) = admin(bootstrap);
    let new = rdkafka::admin::NewPartitions::new(topic, partitions);
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(20)));
    for r in rt
        .block_on(admin.create_partitions([&new], &opts))
        .expect("create_partitions")
    {
        r.unwrap_or_else(|(t, e)| panic!("grow topic {t}: {e}"));
    }
}

/// The high watermark of every partition of `topic`.
pub fn end_offsets(bootstrap: &str, topic: &str) -> Vec<i64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("client");
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("metadata");
    md.topics()[0]
        .partitions()
        .iter()
        .map(|p| {
            consumer
                .fetch_watermarks(topic, p.id(), Duration::from_secs(10))
                .expect("watermarks")
                .1
        })
        .collect()
}

/// A one-pipeline config on `bootstrap` with its checkpoints and state under the daemon's
/// `{DIR}` (never the working directory): JSON `source` to `sink`, then `pipeline_extra` lines
/// (operators, on_error, …) and, before the pipeline, `top_extra` (e.g. `[schemas]`).
pub fn pipeline_config(
    bootstrap: &str,
    name: &str,
    (source, sink): (&str, &str),
    top_extra: &str,
    pipeline_extra: &str,
) -> String {
    format!(
        r#"
[kafka]
bootstrap_servers = "{bootstrap}"
{top_extra}
[checkpoint]
interval = "300ms"
dir = "{{DIR}}/checkpoints"

[state]
backend = "rocksdb"
dir = "{{DIR}}/state"

[[pipelines]]
name = "{name}"
source = {{ topic = "{source}", format = "json" }}
sink = {{ topic = "{sink}", format = "json" }}
{pipeline_extra}
"#
    )
}

/// Dead letters read back read_committed: (value, headers).
pub fn dead_letters(
    bootstrap: &str,
    topic: &str,
    want: usize,
) -> Vec<(Vec<u8>, HashMap<String, String>)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", rand_name("dlq-reader"))
        .set("isolation.level", "read_committed")
        .create()
        .expect("dead-letter reader");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)
        .expect("tpl");
    consumer.assign(&tpl).expect("assign");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut out = Vec::new();
    while std::time::Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                let mut headers = HashMap::new();
                if let Some(h) = m.headers() {
                    for i in 0..h.count() {
                        let hdr = h.get(i);
                        headers.insert(
                            hdr.key.to_string(),
                            String::from_utf8_lossy(hdr.value.unwrap_or_default()).into_owned(),
                        );
                    }
                }
                out.push((m.payload().unwrap_or_default().to_vec(), headers));
            }
            Some(Err(e)) => panic!("{e}"),
            None if out.len() >= want => {
                // a moment more, to see a duplicate if there is one
                std::thread::sleep(Duration::from_secs(2));
                while let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
                    out.push((m.payload().unwrap_or_default().to_vec(), HashMap::new()));
                }
                return out;
            }
            None => {}
        }
    }
    out
}

/// `target/<profile>/examples/<name>`, built by `cargo test` and `cargo build --all-targets`
/// (scripts/test.sh runs both).
pub fn example_binary(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps");
    let bin = profile_dir.join("examples").join(name);
    assert!(
        bin.try_exists().unwrap_or(false),
        "{} is missing: build the examples (cargo build --examples --all-features)",
        bin.display()
    );
    bin
}
