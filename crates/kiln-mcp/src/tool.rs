//! An allowed MCP tool as a kiln tool: `mcp__<server>__<tool>` (the Claude Code convention),
//! the server's description and input schema, a call bounded by [`CALL_TIMEOUT`] and stopped
//! with the prompt (rmcp sends the server a cancellation when the call is dropped).

use crate::CALL_TIMEOUT;
use crate::connection::Connection;
use kiln_tools::tools::{Tool, ToolContext, ToolError, ToolResult, ToolSpec, ToolUpdate};
use rmcp::model::CallToolRequestParams;
use serde_json::Value;
use std::sync::Arc;
use tokio::sync::mpsc;

/// Longest tool name model providers accept.
const MAX_TOOL_NAME: usize = 64;

/// Hears of a server that failed during a call (it crashed, timed out, closed): the engine
/// records an `error` event. The model reads the call's error either way.
#[async_trait::async_trait]
pub trait Report: Send + Sync {
    async fn server_failed(&self, server: &str, message: String);
}

/// The kiln name of `tool` of `server`, when it is one model providers accept.
pub fn tool_name(server: &str, tool: &str) -> Option<String> {
    let name = format!("mcp__{server}__{tool}");
    let valid = name.len() <= MAX_TOOL_NAME
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    valid.then_some(name)
}

pub(crate) struct McpTool {
    connection: Arc<Connection>,
    /// The server's name for it.
    tool: String,
    name: String,
    description: String,
    schema: Value,
    writes: bool,
    report: Arc<dyn Report>,
}

impl McpTool {
    pub(crate) fn new(
        connection: Arc<Connection>,
        tool: &rmcp::model::Tool,
        report: Arc<dyn Report>,
    ) -> Option<McpTool> {
        let name = tool_name(connection.name(), &tool.name)?;
        let description = format!(
            "{} (from the MCP server {:?})",
            tool.description.as_deref().unwrap_or("").trim(),
            connection.name()
        );
        Some(McpTool {
            tool: tool.name.to_string(),
            name,
            description,
            schema: Value::Object((*tool.input_schema).clone()),
            // Unknown effect: a tool writes unless its server says it only reads.
            writes: !tool
                .annotations
                .as_ref()
                .and_then(|a| a.read_only_hint)
                .unwrap_or(false),
            connection,
            report,
        })
    }

    async fn failed(&self, what: String) -> ToolError {
        let why = self.connection.ended().unwrap_or(what);
        let message = format!(
            "the MCP server {:?} failed during the {} call: {why}",
            self.connection.name(),
            self.name
        );
        self.report
            .server_failed(self.connection.name(), message.clone())
            .await;
        ToolError::Failed(message)
    }
}

#[async_trait::async_trait]
impl Tool for McpTool {
    fn spec(&self) -> ToolSpec<'_> {
        ToolSpec {
            name: &self.name,
            description: &self.description,
            input_schema: self.schema.clone(),
        }
    }

    fn writes(&self) -> bool {
        self.writes
    }

    async fn run(
        &self,
        ctx: &ToolContext<'_>,
        input: &Value,
        _updates: &mpsc::Sender<ToolUpdate>,
    ) -> Result<ToolResult, ToolError> {
        // The allowlist again at the call: the registry only holds allowed tools, but the
        // server's list may have changed under the same name.
        if !self.connection.config.allows(&self.tool) {
            return Err(ToolError::Failed(format!(
                "the tool {} is not in the allowlist of the MCP server {:?}",
                self.tool,
                self.connection.name()
            )));
        }
        let arguments = match input {
            Value::Object(map) => map.clone(),
            Value::Null => serde_json::Map::new(),
            other => {
                return Err(ToolError::Failed(format!(
                    "invalid arguments for {}: expected an object, got {other}",
                    self.name
                )));
            }
        };
        if let Some(ended) = self.connection.ended() {
            return Err(self.failed(ended).await);
        }
        let call = self
            .connection
            .service
            .peer()
            .call_tool(CallToolRequestParams::new(self.tool.clone()).with_arguments(arguments));
        let result = tokio::select! {
            result = tokio::time::timeout(CALL_TIMEOUT, call) => result,
            _ = ctx.cancel.cancelled() => return Err(ToolError::Cancelled),
        };
        let result = match result {
            Err(_) => {
                return Err(self
                    .failed(format!(
                        "no answer within {}",
                        kiln_core::human_duration(CALL_TIMEOUT)
                    ))
                    .await);
            }
            Ok(Err(rmcp::ServiceError::McpError(e))) => {
                // The server refused the call itself (unknown tool, bad arguments): the model's
                // to fix, not a failing server.
                return Ok(ToolResult::error(format!(
                    "the MCP server refused the call: {}",
                    e.message
                )));
            }
            Ok(Err(e)) => return Err(self.failed(e.to_string()).await),
            Ok(Ok(result)) => result,
        };
        let mut text = Vec::new();
        for block in &result.content {
            match block.as_text() {
                Some(t) => text.push(t.text.clone()),
                None => text.push("[non-text content omitted]".to_string()),
            }
        }
        if text.is_empty()
            && let Some(structured) = &result.structured_content
        {
            text.push(structured.to_string());
        }
        let content = text.join("\n");
        Ok(if result.is_error.unwrap_or(false) {
            ToolResult::error(content)
        } else {
            ToolResult::ok(content)
        })
    }
}
