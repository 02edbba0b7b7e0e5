//! Running a process in the sandbox on behalf of a tool: streamed, bounded, cancellable.
//!
//! Cancellation kills the exec's whole process group through the guest and then waits at most
//! [`KILL_WAIT`] for the guest to confirm, so a cancelled call ends within about a second even
//! when the guest is slow; output that arrives meanwhile still reaches the caller.

use super::{ToolContext, ToolError};
use kiln_sandbox::{CommandLine, ExecEvent, ExecRequest, ExecStream, ExitStatus, OutputStream};
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How long a cancelled exec may take to report its exit after the kill.
const KILL_WAIT: Duration = Duration::from_millis(800);
/// Stdout kept by [`capture`]; enough for any listing a tool then caps itself.
const CAPTURE_LIMIT: usize = 8 << 20;
/// Stderr kept by [`capture`].
const STDERR_LIMIT: usize = 64 << 10;

/// How a driven exec ended.
#[derive(Debug)]
pub(crate) enum Ended {
    Exited(ExitStatus),
    /// The call was cancelled and the process group killed.
    Cancelled,
}

/// An exec request for `argv` (or a shell script) in `cwd` with a timeout.
pub(crate) fn request(
    command: CommandLine,
    cwd: &str,
    env: BTreeMap<String, String>,
    timeout: Duration,
) -> ExecRequest {
    ExecRequest {
        command,
        cwd: Some(cwd.to_string()),
        env,
        stdin: false,
        timeout_ms: Some(u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX)),
    }
}

pub(crate) fn argv<S: AsRef<str>>(args: &[S]) -> CommandLine {
    CommandLine::Argv {
        argv: args.iter().map(|a| a.as_ref().to_string()).collect(),
    }
}

/// One step of a running exec.
#[derive(Debug)]
pub(crate) enum Step {
    Output(OutputStream, Vec<u8>),
    Ended(Ended),
}

/// A running exec whose events are read one [`Step`] at a time, honouring cancellation.
///
/// A loop over steps rather than a callback: an async closure borrowing its arguments makes the
/// caller's future not `Send` (a compiler limitation), and the agent loop runs tools in tasks.
#[derive(Debug)]
pub(crate) struct Driven {
    stream: ExecStream,
    /// Set once cancelled and killed: output is still collected until then.
    kill_deadline: Option<Instant>,
}

impl Driven {
    pub(crate) async fn start(
        ctx: &ToolContext<'_>,
        request: ExecRequest,
    ) -> Result<Self, ToolError> {
        Ok(Driven {
            stream: ctx.sandbox.exec(request).await?,
            kill_deadline: None,
        })
    }

    /// The next output chunk, or how the exec ended. Call no more after [`Step::Ended`].
    pub(crate) async fn next(&mut self, cancel: &CancellationToken) -> Result<Step, ToolError> {
        loop {
            if let Some(deadline) = self.kill_deadline {
                // Cancelled: whatever the guest still sends before the deadline is kept.
                return Ok(
                    match tokio::time::timeout_at(deadline, self.stream.next()).await {
                        Ok(Ok(Some(ExecEvent::Output { stream, data }))) => {
                            Step::Output(stream, data.to_vec())
                        }
                        Ok(Ok(Some(ExecEvent::Started { .. }))) => continue,
                        _ => Step::Ended(Ended::Cancelled),
                    },
                );
            }
            let event = tokio::select! {
                event = self.stream.next() => event?,
                () = cancel.cancelled() => {
                    if let Err(err) = self.stream.kill().await {
                        tracing::warn!(%err, "killing a cancelled tool command failed");
                    }
                    self.kill_deadline = Some(Instant::now() + KILL_WAIT);
                    continue;
                }
            };
            return match event {
                None => Err(ToolError::Failed(
                    "the command ended without an exit status".into(),
                )),
                Some(ExecEvent::Started { .. }) => continue,
                Some(ExecEvent::Output { stream, data }) => Ok(Step::Output(stream, data.to_vec())),
                Some(ExecEvent::Exited(status)) => Ok(Step::Ended(Ended::Exited(status))),
            };
        }
    }
}

/// What [`capture`] collected.
#[derive(Debug)]
pub(crate) struct Captured {
    pub(crate) status: ExitStatus,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
    /// Stdout went past [`CAPTURE_LIMIT`]; the rest was dropped.
    pub(crate) stdout_cut: bool,
}

/// Runs a helper command (`find`, `grep`, `git`) to the end, keeping bounded output.
pub(crate) async fn capture(
    ctx: &ToolContext<'_>,
    command: CommandLine,
    cwd: &str,
    timeout: Duration,
) -> Result<Captured, ToolError> {
    let (mut stdout, mut stderr, mut stdout_cut) = (Vec::new(), Vec::new(), false);
    let mut env = ctx.env.clone();
    env.insert("LC_ALL".to_string(), "C.UTF-8".to_string());
    let mut exec = Driven::start(ctx, request(command, cwd, env, timeout)).await?;
    let ended = loop {
        let (stream, data) = match exec.next(ctx.cancel).await? {
            Step::Output(stream, data) => (stream, data),
            Step::Ended(ended) => break ended,
        };
        let (buf, limit) = match stream {
            OutputStream::Stdout => (&mut stdout, CAPTURE_LIMIT),
            OutputStream::Stderr => (&mut stderr, STDERR_LIMIT),
        };
        let room = limit.saturating_sub(buf.len());
        if data.len() > room && stream == OutputStream::Stdout {
            stdout_cut = true;
        }
        buf.extend_from_slice(&data[..room.min(data.len())]);
    };
    match ended {
        Ended::Cancelled => Err(ToolError::Cancelled),
        Ended::Exited(status) if status.timed_out => Err(ToolError::Failed(format!(
            "the command took longer than {} s and was stopped; narrow it (a `path`, a tighter pattern)",
            timeout.as_secs()
        ))),
        Ended::Exited(status) => Ok(Captured {
            status,
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
            stdout_cut,
        }),
    }
}
