//! `${VAR}` in the config's strings, with Vector's semantics for the braced forms (a bare `$VAR`
//! is left as written, since jq programs use `$name`): `${VAR}` is the variable's value
//! (a problem when it is not set), `${VAR:-default}` the default when it is unset or empty,
//! `${VAR-default}` only when unset, `${VAR:?message}` a problem with that message when it is
//! unset or empty, `${VAR?message}` only when unset; `$${` is a literal `${`. A leaf: the
//! environment is a function, so tests need not set variables.

/// `text` with every reference replaced; `None` when it has none. Each problem is the byte
/// offset of its `${` in `text`, and what is wrong.
pub fn expand(
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<String>, Vec<(usize, String)>> {
    if !text.contains("${") {
        return Ok(None);
    }
    let mut out = String::with_capacity(text.len());
    let mut problems = Vec::new();
    let mut rest = text;
    let mut at = 0;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if let Some(after) = tail.strip_prefix("$${") {
            out.push_str("${");
            rest = after;
            at += i + 3;
            continue;
        }
        if !tail.starts_with("${") {
            out.push('$');
            rest = &tail[1..];
            at += i + 1;
            continue;
        }
        let Some(close) = tail.find('}') else {
            problems.push((at + i, "`${` without its closing `}`".to_string()));
            return Err(problems);
        };
        match reference(&tail[2..close], env) {
            Ok(value) => out.push_str(&value),
            Err(message) => problems.push((at + i, message)),
        }
        rest = &tail[close + 1..];
        at += i + close + 1;
    }
    out.push_str(rest);
    if problems.is_empty() {
        Ok(Some(out))
    } else {
        Err(problems)
    }
}

/// The value of one reference, `NAME` with its optional operator (the text between `${` and
/// `}`).
fn reference(inner: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let end = inner
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(inner.len());
    let (name, op) = inner.split_at(end);
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        return Err(format!(
            "`${{{inner}}}` does not name an environment variable (letters, digits and _, not starting with a digit)"
        ));
    }
    let value = env(name);
    let empty = value.as_deref().is_none_or(str::is_empty);
    let (kind, arg) = [":-", "-", ":?", "?"]
        .iter()
        .find_map(|k| op.strip_prefix(k).map(|a| (*k, a)))
        .unwrap_or(("", op));
    match (kind, value) {
        ("", _) if !arg.is_empty() => Err(format!(
            "`${{{inner}}}`: after the name, only :-default, -default, :?message or ?message"
        )),
        ("", Some(v)) => Ok(v),
        ("", None) => Err(format!("environment variable {name} is not set")),
        (":-", _) if empty => Ok(arg.to_string()),
        ("-", None) => Ok(arg.to_string()),
        (":?", _) if empty => Err(format!(
            "environment variable {name}: {}",
            or_default(arg, "is not set or empty")
        )),
        ("?", None) => Err(format!(
            "environment variable {name}: {}",
            or_default(arg, "is not set")
        )),
        (_, v) => Ok(v.unwrap_or_default()),
    }
}

fn or_default<'a>(message: &'a str, default: &'a str) -> &'a str {
    if message.is_empty() { default } else { message }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "HOST" => Some("pod-3".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    fn ok(text: &str) -> String {
        expand(text, &env)
            .unwrap()
            .unwrap_or_else(|| text.to_string())
    }

    fn err(text: &str) -> Vec<(usize, String)> {
        expand(text, &env).unwrap_err()
    }

    #[test]
    fn references_take_values_and_defaults_as_vector_does() {
        assert_eq!(ok("no references $x"), "no references $x");
        assert_eq!(ok("id-${HOST}"), "id-pod-3");
        assert_eq!(ok("${HOST}/${HOST}"), "pod-3/pod-3");
        assert_eq!(ok("${MISSING:-fallback}"), "fallback");
        assert_eq!(ok("${EMPTY:-fallback}"), "fallback");
        assert_eq!(ok("${EMPTY-fallback}"), "");
        assert_eq!(ok("${MISSING-fallback}"), "fallback");
        assert_eq!(ok("${HOST:-fallback}"), "pod-3");
        assert_eq!(ok("${HOST:?needed}"), "pod-3");
        assert_eq!(ok("${EMPTY?needed}"), "");
        assert_eq!(ok("a $${HOST} b"), "a ${HOST} b");
        assert_eq!(ok("jq: $__loc__ and $x"), "jq: $__loc__ and $x");
    }

    #[test]
    fn each_problem_names_its_variable_and_place() {
        assert_eq!(
            err("x ${MISSING} y ${ALSO_MISSING}"),
            vec![
                (2, "environment variable MISSING is not set".to_string()),
                (
                    15,
                    "environment variable ALSO_MISSING is not set".to_string()
                ),
            ]
        );
        assert_eq!(
            err("${EMPTY:?the broker password}"),
            vec![(
                0,
                "environment variable EMPTY: the broker password".to_string()
            )]
        );
        assert_eq!(
            err("${MISSING?}"),
            vec![(0, "environment variable MISSING: is not set".to_string())]
        );
        assert!(
            err("${1X}")[0]
                .1
                .contains("does not name an environment variable")
        );
        assert!(err("${HOST:=x}")[0].1.contains("only :-default"));
        assert!(err("abc ${HOST")[0].1.contains("without its closing"));
        assert_eq!(err("abc ${HOST")[0].0, 4);
    }
}
