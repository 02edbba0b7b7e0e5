//! The WebSocket pump: one socket follows one session. It replays the log after `after_seq`,
//! then streams live events, presence and typing. A thin loop over three sources; all the
//! ordering guarantees come from [`kiln_store::Subscription`].
//!
//! A slow client blocks only its own pump: its subscription falls behind the broadcast and
//! catches up from SQLite. A client that takes nothing for [`SEND_TIMEOUT`] is dropped.

use crate::AppState;
use crate::auth::Caller;
use crate::error::Result;
use crate::extract::{Path, Query};
use crate::presence::Presence;
use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade, close_code};
use axum::response::Response;
use futures_util::{FutureExt, SinkExt, StreamExt};
use kiln_core::SessionId;
use kiln_protocol::api::{
    ClientFrame, EVENT_VERSION, Ephemeral, ServerFrame, UserClientFrame, UserRef, UserServerFrame,
    WS_PROTOCOL_VERSION,
};
use kiln_store::SessionLog;
use serde::Deserialize;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How long one frame may wait for a client to take it.
const SEND_TIMEOUT: Duration = Duration::from_secs(30);
/// Bytes read from a socket at a time. Clients send small frames rarely, and tungstenite
/// zero-fills the whole read buffer (128 KiB by default) before each read.
const READ_BUFFER: usize = 4 * 1024;
/// The largest message (and frame) a client may send. Client frames are small (typing, ping,
/// a repo name); tungstenite's default of 64 MiB let one client grow the server by as much
/// per socket. A larger message ends the connection before its payload is read.
pub(crate) const MAX_CLIENT_MESSAGE: usize = 64 * 1024;
/// WebSocket pings keep idle connections (and proxies) alive and find dead peers.
const PING_EVERY: Duration = Duration::from_secs(25);

/// The session socket's query. A browser's `?token=` is read by [`crate::auth::Caller`] and
/// documented as the `token` security scheme.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct WsQuery {
    /// Replay events with seq greater than this, then stream live ones.
    #[serde(default)]
    pub(crate) after_seq: u64,
}

#[utoipa::path(get, path = "/api/sessions/{id}/ws", tag = "sessions",
    params(("id" = String, Path), WsQuery),
    security(("bearer" = []), ("cookie" = []), ("token" = [])),
    responses((status = 101, description = "WebSocket of ServerFrame JSON text messages; \
        client messages over 64 KiB close it"),
        (status = 400, body = kiln_protocol::api::ApiError, description = "Not a WebSocket upgrade"),
        (status = 404, body = kiln_protocol::api::ApiError),
        (status = 426, body = kiln_protocol::api::ApiError, description = "The connection cannot be upgraded")))]
pub(crate) async fn ws(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<SessionId>,
    Query(query): Query<WsQuery>,
    upgrade: WebSocketUpgrade,
) -> Result<Response> {
    let role = caller.role_in(&state, &id).await?;
    let log = state.store.open_session(&id).await?;
    let presence = state.presence.clone();
    let user = caller.user_ref();
    // Someone who may prompt is typing: a sandbox that was stopped starts coming back now.
    let engine = (role.can_prompt() && !caller.read_only()).then(|| state.engine.clone());
    let closing = state.closing.clone();
    let metrics = state.metrics.clone();
    Ok(upgrade
        .read_buffer_size(READ_BUFFER)
        .max_message_size(MAX_CLIENT_MESSAGE)
        .max_frame_size(MAX_CLIENT_MESSAGE)
        .on_upgrade(move |socket| async move {
            let _client = metrics.websocket_client();
            pump(
                socket,
                log,
                presence,
                engine,
                user,
                query.after_seq,
                closing,
            )
            .await;
        }))
}

#[utoipa::path(get, path = "/api/ws", tag = "users",
    security(("bearer" = []), ("cookie" = []), ("token" = [])),
    responses((status = 101, description = "WebSocket of UserServerFrame JSON text messages; \
        client messages over 64 KiB close it"),
        (status = 400, body = kiln_protocol::api::ApiError, description = "Not a WebSocket upgrade"),
        (status = 426, body = kiln_protocol::api::ApiError, description = "The connection cannot be upgraded")))]
