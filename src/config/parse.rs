//! From text to the raw config (`raw.rs`): the TOML parsed with every key's and value's span,
//! `${VAR}` expanded in its strings (`interpolate.rs`), then the serde mirror read from it.
//! Each unknown key is reported (with a "did you mean" for a near miss) and left out, each
//! wrongly typed value reported and replaced by a stand-in, and the mirror read again, so that
//! one mistake hides no other.

use std::borrow::Cow;
use std::ops::Range;

use serde::Deserialize as _;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::{Problem, raw};

/// How many unknown keys are reported before giving up on the file.
const MAX_UNKNOWN: usize = 64;

/// What [`parse`] found.
pub(super) struct Parsed {
    /// The raw config, if the file's shape allows one.
    pub raw: Option<raw::Root>,
    pub problems: Vec<Problem>,
    /// Where the values whose `${…}` could not be expanded start (line, col): validation's
    /// own complaints about them (now empty) would only repeat the problem.
    pub unexpanded: Vec<(usize, usize)>,
}

/// The raw config, and every problem found on the way.
pub(super) fn parse(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Parsed {
    let problem = |path: String, span: Range<usize>, message: String| {
        let (line, col) = super::validate::line_col(text, span.start);
        Problem {
            path,
            line,
            col,
            message,
        }
    };
    let mut table = match DeTable::parse(text) {
        Ok(t) => t,
        Err(e) => {
            let span = e.span().unwrap_or(0..0);
            let path = super::validate::key_path_at(text, span.start);
            return Parsed {
                raw: None,
                problems: vec![problem(path, span, e.message().trim().to_string())],
                unexpanded: Vec::new(),
            };
        }
    };
    let mut problems = Vec::new();
    let mut unexpanded = Vec::new();
    expand_table(
        table.get_mut(),
        "",
        text,
        env,
        &mut |path, value, span, m| {
            unexpanded.push(super::validate::line_col(text, value.start));
            problems.push(problem(path.to_string(), span, m));
        },
    );
    let (raw, mut rest) = read_mirror(table, text, &problem);
    problems.append(&mut rest);
    Parsed {
        raw,
        problems,
        unexpanded,
    }
}

/// The serde mirror, read again after each unknown key is reported and taken out, and each
/// wrongly typed value reported and replaced by a stand-in of the type serde expected (taken
/// out when that is a table, whose own required keys would be reported missing). A file with a
/// wrong value gets no raw config (validation would judge a stand-in the user did not write);
/// its other unknown keys and wrong values are still reported. A required table taken out ends
/// the report at its table (serde's "missing field", which is the same mistake, is not
/// reported again).
fn read_mirror(
    mut table: Spanned<DeTable<'_>>,
    text: &str,
    problem: &dyn Fn(String, Range<usize>, String) -> Problem,
) -> (Option<raw::Root>, Vec<Problem>) {
    let mut problems = Vec::new();
    // keys already reported (near misses of unknown keys, keys with a wrong value): serde's
    // "missing field" for one of them is the same mistake
    let mut suggested: Vec<String> = Vec::new();
    let mut wrong_value = false;
    // the spans of values already reported (replaced by a stand-in or taken out): an error
    // there again is not the user's
    let mut replaced: Vec<Range<usize>> = Vec::new();
    for _ in 0..MAX_UNKNOWN {
        let e = match raw::Root::deserialize(toml::de::Deserializer::from(table.clone())) {
            Ok(root) => return (Some(root).filter(|_| !wrong_value), problems),
            Err(e) => e,
        };
        let span = e.span().unwrap_or(0..0);
        let message = e.message().trim().to_string();
        if let Some((key, expected)) = unknown_field(&message)
            && let Some((path, _)) = remove_key_at(table.get_mut(), "", &span, &mut At::Key)
        {
            let near = nearest(&key, &expected);
            let hint = match near {
                Some(n) => format!("; did you mean `{n}`?"),
                None => String::new(),
            };
            let choices = if expected.is_empty() {
                String::new()
            } else {
                format!(
                    " (expected one of {})",
                    expected
                        .iter()
                        .map(|e| format!("`{e}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            };
            problems.push(problem(
                path,
                span,
                format!("unknown key `{key}`{hint}{choices}"),
            ));
            suggested.extend(near.map(str::to_string));
            continue;
        }
        // a required key whose near miss was just reported is that same mistake
        let missing = message
            .strip_prefix("missing field `")
            .and_then(|m| m.strip_suffix('`'));
        let is_missing = missing.is_some();
        let mut at = At::Value(stand_in(&message));
        if replaced.contains(&span) {
            return (None, problems);
        }
        if !missing.is_some_and(|m| suggested.iter().any(|s| s == m)) {
            let path = super::validate::key_path_at(text, span.start);
            problems.push(problem(path, span.clone(), message));
        }
        if !is_missing && let Some((_, key)) = remove_key_at(table.get_mut(), "", &span, &mut at) {
            replaced.push(span);
            suggested.push(key);
            wrong_value = true;
            continue;
        }
        return (None, problems);
    }
    (None, problems)
}

/// A value of the type serde expected, from its message (`invalid type: integer `5`, expected
/// a string`), to stand in for a wrongly typed one so that the reading goes on past it: a
/// required key taken out would end the report there (CHAOS.md, defect 7). `None` for a table
/// or anything else.
fn stand_in(message: &str) -> Option<DeValue<'static>> {
    let (_, expected) = message.rsplit_once(", expected ")?;
    let text = match expected.trim() {
        "a string" | "a borrowed string" => "\"\"",
        "a boolean" => "false",
        "a sequence" => "[]",
        "i8" | "i16" | "i32" | "i64" | "u8" | "u16" | "u32" | "u64" | "usize" => "0",
        "f32" | "f64" => "0.0",
        _ => return None,
    };
    DeValue::parse(text).ok().map(Spanned::into_inner)
}

/// `unknown field `x`, expected one of `a`, `b`` → (x, [a, b]).
fn unknown_field(message: &str) -> Option<(String, Vec<String>)> {
    let rest = message.strip_prefix("unknown field `")?;
    let (key, rest) = rest.split_once('`')?;
    let expected = rest
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect();
    Some((key.to_string(), expected))
}

/// The expected key nearest to `key`, if near enough to be a typo.
fn nearest<'a>(key: &str, expected: &'a [String]) -> Option<&'a str> {
    let limit = (key.chars().count() / 3).max(2);
    let distance = |e: &str| {
        // a key cut short (`user` for `username`) is as near as a typo
        if key.len() >= 3 && e.starts_with(key) {
            1
        } else {
            strsim::damerau_levenshtein(key, e)
        }
    };
    expected
        .iter()
        .map(|e| (distance(e), e))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, e)| e.as_str())
}

