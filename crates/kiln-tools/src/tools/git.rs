//! `git_status`, `git_diff`, and the snapshots that tell which files a `bash` command changed.
//!
//! A shell command can change anything, and the sandbox has no file-change feed, so `bash`
//! compares two snapshots of the git work tree taken before and after the command. A snapshot is
//! `git diff --name-status` and `git diff --numstat` of the work tree against the commit that was
//! `HEAD` before the command, with untracked files included (they are added intent-to-add to a
//! *copy* of the index; the real index is never touched). A path is reported when its letter
//! (added/modified/deleted) or its line counts changed.
//!
//! This is a heuristic with known blind spots: files outside the repository or ignored by
//! `.gitignore` are invisible, and an edit that keeps a dirty file's line counts (replacing one
//! line of an already-modified file by another) goes unnoticed. Pinning the base to the pre-command
//! `HEAD` means a `git commit` reports nothing (the tree did not change) and a `git checkout`
//! reports what it rewrote.

use super::args::{display, parse};
use super::exec::{argv, capture};
use super::{FileChange, ToolContext, ToolError, ToolResult};
use kiln_protocol::api::FileChangeKind;
use kiln_sandbox::{ExecRequest, Sandbox};
use serde::Deserialize;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

const GIT_TIMEOUT: Duration = Duration::from_secs(60);
/// Bound on one snapshot; a repository this slow gets no change detection.
const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(30);
/// Separates the two diffs in a snapshot's output; no record of `--name-status -z` looks like it.
const NUMSTAT_MARKER: &str = "--kiln-numstat--";

/// `$1` is the base commit (empty: take `HEAD` now). Exit 3: not in a work tree.
const SNAPSHOT_SCRIPT: &str = r#"
git rev-parse --is-inside-work-tree >/dev/null 2>&1 || exit 3
top=$(git rev-parse --show-toplevel) && cd "$top" || exit 3
base=$1
[ -n "$base" ] || base=$(git rev-parse -q --verify HEAD) || base=$(git hash-object -t tree /dev/null) || exit 4
idx=$(git rev-parse --git-path kiln-snapshot-index).$$
trap 'rm -f "$idx" "$idx.lock"' EXIT
src=$(git rev-parse --git-path index)
if [ -f "$src" ]; then cp "$src" "$idx" || exit 4; fi
export GIT_INDEX_FILE="$idx"
git add --intent-to-add . >/dev/null 2>&1 || exit 4
printf '%s\0%s\0' "$base" "$top"
git diff --name-status -z --no-renames "$base" -- || exit 4
printf -- '--kiln-numstat--\0'
git diff --numstat -z --no-renames "$base" -- || exit 4
"#;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StatusArgs {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DiffArgs {
    path: Option<String>,
    #[serde(default)]
    staged: Option<bool>,
}

pub(crate) async fn git_status(
    ctx: &ToolContext<'_>,
    input: &Value,
) -> Result<ToolResult, ToolError> {
    let StatusArgs {} = parse("git_status", input)?;
    let out = git(
        ctx,
        &["status", "--short", "--branch", "--untracked-files=all"],
    )
    .await?;
    let clean = out.lines().all(|line| line.starts_with("##"));
    Ok(ToolResult::ok(if clean {
        format!("{out}\n(working tree clean)")
    } else {
        out
    }))
}

pub(crate) async fn git_diff(
    ctx: &ToolContext<'_>,
    input: &Value,
) -> Result<ToolResult, ToolError> {
    let args: DiffArgs = parse("git_diff", input)?;
    let staged = args.staged.unwrap_or(false);
    let mut cmd = vec!["diff", "--no-ext-diff", "--no-color"];
    if staged {
        cmd.push("--staged");
    }
    cmd.push("--");
    if let Some(path) = args.path.as_deref().filter(|p| !p.is_empty()) {
        cmd.push(path);
    }
    let out = git(ctx, &cmd).await?;
    if out.trim().is_empty() {
        let what = if staged {
            "No staged changes"
        } else {
            "No unstaged changes"
        };
        let hint = if staged {
            ""
        } else {
            " (staged and untracked files are not shown; see git_status)"
        };
        return Ok(ToolResult::ok(format!("{what}{hint}")));
    }
    Ok(ToolResult::ok(out))
}

