//! Sub-sessions with real sandboxes and the fake model scripting the parent's and children's
//! turns: spawn, status, send, wait, stop; limits refused as tool errors; a stop cascading to
//! children; the parent told when a child finishes; children's prompts authored by the parent
//! prompt's author; the tree over the API; and a crash mid-spawn.
//!
//! The fake model answers requests in arrival order, so every script here keeps one request
//! pending at a time: a parent that spawns or sends calls `wait_sessions` in the same turn, and
//! only the child asks the model meanwhile.

mod common;

use common::{TestApp, fake_model_config};
use kiln_core::SessionId;
use kiln_engine::{EngineConfig, SubsessionLimits};
use kiln_protocol::api::{Event, EventEnvelope, PromptStatus};
use kiln_testkit::{FakeModel, Script, Turn};
use serde_json::json;
use std::time::Duration;

fn config(model: &FakeModel, limits: SubsessionLimits) -> EngineConfig {
    let mut config = EngineConfig {
        model: Some(fake_model_config(model)),
        ..EngineConfig::default()
    };
    config.subsessions.limits = limits;
    config
}

/// The children a parent's log says it spawned, in order.
fn spawned(events: &[EventEnvelope]) -> Vec<SessionId> {
    events
        .iter()
        .filter_map(|e| match &e.event {
            Event::SessionSpawned { child, .. } => Some(child.clone()),
            _ => None,
        })
        .collect()
}

/// Every tool call's output, in order.
fn outputs(events: &[EventEnvelope]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match &e.event {
            Event::ToolCallFinished { output, .. } => Some(output.clone()),
            _ => None,
        })
        .collect()
}

