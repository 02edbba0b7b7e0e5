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
