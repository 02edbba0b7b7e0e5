//! Slack end to end against the fake Slack Web API of kiln-testkit, the fake model and the real
//! server: signed requests (good, wrong, stale and missing signatures), the URL verification,
//! a retried event handled once, an unlinked Slack user told once how to link with nothing
//! run, and a mention that starts a session whose thread gets a progress message updated in
//! place and a final reply — then a reply in the thread from a second linked person, sent as
//! a follow-up authored by them.

mod common;

use common::TestApp;
use kiln_engine::EngineConfig;
use kiln_protocol::api::Event;
use kiln_slack::SlackConfig;
use kiln_testkit::slack_events::{self, sign_slack};
use kiln_testkit::{FAKE_SLACK_BOT_TOKEN, FAKE_SLACK_BOT_USER, FakeModel, FakeSlack, Turn};
use serde_json::{Value, json};
use std::time::Duration;

const SIGNING_SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";

async fn start(slack: &FakeSlack, model: &FakeModel) -> TestApp {
    slack.add_channel("C0DEV", "dev", "bugs and builds", false);
    slack.add_channel("D0ALICE", "", "", true);
    TestApp::with_slack(
        EngineConfig {
            model: Some(common::fake_model_config(model)),
            ..EngineConfig::default()
        },
        SlackConfig {
            bot_token: kiln_core::Secret::new(FAKE_SLACK_BOT_TOKEN.into()),
            signing_secret: kiln_core::Secret::new(SIGNING_SECRET.into()),
            app_token: None,
            api_url: slack.api_url(),
            channels: Default::default(),
        },
    )
    .await
}

fn now() -> i64 {
    kiln_core::now_ms() / 1000
}

/// Posts `payload` to the events route as Slack would: signed with `secret` at `at` (no
/// signature headers without a secret), with `X-Slack-Retry-Num` if a retry.
async fn send(
    app: &TestApp,
    payload: &Value,
    secret: Option<&str>,
    at: i64,
    retry: Option<u32>,
) -> (u16, Value) {
    let body = serde_json::to_vec(payload).unwrap();
    let mut request = reqwest::Client::new()
        .post(format!("{}/api/slack/events", app.url))
        .header("content-type", "application/json")
        .header("user-agent", "Slackbot 1.0 (+https://api.slack.com/robots)");
    if let Some(secret) = secret {
        request = request
            .header("x-slack-request-timestamp", at.to_string())
            .header("x-slack-signature", sign_slack(secret, at, &body));
    }
    if let Some(n) = retry {
        request = request
            .header("x-slack-retry-num", n.to_string())
            .header("x-slack-retry-reason", "http_timeout");
    }
    let response = request.body(body).send().await.unwrap();
    let status = response.status().as_u16();
    let value: Value = response.json().await.unwrap();
    if let Err(mismatch) = app.api.check("POST", "/api/slack/events", status, &value) {
        panic!("the API document is wrong (or the server is): {mismatch}");
    }
    (status, value)
}

