//! `[checkpoint]` with an object store.

use crate::config::from_str;

const CONFIG: &str = r#"
[kafka]
bootstrap_servers = "127.0.0.1:19092"

[checkpoint]
interval = "1s"
dir = "s3://flumen/prod/checkpoints/"

[checkpoint.s3]
endpoint = "http://127.0.0.1:19300"
region = "us-east-1"

[state]
backend = "rocksdb"
dir = "data/state"

[[pipelines]]
name = "counts"
source = { topic = "events", format = "json" }
sink = { topic = "counts", format = "json" }
operators = [{ type = "key_by", field = "user" }, { type = "count" }]
"#;

#[test]
fn an_s3_dir_names_the_bucket_and_prefix_and_keeps_local_copies_next_to_the_state() {
    let c = from_str(CONFIG).expect("valid");
    let remote = c.checkpoint.remote.expect("an object store");
    assert_eq!(remote.bucket, "flumen");
    assert_eq!(remote.prefix, "prod/checkpoints");
    assert_eq!(remote.endpoint.as_deref(), Some("http://127.0.0.1:19300"));
    assert_eq!(remote.region.as_deref(), Some("us-east-1"));
    assert_eq!(c.checkpoint.dir, std::path::Path::new("data/checkpoints"));
    assert_eq!(
        c.checkpoint.savepoint_dir,
        std::path::Path::new("data/savepoints")
    );
    let local = from_str(&CONFIG.replace(
        "[checkpoint.s3]",
        "local_dir = \"/var/lib/flumen/checkpoints\"\n\n[checkpoint.s3]",
    ))
    .expect("valid");
    assert_eq!(
        local.checkpoint.dir,
        std::path::Path::new("/var/lib/flumen/checkpoints")
    );
}

#[test]
fn object_store_mistakes_are_reported_together_with_their_place() {
    let problems = |text: &str| -> Vec<String> {
        from_str(text)
            .unwrap_err()
            .iter()
            .map(ToString::to_string)
            .collect()
    };
    let found = problems(&CONFIG.replace("s3://flumen/prod/checkpoints/", "gs://flumen/x"));
    assert!(
        found[0].starts_with("checkpoint.dir (7:7): gs:// is not a checkpoint store"),
        "{found:?}"
    );
    let found = problems(
        &CONFIG
            .replace("s3://flumen/prod/checkpoints/", "s3://")
            .replace("http://127.0.0.1:19300", "127.0.0.1:19300"),
    );
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].contains("names no bucket"), "{found:?}");
    let found = problems(&CONFIG.replace("http://127.0.0.1:19300", "127.0.0.1:19300"));
    assert!(
        found[0].starts_with("checkpoint.s3.endpoint (10:12): must be an http:// or https:// URL"),
        "{found:?}"
    );
    // a local dir takes neither local_dir nor [checkpoint.s3]
    let found = problems(&CONFIG.replace(
        "dir = \"s3://flumen/prod/checkpoints/\"",
        "dir = \"data/checkpoints\"\nlocal_dir = \"x\"",
    ));
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(
        found[0].starts_with("checkpoint.local_dir (8:13): only goes with an object store"),
        "{found:?}"
    );
    assert!(found[1].starts_with("checkpoint.s3"), "{found:?}");
}

#[test]
fn statistics_cannot_be_turned_off() {
    let text = CONFIG.replace(
        "[checkpoint]\n",
        "[kafka.properties]\n\"statistics.interval.ms\" = 0\n\n[checkpoint]\n",
    );
    let problems = from_str(&text).unwrap_err();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0]
            .to_string()
            .starts_with("kafka.properties.\"statistics.interval.ms\" (6:28): Flumen reads librdkafka's statistics"),
        "{}",
        problems[0]
    );
    let text = CONFIG.replace(
        "[checkpoint]\n",
        "[kafka.properties]\n\"statistics.interval.ms\" = 5000\n\n[checkpoint]\n",
    );
    assert!(from_str(&text).is_ok());
}
