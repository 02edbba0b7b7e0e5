//! Hooks: code that runs around the agent's tool calls, prompt submission and stopping, and may
//! allow, block, rewrite or answer them.
//!
//! A hook is anything implementing [`Hook`]: a built-in Rust hook, or a [`CommandHook`] that runs
//! a host command under the Claude Code hooks contract (JSON on stdin, exit codes and JSON on
//! stdout; see `command.rs`). [`Hooks`] is the ordered chain the agent loop calls; [`HookConfig`]
//! is how the server config or a repository declares command hooks.
//!
//! Hooks run in the trusted control plane, never in the sandbox, and must not be able to hang the
//! agent: every call is bounded by [`Hook::time_limit`], and a hook that fails or times out is a
//! non-blocking error (recorded in [`Combined::errors`]), not a failure of the agent.

mod chain;
mod command;
mod config;
mod contract;
mod matcher;

pub use chain::{Blocked, Combined, HookFailure, Hooks};
pub use command::CommandHook;
pub use config::HookConfig;
pub use kiln_protocol::api::HookEventKind;
pub use matcher::Matcher;

use kiln_core::{PromptId, SessionId};
use kiln_protocol::api::UserRef;
use serde_json::Value;
use std::fmt::Debug;
use std::time::Duration;

/// How long a hook may take unless it says otherwise.
pub const DEFAULT_HOOK_TIMEOUT: Duration = Duration::from_secs(60);

/// What a hook is asked about.
#[derive(Debug, Clone, PartialEq)]
pub enum HookEvent {
    /// Before a tool runs: a hook may block it, change its input or answer in its place.
    PreToolUse {
        tool_name: String,
        tool_input: Value,
        tool_use_id: String,
    },
    /// After a tool ran: a hook may block (the reason is shown to the model), add context or
    /// substitute the result the model sees.
    PostToolUse {
        tool_name: String,
        tool_input: Value,
        tool_use_id: String,
        /// `{"content": "...", "is_error": bool}`.
        tool_response: Value,
    },
    /// Before a prompt reaches the model: a hook may block it or add context.
    UserPromptSubmit { prompt: String },
    /// The agent is about to stop: a block keeps it going, with the reason as its next
    /// instruction. `stop_hook_active` is set when it already continued because of a stop hook,
    /// so hooks can avoid looping forever.
    Stop { stop_hook_active: bool },
}

impl HookEvent {
    pub fn kind(&self) -> HookEventKind {
        match self {
            HookEvent::PreToolUse { .. } => HookEventKind::PreToolUse,
            HookEvent::PostToolUse { .. } => HookEventKind::PostToolUse,
            HookEvent::UserPromptSubmit { .. } => HookEventKind::UserPromptSubmit,
            HookEvent::Stop { .. } => HookEventKind::Stop,
        }
    }

    /// The tool's name, for tool events.
    pub fn tool_name(&self) -> Option<&str> {
        match self {
            HookEvent::PreToolUse { tool_name, .. } | HookEvent::PostToolUse { tool_name, .. } => {
                Some(tool_name)
            }
            _ => None,
        }
    }
}

/// Where an event happens; passed to every hook.
#[derive(Debug, Clone, PartialEq)]
pub struct HookContext {
    pub session_id: SessionId,
    pub prompt_id: PromptId,
    /// Whose prompt the agent is working on.
    pub author: UserRef,
    pub repo: String,
    /// The agent's working directory *inside the sandbox* (e.g. `/workspace`).
    pub cwd: String,
}

/// One thing a hook decided.
#[derive(Debug, Clone, PartialEq)]
pub enum HookDecision {
    Allow,
    /// Refuse; `reason` is shown to the model (or, for a prompt, to its author).
    Block {
        reason: String,
    },
    /// Replace the tool's input (tool events only).
    ModifyInput {
        input: Value,
    },
    /// Do not run the tool; the model gets `result` as its output (for `PostToolUse`: instead of
    /// the real output).
    Substitute {
        result: String,
    },
    /// Text added to what the model sees.
    AddContext {
        text: String,
    },
}

/// Everything one hook call produced.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HookOutcome {
    /// Applied in order; empty means allow.
    pub decisions: Vec<HookDecision>,
    /// A non-blocking failure of the hook (it crashed, timed out, printed nonsense), for the
    /// session's log. The call is otherwise treated as allowed.
    pub error: Option<String>,
}

impl HookOutcome {
    pub fn allow() -> Self {
        HookOutcome::default()
    }

    pub fn decide(decision: HookDecision) -> Self {
        HookOutcome {
            decisions: vec![decision],
            error: None,
        }
    }

    pub fn block(reason: impl Into<String>) -> Self {
        HookOutcome::decide(HookDecision::Block {
            reason: reason.into(),
        })
    }

    /// A non-blocking failure: allow, and record why.
    pub fn failed(error: impl Into<String>) -> Self {
        HookOutcome {
            decisions: Vec::new(),
            error: Some(error.into()),
        }
    }
}

/// A hook. Implementations must be quick or bounded: [`Hooks`] stops waiting after
/// [`Hook::time_limit`] and treats the hook as failed.
#[async_trait::async_trait]
pub trait Hook: Send + Sync + Debug {
    /// For logs and error messages.
    fn name(&self) -> &str;
    /// Whether this hook wants `event`; unmatched hooks are skipped without a call.
    fn matches(&self, event: &HookEvent) -> bool;
    async fn call(&self, ctx: &HookContext, event: &HookEvent) -> HookOutcome;
    /// How long [`Hooks`] waits for one call before abandoning it (dropping its future).
    fn time_limit(&self) -> Duration {
        DEFAULT_HOOK_TIMEOUT
    }
}

/// Why a hook could not be built.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error("a command hook needs a non-empty `command`")]
    EmptyCommand,
    #[error("invalid hook matcher `{matcher}`: {reason}")]
    BadMatcher { matcher: String, reason: String },
    #[error("a hook timeout must be between 1 and {max} seconds, got {got}")]
    BadTimeout { got: u64, max: u64 },
}
