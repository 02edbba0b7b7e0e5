//! Model provider clients (Anthropic Messages, OpenAI Chat Completions and compatibles): streaming,
//! tool calls, retries.
//!
//! The engine resolves a [`ModelConfig`], builds one [`ModelClient`] and calls
//! [`ModelClient::stream`] once per turn with the whole conversation; the [`ModelStream`] yields
//! provider-neutral [`StreamEvent`]s. Each provider is one module that maps the neutral types to
//! its wire format; both stream server-sent events, cut by one parser (`sse`).

mod anthropic;
mod client;
mod config;
mod error;
mod openai;
mod retry;
mod sse;
mod stream;
mod types;

pub use client::ModelClient;
pub use config::{ConfigError, ModelConfig, ProviderKind, RetryPolicy};
pub use error::ModelError;
pub use stream::ModelStream;
pub use types::{
    ContentBlock, Message, MessageRole, ModelRequest, StopReason, StreamEvent, ToolSpec, Usage,
};
