//! Decoder and request-body tests against the chunk sequences the OpenAI docs show.

use serde_json::json;

use super::*;
use crate::{Message, ToolSpec};

fn decode(chunks: &[Value]) -> (Vec<StreamEvent>, Option<ModelError>) {
    let mut decoder = Decoder::default();
    let mut out = Vec::new();
    for chunk in chunks {
        let data = match chunk {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        match decoder.on_event(&SseEvent {
            event: "message".into(),
            data,
        }) {
            Ok(events) => out.extend(events),
            Err(e) => return (out, Some(e)),
        }
    }
    match decoder.on_eof() {
        Ok(events) => {
            out.extend(events);
            (out, None)
        }
        Err(e) => (out, Some(e)),
    }
}

fn chunk(delta: Value, finish_reason: Value) -> Value {
    json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4.1",
        "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish_reason}], "usage": null})
}

fn usage_chunk() -> Value {
    json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4.1", "choices": [],
        "usage": {"prompt_tokens": 40, "completion_tokens": 12, "total_tokens": 52}})
}

#[test]
fn text_then_tool_calls_accumulated_by_index() {
    let (events, err) = decode(&[
        chunk(
            json!({"role": "assistant", "content": "", "refusal": null}),
            Value::Null,
        ),
        chunk(json!({"content": "Let me look"}), Value::Null),
        chunk(
            json!({"tool_calls": [{"index": 0, "id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": ""}}]}),
            Value::Null,
        ),
        chunk(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"loc"}}]}),
            Value::Null,
        ),
        chunk(
            json!({"tool_calls": [{"index": 1, "id": "call_b", "type": "function", "function": {"name": "now", "arguments": ""}}]}),
            Value::Null,
        ),
        chunk(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": "ation\": \"Paris\"}"}}]}),
            Value::Null,
        ),
        chunk(json!({}), json!("tool_calls")),
        usage_chunk(),
        json!("[DONE]"),
    ]);
    assert_eq!(err, None);
    assert_eq!(
        events,
        [
            StreamEvent::TextDelta("Let me look".into()),
            StreamEvent::ToolUse {
                id: "call_a".into(),
                name: "get_weather".into(),
                input: json!({"location": "Paris"})
            },
            StreamEvent::ToolUse {
                id: "call_b".into(),
                name: "now".into(),
                input: json!({})
            },
            StreamEvent::Finished {
                stop_reason: StopReason::ToolUse,
                usage: Usage {
                    input_tokens: 40,
                    output_tokens: 12,
                    ..Default::default()
                }
            },
        ]
    );
}

#[test]
fn stop_length_and_lenient_end_without_done() {
    let (events, err) = decode(&[
        chunk(json!({"content": "hi"}), Value::Null),
        chunk(json!({}), json!("length")),
    ]);
    assert_eq!(err, None);
    assert_eq!(
        events.last(),
        Some(&StreamEvent::Finished {
            stop_reason: StopReason::MaxTokens,
            usage: Usage::default()
        })
    );
}

#[test]
fn cut_error_and_malformed() {
    let (events, err) = decode(&[chunk(json!({"content": "hi"}), Value::Null)]);
    assert_eq!((events.len(), err), (1, Some(ModelError::StreamCut)));

    let (_, err) = decode(&[
        json!({"error": {"message": "The server had an error", "type": "server_error", "param": null, "code": null}}),
    ]);
    assert_eq!(
        err,
        Some(ModelError::Api {
            kind: "server_error".into(),
            message: "The server had an error".into()
        })
    );

    let (_, err) = decode(&[json!("{\"choices\": [")]);
    assert!(matches!(err, Some(ModelError::Malformed(_))));

    let (_, err) = decode(&[chunk(
        json!({"tool_calls": [{"index": 0, "function": {"arguments": "{"}}]}),
        json!("tool_calls"),
    )]);
    assert!(matches!(err, Some(ModelError::Malformed(m)) if m.contains("no function name")));
}

#[test]
fn whole_calls_without_index_and_stop_after_tools() {
    let (events, err) = decode(&[
        chunk(
            json!({"tool_calls": [{"id": "a", "function": {"name": "x", "arguments": {"n": 1}}}]}),
            Value::Null,
        ),
        chunk(
            json!({"tool_calls": [{"id": "b", "function": {"name": "y", "arguments": "{}"}}]}),
            Value::Null,
        ),
        chunk(json!({}), json!("stop")),
        json!("[DONE]"),
    ]);
    assert_eq!(err, None);
    assert_eq!(events.len(), 3);
    assert_eq!(
        events[0],
        StreamEvent::ToolUse {
            id: "a".into(),
            name: "x".into(),
            input: json!({"n": 1})
        }
    );
    assert!(matches!(
        &events[2],
        StreamEvent::Finished {
            stop_reason: StopReason::ToolUse,
            ..
        }
    ));
}

#[test]
fn request_body_shape() {
    let request = ModelRequest {
        system: "be brief".into(),
        messages: vec![
            Message::user("weather?"),
            Message {
                role: MessageRole::Assistant,
                content: vec![ContentBlock::ToolUse {
                    id: "t1".into(),
                    name: "get_weather".into(),
                    input: json!({"city": "Oslo"}),
                }],
            },
            Message {
                role: MessageRole::User,
                content: vec![
                    ContentBlock::ToolResult {
                        tool_use_id: "t1".into(),
                        content: "no such city".into(),
                        is_error: true,
                    },
                    ContentBlock::Text {
                        text: "and now?".into(),
                    },
                ],
            },
        ],
        tools: vec![ToolSpec {
            name: "get_weather".into(),
            description: "Weather".into(),
            input_schema: json!({"type": "object"}),
        }],
        max_tokens: None,
    };
    assert_eq!(
        request_body("gpt-4.1", 100, false, &request),
        json!({
            "model": "gpt-4.1",
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": "weather?"},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "t1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"}}]},
                {"role": "tool", "tool_call_id": "t1", "content": "error: no such city"},
                {"role": "user", "content": "and now?"},
            ],
            "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Weather", "parameters": {"type": "object"}}}],
            "stream": true,
            "stream_options": {"include_usage": true},
            "max_tokens": 100,
        })
    );
    let official = request_body("gpt-4.1", 100, true, &request);
    assert_eq!(official["max_completion_tokens"], 100);
    assert!(official.get("max_tokens").is_none());
}

/// OpenAI's `prompt_tokens` already holds the cached part (`prompt_tokens_details.cached_tokens`).
#[test]
fn cached_tokens_are_part_of_prompt_tokens() {
    let (events, err) = decode(&[
        chunk(json!({"content": "hi"}), Value::Null),
        chunk(json!({}), json!("stop")),
        json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4.1", "choices": [],
            "usage": {"prompt_tokens": 2006, "completion_tokens": 300, "total_tokens": 2306,
                      "prompt_tokens_details": {"cached_tokens": 1920, "audio_tokens": 0},
                      "completion_tokens_details": {"reasoning_tokens": 0}}}),
        json!("[DONE]"),
    ]);
    assert_eq!(err, None);
    let usage = Usage {
        input_tokens: 2006,
        output_tokens: 300,
        cache_read_tokens: 1920,
        cache_write_tokens: 0,
    };
    assert_eq!(
        events.last(),
        Some(&StreamEvent::Finished {
            stop_reason: StopReason::EndTurn,
            usage
        })
    );
    assert_eq!(usage.uncached_input_tokens(), 86);
}
