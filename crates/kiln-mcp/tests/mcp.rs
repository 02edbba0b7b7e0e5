//! The MCP clients against real servers: a stdio server (a small Python stand-in) run inside a
//! real sandbox, and a Streamable HTTP server built with the SDK's server side on 127.0.0.1.

use kiln_mcp::{Error, McpSettings, Report, ServerConfig, ServerKind, connect};
use kiln_sandbox::{ImageSpec, LocalConfig, LocalProvider, Provider, Sandbox, SandboxSpec};
use kiln_tools::tools::{ToolCall, ToolContext, ToolRegistry, ToolResult};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

const SERVER: &str = include_str!("fixtures/stdio_server.py");

struct Harness {
    provider: LocalProvider,
    _dir: tempfile::TempDir,
}

impl Harness {
    async fn new() -> Harness {
        let dir = tempfile::Builder::new()
            .prefix("kiln-mcp-test-")
            .tempdir()
            .unwrap();
        let provider = LocalProvider::open(LocalConfig::new(dir.path()))
            .await
            .expect("open provider");
        Harness {
            provider,
            _dir: dir,
        }
    }

    /// A host-image sandbox with the fixture server at `/workspace/server.py`.
    async fn sandbox(&self) -> Sandbox {
        let spec = SandboxSpec {
            image: ImageSpec::host(),
            ..SandboxSpec::default()
        };
        let sandbox = self.provider.create(spec).await.expect("create sandbox");
        sandbox
            .guest()
            .write_file("/workspace/server.py", SERVER.as_bytes(), None)
            .await
            .unwrap();
        sandbox
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.provider.destroy_all_blocking();
    }
}

/// What the engine would turn into error events.
#[derive(Default)]
struct Reports(Mutex<Vec<String>>);

#[async_trait::async_trait]
impl Report for Reports {
    async fn server_failed(&self, server: &str, message: String) {
        self.0.lock().unwrap().push(format!("{server}: {message}"));
    }
}

fn local(command: &[&str], allow: Option<&[&str]>) -> ServerConfig {
    ServerConfig {
        name: "fixture".into(),
        kind: ServerKind::Local {
            command: command.iter().map(|s| s.to_string()).collect(),
            env: BTreeMap::from([("KILN_SESSION".into(), "ses_test".into())]),
        },
        allow: allow.map(|a| a.iter().map(|s| s.to_string()).collect()),
    }
}

async fn call(
    registry: &ToolRegistry,
    sandbox: &Sandbox,
    cancel: &CancellationToken,
    name: &str,
    input: Value,
) -> ToolResult {
    let env = BTreeMap::new();
    let ctx = ToolContext {
        sandbox,
        workdir: "/workspace",
        cancel,
        bash_timeout: Duration::from_secs(30),
        env: &env,
    };
    let (tx, _rx) = tokio::sync::mpsc::channel(64);
    let call = ToolCall {
        id: "toolu_1".into(),
        name: name.into(),
        input,
    };
    registry.run(&ctx, &call, &tx).await.expect("sandbox alive")
}

