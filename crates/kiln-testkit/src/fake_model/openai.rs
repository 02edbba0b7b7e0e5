//! The OpenAI Chat Completions side of the fake: request checks with the API's own error messages
//! (Bearer auth, unknown arguments, tool_calls/tool message pairing, `arguments` as a string) and
//! the documented chunk stream ending in `data: [DONE]`.

use axum::http::HeaderMap;
use serde_json::{Value, json};

use super::play::{Frame, FrameKind, Reply};
use super::{
    Checked, Rejection, Turn, header, json_content_type, script::json_fragments, valid_tool_name,
};

const FIELDS: [&str; 23] = [
    "model",
    "messages",
    "tools",
    "tool_choice",
    "stream",
    "stream_options",
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "n",
    "stop",
    "presence_penalty",
    "frequency_penalty",
    "seed",
    "user",
    "response_format",
    "parallel_tool_calls",
    "logprobs",
    "top_logprobs",
    "reasoning_effort",
    "metadata",
    "store",
];

/// A data line that is not JSON.
pub(crate) const MALFORMED: &str =
    "data: {\"id\": \"chatcmpl-fake\", \"choices\": [{\"delta\": {\n\n";

/// `GET /v1/models`, as OpenAI's Models API lists them.
pub(crate) fn models_body() -> serde_json::Value {
    serde_json::json!({
        "object": "list",
        "data": [{"id": "gpt-test", "object": "model", "created": 1735689600, "owned_by": "fake"}]
    })
}

pub(crate) fn check(headers: &HeaderMap, body: &[u8], key: &str) -> Result<Checked, Rejection> {
    check_key(headers, key)?;
    check_body(headers, body)
}

/// `Authorization: Bearer <the key>`, with OpenAI's messages when it is missing or wrong.
pub(crate) fn check_key(headers: &HeaderMap, key: &str) -> Result<(), Rejection> {
    match header(headers, "authorization").map(|v| v.strip_prefix("Bearer ")) {
        None | Some(None) => Err(Rejection::new(
            401,
            "You didn't provide an API key. You need to provide your API key in an Authorization header \
             using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
        )),
        Some(Some(sent)) if sent != key => {
            let shown: String = sent
                .chars()
                .rev()
                .take(4)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            Err(Rejection::new(
                401,
                format!("Incorrect API key provided: ****{shown}."),
            ))
        }
        Some(Some(_)) => Ok(()),
    }
}

fn check_body(headers: &HeaderMap, body: &[u8]) -> Result<Checked, Rejection> {
    json_content_type(headers)?;
    let body: Value = serde_json::from_slice(body).map_err(|e| {
        bad(format!(
            "We could not parse the JSON body of your request. ({e})"
        ))
    })?;
    let object = body
        .as_object()
        .ok_or_else(|| bad("the request body must be a JSON object"))?;
    if let Some(extra) = object.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(bad(format!(
            "Unrecognized request argument supplied: {extra}"
        )));
    }
    let model = body["model"]
        .as_str()
        .filter(|m| !m.is_empty())
        .ok_or_else(|| bad("you must provide a model parameter"))?;
    for field in ["max_tokens", "max_completion_tokens"] {
        if !body[field].is_null() && body[field].as_u64().is_none_or(|n| n == 0) {
            return Err(bad(format!(
                "Invalid '{field}': expected a positive integer."
            )));
        }
    }
    if !matches!(body["n"].as_u64(), None | Some(1)) {
        return Err(bad("n: this fake only streams one choice"));
    }
    if body["stream"] != Value::Bool(true) {
        return Err(bad("stream: this fake only streams; send \"stream\": true"));
    }
    check_messages(&body["messages"])?;
    check_tools(&body["tools"])?;
    let include_usage = body["stream_options"]["include_usage"] == Value::Bool(true);
    Ok(Checked {
        model: model.to_string(),
        include_usage,
    })
}

fn bad(message: impl Into<String>) -> Rejection {
    Rejection::new(400, message)
}

