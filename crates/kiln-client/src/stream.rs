//! Following a session live over its WebSocket, surviving dropped connections.
//!
//! The server replays every event after `after_seq` and then streams live ones, each once and
//! in order. So a reconnect needs nothing but the last seq this stream handed out: it asks for
//! what comes after it, and drops anything at or below it. That is the whole resume protocol,
//! and it is why a reconnect can neither duplicate nor lose an event.
//!
//! The stream owns its socket and has no background task: connecting, reading, pinging and
//! reconnecting all happen inside [`EventStream::next`], which is cancel-safe (state changes
//! only after an await completes), so it can sit in a `select!` with a Ctrl-C handler.

use crate::client::{bearer, user_agent};
use crate::error::{Error, Result, root_cause};
use futures_util::{SinkExt, StreamExt};
use kiln_core::Secret;
use kiln_protocol::api::{ClientFrame, ServerFrame};
use reqwest::Url;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::time::{Instant, sleep, timeout};
use tokio_tungstenite::tungstenite::{self, Message, client::IntoClientRequest, http::header};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Bounds the WebSocket handshake the way `CONNECT_TIMEOUT` bounds REST requests.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// How a subscription behaves when its connection goes quiet or away.
#[derive(Debug, Clone)]
pub struct SubscribeOptions {
    /// How long to keep trying to get a lost connection back before [`Error::GaveUp`].
    pub reconnect_for: Duration,
    /// Silence after which the stream pings the server; after twice this with no frame at all,
    /// the connection is taken for dead and replaced (a half-open TCP connection never errors).
    pub idle_timeout: Duration,
}

impl Default for SubscribeOptions {
    fn default() -> Self {
        SubscribeOptions {
            reconnect_for: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(30),
        }
    }
}

/// A live view of one session's log; see the module docs. Obtain one with
/// [`crate::Client::subscribe`] and call [`EventStream::next`] in a loop.
///
/// It yields every [`ServerFrame`]: one `Hello` per connection (so a `Hello` after the first
/// means it reconnected; its `head_seq` is where that connection's replay ends), each event
/// exactly once in seq order, and ephemeral frames as they come.
#[derive(Debug)]
pub struct EventStream {
    /// The `ws` endpoint as an http(s) URL, without the query.
    url: Url,
    /// The server's base URL, for messages.
    server: String,
    token: Option<Secret<String>>,
    options: SubscribeOptions,
    /// The last seq yielded (or the caller's `after_seq`): where a reconnect resumes.
    last_seq: u64,
    socket: Option<Socket>,
    /// Set when a connection was lost: since when, how many attempts since, and why.
    lost: Option<Lost>,
    /// Whether this stream ever connected; the first connection is not retried, so a server
    /// that is not there is reported at once.
    connected_once: bool,
    /// A keep-alive ping is out and nothing has come back since.
    pinged: bool,
    /// `last_seq` when the server last skipped events; a second skip there is a server bug.
    gap_at: Option<u64>,
    finished: bool,
    /// Whether the stream is connected or getting a lost connection back, for whoever shows
    /// it (a "reconnecting…" line); see [`EventStream::link`].
    link: tokio::sync::watch::Sender<Link>,
}

/// The state of a stream's connection, as [`EventStream::link`] tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Link {
    /// Connected, or connecting for the first time.
    Up,
    /// The connection was lost and is being regained; why it was lost.
    Reconnecting(String),
}

#[derive(Debug)]
struct Lost {
    since: Instant,
    attempts: u32,
    reason: String,
}

/// Why one connection attempt failed: worth retrying, or not (the server said no).
enum Attempt {
    Retry(String),
    Fatal(Error),
}

impl EventStream {
    pub(crate) fn new(
        url: Url,
        server: String,
        token: Option<Secret<String>>,
        after_seq: u64,
        options: SubscribeOptions,
    ) -> EventStream {
        EventStream {
            url,
            server,
            token,
            options,
            last_seq: after_seq,
            socket: None,
            lost: None,
            connected_once: false,
            pinged: false,
            gap_at: None,
            finished: false,
            link: tokio::sync::watch::Sender::new(Link::Up),
        }
    }

    /// Follows the state of the connection: [`Link::Reconnecting`] from the moment a
    /// connection is lost until events flow again. The receiver can sit in a `select!` beside
    /// [`EventStream::next`].
    pub fn link(&self) -> tokio::sync::watch::Receiver<Link> {
        self.link.subscribe()
    }

