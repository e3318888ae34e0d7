//! Validation: walks the raw config once, collects every problem with its `line:col`, and
//! builds typed values only when there are none.

use std::collections::{BTreeMap, HashSet};
use std::ops::Range;
use std::path::PathBuf;
use std::time::Duration;

use toml::Spanned;

use super::raw;
use super::{Config, Format, OnError, PipelineConfig, Plan, Problem, SinkConfig, SourceConfig};

/// librdkafka settings the engine owns: exactly-once depends on their values.
const RESERVED_PROPERTIES: &[(&str, &str)] = &[
    ("bootstrap.servers", "set kafka.bootstrap_servers instead"),
    (
        "enable.auto.commit",
        "offsets commit inside the checkpoint's transaction",
    ),
    (
        "enable.auto.offset.store",
        "offsets commit inside the checkpoint's transaction",
    ),
    (
        "auto.commit.interval.ms",
        "offsets commit inside the checkpoint's transaction",
    ),
    ("isolation.level", "Flumen reads with read_committed"),
    (
        "transactional.id",
        "set pipelines.transactional_id_prefix instead",
    ),
    (
        "enable.idempotence",
        "the transactional producer needs idempotence",
    ),
    ("acks", "the transactional producer needs acks=all"),
    (
        "transaction.timeout.ms",
        "set kafka.transaction_timeout instead",
    ),
    ("group.id", "set pipelines.group_id instead"),
    ("group.instance.id", "set instance_id instead"),
    (
        "partitioner",
        "Flumen partitions by murmur2, as Kafka's Java clients do",
    ),
    (
        "auto.offset.reset",
        "a fresh pipeline reads from the earliest offset",
    ),
    ("enable.partition.eof", "owned by the engine"),
];

/// Why a librdkafka property may not be set in `[kafka.properties]`, if it may not.
pub fn reserved_kafka_property(key: &str) -> Option<&'static str> {
    RESERVED_PROPERTIES
        .iter()
        .find(|(k, _)| *k == key)
        .map(|(_, why)| *why)
}

const DEFAULT_TRANSACTION_TIMEOUT: Duration = Duration::from_secs(60);
/// The broker's default `transaction.max.timeout.ms` (15 minutes).
const BROKER_MAX_TRANSACTION_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// Bounds of durations (every duration has a range; none may be zero where zero means
/// nothing, none so large that it is surely a typo).
const MS: Duration = Duration::from_millis(1);
const TEN_MINUTES: Duration = Duration::from_secs(10 * 60);
const HOUR: Duration = Duration::from_secs(3_600);
const DAY: Duration = Duration::from_secs(24 * 3_600);
/// Event-time spans (lateness, out-of-orderness, join windows).
const MONTH: Duration = Duration::from_secs(31 * 24 * 3_600);
/// Window sizes, TTLs, idle timeouts.
const YEAR: Duration = Duration::from_secs(366 * 24 * 3_600);

/// Parses and validates config text, returning every problem found.
/// [`from_str_with`] for a binary without custom operators.
pub fn from_str(text: &str) -> Result<Config, Vec<Problem>> {
    from_str_with(text, &[], None)
}

/// Parses and validates a config; `operators` names the custom operators it may use, and
/// relative paths are taken from `base` (the config file's directory; the working directory
/// without it). `${VAR}` references read the process's environment.
pub fn from_str_with(
    text: &str,
    operators: &[String],
    base: Option<&std::path::Path>,
) -> Result<Config, Vec<Problem>> {
    let parsed = super::parse::parse(text, &|name| std::env::var(name).ok());
    let mut problems = parsed.problems;
    let Some(raw) = parsed.raw else {
        return Err(problems);
    };
    let mut cx = Cx {
        text,
        problems: Vec::new(),
        schemas: crate::codec::avro::Registry::default(),
        sources: crate::config::SchemaSources::default(),
        operators,
        base: base.map(std::path::Path::to_path_buf),
    };
    let config = cx.root(raw);
    let unexpanded = parsed.unexpanded;
    cx.problems
        .retain(|p| !unexpanded.contains(&(p.line, p.col)));
    problems.append(&mut cx.problems);
    if problems.is_empty() {
        Ok(config)
    } else {
        // in the file's order
        problems.sort_by_key(|p| (p.line, p.col));
        Err(problems)
    }
}

