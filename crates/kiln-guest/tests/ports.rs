//! Listening-port discovery against real sockets. The guest under test shares this process's
//! network namespace, so sockets the test opens must show up, and only the listening ones.

mod common;

use common::Guest;
use kiln_protocol::guest::{GuestMessage, HostMessage, ListeningPort};
use std::net::{TcpListener, TcpStream};

#[tokio::test]
async fn listening_sockets_are_reported_and_connections_are_not() {
    let v4 = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
    let v4_port = v4.local_addr().expect("addr").port();
    // IPv6 may be disabled where the tests run; the IPv4 checks still hold then.
    let v6 = TcpListener::bind("[::1]:0").ok();
    let client = TcpStream::connect(("127.0.0.1", v4_port)).expect("connect");
    let client_port = client.local_addr().expect("addr").port();

    let guest = Guest::start();
    let mut conn = guest.connect().await;
    let ports = match conn.request(HostMessage::ListPorts).await {
        GuestMessage::Ports { ports } => ports,
        other => panic!("expected Ports, got {other:?}"),
    };

    assert!(
        ports.contains(&ListeningPort {
            port: v4_port,
            address: "127.0.0.1".into()
        }),
        "{ports:?}"
    );
    if let Some(v6) = v6 {
        let port = v6.local_addr().expect("addr").port();
        assert!(
            ports.contains(&ListeningPort {
                port,
                address: "::1".into()
            }),
            "{ports:?}"
        );
    }
    assert!(
        !ports.iter().any(|p| p.port == client_port),
        "a connection is not a listener: {ports:?}"
    );
    assert!(
        ports
            .windows(2)
            .all(|w| (w[0].port, &w[0].address) < (w[1].port, &w[1].address)),
        "{ports:?}"
    );
}
