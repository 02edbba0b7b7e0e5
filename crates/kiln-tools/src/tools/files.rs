//! `read_file`, `write_file` and `edit_file`: whole-file operations through the guest file API.
//!
//! Writes go through the guest's atomic write (temp file + rename, the old mode kept), never
//! through a shell, so content is never re-interpreted. Every write reports a [`FileChange`] with
//! line counts from a diff of the old and new text.

use super::args::{display, parse, resolve};
use super::{FileChange, ToolContext, ToolError, ToolResult, ToolUpdate, output};
use kiln_protocol::api::FileChangeKind;
use kiln_protocol::guest::{ErrorKind, FileKind};
use serde::Deserialize;
use serde_json::Value;
use std::time::Duration;
use tokio::sync::mpsc;

/// Lines shown when the model gives no `limit`.
const DEFAULT_LINES: usize = 2000;
/// Characters shown of one line; minified files would otherwise fill the whole result.
const MAX_LINE_CHARS: usize = 2000;
/// Files larger than this are not read whole; the model is pointed at `sed`/`head` instead.
const MAX_FILE_BYTES: u64 = 16 << 20;
/// Bound on diffing for line counts; past it `similar` gives a coarser (still valid) diff.
const DIFF_DEADLINE: Duration = Duration::from_millis(500);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReadArgs {
    path: String,
    offset: Option<usize>,
    limit: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WriteArgs {
    path: String,
    content: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EditArgs {
    path: String,
    old_string: String,
    new_string: String,
    #[serde(default)]
    replace_all: Option<bool>,
}

pub(crate) async fn read_file(
    ctx: &ToolContext<'_>,
    input: &Value,
) -> Result<ToolResult, ToolError> {
    let args: ReadArgs = parse("read_file", input)?;
    if args.limit == Some(0) {
        return Err(bad("read_file", "`limit` must be at least 1"));
    }
    let abs = resolve("read_file", ctx.workdir, &args.path)?;
    let shown = display(ctx.workdir, &abs);
    let Some(bytes) = read_existing(ctx, &abs, &shown).await? else {
        return Err(ToolError::Failed(format!("{shown} does not exist")));
    };
    if bytes.is_empty() {
        return Ok(ToolResult::ok(format!("{shown} is empty")));
    }
    if bytes[..bytes.len().min(8192)].contains(&0) {
        return Ok(ToolResult::ok(format!(
            "{shown} looks binary ({} bytes); not shown",
            bytes.len()
        )));
    }
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text
        .strip_suffix('\n')
        .unwrap_or(&text)
        .split('\n')
        .collect();
    let total = lines.len();
    // Line numbers count from 1; a 0 from the model means the start.
    let start = args.offset.unwrap_or(1).max(1);
    if start > total {
        return Err(ToolError::Failed(format!(
            "{shown} has {total} lines; offset {start} is past the end"
        )));
    }
    let wanted_end = start
        .saturating_add(args.limit.unwrap_or(DEFAULT_LINES) - 1)
        .min(total);
    let mut out = String::new();
    let mut end = start - 1;
    // Stop at whole lines before the result limit, so the model can page on with `offset`.
    let budget = output::OUTPUT_LIMIT - 300;
    for (i, line) in lines[start - 1..wanted_end].iter().enumerate() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        let numbered = match line.char_indices().nth(MAX_LINE_CHARS) {
            Some((cut, _)) => format!("{:>6}\t{}… [line cut]\n", start + i, &line[..cut]),
            None => format!("{:>6}\t{line}\n", start + i),
        };
        if out.len() + numbered.len() > budget && end >= start {
            break;
        }
        out.push_str(&numbered);
        end = start + i;
    }
    if end < total {
        out.push_str(&format!(
            "\n[{shown} has {total} lines; showed {start}-{end}. Use offset={} to read on.]",
            end + 1
        ));
    }
    Ok(ToolResult::ok(out))
}

pub(crate) async fn write_file(
    ctx: &ToolContext<'_>,
    input: &Value,
    updates: &mpsc::Sender<ToolUpdate>,
) -> Result<ToolResult, ToolError> {
    let args: WriteArgs = parse("write_file", input)?;
    let abs = resolve("write_file", ctx.workdir, &args.path)?;
    let shown = display(ctx.workdir, &abs);
    let old = read_existing(ctx, &abs, &shown).await?;
    if let Some((parent, _)) = abs
        .rsplit_once('/')
        .filter(|(parent, _)| !parent.is_empty())
    {
        ctx.sandbox
            .guest()
            .mkdir(parent, true, None)
            .await
            .map_err(|err| guest_error(err, &display(ctx.workdir, parent)))?;
    }
    ctx.sandbox
        .guest()
        .write_file(&abs, args.content.as_bytes(), None)
        .await
        .map_err(|err| guest_error(err, &shown))?;
    let old_text = old
        .as_deref()
        .map(String::from_utf8_lossy)
        .unwrap_or_default();
    let (added, removed) = line_counts(old_text.into_owned(), args.content).await;
    let kind = if old.is_some() {
        FileChangeKind::Modified
    } else {
        FileChangeKind::Added
    };
    let change = FileChange {
        path: shown.clone(),
        kind,
        added,
        removed,
    };
    super::send(ctx, updates, ToolUpdate::FileChanged(change)).await;
    Ok(ToolResult::ok(match kind {
        FileChangeKind::Added => format!("Created {shown} ({added} lines)"),
        _ => format!("Wrote {shown} (+{added} -{removed} lines)"),
    }))
}

pub(crate) async fn edit_file(
    ctx: &ToolContext<'_>,
    input: &Value,
    updates: &mpsc::Sender<ToolUpdate>,
) -> Result<ToolResult, ToolError> {
    let args: EditArgs = parse("edit_file", input)?;
    if args.old_string.is_empty() {
        return Err(bad(
            "edit_file",
            "`old_string` is empty; include the text to replace (use write_file to create a file)",
        ));
    }
    if args.old_string == args.new_string {
        return Err(bad(
            "edit_file",
            "`old_string` and `new_string` are identical; there is nothing to change",
        ));
    }
    let abs = resolve("edit_file", ctx.workdir, &args.path)?;
    let shown = display(ctx.workdir, &abs);
    let Some(bytes) = read_existing(ctx, &abs, &shown).await? else {
        return Err(ToolError::Failed(format!(
            "{shown} does not exist; use write_file to create it"
        )));
    };
    let Ok(text) = String::from_utf8(bytes) else {
        return Err(ToolError::Failed(format!(
            "{shown} is not UTF-8 text; edit it with bash instead"
        )));
    };
    let count = text.matches(&args.old_string).count();
    if count == 0 {
        let crlf = text.contains("\r\n") && !args.old_string.contains("\r\n");
        let hint = if crlf && args.old_string.contains('\n') {
            " (the file has CRLF line endings)"
        } else {
            ""
        };
        return Err(ToolError::Failed(format!(
            "old_string was not found in {shown}{hint}; it must match exactly, including \
             whitespace and indentation; read the file to check"
        )));
    }
    let replace_all = args.replace_all.unwrap_or(false);
    if count > 1 && !replace_all {
        return Err(ToolError::Failed(format!(
            "old_string was found {count} times in {shown}; add more context to make it unique \
             or set replace_all"
        )));
    }
    let new_text = if replace_all {
        text.replace(&args.old_string, &args.new_string)
    } else {
        text.replacen(&args.old_string, &args.new_string, 1)
    };
    ctx.sandbox
        .guest()
        .write_file(&abs, new_text.as_bytes(), None)
        .await
        .map_err(|err| guest_error(err, &shown))?;
    let (added, removed) = line_counts(text, new_text).await;
    let change = FileChange {
        path: shown.clone(),
        kind: FileChangeKind::Modified,
        added,
        removed,
    };
    super::send(ctx, updates, ToolUpdate::FileChanged(change)).await;
    let what = if count == 1 {
        "occurrence"
    } else {
        "occurrences"
    };
    Ok(ToolResult::ok(format!(
        "Edited {shown}: replaced {count} {what} (+{added} -{removed} lines)"
    )))
}

/// A file's bytes, or `None` when nothing is there. Directories and huge files are errors.
async fn read_existing(
    ctx: &ToolContext<'_>,
    abs: &str,
    shown: &str,
) -> Result<Option<Vec<u8>>, ToolError> {
    let guest = ctx.sandbox.guest();
    let stat = match guest.stat(abs).await {
        Ok(stat) => stat,
        Err(kiln_sandbox::Error::Guest {
            kind: ErrorKind::NotFound,
            ..
        }) => return Ok(None),
        Err(err) => return Err(guest_error(err, shown)),
    };
    if stat.kind == FileKind::Dir {
        return Err(ToolError::Failed(format!(
            "{shown} is a directory; use list_files to see what it holds"
        )));
    }
    if stat.size > MAX_FILE_BYTES {
        return Err(ToolError::Failed(format!(
            "{shown} is {} bytes, too large to handle whole; use bash (sed -n '100,200p', head, \
             or a script) instead",
            stat.size
        )));
    }
    let bytes = guest
        .read_file(abs)
        .await
        .map_err(|err| guest_error(err, shown))?;
    Ok(Some(bytes))
}

/// Phrases a guest file error for the model.
pub(crate) fn guest_error(err: kiln_sandbox::Error, shown: &str) -> ToolError {
    match err {
        kiln_sandbox::Error::Guest { kind, message } => ToolError::Failed(match kind {
            ErrorKind::NotFound => format!("{shown} does not exist"),
            ErrorKind::PermissionDenied => format!("permission denied: {shown}"),
            ErrorKind::IsADirectory => format!("{shown} is a directory"),
            ErrorKind::NotADirectory => format!("a parent of {shown} is not a directory"),
            _ => format!("{shown}: {message}"),
        }),
        other => ToolError::Sandbox(other),
    }
}

fn bad(tool: &'static str, message: &str) -> ToolError {
    ToolError::BadArguments {
        tool,
        message: message.into(),
    }
}

/// Lines added and removed between two texts. Diffing is CPU work, so it runs off the async
/// threads and under a deadline.
pub(crate) async fn line_counts(old: String, new: String) -> (u32, u32) {
    let counted = tokio::task::spawn_blocking(move || {
        let diff = similar::TextDiff::configure()
            .deadline(std::time::Instant::now() + DIFF_DEADLINE)
            .diff_lines(&old, &new);
        let (mut added, mut removed) = (0u32, 0u32);
        for change in diff.iter_all_changes() {
            match change.tag() {
                similar::ChangeTag::Insert => added = added.saturating_add(1),
                similar::ChangeTag::Delete => removed = removed.saturating_add(1),
                similar::ChangeTag::Equal => {}
            }
        }
        (added, removed)
    });
    counted.await.unwrap_or((0, 0))
}
