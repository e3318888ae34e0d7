//! Config fuzzing (#17, scenario 10; reliability.md T11): parse and validate never panic on
//! any text, and every problem they report names its key path and a position inside the
//! file. Seeds are the shipped examples; mutations are textual (bytes cut, inserted, lines
//! repeated) and structural (a key's value replaced by another type, a key removed, an
//! unknown key added).

use proptest::prelude::*;

use super::from_str;

const SEEDS: [&str; 5] = [
    include_str!("../../../config/examples/counts.toml"),
    include_str!("../../../config/examples/windows.toml"),
    include_str!("../../../config/examples/dead-letters.toml"),
    include_str!("../../../config/examples/join.toml"),
    include_str!("../../../config/examples/expressions.toml"),
];

/// Every problem of `text` names a key path and a line:col inside it.
fn problems_are_located(text: &str) -> Result<(), TestCaseError> {
    let Err(problems) = from_str(text) else {
        return Ok(());
    };
    prop_assert!(!problems.is_empty(), "an error without problems");
    let lines = text.lines().count().max(1);
    for p in problems {
        prop_assert!(!p.path.is_empty(), "a problem without a key path: {p}");
        prop_assert!(
            p.line >= 1 && p.line <= lines + 1 && p.col >= 1,
            "a position outside the file: {p} ({lines} lines)"
        );
    }
    Ok(())
}

/// A TOML value of any type, some of them nonsense for any key.
fn any_value() -> impl Strategy<Value = toml::Value> {
    prop_oneof![
        ".{0,12}".prop_map(toml::Value::String),
        any::<i64>().prop_map(toml::Value::Integer),
        any::<bool>().prop_map(toml::Value::Boolean),
        (-1e12f64..1e12).prop_map(toml::Value::Float),
        Just(toml::Value::Array(vec![])),
        Just(toml::Value::Table(toml::Table::new())),
        prop_oneof![
            Just("0s"),
            Just("-1s"),
            Just("99999999999h"),
            Just("${NO_SUCH_VAR}"),
            Just("s3://"),
            Just("json"),
            Just("avro")
        ]
        .prop_map(|s| toml::Value::String(s.into())),
    ]
}

/// Every value's path in `t`: table keys and array indexes.
fn paths(v: &toml::Value, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    match v {
        toml::Value::Table(t) => {
            for (k, child) in t {
                prefix.push(k.clone());
                out.push(prefix.clone());
                paths(child, prefix, out);
                prefix.pop();
            }
        }
        toml::Value::Array(a) => {
            for (i, child) in a.iter().enumerate() {
                prefix.push(i.to_string());
                paths(child, prefix, out);
                prefix.pop();
            }
        }
        _ => {}
    }
}

/// The parent of `path` in `root`, and the last step.
fn parent<'a>(root: &'a mut toml::Value, path: &[String]) -> Option<(&'a mut toml::Value, String)> {
    let (last, init) = path.split_last()?;
    let mut at = root;
    for step in init {
        at = match at {
            toml::Value::Table(t) => t.get_mut(step)?,
            toml::Value::Array(a) => a.get_mut(step.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some((at, last.clone()))
}

#[derive(Debug, Clone)]
enum Mutation {
    Replace(toml::Value),
    Remove,
    AddUnknown(String),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        any_value().prop_map(Mutation::Replace),
        Just(Mutation::Remove),
        "[a-z_]{1,10}".prop_map(Mutation::AddUnknown),
    ]
}

/// A scalar: what a wrongly typed value is replaced by, when serde expected a scalar or a
/// list, without ending the report.
fn scalar(v: &toml::Value) -> bool {
    !matches!(v, toml::Value::Table(_) | toml::Value::Array(_))
}

/// The seed with `picks` applied, and whether every mutation leaves the report whole: a key
/// added, or a scalar put where a scalar or a list was (a table taken out or replaced, or a key
/// removed, may end the report at a "missing field").
fn mutate(seed: &str, picks: &[(usize, Mutation)]) -> Option<(String, bool)> {
    let mut root = toml::Value::Table(toml::from_str(seed).ok()?);
    let mut whole = true;
    for (pick, m) in picks {
        let mut all = Vec::new();
        paths(&root, &mut Vec::new(), &mut all);
        let path = all.get(pick % all.len().max(1))?.clone();
        let (at, last) = parent(&mut root, &path)?;
        match (at, m) {
            (toml::Value::Table(t), Mutation::Replace(v)) => {
                let was_table = t.get(&last).is_some_and(|o| {
                    o.is_table() || o.as_array().is_some_and(|a| a.iter().any(|i| !scalar(i)))
                });
                whole &= scalar(v) && !was_table;
                t.insert(last, v.clone());
            }
            (toml::Value::Table(t), Mutation::Remove) => {
                whole = false;
                t.remove(&last);
            }
            (toml::Value::Table(t), Mutation::AddUnknown(k)) => {
                t.insert(format!("zz_{k}"), toml::Value::Integer(1));
            }
            (toml::Value::Array(a), Mutation::Replace(v)) => {
                if let Some(slot) = last.parse::<usize>().ok().and_then(|i| a.get_mut(i)) {
                    // an item has no key of its own to put a stand-in under
                    whole = false;
                    *slot = v.clone();
                }
            }
            _ => {}
        }
    }
    toml::to_string(&root).ok().map(|text| (text, whole))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1500, ..ProptestConfig::default() })]

    #[test]
    fn any_text_is_answered_with_located_problems(text in "\\PC{0,300}") {
        problems_are_located(&text)?;
    }

    #[test]
    fn cut_and_spliced_examples_are_answered_with_located_problems(
        seed in 0..SEEDS.len(),
        cut in any::<prop::sample::Index>(),
        len in 0usize..40,
        insert in "\\PC{0,8}",
        repeat_line in any::<prop::sample::Index>(),
    ) {
        let text = SEEDS[seed];
        let mut chars: Vec<char> = text.chars().collect();
        let at = cut.index(chars.len().max(1));
        let end = (at + len).min(chars.len());
        chars.splice(at..end, insert.chars());
        let mut lines: Vec<String> = chars.iter().collect::<String>().lines().map(str::to_string).collect();
        if !lines.is_empty() {
            let i = repeat_line.index(lines.len());
            lines.insert(i, lines[i].clone());
        }
        problems_are_located(&lines.join("\n"))?;
    }

    #[test]
    fn structurally_mutated_examples_are_answered_with_located_problems(
        seed in 0..SEEDS.len(),
        picks in prop::collection::vec((any::<usize>(), mutation()), 1..4),
    ) {
        if let Some((text, whole)) = mutate(SEEDS[seed], &picks) {
            problems_are_located(&text)?;
            // every unknown key is reported, by its own path, past any wrongly typed scalar
            // (each replaced by a stand-in: CHAOS.md, defect 7); a table taken out or a key
            // removed may end the report at serde's "missing field"
            for (_, m) in picks.iter().filter(|_| whole) {
                if let Mutation::AddUnknown(k) = m
                    && text.contains(&format!("zz_{k}"))
                {
                    let problems = from_str(&text).err().unwrap_or_default();
                    prop_assert!(
                        problems.iter().any(|p| p.path.ends_with(&format!("zz_{k}"))),
                        "unknown key zz_{} not reported: {:?}", k, problems
                    );
                }
            }
        }
    }
}
