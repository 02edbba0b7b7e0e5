//! The accept loop, with the bounds `axum::serve` has no knobs for: how long a client may take
//! to send a request's head (which also closes idle keep-alive connections), how long its body
//! may pause, and how many connections may be open at once. Without them, sockets that trickle headers or send nothing
//! stay open for ever and take every file descriptor (issue 9).
//!
//! Each connection holds a permit of a [`Semaphore`] (as in mini-redis) inside its socket, so a
//! connection upgraded to a WebSocket keeps counting until the socket is gone. Past the cap a
//! connection is still accepted, answered `503` with the usual JSON error, and closed: clients
//! get a reason instead of a hang, and the backlog does not fill.

use crate::{AppState, router};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::task::TaskTracker;

/// The server's connection limits. [`ServeConfig::default`] suits `kiln up`.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// How long a client has to send a request's head. hyper starts the clock as soon as a
    /// connection waits for a request, so this also closes keep-alive connections that sit
    /// idle this long, and connections that never send a byte.
    pub header_read_timeout: Duration,
    /// How long a request body may pause between two pieces; then the request gets a 408.
    /// (A client that sends a head and then stalls its body would hold a task for ever.)
    pub body_idle_timeout: Duration,
    /// Connections open at once, WebSockets included. Past it, new ones get a 503.
    pub max_connections: usize,
    /// How long a graceful stop waits for requests in flight before it gives up on them;
    /// shorter than `kiln up`'s `shutdown_timeout_secs`, so the engine still has time to stop.
    pub shutdown_grace: Duration,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            header_read_timeout: Duration::from_secs(10),
            body_idle_timeout: Duration::from_secs(60),
            max_connections: 4_096,
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

/// Refusals (503s) written at once; past that, a connection over the cap is closed unanswered.
const REFUSALS_AT_ONCE: usize = 64;
/// How long writing a refusal and waiting for the client to finish sending may take.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(2);

/// Serves until `shutdown` resolves, then lets requests in flight finish (for at most
/// `config.shutdown_grace`); streamed build logs end at once.
pub async fn serve_with(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
    config: ServeConfig,
) -> std::io::Result<()> {
    let closing = state.closing.clone();
    let state_intake = state.intake.clone();
    let state_slack = state.slack.clone();
    let app = tower_http::timeout::RequestBodyTimeout::new(router(state), config.body_idle_timeout);
    let permits = Arc::new(Semaphore::new(config.max_connections));
    let refusals = Arc::new(Semaphore::new(REFUSALS_AT_ONCE));
    let tasks = TaskTracker::new();
    let mut shutdown = pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors, most likely: the permits bound our own, so
                    // wait for others to free some rather than spin.
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            if let Ok(refusal) = refusals.clone().try_acquire_owned() {
                tasks.spawn(async move {
                    refuse(stream).await;
                    drop(refusal);
                });
            }
            continue;
        };
        let io = TokioIo::new(Counted {
            stream,
            _permit: permit,
        });
        let service = TowerToHyperService::new(app.clone());
        let header_read_timeout = config.header_read_timeout;
        let closing = closing.clone();
        tasks.spawn(async move {
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_read_timeout)
                .serve_connection(io, service)
                .with_upgrades();
            let mut connection = pin!(connection);
            let result = tokio::select! {
                result = connection.as_mut() => result,
                () = closing.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(e) = result {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    closing.cancel();
    state_intake.close().await;
    state_slack.close().await;
    tasks.close();
    if tokio::time::timeout(config.shutdown_grace, tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            "requests still running {:?} after the stop; not waiting for them",
            config.shutdown_grace
        );
    }
    Ok(())
}

/// Answers a connection over the cap with a 503 and closes it: after its request head (an HTTP
/// client takes no answer before it has asked), and draining a little of what follows, so
/// closing does not reset the connection before the client has read why.
async fn refuse(mut stream: TcpStream) {
    let body = serde_json::to_string(&kiln_protocol::api::ApiError {
        error: "the server has too many open connections; try again shortly".into(),
    })
    .expect("an error serializes");
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(REFUSAL_TIMEOUT, async {
        let mut head = Vec::new();
        let mut buf = [0u8; 4096];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        stream.write_all(response.as_bytes()).await?;
        stream.shutdown().await?;
        let mut left: usize = 64 * 1024;
        while left > 0 {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            left = left.saturating_sub(n);
        }
        std::io::Result::Ok(())
    })
    .await;
}

/// A connection's socket with its place under the connection cap: the permit is released when
/// the socket is dropped, also when it outlives the HTTP connection as a WebSocket.
struct Counted {
    stream: TcpStream,
    _permit: OwnedSemaphorePermit,
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}
