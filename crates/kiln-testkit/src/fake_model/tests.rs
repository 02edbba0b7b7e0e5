//! The fake's request checks and rendering, without HTTP: the same mistakes the real APIs refuse
//! are refused here, and turns render as the documented sequences.

use axum::http::{HeaderMap, HeaderValue};
use serde_json::{Value, json};

use super::play::{FrameKind, Reply};
use super::{Turn, anthropic, openai};

const KEY: &str = "sk-fake-1";

fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.insert(*name, HeaderValue::from_str(value).unwrap());
    }
    map
}

fn anthropic_headers() -> HeaderMap {
    headers(&[
        ("x-api-key", KEY),
        ("anthropic-version", "2023-06-01"),
        ("content-type", "application/json"),
    ])
}

fn openai_headers() -> HeaderMap {
    headers(&[
        ("authorization", "Bearer sk-fake-1"),
        ("content-type", "application/json"),
    ])
}

/// The message of the rejection, or "ok".
fn anthropic_says(headers: &HeaderMap, body: Value) -> String {
    match anthropic::check(headers, body.to_string().as_bytes(), KEY) {
        Ok(_) => "ok".into(),
        Err(rejection) => format!("{} {}", rejection.status, rejection.message),
    }
}

fn openai_says(headers: &HeaderMap, body: Value) -> String {
    match openai::check(headers, body.to_string().as_bytes(), KEY) {
        Ok(_) => "ok".into(),
        Err(rejection) => format!("{} {}", rejection.status, rejection.message),
    }
}

fn anthropic_body(messages: Value) -> Value {
    json!({"model": "claude-sonnet-4-5", "max_tokens": 100, "stream": true, "messages": messages})
}

fn openai_body(messages: Value) -> Value {
    json!({"model": "gpt-4.1", "stream": true, "messages": messages})
}