/// Runs `git <args>` in the workdir; a failure becomes git's own message.
async fn git(ctx: &ToolContext<'_>, args: &[&str]) -> Result<String, ToolError> {
    let mut cmd = vec!["git", "--no-pager", "--no-optional-locks"];
    cmd.extend_from_slice(args);
    let out = capture(ctx, argv(&cmd), ctx.workdir, GIT_TIMEOUT).await?;
    if !out.status.success() {
        return Err(ToolError::Failed(format!(
            "git {} failed: {}",
            args[0],
            out.stderr.trim()
        )));
    }
    Ok(out.stdout)
}

/// The work tree's differences from a base commit, per path relative to the repository top.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Snapshot {
    base: String,
    top: String,
    /// Path → (`A`/`M`/`D`/`T` letter, `added\tremoved` or `-\t-` for binary).
    entries: BTreeMap<String, (String, String)>,
}

/// Snapshots the repository around `workdir`, against `base` (the previous snapshot's base) or
/// the current `HEAD`. `None` when `workdir` is not in a git work tree or git fails.
pub(crate) async fn snapshot(
    sandbox: &Sandbox,
    workdir: &str,
    base: Option<&Snapshot>,
) -> Option<Snapshot> {
    let base = base.map(|s| s.base.as_str()).unwrap_or("");
    let request = ExecRequest {
        command: argv(&["/bin/sh", "-c", SNAPSHOT_SCRIPT, "kiln-snapshot", base]),
        cwd: Some(workdir.to_string()),
        env: Default::default(),
        stdin: false,
        timeout_ms: Some(SNAPSHOT_TIMEOUT.as_millis() as u64),
    };
    let out = match sandbox.run(request).await {
        Ok(out) if out.status.success() => out,
        Ok(out) => {
            tracing::debug!(status = ?out.status, "no git snapshot for file changes");
            return None;
        }
        Err(err) => {
            tracing::warn!(%err, "git snapshot for file changes failed");
            return None;
        }
    };
    parse_snapshot(&String::from_utf8_lossy(&out.stdout))
}

fn parse_snapshot(out: &str) -> Option<Snapshot> {
    let mut fields = out.split('\0');
    let base = fields.next()?.to_string();
    let top = fields.next()?.to_string();
    let mut entries: BTreeMap<String, (String, String)> = BTreeMap::new();
    while let Some(letter) = fields.next().filter(|f| *f != NUMSTAT_MARKER) {
        let path = fields.next()?;
        entries.entry(path.into()).or_default().0 = letter.into();
    }
    for record in fields.filter(|f| !f.is_empty()) {
        let mut parts = record.splitn(3, '\t');
        let (added, removed, path) = (parts.next()?, parts.next()?, parts.next()?);
        entries.entry(path.into()).or_default().1 = format!("{added}\t{removed}");
    }
    Some(Snapshot { base, top, entries })
}

/// What changed between two snapshots of the same repository.
pub(crate) fn changes(before: &Snapshot, after: &Snapshot, workdir: &str) -> Vec<FileChange> {
    let none = (String::new(), String::new());
    let paths: BTreeSet<&String> = before.entries.keys().chain(after.entries.keys()).collect();
    let mut out = Vec::new();
    for path in paths {
        let b = before.entries.get(path).unwrap_or(&none);
        let a = after.entries.get(path).unwrap_or(&none);
        if a == b {
            continue;
        }
        let kind = match (b.0.as_str(), a.0.as_str()) {
            (_, "D") | ("A", "") => FileChangeKind::Deleted,
            ("" | "D", "A") | ("D", _) => FileChangeKind::Added,
            _ => FileChangeKind::Modified,
        };
        let (a0, r0) = counts(&b.1);
        let (a1, r1) = counts(&a.1);
        // Growth in either column is this command's; shrinkage is the reverse change.
        let added = a1.saturating_sub(a0) + r0.saturating_sub(r1);
        let removed = r1.saturating_sub(r0) + a0.saturating_sub(a1);
        let abs = format!("{}/{path}", after.top.trim_end_matches('/'));
        out.push(FileChange {
            path: display(workdir, &abs),
            kind,
            added,
            removed,
        });
    }
    out
}

fn counts(numstat: &str) -> (u32, u32) {
    let mut parts = numstat.split('\t');
    let mut next = || parts.next().and_then(|n| n.parse().ok()).unwrap_or(0);
    (next(), next())
}
