//! Harness for the guest's integration tests: starts the real `kiln-guest` binary on a socket in a
//! temp dir and speaks the real protocol to it, so the tests cover framing, the binary's startup
//! and the OS behaviour (process groups, pipes, renames) exactly as the host will meet them.
//!
//! Every wait is bounded ([`TIMEOUT`]): a guest that hangs fails the test instead of the run.

// Each test file uses its own subset of these helpers.
#![allow(dead_code)]

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use kiln_protocol::guest::{
    CommandLine, ErrorKind, ExecRequest, ExitStatus, Frame, FrameCodec, GuestMessage, HostMessage,
    OutputStream, RequestId,
};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::net::UnixStream;
use tokio_util::codec::Framed;

/// Longest wait for any single reply; far above what a healthy guest needs.
pub(crate) const TIMEOUT: Duration = Duration::from_secs(5);

/// A running guest, killed when dropped.
pub(crate) struct Guest {
    child: Child,
    dir: tempfile::TempDir,
    socket: PathBuf,
}

impl Guest {
    /// Starts the guest with `--listen`, its working directory in a fresh temp dir.
    pub(crate) fn start() -> Guest {
        let dir = tempfile::tempdir().expect("temp dir");
        let socket = dir.path().join("guest.sock");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_kiln-guest"));
        cmd.arg("--listen").arg(&socket);
        Guest::spawn(cmd, dir, socket)
    }

