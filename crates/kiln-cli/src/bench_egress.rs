//! `kiln bench sandbox`'s egress numbers: what kiln's egress proxy costs a connection and a
//! download, against the same loopback server reached directly in the same run, and what a
//! proxied sandbox costs to create. The proxy reaches the benchmark's server through its test
//! resolver (the only way it reaches loopback at all); nothing leaves the machine.

use crate::bench::Stats;
use kiln_egress::{AddressRules, EgressPolicy, Gate, Phase, TestResolve};
use kiln_sandbox::{LocalProvider, NetworkPolicy, Provider, SandboxSpec};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The download compared through the proxy and directly.
const BIG: u64 = 100 << 20;
const NAME: &str = "bench.test";

#[derive(Debug)]
pub(crate) struct EgressReport {
    pub(crate) connect_overhead_p50_ms: f64,
    pub(crate) throughput_ratio: f64,
    pub(crate) create_ready_p50_ms: f64,
}

/// An HTTP server on loopback: `/big` answers [`BIG`] bytes, anything else two.
async fn upstream() -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let size = if head.windows(4).any(|w| w == b"/big") {
                    BIG
                } else {
                    2
                };
                let reply = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {size}\r\nconnection: close\r\n\r\n"
                );
                if stream.write_all(reply.as_bytes()).await.is_err() {
                    return;
                }
                let chunk = vec![0u8; 64 << 10];
                let mut left = size;
                while left > 0 {
                    let n = left.min(chunk.len() as u64) as usize;
                    if stream.write_all(&chunk[..n]).await.is_err() {
                        return;
                    }
                    left -= n as u64;
                }
            });
        }
    });
    Ok(addr)
}

/// Sends `request` to `to` and reads the whole answer (its head, then `content-length` bytes:
/// the proxy keeps the client's connection open for the next request); returns how long that
/// took. With `tunnel`, first asks the proxy at `to` for a CONNECT tunnel to it, as every HTTPS
/// download does.
async fn fetch(to: SocketAddr, request: &str, tunnel: Option<&str>) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let mut stream = TcpStream::connect(to).await?;
    if let Some(target) = tunnel {
        let connect = format!("CONNECT {target} HTTP/1.1\r\nhost: {target}\r\n\r\n");
        stream.write_all(connect.as_bytes()).await?;
        let mut answer = Vec::new();
        let mut byte = [0u8; 1];
        while !answer.ends_with(b"\r\n\r\n") {
            anyhow::ensure!(
                stream.read(&mut byte).await? == 1,
                "the proxy closed the tunnel"
            );
            answer.push(byte[0]);
        }
        anyhow::ensure!(
            answer.starts_with(b"HTTP/1.1 200"),
            "the proxy refused the tunnel: {}",
            String::from_utf8_lossy(&answer)
        );
    }
    stream.write_all(request.as_bytes()).await?;
    let mut buf = vec![0u8; 256 << 10];
    let mut head = Vec::new();
    let (mut body, length) = loop {
        let n = stream.read(&mut buf).await?;
        anyhow::ensure!(n > 0, "{to} closed before answering");
        head.extend_from_slice(&buf[..n]);
        if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            let text = String::from_utf8_lossy(&head[..end]).to_ascii_lowercase();
            let length: u64 = text
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .ok_or_else(|| anyhow::anyhow!("{to} answered without a length: {text}"))?;
            break ((head.len() - end - 4) as u64, length);
        }
    };
    while body < length {
        let n = stream.read(&mut buf).await?;
        anyhow::ensure!(n > 0, "{to} closed after {body} of {length} bytes");
        body += n as u64;
    }
    Ok(start.elapsed())
}

pub(crate) async fn measure(
    provider: &LocalProvider,
    data_dir: &Path,
    runs: usize,
) -> anyhow::Result<EgressReport> {
    let server = upstream().await?;
    let test = TestResolve {
        names: [(NAME.to_string(), server)].into(),
        allow_addresses: vec![server],
    };
    let gate = |test: TestResolve| {
        let rules = Arc::new(AddressRules::new(Vec::new()));
        Arc::new(Gate::new(EgressPolicy::Open, Phase::AdHoc, rules).with_test_resolve(test))
    };
    let proxy_listener = TcpListener::bind("127.0.0.1:0").await?;
    let proxy = proxy_listener.local_addr()?;
    let proxy_task = tokio::spawn(kiln_egress::serve(proxy_listener, gate(test.clone())));

    let port = server.port();
    let direct_small = format!("GET /small HTTP/1.1\r\nhost: {server}\r\n\r\n");
    let proxied_small =
        format!("GET http://{NAME}:{port}/small HTTP/1.1\r\nhost: {NAME}:{port}\r\n\r\n");
    let (mut direct, mut proxied) = (Vec::new(), Vec::new());
    for _ in 0..runs.max(10) {
        direct.push(fetch(server, &direct_small, None).await?);
        proxied.push(fetch(proxy, &proxied_small, None).await?);
    }
    let (direct, proxied) = (Stats::of(direct), Stats::of(proxied));
    let connect_overhead_p50_ms = proxied.p50 - direct.p50;
    println!(
        "egress request           p50 {:7.2} ms through the proxy, {:.2} ms direct (+{connect_overhead_p50_ms:.2} ms)",
        proxied.p50, direct.p50
    );

    // Downloads go through CONNECT tunnels, as HTTPS does (the bytes are the same).
    let big = format!("GET /big HTTP/1.1\r\nhost: {server}\r\n\r\n");
    let target = format!("{NAME}:{port}");
    let (mut direct, mut proxied) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        direct.push(fetch(server, &big, None).await?);
        proxied.push(fetch(proxy, &big, Some(&target)).await?);
    }
    let (direct, proxied) = (Stats::of(direct), Stats::of(proxied));
    let throughput_ratio = direct.p50 / proxied.p50;
    let mb_s = |ms: f64| (BIG as f64 / (1 << 20) as f64) / (ms / 1000.0);
    println!(
        "egress 100 MB download   {:7.0} MB/s through the proxy, {:.0} MB/s direct (ratio {throughput_ratio:.2})",
        mb_s(proxied.p50),
        mb_s(direct.p50)
    );
    proxy_task.abort();

    // A proxied sandbox: its socket bound in, the guest's bridge listening.
    let dir = data_dir
        .join("egress")
        .join(format!("bench-{}", std::process::id()));
    let proxy =
        kiln_egress::SocketProxy::start(&dir, kiln_sandbox::EGRESS_SOCKET_NAME, gate(test))?;
    let mut creates = Vec::new();
    for _ in 0..runs.clamp(10, 100) {
        let start = Instant::now();
        let sandbox = provider
            .create(SandboxSpec {
                network: NetworkPolicy::Proxy { dir: dir.clone() },
                ..crate::bench::spec()
            })
            .await?;
        creates.push(start.elapsed());
        provider.destroy(sandbox.id()).await?;
    }
    proxy.close();
    let create = Stats::of(creates);
    println!(
        "create→ready with egress p50 {:7.2} ms  p99 {:7.2} ms",
        create.p50, create.p99
    );
    Ok(EgressReport {
        connect_overhead_p50_ms: crate::bench::round2(connect_overhead_p50_ms),
        throughput_ratio: crate::bench::round2(throughput_ratio),
        create_ready_p50_ms: create.p50,
    })
}
