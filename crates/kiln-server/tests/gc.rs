//! Garbage collection: images and layers nothing uses go (the newest images stay), a deep stack
//! of incremental layers starts over, and whatever a session stands on stays so it can resume.

mod common;

use common::{TestApp, fake_model_config, finished, last_tool_output};
use kiln_engine::EngineConfig;
use kiln_protocol::api::PromptOutcome;
use kiln_testkit::{FakeModel, Script, Turn, git};
use serde_json::json;
use std::path::Path;
use std::time::Duration;

fn config(model: &FakeModel) -> EngineConfig {
    EngineConfig {
        model: Some(fake_model_config(model)),
        images_kept: 1,
        gc_grace: Duration::ZERO,
        image_max_layers: 4,
        snapshot_delay: Duration::from_millis(50),
        ..EngineConfig::default()
    }
}

fn push_commit(app: &TestApp, file: &str) {
    let work = app.dir.path().join("demo-work");
    std::fs::write(work.join(file), format!("{file}\n")).unwrap();
    git(&work, &["add", "."]);
    git(&work, &["commit", "-qm", file]);
    git(&work, &["push", "-q", &app.repo_url, "main"]);
}

/// Builds an image of the demo repo after pushing a commit, and checks it is ready.
async fn build_after_commit(app: &TestApp, file: &str) -> kiln_store::ImageRecord {
    push_commit(app, file);
    let image = app.engine.build_image("demo").await.unwrap();
    assert!(image.is_ready(), "{}", image.log);
    image
}

