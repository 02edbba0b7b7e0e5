//! Browser-facing authentication against the real server: single-use login codes exchanged
//! for a session cookie, the Origin check on cookie-authenticated WebSocket upgrades and
//! state-changing requests, `?token=` only on WebSocket upgrades, logging out, the last admin
//! token kept, and share links that never make owners.

mod common;

use common::TestApp;
use kiln_testkit::FakeModel;
use reqwest::header;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// A sign-in link minted with `token`.
async fn login_link(app: &TestApp, token: &str) -> String {
    let (status, link) = app.post(token, "/api/login-links", json!({})).await;
    assert_eq!(status, 201, "{link}");
    let url = link["url"].as_str().unwrap().to_string();
    assert!(
        url.starts_with(&format!("{}/login?code=", app.url)),
        "{url}"
    );
    url
}

/// Opens a sign-in link and returns the `name=value` of the session cookie it set.
async fn sign_in(app: &TestApp, token: &str) -> String {
    let response = no_redirects()
        .get(login_link(app, token).await)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 303);
    assert_eq!(response.headers()[header::LOCATION], "/");
    let cookie = response.headers()[header::SET_COOKIE].to_str().unwrap();
    for attribute in ["HttpOnly", "SameSite=Lax", "Path=/", "Max-Age=604800"] {
        assert!(cookie.contains(attribute), "{cookie}");
    }
    assert!(!cookie.contains("Secure"), "plain HTTP: {cookie}");
    cookie.split(';').next().unwrap().to_string()
}

