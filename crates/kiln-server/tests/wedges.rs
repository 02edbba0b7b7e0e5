//! Failures that must not wedge a session or the server: a session whose sync failed keeps
//! answering (it once deadlocked a worker thread per prompt or typing frame), a prompt whose run
//! panics fails with an event and the session goes on, per-user limits answer 429, and clients
//! get a Close frame when the server stops.

mod common;

use common::{TestApp, fake_model_config, is_finished};
use kiln_engine::EngineConfig;
use kiln_engine::hooks::{Hook, HookContext, HookEvent, HookOutcome};
use kiln_protocol::api::{ErrorKind, Event, PromptOutcome};
use kiln_testkit::{FakeModel, Script, Turn};
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

fn outcomes(events: &[kiln_protocol::api::EventEnvelope]) -> Vec<PromptOutcome> {
    events
        .iter()
        .filter_map(|e| match &e.event {
            Event::PromptFinished { outcome, .. } => Some(*outcome),
            _ => None,
        })
        .collect()
}

/// The server answers its health check within a few seconds.
async fn assert_healthy(app: &TestApp) {
    let health = tokio::time::timeout(Duration::from_secs(5), app.get("", "/api/health")).await;
    assert!(
        matches!(health, Ok((200, _))),
        "the server stopped answering: {health:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_whose_sync_failed_keeps_answering_prompts_and_typing() {
    let model = FakeModel::start().await;
    let app = TestApp::start(&model).await;
    let image = app.engine.build_image("demo").await.unwrap();
    assert!(image.is_ready(), "{}", image.log);
    // The remote disappears: every sync of the session fails.
    std::fs::remove_dir_all(&app.repo_url).unwrap();

    let token = app.admin_token.clone();
    model.push(Script::Turn(Turn::text("first")));
    let session = app.new_session(&token, "go").await;
    app.wait_until(&token, &session, |events| {
        let failed = events.iter().any(|e| {
            matches!(&e.event, Event::Error { message, kind: ErrorKind::Sync, .. } if message.contains("syncing the checkout failed"))
        });
        failed && outcomes(events).len() == 1
    })
    .await;

    // Typing on the session's socket and a second prompt both retry the failed sync; each of
    // them used to block a worker thread for good (two of them: the whole server).
    let mut ws = app.ws(&token, &session, 0).await;
    ws.send_text(r#"{"type":"typing"}"#).await;
    ws.send_text(r#"{"type":"typing"}"#).await;
    model.push(Script::Turn(Turn::text("second")));
    let send = tokio::time::timeout(
        Duration::from_secs(10),
        app.post(
            &token,
            &format!("/api/sessions/{session}/prompts"),
            json!({"text": "again"}),
        ),
    )
    .await;
    assert!(matches!(send, Ok((202, _))), "{send:?}");
    assert_healthy(&app).await;
    let events = app
        .wait_until(&token, &session, |events| outcomes(events).len() == 2)
        .await;
    assert_eq!(
        outcomes(&events),
        [PromptOutcome::Completed, PromptOutcome::Completed]
    );
    assert_healthy(&app).await;
    ws.close().await;
    app.stop().await;
}

/// A hook with a bug: it panics on the first tool call it sees.
#[derive(Debug, Default)]
struct PanicsOnce {
    panicked: AtomicBool,
}

#[async_trait::async_trait]
impl Hook for PanicsOnce {
    fn name(&self) -> &str {
        "panics-once"
    }

    fn matches(&self, event: &HookEvent) -> bool {
        matches!(event, HookEvent::PreToolUse { .. })
    }

    async fn call(&self, _ctx: &HookContext, _event: &HookEvent) -> HookOutcome {
        if !self.panicked.swap(true, Ordering::SeqCst) {
            panic!("a bug in a hook");
        }
        HookOutcome::allow()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prompt_whose_run_panics_fails_with_an_event_and_the_session_goes_on() {
    let model = FakeModel::start().await;
    let app = TestApp::with_config(EngineConfig {
        model: Some(fake_model_config(&model)),
        rust_hooks: vec![Arc::new(PanicsOnce::default())],
        ..EngineConfig::default()
    })
    .await;
    let token = app.admin_token.clone();
    model.push(Script::Turn(Turn::tool(
        "read_file",
        json!({"path": "README.md"}),
    )));
    let session = app.new_session(&token, "read the readme").await;
    let events = app.wait_for(&token, &session, is_finished).await;
    assert_eq!(outcomes(&events), [PromptOutcome::Failed]);
    assert!(
        events.iter().any(|e| matches!(&e.event,
            Event::Error { message, prompt_id: Some(_), kind: ErrorKind::Internal } if message.contains("internal error"))),
        "{events:#?}"
    );

    // The session is not wedged: the next prompt runs, and the prompt list agrees.
    model.push(Script::Turn(Turn::text("fine now")));
    app.send(&token, &session, "again").await;
    let events = app
        .wait_until(&token, &session, |events| outcomes(events).len() == 2)
        .await;
    assert_eq!(
        outcomes(&events),
        [PromptOutcome::Failed, PromptOutcome::Completed]
    );
    // The call the crashed run left without a result got one, so the model API accepts the
    // conversation.
    let last = model.requests().last().unwrap().body["messages"].to_string();
    assert!(
        last.contains("tool_result") && last.contains("did not finish"),
        "{last}"
    );
    let (status, detail) = app.get(&token, &format!("/api/sessions/{session}")).await;
    assert_eq!(status, 200, "{detail}");
    assert_eq!(detail["state"], "idle", "{detail}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_past_the_active_session_limit_gets_429_naming_it() {
    let model = FakeModel::start().await;
    model.set_default(Turn::text("ok").with_ttft(Duration::from_secs(30)));
    let app = TestApp::with_config(EngineConfig {
        model: Some(fake_model_config(&model)),
        max_active_sessions_per_user: 2,
        ..EngineConfig::default()
    })
    .await;
    let (_, alice) = app.user("alice").await;
    let (_, bob) = app.user("bob").await;
    // Many at once: the limit holds against concurrent creations too.
    let creations = (0..6).map(|i| {
        app.post(
            &alice,
            "/api/sessions",
            json!({"repo": "demo", "prompt": format!("task {i}")}),
        )
    });
    let results = futures_util::future::join_all(creations).await;
    let created = results.iter().filter(|(status, _)| *status == 201).count();
    let refused: Vec<_> = results
        .iter()
        .filter(|(status, _)| *status == 429)
        .collect();
    assert_eq!(created, 2, "{results:?}");
    assert_eq!(refused.len(), 4, "{results:?}");
    let message = refused[0].1["error"].as_str().unwrap();
    assert!(
        message.contains("max_active_sessions_per_user"),
        "{message}"
    );
    // Another user has limits of their own.
    app.new_session(&bob, "mine").await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_get_a_close_frame_when_the_server_stops() {
    let model = FakeModel::start().await;
    let app = TestApp::start(&model).await;
    let token = app.admin_token.clone();
    model.push(Script::Turn(Turn::text("done")));
    let session = app.new_session(&token, "go").await;
    app.wait_for(&token, &session, is_finished).await;
    let mut session_ws = app.ws(&token, &session, 0).await;
    let mut user_ws = app.user_ws(&token).await;

    let stopping = tokio::spawn(app.stop());
    for ws in [&mut session_ws, &mut user_ws] {
        let close = tokio::time::timeout(Duration::from_secs(10), ws.close_frame())
            .await
            .expect("a Close frame soon after the stop began");
        let close = close.expect("a Close frame with a code");
        assert_eq!(u16::from(close.code), 1012, "{close:?}");
        assert!(close.reason.contains("reconnect"), "{close:?}");
    }
    tokio::time::timeout(Duration::from_secs(30), stopping)
        .await
        .expect("the stop finishes")
        .unwrap();
}
