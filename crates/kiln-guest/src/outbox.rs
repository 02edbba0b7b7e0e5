//! The outbound half of a connection: one writer task owns the socket's write half, every request
//! task sends its frames through a bounded channel to it.
//!
//! The bound is the guest's backpressure. When the host reads slowly, senders wait, and a process
//! whose output cannot be forwarded blocks on its full pipe instead of the guest buffering without
//! limit. A sender whose connection is gone gets `false` back and decides itself what to do (an
//! exec keeps draining its process's output and drops it, a file read stops).

use bytes::{Bytes, BytesMut};
use kiln_protocol::guest::{ErrorKind, Frame, GuestMessage, RequestId};
use std::path::Path;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::unix::OwnedWriteHalf;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Frames queued per connection. Small on purpose: a queued file chunk can be 256 KiB.
pub(crate) const QUEUE_FRAMES: usize = 8;
/// Frames are batched into one socket write up to about this many bytes.
const BATCH_BYTES: usize = 256 * 1024;
/// How long the final flush on a deliberate close may take before the connection is dropped.
const CLOSE_FLUSH: Duration = Duration::from_secs(1);

/// Sends frames to the connection's writer task. Cheap to clone.
#[derive(Clone, Debug)]
pub(crate) struct Outbox {
    tx: mpsc::Sender<Frame<GuestMessage>>,
}

impl Outbox {
    pub(crate) fn new(tx: mpsc::Sender<Frame<GuestMessage>>) -> Self {
        Outbox { tx }
    }

    /// Queues a frame; `false` when the connection is gone.
    pub(crate) async fn send(&self, frame: Frame<GuestMessage>) -> bool {
        self.tx.send(frame).await.is_ok()
    }

    pub(crate) async fn reply(&self, id: RequestId, msg: GuestMessage) -> bool {
        self.send(Frame::new(id, msg)).await
    }

    pub(crate) async fn reply_data(&self, id: RequestId, msg: GuestMessage, data: Bytes) -> bool {
        self.send(Frame::with_data(id, msg, data)).await
    }

    pub(crate) async fn fail(&self, id: RequestId, failure: Failure) -> bool {
        self.reply(id, failure.into()).await
    }
}

/// Why a request failed, as the host will see it in [`GuestMessage::Error`].
#[derive(Debug)]
pub(crate) struct Failure {
    kind: ErrorKind,
    message: String,
}

impl Failure {
    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Failure {
            kind,
            message: message.into(),
        }
    }

    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Failure::new(ErrorKind::InvalidRequest, message)
    }

    /// An OS error while doing `what` to `path`: the host sees both the OS's text and the path,
    /// e.g. `stat /x: No such file or directory (os error 2)`.
    pub(crate) fn io(what: &str, path: impl AsRef<Path>, err: &std::io::Error) -> Self {
        let message = format!("{what} {}: {err}", path.as_ref().display());
        Failure::new(ErrorKind::from_io(err), message)
    }
}

impl From<Failure> for GuestMessage {
    fn from(failure: Failure) -> Self {
        GuestMessage::Error {
            kind: failure.kind,
            message: failure.message,
        }
    }
}

/// Writes queued frames to the socket until every sender is gone, a write fails, or `close` is
/// cancelled. On `close`, frames already queued (the error that caused it) still go out first.
pub(crate) async fn write_frames(
    mut rx: mpsc::Receiver<Frame<GuestMessage>>,
    mut socket: OwnedWriteHalf,
    close: CancellationToken,
) {
    let mut buf = BytesMut::new();
    loop {
        let first = tokio::select! {
            biased;
            () = close.cancelled() => {
                while let Ok(frame) = rx.try_recv() {
                    encode(&frame, &mut buf);
                }
                // A host that stopped reading must not keep a closed connection alive.
                let _ = tokio::time::timeout(CLOSE_FLUSH, socket.write_all_buf(&mut buf)).await;
                break;
            }
            frame = rx.recv() => match frame {
                Some(frame) => frame,
                None => break,
            },
        };
        encode(&first, &mut buf);
        // Coalesce whatever else is already queued into the same write; small frames (output
        // lines, replies) are common and one syscall each would dominate.
        while buf.len() < BATCH_BYTES {
            match rx.try_recv() {
                Ok(frame) => encode(&frame, &mut buf),
                Err(_) => break,
            }
        }
        if socket.write_all_buf(&mut buf).await.is_err() {
            // The host is gone. Dropping `rx` makes every sender see it.
            return;
        }
    }
    let _ = socket.shutdown().await;
}

/// Appends `frame` to `buf`. A reply that cannot be encoded (a directory listing over the header
/// limit) is replaced by an error for the same request, so the host is never left waiting.
fn encode(frame: &Frame<GuestMessage>, buf: &mut BytesMut) {
    if let Err(err) = frame.encode_into(buf) {
        let fallback = Frame::new(
            frame.id,
            GuestMessage::Error {
                kind: ErrorKind::Io,
                message: format!("reply not sent: {err}"),
            },
        );
        // A short error always fits the limits; if it somehow did not, the host's request
        // timeout is the remaining safety net.
        let _ = fallback.encode_into(buf);
    }
}
