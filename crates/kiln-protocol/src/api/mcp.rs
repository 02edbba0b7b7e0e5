//! A repo's MCP servers as `GET /api/repos/{name}/mcp` reports them: each server's kind, whether
//! kiln could reach it, and the tools it offers with whether the repo's allowlist lets the agent
//! use them.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Longest server name: `mcp__<server>__<tool>` must stay within the 64 characters model
/// providers accept for a tool name.
pub const MCP_SERVER_NAME_CHARS: usize = 24;

/// Checks a server name (`[[mcp]] name`); the error says what a name may be. `__` separates
/// server and tool in the agent's name of a tool, so a name may not contain it.
pub fn check_mcp_server_name(name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && name.len() <= MCP_SERVER_NAME_CHARS
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
        && !name.contains("__")
        && name.starts_with(|c: char| c.is_ascii_alphanumeric());
    if valid {
        Ok(())
    } else {
        Err(format!(
            "MCP server name {name:?} must be 1 to {MCP_SERVER_NAME_CHARS} of a-z, 0-9, _ and -, \
             start with a letter or digit and not contain \"__\""
        ))
    }
}

/// Where a server runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum McpKind {
    /// A command over stdio inside each session's sandbox.
    Local,
    /// A Streamable HTTP endpoint called from the control plane.
    Remote,
}

/// Whether kiln could connect to a server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum McpState {
    /// Connected and listed its tools.
    Ok,
    /// Could not connect, or failed; `message` says why.
    Error { message: String },
    /// Not tried here; `reason` says why (a local server starts in a session's sandbox).
    NotChecked { reason: String },
}

/// A tool a server offers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct McpTool {
    /// The server's name for it; the agent sees `mcp__<server>__<name>`.
    pub name: String,
    pub description: String,
    /// Whether the repo's `tools = [...]` allowlist lets the agent use it.
    pub allowed: bool,
}

/// One MCP server of a repo.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct McpServer {
    pub name: String,
    pub kind: McpKind,
    #[serde(flatten)]
    pub state: McpState,
    /// The allowlist as configured; absent: every tool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow: Option<Vec<String>>,
    /// What the server listed (empty unless `state` is `ok`).
    pub tools: Vec<McpTool>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names_fit_a_tool_name() {
        for good in ["db", "tracker", "my-db_2", "0x"] {
            assert_eq!(check_mcp_server_name(good), Ok(()), "{good}");
        }
        let long = "a".repeat(MCP_SERVER_NAME_CHARS + 1);
        for bad in [
            "",
            "Tracker",
            "a__b",
            "_a",
            "-a",
            "a.b",
            "a b",
            long.as_str(),
        ] {
            let err = check_mcp_server_name(bad).unwrap_err();
            assert!(err.contains("must be 1 to 24"), "{bad}: {err}");
        }
    }

    #[test]
    fn a_server_reads_as_the_api_documents_it() {
        let server = McpServer {
            name: "tracker".into(),
            kind: McpKind::Remote,
            state: McpState::Error {
                message: "refused".into(),
            },
            allow: None,
            tools: Vec::new(),
        };
        let json = serde_json::to_value(&server).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"name": "tracker", "kind": "remote", "state": "error",
                "message": "refused", "tools": []})
        );
        assert_eq!(serde_json::from_value::<McpServer>(json).unwrap(), server);
    }
}
