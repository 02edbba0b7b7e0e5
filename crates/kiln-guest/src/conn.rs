//! One host connection: a reader loop that decodes frames and routes them, plus the writer task
//! from [`crate::outbox`].
//!
//! The reader never does slow work itself. Every request runs in its own task and answers through
//! the outbox, so a long exec or a big file read never delays a `Stat` on the same connection.
//! The reader waits only to queue its own short replies (hello, errors) and to hand a follow-up
//! frame (stdin bytes, a write chunk) to its request's bounded channel. The latter is deliberate
//! backpressure towards a host that sends faster than a process reads its stdin or the disk takes
//! a file. The cost: once a process that does not read its stdin has a full queue, further stdin
//! for it stalls the whole connection's reader (a `Signal` behind it too) until the process reads,
//! exits, or reaches its timeout. The protocol has no per-request flow control to do better.
//!
//! Ending a connection ends its writes and closes the stdin of its execs, but never kills a
//! process: a dev server started over a connection outlives it, and its output is discarded.

use crate::live::{Input, Live, LiveTable};
use crate::outbox::{self, Failure, Outbox};
use crate::{exec, files, ports, write};
use futures_util::StreamExt;
use kiln_protocol::guest::{
    ErrorKind, Frame, FrameCodec, FrameError, GuestMessage, HostMessage, PROTOCOL_VERSION,
    RequestId,
};
use tokio::net::UnixStream;
use tokio::sync::mpsc;
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// What request tasks need from their connection.
#[derive(Clone, Debug)]
pub(crate) struct Ctx {
    pub(crate) out: Outbox,
    pub(crate) live: LiveTable,
    /// Owns every task the guest starts, so none of them is detached.
    pub(crate) tasks: TaskTracker,
}

/// Whether the reader keeps going after a frame.
enum Flow {
    Continue,
    /// The stream cannot be trusted any more (wrong protocol version): flush and hang up.
    Close,
}

/// Serves one connection until the host closes it or it becomes unusable.
pub(crate) async fn serve(stream: UnixStream, tasks: TaskTracker) {
    let (read, write) = stream.into_split();
    let (tx, rx) = mpsc::channel(outbox::QUEUE_FRAMES);
    let close = CancellationToken::new();
    tasks.spawn(outbox::write_frames(rx, write, close.clone()));
    let ctx = Ctx {
        out: Outbox::new(tx),
        live: LiveTable::default(),
        tasks,
    };

    let mut frames = FramedRead::new(read, FrameCodec);
    while let Some(next) = frames.next().await {
        let raw = match next {
            Ok(raw) => raw,
            Err(FrameError::Io(_)) => break,
            Err(err) => {
                // A length over the limit: the rest of the stream cannot be cut into frames
                // again, so answer once (with id 0: no header was read) and hang up.
                let message = format!("{err}; closing the connection");
                ctx.out.fail(0, Failure::invalid(message)).await;
                close.cancel();
                break;
            }
        };
        let frame = match Frame::<HostMessage>::decode(raw) {
            Ok(frame) => frame,
            Err(err) => {
                let id = match &err {
                    FrameError::Malformed { id, .. } => *id,
                    _ => 0,
                };
                ctx.out.fail(id, Failure::invalid(err.to_string())).await;
                continue;
            }
        };
        if let Flow::Close = dispatch(&ctx, frame).await {
            close.cancel();
            break;
        }
    }
    ctx.live.clear();
}

async fn dispatch(ctx: &Ctx, frame: Frame<HostMessage>) -> Flow {
    let Frame { id, msg, data } = frame;
    if id == 0 {
        let failure = Failure::invalid("request id 0 is reserved for replies to unreadable frames");
        ctx.out.fail(0, failure).await;
        return Flow::Continue;
    }
    match msg {
        HostMessage::Hello { version } if version == PROTOCOL_VERSION => {
            let hello = GuestMessage::Hello {
                version: PROTOCOL_VERSION,
                pid: std::process::id(),
            };
            ctx.out.reply(id, hello).await;
        }
        HostMessage::Hello { version } => {
            let message =
                format!("the guest speaks protocol version {PROTOCOL_VERSION}, the host {version}");
            ctx.out
                .fail(id, Failure::new(ErrorKind::VersionMismatch, message))
                .await;
            return Flow::Close;
        }
        HostMessage::Exec(request) => match refuse_reused(ctx, id) {
            Ok(()) => {
                if let Err(failure) = exec::start(ctx, id, request) {
                    ctx.out.fail(id, failure).await;
                }
            }
            Err(failure) => about_live(ctx, failure).await,
        },
        HostMessage::WriteFile { path, mode, eof } => match refuse_reused(ctx, id) {
            Ok(()) => write::start(ctx, id, path, mode, Input { data, eof }),
            Err(failure) => about_live(ctx, failure).await,
        },
        HostMessage::Stdin { eof } => stdin(ctx, id, Input { data, eof }).await,
        HostMessage::WriteChunk { eof } => write_chunk(ctx, id, Input { data, eof }).await,
        HostMessage::Signal { signal } => match deliver_signal(ctx, id, signal) {
            Ok(()) => {}
            Err(SignalError::Unknown(failure)) => {
                ctx.out.fail(id, failure).await;
            }
            Err(SignalError::Live(failure)) => about_live(ctx, failure).await,
        },
        HostMessage::ReadFile { path } => {
            ctx.tasks.spawn(files::read_file(ctx.out.clone(), id, path));
        }
        HostMessage::ListDir { path } => one_shot(ctx, id, move || files::list_dir(&path)),
        HostMessage::Stat { path } => one_shot(ctx, id, move || files::stat(&path)),
        HostMessage::Remove { path, recursive } => {
            one_shot(ctx, id, move || files::remove(&path, recursive));
        }
        HostMessage::Mkdir {
            path,
            parents,
            mode,
        } => {
            one_shot(ctx, id, move || files::mkdir(&path, parents, mode));
        }
        HostMessage::ListPorts => one_shot(ctx, id, || Ok(ports::list())),
    }
    Flow::Continue
}

