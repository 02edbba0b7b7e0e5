//! Pushing a session's branch: the agent's `push` tool and `POST /api/sessions/{id}/push` push
//! `kiln/<session>` (and nothing else) to a remote served by `git http-backend` behind basic
//! auth, with the credential the control plane holds; the sandbox never holds it (environment,
//! files, processes), and `git push` inside it fails naming the tool. Commits are their
//! prompt's author's, committed by kiln, with the session's trailer; what a prompt leaves
//! uncommitted is committed for its author.

mod common;

use common::{TestApp, fake_model_config};
use kiln_engine::EngineConfig;
use kiln_protocol::api::{Event, EventEnvelope, PromptOutcome};
use kiln_testkit::{FakeModel, GitHttpServer, Script, Turn, bare_repo, git};
use serde_json::json;
use std::path::Path;

const PUSHER: &str = "kiln-bot";
const SECRET: &str = "ghp_pushHorseBatteryStaple";
const READER: &str = "reader";
const READ_ONLY: &str = "ghp_readOnlyBatteryStaple";

fn bash(command: &str) -> Script {
    Script::Turn(Turn::tool("bash", json!({ "command": command })))
}

fn pushed(events: &[EventEnvelope]) -> Vec<(String, String)> {
    events
        .iter()
        .filter_map(|e| match &e.event {
            Event::Pushed { commit, by, .. } => Some((commit.clone(), by.name.clone())),
            _ => None,
        })
        .collect()
}

