//! A fake Slack Web API on 127.0.0.1 answering the methods kiln calls — `auth.test`,
//! `chat.postMessage`, `chat.update`, `users.info`, `conversations.info`,
//! `conversations.replies` — with the shapes of Slack's documentation: always HTTP 200 with
//! `{"ok": true, …}` or `{"ok": false, "error": "channel_not_found"}`, the bot token checked
//! (`not_authed` without one, `invalid_auth` for another), and HTTP 429 with `Retry-After`
//! when a test asks for it ([`FakeSlack::rate_limit_next`]). Arguments are taken as Slack takes
//! them: a JSON body (`application/json; charset=utf-8`) or a form-encoded one. Every call is
//! recorded, and the messages posted are kept with their edits so a test can read a thread.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The bot token the fake accepts (`xoxb-…`, as Slack's bot tokens look).
pub const FAKE_SLACK_BOT_TOKEN: &str = "xoxb-fake-bot-token";
/// The bot's own user id (what `auth.test` answers, and the author of what it posts).
pub const FAKE_SLACK_BOT_USER: &str = "UKILNBOT";

/// One call the fake answered.
#[derive(Debug, Clone)]
pub struct SlackCall {
    /// The method, e.g. `chat.postMessage`.
    pub method: String,
    /// The full Authorization header, if any.
    pub authorization: Option<String>,
    /// The arguments, as JSON whichever way they came.
    pub args: Value,
    /// The HTTP status answered (200, or 429 when rate limited).
    pub status: u16,
}

/// A message in a channel: posted by the bot through the API, or added by a test as a person's.
#[derive(Debug, Clone)]
pub struct SlackMessage {
    pub channel: String,
    pub ts: String,
    /// The thread's parent `ts`, for a reply.
    pub thread_ts: Option<String>,
    /// Who wrote it (the bot's user id for what kiln posted).
    pub user: String,
    /// The text now (after any `chat.update`).
    pub text: String,
    /// Every text it had, the first included: one entry per post or update.
    pub versions: Vec<String>,
}

#[derive(Debug, Default)]
struct St {
    calls: Vec<SlackCall>,
    /// Method → how many seconds its next calls answer 429 for (one entry per call).
    rate_limits: VecDeque<(String, u64)>,
    /// id → (name, email, is_bot).
    users: HashMap<String, (String, String, bool)>,
    /// id → (name, topic, is_im).
    channels: HashMap<String, (String, String, bool)>,
    messages: Vec<SlackMessage>,
    counter: u64,
}

/// The fake Slack Web API. Cheap to clone; the server lives as long as the test's runtime.
#[derive(Debug, Clone)]
pub struct FakeSlack {
    addr: SocketAddr,
    st: Arc<Mutex<St>>,
}

