//! Response bodies and the audit record of a connection that got through.
//!
//! `ForwardBody` streams an upstream response to the client and, in the same poll, drives the
//! upstream hyper connection that produces it — so no task is spawned per request and the
//! upstream connection lives exactly as long as the response. It also enforces the idle timeout
//! between frames. `RecordGuard` emits the `EgressRecord` when the connection's last owner
//! drops it, however it ended (finished, failed, timed out, aborted by shutdown).

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Body, Bytes, Frame, Incoming, SizeHint};
use hyper::header::{self, HeaderValue};
use hyper::{Response, StatusCode};
use tokio::time::Sleep;

use crate::error::Refusal;
use crate::gate::{EgressRecord, Gate, Reason};
use crate::io::Counters;

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Every body the proxy answers with.
pub(crate) type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;

pub(crate) fn empty() -> ProxyBody {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

/// The plain-text answer to a refused request: status from the refusal, body its message.
pub(crate) fn refusal_response(refusal: &Refusal) -> Response<ProxyBody> {
    let body = Full::new(Bytes::from(format!("{refusal}\n")))
        .map_err(|never| match never {})
        .boxed_unsync();
    let mut response = Response::new(body);
    *response.status_mut() =
        StatusCode::from_u16(refusal.status()).unwrap_or(StatusCode::FORBIDDEN);
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// Emits one connection's record on drop.
pub(crate) struct RecordGuard {
    gate: Arc<Gate>,
    host: String,
    port: u16,
    reason: Reason,
    /// Set when the upstream failed after the gate let the request through.
    failure: Mutex<Option<Refusal>>,
    counters: Arc<Counters>,
    started: Instant,
}

impl RecordGuard {
    pub(crate) fn new(
        gate: Arc<Gate>,
        host: String,
        port: u16,
        reason: Reason,
        counters: Arc<Counters>,
        started: Instant,
    ) -> Self {
        Self {
            gate,
            host,
            port,
            reason,
            failure: Mutex::new(None),
            counters,
            started,
        }
    }

    pub(crate) fn host(&self) -> &str {
        &self.host
    }

    pub(crate) fn fail(&self, refusal: Refusal) {
        *self.failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(refusal);
    }
}

impl Drop for RecordGuard {
    fn drop(&mut self) {
        let failure = self
            .failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let allowed = failure.is_none();
        let reason = match failure {
            Some(refusal) => Reason::Refused { refusal },
            None => self.reason.clone(),
        };
        self.gate.record(EgressRecord {
            host: std::mem::take(&mut self.host),
            port: self.port,
            allowed,
            reason,
            bytes_up: self.counters.up(),
            bytes_down: self.counters.down(),
            duration_ms: self.started.elapsed().as_millis() as u64,
        });
    }
}

type UpstreamConn = Pin<Box<dyn Future<Output = hyper::Result<()>> + Send>>;

/// An upstream response body, with the connection that produces it.
pub(crate) struct ForwardBody {
    inner: Incoming,
    /// `None` once the connection finished.
    conn: Option<UpstreamConn>,
    idle: Pin<Box<Sleep>>,
    idle_timeout: Duration,
    _guard: RecordGuard,
}

impl ForwardBody {
    pub(crate) fn new(
        inner: Incoming,
        conn: Option<Pin<Box<impl Future<Output = hyper::Result<()>> + Send + 'static>>>,
        guard: RecordGuard,
        idle_timeout: Duration,
    ) -> Self {
        Self {
            inner,
            conn: conn.map(|c| c as UpstreamConn),
            idle: Box::pin(tokio::time::sleep(idle_timeout)),
            idle_timeout,
            _guard: guard,
        }
    }

    pub(crate) fn boxed(self) -> ProxyBody {
        BodyExt::boxed_unsync(self)
    }
}

impl Body for ForwardBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if let Some(conn) = this.conn.as_mut()
            && let Poll::Ready(ended) = conn.as_mut().poll(cx)
        {
            // An error here also ends `inner` with an error, which is what the client sees.
            if let Err(e) = ended {
                tracing::debug!(
                    "kiln egress: upstream {} connection: {e}",
                    this._guard.host()
                );
            }
            this.conn = None;
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                let deadline = tokio::time::Instant::now() + this.idle_timeout;
                this.idle.as_mut().reset(deadline);
                Poll::Ready(frame.map(|f| f.map_err(BoxError::from)))
            }
            Poll::Pending => match this.idle.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(format!(
                    "kiln egress: {} sent nothing for {} s",
                    this._guard.host(),
                    this.idle_timeout.as_secs()
                )
                .into()))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
