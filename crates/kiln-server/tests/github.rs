//! GitHub end to end against the fake GitHub of kiln-testkit and the real server: linking a
//! signed-in kiln user's account and signing in with it (the OAuth web flow, `state` bound to
//! the browser and used once), a session's pull request opened with the asking user's own
//! token (the fake records the Authorization header), the 422 "already exists" path, a user
//! without a linked account told so with the compare URL, the rate limit's message, and the
//! user token refreshed before it expires.

mod common;

use common::TestApp;
use kiln_core::Secret;
use kiln_engine::{EngineConfig, GitHubConfig};
use kiln_protocol::api::Event;
use kiln_testkit::{
    FAKE_APP_ID, FAKE_CLIENT_ID, FAKE_CLIENT_SECRET, Failure, FakeGitHub, TEST_APP_PRIVATE_KEY_PEM,
};
use reqwest::header;
use serde_json::{Value, json};
use std::time::Duration;

fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

async fn start(fake: &FakeGitHub) -> TestApp {
    let app = TestApp::with_config(EngineConfig {
        github: Some(GitHubConfig {
            api_url: fake.url(),
            app_id: Some(FAKE_APP_ID.into()),
            private_key_pem: Some(Secret::new(TEST_APP_PRIVATE_KEY_PEM.as_bytes().to_vec())),
            client_id: Some(FAKE_CLIENT_ID.into()),
            client_secret: Some(Secret::new(FAKE_CLIENT_SECRET.into())),
            webhook_secret: None,
        }),
        ..EngineConfig::default()
    })
    .await;
    let (status, body) = app
        .post(
            &app.admin_token,
            "/api/repos",
            json!({"name": "hw", "url": format!("{}/octo/hw.git", fake.url()), "check": false}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    app
}

/// The `name=value` of a Set-Cookie header named `name`, if the response set it.
fn set_cookie(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap().to_string())
        .find(|c| c.starts_with(&format!("{name}=")))
}

/// A kiln browser session cookie for a token's user, through a sign-in link.
async fn kiln_cookie(app: &TestApp, token: &str) -> String {
    let (status, link) = app.post(token, "/api/login-links", json!({})).await;
    assert_eq!(status, 201, "{link}");
    let response = browser()
        .get(link["url"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    set_cookie(&response, "kiln_session").expect("a session cookie")
}

/// Goes from kiln to the fake GitHub (which approves as whoever `approve_as` says) and back:
/// returns the callback URL and the state cookie `start` set.
async fn to_github_and_back(app: &TestApp, cookie: Option<&str>) -> (String, String) {
    let mut request = browser().get(format!("{}/api/auth/github/start", app.url));
    if let Some(cookie) = cookie {
        request = request.header(header::COOKIE, cookie);
    }
    let response = request.send().await.unwrap();
    assert_eq!(
        response.status().as_u16(),
        303,
        "{:?}",
        response.text().await
    );
    let state_cookie = set_cookie(&response, "kiln_github_state").expect("a state cookie");
    let authorize = response.headers()[header::LOCATION]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        authorize.contains("/login/oauth/authorize?client_id="),
        "{authorize}"
    );
    let back = browser().get(&authorize).send().await.unwrap();
    assert_eq!(back.status().as_u16(), 302);
    let callback = back.headers()[header::LOCATION]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        callback.starts_with(&format!("{}/api/auth/github/callback?code=", app.url)),
        "{callback}"
    );
    (callback, state_cookie)
}

async fn open_callback(callback: &str, cookies: &[&str]) -> reqwest::Response {
    browser()
        .get(callback)
        .header(header::COOKIE, cookies.join("; "))
        .header(header::ACCEPT, "application/json")
        .send()
        .await
        .unwrap()
}

/// Links the kiln user of `token` to GitHub login `login` through the whole flow.
async fn link(app: &TestApp, fake: &FakeGitHub, token: &str, login: &str) {
    let cookie = kiln_cookie(app, token).await;
    fake.approve_as(login);
    let (callback, state) = to_github_and_back(app, Some(&cookie)).await;
    let response = open_callback(&callback, &[&cookie, &state]).await;
    assert_eq!(
        response.status().as_u16(),
        303,
        "{:?}",
        response.text().await
    );
    let (status, me) = app.get(token, "/api/me").await;
    assert_eq!(status, 200);
    assert_eq!(me["github"]["login"], login, "{me}");
}

async fn session_on_hw(app: &TestApp, token: &str, prompt: &str) -> String {
    let (status, body) = app
        .post(
            token,
            "/api/sessions",
            json!({"repo": "hw", "prompt": prompt}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    body["session"]["id"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn linking_and_signing_in_with_github() {
    let fake = FakeGitHub::start().await;
    fake.add_user("alice-gh");
    fake.add_user("mallory-gh");
    let app = start(&fake).await;
    let (_, alice) = app.user("alice").await;
    let (_, bob) = app.user("bob").await;

    link(&app, &fake, &alice, "alice-gh").await;

    // Signing in with the linked account gives a kiln browser session for alice.
    let (callback, state) = to_github_and_back(&app, None).await;
    let response = open_callback(&callback, &[&state]).await;
    assert_eq!(response.status().as_u16(), 303);
    let session = set_cookie(&response, "kiln_session").expect("a kiln session");
    let me: Value = browser()
        .get(format!("{}/api/me", app.url))
        .header(header::COOKIE, &session)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["user"]["name"], "alice", "{me}");

    // The state must be this browser's (a sign-in started elsewhere is refused) and works once.
    let (callback, state) = to_github_and_back(&app, None).await;
    let (_, other_state) = to_github_and_back(&app, None).await;
    let refused = open_callback(&callback, &[&other_state]).await;
    assert_eq!(refused.status().as_u16(), 400);
    assert!(set_cookie(&refused, "kiln_session").is_none());
    let text = refused.text().await.unwrap();
    assert!(text.contains("not started in this browser"), "{text}");
    assert_eq!(
        open_callback(&callback, &[&state]).await.status().as_u16(),
        303
    );
    let again = open_callback(&callback, &[&state]).await;
    assert_eq!(again.status().as_u16(), 400);
    let text = again.text().await.unwrap();
    assert!(text.contains("already used"), "{text}");

    // A GitHub account no kiln user linked does not sign in.
    fake.approve_as("mallory-gh");
    let (callback, state) = to_github_and_back(&app, None).await;
    let refused = open_callback(&callback, &[&state]).await;
    assert_eq!(refused.status().as_u16(), 400);
    assert!(set_cookie(&refused, "kiln_session").is_none());
    let text = refused.text().await.unwrap();
    assert!(text.contains("not linked to a kiln user"), "{text}");

    // One GitHub login, one kiln user.
    let bob_cookie = kiln_cookie(&app, &bob).await;
    fake.approve_as("alice-gh");
    let (callback, state) = to_github_and_back(&app, Some(&bob_cookie)).await;
    let refused = open_callback(&callback, &[&bob_cookie, &state]).await;
    assert_eq!(refused.status().as_u16(), 400);
    let text = refused.text().await.unwrap();
    assert!(text.contains("linked to another kiln user"), "{text}");

    let (status, _) = app
        .request(reqwest::Method::DELETE, &alice, "/api/me/github", None)
        .await;
    assert_eq!(status, 204);
    let (_, me) = app.get(&alice, "/api/me").await;
    assert!(me.get("github").is_none(), "{me}");
    let (status, _) = app
        .request(reqwest::Method::DELETE, &alice, "/api/me/github", None)
        .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn a_pull_request_is_opened_in_the_asking_users_name() {
    let fake = FakeGitHub::start().await;
    fake.add_user("alice-gh");
    fake.add_repo("octo/hw", 7, &[("alice-gh", "write")]);
    let app = start(&fake).await;
    let (_, alice) = app.user("alice").await;
    let (_, bob) = app.user("bob").await;
    link(&app, &fake, &alice, "alice-gh").await;

    let session = session_on_hw(&app, &alice, "Make the answer 42").await;
    let path = format!("/api/sessions/{session}/pr");
    let (status, pr) = app.post(&alice, &path, json!({"draft": true})).await;
    assert_eq!(status, 200, "{pr}");
    assert_eq!(pr["number"], 1);
    assert_eq!(pr["created"], true);
    assert_eq!(pr["draft"], true);
    assert_eq!(pr["head"], format!("kiln/{session}"));
    assert_eq!(pr["base"], "main");

    let pulls = fake.pulls();
    assert_eq!(pulls.len(), 1);
    assert_eq!(pulls[0].author, "alice-gh", "opened with alice's own token");
    assert!(
        pulls[0].body.contains("Make the answer 42"),
        "{}",
        pulls[0].body
    );
    assert!(pulls[0].body.contains("**@alice**"), "{}", pulls[0].body);
    assert!(
        pulls[0].body.contains(&format!("/sessions/{session}")),
        "{}",
        pulls[0].body
    );
    let create = fake
        .requests()
        .into_iter()
        .find(|r| r.method == "POST" && r.path == "/repos/octo/hw/pulls")
        .expect("the create request");
    let token = create.token().expect("a token").to_string();
    assert_eq!(fake.login_of(&token).as_deref(), Some("alice-gh"));
    assert!(
        !token.starts_with("ghs_"),
        "never the app's installation token"
    );

    // Asked again: GitHub says it exists, and the open one is updated.
    let (status, pr) = app
        .post(&alice, &path, json!({"title": "The answer is 42"}))
        .await;
    assert_eq!(status, 200, "{pr}");
    assert_eq!(pr["created"], false);
    assert_eq!(pr["number"], 1);
    assert_eq!(fake.pulls()[0].title, "The answer is 42");

    let events = app.events(&alice, &session.parse().unwrap()).await;
    let recorded: Vec<_> = events
        .iter()
        .filter_map(|e| match &e.event {
            Event::PullRequest {
                number,
                created,
                by,
                ..
            } => Some((*number, *created, by.name.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(
        recorded,
        [
            (1, true, "alice".to_string()),
            (1, false, "alice".to_string())
        ]
    );

    // The rate limit says when to retry.
    fake.fail_next_on(
        "/repos/octo/hw/pulls",
        Failure::RateLimited { reset_in_secs: 300 },
    );
    let (status, body) = app.post(&alice, &path, json!({})).await;
    assert_eq!(status, 429, "{body}");
    let message = body["error"].as_str().unwrap();
    assert!(
        message.contains("rate limit") && message.contains("retry in"),
        "{message}"
    );
    assert!(!message.contains(&token), "{message}");

    // Bob has no GitHub account: a clear message and the compare page.
    let bobs = session_on_hw(&app, &bob, "Another change").await;
    let (status, body) = app
        .post(&bob, &format!("/api/sessions/{bobs}/pr"), json!({}))
        .await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("no linked GitHub account"),
        "{body}"
    );
    assert_eq!(
        body["compare_url"],
        format!("{}/octo/hw/compare/main...kiln/{bobs}?expand=1", fake.url())
    );

    // Strangers cannot even see the session.
    let (status, _) = app.post(&bob, &path, json!({})).await;
    assert_eq!(status, 404);
    let (status, body) = app.post(&alice, &path, json!({"title": ""})).await;
    assert_eq!(status, 400, "{body}");
}

#[tokio::test]
async fn the_user_token_is_refreshed_before_it_expires() {
    let fake = FakeGitHub::start().await;
    fake.add_user("alice-gh");
    fake.add_repo("octo/hw", 7, &[("alice-gh", "write")]);
    // Within kiln's refresh margin from the start: every use refreshes first.
    fake.set_user_token_ttl(Duration::from_secs(120));
    let app = start(&fake).await;
    let (_, alice) = app.user("alice").await;
    link(&app, &fake, &alice, "alice-gh").await;
    let session = session_on_hw(&app, &alice, "Refresh me").await;

    let (status, pr) = app
        .post(&alice, &format!("/api/sessions/{session}/pr"), json!({}))
        .await;
    assert_eq!(status, 200, "{pr}");
    let requests = fake.requests();
    let exchanges: Vec<_> = requests
        .iter()
        .filter(|r| r.path == "/login/oauth/access_token")
        .collect();
    assert_eq!(exchanges.len(), 2, "the code, then a refresh: {requests:?}");
    assert_eq!(exchanges[1].body["grant_type"], "refresh_token");
    let position =
        |f: &dyn Fn(&kiln_testkit::GitHubRequest) -> bool| requests.iter().position(f).unwrap();
    let refreshed = position(&|r| r.body["grant_type"] == "refresh_token");
    let created = position(&|r| r.method == "POST" && r.path == "/repos/octo/hw/pulls");
    assert!(refreshed < created, "refreshed before use");
    let token = requests[created].token().unwrap();
    assert_eq!(fake.login_of(token).as_deref(), Some("alice-gh"));
    assert_eq!(fake.pulls()[0].author, "alice-gh");
}

#[tokio::test]
async fn fetches_use_the_apps_installation_token_cached() {
    let fake = FakeGitHub::start().await;
    fake.add_repo("octo/hw", 7, &[]);
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("octo")).unwrap();
    kiln_testkit::bare_repo(&root.path().join("octo"), "hw", &[("README.md", "# hw\n")]);
    fake.serve_git(root.path());
    let app = start(&fake).await;
    let (_, alice) = app.user("alice").await;

    // `owner/name` is the repository on GitHub; the check reads it with the app's token.
    let (status, repo) = app
        .post(
            &app.admin_token,
            "/api/repos",
            json!({"name": "short", "url": "octo/hw"}),
        )
        .await;
    assert_eq!(status, 201, "{repo} {:?}", fake.requests());
    assert_eq!(repo["url"], format!("{}/octo/hw.git", fake.url()));

    // A session's mirror fetch reuses the cached token.
    let (status, body) = app
        .post(
            &alice,
            "/api/sessions",
            json!({"repo": "short", "prompt": "hi"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let mirror = app.data_dir().join("repos").join("short.git").join("HEAD");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !mirror.is_file() {
        assert!(std::time::Instant::now() < deadline, "no mirror was made");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let requests = fake.requests();
    let minted: Vec<_> = requests
        .iter()
        .filter(|r| r.path == "/app/installations/7/access_tokens")
        .collect();
    assert_eq!(
        minted.len(),
        1,
        "one token for the check and the fetch: {requests:?}"
    );
    let git: Vec<_> = requests
        .iter()
        .filter(|r| r.path.starts_with("/octo/hw.git/"))
        .collect();
    let with_token: Vec<_> = git.iter().filter_map(|r| r.basic_password()).collect();
    assert!(with_token.len() >= 2, "the check and the fetch: {git:?}");
    assert!(
        with_token.iter().all(|t| fake.is_installation_token(t, 7)),
        "{with_token:?}"
    );
    // The token is never stored with the repo.
    let (_, listed) = app.get(&app.admin_token, "/api/repos/short").await;
    assert!(!listed.to_string().contains("ghs_"), "{listed}");
}
