//! What an agent can do to a session's sandbox, and what may stand in its way: the tools
//! ([`tools`]: one registry of specs, whether each tool writes, and how it runs through the
//! guest) and the hooks around tool calls ([`hooks`]: the Claude Code contract, command hooks
//! and Rust hooks, and the rules of a chain).
//!
//! It knows sandboxes and the protocol, nothing of sessions, stores or models: the engine's agent
//! loop drives it. MCP tools (a later issue) will be one more [`tools::Tool`] implementation
//! here.

pub mod hooks;
pub mod tools;