async fn link(app: &TestApp, token: &str, slack_user: &str) {
    let (status, body) = app
        .request(
            reqwest::Method::PUT,
            token,
            "/api/me/slack",
            Some(json!({"slack_user": slack_user})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

async fn session_count(app: &TestApp) -> usize {
    let (status, list) = app.get(&app.admin_token, "/api/sessions?all=true").await;
    assert_eq!(status, 200, "{list}");
    list.as_array().map_or(0, Vec::len)
}

#[tokio::test]
async fn signatures_are_checked_and_the_url_verified() {
    let (slack, model) = (FakeSlack::start().await, FakeModel::start().await);
    let app = start(&slack, &model).await;
    let challenge =
        slack_events::url_verification("3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P");
    let (status, body) = send(&app, &challenge, Some(SIGNING_SECRET), now(), None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["challenge"],
        "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"
    );

    let (status, body) = send(&app, &challenge, Some("not the secret"), now(), None).await;
    assert_eq!(status, 401, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("signing_secret"),
        "{body}"
    );
    let (status, body) = send(&app, &challenge, Some(SIGNING_SECRET), now() - 600, None).await;
    assert_eq!(status, 401, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("five minutes"),
        "{body}"
    );
    let (status, body) = send(&app, &challenge, None, now(), None).await;
    assert_eq!(status, 401, "{body}");
    assert!(body.get("challenge").is_none());

    // A signed body that is not Slack's.
    let (status, body) = send(
        &app,
        &json!({"hello": 1}),
        Some(SIGNING_SECRET),
        now(),
        None,
    )
    .await;
    assert_eq!(status, 400, "{body}");
    // A refused mention does nothing: no call to Slack, no session.
    let ts = slack.add_message("C0DEV", None, "U0ALICE", "<@UKILNBOT> fix it");
    let mention = slack_events::event_callback(
        "Ev0BAD",
        slack_events::app_mention("U0ALICE", "C0DEV", "<@UKILNBOT> fix it", &ts, None),
    );
    let (status, _) = send(&app, &mention, Some("wrong"), now(), None).await;
    assert_eq!(status, 401);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(slack.calls().is_empty(), "{:?}", slack.calls());
    assert_eq!(session_count(&app).await, 0);
    app.stop().await;
}

#[tokio::test]
async fn an_unlinked_user_is_told_once_and_nothing_runs() {
    let (slack, model) = (FakeSlack::start().await, FakeModel::start().await);
    let app = start(&slack, &model).await;
    let ts = slack.add_message("C0DEV", None, "U0STRANGER", "<@UKILNBOT> fix the build");
    let mention = |id: &str, ts: &str| {
        slack_events::event_callback(
            id,
            slack_events::app_mention("U0STRANGER", "C0DEV", "<@UKILNBOT> fix the build", ts, None),
        )
    };
    let (status, body) = send(
        &app,
        &mention("Ev01", &ts),
        Some(SIGNING_SECRET),
        now(),
        None,
    )
    .await;
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("accepted")),
        "{body}"
    );
    let thread = slack
        .wait_for_thread("C0DEV", &ts, Duration::from_secs(10), |t| t.len() == 2)
        .await;
    assert_eq!(thread[1].user, FAKE_SLACK_BOT_USER);
    assert!(
        thread[1].text.contains("<@U0STRANGER>") && thread[1].text.contains("/api/me/slack"),
        "{}",
        thread[1].text
    );
    assert!(
        thread[1].text.contains("Nothing was started"),
        "{}",
        thread[1].text
    );

    // Asked again (a new message): not told twice.
    let again = slack.add_message("C0DEV", None, "U0STRANGER", "<@UKILNBOT> please");
    let (status, _) = send(
        &app,
        &mention("Ev02", &again),
        Some(SIGNING_SECRET),
        now(),
        None,
    )
    .await;
    assert_eq!(status, 200);
    // A bot's message is never answered.
    let beep = slack_events::event_callback(
        "Ev03",
        slack_events::bot_message("C0DEV", "channel", "<@UKILNBOT> beep", "1700000099.000001"),
    );
    let (status, _) = send(&app, &beep, Some(SIGNING_SECRET), now(), None).await;
    assert_eq!(status, 200);
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        slack.calls_of("chat.postMessage").len(),
        1,
        "{:?}",
        slack.calls()
    );
    assert_eq!(slack.thread("C0DEV", &again).len(), 1);
    assert_eq!(session_count(&app).await, 0);
    assert!(model.requests().is_empty());
    app.stop().await;
}

#[tokio::test]
async fn a_mention_starts_a_session_and_the_thread_follows_it() {
    let (slack, model) = (FakeSlack::start().await, FakeModel::start().await);
    let app = start(&slack, &model).await;
    let (alice_id, alice) = app.user("alice").await;
    let (bob_id, bob) = app.user("bob").await;
    link(&app, &alice, "U0ALICE").await;
    link(&app, &bob, "U0BOB").await;
    // One Slack user is one kiln user.
    let (status, body) = app
        .request(
            reqwest::Method::PUT,
            &bob,
            "/api/me/slack",
            Some(json!({"slack_user": "U0ALICE"})),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    let (status, body) = app
        .request(
            reqwest::Method::PUT,
            &bob,
            "/api/me/slack",
            Some(json!({"slack_user": "alice"})),
        )
        .await;
    assert_eq!(status, 400, "{body}");

    // Slow enough that the progress message is updated while it works.
    model.push(Turn::text("Fixed the answer now.").with_chunk_delay(Duration::from_millis(1200)));
    let ts = slack.add_message(
        "C0DEV",
        None,
        "U0ALICE",
        "<@UKILNBOT> make answer() return 42",
    );
    let mention = slack_events::event_callback(
        "Ev10",
        slack_events::app_mention(
            "U0ALICE",
            "C0DEV",
            "<@UKILNBOT> make answer() return 42",
            &ts,
            None,
        ),
    );
    let (status, body) = send(&app, &mention, Some(SIGNING_SECRET), now(), None).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("accepted")),
        "{body}"
    );
    // Slack retrying the same event (it thought the answer late): not handled again.
    let (status, body) = send(&app, &mention, Some(SIGNING_SECRET), now(), Some(1)).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("duplicate")),
        "{body}"
    );
    // The same message as a `message` event (subscribed to channel messages too): once only.
    let also = slack_events::event_callback(
        "Ev11",
        slack_events::message(
            "U0ALICE",
            "C0DEV",
            "channel",
            "<@UKILNBOT> make answer() return 42",
            &ts,
            None,
        ),
    );
    send(&app, &also, Some(SIGNING_SECRET), now(), None).await;

    let thread = slack
        .wait_for_thread("C0DEV", &ts, Duration::from_secs(60), |t| t.len() >= 3)
        .await;
    assert_eq!(thread.len(), 3, "{thread:#?}");
    let (progress, reply) = (&thread[1], &thread[2]);
    assert!(
        progress.versions[0].contains("queued") && progress.versions[0].contains("`demo`"),
        "{progress:#?}"
    );
    assert!(
        progress.versions.iter().any(|v| v.contains("working")),
        "{progress:#?}"
    );
    assert!(progress.text.contains("done"), "{progress:#?}");
    assert!(
        reply.text.starts_with("<@U0ALICE>: done."),
        "{}",
        reply.text
    );
    assert!(
        reply.text.contains("Fixed the answer now."),
        "{}",
        reply.text
    );
    // Coalesced: at most one update per two seconds, and the last.
    let updates = slack.calls_of("chat.update").len();
    assert!(updates <= progress.versions.len(), "{updates}");
    assert!(progress.versions.len() <= 1 + 1 + 5, "{progress:#?}");
    assert_eq!(session_count(&app).await, 1);
    let (_, list) = app.get(&app.admin_token, "/api/sessions?all=true").await;
    let session: kiln_core::SessionId = list[0]["id"].as_str().unwrap().parse().unwrap();
    assert_eq!(list[0]["created_by"]["id"], alice_id);
    assert!(
        progress.text.contains(&format!("/sessions/{session}")),
        "{}",
        progress.text
    );

    // Bob replies in the thread (no mention): a follow-up prompt, authored by bob.
    model.push(Turn::text("Also updated the docs."));
    let reply_ts = slack.add_message("C0DEV", Some(&ts), "U0BOB", "also update the docs");
    let follow = slack_events::event_callback(
        "Ev12",
        slack_events::message(
            "U0BOB",
            "C0DEV",
            "channel",
            "also update the docs",
            &reply_ts,
            Some(&ts),
        ),
    );
    let (status, body) = send(&app, &follow, Some(SIGNING_SECRET), now(), None).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("accepted")),
        "{body}"
    );
    let thread = slack
        .wait_for_thread("C0DEV", &ts, Duration::from_secs(60), |t| {
            t.iter().any(|m| m.text.contains("Also updated the docs."))
        })
        .await;
    let last = thread.last().unwrap();
    assert!(last.text.starts_with("<@U0BOB>: done."), "{}", last.text);
    let authors: Vec<(String, String)> = app
        .events(&alice, &session)
        .await
        .into_iter()
        .filter_map(|e| match e.event {
            Event::PromptQueued { author, text, .. } => Some((author.id.to_string(), text)),
            _ => None,
        })
        .collect();
    assert_eq!(
        authors,
        [
            (alice_id, "make answer() return 42".to_string()),
            (bob_id, "also update the docs".to_string())
        ]
    );
    app.stop().await;
}

