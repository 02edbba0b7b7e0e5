//! `kiln repo` and `kiln session` as a person uses them: the real `kiln` binary against a real
//! `kiln up` (port 0, its own data dir, real sandboxes) whose model is `kiln_testkit::FakeModel`.
//! What is checked is what a person or a script sees: the transcript, the JSON lines, the exit
//! codes and the messages on stderr.

mod common;

use common::server::{start, text};
use kiln_protocol::api::{
    CreateToken, CreateUser, Event, EventEnvelope, PromptOutcome, PromptStatus, Repo,
    SessionDetail, SessionSummary,
};
use kiln_testkit::{FakeModel, Script, Turn};
use std::process::{Output, Stdio};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

/// Every stdout line as an event; panics on anything else.
fn envelopes(out: &Output) -> Vec<EventEnvelope> {
    text(&out.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line:?}")))
        .collect()
}

fn model_text(events: &[EventEnvelope]) -> String {
    events
        .iter()
        .filter_map(|e| match &e.event {
            Event::TextDelta { text, .. } => Some(text.as_str()),
            _ => None,
        })
        .collect()
}

/// The session id `session new` announces on stderr.
fn announced_id(out: &Output) -> String {
    let stderr = text(&out.stderr);
    let id = stderr
        .split_whitespace()
        .find(|w| w.starts_with("s-"))
        .unwrap_or_else(|| panic!("no session id in {stderr:?}"));
    id.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repos_are_added_and_listed() {
    let model = FakeModel::start().await;
    let server = start(&model).await;
    let path = server.repo.clone();
    let path = path.to_str().unwrap();
    let args = ["repo", "add", "web", path, "--description", "the web app"];
    let out = server.run(&args).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).starts_with("added repo web"),
        "{}",
        text(&out.stdout)
    );

    let out = server.run(&["repo", "ls"]).await;
    let listing = text(&out.stdout);
    assert!(listing.starts_with("NAME"), "{listing}");
    assert!(
        listing
            .lines()
            .any(|l| l.starts_with("web ") && l.contains("the web app"))
    );

    let out = server.run(&["repo", "ls", "--json"]).await;
    let repos: Vec<Repo> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(repos.len(), 1);
    assert_eq!(
        (repos[0].name.as_str(), repos[0].url.as_str()),
        ("web", path)
    );

    // A refusal by the server is exit 1 with its message.
    let out = server.run(&args).await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        text(&out.stderr).starts_with("error: "),
        "{}",
        text(&out.stderr)
    );

    // The environment definition set through the API: set, shown, refused when wrong, cleared.
    let file = server.dir.path().join("environment.toml");
    std::fs::write(&file, "[env]\nGREETING = \"hi\"\n").unwrap();
    let file = file.to_str().unwrap();
    let out = server.run(&["repo", "env", "web", "--set", file]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "[env]\nGREETING = \"hi\"\n");
    let out = server.run(&["repo", "env", "web"]).await;
    assert_eq!(text(&out.stdout), "[env]\nGREETING = \"hi\"\n");
    std::fs::write(file, "colour = 1\n").unwrap();
    let out = server.run(&["repo", "env", "web", "--set", file]).await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        text(&out.stderr).contains("colour"),
        "{}",
        text(&out.stderr)
    );
    let out = server.run(&["repo", "env", "web", "--clear"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "");
    assert!(text(&out.stderr).contains("no environment"), "{out:?}");

    // Access: members only, by user name; a non-member no longer sees the repo.
    let client = server.client();
    for name in ["ann", "ben"] {
        let body = CreateUser {
            name: name.into(),
            admin: false,
            display_name: None,
            email: None,
        };
        client.create_user(&body).await.unwrap();
    }
    let out = server.run(&["repo", "access", "web"]).await;
    assert_eq!(
        text(&out.stdout),
        "web: sessions may be started by every user\nmembers: (none)\n"
    );
    let args = [
        "repo",
        "access",
        "web",
        "--members-only",
        "--members",
        "ann",
    ];
    let out = server.run(&args).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "web: sessions may be started by its members and admins only\nmembers: ann\n"
    );
    let ben = client
        .users()
        .await
        .unwrap()
        .into_iter()
        .find(|u| u.name == "ben")
        .unwrap();
    let body = CreateToken {
        name: "cli".into(),
        user_id: Some(ben.id),
        expires_in_days: None,
        scope: Default::default(),
    };
    let ben_token = client.create_token(&body).await.unwrap().token;
    let out = server
        .kiln_as(&ben_token, &["repo", "ls", "--json"])
        .output()
        .await
        .unwrap();
    assert_eq!(text(&out.stdout).trim(), "[]", "{}", text(&out.stderr));
    let out = server
        .run(&["repo", "access", "web", "--members", "nobody"])
        .await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        text(&out.stderr).contains("no user named \"nobody\""),
        "{out:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_session_streams_and_attach_replays_it() {
    let model = FakeModel::start().await;
    let server = start(&model).await;
    server.add_repo().await;

    let command = "echo hi > hello.txt";
    model.push(Turn::tool(
        "bash",
        serde_json::json!({ "command": command }),
    ));
    model.push(Turn::text("Hello from the fake model."));
    let out = server
        .run(&["session", "new", "--repo", "web", "say hello"])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let transcript = text(&out.stdout);
    let expected_lines = [
        "▶ working on admin's prompt".to_string(),
        format!("▸ bash  {command}"),
        // The change is seen when the command ends, just before the call is reported done.
        "  A hello.txt +1 -0".to_string(),
        format!("✓ bash  {command}  "),
        "Hello from the fake model.".to_string(),
        "■ admin's prompt completed · ".to_string(),
    ];
    let mut lines = transcript.lines();
    for expected in &expected_lines {
        let found = lines.any(|l| l.starts_with(expected.as_str()));
        assert!(found, "{expected:?} in order in\n{transcript}");
    }
    assert!(
        !transcript.contains('\x1b'),
        "no colour when piped: {transcript}"
    );

    model.push(Turn::text("Second session, in JSON."));
    let args = [
        "session", "new", "--repo", "web", "--title", "json", "hi", "--json",
    ];
    let out = server.run(&args).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let events = envelopes(&out);
    assert!(
        events.windows(2).all(|w| w[1].seq > w[0].seq),
        "seqs increase"
    );
    assert_eq!(events[0].seq, 1);
    assert_eq!(model_text(&events), "Second session, in JSON.");
    let last = &events.last().unwrap().event;
    assert!(
        matches!(
            last,
            Event::PromptFinished {
                outcome: PromptOutcome::Completed,
                ..
            }
        ),
        "{last:?}"
    );

    // Attaching later replays the same log and, the session being idle, ends by itself.
    let id = announced_id(&out);
    let out = server.run(&["session", "attach", &id, "--json"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let replayed = envelopes(&out);
    assert!(replayed.len() >= events.len());
    assert_eq!(replayed[..events.len()], events[..]);
    let from = events[2].seq.to_string();
    let out = server
        .run(&["session", "attach", &id, "--json", "--after-seq", &from])
        .await;
    assert_eq!(envelopes(&out)[0].seq, events[3].seq);

    let out = server.run(&["session", "ls", "--json"]).await;
    let sessions: Vec<SessionSummary> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(sessions.len(), 2);
    let out = server.run(&["session", "ls"]).await;
    assert!(
        text(&out.stdout)
            .lines()
            .any(|l| l.starts_with(&id) && l.contains("json"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prompts_are_sent_stopped_and_sessions_shared() {
    let model = FakeModel::start().await;
    let server = start(&model).await;
    server.add_repo().await;
    model.push(Turn::text("ready."));
    let out = server
        .run(&["session", "new", "--repo", "web", "start", "--detach"])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let id = text(&out.stdout).trim().to_string();
    assert!(id.starts_with("s-"), "{id}");

    // The first prompt may still run; `send --wait` waits its turn and then for its own end.
    model.push(Turn::text("second answer"));
    let out = server
        .run(&["session", "send", &id, "go on", "--wait"])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("second answer"),
        "{}",
        text(&out.stdout)
    );

    // A prompt that hangs is stopped from another kiln; the waiting one exits 1.
    model.push(Script::Hang {
        turn: Turn::text("thinking..."),
    });
    let mut waiting = server
        .kiln(&["session", "send", &id, "think hard", "--wait"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = waiting.stdout.take().unwrap();
    let mut seen = Vec::new();
    tokio::time::timeout(Duration::from_secs(60), async {
        while !text(&seen).contains("thinking...") {
            let mut chunk = [0u8; 4096];
            let n = stdout.read(&mut chunk).await.unwrap();
            assert!(n > 0, "send --wait ended early: {}", text(&seen));
            seen.extend_from_slice(&chunk[..n]);
        }
    })
    .await
    .expect("the model's text streams while the prompt runs");
    let out = server.run(&["session", "stop", &id]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let status = tokio::time::timeout(Duration::from_secs(60), async {
        stdout.read_to_end(&mut seen).await.unwrap();
        waiting.wait().await.unwrap()
    })
    .await
    .expect("send --wait ends when its prompt is stopped");
    assert_eq!(status.code(), Some(1), "{}", text(&seen));
    assert!(text(&seen).contains("cancelled by"), "{}", text(&seen));

    let out = server.run(&["session", "show", &id, "--json"]).await;
    let detail: SessionDetail = serde_json::from_slice(&out.stdout).unwrap();
    let statuses: Vec<PromptStatus> = detail.prompts.iter().map(|p| p.status).collect();
    use PromptStatus::{Cancelled, Completed};
    assert_eq!(statuses, [Completed, Completed, Cancelled]);
    let out = server.run(&["session", "show", &id]).await;
    assert!(
        text(&out.stdout).contains("think hard"),
        "{}",
        text(&out.stdout)
    );

    // Share with bob as a viewer: he joins, sees it, and may not prompt.
    let admin = server.client();
    let bob = admin
        .create_user(&CreateUser {
            name: "bob".into(),
            admin: false,
            display_name: None,
            email: None,
        })
        .await
        .unwrap();
    let bob = admin
        .create_token(&CreateToken {
            name: "test".into(),
            user_id: Some(bob.id),
            expires_in_days: None,
            scope: Default::default(),
        })
        .await
        .unwrap()
        .token;
    let out = server
        .run(&["session", "share", &id, "--role", "viewer"])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let code = text(&out.stdout).trim().to_string();
    assert!(text(&out.stderr).contains(&format!("kiln session join {code}")));
    let join = server
        .kiln_as(&bob, &["session", "join", &code])
        .output()
        .await
        .unwrap();
    assert_eq!(join.status.code(), Some(0), "{}", text(&join.stderr));
    assert!(text(&join.stdout).starts_with(&format!("joined {id} as viewer")));
    let ls = server
        .kiln_as(&bob, &["session", "ls"])
        .output()
        .await
        .unwrap();
    assert!(text(&ls.stdout).contains(&id), "{}", text(&ls.stdout));
    let send = server
        .kiln_as(&bob, &["session", "send", &id, "hi"])
        .output()
        .await
        .unwrap();
    assert_eq!(send.status.code(), Some(1), "{}", text(&send.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mistakes_get_clear_messages_and_exit_codes() {
    let model = FakeModel::start().await;
    let server = start(&model).await;

    let out = server
        .kiln_as("wrong-token", &["session", "ls"])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("KILN_TOKEN") && !stderr.contains("wrong-token"),
        "{stderr}"
    );

    let out = server.run(&["session", "show", "s-0123456789abcdef"]).await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        text(&out.stderr).contains("not found"),
        "{}",
        text(&out.stderr)
    );

    let out = server.run(&["session", "show", "not-an-id"]).await;
    assert_eq!(out.status.code(), Some(2), "{out:?}");

    let out = server
        .run(&["session", "attach", "s-0123456789abcdef"])
        .await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        text(&out.stderr).contains("not found"),
        "{}",
        text(&out.stderr)
    );

    let gone = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", gone.local_addr().unwrap());
    drop(gone);
    let out = server.run(&["session", "ls", "--url", &url]).await;
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&url) && stderr.contains("kiln up"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_detaches_and_says_how_to_come_back() {
    let model = FakeModel::start().await;
    let server = start(&model).await;
    server.add_repo().await;
    model.push(Turn::text("done."));
    let out = server.run(&["session", "new", "--repo", "web", "x"]).await;
    let id = announced_id(&out);

    let mut attach = server
        .kiln(&["session", "attach", &id, "--follow"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(attach.stdout.take().unwrap()).lines();
    // Once the replay is on screen, interrupt it as a terminal would.
    tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = stdout.next_line().await.unwrap() {
            if line.contains("completed") {
                return;
            }
        }
        panic!("attach --follow ended by itself");
    })
    .await
    .expect("attach replays the finished prompt");
    let pid = attach.id().unwrap().to_string();
    let status = std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap();
    assert!(status.success());
    let out = tokio::time::timeout(Duration::from_secs(30), attach.wait_with_output())
        .await
        .expect("Ctrl-C ends attach --follow")
        .unwrap();
    assert_eq!(out.status.code(), Some(130));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&format!("kiln session attach {id} --after-seq")),
        "{stderr}"
    );
    // The session was left alone.
    let detail = server.client().session(&id.parse().unwrap()).await.unwrap();
    assert_eq!(detail.prompts.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_rides_out_a_server_restart_without_losing_or_repeating_events() {
    let model = FakeModel::start().await;
    let mut server = start(&model).await;
    server.add_repo().await;
    model.push(Script::Hang {
        turn: Turn::text("working on it"),
    });
    let args = ["session", "new", "--repo", "web", "long job", "--detach"];
    let out = server.run(&args).await;
    let id = text(&out.stdout).trim().to_string();

    let mut attach = server
        .kiln(&["session", "attach", &id, "--json"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(attach.stdout.take().unwrap()).lines();
    let mut lines = Vec::new();
    tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = stdout.next_line().await.unwrap() {
            lines.push(line);
            if lines.last().unwrap().contains("text_delta") {
                return;
            }
        }
        panic!("attach ended before the model spoke: {lines:?}");
    })
    .await
    .expect("the model's text arrives");

    server.crash_and_restart(&model).await;
    let status = tokio::time::timeout(Duration::from_secs(90), async {
        while let Some(line) = stdout.next_line().await.unwrap() {
            lines.push(line);
        }
        attach.wait().await.unwrap()
    })
    .await
    .expect("attach ends once the interrupted session is idle");
    // The prompt was interrupted by the crash: exit 1, and the log shows why.
    assert_eq!(status.code(), Some(1), "{lines:#?}");
    let events: Vec<EventEnvelope> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    assert_eq!(
        seqs,
        (1..=seqs.len() as u64).collect::<Vec<_>>(),
        "every event exactly once"
    );
    let interrupted = |e: &EventEnvelope| matches!(e.event, Event::PromptInterrupted { .. });
    assert!(events.iter().any(interrupted), "{lines:#?}");
}

#[tokio::test]
async fn images_are_built_and_listed() {
    let model = FakeModel::start().await;
    let server = start(&model).await;
    server.add_repo().await;
    let out = server.run(&["image", "build", "web"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    // The log is streamed to stderr (plain lines: no terminal here), then the summary.
    let stderr = text(&out.stderr);
    let header = stderr.find("== web at").expect(&stderr);
    let summary = stderr.find(": ready in").expect(&stderr);
    assert!(header < summary, "{stderr}");

    let out = server.run(&["image", "ls", "web", "--json"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let images: Vec<kiln_protocol::api::Image> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(images.len(), 1);
    assert_eq!(images[0].status, kiln_protocol::api::ImageStatus::Ready);

    // Its log, by default the newest build's; `| head` gets its lines and a quiet exit.
    let out = server.run(&["image", "logs", "web"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).starts_with("== web at"),
        "{}",
        text(&out.stdout)
    );
    let out = server
        .run(&["image", "logs", "web", &images[0].id, "--follow"])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("== web at"),
        "{}",
        text(&out.stdout)
    );

    // --no-wait says how to follow the build it started.
    let out = server.run(&["image", "build", "web", "--no-wait"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("kiln image logs web img-"),
        "{}",
        text(&out.stderr)
    );
    let out = server.run(&["image", "logs", "web", "--follow"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));

    // The one image is the newest: a collection keeps it.
    let out = server.run(&["image", "gc", "--json"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let report: kiln_protocol::api::GcReport = serde_json::from_slice(&out.stdout).unwrap();
    assert!(report.images_collected.is_empty(), "{report:?}");

    let out = server.run(&["image", "build", "nope"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("not found"),
        "{}",
        text(&out.stderr)
    );
}

#[tokio::test]
async fn status_shows_the_server_model_and_repos_at_a_glance() {
    let model = FakeModel::start().await;
    let server = start(&model).await;
    server.add_repo().await;
    let out = server.run(&["status"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    assert!(shown.starts_with("kiln "), "{shown}");
    assert!(
        shown.contains("model: anthropic/fake, reachable ("),
        "{shown}"
    );
    assert!(shown.contains("sandboxes: 0 for sessions"), "{shown}");
    assert!(
        shown.contains("web") && shown.contains("no image"),
        "{shown}"
    );

    let out = server.run(&["status", "--json"]).await;
    let status: kiln_protocol::api::ServerStatus = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status.model.reachable, Some(true));
    assert_eq!(status.repos.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_is_asked_for_approved_with_edits_and_decided_once() {
    let model = FakeModel::start().await;
    let server = start(&model).await;
    server.add_repo().await;
    model.push(Turn::tool(
        "propose_plan",
        serde_json::json!({"plan": "1. Add hello.txt", "title": "Hello"}),
    ));
    let out = server
        .run(&[
            "session",
            "new",
            "--repo",
            "web",
            "--plan",
            "say hello",
            "--json",
        ])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let events = envelopes(&out);
    let plan = events
        .iter()
        .find_map(|e| match &e.event {
            Event::PlanProposed { plan_id, .. } => Some(plan_id.to_string()),
            _ => None,
        })
        .expect("a plan_proposed event");
    let id = announced_id(&out);

    let dir = tempfile::tempdir().unwrap();
    let edited = dir.path().join("plan.md");
    std::fs::write(&edited, "1. Add hello.txt saying EDITED\n").unwrap();
    model.push(Turn::text("Implemented."));
    let edit = edited.to_str().unwrap();
    let args = [
        "session", "plan", "approve", &id, &plan, "--edit", edit, "--reason", "ok",
    ];
    let out = server.run(&args).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains(&format!("approved plan {plan}")),
        "{}",
        text(&out.stderr)
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let client = server.client();
    let session: kiln_core::SessionId = id.parse().unwrap();
    loop {
        let detail = client.session(&session).await.unwrap();
        if detail.prompts.len() == 2 && detail.prompts[1].status == PromptStatus::Completed {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{detail:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let requests = model.requests();
    assert!(
        requests[1].body["messages"]
            .to_string()
            .contains("saying EDITED"),
        "the edited plan reaches the model"
    );
    let out = server.run(&["session", "attach", &id]).await;
    assert!(
        text(&out.stdout).contains(&format!("✓ admin approved plan {plan} with edits")),
        "{}",
        text(&out.stdout)
    );

    // Decided once: a second decision fails and says why.
    let out = server
        .run(&["session", "plan", "reject", &id, &plan, "--reason", "late"])
        .await;
    assert_ne!(out.status.code(), Some(0));
    assert!(
        text(&out.stderr).contains("already approved"),
        "{}",
        text(&out.stderr)
    );

    let out = server.run(&["session", "plan", "mode", &id, "on"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = server.run(&["session", "show", &id, "--json"]).await;
    let detail: SessionDetail = serde_json::from_slice(&out.stdout).unwrap();
    assert!(detail.plan_mode);
}