struct Cx<'a> {
    text: &'a str,
    /// Relative paths are relative to it (the config file's directory).
    base: Option<PathBuf>,
    problems: Vec<Problem>,
    /// `[schemas]`, read (and parsed, to check them) before the pipelines that refer to them.
    schemas: crate::codec::avro::Registry,
    /// `[schemas]` and `[schema_registry]` as written, for the config.
    sources: crate::config::SchemaSources,
    /// The custom operators' names the binary offers.
    operators: &'a [String],
}

impl Cx<'_> {
    /// A path as written, relative ones taken from the config file's directory.
    fn path(&self, written: &str) -> PathBuf {
        let p = PathBuf::from(written);
        match &self.base {
            Some(base) if p.is_relative() => base.join(p),
            _ => p,
        }
    }

    fn problem(&mut self, path: impl Into<String>, span: Range<usize>, message: impl Into<String>) {
        let (line, col) = line_col(self.text, span.start);
        self.problems.push(Problem {
            path: path.into(),
            line,
            col,
            message: message.into(),
        });
    }

    /// A duration within `range` (both ends included): one that does not parse, or lies
    /// outside, is a problem at its `line:col` (and the nearest end is returned).
    fn duration(
        &mut self,
        path: &str,
        value: &Spanned<String>,
        range: std::ops::RangeInclusive<Duration>,
    ) -> Duration {
        match humantime::parse_duration(value.get_ref()) {
            Ok(d) if range.contains(&d) => d,
            Ok(d) => {
                let (min, max) = (*range.start(), *range.end());
                self.problem(
                    path,
                    value.span(),
                    format!(
                        "{:?} is out of range: must be {}",
                        value.get_ref(),
                        if min.is_zero() {
                            format!("at most {}", humantime::format_duration(max))
                        } else {
                            format!(
                                "between {} and {}",
                                humantime::format_duration(min),
                                humantime::format_duration(max)
                            )
                        }
                    ),
                );
                d.clamp(min, max)
            }
            Err(e) => {
                self.problem(
                    path,
                    value.span(),
                    format!(
                        "invalid duration {:?} ({e}); write it like \"30s\" or \"500ms\"",
                        value.get_ref()
                    ),
                );
                *range.start()
            }
        }
    }

    /// `format` (and, for Avro, `schema_id`) of a source or sink at `path` (`….format`).
    fn format(
        &mut self,
        path: &str,
        value: Option<&Spanned<String>>,
        schema_id: Option<&Spanned<i64>>,
        whole: Range<usize>,
    ) -> Format {
        let id_path = path.replace(".format", ".schema_id");
        let format = match value.map(|v| (v.get_ref().as_str(), v.span())) {
            None | Some(("json", _)) => Format::Json,
            Some(("string", _)) => Format::String,
            Some(("bytes", _)) => Format::Bytes,
            Some(("avro", span)) => match schema_id {
                None => {
                    self.problem(
                        path,
                        span,
                        "\"avro\" needs schema_id (an id listed in [schemas])",
                    );
                    Format::Json
                }
                Some(id) => match u32::try_from(*id.get_ref()) {
                    Ok(n) if self.schemas.contains(n) => Format::Avro { schema_id: n },
                    _ => {
                        self.problem(
                            &id_path,
                            id.span(),
                            format!("schema id {} is not listed in [schemas]", id.get_ref()),
                        );
                        Format::Json
                    }
                },
            },
            Some((other, span)) => {
                self.problem(
                    path,
                    span,
                    format!("unknown format {other:?}; expected \"json\", \"string\", \"bytes\" or \"avro\""),
                );
                Format::Json
            }
        };
        if let Some(id) = schema_id
            && !matches!(format, Format::Avro { .. })
            && value.is_some_and(|v| v.get_ref() != "avro")
        {
            self.problem(&id_path, id.span(), "only used with format = \"avro\"");
        }
        if value.is_none() && schema_id.is_some() {
            self.problem(&id_path, whole, "only used with format = \"avro\"");
        }
        format
    }

    fn name(&mut self, path: &str, value: &Spanned<String>) -> String {
        let s = value.get_ref();
        let ok = !s.is_empty()
            && s.len() <= 200
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if !ok {
            self.problem(
                path,
                value.span(),
                format!("{s:?} must be 1 to 200 characters of [A-Za-z0-9._-]"),
            );
        }
        s.clone()
    }

    fn root(&mut self, raw: raw::Root) -> Config {
        let mut checkpoint = self.checkpoint(raw.checkpoint.get_ref());
        let kafka = self.kafka(raw.kafka.get_ref(), checkpoint.interval);
        let state = self.state(raw.state.as_ref().map(Spanned::get_ref));
        let raw_checkpoint = raw.checkpoint.get_ref();
        if checkpoint.remote.is_some() && raw_checkpoint.local_dir.is_none() {
            // the local copies of an object store's checkpoints: next to the live state
            checkpoint.dir = state
                .dir
                .parent()
                .map_or_else(|| PathBuf::from("checkpoints"), |p| p.join("checkpoints"));
            if raw_checkpoint.savepoint_dir.is_none() {
                checkpoint.savepoint_dir = default_savepoint_dir(&checkpoint.dir);
            }
        }
        let restart = self.restart(raw.restart.as_ref().map(Spanned::get_ref));
        let instance_id = self.instance_id(&raw);
        for (id, file) in raw.schemas.iter().flatten() {
            let path = format!("schemas.{}", id.get_ref());
            match id.get_ref().parse::<u32>() {
                Err(_) => self.problem(
                    path,
                    id.span(),
                    "a schema id is a number (the Confluent schema id)",
                ),
                Ok(n) => {
                    let file_path = self.path(file.get_ref());
                    match self.schemas.add(n, &file_path) {
                        Ok(()) => {
                            self.sources.files.insert(n, file_path);
                        }
                        Err(e) => self.problem(path, file.span(), e),
                    }
                }
            }
        }
        if let Some(registry) = &raw.schema_registry {
            self.schema_registry(registry.get_ref(), &state.dir);
        }
        let admin = raw
            .admin
            .as_ref()
            .map(|a| self.admin(a.get_ref(), kafka.transaction_timeout));
        let shutdown_timeout = raw
            .shutdown_timeout
            .as_ref()
            .map_or(Duration::from_secs(30), |d| {
                self.duration("shutdown_timeout", d, Duration::from_secs(1)..=HOUR)
            });
        let stuck_timeout = self.stuck_timeout(
            raw.stuck_timeout.as_ref(),
            kafka.transaction_timeout,
            admin.as_ref(),
        );
        let mut pipelines = Vec::new();
        if raw.pipelines.get_ref().is_empty() {
            self.problem(
                "pipelines",
                raw.pipelines.span(),
                "at least one [[pipelines]] entry is needed",
            );
        }
        let mut names = HashSet::new();
        let mut txn_ids = HashSet::new();
        for (i, p) in raw.pipelines.get_ref().iter().enumerate() {
            let path = format!("pipelines[{i}]");
            let pipeline = self.pipeline(&path, p.get_ref(), &instance_id);
            if !names.insert(pipeline.name.clone()) {
                self.problem(
                    format!("{path}.name"),
                    p.get_ref().name.span(),
                    format!("pipeline name {:?} is used twice", pipeline.name),
                );
            }
            for thread in pipeline.threads() {
                if !txn_ids.insert(thread.transactional_id.clone()) {
                    self.problem(
                        format!("{path}.transactional_id_prefix"),
                        p.span(),
                        format!(
                            "transactional id {:?} is used twice; pipelines would fence each other",
                            thread.transactional_id
                        ),
                    );
                }
            }
            if let (Some(et), Some(raw_et)) = (
                &pipeline.source.event_time,
                &p.get_ref().source.get_ref().event_time,
            ) && et.idle_timeout < checkpoint.interval * 3
            {
                // a source partition is heard from at least once per checkpoint (its records, or
                // a marker); a shorter timeout would take a live partition for an idle one
                self.problem(
                    format!("{path}.source.event_time.idle_timeout"),
                    raw_et.span(),
                    format!(
                        "must be at least 3 checkpoint intervals ({:?}), or live partitions count as idle",
                        checkpoint.interval * 3
                    ),
                );
            }
            pipelines.push(pipeline);
        }
        Config {
            kafka,
            checkpoint,
            state,
            restart,
            instance_id,
            schemas: std::mem::take(&mut self.sources),
            admin,
            shutdown_timeout,
            stuck_timeout,
            pipelines,
        }
    }

    fn pipeline(&mut self, path: &str, raw: &raw::Pipeline, instance_id: &str) -> PipelineConfig {
        let name = self.name(&format!("{path}.name"), &raw.name);
        let group_id = match &raw.group_id {
            Some(g) => self.name(&format!("{path}.group_id"), g),
            None => format!("flumen-{name}"),
        };
        let prefix = match &raw.transactional_id_prefix {
            Some(p) => self.name(&format!("{path}.transactional_id_prefix"), p),
            None => format!("flumen-{name}"),
        };
        let src = raw.source.get_ref();
        let source = SourceConfig {
            topic: self.name(&format!("{path}.source.topic"), &src.topic),
            format: self.format(
                &format!("{path}.source.format"),
                src.format.as_ref(),
                src.schema_id.as_ref(),
                raw.source.span(),
            ),
            key_field: src.key_field.as_ref().map(|k| k.get_ref().clone()),
            event_time: src
                .event_time
                .as_ref()
                .map(|e| self.event_time(&format!("{path}.source.event_time"), e)),
        };
        if let (Some(et), Some(raw_et)) = (&source.event_time, &src.event_time)
            && et.field.is_some()
            && !source.format.is_structured()
        {
            self.problem(
                format!("{path}.source.event_time.field"),
                raw_et.span(),
                "an event time field needs source.format = \"json\" or \"avro\"",
            );
        }
        let snk = raw.sink.get_ref();
        let sink = SinkConfig {
            topic: self.name(&format!("{path}.sink.topic"), &snk.topic),
            format: self.format(
                &format!("{path}.sink.format"),
                snk.format.as_ref(),
                snk.schema_id.as_ref(),
                raw.sink.span(),
            ),
        };
        if source.topic == sink.topic {
            self.problem(
                format!("{path}.sink.topic"),
                snk.topic.span(),
                "the sink must not be the source topic",
            );
        }
        if source.format == Format::Bytes && sink.format != Format::Bytes {
            self.problem(
                format!("{path}.sink.format"),
                raw.sink.span(),
                "a \"bytes\" source can only go to a \"bytes\" sink",
            );
        }
        let plan = self.plan(path, raw, &source);
        let (on_error, dead_letter_topic) = self.on_error(path, raw, &plan, &source, &sink);
        PipelineConfig {
            name,
            group_id,
            transactional_id: format!("{prefix}-{instance_id}"),
            parallelism: self.parallelism(path, raw),
            thread: 0,
            source,
            sink,
            plan,
            on_error,
            dead_letter_topic,
        }
    }

    /// An `on_error` value.
    fn policy(&mut self, path: &str, value: &Spanned<String>) -> OnError {
        match value.get_ref().as_str() {
            "fail" => OnError::Fail,
            "skip" => OnError::Skip,
            "dead_letter" => OnError::DeadLetter,
            other => {
                self.problem(
                    path,
                    value.span(),
                    format!("unknown error policy {other:?}: expected \"fail\", \"skip\" or \"dead_letter\""),
                );
                OnError::Fail
            }
        }
    }

    /// The pipeline's policy and dead-letter topic, which must be set exactly when the
    /// pipeline or one of its operators dead-letters.
    fn on_error(
        &mut self,
        path: &str,
        raw: &raw::Pipeline,
        plan: &Plan,
        source: &SourceConfig,
        sink: &SinkConfig,
    ) -> (OnError, Option<String>) {
        let policy = raw.on_error.as_ref().map_or(OnError::Fail, |p| {
            self.policy(&format!("{path}.on_error"), p)
        });
        let steps = plan
            .before_on_error
            .iter()
            .chain(&plan.after_on_error)
            .chain(plan.aggregate.iter().map(|a| &a.on_error));
        let steps_dead_letter = steps.flatten().any(|p| *p == OnError::DeadLetter);
        let wanted = policy == OnError::DeadLetter || steps_dead_letter;
        let topic = match &raw.dead_letter_topic {
            Some(t) => {
                let name = self.name(&format!("{path}.dead_letter_topic"), t);
                if !wanted {
                    self.problem(
                        format!("{path}.dead_letter_topic"),
                        t.span(),
                        "only used with on_error = \"dead_letter\"",
                    );
                } else if name == source.topic || name == sink.topic {
                    self.problem(
                        format!("{path}.dead_letter_topic"),
                        t.span(),
                        "the dead-letter topic must differ from the source and the sink",
                    );
                }
                Some(name)
            }
            None => {
                if wanted {
                    let span = raw.on_error.as_ref().map_or(0..0, Spanned::span);
                    self.problem(
                        format!("{path}.on_error"),
                        span,
                        "\"dead_letter\" needs dead_letter_topic",
                    );
                }
                None
            }
        };
        (policy, topic)
    }
}

