//! The engine-wide tables: `[kafka]` (with its pass-through properties), `[checkpoint]`,
//! `[state]`, `[restart]` and `[schema_registry]`, and who runs a pipeline (`instance_id`, a
//! pipeline's `parallelism`); the pipelines are `plan.rs` and `validate.rs`.

use std::path::PathBuf;
use std::time::Duration;

use toml::Spanned;

use super::super::raw;
use super::super::{
    Backend, CheckpointConfig, KafkaConfig, RemoteConfig, RestartConfig, StateConfig,
};
use super::{
    BROKER_MAX_TRANSACTION_TIMEOUT, Cx, DAY, DEFAULT_TRANSACTION_TIMEOUT, HOUR, MS, TEN_MINUTES,
    default_savepoint_dir, reserved_kafka_property,
};

/// librdkafka properties that name a file.
fn is_file_property(key: &str) -> bool {
    key.ends_with(".location") || key == "sasl.kerberos.keytab"
}

impl Cx<'_> {
    /// `[checkpoint]`; with an object store and no `local_dir`, `dir` is left for the caller
    /// to place next to `state.dir`.
    pub(super) fn checkpoint(&mut self, raw: &raw::Checkpoint) -> CheckpointConfig {
        // at most a third of the broker's maximum transaction timeout: the transaction
        // timeout must hold three intervals (a checkpoint and a restart)
        let interval = self.duration(
            "checkpoint.interval",
            &raw.interval,
            Duration::from_millis(10)..=BROKER_MAX_TRANSACTION_TIMEOUT / 3,
        );
        if raw.dir.get_ref().is_empty() {
            self.problem("checkpoint.dir", raw.dir.span(), "must not be empty");
        }
        let retain = match &raw.retain {
            Some(r) if *r.get_ref() < 1 || *r.get_ref() > 1000 => {
                self.problem("checkpoint.retain", r.span(), "must be between 1 and 1000");
                1
            }
            Some(r) => usize::try_from(*r.get_ref()).unwrap_or(1),
            None => 3,
        };
        let remote = self.remote(raw);
        let dir = match (&remote, &raw.local_dir) {
            (None, _) => self.path(raw.dir.get_ref()),
            (Some(_), Some(d)) if d.get_ref().is_empty() => {
                self.problem("checkpoint.local_dir", d.span(), "must not be empty");
                PathBuf::new()
            }
            (Some(_), Some(d)) => self.path(d.get_ref()),
            (Some(_), None) => PathBuf::new(),
        };
        let savepoint_dir = match &raw.savepoint_dir {
            Some(d) if d.get_ref().is_empty() => {
                self.problem("checkpoint.savepoint_dir", d.span(), "must not be empty");
                PathBuf::new()
            }
            Some(d) => self.path(d.get_ref()),
            None => default_savepoint_dir(&dir),
        };
        CheckpointConfig {
            interval,
            dir,
            remote,
            retain,
            savepoint_dir,
        }
    }

    /// The object store of `checkpoint.dir` when it is a URL (`s3://bucket/prefix`), with
    /// `[checkpoint.s3]`; `local_dir` and `[checkpoint.s3]` only go with one.
    fn remote(&mut self, raw: &raw::Checkpoint) -> Option<RemoteConfig> {
        let url = raw.dir.get_ref();
        let Some((scheme, rest)) = url.split_once("://") else {
            if let Some(d) = &raw.local_dir {
                self.problem("checkpoint.local_dir", d.span(), "only goes with an object store in checkpoint.dir (s3://bucket/prefix); checkpoint.dir is a local directory");
            }
            if let Some(s3) = &raw.s3 {
                self.problem(
                    "checkpoint.s3",
                    s3.span(),
                    "only goes with an s3:// checkpoint.dir",
                );
            }
            return None;
        };
        if scheme != "s3" {
            self.problem("checkpoint.dir", raw.dir.span(), format!(
                "{scheme}:// is not a checkpoint store Flumen knows: a local directory, or s3://bucket/prefix (AWS S3 or an S3-compatible server with [checkpoint.s3] endpoint)"));
            return None;
        }
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            self.problem(
                "checkpoint.dir",
                raw.dir.span(),
                "names no bucket: s3://bucket/prefix",
            );
            return None;
        }
        let s3 = raw.s3.as_ref().map(Spanned::get_ref);
        let endpoint = s3.and_then(|s| s.endpoint.as_ref());
        if let Some(e) = endpoint
            && !(e.get_ref().starts_with("http://") || e.get_ref().starts_with("https://"))
        {
            self.problem(
                "checkpoint.s3.endpoint",
                e.span(),
                "must be an http:// or https:// URL",
            );
        }
        Some(RemoteConfig {
            url: url.clone(),
            bucket: bucket.to_string(),
            prefix: prefix.trim_matches('/').to_string(),
            endpoint: endpoint.map(|e| e.get_ref().clone()),
            region: s3
                .and_then(|s| s.region.as_ref())
                .map(|r| r.get_ref().clone()),
        })
    }

    pub(super) fn kafka(&mut self, raw: &raw::Kafka, interval: Duration) -> KafkaConfig {
        if raw.bootstrap_servers.get_ref().trim().is_empty() {
            self.problem(
                "kafka.bootstrap_servers",
                raw.bootstrap_servers.span(),
                "must not be empty",
            );
        }
        let transaction_timeout = match &raw.transaction_timeout {
            Some(t) => {
                // at most the broker's default transaction.max.timeout.ms
                let d = self.duration(
                    "kafka.transaction_timeout",
                    t,
                    Duration::from_secs(10)..=BROKER_MAX_TRANSACTION_TIMEOUT,
                );
                if d < interval * 3 {
                    self.problem("kafka.transaction_timeout", t.span(), format!(
                        "must be at least 3 × checkpoint.interval ({}) so a checkpoint and a restart fit in one transaction",
                        humantime::format_duration(interval * 3)));
                }
                d
            }
            None => DEFAULT_TRANSACTION_TIMEOUT.max(interval * 3),
        };
        let mut properties = Vec::new();
        for (key, value) in raw.properties.iter().flatten() {
            let path = format!("kafka.properties.\"{}\"", key.get_ref());
            if let Some(why) = reserved_kafka_property(key.get_ref()) {
                self.problem(
                    &path,
                    key.span(),
                    format!(
                        "{:?} is owned by Flumen and cannot be set: {why}",
                        key.get_ref()
                    ),
                );
                continue;
            }
            let text = match value.get_ref() {
                // librdkafka's files (ssl.ca.location, sasl.kerberos.keytab, …): relative ones
                // from the config file's directory too
                toml::Value::String(s) if is_file_property(key.get_ref()) && !s.is_empty() => {
                    self.path(s).display().to_string()
                }
                toml::Value::String(s) => s.clone(),
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                toml::Value::Float(f) => f.to_string(),
                _ => {
                    self.problem(&path, value.span(), "must be a string, number or boolean");
                    continue;
                }
            };
            if key.get_ref() == "statistics.interval.ms" && text.trim() == "0" {
                self.problem(
                    &path,
                    value.span(),
                    "Flumen reads librdkafka's statistics for the lag metric and readiness: give a positive interval (default 2000)",
                );
                continue;
            }
            properties.push((key.get_ref().clone(), text));
        }
        KafkaConfig {
            bootstrap_servers: raw.bootstrap_servers.get_ref().clone(),
            transaction_timeout,
            properties,
        }
    }

    pub(super) fn state(&mut self, raw: Option<&raw::State>) -> StateConfig {
        let Some(raw) = raw else {
            return StateConfig {
                backend: Backend::RocksDb,
                // a default is not a written path: it stays in the working directory
                dir: PathBuf::from("data/state"),
                memory_budget_bytes: 256 << 20,
            };
        };
        let backend = match raw.backend.get_ref().as_str() {
            "rocksdb" => Backend::RocksDb,
            "memory" => Backend::Memory,
            other => {
                self.problem(
                    "state.backend",
                    raw.backend.span(),
                    format!("unknown backend {other:?}; expected \"rocksdb\" or \"memory\""),
                );
                Backend::RocksDb
            }
        };
        let dir = raw
            .dir
            .as_ref()
            .map_or_else(|| PathBuf::from("data/state"), |d| self.path(d.get_ref()));
        let memory_budget_bytes = match &raw.memory_budget_mb {
            Some(m) if *m.get_ref() < 8 || *m.get_ref() > 1 << 20 => {
                self.problem(
                    "state.memory_budget_mb",
                    m.span(),
                    "must be between 8 and 1048576",
                );
                256 << 20
            }
            Some(m) => usize::try_from(*m.get_ref()).unwrap_or(256) << 20,
            None => 256 << 20,
        };
        StateConfig {
            backend,
            dir,
            memory_budget_bytes,
        }
    }

    pub(super) fn restart(&mut self, raw: Option<&raw::Restart>) -> RestartConfig {
        let mut cfg = RestartConfig {
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
            max_attempts: 10,
        };
        let Some(raw) = raw else { return cfg };
        if let Some(d) = &raw.initial_backoff {
            cfg.initial_backoff = self.duration("restart.initial_backoff", d, MS..=HOUR);
        }
        if let Some(d) = &raw.max_backoff {
            cfg.max_backoff = self.duration("restart.max_backoff", d, MS..=DAY);
        }
        if let Some(n) = &raw.max_attempts {
            match u32::try_from(*n.get_ref()) {
                Ok(v) if v >= 1 => cfg.max_attempts = v,
                _ => self.problem(
                    "restart.max_attempts",
                    n.span(),
                    "must be a whole number of at least 1",
                ),
            }
        }
        cfg
    }

    /// `[schema_registry]`: checked and kept for the runtime (no request is made here).
    pub(super) fn schema_registry(
        &mut self,
        raw: &raw::SchemaRegistry,
        state_dir: &std::path::Path,
    ) {
        let url = raw.url.get_ref().trim();
        // `user:password@` would show in logs, errors and the cache directory's name: refused,
        // without repeating the URL
        let authority = url.split("://").nth(1).unwrap_or(url).split('/').next();
        if authority.is_some_and(|a| a.contains('@')) {
            self.problem(
                "schema_registry.url",
                raw.url.span(),
                "credentials do not belong in the URL (they would show in logs, errors and file names); \
                 set schema_registry.username and schema_registry.password_env (or password) instead",
            );
            return;
        }
        let host = url
            .strip_prefix("http://")
            .or_else(|| url.strip_prefix("https://"));
        if host.is_none_or(|h| h.trim_matches('/').is_empty()) {
            self.problem(
                "schema_registry.url",
                raw.url.span(),
                format!("{url:?} is not a registry URL; write it like \"http://localhost:8081\""),
            );
            return;
        }
        let timeout = match &raw.timeout {
            Some(t) => self.duration("schema_registry.timeout", t, MS..=TEN_MINUTES),
            None => Duration::from_secs(10),
        };
        let cache = raw.cache_dir.as_ref().map_or_else(
            || state_dir.join("schema-registry"),
            |d| self.path(d.get_ref()),
        );
        let auth = self.registry_auth(raw);
        self.sources.registry = Some(crate::config::SchemaRegistryConfig {
            url: url.to_string(),
            timeout,
            cache_dir: cache,
            auth,
        });
    }

    /// `username` with `password` or `password_env` (read now, so a missing variable is
    /// reported with the config's other problems).
    fn registry_auth(&mut self, raw: &raw::SchemaRegistry) -> Option<(String, String)> {
        let password = match (&raw.password, &raw.password_env) {
            (Some(_), Some(env)) => {
                self.problem(
                    "schema_registry.password_env",
                    env.span(),
                    "give password or password_env, not both",
                );
                None
            }
            (Some(p), None) => Some(p.get_ref().clone()),
            (None, Some(env)) => match std::env::var(env.get_ref()) {
                Ok(p) => Some(p),
                Err(_) => {
                    self.problem(
                        "schema_registry.password_env",
                        env.span(),
                        format!("environment variable {} is not set", env.get_ref()),
                    );
                    None
                }
            },
            (None, None) => None,
        };
        match (&raw.username, password) {
            (Some(user), Some(password)) => Some((user.get_ref().clone(), password)),
            (Some(user), None) if raw.password.is_none() && raw.password_env.is_none() => {
                self.problem(
                    "schema_registry.username",
                    user.span(),
                    "a username needs password or password_env",
                );
                None
            }
            (None, Some(_)) => {
                let (path, span) = match (&raw.password, &raw.password_env) {
                    (Some(p), _) => ("schema_registry.password", p.span()),
                    (None, Some(e)) => ("schema_registry.password_env", e.span()),
                    (None, None) => ("schema_registry", raw.url.span()),
                };
                self.problem(path, span, "a password needs a username");
                None
            }
            _ => None,
        }
    }

    /// `instance_id`, or the value of the environment variable `instance_id_env` names (read
    /// now, so a missing variable is reported with the config's other problems); "0" without
    /// either.
    pub(super) fn instance_id(&mut self, raw: &raw::Root) -> String {
        match (&raw.instance_id, &raw.instance_id_env) {
            (Some(_), Some(env)) => {
                self.problem(
                    "instance_id_env",
                    env.span(),
                    "give instance_id or instance_id_env, not both",
                );
                String::new()
            }
            (Some(id), None) => self.name("instance_id", id),
            (None, Some(env)) => match std::env::var(env.get_ref()) {
                Ok(id) => {
                    let value = Spanned::new(env.span(), id);
                    let path = format!("instance_id_env ({})", env.get_ref());
                    self.name(&path, &value)
                }
                Err(_) => {
                    self.problem(
                        "instance_id_env",
                        env.span(),
                        format!("environment variable {} is not set", env.get_ref()),
                    );
                    String::new()
                }
            },
            (None, None) => "0".to_string(),
        }
    }

    /// `parallelism`: 1 to 64 threads (default 1).
    pub(super) fn parallelism(&mut self, path: &str, raw: &raw::Pipeline) -> u32 {
        match &raw.parallelism {
            None => 1,
            Some(n) => match u32::try_from(*n.get_ref()) {
                Ok(n @ 1..=64) => n,
                _ => {
                    self.problem(
                        format!("{path}.parallelism"),
                        n.span(),
                        "must be between 1 and 64 (threads of this pipeline in this instance)",
                    );
                    1
                }
            },
        }
    }
}

#[cfg(test)]
mod tests;
