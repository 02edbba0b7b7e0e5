//! The Anthropic Messages API side of the fake: request checks with the API's own error messages
//! (auth, version header, unknown fields, content blocks, tool_use/tool_result pairing) and the
//! documented event stream (`message_start` … `message_stop`).

use axum::http::HeaderMap;
use serde_json::{Value, json};

use super::play::{Frame, FrameKind, Reply};
use super::{
    Checked, Rejection, Turn, header, json_content_type, script::json_fragments, valid_tool_name,
};

const VERSIONS: [&str; 2] = ["2023-06-01", "2023-01-01"];
const FIELDS: [&str; 15] = [
    "model",
    "messages",
    "max_tokens",
    "system",
    "tools",
    "tool_choice",
    "stream",
    "temperature",
    "top_p",
    "top_k",
    "stop_sequences",
    "metadata",
    "thinking",
    "service_tier",
    "container",
];

/// A data line that is not JSON.
pub(crate) const MALFORMED: &str = "event: content_block_delta\ndata: {\"type\": \"content_block_delta\", \"index\": 0, \"delta\": {\n\n";

/// The headers every Anthropic request needs: the key and a known API version.
pub(crate) fn check_key(headers: &HeaderMap, key: &str) -> Result<(), Rejection> {
    match header(headers, "x-api-key") {
        None => return Err(Rejection::new(401, "x-api-key header is required")),
        Some(sent) if sent != key => return Err(Rejection::new(401, "invalid x-api-key")),
        Some(_) => {}
    }
    match header(headers, "anthropic-version") {
        None => Err(bad("anthropic-version: header is required")),
        Some(v) if !VERSIONS.contains(&v) => Err(bad(format!(
            "anthropic-version: {v:?} is not a valid version"
        ))),
        Some(_) => Ok(()),
    }
}

/// `GET /v1/models`, as Anthropic's Models API lists them (one page).
pub(crate) fn models_body() -> serde_json::Value {
    serde_json::json!({
        "data": [{
            "type": "model",
            "id": "claude-test",
            "display_name": "Claude Test",
            "created_at": "2025-01-01T00:00:00Z"
        }],
        "has_more": false,
        "first_id": "claude-test",
        "last_id": "claude-test"
    })
}

pub(crate) fn check(headers: &HeaderMap, body: &[u8], key: &str) -> Result<Checked, Rejection> {
    check_key(headers, key)?;
    json_content_type(headers)?;
    let body: Value = serde_json::from_slice(body)
        .map_err(|e| bad(format!("the request body is not valid JSON: {e}")))?;
    let object = body
        .as_object()
        .ok_or_else(|| bad("the request body must be a JSON object"))?;
    if let Some(extra) = object.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(bad(format!("{extra}: Extra inputs are not permitted")));
    }
    let model = body["model"]
        .as_str()
        .filter(|m| !m.is_empty())
        .ok_or_else(|| bad("model: Field required"))?;
    match body["max_tokens"].as_u64() {
        None => return Err(bad("max_tokens: Field required (a positive integer)")),
        Some(0) => {
            return Err(bad(
                "max_tokens: Input should be greater than or equal to 1",
            ));
        }
        Some(_) => {}
    }
    if body["stream"] != Value::Bool(true) {
        return Err(bad("stream: this fake only streams; send \"stream\": true"));
    }
    check_system(&body["system"])?;
    check_messages(&body["messages"])?;
    check_tools(&body["tools"])?;
    Ok(Checked {
        model: model.to_string(),
        include_usage: true,
    })
}

fn bad(message: impl Into<String>) -> Rejection {
    Rejection::new(400, message)
}

fn check_system(system: &Value) -> Result<(), Rejection> {
    match system {
        Value::Null | Value::String(_) => Ok(()),
        Value::Array(blocks)
            if blocks
                .iter()
                .all(|b| b["type"] == "text" && b["text"].is_string()) =>
        {
            Ok(())
        }
        _ => Err(bad(
            "system: Input should be a valid string or a list of text blocks",
        )),
    }
}

