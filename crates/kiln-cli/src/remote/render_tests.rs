//! The two shapes of the event view, checked on a whole made-up prompt: the plain human shape
//! line by line, and `--json` as one parseable envelope per line.

use super::*;
use kiln_core::{PromptId, Role, UserId};
use kiln_protocol::api::{DeliveryMode, ToolStream, Usage, UserRef};

fn ada() -> UserRef {
    UserRef {
        id: UserId::parse("u-00000000000000aa").unwrap(),
        name: "ada".into(),
    }
}

fn a_prompt() -> Vec<EventEnvelope> {
    let p = PromptId::parse("p-0000000000000001").unwrap();
    let events = vec![
        Event::SessionCreated {
            repo: "web".into(),
            title: "fix the tests".into(),
            by: ada(),
        },
        Event::ParticipantJoined {
            user: ada(),
            role: Role::Owner,
        },
        Event::PromptQueued {
            prompt_id: p.clone(),
            author: ada(),
            text: "make the tests pass\nplease".into(),
            delivery: DeliveryMode::Queue,
            plan: false,
        },
        Event::SandboxStatus {
            state: SandboxState::Ready,
            sandbox_id: Some("sb-1".into()),
            detail: None,
        },
        Event::PromptStarted {
            prompt_id: p.clone(),
            author: ada(),
        },
        Event::ModelRequest {
            prompt_id: p.clone(),
            turn: 1,
            model: "fake".into(),
        },
        Event::TextDelta {
            prompt_id: p.clone(),
            text: "Let me ".into(),
        },
        Event::TextDelta {
            prompt_id: p.clone(),
            text: "run them.".into(),
        },
        Event::ToolCallStarted {
            prompt_id: p.clone(),
            call_id: "c1".into(),
            tool: "bash".into(),
            input: serde_json::json!({"command": "cargo test\necho done"}),
        },
        Event::ToolOutput {
            call_id: "c1".into(),
            stream: ToolStream::Stdout,
            chunk: "running 3 tests\n".into(),
        },
        Event::ToolCallFinished {
            call_id: "c1".into(),
            outcome: ToolOutcome::Ok,
            output: "ok".into(),
            duration_ms: 1234,
        },
        Event::ToolCallStarted {
            prompt_id: p.clone(),
            call_id: "c2".into(),
            tool: "edit".into(),
            input: serde_json::json!({"path": "src/lib.rs", "old": "a", "new": "b"}),
        },
        Event::ToolCallFinished {
            call_id: "c2".into(),
            outcome: ToolOutcome::Error {
                message: "no match".into(),
            },
            output: String::new(),
            duration_ms: 12,
        },
        Event::FileChanged {
            prompt_id: p.clone(),
            author: ada(),
            path: "src/lib.rs".into(),
            kind: FileChangeKind::Modified,
            added: 3,
            removed: 1,
        },
        Event::TextDelta {
            prompt_id: p.clone(),
            text: "Fixed.\n".into(),
        },
        Event::PromptFinished {
            prompt_id: p.clone(),
            outcome: PromptOutcome::Completed,
            usage: Usage {
                input_tokens: 12_345,
                output_tokens: 678,
                ..Usage::default()
            },
        },
    ];
    events
        .into_iter()
        .zip(1..)
        .map(|(event, seq)| EventEnvelope {
            seq,
            at_ms: 1_700_000_000_000,
            event,
        })
        .collect()
}

fn render(json: bool, paint: bool) -> String {
    let mut out = Vec::new();
    let mut renderer = Renderer::new(&mut out, json, false, Paint(paint));
    for envelope in a_prompt() {
        renderer.event(&envelope).unwrap();
    }
    renderer.finish().unwrap();
    drop(renderer);
    String::from_utf8(out).unwrap()
}

#[test]
fn plain_output_reads_as_a_transcript() {
    let expected = "\
· ada started a session on web: fix the tests
· ada joined as owner
● ada queued a prompt: make the tests pass
· sandbox ready
▶ working on ada's prompt
Let me run them.
▸ bash  cargo test
✓ bash  cargo test  1.2s
▸ edit  src/lib.rs
✗ edit  src/lib.rs  12ms  no match
  M src/lib.rs +3 -1
Fixed.
■ ada's prompt completed · 12.3k in / 678 out tokens
";
    assert_eq!(render(false, false), expected);
}

#[test]
fn colour_is_added_only_when_asked() {
    assert!(!render(false, false).contains('\x1b'));
    let coloured = render(false, true);
    assert!(coloured.contains("\x1b[31m✗\x1b[0m"), "{coloured}");
    assert!(coloured.contains("\x1b[32m+3\x1b[0m"), "{coloured}");
}

#[test]
fn json_is_one_envelope_per_line_and_nothing_else() {
    let text = render(true, true);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), a_prompt().len());
    for (line, expected) in lines.iter().zip(a_prompt()) {
        let envelope: EventEnvelope = serde_json::from_str(line).unwrap();
        assert_eq!(envelope, expected);
    }
    assert!(!text.contains('\x1b'));
}

