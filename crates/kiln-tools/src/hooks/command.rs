//! Command hooks: a host program run per event under the Claude Code contract (`contract.rs`).
//!
//! This is the one place hooks spawn host processes, so the rules live here: argv only (no
//! shell), an explicit working directory, a cleared environment with only `PATH`, `HOME`,
//! `KILN_SESSION_ID` and `KILN_PROJECT_DIR`, a process group of its own that is killed when the
//! hook finishes, times out or is abandoned (so a hook's background children cannot hold its
//! pipes open and hang the agent), and bounded output.

use super::contract::{input_json, interpret};
use super::{
    DEFAULT_HOOK_TIMEOUT, Hook, HookContext, HookError, HookEvent, HookEventKind, HookOutcome,
    Matcher,
};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

/// Stdout kept from a hook; a decision is a small JSON document.
const STDOUT_LIMIT: usize = 1 << 20;
/// Stderr kept: it becomes a block reason or a log line.
const STDERR_LIMIT: usize = 16 << 10;
/// Extra time [`super::Hooks`] grants past the hook's own timeout before abandoning the call.
const BACKSTOP_GRACE: Duration = Duration::from_secs(2);

/// A hook that runs a host command.
#[derive(Debug, Clone)]
pub struct CommandHook {
    /// `argv[0]`, for logs.
    name: String,
    event: HookEventKind,
    /// Tool events only; other events ignore it, as in Claude Code.
    matcher: Matcher,
    command: Vec<String>,
    timeout: Duration,
    /// Where the command runs on the host. The project itself lives in the sandbox, so there is
    /// no natural choice; `/` unless configured.
    cwd: PathBuf,
}

impl CommandHook {
    /// A hook running `command` (argv) for every `event`, with the default timeout, in `/`.
    pub fn new(event: HookEventKind, command: Vec<String>) -> Result<Self, HookError> {
        let Some(program) = command.first().filter(|p| !p.is_empty()) else {
            return Err(HookError::EmptyCommand);
        };
        Ok(CommandHook {
            name: program.clone(),
            event,
            matcher: Matcher::any(),
            command,
            timeout: DEFAULT_HOOK_TIMEOUT,
            cwd: PathBuf::from("/"),
        })
    }

    pub fn with_matcher(mut self, matcher: Matcher) -> Self {
        self.matcher = matcher;
        self
    }

    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn with_cwd(mut self, cwd: impl Into<PathBuf>) -> Self {
        self.cwd = cwd.into();
        self
    }

    fn command(&self, ctx: &HookContext) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(&self.command[0]);
        cmd.args(&self.command[1..])
            .env_clear()
            .env(
                "PATH",
                std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into()),
            )
            .env("KILN_SESSION_ID", ctx.session_id.as_str())
            // The project directory is inside the sandbox; hooks get its path there.
            .env("KILN_PROJECT_DIR", &ctx.cwd)
            .current_dir(&self.cwd)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .process_group(0);
        if let Some(home) = std::env::var_os("HOME") {
            cmd.env("HOME", home);
        }
        cmd
    }
}

#[async_trait::async_trait]
impl Hook for CommandHook {
    fn name(&self) -> &str {
        &self.name
    }

    fn matches(&self, event: &HookEvent) -> bool {
        event.kind() == self.event && event.tool_name().is_none_or(|t| self.matcher.matches(t))
    }

    fn time_limit(&self) -> Duration {
        self.timeout + BACKSTOP_GRACE
    }

    async fn call(&self, ctx: &HookContext, event: &HookEvent) -> HookOutcome {
        let input = input_json(ctx, event);
        let mut child = match self.command(ctx).spawn() {
            Ok(child) => child,
            Err(err) => return HookOutcome::failed(format!("could not start: {err}")),
        };
        // With `process_group(0)` the group id is the child's pid.
        let Some(group) = child
            .id()
            .and_then(|pid| i32::try_from(pid).ok())
            .map(ProcessGroup::new)
        else {
            return HookOutcome::failed("the hook process vanished at once");
        };
        let (stdin, stdout, stderr) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take());
        let work = async {
            let write = async {
                if let Some(mut stdin) = stdin {
                    // A hook that exits without reading its input is fine: ignore EPIPE.
                    let _ = stdin.write_all(&input).await;
                }
            };
            let wait = async {
                let status = child.wait().await;
                // Background children must not keep the pipes (and us) waiting.
                group.kill();
                status
            };
            let ((), out, err, status) = tokio::join!(
                write,
                read_capped(stdout, STDOUT_LIMIT),
                read_capped(stderr, STDERR_LIMIT),
                wait
            );
            (out, err, status)
        };
        let outcome = match tokio::time::timeout(self.timeout, work).await {
            Err(_) => HookOutcome::failed(format!(
                "timed out after {} s and was killed; the call went ahead",
                self.timeout.as_secs_f32()
            )),
            Ok((_, _, Err(err))) => HookOutcome::failed(format!("waiting for it failed: {err}")),
            Ok((out, err, Ok(status))) => interpret(event.kind(), status.code(), &out, &err),
        };
        group.kill();
        outcome
    }
}

/// Reads a pipe to its end, keeping at most `limit` bytes (the rest is drained, so the writer
/// never blocks on a full pipe).
async fn read_capped(pipe: Option<impl AsyncRead + Unpin>, limit: usize) -> String {
    let Some(mut pipe) = pipe else {
        return String::new();
    };
    let (mut kept, mut buf) = (Vec::new(), [0u8; 8192]);
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let room = limit.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
    String::from_utf8_lossy(&kept).into_owned()
}

/// A hook's process group, killed once: explicitly, or when the call's future is dropped.
#[derive(Debug)]
struct ProcessGroup {
    pgid: i32,
    killed: AtomicBool,
}

impl ProcessGroup {
    fn new(pgid: i32) -> Self {
        ProcessGroup {
            pgid,
            killed: AtomicBool::new(false),
        }
    }

    fn kill(&self) {
        // `kill(-1)` and `kill(0)` would hit far more than the hook; a real group id is above 1.
        if self.pgid > 1 && !self.killed.swap(true, Ordering::AcqRel) {
            sys::kill_group(self.pgid);
        }
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        self.kill();
    }
}

mod sys {
    // `libc` is not a dependency of this crate; `kill(2)` is all it would be needed for.
    unsafe extern "C" {
        fn kill(pid: i32, signal: i32) -> i32;
    }

    const SIGKILL: i32 = 9;

    pub(super) fn kill_group(pgid: i32) {
        // SAFETY: `kill` takes two integers and touches no memory of this process. An already
        // empty group gives ESRCH, which is what we want anyway.
        unsafe {
            kill(-pgid, SIGKILL);
        }
    }
}
