//! Hooks with real processes: small shell scripts in a tempdir, run under the Claude Code
//! contract, chained, filtered and bounded.

mod common;

use common::hook_context;
use common::hooks::{Always, Cached, Hangs, assert_gone, chain, hook, pre_tool, script};
use kiln_tools::hooks::{
    CommandHook, HookConfig, HookDecision, HookEvent, HookEventKind, Hooks, Matcher,
};
use serde_json::{Value, json};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[tokio::test]
async fn exit_2_blocks_with_stderr_as_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let guard = script(
        dir.path(),
        "guard",
        "cat >/dev/null; echo 'no force pushes' >&2; exit 2",
    );
    let hooks = chain(vec![hook(HookEventKind::PreToolUse, &guard)]);
    let combined = hooks
        .run(
            &hook_context(),
            &pre_tool("bash", json!({"command": "git push -f"})),
        )
        .await;
    let blocked = combined.blocked.expect("blocked");
    assert_eq!(blocked.reason, "no force pushes");
    assert_eq!(blocked.hook, guard.to_string_lossy());
    assert!(combined.errors.is_empty());
}

#[tokio::test]
async fn the_hook_gets_the_contract_on_stdin_in_a_clean_environment() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().display();
    let spy = script(
        dir.path(),
        "spy",
        &format!("cat > {out}/input.json; env > {out}/env; pwd > {out}/pwd"),
    );
    let hooks = chain(vec![
        hook(HookEventKind::PostToolUse, &spy).with_cwd(dir.path()),
    ]);
    let ctx = hook_context();
    let event = HookEvent::PostToolUse {
        tool_name: "read_file".into(),
        tool_input: json!({"path": "a.rs"}),
        tool_use_id: "toolu_9".into(),
        tool_response: json!({"content": "1\tfn", "is_error": false}),
    };
    let combined = hooks.run(&ctx, &event).await;
    assert_eq!(combined, Default::default());

    let input: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("input.json")).unwrap()).unwrap();
    assert_eq!(
        input,
        json!({
            "session_id": ctx.session_id.as_str(),
            "prompt_id": ctx.prompt_id.as_str(),
            "cwd": "/workspace",
            "hook_event_name": "PostToolUse",
            "tool_name": "read_file",
            "tool_input": {"path": "a.rs"},
            "tool_use_id": "toolu_9",
            "tool_response": {"content": "1\tfn", "is_error": false},
            "author": {"id": ctx.author.id.as_str(), "name": "Ada"},
            "repo": "acme/widgets"
        })
    );
    let env = std::fs::read_to_string(dir.path().join("env")).unwrap();
    let mut names: Vec<&str> = env
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, _)| k)
        .collect();
    names.sort();
    // `PWD` is the shell's own; nothing else of the control plane's environment leaks through.
    assert_eq!(
        names,
        ["HOME", "KILN_PROJECT_DIR", "KILN_SESSION_ID", "PATH", "PWD"],
        "{env}"
    );
    assert!(env.contains(&format!("KILN_SESSION_ID={}\n", ctx.session_id)));
    assert!(env.contains("KILN_PROJECT_DIR=/workspace\n"));
    let pwd = std::fs::read_to_string(dir.path().join("pwd")).unwrap();
    assert_eq!(Path::new(pwd.trim()), dir.path().canonicalize().unwrap());
}

#[tokio::test]
async fn json_decisions_deny_ask_and_stop() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            r#"{"hookSpecificOutput":{"hookEventName":"PreToolUse","permissionDecision":"deny","permissionDecisionReason":"not on main"}}"#,
            "not on main",
        ),
        (
            r#"{"decision":"block","reason":"tests first"}"#,
            "tests first",
        ),
        (
            r#"{"continue":false,"stopReason":"budget spent"}"#,
            "budget spent",
        ),
        (
            r#"{"hookSpecificOutput":{"hookEventName":"PreToolUse","permissionDecision":"ask","permissionDecisionReason":"risky"}}"#,
            "a hook asked for confirmation, which an unattended session cannot give: risky",
        ),
    ];
    for (i, (stdout, reason)) in cases.into_iter().enumerate() {
        let path = script(
            dir.path(),
            &format!("h{i}"),
            &format!("cat >/dev/null; echo '{stdout}'"),
        );
        let hooks = chain(vec![hook(HookEventKind::PreToolUse, &path)]);
        let combined = hooks
            .run(&hook_context(), &pre_tool("bash", json!({})))
            .await;
        assert_eq!(
            combined.blocked.map(|b| b.reason).as_deref(),
            Some(reason),
            "{stdout}"
        );
    }
    let allow = script(
        dir.path(),
        "allow",
        r#"echo '{"hookSpecificOutput":{"hookEventName":"PreToolUse","permissionDecision":"allow"}}'"#,
    );
    let combined = chain(vec![hook(HookEventKind::PreToolUse, &allow)])
        .run(&hook_context(), &pre_tool("bash", json!({})))
        .await;
    assert_eq!(combined, Default::default());
}

