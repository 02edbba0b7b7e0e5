//! Repo secrets end to end, on real sandboxes: set through the API (admins only, values never
//! in a response and never in `control.db` in the clear), given to an image build's setup
//! (which sees the real value while its log shows it masked), kept from sessions unless
//! `agent = true`, masked in the tool output the events and the model get, and a changed
//! secret rebuilds the image with setup run again.

mod common;

use common::{TestApp, finished};
use kiln_protocol::api::{Event, Image, ImageStatus, PromptOutcome};
use kiln_testkit::{FakeModel, Script, Turn};
use reqwest::Method;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const BUILD_ONLY: &str = "tok-build-0123456789";
const FOR_AGENT: &str = "shared-agent-9876543210";

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// Everything SQLite holds of a database: the file and its WAL.
fn db_bytes(path: &std::path::Path) -> Vec<u8> {
    let mut bytes = std::fs::read(path).unwrap();
    let wal = path.with_file_name(format!(
        "{}-wal",
        path.file_name().unwrap().to_string_lossy()
    ));
    bytes.extend(std::fs::read(wal).unwrap_or_default());
    bytes
}

async fn put_secret(app: &TestApp, token: &str, name: &str, body: Value) -> (u16, Value) {
    app.request(
        Method::PUT,
        token,
        &format!("/api/repos/demo/secrets/{name}"),
        Some(body),
    )
    .await
}

