//! Spend (issue 15) end to end: usage events with cache tokens from both provider formats and
//! their cost, cost caps per prompt and per session ending a run with a conversation the next
//! prompt can continue, daily budgets refusing prompts, and a long conversation compacted to
//! fit a small context window. Real server, real sandboxes, the fake model.

mod common;

use common::{TestApp, assert_roles_alternate, finished, is_finished};
use kiln_engine::{Budgets, EngineConfig, Price, Prices, PromptLimits};
use kiln_model::ModelConfig;
use kiln_protocol::api::{Event, EventEnvelope, PromptOutcome, Usage};
use kiln_testkit::{FakeModel, Script, Turn};
use serde_json::json;

/// $1 per million input tokens, $10 per million output tokens, for every model.
fn prices() -> Prices {
    Prices(vec![Price {
        model: "*".into(),
        input_usd_per_mtok: 1.0,
        output_usd_per_mtok: 10.0,
        cache_read_usd_per_mtok: None,
        cache_write_usd_per_mtok: None,
    }])
}

fn config(model: &FakeModel) -> EngineConfig {
    EngineConfig {
        model: Some(common::fake_model_config(model)),
        prices: prices(),
        ..EngineConfig::default()
    }
}

fn usages(events: &[EventEnvelope]) -> Vec<(u32, u64, u64, u64, u64, Option<f64>)> {
    events
        .iter()
        .filter_map(|e| match &e.event {
            Event::ModelUsage {
                turn,
                input_tokens,
                output_tokens,
                cache_read_tokens,
                cache_write_tokens,
                cost_usd,
                ..
            } => Some((
                *turn,
                *input_tokens,
                *output_tokens,
                *cache_read_tokens,
                *cache_write_tokens,
                *cost_usd,
            )),
            _ => None,
        })
        .collect()
}

fn prompt_usage(events: &[EventEnvelope]) -> Vec<Usage> {
    events
        .iter()
        .filter_map(|e| match &e.event {
            Event::PromptFinished { usage, .. } => Some(*usage),
            _ => None,
        })
        .collect()
}

