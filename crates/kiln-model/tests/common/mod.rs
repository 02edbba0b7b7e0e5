//! Shared setup for the client tests: a config pointing at a [`FakeModel`] for either provider,
//! and draining a stream into its events and final error.

#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

use kiln_core::Secret;
use kiln_model::{
    ContentBlock, Message, MessageRole, ModelClient, ModelConfig, ModelError, ModelRequest,
    ModelStream, ProviderKind, RetryPolicy, StreamEvent, ToolSpec,
};
use kiln_testkit::FakeModel;
use serde_json::json;

pub const PROVIDERS: [ProviderKind; 2] = [ProviderKind::Anthropic, ProviderKind::OpenAi];

/// Fast retries so retry tests take milliseconds unless a `retry-after` says otherwise.
pub fn config(fake: &FakeModel, provider: ProviderKind) -> ModelConfig {
    let (model, base_url) = match provider {
        ProviderKind::Anthropic => ("claude-sonnet-4-5", fake.url()),
        ProviderKind::OpenAi => ("gpt-4.1", format!("{}/v1", fake.url())),
    };
    let mut config = ModelConfig::new(provider, model);
    config.base_url = base_url;
    config.api_key = Some(Secret::new(fake.api_key().to_string()));
    config.retry = RetryPolicy {
        max_retries: 3,
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(100),
    };
    config.idle_timeout = Duration::from_secs(10);
    config
}

pub fn client(fake: &FakeModel, provider: ProviderKind) -> ModelClient {
    ModelClient::new(config(fake, provider)).expect("client")
}

pub fn read_file_tool() -> ToolSpec {
    ToolSpec {
        name: "read_file".into(),
        description: "Reads a file of the repository".into(),
        input_schema: json!({"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}),
    }
}

pub fn request(text: &str) -> ModelRequest {
    ModelRequest {
        system: "You are a careful coding agent.".into(),
        messages: vec![Message::user(text)],
        tools: vec![read_file_tool()],
        max_tokens: None,
    }
}

/// All events until the stream ends, and the error that ended it, if any.
pub async fn drain(stream: &mut ModelStream) -> (Vec<StreamEvent>, Option<ModelError>) {
    let mut events = Vec::new();
    while let Some(item) = stream.next().await {
        match item {
            Ok(event) => events.push(event),
            Err(error) => {
                assert!(
                    stream.next().await.is_none(),
                    "a stream ends after its error"
                );
                return (events, Some(error));
            }
        }
    }
    (events, None)
}

pub fn text_of(events: &[StreamEvent]) -> String {
    events
        .iter()
        .filter_map(|e| match e {
            StreamEvent::TextDelta(t) => Some(t.as_str()),
            _ => None,
        })
        .collect()
}

/// The assistant message the engine would store for these events.
pub fn assistant_message(events: &[StreamEvent]) -> Message {
    let mut content = Vec::new();
    let text = text_of(events);
    if !text.is_empty() {
        content.push(ContentBlock::Text { text });
    }
    for event in events {
        if let StreamEvent::ToolUse { id, name, input } = event {
            content.push(ContentBlock::ToolUse {
                id: id.clone(),
                name: name.clone(),
                input: input.clone(),
            });
        }
    }
    Message {
        role: MessageRole::Assistant,
        content,
    }
}
