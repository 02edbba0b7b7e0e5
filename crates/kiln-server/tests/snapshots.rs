//! After each prompt the session's sandbox is snapshotted; a follow-up to a session whose
//! sandbox is gone restores the newest snapshot, and the agent finds its files as they were.

mod common;

use common::{TestApp, finished, last_tool_output};
use kiln_protocol::api::{Event, PromptOutcome, SandboxState};
use kiln_sandbox::Provider;
use kiln_testkit::{FakeModel, Script, Turn};
use serde_json::json;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follow_up_after_the_sandbox_is_gone_continues_from_the_snapshot() {
    let model = FakeModel::start().await;
    model.push(Script::Turn(Turn::tool(
        "write_file",
        json!({"path": "notes.txt", "content": "kept\n"}),
    )));
    model.push(Script::Turn(Turn::tool(
        "bash",
        json!({"command": "rm README.md"}),
    )));
    model.push(Script::Turn(Turn::text("done")));
    let app = TestApp::start(&model).await;
    let token = app.admin_token.clone();
    let session = app.new_session(&token, "take notes").await;
    app.wait_until(&token, &session, |e| {
        finished(e, PromptOutcome::Completed) == 1
    })
    .await;
    let before = app
        .sandbox_sh(
            &session,
            "ls; cat notes.txt; git rev-parse --abbrev-ref HEAD",
        )
        .await;

    // The snapshot is recorded right after the prompt ends.
    let log = app.engine.store().open_session(&session).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while log.latest_snapshot().await.unwrap().is_none() {
        assert!(Instant::now() < deadline, "no snapshot");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The sandbox goes away (an idle stop, a crash).
    for info in app.provider.list().await.unwrap() {
        app.provider.destroy(&info.id).await.unwrap();
    }

    model.push(Script::Turn(Turn::tool(
        "read_file",
        json!({"path": "notes.txt"}),
    )));
    model.push(Script::Turn(Turn::text("still there")));
    app.send(&token, &session, "read your notes").await;
    let events = app
        .wait_until(&token, &session, |e| {
            finished(e, PromptOutcome::Completed) == 2
        })
        .await;
    assert!(events.iter().any(|e| matches!(
        &e.event,
        Event::SandboxStatus { state: SandboxState::Ready, detail: Some(d), .. } if d.contains("restored from snapshot")
    )));
    let read = last_tool_output(&events);
    assert!(read.contains("kept"), "{read}");
    let after = app
        .sandbox_sh(
            &session,
            "ls; cat notes.txt; git rev-parse --abbrev-ref HEAD",
        )
        .await;
    assert_eq!(after, before, "the files are exactly as they were");
    assert!(
        !after.contains("README.md"),
        "the deletion is kept: {after}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_sandbox_is_snapshotted_and_stopped_and_the_next_prompt_restores_it() {
    let model = FakeModel::start().await;
    model.push(Script::Turn(Turn::tool(
        "write_file",
        json!({"path": "notes.txt", "content": "kept\n"}),
    )));
    model.push(Script::Turn(Turn::text("done")));
    let app = TestApp::with_config(kiln_engine::EngineConfig {
        model: Some(common::fake_model_config(&model)),
        idle_stop_after: Some(Duration::from_millis(400)),
        ..kiln_engine::EngineConfig::default()
    })
    .await;
    let token = app.admin_token.clone();
    let session = app.new_session(&token, "take notes").await;
    let events = app
        .wait_for(&token, &session, |e| {
            matches!(
                e,
                Event::SandboxStatus {
                    state: SandboxState::Stopped,
                    ..
                }
            )
        })
        .await;
    assert_eq!(finished(&events, PromptOutcome::Completed), 1);
    assert!(
        app.provider.list().await.unwrap().is_empty(),
        "the sandbox is gone"
    );

    model.push(Script::Turn(Turn::tool(
        "read_file",
        json!({"path": "notes.txt"}),
    )));
    model.push(Script::Turn(Turn::text("back")));
    app.send(&token, &session, "read your notes").await;
    let events = app
        .wait_until(&token, &session, |e| {
            finished(e, PromptOutcome::Completed) == 2
        })
        .await;
    let read = last_tool_output(&events);
    assert!(read.contains("kept"), "{read}");
    app.stop().await;
}