/// `parent.key`, or `key` at the top; a key with a dot is quoted.
fn child(parent: &str, key: &str) -> String {
    let key = if key.contains('.') {
        format!("{key:?}")
    } else {
        key.to_string()
    };
    if parent.is_empty() {
        key
    } else {
        format!("{parent}.{key}")
    }
}

/// Which span of a key-value pair an error points at: the key's (an unknown key) or the
/// value's (a value serde refused; replaced by the stand-in, if any, or taken out).
enum At {
    Key,
    Value(Option<DeValue<'static>>),
}

/// Takes out the key whose key or value span (`at`) is `span`, wherever it is, or replaces
/// its value by `at`'s stand-in; its path and its name, if there was one.
fn remove_key_at(
    table: &mut DeTable<'_>,
    path: &str,
    span: &Range<usize>,
    at: &mut At,
) -> Option<(String, String)> {
    let found = table
        .iter()
        .find(|(k, v)| match at {
            At::Key => k.span() == *span,
            At::Value(_) => v.span() == *span,
        })
        .map(|(k, _)| k.clone());
    if let Some(key) = found {
        let stand_in = match at {
            At::Value(v) => v.take(),
            At::Key => None,
        };
        match (stand_in, table.get_mut(&key)) {
            (Some(v), Some(value)) => *value = Spanned::new(span.clone(), v),
            _ => drop(table.remove(&key)),
        }
        return Some((child(path, key.get_ref()), key.get_ref().to_string()));
    }
    table
        .iter_mut()
        .find_map(|(k, v)| remove_in_value(v.get_mut(), &child(path, k.get_ref()), span, at))
}

fn remove_in_value(
    value: &mut DeValue<'_>,
    path: &str,
    span: &Range<usize>,
    at: &mut At,
) -> Option<(String, String)> {
    match value {
        DeValue::Table(t) => remove_key_at(t, path, span, at),
        DeValue::Array(items) => items.iter_mut().enumerate().find_map(|(i, item)| {
            remove_in_value(item.get_mut(), &format!("{path}[{i}]"), span, at)
        }),
        _ => None,
    }
}

/// Told of each reference that cannot be expanded: the value's path and span, the
/// reference's span, what is wrong.
type Report<'r> = dyn FnMut(&str, Range<usize>, Range<usize>, String) + 'r;

fn expand_table(
    table: &mut DeTable<'_>,
    path: &str,
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
    report: &mut Report<'_>,
) {
    for (key, value) in table.iter_mut() {
        expand_value(value, &child(path, key.get_ref()), text, env, report);
    }
}

fn expand_value(
    value: &mut Spanned<DeValue<'_>>,
    path: &str,
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
    report: &mut Report<'_>,
) {
    let span = value.span();
    match value.get_mut() {
        DeValue::String(s) => match super::interpolate::expand(s, env) {
            Ok(None) => {}
            Ok(Some(expanded)) => *s = Cow::Owned(expanded),
            Err(problems) => {
                for (offset, message) in problems {
                    let at = place_in_literal(text, &span, s, offset);
                    report(path, span.clone(), at, message);
                }
                // an empty value lets validation go on to the file's other problems
                *s = Cow::Owned(String::new());
            }
        },
        DeValue::Table(t) => expand_table(t, path, text, env, report),
        DeValue::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                expand_value(item, &format!("{path}[{i}]"), text, env, report);
            }
        }
        _ => {}
    }
}

