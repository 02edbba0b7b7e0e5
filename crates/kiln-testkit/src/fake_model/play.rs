//! Plays a [`Script`] as an HTTP response: renders it into SSE frames in the called provider's
//! format, paces them (time to first token, delay between chunks) and ends the body the way the
//! script says (cleanly, by cutting the connection, or by going silent).

use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use tokio::sync::watch;

use super::{Script, Turn, anthropic, openai};

/// The two wire formats the fake speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wire {
    Anthropic,
    OpenAi,
}

/// What a checked request contributes to its answer.
#[derive(Debug, Clone)]
pub(crate) struct Reply {
    /// Echoed in the response, as the real APIs do.
    pub(crate) model: String,
    /// OpenAI only: whether `stream_options.include_usage` asked for the usage chunk.
    pub(crate) include_usage: bool,
    /// Makes message ids, request ids and the like unique per response.
    pub(crate) id: u64,
}

/// One SSE event, tagged with its role in the stream so it can be paced and cut.
#[derive(Debug, Clone)]
pub(crate) struct Frame {
    pub(crate) kind: FrameKind,
    pub(crate) bytes: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FrameKind {
    /// `message_start` / the first chunk with the role: sent before `ttft`.
    Opening,
    Text,
    Tool,
    /// Stop reason, usage, end marker.
    Closing,
}

/// How the body ends after its frames.
enum Ending {
    Close,
    /// Fails the body, which makes the server drop the connection mid-response.
    Cut,
    /// Sends nothing more until the client leaves or the fake shuts down.
    Hang(watch::Receiver<bool>),
}

pub(crate) fn respond(
    wire: Wire,
    script: Script,
    reply: &Reply,
    shutdown: watch::Receiver<bool>,
) -> Response {
    let render = |turn: &Turn| match wire {
        Wire::Anthropic => anthropic::render(turn, reply),
        Wire::OpenAi => openai::render(turn, reply),
    };
    let opening = || -> Vec<Frame> {
        render(&Turn::text(""))
            .into_iter()
            .take_while(|f| f.kind == FrameKind::Opening)
            .collect()
    };
    let quiet = Turn::text("");
    match script {
        Script::Turn(turn) => stream(wire, reply, render(&turn), &turn, Ending::Close),
        Script::CutAfter { turn, events } => {
            let mut frames = render(&turn);
            frames.truncate(events);
            stream(wire, reply, frames, &turn, Ending::Cut)
        }
        Script::Hang { turn } => {
            let frames = render(&turn)
                .into_iter()
                .take_while(|f| matches!(f.kind, FrameKind::Opening | FrameKind::Text))
                .collect();
            stream(wire, reply, frames, &turn, Ending::Hang(shutdown))
        }
        Script::Malformed => {
            let mut frames = opening();
            frames.push(Frame {
                kind: FrameKind::Text,
                bytes: match wire {
                    Wire::Anthropic => anthropic::MALFORMED,
                    Wire::OpenAi => openai::MALFORMED,
                }
                .to_string(),
            });
            stream(wire, reply, frames, &quiet, Ending::Close)
        }
        Script::StreamError { kind, message } => {
            let mut frames = opening();
            frames.push(Frame {
                kind: FrameKind::Closing,
                bytes: match wire {
                    Wire::Anthropic => anthropic::stream_error(&kind, &message),
                    Wire::OpenAi => openai::stream_error(&kind, &message),
                },
            });
            stream(wire, reply, frames, &quiet, Ending::Close)
        }
        Script::Status {
            status,
            retry_after,
            message,
        } => {
            let mut response = error_response(wire, status, &message, reply.id);
            if let Some(delay) = retry_after {
                set_retry_after(&mut response, delay);
            }
            response
        }
    }
}

/// An error answer in the provider's format (also used for rejected requests).
pub(crate) fn error_response(wire: Wire, status: u16, message: &str, id: u64) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = match wire {
        Wire::Anthropic => anthropic::error_body(status, message, id),
        Wire::OpenAi => openai::error_body(status, message),
    };
    let mut response = (code, Json(body)).into_response();
    set_request_id(&mut response, wire, id);
    response
}

fn set_retry_after(response: &mut Response, delay: Duration) {
    let headers = response.headers_mut();
    let secs = delay.as_secs() + u64::from(delay.subsec_nanos() > 0);
    headers.insert("retry-after", HeaderValue::from(secs));
    if delay.subsec_nanos() > 0 {
        headers.insert(
            "retry-after-ms",
            HeaderValue::from(delay.as_millis() as u64),
        );
    }
}

fn set_request_id(response: &mut Response, wire: Wire, id: u64) {
    let (name, value) = match wire {
        Wire::Anthropic => ("request-id", format!("req_fake_{id}")),
        Wire::OpenAi => ("x-request-id", format!("req_fake_{id}")),
    };
    if let Ok(value) = HeaderValue::from_str(&value) {
        response
            .headers_mut()
            .insert(HeaderName::from_static(name), value);
    }
}

/// A `text/event-stream` response that sends `frames` paced by the turn's delays.
fn stream(wire: Wire, reply: &Reply, frames: Vec<Frame>, turn: &Turn, ending: Ending) -> Response {
    let mut seen_content = false;
    let paced: Vec<(Duration, String)> = frames
        .into_iter()
        .map(|frame| {
            let delay = match frame.kind {
                FrameKind::Opening | FrameKind::Closing => Duration::ZERO,
                FrameKind::Text | FrameKind::Tool if !seen_content => {
                    seen_content = true;
                    turn.ttft
                }
                FrameKind::Text | FrameKind::Tool => turn.chunk_delay,
            };
            (delay, frame.bytes)
        })
        .collect();
    let state = (paced.into_iter(), Some(ending));
    let body = futures_util::stream::unfold(state, |(mut frames, mut ending)| async move {
        if let Some((delay, bytes)) = frames.next() {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            return Some((Ok(bytes), (frames, ending)));
        }
        match ending.take()? {
            Ending::Close => None,
            Ending::Cut => {
                // Waiting lets the server flush what was sent; failing at once could drop the
                // buffered headers and frames with the connection.
                tokio::time::sleep(Duration::from_millis(20)).await;
                tracing::debug!("FakeModel: cutting the connection as scripted");
                Some((
                    Err(std::io::Error::other("connection cut as scripted")),
                    (frames, None),
                ))
            }
            Ending::Hang(mut shutdown) => {
                let _ = shutdown.wait_for(|stop| *stop).await;
                None
            }
        }
    });
    let mut response = Response::new(Body::from_stream(body));
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream; charset=utf-8"),
    );
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    set_request_id(&mut response, wire, reply.id);
    response
}
