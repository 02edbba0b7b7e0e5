//! Repo credentials: a repo added with `https://user:token@host/…` is fetched with them, over
//! git's smart HTTP protocol from a server that demands basic auth, and they never appear in a
//! response, an event, an error, the model's prompt or the host mirror's config. Hooks and the
//! environment's values are the admins' to see.

mod common;

use common::TestApp;
use kiln_protocol::api::Event;
use kiln_testkit::{FakeModel, GitHttpServer, bare_repo};
use serde_json::{Value, json};

const USER: &str = "kiln-bot";
const SECRET: &str = "ghp_correctHorseBatteryStaple";
const WRONG: &str = "ghp_wrongHorseBatteryStaple";
const ENV_SECRET: &str = "env-value-only-admins-see";

/// Fails when `body` quotes a credential in any form it could take.
fn assert_no_credentials(what: &str, body: &str) {
    for secret in [SECRET, WRONG, &format!("{USER}:")] {
        assert!(!body.contains(secret), "{what} quotes {secret:?}: {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repo_credentials_are_used_to_fetch_and_shown_to_nobody() {
    let model = FakeModel::start().await;
    let app = TestApp::start(&model).await;
    let root = app.dir.path().join("served");
    std::fs::create_dir_all(&root).unwrap();
    bare_repo(&root, "private", &[("README.md", "the private repo\n")]);
    let server = GitHttpServer::start(&root, USER, SECRET).await;
    let with = |password: &str| {
        server
            .url("private")
            .replace("http://", &format!("http://{USER}:{password}@"))
    };
    let admin = app.admin_token.clone();
    let mut bodies: Vec<(String, String)> = Vec::new();
    for (name, password) in [("private", SECRET), ("wrong", WRONG)] {
        let (status, repo) = app
            .post(
                &admin,
                "/api/repos",
                json!({
                    "name": name,
                    "url": with(password),
                    // The wrong password is the point: registered unchecked, refused at fetch.
                    "check": false,
                    "hooks": [{"event": "PreToolUse", "command": ["/bin/true"]}],
                    "environment": format!("[env]\nAPI_KEY = \"{ENV_SECRET}\"\n"),
                }),
            )
            .await;
        assert_eq!(status, 201, "{repo}");
        assert_eq!(
            repo["url"],
            server.url("private").replace("http://", "http://****@")
        );
        bodies.push((format!("POST /api/repos {name}"), repo.to_string()));
    }

    let (_, bob) = app.user("bob").await;
    for (who, token) in [("admin", admin.as_str()), ("bob", bob.as_str())] {
        for path in ["/api/repos", "/api/repos/private", "/api/repos/wrong"] {
            let (status, body) = app.get(token, path).await;
            assert_eq!(status, 200, "{body}");
            bodies.push((format!("{who} GET {path}"), body.to_string()));
        }
    }
    let (_, seen_by_bob) = app.get(&bob, "/api/repos/private").await;
    assert_eq!(seen_by_bob["hooks"], json!([]), "{seen_by_bob}");
    assert_eq!(seen_by_bob.get("environment"), None, "{seen_by_bob}");
    assert_eq!(seen_by_bob["default_branch"], "main");
    let (_, seen_by_admin) = app.get(&admin, "/api/repos/private").await;
    assert_eq!(seen_by_admin["hooks"][0]["command"], json!(["/bin/true"]));
    assert!(
        seen_by_admin["environment"]
            .as_str()
            .unwrap()
            .contains(ENV_SECRET)
    );
    for (what, body) in &bodies {
        assert_no_credentials(what, body);
        if what.starts_with("bob") {
            assert!(!body.contains(ENV_SECRET), "{what}: {body}");
            assert!(!body.contains("/bin/true"), "{what}: {body}");
        }
    }

    // Bob's session on the private repo: the host fetched it with the credentials.
    let session = new_session(&app, &bob, "private").await;
    let events = app
        .wait_for(&bob, &session, |e| {
            matches!(e, Event::PromptFinished { .. })
        })
        .await;
    let readme = app.sandbox_sh(&session, "cat README.md").await;
    assert_eq!(readme, "the private repo\n", "{events:#?}");
    assert!(server.authorized_requests() > 0);
    let mirror = std::fs::read_to_string(app.data_dir().join("repos/private.git/config")).unwrap();
    assert_no_credentials("the mirror's config", &mirror);
    assert!(mirror.contains(&server.url("private")), "{mirror}");
    for request in model.requests() {
        assert_no_credentials("a model request", &request.body.to_string());
    }

    // A mirror made before credentials were kept apart has them in its config: the next
    // fetch (with the credentials as a header) leaves only the bare url there.
    let mirror_dir = app.data_dir().join("repos/private.git");
    kiln_testkit::git(&mirror_dir, &["config", "remote.origin.url", &with(SECRET)]);
    let fetched_before = server.authorized_requests();
    let session = new_session(&app, &bob, "private").await;
    app.wait_for(&bob, &session, |e| {
        matches!(e, Event::PromptFinished { .. })
    })
    .await;
    assert!(server.authorized_requests() > fetched_before);
    let mirror = std::fs::read_to_string(mirror_dir.join("config")).unwrap();
    assert_no_credentials("the old mirror's config", &mirror);

    // Wrong credentials: the fetch fails, and the failure quotes no credential.
    let refused_before = server.refused_requests();
    let session = new_session(&app, &bob, "wrong").await;
    let events = app
        .wait_for(&bob, &session, |e| {
            matches!(e, Event::PromptFinished { .. })
        })
        .await;
    assert!(server.refused_requests() > refused_before);
    let text = serde_json::to_string(&events).unwrap();
    assert!(
        text.contains("127.0.0.1"),
        "the failure names the server: {text}"
    );
    assert_no_credentials("the failed session's events", &text);
    let (_, detail) = app.get(&bob, &format!("/api/sessions/{session}")).await;
    assert_no_credentials("the failed session", &detail.to_string());
}

async fn new_session(app: &TestApp, token: &str, repo: &str) -> kiln_core::SessionId {
    let (status, body): (u16, Value) = app
        .post(
            token,
            "/api/sessions",
            json!({"repo": repo, "prompt": "hello"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    body["session"]["id"].as_str().unwrap().parse().unwrap()
}
