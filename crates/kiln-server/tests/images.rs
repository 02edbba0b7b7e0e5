//! Sessions start from the repo's image and catch up with the default branch in the background;
//! writes wait for that sync, and a failed sync refuses writes with the reason while reads work.

mod common;

use common::{TestApp, is_finished, tool_outcomes};
use kiln_protocol::api::{Event, SandboxState, ToolOutcome};
use kiln_testkit::{FakeModel, Script, Turn, git};
use serde_json::json;

fn states(events: &[kiln_protocol::api::EventEnvelope]) -> Vec<SandboxState> {
    events
        .iter()
        .filter_map(|e| match &e.event {
            Event::SandboxStatus { state, .. } => Some(*state),
            _ => None,
        })
        .collect()
}

/// The model reads a file, then writes one, then ends with `last`.
fn read_then_write(model: &FakeModel, last: &str) {
    model.push(Script::Turn(Turn::tool(
        "read_file",
        json!({"path": "README.md"}),
    )));
    model.push(Script::Turn(Turn::tool(
        "write_file",
        json!({"path": "new.txt", "content": "x\n"}),
    )));
    model.push(Script::Turn(Turn::text(last)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_starts_from_the_image_and_syncs_to_the_branch_head() {
    let model = FakeModel::start().await;
    let app = TestApp::start(&model).await;
    let image = app.engine.build_image("demo").await.unwrap();
    assert!(image.is_ready(), "{}", image.log);

    // The branch moves on after the image was built.
    let work = app.dir.path().join("demo-work");
    std::fs::write(
        work.join("src/lib.rs"),
        "pub fn answer() -> u32 {\n    42\n}\n",
    )
    .unwrap();
    git(&work, &["commit", "-qam", "the answer"]);
    git(&work, &["push", "-q", &app.repo_url, "main"]);
    let head = git(&work, &["rev-parse", "HEAD"]).trim().to_string();

    read_then_write(&model, "done");
    let token = app.admin_token.clone();
    let session = app.new_session(&token, "go").await;
    let events = app.wait_for(&token, &session, is_finished).await;
    assert_eq!(
        states(&events),
        [
            SandboxState::Starting,
            SandboxState::Syncing,
            SandboxState::Ready
        ]
    );
    assert_eq!(tool_outcomes(&events), [ToolOutcome::Ok, ToolOutcome::Ok]);
    // The write happened after the sync finished.
    let ready = events
        .iter()
        .position(|e| {
            matches!(
                e.event,
                Event::SandboxStatus {
                    state: SandboxState::Ready,
                    ..
                }
            )
        })
        .unwrap();
    let written = events
        .iter()
        .position(|e| matches!(&e.event, Event::FileChanged { path, .. } if path == "new.txt"))
        .unwrap();
    assert!(ready < written);
    let state = app
        .sandbox_sh(&session, "git rev-parse HEAD; git rev-parse --abbrev-ref HEAD; grep -c 42 src/lib.rs; cat new.txt")
        .await;
    assert_eq!(state, format!("{head}\nkiln/{session}\n1\nx\n"));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_sync_refuses_writes_with_the_reason_and_reads_still_work() {
    let model = FakeModel::start().await;
    let app = TestApp::start(&model).await;
    let image = app.engine.build_image("demo").await.unwrap();
    assert!(image.is_ready(), "{}", image.log);
    // The remote disappears: the mirror cannot be fetched.
    std::fs::remove_dir_all(&app.repo_url).unwrap();

    read_then_write(&model, "could not write");
    let token = app.admin_token.clone();
    let session = app.new_session(&token, "go").await;
    let events = app.wait_for(&token, &session, is_finished).await;
    let outcomes = tool_outcomes(&events);
    assert_eq!(outcomes[0], ToolOutcome::Ok, "reads work from the image");
    assert!(
        matches!(&outcomes[1], ToolOutcome::Blocked { reason } if reason.contains("could not be synced")),
        "{outcomes:?}"
    );
    assert!(events.iter().any(
        |e| matches!(&e.event, Event::Error { message, .. } if message.contains("syncing the checkout failed"))
    ));
    assert!(
        model.requests()[1].body["messages"]
            .to_string()
            .contains("# demo")
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_builds_are_started_and_inspected_through_the_api() {
    let model = FakeModel::start().await;
    let app = TestApp::start(&model).await;
    let token = app.admin_token.clone();
    let (_, user) = app.user("bob").await;
    let (status, _) = app.post(&user, "/api/repos/demo/images", json!({})).await;
    assert_eq!(status, 403);
    let (status, body) = app.post(&token, "/api/repos/nope/images", json!({})).await;
    assert_eq!(status, 404, "{body}");
    let (status, started) = app.post(&token, "/api/repos/demo/images", json!({})).await;
    assert_eq!(status, 202, "{started}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let images = loop {
        let (status, images) = app.get(&user, "/api/repos/demo/images").await;
        assert_eq!(status, 200);
        // A running build is listed from its start, as building.
        let first = &images.as_array().unwrap()[0];
        assert_eq!(first["id"], started["id"], "{images}");
        if first["status"] != "building" {
            break images;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the build did not end"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(images[0]["status"], "ready", "{images}");
    assert!(images[0].get("log").is_none());
    assert!(images[0].get("layers").is_none(), "host paths stay private");
    let id = images[0]["id"].as_str().unwrap();
    assert_eq!(id, started["id"], "the build's id was known from its start");
    let (status, one) = app
        .get(&user, &format!("/api/repos/demo/images/{id}"))
        .await;
    assert_eq!(status, 200);
    assert!(one["log"].as_str().unwrap().contains("== demo at"), "{one}");
    let (status, _) = app
        .get(&user, "/api/repos/demo/images/img-0000000000000000")
        .await;
    assert_eq!(status, 404);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_build_log_is_streamed_while_the_build_runs() {
    let model = FakeModel::start().await;
    let app = TestApp::start(&model).await;
    // A step that says something, works for a second, and says something else.
    let work = app.dir.path().join("demo-work");
    std::fs::create_dir_all(work.join(".kiln")).unwrap();
    std::fs::write(
        work.join(".kiln/environment.toml"),
        "[[build]]\nname = \"markers\"\nrun = \"echo first-marker; sleep 1; echo second-marker\"\n",
    )
    .unwrap();
    git(&work, &["add", "."]);
    git(&work, &["commit", "-qm", "a slow build"]);
    git(&work, &["push", "-q", &app.repo_url, "main"]);
    let (_, user) = app.user("bob").await;

    let (status, started) = app
        .post(&app.admin_token, "/api/repos/demo/images", json!({}))
        .await;
    assert_eq!(status, 202, "{started}");
    let id = started["id"].as_str().unwrap().to_string();
    let image_path = format!("/api/repos/demo/images/{id}");
    // Any signed-in caller may follow it.
    let mut response = reqwest::Client::new()
        .get(format!("{}{image_path}/log", app.url))
        .bearer_auth(&user)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "text/plain; charset=utf-8"
    );
    let mut streamed = Vec::new();
    // What the registry said about the image when the first marker arrived without the second.
    let mut while_running = None;
    tokio::time::timeout(std::time::Duration::from_secs(60), async {
        while let Some(chunk) = response.chunk().await.unwrap() {
            streamed.extend_from_slice(&chunk);
            let text = String::from_utf8_lossy(&streamed);
            if while_running.is_none()
                && text.contains("first-marker")
                && !text.contains("second-marker")
            {
                let (status, image) = app.get(&user, &image_path).await;
                let (_, list) = app.get(&user, "/api/repos/demo/images").await;
                let (_, so_far) = app
                    .get(&user, &format!("{image_path}/log?follow=false"))
                    .await;
                while_running = Some((status, image, list, so_far));
            }
        }
    })
    .await
    .expect("the log ends when the build does");
    let streamed = String::from_utf8(streamed).unwrap();
    // While it ran, it was listed (first) and shown as building, with its log so far, and
    // `follow=false` answered at once with that log.
    let (status, image, list, so_far) =
        while_running.expect("the first marker arrived alone, before the build ended");
    assert_eq!(status, 200, "{image}");
    assert_eq!(image["status"], "building", "{image}");
    assert!(
        image["log"].as_str().unwrap().contains("first-marker"),
        "{image}"
    );
    assert_eq!(list[0]["id"], id.as_str(), "{list}");
    assert_eq!(list[0]["status"], "building", "{list}");
    let so_far = so_far.as_str().unwrap_or_default().to_string();
    assert!(
        so_far.contains("first-marker") && !so_far.contains("second-marker"),
        "{so_far}"
    );

    // The stream ended with the build: it is the stored log, whole.
    let (status, image) = app.get(&user, &image_path).await;
    assert_eq!(status, 200);
    assert_eq!(image["status"], "ready", "{image}");
    assert_eq!(image["log"].as_str().unwrap(), streamed);
    let marker = streamed.find("first-marker").unwrap();
    assert!(
        streamed[..marker].contains("== build: markers\n"),
        "{streamed}"
    );
    assert!(
        streamed.contains("second-marker\n== build: markers: ok in"),
        "{streamed}"
    );
    // After the build, the log is the stored one.
    let (status, log) = app.get(&user, &format!("{image_path}/log")).await;
    assert_eq!(status, 200);
    assert_eq!(log.as_str(), Some(streamed.as_str()));

    let (status, body) = app
        .get(&user, "/api/repos/demo/images/img-0000000000000000/log")
        .await;
    assert_eq!(status, 404);
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("not found")),
        "{body}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starting_a_session_after_a_failed_build_says_the_image_is_stale_and_why() {
    let model = FakeModel::start().await;
    let app = TestApp::start(&model).await;
    let good = app.engine.build_image("demo").await.unwrap();
    assert!(good.is_ready(), "{}", good.log);
    let token = app.admin_token.clone();
    model.push(Script::Turn(Turn::text("ok")));
    let (status, created) = app
        .post(
            &token,
            "/api/sessions",
            json!({"repo": "demo", "prompt": "hi"}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    assert!(created.get("warnings").is_none(), "{created}");

    // The next build fails in setup.
    let work = app.dir.path().join("demo-work");
    std::fs::create_dir_all(work.join(".kiln")).unwrap();
    std::fs::write(
        work.join(".kiln/environment.toml"),
        "[[setup]]\nname = \"deps\"\nrun = \"exit 3\"\n",
    )
    .unwrap();
    git(&work, &["add", "."]);
    git(&work, &["commit", "-qm", "a broken setup"]);
    git(&work, &["push", "-q", &app.repo_url, "main"]);
    let bad = app.engine.build_image("demo").await.unwrap();
    assert!(!bad.is_ready());

    model.push(Script::Turn(Turn::text("ok")));
    let (status, created) = app
        .post(
            &token,
            "/api/sessions",
            json!({"repo": "demo", "prompt": "hi"}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let warning = created["warnings"][0].as_str().unwrap_or_default();
    assert!(warning.contains("stale"), "{created}");
    assert!(warning.contains(&bad.id), "{warning}");
    assert!(
        warning.contains("deps"),
        "the failed step is named: {warning}"
    );
    assert!(
        warning.contains(&good.id),
        "the image used is named: {warning}"
    );
    app.stop().await;
}

/// Every agent sandbox shows kiln's docs and a description of its repo's environment,
/// read-only, at /.kiln/docs, and the system prompt names it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_can_read_kiln_s_docs_and_a_description_of_its_environment() {
    let model = FakeModel::start().await;
    let app = TestApp::start(&model).await;
    let token = app.admin_token.clone();

    // No image yet: the description says so and how to get one.
    model.push(Script::Turn(Turn::text("ok")));
    let session = app.new_session(&token, "how do I make setup faster?").await;
    let events = app.wait_for(&token, &session, is_finished).await;
    let requests = model.requests();
    assert_eq!(requests.len(), 1, "{events:?}");
    let system = requests[0].body["system"].to_string();
    assert!(system.contains("/.kiln/docs/environment.md"), "{system}");
    let seen = app
        .sandbox_sh(
            &session,
            "head -1 /.kiln/docs/environment.md; grep -c 'No environment image' /.kiln/docs/environment.md; \
             test -s /.kiln/docs/kiln/README.md && test -s /.kiln/docs/kiln/environment.md && echo docs; \
             touch /.kiln/docs/x 2>/dev/null || echo read-only",
        )
        .await;
    assert_eq!(
        seen,
        "# The environment of this sandbox\n1\ndocs\nread-only\n"
    );

    // With an image, sessions (and the pool's sandboxes) read how it was built.
    let image = app.engine.build_image("demo").await.unwrap();
    assert!(image.is_ready(), "{}", image.log);
    model.push(Script::Turn(Turn::text("ok")));
    let session = app.new_session(&token, "again").await;
    app.wait_for(&token, &session, is_finished).await;
    let about = app
        .sandbox_sh(&session, "cat /.kiln/docs/environment.md")
        .await;
    assert!(about.contains(&image.id), "{about}");
    assert!(about.contains("## Network and resources"), "{about}");
    assert!(!about.contains("No environment image"), "{about}");
    app.stop().await;
}
