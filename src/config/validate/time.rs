//! Event time and windows: `source.event_time` and an aggregate's `window`.

use std::time::Duration;

use toml::Spanned;

use super::super::raw;
use super::super::{EventTime, TimeFormat, Window};
use super::{Cx, MONTH, MS, YEAR};

/// The most windows one record may fall into (`size / advance` of a hopping window).
const MAX_WINDOWS_PER_RECORD: i64 = 1_000;

impl Cx<'_> {
    pub(super) fn event_time(&mut self, path: &str, raw: &Spanned<raw::EventTime>) -> EventTime {
        let r = raw.get_ref();
        let format = match r.format.as_ref().map(|f| (f.get_ref().as_str(), f.span())) {
            None | Some(("unix_ms", _)) => TimeFormat::UnixMs,
            Some(("unix_s", _)) => TimeFormat::UnixS,
            Some(("rfc3339", _)) => TimeFormat::Rfc3339,
            Some((other, span)) => {
                self.problem(
                    format!("{path}.format"),
                    span,
                    format!("unknown time format {other:?}; expected \"unix_ms\", \"unix_s\" or \"rfc3339\""),
                );
                TimeFormat::UnixMs
            }
        };
        if r.field.is_none()
            && let Some(f) = &r.format
        {
            self.problem(
                format!("{path}.format"),
                f.span(),
                "only used with field (the Kafka timestamp is always in ms)",
            );
        }
        let max_out_of_orderness = r.max_out_of_orderness.as_ref().map_or(Duration::ZERO, |d| {
            self.duration(
                &format!("{path}.max_out_of_orderness"),
                d,
                Duration::ZERO..=MONTH,
            )
        });
        let idle_timeout = r
            .idle_timeout
            .as_ref()
            .map_or(Duration::from_secs(30), |d| {
                self.positive(&format!("{path}.idle_timeout"), d)
            });
        EventTime {
            field: r.field.as_ref().map(|f| f.get_ref().clone()),
            format,
            max_out_of_orderness,
            idle_timeout,
        }
    }

    pub(super) fn window(&mut self, path: &str, raw: &Spanned<raw::Window>) -> Window {
        let r = raw.get_ref();
        let kind = r.kind.get_ref().as_str();
        if kind == "session" {
            for (name, v) in [("size", &r.size), ("advance", &r.advance)] {
                if let Some(v) = v {
                    self.problem(
                        format!("{path}.{name}"),
                        v.span(),
                        "a session window takes gap, not size or advance",
                    );
                }
            }
        } else if let Some(g) = &r.gap {
            self.problem(
                format!("{path}.gap"),
                g.span(),
                "only session windows take gap",
            );
        }
        let (size_ms, gap_ms) = match (kind, &r.size, &r.gap) {
            ("session", _, Some(g)) => {
                let gap = millis(self.positive(&format!("{path}.gap"), g));
                (gap, Some(gap))
            }
            ("session", _, None) => {
                self.problem(
                    format!("{path}.gap"),
                    raw.span(),
                    "a session window needs gap (the inactivity that ends a session)",
                );
                (1, Some(1))
            }
            (_, Some(size), _) => (millis(self.positive(&format!("{path}.size"), size)), None),
            (_, None, _) => {
                self.problem(
                    format!("{path}.size"),
                    raw.span(),
                    format!("a {kind} window needs size"),
                );
                (1, None)
            }
        };
        let advance_ms = match (kind, &r.advance) {
            ("session", _) => size_ms,

            ("tumbling", None) => size_ms,
            ("tumbling", Some(a)) => {
                self.problem(
                    format!("{path}.advance"),
                    a.span(),
                    "only hopping windows take advance (a tumbling window advances by its size)",
                );
                size_ms
            }
            ("hopping", Some(a)) => {
                let advance = millis(self.positive(&format!("{path}.advance"), a));
                if advance > size_ms {
                    self.problem(
                        format!("{path}.advance"),
                        a.span(),
                        "must not exceed the window size (records between windows would be lost)",
                    );
                } else if advance > 0 && size_ms / advance > MAX_WINDOWS_PER_RECORD {
                    self.problem(
                        format!("{path}.advance"),
                        a.span(),
                        format!("size / advance must be at most {MAX_WINDOWS_PER_RECORD} windows per record"),
                    );
                }
                advance
            }
            ("hopping", None) => {
                self.problem(
                    format!("{path}.advance"),
                    raw.span(),
                    "a hopping window needs advance",
                );
                size_ms
            }
            (other, _) => {
                self.problem(
                    format!("{path}.type"),
                    r.kind.span(),
                    format!(
                        "unknown window type {other:?}; expected \"tumbling\", \"hopping\" or \"session\""
                    ),
                );
                size_ms
            }
        };
        let allowed_lateness_ms = r.allowed_lateness.as_ref().map_or(0, |d| {
            millis(self.duration(
                &format!("{path}.allowed_lateness"),
                d,
                Duration::ZERO..=MONTH,
            ))
        });
        let late_topic = r
            .late_topic
            .as_ref()
            .map(|t| self.name(&format!("{path}.late_topic"), t));
        Window {
            size_ms,
            advance_ms: advance_ms.max(1),
            gap_ms,
            allowed_lateness_ms,
            late_topic,
        }
    }

    /// A duration that must be above zero (at least 1ms) and at most a year.
    pub(super) fn positive(&mut self, path: &str, value: &Spanned<String>) -> Duration {
        self.duration(path, value, MS..=YEAR)
    }
}

pub(super) fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}
