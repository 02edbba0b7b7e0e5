//! The OpenAI Chat Completions wire format (also spoken by vLLM, Ollama, llama.cpp): the request
//! body and the `data: {chunk}` decoder, which accumulates tool-call fragments by index.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use crate::anthropic::parse_tool_input;
use crate::sse::SseEvent;
use crate::{ContentBlock, MessageRole, ModelError, ModelRequest, StopReason, StreamEvent, Usage};

#[derive(Serialize)]
struct Body<'a> {
    model: &'a str,
    messages: Vec<WireMessage<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<WireTool<'a>>,
    stream: bool,
    stream_options: StreamOptions,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_completion_tokens: Option<u32>,
}

#[derive(Serialize)]
struct StreamOptions {
    include_usage: bool,
}

#[derive(Serialize)]
#[serde(tag = "role", rename_all = "lowercase")]
enum WireMessage<'a> {
    System {
        content: &'a str,
    },
    User {
        content: String,
    },
    Assistant {
        content: Option<String>,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        tool_calls: Vec<WireToolCall<'a>>,
    },
    Tool {
        tool_call_id: &'a str,
        content: Cow<'a, str>,
    },
}

#[derive(Serialize)]
struct WireToolCall<'a> {
    id: &'a str,
    r#type: &'static str,
    function: WireCall<'a>,
}

#[derive(Serialize)]
struct WireCall<'a> {
    name: &'a str,
    /// A JSON document in a string, as the API wants it.
    arguments: String,
}

#[derive(Serialize)]
struct WireTool<'a> {
    r#type: &'static str,
    function: WireFunction<'a>,
}

#[derive(Serialize)]
struct WireFunction<'a> {
    name: &'a str,
    description: &'a str,
    parameters: &'a Value,
}

/// The request body. `official` selects `max_completion_tokens` (required by OpenAI's reasoning
/// models); other servers get `max_tokens`, which every compatible server understands.
pub(crate) fn request_body(
    model: &str,
    max_tokens: u32,
    official: bool,
    request: &ModelRequest,
) -> Value {
    let mut messages = Vec::new();
    if !request.system.is_empty() {
        messages.push(WireMessage::System {
            content: &request.system,
        });
    }
    for message in &request.messages {
        let mut texts = Vec::new();
        let mut tool_calls = Vec::new();
        for block in &message.content {
            match block {
                ContentBlock::Text { text } if !text.is_empty() => texts.push(text.as_str()),
                ContentBlock::Text { .. } => {}
                ContentBlock::ToolUse { id, name, input } => tool_calls.push(WireToolCall {
                    id,
                    r#type: "function",
                    function: WireCall {
                        name,
                        arguments: input.to_string(),
                    },
                }),
                // Tool results must directly follow the assistant's call, so they go first.
                ContentBlock::ToolResult {
                    tool_use_id,
                    content,
                    is_error,
                } => messages.push(WireMessage::Tool {
                    tool_call_id: tool_use_id,
                    content: if *is_error {
                        Cow::Owned(format!("error: {content}"))
                    } else {
                        Cow::Borrowed(content)
                    },
                }),
            }
        }
        let text = (!texts.is_empty()).then(|| texts.join("\n\n"));
        match message.role {
            MessageRole::User => {
                if !tool_calls.is_empty() {
                    tracing::warn!("tool calls in a user message are not sent to the model");
                }
                messages.extend(text.map(|content| WireMessage::User { content }));
            }
            MessageRole::Assistant if text.is_none() && tool_calls.is_empty() => {}
            MessageRole::Assistant => messages.push(WireMessage::Assistant {
                content: text,
                tool_calls,
            }),
        }
    }
    let body = Body {
        model,
        messages,
        tools: request
            .tools
            .iter()
            .map(|tool| WireTool {
                r#type: "function",
                function: WireFunction {
                    name: &tool.name,
                    description: &tool.description,
                    parameters: &tool.input_schema,
                },
            })
            .collect(),
        stream: true,
        stream_options: StreamOptions {
            include_usage: true,
        },
        max_tokens: (!official).then_some(max_tokens),
        max_completion_tokens: official.then_some(max_tokens),
    };
    serde_json::to_value(body).unwrap_or(Value::Null)
}

#[derive(Default)]
struct PendingCall {
    id: String,
    name: String,
    arguments: String,
}

/// Turns chat completion chunks into [`StreamEvent`]s.
#[derive(Default)]
pub(crate) struct Decoder {
    /// Tool calls being streamed, by their `index`.
    calls: BTreeMap<u64, PendingCall>,
    emitted_tool_calls: bool,
    finish_reason: Option<String>,
    usage: Usage,
    done: bool,
}

