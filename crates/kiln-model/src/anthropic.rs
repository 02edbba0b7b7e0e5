//! The Anthropic Messages API wire format: the request body and the SSE event decoder
//! (`message_start` … `message_stop`), which reassembles streamed tool input.

use std::collections::HashMap;

use serde::Serialize;
use serde_json::Value;

use crate::sse::SseEvent;
use crate::{
    ContentBlock, Message, MessageRole, ModelError, ModelRequest, StopReason, StreamEvent, Usage,
};

pub(crate) const API_VERSION: &str = "2023-06-01";

#[derive(Serialize)]
struct Body<'a> {
    model: &'a str,
    max_tokens: u32,
    #[serde(skip_serializing_if = "str::is_empty")]
    system: &'a str,
    messages: Vec<WireMessage<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<WireTool<'a>>,
    stream: bool,
}

#[derive(Serialize)]
struct WireMessage<'a> {
    role: &'static str,
    content: Vec<&'a ContentBlock>,
}

#[derive(Serialize)]
struct WireTool<'a> {
    name: &'a str,
    description: &'a str,
    input_schema: &'a Value,
}

/// The request body. `ContentBlock`'s serde form is exactly Anthropic's block format. Empty text
/// blocks, and messages left empty by dropping them, are left out: the API rejects both.
pub(crate) fn request_body(model: &str, max_tokens: u32, request: &ModelRequest) -> Value {
    let messages = request
        .messages
        .iter()
        .filter_map(|Message { role, content }| {
            let content: Vec<&ContentBlock> = content
                .iter()
                .filter(|block| !matches!(block, ContentBlock::Text { text } if text.is_empty()))
                .collect();
            let role = match role {
                MessageRole::User => "user",
                MessageRole::Assistant => "assistant",
            };
            (!content.is_empty()).then_some(WireMessage { role, content })
        })
        .collect();
    let body = Body {
        model,
        max_tokens,
        system: &request.system,
        messages,
        tools: request
            .tools
            .iter()
            .map(|tool| WireTool {
                name: &tool.name,
                description: &tool.description,
                input_schema: &tool.input_schema,
            })
            .collect(),
        stream: true,
    };
    serde_json::to_value(body).unwrap_or(Value::Null)
}

enum Block {
    Text,
    Tool {
        id: String,
        name: String,
        json: String,
        initial: Value,
    },
    /// Thinking, server tools and future block types: not surfaced.
    Other,
}

/// Turns Anthropic stream events into [`StreamEvent`]s.
#[derive(Default)]
pub(crate) struct Decoder {
    blocks: HashMap<u64, Block>,
    /// Anthropic's own counts: `input_tokens` without the cached parts.
    uncached_input: u64,
    usage: Usage,
    stop_reason: Option<String>,
    finished: bool,
}

