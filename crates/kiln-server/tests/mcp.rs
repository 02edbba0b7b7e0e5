//! A repo's MCP servers end to end: a stdio server inside the session's sandbox and a
//! Streamable HTTP server (the SDK's own, on 127.0.0.1) called from the control plane, driven by
//! the fake model through the allowlist, the hooks, a crash and the address rules; and
//! `GET /api/repos/{name}/mcp`.

mod common;

use common::{TestApp, fake_model_config, is_finished, tool_outcomes};
use kiln_engine::hooks::{HookConfig, HookEventKind};
use kiln_engine::{EngineConfig, McpSettings};
use kiln_protocol::api::{ErrorKind, Event, PromptOutcome, ToolOutcome};
use kiln_testkit::{FakeModel, Script, Turn};
use reqwest::Method;
use serde_json::json;
use std::os::unix::fs::PermissionsExt;

/// A stand-in stdio server (newline-delimited JSON-RPC), passed to `python3 -c`.
const STDIO_SERVER: &str = r#"
import json, os, sys
TOOLS = [{"name": n, "description": d, "inputSchema": {"type": "object"}} for n, d in
         [("echo", "Echo text"), ("env", "Read a variable"), ("hidden", "Not allowed"), ("crash", "Crash")]]
def reply(id, result):
    sys.stdout.write(json.dumps({"jsonrpc": "2.0", "id": id, "result": result}) + "\n"); sys.stdout.flush()
for line in sys.stdin:
    msg = json.loads(line); id = msg.get("id"); p = msg.get("params") or {}
    if id is None: continue
    m = msg.get("method")
    if m == "initialize":
        reply(id, {"protocolVersion": p.get("protocolVersion"), "capabilities": {"tools": {}}, "serverInfo": {"name": "local", "version": "1"}})
    elif m == "tools/list": reply(id, {"tools": TOOLS})
    elif m == "tools/call":
        name, args = p.get("name"), p.get("arguments") or {}
        if name == "crash":
            sys.stderr.write("local server: out of cheese\n"); sys.stderr.flush(); os._exit(3)
        text = "echo: " + args.get("text", "") if name == "echo" else os.environ.get(args.get("name", ""), "")
        reply(id, {"content": [{"type": "text", "text": text}]})
    else:
        sys.stdout.write(json.dumps({"jsonrpc": "2.0", "id": id, "error": {"code": -32601, "message": "no"}}) + "\n"); sys.stdout.flush()
"#;

const TOKEN: &str = "trk-0123456789-secret";

mod http {
    //! The SDK's server over Streamable HTTP; its tool answers with the Authorization header it
    //! got, so the test sees the secret arrive and the log sees it masked.
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
    use std::sync::Arc;

    #[derive(Clone)]
    struct Tracker;

    impl ServerHandler for Tracker {
        fn get_info(&self) -> ServerConfig {
            ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
        }

        async fn list_tools(
            &self,
            _request: Option<PaginatedRequestParams>,
            _context: RequestContext<RoleServer>,
        ) -> Result<ListToolsResult, ErrorData> {
            let schema =
                serde_json::json!({"type": "object", "properties": {"query": {"type": "string"}}});
            let schema = Arc::new(schema.as_object().unwrap().clone());
            Ok(ListToolsResult::with_all_items(vec![
                Tool::new("search_issues", "Search the tracker", schema.clone()),
                Tool::new("delete_issue", "Delete an issue", schema),
            ]))
        }

        async fn call_tool(
            &self,
            request: CallToolRequestParams,
            context: RequestContext<RoleServer>,
        ) -> Result<CallToolResponse, ErrorData> {
            let auth = context
                .extensions
                .get::<axum::http::request::Parts>()
                .and_then(|p| p.headers.get("authorization"))
                .and_then(|v| v.to_str().ok())
                .unwrap_or("none")
                .to_string();
            Ok(CallToolResult::success(vec![ContentBlock::text(format!(
                "{}: 2 issues (auth: {auth})",
                request.name
            ))])
            .into())
        }
    }

