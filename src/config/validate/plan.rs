//! The `operators = [...]` list → a [`Plan`]: which steps run before the aggregate, the
//! aggregate itself, and whether records need the repartition topic.

use std::ops::Range;
use std::time::Duration;

use toml::Spanned;

use super::super::raw;
use super::super::{
    Aggregate, AggregateKind, Emit, Format, OnError, Plan, Predicate, SourceConfig, Step,
    StreamJoinMode, TimeDomain,
};
use super::{Cx, MONTH};

impl Cx<'_> {
    pub(super) fn plan(&mut self, path: &str, raw: &raw::Pipeline, source: &SourceConfig) -> Plan {
        let mut plan = Plan {
            before: Vec::new(),
            aggregate: None,
            repartition: false,
            after: Vec::new(),
            before_on_error: Vec::new(),
            after_on_error: Vec::new(),
        };
        let mut key_by: Option<String> = None;
        for (i, op) in raw.operators.iter().enumerate() {
            let path = format!("{path}.operators[{i}]");
            let op_ref = op.get_ref();
            let kind = op_ref.kind.get_ref().as_str();
            let allowed: &[&str] = match kind {
                "key_by" => &["field"],
                "count" => &["id", "output", "emit", "window", "ttl", "time"],
                "sum" | "min" | "max" | "avg" | "first" | "last" | "count_distinct" => {
                    &["id", "field", "output", "emit", "window", "ttl", "time"]
                }
                "collect" => &[
                    "id", "field", "output", "max", "emit", "window", "ttl", "time",
                ],
                "dedupe" => &["id", "field", "ttl", "time"],
                "join" => &[
                    "id",
                    "table",
                    "stream",
                    "within",
                    "into",
                    "mode",
                    "format",
                    "schema_id",
                ],
                "custom" => &["id", "name"],
                "filter" => &["field", "equals", "not_equals", "expr"],
                "map" => &["keep", "drop", "rename", "expr"],
                other => {
                    self.problem(format!("{path}.type"), op_ref.kind.span(), format!(
                        "unknown operator type {other:?}; expected one of key_by, filter, map, count, sum, min, max, avg, first, last, count_distinct, collect, dedupe, join, custom"));
                    continue;
                }
            };
            self.check_fields(&path, kind, op_ref, allowed);
            let on_error = op_ref
                .on_error
                .as_ref()
                .map(|p| self.policy(&format!("{path}.on_error"), p));
            let needs_json = kind != "count" && !(kind == "dedupe" && op_ref.field.is_none());
            if kind == "join" || kind == "custom" {
                let keyed = if kind == "join" {
                    self.join(&path, op, source)
                } else {
                    self.custom(&path, op)
                };
                self.aggregate(
                    &path,
                    op,
                    &mut plan,
                    (key_by.as_deref(), source, on_error.clone()),
                    keyed,
                    kind,
                );
                continue;
            }
            if needs_json && !source.format.is_structured() {
                self.problem(
                    format!("{path}.type"),
                    op_ref.kind.span(),
                    format!(
                        "{kind} reads record fields and needs source.format = \"json\" or \"avro\""
                    ),
                );
            }
            let target_after = plan.aggregate.is_some();
            if kind == "dedupe" {
                self.dedupe(&path, op, &mut plan, &mut key_by, (source, on_error));
                continue;
            }
            let step = match (kind, &op_ref.expr) {
                ("filter" | "map", Some(expr)) => match self.expr_step(&path, kind, op_ref, expr) {
                    Some(step) => step,
                    None => continue,
                },
                _ => match kind {
                    "key_by" | "filter" | "sum" | "min" | "max" | "avg" | "first" | "last"
                    | "count_distinct" | "collect" => {
                        let Some(field) = op_ref.field.as_ref() else {
                            self.problem(
                                format!("{path}.field"),
                                op.span(),
                                format!("{kind} needs a field"),
                            );
                            continue;
                        };
                        let field = field.get_ref().clone();
                        match kind {
                            "key_by" => {
                                if target_after || key_by.is_some() {
                                    self.problem(
                                        format!("{path}.type"),
                                        op_ref.kind.span(),
                                        "only one key_by is supported, before the aggregate",
                                    );
                                    continue;
                                }
                                key_by = Some(field.clone());
                                Step::KeyBy { field }
                            }
                            "filter" => match self.predicate(&path, op) {
                                Some(predicate) => Step::Filter { field, predicate },
                                None => continue,
                            },
                            aggregate => {
                                let kind = match aggregate {
                                    "sum" => AggregateKind::Sum { field },
                                    "min" => AggregateKind::Min { field },
                                    "max" => AggregateKind::Max { field },
                                    "avg" => AggregateKind::Avg { field },
                                    "first" => AggregateKind::First { field },
                                    "last" => AggregateKind::Last { field },
                                    "count_distinct" => AggregateKind::CountDistinct { field },
                                    _ => AggregateKind::Collect {
                                        field,
                                        max: self.collect_max(&path, op_ref),
                                    },
                                };
                                let name = kind.name();
                                self.aggregate(
                                    &path,
                                    op,
                                    &mut plan,
                                    (key_by.as_deref(), source, on_error.clone()),
                                    kind,
                                    name,
                                );
                                continue;
                            }
                        }
                    }
                    "count" => {
                        self.aggregate(
                            &path,
                            op,
                            &mut plan,
                            (key_by.as_deref(), source, on_error.clone()),
                            AggregateKind::Count,
                            "count",
                        );
                        continue;
                    }
                    _ => Step::Map {
                        keep: op_ref.keep.as_ref().map(|k| k.get_ref().clone()),
                        drop: op_ref
                            .drop
                            .as_ref()
                            .map(|d| d.get_ref().clone())
                            .unwrap_or_default(),
                        rename: op_ref
                            .rename
                            .as_ref()
                            .map(|r| r.get_ref().clone().into_iter().collect())
                            .unwrap_or_default(),
                    },
                },
            };
            if target_after {
                plan.after.push(step);
                plan.after_on_error.push(on_error);
            } else {
                plan.before.push(step);
                plan.before_on_error.push(on_error);
            }
        }
        if plan.aggregate.is_some() {
            plan.repartition = match (&key_by, &source.key_field) {
                (Some(k), Some(declared)) => k != declared,
                (Some(_), None) => true,
                (None, _) => false,
            };
        }
        plan
    }

    /// A `filter` or `map` with `expr`: the program must compile, and stands alone.
    fn expr_step(
        &mut self,
        path: &str,
        kind: &str,
        op: &raw::Operator,
        expr: &Spanned<String>,
    ) -> Option<Step> {
        let others: [(&str, Option<Range<usize>>); 6] = [
            ("field", op.field.as_ref().map(Spanned::span)),
            ("equals", op.equals.as_ref().map(Spanned::span)),
            ("not_equals", op.not_equals.as_ref().map(Spanned::span)),
            ("keep", op.keep.as_ref().map(Spanned::span)),
            ("drop", op.drop.as_ref().map(Spanned::span)),
            ("rename", op.rename.as_ref().map(Spanned::span)),
        ];
        let mut ok = true;
        for (name, span) in others {
            if let Some(span) = span {
                self.problem(
                    format!("{path}.{name}"),
                    span,
                    format!("{kind} takes either expr or {name}, not both"),
                );
                ok = false;
            }
        }
        let code = expr.get_ref();
        if let Err(errs) = crate::expr::check(code) {
            for e in errs {
                // inside the TOML string: after its opening quote (exact for strings without
                // escapes, which jq programs seldom need)
                let at = expr.span().start + 1 + e.offset;
                self.problem(
                    format!("{path}.expr"),
                    at..at,
                    format!("jq: {} (at {:?})", e.message, snippet(code, e.offset)),
                );
            }
            ok = false;
        }
        let expr = code.clone();
        ok.then(|| match kind {
            "filter" => Step::Select { expr },
            _ => Step::Transform { expr },
        })
    }

    /// `custom`: a name this binary registered.
    fn custom(&mut self, path: &str, op: &Spanned<raw::Operator>) -> AggregateKind {
        let Some(name) = &op.get_ref().name else {
            self.problem(
                format!("{path}.name"),
                op.span(),
                "custom needs name (what the operator was registered as)",
            );
            return AggregateKind::Custom {
                name: String::new(),
            };
        };
        if !self.operators.contains(name.get_ref()) {
            let known = self.operators;
            let hint = if known.is_empty() {
                "this binary registers none: build your own binary that calls flumen::cli::main_with(Operators::new().with(name, operator))".to_string()
            } else {
                format!("this binary registers {known:?}")
            };
            self.problem(
                format!("{path}.name"),
                name.span(),
                format!("no operator is registered as {:?}; {hint}", name.get_ref()),
            );
        }
        AggregateKind::Custom {
            name: name.get_ref().clone(),
        }
    }

    /// `join`: its table (not the source), output field and mode.
    fn join(
        &mut self,
        path: &str,
        op: &Spanned<raw::Operator>,
        source: &SourceConfig,
    ) -> AggregateKind {
        let raw = op.get_ref();
        if let Some(stream) = &raw.stream {
            return self.stream_join(path, op, stream, source);
        }
        if let Some(w) = &raw.within {
            self.problem(
                format!("{path}.within"),
                w.span(),
                "only a join of two streams (stream = \"…\") takes within",
            );
        }
        let table = match &raw.table {
            Some(t) => {
                let name = self.name(&format!("{path}.table"), t);
                if name == source.topic {
                    self.problem(
                        format!("{path}.table"),
                        t.span(),
                        "the table must not be the source topic",
                    );
                }
                name
            }
            None => {
                self.problem(
                    format!("{path}.table"),
                    op.span(),
                    "join needs table (the topic read into keyed state)",
                );
                String::new()
            }
        };
        let into = match &raw.into {
            Some(i) => i.get_ref().clone(),
            None => {
                self.problem(
                    format!("{path}.into"),
                    op.span(),
                    "join needs into (the output field for the table's value)",
                );
                String::new()
            }
        };
        let inner = match raw.mode.as_ref().map(|m| (m.get_ref().as_str(), m.span())) {
            None | Some(("left", _)) => false,
            Some(("inner", _)) => true,
            Some((other, span)) => {
                self.problem(
                    format!("{path}.mode"),
                    span,
                    format!("unknown join mode {other:?}; expected \"left\" or \"inner\""),
                );
                false
            }
        };
        let format = self.join_format(path, op);
        AggregateKind::Join {
            table,
            into,
            inner,
            format,
        }
    }

    /// A join's `format` (and `schema_id`) of the table or other stream: JSON or Avro, the
    /// formats with fields.
    fn join_format(&mut self, path: &str, op: &Spanned<raw::Operator>) -> Format {
        let raw = op.get_ref();
        let path = format!("{path}.format");
        let format = self.format(
            &path,
            raw.format.as_ref(),
            raw.schema_id.as_ref(),
            op.span(),
        );
        match (format, &raw.format) {
            (Format::String | Format::Bytes, Some(f)) => {
                self.problem(
                    path,
                    f.span(),
                    "a join reads fields: the table or other stream is \"json\" or \"avro\"",
                );
                Format::Json
            }
            (f, _) => f,
        }
    }

    /// `join` with `stream`: the other topic, the time bound, the output field and the mode.
    fn stream_join(
        &mut self,
        path: &str,
        op: &Spanned<raw::Operator>,
        stream: &Spanned<String>,
        source: &SourceConfig,
    ) -> AggregateKind {
        let raw = op.get_ref();
        let name = self.name(&format!("{path}.stream"), stream);
        if name == source.topic {
            self.problem(
                format!("{path}.stream"),
                stream.span(),
                "the other stream must not be the source topic",
            );
        }
        if let Some(t) = &raw.table {
            self.problem(
                format!("{path}.table"),
                t.span(),
                "a join reads a table or a stream, not both",
            );
        }
        let mode = match raw.mode.as_ref().map(|m| (m.get_ref().as_str(), m.span())) {
            None | Some(("inner", _)) => StreamJoinMode::Inner,
            Some(("left", _)) => StreamJoinMode::Left,
            Some(("outer", _)) => StreamJoinMode::Outer,
            Some((other, span)) => {
                self.problem(
                    format!("{path}.mode"),
                    span,
                    format!("unknown mode {other:?} of a join of two streams; expected \"inner\" (the default), \"left\" or \"outer\""),
                );
                StreamJoinMode::Inner
            }
        };
        if source.event_time.is_none() {
            self.problem(format!("{path}.stream"), stream.span(), "a join of two streams needs the source's event time: add source.event_time (it applies to both streams)");
        }
        let within_ms = match &raw.within {
            Some(w) => super::time::millis(self.duration(
                &format!("{path}.within"),
                w,
                Duration::ZERO..=MONTH,
            )),
            None => {
                self.problem(
                    format!("{path}.within"),
                    op.span(),
                    "a join of two streams needs within (how far apart two records may be)",
                );
                0
            }
        };
        let into = match &raw.into {
            Some(i) => i.get_ref().clone(),
            None => {
                self.problem(
                    format!("{path}.into"),
                    op.span(),
                    "join needs into (the output field for the other record)",
                );
                String::new()
            }
        };
        let format = self.join_format(path, op);
        AggregateKind::StreamJoin {
            stream: name,
            within_ms,
            into,
            mode,
            format,
        }
    }

    /// `dedupe`: keyed by its `field` (its own key_by), else by the key so far.
    fn dedupe(
        &mut self,
        path: &str,
        op: &Spanned<raw::Operator>,
        plan: &mut Plan,
        key_by: &mut Option<String>,
        (source, on_error): (&SourceConfig, Option<OnError>),
    ) {
        let raw = op.get_ref();
        let ttl_ms = match &raw.ttl {
            Some(t) => super::time::millis(self.positive(&format!("{path}.ttl"), t)),
            None => {
                self.problem(
                    format!("{path}.ttl"),
                    op.span(),
                    "dedupe needs ttl (how long a key is remembered, like \"10m\")",
                );
                0
            }
        };
        if let Some(field) = &raw.field {
            if key_by.is_some() || plan.aggregate.is_some() {
                self.problem(
                    format!("{path}.field"),
                    field.span(),
                    "dedupe by field re-keys the records itself: drop the key_by before it, or the field",
                );
            } else {
                *key_by = Some(field.get_ref().clone());
                plan.before.push(Step::KeyBy {
                    field: field.get_ref().clone(),
                });
                plan.before_on_error.push(None);
            }
        }
        self.aggregate(
            path,
            op,
            plan,
            (key_by.as_deref(), source, on_error),
            AggregateKind::Dedupe { ttl_ms },
            "dedupe",
        );
    }

    /// `collect`'s `max`: 1 to 100,000, default 100.
    fn collect_max(&mut self, path: &str, op: &raw::Operator) -> usize {
        match &op.max {
            None => 100,
            Some(m) => match usize::try_from(*m.get_ref()) {
                Ok(n) if (1..=100_000).contains(&n) => n,
                _ => {
                    self.problem(
                        format!("{path}.max"),
                        m.span(),
                        "must be between 1 and 100000",
                    );
                    100
                }
            },
        }
    }

    fn check_fields(&mut self, path: &str, kind: &str, op: &raw::Operator, allowed: &[&str]) {
        let present: [(&str, Option<Range<usize>>); 22] = [
            ("id", op.id.as_ref().map(Spanned::span)),
            ("field", op.field.as_ref().map(Spanned::span)),
            ("equals", op.equals.as_ref().map(Spanned::span)),
            ("not_equals", op.not_equals.as_ref().map(Spanned::span)),
            ("keep", op.keep.as_ref().map(Spanned::span)),
            ("drop", op.drop.as_ref().map(Spanned::span)),
            ("rename", op.rename.as_ref().map(Spanned::span)),
            ("output", op.output.as_ref().map(Spanned::span)),
            ("max", op.max.as_ref().map(Spanned::span)),
            ("emit", op.emit.as_ref().map(Spanned::span)),
            ("window", op.window.as_ref().map(Spanned::span)),
            ("expr", op.expr.as_ref().map(Spanned::span)),
            ("ttl", op.ttl.as_ref().map(Spanned::span)),
            ("time", op.time.as_ref().map(Spanned::span)),
            ("format", op.format.as_ref().map(Spanned::span)),
            ("schema_id", op.schema_id.as_ref().map(Spanned::span)),
            ("table", op.table.as_ref().map(Spanned::span)),
            ("into", op.into.as_ref().map(Spanned::span)),
            ("mode", op.mode.as_ref().map(Spanned::span)),
            ("name", op.name.as_ref().map(Spanned::span)),
            ("stream", op.stream.as_ref().map(Spanned::span)),
            ("within", op.within.as_ref().map(Spanned::span)),
        ];
        for (name, span) in present {
            if let Some(span) = span
                && !allowed.contains(&name)
            {
                self.problem(
                    format!("{path}.{name}"),
                    span,
                    format!("{kind} does not take {name:?}; it takes {allowed:?}"),
                );
            }
        }
    }

    fn predicate(&mut self, path: &str, op: &Spanned<raw::Operator>) -> Option<Predicate> {
        let raw = op.get_ref();
        match (&raw.equals, &raw.not_equals) {
            (Some(v), None) => self
                .json_value(&format!("{path}.equals"), v)
                .map(Predicate::Equals),
            (None, Some(v)) => self
                .json_value(&format!("{path}.not_equals"), v)
                .map(Predicate::NotEquals),
            _ => {
                self.problem(
                    path,
                    op.span(),
                    "filter needs exactly one of equals or not_equals",
                );
                None
            }
        }
    }

    fn json_value(&mut self, path: &str, v: &Spanned<toml::Value>) -> Option<serde_json::Value> {
        match serde_json::to_value(v.get_ref()) {
            Ok(j) => Some(j),
            Err(e) => {
                self.problem(
                    path,
                    v.span(),
                    format!("cannot be compared with JSON values: {e}"),
                );
                None
            }
        }
    }

    fn aggregate(
        &mut self,
        path: &str,
        op: &Spanned<raw::Operator>,
        plan: &mut Plan,
        (key_by, source, on_error): (Option<&str>, &SourceConfig, Option<OnError>),
        kind: AggregateKind,
        default_output: &str,
    ) {
        let raw = op.get_ref();
        if plan.aggregate.is_some() {
            self.problem(
                format!("{path}.type"),
                raw.kind.span(),
                "only one aggregate per pipeline is supported",
            );
            return;
        }
        let id = match &raw.id {
            Some(id) => self.name(&format!("{path}.id"), id),
            None => default_output.to_string(),
        };
        let output = raw
            .output
            .as_ref()
            .map_or_else(|| default_output.to_string(), |o| o.get_ref().clone());
        let window = raw
            .window
            .as_ref()
            .map(|w| self.window(&format!("{path}.window"), w));
        if let Some(w) = &raw.window
            && source.event_time.is_none()
        {
            self.problem(
                format!("{path}.window"),
                w.span(),
                "windows need the source's event time: add source.event_time = { field = \"ts\" } (or = {} for the Kafka timestamp)",
            );
        }
        let emit = match (
            raw.emit.as_ref().map(|e| (e.get_ref().as_str(), e.span())),
            &window,
        ) {
            (None, Some(_)) | (Some(("on_window_close", _)), Some(_)) => Emit::OnWindowClose,
            (None, None) | (Some(("every_update", _)), _) => Emit::EveryUpdate,
            (Some(("on_checkpoint", _)), None) => Emit::OnCheckpoint,
            (Some((other, span)), w) => {
                let expected = if w.is_some() {
                    "\"on_window_close\" or \"every_update\""
                } else {
                    "\"every_update\" or \"on_checkpoint\" (\"on_window_close\" needs a window)"
                };
                self.problem(
                    format!("{path}.emit"),
                    span,
                    format!("unknown emit {other:?} here; expected {expected}"),
                );
                Emit::EveryUpdate
            }
        };
        // dedupe's ttl is its own (its kind); on aggregates it is state TTL
        let ttl_ms = match (&raw.ttl, &window) {
            (Some(t), None) if !matches!(kind, AggregateKind::Dedupe { .. }) => Some(
                super::time::millis(self.positive(&format!("{path}.ttl"), t)),
            ),
            (Some(t), Some(_)) => {
                self.problem(
                    format!("{path}.ttl"),
                    t.span(),
                    "a windowed aggregate forgets each window when it closes; ttl is for aggregates without a window",
                );
                None
            }
            _ => None,
        };
        let ttl_time = self.ttl_time(path, raw, source);
        if ttl_ms.is_none()
            && !matches!(kind, AggregateKind::Dedupe { .. })
            && let Some(t) = &raw.time
        {
            self.problem(
                format!("{path}.time"),
                t.span(),
                "time is the clock of ttl: add a ttl, or drop time",
            );
        }
        if window.as_ref().is_some_and(|w| w.gap_ms.is_some())
            && !matches!(
                kind,
                AggregateKind::Count
                    | AggregateKind::Sum { .. }
                    | AggregateKind::Min { .. }
                    | AggregateKind::Max { .. }
                    | AggregateKind::Avg { .. }
                    | AggregateKind::CountDistinct { .. }
            )
        {
            self.problem(
                format!("{path}.window"),
                op.span(),
                format!("session windows merge, and {} cannot be merged; use count, sum, min, max, avg or count_distinct", kind.name()),
            );
        }
        if let Some(w) = &window {
            for reserved in ["window_start", "window_end"] {
                if output_name(raw, default_output) == reserved || key_by == Some(reserved) {
                    self.problem(
                        format!("{path}.output"),
                        op.span(),
                        format!("{reserved:?} is the window's field in the output"),
                    );
                }
            }
            if let Some(t) = &w.late_topic
                && raw.window.is_some()
                && (*t == source.topic)
            {
                self.problem(
                    format!("{path}.window.late_topic"),
                    op.span(),
                    "the late topic must differ from the source",
                );
            }
        }
        let key_field = key_by.unwrap_or("key").to_string();
        if output == key_field {
            self.problem(
                format!("{path}.output"),
                op.span(),
                format!("the output field {output:?} would overwrite the key field"),
            );
        }
        plan.aggregate = Some(Aggregate {
            id,
            kind,
            key_field,
            output,
            on_error,
            emit,
            window,
            ttl_ms,
            ttl_time,
        });
    }

    /// An operator's `time`: the clock of its ttl. Event time needs the source's.
    fn ttl_time(&mut self, path: &str, raw: &raw::Operator, source: &SourceConfig) -> TimeDomain {
        let Some(t) = &raw.time else {
            return TimeDomain::Processing;
        };
        match t.get_ref().as_str() {
            "processing" => TimeDomain::Processing,
            "event" => {
                if source.event_time.is_none() {
                    self.problem(
                        format!("{path}.time"),
                        t.span(),
                        "time = \"event\" needs the source's event time: add source.event_time = { field = \"ts\" } (or = {} for the Kafka timestamp)",
                    );
                }
                TimeDomain::Event
            }
            other => {
                self.problem(
                    format!("{path}.time"),
                    t.span(),
                    format!("unknown time {other:?}; expected \"processing\" or \"event\""),
                );
                TimeDomain::Processing
            }
        }
    }
}

/// Up to 20 characters of `code` from `offset`, for error messages.
fn snippet(code: &str, offset: usize) -> String {
    let rest = code.get(offset..).unwrap_or_default();
    let s: String = rest.chars().take(20).collect();
    if s.is_empty() { "the end".into() } else { s }
}

fn output_name<'a>(raw: &'a raw::Operator, default: &'a str) -> &'a str {
    raw.output
        .as_ref()
        .map_or(default, |o| o.get_ref().as_str())
}
