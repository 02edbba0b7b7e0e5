//! Warm pools: a session on a repo with an image claims a ready sandbox (a hand-off), the pool
//! refills, a new image replaces old entries, and warm-up reservations hold one for the typist
//! until they expire.

mod common;

use common::{TestApp, fake_model_config, finished};
use kiln_engine::EngineConfig;
use kiln_protocol::api::{Event, PromptOutcome, SandboxState};
use kiln_sandbox::Provider;
use kiln_testkit::{FakeModel, git};
use serde_json::json;
use std::time::{Duration, Instant};

async fn until(what: &str, mut done: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_claim_warm_sandboxes_and_the_pool_refills_and_follows_new_images() {
    let model = FakeModel::start().await;
    let app = TestApp::with_config(EngineConfig {
        model: Some(fake_model_config(&model)),
        pool_size: 2,
        reservation_ttl: Duration::from_millis(500),
        ..EngineConfig::default()
    })
    .await;
    let engine = app.engine.clone();
    assert_eq!(engine.pool_ready("demo"), 0, "no image, no pool");
    let first = engine.build_image("demo").await.unwrap();
    assert!(first.is_ready(), "{}", first.log);
    until("the pool to fill", async || engine.pool_ready("demo") == 2).await;

    let token = app.admin_token.clone();
    let session = app.new_session(&token, "hello").await;
    // A text-only prompt does not wait for the sync (only writes do): wait for both.
    let events = app
        .wait_until(&token, &session, |e| {
            let ready = e.iter().any(|e| {
                matches!(
                    e.event,
                    Event::SandboxStatus {
                        state: SandboxState::Ready,
                        ..
                    }
                )
            });
            ready && finished(e, PromptOutcome::Completed) == 1
        })
        .await;
    let statuses: Vec<_> = events
        .iter()
        .filter_map(|e| match &e.event {
            Event::SandboxStatus { state, detail, .. } => Some((*state, detail.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(statuses[0].0, SandboxState::Syncing, "{statuses:?}");
    assert!(
        statuses[0].1.as_deref().unwrap().contains("warm pool"),
        "{statuses:?}"
    );
    assert_eq!(statuses[1].0, SandboxState::Ready);
    // The claimed sandbox is the session's now, and no longer the pool's.
    let claimed = events
        .iter()
        .find_map(|e| match &e.event {
            Event::SandboxStatus {
                sandbox_id: Some(id),
                ..
            } => Some(id.clone()),
            _ => None,
        })
        .expect("the claimed sandbox's id");
    let listed = app.provider.list().await.unwrap();
    let info = listed
        .iter()
        .find(|i| i.id.as_str() == claimed)
        .expect("the claimed sandbox is listed");
    assert_eq!(
        info.spec.labels,
        [("kiln.session".to_string(), session.to_string())].into(),
        "{info:?}"
    );
    // The session's start phases, from its log.
    let (_, detail) = app.get(&token, &format!("/api/sessions/{session}")).await;
    let start = &detail["start"];
    assert_eq!(start["source"], "pool", "{detail}");
    for phase in [
        "sandbox_ms",
        "sync_ms",
        "first_model_request_ms",
        "model_ttft_ms",
    ] {
        assert!(start[phase].is_u64(), "{phase} missing: {start}");
    }
    until("the pool to refill", async || {
        engine.pool_ready("demo") == 2
    })
    .await;

    // A new image replaces the pool's entries.
    let work = app.dir.path().join("demo-work");
    std::fs::write(work.join("README.md"), "# demo v2\n").unwrap();
    git(&work, &["commit", "-qam", "v2"]);
    git(&work, &["push", "-q", &app.repo_url, "main"]);
    let second = engine.build_image("demo").await.unwrap();
    assert!(second.is_ready(), "{}", second.log);
    until("old entries to be replaced", async || {
        engine.pool_images("demo") == [second.id.clone(), second.id.clone()]
    })
    .await;

    // Warm-up while typing: one entry is held for the typist, then given back.
    let (status, reply) = app.post(&token, "/api/repos/demo/warm", json!({})).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["reserved"], true);
    assert_eq!(engine.pool_ready("demo"), 1, "one is reserved");
    let (status, pool) = app.get(&token, "/api/repos/demo/pool").await;
    assert_eq!(status, 200, "{pool}");
    assert_eq!(
        pool,
        json!({"ready": 1, "reserved": 1, "target": 2, "image": second.id})
    );
    until("the reservation to expire", async || {
        engine.pool_ready("demo") == 2
    })
    .await;
    let (status, _) = app.post(&token, "/api/repos/nope/warm", json!({})).await;
    assert_eq!(status, 404);

    // A reservation is used by the typist's next session.
    app.post(&token, "/api/repos/demo/warm", json!({})).await;
    let session = app.new_session(&token, "typed").await;
    let events = app
        .wait_until(&token, &session, |e| {
            finished(e, PromptOutcome::Completed) == 1
        })
        .await;
    assert!(events.iter().any(|e| matches!(
        &e.event,
        Event::SandboxStatus { detail: Some(d), .. } if d.contains("warm pool")
    )));
    let (status, stats) = app.get(&token, "/api/stats/starts").await;
    assert_eq!(status, 200);
    assert_eq!(stats["sessions"], 2, "{stats}");
    assert_eq!(stats["first_model_request_ms"]["n"], 2, "{stats}");
    assert!(stats["first_model_request_ms"]["p95"].is_u64(), "{stats}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pool_grows_with_recent_demand_up_to_its_max() {
    let model = FakeModel::start().await;
    let app = TestApp::with_config(EngineConfig {
        model: Some(fake_model_config(&model)),
        pool_size: 1,
        pool_max: 3,
        ..EngineConfig::default()
    })
    .await;
    let engine = app.engine.clone();
    let image = engine.build_image("demo").await.unwrap();
    assert!(image.is_ready(), "{}", image.log);
    until("the pool to fill", async || engine.pool_ready("demo") == 1).await;
    let token = app.admin_token.clone();
    for n in 0..4 {
        let session = app.new_session(&token, &format!("session {n}")).await;
        app.wait_until(&token, &session, |e| {
            finished(e, PromptOutcome::Completed) == 1
        })
        .await;
    }
    // Four starts in the window: the pool holds three (its max), not one.
    until("the pool to grow", async || engine.pool_ready("demo") == 3).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(engine.pool_ready("demo"), 3, "never past the max");
    let (_, pool) = app.get(&token, "/api/repos/demo/pool").await;
    assert_eq!(pool["target"], 3, "{pool}");
    // A graceful stop takes the three warm sandboxes with it; the sessions' own stay.
    let before = app.provider.list().await.unwrap().len();
    engine.shutdown().await;
    assert_eq!(engine.pool_ready("demo"), 0);
    assert_eq!(app.provider.list().await.unwrap().len(), before - 3);
    app.stop().await;
}
