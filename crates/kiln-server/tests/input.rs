//! Input the server refuses and responses it bounds (issue 9, items 2 and 8): bodies must be
//! JSON objects within the body limit, every text field has a limit in characters, branch
//! names are checked as git checks them, every error (405, 404 off the API, 413) is JSON, and
//! a session's detail and event pages stay small however long the session runs.

mod common;

use common::TestApp;
use kiln_testkit::FakeModel;
use reqwest::Method;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_must_be_objects_within_their_limits() {
    let model = FakeModel::start().await;
    let app = TestApp::start(&model).await;
    let admin = app.admin_token.clone();

    // serde takes a sequence for a struct; the server does not.
    let (status, body) = app
        .post(&admin, "/api/sessions", json!(["demo", "prompt"]))
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("JSON object"),
        "{body}"
    );
    for (path, value) in [
        ("/api/users", json!(["eve", false])),
        ("/api/tokens", json!(["laptop"])),
        ("/api/repos", json!("demo")),
        ("/api/sessions/s-0123456789abcdef/stop", json!([true])),
    ] {
        let (status, body) = app.post(&admin, path, value).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert!(
            body["error"].as_str().unwrap().contains("JSON object"),
            "{path}: {body}"
        );
    }

    // Limits are characters: 100 two-byte characters are a fine display name, 101 are not
    // (a user's handle is ASCII; its display name need not be).
    let name = "é".repeat(100);
    let (status, body) = app
        .post(
            &admin,
            "/api/users",
            json!({ "name": "ada", "display_name": name }),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = app
        .post(&admin, "/api/tokens", json!({ "name": "ö".repeat(64) }))
        .await;
    assert_eq!(status, 201, "{body}");
    for (path, field, value) in [
        (
            "/api/users",
            "display_name",
            json!({ "name": "ann", "display_name": "é".repeat(101) }),
        ),
        ("/api/tokens", "name", json!({ "name": "ö".repeat(65) })),
        (
            "/api/sessions",
            "title",
            json!({"repo": "demo", "prompt": "hi", "title": "t".repeat(201)}),
        ),
        (
            "/api/sessions",
            "prompt",
            json!({"repo": "demo", "prompt": "p".repeat(100_001)}),
        ),
        (
            "/api/repos",
            "description",
            json!({"name": "r2", "url": app.repo_url, "description": "d".repeat(2_001)}),
        ),
        (
            "/api/repos",
            "url",
            json!({"name": "r2", "url": "u".repeat(2_049)}),
        ),
    ] {
        let (status, body) = app.post(&admin, path, value).await;
        assert_eq!(status, 400, "{path} {field}: {body}");
        let message = body["error"].as_str().unwrap();
        assert!(message.contains(&format!("`{field}`")), "{path}: {message}");
    }
    let session = app.new_session(&admin, "hello").await;
    let (status, body) = app
        .post(
            &admin,
            &format!("/api/sessions/{session}/prompts"),
            json!({ "text": "x".repeat(100_001) }),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains("`text`"), "{body}");

    // Branch names as git takes them, on create and on update.
    for branch in [
        "main:refs/heads/x",
        "a..b",
        "-x",
        "x.lock",
        "has space",
        "a@{1}",
    ] {
        let (status, body) = app
            .post(
                &admin,
                "/api/repos",
                json!({"name": "r3", "url": app.repo_url, "default_branch": branch}),
            )
            .await;
        assert_eq!(status, 400, "{branch}: {body}");
        assert!(
            body["error"].as_str().unwrap().contains("default_branch"),
            "{body}"
        );
        let (status, body) = app
            .request(
                Method::PATCH,
                &admin,
                "/api/repos/demo",
                Some(json!({ "default_branch": branch })),
            )
            .await;
        assert_eq!(status, 400, "{branch}: {body}");
    }
    let (status, body) = app
        .request(
            Method::PATCH,
            &admin,
            "/api/repos/demo",
            Some(json!({ "default_branch": "release/1.2" })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_is_json() {
    let model = FakeModel::start().await;
    let app = TestApp::start(&model).await;
    let admin = app.admin_token.clone();
    // 413: a body over the limit.
    let (status, body) = app
        .post(
            &admin,
            "/api/sessions",
            json!({"repo": "demo", "prompt": "x".repeat(kiln_server::BODY_LIMIT)}),
        )
        .await;
    assert_eq!(status, 413, "{body}");
    assert!(body["error"].as_str().unwrap().contains("larger"), "{body}");
    // 405: a method a path does not have.
    let (status, body) = app
        .request(Method::DELETE, &admin, "/api/sessions", None)
        .await;
    assert_eq!(status, 405, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("not allowed"),
        "{body}"
    );
    // 404 outside the API.
    let (status, body) = app.get(&admin, "/no/such/page").await;
    assert_eq!(status, 404, "{body}");
    assert!(body["error"].as_str().is_some(), "{body}");
    // 415: a body that does not say it is JSON.
    let response = reqwest::Client::new()
        .post(format!("{}/api/sessions", app.url))
        .bearer_auth(&admin)
        .body(r#"{"repo":"demo","prompt":"x"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 415);
    let body: Value = response.json().await.unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("application/json"),
        "{body}"
    );
    // A plain GET on a WebSocket route: axum's own rejection, in our shape.
    let (status, body) = app.get(&admin, "/api/ws").await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().is_some(), "{body}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_sessions_answer_in_pages() {
    let model = FakeModel::start().await;
    let app = TestApp::start(&model).await;
    let admin = app.admin_token.clone();
    let session = app.new_session(&admin, "first").await;
    // 45 prompts of 100,000 characters: 4.5 MB of prompt text in the log.
    let big = "y".repeat(100_000);
    for _ in 0..45 {
        app.send(&admin, &session, &big).await;
    }
    for i in 0..10 {
        app.send(&admin, &session, &format!("small {i}")).await;
    }
    // None of them needs to run (each would send the model the whole conversation).
    let (status, body) = app
        .post(
            &admin,
            &format!("/api/sessions/{session}/stop"),
            json!({"clear_queue": true}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(body["cancelled"].as_u64().unwrap() > 0, "{body}");
    let (status, detail) = app.get(&admin, &format!("/api/sessions/{session}")).await;
    assert_eq!(status, 200);
    let size = detail.to_string().len();
    assert!(size < 200_000, "the detail is {size} bytes");
    let prompts = detail["prompts"].as_array().unwrap();
    assert_eq!(prompts.len(), kiln_protocol::api::DETAIL_PROMPTS);
    assert_eq!(detail["prompts_total"], 56);
    assert_eq!(prompts.last().unwrap()["text"], "small 9");
    let cut = &prompts[0];
    assert_eq!(cut["text_truncated"], true);
    assert_eq!(
        cut["text"].as_str().unwrap().chars().count(),
        kiln_protocol::api::PROMPT_PREVIEW_CHARS
    );

    // Events come in pages bounded in bytes too; paging reaches the head.
    let mut after = 0;
    let mut pages = 0;
    let mut seen_big = 0;
    loop {
        let (status, page) = app
            .get(
                &admin,
                &format!("/api/sessions/{session}/events?after_seq={after}&limit=5000"),
            )
            .await;
        assert_eq!(status, 200);
        let size = page.to_string().len();
        assert!(size < 5 * 1024 * 1024, "a page of {size} bytes");
        pages += 1;
        seen_big += page["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["event"]["type"] == "prompt_queued" && e["event"]["text"] == big.as_str())
            .count();
        let next = page["next_after_seq"].as_u64().unwrap();
        if next == after || next >= page["head_seq"].as_u64().unwrap() {
            break;
        }
        after = next;
    }
    assert!(pages >= 2, "4.5 MB of events came in one page");
    assert_eq!(seen_big, 45);

    // Session lists page with `limit` and `after`.
    let second = app.new_session(&admin, "second").await;
    let (status, page) = app.get(&admin, "/api/sessions?limit=1").await;
    assert_eq!(status, 200);
    assert_eq!(page.as_array().unwrap().len(), 1);
    assert_eq!(page[0]["id"], second.to_string());
    let (_, page) = app
        .get(&admin, &format!("/api/sessions?limit=1&after={second}"))
        .await;
    assert_eq!(page[0]["id"], session.to_string());
    let (_, page) = app
        .get(&admin, &format!("/api/sessions?limit=1&after={session}"))
        .await;
    assert_eq!(page.as_array().unwrap().len(), 0);
    // Another user's session is no cursor: it would tell them when it was made.
    let (_, bob) = app.user("bob").await;
    let (status, body) = app
        .get(&bob, &format!("/api/sessions?after={session}"))
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("`after`"),
        "{body}"
    );
    app.stop().await;
}
