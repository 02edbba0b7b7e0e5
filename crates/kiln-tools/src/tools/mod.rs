//! The agent's tools: what the model may do to a session's sandbox. Every tool is a [`Tool`]
//! (`builtin.rs` holds the built-ins); a prompt gets a [`ToolRegistry`], which gives the model
//! its specs, runs its calls and tells the sync gate which calls write.
//!
//! Tools run in the trusted control plane and act on the sandbox only through its guest agent:
//! files through the guest file API, everything else through `exec`. The sandbox is the security
//! boundary, so tools do not police paths beyond normalising them.
//!
//! Every failure the model can cause (a missing argument, a string that does not match, a file
//! that is not there) is an `is_error` result whose text says what to change; a sandbox that
//! stopped answering is [`SandboxGone`], which ends the prompt. Nothing here panics on any call. Progress (output chunks, changed files) streams through
//! a bounded [`mpsc::Sender<ToolUpdate>`]; a dropped receiver is ignored.

mod args;
mod bash;
mod builtin;
mod exec;
mod files;
mod git;
mod glob;
mod output;
mod registry;
mod search;

pub use output::OUTPUT_LIMIT;
pub use registry::{SandboxGone, Tool, ToolRegistry};

use kiln_protocol::api::{FileChangeKind, ToolStream};
use kiln_sandbox::Sandbox;
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// The longest a `bash` call may ask for.
pub const MAX_BASH_TIMEOUT: Duration = Duration::from_secs(600);

/// One tool call as the model made it.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolCall {
    /// The model's id for the call; results are matched to calls by it.
    pub id: String,
    pub name: String,
    /// The arguments, unchecked: anything the model produced.
    pub input: serde_json::Value,
}

/// A tool as the model sees it in a request, borrowed from the tool.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolSpec<'a> {
    pub name: &'a str,
    pub description: &'a str,
    /// JSON Schema of the arguments.
    pub input_schema: serde_json::Value,
}

/// Where and under which limits a call runs.
#[derive(Debug, Clone, Copy)]
pub struct ToolContext<'a> {
    pub sandbox: &'a Sandbox,
    /// Absolute directory inside the sandbox that relative paths and commands start from,
    /// normally `/workspace`.
    pub workdir: &'a str,
    /// Fired when the user stops the prompt; long-running tools kill what they started.
    pub cancel: &'a CancellationToken,
    /// `bash`'s timeout when the model does not ask for one (capped at [`MAX_BASH_TIMEOUT`]).
    pub bash_timeout: Duration,
    /// Variables of the prompt for the commands it runs: who asked (git commits are theirs)
    /// and which session. Never a secret.
    pub env: &'a BTreeMap<String, String>,
}

/// Progress of a running call, for clients to watch live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolUpdate {
    /// Output of a command, in the order it was produced. Invalid UTF-8 is replaced.
    Output {
        stream: ToolStream,
        chunk: String,
    },
    FileChanged(FileChange),
}

/// A file the call changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileChange {
    /// Relative to the workdir; absolute when the file lies outside it.
    pub path: String,
    pub kind: FileChangeKind,
    /// Lines added and removed by this call (for `bash`, an estimate: see `git.rs`).
    pub added: u32,
    pub removed: u32,
}

/// What the model is told about a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolResult {
    /// At most [`OUTPUT_LIMIT`] bytes; longer text keeps its head and tail and says what was cut.
    pub content: String,
    pub is_error: bool,
    /// The call was cancelled; `content` says what happened before that.
    pub cancelled: bool,
}

impl ToolResult {
    pub fn ok(content: impl Into<String>) -> Self {
        ToolResult {
            content: content.into(),
            is_error: false,
            cancelled: false,
        }
    }

    pub fn error(content: impl Into<String>) -> Self {
        ToolResult {
            content: content.into(),
            is_error: true,
            cancelled: false,
        }
    }
}

/// Why a call failed; the message is what the model reads, so it says what to do instead.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error("unknown tool `{name}`; the available tools are: {available}")]
    UnknownTool { name: String, available: String },
    #[error("invalid arguments for {tool}: {message}")]
    BadArguments { tool: &'static str, message: String },
    /// A tool-specific failure, already phrased for the model.
    #[error("{0}")]
    Failed(String),
    /// The model sees it unless the guest is gone ([`SandboxGone`] then ends the prompt).
    #[error("the sandbox failed: {0}")]
    Sandbox(#[from] kiln_sandbox::Error),
    #[error("cancelled")]
    Cancelled,
}

/// Every built-in tool's spec, in the order the model is shown them.
pub fn specs() -> Vec<ToolSpec<'static>> {
    builtin::BUILTINS.iter().map(|tool| tool.spec()).collect()
}

/// Runs one call of a built-in tool, for callers without a prompt to end (tests, benchmarks):
/// a gone sandbox is an `is_error` result here. The agent loop uses [`ToolRegistry::run`].
pub async fn run(
    ctx: &ToolContext<'_>,
    call: &ToolCall,
    updates: &mpsc::Sender<ToolUpdate>,
) -> ToolResult {
    ToolRegistry::builtin()
        .run(ctx, call, updates)
        .await
        .unwrap_or_else(|gone| ToolResult::error(gone.to_string()))
}

pub(crate) fn cancelled(content: String) -> ToolResult {
    ToolResult {
        content,
        is_error: true,
        cancelled: true,
    }
}

/// Sends an update, giving up when the receiver is gone. After cancellation it only sends when
/// there is room at once: a stuck consumer must not hold up the end of a cancelled call.
pub(crate) async fn send(ctx: &ToolContext<'_>, updates: &mpsc::Sender<ToolUpdate>, u: ToolUpdate) {
    if ctx.cancel.is_cancelled() {
        let _ = updates.try_send(u);
        return;
    }
    tokio::select! {
        _ = updates.send(u) => {}
        _ = ctx.cancel.cancelled() => {}
    }
}