impl FakeSlack {
    pub async fn start() -> FakeSlack {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("FakeSlack: bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("FakeSlack: local address");
        let st = Arc::new(Mutex::new(St::default()));
        let router = Router::new()
            .route("/api/{method}", post(call))
            .with_state(st.clone());
        tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, router).await {
                tracing::warn!(%error, "FakeSlack server failed");
            }
        });
        FakeSlack { addr, st }
    }

    /// The Web API base, as kiln's `[slack] api_url` takes it (`http://127.0.0.1:PORT/api`).
    pub fn api_url(&self) -> String {
        format!("http://{}/api", self.addr)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, St> {
        self.st.lock().expect("FakeSlack state")
    }

    /// A person (or, with `is_bot`, a bot user) in the workspace.
    pub fn add_user(&self, id: &str, name: &str, email: &str, is_bot: bool) {
        self.lock()
            .users
            .insert(id.into(), (name.into(), email.into(), is_bot));
    }

    /// A channel (`C…`) or, with `is_im`, a direct message conversation (`D…`).
    pub fn add_channel(&self, id: &str, name: &str, topic: &str, is_im: bool) {
        self.lock()
            .channels
            .insert(id.into(), (name.into(), topic.into(), is_im));
    }

    /// A person's message, as if written in Slack (what an event then tells kiln about);
    /// returns its `ts`.
    pub fn add_message(
        &self,
        channel: &str,
        thread_ts: Option<&str>,
        user: &str,
        text: &str,
    ) -> String {
        let mut st = self.lock();
        let ts = next_ts(&mut st);
        st.messages.push(SlackMessage {
            channel: channel.into(),
            ts: ts.clone(),
            thread_ts: thread_ts.map(str::to_string),
            user: user.into(),
            text: text.into(),
            versions: vec![text.into()],
        });
        ts
    }

    /// The next call of `method` is answered 429 with `Retry-After: secs`.
    pub fn rate_limit_next(&self, method: &str, secs: u64) {
        self.lock().rate_limits.push_back((method.into(), secs));
    }

    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<SlackCall> {
        self.lock().calls.clone()
    }

    /// The calls of one method so far.
    pub fn calls_of(&self, method: &str) -> Vec<SlackCall> {
        self.lock()
            .calls
            .iter()
            .filter(|c| c.method == method)
            .cloned()
            .collect()
    }

    /// The messages of a thread (its parent first), in order.
    pub fn thread(&self, channel: &str, thread_ts: &str) -> Vec<SlackMessage> {
        self.lock()
            .messages
            .iter()
            .filter(|m| {
                m.channel == channel
                    && (m.ts == thread_ts || m.thread_ts.as_deref() == Some(thread_ts))
            })
            .cloned()
            .collect()
    }

    /// Waits (at most `timeout`) until `done` holds for the thread; panics with the thread
    /// otherwise.
    pub async fn wait_for_thread(
        &self,
        channel: &str,
        thread_ts: &str,
        timeout: Duration,
        done: impl Fn(&[SlackMessage]) -> bool,
    ) -> Vec<SlackMessage> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let thread = self.thread(channel, thread_ts);
            if done(&thread) {
                return thread;
            }
            if tokio::time::Instant::now() > deadline {
                panic!("FakeSlack: thread {channel}/{thread_ts} never got there: {thread:#?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn next_ts(st: &mut St) -> String {
    st.counter += 1;
    format!("1700000000.{:06}", st.counter)
}

/// The arguments of a call: a JSON object, or `a=b&c=d` form-encoded.
fn args(headers: &HeaderMap, body: &[u8]) -> Value {
    let json = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if json {
        return serde_json::from_slice(body).unwrap_or(Value::Null);
    }
    let text = String::from_utf8_lossy(body);
    let mut map = serde_json::Map::new();
    for pair in text.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        map.insert(form_decode(k), Value::String(form_decode(v)));
    }
    Value::Object(map)
}

fn form_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn error(e: &str) -> Value {
    json!({"ok": false, "error": e})
}

fn arg<'a>(args: &'a Value, key: &str) -> Option<&'a str> {
    args.get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

async fn call(
    State(st): State<Arc<Mutex<St>>>,
    Path(method): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let args = args(&headers, &body);
    let authorization = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let mut st = st.lock().expect("FakeSlack state");
    let limited = st
        .rate_limits
        .iter()
        .position(|(m, _)| *m == method)
        .and_then(|i| st.rate_limits.remove(i));
    st.calls.push(SlackCall {
        method: method.clone(),
        authorization: authorization.clone(),
        args: args.clone(),
        status: if limited.is_some() { 429 } else { 200 },
    });
    if let Some((_, secs)) = limited {
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", secs.to_string())],
            axum::Json(error("ratelimited")),
        )
            .into_response();
    }
    let answer = match authorization
        .as_deref()
        .and_then(|a| a.strip_prefix("Bearer "))
    {
        None => error("not_authed"),
        Some(token) if token != FAKE_SLACK_BOT_TOKEN => error("invalid_auth"),
        Some(_) => answer(&mut st, &method, &args),
    };
    axum::Json(answer).into_response()
}

