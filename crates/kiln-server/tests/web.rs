//! The web UI's serving (issue 14): page URLs answer with the single page (deep links work on
//! reload), hashed assets are cached for good and the page never, every response carries the
//! security headers, and the OpenAPI document the UI's types are generated from
//! (`web/openapi.json`) is the server's. The UI itself is tested in a browser by
//! `crates/kiln-cli/tests/web.rs`.

mod common;

use common::TestApp;
use kiln_testkit::FakeModel;

#[test]
fn the_ui_is_typed_against_the_current_api() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../web/openapi.json");
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == kiln_server::openapi_json(),
        "web/openapi.json is not the server's OpenAPI document: the API changed. Refresh it \
         with `cargo run -p kiln-cli -- openapi > web/openapi.json`, then run scripts/build-web: \
         its type check says what in the UI the change broke"
    );
}

fn header<'a>(response: &'a reqwest::Response, name: &str) -> &'a str {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_and_files_are_served_with_strict_headers() {
    let model = FakeModel::start().await;
    let app = TestApp::start(&model).await;
    let client = reqwest::Client::new();
    let mut index = None;
    for path in [
        "/",
        "/new",
        "/sessions/s_x",
        "/repos",
        "/repos/demo",
        "/join/abc",
        "/stats",
    ] {
        let response = client
            .get(format!("{}{path}", app.url))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{path}");
        assert!(
            header(&response, "content-type").starts_with("text/html"),
            "{path}"
        );
        assert_eq!(header(&response, "cache-control"), "no-cache", "{path}");
        let csp = header(&response, "content-security-policy");
        for part in [
            "default-src 'self'",
            "script-src 'self'",
            "frame-ancestors 'none'",
            "object-src 'none'",
        ] {
            assert!(csp.contains(part), "{path}: {csp}");
        }
        assert!(!csp.contains("unsafe"), "{path}: {csp}");
        assert_eq!(header(&response, "x-content-type-options"), "nosniff");
        assert_eq!(header(&response, "x-frame-options"), "DENY");
        let body = response.text().await.unwrap();
        assert!(!body.contains("<script>"), "no inline script: {body}");
        index.get_or_insert(body);
    }
    // Neither an unknown page nor an unknown file is the page.
    for path in ["/nope", "/sessions/a/b", "/assets/nope.js"] {
        let response = client
            .get(format!("{}{path}", app.url))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 404, "{path}");
    }
    let index = index.unwrap();
    // The sign-in page asks, before anyone signs in, what it may offer.
    let (status, methods) = app.get("", "/api/auth/methods").await;
    assert_eq!(status, 200, "{methods}");
    assert_eq!(methods, serde_json::json!({"github": false}));
    if kiln_server::web_ui_built() {
        // The bundle: immutable, gzipped for browsers that take it, with its type.
        let script = index
            .split("src=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .expect("the page names its script");
        assert!(script.starts_with("/assets/"), "{script}");
        let response = client
            .get(format!("{}{script}", app.url))
            .header("accept-encoding", "gzip")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(
            header(&response, "cache-control"),
            "public, max-age=31536000, immutable"
        );
        assert!(header(&response, "content-type").starts_with("text/javascript"));
        assert_eq!(header(&response, "content-encoding"), "gzip");
        assert_eq!(header(&response, "x-content-type-options"), "nosniff");
    } else {
        assert!(index.contains("scripts/build-web"), "{index}");
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sign_in_page_learns_that_github_is_configured() {
    use kiln_core::Secret;
    use kiln_engine::{EngineConfig, GitHubConfig};
    use kiln_testkit::{
        FAKE_APP_ID, FAKE_CLIENT_ID, FAKE_CLIENT_SECRET, FakeGitHub, TEST_APP_PRIVATE_KEY_PEM,
    };
    let fake = FakeGitHub::start().await;
    let app = TestApp::with_config(EngineConfig {
        github: Some(GitHubConfig {
            api_url: fake.url(),
            app_id: Some(FAKE_APP_ID.into()),
            private_key_pem: Some(Secret::new(TEST_APP_PRIVATE_KEY_PEM.as_bytes().to_vec())),
            client_id: Some(FAKE_CLIENT_ID.into()),
            client_secret: Some(Secret::new(FAKE_CLIENT_SECRET.into())),
            webhook_secret: None,
            triggers: Default::default(),
        }),
        ..EngineConfig::default()
    })
    .await;
    let (status, methods) = app.get("", "/api/auth/methods").await;
    assert_eq!(status, 200, "{methods}");
    assert_eq!(methods, serde_json::json!({"github": true}));
    app.stop().await;
}