#[tokio::test]
async fn updated_input_is_what_later_hooks_see() {
    let dir = tempfile::tempdir().unwrap();
    let rewrite = script(
        dir.path(),
        "rewrite",
        r#"cat >/dev/null; echo '{"hookSpecificOutput":{"hookEventName":"PreToolUse","updatedInput":{"command":"ls -la"}}}'"#,
    );
    let seen = dir.path().join("seen.json");
    let spy = script(dir.path(), "spy", &format!("cat > {}", seen.display()));
    let hooks = chain(vec![
        hook(HookEventKind::PreToolUse, &rewrite),
        hook(HookEventKind::PreToolUse, &spy),
    ]);
    let combined = hooks
        .run(&hook_context(), &pre_tool("bash", json!({"command": "ls"})))
        .await;
    assert_eq!(combined.input, Some(json!({"command": "ls -la"})));
    assert!(combined.blocked.is_none());
    let seen: Value = serde_json::from_slice(&std::fs::read(seen).unwrap()).unwrap();
    assert_eq!(seen["tool_input"], json!({"command": "ls -la"}));
}

#[tokio::test]
async fn a_built_in_hook_can_substitute_the_result() {
    let hooks = Hooks::new(vec![Arc::new(Cached)]);
    let combined = hooks
        .run(
            &hook_context(),
            &pre_tool("read_file", json!({"path": "a"})),
        )
        .await;
    assert_eq!(combined.substitute.as_deref(), Some("1\tcached"));
    assert_eq!(
        combined.context_text().as_deref(),
        Some("served from cache")
    );
    let other = hooks
        .run(&hook_context(), &pre_tool("bash", json!({})))
        .await;
    assert_eq!(other, Default::default());
    // Substituting makes no sense for a prompt: ignored, and said so.
    let odd = Hooks::new(vec![Arc::new(Always(HookDecision::Substitute {
        result: "x".into(),
    }))]);
    let combined = odd
        .run(
            &hook_context(),
            &HookEvent::UserPromptSubmit {
                prompt: "hi".into(),
            },
        )
        .await;
    assert_eq!(combined.substitute, None);
    assert_eq!(
        combined.errors[0].message,
        "cannot substitute a result for a UserPromptSubmit event"
    );
}

#[tokio::test]
async fn additional_context_from_json_and_plain_prompt_output_accumulates() {
    let dir = tempfile::tempdir().unwrap();
    let plain = script(
        dir.path(),
        "plain",
        "cat >/dev/null; echo 'Ticket: KILN-42'",
    );
    let json = script(
        dir.path(),
        "json",
        r#"echo '{"hookSpecificOutput":{"hookEventName":"UserPromptSubmit","additionalContext":"Use British spelling."}}'"#,
    );
    let hooks = chain(vec![
        hook(HookEventKind::UserPromptSubmit, &plain),
        hook(HookEventKind::UserPromptSubmit, &json),
    ]);
    let combined = hooks
        .run(
            &hook_context(),
            &HookEvent::UserPromptSubmit {
                prompt: "fix it".into(),
            },
        )
        .await;
    assert_eq!(
        combined.context,
        ["Ticket: KILN-42", "Use British spelling."]
    );
    assert_eq!(
        combined.context_text().unwrap(),
        "Ticket: KILN-42\n\nUse British spelling."
    );
    // Plain output of a tool hook is not context.
    let tool_hook = chain(vec![hook(HookEventKind::PreToolUse, &plain)]);
    assert_eq!(
        tool_hook
            .run(&hook_context(), &pre_tool("bash", json!({})))
            .await,
        Default::default()
    );
}

#[tokio::test]
async fn other_failures_do_not_block() {
    let dir = tempfile::tempdir().unwrap();
    let crash = script(
        dir.path(),
        "crash",
        "echo 'lint config missing' >&2; exit 1",
    );
    let garbled = script(dir.path(), "garbled", "echo '{not json'");
    let hooks = Hooks::new(vec![
        Arc::new(hook(HookEventKind::PreToolUse, &crash)),
        Arc::new(hook(HookEventKind::PreToolUse, &garbled)),
        Arc::new(
            CommandHook::new(
                HookEventKind::PreToolUse,
                vec![dir.path().join("absent").display().to_string()],
            )
            .unwrap(),
        ),
    ]);
    let combined = hooks
        .run(&hook_context(), &pre_tool("bash", json!({})))
        .await;
    assert!(combined.blocked.is_none());
    let messages: Vec<_> = combined.errors.iter().map(|e| e.message.as_str()).collect();
    assert_eq!(messages.len(), 3, "{messages:?}");
    assert_eq!(messages[0], "exited with status 1: lint config missing");
    assert!(
        messages[1].starts_with("printed JSON kiln cannot read:"),
        "{}",
        messages[1]
    );
    assert!(
        messages[2].starts_with("could not start:"),
        "{}",
        messages[2]
    );
}

