//! The guest agent under bad input and sudden death: malformed frames get an error reply and the
//! guest keeps serving; a guest that dies fails pending requests at once instead of hanging.

mod common;

use common::{Harness, ok};
use futures_util::{SinkExt, StreamExt};
use kiln_protocol::guest::{ErrorKind, Frame, FrameCodec, GuestMessage, HostMessage};
use kiln_sandbox::{Error, ExecEvent};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio_util::codec::Framed;

#[tokio::test]
async fn malformed_frames_get_an_error_and_the_guest_keeps_serving() {
    let h = Harness::new().await;
    let sandbox = h.sandbox().await;
    let socket = h
        .data_dir()
        .join("sandboxes")
        .join(sandbox.id().as_str())
        .join("guest.sock");

    let mut raw = Framed::new(
        tokio::net::UnixStream::connect(&socket).await.unwrap(),
        FrameCodec,
    );
    let header = br#"{"id":9,"msg":{"type":"exec","command":"not an object"}}"#;
    let stream = raw.get_mut();
    stream
        .write_all(&(header.len() as u32).to_be_bytes())
        .await
        .unwrap();
    stream.write_all(&0u32.to_be_bytes()).await.unwrap();
    stream.write_all(header).await.unwrap();
    let reply = Frame::<GuestMessage>::decode(raw.next().await.unwrap().unwrap()).unwrap();
    assert_eq!(reply.id, 9);
    assert!(
        matches!(
            reply.msg,
            GuestMessage::Error {
                kind: ErrorKind::InvalidRequest,
                ..
            }
        ),
        "{reply:?}"
    );
    // Same connection, a good request.
    raw.send(Frame::new(10, HostMessage::ListPorts))
        .await
        .unwrap();
    let reply = Frame::<GuestMessage>::decode(raw.next().await.unwrap().unwrap()).unwrap();
    assert_eq!(reply.id, 10);
    assert!(matches!(reply.msg, GuestMessage::Ports { .. }));

    // A length no frame may have: error reply, that connection closes, others are unharmed.
    let mut bad = tokio::net::UnixStream::connect(&socket).await.unwrap();
    bad.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
    bad.write_all(&0u32.to_be_bytes()).await.unwrap();
    let mut framed = Framed::new(bad, FrameCodec);
    let reply = Frame::<GuestMessage>::decode(framed.next().await.unwrap().unwrap()).unwrap();
    assert!(matches!(
        reply.msg,
        GuestMessage::Error {
            kind: ErrorKind::InvalidRequest,
            ..
        }
    ));
    assert!(framed.next().await.is_none());
    ok(&sandbox, "echo alive").await;
}

#[tokio::test]
async fn a_dead_guest_fails_pending_requests_promptly() {
    let h = Harness::new().await;
    let sandbox = h.sandbox().await;
    let mut pending = sandbox.exec(common::sh("sleep 100")).await.unwrap();
    assert!(matches!(
        pending.next().await.unwrap(),
        Some(ExecEvent::Started { .. })
    ));
    let guest_pid = sandbox.guest().guest_pid();
    let start = Instant::now();
    // Anything in the sandbox can kill the guest: it runs as the sandbox user.
    let _ = sandbox
        .run(common::sh(&format!("kill -9 {guest_pid}")))
        .await;
    let err = loop {
        match pending.next().await {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("the exec ended normally"),
            Err(err) => break err,
        }
    };
    assert!(matches!(err, Error::GuestGone(_)), "{err}");
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "took {:?}",
        start.elapsed()
    );
    assert!(matches!(
        sandbox.guest().stat("/").await,
        Err(Error::GuestGone(_))
    ));
}