/// `author name|author email|committer name|committer email` then the message body, of each
/// commit on `rev` not on main, newest first.
fn remote_log(bare: &Path, rev: &str) -> Vec<String> {
    git(
        bare,
        &[
            "log",
            "--format=%an|%ae|%cn|%ce%n%B%x00",
            rev,
            "^refs/heads/main",
        ],
    )
    .split('\0')
    .map(|c| c.trim().to_string())
    .filter(|c| !c.is_empty())
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_pushes_its_own_branch_with_kiln_s_credential_only() {
    let model = FakeModel::start().await;
    let app = TestApp::with_config(EngineConfig {
        model: Some(fake_model_config(&model)),
        auto_commit: true,
        ..EngineConfig::default()
    })
    .await;
    let root = app.dir.path().join("served");
    std::fs::create_dir_all(&root).unwrap();
    let bare = bare_repo(&root, "app", &[("README.md", "the app\n")]);
    let server =
        GitHttpServer::start_with_pusher(&root, (READER, READ_ONLY), (PUSHER, SECRET)).await;
    let url = |user: &str, password: &str| {
        server
            .url("app")
            .replace("http://", &format!("http://{user}:{password}@"))
    };
    let admin = app.admin_token.clone();
    for (name, url) in [("app", url(PUSHER, SECRET)), ("ro", url(READER, READ_ONLY))] {
        let (status, body) = app
            .post(&admin, "/api/repos", json!({"name": name, "url": url}))
            .await;
        assert_eq!(status, 201, "{body}");
    }
    let main_before = git(&bare, &["rev-parse", "refs/heads/main"]);

    // Alice's prompt commits through bash, then calls `push`.
    let (_, alice) = app.user("alice").await;
    let (_, bob) = app.user("bob").await;
    let (_, carol) = app.user("carol").await;
    model.push(bash(
        "echo hello > hello.txt && git add hello.txt && git commit -qm 'Add hello'",
    ));
    model.push(Script::Turn(Turn::tool("push", json!({}))));
    model.push(Script::Turn(Turn::text("pushed")));
    let (status, body) = app
        .post(
            &alice,
            "/api/sessions",
            json!({"repo": "app", "prompt": "say hello"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let session: kiln_core::SessionId = body["session"]["id"].as_str().unwrap().parse().unwrap();
    let events = app
        .wait_until(&alice, &session, |e| {
            common::finished(e, PromptOutcome::Completed) == 1
        })
        .await;
    let output = common::last_tool_output(&events);
    let branch = format!("kiln/{session}");
    assert!(output.contains(&format!("Pushed {branch}")), "{output}");
    let remote_ref = format!("refs/heads/{branch}");
    let tip = git(&bare, &["rev-parse", &remote_ref]).trim().to_string();
    assert_eq!(pushed(&events), [(tip.clone(), "alice".to_string())]);
    let log = remote_log(&bare, &remote_ref);
    assert_eq!(log.len(), 1, "{log:?}");
    assert!(
        log[0].starts_with("alice|") && log[0].contains("|kiln|kiln@localhost\nAdd hello"),
        "author alice, committer kiln: {log:?}"
    );
    assert!(
        log[0].contains(&format!("Kiln-Session: {session}")),
        "{log:?}"
    );
    assert!(server.pushes() > 0);

    // `git push` in the sandbox fails and names the tool.
    let refused = app
        .sandbox_sh(&session, "git push origin HEAD 2>&1; echo \"exit=$?\"")
        .await;
    assert!(refused.contains("use the `push` tool"), "{refused}");
    assert!(!refused.contains("exit=0"), "{refused}");

    // Nothing in the sandbox holds the credential: its processes' environments and command
    // lines, and its files (the control's grep finds the README, so the grep works). The
    // script names the secret in two halves, so its own command line does not hold it.
    let (head, tail) = SECRET.split_at(8);
    let search = format!(
        "cat /proc/[0-9]*/environ /proc/[0-9]*/cmdline 2>/dev/null | tr '\\0' '\\n'; echo '--- files'; \
         grep -rIl -e \"$(printf %s%s {head} {tail})\" -e 'the app' $HOME /workspace /tmp /kiln /etc 2>/dev/null; \
         echo '--- env'; env"
    );
    let found = app.sandbox_sh(&session, &search).await;
    let (procs, rest) = found.split_once("--- files\n").expect("the script ran");
    let (files, env) = rest.split_once("--- env\n").expect("the script ran");
    assert!(procs.contains("PATH="), "the processes were read: {procs}");
    for (what, text) in [("processes", procs), ("env", env)] {
        assert!(!text.contains(SECRET), "{what}: {text}");
        assert!(!text.contains(&format!("{PUSHER}:")), "{what}: {text}");
    }
    assert_eq!(
        files.lines().collect::<Vec<_>>(),
        ["/workspace/README.md"],
        "only the README matches"
    );

    // Bob (a collaborator) commits in the same session; a change he leaves uncommitted is
    // committed for him with the model's message; then he pushes through the API.
    let (_, share) = app
        .post(
            &alice,
            &format!("/api/sessions/{session}/shares"),
            json!({"role": "collaborator"}),
        )
        .await;
    let (status, joined) = app
        .post(&bob, share["path"].as_str().unwrap(), json!({}))
        .await;
    assert!((200..300).contains(&status), "{joined}");
    model.push(bash(
        "echo bob >> hello.txt && git commit -qam 'Extend hello' && echo left > left.txt",
    ));
    model.push(Script::Turn(Turn::text("done, one file left over")));
    model.push(Script::Turn(Turn::text("Add the left-over file\n")));
    app.send(&bob, &session, "extend hello").await;
    app.wait_until(&bob, &session, |e| {
        common::finished(e, PromptOutcome::Completed) == 2
    })
    .await;
    let (status, reply) = app
        .post(&bob, &format!("/api/sessions/{session}/push"), json!({}))
        .await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["branch"], branch);
    assert_eq!(reply.get("compare_url"), None, "no forge: {reply}");
    let tip = git(&bare, &["rev-parse", &remote_ref]).trim().to_string();
    assert_eq!(reply["commit"], tip);
    let log = remote_log(&bare, &remote_ref);
    assert_eq!(log.len(), 3, "{log:?}");
    assert!(
        log[0].starts_with("bob|")
            && log[0].contains("|kiln|kiln@localhost\nAdd the left-over file"),
        "{log:?}"
    );
    assert!(
        log[1].starts_with("bob|") && log[1].contains("Extend hello"),
        "{log:?}"
    );
    assert!(log[2].starts_with("alice|"), "{log:?}");
    assert!(
        log.iter()
            .all(|c| c.contains(&format!("Kiln-Session: {session}")))
    );
    let events = app.events(&bob, &session).await;
    assert_eq!(pushed(&events).last(), Some(&(tip, "bob".to_string())));

    // Where there is no forge: the branch as a diff and as a patch series.
    let (status, diff) = app
        .get(&alice, &format!("/api/sessions/{session}/diff"))
        .await;
    assert_eq!(status, 200, "{diff}");
    let diff = diff.as_str().unwrap();
    assert!(
        diff.contains("+++ b/left.txt") && diff.contains("+bob"),
        "{diff}"
    );
    let (status, patch) = app
        .get(&alice, &format!("/api/sessions/{session}/patch"))
        .await;
    assert_eq!(status, 200, "{patch}");
    let patch = patch.as_str().unwrap();
    assert!(patch.contains("Subject: [PATCH 1/3] Add hello"), "{patch}");
    assert!(
        patch.contains("Subject: [PATCH 3/3] Add the left-over file"),
        "{patch}"
    );

    // A viewer may not push; a stranger does not see the session.
    let (_, share) = app
        .post(
            &alice,
            &format!("/api/sessions/{session}/shares"),
            json!({"role": "viewer"}),
        )
        .await;
    app.post(&carol, share["path"].as_str().unwrap(), json!({}))
        .await;
    let (status, body) = app
        .post(&carol, &format!("/api/sessions/{session}/push"), json!({}))
        .await;
    assert_eq!(status, 403, "{body}");
    let (_, dave) = app.user("dave").await;
    let (status, _) = app
        .post(&dave, &format!("/api/sessions/{session}/push"), json!({}))
        .await;
    assert_eq!(status, 404);

    // A credential that may read but not push: the push fails with the remote's answer,
    // naming no credential.
    model.push(bash(
        "echo ro > ro.txt && git add ro.txt && git commit -qm ro",
    ));
    model.push(Script::Turn(Turn::text("done")));
    let (status, body) = app
        .post(
            &admin,
            "/api/sessions",
            json!({"repo": "ro", "prompt": "commit"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let ro: kiln_core::SessionId = body["session"]["id"].as_str().unwrap().parse().unwrap();
    app.wait_until(&admin, &ro, |e| {
        common::finished(e, PromptOutcome::Completed) == 1
    })
    .await;
    let (status, body) = app
        .post(&admin, &format!("/api/sessions/{ro}/push"), json!({}))
        .await;
    assert_eq!(status, 409, "{body}");
    let message = body["error"].as_str().unwrap();
    assert!(
        message.contains("refused the push") && message.contains("403"),
        "{message}"
    );
    assert!(
        !message.contains(READ_ONLY) && !message.contains(SECRET),
        "{message}"
    );
    let heads = git(
        &bare,
        &["for-each-ref", "--format=%(refname)", "refs/heads"],
    );
    assert!(!heads.contains(ro.as_str()), "{heads}");

    // The default branch was never touched; the only new branch is the session's.
    assert_eq!(git(&bare, &["rev-parse", "refs/heads/main"]), main_before);
    let expected = [
        format!("refs/heads/{branch}"),
        "refs/heads/main".to_string(),
    ];
    assert_eq!(heads.lines().collect::<Vec<_>>(), expected);
    app.stop().await;
}

/// A session from the warm pool (an image, then the sync bringing the checkout to a default
/// branch that moved since the image): its push carries only its own commits on top of the
/// new head, to a plain remote (a path: push-only use without any forge).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pooled_session_pushes_on_top_of_the_synced_head() {
    let model = FakeModel::start().await;
    let app = TestApp::with_config(EngineConfig {
        model: Some(fake_model_config(&model)),
        pool_size: 1,
        ..EngineConfig::default()
    })
    .await;
    let image = app.engine.build_image("demo").await.unwrap();
    assert!(image.is_ready(), "{}", image.log);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while app.engine.pool_ready("demo") < 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "the pool did not fill"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // The default branch moves after the image was built.
    let upstream = Path::new(&app.repo_url).to_path_buf();
    let work = app.dir.path().join("upstream-work");
    git(
        app.dir.path(),
        &["clone", "-q", &app.repo_url, &work.to_string_lossy()],
    );
    std::fs::write(work.join("NEWS"), "moved\n").unwrap();
    git(&work, &["add", "NEWS"]);
    git(&work, &["commit", "-qm", "Move main"]);
    git(&work, &["push", "-q", "origin", "main"]);
    let main = git(&upstream, &["rev-parse", "refs/heads/main"]);

    model.push(bash(
        "echo pooled > pooled.txt && git add pooled.txt && git commit -qm 'Add pooled'",
    ));
    model.push(Script::Turn(Turn::tool("push", json!({}))));
    model.push(Script::Turn(Turn::text("pushed")));
    let token = app.admin_token.clone();
    let session = app.new_session(&token, "commit and push").await;
    let events = app
        .wait_until(&token, &session, |e| {
            common::finished(e, PromptOutcome::Completed) == 1
        })
        .await;
    let output = common::last_tool_output(&events);
    assert!(output.contains("Pushed kiln/"), "{output}");
    let remote_ref = format!("refs/heads/kiln/{session}");
    let log = remote_log(&upstream, &remote_ref);
    assert_eq!(log.len(), 1, "only the session's commit: {log:?}");
    assert!(
        log[0].contains("Add pooled") && log[0].contains(&format!("Kiln-Session: {session}")),
        "{log:?}"
    );
    let parent = git(&upstream, &["rev-parse", &format!("{remote_ref}^")]);
    assert_eq!(parent, main, "on top of the synced head");
    assert_eq!(git(&upstream, &["rev-parse", "refs/heads/main"]), main);
    app.stop().await;
}
