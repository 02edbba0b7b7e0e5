//! The host's side of the guest protocol: one connection to one guest agent, multiplexing many
//! concurrent requests.
//!
//! A reader task routes each guest frame to the request it names; a writer task owns the socket's
//! write half. Both end with the connection, and when they do every pending request fails at once
//! with [`Error::GuestGone`]: a dead guest never leaves a caller waiting. Frames from the guest
//! are untrusted; the first one that does not decode ends the connection.

use crate::{Error, Result};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use kiln_protocol::guest::{
    DirEntry, ExecRequest, ExitStatus, FileStat, Frame, FrameCodec, GuestMessage, HostMessage,
    ListeningPort, OutputStream, PROTOCOL_VERSION, RequestId,
};
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::UnixStream;
use tokio::sync::mpsc;
use tokio_util::codec::{FramedRead, FramedWrite};
use tokio_util::task::AbortOnDropHandle;

/// Bytes per write frame; well under the protocol's data limit.
const WRITE_CHUNK: usize = 256 * 1024;
/// Frames buffered per request before the reader waits for the consumer.
const PER_REQUEST_BUFFER: usize = 64;
/// How long past an exec's own timeout the host waits for the guest to report the exit.
const EXEC_GRACE: Duration = Duration::from_secs(5);

/// A connection to one guest agent. Cheap to clone; the connection closes with the last clone.
#[derive(Clone, Debug)]
pub struct GuestClient {
    shared: Arc<Shared>,
    _tasks: Arc<Tasks>,
}

#[derive(Debug)]
struct Shared {
    next_id: AtomicU64,
    outbox: mpsc::Sender<Frame<HostMessage>>,
    routes: Mutex<Routes>,
    /// Bound on every non-exec wait for the guest.
    request_timeout: Duration,
    guest_pid: AtomicU64,
}

#[derive(Debug, Default)]
struct Routes {
    pending: HashMap<RequestId, mpsc::Sender<Frame<GuestMessage>>>,
    /// Set once the connection ended; why, for the errors of later calls.
    gone: Option<String>,
}

#[derive(Debug)]
struct Tasks {
    _reader: AbortOnDropHandle<()>,
    _writer: AbortOnDropHandle<()>,
}

impl GuestClient {
    /// Connects to the guest listening at `socket` and checks that it speaks our protocol.
    pub async fn connect(socket: &Path, request_timeout: Duration) -> Result<GuestClient> {
        let stream = tokio::time::timeout(request_timeout, UnixStream::connect(socket))
            .await
            .map_err(|_| Error::Timeout(request_timeout, "the guest socket"))?
            .map_err(Error::io("connecting to the guest agent", socket))?;
        let client = GuestClient::over(stream, request_timeout);
        match client
            .call(HostMessage::Hello {
                version: PROTOCOL_VERSION,
            })
            .await?
        {
            GuestMessage::Hello { version, pid } if version == PROTOCOL_VERSION => {
                client.shared.guest_pid.store(pid.into(), Ordering::Relaxed);
                Ok(client)
            }
            GuestMessage::Hello { version, .. } => Err(Error::Protocol(format!(
                "guest speaks protocol version {version}, the host speaks {PROTOCOL_VERSION}"
            ))),
            other => Err(unexpected(&other)),
        }
    }

    fn over(stream: UnixStream, request_timeout: Duration) -> GuestClient {
        let (read, write) = stream.into_split();
        let (outbox, mut outbox_rx) = mpsc::channel::<Frame<HostMessage>>(256);
        let shared = Arc::new(Shared {
            next_id: AtomicU64::new(1),
            outbox,
            routes: Mutex::new(Routes::default()),
            request_timeout,
            guest_pid: AtomicU64::new(0),
        });
        let writer = tokio::spawn({
            let shared = shared.clone();
            async move {
                let mut sink = FramedWrite::new(write, FrameCodec);
                while let Some(frame) = outbox_rx.recv().await {
                    if let Err(err) = sink.send(frame).await {
                        shared.close(format!("writing to the guest failed: {err}"));
                        return;
                    }
                }
            }
        });
        let reader = tokio::spawn({
            let shared = shared.clone();
            async move {
                let reason = shared
                    .route_incoming(FramedRead::new(read, FrameCodec))
                    .await;
                shared.close(reason);
            }
        });
        let tasks = Tasks {
            _reader: AbortOnDropHandle::new(reader),
            _writer: AbortOnDropHandle::new(writer),
        };
        GuestClient {
            shared,
            _tasks: Arc::new(tasks),
        }
    }