pub(crate) async fn user_ws(
    State(state): State<AppState>,
    caller: Caller,
    upgrade: WebSocketUpgrade,
) -> Response {
    upgrade
        .read_buffer_size(READ_BUFFER)
        .max_message_size(MAX_CLIENT_MESSAGE)
        .max_frame_size(MAX_CLIENT_MESSAGE)
        .on_upgrade(move |socket| user_pump(socket, state, caller))
}

/// The user socket: warm-up while typing for sessions that do not exist yet.
async fn user_pump(socket: WebSocket, state: AppState, caller: Caller) {
    let _client = state.metrics.websocket_client();
    let (engine, closing) = (state.engine.clone(), state.closing.clone());
    let user = caller.user_ref();
    let (mut tx, mut rx) = socket.split();
    let hello = UserServerFrame::Hello {
        protocol_version: WS_PROTOCOL_VERSION,
    };
    if send(&mut tx, json_text(&hello)).await.is_err() {
        return;
    }
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.reset();
    loop {
        let reply = tokio::select! {
            incoming = rx.next() => match incoming {
                Some(Ok(Message::Text(text))) => match UserClientFrame::decode(text.as_str()) {
                    Ok(UserClientFrame::Typing { repo }) => {
                        // The same check and the same 404 as the repo routes.
                        let reserved = match crate::routes::access::require_repo(&state, &caller, &repo).await {
                            Ok(_) if caller.read_only() => Err(crate::auth::read_only_refusal()),
                            Ok(_) => engine.reserve_sandbox(&user, &repo).await.map_err(crate::error::Error::from),
                            Err(e) => Err(e),
                        };
                        match reserved {
                            Ok(reserved) => UserServerFrame::Warm { repo, reserved },
                            Err(e) => UserServerFrame::Error { message: e.to_string() },
                        }
                    }
                    Ok(UserClientFrame::Ping { nonce }) => UserServerFrame::Pong { nonce },
                    Err(message) => UserServerFrame::Error { message },
                },
                Some(Ok(Message::Binary(_))) => UserServerFrame::Error {
                    message: "frames are JSON text messages".into(),
                },
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => continue,
            },
            _ = closing.cancelled() => return say_goodbye(tx).await,
            _ = ping.tick() => {
                if tokio::time::timeout(SEND_TIMEOUT, tx.send(Message::Ping(Default::default()))).await.is_err() {
                    break;
                }
                continue;
            }
        };
        if send(&mut tx, json_text(&reply)).await.is_err() {
            break;
        }
    }
    let _ = tx.close().await;
}