/// 1-based line and column (in characters) of a byte offset.
pub(super) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let col = before.get(line_start..).map_or(0, |s| s.chars().count()) + 1;
    (line, col)
}

/// Best-effort dotted key path for a parse error: the enclosing `[table]` header and the key
/// on the error's line.
pub(super) fn key_path_at(text: &str, offset: usize) -> String {
    let before = text.get(..offset.min(text.len())).unwrap_or(text);
    let mut table = String::new();
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for line in before.lines() {
        let t = line.trim();
        if let Some(name) = t.strip_prefix("[[").and_then(|s| s.split("]]").next()) {
            let n = counts.entry(name.trim().to_string()).or_insert(0);
            table = format!("{}[{}]", name.trim(), *n);
            *n += 1;
        } else if let Some(name) = t.strip_prefix('[').and_then(|s| s.split(']').next()) {
            table = name.trim().to_string();
        }
    }
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = text
        .get(line_start..)
        .and_then(|s| s.lines().next())
        .unwrap_or("");
    let key = line
        .split('=')
        .next()
        .map(str::trim)
        .filter(|k| !k.is_empty() && !k.starts_with('['));
    match (table.is_empty(), key) {
        (true, Some(k)) => k.to_string(),
        (false, Some(k)) => format!("{table}.{k}"),
        (false, None) => table,
        (true, None) => "config".to_string(),
    }
}

mod admin;
mod engine;
mod plan;
mod time;

#[cfg(test)]
mod fuzz;
#[cfg(test)]
mod tests;

/// `savepoints` next to the checkpoint directory: `data/checkpoints` → `data/savepoints`.
fn default_savepoint_dir(checkpoints: &std::path::Path) -> PathBuf {
    checkpoints
        .parent()
        .map_or_else(|| PathBuf::from("savepoints"), |p| p.join("savepoints"))
}
