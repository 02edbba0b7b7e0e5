//! A session end to end: the real server, real sandboxes, a real git repo, and the fake model
//! server playing scripted turns.

mod common;

use common::{TestApp, assert_roles_alternate, finished, is_finished};
use kiln_protocol::api::{Event, FileChangeKind, PromptOutcome, ToolOutcome};
use kiln_testkit::{FakeModel, Script, Turn};
use serde_json::json;
use std::time::{Duration, Instant};

fn kind(event: &Event) -> String {
    serde_json::to_value(event).unwrap()["type"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prompt_runs_tools_in_the_sandbox_and_every_client_sees_the_same_events() {
    let model = FakeModel::start().await;
    model.push(Script::Turn(Turn::tool(
        "write_file",
        json!({"path": "hello.txt", "content": "hi\nthere\n"}),
    )));
    model.push(Script::Turn(Turn::text("I wrote hello.txt.")));
    let app = TestApp::start(&model).await;
    let token = app.admin_token.clone();
    let session = app.new_session(&token, "write hello.txt").await;

    let mut a = app.ws(&token, &session, 0).await;
    let mut b = app.ws(&token, &session, 0).await;
    let seen_a = a.events_until(is_finished).await;
    let seen_b = b.events_until(is_finished).await;
    assert_eq!(seen_a, seen_b, "two clients see the same events");
    let seqs: Vec<u64> = seen_a.iter().map(|e| e.seq).collect();
    assert_eq!(
        seqs,
        (1..=seqs.len() as u64).collect::<Vec<_>>(),
        "gapless from 1"
    );

    let kinds: Vec<String> = seen_a.iter().map(|e| kind(&e.event)).collect();
    let position = |k: &str| {
        kinds
            .iter()
            .position(|x| x == k)
            .unwrap_or_else(|| panic!("no {k} in {seen_a:#?}"))
    };
    assert_eq!(kinds[0], "session_created");
    assert!(position("prompt_queued") < position("prompt_started"));
    assert!(position("prompt_started") < position("model_request"));
    assert!(position("tool_call_started") < position("file_changed"));
    assert!(position("file_changed") < position("tool_call_finished"));
    assert!(position("tool_call_finished") < position("text_delta"));
    assert_eq!(kinds.last().unwrap(), "prompt_finished");

    let change = seen_a
        .iter()
        .find_map(|e| match &e.event {
            Event::FileChanged {
                path,
                kind,
                added,
                removed,
                author,
                ..
            } => Some((path.clone(), *kind, *added, *removed, author.name.clone())),
            _ => None,
        })
        .unwrap();
    assert_eq!(
        change,
        (
            "hello.txt".into(),
            FileChangeKind::Added,
            2,
            0,
            "admin".into()
        )
    );
    match &seen_a.last().unwrap().event {
        Event::PromptFinished { outcome, .. } => assert_eq!(*outcome, PromptOutcome::Completed),
        other => panic!("{other:?}"),
    }
    let text: String = seen_a
        .iter()
        .filter_map(|e| match &e.event {
            Event::TextDelta { text, .. } => Some(text.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(text, "I wrote hello.txt.");

    // The file is really there, in the session's checkout.
    assert_eq!(
        app.sandbox_sh(&session, "cat hello.txt").await,
        "hi\nthere\n"
    );
    assert_eq!(
        app.sandbox_sh(&session, "git rev-parse --abbrev-ref HEAD")
            .await
            .trim(),
        format!("kiln/{session}")
    );

    // The model got the repo's AGENTS.md, the tools, and then the tool's result.
    let requests = model.requests();
    assert_eq!(requests.len(), 2);
    let system = requests[0].body["system"].to_string();
    assert!(
        system.contains("Run `cargo test` before finishing."),
        "{system}"
    );
    let tools: Vec<&str> = requests[0].body["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    for tool in [
        "read_file",
        "write_file",
        "edit_file",
        "list_files",
        "grep",
        "bash",
        "git_status",
        "git_diff",
    ] {
        assert!(tools.contains(&tool), "{tool} missing from {tools:?}");
    }
    let second = requests[1].body["messages"].to_string();
    assert!(second.contains("tool_result"), "{second}");

    // A client that reconnects after seq k gets exactly what follows k.
    let k = 5;
    let mut c = app.ws(&token, &session, k).await;
    let resumed = c.events_until(is_finished).await;
    assert_eq!(resumed, seen_a[k as usize..].to_vec());
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_ups_queue_and_stop_cancels_within_a_second() {
    let model = FakeModel::start().await;
    // First prompt: the model starts talking and hangs.
    model.push(Script::Hang {
        turn: Turn::text("thinking..."),
    });
    let app = TestApp::start(&model).await;
    let token = app.admin_token.clone();
    let session = app.new_session(&token, "first").await;
    let mut ws = app.ws(&token, &session, 0).await;
    ws.events_until(|e| matches!(e, Event::TextDelta { .. }))
        .await;

    // A follow-up while the agent works is queued, with its author.
    let (alice, alice_token) = app.user("alice").await;
    let (status, share) = app
        .post(
            &token,
            &format!("/api/sessions/{session}/shares"),
            json!({"role": "collaborator"}),
        )
        .await;
    assert_eq!(status, 201, "{share}");
    let (status, _) = app
        .post(&alice_token, share["path"].as_str().unwrap(), json!({}))
        .await;
    assert_eq!(status, 200);
    model.push(Script::Turn(Turn::text("second done")));
    let (status, accepted) = app
        .post(
            &alice_token,
            &format!("/api/sessions/{session}/prompts"),
            json!({"text": "second"}),
        )
        .await;
    assert_eq!(status, 202, "{accepted}");
    let queued = ws
        .events_until(|e| matches!(e, Event::PromptQueued { .. }))
        .await;
    match &queued.last().unwrap().event {
        Event::PromptQueued { author, text, .. } => {
            assert_eq!(author.id.as_str(), alice);
            assert_eq!(text, "second");
        }
        other => panic!("{other:?}"),
    }

    // Stop cancels the hanging model stream quickly; the queue stays and runs next.
    let started = Instant::now();
    let (status, stopped) = app
        .post(&token, &format!("/api/sessions/{session}/stop"), json!({}))
        .await;
    assert_eq!(status, 200);
    assert!(
        stopped["stopped_prompt"].is_string(),
        "it says what it stopped: {stopped}"
    );
    let cancelled = ws
        .events_until(|e| matches!(e, Event::PromptCancelled { .. }))
        .await;
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "stop took {:?}",
        started.elapsed()
    );
    match &cancelled.last().unwrap().event {
        Event::PromptCancelled { by, .. } => assert_eq!(by.name, "admin"),
        other => panic!("{other:?}"),
    }
    let rest = ws.events_until(is_finished).await;
    assert!(rest.iter().any(
        |e| matches!(&e.event, Event::PromptStarted { author, .. } if author.name == "alice")
    ));
    assert!(matches!(
        rest.last().unwrap().event,
        Event::PromptFinished {
            outcome: PromptOutcome::Completed,
            ..
        }
    ));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_kills_a_running_tool_and_clear_queue_cancels_the_queue() {
    let model = FakeModel::start().await;
    model.push(Script::Turn(Turn::tool(
        "bash",
        json!({"command": "echo started; sleep 30"}),
    )));
    let app = TestApp::start(&model).await;
    let token = app.admin_token.clone();
    let session = app.new_session(&token, "sleep").await;
    let mut ws = app.ws(&token, &session, 0).await;
    ws.events_until(|e| matches!(e, Event::ToolOutput { .. }))
        .await;
    let (status, _) = app
        .post(
            &token,
            &format!("/api/sessions/{session}/prompts"),
            json!({"text": "queued one"}),
        )
        .await;
    assert_eq!(status, 202);
    ws.events_until(|e| matches!(e, Event::PromptQueued { .. }))
        .await;

    let started = Instant::now();
    let (status, _) = app
        .post(
            &token,
            &format!("/api/sessions/{session}/stop"),
            json!({"clear_queue": true}),
        )
        .await;
    assert_eq!(status, 200);
    let events = ws
        .events_until(|e| matches!(e, Event::PromptCancelled { .. }))
        .await;
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "stop took {:?}",
        started.elapsed()
    );
    assert!(events.iter().any(|e| matches!(
        &e.event,
        Event::ToolCallFinished {
            outcome: ToolOutcome::Cancelled,
            ..
        }
    )));
    assert!(events.iter().any(
        |e| matches!(&e.event, Event::QueueCleared { cancelled, .. } if cancelled.len() == 1)
    ));
    // Nothing left running in the sandbox.
    let ps = app
        .sandbox_sh(&session, "ps -eo args | grep -c '[s]leep 30' || true")
        .await;
    assert_eq!(ps.trim(), "0");
    // The session stays usable.
    model.push(Script::Turn(Turn::text("still here")));
    app.post(
        &token,
        &format!("/api/sessions/{session}/prompts"),
        json!({"text": "again"}),
    )
    .await;
    let last = ws
        .events_until(|e| matches!(e, Event::PromptFinished { .. }))
        .await;
    assert!(matches!(
        last.last().unwrap().event,
        Event::PromptFinished {
            outcome: PromptOutcome::Completed,
            ..
        }
    ));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insert_mode_delivers_a_follow_up_at_the_next_turn() {
    let model = FakeModel::start().await;
    model.push(Script::Turn(Turn::tool(
        "bash",
        json!({"command": "sleep 2; echo slept"}),
    )));
    model.push(Script::Turn(Turn::text("done with both")));
    let app = TestApp::start(&model).await;
    let token = app.admin_token.clone();
    let session = app.new_session(&token, "first task").await;
    let (status, detail) = app
        .request(
            reqwest::Method::PATCH,
            &token,
            &format!("/api/sessions/{session}"),
            Some(json!({"delivery": "insert"})),
        )
        .await;
    assert_eq!(status, 200, "{detail}");
    assert_eq!(detail["delivery"], "insert");
    let mut ws = app.ws(&token, &session, 0).await;
    ws.events_until(|e| matches!(e, Event::ToolCallStarted { .. }))
        .await;
    app.post(
        &token,
        &format!("/api/sessions/{session}/prompts"),
        json!({"text": "also add tests"}),
    )
    .await;
    let events = ws.events_until(is_finished).await;
    assert!(
        events
            .iter()
            .any(|e| matches!(e.event, Event::PromptInserted { .. }))
    );
    let requests = model.requests();
    assert_eq!(requests.len(), 2, "one prompt, two turns");
    assert!(
        requests[1].body["messages"]
            .to_string()
            .contains("also add tests")
    );
    // Only one prompt ran.
    let started = app
        .events(&token, &session)
        .await
        .iter()
        .filter(|e| matches!(e.event, Event::PromptStarted { .. }))
        .count();
    assert_eq!(started, 1);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_failures_are_retried_or_end_the_turn_cleanly() {
    let model = FakeModel::start().await;
    // 429 with retry-after, then 500, then success: the prompt completes.
    model.push(Script::Status {
        status: 429,
        retry_after: Some(Duration::from_secs(1)),
        message: "slow down".into(),
    });
    model.push(Script::Status {
        status: 500,
        retry_after: None,
        message: "oops".into(),
    });
    model.push(Script::Turn(Turn::text("made it")));
    let app = TestApp::start(&model).await;
    let token = app.admin_token.clone();
    let session = app.new_session(&token, "retry me").await;
    let events = app.wait_for(&token, &session, is_finished).await;
    assert_eq!(finished(&events, PromptOutcome::Completed), 1);
    let requests = model.requests();
    assert_eq!(requests.len(), 3);
    assert!(requests[1].received_at - requests[0].received_at >= Duration::from_millis(950));

    // A stream cut mid-way ends the turn with an error event; the session stays usable.
    model.push(Script::CutAfter {
        turn: Turn::text("partial answer that never ends"),
        events: 3,
    });
    app.send(&token, &session, "cut").await;
    let events = app
        .wait_until(&token, &session, |e| {
            finished(e, PromptOutcome::Failed) == 1
        })
        .await;
    assert!(
        events
            .iter()
            .any(|e| matches!(&e.event, Event::Error { message, .. } if message.contains("model")))
    );

    // A malformed chunk too.
    model.push(Script::Malformed);
    app.send(&token, &session, "garbage").await;
    app.wait_until(&token, &session, |e| {
        finished(e, PromptOutcome::Failed) == 2
    })
    .await;

    model.push(Script::Turn(Turn::text("fine again")));
    app.send(&token, &session, "again").await;
    app.wait_until(&token, &session, |e| {
        finished(e, PromptOutcome::Completed) == 2
    })
    .await;
    // The conversation the model sees stays valid: user/assistant alternate.
    assert_roles_alternate(&model.requests().last().unwrap().body["messages"]);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_model_configured_a_prompt_fails_saying_what_to_set() {
    let app = TestApp::with_config(kiln_engine::EngineConfig::default()).await;
    let token = app.admin_token.clone();
    let session = app.new_session(&token, "hello").await;
    let events = app.wait_for(&token, &session, is_finished).await;
    assert!(events.iter().any(
        |e| matches!(&e.event, Event::Error { message, .. } if message.contains("KILN_MODEL"))
    ));
    let (status, health) = app.get("", "/api/health").await;
    assert_eq!(status, 200);
    assert_eq!(health["model"]["configured"], false);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turn_and_token_limits_end_a_prompt_and_the_session_goes_on() {
    let model = FakeModel::start().await;
    for _ in 0..2 {
        model.push(Script::Turn(Turn::tool(
            "bash",
            json!({"command": "echo again"}),
        )));
    }
    let app = TestApp::with_config(kiln_engine::EngineConfig {
        model: Some(common::fake_model_config(&model)),
        limits: kiln_engine::PromptLimits {
            max_turns: 2,
            max_tokens: 1_000_000,
            ..kiln_engine::PromptLimits::default()
        },
        ..kiln_engine::EngineConfig::default()
    })
    .await;
    let token = app.admin_token.clone();
    let session = app.new_session(&token, "loop forever").await;
    let events = app.wait_for(&token, &session, is_finished).await;
    assert_eq!(finished(&events, PromptOutcome::TurnLimit), 1);
    // A big usage report crosses the token limit: the prompt ends after its tool results are kept.
    model.push(Script::Turn(
        Turn::tool("bash", json!({"command": "echo big"})).with_usage(900_000, 200_000),
    ));
    app.send(&token, &session, "big").await;
    app.wait_until(&token, &session, |e| {
        finished(e, PromptOutcome::TokenLimit) == 1
    })
    .await;
    // The follow-up's request is valid for the provider (every tool_use has its result) and
    // carries the new text.
    model.push(Script::Turn(Turn::text("resumed")));
    app.send(&token, &session, "now stop").await;
    app.wait_until(&token, &session, |e| {
        finished(e, PromptOutcome::Completed) == 1
    })
    .await;
    let messages = model.requests().last().unwrap().body["messages"].clone();
    assert!(messages.to_string().contains("now stop"));
    assert_roles_alternate(&messages);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchers_see_who_is_present_and_who_is_typing() {
    use kiln_protocol::api::{Ephemeral, ServerFrame};
    let model = FakeModel::start().await;
    let app = TestApp::start(&model).await;
    let token = app.admin_token.clone();
    let session = app.new_session(&token, "hello").await;
    let (_, bob_token) = app.user("bob").await;
    let (_, share) = app
        .post(
            &token,
            &format!("/api/sessions/{session}/shares"),
            json!({"role": "viewer"}),
        )
        .await;
    app.post(&bob_token, share["path"].as_str().unwrap(), json!({}))
        .await;

    let mut admin = app.ws(&token, &session, u64::MAX).await;
    let mut bob = app.ws(&bob_token, &session, u64::MAX).await;
    bob.send_text(r#"{"type":"typing"}"#).await;
    bob.send_text(r#"{"type":"shout"}"#).await;
    let mut seen = Vec::new();
    while !seen
        .iter()
        .any(|e| matches!(e, Ephemeral::Typing { user } if user.name == "bob"))
    {
        if let ServerFrame::Ephemeral { event } = admin.frame().await {
            seen.push(event);
        }
    }
    assert!(
        seen.iter()
            .any(|e| matches!(e, Ephemeral::Present { user } if user.name == "bob"))
    );
    // A bad frame gets an error frame; the socket stays open. Before it, bob's socket was
    // told who was already here (the admin, present before bob came).
    let mut told_of_admin = false;
    loop {
        match bob.frame().await {
            ServerFrame::Error { message } => {
                assert!(message.contains("shout"), "{message}");
                break;
            }
            ServerFrame::Ephemeral {
                event: Ephemeral::Present { user },
            } if user.name != "bob" => told_of_admin = true,
            _ => continue,
        }
    }
    assert!(told_of_admin, "a new socket is told who is already present");
    bob.close().await;
    loop {
        if let ServerFrame::Ephemeral {
            event: Ephemeral::Away { user },
        } = admin.frame().await
        {
            assert_eq!(user.name, "bob");
            break;
        }
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_prompt_commits_as_its_author() {
    let model = FakeModel::start().await;
    let commit = |message: &str| {
        Script::Turn(Turn::tool(
            "bash",
            json!({"command": format!(
                "echo {message} >> log.txt && git add log.txt && \
                 git commit -qm {message} && git log -1 --format='%an <%ae> / %cn'"
            )}),
        ))
    };
    model.push(commit("first"));
    model.push(Script::Turn(Turn::text("done")));
    let app = TestApp::start(&model).await;
    let token = app.admin_token.clone();
    let session = app.new_session(&token, "commit something").await;
    let events = app
        .wait_until(&token, &session, |e| {
            common::finished(e, PromptOutcome::Completed) == 1
        })
        .await;
    let (_, me) = app.get(&token, "/api/me").await;
    let admin = me["user"]["id"].as_str().unwrap();
    let output = common::last_tool_output(&events);
    assert_eq!(
        output.lines().next(),
        // The committer is kiln's identity; the author whoever sent the prompt.
        Some(format!("admin <{admin}@users.kiln.local> / kiln").as_str())
    );

    // A collaborator's prompt in the same session commits as them.
    let (alice, alice_token) = app.user("alice").await;
    let (_, share) = app
        .post(
            &token,
            &format!("/api/sessions/{session}/shares"),
            json!({"role": "collaborator"}),
        )
        .await;
    app.post(&alice_token, share["path"].as_str().unwrap(), json!({}))
        .await;
    model.push(commit("second"));
    model.push(Script::Turn(Turn::text("done")));
    app.send(&alice_token, &session, "commit more").await;
    let events = app
        .wait_until(&token, &session, |e| {
            common::finished(e, PromptOutcome::Completed) == 2
        })
        .await;
    let output = common::last_tool_output(&events);
    assert_eq!(
        output.lines().next(),
        Some(format!("alice <{alice}@users.kiln.local> / kiln").as_str())
    );
    app.stop().await;
}
