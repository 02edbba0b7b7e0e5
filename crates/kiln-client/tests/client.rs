//! The client against a small axum server on port 0 that plays the parts of the kiln API the
//! client must get right on its own: the token on every request, status → error mapping, and a
//! WebSocket that drops connections, replays old events and skips one, which the subscription
//! must turn into every event exactly once. The real server is exercised by the CLI tests.

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use kiln_client::{Client, Error, SubscribeOptions};
use kiln_core::{PromptId, Secret, SessionId};
use kiln_protocol::api::{ApiError, ClientFrame, Event, EventEnvelope, ServerFrame};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const TOKEN: &str = "sekrit-token";
/// Events in the fake session's log.
const TOTAL: u64 = 10;

#[derive(Default)]
struct Fake {
    /// `after_seq` of every WebSocket connection, in order.
    subscriptions: Mutex<Vec<u64>>,
    /// Text frames the client sent.
    received: Mutex<Vec<String>>,
    /// Drop every connection right after the handshake.
    hang_up: bool,
}

async fn serve(fake: Fake) -> (String, Arc<Fake>) {
    let fake = Arc::new(fake);
    let app = Router::new()
        .route("/api/me", get(me))
        .route(
            "/api/repos",
            get(|| async { refuse(StatusCode::UNAUTHORIZED, "bad token") }),
        )
        .route(
            "/api/sessions/{id}",
            get(|| async { refuse(StatusCode::NOT_FOUND, "no such session") }),
        )
        .route(
            "/api/sessions",
            get(|| async { refuse(StatusCode::CONFLICT, "busy") }),
        )
        .route("/api/sessions/{id}/ws", get(ws))
        .with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, fake)
}

fn refuse(status: StatusCode, message: &str) -> Response {
    let body = ApiError {
        error: message.into(),
    };
    (status, Json(body)).into_response()
}

fn authorized(headers: &HeaderMap) -> bool {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        == Some(&format!("Bearer {TOKEN}"))
}

async fn me(headers: HeaderMap) -> Response {
    if !authorized(&headers) {
        return refuse(StatusCode::UNAUTHORIZED, "missing or unknown token");
    }
    let body = serde_json::json!({"user": {"id": "u-0123456789abcdef", "name": "ada", "admin": true, "created_at_ms": 0}});
    Json(body).into_response()
}

async fn ws(
    State(fake): State<Arc<Fake>>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    if !authorized(&headers) {
        return refuse(StatusCode::UNAUTHORIZED, "missing or unknown token");
    }
    let after: u64 = query["after_seq"].parse().unwrap();
    let nth = {
        let mut subscriptions = fake.subscriptions.lock().unwrap();
        subscriptions.push(after);
        subscriptions.len()
    };
    upgrade.on_upgrade(move |socket| session(fake, socket, after, nth))
}

/// Connection 1 sends three events and drops; connection 2 skips one event; later ones replay
/// one event too many and send three more, until the log is done and the socket stays open.
async fn session(fake: Arc<Fake>, mut socket: WebSocket, after: u64, nth: usize) {
    if fake.hang_up {
        return;
    }
    let hello = ServerFrame::Hello {
        protocol_version: 1,
        event_version: 1,
        head_seq: TOTAL,
    };
    send(&mut socket, &hello).await;
    let first = match nth {
        2 => after + 2,
        1 => after + 1,
        _ => after.max(1),
    };
    let last = (after + 3).min(TOTAL);
    for seq in first..=last {
        let envelope = EventEnvelope {
            seq,
            at_ms: 0,
            event: Event::TextDelta {
                prompt_id: PromptId::random(),
                text: format!("{seq} "),
            },
        };
        send(&mut socket, &ServerFrame::Event(envelope)).await;
    }
    if last < TOTAL {
        return; // dropped without a close frame, like a crashed server
    }
    while let Some(Ok(Message::Text(text))) = socket.recv().await {
        fake.received.lock().unwrap().push(text.to_string());
    }
}

async fn send(socket: &mut WebSocket, frame: &ServerFrame) {
    let text = serde_json::to_string(frame).unwrap();
    socket.send(Message::Text(text.into())).await.unwrap();
}

fn client(url: &str, token: Option<&str>) -> Client {
    Client::new(url, token.map(|t| Secret::new(t.to_string()))).unwrap()
}

