//! Warm-up while typing (on the user socket for a new session, on the session socket for a
//! stopped sandbox) and the environment's env and limits on every sandbox made from an image.

mod common;

use common::{TestApp, fake_model_config, finished};
use kiln_engine::EngineConfig;
use kiln_protocol::api::{Event, PromptOutcome, SandboxState};
use kiln_sandbox::Provider;
use kiln_testkit::{FakeModel, Script, Turn, git};
use serde_json::json;
use std::time::{Duration, Instant};

/// Pushes a commit to the demo repo's default branch and returns its id.
fn push_commit(app: &TestApp, file: &str, contents: &str) -> String {
    let work = app.dir.path().join("demo-work");
    std::fs::write(work.join(file), contents).unwrap();
    git(&work, &["add", "."]);
    git(&work, &["commit", "-qm", file]);
    git(&work, &["push", "-q", &app.repo_url, "main"]);
    git(&work, &["rev-parse", "HEAD"]).trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typing_on_the_user_socket_holds_a_sandbox_and_brings_it_to_the_branch_head() {
    let model = FakeModel::start().await;
    let app = TestApp::with_config(EngineConfig {
        model: Some(fake_model_config(&model)),
        pool_size: 1,
        reservation_ttl: Duration::from_secs(60),
        ..EngineConfig::default()
    })
    .await;
    let engine = app.engine.clone();
    let image = engine.build_image("demo").await.unwrap();
    assert!(image.is_ready(), "{}", image.log);
    let deadline = Instant::now() + Duration::from_secs(30);
    while engine.pool_ready("demo") < 1 {
        assert!(Instant::now() < deadline, "the pool never filled");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let head = push_commit(&app, "later.txt", "after the image\n");
    let token = app.admin_token.clone();

    let mut socket = app.user_ws(&token).await;
    socket.send_text(r#"{"type":"typing","repo":"demo"}"#).await;
    let reply = socket.json().await;
    assert_eq!(
        reply,
        json!({"type": "warm", "repo": "demo", "reserved": true})
    );
    assert_eq!(engine.pool_ready("demo"), 0, "the entry is held");
    // While the user types, the held sandbox's checkout moves to the new head.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let heads = app
            .labelled_sh("kiln.pool", "demo", "git rev-parse HEAD")
            .await;
        if heads.iter().any(|h| h.trim() == head) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no pooled checkout reached {head}: {heads:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Mistakes get an answer, and the socket stays open.
    socket.send_text(r#"{"type":"typing","repo":"nope"}"#).await;
    let reply = socket.json().await;
    assert_eq!(reply["type"], "error", "{reply}");
    assert!(
        reply["message"].as_str().unwrap().contains("nope"),
        "{reply}"
    );
    socket.send_text(r#"{"type":"shout"}"#).await;
    let reply = socket.json().await;
    assert!(
        reply["message"].as_str().unwrap().contains("shout"),
        "{reply}"
    );
    socket.send_text(r#"{"type":"ping","nonce":7}"#).await;
    assert_eq!(socket.json().await, json!({"type": "pong", "nonce": 7}));

    // The typist's session takes the held sandbox, already at the head; its own sync (done
    // when the sandbox is ready) only names the session's branch.
    let session = app.new_session(&token, "hello").await;
    let events = app
        .wait_until(&token, &session, |e| {
            finished(e, PromptOutcome::Completed) == 1
                && e.iter().any(|e| {
                    matches!(
                        e.event,
                        Event::SandboxStatus {
                            state: SandboxState::Ready,
                            ..
                        }
                    )
                })
        })
        .await;
    assert!(
        events.iter().any(|e| matches!(
            &e.event,
            Event::SandboxStatus { detail: Some(d), .. } if d.contains("warm pool")
        )),
        "{events:?}"
    );
    let checkout = app
        .sandbox_sh(
            &session,
            "git rev-parse HEAD; git branch --show-current; cat later.txt",
        )
        .await;
    assert_eq!(
        checkout,
        format!("{head}\nkiln/{session}\nafter the image\n")
    );
    socket.close().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typing_in_a_session_brings_its_stopped_sandbox_back_before_the_prompt() {
    let model = FakeModel::start().await;
    model.push(Script::Turn(Turn::tool(
        "write_file",
        json!({"path": "notes.txt", "content": "kept\n"}),
    )));
    model.push(Script::Turn(Turn::text("done")));
    let app = TestApp::with_config(EngineConfig {
        model: Some(fake_model_config(&model)),
        idle_stop_after: Some(Duration::from_millis(400)),
        ..EngineConfig::default()
    })
    .await;
    let token = app.admin_token.clone();
    let session = app.new_session(&token, "take notes").await;
    let stopped = |e: &Event| {
        matches!(
            e,
            Event::SandboxStatus {
                state: SandboxState::Stopped,
                ..
            }
        )
    };
    app.wait_for(&token, &session, stopped).await;
    assert!(app.provider.list().await.unwrap().is_empty());

    let mut socket = app.ws(&token, &session, 0).await;
    socket.send_text(r#"{"type":"typing"}"#).await;
    let events = app
        .wait_until(&token, &session, |events| {
            let after_stop = events.iter().skip_while(|e| !stopped(&e.event));
            after_stop
                .filter(|e| {
                    matches!(
                        &e.event,
                        Event::SandboxStatus { state: SandboxState::Ready, detail: Some(d), .. }
                            if d.contains("restored")
                    )
                })
                .count()
                == 1
        })
        .await;
    assert_eq!(
        finished(&events, PromptOutcome::Completed),
        1,
        "no prompt ran"
    );
    assert_eq!(app.sandbox_sh(&session, "cat notes.txt").await, "kept\n");
    socket.close().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_environment_set_through_the_api_gives_every_sandbox_its_env_and_limits() {
    let model = FakeModel::start().await;
    let app = TestApp::start(&model).await;
    let token = app.admin_token.clone();

    let bad = json!({"environment": "[limits]\nmemory_mb = 1\n"});
    let (status, body) = app
        .request(reqwest::Method::PATCH, &token, "/api/repos/demo", Some(bad))
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("limits.memory_mb"),
        "{body}"
    );
    let environment = "[env]\nGREETING = \"hi\"\n[limits]\nmemory_mb = 512\npids = 300\n\
                       [[setup]]\nrun = \"echo $GREETING > greeting.txt\"\n";
    let (status, body) = app
        .request(
            reqwest::Method::PATCH,
            &token,
            "/api/repos/demo",
            Some(json!({ "environment": environment })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["environment"], environment);

    let image = app.engine.build_image("demo").await.unwrap();
    assert!(image.is_ready(), "{}", image.log);
    assert!(image.log.contains("set through the API"), "{}", image.log);
    let (_, shown) = app
        .get(&token, &format!("/api/repos/demo/images/{}", image.id))
        .await;
    assert_eq!(shown["runtime"]["env"]["GREETING"], "hi", "{shown}");
    assert_eq!(shown["runtime"]["limits"]["memory_mb"], 512, "{shown}");

    let session = app.new_session(&token, "hello").await;
    app.wait_until(&token, &session, |e| {
        finished(e, PromptOutcome::Completed) == 1
    })
    .await;
    let seen = app
        .sandbox_sh(&session, "echo $GREETING; cat greeting.txt")
        .await;
    assert_eq!(seen, "hi\nhi\n");
    let spec = app
        .provider
        .list()
        .await
        .unwrap()
        .into_iter()
        .find(|i| i.spec.labels.contains_key("kiln.session"))
        .unwrap()
        .spec;
    assert_eq!(spec.limits.memory_bytes, Some(512 << 20));
    assert_eq!(spec.limits.pids, Some(300));

    // The empty string removes the override; the repo has no file, so nothing is set up.
    let (status, body) = app
        .request(
            reqwest::Method::PATCH,
            &token,
            "/api/repos/demo",
            Some(json!({ "environment": "" })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.get("environment").is_none(), "{body}");
    app.stop().await;
}
