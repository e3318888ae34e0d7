//! Helpers for pipelines on several instances: the test object store (S3Proxy), one config for
//! several instances, random kills, and the `flumen` tool run as one instance.

use std::time::Duration;

use rand::Rng;

use super::{CountPipeline, Daemon};

/// The S3-compatible object store of the tests (S3Proxy, `scripts/s3.sh`), at
/// `FLUMEN_TEST_S3` (default `http://127.0.0.1:19300`), bucket `flumen`.
pub struct S3 {
    pub endpoint: String,
    store: object_store::aws::AmazonS3,
    runtime: tokio::runtime::Runtime,
}

/// The test store's credentials (`scripts/s3.sh`), for a daemon's environment.
pub const S3_CREDENTIALS: [(&str, &str); 2] = [
    ("AWS_ACCESS_KEY_ID", "flumen-test"),
    ("AWS_SECRET_ACCESS_KEY", "flumen-s3-canary"),
];

/// The test object store; panics, saying how to start it, when nothing answers there.
pub fn s3() -> S3 {
    let endpoint =
        std::env::var("FLUMEN_TEST_S3").unwrap_or_else(|_| "http://127.0.0.1:19300".to_string());
    let agent = ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(5)))
            .build(),
    );
    if let Err(e) = agent.get(&format!("{endpoint}/")).call() {
        panic!(
            "no object store answers at {endpoint} (FLUMEN_TEST_S3): {e}\n\
             start one with `scripts/s3.sh start`, or run everything with `scripts/test.sh`"
        );
    }
    let store = object_store::aws::AmazonS3Builder::new()
        .with_endpoint(&endpoint)
        .with_allow_http(true)
        .with_region("us-east-1")
        .with_bucket_name("flumen")
        .with_access_key_id(S3_CREDENTIALS[0].1)
        .with_secret_access_key(S3_CREDENTIALS[1].1)
        .build()
        .expect("object store client");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    S3 {
        endpoint,
        store,
        runtime,
    }
}

impl S3 {
    /// `config` (a `count_config`) with its checkpoints in this store under `prefix`.
    pub fn checkpoints_in(&self, config: &str, prefix: &str) -> String {
        let config = config.replace(
            "dir = \"{DIR}/checkpoints\"",
            &format!("dir = \"s3://flumen/{prefix}\""),
        );
        config.replace(
            "[state]",
            &format!(
                "[checkpoint.s3]\nendpoint = \"{}\"\nregion = \"us-east-1\"\n\n[state]",
                self.endpoint
            ),
        )
    }

    /// Every object under `prefix`: key, size and when it was last written (ms since the
    /// epoch; a rewrite of the same bytes changes it).
    pub fn objects(&self, prefix: &str) -> Vec<(String, u64, i64)> {
        use futures_util::TryStreamExt as _;
        use object_store::ObjectStore as _;
        let prefix = object_store::path::Path::from(prefix);
        let listed: Vec<object_store::ObjectMeta> = self
            .runtime
            .block_on(self.store.list(Some(&prefix)).try_collect())
            .expect("list objects");
        let mut objects: Vec<(String, u64, i64)> = listed
            .into_iter()
            .map(|o| {
                let written = o.last_modified.timestamp_millis();
                (o.location.to_string(), o.size, written)
            })
            .collect();
        objects.sort();
        objects
    }

    /// The object at `key`.
    pub fn get(&self, key: &str) -> Vec<u8> {
        use object_store::ObjectStoreExt as _;
        let key = object_store::path::Path::from(key);
        self.runtime
            .block_on(async { self.store.get(&key).await?.bytes().await })
            .expect("get object")
            .to_vec()
    }
}

/// `config` made one config for several instances: the instance id from `FLUMEN_INSTANCE`, and
/// a 6 s session (the broker's minimum: a killed static member's partitions move after it).
pub fn for_instances(config: &str) -> String {
    let text = config.replace(
        "[checkpoint]",
        "[kafka.properties]\n\"session.timeout.ms\" = \"6000\"\n\n[checkpoint]",
    );
    format!("instance_id_env = \"FLUMEN_INSTANCE\"\n{text}")
}

