//! Connection-level behaviour: the handshake, bad frames, follow-ups for unknown requests, and
//! independence of concurrent connections.

mod common;

use bytes::{BufMut, BytesMut};
use common::{Guest, argv, error_kind, is_alive, kill_group, shell, with_stdin};
use kiln_protocol::guest::{ErrorKind, FileKind, GuestMessage, HostMessage, PROTOCOL_VERSION};
use std::time::Duration;

#[tokio::test]
async fn hello_reports_the_version_and_the_guest_pid() {
    let guest = Guest::start();
    let mut conn = guest.connect().await;
    let reply = conn
        .request(HostMessage::Hello {
            version: PROTOCOL_VERSION,
        })
        .await;
    assert_eq!(
        reply,
        GuestMessage::Hello {
            version: PROTOCOL_VERSION,
            pid: guest.pid()
        }
    );
}

#[tokio::test]
async fn a_version_mismatch_is_refused_and_the_connection_closed() {
    let guest = Guest::start();
    let mut conn = guest.connect().await;
    conn.send(
        7,
        HostMessage::Hello {
            version: PROTOCOL_VERSION + 1,
        },
    )
    .await;
    let reply = conn.recv().await;
    assert_eq!(reply.id, 7);
    assert_eq!(error_kind(&reply.msg), ErrorKind::VersionMismatch);
    assert!(
        conn.recv_or_eof().await.is_none(),
        "the guest should hang up"
    );

    let mut again = guest.connect().await;
    let reply = again
        .request(HostMessage::Hello {
            version: PROTOCOL_VERSION,
        })
        .await;
    assert!(matches!(reply, GuestMessage::Hello { .. }), "{reply:?}");
}

fn raw_frame(header: &[u8]) -> BytesMut {
    let mut buf = BytesMut::new();
    buf.put_u32(header.len() as u32);
    buf.put_u32(0);
    buf.put_slice(header);
    buf
}

#[tokio::test]
async fn a_malformed_frame_gets_an_error_naming_it_and_the_connection_keeps_serving() {
    let guest = Guest::start();
    let mut conn = guest.connect().await;

    conn.send_raw(&raw_frame(br#"{"id":42,"msg":{"type":"no_such_thing"}}"#))
        .await;
    let reply = conn.recv().await;
    assert_eq!(reply.id, 42);
    assert_eq!(error_kind(&reply.msg), ErrorKind::InvalidRequest);

    // Not even an id to salvage: the reply goes to id 0.
    conn.send_raw(&raw_frame(b"not json")).await;
    let reply = conn.recv().await;
    assert_eq!(reply.id, 0);
    assert_eq!(error_kind(&reply.msg), ErrorKind::InvalidRequest);

    conn.send(
        43,
        HostMessage::Hello {
            version: PROTOCOL_VERSION,
        },
    )
    .await;
    assert!(matches!(
        conn.recv_for(43).await,
        GuestMessage::Hello { .. }
    ));
}

#[tokio::test]
async fn an_oversized_length_closes_only_that_connection() {
    let guest = Guest::start();
    let mut bystander = guest.connect().await;
    bystander
        .request(HostMessage::Hello {
            version: PROTOCOL_VERSION,
        })
        .await;

    let mut conn = guest.connect().await;
    let mut prefix = BytesMut::new();
    prefix.put_u32(u32::MAX);
    prefix.put_u32(0);
    conn.send_raw(&prefix).await;
    let reply = conn.recv().await;
    assert_eq!(reply.id, 0);
    assert_eq!(error_kind(&reply.msg), ErrorKind::InvalidRequest);
    assert!(
        conn.recv_or_eof().await.is_none(),
        "the guest should hang up"
    );

    let reply = bystander
        .request(HostMessage::Stat {
            path: guest.path(""),
        })
        .await;
    assert!(matches!(reply, GuestMessage::Stat { .. }), "{reply:?}");
    let mut fresh = guest.connect().await;
    let reply = fresh
        .request(HostMessage::Hello {
            version: PROTOCOL_VERSION,
        })
        .await;
    assert!(matches!(reply, GuestMessage::Hello { .. }), "{reply:?}");
}

#[tokio::test]
async fn request_id_zero_is_refused() {
    let guest = Guest::start();
    let mut conn = guest.connect().await;
    conn.send(0, HostMessage::ListPorts).await;
    let reply = conn.recv().await;
    assert_eq!(reply.id, 0);
    assert_eq!(error_kind(&reply.msg), ErrorKind::InvalidRequest);
}

#[tokio::test]
async fn follow_ups_for_unknown_requests_are_errors() {
    let guest = Guest::start();
    let mut conn = guest.connect().await;
    for msg in [
        HostMessage::Stdin { eof: true },
        HostMessage::Signal {
            signal: libc::SIGTERM,
        },
        HostMessage::WriteChunk { eof: true },
    ] {
        conn.send(99, msg).await;
        assert_eq!(
            error_kind(&conn.recv_for(99).await),
            ErrorKind::UnknownRequest
        );
    }
}

#[tokio::test]
async fn two_connections_are_served_concurrently() {
    let guest = Guest::start();
    let mut first = guest.connect().await;
    let mut second = guest.connect().await;

    // Both execs wait on their stdin, so both are running at once.
    let waiting = with_stdin(shell("read line; echo \"got $line\""));
    let (first_id, first_pid) = first.start_exec(waiting.clone()).await;
    let (second_id, second_pid) = second.start_exec(waiting).await;
    let reply = second
        .request(HostMessage::Stat {
            path: guest.path(""),
        })
        .await;
    assert!(matches!(reply, GuestMessage::Stat { stat } if stat.kind == FileKind::Dir));

    second
        .send_data(second_id, HostMessage::Stdin { eof: true }, &b"two\n"[..])
        .await;
    let run = second.finish_exec(second_id, second_pid).await;
    assert_eq!(run.stdout(), "got two\n");
    first
        .send_data(first_id, HostMessage::Stdin { eof: true }, &b"one\n"[..])
        .await;
    let run = first.finish_exec(first_id, first_pid).await;
    assert_eq!(run.stdout(), "got one\n");
}

#[tokio::test]
async fn closing_a_connection_leaves_its_processes_running() {
    let guest = Guest::start();
    let mut conn = guest.connect().await;
    let (_, pid) = conn.start_exec(argv(&["sleep", "30"])).await;
    drop(conn);

    // Give the guest time to notice the close and clean up after it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let still_running = is_alive(pid);
    kill_group(pid);
    assert!(still_running, "the exec died with its connection");

    let mut other = guest.connect().await;
    let reply = other
        .request(HostMessage::Hello {
            version: PROTOCOL_VERSION,
        })
        .await;
    assert!(matches!(reply, GuestMessage::Hello { .. }), "{reply:?}");
}

#[tokio::test]
async fn the_inherited_socket_is_served_and_not_leaked_to_processes() {
    let guest = Guest::start_inherited();
    let mut conn = guest.connect().await;
    let reply = conn
        .request(HostMessage::Hello {
            version: PROTOCOL_VERSION,
        })
        .await;
    assert!(matches!(reply, GuestMessage::Hello { .. }), "{reply:?}");
    // A process holding the listener could accept the host's connections in the guest's place.
    let run = conn
        .exec(shell(
            "if [ -e /proc/$$/fd/3 ]; then echo leaked; else echo clean; fi",
        ))
        .await;
    assert_eq!(run.stdout(), "clean\n");
}