impl Decoder {
    pub(crate) fn on_event(&mut self, event: &SseEvent) -> Result<Vec<StreamEvent>, ModelError> {
        if event.data.trim() == "[DONE]" {
            return self.finish();
        }
        let chunk: Value = serde_json::from_str(&event.data)
            .map_err(|e| ModelError::Malformed(format!("chunk is not JSON: {e}")))?;
        if let Some(error) = chunk.get("error").filter(|e| !e.is_null()) {
            return Err(api_error(error));
        }
        if let Some(usage) = chunk.get("usage").filter(|u| u.is_object()) {
            self.usage.input_tokens = usage["prompt_tokens"].as_u64().unwrap_or(0);
            self.usage.output_tokens = usage["completion_tokens"].as_u64().unwrap_or(0);
            // Part of prompt_tokens; OpenAI reports no cache writes.
            self.usage.cache_read_tokens = usage["prompt_tokens_details"]["cached_tokens"]
                .as_u64()
                .unwrap_or(0);
        }
        let mut out = Vec::new();
        let choices = chunk["choices"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default();
        // Only one completion is requested (n = 1): choice 0.
        for choice in choices
            .iter()
            .filter(|c| c["index"].as_u64().unwrap_or(0) == 0)
        {
            let delta = &choice["delta"];
            if let Some(text) = delta["content"].as_str().filter(|t| !t.is_empty()) {
                out.push(StreamEvent::TextDelta(text.to_string()));
            }
            for fragment in delta["tool_calls"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
            {
                self.add_fragment(fragment);
            }
            if let Some(reason) = choice["finish_reason"].as_str() {
                self.finish_reason = Some(reason.to_string());
                out.extend(self.flush_calls()?);
            }
        }
        Ok(out)
    }

    fn add_fragment(&mut self, fragment: &Value) {
        let id = fragment["id"].as_str().filter(|s| !s.is_empty());
        // Servers that omit `index` send each call whole: a new id starts a new call.
        let index = fragment["index"].as_u64().unwrap_or_else(|| {
            let last = self.calls.keys().next_back().copied();
            match (last, id) {
                (None, _) => 0,
                (Some(last), Some(_)) => last + 1,
                (Some(last), None) => last,
            }
        });
        let call = self.calls.entry(index).or_default();
        if let (Some(id), true) = (id, call.id.is_empty()) {
            call.id = id.to_string();
        }
        let function = &fragment["function"];
        if let (Some(name), true) = (function["name"].as_str(), call.name.is_empty()) {
            call.name = name.to_string();
        }
        match &function["arguments"] {
            Value::String(part) => call.arguments.push_str(part),
            Value::Object(_) => call.arguments = function["arguments"].to_string(),
            _ => {}
        }
    }

    fn flush_calls(&mut self) -> Result<Vec<StreamEvent>, ModelError> {
        let mut out = Vec::new();
        for (index, call) in std::mem::take(&mut self.calls) {
            if call.name.is_empty() {
                return Err(ModelError::Malformed(format!(
                    "tool call {index} has no function name"
                )));
            }
            let input = parse_tool_input(&call.name, &call.arguments, Value::Null)?;
            let id = if call.id.is_empty() {
                format!("call_{index}")
            } else {
                call.id
            };
            out.push(StreamEvent::ToolUse {
                id,
                name: call.name,
                input,
            });
            self.emitted_tool_calls = true;
        }
        Ok(out)
    }

    fn finish(&mut self) -> Result<Vec<StreamEvent>, ModelError> {
        let mut out = self.flush_calls()?;
        let stop_reason = match self.finish_reason.take().as_deref() {
            // Some compatible servers say "stop" (or nothing) after tool calls.
            Some("stop") | None if self.emitted_tool_calls => StopReason::ToolUse,
            Some("stop") | None => StopReason::EndTurn,
            Some("tool_calls" | "function_call") => StopReason::ToolUse,
            Some("length") => StopReason::MaxTokens,
            Some(other) => StopReason::Other(other.to_string()),
        };
        self.done = true;
        out.push(StreamEvent::Finished {
            stop_reason,
            usage: self.usage,
        });
        Ok(out)
    }

    /// The body ended: fine after `[DONE]`, and tolerated after a `finish_reason` (some compatible
    /// servers close without `[DONE]`); otherwise the response was cut.
    pub(crate) fn on_eof(&mut self) -> Result<Vec<StreamEvent>, ModelError> {
        if self.done {
            Ok(Vec::new())
        } else if self.finish_reason.is_some() {
            self.finish()
        } else {
            Err(ModelError::StreamCut)
        }
    }
}

fn api_error(error: &Value) -> ModelError {
    let kind = error["type"]
        .as_str()
        .or_else(|| error["code"].as_str())
        .unwrap_or("error");
    ModelError::Api {
        kind: kind.to_string(),
        message: error["message"]
            .as_str()
            .unwrap_or("no message")
            .to_string(),
    }
}

#[cfg(test)]
mod tests;