    /// The guest agent's pid inside the sandbox.
    pub fn guest_pid(&self) -> u32 {
        self.shared.guest_pid.load(Ordering::Relaxed) as u32
    }

    /// Why the connection ended, if it did.
    pub fn gone(&self) -> Option<String> {
        self.shared.routes.lock().expect("routes lock").gone.clone()
    }

    /// Starts a process; its output arrives as the returned stream's events.
    pub async fn exec(&self, request: ExecRequest) -> Result<ExecStream> {
        let deadline = request
            .timeout_ms
            .map(|ms| tokio::time::Instant::now() + Duration::from_millis(ms) + EXEC_GRACE);
        let stdin = request.stdin;
        let (id, rx) = self.start(HostMessage::Exec(request), Bytes::new()).await?;
        Ok(ExecStream {
            client: self.clone(),
            id,
            rx,
            deadline,
            stdin_open: stdin,
            finished: false,
        })
    }

    /// Reads a whole file. For large files prefer [`GuestClient::read_file_with`].
    pub async fn read_file(&self, path: &str) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.read_file_with(path, |chunk| {
            out.extend_from_slice(&chunk);
            Ok(())
        })
        .await?;
        Ok(out)
    }

    /// Streams a file chunk by chunk into `sink`; returns its size.
    pub async fn read_file_with(
        &self,
        path: &str,
        mut sink: impl FnMut(Bytes) -> Result<()>,
    ) -> Result<u64> {
        let (id, mut rx) = self
            .start(HostMessage::ReadFile { path: path.into() }, Bytes::new())
            .await?;
        let _route = RouteGuard {
            shared: &self.shared,
            id,
        };
        loop {
            let frame = self.recv(&mut rx, "a file chunk").await?;
            match frame.msg {
                GuestMessage::FileChunk => sink(frame.data)?,
                GuestMessage::FileEnd { size } => return Ok(size),
                other => return Err(unexpected(&other)),
            }
        }
    }

    /// Writes a file atomically from bytes in memory.
    pub async fn write_file(&self, path: &str, contents: &[u8], mode: Option<u32>) -> Result<()> {
        self.write_file_from(path, contents, mode).await
    }

    /// Writes a file atomically, streaming it from `source`: it appears at `path` whole or not at all.
    pub async fn write_file_from(
        &self,
        path: &str,
        mut source: impl AsyncRead + Unpin,
        mode: Option<u32>,
    ) -> Result<()> {
        let mut buf = vec![0u8; WRITE_CHUNK];
        let mut next_chunk = async |buf: &mut [u8]| {
            let n = read_full(&mut source, buf)
                .await
                .map_err(Error::io("reading the source of a guest write", path))?;
            Ok::<_, Error>((Bytes::copy_from_slice(&buf[..n]), n < buf.len()))
        };
        let (data, mut eof) = next_chunk(&mut buf).await?;
        let start = HostMessage::WriteFile {
            path: path.into(),
            mode,
            eof,
        };
        let (id, mut rx) = self.start(start, data).await?;
        let _route = RouteGuard {
            shared: &self.shared,
            id,
        };
        while !eof {
            let (data, last) = next_chunk(&mut buf).await?;
            eof = last;
            self.send(Frame::with_data(id, HostMessage::WriteChunk { eof }, data))
                .await?;
        }
        match self.recv(&mut rx, "the end of a write").await?.msg {
            GuestMessage::Done => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    pub async fn list_dir(&self, path: &str) -> Result<Vec<DirEntry>> {
        match self
            .call(HostMessage::ListDir { path: path.into() })
            .await?
        {
            GuestMessage::Entries { entries } => Ok(entries),
            other => Err(unexpected(&other)),
        }
    }

    pub async fn stat(&self, path: &str) -> Result<FileStat> {
        match self.call(HostMessage::Stat { path: path.into() }).await? {
            GuestMessage::Stat { stat } => Ok(stat),
            other => Err(unexpected(&other)),
        }
    }

    pub async fn remove(&self, path: &str, recursive: bool) -> Result<()> {
        self.call_done(HostMessage::Remove {
            path: path.into(),
            recursive,
        })
        .await
    }

    pub async fn mkdir(&self, path: &str, parents: bool, mode: Option<u32>) -> Result<()> {
        self.call_done(HostMessage::Mkdir {
            path: path.into(),
            parents,
            mode,
        })
        .await
    }

    pub async fn listening_ports(&self) -> Result<Vec<ListeningPort>> {
        match self.call(HostMessage::ListPorts).await? {
            GuestMessage::Ports { ports } => Ok(ports),
            other => Err(unexpected(&other)),
        }
    }

    async fn call_done(&self, msg: HostMessage) -> Result<()> {
        match self.call(msg).await? {
            GuestMessage::Done => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    /// One request, one reply.
    async fn call(&self, msg: HostMessage) -> Result<GuestMessage> {
        let (id, mut rx) = self.start(msg, Bytes::new()).await?;
        let _route = RouteGuard {
            shared: &self.shared,
            id,
        };
        Ok(self.recv(&mut rx, "a reply").await?.msg)
    }

    async fn start(
        &self,
        msg: HostMessage,
        data: Bytes,
    ) -> Result<(RequestId, mpsc::Receiver<Frame<GuestMessage>>)> {
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(PER_REQUEST_BUFFER);
        {
            let mut routes = self.shared.routes.lock().expect("routes lock");
            if let Some(reason) = &routes.gone {
                return Err(Error::GuestGone(reason.clone()));
            }
            routes.pending.insert(id, tx);
        }
        if let Err(err) = self.send(Frame::with_data(id, msg, data)).await {
            self.shared.unroute(id);
            return Err(err);
        }
        Ok((id, rx))
    }

    async fn send(&self, frame: Frame<HostMessage>) -> Result<()> {
        self.shared
            .outbox
            .send(frame)
            .await
            .map_err(|_| self.gone_error())
    }

    /// The next frame of a request, failing on guest errors, a closed connection or the timeout.
    async fn recv(
        &self,
        rx: &mut mpsc::Receiver<Frame<GuestMessage>>,
        what: &'static str,
    ) -> Result<Frame<GuestMessage>> {
        let timeout = self.shared.request_timeout;
        match tokio::time::timeout(timeout, rx.recv()).await {
            Err(_) => Err(Error::Timeout(timeout, what)),
            Ok(None) => Err(self.gone_error()),
            Ok(Some(frame)) => into_result(frame),
        }
    }

    fn gone_error(&self) -> Error {
        let reason = self.gone().unwrap_or_else(|| "connection closed".into());
        Error::GuestGone(reason)
    }
}

fn into_result(frame: Frame<GuestMessage>) -> Result<Frame<GuestMessage>> {
    match frame.msg {
        GuestMessage::Error { kind, message } => Err(Error::Guest { kind, message }),
        _ => Ok(frame),
    }
}

fn unexpected(msg: &GuestMessage) -> Error {
    Error::Protocol(format!("unexpected reply from the guest: {msg:?}"))
}

/// Fills `buf` as far as the source allows; a short count means end of input.
async fn read_full(
    source: &mut (impl AsyncRead + Unpin),
    buf: &mut [u8],
) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match source.read(&mut buf[filled..]).await? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

impl Shared {
    /// Routes frames to their requests until the connection ends; returns why it ended.
    async fn route_incoming(
        &self,
        mut frames: FramedRead<tokio::net::unix::OwnedReadHalf, FrameCodec>,
    ) -> String {
        while let Some(raw) = frames.next().await {
            let frame = match raw.map(Frame::<GuestMessage>::decode) {
                Ok(Ok(frame)) => frame,
                Ok(Err(err)) | Err(err) => return format!("bad frame from the guest: {err}"),
            };
            let terminal = !matches!(
                frame.msg,
                GuestMessage::ExecStarted { .. }
                    | GuestMessage::Output { .. }
                    | GuestMessage::FileChunk
            );
            let id = frame.id;
            let route = self
                .routes
                .lock()
                .expect("routes lock")
                .pending
                .get(&id)
                .cloned();
            let Some(route) = route else { continue };
            // A consumer that went away is not an error; its request simply ends.
            let _ = route.send(frame).await;
            if terminal {
                self.unroute(id);
            }
        }
        "the guest closed the connection".into()
    }

    fn unroute(&self, id: RequestId) {
        self.routes.lock().expect("routes lock").pending.remove(&id);
    }

    fn close(&self, reason: String) {
        let mut routes = self.routes.lock().expect("routes lock");
        routes.gone.get_or_insert(reason);
        routes.pending.clear();
    }
}

/// Forgets a request's route when its caller is done with it, however it got there.
struct RouteGuard<'a> {
    shared: &'a Shared,
    id: RequestId,
}

impl Drop for RouteGuard<'_> {
    fn drop(&mut self) {
        self.shared.unroute(self.id);
    }
}

/// What a running exec reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecEvent {
    Started { pid: u32 },
    Output { stream: OutputStream, data: Bytes },
    Exited(ExitStatus),
}