async fn pump(
    socket: WebSocket,
    log: SessionLog,
    presence: Presence,
    engine: Option<kiln_engine::Engine>,
    user: UserRef,
    after_seq: u64,
    closing: CancellationToken,
) {
    let (mut tx, mut rx) = socket.split();
    let session = log.id().clone();
    let hello = ServerFrame::Hello {
        protocol_version: WS_PROTOCOL_VERSION,
        event_version: EVENT_VERSION,
        head_seq: log.head_seq().await,
    };
    let mut subscription = log.subscribe(after_seq);
    let (_guard, mut ephemeral, here) = presence.join(&session, &user);
    if send(&mut tx, frame_text(&hello)).await.is_err() {
        return;
    }
    // Who was here before this socket: each once, as if they had just come.
    for user in here {
        let present = ServerFrame::Ephemeral {
            event: Ephemeral::Present { user },
        };
        if send(&mut tx, frame_text(&present)).await.is_err() {
            return;
        }
    }
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.reset();
    loop {
        let outgoing = tokio::select! {
            event = subscription.next() => match event {
                Ok(Some(stored)) => {
                    // Under load, write every event that is already waiting in one flush: one
                    // syscall for a burst instead of one per event.
                    if feed_ready(&mut tx, &mut subscription, event_frame(&stored)).await.is_err() {
                        break;
                    }
                    None
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(session = %session, error = %e, "subscription failed; closing socket");
                    break;
                }
            },
            event = ephemeral.recv() => match event {
                Ok(event) => Some(frame_text(&ServerFrame::Ephemeral { event })),
                // Presence is best effort: a client that fell behind skips what it missed.
                Err(_) => None,
            },
            incoming = rx.next() => match incoming {
                Some(Ok(Message::Text(text))) => match ClientFrame::decode(text.as_str()) {
                    Ok(ClientFrame::Typing) => {
                        presence.send(&session, Ephemeral::Typing { user: user.clone() });
                        if let Some(engine) = &engine {
                            engine.warm_session(&session).await;
                        }
                        None
                    }
                    Ok(ClientFrame::Ping { nonce }) => Some(frame_text(&ServerFrame::Pong { nonce })),
                    Err(message) => Some(frame_text(&ServerFrame::Error { message })),
                },
                Some(Ok(Message::Binary(_))) => Some(frame_text(&ServerFrame::Error {
                    message: "frames are JSON text messages".into(),
                })),
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => None,
            },
            _ = closing.cancelled() => return say_goodbye(tx).await,
            _ = ping.tick() => {
                if tokio::time::timeout(SEND_TIMEOUT, tx.send(Message::Ping(Default::default()))).await.is_err() {
                    break;
                }
                None
            }
        };
        if let Some(text) = outgoing
            && send(&mut tx, text).await.is_err()
        {
            break;
        }
    }
    let _ = tx.close().await;
}

/// The server is stopping: a Close frame tells the client so at once (code 1012, "service
/// restart"), so it reconnects — and resumes from its last seq — instead of waiting for a
/// dead connection to time out. Upgraded sockets are not part of the HTTP server's graceful
/// shutdown; this is how they end.
async fn say_goodbye<S>(mut tx: S)
where
    S: futures_util::Sink<Message> + Unpin,
{
    let close = CloseFrame {
        code: close_code::RESTART,
        reason: "kiln is shutting down; reconnect and resume from your last seq".into(),
    };
    let _ = tokio::time::timeout(SEND_TIMEOUT, tx.send(Message::Close(Some(close)))).await;
}

/// Most frames queued before one flush.
const BATCH: usize = 256;

/// Queues `first` and every event the subscription has ready (up to [`BATCH`]), then flushes.
async fn feed_ready<S>(
    tx: &mut S,
    subscription: &mut kiln_store::Subscription,
    first: Utf8Bytes,
) -> std::result::Result<(), ()>
where
    S: futures_util::Sink<Message> + Unpin,
{
    let batch = async {
        tx.feed(Message::Text(first)).await?;
        for _ in 1..BATCH {
            match subscription.next().now_or_never() {
                Some(Ok(Some(stored))) => tx.feed(Message::Text(event_frame(&stored))).await?,
                _ => break,
            }
        }
        tx.flush().await
    };
    match tokio::time::timeout(SEND_TIMEOUT, batch).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(()),
    }
}

async fn send<S>(tx: &mut S, text: Utf8Bytes) -> std::result::Result<(), ()>
where
    S: futures_util::Sink<Message> + Unpin,
{
    match tokio::time::timeout(SEND_TIMEOUT, tx.send(Message::Text(text))).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(()),
    }
}

fn frame_text(frame: &ServerFrame) -> Utf8Bytes {
    json_text(frame)
}

fn json_text(frame: &impl serde::Serialize) -> Utf8Bytes {
    serde_json::to_string(frame)
        .expect("server frames serialize")
        .into()
}

/// `ServerFrame::Event` as the store made it once for every subscriber: a shared buffer, so a
/// frame costs each socket a reference count, not a copy.
fn event_frame(stored: &kiln_store::StoredEvent) -> Utf8Bytes {
    Utf8Bytes::try_from(stored.frame.clone()).expect("the store makes frames from UTF-8 text")
}