fn check_messages(messages: &Value) -> Result<(), Rejection> {
    let messages = messages
        .as_array()
        .ok_or_else(|| bad("Missing required parameter: 'messages'."))?;
    if messages.is_empty() {
        return Err(bad("[] is too short - 'messages'"));
    }
    // Tool call ids of the last assistant message still waiting for their `tool` messages.
    let mut awaiting: Vec<String> = Vec::new();
    for (i, message) in messages.iter().enumerate() {
        let at = format!("messages[{i}]");
        let content = &message["content"];
        let role = message["role"].as_str().unwrap_or_default();
        if role != "tool" && !awaiting.is_empty() {
            return Err(bad(format!(
                "An assistant message with 'tool_calls' must be followed by tool messages responding to each \
                 'tool_call_id'. The following tool_call_ids did not have response messages: {}",
                awaiting.join(", ")
            )));
        }
        match role {
            "system" | "developer" | "user" => {
                if !(content.is_string() || content.is_array()) {
                    return Err(bad(format!(
                        "Invalid type for '{at}.content': expected a string or an array."
                    )));
                }
            }
            "assistant" => {
                if !matches!(content, Value::Null | Value::String(_) | Value::Array(_)) {
                    return Err(bad(format!(
                        "Invalid type for '{at}.content': expected a string or null."
                    )));
                }
                awaiting = check_tool_calls(&at, &message["tool_calls"])?;
                if content.is_null() && awaiting.is_empty() {
                    return Err(bad(format!(
                        "Invalid value for '{at}': 'content' is required unless 'tool_calls' is given."
                    )));
                }
            }
            "tool" => {
                let id = message["tool_call_id"].as_str().unwrap_or_default();
                if !awaiting.iter().any(|a| a == id) {
                    return Err(bad(format!(
                        "Invalid parameter: messages with role 'tool' must be a response to a preceeding message \
                         with 'tool_calls'. ('{at}.tool_call_id' is {id:?})"
                    )));
                }
                if !(content.is_string() || content.is_array()) {
                    return Err(bad(format!(
                        "Invalid type for '{at}.content': expected a string or an array."
                    )));
                }
                awaiting.retain(|a| a != id);
            }
            other => {
                return Err(bad(format!(
                    "Invalid value: '{other}'. Supported values are: 'system', 'assistant', 'user', 'tool', and 'developer'."
                )));
            }
        }
    }
    match awaiting.is_empty() {
        true => Ok(()),
        false => Err(bad(format!(
            "An assistant message with 'tool_calls' must be followed by tool messages responding to each \
             'tool_call_id'. The following tool_call_ids did not have response messages: {}",
            awaiting.join(", ")
        ))),
    }
}

/// Checks an assistant message's `tool_calls` and returns their ids.
fn check_tool_calls(at: &str, calls: &Value) -> Result<Vec<String>, Rejection> {
    let calls = match calls {
        Value::Null => return Ok(Vec::new()),
        Value::Array(calls) => calls,
        _ => {
            return Err(bad(format!(
                "Invalid type for '{at}.tool_calls': expected an array."
            )));
        }
    };
    let mut ids = Vec::new();
    for (j, call) in calls.iter().enumerate() {
        let at = format!("{at}.tool_calls[{j}]");
        if call["type"] != "function" {
            return Err(bad(format!(
                "Invalid value for '{at}.type': expected 'function'."
            )));
        }
        if !call["function"]["name"].is_string() {
            return Err(bad(format!(
                "Missing required parameter: '{at}.function.name'."
            )));
        }
        if !call["function"]["arguments"].is_string() {
            return Err(bad(format!(
                "Invalid type for '{at}.function.arguments': expected a string, but got {} instead.",
                type_name(&call["function"]["arguments"])
            )));
        }
        let id = call["id"]
            .as_str()
            .ok_or_else(|| bad(format!("Missing required parameter: '{at}.id'.")))?;
        ids.push(id.to_string());
    }
    Ok(ids)
}

