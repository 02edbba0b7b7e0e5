//! The built-in tools, one [`Tool`] each: what the model is shown (name, description, JSON
//! Schema), whether the tool writes, and which implementation runs it.
//!
//! The descriptions are the model's whole manual, so they say what a tool is for, what its
//! output looks like and what its limits are. Argument names here must match the `Deserialize`
//! structs of the implementations; a test in `tests/tools.rs` calls every tool by its spec.
//!
//! `git_status` and `git_diff` only read, but the sync gate holds them like writes: while the
//! checkout syncs, its `HEAD`, branch and index move under them, so their answer would describe
//! neither the image nor the branch head.

use super::{ToolContext, ToolError, ToolResult, ToolSpec, ToolUpdate};
use super::{bash, files, git, registry::Tool, search};
use serde_json::{Value, json};
use tokio::sync::mpsc;

/// One built-in: a unit struct whose [`Tool`] impl shows `spec`, says whether it writes, and
/// runs the expression after `=>` (a future) with the call's context, input and update sender.
macro_rules! builtin {
    (
        $ty:ident, writes: $writes:literal,
        run($ctx:ident, $input:ident, $updates:ident) => $run:expr,
        spec: $spec:expr
    ) => {
        struct $ty;

        #[async_trait::async_trait]
        impl Tool for $ty {
            fn spec(&self) -> ToolSpec<'_> {
                $spec
            }

            fn writes(&self) -> bool {
                $writes
            }

            async fn run(
                &self,
                $ctx: &ToolContext<'_>,
                $input: &Value,
                $updates: &mpsc::Sender<ToolUpdate>,
            ) -> Result<ToolResult, ToolError> {
                let _ = $updates;
                $run.await
            }
        }
    };
}

/// Every built-in, in the order the model is shown them.
pub(super) static BUILTINS: [&dyn Tool; 8] = [
    &ReadFile, &WriteFile, &EditFile, &ListFiles, &Grep, &Bash, &GitStatus, &GitDiff,
];

builtin! {
    ReadFile, writes: false,
    run(ctx, input, updates) => files::read_file(ctx, input),
    spec: ToolSpec {
        name: "read_file",
        description: "Read a text file. Returns numbered lines (line number, tab, text). \
            Reads up to 2000 lines from `offset`; use `offset`/`limit` to page through long \
            files. Relative paths are relative to the repository root.",
        input_schema: json!({
            "type": "object",
            "properties": {
                "path": {"type": "string", "description": "File to read."},
                "offset": {"type": "integer", "minimum": 1, "description": "First line to show, counting from 1."},
                "limit": {"type": "integer", "minimum": 1, "description": "Number of lines to show."}
            },
            "required": ["path"],
            "additionalProperties": false
        }),
    }
}

builtin! {
    WriteFile, writes: true,
    run(ctx, input, updates) => files::write_file(ctx, input, updates),
    spec: ToolSpec {
        name: "write_file",
        description: "Create a file or replace its whole content. Parent directories are \
            created. Prefer edit_file for changes to existing files.",
        input_schema: json!({
            "type": "object",
            "properties": {
                "path": {"type": "string", "description": "File to write."},
                "content": {"type": "string", "description": "The complete new content."}
            },
            "required": ["path", "content"],
            "additionalProperties": false
        }),
    }
}

builtin! {
    EditFile, writes: true,
    run(ctx, input, updates) => files::edit_file(ctx, input, updates),
    spec: ToolSpec {
        name: "edit_file",
        description: "Replace an exact string in a file. `old_string` must match the file \
            exactly (whitespace and indentation included) and be unique unless \
            `replace_all` is set; include surrounding lines to make it unique. Read the file \
            first.",
        input_schema: json!({
            "type": "object",
            "properties": {
                "path": {"type": "string", "description": "File to edit."},
                "old_string": {"type": "string", "description": "Exact text to replace."},
                "new_string": {"type": "string", "description": "Replacement text."},
                "replace_all": {"type": "boolean", "description": "Replace every occurrence (default false)."}
            },
            "required": ["path", "old_string", "new_string"],
            "additionalProperties": false
        }),
    }
}

builtin! {
    ListFiles, writes: false,
    run(ctx, input, updates) => search::list_files(ctx, input),
    spec: ToolSpec {
        name: "list_files",
        description: "List files (not directories) under a directory, sorted, skipping .git, \
            at most 1000. `pattern` is a glob: `*` and `?` within a path segment, `**` across \
            segments, `{a,b}` alternatives; a pattern without `/` matches file names at any \
            depth (e.g. `*.rs`), one with `/` matches paths relative to `path` (e.g. \
            `src/**/*.rs`).",
        input_schema: json!({
            "type": "object",
            "properties": {
                "pattern": {"type": "string", "description": "Glob to filter by."},
                "path": {"type": "string", "description": "Directory to list (default: repository root)."}
            },
            "additionalProperties": false
        }),
    }
}

builtin! {
    Grep, writes: false,
    run(ctx, input, updates) => search::grep(ctx, input),
    spec: ToolSpec {
        name: "grep",
        description: "Search file contents with an extended regular expression (grep -E), \
            recursively, skipping .git and binary files. Returns `path:line:text` lines, at \
            most 500.",
        input_schema: json!({
            "type": "object",
            "properties": {
                "pattern": {"type": "string", "description": "Extended regular expression."},
                "path": {"type": "string", "description": "File or directory to search (default: repository root)."},
                "glob": {"type": "string", "description": "Only files matching this glob, e.g. `*.rs` or `src/**/*.{ts,tsx}`."},
                "ignore_case": {"type": "boolean", "description": "Case-insensitive search (default false)."}
            },
            "required": ["pattern"],
            "additionalProperties": false
        }),
    }
}

builtin! {
    Bash, writes: true,
    run(ctx, input, updates) => bash::bash(ctx, input, updates),
    spec: ToolSpec {
        name: "bash",
        description: "Run a shell command in the repository root with bash (or sh). Stdin \
            is empty; there is no terminal. Returns stdout and stderr interleaved, cut in the \
            middle when longer than 30 KB, and the exit code. Runs at most `timeout_secs` \
            (default set by the server, at most 600), then is killed with its children.",
        input_schema: json!({
            "type": "object",
            "properties": {
                "command": {"type": "string", "description": "The command line."},
                "timeout_secs": {"type": "integer", "minimum": 1, "maximum": 600, "description": "Time limit in seconds."}
            },
            "required": ["command"],
            "additionalProperties": false
        }),
    }
}

builtin! {
    GitStatus, writes: true,
    run(ctx, input, updates) => git::git_status(ctx, input),
    spec: ToolSpec {
        name: "git_status",
        description: "Show the branch and changed, staged and untracked files (git status --short --branch).",
        input_schema: json!({
            "type": "object",
            "properties": {},
            "additionalProperties": false
        }),
    }
}

builtin! {
    GitDiff, writes: true,
    run(ctx, input, updates) => git::git_diff(ctx, input),
    spec: ToolSpec {
        name: "git_diff",
        description: "Show uncommitted changes as a unified diff: unstaged changes, or staged \
            ones with `staged`. Untracked files are not included.",
        input_schema: json!({
            "type": "object",
            "properties": {
                "path": {"type": "string", "description": "Limit the diff to this file or directory."},
                "staged": {"type": "boolean", "description": "Show staged changes instead (default false)."}
            },
            "additionalProperties": false
        }),
    }
}
