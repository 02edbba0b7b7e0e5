//! [`FakeModel`]: a real HTTP server on 127.0.0.1 that speaks the Anthropic Messages and OpenAI
//! Chat Completions streaming formats as documented, checks auth and request shape the way the real
//! APIs do, records every request and answers with scripted turns. Model providers are the one
//! third party kiln's tests cannot run, so their tests talk HTTP to this instead.

mod anthropic;
mod openai;
mod play;
mod script;

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, State};
use axum::http::{HeaderMap, Method, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::Value;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use play::{Reply, Wire};
pub use script::{FakeToolCall, Script, Turn};

/// A running fake model provider. Dropping it shuts the server down.
#[derive(Debug)]
pub struct FakeModel {
    addr: SocketAddr,
    shared: Arc<Shared>,
    /// `true` stops accepting connections and ends hanging streams.
    shutdown: watch::Sender<bool>,
}

#[derive(Debug)]
struct Shared {
    api_key: String,
    state: Mutex<ScriptState>,
    /// Woken on every recorded request, for [`FakeModel::wait_for_requests`].
    arrived: Notify,
    next_id: AtomicU64,
    shutdown: watch::Receiver<bool>,
}

#[derive(Debug)]
struct ScriptState {
    queue: VecDeque<Script>,
    default: Turn,
    requests: Vec<RecordedRequest>,
}

/// One request as the fake received it, whether or not it passed the checks.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub path: String,
    /// Lower-case names; the last value wins for repeated headers.
    pub headers: BTreeMap<String, String>,
    /// The JSON body, or the raw body as a JSON string when it was not JSON.
    pub body: Value,
    pub received_at: Instant,
    /// The client's address: the same port on two requests means a reused connection.
    pub peer: SocketAddr,
}

impl RecordedRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }
}

impl FakeModel {
    /// Binds 127.0.0.1 on a free port and serves until dropped.
    pub async fn start() -> FakeModel {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("FakeModel: bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("FakeModel: local address");
        let (shutdown, stop) = watch::channel(false);
        let shared = Arc::new(Shared {
            api_key: format!("sk-fake-{}", addr.port()),
            state: Mutex::new(ScriptState {
                queue: VecDeque::new(),
                default: Turn::text("ok"),
                requests: Vec::new(),
            }),
            arrived: Notify::new(),
            next_id: AtomicU64::new(1),
            shutdown: stop.clone(),
        });
        let router = Router::new()
            .route("/v1/messages", post(anthropic_messages))
            .route("/v1/chat/completions", post(openai_chat_completions))
            .route("/v1/models", axum::routing::get(list_models))
            .fallback(unknown_route)
            .layer(DefaultBodyLimit::max(64 << 20))
            .with_state(shared.clone());
        let mut stop = stop;
        // Ends by itself once `shutdown` fires and the last connection closed.
        tokio::spawn(async move {
            let signal = async move {
                let _ = stop.wait_for(|stop| *stop).await;
            };
            if let Err(error) = axum::serve(
                listener,
                router.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(signal)
            .await
            {
                tracing::warn!(%error, "FakeModel server failed");
            }
        });
        tracing::debug!(%addr, "FakeModel listening");
        FakeModel {
            addr,
            shared,
            shutdown,
        }
    }

    /// `http://127.0.0.1:PORT`: the Anthropic base URL; the OpenAI one is this plus `/v1`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The only key accepted (as `x-api-key` or `Authorization: Bearer`).
    pub fn api_key(&self) -> &str {
        &self.shared.api_key
    }

    /// Queues the answer to a future request (FIFO; each accepted request takes one).
    pub fn push(&self, script: impl Into<Script>) {
        self.shared.lock().queue.push_back(script.into());
    }

    /// The turn played when the queue is empty (at first a text turn saying "ok").
    pub fn set_default(&self, turn: Turn) {
        self.shared.lock().default = turn;
    }

    /// Every request received so far, in order, including rejected ones.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.lock().requests.clone()
    }

    /// How many requests arrived so far (without copying them, which a benchmark would pay
    /// for in a long session).
    pub fn request_count(&self) -> usize {
        self.shared.lock().requests.len()
    }

    /// Waits for the request at `index` (0: the first ever) and returns it alone; panics after
    /// `timeout`.
    pub async fn wait_for_request(&self, index: usize, timeout: Duration) -> RecordedRequest {
        let deadline = Instant::now() + timeout;
        loop {
            let arrived = self.shared.arrived.notified();
            tokio::pin!(arrived);
            arrived.as_mut().enable();
            if let Some(request) = self.shared.lock().requests.get(index) {
                return request.clone();
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                panic!(
                    "FakeModel: expected request {index} within {timeout:?}, got {}",
                    self.request_count()
                );
            }
        }
    }

    /// Waits until at least `n` requests arrived and returns them all; panics after `timeout`.
    pub async fn wait_for_requests(&self, n: usize, timeout: Duration) -> Vec<RecordedRequest> {
        let deadline = Instant::now() + timeout;
        loop {
            let arrived = self.shared.arrived.notified();
            tokio::pin!(arrived);
            arrived.as_mut().enable();
            let requests = self.requests();
            if requests.len() >= n {
                return requests;
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                let paths: Vec<&str> = requests.iter().map(|r| r.path.as_str()).collect();
                panic!(
                    "FakeModel: expected {n} requests within {timeout:?}, got {}: {paths:?}",
                    requests.len()
                );
            }
        }
    }
}

impl Drop for FakeModel {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}

impl Shared {
    /// Never held across an await.
    fn lock(&self) -> MutexGuard<'_, ScriptState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn record(&self, path: &str, peer: SocketAddr, headers: &HeaderMap, body: &[u8]) {
        // The whole body is in: it arrived now, however long recording it takes.
        let received_at = Instant::now();
        let headers = headers
            .iter()
            .map(|(name, value)| {
                (
                    name.as_str().to_string(),
                    String::from_utf8_lossy(value.as_bytes()).into_owned(),
                )
            })
            .collect();
        let body = serde_json::from_slice(body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into()));
        let request = RecordedRequest {
            path: path.to_string(),
            headers,
            body,
            received_at,
            peer,
        };
        self.lock().requests.push(request);
        self.arrived.notify_waiters();
    }

    fn next_script(&self) -> Script {
        let mut state = self.lock();
        match state.queue.pop_front() {
            Some(script) => script,
            None => Script::Turn(state.default.clone()),
        }
    }
}

