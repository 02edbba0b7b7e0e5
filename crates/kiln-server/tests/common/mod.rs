//! A real kiln in the test process: local sandboxes on a fresh data dir, the store, the engine,
//! and the server on port 0, talking to the fake model server and a bare git repo on disk.

#![allow(dead_code, unreachable_pub)]

pub mod conformance;

use futures_util::{SinkExt, StreamExt};
use kiln_core::SessionId;
use kiln_engine::{Engine, EngineConfig};
use kiln_model::ModelConfig;
use kiln_protocol::api::{Event, EventEnvelope, ServerFrame};
use kiln_sandbox::{LocalConfig, LocalProvider, Provider};
use kiln_store::Store;
use kiln_testkit::FakeModel;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

pub struct TestApp {
    pub url: String,
    pub admin_token: String,
    pub engine: Engine,
    pub provider: LocalProvider,
    pub dir: tempfile::TempDir,
    pub repo_url: String,
    /// The server's OpenAPI document: every response [`TestApp::request`] gets is checked
    /// against it.
    pub api: Arc<conformance::Conformance>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<()>>,
}

/// An anthropic model config pointing at the fake server.
pub fn fake_model_config(model: &FakeModel) -> ModelConfig {
    let env = |key: &str| match key {
        "ANTHROPIC_API_KEY" => Some(model.api_key().to_string()),
        "ANTHROPIC_BASE_URL" => Some(model.url()),
        _ => None,
    };
    let mut config = ModelConfig::resolve(Some("anthropic/claude-test"), env)
        .expect("model config")
        .expect("a model");
    config.retry.base_delay = Duration::from_millis(50);
    config
}

impl TestApp {
    pub async fn start(model: &FakeModel) -> TestApp {
        TestApp::with_config(EngineConfig {
            model: Some(fake_model_config(model)),
            ..EngineConfig::default()
        })
        .await
    }

    pub async fn with_config(config: EngineConfig) -> TestApp {
        TestApp::with_configs(config, kiln_server::ServeConfig::default()).await
    }

    /// A kiln with the fake model and these connection limits.
    pub async fn with_serve_config(model: &FakeModel, serve: kiln_server::ServeConfig) -> TestApp {
        let config = EngineConfig {
            model: Some(fake_model_config(model)),
            ..EngineConfig::default()
        };
        TestApp::with_configs(config, serve).await
    }

    pub async fn with_configs(config: EngineConfig, serve: kiln_server::ServeConfig) -> TestApp {
        TestApp::with_everything(config, serve, None).await
    }

    /// A kiln taking Slack's events with `slack`.
    pub async fn with_slack(config: EngineConfig, slack: kiln_slack::SlackConfig) -> TestApp {
        TestApp::with_everything(config, kiln_server::ServeConfig::default(), Some(slack)).await
    }

