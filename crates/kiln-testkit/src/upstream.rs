//! Upstream HTTP servers on loopback for egress tests: what a package registry is to a real
//! build. `http_upstream` answers every request with the same body; `FileServer` serves fixed
//! files by path (a simple index, a registry's metadata and tarballs). Both close the
//! connection after each answer.

use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Starts a server on 127.0.0.1 that answers every request with `200 OK` and `body`.
pub async fn http_upstream(body: &'static str) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binding the upstream");
    let addr = listener.local_addr().expect("the upstream's address");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf).await;
                let reply = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(reply.as_bytes()).await;
            });
        }
    });
    addr
}

/// A loopback server of fixed files, standing in for a package registry (a PyPI simple index,
/// an npm registry): `GET path` answers the file, anything else 404. It remembers every path
/// asked for, so a test can tell what was downloaded from it.
#[derive(Debug, Clone)]
pub struct FileServer {
    pub addr: SocketAddr,
    requests: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

/// One file of a [`FileServer`]: its path, content type and bytes.
#[derive(Debug, Clone)]
pub struct ServedFile {
    pub path: String,
    pub content_type: String,
    pub body: Vec<u8>,
}

impl FileServer {
    /// Starts serving `files` on 127.0.0.1 (a port of its own) until the runtime ends.
    pub async fn start(files: Vec<ServedFile>) -> FileServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding the file server");
        let addr = listener.local_addr().expect("the file server's address");
        let requests = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let files = std::sync::Arc::new(files);
        let log = requests.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let (files, log) = (files.clone(), log.clone());
                tokio::spawn(async move {
                    // The head only: these clients send no body with a GET.
                    let mut head = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 64 << 10 {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let head = String::from_utf8_lossy(&head);
                    let mut parts = head.split_whitespace();
                    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
                    log.lock().expect("requests lock").push(path.to_string());
                    let found = files.iter().find(|f| f.path == path && method == "GET");
                    let (status, content_type, body) = match found {
                        Some(f) => ("200 OK", f.content_type.as_str(), f.body.as_slice()),
                        None => ("404 Not Found", "text/plain", &b"not found\n"[..]),
                    };
                    let reply = format!(
                        "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = stream.write_all(reply.as_bytes()).await;
                    let _ = stream.write_all(body).await;
                });
            }
        });
        FileServer { addr, requests }
    }

    /// Every path asked for so far, in order.
    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().expect("requests lock").clone()
    }
}