fn all_exist(layers: &[impl AsRef<Path>]) -> bool {
    layers.iter().all(|l| l.as_ref().exists())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unused_images_go_and_a_deep_stack_starts_over() {
    let model = FakeModel::start().await;
    let app = TestApp::with_config(config(&model)).await;
    let token = app.admin_token.clone();
    let first = build_after_commit(&app, "one.txt").await;
    let second = build_after_commit(&app, "two.txt").await;
    assert_eq!(second.layers.len(), 4, "incremental: on top of the first");
    assert!(second.layers.starts_with(&first.layers));
    let third = build_after_commit(&app, "three.txt").await;
    assert_eq!(third.layers.len(), 2, "past the depth limit: a full build");
    assert!(third.log.contains("full build"), "{}", third.log);
    assert!(third.setup_ran);
    // A failed build leaves a repo layer behind and keeps its record.
    let (status, _) = app
        .request(
            reqwest::Method::PATCH,
            &token,
            "/api/repos/demo",
            Some(json!({"environment": "build = [\"exit 3\"]"})),
        )
        .await;
    assert_eq!(status, 200);
    push_commit(&app, "four.txt");
    let failed = app.engine.build_image("demo").await.unwrap();
    assert!(failed.error.is_some(), "{}", failed.log);
    let builds = app.data_dir().join("images");
    assert!(builds.join(&failed.id).exists());

    let report = app.engine.collect_garbage().await.unwrap();
    let mut collected = report.images_collected.clone();
    collected.sort();
    let mut want = vec![first.id.clone(), second.id.clone()];
    want.sort();
    assert_eq!(collected, want, "{report:?}");
    assert_eq!(report.snapshots_deleted, 2, "{report:?}");
    assert_eq!(report.repo_layers_removed, 3, "{report:?}");
    assert!(second.layers.iter().all(|l| !l.exists()), "{second:?}");
    assert!(all_exist(&third.layers));
    assert!(!builds.join(&failed.id).exists());

    let (_, images) = app.get(&token, "/api/repos/demo/images").await;
    let status_of = |id: &str| {
        images
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["id"] == id)
            .unwrap()["status"]
            .clone()
    };
    assert_eq!(status_of(&first.id), "collected");
    assert_eq!(status_of(&third.id), "ready");
    assert_eq!(status_of(&failed.id), "failed");
    // Nothing more to do the second time (asked through the API, as `kiln image gc` does).
    let (status, again) = app.post(&token, "/api/admin/gc", json!({})).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(
        again,
        json!({"images_collected": [], "snapshots_deleted": 0, "repo_layers_removed": 0, "bases_removed": 0})
    );

    // Sessions still start from what is left.
    let session = app.new_session(&token, "hello").await;
    app.wait_until(&token, &session, |e| {
        finished(e, PromptOutcome::Completed) == 1
    })
    .await;
    assert_eq!(
        app.sandbox_sh(&session, "cat three.txt").await,
        "three.txt\n"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_session_stands_on_stays_and_its_old_snapshots_go() {
    let model = FakeModel::start().await;
    let app = TestApp::with_config(config(&model)).await;
    let token = app.admin_token.clone();
    let first = build_after_commit(&app, "one.txt").await;

    model.push(Script::Turn(Turn::tool(
        "write_file",
        json!({"path": "notes.txt", "content": "v1\n"}),
    )));
    model.push(Script::Turn(Turn::text("done")));
    let session = app.new_session(&token, "take notes").await;
    app.wait_until(&token, &session, |e| {
        finished(e, PromptOutcome::Completed) == 1
    })
    .await;
    let log = app.engine.store().open_session(&session).await.unwrap();
    let snapshot = async || loop {
        if let Some(s) = log.latest_snapshot().await.unwrap() {
            break s;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let older = snapshot().await;
    model.push(Script::Turn(Turn::tool(
        "write_file",
        json!({"path": "notes.txt", "content": "v2\n"}),
    )));
    model.push(Script::Turn(Turn::text("done")));
    app.send(&token, &session, "again").await;
    app.wait_until(&token, &session, |e| {
        finished(e, PromptOutcome::Completed) == 2
    })
    .await;
    let newer = loop {
        let s = snapshot().await;
        if s.id != older.id {
            break s;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };

    let second = build_after_commit(&app, "two.txt").await;
    let third = build_after_commit(&app, "three.txt").await;
    let report = app.engine.collect_garbage().await.unwrap();
    // The second image: nothing stands on it. The first: the session does.
    assert_eq!(
        report.images_collected,
        vec![second.id.clone()],
        "{report:?}"
    );
    assert!(all_exist(&first.layers) && all_exist(&third.layers));
    assert!(!second.layers.last().unwrap().exists());
    // Only the session's newest snapshot is ever restored; the older one's layer goes.
    assert!(!older.layers.last().unwrap().exists(), "{older:?}");
    assert!(all_exist(&newer.layers), "{newer:?}");

    // With its sandbox gone, the session resumes from what was kept.
    assert!(app.provider.destroy_all().await > 0);
    let report = app.engine.collect_garbage().await.unwrap();
    assert!(report.images_collected.is_empty(), "{report:?}");
    assert!(all_exist(&newer.layers), "the snapshot keeps its layers");
    model.push(Script::Turn(Turn::tool(
        "read_file",
        json!({"path": "notes.txt"}),
    )));
    model.push(Script::Turn(Turn::text("back")));
    app.send(&token, &session, "read your notes").await;
    let events = app
        .wait_until(&token, &session, |e| {
            finished(e, PromptOutcome::Completed) == 3
        })
        .await;
    assert!(last_tool_output(&events).contains("v2"));
    app.stop().await;
}

/// A collection that cannot read what is in use collects nothing and says so as what it is —
/// kiln's own failure (500, details in the server log) — not as a mistake of the caller's (400).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collection_that_cannot_read_the_sessions_is_an_internal_error() {
    let model = FakeModel::start().await;
    let app = TestApp::with_config(config(&model)).await;
    let store = app.engine.store().clone();
    let admin = store.user_by_name("admin").await.unwrap().unwrap();
    let id = kiln_core::SessionId::random();
    drop(
        store
            .create_session(&id, "demo", "lost", &admin.id)
            .await
            .unwrap(),
    );
    std::fs::remove_dir_all(app.data_dir().join("sessions").join(id.as_str())).unwrap();
    let (status, body) = app.post(&app.admin_token, "/api/admin/gc", json!({})).await;
    assert_eq!(status, 500, "{body}");
    assert_eq!(
        body["error"],
        "internal error; the server log has the details"
    );
    app.stop().await;
}