#[test]
fn helpers_cut_and_humanize() {
    assert_eq!(clip("héllo wörld", 5), "héllo…");
    assert_eq!(clip("short", 5), "short");
    assert_eq!(human_duration(Duration::from_millis(999)), "999ms");
    assert_eq!(human_duration(Duration::from_millis(125_000)), "2m05s");
    assert_eq!(human_count(999), "999");
    assert_eq!(human_count(2_500_000), "2.5M");
    assert_eq!(summarize(&serde_json::json!({})), "");
    assert_eq!(summarize(&serde_json::json!({"n": 1})), r#"{"n":1}"#);
}

fn envelopes(events: Vec<Event>) -> Vec<EventEnvelope> {
    events
        .into_iter()
        .zip(1..)
        .map(|(event, seq)| EventEnvelope {
            seq,
            at_ms: 1_700_000_000_000,
            event,
        })
        .collect()
}

#[test]
fn a_status_line_waits_for_the_line_of_model_text_it_arrived_in() {
    let p = PromptId::parse("p-0000000000000001").unwrap();
    let text = |t: &str| Event::TextDelta {
        prompt_id: p.clone(),
        text: t.into(),
    };
    let events = envelopes(vec![
        text("[echo] m"),
        Event::SandboxStatus {
            state: SandboxState::Ready,
            sandbox_id: None,
            detail: None,
        },
        Event::ParticipantJoined {
            user: ada(),
            role: Role::Viewer,
        },
        text("odel=fake\nsecond "),
        Event::ParticipantLeft { user: ada() },
        text("line"),
    ]);
    let mut out = Vec::new();
    let mut renderer = Renderer::new(&mut out, false, false, Paint(false));
    for envelope in &events {
        renderer.event(envelope).unwrap();
    }
    renderer.finish().unwrap();
    drop(renderer);
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "[echo] model=fake\n· sandbox ready\n· ada joined as viewer\nsecond line\n· ada left\n"
    );
}

#[test]
fn a_spinner_waits_for_the_model_on_a_terminal_only() {
    let p = PromptId::parse("p-0000000000000001").unwrap();
    let request = envelopes(vec![Event::ModelRequest {
        prompt_id: p.clone(),
        turn: 1,
        model: "fake".into(),
    }]);
    let first_token = envelopes(vec![Event::TextDelta {
        prompt_id: p,
        text: "hi".into(),
    }]);
    let mut live = Renderer::new(Vec::new(), false, true, Paint(false));
    live.event(&request[0]).unwrap();
    assert!(live.is_waiting());
    live.event(&first_token[0]).unwrap();
    assert!(!live.is_waiting(), "the first token ends the wait");
    let mut piped = Renderer::new(Vec::new(), false, false, Paint(false));
    piped.event(&request[0]).unwrap();
    assert!(!piped.is_waiting());
}

#[test]
fn sub_session_events_get_a_line_each() {
    let p = PromptId::parse("p-0000000000000001").unwrap();
    let child = kiln_core::SessionId::parse("s-00000000000000c1").unwrap();
    let events = envelopes(vec![
        Event::SessionSpawned {
            child: child.clone(),
            repo: "web".into(),
            title: "research".into(),
            prompt_id: p,
        },
        Event::ChildFinished {
            child,
            status: kiln_protocol::api::PromptStatus::Completed,
            summary: "done".into(),
            pull_request: Some(kiln_protocol::api::SessionPullRequest {
                number: 4,
                url: "https://example.test/pr/4".into(),
                state: "open".into(),
            }),
        },
    ]);
    let mut out = Vec::new();
    let mut renderer = Renderer::new(&mut out, false, false, Paint(false));
    for envelope in &events {
        renderer.event(envelope).unwrap();
    }
    renderer.finish().unwrap();
    drop(renderer);
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "· spawned sub-session s-00000000000000c1 on web: research\n\
         · sub-session s-00000000000000c1: prompt completed, pull request #4 https://example.test/pr/4\n"
    );
}

#[test]
fn plans_show_their_text_and_who_decided() {
    let plan_id = kiln_core::PlanId::random();
    let events = envelopes(vec![
        Event::PlanProposed {
            prompt_id: PromptId::random(),
            plan_id: plan_id.clone(),
            title: Some("Fix the tests".into()),
            plan: "1. Read\n2. Fix".into(),
            by_agent: true,
        },
        Event::PlanApproved {
            plan_id: plan_id.clone(),
            by: ada(),
            edited: true,
            plan: "1. Fix".into(),
            prompt_id: PromptId::random(),
        },
        Event::PlanRejected {
            plan_id: plan_id.clone(),
            by: ada(),
            reason: Some("too broad".into()),
            superseded: false,
        },
    ]);
    let mut out = Vec::new();
    let mut renderer = Renderer::new(&mut out, false, false, Paint(false));
    for envelope in &events {
        renderer.event(envelope).unwrap();
    }
    renderer.finish().unwrap();
    drop(renderer);
    let expected = format!(
        "\
◆ plan {plan_id} proposed: Fix the tests
  1. Read
  2. Fix
· approve or reject it: kiln session plan approve|reject SESSION {plan_id}
✓ ada approved plan {plan_id} with edits
✗ ada rejected plan {plan_id}: too broad
"
    );
    assert_eq!(String::from_utf8(out).unwrap(), expected);
}
