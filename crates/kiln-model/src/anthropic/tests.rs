//! Decoder and request-body tests against the event sequences the Anthropic docs show.

use serde_json::json;

use super::*;
use crate::ToolSpec;

fn decode(events: &[(&str, Value)]) -> (Vec<StreamEvent>, Option<ModelError>) {
    let mut decoder = Decoder::default();
    let mut out = Vec::new();
    for (name, data) in events {
        let event = SseEvent {
            event: name.to_string(),
            data: data.to_string(),
        };
        match decoder.on_event(&event) {
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

fn message_start() -> (&'static str, Value) {
    (
        "message_start",
        json!({"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant",
            "content": [], "model": "claude-sonnet-4-5", "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": 25, "output_tokens": 1}}}),
    )
}

#[test]
fn text_and_tool_use_stream() {
    let (events, err) = decode(&[
        message_start(),
        (
            "content_block_start",
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        ),
        ("ping", json!({"type": "ping"})),
        (
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hello"}}),
        ),
        (
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "!"}}),
        ),
        (
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 0}),
        ),
        (
            "content_block_start",
            json!({"type": "content_block_start", "index": 1,
            "content_block": {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}}}),
        ),
        (
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": ""}}),
        ),
        (
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "{\"location\": \"San Fra"}}),
        ),
        (
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "ncisco\"}"}}),
        ),
        (
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 1}),
        ),
        (
            "message_delta",
            json!({"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": null}, "usage": {"output_tokens": 89}}),
        ),
        ("message_stop", json!({"type": "message_stop"})),
    ]);
    assert_eq!(err, None);
    assert_eq!(
        events,
        [
            StreamEvent::TextDelta("Hello".into()),
            StreamEvent::TextDelta("!".into()),
            StreamEvent::ToolUse {
                id: "toolu_1".into(),
                name: "get_weather".into(),
                input: json!({"location": "San Francisco"})
            },
            StreamEvent::Finished {
                stop_reason: StopReason::ToolUse,
                usage: Usage {
                    input_tokens: 25,
                    output_tokens: 89,
                    ..Default::default()
                }
            },
        ]
    );
}

#[test]
fn tool_without_input_deltas_gets_an_empty_object() {
    let (events, err) = decode(&[
        message_start(),
        (
            "content_block_start",
            json!({"type": "content_block_start", "index": 0,
            "content_block": {"type": "tool_use", "id": "toolu_2", "name": "now", "input": {}}}),
        ),
        (
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 0}),
        ),
    ]);
    assert_eq!(err, Some(ModelError::StreamCut));
    assert_eq!(
        events,
        [StreamEvent::ToolUse {
            id: "toolu_2".into(),
            name: "now".into(),
            input: json!({})
        }]
    );
}

#[test]
fn error_event_bad_json_and_unknown_blocks() {
    let (_, err) = decode(&[
        message_start(),
        (
            "error",
            json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
        ),
    ]);
    assert_eq!(
        err,
        Some(ModelError::Api {
            kind: "overloaded_error".into(),
            message: "Overloaded".into()
        })
    );

    let mut decoder = Decoder::default();
    let bad = SseEvent {
        event: "content_block_delta".into(),
        data: "{nope".into(),
    };
    assert!(matches!(
        decoder.on_event(&bad),
        Err(ModelError::Malformed(_))
    ));

    let (_, err) = decode(&[(
        "content_block_stop",
        json!({"type": "content_block_stop", "index": 7}),
    )]);
    assert!(matches!(err, Some(ModelError::Malformed(m)) if m.contains("block 7")));

    let (_, err) = decode(&[
        (
            "content_block_start",
            json!({"type": "content_block_start", "index": 0,
            "content_block": {"type": "tool_use", "id": "t", "name": "x", "input": {}}}),
        ),
        (
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": "{\"a\":"}}),
        ),
        (
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 0}),
        ),
    ]);
    assert!(matches!(err, Some(ModelError::Malformed(m)) if m.contains("tool call x")));
}

#[test]
fn unknown_events_and_thinking_blocks_are_skipped() {
    let (events, err) = decode(&[
        message_start(),
        (
            "content_block_start",
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": ""}}),
        ),
        (
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "hmm"}}),
        ),
        (
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 0}),
        ),
        ("future_event", json!({"type": "future_event"})),
        (
            "message_delta",
            json!({"type": "message_delta", "delta": {"stop_reason": "max_tokens"}, "usage": {"output_tokens": 3}}),
        ),
        ("message_stop", json!({"type": "message_stop"})),
    ]);
    assert_eq!(err, None);
    assert_eq!(
        events,
        [StreamEvent::Finished {
            stop_reason: StopReason::MaxTokens,
            usage: Usage {
                input_tokens: 25,
                output_tokens: 3,
                ..Default::default()
            }
        }]
    );
}

#[test]
fn request_body_shape() {
    let request = ModelRequest {
        system: "be brief".into(),
        messages: vec![
            Message::user("weather?"),
            Message {
                role: MessageRole::Assistant,
                content: vec![
                    ContentBlock::Text {
                        text: String::new(),
                    },
                    ContentBlock::ToolUse {
                        id: "t1".into(),
                        name: "get_weather".into(),
                        input: json!({"city": "Oslo"}),
                    },
                ],
            },
            Message {
                role: MessageRole::User,
                content: vec![ContentBlock::ToolResult {
                    tool_use_id: "t1".into(),
                    content: "rain".into(),
                    is_error: true,
                }],
            },
        ],
        tools: vec![ToolSpec {
            name: "get_weather".into(),
            description: "Weather for a city".into(),
            input_schema: json!({"type": "object"}),
        }],
        max_tokens: None,
    };
    assert_eq!(
        request_body("claude-sonnet-4-5", 1024, &request),
        json!({
            "model": "claude-sonnet-4-5",
            "max_tokens": 1024,
            "system": "be brief",
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "weather?"}]},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "get_weather", "input": {"city": "Oslo"}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "rain", "is_error": true}]},
            ],
            "tools": [{"name": "get_weather", "description": "Weather for a city", "input_schema": {"type": "object"}}],
            "stream": true,
        })
    );
    let bare = request_body(
        "m",
        1,
        &ModelRequest {
            messages: vec![Message::user("hi")],
            ..Default::default()
        },
    );
    assert!(bare.get("system").is_none() && bare.get("tools").is_none());
}

/// Anthropic counts cached prompt tokens apart from `input_tokens`; kiln's `input_tokens` is the
/// whole prompt, with the cached parts broken out.
#[test]
fn cache_reads_and_writes_are_part_of_the_prompt() {
    let (events, err) = decode(&[
        (
            "message_start",
            json!({"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant",
                "content": [], "model": "claude-sonnet-4-5", "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": 25, "cache_creation_input_tokens": 1000,
                          "cache_read_input_tokens": 3000, "output_tokens": 1}}}),
        ),
        (
            "message_delta",
            json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null},
                "usage": {"output_tokens": 7}}),
        ),
        ("message_stop", json!({"type": "message_stop"})),
    ]);
    assert_eq!(err, None);
    let usage = Usage {
        input_tokens: 4025,
        output_tokens: 7,
        cache_read_tokens: 3000,
        cache_write_tokens: 1000,
    };
    assert_eq!(
        events,
        [StreamEvent::Finished {
            stop_reason: StopReason::EndTurn,
            usage
        }]
    );
    assert_eq!(usage.uncached_input_tokens(), 25);
}