fn refuse_reused(ctx: &Ctx, id: RequestId) -> Result<(), Failure> {
    if ctx.live.contains(id) {
        return Err(Failure::invalid(format!(
            "request {id} is still running; use a new id"
        )));
    }
    Ok(())
}

/// Runs a request that is one blocking filesystem call and one reply off the runtime thread.
fn one_shot<F>(ctx: &Ctx, id: RequestId, f: F)
where
    F: FnOnce() -> Result<GuestMessage, Failure> + Send + 'static,
{
    let out = ctx.out.clone();
    ctx.tasks.spawn(async move {
        let reply = files::blocking(f).await.unwrap_or_else(GuestMessage::from);
        out.reply(id, reply).await;
    });
}

fn unknown(id: RequestId) -> Failure {
    Failure::new(
        ErrorKind::UnknownRequest,
        format!("no running request has id {id}"),
    )
}

async fn stdin(ctx: &Ctx, id: RequestId, input: Input) {
    let eof = input.eof;
    let target = ctx.live.with(id, |live| match live {
        Live::Exec { stdin, .. } => {
            // Taking the sender on eof makes later stdin for this exec an error.
            let tx = if eof { stdin.take() } else { stdin.clone() };
            tx.ok_or_else(|| Failure::invalid(format!("exec {id} has no open stdin")))
        }
        Live::Write { .. } => Err(Failure::invalid(format!("request {id} is a file write"))),
    });
    // A failed send means the process already exited; its stdin no longer matters.
    forward(ctx, id, target, input).await;
}

async fn write_chunk(ctx: &Ctx, id: RequestId, input: Input) {
    let eof = input.eof;
    let target = ctx.live.with(id, |live| match live {
        Live::Write { chunks } => {
            let tx = if eof { chunks.take() } else { chunks.clone() };
            tx.ok_or_else(|| Failure::invalid(format!("write {id} already ended")))
        }
        Live::Exec { .. } => Err(Failure::invalid(format!("request {id} is an exec"))),
    });
    // A failed send means the write already failed and reported it.
    forward(ctx, id, target, input).await;
}

/// Hands a follow-up frame to its request, or answers why it cannot.
async fn forward(
    ctx: &Ctx,
    id: RequestId,
    target: Option<Result<mpsc::Sender<Input>, Failure>>,
    input: Input,
) {
    match target {
        None => {
            ctx.out.fail(id, unknown(id)).await;
        }
        Some(Err(failure)) => about_live(ctx, failure).await,
        Some(Ok(tx)) => {
            let _ = tx.send(input).await;
        }
    }
}

/// Why a signal could not be delivered: the id names nothing, or the live request refuses it.
enum SignalError {
    Unknown(Failure),
    Live(Failure),
}

fn deliver_signal(ctx: &Ctx, id: RequestId, signal: i32) -> Result<(), SignalError> {
    let pgid = ctx.live.with(id, |live| match live {
        Live::Exec { pgid, .. } => Ok(*pgid),
        Live::Write { .. } => Err(Failure::invalid(format!("request {id} is a file write"))),
    });
    let pgid = pgid
        .ok_or_else(|| SignalError::Unknown(unknown(id)))?
        .map_err(SignalError::Live)?;
    match exec::signal_group(pgid, signal) {
        Ok(()) => Ok(()),
        Err(err) if err.raw_os_error() == Some(libc::EINVAL) => Err(SignalError::Live(
            Failure::invalid(format!("{signal} is not a signal number (request {id})")),
        )),
        // ESRCH: the group is gone and the exit report is on its way; nothing to say.
        Err(_) => Ok(()),
    }
}

/// Reports a frame that a live request cannot take. `Error` on a request's id ends that request
/// for the host, but this one goes on, so the complaint goes out under id 0 (the message names
/// the request).
async fn about_live(ctx: &Ctx, failure: Failure) {
    ctx.out.fail(0, failure).await;
}
