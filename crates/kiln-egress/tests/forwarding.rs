//! What gets through: plain HTTP forwarded by a real client (curl) and CONNECT tunnels, over
//! TCP and over a Unix socket, with the audit records and their byte counts. Every server is on
//! 127.0.0.1 and reached through the test knob; nothing leaves this machine's loopback.

mod support;

use std::time::Duration;

use kiln_egress::{AddressRules, EgressPolicy, Gate, Phase, Reason, TestResolve};
use support::*;
use tokio::io::AsyncWriteExt;

#[tokio::test]
async fn curl_gets_a_page_through_the_proxy_in_origin_form() {
    let upstream = http_upstream().await;
    let mut proxy = proxy(
        "allow:registry.test",
        Setup {
            names: vec![("registry.test", upstream.addr)],
            allow: vec![upstream.addr],
            ..Setup::default()
        },
    )
    .await;

    let (status, body) = curl(proxy.addr, "http://registry.test/simple/pkg/?x=1", &[]).await;
    assert_eq!(
        (status, body.as_str()),
        (200, "upstream says: GET /simple/pkg/?x=1")
    );
    let requests = upstream.requests();
    assert_eq!(requests.len(), 1);
    assert!(
        requests[0].starts_with("GET /simple/pkg/?x=1 HTTP/1.1\r\n"),
        "{}",
        requests[0]
    );
    assert!(
        requests[0]
            .to_ascii_lowercase()
            .contains("host: registry.test"),
        "{}",
        requests[0]
    );

    let record = proxy.record().await;
    assert_eq!(
        (record.host.as_str(), record.port, record.allowed),
        ("registry.test", 80, true)
    );
    assert_eq!(
        record.reason,
        Reason::Listed {
            pattern: "registry.test".into()
        }
    );
    assert_eq!(
        record.bytes_up as usize,
        requests[0].len(),
        "the request as the upstream saw it"
    );
    assert!(
        record.bytes_down as usize > body.len(),
        "head and body: {}",
        record.bytes_down
    );
}

