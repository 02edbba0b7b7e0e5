//! What a test tells [`crate::FakeModel`] to answer: one [`Script`] per HTTP request, most of them
//! a [`Turn`] (text chunks and tool calls) that plays in whichever wire format was called.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::Value;

/// The answer to one request.
#[derive(Debug, Clone)]
pub enum Script {
    /// A complete, successful streamed response.
    Turn(Turn),
    /// A non-2xx answer with the provider's error body; `retry_after` becomes `retry-after`
    /// (whole seconds) or `retry-after-ms` plus a rounded-up `retry-after` (otherwise).
    Status {
        status: u16,
        retry_after: Option<Duration>,
        message: String,
    },
    /// Sends the first `events` SSE events of the turn, then drops the connection.
    CutAfter { turn: Turn, events: usize },
    /// Sends the opening event(s), then a data line that is not JSON.
    Malformed,
    /// Sends the opening event(s), then Anthropic's `event: error` or OpenAI's error chunk.
    StreamError { kind: String, message: String },
    /// Streams the turn's text, then keeps the connection open, sending nothing, until the client
    /// goes away or the fake is dropped.
    Hang { turn: Turn },
}

impl From<Turn> for Script {
    fn from(turn: Turn) -> Self {
        Script::Turn(turn)
    }
}

/// One model response. The stop reason follows from it: `tool_use` / `tool_calls` when it has
/// tool calls, else `end_turn` / `stop`.
#[derive(Debug, Clone, PartialEq)]
pub struct Turn {
    /// Text deltas, in order; empty for no text block.
    pub text: Vec<String>,
    pub tool_calls: Vec<FakeToolCall>,
    /// Delay before the first content event (the opening event goes out at once).
    pub ttft: Duration,
    /// Delay before each later content event.
    pub chunk_delay: Duration,
    /// (input tokens, output tokens) reported in the usage fields; input tokens are the whole
    /// prompt, the cached parts included (as kiln counts them).
    pub usage: (u64, u64),
    /// (cache read, cache write) tokens, part of the input tokens: Anthropic reports them as
    /// `cache_read_input_tokens` / `cache_creation_input_tokens` (its `input_tokens` is the
    /// rest); OpenAI as `prompt_tokens_details.cached_tokens` (writes are not reported).
    pub cache: (u64, u64),
}

/// A tool call the fake model makes; its input is streamed in several JSON fragments.
#[derive(Debug, Clone, PartialEq)]
pub struct FakeToolCall {
    pub id: String,
    pub name: String,
    pub input: Value,
}

impl FakeToolCall {
    /// A call with a fresh id (`toolu_fake_<n>`, unique in the process).
    pub fn new(name: &str, input: Value) -> FakeToolCall {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        FakeToolCall {
            id: format!("toolu_fake_{}", NEXT.fetch_add(1, Ordering::Relaxed)),
            name: name.to_string(),
            input,
        }
    }
}

impl Turn {
    /// A text-only turn, streamed one word (with its trailing space) per delta.
    pub fn text(s: &str) -> Turn {
        Turn {
            text: s.split_inclusive(' ').map(str::to_string).collect(),
            tool_calls: Vec::new(),
            ttft: Duration::ZERO,
            chunk_delay: Duration::ZERO,
            usage: (10, 5),
            cache: (0, 0),
        }
    }

    /// A turn that only calls one tool.
    pub fn tool(name: &str, input: Value) -> Turn {
        Turn::text("").with_tool(name, input)
    }

    /// Adds a tool call after the text and any earlier calls.
    pub fn with_tool(mut self, name: &str, input: Value) -> Turn {
        self.tool_calls.push(FakeToolCall::new(name, input));
        self
    }

    /// Replaces the text, split as in [`Turn::text`].
    pub fn with_text(mut self, s: &str) -> Turn {
        self.text = Turn::text(s).text;
        self
    }

    pub fn with_ttft(mut self, ttft: Duration) -> Turn {
        self.ttft = ttft;
        self
    }

    pub fn with_chunk_delay(mut self, delay: Duration) -> Turn {
        self.chunk_delay = delay;
        self
    }

    pub fn with_usage(mut self, input_tokens: u64, output_tokens: u64) -> Turn {
        self.usage = (input_tokens, output_tokens);
        self
    }

    /// Cache read and write tokens, counted within the input tokens of [`Turn::with_usage`].
    pub fn with_cache(mut self, read: u64, write: u64) -> Turn {
        self.cache = (read, write);
        self
    }

    /// The whole text, as a client should reassemble it.
    pub fn full_text(&self) -> String {
        self.text.concat()
    }
}

/// A tool input as the providers stream it: an empty first fragment, then the JSON text cut in
/// three at character boundaries (fewer when it is very short).
pub(crate) fn json_fragments(input: &Value) -> Vec<String> {
    let json = input.to_string();
    let chars: Vec<char> = json.chars().collect();
    let third = chars.len().div_ceil(3).max(1);
    let mut fragments = vec![String::new()];
    fragments.extend(chars.chunks(third).map(|c| c.iter().collect::<String>()));
    fragments
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fragments_rejoin_to_the_input() {
        for input in [
            json!({}),
            json!({"path": "src/main.rs", "n": [1, 2]}),
            json!({"é": "ü"}),
        ] {
            let fragments = json_fragments(&input);
            assert_eq!(fragments[0], "");
            assert!(fragments.len() >= 3, "{fragments:?}");
            let joined: String = fragments.concat();
            assert_eq!(serde_json::from_str::<Value>(&joined).unwrap(), input);
        }
    }

    #[test]
    fn builders() {
        let turn = Turn::text("hello big world").with_tool("read", json!({"p": 1}));
        assert_eq!(turn.text, ["hello ", "big ", "world"]);
        assert_eq!(turn.full_text(), "hello big world");
        assert_eq!(turn.tool_calls.len(), 1);
        assert!(Turn::tool("x", json!({})).text.is_empty());
        assert_ne!(
            FakeToolCall::new("a", json!({})).id,
            FakeToolCall::new("a", json!({})).id
        );
    }
}