fn answer(st: &mut St, method: &str, args: &Value) -> Value {
    match method {
        "auth.test" => json!({
            "ok": true, "url": "https://fake-workspace.slack.com/", "team": "Fake Workspace",
            "user": "kiln", "team_id": "T0FAKE", "user_id": FAKE_SLACK_BOT_USER,
            "bot_id": "B0FAKE", "is_enterprise_install": false,
        }),
        "chat.postMessage" => {
            let Some(channel) = arg(args, "channel") else {
                return error("channel_not_found");
            };
            if !st.channels.contains_key(channel) {
                return error("channel_not_found");
            }
            let Some(text) = arg(args, "text") else {
                return error("no_text");
            };
            let ts = next_ts(st);
            let thread_ts = arg(args, "thread_ts").map(str::to_string);
            st.messages.push(SlackMessage {
                channel: channel.into(),
                ts: ts.clone(),
                thread_ts: thread_ts.clone(),
                user: FAKE_SLACK_BOT_USER.into(),
                text: text.into(),
                versions: vec![text.into()],
            });
            json!({"ok": true, "channel": channel, "ts": ts, "message": {
                "type": "message", "subtype": "bot_message", "text": text, "ts": ts,
                "user": FAKE_SLACK_BOT_USER, "bot_id": "B0FAKE", "thread_ts": thread_ts,
            }})
        }
        "chat.update" => {
            let (Some(channel), Some(ts)) = (arg(args, "channel"), arg(args, "ts")) else {
                return error("message_not_found");
            };
            if !st.channels.contains_key(channel) {
                return error("channel_not_found");
            }
            let Some(text) = arg(args, "text").map(str::to_string) else {
                return error("no_text");
            };
            let Some(m) = st
                .messages
                .iter_mut()
                .find(|m| m.channel == channel && m.ts == ts)
            else {
                return error("message_not_found");
            };
            if m.user != FAKE_SLACK_BOT_USER {
                return error("cant_update_message");
            }
            m.text = text.clone();
            m.versions.push(text.clone());
            json!({"ok": true, "channel": channel, "ts": ts, "text": text,
                "message": {"text": text, "user": FAKE_SLACK_BOT_USER}})
        }
        "users.info" => {
            let Some((id, (name, email, is_bot))) =
                arg(args, "user").and_then(|id| st.users.get_key_value(id))
            else {
                return error("user_not_found");
            };
            json!({"ok": true, "user": {
                "id": id, "team_id": "T0FAKE", "name": name, "deleted": false,
                "real_name": name, "is_bot": is_bot, "is_admin": false,
                "profile": {"real_name": name, "display_name": name, "email": email},
            }})
        }
        "conversations.info" => {
            let Some((id, (name, topic, is_im))) =
                arg(args, "channel").and_then(|id| st.channels.get_key_value(id))
            else {
                return error("channel_not_found");
            };
            json!({"ok": true, "channel": {
                "id": id, "name": name, "is_channel": !is_im, "is_im": is_im,
                "is_private": false, "is_archived": false,
                "topic": {"value": topic, "creator": "", "last_set": 0},
                "purpose": {"value": "", "creator": "", "last_set": 0},
            }})
        }
        "conversations.replies" => {
            let (Some(channel), Some(ts)) = (arg(args, "channel"), arg(args, "ts")) else {
                return error("thread_not_found");
            };
            if !st.channels.contains_key(channel) {
                return error("channel_not_found");
            }
            let messages: Vec<Value> = st
                .messages
                .iter()
                .filter(|m| {
                    m.channel == channel && (m.ts == ts || m.thread_ts.as_deref() == Some(ts))
                })
                .map(|m| {
                    json!({"type": "message", "user": m.user, "text": m.text, "ts": m.ts,
                    "thread_ts": m.thread_ts.as_deref().unwrap_or(&m.ts)})
                })
                .collect();
            if messages.is_empty() {
                return error("thread_not_found");
            }
            json!({"ok": true, "messages": messages, "has_more": false,
                "response_metadata": {"next_cursor": ""}})
        }
        _ => error("unknown_method"),
    }
}
