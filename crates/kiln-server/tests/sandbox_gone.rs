//! A sandbox that goes away under a running prompt ends that prompt at once with a sandbox
//! error, instead of handing the model a tool error per call until its turns run out; the
//! session's next prompt gets a new sandbox and works.

mod common;

use common::{TestApp, assert_roles_alternate, finished, last_tool_output};
use kiln_protocol::api::{ErrorKind, Event, PromptOutcome, SandboxState};
use kiln_sandbox::Provider;
use kiln_testkit::{FakeModel, Script, Turn};
use serde_json::json;

/// A session whose prompt is in the middle of a 30 s `bash` call, with a model that would go on
/// calling tools for as long as it is asked.
async fn session_in_a_long_call() -> (FakeModel, TestApp, kiln_core::SessionId) {
    let model = FakeModel::start().await;
    model.push(Script::Turn(Turn::tool(
        "bash",
        json!({"command": "echo started; sleep 30"}),
    )));
    model.set_default(Turn::tool("bash", json!({"command": "echo again"})));
    let app = TestApp::start(&model).await;
    let token = app.admin_token.clone();
    let session = app.new_session(&token, "sleep").await;
    app.wait_for(&token, &session, |e| matches!(e, Event::ToolOutput { .. }))
        .await;
    (model, app, session)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prompt_whose_sandbox_is_destroyed_ends_after_one_failed_call() {
    let (model, app, session) = session_in_a_long_call().await;
    let token = app.admin_token.clone();

    let sandboxes: Vec<_> = app
        .provider
        .list()
        .await
        .unwrap()
        .into_iter()
        .filter(|s| s.spec.labels.get("kiln.session").map(String::as_str) == Some(session.as_str()))
        .collect();
    assert_eq!(sandboxes.len(), 1, "{sandboxes:?}");
    let old = sandboxes[0].id.clone();
    app.provider.destroy(&old).await.unwrap();

    let events = app.wait_for(&token, &session, common::is_finished).await;
    assert_eq!(finished(&events, PromptOutcome::Failed), 1, "{events:#?}");
    let calls = events
        .iter()
        .filter(|e| matches!(e.event, Event::ToolCallFinished { .. }))
        .count();
    assert_eq!(
        calls, 1,
        "one failed call, then the prompt ends: {events:#?}"
    );
    let error = events
        .iter()
        .find_map(|e| match &e.event {
            Event::Error {
                kind: ErrorKind::Sandbox,
                message,
                ..
            } => Some(message.clone()),
            _ => None,
        })
        .expect("a sandbox error event");
    assert!(
        error.contains("sandbox went away during the bash call") && error.contains("send a prompt"),
        "{error}"
    );
    assert_eq!(model.requests().len(), 1, "the model was not asked again");

    // The next prompt runs in a new sandbox, on a conversation the model API accepts.
    model.push(Script::Turn(Turn::tool(
        "read_file",
        json!({"path": "README.md"}),
    )));
    model.push(Script::Turn(Turn::text("back")));
    app.send(&token, &session, "read the readme").await;
    let events = app
        .wait_until(&token, &session, |e| {
            finished(e, PromptOutcome::Completed) == 1
        })
        .await;
    assert!(last_tool_output(&events).contains("A demo repository."));
    let restarted = events.iter().any(|e| {
        matches!(&e.event, Event::SandboxStatus { state: SandboxState::Ready, sandbox_id: Some(id), .. } if *id != old.to_string())
    });
    assert!(restarted, "a new sandbox: {events:#?}");
    let request = &model.requests()[1].body;
    assert_roles_alternate(&request["messages"]);
    assert!(
        request["messages"]
            .to_string()
            .contains("sandbox went away"),
        "the failed call has its result: {request}"
    );
    app.stop().await;
}

/// The sandbox's guest process on the host, found by its cgroup (named by the sandbox id).
fn guest_pid(sandbox: &str) -> Option<i32> {
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid: i32 = entry.file_name().to_str()?.parse().ok()?;
            let comm = std::fs::read_to_string(entry.path().join("comm")).ok()?;
            let cgroup = std::fs::read_to_string(entry.path().join("cgroup")).ok()?;
            (comm.trim() == "guest" && cgroup.contains(sandbox)).then_some(pid)
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_guest_ends_the_prompt_and_its_sandbox_is_replaced_and_removed() {
    let (model, app, session) = session_in_a_long_call().await;
    let token = app.admin_token.clone();
    let labelled = |infos: Vec<kiln_sandbox::SandboxInfo>| -> Vec<String> {
        infos
            .into_iter()
            .filter(|s| {
                s.spec.labels.get("kiln.session").map(String::as_str) == Some(session.as_str())
            })
            .map(|s| s.id.to_string())
            .collect()
    };
    let old = labelled(app.provider.list().await.unwrap());
    assert_eq!(old.len(), 1, "{old:?}");
    let pid = guest_pid(&old[0]).expect("the guest process");
    // SIGKILL from the host: what a crash or the OOM killer does to the guest.
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());

    let events = app.wait_for(&token, &session, common::is_finished).await;
    assert_eq!(finished(&events, PromptOutcome::Failed), 1, "{events:#?}");
    assert!(events.iter().any(|e| matches!(
        e.event,
        Event::Error {
            kind: ErrorKind::Sandbox,
            ..
        }
    )));
    assert_eq!(model.requests().len(), 1, "the model was not asked again");

    model.push(Script::Turn(Turn::text("back")));
    app.send(&token, &session, "are you there").await;
    app.wait_until(&token, &session, |e| {
        finished(e, PromptOutcome::Completed) == 1
    })
    .await;
    // The dead sandbox was removed when it was replaced, not left for the next start.
    let now = labelled(app.provider.list().await.unwrap());
    assert_eq!(now.len(), 1, "{now:?}");
    assert_ne!(now, old);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sandbox_that_cannot_be_made_says_once_what_happens_next() {
    let model = FakeModel::start().await;
    let app = TestApp::start(&model).await;
    let token = app.admin_token.clone();
    // The upstream disappears: every fetch of it fails.
    std::fs::remove_dir_all(&app.repo_url).unwrap();
    let session = app.new_session(&token, "hello").await;
    let events = app
        .wait_for(&token, &session, |e| {
            matches!(
                e,
                Event::PromptFinished {
                    outcome: PromptOutcome::Failed,
                    ..
                }
            )
        })
        .await;
    let failures: Vec<&str> = events
        .iter()
        .filter_map(|e| match &e.event {
            Event::SandboxStatus {
                state: SandboxState::Failed,
                detail: Some(detail),
                ..
            } => Some(detail.as_str()),
            _ => None,
        })
        .collect();
    // The warm-up at creation and the prompt each tried once; only the warm-up's status
    // promises a retry (by the prompt), and the prompt's error says what comes after it.
    assert!(!failures.is_empty(), "{events:#?}");
    assert!(
        failures
            .iter()
            .filter(|d| d.ends_with("; the first prompt tries again"))
            .count()
            <= 1,
        "{failures:#?}"
    );
    assert!(
        failures.iter().all(|d| !d.contains("next prompt")),
        "{failures:#?}"
    );
    let errors: Vec<&str> = events
        .iter()
        .filter_map(|e| match &e.event {
            Event::Error {
                kind: ErrorKind::Sandbox,
                message,
                ..
            } => Some(message.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(errors.len(), 1, "{events:#?}");
    assert!(
        errors[0].contains("this prompt cannot run")
            && errors[0].ends_with("the next prompt tries again"),
        "{}",
        errors[0]
    );
    assert!(
        errors[0].contains("git"),
        "the cause is named: {}",
        errors[0]
    );
}
