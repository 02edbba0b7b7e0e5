//! The authorization matrix: every endpoint × owner, collaborator, viewer, stranger, anonymous;
//! and malformed input gets a 4xx that says what is wrong.

mod common;

use common::TestApp;
use kiln_testkit::FakeModel;
use reqwest::Method;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const ROLES: [&str; 5] = ["owner", "collaborator", "viewer", "stranger", "anonymous"];

async fn ws_status(app: &TestApp, token: &str, session: &str) -> u16 {
    socket_status(app, token, &format!("/api/sessions/{session}/ws")).await
}

async fn socket_status(app: &TestApp, token: &str, path: &str) -> u16 {
    let url = format!("{}{path}", app.url.replace("http://", "ws://"));
    let mut request = url.into_client_request().unwrap();
    if !token.is_empty() {
        request
            .headers_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok((_, response)) => response.status().as_u16(),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(e) => panic!("{e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_session_endpoint_checks_the_callers_role() {
    let model = FakeModel::start().await;
    let app = TestApp::start(&model).await;
    let (_, owner) = app.user("alice").await;
    let (_, collaborator) = app.user("bob").await;
    let (_, viewer) = app.user("carol").await;
    let (_, stranger) = app.user("dave").await;
    let session = app.new_session(&owner, "hello").await;
    for (token, role) in [(&collaborator, "collaborator"), (&viewer, "viewer")] {
        let (status, share) = app
            .post(
                &owner,
                &format!("/api/sessions/{session}/shares"),
                json!({"role": role}),
            )
            .await;
        assert_eq!(status, 201, "{share}");
        let (status, joined) = app
            .post(token, share["path"].as_str().unwrap(), json!({}))
            .await;
        assert_eq!(status, 200, "{joined}");
        assert_eq!(joined["role"], role);
    }
    let tokens = [owner.as_str(), &collaborator, &viewer, &stranger, ""];
    let s = session.to_string();
    // (method, path, body, expected status per role in ROLES order)
    let matrix: Vec<(Method, String, Option<Value>, [u16; 5])> = vec![
        (
            Method::GET,
            format!("/api/sessions/{s}"),
            None,
            [200, 200, 200, 404, 401],
        ),
        (
            Method::GET,
            format!("/api/sessions/{s}/events"),
            None,
            [200, 200, 200, 404, 401],
        ),
        (
            Method::POST,
            format!("/api/sessions/{s}/prompts"),
            Some(json!({"text": "hi"})),
            [202, 202, 403, 404, 401],
        ),
        (
            Method::POST,
            format!("/api/sessions/{s}/stop"),
            Some(json!({})),
            [200, 200, 403, 404, 401],
        ),
        (
            Method::PATCH,
            format!("/api/sessions/{s}"),
            Some(json!({"delivery": "queue"})),
            [200, 403, 403, 404, 401],
        ),
        // No such plan: deciders learn that; viewers may not decide at all.
        (
            Method::POST,
            format!("/api/sessions/{s}/plan/pl-0123456789abcdef"),
            Some(json!({"decision": "approve"})),
            [404, 404, 403, 404, 401],
        ),
        (
            Method::POST,
            format!("/api/sessions/{s}/shares"),
            Some(json!({"role": "viewer"})),
            [201, 403, 403, 404, 401],
        ),
        (
            Method::GET,
            format!("/api/sessions/{s}/shares"),
            None,
            [200, 403, 403, 404, 401],
        ),
        (
            Method::GET,
            "/api/sessions?all=true".into(),
            None,
            [403, 403, 403, 403, 401],
        ),
        (
            Method::GET,
            "/api/me".into(),
            None,
            [200, 200, 200, 200, 401],
        ),
        (
            Method::GET,
            "/api/repos".into(),
            None,
            [200, 200, 200, 200, 401],
        ),
        (
            Method::GET,
            "/api/repos/demo".into(),
            None,
            [200, 200, 200, 200, 401],
        ),
        (
            Method::POST,
            "/api/repos".into(),
            Some(json!({"name": "x", "url": "/tmp/x"})),
            [403, 403, 403, 403, 401],
        ),
        (
            Method::PATCH,
            "/api/repos/demo".into(),
            Some(json!({"description": "x"})),
            [403, 403, 403, 403, 401],
        ),
        (
            Method::POST,
            "/api/repos/demo/images".into(),
            Some(json!({})),
            [403, 403, 403, 403, 401],
        ),
        (
            Method::GET,
            "/api/repos/demo/images".into(),
            None,
            [200, 200, 200, 200, 401],
        ),
        (
            Method::GET,
            "/api/repos/demo/images/img-0000000000000000/log".into(),
            None,
            [404, 404, 404, 404, 401],
        ),
        (
            Method::GET,
            "/api/repos/demo/secrets".into(),
            None,
            [403, 403, 403, 403, 401],
        ),
        (
            Method::PUT,
            "/api/repos/demo/secrets/TOKEN".into(),
            Some(json!({"value": "guess-me-1234"})),
            [403, 403, 403, 403, 401],
        ),
        (
            Method::DELETE,
            "/api/repos/demo/secrets/TOKEN".into(),
            None,
            [403, 403, 403, 403, 401],
        ),
        (
            Method::POST,
            "/api/admin/gc".into(),
            Some(json!({})),
            [403, 403, 403, 403, 401],
        ),
        (
            Method::GET,
            "/api/repos/demo/pool".into(),
            None,
            [200, 200, 200, 200, 401],
        ),
        (
            Method::POST,
            "/api/repos/demo/warm".into(),
            Some(json!({})),
            [200, 200, 200, 200, 401],
        ),
        (
            Method::GET,
            "/api/users".into(),
            None,
            [403, 403, 403, 403, 401],
        ),
        (
            Method::POST,
            "/api/users".into(),
            Some(json!({"name": "eve"})),
            [403, 403, 403, 403, 401],
        ),
        (
            Method::GET,
            "/api/sessions".into(),
            None,
            [200, 200, 200, 200, 401],
        ),
        (
            Method::GET,
            "/api/tokens".into(),
            None,
            [200, 200, 200, 200, 401],
        ),
        (
            Method::POST,
            "/api/join/0123456789abcdef0123456789abcdef".into(),
            Some(json!({})),
            [404, 404, 404, 404, 401],
        ),
        (
            Method::GET,
            "/api/health".into(),
            None,
            [200, 200, 200, 200, 200],
        ),
        (
            Method::GET,
            "/api/openapi.json".into(),
            None,
            [200, 200, 200, 200, 200],
        ),
        (
            Method::POST,
            "/api/login-links".into(),
            Some(json!({})),
            [201, 201, 201, 201, 401],
        ),
        (
            Method::POST,
            "/api/logout".into(),
            Some(json!({})),
            [204, 204, 204, 204, 401],
        ),
    ];
    let mut failures = Vec::new();
    for (method, path, body, expected) in &matrix {
        for (i, token) in tokens.iter().enumerate() {
            let (status, response) = app.request(method.clone(), token, path, body.clone()).await;
            if status != expected[i] {
                failures.push(format!(
                    "{method} {path} as {}: {status} (want {}) {response}",
                    ROLES[i], expected[i]
                ));
            }
            if status >= 400 {
                assert!(
                    response["error"].as_str().is_some_and(|m| !m.is_empty()),
                    "{method} {path}: {response}"
                );
            }
        }
    }
    for (i, token) in tokens.iter().enumerate() {
        let want = [101, 101, 101, 404, 401][i];
        let status = ws_status(&app, token, &s).await;
        if status != want {
            failures.push(format!("WS as {}: {status} (want {want})", ROLES[i]));
        }
        let want = [101, 101, 101, 101, 401][i];
        let status = socket_status(&app, token, "/api/ws").await;
        if status != want {
            failures.push(format!("user WS as {}: {status} (want {want})", ROLES[i]));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // Strangers' lists do not show the session; members' do, with their role.
    let (_, list) = app.get(&stranger, "/api/sessions").await;
    assert_eq!(list.as_array().unwrap().len(), 0);
    let (_, list) = app.get(&viewer, "/api/sessions").await;
    assert_eq!(list[0]["role"], "viewer");
    // The admin is not a member either: admins do not read others' sessions.
    let (status, _) = app
        .get(&app.admin_token, &format!("/api/sessions/{s}"))
        .await;
    assert_eq!(status, 404);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_a_4xx_that_says_what_is_wrong() {
    let model = FakeModel::start().await;
    let app = TestApp::start(&model).await;
    let token = app.admin_token.clone();
    let cases: Vec<(Method, &str, Option<Value>, u16, &str)> = vec![
        (
            Method::POST,
            "/api/sessions",
            Some(json!({"prompt": "x"})),
            400,
            "repo",
        ),
        (
            Method::POST,
            "/api/sessions",
            Some(json!({"repo": "demo", "prompt": "x", "colour": 1})),
            400,
            "colour",
        ),
        (
            Method::POST,
            "/api/sessions",
            Some(json!({"repo": "nope", "prompt": "x"})),
            404,
            "nope",
        ),
        (
            Method::POST,
            "/api/sessions",
            Some(json!({"repo": "demo", "prompt": "  "})),
            400,
            "empty",
        ),
        (
            Method::POST,
            "/api/repos",
            Some(json!({"name": "../evil", "url": "/tmp"})),
            400,
            "name",
        ),
        (
            Method::POST,
            "/api/repos",
            Some(json!({"name": "demo", "url": "/tmp"})),
            409,
            "demo",
        ),
        (
            Method::GET,
            "/api/sessions/s-0123456789abcdef",
            None,
            404,
            "not found",
        ),
        (
            Method::GET,
            "/api/sessions/not-an-id",
            None,
            404,
            "not found",
        ),
        (
            Method::POST,
            "/api/sessions/s-0123456789abcdef/prompts",
            Some(json!({"text": "x"})),
            404,
            "not found",
        ),
        (Method::GET, "/api/nothing-here", None, 404, "not found"),
        (
            Method::POST,
            "/api/users",
            Some(json!({"name": ""})),
            400,
            "name",
        ),
    ];
    for (method, path, body, want, needle) in cases {
        let (status, response) = app.request(method.clone(), &token, path, body).await;
        let message = response["error"].as_str().unwrap_or_default().to_string();
        assert_eq!(status, want, "{method} {path}: {response}");
        assert!(
            message.contains(needle),
            "{method} {path}: {message:?} should mention {needle:?}"
        );
    }
    // Not JSON at all.
    let response = reqwest::Client::new()
        .post(format!("{}/api/sessions", app.url))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);
    let body: Value = response.json().await.unwrap();
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("json"),
        "{body}"
    );
    app.stop().await;
}

/// A read-only token reads what its user may read and changes nothing: every route of the
/// OpenAPI document that is not a read answers 403 saying so (walked from the document, so a
/// route added later is covered), sockets follow but do not warm sandboxes, and a read-only
/// token cannot make a full one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_token_reads_and_changes_nothing() {
    let model = FakeModel::start().await;
    model.set_default(kiln_testkit::Turn::text("done"));
    let app = TestApp::start(&model).await;
    let admin = app.admin_token.clone();
    let session = app.new_session(&admin, "hello").await;
    let (status, created) = app
        .post(
            &admin,
            "/api/tokens",
            json!({"name": "dashboard", "scope": "read_only"}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["info"]["scope"], "read_only");
    let reader = created["token"].as_str().unwrap().to_string();

    // Reads work, as the admin it belongs to.
    for path in ["/api/me", "/api/sessions", "/api/repos", "/api/users"] {
        let (status, body) = app.get(&reader, path).await;
        assert_eq!(status, 200, "{path}: {body}");
    }
    let (status, _) = app
        .get(&reader, &format!("/api/sessions/{session}/events"))
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        ws_status(&app, &reader, session.as_str()).await,
        101,
        "a read-only token follows a session"
    );

    // Everything else is refused, whatever the route.
    let document: Value = reqwest::get(format!("{}/api/openapi.json", app.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let me = app.get(&admin, "/api/me").await.1;
    let admin_id = me["user"]["id"].as_str().unwrap().to_string();
    let mut refused = 0;
    for (path, operations) in document["paths"].as_object().unwrap() {
        for (method, operation) in operations.as_object().unwrap() {
            if matches!(method.as_str(), "get" | "head" | "options" | "parameters") {
                continue;
            }
            // Routes authenticated otherwise (a webhook's signature) take no token at all.
            if operation["security"] == json!([{}]) {
                continue;
            }
            let concrete = path
                .replace("{id}", session.as_str())
                .replace("{name}", "demo")
                .replace("{user}", &admin_id)
                .replace("{secret}", "TOKEN")
                .replace("{code}", "c0de")
                .replace("{prompt_id}", "p-0000000000000000")
                .replace("{share}", "sh-0000000000000000");
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let response = reqwest::Client::new()
                .request(method.clone(), format!("{}{concrete}", app.url))
                .bearer_auth(&reader)
                .json(&json!({}))
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            let body: Value = response.json().await.unwrap_or(Value::Null);
            assert_eq!(status, 403, "{method} {path}: {body}");
            assert!(
                body["error"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("read-only"),
                "{method} {path}: {body}"
            );
            refused += 1;
        }
    }
    assert!(refused > 25, "only {refused} routes walked");

    // The user socket: no warm-ups for a read-only token.
    let mut ws = app.user_ws(&reader).await;
    ws.send_text(r#"{"type":"typing","repo":"demo"}"#).await;
    let reply = ws.json().await;
    assert_eq!(reply["type"], "error", "{reply}");
    assert!(
        reply["message"].as_str().unwrap().contains("read-only"),
        "{reply}"
    );

    // Nothing changed: still one session, one prompt, the same tokens.
    let (_, sessions) = app.get(&admin, "/api/sessions").await;
    assert_eq!(sessions.as_array().map(Vec::len), Some(1), "{sessions}");
    let (_, tokens) = app.get(&admin, "/api/tokens").await;
    assert_eq!(tokens.as_array().unwrap().len(), 2, "{tokens}");
    app.stop().await;
}