/// What the checks take from a valid request.
#[derive(Debug)]
struct Checked {
    model: String,
    include_usage: bool,
}

/// A request the real API would refuse; answered in the provider's error format.
#[derive(Debug)]
struct Rejection {
    status: u16,
    message: String,
}

impl Rejection {
    fn new(status: u16, message: impl Into<String>) -> Rejection {
        Rejection {
            status,
            message: message.into(),
        }
    }
}

async fn anthropic_messages(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    handle(Wire::Anthropic, &shared, peer, &headers, &body)
}

async fn openai_chat_completions(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    handle(Wire::OpenAi, &shared, peer, &headers, &body)
}

fn handle(
    wire: Wire,
    shared: &Shared,
    peer: SocketAddr,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    let path = match wire {
        Wire::Anthropic => "/v1/messages",
        Wire::OpenAi => "/v1/chat/completions",
    };
    shared.record(path, peer, headers, body);
    let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
    let checked = match wire {
        Wire::Anthropic => anthropic::check(headers, body, &shared.api_key),
        Wire::OpenAi => openai::check(headers, body, &shared.api_key),
    };
    match checked {
        Ok(Checked {
            model,
            include_usage,
        }) => {
            let script = shared.next_script();
            tracing::debug!(?wire, %model, ?script, "FakeModel answering");
            let reply = Reply {
                model,
                include_usage,
                id,
            };
            play::respond(wire, script, &reply, shared.shutdown.clone())
        }
        Err(rejection) => {
            tracing::info!(?wire, status = rejection.status, message = %rejection.message, "FakeModel rejected a request");
            play::error_response(wire, rejection.status, &rejection.message, id)
        }
    }
}

/// `GET /v1/models` of either API (the same path): the key's header says which one is asked.
async fn list_models(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    shared.record("/v1/models", peer, &headers, &[]);
    let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
    let (wire, checked) = if header(&headers, "x-api-key").is_some() {
        let checked = anthropic::check_key(&headers, &shared.api_key);
        (Wire::Anthropic, checked.map(|()| anthropic::models_body()))
    } else {
        let checked = openai::check_key(&headers, &shared.api_key);
        (Wire::OpenAi, checked.map(|()| openai::models_body()))
    };
    match checked {
        Ok(body) => axum::Json(body).into_response(),
        Err(rejection) => play::error_response(wire, rejection.status, &rejection.message, id),
    }
}

async fn unknown_route(method: Method, uri: Uri) -> Response {
    let message = format!(
        "FakeModel has no route {method} {uri}; the Anthropic base URL is url(), the OpenAI one url() + \"/v1\""
    );
    tracing::warn!("{message}");
    (axum::http::StatusCode::NOT_FOUND, message).into_response()
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn json_content_type(headers: &HeaderMap) -> Result<(), Rejection> {
    match header(headers, "content-type") {
        Some(v) if v.to_ascii_lowercase().starts_with("application/json") => Ok(()),
        other => Err(Rejection::new(
            400,
            format!("content-type must be application/json, got {other:?}"),
        )),
    }
}

/// The name pattern both APIs enforce for client tools.
fn valid_tool_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests;
