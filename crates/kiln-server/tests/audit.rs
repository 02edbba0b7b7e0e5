//! The audit log: every security-relevant action through the API appears in it once, with
//! its actor and never a secret; only admins read it, as JSON pages or JSON lines.

mod common;

use common::TestApp;
use kiln_testkit::{FakeModel, Turn};
use reqwest::Method;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_audited_action_appears_once_with_its_actor() {
    let model = FakeModel::start().await;
    model.set_default(Turn::text("done"));
    let app = TestApp::start(&model).await;
    let admin = app.admin_token.clone();
    let (bob_id, bob) = app.user("bob").await;
    let (status, _) = app
        .request(
            Method::PATCH,
            &bob,
            &format!("/api/users/{bob_id}"),
            Some(json!({"display_name": "Bob B"})),
        )
        .await;
    assert_eq!(status, 200);
    let (_, made) = app
        .post(&bob, "/api/tokens", json!({"name": "spare"}))
        .await;
    let spare = made["info"]["id"].as_str().unwrap().to_string();
    let (status, _) = app
        .request(Method::DELETE, &bob, &format!("/api/tokens/{spare}"), None)
        .await;
    assert_eq!(status, 204);

    // A browser signs in with a link and out again.
    let (_, link) = app.post(&bob, "/api/login-links", json!({})).await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let signed_in = client
        .get(link["url"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    let cookie = signed_in.headers()["set-cookie"].to_str().unwrap();
    let cookie = cookie.split(';').next().unwrap().to_string();
    let out = client
        .post(format!("{}/api/logout", app.url))
        .header("cookie", &cookie)
        .header("origin", &app.url)
        .send()
        .await
        .unwrap();
    assert_eq!(out.status().as_u16(), 204);

    // Repo settings, access and secrets.
    let patch = |body: Value| app.request(Method::PATCH, &admin, "/api/repos/demo", Some(body));
    assert_eq!(patch(json!({"description": "the demo"})).await.0, 200);
    let hooks = json!({"hooks": [{"event": "PreToolUse", "command": ["/bin/true"]}]});
    assert_eq!(patch(hooks).await.0, 200);
    assert_eq!(
        patch(json!({"environment": "[[setup]]\nrun = \"true\"\n"}))
            .await
            .0,
        200
    );
    let access = json!({"mode": "members", "members": [bob_id]});
    let (status, _) = app
        .request(Method::PUT, &admin, "/api/repos/demo/access", Some(access))
        .await;
    assert_eq!(status, 200);
    let secret = json!({"value": "hunter2-very-secret"});
    let path = "/api/repos/demo/secrets/TOKEN";
    assert_eq!(
        app.request(Method::PUT, &admin, path, Some(secret)).await.0,
        200
    );
    assert_eq!(app.request(Method::DELETE, &admin, path, None).await.0, 204);

    // A session shared, joined, its participant's role changed and removed; archived, deleted.
    let session = app.new_session(&admin, "hello").await;
    let (_, share) = app
        .post(
            &admin,
            &format!("/api/sessions/{session}/shares"),
            json!({"role": "viewer"}),
        )
        .await;
    assert_eq!(
        app.post(&bob, share["path"].as_str().unwrap(), json!({}))
            .await
            .0,
        200
    );
    let participant = format!("/api/sessions/{session}/participants/{bob_id}");
    let role = Some(json!({"role": "collaborator"}));
    assert_eq!(
        app.request(Method::PUT, &admin, &participant, role).await.0,
        204
    );
    assert_eq!(
        app.request(Method::DELETE, &admin, &participant, None)
            .await
            .0,
        204
    );
    let share_path = format!(
        "/api/sessions/{session}/shares/{}",
        share["id"].as_str().unwrap()
    );
    assert_eq!(
        app.request(Method::DELETE, &admin, &share_path, None)
            .await
            .0,
        204
    );
    let archive = format!("/api/sessions/{session}/archive");
    assert_eq!(app.post(&admin, &archive, json!({})).await.0, 204);
    let gone = format!("/api/sessions/{session}");
    assert_eq!(
        app.request(Method::DELETE, &admin, &gone, None).await.0,
        204
    );
    assert_eq!(app.post(&admin, "/api/admin/gc", json!({})).await.0, 200);
    let (status, _) = app
        .request(
            Method::DELETE,
            &admin,
            &format!("/api/users/{bob_id}"),
            None,
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = app
        .request(Method::DELETE, &admin, "/api/repos/demo?force=true", None)
        .await;
    assert_eq!(status, 204);

    let (status, page) = app.get(&admin, "/api/admin/audit?limit=1000").await;
    assert_eq!(status, 200, "{page}");
    let entries = page["entries"].as_array().unwrap();
    let actor_of = |action: &str| -> Vec<String> {
        entries
            .iter()
            .filter(|e| e["action"] == action)
            .map(|e| e["actor"]["name"].as_str().unwrap_or("-").to_string())
            .collect()
    };
    // (action, who did it) — each exactly once (bob's own first token is the admin's doing).
    for (action, actor) in [
        ("user_updated", "bob"),
        ("token_revoked", "bob"),
        ("login_link_created", "bob"),
        ("sign_in", "bob"),
        ("sign_out", "bob"),
        ("repo_updated", "admin"),
        ("hooks_changed", "admin"),
        ("environment_changed", "admin"),
        ("repo_access_changed", "admin"),
        ("secret_set", "admin"),
        ("secret_deleted", "admin"),
        ("share_created", "admin"),
        ("session_joined", "bob"),
        ("role_changed", "admin"),
        ("participant_removed", "admin"),
        ("share_revoked", "admin"),
        ("session_archived", "admin"),
        ("session_deleted", "admin"),
        ("garbage_collected", "admin"),
        ("user_deactivated", "admin"),
        ("repo_deleted", "admin"),
    ] {
        assert_eq!(actor_of(action), [actor], "{action}: {page}");
    }
    assert_eq!(actor_of("repo_created"), ["admin"]);
    assert_eq!(actor_of("user_created"), ["admin"]);
    // The test app's own token for bob, then bob's spare one.
    assert_eq!(actor_of("token_created"), ["admin", "bob"]);
    let secret_entry = entries
        .iter()
        .find(|e| e["action"] == "secret_set")
        .unwrap();
    assert_eq!(secret_entry["target"], "demo/TOKEN");
    assert!(
        !page.to_string().contains("hunter2"),
        "a secret value in the log"
    );
    let seqs: Vec<i64> = entries.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");

    // Paging and the JSON lines export agree.
    let half = seqs[seqs.len() / 2];
    let (_, rest) = app
        .get(&admin, &format!("/api/admin/audit?after={half}"))
        .await;
    assert_eq!(
        rest["entries"].as_array().unwrap().len(),
        seqs.iter().filter(|s| **s > half).count()
    );
    let lines = reqwest::Client::new()
        .get(format!("{}/api/admin/audit?format=jsonl", app.url))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(lines.headers()["content-type"], "application/x-ndjson");
    let text = lines.text().await.unwrap();
    let exported: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(exported.len(), entries.len());

    // Only admins read it.
    let (_, carol) = app.user("carol").await;
    let (status, _) = app.get(&carol, "/api/admin/audit").await;
    assert_eq!(status, 403);
    app.stop().await;
}
