//! Taking things apart through the API: share links that expire, are single-use and can be
//! revoked; participants changed and removed; sessions archived and deleted; repos deleted;
//! a stop that says there was nothing to stop; repo urls checked before they are accepted.

mod common;

use common::{TestApp, is_finished};
use kiln_protocol::api::Event;
use kiln_sandbox::Provider;
use kiln_testkit::{FakeModel, GitHttpServer, Script, Turn, bare_repo};
use reqwest::Method;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn share_links_expire_work_once_and_can_be_revoked() {
    let model = FakeModel::start().await;
    let app = TestApp::start(&model).await;
    let admin = app.admin_token.clone();
    let session = app.new_session(&admin, "hello").await;
    let shares = format!("/api/sessions/{session}/shares");

    let (status, link) = app.post(&admin, &shares, json!({"role": "viewer"})).await;
    assert_eq!(status, 201, "{link}");
    let made = link["expires_at_ms"].as_i64().unwrap();
    let (_, listed) = app.get(&admin, &shares).await;
    let created = listed[0]["created_at_ms"].as_i64().unwrap();
    assert_eq!(made - created, 7 * 24 * 3_600_000, "a week by default");
    assert!(!listed.to_string().contains(link["code"].as_str().unwrap()));

    let (status, once) = app
        .post(
            &admin,
            &shares,
            json!({"role": "collaborator", "single_use": true, "expires_in_hours": 1}),
        )
        .await;
    assert_eq!(status, 201, "{once}");
    let (_, ann) = app.user("ann").await;
    let (_, ben) = app.user("ben").await;
    let join = |code: &serde_json::Value| format!("/api/join/{}", code.as_str().unwrap());
    let (status, _) = app.post(&ann, &join(&once["code"]), json!({})).await;
    assert_eq!(status, 200);
    let (status, _) = app.post(&ben, &join(&once["code"]), json!({})).await;
    assert_eq!(status, 404, "a single-use link works once");

    let (status, _) = app.get(&ann, &shares).await;
    assert_eq!(status, 403, "only owners see the links");
    let revoke = format!("{shares}/{}", link["id"].as_str().unwrap());
    let (status, _) = app.request(Method::DELETE, &admin, &revoke, None).await;
    assert_eq!(status, 204);
    let (status, _) = app.post(&ben, &join(&link["code"]), json!({})).await;
    assert_eq!(status, 404, "a revoked link no longer works");
    let (status, _) = app.request(Method::DELETE, &admin, &revoke, None).await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owners_change_roles_and_remove_participants_and_anyone_may_leave() {
    let model = FakeModel::start().await;
    let app = TestApp::start(&model).await;
    let admin = app.admin_token.clone();
    let session = app.new_session(&admin, "hello").await;
    app.wait_for(&admin, &session, is_finished).await;
    let (_, link) = app
        .post(
            &admin,
            &format!("/api/sessions/{session}/shares"),
            json!({"role": "viewer"}),
        )
        .await;
    let (ann_id, ann) = app.user("ann").await;
    let (ben_id, ben) = app.user("ben").await;
    for token in [&ann, &ben] {
        let code = link["code"].as_str().unwrap();
        let (status, _) = app
            .post(token, &format!("/api/join/{code}"), json!({}))
            .await;
        assert_eq!(status, 200);
    }
    let participant = |id: &str| format!("/api/sessions/{session}/participants/{id}");

    let body = Some(json!({"role": "collaborator"}));
    let (status, _) = app
        .request(Method::PUT, &ann, &participant(&ben_id), body.clone())
        .await;
    assert_eq!(status, 403, "viewers change no roles");
    let (status, _) = app
        .request(Method::PUT, &admin, &participant(&ann_id), body)
        .await;
    assert_eq!(status, 204);
    let (status, _) = app
        .post(
            &ann,
            &format!("/api/sessions/{session}/prompts"),
            json!({"text": "hi"}),
        )
        .await;
    assert_eq!(status, 202, "ann may prompt now");

    let (_, me) = app.get(&admin, "/api/me").await;
    let admin_id = me["user"]["id"].as_str().unwrap().to_string();
    let (status, reply) = app
        .request(
            Method::PUT,
            &admin,
            &participant(&admin_id),
            Some(json!({"role": "viewer"})),
        )
        .await;
    assert_eq!(status, 409, "the only owner stays owner: {reply}");

    let (status, _) = app
        .request(Method::DELETE, &admin, &participant(&ben_id), None)
        .await;
    assert_eq!(status, 204);
    let (status, _) = app.get(&ben, &format!("/api/sessions/{session}")).await;
    assert_eq!(
        status, 404,
        "a removed participant no longer sees the session"
    );
    let (status, _) = app
        .request(Method::DELETE, &ann, &participant(&ann_id), None)
        .await;
    assert_eq!(status, 204, "anyone may leave");

    let events = app.events(&admin, &session).await;
    let left: Vec<&str> = events
        .iter()
        .filter_map(|e| match &e.event {
            Event::ParticipantLeft { user } => Some(user.name.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(left, ["ben", "ann"]);
    assert!(events.iter().any(|e| matches!(
        &e.event,
        Event::ParticipantJoined { user, role } if user.name == "ann"
            && *role == kiln_core::Role::Collaborator
    )));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_are_archived_listed_by_admins_and_deleted_with_their_sandbox() {
    let model = FakeModel::start().await;
    let app = TestApp::start(&model).await;
    let admin = app.admin_token.clone();
    let (_, ann) = app.user("ann").await;
    // The one to delete runs a command first, so it surely has a sandbox.
    model.push(Script::Turn(Turn::tool(
        "bash",
        json!({"command": "echo hi"}),
    )));
    model.push(Script::Turn(Turn::text("done")));
    let deleted = app.new_session(&admin, "delete me").await;
    app.wait_for(&admin, &deleted, is_finished).await;
    let kept = app.new_session(&admin, "keep me").await;
    let archived = app.new_session(&admin, "archive me").await;
    let anns = app.new_session(&ann, "ann's own").await;
    for id in [&kept, &archived] {
        app.wait_for(&admin, id, is_finished).await;
    }
    app.wait_for(&ann, &anns, is_finished).await;

    // Stopping an idle session says nothing was stopped.
    let (status, stopped) = app
        .post(&admin, &format!("/api/sessions/{kept}/stop"), json!({}))
        .await;
    assert_eq!(status, 200, "{stopped}");
    assert_eq!(stopped["stopped_prompt"], serde_json::Value::Null);

    let (status, _) = app
        .post(
            &ann,
            &format!("/api/sessions/{archived}/archive"),
            json!({}),
        )
        .await;
    assert_eq!(status, 404, "strangers cannot tell the session exists");
    let (status, _) = app
        .post(
            &admin,
            &format!("/api/sessions/{archived}/archive"),
            json!({}),
        )
        .await;
    assert_eq!(status, 204);
    let ids = |list: &serde_json::Value| -> Vec<String> {
        list.as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap().to_string())
            .collect()
    };
    let (_, listed) = app.get(&admin, "/api/sessions").await;
    assert!(!ids(&listed).contains(&archived.to_string()), "{listed}");
    let (_, listed) = app.get(&admin, "/api/sessions?archived=true").await;
    assert!(ids(&listed).contains(&archived.to_string()), "{listed}");

    let (status, _) = app.get(&ann, "/api/sessions?all=true").await;
    assert_eq!(status, 403, "only admins list every session");
    let (_, all) = app.get(&admin, "/api/sessions?all=true").await;
    let theirs = all
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == anns.as_str())
        .expect("an admin sees ann's session");
    assert!(theirs.get("role").is_none(), "{theirs}");

    // Deleting: the sandbox, the directory and the index row go.
    assert_eq!(app.sandbox_sh(&deleted, "echo up").await, "up\n");
    let log = app.engine.store().open_session(&deleted).await.unwrap();
    let claimed = log.claimed_sandbox().await.unwrap();
    drop(log);
    let its = |info: &kiln_sandbox::SandboxInfo| {
        info.spec.labels.get("kiln.session").map(String::as_str) == Some(deleted.as_str())
            || claimed.as_deref() == Some(info.id.as_str())
    };
    let dir = app.data_dir().join("sessions").join(deleted.as_str());
    assert!(dir.is_dir());
    let (status, _) = app
        .request(
            Method::DELETE,
            &ann,
            &format!("/api/sessions/{deleted}"),
            None,
        )
        .await;
    assert_eq!(status, 404);
    let (status, _) = app
        .request(
            Method::DELETE,
            &admin,
            &format!("/api/sessions/{deleted}"),
            None,
        )
        .await;
    assert_eq!(status, 204);
    assert!(!dir.exists(), "the session's directory is gone");
    let (status, _) = app.get(&admin, &format!("/api/sessions/{deleted}")).await;
    assert_eq!(status, 404);
    let left: Vec<_> = app.provider.list().await.unwrap();
    assert!(!left.iter().any(its), "its sandbox is destroyed: {left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repo_is_deleted_only_when_forced_while_sessions_are_active() {
    let model = FakeModel::start().await;
    let app = TestApp::start(&model).await;
    let admin = app.admin_token.clone();
    let session = app.new_session(&admin, "hello").await;
    app.wait_for(&admin, &session, is_finished).await;

    let (status, reply) = app
        .request(Method::DELETE, &admin, "/api/repos/demo", None)
        .await;
    assert_eq!(status, 409, "its session holds a sandbox: {reply}");
    assert!(
        reply["error"].as_str().unwrap().contains("force"),
        "{reply}"
    );
    let (_, ann) = app.user("ann").await;
    let (status, _) = app
        .request(Method::DELETE, &ann, "/api/repos/demo?force=true", None)
        .await;
    assert_eq!(status, 403);
    let (status, _) = app
        .request(Method::DELETE, &admin, "/api/repos/demo?force=true", None)
        .await;
    assert_eq!(status, 204);
    let (status, reply) = app.get(&admin, "/api/repos/demo").await;
    assert_eq!(status, 404);
    assert_eq!(reply["error"], "repo \"demo\" not found", "said once");
    let (status, _) = app.get(&admin, &format!("/api/sessions/{session}")).await;
    assert_eq!(status, 404, "its sessions went with it");
    assert!(!app.data_dir().join("repos/demo.git").exists());
    // The name is free again.
    let (status, reply) = app
        .post(
            &admin,
            "/api/repos",
            json!({"name": "demo", "url": app.repo_url}),
        )
        .await;
    assert_eq!(status, 201, "{reply}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repo_urls_are_checked_before_they_are_accepted() {
    let model = FakeModel::start().await;
    let app = TestApp::start(&model).await;
    let admin = app.admin_token.clone();
    let add = |name: &str, url: &str| json!({"name": name, "url": url});

    let missing = app.dir.path().join("nothing-here.git");
    let (status, reply) = app
        .post(&admin, "/api/repos", add("a", missing.to_str().unwrap()))
        .await;
    assert_eq!(status, 400, "{reply}");
    assert!(
        reply["error"].as_str().unwrap().contains("no such path"),
        "{reply}"
    );

    let (status, reply) = app
        .post(
            &admin,
            "/api/repos",
            add("b", app.dir.path().to_str().unwrap()),
        )
        .await;
    assert_eq!(status, 400, "{reply}");
    assert!(
        reply["error"]
            .as_str()
            .unwrap()
            .contains("no git repository"),
        "{reply}"
    );

    let root = app.dir.path().join("served");
    std::fs::create_dir_all(&root).unwrap();
    bare_repo(&root, "private", &[("README.md", "private\n")]);
    let server = GitHttpServer::start(&root, "kiln", "s3cret-token").await;
    let (status, reply) = app
        .post(&admin, "/api/repos", add("c", &server.url("private")))
        .await;
    assert_eq!(status, 400, "{reply}");
    let message = reply["error"].as_str().unwrap();
    assert!(message.contains("authentication required"), "{message}");
    let with = server
        .url("private")
        .replace("http://", "http://kiln:s3cret-token@");
    let (status, reply) = app.post(&admin, "/api/repos", add("c", &with)).await;
    assert_eq!(status, 201, "{reply}");
    assert!(!reply.to_string().contains("s3cret"), "{reply}");

    let (status, reply) = app
        .post(&admin, "/api/repos", add("d", "http://127.0.0.1:1/x.git"))
        .await;
    assert_eq!(status, 400, "{reply}");
    assert!(
        reply["error"].as_str().unwrap().contains("cannot connect"),
        "{reply}"
    );
    let unchecked = json!({"name": "d", "url": "http://127.0.0.1:1/x.git", "check": false});
    let (status, reply) = app.post(&admin, "/api/repos", unchecked).await;
    assert_eq!(status, 201, "{reply}");
}
