//! The proxy itself: an HTTP/1.1 server (hyper) that forwards absolute-form requests
//! (`GET http://host/path`) and opens `CONNECT host:port` tunnels, each only after the `Gate`
//! said yes to the name and to the address it resolved to.
//!
//! Ownership: `serve` owns a `JoinSet` of connection tasks; a connection task owns its hyper
//! connection, the forwarded requests' upstream connections (driven from the response body, see
//! `body.rs`) and, after an upgrade, its tunnel. Dropping `serve`'s future aborts everything.
//! Bounds: a semaphore caps connections (503 past it), every connect has a timeout, every
//! connection an idle timeout, and a tunnel copies through two fixed-size buffers.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::upgrade::OnUpgrade;
use hyper::{Method, Request, Response, Uri, Version};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::body::{ForwardBody, ProxyBody, RecordGuard, refusal_response};
use crate::error::Refusal;
use crate::gate::{EgressRecord, Gate, Reason};
use crate::io::{Counters, Listener, Metered};
use crate::policy::normalize_host;

/// How long a connection past the cap may take to send its request head before it is closed
/// (it is read only so the 503 reaches the client instead of a reset).
const BUSY_READ: Duration = Duration::from_secs(2);

/// Serves `listener` under `gate` until the returned future is dropped. Never returns: accept
/// errors (out of file descriptors) are logged and retried after a pause.
pub async fn serve<L: Listener>(listener: L, gate: Arc<Gate>) {
    let max = gate.limits.max_connections.max(1);
    let permits = Arc::new(Semaphore::new(max));
    // Connections past the cap get a 503; those answers are bounded too, past that: closed.
    let busy_permits = Arc::new(Semaphore::new(max));
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            Some(joined) = conns.join_next(), if !conns.is_empty() => {
                if let Err(e) = joined
                    && e.is_panic()
                {
                    tracing::error!("kiln egress: a connection task panicked: {e}");
                }
            }
            accepted = listener.accept() => match accepted {
                Ok(io) => {
                    let gate = gate.clone();
                    if let Ok(permit) = permits.clone().try_acquire_owned() {
                        conns.spawn(async move {
                            serve_connection(io, gate).await;
                            drop(permit);
                        });
                    } else {
                        gate.record(busy_record(max));
                        if let Ok(permit) = busy_permits.clone().try_acquire_owned() {
                            conns.spawn(async move {
                                answer_busy(io, max).await;
                                drop(permit);
                            });
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!("kiln egress: accepting a connection failed: {e}; retrying in 100 ms");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
}

fn busy_record(limit: usize) -> EgressRecord {
    EgressRecord {
        host: String::new(),
        port: 0,
        allowed: false,
        reason: Reason::Refused {
            refusal: Refusal::Busy { limit },
        },
        bytes_up: 0,
        bytes_down: 0,
        duration_ms: 0,
    }
}

/// Reads (and discards) up to one request head, then answers 503 and closes.
async fn answer_busy<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    mut io: T,
    limit: usize,
) {
    let mut head = [0u8; 8192];
    let mut seen = 0;
    let _ = tokio::time::timeout(BUSY_READ, async {
        while seen < head.len() {
            match io.read(&mut head[seen..]).await {
                Ok(0) | Err(_) => break,
                Ok(n) => seen += n,
            }
            if head[..seen].windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
        }
    })
    .await;
    let body = format!("{}\n", Refusal::Busy { limit });
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(BUSY_READ, io.write_all(response.as_bytes())).await;
    let _ = io.shutdown().await;
}

/// A CONNECT the proxy answered 200: run once hyper hands over the client's connection.
struct Tunnel {
    on_upgrade: OnUpgrade,
    upstream: Metered<TcpStream>,
    guard: RecordGuard,
}

type TunnelSlot = Arc<Mutex<Option<Tunnel>>>;

async fn serve_connection<
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
>(
    io: T,
    gate: Arc<Gate>,
) {
    let limits = gate.limits;
    let activity = Counters::new();
    let io = Metered::new(io, activity.clone());
    let slot: TunnelSlot = Arc::new(Mutex::new(None));
    let service = {
        let slot = slot.clone();
        service_fn(move |req| handle(gate.clone(), slot.clone(), req))
    };
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.idle_timeout)
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::select! {
        served = conn => if let Err(e) = served {
            tracing::debug!("kiln egress: connection ended: {e}");
        },
        () = activity.idle(limits.idle_timeout) => return,
    }
    let tunnel = slot.lock().unwrap_or_else(|p| p.into_inner()).take();
    if let Some(tunnel) = tunnel {
        tokio::select! {
            () = run_tunnel(tunnel, limits.connect_timeout, limits.buffer_size) => {}
            () = activity.idle(limits.idle_timeout) => {}
        }
    }
}

async fn run_tunnel(tunnel: Tunnel, upgrade_timeout: Duration, buffer: usize) {
    let Tunnel {
        on_upgrade,
        mut upstream,
        guard,
    } = tunnel;
    let upgraded = match tokio::time::timeout(upgrade_timeout, on_upgrade).await {
        Ok(Ok(upgraded)) => upgraded,
        Ok(Err(e)) => {
            return tracing::debug!("kiln egress: CONNECT to {} not upgraded: {e}", guard.host());
        }
        Err(_) => {
            return tracing::debug!(
                "kiln egress: CONNECT to {} not upgraded in time",
                guard.host()
            );
        }
    };
    let mut client = TokioIo::new(upgraded);
    if let Err(e) =
        tokio::io::copy_bidirectional_with_sizes(&mut client, &mut upstream, buffer, buffer).await
    {
        tracing::debug!("kiln egress: tunnel to {} ended: {e}", guard.host());
    }
    drop(guard);
}

async fn handle(
    gate: Arc<Gate>,
    slot: TunnelSlot,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    let started = Instant::now();
    let connect = req.method() == Method::CONNECT;
    let (host, port) = match target(req.uri(), connect) {
        Ok(target) => target,
        Err(refusal) => {
            gate.record(refused(String::new(), 0, refusal.clone(), started));
            return Ok(refusal_response(&refusal));
        }
    };
    let method = (!connect).then(|| req.method().clone());
    let reason = match gate.admit(&host, method.as_ref()) {
        Ok(reason) => reason,
        Err(refusal) => return Ok(refuse(&gate, host, port, refusal, started)),
    };
    let upstream = match gate.connect(&host, port).await {
        Ok(stream) => stream,
        Err(refusal) => return Ok(refuse(&gate, host, port, refusal, started)),
    };
    let counters = Counters::new();
    let upstream = Metered::new(upstream, counters.clone());
    let guard = RecordGuard::new(gate.clone(), host, port, reason, counters, started);
    if connect {
        let mut req = req;
        let on_upgrade = hyper::upgrade::on(&mut req);
        *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(Tunnel {
            on_upgrade,
            upstream,
            guard,
        });
        return Ok(Response::new(crate::body::empty()));
    }
    Ok(forward(req, upstream, guard, gate.limits.idle_timeout).await)
}

fn refuse(
    gate: &Gate,
    host: String,
    port: u16,
    refusal: Refusal,
    started: Instant,
) -> Response<ProxyBody> {
    let response = refusal_response(&refusal);
    gate.record(refused(host, port, refusal, started));
    response
}

fn refused(host: String, port: u16, refusal: Refusal, started: Instant) -> EgressRecord {
    EgressRecord {
        host,
        port,
        allowed: false,
        reason: Reason::Refused { refusal },
        bytes_up: 0,
        bytes_down: 0,
        duration_ms: started.elapsed().as_millis() as u64,
    }
}

/// The host (normalized) and port a request is for: `CONNECT host:port`, or an absolute
/// `http://` URI. Anything else is not a proxy request.
fn target(uri: &Uri, connect: bool) -> Result<(String, u16), Refusal> {
    let bad = |detail: &str| Refusal::BadRequest {
        detail: detail.to_owned(),
    };
    let authority = uri.authority().ok_or_else(|| {
        bad("this is an HTTP proxy: send absolute-form requests (GET http://host/path) or CONNECT host:port")
    })?;
    let host = normalize_host(authority.host());
    if host.is_empty() {
        return Err(bad("the request names no host"));
    }
    if connect {
        let port = authority
            .port_u16()
            .ok_or_else(|| bad("CONNECT needs host:port"))?;
        return Ok((host, port));
    }
    match uri.scheme_str() {
        Some("http") => Ok((host, authority.port_u16().unwrap_or(80))),
        Some("https") => Err(bad(
            "https:// goes through CONNECT (set HTTPS_PROXY), not as a plain request",
        )),
        _ => Err(bad(
            "only http:// URLs can be forwarded; other schemes need CONNECT",
        )),
    }
}

/// Sends `req` to `upstream` in origin form without hop-by-hop headers, and streams the answer
/// back; the upstream connection is driven by the response body until it ends.
async fn forward(
    req: Request<Incoming>,
    upstream: Metered<TcpStream>,
    guard: RecordGuard,
    idle: Duration,
) -> Response<ProxyBody> {
    let (mut parts, body) = req.into_parts();
    // The Host the upstream sees is the one the gate judged: a request for an allowed name
    // carrying `Host: other.example` would otherwise reach `other.example` on a shared front end.
    let host_header = parts.uri.authority().map(|a| match a.port() {
        Some(port) => format!("{}:{port}", a.host()),
        None => a.host().to_owned(),
    });
    parts.uri = parts.uri.path_and_query().map_or_else(
        || Uri::from_static("/"),
        |pq| {
            pq.as_str()
                .parse()
                .unwrap_or_else(|_| Uri::from_static("/"))
        },
    );
    parts.version = Version::HTTP_11;
    strip_hop_by_hop(&mut parts.headers);
    parts.headers.remove(header::HOST);
    if let Some(Ok(host)) = host_header.map(HeaderValue::try_from) {
        parts.headers.insert(header::HOST, host);
    }
    // One request per upstream connection: no pool to bound or to leak between sandboxes.
    parts
        .headers
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    let host = guard.host().to_owned();
    let failed = |detail: String| {
        let refusal = Refusal::Connect {
            host: host.clone(),
            detail,
        };
        guard.fail(refusal.clone());
        refusal_response(&refusal)
    };
    let (mut sender, conn) =
        match hyper::client::conn::http1::handshake(TokioIo::new(upstream)).await {
            Ok(pair) => pair,
            Err(e) => return failed(e.to_string()),
        };
    // The connection must be driven while the request is sent; it may also finish first
    // (`connection: close` with the whole answer read), in which case the answer is ready.
    let mut conn = Some(Box::pin(conn));
    let send = sender.send_request(Request::from_parts(parts, body));
    tokio::pin!(send);
    let answer = tokio::time::timeout(idle, async {
        loop {
            tokio::select! {
                biased;
                answer = &mut send => break answer.map_err(|e| e.to_string()),
                ended = async { conn.as_mut().expect("polled only while present").await }, if conn.is_some() => {
                    conn = None;
                    if let Err(e) = ended {
                        break Err(e.to_string());
                    }
                }
            }
        }
    })
    .await;
    let response = match answer {
        Ok(Ok(response)) => response,
        Ok(Err(detail)) => return failed(detail),
        Err(_) => return failed(format!("no answer within {} s", idle.as_secs())),
    };
    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    Response::from_parts(parts, ForwardBody::new(body, conn, guard, idle).boxed())
}

/// Removes the headers that describe one hop (RFC 9110 §7.6.1), including those the
/// `Connection` header names.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<String> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(|s| s.trim().to_ascii_lowercase()))
        .filter(|s| !s.is_empty())
        .collect();
    for name in named {
        headers.remove(name.as_str());
    }
    for name in [
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    ] {
        headers.remove(name);
    }
}
