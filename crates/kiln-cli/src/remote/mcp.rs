//! `kiln repo mcp ls REPO`: a repo's MCP servers, whether kiln can reach them, and the tools
//! each offers (those the allowlist refuses marked as such).

use super::{row, table};
use anyhow::Result;
use clap::Subcommand;
use kiln_client::Client;
use kiln_protocol::api::{McpKind, McpState};
use std::process::ExitCode;

#[derive(Debug, Subcommand)]
pub(crate) enum McpCommand {
    /// List the repo's MCP servers ([[mcp]] in its environment definition) with their state
    /// and tools. Remote servers are connected to now; local ones start in each session.
    Ls {
        /// The repo's name.
        repo: String,
        /// One JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
}

pub(crate) async fn run(client: &Client, command: McpCommand) -> Result<ExitCode> {
    match command {
        McpCommand::Ls { repo, json } => {
            let servers = client.repo_mcp(&repo).await?;
            if json {
                out!("{}", serde_json::to_string(&servers)?)?;
                return Ok(ExitCode::SUCCESS);
            }
            if servers.is_empty() {
                out!("{repo} has no MCP servers ([[mcp]] in its environment definition)")?;
                return Ok(ExitCode::SUCCESS);
            }
            let mut rows = vec![row(["SERVER", "KIND", "STATE", "TOOLS"])];
            for server in &servers {
                let kind = match server.kind {
                    McpKind::Local => "local",
                    McpKind::Remote => "remote",
                };
                let state = match &server.state {
                    McpState::Ok => "ok".to_string(),
                    McpState::Error { message } => format!("error: {message}"),
                    McpState::NotChecked { reason } => format!("not checked: {reason}"),
                };
                let tools = server
                    .tools
                    .iter()
                    .map(|t| {
                        if t.allowed {
                            t.name.clone()
                        } else {
                            format!("{} (not allowed)", t.name)
                        }
                    })
                    .collect::<Vec<_>>()
                    .join(", ");
                rows.push(row([&server.name, kind, &state, &tools]));
            }
            out_text!("{}", table(&rows))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