    pub(super) async fn start() -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
        let service = StreamableHttpService::new(
            || Ok(Tracker),
            Arc::new(LocalSessionManager::default()),
            StreamableHttpServerConfig::default(),
        );
        let app = axum::Router::new().nest_service("/mcp", service);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        (addr, task)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_tools_run_through_hooks_allowlists_and_failures() {
    let (addr, server) = http::start().await;
    let hooks_dir = tempfile::tempdir().unwrap();
    let block = hooks_dir.path().join("no-env.sh");
    std::fs::write(
        &block,
        "#!/bin/sh\ncat >/dev/null; echo 'no reading variables' >&2; exit 2\n",
    )
    .unwrap();
    std::fs::set_permissions(&block, std::fs::Permissions::from_mode(0o755)).unwrap();

    let model = FakeModel::start().await;
    for (tool, input) in [
        ("mcp__local__echo", json!({"text": "hi"})),
        ("mcp__tracker__search_issues", json!({"query": "bug"})),
        ("mcp__local__hidden", json!({})),
        ("mcp__local__env", json!({"name": "KILN_SESSION"})),
        ("mcp__local__crash", json!({})),
    ] {
        model.push(Script::Turn(Turn::tool(tool, input)));
    }
    model.push(Script::Turn(Turn::text("done")));
    let config = EngineConfig {
        model: Some(fake_model_config(&model)),
        hooks: vec![HookConfig {
            event: HookEventKind::PreToolUse,
            matcher: Some("mcp__local__env".into()),
            command: vec![block.to_string_lossy().into_owned()],
            timeout_secs: Some(10),
            cwd: None,
        }],
        mcp: McpSettings {
            allow_hosts: vec![addr.to_string()],
        },
        ..EngineConfig::default()
    };
    let app = TestApp::with_config(config).await;
    let admin = app.admin_token.clone();
    let environment = format!(
        r#"
[[mcp]]
name = "local"
command = ["python3", "-c", '''{STDIO_SERVER}''']
tools = ["echo", "env", "crash"]
[[mcp]]
name = "tracker"
url = "http://{addr}/mcp"
secret = "TRACKER_TOKEN"
tools = ["search_issues"]
[[mcp]]
name = "inside"
url = "http://127.0.0.2:9/mcp"
"#
    );
    let (status, body) = app
        .request(
            Method::PATCH,
            &admin,
            "/api/repos/demo",
            Some(json!({"environment": environment})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = app
        .request(
            Method::PUT,
            &admin,
            "/api/repos/demo/secrets/TRACKER_TOKEN",
            Some(json!({"value": TOKEN})),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    // The API: the remote server connected now, the local one left to sessions, the one on
    // a refused address explained.
    let (_, viewer) = app.user("vera").await;
    let (status, listing) = app.get(&viewer, "/api/repos/demo/mcp").await;
    assert_eq!(status, 200, "{listing}");
    let servers = listing.as_array().unwrap();
    assert_eq!(servers.len(), 3, "{listing}");
    assert_eq!(servers[0]["kind"], "local");
    assert_eq!(servers[0]["state"], "not_checked");
    assert_eq!(servers[1]["state"], "ok", "{listing}");
    assert_eq!(
        servers[1]["tools"],
        json!([
            {"name": "search_issues", "description": "Search the tracker", "allowed": true},
            {"name": "delete_issue", "description": "Delete an issue", "allowed": false}
        ])
    );
    assert_eq!(servers[2]["state"], "error");
    let refused = servers[2]["message"].as_str().unwrap();
    assert!(
        refused.contains("allow_hosts = [\"127.0.0.2:9\"]"),
        "{refused}"
    );
    assert!(!listing.to_string().contains(TOKEN));

    let session = app.new_session(&admin, "use the tools").await;
    let events = app.wait_for(&admin, &session, is_finished).await;

    // The model was offered the allowed tools only.
    let first = model.requests()[0].body["tools"].to_string();
    assert!(first.contains("mcp__local__echo"), "{first}");
    assert!(first.contains("mcp__tracker__search_issues"), "{first}");
    assert!(!first.contains("mcp__local__hidden"), "{first}");
    assert!(!first.contains("mcp__tracker__delete_issue"), "{first}");

    let outcomes = tool_outcomes(&events);
    assert_eq!(outcomes.len(), 5, "{outcomes:?}");
    assert_eq!(outcomes[0], ToolOutcome::Ok);
    assert_eq!(outcomes[1], ToolOutcome::Ok);
    assert!(
        matches!(&outcomes[2], ToolOutcome::Error { message } if message.contains("unknown tool `mcp__local__hidden`")),
        "{outcomes:?}"
    );
    assert!(
        matches!(&outcomes[3], ToolOutcome::Blocked { reason } if reason.contains("no reading variables")),
        "{outcomes:?}"
    );
    assert!(
        matches!(&outcomes[4], ToolOutcome::Error { message } if message.contains("out of cheese")),
        "{outcomes:?}"
    );
    let second = model.requests()[1].body["messages"].to_string();
    assert!(second.contains("echo: hi"), "{second}");
    // The secret reached the HTTP server, and neither the model nor the log saw it.
    let third = model.requests()[2].body["messages"].to_string();
    assert!(
        third.contains("search_issues: 2 issues (auth: Bearer "),
        "{third}"
    );
    assert!(!third.contains(TOKEN), "{third}");
    let log = serde_json::to_string(&events).unwrap();
    assert!(!log.contains(TOKEN));
    assert!(log.contains("[secret TRACKER_TOKEN]"), "{log}");

    let mcp_errors: Vec<&str> = events
        .iter()
        .filter_map(|e| match &e.event {
            Event::Error {
                kind: ErrorKind::Mcp,
                message,
                ..
            } => Some(message.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(mcp_errors.len(), 2, "{mcp_errors:?}");
    assert!(
        mcp_errors[0].contains("\"inside\"") && mcp_errors[0].contains("allow_hosts"),
        "{mcp_errors:?}"
    );
    assert!(mcp_errors[1].contains("out of cheese"), "{mcp_errors:?}");
    // The crash did not end the prompt: the model had its last word.
    assert!(
        events.iter().any(|e| matches!(
            &e.event,
            Event::PromptFinished {
                outcome: PromptOutcome::Completed,
                ..
            }
        )),
        "{events:?}"
    );
    app.stop().await;
    server.abort();
}