fn limits_reached(events: &[EventEnvelope]) -> Vec<(String, f64, f64, String)> {
    events
        .iter()
        .filter_map(|e| match &e.event {
            Event::LimitReached {
                limit,
                value,
                spent,
                message,
                ..
            } => Some((limit.clone(), *value, *spent, message.clone())),
            _ => None,
        })
        .collect()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_events_carry_cache_tokens_and_cost_from_both_provider_formats() {
    let model = FakeModel::start().await;
    let openai = {
        let env = |key: &str| match key {
            "OPENAI_API_KEY" => Some(model.api_key().to_string()),
            "OPENAI_BASE_URL" => Some(format!("{}/v1", model.url())),
            _ => None,
        };
        ModelConfig::resolve(Some("openai/gpt-test"), env)
            .unwrap()
            .unwrap()
    };
    for (wire, model_config) in [
        ("anthropic", common::fake_model_config(&model)),
        ("openai", openai),
    ] {
        // 100k prompt tokens, 60k of them read from the cache and (Anthropic) 20k written to it.
        model.push(Script::Turn(
            Turn::tool("bash", json!({"command": "true"}))
                .with_usage(100_000, 1_000)
                .with_cache(60_000, 20_000),
        ));
        model.push(Script::Turn(Turn::text("done").with_usage(2_000, 100)));
        let app = TestApp::with_config(EngineConfig {
            model: Some(model_config),
            prices: prices(),
            ..EngineConfig::default()
        })
        .await;
        let token = app.admin_token.clone();
        let session = app.new_session(&token, "look").await;
        let events = app.wait_for(&token, &session, is_finished).await;
        assert_eq!(finished(&events, PromptOutcome::Completed), 1, "{wire}");
        let seen = usages(&events);
        assert_eq!(seen.len(), 2, "{wire}: {seen:?}");
        let (turn, input, output, read, write, cost) = seen[0];
        assert_eq!(
            (turn, input, output, read),
            (1, 100_000, 1_000, 60_000),
            "{wire}"
        );
        // OpenAI reports no cache writes: its 20k count as plain input.
        let (write_expected, cost_expected) = match wire {
            // 20k uncached × $1 + 60k reads × $0.10 + 20k writes × $1.25 + 1k out × $10.
            "anthropic" => (20_000, 0.02 + 0.006 + 0.025 + 0.01),
            // 40k uncached × $1 + 60k reads × $0.10 + 1k out × $10.
            _ => (0, 0.04 + 0.006 + 0.01),
        };
        assert_eq!(write, write_expected, "{wire}");
        assert!(close(cost.unwrap(), cost_expected), "{wire}: {cost:?}");
        // The prompt's sum is the sum of its requests.
        let usage = prompt_usage(&events)[0];
        assert_eq!(
            (
                usage.input_tokens,
                usage.output_tokens,
                usage.cache_read_tokens,
                usage.cache_write_tokens
            ),
            (102_000, 1_100, 60_000, write_expected),
            "{wire}"
        );
        let second = seen[1].5.unwrap();
        assert!(
            close(usage.cost_usd.unwrap(), cost_expected + second),
            "{wire}"
        );
        app.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cost_cap_ends_the_run_with_a_valid_conversation_and_the_next_prompt_works() {
    let model = FakeModel::start().await;
    // $0.06 of input: past the $0.05 cap, with two tool calls that must not run.
    model.push(Script::Turn(
        Turn::tool("bash", json!({"command": "touch /workspace/ran-1"}))
            .with_tool("bash", json!({"command": "touch /workspace/ran-2"}))
            .with_usage(60_000, 0),
    ));
    let app = TestApp::with_config(EngineConfig {
        limits: PromptLimits {
            max_cost_usd_per_prompt: Some(0.05),
            ..PromptLimits::default()
        },
        ..config(&model)
    })
    .await;
    let token = app.admin_token.clone();
    let session = app.new_session(&token, "spend a lot").await;
    let events = app.wait_for(&token, &session, is_finished).await;
    assert_eq!(
        finished(&events, PromptOutcome::CostLimit),
        1,
        "{events:#?}"
    );
    let hits = limits_reached(&events);
    assert_eq!(hits.len(), 1, "{hits:?}");
    let (limit, value, spent, message) = &hits[0];
    assert_eq!(limit, "max_cost_usd_per_prompt");
    assert!(close(*value, 0.05) && close(*spent, 0.06), "{hits:?}");
    assert!(message.contains("kiln.toml"), "{message}");
    assert!(
        !events
            .iter()
            .any(|e| matches!(e.event, Event::ToolCallStarted { .. })),
        "no tool ran after the cap"
    );
    // The sandbox is kept: the session's sandbox still answers.
    assert_eq!(
        app.sandbox_sh(&session, "ls /workspace/ran-1 2>/dev/null; echo ok")
            .await
            .trim(),
        "ok"
    );

    // The next prompt: the fake model refuses a tool_use without its tool_result, so a
    // completed prompt proves the stored conversation stayed valid.
    model.push(Script::Turn(Turn::text("resumed")));
    app.send(&token, &session, "go on").await;
    let events = app
        .wait_until(&token, &session, |e| {
            finished(e, PromptOutcome::Completed) == 1
        })
        .await;
    assert_eq!(finished(&events, PromptOutcome::Failed), 0);
    let messages = model.requests().last().unwrap().body["messages"].clone();
    assert_roles_alternate(&messages);
    let text = messages.to_string();
    assert!(
        text.contains("not run: max_cost_usd_per_prompt was reached") && text.contains("go on"),
        "{messages:#}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_cap_ends_the_prompt_that_reaches_it_and_stops_later_ones_before_asking() {
    let model = FakeModel::start().await;
    model.push(Script::Turn(Turn::text("one").with_usage(30_000, 0)));
    model.push(Script::Turn(Turn::text("two").with_usage(30_000, 0)));
    let app = TestApp::with_config(EngineConfig {
        limits: PromptLimits {
            max_cost_usd_per_session: Some(0.05),
            ..PromptLimits::default()
        },
        ..config(&model)
    })
    .await;
    let token = app.admin_token.clone();
    let session = app.new_session(&token, "first").await;
    app.wait_for(&token, &session, is_finished).await;
    app.send(&token, &session, "second").await;
    let events = app
        .wait_until(&token, &session, |e| {
            finished(e, PromptOutcome::CostLimit) == 1
        })
        .await;
    assert_eq!(finished(&events, PromptOutcome::Completed), 1);
    let hits = limits_reached(&events);
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].0, "max_cost_usd_per_session");
    assert!(close(hits[0].2, 0.06), "{hits:?}");
    let asked = model.requests().len();
    // A third prompt stops at once: the session is at its cap.
    app.send(&token, &session, "third").await;
    let events = app
        .wait_until(&token, &session, |e| {
            finished(e, PromptOutcome::CostLimit) == 2
        })
        .await;
    assert_eq!(limits_reached(&events).len(), 2);
    assert_eq!(
        model.requests().len(),
        asked,
        "no model request past the cap"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daily_budget_ends_the_run_that_uses_it_up_and_refuses_new_prompts() {
    let model = FakeModel::start().await;
    // $0.03, then a tool call long enough to queue a follow-up, then $0.03 more: past $0.05.
    model.push(Script::Turn(
        Turn::tool("bash", json!({"command": "sleep 2"})).with_usage(30_000, 0),
    ));
    model.push(Script::Turn(
        Turn::tool("bash", json!({"command": "true"})).with_usage(30_000, 0),
    ));
    let app = TestApp::with_config(EngineConfig {
        budgets: Budgets {
            daily_usd_per_user: Some(0.05),
            daily_usd_per_repo: None,
        },
        ..config(&model)
    })
    .await;
    let token = app.admin_token.clone();
    let session = app.new_session(&token, "spend the day").await;
    app.wait_for(&token, &session, |e| {
        matches!(e, Event::ToolCallStarted { .. })
    })
    .await;
    // Under the budget still: accepted, and queued behind the running prompt.
    app.send(&token, &session, "queued before the budget ran out")
        .await;
    let events = app
        .wait_until(&token, &session, |e| {
            finished(e, PromptOutcome::CostLimit) == 2
        })
        .await;
    let hits = limits_reached(&events);
    assert_eq!(hits.len(), 2, "{hits:?}");
    assert!(hits.iter().all(|h| h.0 == "daily_budget_usd_per_user"));
    assert!(close(hits[0].2, 0.06), "{hits:?}");
    // The queued prompt stopped before asking the model.
    let asked = model.requests().len();
    assert_eq!(asked, 2);

    // Refused at every way in: a follow-up, a new session.
    let (status, body) = app
        .post(
            &token,
            &format!("/api/sessions/{session}/prompts"),
            json!({"text": "more"}),
        )
        .await;
    assert_eq!(status, 429, "{body}");
    let message = body["error"].as_str().unwrap_or_default().to_string();
    assert!(
        message.contains("daily_budget_usd_per_user")
            && message.contains("$0.06")
            && message.contains("$0.05")
            && message.contains("resets at 00:00 UTC, in"),
        "{body}"
    );
    let (status, body) = app
        .post(
            &token,
            "/api/sessions",
            json!({"repo": "demo", "prompt": "again"}),
        )
        .await;
    assert_eq!(status, 429, "{body}");
    // Another user has a budget of their own.
    let (_, alice) = app.user("alice").await;
    // Repos are open to every user by default.
    let other = app.new_session(&alice, "mine").await;
    let events = app.wait_for(&alice, &other, is_finished).await;
    assert_eq!(finished(&events, PromptOutcome::Completed), 1);
    assert_eq!(model.requests().len(), asked + 1);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_conversation_is_compacted_and_the_next_request_fits() {
    let model = FakeModel::start().await;
    const WINDOW: u64 = 9_000;
    // Every turn has text and a call: the summary request (no tools) takes its text.
    for i in 0..6 {
        model.push(Script::Turn(
            Turn::tool(
                "bash",
                json!({"command": format!("echo step {i}; seq -s ' ' 100000 101400")}),
            )
            .with_text(&format!("step {i}: counted")),
        ));
    }
    model.set_default(Turn::text("all done"));
    let app = TestApp::with_config(EngineConfig {
        limits: PromptLimits {
            context_tokens: WINDOW,
            ..PromptLimits::default()
        },
        ..config(&model)
    })
    .await;
    let token = app.admin_token.clone();
    let session = app.new_session(&token, "count a lot").await;
    let events = app.wait_for(&token, &session, is_finished).await;
    assert_eq!(
        finished(&events, PromptOutcome::Completed),
        1,
        "{:#?}",
        events.iter().rev().take(5).collect::<Vec<_>>()
    );
    let compactions: Vec<(u64, u64, u64)> = events
        .iter()
        .filter_map(|e| match e.event {
            Event::Compacted {
                before_tokens,
                after_tokens,
                messages_summarised,
                ..
            } => Some((before_tokens, after_tokens, messages_summarised)),
            _ => None,
        })
        .collect();
    assert!(!compactions.is_empty(), "no compaction");
    for (before, after, summarised) in &compactions {
        assert!(*before > WINDOW * 8 / 10 && *after < *before && *summarised > 0);
    }
    let requests = model.requests();
    let summary = requests
        .iter()
        .position(|r| {
            r.body["system"]
                .as_str()
                .unwrap_or("")
                .starts_with("You compact")
        })
        .expect("a summary request");
    // Every request, the summary's included, stays within the window (chars / 4).
    for r in &requests {
        let tokens = r.body.to_string().len() as u64 / 4;
        assert!(tokens < WINDOW, "a request of ~{tokens} tokens");
    }
    let next = &requests[summary + 1];
    let messages = next.body["messages"].clone();
    assert_roles_alternate(&messages);
    assert!(
        messages[0]
            .to_string()
            .contains("A summary of the earlier conversation")
            && messages[0].to_string().contains("step"),
        "{:#}",
        messages[0]
    );
    // One summary request per compaction.
    let summaries = requests
        .iter()
        .filter(|r| {
            r.body["system"]
                .as_str()
                .unwrap_or("")
                .starts_with("You compact")
        })
        .count();
    assert_eq!(summaries, compactions.len());
    // The log keeps everything: every tool call's whole output is still there.
    let outputs: Vec<&EventEnvelope> = events
        .iter()
        .filter(|e| matches!(&e.event, Event::ToolCallFinished { output, .. } if output.contains("101400")))
        .collect();
    assert!(outputs.len() >= 4, "{}", outputs.len());
    // A follow-up continues the compacted conversation.
    app.send(&token, &session, "and now?").await;
    app.wait_until(&token, &session, |e| {
        finished(e, PromptOutcome::Completed) == 2
    })
    .await;
    let last = model.requests().last().unwrap().body["messages"].clone();
    assert!(
        last[0]
            .to_string()
            .contains("A summary of the earlier conversation")
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conversation_that_cannot_be_compacted_ends_the_prompt_before_an_oversized_request() {
    let model = FakeModel::start().await;
    let app = TestApp::with_config(EngineConfig {
        limits: PromptLimits {
            // Smaller than the system prompt and the tools alone.
            context_tokens: 500,
            ..PromptLimits::default()
        },
        ..config(&model)
    })
    .await;
    let token = app.admin_token.clone();
    let session = app.new_session(&token, "hello").await;
    let events = app.wait_for(&token, &session, is_finished).await;
    assert_eq!(finished(&events, PromptOutcome::Failed), 1);
    let error = events
        .iter()
        .find_map(|e| match &e.event {
            Event::Error { message, .. } => Some(message.clone()),
            _ => None,
        })
        .expect("an error event");
    assert!(
        error.contains("could not be compacted") && error.contains("context_tokens"),
        "{error}"
    );
    assert!(model.requests().is_empty(), "no request was sent");
    app.stop().await;
}
