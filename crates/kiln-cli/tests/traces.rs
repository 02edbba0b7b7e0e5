//! OpenTelemetry: with an OTLP endpoint configured, a prompt's work reaches the collector as
//! spans over OTLP/HTTP — the prompt, its model request inside it, the tool call — each
//! carrying the session's id, from the service `kiln`.

mod common;

use common::server::{start_with, text};
use kiln_testkit::{FakeCollector, FakeModel, Script, Turn};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prompt_reaches_the_collector_as_spans_of_its_session() {
    let model = FakeModel::start().await;
    let collector = FakeCollector::start().await;
    let server = start_with(
        &model,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", collector.url()),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
            ("KILN_LOG", "warn"),
        ],
    )
    .await;
    server.add_repo().await;
    model.push(Script::Turn(Turn::tool(
        "bash",
        serde_json::json!({"command": "echo traced"}),
    )));
    model.push(Script::Turn(Turn::text("done")));
    let out = server
        .run(&["session", "new", "--repo", "web", "say hi", "--detach"])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let session = text(&out.stdout).trim().to_string();
    let out = server.run(&["session", "attach", &session]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));

    let wait = Duration::from_secs(30);
    let ours = |name: &'static str| {
        let session = session.clone();
        move |span: &kiln_testkit::ReceivedSpan| {
            span.name == name && span.attributes.get("session") == Some(&session)
        }
    };
    let prompt = collector.wait_for(wait, ours("prompt")).await;
    assert_eq!(prompt.service, "kiln");
    assert!(prompt.attributes.contains_key("prompt"), "{prompt:?}");
    let request = collector.wait_for(wait, ours("model_request")).await;
    assert_eq!(request.trace_id, prompt.trace_id, "one trace per prompt");
    assert_eq!(request.parent_span_id, prompt.span_id, "inside the prompt");
    assert_eq!(
        request.attributes.get("turn").map(String::as_str),
        Some("1")
    );
    let call = collector.wait_for(wait, ours("tool_call")).await;
    assert_eq!(call.trace_id, prompt.trace_id);
    assert_eq!(
        call.attributes.get("tool").map(String::as_str),
        Some("bash")
    );
    // Nothing outside kiln's own crates is traced (no HTTP client or database noise).
    let names: Vec<String> = collector.spans().into_iter().map(|s| s.name).collect();
    assert!(
        names
            .iter()
            .all(|n| !n.starts_with("hyper") && !n.starts_with("rusqlite")),
        "{names:?}"
    );
}
