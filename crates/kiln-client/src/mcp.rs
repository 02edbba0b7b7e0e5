//! The client side of a repo's MCP servers: their state and tools as the server sees them.

use crate::client::{Client, NO_BODY};
use crate::error::Result;
use kiln_protocol::api::McpServer;
use reqwest::Method;

impl Client {
    /// The repo's MCP servers: kind, state, tools (anyone who can see the repo).
    pub async fn repo_mcp(&self, repo: &str) -> Result<Vec<McpServer>> {
        self.call(Method::GET, &["repos", repo, "mcp"], NO_BODY)
            .await
    }
}