#[test]
fn anthropic_checks() {
    let user = json!([{"role": "user", "content": "hi"}]);
    assert_eq!(
        anthropic_says(&anthropic_headers(), anthropic_body(user.clone())),
        "ok"
    );
    assert!(
        anthropic_says(&headers(&[]), anthropic_body(user.clone()))
            .starts_with("401 x-api-key header is required")
    );
    let wrong_key = headers(&[("x-api-key", "nope"), ("anthropic-version", "2023-06-01")]);
    assert_eq!(
        anthropic_says(&wrong_key, anthropic_body(user.clone())),
        "401 invalid x-api-key"
    );
    let no_version = headers(&[("x-api-key", KEY), ("content-type", "application/json")]);
    assert!(
        anthropic_says(&no_version, anthropic_body(user.clone())).contains("anthropic-version")
    );

    let mut extra = anthropic_body(user.clone());
    extra["max_completion_tokens"] = json!(5);
    assert!(
        anthropic_says(&anthropic_headers(), extra).contains("max_completion_tokens: Extra inputs")
    );

    let empty_text = json!([{"role": "user", "content": [{"type": "text", "text": ""}]}]);
    assert!(
        anthropic_says(&anthropic_headers(), anthropic_body(empty_text))
            .contains("must be non-empty")
    );

    let call = json!({"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "x", "input": {}}]});
    let result = |id: &str| json!({"role": "user", "content": [{"type": "tool_result", "tool_use_id": id, "content": "r"}]});
    let paired = json!([{"role": "user", "content": "go"}, call, result("t1")]);
    assert_eq!(
        anthropic_says(&anthropic_headers(), anthropic_body(paired)),
        "ok"
    );
    let unanswered =
        json!([{"role": "user", "content": "go"}, call, {"role": "user", "content": "and?"}]);
    assert!(
        anthropic_says(&anthropic_headers(), anthropic_body(unanswered))
            .contains("without `tool_result`")
    );
    let dangling = json!([{"role": "user", "content": "go"}, call]);
    assert!(anthropic_says(&anthropic_headers(), anthropic_body(dangling)).contains("t1"));
    let stray = json!([{"role": "user", "content": "go"}, call, result("t2")]);
    assert!(
        anthropic_says(&anthropic_headers(), anthropic_body(stray))
            .contains("unexpected `tool_use_id`")
    );

    let mut bad_tool = anthropic_body(user);
    bad_tool["tools"] = json!([{"name": "read file", "input_schema": {"type": "object"}}]);
    assert!(anthropic_says(&anthropic_headers(), bad_tool).contains("tools.0.name"));
}

#[test]
fn openai_checks() {
    let user = json!([{"role": "user", "content": "hi"}]);
    assert_eq!(
        openai_says(&openai_headers(), openai_body(user.clone())),
        "ok"
    );
    assert!(
        openai_says(&headers(&[]), openai_body(user.clone()))
            .starts_with("401 You didn't provide an API key")
    );
    let wrong = headers(&[("authorization", "Bearer sk-wrong-9876")]);
    assert_eq!(
        openai_says(&wrong, openai_body(user.clone())),
        "401 Incorrect API key provided: ****9876."
    );

    let mut unknown = openai_body(user.clone());
    unknown["system"] = json!("be nice");
    assert!(
        openai_says(&openai_headers(), unknown)
            .contains("Unrecognized request argument supplied: system")
    );
    let mut not_streaming = openai_body(user);
    not_streaming["stream"] = json!(false);
    assert!(openai_says(&openai_headers(), not_streaming).contains("only streams"));

    let call = |arguments: Value| {
        json!({"role": "assistant", "content": null, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "x", "arguments": arguments}}]})
    };
    let tool = |id: &str| json!({"role": "tool", "tool_call_id": id, "content": "r"});
    let paired = json!([{"role": "user", "content": "go"}, call(json!("{}")), tool("c1")]);
    assert_eq!(openai_says(&openai_headers(), openai_body(paired)), "ok");
    let object_args = json!([{"role": "user", "content": "go"}, call(json!({})), tool("c1")]);
    assert!(
        openai_says(&openai_headers(), openai_body(object_args))
            .contains("expected a string, but got an object")
    );
    let unanswered = json!([{"role": "user", "content": "go"}, call(json!("{}")), {"role": "user", "content": "?"}]);
    assert!(
        openai_says(&openai_headers(), openai_body(unanswered))
            .contains("did not have response messages: c1")
    );
    let stray = json!([{"role": "user", "content": "go"}, tool("c1")]);
    assert!(
        openai_says(&openai_headers(), openai_body(stray))
            .contains("must be a response to a preceeding message")
    );
}

fn reply(include_usage: bool) -> Reply {
    Reply {
        model: "m".into(),
        include_usage,
        id: 7,
    }
}

#[test]
fn anthropic_renders_the_documented_event_sequence() {
    let turn = Turn::text("a b").with_tool("x", json!({"k": "v"}));
    let frames = anthropic::render(&turn, &reply(true));
    let names: Vec<&str> = frames
        .iter()
        .map(|f| {
            f.bytes
                .lines()
                .next()
                .unwrap()
                .trim_start_matches("event: ")
        })
        .collect();
    assert_eq!(
        names,
        [
            "message_start",
            "ping",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop",
        ]
    );
    assert!(frames[12].bytes.contains("\"stop_reason\":\"tool_use\""));
    assert_eq!(frames[0].kind, FrameKind::Opening);
    assert!(frames.iter().all(|f| f.bytes.ends_with("\n\n")));
}

#[test]
fn openai_renders_chunks_usage_and_done() {
    let frames = openai::render(&Turn::text("hi"), &reply(true));
    let last: Vec<&str> = frames
        .iter()
        .rev()
        .take(3)
        .map(|f| f.bytes.as_str())
        .collect();
    assert_eq!(last[0], "data: [DONE]\n\n");
    assert!(last[1].contains("\"choices\":[]") && last[1].contains("\"prompt_tokens\":10"));
    assert!(last[2].contains("\"finish_reason\":\"stop\""));
    let without_usage = openai::render(&Turn::text("hi"), &reply(false));
    assert_eq!(without_usage.len(), frames.len() - 1);
    assert!(!without_usage.iter().any(|f| f.bytes.contains("usage")));
}