#[tokio::test]
async fn an_ask_without_a_repo_gets_a_question_then_the_named_repo() {
    let (slack, model) = (FakeSlack::start().await, FakeModel::start().await);
    let app = start(&slack, &model).await;
    let (status, body) = app
        .post(
            &app.admin_token,
            "/api/repos",
            json!({"name": "other", "url": app.repo_url, "check": false}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (alice_id, alice) = app.user("alice").await;
    link(&app, &alice, "U0ALICE").await;

    // A direct message: two repos, none named, no channel default → kiln asks.
    let ts = slack.add_message("D0ALICE", None, "U0ALICE", "the tests are flaky");
    let dm = slack_events::event_callback(
        "Ev20",
        slack_events::message("U0ALICE", "D0ALICE", "im", "the tests are flaky", &ts, None),
    );
    let (status, body) = send(&app, &dm, Some(SIGNING_SECRET), now(), None).await;
    assert_eq!(status, 200, "{body}");
    let thread = slack
        .wait_for_thread("D0ALICE", &ts, Duration::from_secs(10), |t| t.len() == 2)
        .await;
    let question = &thread[1].text;
    assert!(
        question.contains("`demo`")
            && question.contains("`other`")
            && question.contains("repo:NAME"),
        "{question}"
    );
    assert_eq!(session_count(&app).await, 0);

    // Answered in the thread with the repo: the session starts there.
    model.push(Turn::text("Made them deterministic."));
    let answer_ts = slack.add_message(
        "D0ALICE",
        Some(&ts),
        "U0ALICE",
        "repo:other the tests are flaky",
    );
    let answer = slack_events::event_callback(
        "Ev21",
        slack_events::message(
            "U0ALICE",
            "D0ALICE",
            "im",
            "repo:other the tests are flaky",
            &answer_ts,
            Some(&ts),
        ),
    );
    send(&app, &answer, Some(SIGNING_SECRET), now(), None).await;
    slack
        .wait_for_thread("D0ALICE", &ts, Duration::from_secs(60), |t| {
            t.iter()
                .any(|m| m.text.contains("Made them deterministic."))
        })
        .await;
    let (_, list) = app.get(&app.admin_token, "/api/sessions?all=true").await;
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    assert_eq!(
        (
            list[0]["repo"].as_str(),
            list[0]["created_by"]["id"].as_str()
        ),
        (Some("other"), Some(alice_id.as_str()))
    );
    // The prompt is the ask, without the repo's naming.
    let bodies: Vec<String> = model
        .requests()
        .iter()
        .map(|r| r.body.to_string())
        .collect();
    assert!(
        bodies.iter().any(|b| b.contains("the tests are flaky")),
        "{bodies:?}"
    );
    assert!(
        !bodies.iter().any(|b| b.contains("repo:other")),
        "{bodies:?}"
    );
    app.stop().await;
}
