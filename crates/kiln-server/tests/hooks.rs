//! Hooks configured on the server see every tool call of every session: an external command
//! blocks one (exit 2, the model reads its stderr) and rewrites another (updatedInput).

mod common;

use common::{TestApp, fake_model_config, is_finished, tool_outcomes};
use kiln_engine::EngineConfig;
use kiln_engine::hooks::{HookConfig, HookEventKind};
use kiln_protocol::api::ToolOutcome;
use kiln_testkit::{FakeModel, Script, Turn};
use serde_json::json;
use std::os::unix::fs::PermissionsExt;

fn script(dir: &std::path::Path, name: &str, body: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path.to_string_lossy().into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_hooks_block_and_rewrite_tool_calls() {
    let hooks_dir = tempfile::tempdir().unwrap();
    let block = script(
        hooks_dir.path(),
        "no-rm.sh",
        "if grep -q 'rm -rf'; then echo 'deleting is not allowed here' >&2; exit 2; fi; exit 0",
    );
    let rewrite = script(
        hooks_dir.path(),
        "rewrite.sh",
        r#"cat >/dev/null; echo '{"hookSpecificOutput":{"hookEventName":"PreToolUse","permissionDecision":"allow","updatedInput":{"path":"rewritten.txt","content":"from the hook"}}}'"#,
    );
    let model = FakeModel::start().await;
    model.push(Script::Turn(Turn::tool(
        "bash",
        json!({"command": "rm -rf /workspace/src"}),
    )));
    model.push(Script::Turn(Turn::tool(
        "write_file",
        json!({"path": "original.txt", "content": "model\n"}),
    )));
    model.push(Script::Turn(Turn::text("done")));
    let config = EngineConfig {
        model: Some(fake_model_config(&model)),
        hooks: vec![
            HookConfig {
                event: HookEventKind::PreToolUse,
                matcher: Some("bash".into()),
                command: vec![block],
                timeout_secs: Some(10),
                cwd: None,
            },
            HookConfig {
                event: HookEventKind::PreToolUse,
                matcher: Some("write_file".into()),
                command: vec![rewrite],
                timeout_secs: Some(10),
                cwd: None,
            },
        ],
        ..EngineConfig::default()
    };
    let app = TestApp::with_config(config).await;
    let token = app.admin_token.clone();
    let session = app.new_session(&token, "clean up").await;
    let events = app.wait_for(&token, &session, is_finished).await;

    let outcomes = tool_outcomes(&events);
    assert!(
        matches!(&outcomes[0], ToolOutcome::Blocked { reason } if reason.contains("deleting is not allowed")),
        "{outcomes:?}"
    );
    assert_eq!(outcomes[1], ToolOutcome::Ok);
    // The model was told why.
    let second = model.requests()[1].body["messages"].to_string();
    assert!(second.contains("deleting is not allowed here"), "{second}");
    // The blocked command never ran; the rewritten write went where the hook said.
    assert_eq!(app.sandbox_sh(&session, "ls src").await.trim(), "lib.rs");
    assert_eq!(
        app.sandbox_sh(&session, "cat rewritten.txt").await,
        "from the hook"
    );
    assert_eq!(
        app.sandbox_sh(&session, "ls original.txt 2>&1 | grep -c 'No such'")
            .await
            .trim(),
        "1"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repo_hooks_set_through_the_api_cover_the_repos_sessions() {
    let hooks_dir = tempfile::tempdir().unwrap();
    let deny = script(
        hooks_dir.path(),
        "deny-writes.sh",
        "cat >/dev/null; echo 'this repo is read-only for agents' >&2; exit 2",
    );
    let model = FakeModel::start().await;
    let app = TestApp::start(&model).await;
    let token = app.admin_token.clone();
    let hooks = json!({"hooks": [{"event": "PreToolUse", "matcher": "write_file|edit_file", "command": [deny]}]});

    // Only admins set repo hooks, and bad ones are refused with the reason.
    let (_, user_token) = app.user("mallory").await;
    let (status, _) = app
        .request(
            reqwest::Method::PATCH,
            &user_token,
            "/api/repos/demo",
            Some(hooks.clone()),
        )
        .await;
    assert_eq!(status, 403);
    let (status, body) = app
        .request(
            reqwest::Method::PATCH,
            &token,
            "/api/repos/demo",
            Some(json!({"hooks": [{"event": "PreToolUse", "matcher": "(", "command": ["/bin/true"]}]})),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = app
        .request(
            reqwest::Method::PATCH,
            &token,
            "/api/repos/demo",
            Some(json!({"hooks": [{"event": "BeforeLunch", "command": ["/bin/true"]}]})),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    let (status, repo) = app
        .request(
            reqwest::Method::PATCH,
            &token,
            "/api/repos/demo",
            Some(hooks),
        )
        .await;
    assert_eq!(status, 200, "{repo}");
    assert_eq!(repo["hooks"][0]["matcher"], "write_file|edit_file");

    model.push(Script::Turn(Turn::tool(
        "write_file",
        json!({"path": "x.txt", "content": "x"}),
    )));
    model.push(Script::Turn(Turn::tool(
        "bash",
        json!({"command": "echo still allowed"}),
    )));
    model.push(Script::Turn(Turn::text("ok")));
    let session = app.new_session(&token, "write x").await;
    let events = app.wait_for(&token, &session, is_finished).await;
    let outcomes = tool_outcomes(&events);
    assert!(
        matches!(&outcomes[0], ToolOutcome::Blocked { reason } if reason.contains("read-only for agents")),
        "{outcomes:?}"
    );
    assert_eq!(outcomes[1], ToolOutcome::Ok);
    assert_eq!(
        app.sandbox_sh(&session, "ls x.txt 2>&1 | grep -c 'No such'")
            .await
            .trim(),
        "1"
    );
    app.stop().await;
}
