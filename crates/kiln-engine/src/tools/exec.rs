//! Running a process in the sandbox on behalf of a tool: streamed, bounded, cancellable.
//!
//! Cancellation kills the exec's whole process group through the guest and then waits at most
//! [`KILL_WAIT`] for the guest to confirm, so a cancelled call ends within about a second even
//! when the guest is slow; output that arrives meanwhile still reaches the caller.

use super::{ToolContext, ToolError};
use kiln_sandbox::{CommandLine, ExecEvent, ExecRequest, ExitStatus, OutputStream};
use std::collections::BTreeMap;
use std::time::Duration;

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

/// Runs `request`, handing each output chunk to `on_output` in order, until the process exits
/// or `ctx.cancel` fires.
pub(crate) async fn drive(
    ctx: &ToolContext<'_>,
    request: ExecRequest,
    mut on_output: impl AsyncFnMut(OutputStream, &[u8]),
) -> Result<Ended, ToolError> {
    let mut stream = ctx.sandbox.exec(request).await?;
    loop {
        let event = tokio::select! {
            event = stream.next() => event?,
            () = ctx.cancel.cancelled() => break,
        };
        match event {
            None => {
                return Err(ToolError::Failed(
                    "the command ended without an exit status".into(),
                ));
            }
            Some(ExecEvent::Started { .. }) => {}
            Some(ExecEvent::Output { stream, data }) => on_output(stream, &data).await,
            Some(ExecEvent::Exited(status)) => return Ok(Ended::Exited(status)),
        }
    }
    // Cancelled: kill the group, then collect what is still in flight for a short while.
    if let Err(err) = stream.kill().await {
        tracing::warn!(%err, "killing a cancelled tool command failed");
    }
    let drain = async {
        while let Ok(Some(event)) = stream.next().await {
            if let ExecEvent::Output { stream, data } = event {
                on_output(stream, &data).await;
            }
        }
    };
    let _ = tokio::time::timeout(KILL_WAIT, drain).await;
    Ok(Ended::Cancelled)
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
    let env = BTreeMap::from([("LC_ALL".to_string(), "C.UTF-8".to_string())]);
    let ended = drive(
        ctx,
        request(command, cwd, env, timeout),
        async |stream, data| {
            let (buf, limit) = match stream {
                OutputStream::Stdout => (&mut stdout, CAPTURE_LIMIT),
                OutputStream::Stderr => (&mut stderr, STDERR_LIMIT),
            };
            let room = limit.saturating_sub(buf.len());
            if data.len() > room && stream == OutputStream::Stdout {
                stdout_cut = true;
            }
            buf.extend_from_slice(&data[..room.min(data.len())]);
        },
    )
    .await?;
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
