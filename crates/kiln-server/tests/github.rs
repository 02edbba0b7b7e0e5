//! GitHub end to end against the fake GitHub of kiln-testkit and the real server: linking a
//! signed-in kiln user's account and signing in with it (the OAuth web flow, `state` bound to
//! the browser and used once), a session's pull request opened with the asking user's own
//! token (the fake records the Authorization header), the 422 "already exists" path, a user
//! without a linked account told so with the compare URL, the rate limit's message, and the
//! user token refreshed before it expires. The agent's `push` and `open_pr` tools end to end:
//! the branch pushed with the app's installation token, the PR created with the prompting
//! user's, neither ever in the sandbox, and a push GitHub refuses told as such. (Two users'
//! commits in one session keep their authors: push.rs.)

mod common;

use common::TestApp;
use kiln_core::Secret;
use kiln_engine::{EngineConfig, GitHubConfig};
use kiln_protocol::api::Event;
use kiln_testkit::webhooks::{self, sign_webhook};
use kiln_testkit::{
    FAKE_APP_ID, FAKE_CLIENT_ID, FAKE_CLIENT_SECRET, Failure, FakeGitHub, FakeModel, Script,
    TEST_APP_PRIVATE_KEY_PEM, Turn,
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

/// What the app's webhook deliveries are signed with.
const WEBHOOK_SECRET: &str = "It's a Secret to Everybody";

async fn start(fake: &FakeGitHub) -> TestApp {
    start_with(fake, None).await
}

/// The app with GitHub configured against `fake`, a model if given, and repo `hw` on the fake.
async fn start_with(fake: &FakeGitHub, model: Option<&FakeModel>) -> TestApp {
    let app = TestApp::with_config(EngineConfig {
        model: model.map(common::fake_model_config),
        auto_commit: model.is_some(),
        github: Some(GitHubConfig {
            api_url: fake.url(),
            app_id: Some(FAKE_APP_ID.into()),
            private_key_pem: Some(Secret::new(TEST_APP_PRIVATE_KEY_PEM.as_bytes().to_vec())),
            client_id: Some(FAKE_CLIENT_ID.into()),
            client_secret: Some(Secret::new(FAKE_CLIENT_SECRET.into())),
            webhook_secret: Some(Secret::new(WEBHOOK_SECRET.into())),
            triggers: Default::default(),
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
    // (Starting the session asked GitHub whether alice may read the repo: a refresh too.)
    let before = fake.requests().len();

    let (status, pr) = app
        .post(&alice, &format!("/api/sessions/{session}/pr"), json!({}))
        .await;
    assert_eq!(status, 200, "{pr}");
    let requests = fake.requests().split_off(before);
    let exchanges: Vec<_> = requests
        .iter()
        .filter(|r| r.path == "/login/oauth/access_token")
        .collect();
    assert_eq!(exchanges.len(), 1, "one refresh for the PR: {requests:?}");
    assert_eq!(exchanges[0].body["grant_type"], "refresh_token");
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

/// Delivers a webhook as GitHub does: JSON body, event and delivery headers, signed with
/// `secret` (none: unsigned). The response is checked against the API document.
async fn deliver(
    app: &TestApp,
    event: &str,
    delivery: &str,
    payload: &Value,
    secret: Option<&str>,
) -> (u16, Value) {
    let body = serde_json::to_vec(payload).unwrap();
    let mut request = reqwest::Client::new()
        .post(format!("{}/api/github/webhook", app.url))
        .header("content-type", "application/json")
        .header("user-agent", "GitHub-Hookshot/044aadd")
        .header("x-github-event", event)
        .header("x-github-delivery", delivery)
        .header("x-github-hook-id", "292430182");
    if let Some(secret) = secret {
        request = request.header("x-hub-signature-256", sign_webhook(secret, &body));
    }
    let response = request.body(body).send().await.unwrap();
    let status = response.status().as_u16();
    let value: Value = response.json().await.unwrap();
    if let Err(mismatch) = app.api.check("POST", "/api/github/webhook", status, &value) {
        panic!("the API document is wrong (or the server is): {mismatch}");
    }
    (status, value)
}

fn pr_changes(events: &[kiln_protocol::api::EventEnvelope]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match &e.event {
            Event::PullRequestChanged {
                number,
                action,
                merged,
                merged_at_ms,
                ..
            } => Some(format!(
                "#{number} {action} merged={merged} at={}",
                merged_at_ms.is_some()
            )),
            Event::PullRequestReviewed {
                number,
                verdict,
                reviewer,
                ..
            } => Some(format!("#{number} {verdict} by {reviewer}")),
            Event::PullRequestRevised {
                number, revision, ..
            } => Some(format!("#{number} revision {revision}")),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn webhooks_are_verified_deduplicated_and_recorded() {
    let fake = FakeGitHub::start().await;
    let app = start(&fake).await;
    let (_, alice) = app.user("alice").await;
    let session = session_on_hw(&app, &alice, "Make the answer 42").await;
    let id: kiln_core::SessionId = session.parse().unwrap();
    let head = format!("kiln/{session}");
    let opened = webhooks::pull_request_event("opened", "octo/hw", 5, &head, false);
    let secret = Some(WEBHOOK_SECRET);

    // No signature, a wrong one, a signature over another body: 401, nothing recorded.
    let (status, body) = deliver(&app, "pull_request", "d-1", &opened, None).await;
    assert_eq!(status, 401, "{body}");
    let (status, _) = deliver(&app, "pull_request", "d-1", &opened, Some("wrong")).await;
    assert_eq!(status, 401);
    let response = reqwest::Client::new()
        .post(format!("{}/api/github/webhook", app.url))
        .header("x-github-event", "pull_request")
        .header("x-github-delivery", "d-1")
        .header("x-hub-signature-256", sign_webhook(WEBHOOK_SECRET, b"{}"))
        .body(serde_json::to_vec(&opened).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 401);
    assert!(pr_changes(&app.events(&alice, &id).await).is_empty());

    // Unknown events are taken and ignored; a known event's malformed payload is a 400.
    let (status, body) = deliver(&app, "star", "d-2", &json!({"action": "created"}), secret).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("ignored")),
        "{body}"
    );
    let (status, body) = deliver(
        &app,
        "pull_request",
        "d-3",
        &json!({"action": "opened"}),
        secret,
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("pull_request"),
        "{body}"
    );

    // Opened, then the same delivery again: recorded once.
    let (status, body) = deliver(&app, "pull_request", "d-4", &opened, secret).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("handled")),
        "{body}"
    );
    let (status, body) = deliver(&app, "pull_request", "d-4", &opened, secret).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("duplicate")),
        "{body}"
    );

    // Reviews, and pushes after the first review are revisions.
    let sync = webhooks::pull_request_event("synchronize", "octo/hw", 5, &head, false);
    deliver(&app, "pull_request", "d-5", &sync, secret).await;
    let review = webhooks::review_event("octo/hw", 5, &head, "changes_requested", "bob-gh");
    deliver(&app, "pull_request_review", "d-6", &review, secret).await;
    deliver(&app, "pull_request", "d-7", &sync, secret).await;
    let approve = webhooks::review_event("octo/hw", 5, &head, "approved", "bob-gh");
    deliver(&app, "pull_request_review", "d-8", &approve, secret).await;
    deliver(&app, "pull_request", "d-9", &sync, secret).await;
    let merged = webhooks::pull_request_event("closed", "octo/hw", 5, &head, true);
    let (status, _) = deliver(&app, "pull_request", "d-10", &merged, secret).await;
    assert_eq!(status, 200);
    assert_eq!(
        pr_changes(&app.events(&alice, &id).await),
        [
            "#5 opened merged=false at=false",
            "#5 synchronized merged=false at=false",
            "#5 changes_requested by bob-gh",
            "#5 synchronized merged=false at=false",
            "#5 revision 1",
            "#5 approved by bob-gh",
            "#5 synchronized merged=false at=false",
            "#5 revision 2",
            "#5 merged merged=true at=true",
        ]
    );

    // Listings show the PR as GitHub last said.
    let (_, summary) = app.get(&alice, &format!("/api/sessions/{session}")).await;
    assert_eq!(summary["pull_request"]["state"], "merged", "{summary}");
    assert_eq!(summary["pull_request"]["number"], 5, "{summary}");

    // A merge that arrives before kiln recorded any PR of the session: recorded all the same.
    let other = session_on_hw(&app, &alice, "Another change").await;
    let other_id: kiln_core::SessionId = other.parse().unwrap();
    let merged =
        webhooks::pull_request_event("closed", "octo/hw", 6, &format!("kiln/{other}"), true);
    deliver(&app, "pull_request", "d-11", &merged, secret).await;
    assert_eq!(
        pr_changes(&app.events(&alice, &other_id).await),
        ["#6 merged merged=true at=true"]
    );

    // Branches that are not a kiln session's, and other repositories' PRs, are not kiln's.
    let foreign = webhooks::pull_request_event("opened", "octo/hw", 7, "feature/x", false);
    let (_, body) = deliver(&app, "pull_request", "d-12", &foreign, secret).await;
    assert_eq!(body["status"], "ignored", "{body}");
    let elsewhere = webhooks::pull_request_event("opened", "octo/other", 8, &head, false);
    let (_, body) = deliver(&app, "pull_request", "d-13", &elsewhere, secret).await;
    assert_eq!(body["status"], "ignored", "{body}");

    // A push to the default branch starts the image build at once; other branches do not.
    let (_, body) = deliver(
        &app,
        "push",
        "d-15",
        &webhooks::push_event("octo/hw", "feature/x", "abc"),
        secret,
    )
    .await;
    assert_eq!(body["status"], "ignored", "{body}");
    let (_, body) = deliver(
        &app,
        "push",
        "d-16",
        &webhooks::push_event("octo/hw", "main", "abc"),
        secret,
    )
    .await;
    assert_eq!(body["status"], "handled", "{body}");
    assert!(body["detail"].as_str().unwrap().contains("hw"), "{body}");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (_, images) = app.get(&app.admin_token, "/api/repos/hw/images").await;
        if !images.as_array().unwrap().is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no image build was recorded"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let added = webhooks::installation_repositories_event(&["octo/hw"]);
    let (_, body) = deliver(&app, "installation_repositories", "d-17", &added, secret).await;
    assert_eq!(body["status"], "handled", "{body}");

    // GitHub's form-encoded content type is read too.
    let payload = serde_json::to_string(&webhooks::pull_request_event(
        "reopened", "octo/hw", 5, &head, false,
    ))
    .unwrap();
    let form = format!("payload={}", percent_encode(&payload));
    let response = reqwest::Client::new()
        .post(format!("{}/api/github/webhook", app.url))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-github-event", "pull_request")
        .header("x-github-delivery", "d-14")
        .header(
            "x-hub-signature-256",
            sign_webhook(WEBHOOK_SECRET, form.as_bytes()),
        )
        .body(form)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert!(
        pr_changes(&app.events(&alice, &id).await)
            .last()
            .unwrap()
            .contains("reopened")
    );
}

fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            b' ' => "+".to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn bash(command: &str) -> Script {
    Script::Turn(Turn::tool("bash", json!({ "command": command })))
}

/// Waits until the fake has a comment that `matches`.
async fn comment_where(
    fake: &FakeGitHub,
    matches: impl Fn(&kiln_testkit::FakeComment) -> bool,
) -> kiln_testkit::FakeComment {
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        if let Some(c) = fake.comments().into_iter().find(|c| matches(c)) {
            return c;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no such comment: {:?}",
            fake.comments()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_asked_for_on_github_ends_in_a_pull_request_and_answers_reviews() {
    let fake = FakeGitHub::start().await;
    fake.add_user("alice-gh");
    fake.add_user("reader-gh");
    fake.add_repo(
        "octo/hw",
        7,
        &[("alice-gh", "write"), ("reader-gh", "read")],
    );
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("octo")).unwrap();
    let bare = kiln_testkit::bare_repo(&root.path().join("octo"), "hw", &[("README.md", "# hw\n")]);
    fake.serve_git(root.path());
    let model = FakeModel::start().await;
    let app = start_with(&fake, Some(&model)).await;
    let (_, alice) = app.user("alice").await;
    link(&app, &fake, &alice, "alice-gh").await;
    let secret = Some(WEBHOOK_SECRET);

    // Someone kiln does not know labels an issue: a polite reply, and nothing runs.
    let labeled = webhooks::issue_labeled_event(
        "octo/hw",
        3,
        "Crash on start",
        "It crashes.",
        "kiln",
        "stranger-gh",
    );
    let (status, body) = deliver(&app, "issues", "w-1", &labeled, secret).await;
    assert_eq!(status, 200, "{body}");
    let reply = comment_where(&fake, |c| c.number == 3).await;
    assert_eq!(
        reply.by, "app",
        "the app replies, with its installation token"
    );
    assert!(
        reply.body.contains("@stranger-gh") && reply.body.contains("Nothing was started"),
        "{}",
        reply.body
    );
    let (_, listed) = app.get(&app.admin_token, "/api/sessions?all=true").await;
    assert!(!listed.to_string().contains("Crash on start"), "{listed}");

    // Another label is not kiln's.
    let other = webhooks::issue_labeled_event(
        "octo/hw",
        3,
        "Crash on start",
        "It crashes.",
        "bug",
        "alice-gh",
    );
    let (_, body) = deliver(&app, "issues", "w-2", &other, secret).await;
    assert_eq!(body["status"], "ignored", "{body}");

    // Alice labels it: a session in her name with the issue as the prompt; when it ends, its
    // branch is pushed with the app's installation token and the PR opened with her token.
    model.push(bash(
        "printf 'fixed\\n' > FIX.md && git add FIX.md && git commit -qm 'Fix the crash'",
    ));
    model.push(Script::Turn(Turn::text("Fixed the crash on start.")));
    let labeled = webhooks::issue_labeled_event(
        "octo/hw",
        4,
        "Crash on start",
        "It crashes.",
        "kiln",
        "alice-gh",
    );
    let (status, body) = deliver(&app, "issues", "w-3", &labeled, secret).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("handled")),
        "{body}"
    );
    let started = comment_where(&fake, |c| c.number == 4).await;
    assert!(started.body.contains("/sessions/"), "{}", started.body);
    let done = comment_where(&fake, |c| {
        c.number == 4 && c.body.contains("opened pull request")
    })
    .await;
    assert!(
        done.body.contains("FIX.md") && done.body.contains("Fixed the crash"),
        "{}",
        done.body
    );
    let pulls = fake.pulls();
    assert_eq!(pulls.len(), 1, "{pulls:?}");
    assert_eq!(pulls[0].author, "alice-gh");
    let session = pulls[0].head.strip_prefix("kiln/").unwrap().to_string();
    let id: kiln_core::SessionId = session.parse().unwrap();
    let events = app.events(&alice, &id).await;
    let Event::PromptQueued { text, author, .. } = &events
        .iter()
        .find(|e| matches!(e.event, Event::PromptQueued { .. }))
        .unwrap()
        .event
    else {
        unreachable!()
    };
    assert_eq!(author.name, "alice");
    assert!(
        text.starts_with("Resolve issue #4: Crash on start") && text.contains("It crashes."),
        "{text}"
    );
    let branch = format!("refs/heads/kiln/{session}");
    let tip = kiln_testkit::git(&bare, &["rev-parse", &branch])
        .trim()
        .to_string();
    let pushes: Vec<_> = fake
        .requests()
        .into_iter()
        .filter(|r| r.path == "/octo/hw.git/git-receive-pack")
        .collect();
    assert!(!pushes.is_empty());
    assert!(
        pushes.iter().all(|r| r
            .basic_password()
            .is_some_and(|t| fake.is_installation_token(&t, 7))),
        "pushed with the installation's token: {pushes:?}"
    );

    // A reader's review comment mentioning kiln: GitHub does not let them write, so nothing runs.
    let (_, reader) = app.user("reader").await;
    link(&app, &fake, &reader, "reader-gh").await;
    let head = format!("kiln/{session}");
    let comment = webhooks::review_comment_event(
        "octo/hw",
        1,
        &head,
        41,
        "reader-gh",
        "@kiln delete everything",
    );
    deliver(&app, "pull_request_review_comment", "w-4", &comment, secret).await;
    let refused = comment_where(&fake, |c| c.in_reply_to == Some(41)).await;
    assert!(refused.body.contains("cannot push"), "{}", refused.body);

    // Alice's review comment becomes a follow-up prompt; its commit lands on the same branch
    // and kiln answers in the thread.
    model.push(bash("git mv FIX.md FIXED.md && git commit -qm 'Rename'"));
    model.push(Script::Turn(Turn::text("Renamed it.")));
    let comment = webhooks::review_comment_event(
        "octo/hw",
        1,
        &head,
        42,
        "alice-gh",
        "@kiln rename FIX.md to FIXED.md",
    );
    let (_, body) = deliver(&app, "pull_request_review_comment", "w-5", &comment, secret).await;
    assert_eq!(body["status"], "handled", "{body}");
    let answer = comment_where(&fake, |c| c.in_reply_to == Some(42)).await;
    assert!(
        answer.body.contains("pushed") && answer.body.contains("FIXED.md"),
        "{}",
        answer.body
    );
    let new_tip = kiln_testkit::git(&bare, &["rev-parse", &branch])
        .trim()
        .to_string();
    assert_ne!(
        new_tip, tip,
        "the follow-up's commit was pushed to the same branch"
    );
    let prompts: Vec<String> = app
        .events(&alice, &id)
        .await
        .iter()
        .filter_map(|e| match &e.event {
            Event::PromptQueued { text, .. } => Some(text.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(prompts.len(), 2, "{prompts:?}");
    assert!(
        prompts[1].starts_with("rename FIX.md to FIXED.md") && prompts[1].contains("README.md:3"),
        "{prompts:?}"
    );
}

#[tokio::test]
async fn access_follows_github_for_linked_users() {
    let fake = FakeGitHub::start().await;
    fake.add_user("alice-gh");
    fake.add_user("carol-gh");
    fake.add_repo("octo/hw", 7, &[("alice-gh", "write")]);
    let app = start(&fake).await;
    let (_, alice) = app.user("alice").await;
    let (_, carol) = app.user("carol").await;
    link(&app, &fake, &alice, "alice-gh").await;
    let listed = |v: &Value| v.as_array().unwrap().iter().any(|r| r["name"] == "hw");

    // Before carol links GitHub, kiln's own rules decide: she sees hw and starts a session.
    let (_, repos) = app.get(&carol, "/api/repos").await;
    assert!(listed(&repos), "{repos}");
    let carols = session_on_hw(&app, &carol, "Before linking").await;

    // Linked, GitHub hides octo/hw from her: the repo, its sessions (even her own) and new
    // sessions on it are gone for her, with the same 404 as for things that do not exist.
    link(&app, &fake, &carol, "carol-gh").await;
    let (_, repos) = app.get(&carol, "/api/repos").await;
    assert!(!listed(&repos), "{repos}");
    let (status, _) = app.get(&carol, "/api/repos/hw").await;
    assert_eq!(status, 404);
    let (status, body) = app
        .post(
            &carol,
            "/api/sessions",
            json!({"repo": "hw", "prompt": "x"}),
        )
        .await;
    assert_eq!(status, 404, "{body}");
    let (status, _) = app.get(&carol, &format!("/api/sessions/{carols}")).await;
    assert_eq!(status, 404);
    let (_, sessions) = app.get(&carol, "/api/sessions").await;
    assert!(!sessions.to_string().contains(&carols), "{sessions}");

    // Alice, who may write there, sees it all; the answer is asked once and cached.
    let asked = || {
        fake.requests()
            .iter()
            .filter(|r| r.path == "/repos/octo/hw" && r.method == "GET")
            .count()
    };
    let before = asked();
    let (_, repos) = app.get(&alice, "/api/repos").await;
    assert!(listed(&repos), "{repos}");
    let alices = session_on_hw(&app, &alice, "Mine").await;
    let (status, _) = app.get(&alice, &format!("/api/sessions/{alices}")).await;
    assert_eq!(status, 200);
    assert_eq!(asked() - before, 1, "one permission check, then the cache");
}

/// The output the model was given by each tool call, in order.
fn tool_outputs(events: &[kiln_protocol::api::EventEnvelope]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match &e.event {
            Event::ToolCallFinished { output, .. } => Some(output.clone()),
            _ => None,
        })
        .collect()
}

/// The passwords of the git requests to `/octo/hw.git/…` that pushed (receive-pack).
fn push_passwords(fake: &FakeGitHub) -> Vec<Option<String>> {
    fake.requests()
        .into_iter()
        .filter(|r| r.path == "/octo/hw.git/git-receive-pack")
        .map(|r| r.basic_password())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_pushes_with_the_apps_token_and_opens_the_pr_with_the_users() {
    let fake = FakeGitHub::start().await;
    fake.add_user("alice-gh");
    fake.add_repo("octo/hw", 7, &[("alice-gh", "write")]);
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("octo")).unwrap();
    let bare = kiln_testkit::bare_repo(&root.path().join("octo"), "hw", &[("README.md", "# hw\n")]);
    fake.serve_git(root.path());
    let model = FakeModel::start().await;
    let app = start_with(&fake, Some(&model)).await;
    let (_, alice) = app.user("alice").await;
    link(&app, &fake, &alice, "alice-gh").await;

    // One prompt: a commit, then the agent's `push` and `open_pr` tools.
    model.push(bash(
        "printf 'answer = 42\\n' > ANSWER && git add ANSWER && git commit -qm 'Answer'",
    ));
    model.push(Script::Turn(Turn::tool("push", json!({}))));
    model.push(Script::Turn(Turn::tool("open_pr", json!({"draft": true}))));
    model.push(Script::Turn(Turn::text("Opened the pull request.")));
    let session = session_on_hw(&app, &alice, "Make the answer 42").await;
    let id: kiln_core::SessionId = session.parse().unwrap();
    let events = app
        .wait_until(&alice, &id, |e| {
            common::finished(e, kiln_protocol::api::PromptOutcome::Completed) == 1
        })
        .await;
    let outputs = tool_outputs(&events);
    assert_eq!(outputs.len(), 3, "{outputs:?}");
    let branch = format!("kiln/{session}");
    assert!(
        outputs[1].contains(&format!("Pushed {branch}")),
        "{outputs:?}"
    );
    assert!(outputs[2].contains("opened pull request #1"), "{outputs:?}");

    // The branch on the remote: alice's commit, pushed with the app's installation token only
    // (the repo was added without any credential of its own).
    let tip = kiln_testkit::git(&bare, &["rev-parse", &format!("refs/heads/{branch}")])
        .trim()
        .to_string();
    let author = kiln_testkit::git(&bare, &["log", "-1", "--format=%an|%cn", &tip]);
    assert_eq!(author.trim(), "alice|kiln");
    let pushes = push_passwords(&fake);
    assert!(!pushes.is_empty(), "{:?}", fake.requests());
    assert!(
        pushes
            .iter()
            .all(|p| p.as_ref().is_some_and(|t| fake.is_installation_token(t, 7))),
        "pushed with the installation's token: {pushes:?}"
    );

    // The PR: created with alice's own token, as a draft of the session's branch.
    let pulls = fake.pulls();
    assert_eq!(pulls.len(), 1, "{pulls:?}");
    assert_eq!(
        (
            pulls[0].author.as_str(),
            pulls[0].head.as_str(),
            pulls[0].draft
        ),
        ("alice-gh", branch.as_str(), true)
    );
    let requests = fake.requests();
    let create = requests
        .iter()
        .find(|r| r.method == "POST" && r.path == "/repos/octo/hw/pulls")
        .expect("the create request");
    let user_token = create.token().expect("a token").to_string();
    assert_eq!(fake.login_of(&user_token).as_deref(), Some("alice-gh"));

    // None of the tokens kiln used (the installation's, alice's) is anywhere in the sandbox:
    // its processes' environments and command lines, its files (the control pattern finds the
    // README, so the search works). The script names each token in two halves, so its own
    // command line does not hold it.
    let mut tokens: Vec<String> = requests
        .iter()
        .filter_map(|r| r.basic_password().or_else(|| r.token().map(str::to_string)))
        .filter(|t| t.starts_with("gh"))
        .collect();
    tokens.sort();
    tokens.dedup();
    assert!(tokens.contains(&user_token), "{tokens:?}");
    assert!(
        tokens.len() >= 2,
        "the installation's and alice's: {tokens:?}"
    );
    let patterns: String = tokens
        .iter()
        .map(|t| {
            let (head, tail) = t.split_at(4);
            format!("-e \"$(printf %s%s {head} {tail})\" ")
        })
        .collect();
    let search = format!(
        "cat /proc/[0-9]*/environ /proc/[0-9]*/cmdline 2>/dev/null | tr '\\0' '\\n'; echo '--- files'; \
         grep -rIl {patterns} -e '# hw' $HOME /workspace /tmp /kiln /etc 2>/dev/null; \
         echo '--- env'; env"
    );
    let found = app.sandbox_sh(&id, &search).await;
    let (procs, rest) = found.split_once("--- files\n").expect("the script ran");
    let (files, env) = rest.split_once("--- env\n").expect("the script ran");
    assert!(procs.contains("PATH="), "the processes were read: {procs}");
    for token in &tokens {
        for (what, text) in [("processes", procs), ("env", env)] {
            assert!(!text.contains(token.as_str()), "{what}: {text}");
        }
    }
    assert_eq!(
        files.lines().collect::<Vec<_>>(),
        ["/workspace/README.md"],
        "only the README matches"
    );

    // GitHub refuses the next push's credential: the caller is told the remote refused it,
    // with its status, and no credential; the branch stays where it was.
    model.push(bash("echo more >> ANSWER && git commit -qam 'More'"));
    model.push(Script::Turn(Turn::text("done")));
    app.send(&alice, &id, "more").await;
    app.wait_until(&alice, &id, |e| {
        common::finished(e, kiln_protocol::api::PromptOutcome::Completed) == 2
    })
    .await;
    fake.fail_next_on("/octo/hw.git/git-receive-pack", Failure::Unauthorized);
    let (status, body) = app
        .post(&alice, &format!("/api/sessions/{session}/push"), json!({}))
        .await;
    assert_eq!(status, 409, "{body}");
    let message = body["error"].as_str().unwrap();
    assert!(
        message.contains("refused the push") && message.contains("401"),
        "{message}"
    );
    let pushes = push_passwords(&fake);
    for token in tokens.iter().chain(pushes.iter().flatten()) {
        assert!(!message.contains(token.as_str()), "{message}");
    }
    let after = kiln_testkit::git(&bare, &["rev-parse", &format!("refs/heads/{branch}")]);
    assert_eq!(after.trim(), tip, "the refused push changed nothing");
    app.stop().await;
}