    async fn with_everything(
        config: EngineConfig,
        serve: kiln_server::ServeConfig,
        slack: Option<kiln_slack::SlackConfig>,
    ) -> TestApp {
        // Short path (sockets) under /tmp, traversable by the sandbox uid.
        let dir = tempfile::Builder::new()
            .prefix("ks-")
            .tempdir_in("/tmp")
            .expect("tempdir");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
        let repo_url = make_repo(dir.path());
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        let provider = LocalProvider::open(LocalConfig::new(&data))
            .await
            .expect("provider");
        let store = Store::open(&data).await.expect("store");
        let admin_token = kiln_server::bootstrap(&store, &data)
            .await
            .expect("bootstrap")
            .expect("admin token");
        let engine = Engine::start(store, Arc::new(provider.clone()), data.clone(), config)
            .await
            .expect("engine");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let mut state = kiln_server::AppState::new(engine.clone());
        if let Some(slack) = slack {
            state = state.with_slack(kiln_slack::Slack::new(engine.clone(), Some(slack)).unwrap());
        }
        let server = tokio::spawn(async move {
            kiln_server::serve_with(
                listener,
                state,
                async {
                    let _ = rx.await;
                },
                serve,
            )
            .await
            .unwrap();
        });
        let document = reqwest::get(format!("{url}/api/openapi.json"))
            .await
            .expect("the OpenAPI document")
            .json()
            .await
            .expect("the OpenAPI document is JSON");
        let api = Arc::new(conformance::Conformance::new(document));
        let app = TestApp {
            url,
            admin_token,
            engine,
            provider,
            dir,
            repo_url,
            api,
            shutdown: Some(tx),
            server: Some(server),
        };
        let repo = app
            .post(
                &app.admin_token,
                "/api/repos",
                json!({"name": "demo", "url": app.repo_url}),
            )
            .await;
        assert_eq!(repo.0, 201, "{}", repo.1);
        app
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub async fn request(
        &self,
        method: reqwest::Method,
        token: &str,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let client = reqwest::Client::new();
        let mut request = client.request(method.clone(), format!("{}{path}", self.url));
        if !token.is_empty() {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request");
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if let Err(mismatch) = self.api.check(method.as_str(), path, status, &value) {
            panic!("the API document is wrong (or the server is): {mismatch}");
        }
        (status, value)
    }

    pub async fn get(&self, token: &str, path: &str) -> (u16, Value) {
        self.request(reqwest::Method::GET, token, path, None).await
    }

    pub async fn post(&self, token: &str, path: &str, body: Value) -> (u16, Value) {
        self.request(reqwest::Method::POST, token, path, Some(body))
            .await
    }

    /// A new user and a token for them.
    pub async fn user(&self, name: &str) -> (String, String) {
        let (status, user) = self
            .post(&self.admin_token, "/api/users", json!({"name": name}))
            .await;
        assert_eq!(status, 201, "{user}");
        let id = user["id"].as_str().unwrap().to_string();
        let (status, token) = self
            .post(
                &self.admin_token,
                "/api/tokens",
                json!({"name": "test", "user_id": id}),
            )
            .await;
        assert_eq!(status, 201, "{token}");
        (id, token["token"].as_str().unwrap().to_string())
    }

    pub async fn new_session(&self, token: &str, prompt: &str) -> SessionId {
        let (status, body) = self
            .post(
                token,
                "/api/sessions",
                json!({"repo": "demo", "prompt": prompt}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        body["session"]["id"].as_str().unwrap().parse().unwrap()
    }

    /// The caller's user socket (`/api/ws`), after its hello.
    pub async fn user_ws(&self, token: &str) -> Ws {
        let mut ws = self.connect(token, "/api/ws").await;
        let hello = ws.json().await;
        assert_eq!(hello["type"], "hello", "{hello}");
        ws
    }

    pub async fn ws(&self, token: &str, session: &SessionId, after_seq: u64) -> Ws {
        let path = format!("/api/sessions/{session}/ws?after_seq={after_seq}");
        let mut ws = self.connect(token, &path).await;
        match ws.frame().await {
            ServerFrame::Hello { .. } => ws,
            other => panic!("expected hello, got {other:?}"),
        }
    }

    async fn connect(&self, token: &str, path: &str) -> Ws {
        let url = format!("{}{path}", self.url.replace("http://", "ws://"));
        let mut request = url.into_client_request().unwrap();
        request
            .headers_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        let (socket, _) = tokio_tungstenite::connect_async(request)
            .await
            .expect("websocket");
        Ws { socket }
    }

    /// Reads the session's events over REST until `done` holds for one of them.
    pub async fn wait_for(
        &self,
        token: &str,
        session: &SessionId,
        done: impl Fn(&Event) -> bool,
    ) -> Vec<EventEnvelope> {
        self.wait_until(token, session, |events| {
            events.iter().any(|e| done(&e.event))
        })
        .await
    }

    /// Reads the session's events over REST until `done` holds for all of them.
    pub async fn wait_until(
        &self,
        token: &str,
        session: &SessionId,
        done: impl Fn(&[EventEnvelope]) -> bool,
    ) -> Vec<EventEnvelope> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let events = self.events(token, session).await;
            if done(&events) {
                return events;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out; events so far: {events:#?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends a prompt and checks it was accepted.
    pub async fn send(&self, token: &str, session: &SessionId, text: &str) {
        let (status, body) = self
            .post(
                token,
                &format!("/api/sessions/{session}/prompts"),
                json!({ "text": text }),
            )
            .await;
        assert_eq!(status, 202, "{body}");
    }

    pub async fn events(&self, token: &str, session: &SessionId) -> Vec<EventEnvelope> {
        let (status, page) = self
            .get(token, &format!("/api/sessions/{session}/events?limit=5000"))
            .await;
        assert_eq!(status, 200, "{page}");
        serde_json::from_value(page["events"].clone()).unwrap()
    }

    /// Runs a shell command in the session's sandbox: the one labelled with the session, or
    /// the warm pool's sandbox it claimed.
    pub async fn sandbox_sh(&self, session: &SessionId, script: &str) -> String {
        let mut outputs = self
            .labelled_sh("kiln.session", session.as_str(), script)
            .await;
        if outputs.is_empty() {
            let log = self.engine.store().open_session(session).await.unwrap();
            let claimed = log.claimed_sandbox().await.unwrap().expect("a sandbox");
            let sandbox = kiln_sandbox::SandboxId::parse(&claimed).unwrap();
            outputs.push(self.sh_in(&sandbox, script).await);
        }
        outputs.swap_remove(0)
    }

    async fn sh_in(&self, id: &kiln_sandbox::SandboxId, script: &str) -> String {
        let sandbox = self.provider.attach(id).await.unwrap();
        let outcome = sandbox
            .run(kiln_sandbox::ExecRequest {
                command: kiln_sandbox::CommandLine::Shell {
                    script: script.into(),
                },
                cwd: Some("/workspace".into()),
                env: Default::default(),
                stdin: false,
                timeout_ms: Some(10_000),
            })
            .await
            .unwrap();
        String::from_utf8_lossy(&outcome.stdout).into_owned()
    }

    /// Runs a shell command in `/workspace` of every sandbox labelled `key=value` (e.g. the
    /// warm pool's, `kiln.pool=demo`), returning each one's stdout.
    pub async fn labelled_sh(&self, key: &str, value: &str, script: &str) -> Vec<String> {
        let mut outputs = Vec::new();
        for info in self.provider.list().await.unwrap() {
            if info.spec.labels.get(key).map(String::as_str) != Some(value) {
                continue;
            }
            outputs.push(self.sh_in(&info.id, script).await);
        }
        outputs
    }

    pub async fn stop(mut self) {
        self.engine.shutdown().await;
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            let _ = server.await;
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.provider.destroy_all_blocking();
    }
}

/// A WebSocket client of one session.
pub struct Ws {
    socket: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
}

impl Ws {
    pub async fn frame(&mut self) -> ServerFrame {
        serde_json::from_value(self.json().await).expect("a valid server frame")
    }

    /// The next text frame, as JSON.
    pub async fn json(&mut self) -> Value {
        loop {
            let message = tokio::time::timeout(Duration::from_secs(60), self.socket.next())
                .await
                .expect("a frame within 60 s")
                .expect("socket open")
                .expect("frame");
            if let Message::Text(text) = message {
                return serde_json::from_str(text.as_str()).expect("a JSON frame");
            }
        }
    }

    /// Events until (and including) the first for which `done` holds; ephemeral frames skipped.
    pub async fn events_until(&mut self, done: impl Fn(&Event) -> bool) -> Vec<EventEnvelope> {
        let mut events = Vec::new();
        loop {
            if let ServerFrame::Event(envelope) = self.frame().await {
                let stop = done(&envelope.event);
                events.push(envelope);
                if stop {
                    return events;
                }
            }
        }
    }

    /// Reads until the server's Close frame (its payload) or the end of the socket (`None`).
    pub async fn close_frame(
        &mut self,
    ) -> Option<tokio_tungstenite::tungstenite::protocol::CloseFrame> {
        while let Some(message) = self.socket.next().await {
            match message {
                Ok(Message::Close(frame)) => return frame,
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
        None
    }

    pub async fn send_text(&mut self, text: &str) {
        self.socket.send(Message::Text(text.into())).await.unwrap();
    }

    pub async fn close(mut self) {
        let _ = self.socket.close(None).await;
    }
}

/// The demo repo: a README, a source file and AGENTS.md; returns its path as URL.
pub fn make_repo(dir: &Path) -> String {
    kiln_testkit::bare_repo(
        dir,
        "demo",
        &[
            ("README.md", "# demo\n\nA demo repository.\n"),
            ("src/lib.rs", "pub fn answer() -> u32 {\n    41\n}\n"),
            ("AGENTS.md", "Run `cargo test` before finishing.\n"),
        ],
    )
    .to_string_lossy()
    .into_owned()
}

/// How many prompts finished with `outcome`.
pub fn finished(events: &[EventEnvelope], outcome: kiln_protocol::api::PromptOutcome) -> usize {
    events
        .iter()
        .filter(|e| matches!(&e.event, Event::PromptFinished { outcome: o, .. } if *o == outcome))
        .count()
}

/// The outcome of every tool call, in order.
pub fn tool_outcomes(events: &[EventEnvelope]) -> Vec<kiln_protocol::api::ToolOutcome> {
    events
        .iter()
        .filter_map(|e| match &e.event {
            Event::ToolCallFinished { outcome, .. } => Some(outcome.clone()),
            _ => None,
        })
        .collect()
}

/// What the model was given by the last tool call.
pub fn last_tool_output(events: &[EventEnvelope]) -> String {
    events
        .iter()
        .rev()
        .find_map(|e| match &e.event {
            Event::ToolCallFinished { output, .. } => Some(output.clone()),
            _ => None,
        })
        .expect("a tool call finished")
}

/// A model request's messages alternate user and assistant, as the providers require.
pub fn assert_roles_alternate(messages: &Value) {
    let roles: Vec<&str> = messages
        .as_array()
        .expect("messages is an array")
        .iter()
        .map(|m| m["role"].as_str().expect("a role"))
        .collect();
    for pair in roles.windows(2) {
        assert_ne!(pair[0], pair[1], "roles must alternate: {roles:?}");
    }
}

pub fn is_finished(event: &Event) -> bool {
    matches!(
        event,
        Event::PromptFinished { .. } | Event::PromptCancelled { .. }
    )
}
