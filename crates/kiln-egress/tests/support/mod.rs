//! Real servers for the proxy tests, all on 127.0.0.1: an HTTP upstream that records what it
//! was sent, a TCP echo server, the proxy itself on port 0, and clients (curl, raw sockets).
//! Every server counts the connections it accepted, so a test can prove a refusal sent nothing.

#![allow(dead_code, unreachable_pub)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kiln_egress::{
    AddressRules, DeniedAddr, EgressPolicy, EgressRecord, Gate, Limits, Phase, TestResolve,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

pub const WAIT: Duration = Duration::from_secs(10);

/// A server task set that stops when dropped, and the number of connections it accepted.
pub struct Server {
    pub addr: SocketAddr,
    pub accepted: Arc<AtomicUsize>,
    /// Request heads (and bodies) the HTTP upstream received, in order.
    pub requests: Arc<Mutex<Vec<String>>>,
    _tasks: JoinSet<()>,
}

impl Server {
    pub fn connections(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

/// An HTTP/1.1 server answering every request with `upstream says: METHOD PATH`.
pub async fn http_upstream() -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let requests = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = JoinSet::new();
    let (count, log) = (accepted.clone(), requests.clone());
    tasks.spawn(async move {
        let mut conns = JoinSet::new();
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            count.fetch_add(1, Ordering::SeqCst);
            let log = log.clone();
            conns.spawn(async move {
                let Ok(Ok(request)) = tokio::time::timeout(WAIT, read_request(&mut stream)).await else { return };
                let line = request.lines().next().unwrap_or_default().to_owned();
                let mut parts = line.split(' ');
                let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
                let body = format!("upstream says: {method} {path}");
                log.lock().unwrap().push(request);
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\nkeep-alive: timeout=5\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(answer.as_bytes()).await;
                let _ = stream.shutdown().await;
            });
            while conns.try_join_next().is_some() {}
        }
    });
    Server {
        addr,
        accepted,
        requests,
        _tasks: tasks,
    }
}

/// A TCP server that echoes every byte back.
pub async fn echo_server() -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let mut tasks = JoinSet::new();
    let count = accepted.clone();
    tasks.spawn(async move {
        let mut conns = JoinSet::new();
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            count.fetch_add(1, Ordering::SeqCst);
            conns.spawn(async move {
                let (mut r, mut w) = stream.into_split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
            while conns.try_join_next().is_some() {}
        }
    });
    Server {
        addr,
        accepted,
        requests: Arc::default(),
        _tasks: tasks,
    }
}

/// Reads one request head and, with a content-length, its body.
async fn read_request(stream: &mut TcpStream) -> std::io::Result<String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap_or(0))
                })
                .unwrap_or(0usize);
            if buf.len() >= end + 4 + length {
                break;
            }
        }
    }
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// The proxy on 127.0.0.1:0 under one gate, with its audit records on a bounded channel.
pub struct Proxy {
    pub addr: SocketAddr,
    pub audit: mpsc::Receiver<EgressRecord>,
    _task: JoinSet<()>,
}

impl Proxy {
    /// The next audit record, within `WAIT`.
    pub async fn record(&mut self) -> EgressRecord {
        tokio::time::timeout(WAIT, self.audit.recv())
            .await
            .expect("an audit record in time")
            .unwrap()
    }
}

/// Options of a test proxy: the names mapped to test servers and the addresses lifted.
#[derive(Default)]
pub struct Setup {
    pub names: Vec<(&'static str, SocketAddr)>,
    pub allow: Vec<SocketAddr>,
    pub denied_hosts: Vec<&'static str>,
    pub denied_addrs: Vec<DeniedAddr>,
    pub limits: Option<Limits>,
    /// No test knob at all: the production configuration.
    pub no_knob: bool,
}

pub async fn proxy(policy: &str, setup: Setup) -> Proxy {
    let policy: EgressPolicy = policy.parse().unwrap();
    proxy_with(policy, setup).await
}

pub async fn proxy_with(policy: EgressPolicy, setup: Setup) -> Proxy {
    let (tx, rx) = mpsc::channel(256);
    let rules = Arc::new(AddressRules::new(setup.denied_addrs));
    let mut gate = Gate::new(policy, Phase::Agent, rules)
        .with_denied_hosts(
            setup
                .denied_hosts
                .iter()
                .map(|h| h.parse().unwrap())
                .collect(),
        )
        .with_limits(setup.limits.unwrap_or_default())
        .with_audit(move |r| {
            let _ = tx.try_send(r);
        });
    if !setup.no_knob {
        let names: HashMap<String, SocketAddr> = setup
            .names
            .iter()
            .map(|(n, a)| (n.to_string(), *a))
            .collect();
        gate = gate.with_test_resolve(TestResolve {
            names,
            allow_addresses: setup.allow,
        });
    }
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut task = JoinSet::new();
    task.spawn(kiln_egress::serve(listener, Arc::new(gate)));
    Proxy {
        addr,
        audit: rx,
        _task: task,
    }
}

/// `curl` through the proxy; returns (HTTP status, body). The environment is cleared so no
/// proxy setting of the machine takes part.
pub async fn curl(proxy: SocketAddr, url: &str, extra: &[&str]) -> (u16, String) {
    let mut cmd = tokio::process::Command::new("curl");
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .args(["--silent", "--show-error", "--max-time", "10", "--proxy"])
        .arg(format!("http://{proxy}"))
        .args(["--write-out", "\n%{http_code}"])
        .args(extra)
        .arg(url)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let out = tokio::time::timeout(WAIT, cmd.output())
        .await
        .expect("curl in time")
        .expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').expect("curl wrote a status");
    (code.trim().parse().unwrap_or(0), body.to_owned())
}

/// Sends raw bytes on a new connection and reads until the peer closes (within `WAIT`).
pub async fn raw(proxy: SocketAddr, request: &str) -> String {
    let mut stream = TcpStream::connect(proxy).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut out))
        .await
        .expect("an answer in time")
        .unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

/// Like `raw`, for connections the proxy may close at once: a reset reads as an empty answer.
pub async fn raw_or_closed(proxy: SocketAddr, request: &str) -> String {
    let attempt = async {
        let mut stream = TcpStream::connect(proxy).await?;
        stream.write_all(request.as_bytes()).await?;
        let mut out = Vec::new();
        stream.read_to_end(&mut out).await?;
        Ok::<_, std::io::Error>(String::from_utf8_lossy(&out).into_owned())
    };
    tokio::time::timeout(WAIT, attempt)
        .await
        .expect("an answer or a close in time")
        .unwrap_or_default()
}

/// Sends `CONNECT target` and returns the stream and the response head.
pub async fn connect<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    target: &str,
) -> (S, String) {
    let request = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    tokio::time::timeout(WAIT, async {
        while !head.ends_with(b"\r\n\r\n") {
            if stream.read(&mut byte).await.unwrap() == 0 {
                break;
            }
            head.push(byte[0]);
        }
    })
    .await
    .expect("a CONNECT answer in time");
    (stream, String::from_utf8_lossy(&head).into_owned())
}

/// Writes `data` into a tunnel to the echo server and reads the same bytes back.
pub async fn echo_through<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S, data: &[u8]) {
    stream.write_all(data).await.unwrap();
    let mut back = vec![0u8; data.len()];
    tokio::time::timeout(WAIT, stream.read_exact(&mut back))
        .await
        .expect("echo in time")
        .unwrap();
    assert_eq!(back, data);
}
