//! People through the API: users with a display name and a validated email (their commits
//! carry both), deactivation, and tokens that expire. The real server, store and sandboxes.

mod common;

use common::{TestApp, is_finished, last_tool_output};
use kiln_testkit::{FakeModel, Script, Turn};
use reqwest::Method;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_and_emails_are_checked_and_commits_carry_them() {
    let model = FakeModel::start().await;
    let app = TestApp::start(&model).await;
    let admin = app.admin_token.clone();

    for (body, says) in [
        (
            json!({"name": "bob smith!"}),
            "put \"Bob Smith\" in the display name",
        ),
        (json!({"name": "bob", "email": "bob@"}), "not an address"),
        (
            json!({"name": "bob", "display_name": "Bob <x>"}),
            "'<' or '>'",
        ),
    ] {
        let (status, reply) = app.post(&admin, "/api/users", body.clone()).await;
        assert_eq!(status, 400, "{body}: {reply}");
        let message = reply["error"].as_str().unwrap();
        assert!(message.contains(says), "{body}: {message}");
    }

    let (status, bob) = app
        .post(
            &admin,
            "/api/users",
            json!({"name": "bob.smith", "display_name": "Bob Smith", "email": "bob@example.com"}),
        )
        .await;
    assert_eq!(status, 201, "{bob}");
    assert_eq!(bob["display_name"], "Bob Smith");
    assert_eq!(bob["email"], "bob@example.com");
    let id = bob["id"].as_str().unwrap().to_string();
    let (status, token) = app
        .post(&admin, "/api/tokens", json!({"name": "t", "user_id": id}))
        .await;
    assert_eq!(status, 201, "{token}");
    let bob_token = token["token"].as_str().unwrap().to_string();

    // A user changes their own profile; a bad email is refused.
    let path = format!("/api/users/{id}");
    let (status, reply) = app
        .request(
            Method::PATCH,
            &bob_token,
            &path,
            Some(json!({"email": "nope"})),
        )
        .await;
    assert_eq!(status, 400, "{reply}");
    let (status, reply) = app
        .request(
            Method::PATCH,
            &bob_token,
            &path,
            Some(json!({"email": "bob.smith@example.org"})),
        )
        .await;
    assert_eq!(status, 200, "{reply}");
    let (_, ann) = app.user("ann").await;
    let (status, _) = app
        .request(
            Method::PATCH,
            &ann,
            &path,
            Some(json!({"email": "x@example.org"})),
        )
        .await;
    assert_eq!(status, 403, "only admins change someone else's profile");

    // A prompt of bob's commits as "Bob Smith <bob.smith@example.org>".
    model.push(Script::Turn(Turn::tool(
        "bash",
        json!({"command": "echo \"$GIT_AUTHOR_NAME <$GIT_AUTHOR_EMAIL> / $GIT_COMMITTER_NAME\""}),
    )));
    model.push(Script::Turn(Turn::text("done")));
    let session = app.new_session(&bob_token, "who am I").await;
    let events = app.wait_for(&bob_token, &session, is_finished).await;
    let output = last_tool_output(&events);
    assert_eq!(
        output.lines().next(),
        Some("Bob Smith <bob.smith@example.org> / kiln"),
        "{output}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deactivated_user_is_locked_out_and_the_last_admin_stays() {
    let model = FakeModel::start().await;
    let app = TestApp::start(&model).await;
    let admin = app.admin_token.clone();
    let (bob_id, bob) = app.user("bob").await;
    let (status, _) = app.get(&bob, "/api/me").await;
    assert_eq!(status, 200);

    let (status, _) = app
        .request(Method::DELETE, &bob, &format!("/api/users/{bob_id}"), None)
        .await;
    assert_eq!(status, 403, "only admins deactivate");
    let (status, user) = app
        .request(
            Method::DELETE,
            &admin,
            &format!("/api/users/{bob_id}"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{user}");
    assert_eq!(user["deactivated"], true);
    let (status, _) = app.get(&bob, "/api/me").await;
    assert_eq!(
        status, 401,
        "a deactivated user's token stops working at once"
    );
    let (status, reply) = app
        .post(
            &admin,
            "/api/tokens",
            json!({"name": "again", "user_id": bob_id}),
        )
        .await;
    assert_eq!(status, 409, "{reply}");

    let (_, me) = app.get(&admin, "/api/me").await;
    let admin_id = me["user"]["id"].as_str().unwrap();
    let (status, reply) = app
        .request(
            Method::DELETE,
            &admin,
            &format!("/api/users/{admin_id}"),
            None,
        )
        .await;
    assert_eq!(status, 409, "{reply}");
    assert!(
        reply["error"]
            .as_str()
            .unwrap()
            .contains("last active admin"),
        "{reply}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_named_and_may_expire() {
    let model = FakeModel::start().await;
    let app = TestApp::start(&model).await;
    let admin = app.admin_token.clone();
    let (status, reply) = app
        .post(
            &admin,
            "/api/tokens",
            json!({"name": "ci", "expires_in_days": 0}),
        )
        .await;
    assert_eq!(status, 400, "{reply}");
    let (status, created) = app
        .post(
            &admin,
            "/api/tokens",
            json!({"name": "ci", "expires_in_days": 30}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let made = created["info"]["created_at_ms"].as_i64().unwrap();
    let expires = created["info"]["expires_at_ms"].as_i64().unwrap();
    assert_eq!(expires - made, 30 * 86_400_000);
    let token = created["token"].as_str().unwrap();
    let (status, listed) = app.get(token, "/api/tokens").await;
    assert_eq!(status, 200);
    let ci = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "ci")
        .unwrap();
    assert_eq!(ci["expires_at_ms"], expires);
    assert!(ci["last_used_ms"].as_i64().is_some(), "{ci}");
    assert!(
        !listed.to_string().contains(token),
        "tokens are never listed"
    );
}