fn check_tools(tools: &Value) -> Result<(), Rejection> {
    let tools = match tools {
        Value::Null => return Ok(()),
        Value::Array(tools) => tools,
        _ => return Err(bad("Invalid type for 'tools': expected an array.")),
    };
    for (i, tool) in tools.iter().enumerate() {
        let function = &tool["function"];
        if tool["type"] != "function" {
            return Err(bad(format!(
                "Invalid value for 'tools[{i}].type': expected 'function'."
            )));
        }
        if !valid_tool_name(function["name"].as_str().unwrap_or_default()) {
            return Err(bad(format!(
                "Invalid 'tools[{i}].function.name': string does not match pattern. Expected a string that matches \
                 the pattern '^[a-zA-Z0-9_-]+$'."
            )));
        }
        if !matches!(function["parameters"], Value::Null | Value::Object(_)) {
            return Err(bad(format!(
                "Invalid type for 'tools[{i}].function.parameters': expected an object."
            )));
        }
        if !matches!(function["description"], Value::Null | Value::String(_)) {
            return Err(bad(format!(
                "Invalid type for 'tools[{i}].function.description': expected a string."
            )));
        }
    }
    Ok(())
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// One `chat.completion.chunk`; `usage: null` on every chunk when usage was asked for, as the
/// API does.
fn chunk(kind: FrameKind, reply: &Reply, choices: Value, usage: Option<Value>) -> Frame {
    let mut data = json!({"id": format!("chatcmpl-fake{}", reply.id), "object": "chat.completion.chunk",
        "created": 1_700_000_000, "model": reply.model, "system_fingerprint": "fp_fake", "choices": choices});
    if reply.include_usage {
        data["usage"] = usage.unwrap_or(Value::Null);
    }
    Frame {
        kind,
        bytes: format!("data: {data}\n\n"),
    }
}

fn delta(kind: FrameKind, reply: &Reply, delta: Value, finish_reason: Option<&str>) -> Frame {
    let choices =
        json!([{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish_reason}]);
    chunk(kind, reply, choices, None)
}

/// The turn as the documented chunk sequence: role, text deltas, tool calls (id and name first,
/// then argument fragments by index), finish_reason, the usage chunk, `[DONE]`.
pub(crate) fn render(turn: &Turn, reply: &Reply) -> Vec<Frame> {
    let mut frames = vec![delta(
        FrameKind::Opening,
        reply,
        json!({"role": "assistant", "content": "", "refusal": null}),
        None,
    )];
    for text in &turn.text {
        frames.push(delta(
            FrameKind::Text,
            reply,
            json!({"content": text}),
            None,
        ));
    }
    for (index, call) in turn.tool_calls.iter().enumerate() {
        frames.push(delta(
            FrameKind::Tool,
            reply,
            json!({"tool_calls": [{"index": index, "id": call.id,
            "type": "function", "function": {"name": call.name, "arguments": ""}}]}),
            None,
        ));
        for fragment in json_fragments(&call.input)
            .into_iter()
            .filter(|f| !f.is_empty())
        {
            frames.push(delta(
                FrameKind::Tool,
                reply,
                json!({"tool_calls": [{"index": index,
                "function": {"arguments": fragment}}]}),
                None,
            ));
        }
    }
    let finish_reason = if turn.tool_calls.is_empty() {
        "stop"
    } else {
        "tool_calls"
    };
    frames.push(delta(
        FrameKind::Closing,
        reply,
        json!({}),
        Some(finish_reason),
    ));
    if reply.include_usage {
        let (prompt, completion) = turn.usage;
        // OpenAI counts cached tokens inside prompt_tokens and reports no cache writes.
        let usage = json!({"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": turn.cache.0, "audio_tokens": 0}});
        frames.push(chunk(FrameKind::Closing, reply, json!([]), Some(usage)));
    }
    frames.push(Frame {
        kind: FrameKind::Closing,
        bytes: "data: [DONE]\n\n".to_string(),
    });
    frames
}

pub(crate) fn stream_error(kind: &str, message: &str) -> String {
    let data = json!({"error": {"message": message, "type": kind, "param": null, "code": null}});
    format!("data: {data}\n\n")
}

pub(crate) fn error_body(status: u16, message: &str) -> Value {
    let (kind, code) = match status {
        401 => ("invalid_request_error", Value::from("invalid_api_key")),
        404 => ("invalid_request_error", Value::from("model_not_found")),
        429 => ("requests", Value::from("rate_limit_exceeded")),
        500..=599 => ("server_error", Value::Null),
        _ => ("invalid_request_error", Value::Null),
    };
    json!({"error": {"message": message, "type": kind, "param": null, "code": code}})
}
