//! The provider-neutral conversation and stream types: what the engine builds a request from and
//! what it reads back, whichever provider answers. Each provider module maps these to its wire.

use serde::{Deserialize, Serialize};

/// One request to the model: the whole conversation so far (the APIs are stateless).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ModelRequest {
    /// The system prompt; left out of the request when empty.
    pub system: String,
    pub messages: Vec<Message>,
    pub tools: Vec<ToolSpec>,
    /// Overrides [`crate::ModelConfig::max_tokens`] for this request.
    pub max_tokens: Option<u32>,
}

/// A tool the model may call; `input_schema` is a JSON Schema object.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolSpec {
    pub name: String,
    pub description: String,
    pub input_schema: serde_json::Value,
}

/// One turn of the conversation. Serialisable because the engine stores conversations as JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub role: MessageRole,
    pub content: Vec<ContentBlock>,
}

impl Message {
    /// A user message holding one text block.
    pub fn user(text: impl Into<String>) -> Message {
        Message {
            role: MessageRole::User,
            content: vec![ContentBlock::Text { text: text.into() }],
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageRole {
    User,
    Assistant,
}

/// A piece of a message. Tool calls live in assistant messages, their results in the user message
/// that follows (Anthropic's model; the OpenAI mapping splits results into `tool` messages).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ContentBlock {
    Text {
        text: String,
    },
    ToolUse {
        id: String,
        name: String,
        input: serde_json::Value,
    },
    ToolResult {
        tool_use_id: String,
        content: String,
        #[serde(default)]
        is_error: bool,
    },
}

/// What a [`crate::ModelStream`] yields, in order: text deltas and complete tool calls as they
/// arrive, then exactly one `Finished`.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent {
    TextDelta(String),
    /// A complete tool call: emitted once its input JSON finished streaming
    /// (`content_block_stop` for Anthropic, `finish_reason` for OpenAI).
    ToolUse {
        id: String,
        name: String,
        input: serde_json::Value,
    },
    /// Last event of a successful response.
    Finished {
        stop_reason: StopReason,
        usage: Usage,
    },
}

/// Why the model stopped, normalised across providers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    /// Anthropic `end_turn`, OpenAI `stop`.
    EndTurn,
    /// Anthropic `tool_use`, OpenAI `tool_calls`: run the tools and send their results.
    ToolUse,
    /// Anthropic `max_tokens`, OpenAI `length`.
    MaxTokens,
    /// Anything else, verbatim (`stop_sequence`, `refusal`, `content_filter`, ...).
    Other(String),
}

/// Token counts of one response, normalised across providers.
///
/// `input_tokens` is the whole prompt, cached parts included (OpenAI's `prompt_tokens`;
/// Anthropic's `input_tokens + cache_read_input_tokens + cache_creation_input_tokens`), so it
/// is the size of the request whichever provider answered. `cache_read_tokens` and
/// `cache_write_tokens` are the parts of it read from and written to the provider's prompt
/// cache (Anthropic `cache_read_input_tokens` / `cache_creation_input_tokens`; OpenAI
/// `prompt_tokens_details.cached_tokens`, and no writes: OpenAI does not report them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_read_tokens: u64,
    pub cache_write_tokens: u64,
}

impl Usage {
    /// Prompt tokens neither read from nor written to the cache (billed at the input price).
    pub fn uncached_input_tokens(&self) -> u64 {
        self.input_tokens
            .saturating_sub(self.cache_read_tokens)
            .saturating_sub(self.cache_write_tokens)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn content_blocks_are_stored_as_type_tagged_snake_case() {
        let message = Message {
            role: MessageRole::Assistant,
            content: vec![
                ContentBlock::Text { text: "hi".into() },
                ContentBlock::ToolUse {
                    id: "t1".into(),
                    name: "read".into(),
                    input: json!({"path": "a"}),
                },
            ],
        };
        let value = serde_json::to_value(&message).unwrap();
        assert_eq!(
            value,
            json!({"role": "assistant", "content": [
                {"type": "text", "text": "hi"},
                {"type": "tool_use", "id": "t1", "name": "read", "input": {"path": "a"}},
            ]})
        );
        let back: Message = serde_json::from_value(value).unwrap();
        assert_eq!(back, message);
    }

    #[test]
    fn tool_result_is_error_defaults_to_false() {
        let block: ContentBlock = serde_json::from_value(
            json!({"type": "tool_result", "tool_use_id": "t", "content": "x"}),
        )
        .unwrap();
        assert_eq!(
            block,
            ContentBlock::ToolResult {
                tool_use_id: "t".into(),
                content: "x".into(),
                is_error: false
            }
        );
    }
}
