//! The agent's `open_pr` tool: opens or updates the session's pull request, like
//! `POST /api/sessions/{id}/pr`, in the name of the person whose prompt is running (their own
//! GitHub account, never the app's). It lives in the engine, not kiln-tools, because it acts
//! on the session rather than on the sandbox.

use super::Engine;
use kiln_core::SessionId;
use kiln_protocol::api::{OpenPullRequest, UserRef};
use kiln_tools::tools::{Tool, ToolContext, ToolError, ToolResult, ToolSpec, ToolUpdate};
use serde_json::{Value, json};
use tokio::sync::mpsc;

pub(crate) struct OpenPrTool {
    pub(crate) engine: Engine,
    pub(crate) session: SessionId,
    /// The author of the running prompt: the PR is theirs.
    pub(crate) author: UserRef,
}

#[async_trait::async_trait]
impl Tool for OpenPrTool {
    fn spec(&self) -> ToolSpec<'_> {
        ToolSpec {
            name: "open_pr",
            description: "Open the pull request of this session's branch on GitHub, in the name \
                of the person who sent the prompt, or update the one already open (title and \
                description are made from the session). The branch must be pushed first. \
                Returns the pull request's URL.",
            input_schema: json!({
                "type": "object",
                "properties": {
                    "draft": {"type": "boolean", "description": "Open it as a draft"},
                    "title": {"type": "string", "description": "The title; default: the session's"}
                },
                "additionalProperties": false
            }),
        }
    }

    fn writes(&self) -> bool {
        false
    }

    async fn run(
        &self,
        _ctx: &ToolContext<'_>,
        input: &Value,
        _updates: &mpsc::Sender<ToolUpdate>,
    ) -> Result<ToolResult, ToolError> {
        let request: OpenPullRequest =
            serde_json::from_value(input.clone()).map_err(|e| ToolError::BadArguments {
                tool: "open_pr",
                message: e.to_string(),
            })?;
        let link = format!("kiln session {}", self.session);
        match self
            .engine
            .open_pull_request(&self.session, &self.author, &request, &link)
            .await
        {
            Ok(pr) => Ok(ToolResult::ok(format!(
                "{} pull request #{}: {}",
                if pr.created { "opened" } else { "updated" },
                pr.number,
                pr.url
            ))),
            Err(e) => Err(ToolError::Failed(e.to_string())),
        }
    }
}
