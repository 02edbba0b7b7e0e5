//! A sandbox that goes away under a running prompt ends that prompt at once with a sandbox
//! error, instead of handing the model a tool error per call until its turns run out; the
//! session's next prompt gets a new sandbox and works.

mod common;

use common::{TestApp, assert_roles_alternate, finished, last_tool_output};
use kiln_protocol::api::{ErrorKind, Event, PromptOutcome, SandboxState};
use kiln_sandbox::Provider;
use kiln_testkit::{FakeModel, Script, Turn};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prompt_whose_sandbox_is_destroyed_ends_after_one_failed_call() {
    let model = FakeModel::start().await;
    model.push(Script::Turn(Turn::tool(
        "bash",
        json!({"command": "echo started; sleep 30"}),
    )));
    // The model would go on calling tools for as long as it is asked.
    model.set_default(Turn::tool("bash", json!({"command": "echo again"})));
    let app = TestApp::start(&model).await;
    let token = app.admin_token.clone();
    let session = app.new_session(&token, "sleep").await;
    app.wait_for(&token, &session, |e| matches!(e, Event::ToolOutput { .. }))
        .await;

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
    assert_eq!(calls, 1, "one failed call, then the prompt ends: {events:#?}");
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
        request["messages"].to_string().contains("sandbox went away"),
        "the failed call has its result: {request}"
    );
    app.stop().await;
}
