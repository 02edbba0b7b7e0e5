//! Connections and frames have bounds (issue 9, item 2): a client that trickles its request
//! head or sends nothing is cut off, the connection cap answers 503 with the usual JSON error,
//! an oversized WebSocket message closes the socket without the server buffering it, and
//! through all of it the server keeps answering `/api/health`.

mod common;

use common::TestApp;
use futures_util::StreamExt;
use kiln_testkit::FakeModel;
use serde_json::Value;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// Long enough for anything this machine does; the bounds under test are far shorter.
const PATIENCE: Duration = Duration::from_secs(20);

async fn app_with(serve: kiln_server::ServeConfig) -> (FakeModel, TestApp) {
    let model = FakeModel::start().await;
    let app = TestApp::with_serve_config(&model, serve).await;
    (model, app)
}

fn addr(app: &TestApp) -> String {
    app.url.trim_start_matches("http://").to_string()
}

/// Reads until the server closes the connection; what it sent.
async fn read_until_closed(stream: &mut tokio::net::tcp::OwnedReadHalf) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
}

async fn assert_healthy(app: &TestApp) {
    let (status, body) = app.get("", "/api/health").await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_idle_connections_are_closed() {
    let (_model, app) = app_with(kiln_server::ServeConfig {
        header_read_timeout: Duration::from_millis(500),
        body_idle_timeout: Duration::from_millis(500),
        ..Default::default()
    })
    .await;

    // A request head trickled a header line at a time, never finished.
    let (mut read, mut write) = TcpStream::connect(addr(&app)).await.unwrap().into_split();
    write
        .write_all(b"GET /api/health HTTP/1.1\r\n")
        .await
        .unwrap();
    let trickle = tokio::spawn(async move {
        for i in 0..200 {
            if write
                .write_all(format!("x-{i}: y\r\n").as_bytes())
                .await
                .is_err()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let got = tokio::time::timeout(PATIENCE, read_until_closed(&mut read))
        .await
        .expect("a trickled request head is cut off");
    assert!(got.is_empty(), "{}", String::from_utf8_lossy(&got));
    trickle.abort();
    assert_healthy(&app).await;

    // A connection that never sends a byte.
    let (mut read, _write) = TcpStream::connect(addr(&app)).await.unwrap().into_split();
    tokio::time::timeout(PATIENCE, read_until_closed(&mut read))
        .await
        .expect("a silent connection is closed");

    // A keep-alive connection idle after its request.
    let (mut read, mut write) = TcpStream::connect(addr(&app)).await.unwrap().into_split();
    write
        .write_all(b"GET /api/health HTTP/1.1\r\nhost: kiln\r\n\r\n")
        .await
        .unwrap();
    let got = tokio::time::timeout(PATIENCE, read_until_closed(&mut read))
        .await
        .expect("an idle keep-alive connection is closed");
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");

    // A body that stops half-way.
    let (mut read, mut write) = TcpStream::connect(addr(&app)).await.unwrap().into_split();
    let head = format!(
        "POST /api/sessions HTTP/1.1\r\nhost: kiln\r\nauthorization: Bearer {}\r\n\
         content-type: application/json\r\ncontent-length: 100\r\n\r\n{{\"repo\"",
        app.admin_token
    );
    write.write_all(head.as_bytes()).await.unwrap();
    let got = tokio::time::timeout(PATIENCE, read_until_closed(&mut read))
        .await
        .expect("a stalled body is given up on");
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(
        text.contains(r#"{"error":"the request body stopped"#),
        "{text}"
    );
    assert_healthy(&app).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_cap_answers_503_with_json() {
    const CAP: usize = 8;
    let (_model, app) = app_with(kiln_server::ServeConfig {
        max_connections: CAP,
        ..Default::default()
    })
    .await;
    // Fill the cap with connections that send nothing (the header timeout is 10 s).
    let mut held = Vec::new();
    for _ in 0..CAP {
        held.push(TcpStream::connect(addr(&app)).await.unwrap());
    }
    let (mut read, mut write) = TcpStream::connect(addr(&app)).await.unwrap().into_split();
    write
        .write_all(b"GET /api/health HTTP/1.1\r\nhost: kiln\r\n\r\n")
        .await
        .unwrap();
    let got = tokio::time::timeout(PATIENCE, read_until_closed(&mut read))
        .await
        .expect("a refusal, then close");
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 503"), "{text}");
    assert!(
        text.to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{text}"
    );
    let body: Value = serde_json::from_str(text.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("too many"),
        "{body}"
    );
    // The documented answer, through the test client too.
    let (status, body) = app.get("", "/api/health").await;
    assert_eq!(status, 503, "{body}");

    // Room again once the holders go: the server answers at once.
    drop(held);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let (status, _) = app.get("", "/api/health").await;
        if status == 200 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "still {status}");
        tokio::task::yield_now().await;
    }
    app.stop().await;
}

/// The resident set of this process (the server runs in it), in bytes.
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

/// Sends one binary frame announcing `len` bytes, then streams the payload in small pieces
/// (this process never holds it) until the server stops taking it.
async fn send_huge_frame(
    ws: &mut tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>,
    len: u64,
) -> u64 {
    let tokio_tungstenite::MaybeTlsStream::Plain(tcp) = ws.get_mut() else {
        panic!("plain TCP")
    };
    let mut header = vec![0x82, 0x80 | 127];
    header.extend_from_slice(&len.to_be_bytes());
    header.extend_from_slice(&[0, 0, 0, 0]); // the mask: zeros keep the payload as is
    if tcp.write_all(&header).await.is_err() {
        return 0;
    }
    let chunk = vec![b'x'; 64 * 1024];
    let mut sent = 0;
    while sent < len {
        match tokio::time::timeout(PATIENCE, tcp.write_all(&chunk)).await {
            Ok(Ok(())) => sent += chunk.len() as u64,
            _ => break,
        }
    }
    sent
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_websocket_message_closes_the_socket_unbuffered() {
    let (_model, app) = app_with(kiln_server::ServeConfig::default()).await;
    let session = app.new_session(&app.admin_token, "hello").await;
    let before = rss();
    for path in [
        "/api/ws".to_string(),
        format!("/api/sessions/{session}/ws?after_seq=0"),
    ] {
        let url = format!("{}{path}", app.url.replace("http://", "ws://"));
        let mut request = url.into_client_request().unwrap();
        request.headers_mut().insert(
            "authorization",
            format!("Bearer {}", app.admin_token).parse().unwrap(),
        );
        let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
        let sent = send_huge_frame(&mut ws, 60 * 1024 * 1024).await;
        assert!(
            sent < 60 * 1024 * 1024,
            "{path}: the server took the whole 60 MB message"
        );
        // What the server says before it goes: at most a Close frame, then the end.
        let ended = tokio::time::timeout(PATIENCE, async {
            loop {
                match ws.next().await {
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                    Some(Ok(_)) => continue,
                }
            }
        })
        .await;
        assert!(ended.is_ok(), "{path}: the socket stayed open");
        assert_healthy(&app).await;
    }
    let grown = rss().saturating_sub(before);
    assert!(
        grown < 24 * 1024 * 1024,
        "the server grew by {} MiB for two refused messages",
        grown / 1024 / 1024
    );
    app.stop().await;
}
