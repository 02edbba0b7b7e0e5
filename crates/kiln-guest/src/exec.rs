//! Running a process for the host: spawn it in its own process group, stream its output, report
//! exactly one exit.
//!
//! The process group is the unit of control. `Signal` and the timeout hit the whole group, so a
//! shell's children die with it. Anything that leaves the group on purpose (`setsid`) is beyond
//! reach, as it is for a terminal.
//!
//! The subtle part is the end. A shell that starts `server &` exits at once, but the server keeps
//! the stdout/stderr pipes open, maybe forever. So once the direct child has exited the pumps
//! forward what is already in the pipes, wait at most [`EXIT_GRACE`] for more, and then detach:
//! `ExecExited` goes out, and the pipes are handed to a task that reads and drops whatever the
//! background process still writes. Closing them instead would kill it with `SIGPIPE` the next
//! time it logs a line.

use crate::conn::Ctx;
use crate::live::{Input, Live, Ticket};
use crate::outbox::{Failure, Outbox};
use bytes::Bytes;
use kiln_protocol::guest::{
    CommandLine, ErrorKind, ExecRequest, ExitStatus, GuestMessage, OutputStream, RequestId,
};
use std::convert::Infallible;
use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::task::TaskTracker;

/// Largest `Output` frame; also the read buffer of each pump.
const OUTPUT_CHUNK: usize = 64 * 1024;
/// Stdin frames queued per exec before the connection's reader waits for the process.
const STDIN_QUEUE: usize = 4;
/// After the direct child exits, a pump waits this long for more output before detaching.
const EXIT_GRACE: Duration = Duration::from_millis(100);
/// Output that is ready at once is still forwarded after [`EXIT_GRACE`], but not past this: a
/// background process that writes without pause must not hold the exit report back forever.
const EXIT_DRAIN_CAP: Duration = Duration::from_secs(1);

