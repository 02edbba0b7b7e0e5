//! The session's MCP servers: connected at the first prompt that has a sandbox (and again when
//! the sandbox or the repo's `[[mcp]]` entries change), kept while that sandbox lives, and
//! given to each prompt as tools. A server that cannot be used is an `mcp` error event; the
//! prompt goes on without it.
//!
//! The definition is read from the repo (the API's, else the default branch's file in the
//! host's mirror), never from the session's checkout: the agent must not be able to point a
//! remote server (and a repo secret) somewhere else by editing a file.

use super::SessionActor;
use super::port::Port;
use crate::engine::Inner;
use kiln_core::PromptId;
use kiln_fleet::images::environment::McpEntry;
use kiln_mcp::{Connection, ServerConfig, ServerKind};
use kiln_protocol::api::{ErrorKind, Event, PromptInfo};
use kiln_sandbox::{Sandbox, SandboxId};
use kiln_tools::tools::Tool;
use std::sync::Arc;

/// The connections of one sandbox, for the entries they were made from.
#[derive(Debug)]
pub(crate) struct McpSlot {
    sandbox: SandboxId,
    entries: Vec<McpEntry>,
    connections: Vec<Arc<Connection>>,
}

/// The tools of the session's MCP servers for `prompt`, connecting them if need be.
pub(super) async fn tools(
    port: &Port<'_>,
    prompt: &PromptInfo,
    sandbox: &Sandbox,
) -> Vec<Arc<dyn Tool>> {
    let actor = port.actor;
    let inner = port.inner;
    let entries = match entries(inner, &actor.repo.name).await {
        Ok(entries) => entries,
        // A definition that does not parse fails the image build too, with its own message:
        // only a mistake in the MCP entries is this prompt's news.
        Err(message) if message.contains("mcp") => {
            error(actor, &prompt.id, message).await;
            return Vec::new();
        }
        Err(message) => {
            tracing::warn!(session = %actor.log.id(), "{message}");
            return Vec::new();
        }
    };
    let mut slot = actor.mcp.lock().await;
    if entries.is_empty() {
        *slot = None;
        return Vec::new();
    }
    let current = slot
        .as_ref()
        .is_some_and(|s| s.sandbox == *sandbox.id() && s.entries == entries);
    if !current {
        // The old connections (and a local server's process) end as they are dropped.
        *slot = None;
        let env = port.prompt_env_for(&prompt.author);
        let attempts = entries.iter().map(|entry| {
            let env = env.clone();
            async move {
                let config = server_config(inner, &actor.repo.name, entry, env).await?;
                kiln_mcp::connect(config, Some(sandbox), &inner.config.mcp)
                    .await
                    .map_err(|e| e.to_string())
            }
        });
        let mut connections = Vec::new();
        for result in futures_util::future::join_all(attempts).await {
            match result {
                Ok(connection) => connections.push(connection),
                Err(message) => error(actor, &prompt.id, message).await,
            }
        }
        *slot = Some(McpSlot {
            sandbox: sandbox.id().clone(),
            entries,
            connections,
        });
    }
    let report: Arc<dyn kiln_mcp::Report> = Arc::new(Reporter {
        actor: actor.clone(),
        prompt: prompt.id.clone(),
    });
    slot.as_ref()
        .map(|s| {
            s.connections
                .iter()
                .flat_map(|c| c.agent_tools(report.clone()))
                .collect()
        })
        .unwrap_or_default()
}

/// The repo's `[[mcp]]` entries as they stand.
pub(crate) async fn entries(inner: &Inner, repo: &str) -> Result<Vec<McpEntry>, String> {
    let repo = inner
        .store
        .repo(repo)
        .await
        .map_err(|e| format!("cannot read the repo's MCP servers: {e}"))?;
    let environment = inner
        .fleet
        .workspaces()
        .current_environment(&repo)
        .await
        .map_err(|e| format!("cannot read the repo's MCP servers: {e}"))?;
    Ok(environment.mcp)
}

/// What kiln-mcp connects to for `entry`: a remote server's secret opened here, in the control
/// plane.
pub(crate) async fn server_config(
    inner: &Arc<Inner>,
    repo: &str,
    entry: &McpEntry,
    env: std::collections::BTreeMap<String, String>,
) -> Result<ServerConfig, String> {
    let kind = match (&entry.url, &entry.command) {
        (Some(url), _) => {
            let bearer = match &entry.secret {
                None => None,
                Some(name) => Some(
                    crate::Engine::from_inner(inner.clone())
                        .secret_value(repo, name)
                        .await
                        .map_err(|e| {
                            format!(
                                "MCP server {:?}: cannot open its secret {name}: {e}",
                                entry.name
                            )
                        })?
                        .ok_or_else(|| {
                            format!(
                                "MCP server {:?}: the repo has no secret {name}; set it with \
                                 `kiln repo secret set {repo} {name}`",
                                entry.name
                            )
                        })?,
                ),
            };
            ServerKind::Remote {
                url: url.clone(),
                bearer,
            }
        }
        (None, Some(command)) => ServerKind::Local {
            command: command.clone(),
            env,
        },
        (None, None) => {
            return Err(format!(
                "MCP server {:?} has neither url nor command",
                entry.name
            ));
        }
    };
    Ok(ServerConfig {
        name: entry.name.clone(),
        kind,
        allow: entry.tools.clone(),
    })
}

async fn error(actor: &SessionActor, prompt: &PromptId, message: String) {
    tracing::warn!(session = %actor.log.id(), "{message}");
    let event = Event::Error {
        prompt_id: Some(prompt.clone()),
        kind: ErrorKind::Mcp,
        message,
    };
    for event in actor.secrets().mask_event(event) {
        if let Err(e) = actor.log.append(event).await {
            tracing::error!(session = %actor.log.id(), error = %e, "cannot append an event");
        }
    }
}

/// Turns a server's failure during a call into an `mcp` error event of the prompt.
struct Reporter {
    actor: Arc<SessionActor>,
    prompt: PromptId,
}

#[async_trait::async_trait]
impl kiln_mcp::Report for Reporter {
    async fn server_failed(&self, _server: &str, message: String) {
        error(&self.actor, &self.prompt, message).await;
    }
}
