//! `/api/health` says whether the model answers (a real check against the provider's models
//! endpoint, cached so an open endpoint cannot make kiln call out at will), and `/api/status`
//! shows a signed-in caller the server at a glance.

mod common;

use common::{TestApp, fake_model_config};
use kiln_engine::EngineConfig;
use kiln_testkit::FakeModel;

fn model_checks(model: &FakeModel) -> usize {
    model
        .requests()
        .iter()
        .filter(|r| r.path == "/v1/models")
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_the_model_once_in_a_while_and_says_how_it_went() {
    let model = FakeModel::start().await;
    let app = TestApp::start(&model).await;
    let (status, health) = app.get("", "/api/health").await;
    assert_eq!(status, 200, "{health}");
    assert_eq!(health["ok"], true);
    assert_eq!(health["version"], env!("CARGO_PKG_VERSION"));
    let m = &health["model"];
    assert_eq!(m["configured"], true, "{health}");
    assert_eq!(m["name"], "anthropic/claude-test", "{health}");
    assert_eq!(m["reachable"], true, "{health}");
    assert!(m["latency_ms"].is_u64(), "{health}");
    assert!(m["checked_at_ms"].is_i64(), "{health}");
    // The key went with the check, and a second look reuses it.
    let checks: Vec<_> = model
        .requests()
        .into_iter()
        .filter(|r| r.path == "/v1/models")
        .collect();
    assert_eq!(checks.len(), 1);
    assert_eq!(checks[0].header("x-api-key"), Some(model.api_key()));
    let (_, again) = app.get("", "/api/health").await;
    assert_eq!(again["model"]["checked_at_ms"], m["checked_at_ms"]);
    assert_eq!(model_checks(&model), 1, "cached");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_says_why_the_model_cannot_be_reached() {
    let model = FakeModel::start().await;
    let mut config = fake_model_config(&model);
    config.api_key = Some(kiln_core::Secret::new("sk-wrong".to_string()));
    let app = TestApp::with_config(EngineConfig {
        model: Some(config),
        ..EngineConfig::default()
    })
    .await;
    let (_, health) = app.get("", "/api/health").await;
    let m = &health["model"];
    assert_eq!(m["configured"], true, "{health}");
    assert_eq!(m["reachable"], false, "{health}");
    let error = m["error"].as_str().unwrap();
    assert!(
        error.contains("401") && error.contains("ANTHROPIC_API_KEY"),
        "{error}"
    );
    assert!(!error.contains("sk-wrong"), "the key never shows: {error}");

    // No model at all: nothing to check, and the hint says what to set.
    let app = TestApp::with_config(EngineConfig::default()).await;
    let (_, health) = app.get("", "/api/health").await;
    assert_eq!(health["model"]["configured"], false, "{health}");
    assert!(
        health["model"]["hint"]
            .as_str()
            .unwrap()
            .contains("KILN_MODEL")
    );
    assert!(health["model"].get("reachable").is_none(), "{health}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_repos_to_users_and_sandboxes_to_admins() {
    let model = FakeModel::start().await;
    let app = TestApp::start(&model).await;
    let (status, body) = app.get("", "/api/status").await;
    assert_eq!(status, 401, "{body}");

    let (_, user) = app.user("bob").await;
    let (status, mine) = app.get(&user, "/api/status").await;
    assert_eq!(status, 200, "{mine}");
    assert_eq!(mine["model"]["reachable"], true, "{mine}");
    assert!(
        mine.get("sandboxes").is_none(),
        "users do not see sandboxes: {mine}"
    );
    assert_eq!(mine["repos"][0]["name"], "demo", "{mine}");
    assert!(mine["repos"][0]["image"].is_null(), "{mine}");
    assert_eq!(mine["repos"][0]["pool"]["ready"], 0, "{mine}");

    let session = app.new_session(&app.admin_token, "hello").await;
    app.wait_for(&app.admin_token, &session, |e| {
        matches!(e, kiln_protocol::api::Event::PromptFinished { .. })
    })
    .await;
    let (_, admin) = app.get(&app.admin_token, "/api/status").await;
    assert_eq!(admin["sandboxes"]["sessions"], 1, "{admin}");
    assert_eq!(admin["sandboxes"]["pooled"], 0, "{admin}");
}