/// Where, in the file, the reference at `offset` of the string value `decoded` (whose literal
/// is `span`) starts: found in the literal's text, else the literal's start.
fn place_in_literal(text: &str, span: &Range<usize>, decoded: &str, offset: usize) -> Range<usize> {
    let reference = decoded
        .get(offset..)
        .and_then(|r| r.split_inclusive('}').next())
        .unwrap_or_default();
    let literal = text.get(span.clone()).unwrap_or_default();
    match literal.find(reference) {
        Some(i) if !reference.is_empty() => span.start + i..span.start + i + reference.len(),
        _ => span.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A wrong value is reported and taken out like an unknown key: the mistakes after it (in
    /// serde's order: a table's keys sorted) are reported too.
    #[test]
    fn a_wrong_value_hides_no_mistake_after_it() {
        let text = r#"
[kafka]
bootstrap_servers = "127.0.0.1:19092"
transaction_timeout = 30
colour = "blue"

[checkpoint]
interval = "1s"
dir = "d"

[restart]
max_attempts = "3"

[state]
backend = "memory"
budget = 3

[[pipelines]]
name = "p"
source = { topic = "in", format = "json" }
sink = { topic = "out", format = "json" }
"#;
        let shown = |text: &str| -> Vec<String> {
            let parsed = parse(text, &|_| None);
            assert!(parsed.raw.is_none());
            parsed.problems.iter().map(ToString::to_string).collect()
        };
        let expect = [
            "kafka.colour (5:1): unknown key `colour`",
            "kafka.transaction_timeout (4:23): invalid type: integer `30`, expected a string",
            "restart.max_attempts (12:16): invalid type: string \"3\", expected i64",
            "state.budget (16:1): unknown key `budget`",
        ];
        let all = shown(text);
        assert_eq!(all.len(), expect.len(), "{all:#?}");
        for (shown, expect) in all.iter().zip(expect) {
            assert!(shown.starts_with(expect), "{shown} is not {expect}");
        }
        // a required key's wrong value hides nothing either (it ended the report at its
        // table before: defect 7), and no "missing field" follows it
        let required = shown(&text.replace(r#"name = "p""#, "name = 5").replace(
            r#"bootstrap_servers = "127.0.0.1:19092""#,
            "bootstrap_servers = [1]",
        ));
        let mut expect = expect.to_vec();
        expect.push("kafka.bootstrap_servers (3:21): invalid type: sequence, expected a string");
        expect.push("pipelines[0].name (19:8): invalid type: integer `5`, expected a string");
        assert_eq!(required.len(), expect.len(), "{required:#?}");
        for e in expect {
            assert!(
                required.iter().any(|r| r.starts_with(e)),
                "{e} not in {required:#?}"
            );
        }
        // a wrongly typed table is taken out: its own required keys are not reported missing
        let table = shown(&text.replace(
            r#"source = { topic = "in", format = "json" }"#,
            r#"source = "in""#,
        ));
        assert!(
            table
                .iter()
                .any(|p| p.starts_with("pipelines[0].source (20:10): invalid type")),
            "{table:#?}"
        );
        assert!(
            !table.iter().any(|p| p.contains("missing field")),
            "{table:#?}"
        );
    }

    #[test]
    fn an_unknown_field_message_gives_the_key_and_the_choices() {
        let (key, expected) =
            unknown_field("unknown field `feld`, expected one of `type`, `field`, `expr`").unwrap();
        assert_eq!(key, "feld");
        assert_eq!(expected, vec!["type", "field", "expr"]);
        assert_eq!(nearest("feld", &expected), Some("field"));
        assert_eq!(nearest("colour", &expected), None);
        let (key, expected) = unknown_field("unknown field `x`, there are no fields").unwrap();
        assert_eq!((key.as_str(), expected.len()), ("x", 0));
        assert_eq!(
            nearest("intervall", &["interval".to_string(), "dir".to_string()]),
            Some("interval")
        );
    }
}