/// Instances under live input: `kills` times a random one of `daemons` (instance ids `ids`)
/// is killed with SIGKILL and restarted after a random pause with the environment `env` gives
/// its id, every third time after `wipe` on its directory. Panics if one exited on its own.
pub fn kill_instances_randomly(
    daemons: &mut [&mut Daemon],
    ids: &[&str],
    kills: usize,
    env: impl Fn(&str) -> Vec<(&'static str, String)>,
    wipe: impl Fn(&std::path::Path),
) {
    let mut rng = rand::rng();
    for kill in 0..kills {
        std::thread::sleep(Duration::from_millis(rng.random_range(300..1_500)));
        let i = rng.random_range(0..daemons.len());
        let daemon = &mut daemons[i];
        assert!(
            daemon.is_running(),
            "instance {} exited on its own before kill {kill}\n{}",
            ids[i],
            daemon.all_logs()
        );
        daemon.kill9();
        std::thread::sleep(Duration::from_millis(rng.random_range(0..2_000)));
        if kill % 3 == 2 {
            wipe(&daemon.dir);
        }
        let vars = env(ids[i]);
        let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
        daemon.start_with(&vars);
    }
}

/// `flumen checkpoint list --config CONFIG --output json` with `env`, as JSON; panics unless it
/// succeeds.
pub fn checkpoint_list(config: &str, env: &[(&str, &str)]) -> serde_json::Value {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_flumen"))
        .args(["checkpoint", "list", "--config", config, "--output", "json"])
        .envs(env.iter().copied())
        .output()
        .expect("run flumen");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("checkpoint list json")
}

/// `flumen checkpoint inspect --config CONFIG --pipeline PIPELINE <extra>` with `env`: its
/// standard output, and standard error after it when it failed (panics then, with both).
pub fn checkpoint_inspect(
    config: &str,
    pipeline: &str,
    extra: &[&str],
    env: &[(&str, &str)],
) -> String {
    let args = [
        "checkpoint",
        "inspect",
        "--config",
        config,
        "--pipeline",
        pipeline,
    ];
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_flumen"))
        .args([&args[..], extra].concat())
        .envs(env.iter().copied())
        .output()
        .expect("run flumen");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// `n` more daemons of `config`, each in its own directory (the directories outlive them:
/// bind both, directories first).
pub fn more_daemons(config: &str, n: usize) -> (Vec<tempfile::TempDir>, Vec<Daemon>) {
    let dirs: Vec<tempfile::TempDir> = (0..n)
        .map(|_| tempfile::tempdir().expect("tempdir"))
        .collect();
    let daemons = dirs.iter().map(|d| Daemon::new(d.path(), config)).collect();
    (dirs, daemons)
}

/// The environment of instance `instance` of a `for_instances` config on the test store.
pub fn env(instance: &str) -> Vec<(&str, &str)> {
    let mut env = vec![("FLUMEN_INSTANCE", instance)];
    env.extend(S3_CREDENTIALS);
    env
}

/// Runs `flumen` as instance `instance` with the test store's credentials; retries (up to 60 s)
/// while it refuses because the pipeline's stopped static members are still in the group.
pub fn tool(instance: &str, args: &[&str]) -> std::process::Output {
    let began = std::time::Instant::now();
    loop {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_flumen"))
            .args(args)
            .env("FLUMEN_INSTANCE", instance)
            .envs(S3_CREDENTIALS)
            .output()
            .expect("run flumen");
        let err = String::from_utf8_lossy(&out.stderr);
        if out.status.success() || !err.contains("member") || began.elapsed().as_secs() > 60 {
            return out;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// The savepoint path `flumen savepoint create` printed.
pub fn created(out: &std::process::Output) -> String {
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text.split('\t')
        .nth(1)
        .and_then(|s| s.strip_prefix("savepoint "))
        .unwrap_or_else(|| panic!("no savepoint path in {text}"))
        .to_string()
}

/// The keyed count's config for several instances (`common::for_instances`) with checkpoints
/// in the object store under the pipeline's name.
pub fn store_config(cp: &CountPipeline, s3: &S3) -> String {
    for_instances(&s3.checkpoints_in(&count_config_of(cp), &cp.name))
}

/// The keyed count's config of `cp` as the several-instance tests run it (RocksDB, 300 ms).
pub fn count_config_of(cp: &CountPipeline) -> String {
    super::count_config(
        &cp.bootstrap,
        &cp.name,
        &cp.source,
        &cp.sink,
        "rocksdb",
        "300ms",
    )
}

/// A keyed count on fresh topics whose daemon (instance a) keeps its checkpoints in the
/// object store, with the config for other instances.
pub fn on_store(prefix: &str, partitions: i32) -> Option<(CountPipeline, S3, String)> {
    let cp = CountPipeline::new(prefix, partitions, "rocksdb", "300ms")?;
    let s3 = s3();
    let config = store_config(&cp, &s3);
    std::fs::write(
        &cp.daemon.config,
        config.replace("{DIR}", &cp.dir().display().to_string()),
    )
    .expect("write config");
    Some((cp, s3, config))
}

/// The records of `now` that `before` did not hold.
pub fn since(before: &[super::Read], now: &[super::Read]) -> Vec<super::Read> {
    let mut ends: std::collections::HashMap<i32, i64> = std::collections::HashMap::new();
    for r in before {
        let end = ends.entry(r.partition).or_insert(-1);
        *end = (*end).max(r.offset);
    }
    now.iter()
        .filter(|r| r.offset > ends.get(&r.partition).copied().unwrap_or(-1))
        .cloned()
        .collect()
}

/// Instances a (`cp`'s daemon) and b (`other`) started on the test store, both assigned, and
/// a first input counted exactly; returns that input.
pub fn two_counting(
    cp: &mut CountPipeline,
    other: &mut Daemon,
) -> Vec<(Option<i32>, String, String)> {
    cp.daemon.start_with(&env("a"));
    other.start_with(&env("b"));
    other.wait_assigned();
    let input = super::count_input(3_000, 80);
    cp.produce(&input);
    cp.assert_exact(&super::expected_counts(&input), Duration::from_secs(120));
    input
}

/// `flumen offsets reset --config CONFIG --pipeline PIPELINE <how> --execute` as instance a;
/// panics unless it succeeds.
pub fn offsets_reset(config: &str, pipeline: &str, how: &[&str]) {
    let args = [
        "offsets",
        "reset",
        "--config",
        config,
        "--pipeline",
        pipeline,
    ];
    let out = tool("a", &[&args[..], how, &["--execute"]].concat());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