    /// The seq of the last event yielded (or the `after_seq` it started from).
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// The next frame. `None` after an error that ends the stream (the error is yielded once
    /// first) — the server refused the subscription, or the connection could not be regained.
    pub async fn next(&mut self) -> Option<Result<ServerFrame>> {
        loop {
            if self.finished {
                return None;
            }
            let Some(socket) = self.socket.as_mut() else {
                if let Err(err) = self.connect().await {
                    self.finished = true;
                    return Some(Err(err));
                }
                continue;
            };
            let message = match timeout(self.options.idle_timeout, socket.next()).await {
                Err(_) if self.pinged => {
                    self.lose("no answer from the server");
                    continue;
                }
                Err(_) => {
                    self.pinged = true;
                    if socket.send(Message::Ping(Vec::new().into())).await.is_err() {
                        self.lose("the connection broke");
                    }
                    continue;
                }
                Ok(None) | Ok(Some(Ok(Message::Close(_)))) => {
                    self.lose("the server closed the connection");
                    continue;
                }
                Ok(Some(Err(err))) => {
                    self.lose(&root_cause(&err));
                    continue;
                }
                Ok(Some(Ok(message))) => message,
            };
            self.pinged = false;
            if self.lost.take().is_some() {
                self.link.send_replace(Link::Up);
            }
            let Message::Text(text) = message else {
                continue; // pings are answered by tungstenite; nothing else is used
            };
            match serde_json::from_str::<ServerFrame>(&text) {
                Ok(ServerFrame::Event(envelope)) => {
                    if envelope.seq <= self.last_seq {
                        continue; // already yielded before a reconnect
                    }
                    if envelope.seq != self.last_seq + 1 {
                        if self.gap_at == Some(self.last_seq) {
                            self.finished = true;
                            return Some(Err(Error::Protocol(format!(
                                "the server skipped events after seq {} twice",
                                self.last_seq
                            ))));
                        }
                        self.gap_at = Some(self.last_seq);
                        self.lose("the server skipped events");
                        continue;
                    }
                    self.last_seq = envelope.seq;
                    return Some(Ok(ServerFrame::Event(envelope)));
                }
                Ok(frame) => return Some(Ok(frame)),
                Err(err) if text.contains(r#""type":"event""#) => {
                    // An event this client cannot read: showing the log without it would be a
                    // lie, and skipping it would leave a gap.
                    self.finished = true;
                    return Some(Err(Error::Protocol(format!(
                        "an event after seq {} is not understood ({err}); upgrade kiln",
                        self.last_seq
                    ))));
                }
                Err(err) => tracing::warn!("ignoring a frame this client does not know: {err}"),
            }
        }
    }

    /// Tells the other participants this user is typing. Best effort: when the stream is between
    /// connections there is nobody to tell, and that is not an error.
    pub async fn send_typing(&mut self) -> Result<()> {
        let Some(socket) = self.socket.as_mut() else {
            return Ok(());
        };
        let text = serde_json::to_string(&ClientFrame::Typing).expect("frames serialize");
        if let Err(err) = socket.send(Message::text(text)).await {
            self.lose(&root_cause(&err));
        }
        Ok(())
    }

    /// Closes the socket politely; dropping the stream also works.
    pub async fn close(mut self) {
        if let Some(socket) = self.socket.as_mut() {
            let _ = socket.close(None).await;
        }
    }

    fn lose(&mut self, reason: &str) {
        tracing::debug!(last_seq = self.last_seq, "subscription lost: {reason}");
        self.socket = None;
        self.pinged = false;
        self.link
            .send_replace(Link::Reconnecting(reason.to_string()));
        // A connection that dies before its first frame does not restart the give-up clock.
        match &mut self.lost {
            Some(lost) => lost.reason = reason.to_string(),
            None => {
                self.lost = Some(Lost {
                    since: Instant::now(),
                    attempts: 0,
                    reason: reason.to_string(),
                })
            }
        }
    }