#[tokio::test]
async fn a_slow_hook_is_killed_at_its_timeout_with_its_children() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("child");
    let slow = script(
        dir.path(),
        "slow",
        &format!("sleep 30 & echo $! > {}; sleep 30", pid_file.display()),
    );
    let hooks = chain(vec![
        hook(HookEventKind::Stop, &slow).with_timeout(Duration::from_secs(1)),
    ]);
    let start = Instant::now();
    let combined = hooks
        .run(
            &hook_context(),
            &HookEvent::Stop {
                stop_hook_active: false,
            },
        )
        .await;
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    assert!(combined.blocked.is_none());
    assert_eq!(
        combined.errors[0].message,
        "timed out after 1 s and was killed; the call went ahead"
    );
    assert_gone(&pid_file).await;
}

#[tokio::test]
async fn background_children_cannot_hold_a_finished_hook_open() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("child");
    let daemon = script(
        dir.path(),
        "daemon",
        &format!("sleep 30 & echo $! > {}; exit 0", pid_file.display()),
    );
    let hooks = chain(vec![hook(HookEventKind::Stop, &daemon)]);
    let start = Instant::now();
    let combined = hooks
        .run(
            &hook_context(),
            &HookEvent::Stop {
                stop_hook_active: true,
            },
        )
        .await;
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(combined, Default::default());
    assert_gone(&pid_file).await;
}

#[tokio::test]
async fn a_hanging_built_in_hook_is_abandoned() {
    let hooks = Hooks::new(vec![
        Arc::new(Hangs),
        Arc::new(Always(HookDecision::AddContext {
            text: "after".into(),
        })),
    ]);
    let start = Instant::now();
    // In a task, as the agent loop will run it: the future must be Send.
    let combined = tokio::spawn(async move {
        hooks
            .run(
                &hook_context(),
                &HookEvent::Stop {
                    stop_hook_active: false,
                },
            )
            .await
    })
    .await
    .unwrap();
    assert!(start.elapsed() < Duration::from_secs(1));
    assert_eq!(combined.errors[0].hook, "hangs");
    assert!(
        combined.errors[0]
            .message
            .starts_with("no answer within 0.2 s"),
        "{}",
        combined.errors[0].message
    );
    assert_eq!(combined.context, ["after"]);
}

#[tokio::test]
async fn matchers_and_events_filter_hooks() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let record = script(
        dir.path(),
        "record",
        &format!("cat >/dev/null; echo ran >> {}", log.display()),
    );
    let writes = hook(HookEventKind::PreToolUse, &record)
        .with_matcher(Matcher::parse("write_file|edit_file").unwrap());
    let hooks = chain(vec![writes]);
    let ctx = hook_context();
    hooks.run(&ctx, &pre_tool("bash", json!({}))).await;
    hooks
        .run(&ctx, &HookEvent::UserPromptSubmit { prompt: "x".into() })
        .await;
    assert!(!log.exists(), "an unmatched hook ran");
    hooks.run(&ctx, &pre_tool("edit_file", json!({}))).await;
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "ran\n");
}

#[tokio::test]
async fn the_first_block_wins_and_later_hooks_do_not_run() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("marker");
    let first = script(dir.path(), "first", "echo 'first says no' >&2; exit 2");
    let second = script(dir.path(), "second", "echo 'second says no' >&2; exit 2");
    let later = script(dir.path(), "later", &format!("touch {}", marker.display()));
    let hooks = chain(vec![
        hook(HookEventKind::PreToolUse, &first),
        hook(HookEventKind::PreToolUse, &second),
        hook(HookEventKind::PreToolUse, &later),
    ]);
    let combined = hooks
        .run(&hook_context(), &pre_tool("bash", json!({})))
        .await;
    assert_eq!(combined.blocked.unwrap().reason, "first says no");
    assert!(!marker.exists(), "a hook after the block ran");
    // Without the blockers, the same marker hook does run: the assertion above can fail.
    chain(vec![hook(HookEventKind::PreToolUse, &later)])
        .run(&hook_context(), &pre_tool("bash", json!({})))
        .await;
    assert!(marker.exists());
}

#[tokio::test]
async fn hooks_come_from_toml_config() {
    #[derive(serde::Deserialize)]
    struct File {
        hooks: Vec<HookConfig>,
    }
    let dir = tempfile::tempdir().unwrap();
    let guard = script(dir.path(), "guard", "echo \"blocked $1\" >&2; exit 2");
    let text = format!(
        "[[hooks]]\nevent = \"PreToolUse\"\nmatcher = \"bash\"\ncommand = [\"{}\", \"by config\"]\ntimeout_secs = 30\n",
        guard.display()
    );
    let file: File = toml::from_str(&text).unwrap();
    let hooks = Hooks::new(file.hooks.iter().map(|c| c.build().unwrap()).collect());
    let combined = hooks
        .run(&hook_context(), &pre_tool("bash", json!({})))
        .await;
    assert_eq!(combined.blocked.unwrap().reason, "blocked by config");
    assert_eq!(
        hooks
            .run(&hook_context(), &pre_tool("grep", json!({})))
            .await,
        Default::default()
    );
    let typo =
        toml::from_str::<File>("[[hooks]]\nevent = \"Stop\"\ncommand = [\"x\"]\ntimeout = 3\n");
    assert!(
        typo.err()
            .unwrap()
            .to_string()
            .contains("unknown field `timeout`")
    );
}