/// Spawns the process and the task that serves it. An error means nothing was started.
pub(crate) fn start(ctx: &Ctx, id: RequestId, request: ExecRequest) -> Result<(), Failure> {
    let (mut cmd, program) = match &request.command {
        CommandLine::Argv { argv } => {
            let Some((program, args)) = argv.split_first() else {
                return Err(Failure::invalid("exec needs a non-empty argv"));
            };
            let mut cmd = Command::new(program);
            cmd.args(args);
            (cmd, program.clone())
        }
        CommandLine::Shell { script } => {
            let mut cmd = Command::new("/bin/sh");
            cmd.arg("-c").arg(script);
            (cmd, "/bin/sh".to_string())
        }
    };
    cmd.envs(&request.env)
        .stdin(if request.stdin {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    if let Some(cwd) = &request.cwd {
        cmd.current_dir(cwd);
    }
    let mut child = cmd.spawn().map_err(|err| {
        let place = request
            .cwd
            .as_deref()
            .map(|cwd| format!(" in {cwd}"))
            .unwrap_or_default();
        Failure::new(
            ErrorKind::from_io(&err),
            format!("start {program}{place}: {err}"),
        )
    })?;
    // `id()` is only `None` once the child has been reaped, which cannot have happened yet.
    let Some(pid) = child.id() else {
        return Err(Failure::new(
            ErrorKind::Io,
            "the process vanished before it was tracked",
        ));
    };
    // With `process_group(0)` the group id is the pid.
    let pgid = i32::try_from(pid).map_err(|_| Failure::new(ErrorKind::Io, "pid out of range"))?;

    let (stdin_tx, stdin) = match child.stdin.take() {
        Some(pipe) => {
            let (tx, rx) = mpsc::channel(STDIN_QUEUE);
            (Some(tx), Some((pipe, rx)))
        }
        None => (None, None),
    };
    let ticket = ctx.live.insert(
        id,
        Live::Exec {
            pgid,
            stdin: stdin_tx,
        },
    );
    // A timeout too large to represent is no timeout.
    let deadline = request
        .timeout_ms
        .and_then(|ms| Instant::now().checked_add(Duration::from_millis(ms)));
    let job = Job {
        id,
        pid,
        pgid,
        child,
        stdin,
        deadline,
        ticket,
    };
    ctx.tasks
        .spawn(run(ctx.out.clone(), ctx.tasks.clone(), job));
    Ok(())
}

/// Sends `signal` to a process group.
pub(crate) fn signal_group(pgid: i32, signal: i32) -> std::io::Result<()> {
    // `kill(0, …)` and `kill(-1, …)` would hit the guest's own group or every process we may
    // signal; a real group id from `spawn` is always above 1.
    if pgid <= 1 {
        return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
    }
    // SAFETY: `kill` has no memory-safety preconditions.
    if unsafe { libc::kill(-pgid, signal) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Everything the exec task owns.
struct Job {
    id: RequestId,
    pid: u32,
    pgid: i32,
    child: Child,
    stdin: Option<(ChildStdin, mpsc::Receiver<Input>)>,
    deadline: Option<Instant>,
    ticket: Ticket,
}

async fn run(out: Outbox, tasks: TaskTracker, job: Job) {
    let Job {
        id,
        pid,
        pgid,
        mut child,
        stdin,
        deadline,
        ticket,
    } = job;
    out.reply(id, GuestMessage::ExecStarted { pid }).await;

    // When the direct child exited; the pumps switch to their end-of-exec rules once it is set.
    let (exited_tx, exited_rx) = watch::channel(None);
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let waiter = async {
        let status = wait(&mut child, pgid, deadline, stdin).await;
        exited_tx.send_replace(Some(Instant::now()));
        status
    };
    let (status, stdout, stderr) = tokio::join!(
        waiter,
        pump(stdout, OutputStream::Stdout, id, &out, exited_rx.clone()),
        pump(stderr, OutputStream::Stderr, id, &out, exited_rx),
    );
    if let Some(pipe) = stdout {
        tasks.spawn(discard(pipe));
    }
    if let Some(pipe) = stderr {
        tasks.spawn(discard(pipe));
    }
    // Unregister before the last frame, so the host may reuse the id as soon as it sees it.
    drop(ticket);
    out.reply(id, GuestMessage::ExecExited { status }).await;
}

/// Waits for the direct child, feeding its stdin meanwhile and enforcing the deadline.
async fn wait(
    child: &mut Child,
    pgid: i32,
    deadline: Option<Instant>,
    stdin: Option<(ChildStdin, mpsc::Receiver<Input>)>,
) -> ExitStatus {
    let expired = async {
        match deadline {
            Some(deadline) => tokio::time::sleep_until(deadline).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        status = child.wait() => exit_status(status, false),
        never = feed_stdin(stdin) => match never {},
        () = expired => {
            // ESRCH only means the group ended on its own at the last moment.
            let _ = signal_group(pgid, libc::SIGKILL);
            exit_status(child.wait().await, true)
        }
    }
}

fn exit_status(status: std::io::Result<std::process::ExitStatus>, timed_out: bool) -> ExitStatus {
    match status {
        Ok(status) => ExitStatus {
            code: status.code(),
            signal: status.signal(),
            timed_out,
        },
        // Waiting only fails if the child was reaped behind tokio's back; report what we know.
        Err(_) => ExitStatus {
            code: None,
            signal: None,
            timed_out,
        },
    }
}

/// Copies stdin frames into the process until `eof`, then closes its stdin. Never returns, so
/// only the child's exit ends the `select!` in [`wait`].
async fn feed_stdin(stdin: Option<(ChildStdin, mpsc::Receiver<Input>)>) -> Infallible {
    if let Some((pipe, mut inputs)) = stdin {
        let mut pipe = Some(pipe);
        while let Some(Input { data, eof }) = inputs.recv().await {
            // A process that closed its stdin makes writes fail; keep taking frames so the
            // connection's reader is not blocked, and drop them.
            let broken = match pipe.as_mut() {
                Some(open) => open.write_all(&data).await.is_err(),
                None => false,
            };
            if broken {
                pipe = None;
            }
            if eof {
                break;
            }
        }
        // Dropping the pipe here is what delivers EOF to the process.
    }
    std::future::pending().await
}

/// Forwards one output stream as `Output` frames. Returns the pipe if it detached from a pipe
/// that is still open after the exit (see the module doc), `None` at end of file.
async fn pump<R: AsyncRead + Unpin>(
    pipe: Option<R>,
    stream: OutputStream,
    id: RequestId,
    out: &Outbox,
    mut exited: watch::Receiver<Option<Instant>>,
) -> Option<R> {
    let mut pipe = pipe?;
    let mut buf = vec![0; OUTPUT_CHUNK];
    // Cleared when the connection is gone: output is then read and dropped.
    let mut forwarding = true;
    loop {
        let exited_at = *exited.borrow_and_update();
        let read = match exited_at {
            None => tokio::select! {
                read = pipe.read(&mut buf) => read,
                // Reading is cancel-safe: nothing is lost by starting over with the end rules.
                _ = exited.changed() => continue,
            },
            Some(at) => {
                if Instant::now() >= at + EXIT_DRAIN_CAP {
                    return Some(pipe);
                }
                // `timeout_at` polls the read first, so ready output is taken even past the
                // deadline; only waiting for new output is cut short.
                match tokio::time::timeout_at(at + EXIT_GRACE, pipe.read(&mut buf)).await {
                    Ok(read) => read,
                    Err(_) => return Some(pipe),
                }
            }
        };
        match read {
            Ok(0) | Err(_) => return None,
            Ok(n) if forwarding => {
                let data = Bytes::copy_from_slice(&buf[..n]);
                forwarding = out
                    .reply_data(id, GuestMessage::Output { stream }, data)
                    .await;
            }
            Ok(_) => {}
        }
    }
}

/// Reads and drops what a detached background process still writes, until it closes the pipe.
async fn discard<R: AsyncRead + Unpin>(mut pipe: R) {
    let _ = tokio::io::copy(&mut pipe, &mut tokio::io::sink()).await;
}