fn finished_count(events: &[EventEnvelope]) -> usize {
    events
        .iter()
        .filter(|e| common::is_finished(&e.event))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn spawn_wait_status_send_stop_and_the_tree() {
    let model = FakeModel::start().await;
    let app = TestApp::with_config(config(&model, SubsessionLimits::default())).await;
    let (alice_id, alice) = app.user("alice").await;

    // Alice's prompt spawns a child and waits for it: only the child asks the model meanwhile.
    model.push(
        Turn::tool(
            "spawn_session",
            json!({"repo": "demo", "prompt": "Find the answer.", "title": "research"}),
        )
        .with_tool("wait_sessions", json!({"timeout_s": 60})),
    );
    model.push(Turn::text("The answer is 41."));
    let parent = app.new_session(&alice, "Split this up.").await;
    let events = app
        .wait_until(&alice, &parent, |events| finished_count(events) >= 1)
        .await;
    let children = spawned(&events);
    assert_eq!(children.len(), 1, "{events:#?}");
    let child = children[0].clone();
    let outs = outputs(&events);
    assert!(outs[0].contains(child.as_str()), "{outs:?}");
    assert!(
        outs[1].contains("has finished") && outs[1].contains("The answer is 41."),
        "{outs:?}"
    );
    // The parent's log was told, with the child's words.
    let told = events.iter().find_map(|e| match &e.event {
        Event::ChildFinished {
            child: c,
            status,
            summary,
            ..
        } if *c == child => Some((*status, summary.clone())),
        _ => None,
    });
    assert_eq!(
        told,
        Some((PromptStatus::Completed, "The answer is 41.".to_string()))
    );
    // The system prompt offered sub-sessions.
    let first = &model.requests()[0];
    assert!(
        first.body["system"].to_string().contains("sub-sessions"),
        "{}",
        first.body["system"]
    );

    // The child: Alice's prompt, Alice's role, its parent named.
    let child_events = app.events(&alice, &child).await;
    let author = child_events.iter().find_map(|e| match &e.event {
        Event::PromptQueued { author, text, .. } => Some((author.id.to_string(), text.clone())),
        _ => None,
    });
    assert_eq!(author, Some((alice_id.clone(), "Find the answer.".into())));
    let (status, detail) = app.get(&alice, &format!("/api/sessions/{child}")).await;
    assert_eq!(status, 200, "{detail}");
    assert_eq!(detail["parent"], json!(parent.as_str()));
    assert_eq!(detail["role"], json!("owner"));
    assert_eq!(detail["title"], json!("research"));

    // The tree from either end.
    let (status, tree) = app
        .get(&alice, &format!("/api/sessions/{parent}/tree"))
        .await;
    assert_eq!(status, 200, "{tree}");
    assert_eq!(tree["nodes"].as_array().unwrap().len(), 2, "{tree}");
    assert_eq!(tree["nodes"][1]["id"], json!(child.as_str()));
    assert_eq!(tree["nodes"][1]["parent"], json!(parent.as_str()));
    assert_eq!(tree["nodes"][1]["depth"], json!(1));
    let (_, tree) = app
        .get(&alice, &format!("/api/sessions/{child}/tree"))
        .await;
    assert_eq!(tree["ancestors"], json!([parent.as_str()]));
    // A stranger sees neither.
    let (_, bob) = app.user("bob").await;
    let (status, _) = app.get(&bob, &format!("/api/sessions/{child}/tree")).await;
    assert_eq!(status, 404);

    // A follow-up by another prompt: sent, waited for, its status read.
    model.push(
        Turn::tool(
            "send_to_session",
            json!({"id": child, "text": "Now double it."}),
        )
        .with_tool("wait_sessions", json!({"ids": [child], "timeout_s": 60}))
        .with_tool("session_status", json!({"id": child})),
    );
    model.push(Turn::text("82."));
    app.send(&alice, &parent, "Ask it for more.").await;
    let events = app
        .wait_until(&alice, &parent, |events| finished_count(events) >= 2)
        .await;
    let outs = outputs(&events);
    let n = outs.len();
    assert!(outs[n - 3].starts_with("sent to"), "{outs:?}");
    assert!(outs[n - 2].contains("82."), "{outs:?}");
    assert!(
        outs[n - 1].contains("idle") && outs[n - 1].contains("Last said: 82."),
        "{outs:?}"
    );
    let child_events = app.events(&alice, &child).await;
    let authors: Vec<String> = child_events
        .iter()
        .filter_map(|e| match &e.event {
            Event::PromptQueued { author, .. } => Some(author.id.to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(authors, vec![alice_id.clone(), alice_id.clone()]);

    // A session it did not spawn is refused, by the same words as a made-up id.
    let other = app.new_session(&alice, "unrelated").await;
    app.wait_for(&alice, &other, common::is_finished).await;
    model.push(
        Turn::tool("session_status", json!({"id": other}))
            .with_tool("stop_session", json!({"id": "s-notachild"})),
    );
    app.send(&alice, &parent, "Peek at another.").await;
    let events = app
        .wait_until(&alice, &parent, |events| finished_count(events) >= 3)
        .await;
    let outs = outputs(&events);
    let n = outs.len();
    assert!(
        outs[n - 2].contains("is not a sub-session this session spawned"),
        "{outs:?}"
    );
    assert!(
        outs[n - 1].contains("is not a sub-session this session spawned"),
        "{outs:?}"
    );

    // stop_session: the child hangs on its model request; the parent's short wait ends, then
    // it stops the child and waits for it.
    model.push(
        Turn::tool(
            "send_to_session",
            json!({"id": child, "text": "Think hard."}),
        )
        .with_tool("wait_sessions", json!({"ids": [child], "timeout_s": 2})),
    );
    model.push(Script::Hang {
        turn: Turn::text("thinking"),
    });
    model.push(
        Turn::tool("stop_session", json!({"id": child}))
            .with_tool("wait_sessions", json!({"ids": [child], "timeout_s": 30})),
    );
    app.send(&alice, &parent, "Then stop it.").await;
    let events = app
        .wait_until(&alice, &parent, |events| finished_count(events) >= 4)
        .await;
    let outs = outputs(&events);
    let n = outs.len();
    assert!(outs[n - 3].contains("still working"), "{outs:?}");
    assert!(outs[n - 2].starts_with("stopped"), "{outs:?}");
    assert!(outs[n - 1].contains("has finished"), "{outs:?}");
    let child_events = app.events(&alice, &child).await;
    assert!(
        child_events
            .iter()
            .any(|e| matches!(e.event, Event::PromptCancelled { .. })),
        "{child_events:#?}"
    );
    let cancelled_told = events.iter().any(|e| {
        matches!(&e.event, Event::ChildFinished { status: PromptStatus::Cancelled, child: c, .. } if *c == child)
    });
    assert!(cancelled_told, "{events:#?}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn limits_are_refused_with_their_names_and_values() {
    let model = FakeModel::start().await;
    let limits = SubsessionLimits {
        max_depth: 1,
        max_concurrent_per_parent: 1,
        max_total_per_parent: 2,
    };
    let app = TestApp::with_config(config(&model, limits)).await;
    let token = app.admin_token.clone();

    // Two spawns in one turn: the first child is still at work when the second is asked for.
    // Its first request and the parent's next one both get the default answer.
    model.push(
        Turn::tool("spawn_session", json!({"repo": "demo", "prompt": "one"}))
            .with_tool("spawn_session", json!({"repo": "demo", "prompt": "two"})),
    );
    let parent = app.new_session(&token, "Spawn two.").await;
    let events = app
        .wait_until(&token, &parent, |events| {
            finished_count(events) >= 1
                && events
                    .iter()
                    .any(|e| matches!(e.event, Event::ChildFinished { .. }))
        })
        .await;
    let outs = outputs(&events);
    assert!(outs[0].starts_with("spawned"), "{outs:?}");
    assert!(
        outs[1].contains("max_concurrent_per_parent = 1"),
        "{outs:?}"
    );
    assert_eq!(spawned(&events).len(), 1);

    // A second child (the total is now 2), whose own spawn is past max_depth.
    model.push(
        Turn::tool("spawn_session", json!({"repo": "demo", "prompt": "three"}))
            .with_tool("wait_sessions", json!({"timeout_s": 60})),
    );
    model.push(Turn::tool(
        "spawn_session",
        json!({"repo": "demo", "prompt": "grandchild"}),
    ));
    app.send(&token, &parent, "Another.").await;
    let events = app
        .wait_until(&token, &parent, |events| finished_count(events) >= 2)
        .await;
    let children = spawned(&events);
    assert_eq!(children.len(), 2);
    let child_events = app.events(&token, &children[1]).await;
    let child_outs = outputs(&child_events);
    assert!(
        child_outs[0].contains("max_depth") && child_outs[0].contains("at most 1 deep"),
        "{child_outs:?}"
    );
    assert!(spawned(&child_events).is_empty());

    // A third: past the total.
    model.push(Turn::tool(
        "spawn_session",
        json!({"repo": "demo", "prompt": "four"}),
    ));
    app.send(&token, &parent, "One more.").await;
    let events = app
        .wait_until(&token, &parent, |events| finished_count(events) >= 3)
        .await;
    let outs = outputs(&events);
    assert!(
        outs.last().unwrap().contains("max_total_per_parent = 2"),
        "{outs:?}"
    );
    assert_eq!(spawned(&events).len(), 2);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stopping_a_parent_stops_its_children() {
    let model = FakeModel::start().await;
    let app = TestApp::with_config(config(&model, SubsessionLimits::default())).await;
    let token = app.admin_token.clone();
    model.push(
        Turn::tool(
            "spawn_session",
            json!({"repo": "demo", "prompt": "work long"}),
        )
        .with_tool("wait_sessions", json!({"timeout_s": 600})),
    );
    model.push(Script::Hang {
        turn: Turn::text("working"),
    });
    let parent = app.new_session(&token, "Delegate.").await;
    model.wait_for_requests(2, Duration::from_secs(60)).await;
    let events = app.events(&token, &parent).await;
    let child = spawned(&events)[0].clone();
    assert!(app.engine.is_working(&child).await.unwrap());

    let (status, body) = app
        .post(
            &token,
            &format!("/api/sessions/{parent}/stop"),
            json!({"clear_queue": true}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    app.wait_for(&token, &child, |e| {
        matches!(e, Event::PromptCancelled { .. })
    })
    .await;
    let events = app
        .wait_for(&token, &parent, |e| {
            matches!(e, Event::PromptCancelled { .. })
        })
        .await;
    // The wait was cancelled with the parent's prompt, not left to its 10 minutes.
    assert!(
        events
            .iter()
            .any(|e| matches!(&e.event, Event::ToolCallFinished { outcome, .. } if *outcome == kiln_protocol::api::ToolOutcome::Cancelled)),
        "{events:#?}"
    );
    // Deleting the parent deletes the child with it.
    let (status, body) = app
        .request(
            reqwest::Method::DELETE,
            &token,
            &format!("/api/sessions/{parent}"),
            None,
        )
        .await;
    assert!(status == 200 || status == 204, "{status} {body}");
    let (status, _) = app.get(&token, &format!("/api/sessions/{child}")).await;
    assert_eq!(status, 404);
    assert!(
        app.engine
            .store()
            .all_session_ids()
            .await
            .unwrap()
            .is_empty()
    );
    app.stop().await;
}

/// `kill -9` of kiln mid-spawn, in process: the first engine runs on a runtime of its own that
/// is dropped without any shutdown once the child's index row exists; a second engine starts on
/// the same data dir. The child is not lost (its first prompt was committed with its row) and
/// runs, the parent hears of it, and no sandbox is left that no session owns.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_crash_mid_spawn_loses_no_child_and_orphans_no_sandbox() {
    let model = FakeModel::start().await;
    let config = config(&model, SubsessionLimits::default());
    let dir = tempfile::Builder::new()
        .prefix("ks-")
        .tempdir_in("/tmp")
        .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    let repo_url = common::make_repo(dir.path());
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let provider = kiln_sandbox::LocalProvider::open(kiln_sandbox::LocalConfig::new(&data))
        .await
        .unwrap();
    struct Cleanup(kiln_sandbox::LocalProvider);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            self.0.destroy_all_blocking();
        }
    }
    let _cleanup = Cleanup(provider.clone());

    model.push(
        Turn::tool(
            "spawn_session",
            json!({"repo": "demo", "prompt": "survive"}),
        )
        .with_tool("wait_sessions", json!({"timeout_s": 600})),
    );
    // The first kiln, on its own runtime.
    let first = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (parent, admin) = {
        let (data, provider, config) = (data.clone(), provider.clone(), config.clone());
        first
            .spawn(async move {
                let store = kiln_store::Store::open(&data).await.unwrap();
                kiln_server::bootstrap(&store, &data).await.unwrap();
                let admin = store.user_by_name("admin").await.unwrap().unwrap();
                store
                    .create_repo(&kiln_protocol::api::CreateRepo {
                        name: "demo".into(),
                        url: repo_url,
                        default_branch: None,
                        description: None,
                        hooks: Vec::new(),
                        environment: None,
                        check: false,
                    })
                    .await
                    .unwrap();
                let engine =
                    kiln_engine::Engine::start(store, std::sync::Arc::new(provider), data, config)
                        .await
                        .unwrap();
                let admin = kiln_protocol::api::UserRef {
                    id: admin.id,
                    name: admin.name,
                };
                let created = engine
                    .create_session(
                        &admin,
                        &kiln_protocol::api::CreateSession {
                            repo: "demo".into(),
                            prompt: "Delegate.".into(),
                            title: None,
                            plan: false,
                        },
                    )
                    .await
                    .unwrap();
                // The engine lives on in this runtime's tasks.
                std::mem::forget(engine);
                (created.session.id, admin)
            })
            .await
            .unwrap()
    };
    // Another view of the same data dir, as the next process will have.
    let store = kiln_store::Store::open(&data).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let child = loop {
        if let Some(row) = store.children(&parent).await.unwrap().pop() {
            break row.id;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no child was spawned"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    // The crash: every task of the first kiln stops where it is.
    first.shutdown_background();

    // Committed with the row: the child's first prompt.
    let log = store.open_session(&child).await.unwrap();
    let prompts = log.prompts().await.unwrap();
    assert_eq!(prompts.len(), 1, "{prompts:?}");
    assert_eq!(prompts[0].text, "survive");
    assert_eq!(prompts[0].author, admin);

    let engine = kiln_engine::Engine::start(
        store.clone(),
        std::sync::Arc::new(provider.clone()),
        data.clone(),
        config,
    )
    .await
    .unwrap();
    // Recovery resumed the child's queue (or, had its prompt started, marked it interrupted:
    // then it is sent again, as anyone would).
    let status = log.prompts().await.unwrap()[0].status;
    if status == PromptStatus::Interrupted {
        engine
            .retry_prompt(&child, &prompts[0].id, &admin)
            .await
            .unwrap();
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let done = log
            .prompts()
            .await
            .unwrap()
            .iter()
            .any(|p| p.status == PromptStatus::Completed);
        if done {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the child never ran"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The parent still hears of its child.
    let parent_log = store.open_session(&parent).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let events = parent_log.read_after(0, 5000).await.unwrap();
        if events.iter().any(
            |e| matches!(&e.event, Event::ChildFinished { child: c, status: PromptStatus::Completed, .. } if *c == child),
        ) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{events:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Every sandbox belongs to a session in the index.
    let sessions = store.all_session_ids().await.unwrap();
    let mut claimed = Vec::new();
    for id in &sessions {
        if let Some(sandbox) = store
            .open_session(id)
            .await
            .unwrap()
            .claimed_sandbox()
            .await
            .unwrap()
        {
            claimed.push(sandbox);
        }
    }
    use kiln_sandbox::Provider;
    for info in provider.list().await.unwrap() {
        let owner = info
            .spec
            .labels
            .get("kiln.session")
            .and_then(|s| SessionId::parse(s));
        assert!(
            owner.is_some_and(|o| sessions.contains(&o))
                || claimed.iter().any(|c| c == info.id.as_str()),
            "an orphan sandbox: {info:?}"
        );
    }
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_working_parent_hears_of_a_finished_child_at_its_next_turn() {
    let model = FakeModel::start().await;
    let app = TestApp::with_config(config(&model, SubsessionLimits::default())).await;
    let token = app.admin_token.clone();
    // The parent's short wait ends while the child's answer is still coming; the parent then
    // works (a bash sleep) while the child finishes, and its next request carries the news.
    model.push(
        Turn::tool("spawn_session", json!({"repo": "demo", "prompt": "slow"}))
            .with_tool("wait_sessions", json!({"timeout_s": 5})),
    );
    model.push(Turn::text("Slow but done.").with_ttft(Duration::from_secs(6)));
    model.push(Turn::tool("bash", json!({"command": "sleep 9"})));
    let parent = app.new_session(&token, "Delegate and keep busy.").await;
    let events = app
        .wait_until(&token, &parent, |events| finished_count(events) >= 1)
        .await;
    let outs = outputs(&events);
    assert!(outs[1].contains("still working"), "{outs:?}");
    let told = model.requests().iter().any(|r| {
        r.body["messages"]
            .to_string()
            .contains("[kiln] Sub-session")
            && r.body["messages"].to_string().contains("Slow but done.")
    });
    assert!(told, "no request carried the child's end");
    assert!(
        events.iter().any(|e| matches!(
            e.event,
            Event::ChildFinished {
                status: PromptStatus::Completed,
                ..
            }
        )),
        "{events:#?}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_child_needs_its_author_to_be_allowed_on_its_repo() {
    let model = FakeModel::start().await;
    let app = TestApp::with_config(config(&model, SubsessionLimits::default())).await;
    let (_, alice) = app.user("alice").await;
    let (status, body) = app
        .post(
            &app.admin_token,
            "/api/repos",
            json!({"name": "private", "url": app.repo_url}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = app
        .request(
            reqwest::Method::PUT,
            &app.admin_token,
            "/api/repos/private/access",
            Some(json!({"mode": "members", "members": []})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    model.push(
        Turn::tool(
            "spawn_session",
            json!({"repo": "private", "prompt": "sneak in"}),
        )
        .with_tool("spawn_session", json!({"repo": "nowhere", "prompt": "x"})),
    );
    let parent = app.new_session(&alice, "Try the private repo.").await;
    let events = app.wait_for(&alice, &parent, common::is_finished).await;
    let outs = outputs(&events);
    assert!(
        outs[0].contains("\"private\"") && outs[0].contains("may not start sessions"),
        "{outs:?}"
    );
    assert!(outs[1].contains("\"nowhere\""), "{outs:?}");
    assert!(spawned(&events).is_empty());
    assert_eq!(app.engine.store().all_session_ids().await.unwrap().len(), 1);
    app.stop().await;
}