/// Sends a request with a cookie and an optional Origin; returns the status and body.
async fn with_cookie(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    cookie: &str,
    origin: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = no_redirects()
        .request(method, format!("{}{path}", app.url))
        .header(header::COOKIE, cookie);
    if let Some(origin) = origin {
        request = request.header(header::ORIGIN, origin);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// The status of a WebSocket upgrade to `path` with the given headers.
async fn upgrade(app: &TestApp, path: &str, headers: &[(&'static str, &str)]) -> u16 {
    let url = format!("{}{path}", app.url.replace("http://", "ws://"));
    let mut request = url.into_client_request().unwrap();
    for (name, value) in headers {
        request.headers_mut().insert(*name, value.parse().unwrap());
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok((_, response)) => response.status().as_u16(),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(e) => panic!("{e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_codes_work_once_and_tokens_never_travel_in_urls() {
    let model = FakeModel::start().await;
    let app = TestApp::start(&model).await;
    let (_, bob) = app.user("bob").await;
    let link = login_link(&app, &bob).await;
    let response = no_redirects().get(&link).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 303);
    let cookie = response.headers()[header::SET_COOKIE].to_str().unwrap();
    let cookie = cookie.split(';').next().unwrap().to_string();
    let (status, me) =
        with_cookie(&app, reqwest::Method::GET, "/api/me", &cookie, None, None).await;
    assert_eq!(
        (status, me["user"]["name"].as_str()),
        (200, Some("bob")),
        "{me}"
    );

    // A used code: a clear error, as a page for a browser and as JSON for anything else.
    let again = no_redirects().get(&link).send().await.unwrap();
    assert_eq!(again.status().as_u16(), 400);
    assert!(again.headers().get(header::SET_COOKIE).is_none());
    let error: Value = again.json().await.unwrap();
    assert!(
        error["error"].as_str().unwrap().contains("already used"),
        "{error}"
    );
    let page = no_redirects()
        .get(&link)
        .header(header::ACCEPT, "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(page.status().as_u16(), 400);
    assert!(page.text().await.unwrap().contains("kiln login-link"));

    // A long-lived token in the URL signs nobody in any more.
    for path in [
        format!("/login?token={}", app.admin_token),
        "/login?code=0123456789abcdef0123456789abcdef".to_string(),
    ] {
        let response = no_redirects()
            .get(format!("{}{path}", app.url))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 400, "{path}");
        assert!(
            response.headers().get(header::SET_COOKIE).is_none(),
            "{path}"
        );
    }

    // `?token=` is for WebSocket upgrades only.
    let (status, _) = app
        .get("", &format!("/api/me?token={}", app.admin_token))
        .await;
    assert_eq!(status, 401);
    let (status, _) = app
        .get("", &format!("/api/repos?token={}", app.admin_token))
        .await;
    assert_eq!(status, 401);
    let path = format!("/api/ws?token={}", app.admin_token);
    assert_eq!(upgrade(&app, &path, &[]).await, 101);

    // Logging out ends the browser session.
    let origin = app.url.clone();
    let (status, body) = with_cookie(
        &app,
        reqwest::Method::POST,
        "/api/logout",
        &cookie,
        Some(&origin),
        None,
    )
    .await;
    assert_eq!(status, 204, "{body}");
    let (status, _) = with_cookie(&app, reqwest::Method::GET, "/api/me", &cookie, None, None).await;
    assert_eq!(status, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookie_requests_must_come_from_this_servers_pages() {
    let model = FakeModel::start().await;
    let app = TestApp::start(&model).await;
    let (_, bob) = app.user("bob").await;
    let cookie = sign_in(&app, &bob).await;
    let own = app.url.clone();
    // Another port of the same host is "same-site", but not this server.
    let port: u16 = own.rsplit(':').next().unwrap().parse().unwrap();
    let other = format!("http://127.0.0.1:{}", port.wrapping_add(1));
    let create = || Some(json!({"repo": "demo", "prompt": "hi"}));
    let post = reqwest::Method::POST;

    for origin in [Some(other.as_str()), Some("null"), None] {
        let (status, body) = with_cookie(
            &app,
            post.clone(),
            "/api/sessions",
            &cookie,
            origin,
            create(),
        )
        .await;
        assert_eq!(status, 403, "{origin:?}: {body}");
        assert!(body["error"].as_str().unwrap().contains("Origin"), "{body}");
        let mut headers = vec![("cookie", cookie.as_str())];
        if let Some(origin) = origin {
            headers.push(("origin", origin));
        }
        assert_eq!(upgrade(&app, "/api/ws", &headers).await, 403, "{origin:?}");
    }
    let (status, body) = with_cookie(
        &app,
        post.clone(),
        "/api/sessions",
        &cookie,
        Some(&own),
        create(),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let session = body["session"]["id"].as_str().unwrap();
    let headers = [("cookie", cookie.as_str()), ("origin", own.as_str())];
    assert_eq!(upgrade(&app, "/api/ws", &headers).await, 101);
    let path = format!("/api/sessions/{session}/ws");
    assert_eq!(upgrade(&app, &path, &headers).await, 101);
    let headers = [("cookie", cookie.as_str()), ("origin", other.as_str())];
    assert_eq!(upgrade(&app, &path, &headers).await, 403);

    // Reading needs no Origin; a bearer token is not ambient, so its Origin does not matter.
    let (status, _) = with_cookie(
        &app,
        reqwest::Method::GET,
        "/api/sessions",
        &cookie,
        Some(&other),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let response = reqwest::Client::new()
        .post(format!("{}/api/sessions", app.url))
        .bearer_auth(&bob)
        .header(header::ORIGIN, &other)
        .json(&create())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_admin_token_stays_and_links_never_make_owners() {
    let model = FakeModel::start().await;
    let app = TestApp::start(&model).await;
    let admin = app.admin_token.clone();
    let (_, alice) = app.user("alice").await;
    let (_, tokens) = app.get(&admin, "/api/tokens").await;
    let only = tokens[0]["id"].as_str().unwrap().to_string();
    let (status, body) = app
        .request(
            reqwest::Method::DELETE,
            &admin,
            &format!("/api/tokens/{only}"),
            None,
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("kiln admin token"),
        "{body}"
    );
    assert_eq!(app.get(&admin, "/api/me").await.0, 200);

    // With a second admin token, the first can go; then the second is the last.
    let (_, second) = app
        .post(&admin, "/api/tokens", json!({"name": "spare"}))
        .await;
    let spare = second["token"].as_str().unwrap().to_string();
    let (status, _) = app
        .request(
            reqwest::Method::DELETE,
            &spare,
            &format!("/api/tokens/{only}"),
            None,
        )
        .await;
    assert_eq!(status, 204);
    let spare_id = second["info"]["id"].as_str().unwrap();
    let (status, _) = app
        .request(
            reqwest::Method::DELETE,
            &spare,
            &format!("/api/tokens/{spare_id}"),
            None,
        )
        .await;
    assert_eq!(status, 409);

    // Share links grant viewer or collaborator, never owner.
    let session = app.new_session(&alice, "hi").await;
    let shares = format!("/api/sessions/{session}/shares");
    let (status, body) = app.post(&alice, &shares, json!({"role": "owner"})).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("collaborator"),
        "{body}"
    );
    let (status, body) = app
        .post(&alice, &shares, json!({"role": "collaborator"}))
        .await;
    assert_eq!(status, 201, "{body}");
}
