//! [`GitHttpServer`]: git's smart HTTP protocol on 127.0.0.1, served by the real `git
//! http-backend` (as CGI) behind HTTP basic authentication, the way a forge serves private
//! repositories. Tests of fetching with credentials talk to it instead of a real forge.
//!
//! Pushes (`git-receive-pack`) are served too, to a client with the pushing credential (by
//! default the same as the reading one; [`GitHttpServer::start_with_pusher`] tells them apart,
//! as a read-only deploy key and a writing token would be): a reader that may not push gets a
//! 403, no credential at all a 401.

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::io::AsyncWriteExt;
use tokio::sync::watch;

/// A running smart-HTTP git server for the bare repositories in one directory. Dropping it
/// shuts the server down.
#[derive(Debug)]
pub struct GitHttpServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
}

#[derive(Debug)]
struct Shared {
    root: PathBuf,
    /// The whole `Authorization` header value a read must carry.
    expected: String,
    /// The one a push must carry.
    pusher: String,
    /// Pushes served.
    pushes: AtomicU64,
    /// Requests that carried the right credentials and were served.
    authorized: AtomicU64,
    /// Requests refused with 401 (none, or wrong credentials).
    refused: AtomicU64,
}

impl GitHttpServer {
    /// Serves the bare repositories under `root` (`root/NAME.git` at `/NAME.git`) to clients
    /// that authenticate as `user` with `password`.
    pub async fn start(root: &Path, user: &str, password: &str) -> GitHttpServer {
        Self::start_with_pusher(root, (user, password), (user, password)).await
    }

    /// As [`GitHttpServer::start`], reads allowed to `reader` and `pusher`, pushes to `pusher`
    /// only.
    pub async fn start_with_pusher(
        root: &Path,
        reader: (&str, &str),
        pusher: (&str, &str),
    ) -> GitHttpServer {
        use base64::Engine;
        let basic = |(user, password): (&str, &str)| {
            let pair =
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
            format!("Basic {pair}")
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("GitHttpServer: bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("GitHttpServer: local address");
        let shared = Arc::new(Shared {
            root: root.to_path_buf(),
            expected: basic(reader),
            pusher: basic(pusher),
            pushes: AtomicU64::new(0),
            authorized: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        });
        let router = Router::new()
            .fallback(serve)
            .layer(DefaultBodyLimit::max(64 << 20))
            .with_state(shared.clone());
        let (shutdown, mut stop) = watch::channel(false);
        tokio::spawn(async move {
            let signal = async move {
                let _ = stop.wait_for(|stop| *stop).await;
            };
            if let Err(error) = axum::serve(listener, router)
                .with_graceful_shutdown(signal)
                .await
            {
                tracing::warn!(%error, "GitHttpServer failed");
            }
        });
        GitHttpServer {
            addr,
            shared,
            shutdown,
        }
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT/NAME.git`, without credentials.
    pub fn url(&self, repo: &str) -> String {
        format!("http://{}/{repo}.git", self.addr)
    }

    /// How many requests carried the right credentials.
    pub fn authorized_requests(&self) -> u64 {
        self.shared.authorized.load(Ordering::SeqCst)
    }

    /// How many pushes (receive-pack requests, the ref advertisement included) were served.
    pub fn pushes(&self) -> u64 {
        self.shared.pushes.load(Ordering::SeqCst)
    }

    /// How many requests were refused for missing or wrong credentials.
    pub fn refused_requests(&self) -> u64 {
        self.shared.refused.load(Ordering::SeqCst)
    }
}

impl Drop for GitHttpServer {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}

async fn serve(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let push = uri.path().ends_with("/git-receive-pack")
        || uri
            .query()
            .is_some_and(|q| q.contains("service=git-receive-pack"));
    let pusher = authorization == Some(shared.pusher.as_str());
    if push && !pusher && authorization == Some(shared.expected.as_str()) {
        shared.refused.fetch_add(1, Ordering::SeqCst);
        return (StatusCode::FORBIDDEN, "this credential may not push").into_response();
    }
    if !pusher && authorization != Some(shared.expected.as_str()) {
        shared.refused.fetch_add(1, Ordering::SeqCst);
        let challenge = HeaderValue::from_static("Basic realm=\"kiln-test\"");
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, challenge)],
        )
            .into_response();
    }
    shared.authorized.fetch_add(1, Ordering::SeqCst);
    if push {
        shared.pushes.fetch_add(1, Ordering::SeqCst);
    }
    match cgi(&shared.root, &method, &uri, &headers, body).await {
        Ok(response) => response,
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e).into_response(),
    }
}

/// Runs one request through `git http-backend` (RFC 3875 CGI) and turns its output into a
/// response.
pub(crate) async fn cgi(
    root: &Path,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Response, String> {
    let header = |name: header::HeaderName| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let mut child = tokio::process::Command::new("git")
        .arg("http-backend")
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("GIT_PROJECT_ROOT", root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("REQUEST_METHOD", method.as_str())
        .env("PATH_INFO", uri.path())
        .env("QUERY_STRING", uri.query().unwrap_or(""))
        .env("CONTENT_TYPE", header(header::CONTENT_TYPE))
        .env("CONTENT_LENGTH", body.len().to_string())
        .env("HTTP_CONTENT_ENCODING", header(header::CONTENT_ENCODING))
        .env(
            "GIT_PROTOCOL",
            headers
                .get("git-protocol")
                .and_then(|v| v.to_str().ok())
                .unwrap_or(""),
        )
        .env("REMOTE_USER", "kiln-test")
        .env("REMOTE_ADDR", "127.0.0.1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("running git http-backend: {e}"))?;
    let mut stdin = child.stdin.take().expect("piped stdin");
    let writing = async move {
        let written = stdin.write_all(&body).await;
        drop(stdin);
        written
    };
    let (written, output) = tokio::join!(writing, child.wait_with_output());
    written.map_err(|e| format!("writing to git http-backend: {e}"))?;
    let output = output.map_err(|e| format!("git http-backend: {e}"))?;
    let split = find(&output.stdout, b"\r\n\r\n")
        .map(|i| (i, 4))
        .or_else(|| find(&output.stdout, b"\n\n").map(|i| (i, 2)))
        .ok_or_else(|| {
            format!(
                "git http-backend wrote no headers: {}",
                String::from_utf8_lossy(&output.stderr)
            )
        })?;
    let (head, rest) = output.stdout.split_at(split.0);
    let mut response = Response::new(Body::from(rest[split.1..].to_vec()));
    for line in String::from_utf8_lossy(head).lines() {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("status") {
            let code = value.split(' ').next().unwrap_or("500");
            *response.status_mut() = code
                .parse::<u16>()
                .ok()
                .and_then(|c| StatusCode::from_u16(c).ok())
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        } else if let (Ok(name), Ok(value)) = (
            header::HeaderName::from_bytes(name.trim().as_bytes()),
            HeaderValue::from_str(value),
        ) {
            response.headers_mut().append(name, value);
        }
    }
    Ok(response)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