impl Decoder {
    pub(crate) fn on_event(&mut self, event: &SseEvent) -> Result<Vec<StreamEvent>, ModelError> {
        let value: Value = serde_json::from_str(&event.data).map_err(|e| {
            ModelError::Malformed(format!("{} event is not JSON: {e}", event.event))
        })?;
        let kind = value["type"].as_str().unwrap_or(&event.event);
        let mut out = Vec::new();
        match kind {
            "message_start" => {
                let usage = &value["message"]["usage"];
                self.uncached_input = usage["input_tokens"].as_u64().unwrap_or(0);
                self.usage.output_tokens = usage["output_tokens"].as_u64().unwrap_or(0);
                self.read_cache_fields(usage);
            }
            "content_block_start" => {
                let index = index(&value)?;
                let block = &value["content_block"];
                let state = match block["type"].as_str() {
                    Some("text") => {
                        push_text(&mut out, &block["text"]);
                        Block::Text
                    }
                    Some("tool_use") => Block::Tool {
                        id: string_field(block, "id")?,
                        name: string_field(block, "name")?,
                        json: String::new(),
                        initial: block["input"].clone(),
                    },
                    _ => Block::Other,
                };
                self.blocks.insert(index, state);
            }
            "content_block_delta" => {
                let index = index(&value)?;
                let delta = &value["delta"];
                match (self.blocks.get_mut(&index), delta["type"].as_str()) {
                    (None, _) => return Err(unknown_block(index)),
                    (Some(Block::Text), Some("text_delta")) => push_text(&mut out, &delta["text"]),
                    (Some(Block::Tool { json, .. }), Some("input_json_delta")) => {
                        json.push_str(delta["partial_json"].as_str().unwrap_or_default());
                    }
                    _ => {} // thinking, signature and citation deltas
                }
            }
            "content_block_stop" => {
                let index = index(&value)?;
                match self.blocks.remove(&index) {
                    None => return Err(unknown_block(index)),
                    Some(Block::Tool {
                        id,
                        name,
                        json,
                        initial,
                    }) => {
                        let input = parse_tool_input(&name, &json, initial)?;
                        out.push(StreamEvent::ToolUse { id, name, input });
                    }
                    Some(_) => {}
                }
            }
            "message_delta" => {
                if let Some(reason) = value["delta"]["stop_reason"].as_str() {
                    self.stop_reason = Some(reason.to_string());
                }
                let usage = &value["usage"];
                if let Some(output) = usage["output_tokens"].as_u64() {
                    self.usage.output_tokens = output;
                }
                // Gateways that report 0 in message_start send the real count here.
                if let Some(input) = usage["input_tokens"].as_u64().filter(|n| *n > 0) {
                    self.uncached_input = input;
                }
                self.read_cache_fields(usage);
            }
            "message_stop" => {
                self.finished = true;
                // kiln's `input_tokens` is the whole prompt, as OpenAI counts it.
                self.usage.input_tokens = self.uncached_input
                    + self.usage.cache_read_tokens
                    + self.usage.cache_write_tokens;
                out.push(StreamEvent::Finished {
                    stop_reason: stop_reason(self.stop_reason.take()),
                    usage: self.usage,
                });
            }
            "error" => {
                let error = &value["error"];
                return Err(ModelError::Api {
                    kind: error["type"].as_str().unwrap_or("error").to_string(),
                    message: error["message"]
                        .as_str()
                        .unwrap_or("no message")
                        .to_string(),
                });
            }
            _ => {} // `ping` and event types added after this was written
        }
        Ok(out)
    }

    /// `cache_read_input_tokens` and `cache_creation_input_tokens`, where a usage object has
    /// them (`message_start` always; `message_delta` in newer API versions, cumulative).
    fn read_cache_fields(&mut self, usage: &Value) {
        if let Some(read) = usage["cache_read_input_tokens"].as_u64() {
            self.usage.cache_read_tokens = read;
        }
        if let Some(write) = usage["cache_creation_input_tokens"].as_u64() {
            self.usage.cache_write_tokens = write;
        }
    }

    /// The body ended: fine only after `message_stop`.
    pub(crate) fn on_eof(&mut self) -> Result<Vec<StreamEvent>, ModelError> {
        if self.finished {
            Ok(Vec::new())
        } else {
            Err(ModelError::StreamCut)
        }
    }
}

fn index(value: &Value) -> Result<u64, ModelError> {
    value["index"]
        .as_u64()
        .ok_or_else(|| ModelError::Malformed(format!("{} without an index", value["type"])))
}

fn string_field(block: &Value, field: &str) -> Result<String, ModelError> {
    block[field]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| ModelError::Malformed(format!("tool_use block without {field}")))
}

fn unknown_block(index: u64) -> ModelError {
    ModelError::Malformed(format!(
        "event for content block {index}, which was not started"
    ))
}

fn push_text(out: &mut Vec<StreamEvent>, text: &Value) {
    if let Some(text) = text.as_str().filter(|t| !t.is_empty()) {
        out.push(StreamEvent::TextDelta(text.to_string()));
    }
}

/// The streamed tool input; nothing streamed means the block's initial input (normally `{}`).
pub(crate) fn parse_tool_input(
    name: &str,
    json: &str,
    initial: Value,
) -> Result<Value, ModelError> {
    if json.trim().is_empty() {
        return Ok(if initial.is_null() {
            Value::Object(Default::default())
        } else {
            initial
        });
    }
    serde_json::from_str(json)
        .map_err(|e| ModelError::Malformed(format!("input of tool call {name} is not JSON: {e}")))
}

fn stop_reason(reason: Option<String>) -> StopReason {
    match reason.as_deref() {
        Some("end_turn") => StopReason::EndTurn,
        Some("tool_use") => StopReason::ToolUse,
        Some("max_tokens") => StopReason::MaxTokens,
        Some(other) => StopReason::Other(other.to_string()),
        None => StopReason::Other("none".to_string()),
    }
}

#[cfg(test)]
mod tests;
