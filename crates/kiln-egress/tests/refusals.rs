//! What does not get through, and what the client is told. Every refused name is mapped by the
//! test knob to a server the test runs, so that a refusal that failed would show up as a
//! connection at that server instead of as traffic leaving the machine.

mod support;

use kiln_egress::{DeniedAddr, EgressPolicy, Limits, Reason, Refusal};
use support::*;
use tokio::io::AsyncWriteExt;

#[tokio::test]
async fn a_host_outside_the_allowlist_gets_403_saying_how_to_allow_it() {
    let upstream = http_upstream().await;
    let mut proxy = proxy(
        "allowlist",
        Setup {
            names: vec![("registry.example.org", upstream.addr)],
            allow: vec![upstream.addr],
            ..Setup::default()
        },
    )
    .await;
    let (status, body) = curl(proxy.addr, "http://registry.example.org/simple/", &[]).await;
    assert_eq!(status, 403);
    assert_eq!(
        body,
        "kiln egress: registry.example.org is not in this repo's allowlist (agent policy: allowlist). \
         Add it to [network] allow in .kiln/environment.toml or ask an admin.\n"
    );
    let record = proxy.record().await;
    assert!(!record.allowed);
    assert!(
        matches!(
            record.reason,
            Reason::Refused {
                refusal: Refusal::NotListed { .. }
            }
        ),
        "{record:?}"
    );

    // The same for a tunnel: the 403 and its reason come back on the CONNECT.
    let answer = raw(
        proxy.addr,
        "CONNECT registry.example.org:443 HTTP/1.1\r\nHost: registry.example.org:443\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 403 Forbidden\r\n"), "{answer}");
    assert!(
        answer.contains("registry.example.org is not in this repo's allowlist"),
        "{answer}"
    );
    assert_eq!(
        upstream.connections(),
        0,
        "a refused name is never connected to"
    );
}

#[tokio::test]
async fn no_network_and_the_server_deny_list_refuse_before_any_connection() {
    let upstream = http_upstream().await;
    let names = vec![("pypi.org", upstream.addr), ("x.evil.test", upstream.addr)];
    let none = proxy(
        "none",
        Setup {
            names: names.clone(),
            allow: vec![upstream.addr],
            ..Setup::default()
        },
    )
    .await;
    let (status, body) = curl(none.addr, "http://pypi.org/simple/", &[]).await;
    assert_eq!(status, 403);
    assert!(
        body.contains(
            "pypi.org is not reachable: this sandbox has no network (agent policy: none)"
        ),
        "{body}"
    );

    let open = proxy(
        "open",
        Setup {
            names,
            allow: vec![upstream.addr],
            denied_hosts: vec!["*.evil.test"],
            ..Setup::default()
        },
    )
    .await;
    let (status, body) = curl(open.addr, "http://X.Evil.Test./", &[]).await;
    assert_eq!(status, 403);
    assert!(
        body.contains("x.evil.test is on this server's deny list (entry *.evil.test)"),
        "{body}"
    );
    assert_eq!(upstream.connections(), 0);
}

#[tokio::test]
async fn names_and_literals_for_loopback_are_refused_under_open_without_the_knob() {
    let upstream = http_upstream().await;
    let port = upstream.addr.port();
    let mut proxy = proxy(
        "open",
        Setup {
            no_knob: true,
            ..Setup::default()
        },
    )
    .await;

    // `localhost` resolves (from /etc/hosts) to loopback: refused after resolution.
    let (status, body) = curl(proxy.addr, &format!("http://localhost:{port}/"), &[]).await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body.contains("localhost resolves to") && body.contains("a loopback address"),
        "{body}"
    );
    assert!(
        body.contains("no policy reaches it (policy open)"),
        "{body}"
    );
    let record = proxy.record().await;
    assert!(
        matches!(
            record.reason,
            Reason::Refused {
                refusal: Refusal::Address { .. }
            }
        ),
        "{record:?}"
    );

    for target in [
        format!("127.0.0.1:{port}"),
        format!("[::ffff:127.0.0.1]:{port}"),
        format!("[::1]:{port}"),
    ] {
        let answer = raw(
            proxy.addr,
            &format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\nConnection: close\r\n\r\n"),
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 403"), "{target}: {answer}");
        assert!(answer.contains("a loopback address"), "{target}: {answer}");
    }
    assert_eq!(upstream.connections(), 0, "the upstream saw no connection");
}

#[tokio::test]
async fn a_mapped_name_is_still_refused_unless_its_address_is_lifted() {
    // The knob's name table alone is DNS rebinding in miniature: the address rules still hold.
    let upstream = http_upstream().await;
    let proxy = proxy(
        "open",
        Setup {
            names: vec![("rebind.test", upstream.addr)],
            ..Setup::default()
        },
    )
    .await;
    let (status, body) = curl(proxy.addr, "http://rebind.test/", &[]).await;
    assert_eq!(status, 403);
    assert!(
        body.contains(&format!("rebind.test resolves to {}", upstream.addr.ip())),
        "{body}"
    );
    assert_eq!(upstream.connections(), 0);
}

#[tokio::test]
async fn the_kiln_api_stays_unreachable_even_when_its_address_is_lifted() {
    let api = http_upstream().await;
    let proxy = proxy(
        "open",
        Setup {
            names: vec![("api.test", api.addr)],
            allow: vec![api.addr],
            denied_addrs: vec![DeniedAddr::Socket(api.addr)],
            ..Setup::default()
        },
    )
    .await;
    let (status, body) = curl(proxy.addr, "http://api.test/api/health", &[]).await;
    assert_eq!(status, 403);
    assert!(
        body.contains("on this server's list of denied addresses"),
        "{body}"
    );
    assert_eq!(api.connections(), 0);
}

