//! Who may start sessions on a repo: a members-only repo is invisible to everyone but its
//! members and admins — the same 404 as a repo that does not exist, on every repo route and on
//! the user socket — and only admins change who that is.

mod common;

use common::TestApp;
use kiln_testkit::FakeModel;
use reqwest::Method;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_members_only_repo_exists_for_its_members_and_admins_only() {
    let model = FakeModel::start().await;
    let app = TestApp::start(&model).await;
    let admin = app.admin_token.clone();
    let (alice_id, alice) = app.user("alice").await;
    let (_, bob) = app.user("bob").await;

    // By default everyone may start sessions.
    let (status, access) = app.get(&admin, "/api/repos/demo/access").await;
    assert_eq!(status, 200, "{access}");
    assert_eq!(access, json!({"mode": "everyone", "members": []}));

    // Only admins see or change access.
    let (status, _) = app.get(&alice, "/api/repos/demo/access").await;
    assert_eq!(status, 403);
    let body = json!({"mode": "members", "members": [alice_id]});
    let (status, _) = app
        .request(
            Method::PUT,
            &alice,
            "/api/repos/demo/access",
            Some(body.clone()),
        )
        .await;
    assert_eq!(status, 403);
    let (status, bad) = app
        .request(
            Method::PUT,
            &admin,
            "/api/repos/demo/access",
            Some(json!({"mode": "members", "members": ["u-0000000000000000"]})),
        )
        .await;
    assert_eq!(status, 400, "{bad}");
    assert!(bad["error"].as_str().unwrap().contains("no user"), "{bad}");
    let (status, access) = app
        .request(Method::PUT, &admin, "/api/repos/demo/access", Some(body))
        .await;
    assert_eq!(status, 200, "{access}");
    assert_eq!(access["mode"], "members");
    assert_eq!(access["members"][0]["name"], "alice");

    // Bob, not a member, sees exactly what he would see for a repo that never existed.
    let (_, missing) = app.get(&bob, "/api/repos/nope").await;
    let routes = [
        (Method::GET, "/api/repos/{}"),
        (Method::GET, "/api/repos/{}/images"),
        (Method::GET, "/api/repos/{}/images/img-0000000000000000"),
        (Method::GET, "/api/repos/{}/images/img-0000000000000000/log"),
        (Method::GET, "/api/repos/{}/pool"),
        (Method::POST, "/api/repos/{}/warm"),
    ];
    for (method, route) in routes {
        let (hidden_status, hidden) = app
            .request(method.clone(), &bob, &route.replace("{}", "demo"), None)
            .await;
        let (absent_status, absent) = app
            .request(method, &bob, &route.replace("{}", "nope"), None)
            .await;
        assert_eq!(hidden_status, 404, "{route}: {hidden}");
        assert_eq!(absent_status, 404, "{route}: {absent}");
        assert_eq!(
            hidden["error"].as_str().unwrap().replace("demo", "nope"),
            absent["error"].as_str().unwrap(),
            "{route}"
        );
    }
    assert_eq!(missing["error"], "repo \"nope\" not found");
    let (status, repos) = app.get(&bob, "/api/repos").await;
    assert_eq!(status, 200);
    assert_eq!(repos, json!([]), "bob lists no repo");
    let (status, refused) = app
        .post(
            &bob,
            "/api/sessions",
            json!({"repo": "demo", "prompt": "hi"}),
        )
        .await;
    assert_eq!(status, 404, "{refused}");
    assert_eq!(refused["error"], "repo \"demo\" not found");
    let mut socket = app.user_ws(&bob).await;
    socket.send_text(r#"{"type":"typing","repo":"demo"}"#).await;
    let reply = socket.json().await;
    assert_eq!(reply["type"], "error", "{reply}");
    assert!(
        reply["message"].as_str().unwrap().contains("not found"),
        "{reply}"
    );
    socket.close().await;

    // Alice, a member, and the admin go on as before.
    let (status, repos) = app.get(&alice, "/api/repos").await;
    assert_eq!(status, 200);
    assert_eq!(repos.as_array().unwrap().len(), 1);
    app.new_session(&alice, "hello").await;
    app.new_session(&admin, "hello").await;

    // Back to everyone: the member list is kept, and bob may start sessions again.
    let (status, access) = app
        .request(
            Method::PUT,
            &admin,
            "/api/repos/demo/access",
            Some(json!({"mode": "everyone", "members": [alice_id]})),
        )
        .await;
    assert_eq!(status, 200, "{access}");
    app.new_session(&bob, "hello").await;
    app.stop().await;
}
