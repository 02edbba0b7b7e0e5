//! Plan mode end to end: a plan-first prompt runs with read-only tools and ends with a proposed
//! plan; collaborators (not viewers) approve, edit or reject it; an approval implements it as
//! the original author's prompt with every tool; a plan survives a restart of the engine.
//! Real sandboxes, real SQLite, the fake model scripting the calls.

mod common;

use common::{TestApp, fake_model_config};
use kiln_core::{PlanId, SessionId};
use kiln_protocol::api::{Event, EventEnvelope, PromptOutcome};
use kiln_testkit::{FakeModel, Script, Turn};
use serde_json::{Value, json};
use std::time::Duration;

/// The names of the tools offered in a recorded model request.
fn tool_names(request: &Value) -> Vec<String> {
    request["tools"]
        .as_array()
        .expect("a tools list")
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect()
}

/// The plan a session's log proposed last.
fn proposed(events: &[EventEnvelope]) -> (PlanId, String) {
    events
        .iter()
        .rev()
        .find_map(|e| match &e.event {
            Event::PlanProposed { plan_id, plan, .. } => Some((plan_id.clone(), plan.clone())),
            _ => None,
        })
        .expect("a plan_proposed event")
}

/// Scripts a plan-first run: the agent reads the README, then proposes `plan`.
fn script_plan(model: &FakeModel, plan: &str) {
    model.push(Script::Turn(Turn::tool(
        "read_file",
        json!({"path": "README.md"}),
    )));
    model.push(Script::Turn(Turn::tool(
        "propose_plan",
        json!({"plan": plan, "title": "Make the answer 42"}),
    )));
}