#[tokio::test]
async fn a_read_only_allowlist_refuses_post_but_lets_get_through() {
    let upstream = http_upstream().await;
    let policy = EgressPolicy::Allowlist {
        hosts: vec!["registry.test".parse().unwrap()],
        read_only: true,
    };
    let setup = Setup {
        names: vec![("registry.test", upstream.addr)],
        allow: vec![upstream.addr],
        ..Setup::default()
    };
    let proxy = proxy_with(policy, setup).await;
    let (status, body) = curl(
        proxy.addr,
        "http://registry.test/upload",
        &["--data", "x=1"],
    )
    .await;
    assert_eq!(status, 403);
    assert!(
        body.contains("POST to registry.test refused: this allowlist is read-only"),
        "{body}"
    );
    let (status, body) = curl(proxy.addr, "http://registry.test/simple/", &["--head"]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(upstream.requests().len(), 1);
    assert!(upstream.requests()[0].starts_with("HEAD /simple/ "));
}

#[tokio::test]
async fn bad_requests_and_dead_upstreams_get_400_and_502() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut proxy = proxy(
        "open",
        Setup {
            names: vec![("down.test", closed)],
            allow: vec![closed],
            ..Setup::default()
        },
    )
    .await;
    let answer = raw(
        proxy.addr,
        "GET /direct HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("this is an HTTP proxy"), "{answer}");
    let _ = proxy.record().await;

    let (status, body) = curl(proxy.addr, "http://down.test/", &[]).await;
    assert_eq!(status, 502);
    assert!(body.contains("connecting to down.test failed"), "{body}");
    let record = proxy.record().await;
    assert!(
        !record.allowed
            && matches!(
                record.reason,
                Reason::Refused {
                    refusal: Refusal::Connect { .. }
                }
            )
    );
}

#[tokio::test]
async fn past_the_connection_cap_the_proxy_answers_503_and_recovers() {
    let echo = echo_server().await;
    let limits = Limits {
        max_connections: 2,
        ..Limits::default()
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
    let mut tunnels = Vec::new();
    for _ in 0..2 {
        let stream = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
        let (mut tunnel, head) = connect(stream, "echo.test:7").await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        echo_through(&mut tunnel, b"held").await;
        tunnels.push(tunnel);
    }
    let answer = raw(
        proxy.addr,
        "CONNECT echo.test:7 HTTP/1.1\r\nHost: echo.test:7\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(
        answer.contains("too many connections from this sandbox at once (limit 2)"),
        "{answer}"
    );
    let record = proxy.record().await;
    assert!(
        matches!(
            record.reason,
            Reason::Refused {
                refusal: Refusal::Busy { limit: 2 }
            }
        ),
        "{record:?}"
    );

    let mut first = tunnels.remove(0);
    first.shutdown().await.unwrap();
    drop(first);
    let _ = proxy.record().await;
    // The freed slot is usable again (the connection task may take a moment to finish).
    let reopened = tokio::time::timeout(WAIT, async {
        loop {
            let stream = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
            let (tunnel, head) = connect(stream, "echo.test:7").await;
            if head.starts_with("HTTP/1.1 200") {
                return tunnel;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
    let mut tunnel = reopened.expect("a slot frees up");
    echo_through(&mut tunnel, b"again").await;
    assert_eq!(echo.connections(), 3);
}

#[tokio::test]
async fn a_flooded_listener_leaves_another_listeners_egress_alone() {
    let echo = echo_server().await;
    let upstream = http_upstream().await;
    let names = vec![("echo.test", echo.addr), ("registry.test", upstream.addr)];
    let allow = vec![echo.addr, upstream.addr];
    let limits = Limits {
        max_connections: 4,
        ..Limits::default()
    };
    let flooded = proxy(
        "open",
        Setup {
            names: names.clone(),
            allow: allow.clone(),
            limits: Some(limits),
            ..Setup::default()
        },
    )
    .await;
    let calm = proxy(
        "open",
        Setup {
            names,
            allow,
            limits: Some(limits),
            ..Setup::default()
        },
    )
    .await;

    // Fill the first listener with held tunnels, and keep knocking past its cap.
    let mut held = Vec::new();
    for _ in 0..4 {
        let stream = tokio::net::TcpStream::connect(flooded.addr).await.unwrap();
        let (tunnel, head) = connect(stream, "echo.test:7").await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        held.push(tunnel);
    }
    let mut knocks = tokio::task::JoinSet::new();
    for _ in 0..32 {
        let addr = flooded.addr;
        knocks.spawn(async move {
            raw_or_closed(
                addr,
                "CONNECT echo.test:7 HTTP/1.1\r\nHost: echo.test:7\r\n\r\n",
            )
            .await
        });
    }
    let started = std::time::Instant::now();
    let (status, body) = curl(calm.addr, "http://registry.test/simple/", &[]).await;
    assert_eq!(
        (status, body.as_str()),
        (200, "upstream says: GET /simple/")
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    // Past the cap a connection gets a 503; past twice the cap, while those answers are
    // pending, it is closed at once: the flood costs its listener a bounded amount of work.
    let mut busy = 0;
    while let Some(answer) = knocks.join_next().await {
        let answer = answer.unwrap();
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 503"),
            "{answer}"
        );
        busy += usize::from(!answer.is_empty());
    }
    assert!(busy >= 1, "some knocks were told why");
}
