//! `GET /api/repos/{name}/mcp`: the repo's MCP servers as the control plane sees them now. A
//! remote server is connected to (with its secret, under the address rules) and asked for its
//! tools; a local one runs only inside a session's sandbox, so it is reported as not checked.

use super::Engine;
use crate::{Error, Result};
use kiln_protocol::api::{McpKind, McpServer, McpState, McpTool};

impl Engine {
    /// Each `[[mcp]]` server of `repo`: its kind, whether kiln could reach it and its tools.
    pub async fn repo_mcp(&self, repo: &str) -> Result<Vec<McpServer>> {
        let repo = self.repo(repo).await?;
        let entries = crate::session::mcp_entries(&self.inner, &repo.name)
            .await
            .map_err(Error::Invalid)?;
        let checks = entries.iter().map(|entry| async {
            let kind = if entry.url.is_some() {
                McpKind::Remote
            } else {
                McpKind::Local
            };
            let mut server = McpServer {
                name: entry.name.clone(),
                kind,
                state: McpState::NotChecked {
                    reason: "a local server starts in each session's sandbox; its failures are \
                             error events in the session"
                        .into(),
                },
                allow: entry.tools.clone(),
                tools: Vec::new(),
            };
            if kind == McpKind::Local {
                return server;
            }
            let config = match crate::session::mcp_server_config(
                &self.inner,
                &repo.name,
                entry,
                Default::default(),
            )
            .await
            {
                Ok(config) => config,
                Err(message) => {
                    server.state = McpState::Error { message };
                    return server;
                }
            };
            match kiln_mcp::connect(config, None, &self.inner.config.mcp).await {
                Ok(connection) => {
                    server.state = McpState::Ok;
                    server.tools = connection
                        .listing()
                        .into_iter()
                        .map(|t| McpTool {
                            name: t.name,
                            description: t.description,
                            allowed: t.allowed,
                        })
                        .collect();
                }
                Err(e) => {
                    server.state = McpState::Error {
                        message: e.to_string(),
                    }
                }
            }
            server
        });
        Ok(futures_util::future::join_all(checks).await)
    }
}