    /// Gets a connection, backing off between attempts while the connection is lost.
    async fn connect(&mut self) -> Result<()> {
        loop {
            if let Some(lost) = &self.lost {
                let spent = lost.since.elapsed();
                if spent >= self.options.reconnect_for {
                    return Err(Error::GaveUp {
                        url: self.server.clone(),
                        secs: self.options.reconnect_for.as_secs(),
                        reason: lost.reason.clone(),
                    });
                }
                let backoff = FIRST_BACKOFF.saturating_mul(1 << lost.attempts.min(6));
                sleep(
                    backoff
                        .min(MAX_BACKOFF)
                        .min(self.options.reconnect_for - spent),
                )
                .await;
            }
            match self.attempt().await {
                Ok(socket) => {
                    self.socket = Some(socket);
                    self.connected_once = true;
                    return Ok(());
                }
                Err(Attempt::Fatal(err)) => return Err(err),
                Err(Attempt::Retry(reason)) if !self.connected_once => {
                    return Err(Error::Connect {
                        url: self.server.clone(),
                        reason,
                    });
                }
                Err(Attempt::Retry(reason)) => {
                    let lost = self.lost.get_or_insert_with(|| Lost {
                        since: Instant::now(),
                        attempts: 0,
                        reason: String::new(),
                    });
                    lost.attempts += 1;
                    lost.reason = reason;
                }
            }
        }
    }

    async fn attempt(&self) -> std::result::Result<Socket, Attempt> {
        let url = ws_url(&self.url, self.last_seq);
        let mut request = url
            .as_str()
            .into_client_request()
            .map_err(|e| Attempt::Fatal(Error::Protocol(root_cause(&e))))?;
        let headers = request.headers_mut();
        if let Some(token) = &self.token {
            headers.insert(
                header::AUTHORIZATION,
                bearer(token).map_err(Attempt::Fatal)?,
            );
        }
        let agent = header::HeaderValue::from_str(&user_agent()).expect("ascii user agent");
        headers.insert(header::USER_AGENT, agent);
        tracing::debug!(%url, "subscribing");
        let connect =
            tokio_tungstenite::connect_async_with_config(request, Some(websocket_config()), false);
        match timeout(HANDSHAKE_TIMEOUT, connect).await {
            Err(_) => Err(Attempt::Retry("the WebSocket handshake timed out".into())),
            Ok(Ok((socket, _response))) => Ok(socket),
            Ok(Err(tungstenite::Error::Http(response))) => {
                let status = response.status().as_u16();
                let body = response.body().as_deref().unwrap_or_default();
                let err = Error::from_status(&self.server.clone(), status, body);
                // A proxy's 502 while the server restarts is worth waiting out; a refusal is not.
                if status >= 500 {
                    Err(Attempt::Retry(err.to_string()))
                } else {
                    Err(Attempt::Fatal(err))
                }
            }
            Ok(Err(err)) => Err(Attempt::Retry(root_cause(&err))),
        }
    }
}

/// `http(s)://…/ws` → `ws(s)://…/ws?after_seq=N`.
fn ws_url(url: &Url, after_seq: u64) -> Url {
    let mut url = url.clone();
    let scheme = if url.scheme() == "https" { "wss" } else { "ws" };
    url.set_scheme(scheme)
        .expect("http and ws are both special schemes");
    url.query_pairs_mut()
        .append_pair("after_seq", &after_seq.to_string());
    url
}

/// The WebSocket settings of kiln's clients. tungstenite zero-fills its whole read buffer
/// (128 KiB by default) before every read; events come a few hundred bytes at a time, so a
/// small buffer saves most of a follower's CPU (it was a quarter of the fan-out benchmark's).
pub fn websocket_config() -> tungstenite::protocol::WebSocketConfig {
    tungstenite::protocol::WebSocketConfig::default().read_buffer_size(READ_BUFFER)
}

/// Bytes read from the socket at a time.
const READ_BUFFER: usize = 16 * 1024;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ws_urls_follow_the_http_scheme_and_resume_point() {
        let url = Url::parse("https://example.com/kiln/api/sessions/s-1/ws").unwrap();
        assert_eq!(
            ws_url(&url, 42).as_str(),
            "wss://example.com/kiln/api/sessions/s-1/ws?after_seq=42"
        );
        let url = Url::parse("http://127.0.0.1:7800/api/sessions/s-1/ws").unwrap();
        assert_eq!(
            ws_url(&url, 0).as_str(),
            "ws://127.0.0.1:7800/api/sessions/s-1/ws?after_seq=0"
        );
    }
}