fn check_messages(messages: &Value) -> Result<(), Rejection> {
    let messages = messages
        .as_array()
        .ok_or_else(|| bad("messages: Field required (a list)"))?;
    if messages.is_empty() {
        return Err(bad("messages: at least one message is required"));
    }
    // Ids of the previous assistant message's tool_use blocks, which the next message must answer.
    let mut awaiting: Vec<String> = Vec::new();
    for (i, message) in messages.iter().enumerate() {
        let role = match message["role"].as_str() {
            Some(role @ ("user" | "assistant")) => role,
            _ => {
                return Err(bad(format!(
                    "messages.{i}.role: Input should be 'user' or 'assistant'"
                )));
            }
        };
        let (empty, blocks): (bool, &[Value]) = match &message["content"] {
            Value::String(s) => (s.is_empty(), &[]),
            Value::Array(blocks) => (blocks.is_empty(), blocks),
            _ => {
                return Err(bad(format!(
                    "messages.{i}.content: Input should be a valid list or string"
                )));
            }
        };
        if empty && !(role == "assistant" && i + 1 == messages.len()) {
            return Err(bad(format!(
                "messages.{i}: all messages must have non-empty content except for the optional final assistant message"
            )));
        }
        let (uses, results) = check_blocks(i, role, blocks)?;
        if role == "user" {
            if let Some(id) = results.iter().find(|id| !awaiting.contains(id)) {
                return Err(bad(format!(
                    "messages.{i}.content: unexpected `tool_use_id` found in `tool_result` blocks: {id}. Each \
                     `tool_result` block must have a corresponding `tool_use` block in the previous message."
                )));
            }
            awaiting.retain(|id| !results.contains(id));
        }
        if !awaiting.is_empty() {
            return Err(unanswered(i, &awaiting));
        }
        awaiting = uses;
    }
    match awaiting.is_empty() {
        true => Ok(()),
        false => Err(unanswered(messages.len(), &awaiting)),
    }
}

fn unanswered(i: usize, ids: &[String]) -> Rejection {
    bad(format!(
        "messages.{i}: `tool_use` ids were found without `tool_result` blocks immediately after: {}. Each \
         `tool_use` block must have a corresponding `tool_result` block in the next message.",
        ids.join(", ")
    ))
}

/// Checks each block and returns the tool_use ids and the tool_result ids it holds.
fn check_blocks(
    i: usize,
    role: &str,
    blocks: &[Value],
) -> Result<(Vec<String>, Vec<String>), Rejection> {
    let (mut uses, mut results) = (Vec::new(), Vec::new());
    for (j, block) in blocks.iter().enumerate() {
        let at = format!("messages.{i}.content.{j}");
        let string = |field: &str| {
            block[field]
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| bad(format!("{at}.{field}: Field required")))
        };
        match block["type"].as_str() {
            Some("text") => {
                if string("text")?.is_empty() {
                    return Err(bad(format!("{at}: text content blocks must be non-empty")));
                }
            }
            Some("tool_use") if role == "assistant" => {
                string("name")?;
                if !block["input"].is_object() {
                    return Err(bad(format!(
                        "{at}.input: Input should be a valid dictionary"
                    )));
                }
                uses.push(string("id")?);
            }
            Some("tool_result") if role == "user" => {
                if !matches!(
                    block["content"],
                    Value::Null | Value::String(_) | Value::Array(_)
                ) {
                    return Err(bad(format!(
                        "{at}.content: Input should be a valid list or string"
                    )));
                }
                if !matches!(block["is_error"], Value::Null | Value::Bool(_)) {
                    return Err(bad(format!(
                        "{at}.is_error: Input should be a valid boolean"
                    )));
                }
                results.push(string("tool_use_id")?);
            }
            Some(kind @ ("tool_use" | "tool_result")) => {
                return Err(bad(format!(
                    "{at}: {kind} blocks are not allowed in {role} messages"
                )));
            }
            Some("image" | "document" | "thinking" | "redacted_thinking") => {}
            other => {
                return Err(bad(format!(
                    "{at}.type: unknown content block type {other:?}"
                )));
            }
        }
    }
    Ok((uses, results))
}

