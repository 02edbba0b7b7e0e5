//! `GET /api/stats` over real sessions: what a prompt and a merged pull request add, who sees
//! which sessions, and bad dates.

mod common;

use common::{TestApp, is_finished};
use kiln_protocol::api::Event;
use kiln_testkit::{FakeModel, Script, Turn};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_count_a_real_session_and_follow_its_merge() {
    let model = FakeModel::start().await;
    model.push(Script::Turn(Turn::text("Done.")));
    let app = TestApp::start(&model).await;
    let admin = app.admin_token.clone();
    let session = app.new_session(&admin, "say done").await;
    app.wait_for(&admin, &session, is_finished).await;

    let (status, stats) = app.get(&admin, "/api/stats").await;
    assert_eq!(status, 200, "{stats}");
    let t = &stats["totals"];
    assert_eq!(t["sessions_started"], 1, "{stats}");
    assert_eq!(t["sessions_merged"], 0);
    assert_eq!(t["merge_rate"], 0.0);
    assert_eq!(t["time_to_first_token_ms"]["n"], 1, "{stats}");
    assert!(t["input_tokens"].as_u64().unwrap() > 0, "{stats}");
    assert_eq!(stats["humans_prompting"], 1);
    assert_eq!(stats["by_day"].as_array().unwrap().len(), 30);
    assert_eq!(stats["by_repo"][0]["key"], "demo");

    // The forge says the session's PR was merged: the stats move.
    let log = app.engine.store().open_session(&session).await.unwrap();
    log.append(Event::PullRequestChanged {
        forge: "github".into(),
        number: 3,
        url: "https://forge.test/pr/3".into(),
        action: "merged".into(),
        state: "closed".into(),
        merged: true,
        merged_at_ms: None,
        head_sha: "abc".into(),
        actor: "carol".into(),
    })
    .await
    .unwrap();
    let (_, stats) = app.get(&admin, "/api/stats?repo=demo").await;
    assert_eq!(stats["totals"]["sessions_merged"], 1, "{stats}");
    assert_eq!(stats["totals"]["prs_merged"], 1);
    assert_eq!(stats["totals"]["merge_rate"], 1.0);

    // Someone else does not see the admin's session.
    let (_, bob) = app.user("bob").await;
    let (status, theirs) = app.get(&bob, "/api/stats").await;
    assert_eq!(status, 200, "{theirs}");
    assert_eq!(theirs["totals"]["sessions_started"], 0, "{theirs}");
    assert_eq!(theirs["humans_prompting"], 0);

    let (status, bad) = app.get(&admin, "/api/stats?from=2026-13-01").await;
    assert_eq!(status, 400, "{bad}");
    assert!(bad.to_string().contains("YYYY-MM-DD"), "{bad}");
    app.stop().await;
}