/// Everything an exec produced, for callers that do not stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutcome {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// The sandbox's memory limit killed a process while this exec ran.
    pub oom_killed: bool,
}

/// A running exec: its events in order, its stdin, its signals.
#[derive(Debug)]
pub struct ExecStream {
    client: GuestClient,
    id: RequestId,
    rx: mpsc::Receiver<Frame<GuestMessage>>,
    /// The request's own timeout plus grace; `None` waits as long as the process runs.
    deadline: Option<tokio::time::Instant>,
    stdin_open: bool,
    finished: bool,
}

impl ExecStream {
    /// The next event, or `None` after `Exited`.
    pub async fn next(&mut self) -> Result<Option<ExecEvent>> {
        if self.finished {
            return Ok(None);
        }
        let frame = match self.deadline {
            Some(deadline) => tokio::time::timeout_at(deadline, self.rx.recv())
                .await
                .map_err(|_| Error::Timeout(EXEC_GRACE, "the guest to report an exec's exit"))?,
            None => self.rx.recv().await,
        };
        let frame = match frame {
            Some(frame) => into_result(frame),
            None => Err(self.client.gone_error()),
        };
        let frame = frame.inspect_err(|_| self.finished = true)?;
        Ok(Some(match frame.msg {
            GuestMessage::ExecStarted { pid } => ExecEvent::Started { pid },
            GuestMessage::Output { stream } => ExecEvent::Output {
                stream,
                data: frame.data,
            },
            GuestMessage::ExecExited { status } => {
                self.finished = true;
                ExecEvent::Exited(status)
            }
            other => return Err(unexpected(&other)),
        }))
    }

