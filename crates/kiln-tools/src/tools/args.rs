//! Turning what the model sent into typed arguments and sandbox paths.
//!
//! Arguments are deserialised with serde so the error names the field and what was expected
//! ("missing field `path`", "invalid type: integer `3`, expected a string"), which is exactly what
//! a model needs to correct the next call. Unknown fields are refused for the same reason: a
//! misspelt optional argument should not be silently ignored.

use super::ToolError;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Parses `input` as the arguments of `tool`.
pub(crate) fn parse<T: DeserializeOwned>(
    tool: &'static str,
    input: &Value,
) -> Result<T, ToolError> {
    let bad = |message: String| ToolError::BadArguments { tool, message };
    // `null` stands for "no arguments", which some models send for tools without parameters.
    let empty = Value::Object(Default::default());
    let input = match input {
        Value::Object(_) => input,
        Value::Null => &empty,
        other => {
            return Err(bad(format!(
                "expected a JSON object of named arguments, got {}",
                json_kind(other)
            )));
        }
    };
    T::deserialize(input).map_err(|err| bad(err.to_string()))
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Resolves `path` against `workdir` into an absolute, normalised path inside the sandbox.
///
/// `.` and `..` are resolved lexically (`..` at the root stays at the root); symlinks are left to
/// the sandbox. Absolute paths are allowed: the sandbox, not this function, is the boundary.
pub(crate) fn resolve(tool: &'static str, workdir: &str, path: &str) -> Result<String, ToolError> {
    if path.trim().is_empty() {
        return Err(ToolError::BadArguments {
            tool,
            message: "`path` is empty".into(),
        });
    }
    if path.contains('\0') {
        return Err(ToolError::BadArguments {
            tool,
            message: "`path` contains a NUL byte".into(),
        });
    }
    let joined = if path.starts_with('/') {
        path.to_string()
    } else {
        format!("{workdir}/{path}")
    };
    let mut parts: Vec<&str> = Vec::new();
    for part in joined.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            name => parts.push(name),
        }
    }
    Ok(format!("/{}", parts.join("/")))
}

/// How a path is shown to the model and to clients: relative to the workdir when inside it.
pub(crate) fn display(workdir: &str, abs: &str) -> String {
    let workdir = workdir.trim_end_matches('/');
    if abs == workdir {
        return ".".into();
    }
    match abs
        .strip_prefix(workdir)
        .and_then(|rest| rest.strip_prefix('/'))
    {
        Some(rel) if !workdir.is_empty() => rel.to_string(),
        _ => abs.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_resolve_against_the_workdir_and_normalise() {
        let r = |p| resolve("t", "/workspace", p).unwrap();
        assert_eq!(r("src/main.rs"), "/workspace/src/main.rs");
        assert_eq!(r("./a/../b"), "/workspace/b");
        assert_eq!(r("../../../etc/passwd"), "/etc/passwd");
        assert_eq!(r("/tmp//x/."), "/tmp/x");
        assert_eq!(r("."), "/workspace");
        assert!(resolve("t", "/workspace", " ").is_err());
    }

    #[test]
    fn paths_display_relative_to_the_workdir() {
        assert_eq!(display("/workspace", "/workspace/a/b"), "a/b");
        assert_eq!(display("/workspace", "/workspace"), ".");
        assert_eq!(display("/workspace", "/workspacex/a"), "/workspacex/a");
        assert_eq!(display("/workspace", "/etc/hosts"), "/etc/hosts");
    }

    #[test]
    fn argument_errors_name_the_problem() {
        #[derive(serde::Deserialize, Debug)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct A {
            path: String,
        }
        let err = parse::<A>("read_file", &serde_json::json!({})).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid arguments for read_file: missing field `path`"
        );
        let err = parse::<A>("read_file", &serde_json::json!("x")).unwrap_err();
        assert!(err.to_string().contains("got a string"), "{err}");
    }
}
