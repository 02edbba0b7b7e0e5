//! One connected server: the rmcp client, the tools it listed (allowed or not), and what keeps
//! it alive (the sandbox process of a local one).

use crate::config::{McpSettings, ServerConfig, ServerKind};
use crate::local::{self, Local};
use crate::tool::{McpTool, Report};
use crate::{CONNECT_TIMEOUT, Error, remote};
use kiln_sandbox::Sandbox;
use kiln_tools::tools::Tool;
use rmcp::ServiceExt;
use rmcp::service::{RoleClient, RunningService};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use std::sync::Arc;

/// A tool a server offers, for listings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolListing {
    pub name: String,
    pub description: String,
    /// Whether the repo's allowlist lets the agent use it.
    pub allowed: bool,
}

/// A connected server.
pub struct Connection {
    pub(crate) config: ServerConfig,
    pub(crate) service: RunningService<RoleClient, ()>,
    pub(crate) tools: Vec<rmcp::model::Tool>,
    /// A local server's process (dropping it kills the process).
    pub(crate) local: Option<Local>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("server", &self.config.name)
            .field("tools", &self.tools.len())
            .finish()
    }
}

/// Starts (a local server, in `sandbox`) or reaches (a remote one) `config`'s server, completes
/// the handshake and lists its tools, within [`CONNECT_TIMEOUT`].
pub async fn connect(
    config: ServerConfig,
    sandbox: Option<&Sandbox>,
    settings: &McpSettings,
) -> Result<Arc<Connection>, Error> {
    let server = config.name.clone();
    match tokio::time::timeout(CONNECT_TIMEOUT, connect_inner(config, sandbox, settings)).await {
        Ok(result) => result,
        Err(_) => Err(Error::Timeout {
            server,
            timeout: CONNECT_TIMEOUT,
        }),
    }
}

async fn connect_inner(
    config: ServerConfig,
    sandbox: Option<&Sandbox>,
    settings: &McpSettings,
) -> Result<Arc<Connection>, Error> {
    let server = config.name.clone();
    let handshake = |message: String| Error::Handshake {
        server: server.clone(),
        message,
    };
    let (service, local) = match &config.kind {
        ServerKind::Local { command, env } => {
            let Some(sandbox) = sandbox else {
                return Err(Error::Start {
                    server,
                    message: "it runs in a session's sandbox, and there is none here".into(),
                });
            };
            if command.is_empty() {
                return Err(Error::Config {
                    server,
                    message: "command is empty".into(),
                });
            }
            let (local, pipe) =
                local::start(sandbox, command, env)
                    .await
                    .map_err(|e| Error::Start {
                        server: server.clone(),
                        message: e.to_string(),
                    })?;
            let service = match ().serve(pipe).await {
                Ok(service) => service,
                Err(e) => {
                    // The process may have died first: its exit and stderr say why.
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                    let ended = local
                        .ended
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .clone();
                    return Err(handshake(match ended {
                        Some(ended) => ended,
                        None => init_message(&e),
                    }));
                }
            };
            (service, Some(local))
        }
        ServerKind::Remote { url, bearer } => {
            let client = remote::client(&server, url, settings).await?;
            let mut http = StreamableHttpClientTransportConfig::with_uri(url.as_str());
            if let Some(bearer) = bearer {
                http = http.auth_header(bearer.expose().clone());
            }
            http.max_json_response_size = remote::MAX_RESPONSE;
            let transport = StreamableHttpClientTransport::with_client(client, http);
            let service = ().serve(transport).await.map_err(|e| handshake(init_message(&e)))?;
            (service, None)
        }
    };
    let tools = service
        .peer()
        .list_all_tools()
        .await
        .map_err(|e| Error::List {
            server: server.clone(),
            message: e.to_string(),
        })?;
    Ok(Arc::new(Connection {
        config,
        service,
        tools,
        local,
    }))
}

/// An initialization failure in words (some of rmcp's messages print whole messages as Rust
/// debug output: those are summarised).
fn init_message(e: &rmcp::service::ClientInitializeError) -> String {
    use rmcp::service::ClientInitializeError as E;
    match e {
        E::ExpectedInitResponse(_) | E::ExpectedInitResult(_) => {
            "it answered the initialize request with something else".into()
        }
        E::ConnectionClosed(_) => "the connection closed during the handshake".into(),
        other => other.to_string(),
    }
}

impl Connection {
    pub fn name(&self) -> &str {
        &self.config.name
    }

    pub fn kind_name(&self) -> &'static str {
        self.config.kind_name()
    }

    /// Every tool the server lists, with whether the allowlist lets the agent use it.
    pub fn listing(&self) -> Vec<ToolListing> {
        self.tools
            .iter()
            .map(|t| ToolListing {
                name: t.name.to_string(),
                description: t.description.as_deref().unwrap_or("").to_string(),
                allowed: self.config.allows(&t.name),
            })
            .collect()
    }

    /// Why the server can no longer be used, once it died (a local one's exit and stderr), or
    /// `None` while it runs.
    pub fn ended(&self) -> Option<String> {
        let ended = self
            .local
            .as_ref()
            .and_then(|l| l.ended.lock().unwrap_or_else(|p| p.into_inner()).clone());
        if ended.is_some() {
            return ended;
        }
        self.service
            .is_closed()
            .then(|| "its connection closed".to_string())
    }

    /// The agent's tools: one per allowed MCP tool whose kiln name is valid. `report` hears of
    /// a failing server (the engine makes it an error event).
    pub fn agent_tools(self: &Arc<Self>, report: Arc<dyn Report>) -> Vec<Arc<dyn Tool>> {
        self.tools
            .iter()
            .filter(|t| self.config.allows(&t.name))
            .filter_map(|t| McpTool::new(self.clone(), t, report.clone()))
            .map(|t| Arc::new(t) as Arc<dyn Tool>)
            .collect()
    }
}