    /// Sends bytes to the process's stdin; `eof` closes it. The exec must have asked for stdin.
    pub async fn write_stdin(&mut self, data: Bytes, eof: bool) -> Result<()> {
        if !self.stdin_open {
            return Err(Error::InvalidSpec(
                "stdin is closed or was not requested".into(),
            ));
        }
        self.stdin_open = !eof;
        self.client
            .send(Frame::with_data(self.id, HostMessage::Stdin { eof }, data))
            .await
    }

    /// Sends a signal to the exec's process group.
    pub async fn signal(&self, signal: i32) -> Result<()> {
        self.client
            .send(Frame::new(self.id, HostMessage::Signal { signal }))
            .await
    }

    /// Kills the exec's process group.
    pub async fn kill(&self) -> Result<()> {
        self.signal(libc::SIGKILL).await
    }

    /// Waits for the exit, collecting output.
    pub async fn collect(mut self) -> Result<ExecOutcome> {
        let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
        while let Some(event) = self.next().await? {
            match event {
                ExecEvent::Started { .. } => {}
                ExecEvent::Output {
                    stream: OutputStream::Stdout,
                    data,
                } => stdout.extend_from_slice(&data),
                ExecEvent::Output {
                    stream: OutputStream::Stderr,
                    data,
                } => stderr.extend_from_slice(&data),
                ExecEvent::Exited(status) => {
                    return Ok(ExecOutcome {
                        status,
                        stdout,
                        stderr,
                        oom_killed: false,
                    });
                }
            }
        }
        Err(Error::Protocol(
            "exec stream ended without an exit status".into(),
        ))
    }
}

impl Drop for ExecStream {
    fn drop(&mut self) {
        self.client.shared.unroute(self.id);
    }
}