fn check_tools(tools: &Value) -> Result<(), Rejection> {
    let tools = match tools {
        Value::Null => return Ok(()),
        Value::Array(tools) => tools,
        _ => return Err(bad("tools: Input should be a valid list")),
    };
    let mut names = Vec::new();
    for (i, tool) in tools.iter().enumerate() {
        let name = tool["name"].as_str().unwrap_or_default();
        if !valid_tool_name(name) {
            return Err(bad(format!(
                "tools.{i}.name: String should match pattern '^[a-zA-Z0-9_-]{{1,64}}$'"
            )));
        }
        if names.contains(&name) {
            return Err(bad("tools: Tool names must be unique."));
        }
        names.push(name);
        // Server tools (`"type": "web_search_20250305"` ...) carry no schema.
        if matches!(tool["type"].as_str(), None | Some("custom")) {
            if tool["input_schema"]["type"] != "object" {
                return Err(bad(format!(
                    "tools.{i}.input_schema: a JSON schema with \"type\": \"object\" is required"
                )));
            }
            if !matches!(tool["description"], Value::Null | Value::String(_)) {
                return Err(bad(format!(
                    "tools.{i}.description: Input should be a valid string"
                )));
            }
        }
    }
    Ok(())
}

fn event(kind: FrameKind, name: &str, data: Value) -> Frame {
    Frame {
        kind,
        bytes: format!("event: {name}\ndata: {data}\n\n"),
    }
}

/// The turn as the documented event sequence: one text block, then one block per tool call with
/// its input split over several `input_json_delta`s.
pub(crate) fn render(turn: &Turn, reply: &Reply) -> Vec<Frame> {
    let (input_tokens, output_tokens) = turn.usage;
    let (cache_read, cache_write) = turn.cache;
    // Anthropic's `input_tokens` leaves out what was read from or written to the cache.
    let input_tokens = input_tokens.saturating_sub(cache_read + cache_write);
    let mut frames = vec![
        event(
            FrameKind::Opening,
            "message_start",
            json!({"type": "message_start", "message": {
            "id": format!("msg_fake_{}", reply.id), "type": "message", "role": "assistant", "content": [],
            "model": reply.model, "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": input_tokens, "cache_creation_input_tokens": cache_write,
                "cache_read_input_tokens": cache_read, "output_tokens": 1}}}),
        ),
        event(FrameKind::Opening, "ping", json!({"type": "ping"})),
    ];
    let mut index = 0;
    if !turn.text.is_empty() {
        frames.push(event(
            FrameKind::Text,
            "content_block_start",
            json!({"type": "content_block_start",
            "index": index, "content_block": {"type": "text", "text": ""}}),
        ));
        for chunk in &turn.text {
            frames.push(event(
                FrameKind::Text,
                "content_block_delta",
                json!({"type": "content_block_delta",
                "index": index, "delta": {"type": "text_delta", "text": chunk}}),
            ));
        }
        frames.push(event(
            FrameKind::Text,
            "content_block_stop",
            json!({"type": "content_block_stop", "index": index}),
        ));
        index += 1;
    }
    for call in &turn.tool_calls {
        frames.push(event(FrameKind::Tool, "content_block_start", json!({"type": "content_block_start",
            "index": index, "content_block": {"type": "tool_use", "id": call.id, "name": call.name, "input": {}}})));
        for fragment in json_fragments(&call.input) {
            frames.push(event(
                FrameKind::Tool,
                "content_block_delta",
                json!({"type": "content_block_delta",
                "index": index, "delta": {"type": "input_json_delta", "partial_json": fragment}}),
            ));
        }
        frames.push(event(
            FrameKind::Tool,
            "content_block_stop",
            json!({"type": "content_block_stop", "index": index}),
        ));
        index += 1;
    }
    let stop_reason = if turn.tool_calls.is_empty() {
        "end_turn"
    } else {
        "tool_use"
    };
    frames.push(event(FrameKind::Closing, "message_delta", json!({"type": "message_delta",
        "delta": {"stop_reason": stop_reason, "stop_sequence": null}, "usage": {"output_tokens": output_tokens}})));
    frames.push(event(
        FrameKind::Closing,
        "message_stop",
        json!({"type": "message_stop"}),
    ));
    frames
}

pub(crate) fn stream_error(kind: &str, message: &str) -> String {
    let data = json!({"type": "error", "error": {"type": kind, "message": message}});
    format!("event: error\ndata: {data}\n\n")
}

pub(crate) fn error_body(status: u16, message: &str, id: u64) -> Value {
    let kind = match status {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        529 => "overloaded_error",
        500..=599 => "api_error",
        _ => "invalid_request_error",
    };
    json!({"type": "error", "error": {"type": kind, "message": message}, "request_id": format!("req_fake_{id}")})
}