#[tokio::test]
async fn hop_by_hop_headers_do_not_reach_the_upstream() {
    let upstream = http_upstream().await;
    let proxy = proxy(
        "open",
        Setup {
            names: vec![("registry.test", upstream.addr)],
            allow: vec![upstream.addr],
            ..Setup::default()
        },
    )
    .await;
    let answer = raw(
        proxy.addr,
        "POST http://user:pw@registry.test:8080/upload HTTP/1.1\r\nHost: fronted.example\r\n\
         Connection: close, X-Hop\r\nX-Hop: secret\r\nKeep-Alive: timeout=5\r\n\
         Proxy-Authorization: Basic c2VjcmV0\r\nProxy-Connection: keep-alive\r\nX-Kept: yes\r\n\
         Content-Length: 5\r\n\r\nhello",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    assert!(answer.ends_with("upstream says: POST /upload"), "{answer}");
    assert!(
        !answer.to_ascii_lowercase().contains("keep-alive: timeout"),
        "hop-by-hop in the answer too: {answer}"
    );
    let seen = upstream.requests()[0].to_ascii_lowercase();
    for gone in [
        "x-hop",
        "keep-alive: timeout",
        "proxy-authorization",
        "proxy-connection",
    ] {
        assert!(!seen.contains(gone), "{gone} reached the upstream: {seen}");
    }
    assert!(
        seen.contains("\r\nhost: registry.test:8080\r\n"),
        "the judged host, not the client's: {seen}"
    );
    assert!(
        !seen.contains("fronted.example") && !seen.contains("user:pw"),
        "{seen}"
    );
    assert!(
        seen.contains("x-kept: yes") && seen.ends_with("\r\n\r\nhello"),
        "{seen}"
    );
}

#[tokio::test]
async fn connect_tunnels_bytes_both_ways_and_counts_them() {
    let echo = echo_server().await;
    let mut proxy = proxy(
        "allow:*.echo.test",
        Setup {
            names: vec![("git.echo.test", echo.addr)],
            allow: vec![echo.addr],
            ..Setup::default()
        },
    )
    .await;
    let stream = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let (mut tunnel, head) = connect(stream, "git.echo.test:443").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    echo_through(&mut tunnel, b"ping").await;
    let big = vec![7u8; 100_000];
    echo_through(&mut tunnel, &big).await;
    tunnel.shutdown().await.unwrap();
    drop(tunnel);

    let record = proxy.record().await;
    assert_eq!(
        (record.host.as_str(), record.port, record.allowed),
        ("git.echo.test", 443, true)
    );
    assert_eq!(
        record.reason,
        Reason::Listed {
            pattern: "*.echo.test".into()
        }
    );
    assert_eq!((record.bytes_up, record.bytes_down), (100_004, 100_004));
    assert_eq!(echo.connections(), 1);
}

#[tokio::test]
async fn curl_connects_through_a_tunnel_to_a_plain_http_server() {
    // curl's --proxytunnel makes it CONNECT even for http://: the tunnel, not the forwarder,
    // carries the request, as it would carry TLS.
    let upstream = http_upstream().await;
    let mut proxy = proxy(
        "allowlist",
        Setup {
            names: vec![("github.com", upstream.addr)],
            allow: vec![upstream.addr],
            ..Setup::default()
        },
    )
    .await;
    let (status, body) = curl(
        proxy.addr,
        "http://github.com/kiln/kiln.git/info/refs",
        &["--proxytunnel"],
    )
    .await;
    assert_eq!(
        (status, body.as_str()),
        (200, "upstream says: GET /kiln/kiln.git/info/refs")
    );
    let record = proxy.record().await;
    assert_eq!(
        record.reason,
        Reason::Listed {
            pattern: "github.com".into()
        }
    );
    assert!(record.bytes_up > 0 && record.bytes_down > 0, "{record:?}");
}

#[tokio::test]
async fn the_proxy_serves_on_a_unix_socket() {
    let echo = echo_server().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("egress.sock");
    let listener = tokio::net::UnixListener::bind(&path).unwrap();
    let test = TestResolve {
        names: [("echo.test".to_owned(), echo.addr)].into(),
        allow_addresses: vec![echo.addr],
    };
    let gate = Gate::new(
        EgressPolicy::Open,
        Phase::Setup,
        std::sync::Arc::new(AddressRules::new(Vec::new())),
    )
    .with_test_resolve(test);
    let mut server = tokio::task::JoinSet::new();
    server.spawn(kiln_egress::serve(listener, std::sync::Arc::new(gate)));

    let stream = tokio::net::UnixStream::connect(&path).await.unwrap();
    let (mut tunnel, head) = connect(stream, "echo.test:7").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    echo_through(&mut tunnel, b"over a unix socket").await;
}

#[tokio::test]
async fn an_idle_tunnel_is_closed() {
    let echo = echo_server().await;
    let limits = kiln_egress::Limits {
        idle_timeout: Duration::from_millis(300),
        ..Default::default()
    };
    let mut proxy = proxy(
        "open",
        Setup {
            names: vec![("echo.test", echo.addr)],
            allow: vec![echo.addr],
            limits: Some(limits),
            ..Setup::default()
        },
    )
    .await;
    let stream = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let (mut tunnel, head) = connect(stream, "echo.test:7").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    echo_through(&mut tunnel, b"still here").await;
    let mut rest = Vec::new();
    let read = tokio::time::timeout(
        WAIT,
        tokio::io::AsyncReadExt::read_to_end(&mut tunnel, &mut rest),
    )
    .await;
    assert!(
        matches!(read, Ok(Ok(0))),
        "the proxy closed the idle tunnel: {read:?}"
    );
    let record = proxy.record().await;
    assert_eq!((record.bytes_up, record.bytes_down), (10, 10));
}
