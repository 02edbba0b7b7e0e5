//! What a server is, once the engine has read the repo's `[[mcp]]` entries and opened the
//! secret a remote one names, and the control plane's own `[mcp]` settings.

use kiln_core::Secret;
use std::collections::BTreeMap;

/// One MCP server of a repo.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// `[a-z0-9_-]`, no `__` (it separates server and tool in the tool's name).
    pub name: String,
    pub kind: ServerKind,
    /// The tools the agent may use; `None` allows every tool the server lists.
    pub allow: Option<Vec<String>>,
}

#[derive(Debug, Clone)]
pub enum ServerKind {
    /// Run over stdio inside the session's sandbox.
    Local {
        command: Vec<String>,
        /// The prompt's variables (its author's git identity, the session).
        env: BTreeMap<String, String>,
    },
    /// Called over Streamable HTTP from the control plane.
    Remote {
        url: String,
        /// The opened repo secret, sent as `Authorization: Bearer …`.
        bearer: Option<Secret<String>>,
    },
}

impl ServerConfig {
    pub fn allows(&self, tool: &str) -> bool {
        self.allow
            .as_ref()
            .is_none_or(|allow| allow.iter().any(|t| t == tool))
    }

    pub fn kind_name(&self) -> &'static str {
        match self.kind {
            ServerKind::Local { .. } => "local",
            ServerKind::Remote { .. } => "remote",
        }
    }
}

/// kiln.toml `[mcp]`: what the control plane may connect to.
#[derive(Debug, Clone, Default)]
pub struct McpSettings {
    /// `host:port` pairs a remote server may be at although the address rules refuse their
    /// address (loopback, private, link-local, the host's own): an operator's explicit choice.
    pub allow_hosts: Vec<String>,
}