#[tokio::test]
async fn statuses_become_errors_a_caller_can_act_on() {
    let (url, _fake) = serve(Fake::default()).await;
    let me = client(&url, Some(TOKEN)).me().await.unwrap();
    assert_eq!(me.user.name, "ada");

    let err = client(&url, None).me().await.unwrap_err();
    assert!(matches!(err, Error::Unauthorized { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("missing or unknown token") && text.contains("KILN_TOKEN"),
        "{text}"
    );
    assert!(text.contains(&url), "{text}");
    let err = client(&url, Some("wrong")).me().await.unwrap_err();
    assert!(
        !format!("{err} {err:?}").contains("wrong"),
        "the token leaked: {err:?}"
    );

    let c = client(&url, Some(TOKEN));
    let err = c.session(&SessionId::random()).await.unwrap_err();
    assert!(matches!(err, Error::NotFound { ref message } if message == "no such session"));
    let err = c.sessions().await.unwrap_err();
    assert!(matches!(err, Error::Api { status: 409, ref message } if message == "busy"));
}

#[tokio::test]
async fn an_absent_server_is_a_connect_error_naming_the_url() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let err = client(&url, Some(TOKEN)).health().await.unwrap_err();
    assert!(err.is_connection());
    let text = err.to_string();
    assert!(text.contains(&url) && text.contains("kiln up"), "{text}");
    assert!(text.to_lowercase().contains("refused"), "{text}");

    let mut stream = client(&url, None).subscribe(&SessionId::random(), 0);
    let err = stream.next().await.unwrap().unwrap_err();
    assert!(matches!(err, Error::Connect { .. }), "{err:?}");
    assert!(stream.next().await.is_none());
}

#[tokio::test]
async fn subscriptions_survive_drops_and_yield_each_event_once() {
    let (url, fake) = serve(Fake::default()).await;
    let mut stream = client(&url, Some(TOKEN)).subscribe(&SessionId::random(), 0);
    let (mut seqs, mut hellos, mut text) = (Vec::new(), 0, String::new());
    while seqs.last() != Some(&TOTAL) {
        match stream.next().await.unwrap().unwrap() {
            ServerFrame::Hello { .. } => hellos += 1,
            ServerFrame::Event(envelope) => {
                seqs.push(envelope.seq);
                if let Event::TextDelta { text: delta, .. } = envelope.event {
                    text.push_str(&delta);
                }
            }
            other => panic!("unexpected frame {other:?}"),
        }
    }
    assert_eq!(seqs, (1..=TOTAL).collect::<Vec<_>>());
    assert_eq!(text, "1 2 3 4 5 6 7 8 9 10 ");
    assert_eq!(stream.last_seq(), TOTAL);
    // 1: from 0, dropped after 3; 2: skipped 4, so again from 3; then 6 and 9 (kept open).
    assert_eq!(*fake.subscriptions.lock().unwrap(), [0, 3, 3, 6, 9]);
    assert_eq!(hellos, 5);

    stream.send_typing().await.unwrap();
    for _ in 0..200 {
        if !fake.received.lock().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let received = fake.received.lock().unwrap().clone();
    let frames: Vec<ClientFrame> = received
        .iter()
        .map(|t| ClientFrame::decode(t).unwrap())
        .collect();
    assert_eq!(frames, [ClientFrame::Typing]);
}

#[tokio::test]
async fn a_refused_subscription_ends_at_once() {
    let (url, fake) = serve(Fake::default()).await;
    let mut stream = client(&url, Some("wrong")).subscribe(&SessionId::random(), 0);
    let err = stream.next().await.unwrap().unwrap_err();
    assert!(matches!(err, Error::Unauthorized { .. }), "{err:?}");
    assert!(stream.next().await.is_none());
    assert!(fake.subscriptions.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_connection_that_never_comes_back_gives_up_in_time() {
    let fake = Fake {
        hang_up: true,
        ..Fake::default()
    };
    let (url, fake) = serve(fake).await;
    let options = SubscribeOptions {
        reconnect_for: Duration::from_millis(500),
        ..SubscribeOptions::default()
    };
    let mut stream = client(&url, Some(TOKEN)).subscribe_with(&SessionId::random(), 7, options);
    let started = std::time::Instant::now();
    let err = stream.next().await.unwrap().unwrap_err();
    let took = started.elapsed();
    assert!(matches!(err, Error::GaveUp { .. }), "{err:?}");
    assert!(err.to_string().contains(&url), "{err}");
    assert!(
        took >= Duration::from_millis(500) && took < Duration::from_secs(5),
        "{took:?}"
    );
    let subscriptions = fake.subscriptions.lock().unwrap().clone();
    assert!(subscriptions.len() >= 3, "{subscriptions:?}");
    assert!(
        subscriptions.iter().all(|&after| after == 7),
        "{subscriptions:?}"
    );
    assert!(stream.next().await.is_none());
}