#[tokio::test]
async fn a_stdio_server_runs_in_the_sandbox_behind_its_allowlist() {
    let harness = Harness::new().await;
    let sandbox = harness.sandbox().await;
    let allow = ["echo", "env", "crash", "slow"];
    let connection = connect(
        local(&["python3", "server.py"], Some(&allow)),
        Some(&sandbox),
        &McpSettings::default(),
    )
    .await
    .expect("connect");
    assert_eq!(connection.kind_name(), "local");
    let listing = connection.listing();
    assert_eq!(listing.len(), 5);
    let hidden = listing.iter().find(|t| t.name == "hidden").unwrap();
    assert!(!hidden.allowed);
    assert_eq!(hidden.description, "Not for the agent");
    assert!(
        listing
            .iter()
            .filter(|t| t.name != "hidden")
            .all(|t| t.allowed)
    );

    let reports = Arc::new(Reports::default());
    let registry = connection
        .agent_tools(reports.clone())
        .into_iter()
        .fold(ToolRegistry::builtin(), ToolRegistry::with);
    let names: Vec<_> = registry
        .specs()
        .iter()
        .map(|s| s.name.to_string())
        .collect();
    assert!(
        names.contains(&"mcp__fixture__echo".to_string()),
        "{names:?}"
    );
    assert!(
        !names.iter().any(|n| n == "mcp__fixture__hidden"),
        "{names:?}"
    );
    let echo = registry.get("mcp__fixture__echo").unwrap().spec();
    assert!(echo.description.starts_with("Echo text back"));
    assert_eq!(echo.input_schema["required"], json!(["text"]));
    // readOnlyHint: the sync gate lets it through; anything else counts as writing.
    assert!(!registry.writes("mcp__fixture__echo"));
    assert!(registry.writes("mcp__fixture__env"));

    let cancel = CancellationToken::new();
    let result = call(
        &registry,
        &sandbox,
        &cancel,
        "mcp__fixture__echo",
        json!({"text": "hi"}),
    )
    .await;
    assert!(!result.is_error, "{}", result.content);
    assert_eq!(result.content, "echo: hi");
    // The server runs with the prompt's variables.
    let result = call(
        &registry,
        &sandbox,
        &cancel,
        "mcp__fixture__env",
        json!({"name": "KILN_SESSION"}),
    )
    .await;
    assert_eq!(result.content, "ses_test");
    // Not on the allowlist: not a tool at all.
    let result = call(
        &registry,
        &sandbox,
        &cancel,
        "mcp__fixture__hidden",
        json!({}),
    )
    .await;
    assert!(result.is_error);
    assert!(
        result
            .content
            .contains("unknown tool `mcp__fixture__hidden`"),
        "{}",
        result.content
    );

    // Stopping the prompt ends a call the server never answers.
    let stop = CancellationToken::new();
    let stopper = {
        let stop = stop.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            stop.cancel();
        }
    };
    let started = Instant::now();
    let (result, ()) = tokio::join!(
        call(&registry, &sandbox, &stop, "mcp__fixture__slow", json!({})),
        stopper
    );
    assert!(result.cancelled, "{}", result.content);
    assert!(started.elapsed() < Duration::from_secs(5));
    // The server still serves after a cancelled call.
    let result = call(
        &registry,
        &sandbox,
        &cancel,
        "mcp__fixture__echo",
        json!({"text": "again"}),
    )
    .await;
    assert_eq!(result.content, "echo: again");
    assert!(reports.0.lock().unwrap().is_empty());

    // A crash is a tool error the model reads, with the server's last words, and a report.
    let result = call(
        &registry,
        &sandbox,
        &cancel,
        "mcp__fixture__crash",
        json!({}),
    )
    .await;
    assert!(result.is_error);
    assert!(
        result.content.contains("MCP server \"fixture\" failed"),
        "{}",
        result.content
    );
    assert!(
        result.content.contains("crashing on purpose"),
        "{}",
        result.content
    );
    assert_eq!(reports.0.lock().unwrap().len(), 1);
    let result = call(
        &registry,
        &sandbox,
        &cancel,
        "mcp__fixture__echo",
        json!({"text": "x"}),
    )
    .await;
    assert!(result.is_error);
    assert!(result.content.contains("exited"), "{}", result.content);
}

#[tokio::test]
async fn a_server_that_cannot_start_says_why() {
    let harness = Harness::new().await;
    let sandbox = harness.sandbox().await;
    let settings = McpSettings::default();
    let err = connect(
        local(&["sh", "-c", "echo 'missing DB_URL' >&2; exit 1"], None),
        Some(&sandbox),
        &settings,
    )
    .await
    .unwrap_err();
    let message = err.to_string();
    assert!(message.contains("MCP server \"fixture\""), "{message}");
    assert!(message.contains("missing DB_URL"), "{message}");

    let err = connect(
        local(&["no-such-mcp-server"], None),
        Some(&sandbox),
        &settings,
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("MCP server \"fixture\""), "{err}");
}

mod http {
    //! The SDK's own server, over Streamable HTTP on 127.0.0.1, recording the bearer tokens
    //! it is sent.
    use rmcp::model::{
        CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, ListToolsResult,
        PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
    };
    use rmcp::service::RequestContext;
    use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
    use rmcp::transport::streamable_http_server::{
        StreamableHttpServerConfig, StreamableHttpService,
    };
    use rmcp::{ErrorData, RoleServer, ServerHandler};
    use std::net::SocketAddr;
    use std::sync::{Arc, Mutex};

    #[derive(Clone)]
    struct Fixture;

    impl ServerHandler for Fixture {
        fn get_info(&self) -> ServerConfig {
            ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
        }

        async fn list_tools(
            &self,
            _request: Option<PaginatedRequestParams>,
            _context: RequestContext<RoleServer>,
        ) -> Result<ListToolsResult, ErrorData> {
            let schema = serde_json::json!({
                "type": "object",
                "properties": {"query": {"type": "string"}}
            });
            let schema = Arc::new(schema.as_object().unwrap().clone());
            Ok(ListToolsResult::with_all_items(vec![
                Tool::new("search_issues", "Search the tracker", schema.clone()),
                Tool::new("delete_issue", "Delete an issue", schema),
            ]))
        }

