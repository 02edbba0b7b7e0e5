//! `kiln backup DIR` beside a running `kiln up` that is busy with prompts: a kiln started on
//! the copy serves every session's history as it was when the backup began (or later).

mod common;

use common::server::{self, text};
use kiln_testkit::{FakeModel, Turn};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

async fn post(url: &str, token: &str, path: &str, body: Value) -> Value {
    let response = reqwest::Client::new()
        .post(format!("{url}{path}"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(
        response.status().is_success(),
        "{path}: {}",
        response.status()
    );
    response.json().await.unwrap()
}

async fn events(url: &str, token: &str, session: &str) -> Vec<Value> {
    let page: Value = reqwest::Client::new()
        .get(format!(
            "{url}/api/sessions/{session}/events?after_seq=0&limit=10000"
        ))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    page["events"].as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_while_kiln_works_restores_every_session_s_history() {
    let model = FakeModel::start().await;
    model.set_default(Turn::text("done"));
    let server = server::start(&model).await;
    server.add_repo().await;
    let mut sessions = Vec::new();
    for n in 0..3 {
        let created = post(
            &server.url,
            &server.token,
            "/api/sessions",
            json!({"repo": "web", "prompt": format!("task {n}")}),
        )
        .await;
        sessions.push(created["session"]["id"].as_str().unwrap().to_string());
    }
    // Each session finishes its first prompt; then follow-ups keep them busy during the backup.
    let deadline = Instant::now() + Duration::from_secs(60);
    for id in &sessions {
        while !events(&server.url, &server.token, id)
            .await
            .iter()
            .any(|e| e["event"]["type"] == "prompt_finished")
        {
            assert!(Instant::now() < deadline, "session {id} did not finish");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let mut before = Vec::new();
    for id in &sessions {
        before.push(events(&server.url, &server.token, id).await);
        post(
            &server.url,
            &server.token,
            &format!("/api/sessions/{id}/prompts"),
            json!({"text": "more"}),
        )
        .await;
    }

    let copy = tempfile::tempdir().unwrap();
    let traversable = std::os::unix::fs::PermissionsExt::from_mode(0o711);
    std::fs::set_permissions(copy.path(), traversable).unwrap();
    let data = server.dir.path().join("data");
    let out = server
        .kiln(&["backup"])
        .arg(copy.path().join("data"))
        .arg("--data-dir")
        .arg(&data)
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let said = text(&out.stdout);
    assert!(said.contains("backed up 3 session(s)"), "{said}");
    // A second one into the same directory is refused: nothing is merged or overwritten.
    let again = server
        .kiln(&["backup"])
        .arg(copy.path().join("data"))
        .arg("--data-dir")
        .arg(&data)
        .output()
        .await
        .unwrap();
    assert_eq!(again.status.code(), Some(2));
    assert!(
        text(&again.stderr).contains("not empty"),
        "{}",
        text(&again.stderr)
    );

    // The copy starts as a kiln of its own and serves every session's history.
    let (mut restored, url) = server::up(&model, copy.path(), "127.0.0.1:0").await;
    for (id, before) in sessions.iter().zip(&before) {
        let after = events(&url, &server.token, id).await;
        assert!(
            after.len() >= before.len(),
            "{id}: {} < {}",
            after.len(),
            before.len()
        );
        assert_eq!(&after[..before.len()], &before[..], "{id}");
    }
    restored.kill().await.unwrap();
    common::destroy_all(&copy.path().join("data"));
}