/// A session whose first prompt asks for a plan, run until its plan is proposed.
async fn planned_session(app: &TestApp, token: &str) -> (SessionId, Vec<EventEnvelope>) {
    let (status, body) = app
        .post(
            token,
            "/api/sessions",
            json!({"repo": "demo", "prompt": "make answer() return 42", "plan": true}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let session: SessionId = body["session"]["id"].as_str().unwrap().parse().unwrap();
    let events = app
        .wait_for(token, &session, |e| {
            matches!(e, Event::PromptFinished { .. })
        })
        .await;
    (session, events)
}

/// Adds a participant with `role` by share link.
async fn join(app: &TestApp, owner: &str, token: &str, session: &SessionId, role: &str) {
    let (status, share) = app
        .post(
            owner,
            &format!("/api/sessions/{session}/shares"),
            json!({"role": role}),
        )
        .await;
    assert_eq!(status, 201, "{share}");
    let (status, joined) = app
        .post(token, share["path"].as_str().unwrap(), json!({}))
        .await;
    assert_eq!(status, 200, "{joined}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_is_proposed_read_only_and_an_edited_approval_is_implemented_by_its_author() {
    let model = FakeModel::start().await;
    let app = TestApp::start(&model).await;
    let (owner_id, owner) = app.user("alice").await;
    let (collaborator_id, collaborator) = app.user("bob").await;
    let (_, viewer) = app.user("carol").await;
    let (_, stranger) = app.user("dave").await;
    script_plan(&model, "1. Change `answer` in src/lib.rs to return 42.");
    let (session, events) = planned_session(&app, &owner).await;

    // Read-only tools and propose_plan, told so in the system prompt.
    let requests = model.requests();
    assert_eq!(requests.len(), 2, "{requests:#?}");
    for request in &requests {
        assert_eq!(
            tool_names(&request.body),
            [
                "read_file",
                "list_files",
                "grep",
                "session_status",
                "wait_sessions",
                "propose_plan"
            ]
        );
        assert!(
            request.body["system"].to_string().contains("PLAN MODE"),
            "{}",
            request.body["system"]
        );
    }
    let (plan_id, plan) = proposed(&events);
    assert_eq!(plan, "1. Change `answer` in src/lib.rs to return 42.");
    assert!(
        events
            .iter()
            .any(|e| matches!(&e.event, Event::PromptQueued { plan: true, .. }))
    );
    assert_eq!(common::finished(&events, PromptOutcome::Completed), 1);
    assert!(
        !events
            .iter()
            .any(|e| matches!(&e.event, Event::FileChanged { .. })),
        "nothing written while planning"
    );

    join(&app, &owner, &collaborator, &session, "collaborator").await;
    join(&app, &owner, &viewer, &session, "viewer").await;
    let path = format!("/api/sessions/{session}/plan/{plan_id}");
    let (status, body) = app
        .post(&viewer, &path, json!({"decision": "approve"}))
        .await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("viewers"),
        "{body}"
    );
    let (status, body) = app
        .post(&stranger, &path, json!({"decision": "approve"}))
        .await;
    assert_eq!(status, 404, "{body}");
    // An edited plan with a reject is a mistake the caller hears about.
    let (status, body) = app
        .post(
            &collaborator,
            &path,
            json!({"decision": "reject", "plan": "something else"}),
        )
        .await;
    assert_eq!(status, 400, "{body}");

    // The collaborator approves an edited plan; the agent implements it with every tool.
    model.push(Script::Turn(Turn::tool(
        "write_file",
        json!({"path": "src/lib.rs", "content": "pub fn answer() -> u32 {\n    42\n}\n"}),
    )));
    model.push(Script::Turn(Turn::text("Done: answer() returns 42.")));
    let edited = "1. Change `answer` to return 42.\n2. EDITED: keep the signature.";
    let (status, decided) = app
        .post(
            &collaborator,
            &path,
            json!({"decision": "approve", "plan": edited, "reason": "fine with one addition"}),
        )
        .await;
    assert_eq!(status, 200, "{decided}");
    assert_eq!(decided["decision"], "approve");
    let implementation = decided["prompt_id"].as_str().unwrap().to_string();
    let events = app
        .wait_until(&owner, &session, |events| {
            common::finished(events, PromptOutcome::Completed) == 2
        })
        .await;
    let approved = events
        .iter()
        .find_map(|e| match &e.event {
            Event::PlanApproved {
                plan_id: id,
                by,
                edited: was_edited,
                plan,
                prompt_id,
            } if *id == plan_id => Some((
                by.id.to_string(),
                *was_edited,
                plan.clone(),
                prompt_id.to_string(),
            )),
            _ => None,
        })
        .expect("plan_approved");
    assert_eq!(
        approved,
        (
            collaborator_id,
            true,
            edited.to_string(),
            implementation.clone()
        )
    );
    let started_by = events
        .iter()
        .find_map(|e| match &e.event {
            Event::PromptStarted { prompt_id, author } if prompt_id.as_str() == implementation => {
                Some(author.id.to_string())
            }
            _ => None,
        })
        .expect("the implementation started");
    assert_eq!(started_by, owner_id, "the original prompt's author");
    assert!(events.iter().any(|e| matches!(
        &e.event,
        Event::FileChanged { path, .. } if path == "src/lib.rs"
    )));

    let requests = model.requests();
    assert_eq!(requests.len(), 4, "{requests:#?}");
    let implementing = &requests[2].body;
    let tools = tool_names(implementing);
    for tool in ["write_file", "edit_file", "bash"] {
        assert!(tools.contains(&tool.to_string()), "{tools:?}");
    }
    assert!(!tools.contains(&"propose_plan".to_string()), "{tools:?}");
    assert!(!implementing["system"].to_string().contains("PLAN MODE"));
    let last_user = implementing["messages"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .to_string();
    assert!(
        last_user.contains("EDITED: keep the signature"),
        "{last_user}"
    );
    assert!(last_user.contains("fine with one addition"), "{last_user}");
    common::assert_roles_alternate(&implementing["messages"]);
    assert_eq!(
        app.sandbox_sh(&session, "cat src/lib.rs").await,
        "pub fn answer() -> u32 {\n    42\n}\n"
    );

    // Deciding twice is a conflict, whichever way.
    for decision in ["approve", "reject"] {
        let (status, body) = app.post(&owner, &path, json!({"decision": decision})).await;
        assert_eq!(status, 409, "{body}");
        assert!(
            body["error"].as_str().unwrap().contains("already approved"),
            "{body}"
        );
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_plan_runs_nothing_and_a_new_prompt_supersedes_a_pending_one() {
    let model = FakeModel::start().await;
    let app = TestApp::start(&model).await;
    let (owner_id, owner) = app.user("alice").await;
    script_plan(&model, "1. Rewrite everything.");
    let (session, events) = planned_session(&app, &owner).await;
    let (plan_id, _) = proposed(&events);
    let (status, decided) = app
        .post(
            &owner,
            &format!("/api/sessions/{session}/plan/{plan_id}"),
            json!({"decision": "reject", "reason": "too broad"}),
        )
        .await;
    assert_eq!(status, 200, "{decided}");
    assert!(decided.get("prompt_id").is_none(), "{decided}");
    let events = app
        .wait_for(&owner, &session, |e| {
            matches!(e, Event::PlanRejected { .. })
        })
        .await;
    let rejected = events.iter().find_map(|e| match &e.event {
        Event::PlanRejected {
            by,
            reason,
            superseded,
            ..
        } => Some((by.id.to_string(), reason.clone(), *superseded)),
        _ => None,
    });
    assert_eq!(
        rejected,
        Some((owner_id.clone(), Some("too broad".into()), false))
    );

    // Plan mode for the session: the next prompt plans first without asking.
    let (status, detail) = app
        .request(
            reqwest::Method::PATCH,
            &owner,
            &format!("/api/sessions/{session}"),
            Some(json!({"plan_mode": true})),
        )
        .await;
    assert_eq!(status, 200, "{detail}");
    assert_eq!(detail["plan_mode"], true);
    script_plan(&model, "2. A smaller plan.");
    app.send(&owner, &session, "try again, smaller").await;
    let events = app
        .wait_until(&owner, &session, |events| {
            common::finished(events, PromptOutcome::Completed) == 2
        })
        .await;
    // The rejection queued nothing: the only later model requests are the new prompt's.
    let requests = model.requests();
    assert_eq!(requests.len(), 4, "{requests:#?}");
    assert_eq!(
        tool_names(&requests[2].body),
        [
            "read_file",
            "list_files",
            "grep",
            "session_status",
            "wait_sessions",
            "propose_plan"
        ]
    );
    let queued_plans = events
        .iter()
        .filter(|e| matches!(&e.event, Event::PromptQueued { plan: true, .. }))
        .count();
    assert_eq!(queued_plans, 2);
    let (second, _) = proposed(&events);
    assert_ne!(second, plan_id);

    // A new prompt while that plan waits supersedes it; approving it later is a conflict.
    model.push(Script::Turn(Turn::text("ok, no plan needed")));
    let (status, body) = app
        .request(
            reqwest::Method::PATCH,
            &owner,
            &format!("/api/sessions/{session}"),
            Some(json!({"plan_mode": false})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    app.send(&owner, &session, "never mind, just tell me about it")
        .await;
    let events = app
        .wait_until(&owner, &session, |events| {
            common::finished(events, PromptOutcome::Completed) == 3
        })
        .await;
    assert!(events.iter().any(|e| matches!(
        &e.event,
        Event::PlanRejected { plan_id, superseded: true, .. } if *plan_id == second
    )));
    let (status, body) = app
        .post(
            &owner,
            &format!("/api/sessions/{session}/plan/{second}"),
            json!({"decision": "approve"}),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("already rejected"),
        "{body}"
    );
    // The plain prompt ran with every tool.
    let requests = model.requests();
    assert_eq!(requests.len(), 5);
    assert!(tool_names(&requests[4].body).contains(&"bash".to_string()));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_plan_survives_a_restart_and_can_still_be_approved() {
    let model = FakeModel::start().await;
    let app = TestApp::start(&model).await;
    let (owner_id, owner) = app.user("alice").await;
    script_plan(&model, "1. Add a CHANGELOG.");
    let (session, events) = planned_session(&app, &owner).await;
    let (plan_id, _) = proposed(&events);

    app.engine.shutdown().await;
    let data = app.data_dir();
    let store = kiln_store::Store::open(&data).await.unwrap();
    let provider = std::sync::Arc::new(app.provider.clone());
    let config = kiln_engine::EngineConfig {
        model: Some(fake_model_config(&model)),
        ..kiln_engine::EngineConfig::default()
    };
    let engine = kiln_engine::Engine::start(store, provider, data, config)
        .await
        .unwrap();
    let log = engine.store().open_session(&session).await.unwrap();
    let pending = log.pending_plans().await.unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].id, plan_id);

    model.push(Script::Turn(Turn::tool(
        "bash",
        json!({"command": "echo '# Changelog' > CHANGELOG.md"}),
    )));
    model.push(Script::Turn(Turn::text("Added.")));
    let by = kiln_protocol::api::UserRef {
        id: owner_id.parse().unwrap(),
        name: "alice".into(),
    };
    let decision = kiln_protocol::api::PlanDecision {
        decision: kiln_protocol::api::PlanVerdict::Approve,
        plan: None,
        reason: None,
    };
    let decided = engine
        .decide_plan(&session, &plan_id, &by, &decision)
        .await
        .unwrap();
    let implementation = decided.prompt_id.expect("an implementation prompt");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let events = loop {
        let events = log.read_after(0, 5_000).await.unwrap();
        if events.iter().any(|e| {
            matches!(&e.event, Event::PromptFinished { prompt_id, .. } if *prompt_id == implementation)
        }) {
            break events;
        }
        assert!(tokio::time::Instant::now() < deadline, "{events:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(events.iter().any(|e| matches!(
        &e.event,
        Event::PlanApproved { plan_id: id, edited: false, .. } if *id == plan_id
    )));
    assert_eq!(common::finished(&events, PromptOutcome::Completed), 2);
    let requests = model.requests();
    assert_eq!(requests.len(), 4, "{requests:#?}");
    assert!(
        requests[2].body["messages"]
            .to_string()
            .contains("Add a CHANGELOG"),
        "the approved plan reaches the model"
    );
    engine.shutdown().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_insert_mode_a_plan_first_prompt_waits_for_a_read_only_run_of_its_own() {
    let model = FakeModel::start().await;
    let app = TestApp::start(&model).await;
    let (_, owner) = app.user("alice").await;
    // The first prompt's model turn is slow, so the next prompt arrives while it runs.
    model.push(Script::Turn(
        Turn::tool("bash", json!({"command": "true"})).with_ttft(Duration::from_secs(2)),
    ));
    model.push(Script::Turn(Turn::text("first done")));
    script_plan(&model, "3. Only a plan.");
    let session = app.new_session(&owner, "do something").await;
    let (status, body) = app
        .request(
            reqwest::Method::PATCH,
            &owner,
            &format!("/api/sessions/{session}"),
            Some(json!({"delivery": "insert"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    app.wait_for(&owner, &session, |e| {
        matches!(e, Event::ModelRequest { .. })
    })
    .await;
    let (status, body) = app
        .post(
            &owner,
            &format!("/api/sessions/{session}/prompts"),
            json!({"text": "plan the next step", "plan": true}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let events = app
        .wait_until(&owner, &session, |events| {
            common::finished(events, PromptOutcome::Completed) == 2
        })
        .await;
    assert!(
        !events
            .iter()
            .any(|e| matches!(&e.event, Event::PromptInserted { .. })),
        "a plan-first prompt is never inserted: {events:#?}"
    );
    let requests = model.requests();
    assert_eq!(requests.len(), 4, "{requests:#?}");
    assert!(tool_names(&requests[1].body).contains(&"bash".to_string()));
    assert!(
        !requests[1].body["messages"]
            .to_string()
            .contains("plan the next step"),
        "the running prompt was not given the plan-first prompt"
    );
    assert_eq!(
        tool_names(&requests[2].body),
        [
            "read_file",
            "list_files",
            "grep",
            "session_status",
            "wait_sessions",
            "propose_plan"
        ]
    );
    proposed(&events);
    app.stop().await;
}