        async fn call_tool(
            &self,
            request: CallToolRequestParams,
            _context: RequestContext<RoleServer>,
        ) -> Result<CallToolResponse, ErrorData> {
            let query = request
                .arguments
                .as_ref()
                .and_then(|a| a.get("query"))
                .and_then(|q| q.as_str())
                .unwrap_or("")
                .to_string();
            Ok(CallToolResult::success(vec![ContentBlock::text(format!(
                "{}: found 2 issues for {query:?}",
                request.name
            ))])
            .into())
        }
    }

    pub(super) struct Server {
        pub(super) addr: SocketAddr,
        /// Every `Authorization` header it was sent.
        pub(super) auth: Arc<Mutex<Vec<String>>>,
        task: tokio::task::JoinHandle<()>,
    }

    impl Drop for Server {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    pub(super) async fn start() -> Server {
        let service = StreamableHttpService::new(
            || Ok(Fixture),
            Arc::new(LocalSessionManager::default()),
            StreamableHttpServerConfig::default(),
        );
        let auth = Arc::new(Mutex::new(Vec::new()));
        let seen = auth.clone();
        let app =
            axum::Router::new()
                .nest_service("/mcp", service)
                .layer(axum::middleware::from_fn(
                    move |request: axum::extract::Request, next: axum::middleware::Next| {
                        let seen = seen.clone();
                        async move {
                            if let Some(value) = request.headers().get("authorization") {
                                seen.lock()
                                    .unwrap()
                                    .push(value.to_str().unwrap_or("").to_string());
                            }
                            next.run(request).await
                        }
                    },
                ));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Server { addr, auth, task }
    }
}

fn remote(url: String) -> ServerConfig {
    ServerConfig {
        name: "tracker".into(),
        kind: ServerKind::Remote {
            url,
            bearer: Some(kiln_core::Secret::new("s3cret-token".into())),
        },
        allow: Some(vec!["search_issues".into()]),
    }
}

#[tokio::test]
async fn a_remote_server_on_loopback_needs_allow_hosts() {
    let server = http::start().await;
    let url = format!("http://{}/mcp", server.addr);
    let err = connect(remote(url.clone()), None, &McpSettings::default())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Refused { .. }), "{err}");
    let message = err.to_string();
    assert!(message.contains("a loopback address"), "{message}");
    assert!(
        message.contains(&format!("allow_hosts = [\"{}\"]", server.addr)),
        "{message}"
    );
    assert!(!message.contains("s3cret"), "{message}");
    // Nothing was sent.
    assert!(server.auth.lock().unwrap().is_empty());
    // A name that resolves to loopback is judged by its address.
    let by_name = format!("http://localhost:{}/mcp", server.addr.port());
    let err = connect(remote(by_name), None, &McpSettings::default())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Refused { .. }), "{err}");
}

#[tokio::test]
async fn a_remote_server_gets_the_bearer_secret_and_its_allowlist_holds() {
    let server = http::start().await;
    let url = format!("http://{}/mcp", server.addr);
    let settings = McpSettings {
        allow_hosts: vec![server.addr.to_string()],
    };
    let connection = connect(remote(url), None, &settings)
        .await
        .expect("connect");
    assert_eq!(connection.kind_name(), "remote");
    let listing = connection.listing();
    assert_eq!(
        listing
            .iter()
            .map(|t| (t.name.as_str(), t.allowed))
            .collect::<Vec<_>>(),
        [("search_issues", true), ("delete_issue", false)]
    );
    let registry = connection
        .agent_tools(Arc::new(Reports::default()))
        .into_iter()
        .fold(ToolRegistry::builtin(), ToolRegistry::with);
    assert!(registry.get("mcp__tracker__delete_issue").is_none());
    // A remote tool runs in the control plane; the sandbox is only the context's.
    let harness = Harness::new().await;
    let sandbox = harness.sandbox().await;
    let cancel = CancellationToken::new();
    let result = call(
        &registry,
        &sandbox,
        &cancel,
        "mcp__tracker__search_issues",
        json!({"query": "crash"}),
    )
    .await;
    assert!(!result.is_error, "{}", result.content);
    assert_eq!(
        result.content,
        "search_issues: found 2 issues for \"crash\""
    );
    let auth = server.auth.lock().unwrap().clone();
    assert!(!auth.is_empty());
    assert!(auth.iter().all(|a| a == "Bearer s3cret-token"), "{auth:?}");
}
