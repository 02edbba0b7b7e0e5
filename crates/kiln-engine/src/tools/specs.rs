//! The tools as the model sees them: names, descriptions and JSON Schemas.
//!
//! This table is the model's whole manual, so descriptions say what a tool is for, what its
//! output looks like and what its limits are. Argument names here must match the `Deserialize`
//! structs of the tool implementations; a test in `tests/tools.rs` calls every tool by its spec.

use super::ToolSpec;
use serde_json::json;

/// Every tool, in the order the model is shown them.
pub fn specs() -> Vec<ToolSpec> {
    vec![
        ToolSpec {
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
        },
        ToolSpec {
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
        },
        ToolSpec {
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
        },
        ToolSpec {
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
        },
        ToolSpec {
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
        },
        ToolSpec {
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
        },
        ToolSpec {
            name: "git_status",
            description: "Show the branch and changed, staged and untracked files (git status --short --branch).",
            input_schema: json!({
                "type": "object",
                "properties": {},
                "additionalProperties": false
            }),
        },
        ToolSpec {
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
        },
    ]
}
