//! Retention: a session idle past `archive_after` is archived, past `delete_after` deleted with
//! everything it held (its directory, its sandbox, its snapshots' layers once the collector
//! follows), each audited with kiln as the actor; a session someone just used, or whose pull
//! request is still open, stays.

mod common;

use common::{TestApp, fake_model_config, is_finished};
use kiln_core::SessionId;
use kiln_engine::{EngineConfig, Retention};
use kiln_sandbox::Provider;
use kiln_testkit::{FakeModel, Script, Turn};
use serde_json::{Value, json};
use std::path::Path;
use std::time::{Duration, Instant};

const ARCHIVE_AFTER: Duration = Duration::from_millis(1500);
const DELETE_AFTER: Duration = Duration::from_millis(4000);

/// Every path under `dir` that names `id`.
fn paths_naming(dir: &Path, id: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.to_string_lossy().contains(id) {
                found.push(path.display().to_string());
            }
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(path);
            }
        }
    }
    found
}

fn listed(list: &Value, id: &SessionId) -> bool {
    list.as_array()
        .unwrap()
        .iter()
        .any(|s| s["id"] == id.as_str())
}

async fn audited(app: &TestApp, action: &str, id: &SessionId) -> Vec<Value> {
    let (status, page) = app.get(&app.admin_token, "/api/admin/audit").await;
    assert_eq!(status, 200, "{page}");
    page["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == action && e["target"] == id.as_str())
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sessions_are_archived_then_deleted_leaving_nothing_behind() {
    let model = FakeModel::start().await;
    let app = TestApp::with_config(EngineConfig {
        model: Some(fake_model_config(&model)),
        snapshot_delay: Duration::from_millis(50),
        gc_grace: Duration::ZERO,
        retention: Retention {
            archive_after: Some(ARCHIVE_AFTER),
            delete_after: Some(DELETE_AFTER),
        },
        ..EngineConfig::default()
    })
    .await;
    let token = app.admin_token.clone();
    let image = app.engine.build_image("demo").await.unwrap();
    assert!(image.is_ready(), "{}", image.log);

    // The old session writes a file, so it has a sandbox and, once quiet, a snapshot.
    model.push(Script::Turn(Turn::tool(
        "write_file",
        json!({"path": "notes.txt", "content": "v1\n"}),
    )));
    model.push(Script::Turn(Turn::text("done")));
    let old = app.new_session(&token, "take notes").await;
    app.wait_for(&token, &old, is_finished).await;
    let reviewed = app.new_session(&token, "a change under review").await;
    app.wait_for(&token, &reviewed, is_finished).await;
    app.engine
        .store()
        .set_forge_change(
            "acme/demo",
            7,
            &reviewed,
            "https://github.test/acme/demo/pull/7",
            "open",
        )
        .await
        .unwrap();
    let fresh = app.new_session(&token, "hello").await;
    app.wait_for(&token, &fresh, is_finished).await;
    let log = app.engine.store().open_session(&old).await.unwrap();
    let snapshot = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            if let Some(s) = log.latest_snapshot().await.unwrap() {
                break s;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the old session is snapshotted once quiet");
    drop(log);
    let idle_since = Instant::now();

    // Past the archive age, the fresh session is used again just before the pass.
    tokio::time::sleep(ARCHIVE_AFTER + Duration::from_millis(200)).await;
    app.send(&token, &fresh, "still here").await;
    app.wait_until(&token, &fresh, |events| {
        events.iter().filter(|e| is_finished(&e.event)).count() == 2
    })
    .await;
    let report = app.engine.apply_retention().await.unwrap();
    assert!(report.archived.contains(&old), "{report:?}");
    assert!(report.archived.contains(&reviewed), "{report:?}");
    assert!(
        !report.archived.contains(&fresh),
        "it was just used: {report:?}"
    );
    assert!(report.deleted.is_empty(), "{report:?}");
    let (_, default_list) = app.get(&token, "/api/sessions").await;
    assert!(!listed(&default_list, &old) && listed(&default_list, &fresh));
    let (_, archived_list) = app.get(&token, "/api/sessions?archived=true").await;
    assert!(listed(&archived_list, &old), "{archived_list}");
    let entries = audited(&app, "session_archived", &old).await;
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert!(
        entries[0].get("actor").is_none(),
        "kiln did it: {entries:?}"
    );
    assert_eq!(entries[0]["detail"]["reason"], "retention");
    let again = app.engine.apply_retention().await.unwrap();
    assert!(!again.archived.contains(&old), "archived once: {again:?}");

    // Past the delete age: the old session goes, the one with an open pull request stays.
    let wait = DELETE_AFTER.saturating_sub(idle_since.elapsed()) + Duration::from_millis(300);
    tokio::time::sleep(wait).await;
    let report = app.engine.apply_retention().await.unwrap();
    assert!(report.deleted.contains(&old), "{report:?}");
    assert!(
        !report.deleted.contains(&reviewed),
        "its pull request is open: {report:?}"
    );
    let (status, _) = app.get(&token, &format!("/api/sessions/{old}")).await;
    assert_eq!(status, 404);
    let (status, _) = app.get(&token, &format!("/api/sessions/{reviewed}")).await;
    assert_eq!(status, 200);
    let entries = audited(&app, "session_deleted", &old).await;
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert!(entries[0].get("actor").is_none(), "{entries:?}");

    // The collector follows: nothing of the old session is left on disk or running.
    app.engine.collect_garbage().await.unwrap();
    let own_layers = &snapshot.layers[snapshot.base_layers.unwrap_or(0)..];
    assert!(!own_layers.is_empty(), "{snapshot:?}");
    for layer in own_layers {
        assert!(!layer.exists(), "an orphan layer: {}", layer.display());
    }
    let left = paths_naming(&app.data_dir(), old.as_str());
    assert!(left.is_empty(), "orphan files: {left:?}");
    let sandboxes = app.provider.list().await.unwrap();
    assert!(
        !sandboxes
            .iter()
            .any(|s| s.spec.labels.get("kiln.session").map(String::as_str) == Some(old.as_str())),
        "{sandboxes:?}"
    );
    app.stop().await;
}