/// Waits until the repo builds nothing and its newest image satisfies `done`.
async fn newest_image(app: &TestApp, done: impl Fn(&Image) -> bool) -> Image {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (status, images) = app.get(&app.admin_token, "/api/repos/demo/images").await;
        assert_eq!(status, 200, "{images}");
        let images: Vec<Image> = serde_json::from_value(images).unwrap();
        let building = images.iter().any(|i| i.status == ImageStatus::Building);
        if let Some(newest) = images.first().filter(|i| !building && done(i)) {
            let (status, image) = app
                .get(
                    &app.admin_token,
                    &format!("/api/repos/demo/images/{}", newest.id),
                )
                .await;
            assert_eq!(status, 200, "{image}");
            return serde_json::from_value(image).unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "no such image in time: {images:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_are_write_only_and_for_admins() {
    let model = FakeModel::start().await;
    let app = TestApp::start(&model).await;
    let admin = app.admin_token.clone();
    let (_, user) = app.user("bob").await;
    let mut bodies = Vec::new();

    let (status, set) = put_secret(&app, &admin, "TOKEN", json!({"value": BUILD_ONLY})).await;
    assert_eq!(status, 200, "{set}");
    assert_eq!(set["name"], "TOKEN");
    assert_eq!(set["agent"], false);
    assert_eq!(set["updated_by"]["name"], "admin");
    bodies.push(set);
    let (status, set) = put_secret(
        &app,
        &admin,
        "NPM_TOKEN",
        json!({"value": FOR_AGENT, "agent": true}),
    )
    .await;
    assert_eq!(status, 200, "{set}");
    bodies.push(set);
    let (status, listed) = app.get(&admin, "/api/repos/demo/secrets").await;
    assert_eq!(status, 200, "{listed}");
    let names: Vec<(&str, bool)> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["name"].as_str().unwrap(), s["agent"].as_bool().unwrap()))
        .collect();
    assert_eq!(names, [("NPM_TOKEN", true), ("TOKEN", false)]);
    bodies.push(listed);

    // Others may neither list, set nor remove.
    for (method, body) in [
        (Method::GET, None),
        (Method::DELETE, None),
        (Method::PUT, Some(json!({"value": "guess-me-1234"}))),
    ] {
        let path = match method {
            Method::GET => "/api/repos/demo/secrets",
            _ => "/api/repos/demo/secrets/TOKEN",
        };
        let (status, body) = app.request(method, &user, path, body).await;
        assert_eq!(status, 403, "{body}");
    }

    // Unknown repos and secrets; names and values that are refused, with a reason that does
    // not quote the value.
    let (status, _) = app.get(&admin, "/api/repos/nope/secrets").await;
    assert_eq!(status, 404);
    let (status, _) = app
        .request(
            Method::PUT,
            &admin,
            "/api/repos/nope/secrets/TOKEN",
            Some(json!({"value": "abcdefgh"})),
        )
        .await;
    assert_eq!(status, 404);
    let (status, _) = app
        .request(Method::DELETE, &admin, "/api/repos/demo/secrets/NOPE", None)
        .await;
    assert_eq!(status, 404);
    for (name, body) in [
        ("PATH", json!({"value": "abcdefgh"})),
        ("KILN_X", json!({"value": "abcdefgh"})),
        ("1X", json!({"value": "abcdefgh"})),
        ("SHORT", json!({"value": "ab9"})),
        ("TOKEN", json!({"value": "abcdefgh", "extra": 1})),
    ] {
        let (status, refused) = put_secret(&app, &admin, name, body).await;
        assert_eq!(status, 400, "{name}: {refused}");
        assert!(!refused.to_string().contains("ab9"), "{refused}");
    }

    let (status, _) = app
        .request(
            Method::DELETE,
            &admin,
            "/api/repos/demo/secrets/TOKEN",
            None,
        )
        .await;
    assert_eq!(status, 204);
    let (_, listed) = app.get(&admin, "/api/repos/demo/secrets").await;
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    bodies.push(listed);

    for body in &bodies {
        let text = body.to_string();
        assert!(
            !text.contains(BUILD_ONLY) && !text.contains(FOR_AGENT),
            "{text}"
        );
    }
    let control = db_bytes(&app.data_dir().join("control.db"));
    assert!(!contains(&control, FOR_AGENT), "a value in control.db");
    let key = app.data_dir().join("secret.key");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // Wait for the builds the changes started, so the app stops between steps.
    newest_image(&app, |_| true).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_gets_every_secret_sessions_only_agent_ones_and_output_is_masked() {
    let model = FakeModel::start().await;
    let app = TestApp::start(&model).await;
    let admin = app.admin_token.clone();
    let environment = r#"
[[setup]]
run = "echo \"setup saw $TOKEN and $SHARED\" && printf %s \"$TOKEN\" | base64 && printf %s \"$TOKEN\" > /home/kiln/token.txt"
[[build]]
run = "echo \"build: ${#TOKEN} characters\" >&2"
"#;
    let (status, body) = app
        .request(
            Method::PATCH,
            &admin,
            "/api/repos/demo",
            Some(json!({"environment": environment})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = put_secret(&app, &admin, "TOKEN", json!({"value": BUILD_ONLY})).await;
    assert_eq!(status, 200);
    let (status, _) = put_secret(
        &app,
        &admin,
        "SHARED",
        json!({"value": FOR_AGENT, "agent": true}),
    )
    .await;
    assert_eq!(status, 200);

    // The second change came while the first build ran: another build follows it, with both.
    let image = newest_image(&app, |i| i.secrets.len() == 2).await;
    assert_eq!(image.status, ImageStatus::Ready, "{:?}", image.log);
    assert!(image.setup_ran);
    let names: Vec<&str> = image.secrets.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["SHARED", "TOKEN"]);
    assert!(image.runtime.env.is_empty(), "{:?}", image.runtime);
    let log = image.log.clone().unwrap();
    assert!(
        log.contains("setup saw [secret TOKEN] and [secret SHARED]"),
        "{log}"
    );
    assert!(log.contains("build: 20 characters"), "{log}");
    for value in [BUILD_ONLY, FOR_AGENT] {
        assert!(!log.contains(value), "{log}");
    }
    // The base64 line is masked but for a few characters at its ends.
    let base64_line = log
        .lines()
        .find(|l| l.contains("[secret TOKEN]") && !l.contains("setup saw"))
        .unwrap_or_else(|| panic!("no masked base64 line: {log}"));
    assert!(base64_line.len() <= "[secret TOKEN]".len() + 8, "{log}");

    // A session: the agent's command sees the agent secret only, and reads the file setup
    // wrote; what the events and the model get is masked.
    model.push(Script::Turn(Turn::tool(
        "bash",
        json!({"command": "echo \"token=[$TOKEN] shared=[$SHARED]\"; cat /home/kiln/token.txt; echo"}),
    )));
    model.push(Script::Turn(Turn::text("done")));
    let session = app.new_session(&admin, "show me").await;
    let events = app
        .wait_until(&admin, &session, |e| {
            finished(e, PromptOutcome::Completed) == 1
        })
        .await;
    let output: String = events
        .iter()
        .filter_map(|e| match &e.event {
            Event::ToolOutput { chunk, .. } => Some(chunk.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(
        output, "token=[] shared=[[secret SHARED]]\n[secret TOKEN]\n",
        "{events:#?}"
    );
    let all_events = serde_json::to_string(&events).unwrap();
    for value in [BUILD_ONLY, FOR_AGENT] {
        assert!(!all_events.contains(value), "{all_events}");
    }
    let requests = model.requests();
    let to_model = serde_json::to_string(&requests.last().unwrap().body).unwrap();
    assert!(to_model.contains("shared=[[secret SHARED]]"), "{to_model}");
    for value in [BUILD_ONLY, FOR_AGENT] {
        assert!(
            !to_model.contains(value),
            "the model saw a value: {to_model}"
        );
    }
    let session_db = db_bytes(
        &app.data_dir()
            .join("sessions")
            .join(session.as_str())
            .join("session.db"),
    );
    assert!(!contains(&session_db, BUILD_ONLY) && !contains(&session_db, FOR_AGENT));
    // The setup step had the real value: it is in the file it wrote.
    assert_eq!(
        app.sandbox_sh(&session, "cat /home/kiln/token.txt").await,
        BUILD_ONLY
    );

    // A changed value rebuilds the image and reruns setup; a build with nothing changed
    // does not rerun it.
    let before = image
        .secrets
        .iter()
        .find(|s| s.name == "TOKEN")
        .unwrap()
        .fingerprint
        .clone();
    let (status, _) = put_secret(
        &app,
        &admin,
        "TOKEN",
        json!({"value": "tok-build-changed!"}),
    )
    .await;
    assert_eq!(status, 200);
    let rebuilt = newest_image(&app, |i| {
        i.secrets
            .iter()
            .any(|s| s.name == "TOKEN" && s.fingerprint != before)
    })
    .await;
    assert_eq!(rebuilt.status, ImageStatus::Ready, "{:?}", rebuilt.log);
    assert!(rebuilt.setup_ran, "{:?}", rebuilt.log);
    let again = app.engine.build_image("demo").await.unwrap();
    assert!(again.is_ready(), "{}", again.log);
    assert!(!again.setup_ran, "{}", again.log);
    app.stop().await;
}

/// A secret sealed under another key (the key file was replaced, or `KILN_SECRET_KEY`
/// changed) stops builds and prompts on the repo with a message saying so, never a garbled
/// value; one sealed under the right key is picked up by the image cadence, which rebuilds
/// when the newest image's secrets differ from the repo's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_key_is_a_clear_error_and_the_cadence_rebuilds_for_secrets() {
    let model = FakeModel::start().await;
    let app = TestApp::start(&model).await;
    let admin = app.admin_token.clone();
    let store = app.engine.store().clone();
    let admin_id = store.user_by_name("admin").await.unwrap().unwrap().id;
    let first = app.engine.build_image("demo").await.unwrap();
    assert!(
        first.is_ready() && first.secrets.is_empty(),
        "{}",
        first.log
    );
    assert!(app.engine.rebuild_moved_images().await.unwrap().is_empty());

    // Sealed as kiln seals it, under the data dir's key, straight into the store: no build
    // starts, so the cadence is what notices.
    let vault = kiln_vault::Vault::open(&app.data_dir(), None).unwrap();
    let sealed = |vault: &kiln_vault::Vault, value: &str| kiln_store::SealedSecret {
        name: "TOKEN".into(),
        ciphertext: vault.seal("repo-secret:demo:TOKEN", value.as_bytes()),
        agent: true,
        fingerprint: vault.fingerprint(value.as_bytes()),
    };
    store
        .set_secret("demo", sealed(&vault, BUILD_ONLY), &admin_id)
        .await
        .unwrap();
    let built = app.engine.rebuild_moved_images().await.unwrap();
    assert_eq!(built.len(), 1, "{built:?}");
    assert_eq!(built[0].secrets[0].name, "TOKEN");
    assert!(app.engine.rebuild_moved_images().await.unwrap().is_empty());

    let other = kiln_vault::Vault::from_key(&[9; 32], "another key".into());
    store
        .set_secret("demo", sealed(&other, BUILD_ONLY), &admin_id)
        .await
        .unwrap();
    let error = app
        .engine
        .build_image("demo")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("repo-secret:demo:TOKEN")
            && error.contains("not the one it was sealed with"),
        "{error}"
    );
    let session = app.new_session(&admin, "hello").await;
    let events = app
        .wait_until(&admin, &session, |e| {
            finished(e, PromptOutcome::Failed) == 1
        })
        .await;
    let message = events
        .iter()
        .find_map(|e| match &e.event {
            Event::Error { message, kind, .. } => Some((message.clone(), *kind)),
            _ => None,
        })
        .expect("an error event");
    assert_eq!(message.1, kiln_protocol::api::ErrorKind::Storage);
    assert!(
        message.0.contains("secrets cannot be read")
            && message.0.contains("not the one it was sealed with"),
        "{message:?}"
    );
    assert!(
        model.requests().is_empty(),
        "the prompt must not reach the model"
    );
    app.stop().await;
}
