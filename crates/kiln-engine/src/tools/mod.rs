//! The agent's tools: what the model may do to a session's sandbox, and the one entry point,
//! [`run`], that the agent loop calls for every tool call.
//!
//! Tools run in the trusted control plane and act on the sandbox only through its guest agent:
//! files through the guest file API, everything else through `exec`. The sandbox is the security
//! boundary, so tools do not police paths beyond normalising them.
//!
//! Every failure the model can cause (a missing argument, a string that does not match, a file
//! that is not there) is an `is_error` result whose text says what to change; [`run`] never
//! panics and never returns a Rust error. Progress (output chunks, changed files) streams through
//! a bounded [`mpsc::Sender<ToolUpdate>`]; a dropped receiver is ignored.

mod args;
mod bash;
mod exec;
mod files;
mod git;
mod glob;
mod output;
mod search;
mod specs;

pub use output::OUTPUT_LIMIT;
pub use specs::specs;

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

/// A tool as the model sees it in a request.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolSpec {
    pub name: &'static str,
    pub description: &'static str,
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
    pub(crate) fn ok(content: impl Into<String>) -> Self {
        ToolResult {
            content: content.into(),
            is_error: false,
            cancelled: false,
        }
    }

    pub(crate) fn error(content: impl Into<String>) -> Self {
        ToolResult {
            content: content.into(),
            is_error: true,
            cancelled: false,
        }
    }
}

/// Why a call failed; the message is what the model reads, so it says what to do instead.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ToolError {
    #[error("unknown tool `{0}`; the available tools are: {tools}", tools = tool_names())]
    UnknownTool(String),
    #[error("invalid arguments for {tool}: {message}")]
    BadArguments { tool: &'static str, message: String },
    /// A tool-specific failure, already phrased for the model.
    #[error("{0}")]
    Failed(String),
    #[error("the sandbox failed: {0}")]
    Sandbox(#[from] kiln_sandbox::Error),
    #[error("cancelled")]
    Cancelled,
}

fn tool_names() -> String {
    specs()
        .iter()
        .map(|spec| spec.name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Runs one call to the end (or to cancellation) and returns what the model should see.
///
/// Updates go to `updates` as they happen; sending waits when the channel is full, so a slow
/// consumer slows the tool rather than losing output. Never panics on any `call`.
pub async fn run(
    ctx: &ToolContext<'_>,
    call: &ToolCall,
    updates: &mpsc::Sender<ToolUpdate>,
) -> ToolResult {
    if ctx.cancel.is_cancelled() {
        return cancelled("Cancelled before it started.".into());
    }
    let input = &call.input;
    let result = match call.name.as_str() {
        "read_file" => files::read_file(ctx, input).await,
        "write_file" => files::write_file(ctx, input, updates).await,
        "edit_file" => files::edit_file(ctx, input, updates).await,
        "list_files" => search::list_files(ctx, input).await,
        "grep" => search::grep(ctx, input).await,
        "bash" => bash::bash(ctx, input, updates).await,
        "git_status" => git::git_status(ctx, input).await,
        "git_diff" => git::git_diff(ctx, input).await,
        other => Err(ToolError::UnknownTool(other.to_string())),
    };
    let mut result = match result {
        Ok(result) => result,
        Err(ToolError::Cancelled) => cancelled("Cancelled.".into()),
        Err(err) => ToolResult::error(err.to_string()),
    };
    result.content = output::truncate(result.content, OUTPUT_LIMIT);
    result
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
