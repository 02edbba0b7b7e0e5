//! `list_files` and `grep`: finding things in the sandbox's tree.
//!
//! Both run one process in the sandbox (`find`, `grep -r`) rather than walking the tree over the
//! guest protocol, which would cost a round trip per directory. Globs are matched here (see
//! `glob.rs`), so they mean the same in both tools. Results are sorted, capped and say so.

use super::args::{display, parse, resolve};
use super::exec::{argv, capture};
use super::files::guest_error;
use super::glob::Glob;
use super::{ToolContext, ToolError, ToolResult};
use kiln_protocol::guest::FileKind;
use serde::Deserialize;
use serde_json::Value;
use std::time::Duration;

/// Files listed at most.
const MAX_FILES: usize = 1000;
/// Matching lines shown at most.
const MAX_MATCHES: usize = 500;
/// Characters shown of one matching line.
const MAX_MATCH_CHARS: usize = 300;
/// How long a search may run.
const SEARCH_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListArgs {
    pattern: Option<String>,
    path: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GrepArgs {
    pattern: String,
    path: Option<String>,
    glob: Option<String>,
    #[serde(default)]
    ignore_case: Option<bool>,
}

pub(crate) async fn list_files(
    ctx: &ToolContext<'_>,
    input: &Value,
) -> Result<ToolResult, ToolError> {
    let args: ListArgs = parse("list_files", input)?;
    let glob = match args.pattern.as_deref().filter(|p| !p.is_empty()) {
        Some(pattern) => Some(
            Glob::new(pattern).map_err(|message| ToolError::BadArguments {
                tool: "list_files",
                message,
            })?,
        ),
        None => None,
    };
    let root = resolve(
        "list_files",
        ctx.workdir,
        args.path.as_deref().unwrap_or("."),
    )?;
    let shown_root = display(ctx.workdir, &root);
    let stat = ctx.sandbox.guest().stat(&root).await;
    match stat.map_err(|err| guest_error(err, &shown_root))? {
        stat if stat.kind == FileKind::Dir => {}
        _ => {
            return Err(ToolError::Failed(format!(
                "{shown_root} is not a directory; `path` names the directory to list"
            )));
        }
    }
    let find = argv(&[
        "find", ".", "-name", ".git", "-prune", "-o", "(", "-type", "f", "-o", "-type", "l", ")",
        "-print0",
    ]);
    let found = capture(ctx, find, &root, SEARCH_TIMEOUT).await?;
    if !found.status.success() && found.stdout.is_empty() {
        return Err(ToolError::Failed(format!(
            "cannot list {shown_root}: {}",
            first_line(&found.stderr)
        )));
    }
    let mut files: Vec<String> = found
        .stdout
        .split('\0')
        .filter_map(|p| p.strip_prefix("./"))
        .filter(|rel| glob.as_ref().is_none_or(|g| g.matches(rel)))
        .map(|rel| {
            display(
                ctx.workdir,
                &format!("{}/{rel}", root.trim_end_matches('/')),
            )
        })
        .collect();
    files.sort();
    let total = files.len();
    if total == 0 {
        let what = args
            .pattern
            .map(|p| format!(" matching `{p}`"))
            .unwrap_or_default();
        return Ok(ToolResult::ok(format!("No files{what} under {shown_root}")));
    }
    files.truncate(MAX_FILES);
    let mut out = files.join("\n");
    if total > MAX_FILES {
        out.push_str(&format!(
            "\n[showed {MAX_FILES} of {total} files; narrow the pattern or path]"
        ));
    }
    if found.stdout_cut {
        out.push_str("\n[the listing was too long and is incomplete; narrow the path]");
    }
    if !found.status.success() {
        out.push_str(&format!("\n[find reported: {}]", first_line(&found.stderr)));
    }
    Ok(ToolResult::ok(out))
}

pub(crate) async fn grep(ctx: &ToolContext<'_>, input: &Value) -> Result<ToolResult, ToolError> {
    let args: GrepArgs = parse("grep", input)?;
    if args.pattern.is_empty() {
        return Err(ToolError::BadArguments {
            tool: "grep",
            message: "`pattern` is empty".into(),
        });
    }
    let glob = match args.glob.as_deref().filter(|g| !g.is_empty()) {
        Some(pattern) => Some(
            Glob::new(pattern).map_err(|message| ToolError::BadArguments {
                tool: "grep",
                message,
            })?,
        ),
        None => None,
    };
    let root = resolve("grep", ctx.workdir, args.path.as_deref().unwrap_or("."))?;
    let shown_root = display(ctx.workdir, &root);
    // -Z puts a NUL after the file name, so names with `:` parse; -I skips binary files.
    let mut cmd: Vec<String> = ["grep", "-rnIEHZ", "--exclude-dir=.git", "--color=never"]
        .map(String::from)
        .into();
    if args.ignore_case.unwrap_or(false) {
        cmd.push("-i".into());
    }
    // Name-only globs also narrow grep itself; the exact match is checked below either way.
    for name in glob
        .as_ref()
        .and_then(Glob::name_patterns)
        .unwrap_or_default()
    {
        cmd.push(format!("--include={name}"));
    }
    cmd.extend(["-e".into(), args.pattern.clone(), "--".into()]);
    // Without an operand `grep -r` searches `.` and prints names without a `./` prefix.
    if shown_root != "." {
        cmd.push(shown_root.clone());
    }
    let found = capture(ctx, argv(&cmd), ctx.workdir, SEARCH_TIMEOUT).await?;
    let code = found.status.code;
    if code == Some(2) && found.stdout.is_empty() {
        return Err(ToolError::Failed(format!(
            "grep failed: {}",
            first_line(&found.stderr)
        )));
    }
    let mut matches = Vec::new();
    for record in found.stdout.lines() {
        let Some((file, rest)) = record.split_once('\0') else {
            continue;
        };
        if let Some(glob) = &glob {
            let abs = resolve("grep", ctx.workdir, file)?;
            let rel = abs
                .strip_prefix(root.trim_end_matches('/'))
                .map(|r| r.trim_start_matches('/'))
                .unwrap_or(&abs);
            let rel = if rel.is_empty() { file } else { rel };
            if !glob.matches(rel) {
                continue;
            }
        }
        let line = match rest.char_indices().nth(MAX_MATCH_CHARS) {
            Some((cut, _)) => format!("{file}:{}…", &rest[..cut]),
            None => format!("{file}:{rest}"),
        };
        let number: u64 = rest
            .split(':')
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        matches.push((file.to_string(), number, line));
    }
    // grep walks directories in disk order; sorted output is stable and easier to read.
    matches.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
    let mut matches: Vec<String> = matches.into_iter().map(|(_, _, line)| line).collect();
    if matches.is_empty() {
        return Ok(ToolResult::ok(format!(
            "No matches for `{}` in {shown_root}",
            args.pattern
        )));
    }
    let total = matches.len();
    matches.truncate(MAX_MATCHES);
    let mut out = matches.join("\n");
    if total > MAX_MATCHES {
        out.push_str(&format!(
            "\n[showed {MAX_MATCHES} of {total} matching lines; narrow the pattern, path or glob]"
        ));
    }
    if found.stdout_cut {
        out.push_str("\n[grep printed too much; the results are incomplete]");
    }
    if code == Some(2) {
        out.push_str(&format!("\n[grep reported: {}]", first_line(&found.stderr)));
    }
    Ok(ToolResult::ok(out))
}

fn first_line(text: &str) -> &str {
    let line = text.lines().next().unwrap_or("").trim();
    if line.is_empty() { "no details" } else { line }
}
