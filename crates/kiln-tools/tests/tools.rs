//! The agent's tools against real sandboxes holding a real git repository.

mod common;

use common::{Harness, call, call_with, ok};
use kiln_protocol::api::{FileChangeKind, ToolStream};
use kiln_tools::tools::{self, FileChange, ToolUpdate};
use serde_json::json;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

fn change(path: &str, kind: FileChangeKind, added: u32, removed: u32) -> FileChange {
    FileChange {
        path: path.into(),
        kind,
        added,
        removed,
    }
}

#[tokio::test]
async fn every_spec_names_a_tool_that_runs() {
    let h = Harness::new().await;
    let sandbox = h.repo().await;
    let specs = tools::specs();
    let names: Vec<_> = specs.iter().map(|s| s.name).collect();
    assert_eq!(
        names,
        [
            "read_file",
            "write_file",
            "edit_file",
            "list_files",
            "grep",
            "bash",
            "git_status",
            "git_diff"
        ]
    );
    for spec in &specs {
        assert_eq!(spec.input_schema["type"], "object", "{}", spec.name);
        // Every required argument is really required: leaving them all out names the first.
        let required = spec.input_schema["required"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let called = call(&sandbox, spec.name, json!({})).await;
        match required.first() {
            Some(first) => assert!(
                called
                    .err()
                    .contains(&format!("missing field `{}`", first.as_str().unwrap())),
                "{}: {}",
                spec.name,
                called.result.content
            ),
            None => assert!(
                !called.result.is_error,
                "{}: {}",
                spec.name, called.result.content
            ),
        }
    }
}

#[tokio::test]
async fn read_file_numbers_lines_and_pages() {
    let h = Harness::new().await;
    let sandbox = h.repo().await;
    let read = call(&sandbox, "read_file", json!({"path": "README.md"})).await;
    assert_eq!(read.ok(), "     1\thello\n     2\tworld\n     3\tbye\n");

    let page = call(
        &sandbox,
        "read_file",
        json!({"path": "./src/../README.md", "offset": 2, "limit": 1}),
    )
    .await;
    assert_eq!(
        page.ok(),
        "     2\tworld\n\n[README.md has 3 lines; showed 2-2. Use offset=3 to read on.]"
    );
    let absolute = call(
        &sandbox,
        "read_file",
        json!({"path": "/workspace/src/lib.rs", "offset": 3}),
    )
    .await;
    assert_eq!(absolute.ok(), "     3\t}\n");

    let past = call(
        &sandbox,
        "read_file",
        json!({"path": "README.md", "offset": 9}),
    )
    .await;
    assert_eq!(
        past.err(),
        "README.md has 3 lines; offset 9 is past the end"
    );
    let missing = call(&sandbox, "read_file", json!({"path": "nope.txt"})).await;
    assert_eq!(missing.err(), "nope.txt does not exist");
    let dir = call(&sandbox, "read_file", json!({"path": "src"})).await;
    assert!(
        dir.err().contains("src is a directory; use list_files"),
        "{}",
        dir.err()
    );
}

#[tokio::test]
async fn write_file_creates_and_replaces_with_line_counts() {
    let h = Harness::new().await;
    let sandbox = h.repo().await;
    let created = call(
        &sandbox,
        "write_file",
        json!({"path": "new/dir/a.txt", "content": "one\ntwo\n"}),
    )
    .await;
    assert_eq!(created.ok(), "Created new/dir/a.txt (2 lines)");
    assert_eq!(
        created.changes(),
        [change("new/dir/a.txt", FileChangeKind::Added, 2, 0)]
    );
    assert_eq!(ok(&sandbox, "cat new/dir/a.txt").await, "one\ntwo\n");

    let replaced = call(
        &sandbox,
        "write_file",
        json!({"path": "README.md", "content": "hello\nthere\nbye\n"}),
    )
    .await;
    assert_eq!(replaced.ok(), "Wrote README.md (+1 -1 lines)");
    assert_eq!(
        replaced.changes(),
        [change("README.md", FileChangeKind::Modified, 1, 1)]
    );
    // The sandbox user can still use what the control plane wrote.
    assert_eq!(
        ok(&sandbox, "cat README.md && stat -c %u new/dir/a.txt").await,
        "hello\nthere\nbye\n1000\n"
    );
}

#[tokio::test]
async fn edit_file_replaces_exact_unique_strings() {
    let h = Harness::new().await;
    let sandbox = h.repo().await;
    let edit = call(
        &sandbox,
        "edit_file",
        json!({"path": "src/lib.rs", "old_string": "    a + b\n", "new_string": "    // sum\n    a + b\n"}),
    )
    .await;
    assert_eq!(
        edit.ok(),
        "Edited src/lib.rs: replaced 1 occurrence (+1 -0 lines)"
    );
    assert_eq!(
        edit.changes(),
        [change("src/lib.rs", FileChangeKind::Modified, 1, 0)]
    );
    assert!(
        ok(&sandbox, "cat src/lib.rs")
            .await
            .contains("    // sum\n    a + b\n")
    );

    let missing = call(
        &sandbox,
        "edit_file",
        json!({"path": "src/lib.rs", "old_string": "a - b", "new_string": "x"}),
    )
    .await;
    assert!(
        missing
            .err()
            .starts_with("old_string was not found in src/lib.rs"),
        "{}",
        missing.err()
    );
    assert!(missing.changes().is_empty());

    ok(&sandbox, "printf 'x = 1\\nx = 1\\nx = 1\\n' > dup.txt").await;
    let ambiguous = call(
        &sandbox,
        "edit_file",
        json!({"path": "dup.txt", "old_string": "x = 1", "new_string": "x = 2"}),
    )
    .await;
    assert_eq!(
        ambiguous.err(),
        "old_string was found 3 times in dup.txt; add more context to make it unique or set replace_all"
    );
    assert_eq!(ok(&sandbox, "cat dup.txt").await, "x = 1\nx = 1\nx = 1\n");

    let all = call(
        &sandbox,
        "edit_file",
        json!({"path": "dup.txt", "old_string": "x = 1", "new_string": "x = 2", "replace_all": true}),
    )
    .await;
    assert_eq!(
        all.ok(),
        "Edited dup.txt: replaced 3 occurrences (+3 -3 lines)"
    );
    assert_eq!(ok(&sandbox, "cat dup.txt").await, "x = 2\nx = 2\nx = 2\n");

    let absent = call(
        &sandbox,
        "edit_file",
        json!({"path": "no.txt", "old_string": "a", "new_string": "b"}),
    )
    .await;
    assert_eq!(
        absent.err(),
        "no.txt does not exist; use write_file to create it"
    );
    let same = call(
        &sandbox,
        "edit_file",
        json!({"path": "dup.txt", "old_string": "a", "new_string": "a"}),
    )
    .await;
    assert!(same.err().contains("identical"), "{}", same.err());
}

#[tokio::test]
async fn list_files_globs_sorts_and_skips_git() {
    let h = Harness::new().await;
    let sandbox = h.repo().await;
    let all = call(&sandbox, "list_files", json!({})).await;
    assert_eq!(
        all.ok(),
        "README.md\ndocs/guide.md\nsrc/lib.rs\nsrc/main.rs"
    );
    let rust = call(&sandbox, "list_files", json!({"pattern": "src/**/*.rs"})).await;
    assert_eq!(rust.ok(), "src/lib.rs\nsrc/main.rs");
    let md = call(&sandbox, "list_files", json!({"pattern": "*.md"})).await;
    assert_eq!(md.ok(), "README.md\ndocs/guide.md");
    let under = call(
        &sandbox,
        "list_files",
        json!({"path": "src", "pattern": "m*.rs"}),
    )
    .await;
    assert_eq!(under.ok(), "src/main.rs");
    let none = call(&sandbox, "list_files", json!({"pattern": "*.py"})).await;
    assert_eq!(none.ok(), "No files matching `*.py` under .");
    let absent = call(&sandbox, "list_files", json!({"path": "nowhere"})).await;
    assert_eq!(absent.err(), "nowhere does not exist");
    let file = call(&sandbox, "list_files", json!({"path": "README.md"})).await;
    assert!(file.err().starts_with("README.md is not a directory"));

    ok(
        &sandbox,
        "mkdir many && cd many && seq -f 'f%04g' 1 1200 | xargs touch",
    )
    .await;
    let capped = call(&sandbox, "list_files", json!({"path": "many"})).await;
    let lines: Vec<_> = capped.ok().lines().collect();
    assert_eq!(lines.len(), 1001);
    assert_eq!(lines[0], "many/f0001");
    assert_eq!(
        lines[1000],
        "[showed 1000 of 1200 files; narrow the pattern or path]"
    );
}

#[tokio::test]
async fn grep_finds_lines_and_says_when_nothing_matches() {
    let h = Harness::new().await;
    let sandbox = h.repo().await;
    let hit = call(&sandbox, "grep", json!({"pattern": "fn (main|add)"})).await;
    assert_eq!(
        hit.ok(),
        "src/lib.rs:1:pub fn add(a: i32, b: i32) -> i32 {\nsrc/main.rs:1:fn main() {"
    );
    let glob = call(
        &sandbox,
        "grep",
        json!({"pattern": "fn", "glob": "src/**/m*.rs"}),
    )
    .await;
    assert_eq!(glob.ok(), "src/main.rs:1:fn main() {");
    let case = call(
        &sandbox,
        "grep",
        json!({"pattern": "GUIDE", "ignore_case": true, "path": "docs"}),
    )
    .await;
    assert_eq!(case.ok(), "docs/guide.md:1:# Guide");
    let miss = call(&sandbox, "grep", json!({"pattern": "nowhere"})).await;
    assert_eq!(miss.ok(), "No matches for `nowhere` in .");
    let bad = call(&sandbox, "grep", json!({"pattern": "(unclosed"})).await;
    assert!(bad.err().starts_with("grep failed:"), "{}", bad.err());
}

#[tokio::test]
async fn bash_streams_output_in_order_and_reports_the_exit_code() {
    let h = Harness::new().await;
    let sandbox = h.repo().await;
    let run = call(
        &sandbox,
        "bash",
        json!({"command": "echo one; sleep 0.2; echo two >&2; sleep 0.2; echo three; exit 3"}),
    )
    .await;
    assert!(
        !run.result.is_error,
        "a failing command is still a result: {}",
        run.result.content
    );
    assert_eq!(run.result.content, "one\ntwo\nthree\n\n[exit code 3]");
    let outputs: Vec<_> = run
        .updates
        .iter()
        .filter_map(|u| match u {
            ToolUpdate::Output { stream, chunk } => Some((*stream, chunk.as_str())),
            ToolUpdate::FileChanged(_) => None,
        })
        .collect();
    assert_eq!(
        outputs,
        [
            (ToolStream::Stdout, "one\n"),
            (ToolStream::Stderr, "two\n"),
            (ToolStream::Stdout, "three\n")
        ]
    );
    let cwd = call(&sandbox, "bash", json!({"command": "pwd; echo $0"})).await;
    assert_eq!(cwd.ok(), "/workspace\n/bin/bash\n\n[exit code 0]");
}

#[tokio::test]
async fn bash_timeout_kills_the_command() {
    let h = Harness::new().await;
    let sandbox = h.repo().await;
    let start = Instant::now();
    let run = call(
        &sandbox,
        "bash",
        json!({"command": "echo started; sleep 30", "timeout_secs": 1}),
    )
    .await;
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    assert!(run.err().starts_with("started\n"), "{}", run.err());
    assert!(
        run.err()
            .ends_with("[timed out after 1 s: the command and its children were killed]")
    );
}

#[tokio::test]
async fn cancelling_bash_kills_the_process_group_within_a_second() {
    let h = Harness::new().await;
    let sandbox = h.repo().await;
    let cancel = CancellationToken::new();
    let started = Instant::now();
    let running = {
        let (sandbox, cancel) = (sandbox.clone(), cancel.clone());
        tokio::spawn(async move {
            call_with(
                &sandbox,
                "bash",
                json!({"command": "sleep 30 & echo $! > /tmp/child; wait"}),
                &cancel,
            )
            .await
        })
    };
    // Wait until the command runs, then cancel.
    ok(
        &sandbox,
        "for i in $(seq 100); do [ -s /tmp/child ] && exit 0; sleep 0.05; done; exit 1",
    )
    .await;
    let cancelled_at = Instant::now();
    cancel.cancel();
    let run = running.await.unwrap();
    assert!(
        cancelled_at.elapsed() < Duration::from_millis(1500),
        "{:?}",
        cancelled_at.elapsed()
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(
        run.result.cancelled && run.result.is_error,
        "{:?}",
        run.result
    );
    assert!(
        run.result
            .content
            .contains("[cancelled: the command was killed]")
    );
    // The background `sleep` was in the group: gone, or a zombie init has not reaped yet.
    ok(
        &sandbox,
        "p=$(cat /tmp/child); s=$(cut -d' ' -f3 /proc/$p/stat 2>/dev/null); [ -z \"$s\" ] || [ \"$s\" = Z ]",
    )
    .await;
}

#[tokio::test]
async fn bash_reports_the_files_it_changed() {
    let h = Harness::new().await;
    let sandbox = h.repo().await;
    let run = call(
        &sandbox,
        "bash",
        json!({"command": "printf 'a\\nb\\n' > notes.txt; echo more >> README.md; rm src/lib.rs; mkdir -p x/y; : > x/y/empty"}),
    )
    .await;
    run.ok();
    assert_eq!(
        run.changes(),
        [
            change("README.md", FileChangeKind::Modified, 1, 0),
            change("notes.txt", FileChangeKind::Added, 2, 0),
            change("src/lib.rs", FileChangeKind::Deleted, 0, 3),
            change("x/y/empty", FileChangeKind::Added, 0, 0),
        ]
    );

    // Changes are this command's own: the dirty tree from before does not show up again.
    let again = call(
        &sandbox,
        "bash",
        json!({"command": "echo c >> notes.txt; rm x/y/empty; git checkout -q src/lib.rs"}),
    )
    .await;
    again.ok();
    assert_eq!(
        again.changes(),
        [
            change("notes.txt", FileChangeKind::Modified, 1, 0),
            change("src/lib.rs", FileChangeKind::Added, 3, 0),
            change("x/y/empty", FileChangeKind::Deleted, 0, 0),
        ]
    );

    // Committing changes history, not files; reading changes nothing.
    let commit = call(
        &sandbox,
        "bash",
        json!({"command": "git add -A && git commit -qm work && cat README.md"}),
    )
    .await;
    commit.ok();
    assert_eq!(commit.changes(), []);
    // The real index was never disturbed by the snapshots.
    assert_eq!(ok(&sandbox, "git status --porcelain").await, "");
}

#[tokio::test]
async fn bad_arguments_say_what_is_wrong() {
    let h = Harness::new().await;
    let sandbox = h.repo().await;
    let cases = [
        (
            "read_file",
            json!({"path": 5}),
            "invalid arguments for read_file: invalid type: integer `5`, expected a string",
        ),
        (
            "read_file",
            json!({"path": "a", "lines": 3}),
            "invalid arguments for read_file: unknown field `lines`, expected one of `path`, `offset`, `limit`",
        ),
        (
            "read_file",
            json!({"path": "a", "limit": 0}),
            "invalid arguments for read_file: `limit` must be at least 1",
        ),
        (
            "read_file",
            json!(["README.md"]),
            "invalid arguments for read_file: expected a JSON object of named arguments, got an array",
        ),
        (
            "edit_file",
            json!({"path": "a", "old_string": "", "new_string": "b"}),
            "invalid arguments for edit_file: `old_string` is empty; include the text to replace (use write_file to create a file)",
        ),
        (
            "bash",
            json!({"command": "true", "timeout_secs": 601}),
            "invalid arguments for bash: `timeout_secs` must be between 1 and 600, got 601",
        ),
        (
            "bash",
            json!({"command": "true", "timeout_secs": -1}),
            "invalid arguments for bash: invalid value: integer `-1`, expected u64",
        ),
        (
            "write_file",
            json!({"path": "", "content": ""}),
            "invalid arguments for write_file: `path` is empty",
        ),
        (
            "grep",
            json!({"pattern": "x", "glob": "{a"}),
            "invalid arguments for grep: unclosed `{` in glob `{a`",
        ),
    ];
    for (tool, input, expected) in cases {
        let called = call(&sandbox, tool, input).await;
        assert_eq!(called.err(), expected);
    }
    let unknown = call(&sandbox, "Bash", json!({"command": "true"})).await;
    assert!(
        unknown
            .err()
            .starts_with("unknown tool `Bash`; the available tools are: read_file,")
    );
}

#[tokio::test]
async fn long_output_is_truncated_in_the_middle() {
    let h = Harness::new().await;
    let sandbox = h.repo().await;
    let run = call(&sandbox, "bash", json!({"command": "seq 1 100000"})).await;
    let content = run.ok();
    assert!(
        content.len() <= tools::OUTPUT_LIMIT + 200,
        "{}",
        content.len()
    );
    assert!(content.starts_with("1\n2\n3\n"));
    assert!(
        content.ends_with("99999\n100000\n\n[exit code 0]"),
        "{}",
        &content[content.len() - 100..]
    );
    assert!(content.contains(" bytes truncated ...]"));
    // The live stream carried everything.
    let streamed: usize = run
        .updates
        .iter()
        .map(|u| match u {
            ToolUpdate::Output { chunk, .. } => chunk.len(),
            ToolUpdate::FileChanged(_) => 0,
        })
        .sum();
    assert_eq!(streamed, 588_895);

    let big = "line\n".repeat(20_000);
    call(
        &sandbox,
        "write_file",
        json!({"path": "big.txt", "content": big}),
    )
    .await
    .ok();
    let read = call(&sandbox, "read_file", json!({"path": "big.txt"})).await;
    assert!(read.ok().len() <= tools::OUTPUT_LIMIT);
    assert!(
        read.ok()
            .ends_with("[big.txt has 20000 lines; showed 1-2000. Use offset=2001 to read on.]")
    );
}

#[tokio::test]
async fn git_status_and_diff_show_the_work_tree() {
    let h = Harness::new().await;
    let sandbox = h.repo().await;
    let clean = call(&sandbox, "git_status", json!({})).await;
    assert_eq!(clean.ok(), "## main\n\n(working tree clean)");
    ok(
        &sandbox,
        "echo more >> README.md && echo new > new.txt && git add new.txt",
    )
    .await;
    let status = call(&sandbox, "git_status", json!(null)).await;
    assert_eq!(status.ok(), "## main\n M README.md\nA  new.txt\n");
    let diff = call(&sandbox, "git_diff", json!({})).await;
    assert!(diff.ok().contains("+more"), "{}", diff.ok());
    assert!(!diff.ok().contains("new.txt"));
    let staged = call(
        &sandbox,
        "git_diff",
        json!({"staged": true, "path": "new.txt"}),
    )
    .await;
    assert!(staged.ok().contains("+new"));
    let none = call(&sandbox, "git_diff", json!({"path": "src"})).await;
    assert!(none.ok().starts_with("No unstaged changes"));
}
