//! MCP servers a repo gives its agent. A server is either **local** — a command run over stdio
//! inside the session's sandbox, under its network policy, through the guest's `exec` — or
//! **remote** — a Streamable HTTP endpoint called from the control plane, so the credential it
//! takes (a repo secret, sent as a bearer token) never enters a sandbox.
//!
//! The protocol is the official SDK's (`rmcp`); this crate only supplies the two transports'
//! ends (the sandbox exec as a byte duplex, a pinned HTTP client), the address rule for remote
//! hosts, and turns each allowed MCP tool into a kiln [`Tool`](kiln_tools::tools::Tool) named
//! `mcp__<server>__<tool>`. It knows no session, store or model: the engine owns the connections
//! of a session and reports their failures as events through [`Report`].

mod config;
mod connection;
mod local;
mod remote;
mod tool;

pub use config::{McpSettings, ServerConfig, ServerKind};
pub use connection::{Connection, ToolListing, connect};
pub use kiln_protocol::api::check_mcp_server_name;
pub use tool::{Report, tool_name};

use std::time::Duration;

/// How long starting a server and the MCP handshake (and its tool list) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
/// How long one tool call may take.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(120);

/// Why a server cannot be used; the message is for people (and the model) and names the server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("MCP server {server:?}: {message}")]
    Config { server: String, message: String },
    #[error(
        "MCP server {server:?}: {host} resolves to {addr}, {class}; remote MCP servers may not \
         reach it unless kiln.toml lists it in [mcp] allow_hosts = [\"{host_port}\"]"
    )]
    Refused {
        server: String,
        host: String,
        host_port: String,
        addr: std::net::SocketAddr,
        class: kiln_egress::AddressClass,
    },
    #[error("MCP server {server:?}: cannot resolve {host}: {message}")]
    Resolve {
        server: String,
        host: String,
        message: String,
    },
    #[error("MCP server {server:?} could not be started in the sandbox: {message}")]
    Start { server: String, message: String },
    #[error("MCP server {server:?} did not complete the MCP handshake: {message}")]
    Handshake { server: String, message: String },
    #[error("MCP server {server:?} did not answer within {} (starting and listing its tools)", kiln_core::human_duration(*.timeout))]
    Timeout { server: String, timeout: Duration },
    #[error("MCP server {server:?} could not list its tools: {message}")]
    List { server: String, message: String },
}
