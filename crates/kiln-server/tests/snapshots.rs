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
    assert!(app.provider.destroy_all().await > 0);

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_restored_many_times_keeps_a_shallow_stack_and_every_file() {
    let model = FakeModel::start().await;
    let app = TestApp::with_config(kiln_engine::EngineConfig {
        model: Some(common::fake_model_config(&model)),
        snapshot_delay: Duration::from_millis(20),
        ..kiln_engine::EngineConfig::default()
    })
    .await;
    let image = app.engine.build_image("demo").await.unwrap();
    assert!(image.is_ready(), "{}", image.log);
    let token = app.admin_token.clone();
    let log_of = async |session: &kiln_core::SessionId| {
        app.engine.store().open_session(session).await.unwrap()
    };
    let mut session = None;
    let mut last_snapshot = None;
    let mut deepest = 0;
    for round in 0..8 {
        model.push(Script::Turn(Turn::tool(
            "write_file",
            json!({"path": format!("round{round}.txt"), "content": format!("{round}\n")}),
        )));
        model.push(Script::Turn(Turn::text("done")));
        let id = match &session {
            None => app.new_session(&token, "round 0").await,
            Some(id) => {
                app.send(&token, id, &format!("round {round}")).await;
                id.clone()
            }
        };
        app.wait_until(&token, &id, |e| {
            finished(e, PromptOutcome::Completed) == round + 1
        })
        .await;
        let log = log_of(&id).await;
        let snapshot = loop {
            let latest = log.latest_snapshot().await.unwrap();
            if let Some(s) = latest.filter(|s| Some(&s.id) != last_snapshot.as_ref()) {
                break s;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(
            snapshot.base_layers,
            Some(image.layers.len()),
            "{snapshot:?}"
        );
        assert!(snapshot.layers.starts_with(&image.layers));
        deepest = deepest.max(snapshot.layers.len());
        last_snapshot = Some(snapshot.id);
        session = Some(id);
        // The sandbox goes away; the next round restores the snapshot.
        assert!(app.provider.destroy_all().await > 0);
    }
    // Eight restores, yet never more than four of the session's own layers.
    assert!(deepest <= image.layers.len() + 4, "{deepest}");
    let session = session.unwrap();
    model.push(Script::Turn(Turn::text("look")));
    app.send(&token, &session, "look").await;
    app.wait_until(&token, &session, |e| {
        finished(e, PromptOutcome::Completed) == 9
    })
    .await;
    let files = app
        .sandbox_sh(&session, "cat round*.txt | tr '\\n' ' '")
        .await;
    assert_eq!(files, "0 1 2 3 4 5 6 7 ");
    app.stop().await;
}