    /// Starts the guest the way the host does: with a bound, listening socket as fd 3.
    pub(crate) fn start_inherited() -> Guest {
        let dir = tempfile::tempdir().expect("temp dir");
        let socket = dir.path().join("guest.sock");
        let listener = UnixListener::bind(&socket).expect("bind the socket");
        let fd = listener.as_raw_fd();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_kiln-guest"));
        // SAFETY: between fork and exec only async-signal-safe calls (dup2, fcntl) run.
        unsafe {
            cmd.pre_exec(move || {
                // dup2 onto itself would keep close-on-exec set, so clear it by hand then.
                let ok = if fd == 3 {
                    libc::fcntl(fd, libc::F_SETFD, 0) == 0
                } else {
                    libc::dup2(fd, 3) == 3
                };
                if ok {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
        // The guest has its own copy of the socket once spawned; `listener` closes ours.
        Guest::spawn(cmd, dir, socket)
    }

    fn spawn(mut cmd: Command, dir: tempfile::TempDir, socket: PathBuf) -> Guest {
        let child = cmd
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .spawn()
            .expect("start kiln-guest");
        Guest { child, dir, socket }
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The guest's working directory.
    pub(crate) fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// An absolute path inside the guest's working directory, as a protocol string.
    pub(crate) fn path(&self, name: &str) -> String {
        self.dir
            .path()
            .join(name)
            .to_str()
            .expect("utf-8 temp path")
            .to_string()
    }

    /// Connects, retrying while the freshly started guest has not bound its socket yet.
    pub(crate) async fn connect(&self) -> Conn {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            match UnixStream::connect(&self.socket).await {
                Ok(stream) => {
                    return Conn {
                        framed: Framed::new(stream, FrameCodec),
                        next_id: 1,
                    };
                }
                Err(err) if Instant::now() > deadline => panic!("guest never listened: {err}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One connection to the guest, with request ids handed out in order.
pub(crate) struct Conn {
    framed: Framed<UnixStream, FrameCodec>,
    next_id: RequestId,
}

/// Everything one exec reported, in order.
#[derive(Debug)]
pub(crate) struct ExecRun {
    pub(crate) pid: u32,
    pub(crate) status: ExitStatus,
    pub(crate) stdout: Vec<u8>,
    pub(crate) stderr: Vec<u8>,
    /// Sizes of the `Output` frames, to check chunking.
    pub(crate) chunk_sizes: Vec<usize>,
}

impl ExecRun {
    pub(crate) fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

impl Conn {
    pub(crate) fn fresh_id(&mut self) -> RequestId {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    pub(crate) async fn send(&mut self, id: RequestId, msg: HostMessage) {
        self.send_data(id, msg, Bytes::new()).await;
    }

    pub(crate) async fn send_data(
        &mut self,
        id: RequestId,
        msg: HostMessage,
        data: impl Into<Bytes>,
    ) {
        self.framed
            .send(Frame::with_data(id, msg, data.into()))
            .await
            .expect("send frame");
    }

    /// Writes bytes straight to the socket, bypassing the codec.
    pub(crate) async fn send_raw(&mut self, bytes: &[u8]) {
        self.framed
            .get_mut()
            .write_all(bytes)
            .await
            .expect("send raw bytes");
    }

    /// The next frame; `None` when the guest closed the connection.
    pub(crate) async fn recv_or_eof(&mut self) -> Option<Frame<GuestMessage>> {
        let next = tokio::time::timeout(TIMEOUT, self.framed.next())
            .await
            .expect("guest replied");
        let raw = next?.expect("a well-formed frame from the guest");
        Some(Frame::decode(raw).expect("a decodable frame from the guest"))
    }

    pub(crate) async fn recv(&mut self) -> Frame<GuestMessage> {
        self.recv_or_eof()
            .await
            .expect("the guest closed the connection")
    }

    /// The next frame, which must belong to request `id`.
    pub(crate) async fn recv_for(&mut self, id: RequestId) -> GuestMessage {
        let frame = self.recv().await;
        assert_eq!(frame.id, id, "frame for another request: {frame:?}");
        frame.msg
    }

    /// Sends `msg` under a fresh id and returns the single reply.
    pub(crate) async fn request(&mut self, msg: HostMessage) -> GuestMessage {
        let id = self.fresh_id();
        self.send(id, msg).await;
        self.recv_for(id).await
    }

    /// Starts an exec and waits for `ExecStarted`; returns the id and the pid.
    pub(crate) async fn start_exec(&mut self, request: ExecRequest) -> (RequestId, u32) {
        let id = self.fresh_id();
        (id, self.start_exec_as(id, request).await)
    }

    /// Starts an exec under a chosen id; returns the pid.
    pub(crate) async fn start_exec_as(&mut self, id: RequestId, request: ExecRequest) -> u32 {
        self.send(id, HostMessage::Exec(request)).await;
        match self.recv_for(id).await {
            GuestMessage::ExecStarted { pid } => pid,
            other => panic!("expected ExecStarted, got {other:?}"),
        }
    }

    /// Collects a started exec's frames up to and including `ExecExited`.
    pub(crate) async fn finish_exec(&mut self, id: RequestId, pid: u32) -> ExecRun {
        let mut run = ExecRun {
            pid,
            status: ExitStatus {
                code: None,
                signal: None,
                timed_out: false,
            },
            stdout: Vec::new(),
            stderr: Vec::new(),
            chunk_sizes: Vec::new(),
        };
        loop {
            let frame = self.recv().await;
            assert_eq!(frame.id, id, "frame for another request: {frame:?}");
            match frame.msg {
                GuestMessage::Output { stream } => {
                    run.chunk_sizes.push(frame.data.len());
                    match stream {
                        OutputStream::Stdout => run.stdout.extend_from_slice(&frame.data),
                        OutputStream::Stderr => run.stderr.extend_from_slice(&frame.data),
                    }
                }
                GuestMessage::ExecExited { status } => {
                    run.status = status;
                    return run;
                }
                other => panic!("unexpected frame during an exec: {other:?}"),
            }
        }
    }

    pub(crate) async fn exec(&mut self, request: ExecRequest) -> ExecRun {
        let (id, pid) = self.start_exec(request).await;
        self.finish_exec(id, pid).await
    }
}

pub(crate) fn shell(script: &str) -> ExecRequest {
    ExecRequest {
        command: CommandLine::Shell {
            script: script.into(),
        },
        cwd: None,
        env: Default::default(),
        stdin: false,
        timeout_ms: None,
    }
}

pub(crate) fn argv(args: &[&str]) -> ExecRequest {
    ExecRequest {
        command: CommandLine::Argv {
            argv: args.iter().map(|a| a.to_string()).collect(),
        },
        ..shell("")
    }
}

pub(crate) fn with_stdin(request: ExecRequest) -> ExecRequest {
    ExecRequest {
        stdin: true,
        ..request
    }
}

/// The kind of an `Error` reply; panics on anything else.
pub(crate) fn error_kind(msg: &GuestMessage) -> ErrorKind {
    match msg {
        GuestMessage::Error { kind, .. } => *kind,
        other => panic!("expected an error, got {other:?}"),
    }
}

pub(crate) fn exited(code: i32) -> ExitStatus {
    ExitStatus {
        code: Some(code),
        signal: None,
        timed_out: false,
    }
}

/// Whether `pid` is a live process (a zombie waiting for its parent counts as dead).
pub(crate) fn is_alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state follows the command name, which is in parentheses and may contain spaces.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next());
    !matches!(state, Some('Z' | 'X') | None)
}

/// Polls `condition` until it holds; panics after [`TIMEOUT`].
pub(crate) async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + TIMEOUT;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Reads a pid a test script wrote to a file, waiting for it to appear.
pub(crate) async fn read_pid(path: &Path) -> u32 {
    let mut pid = None;
    wait_until("the pid file is written", || {
        pid = std::fs::read_to_string(path)
            .ok()
            .and_then(|text| text.trim().parse().ok());
        pid.is_some()
    })
    .await;
    pid.expect("pid")
}

/// Kills a process group the guest started, so tests leave nothing behind.
pub(crate) fn kill_group(pgid: u32) {
    // SAFETY: `kill` has no memory-safety preconditions; the pgid comes from ExecStarted.
    unsafe {
        libc::kill(-(pgid as i32), libc::SIGKILL);
    }
}
