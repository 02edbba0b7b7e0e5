//! The agent loop: one prompt at a time, ask the model, stream what it says, run the tools it
//! calls (through the hooks) in the session's sandbox, and repeat until it is done, a limit is
//! hit, or someone stops it.
//!
//! The loop knows its session only through [`Session`]: append an event, read and extend the
//! stored conversation, take prompts inserted while it works, record how the prompt ended, and
//! get the sandbox. The engine's session actor is the one implementation; nothing here knows
//! SQLite, pools or images. [`Agent`] holds what is the same for every prompt on a server: the
//! model, the limits, the server's hooks.

mod calls;
mod compact;
mod conversation;
mod plan;
mod run;
mod spend;
mod turn;

pub use spend::{
    CACHE_READ_FACTOR, CACHE_WRITE_FACTOR, COMPACT_AT, LimitHit, Price, Prices, PromptLimits,
};

use async_trait::async_trait;
use kiln_core::{PlanId, PromptId, SessionId};

use kiln_model::ModelClient;
use kiln_protocol::api::{Event, HookSpec, PromptInfo, PromptOutcome, Repo, Usage, UserRef};
use kiln_sandbox::Sandbox;
use kiln_tools::hooks::Hook;
use kiln_tools::tools::ToolRegistry;
pub use plan::PROPOSE_PLAN;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// What a prompt fails with when no model is configured.
pub const NO_MODEL: &str = "no model is configured: set KILN_MODEL (e.g. anthropic/claude-sonnet-4-5 \
     or openai/gpt-4.1) and ANTHROPIC_API_KEY or OPENAI_API_KEY (and *_BASE_URL for a compatible \
     server), then restart kiln";

/// A failure of the session's storage or sandbox, shown to people inside an error event.
pub type SessionError = Box<dyn std::error::Error + Send + Sync>;

/// What one model request of a prompt's turn did, for operations metrics (nothing is stored:
/// the log has its own events). `provider` is `anthropic` or `openai`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ModelObservation {
    /// The response's headers arrived (the stream started) `took` after the request was sent.
    Response {
        provider: &'static str,
        took: std::time::Duration,
    },
    /// The first text arrived `took` after the request was sent.
    FirstText {
        provider: &'static str,
        took: std::time::Duration,
    },
    /// The response finished with this usage.
    Usage {
        provider: &'static str,
        input_tokens: u64,
        output_tokens: u64,
    },
    /// The request failed; `kind` is [`kiln_model::ModelError::kind`]'s word.
    Failed {
        provider: &'static str,
        kind: &'static str,
    },
}

/// What the agent loop needs of the session it runs in.
#[async_trait]
pub trait Session: Send + Sync {
    fn id(&self) -> &SessionId;
    fn repo(&self) -> &Repo;
    /// The session's sandbox, made, restored or reattached if need be.
    async fn sandbox(&self) -> Result<Sandbox, SessionError>;
    /// The repo's hooks as they are now (a change applies from the next prompt).
    async fn repo_hooks(&self) -> Result<Vec<HookSpec>, SessionError>;
    /// The hook that holds calls that write until the checkout has caught up; it asks `tools`
    /// which calls write.
    fn write_gate(&self, cancel: CancellationToken, tools: Arc<ToolRegistry>) -> Arc<dyn Hook>;
    /// The environment commands of a prompt by `author` run with (their git identity).
    fn prompt_env(&self, author: &UserRef) -> BTreeMap<String, String>;
    /// Tools of this session beside the built-ins, for `prompt` (the engine's `push`, which
    /// acts for the prompt's author). None by default.
    fn tools(&self, _prompt: &PromptInfo) -> Vec<Arc<dyn kiln_tools::tools::Tool>> {
        Vec::new()
    }
    /// What kiln has to tell the running prompt at its next turn (a sub-session finished),
    /// taken. None by default.
    fn take_notices(&self) -> Vec<String> {
        Vec::new()
    }
    /// Tools that need the prompt's sandbox (a repo's MCP servers), asked once the prompt has
    /// it; the session reports its own failures. None by default.
    async fn sandbox_tools(
        &self,
        _prompt: &PromptInfo,
        _sandbox: &Sandbox,
    ) -> Vec<Arc<dyn kiln_tools::tools::Tool>> {
        Vec::new()
    }
    /// A model request's progress, for metrics. Ignored by default.
    fn observe_model(&self, _observation: ModelObservation) {}
    /// Who stopped the running prompt, if someone did.
    fn stopped_by(&self) -> Option<UserRef>;
    /// Appends `event` to the session's log (the session masks its secrets in it).
    async fn append(&self, event: Event) -> Result<(), SessionError>;
    /// `text` with the session's secrets masked: what a tool call gives the model (and the
    /// stored conversation) never carries a secret value. Unmasked by default.
    fn mask(&self, text: String) -> String {
        text
    }
    /// The stored conversation, oldest message first (shared: the store keeps it in memory).
    async fn conversation(&self) -> Result<std::sync::Arc<Vec<serde_json::Value>>, SessionError>;
    async fn push_message(
        &self,
        prompt: &PromptId,
        message: serde_json::Value,
    ) -> Result<(), SessionError>;
    async fn replace_last_message(&self, message: serde_json::Value) -> Result<(), SessionError>;
    /// In insert mode, the queued prompts, marked as delivered into `into` (with their events);
    /// otherwise none.
    async fn take_inserted(&self, into: &PromptId) -> Result<Vec<PromptInfo>, SessionError>;
    /// Records the plan a plan-first `prompt` proposed, pending a decision, with its
    /// `plan_proposed` event, in one step.
    async fn propose_plan(
        &self,
        prompt: &PromptId,
        title: Option<String>,
        plan: String,
    ) -> Result<PlanId, SessionError>;
    /// Records how `prompt` ended: its status and its last event, in one step.
    async fn finish(&self, prompt: &PromptId, ending: Ending) -> Result<(), SessionError>;
    /// The session's usage so far (its running total, read in O(1)).
    async fn spent(&self) -> Result<Usage, SessionError>;
    /// A daily budget of the prompt's author or of the repo that is used up already (a prompt
    /// queued before it was stops before asking the model).
    async fn budget_used_up(&self) -> Result<Option<LimitHit>, SessionError>;
    /// Records one model response: appends `event` (its `model_usage`), adds `usage` to the
    /// session's running total and to today's spend of the prompt's author and of the repo.
    /// Returns the session's total after it, and a daily budget it used up, if any.
    async fn record_usage(&self, event: Event, usage: &Usage) -> Result<Recorded, SessionError>;
    /// Replaces the oldest `summarised` messages of the stored conversation by `summary`, and
    /// the ones after them by `kept` (the same messages, tool outputs possibly cut), and
    /// appends `event` (its `compacted`), in one step.
    async fn compact(
        &self,
        prompt: &PromptId,
        summarised: usize,
        summary: serde_json::Value,
        kept: Vec<serde_json::Value>,
        event: Event,
    ) -> Result<(), SessionError>;
}

/// What [`Session::record_usage`] reports back.
#[derive(Debug, Clone, Default)]
pub struct Recorded {
    /// The session's usage so far, this response included.
    pub session: Usage,
    /// A daily budget (per user or per repo) this response used up.
    pub budget: Option<LimitHit>,
}

/// How a prompt ended, as the session records it.
#[derive(Debug, Clone)]
pub enum Ending {
    Cancelled {
        by: UserRef,
    },
    Finished {
        outcome: PromptOutcome,
        usage: Usage,
    },
}

/// What every prompt on the server runs with.
#[derive(Debug)]
pub struct Agent {
    /// `None`: no model configured; prompts fail with [`NO_MODEL`].
    pub model: Option<ModelClient>,
    pub limits: PromptLimits,
    /// What each model's tokens cost (for `model_usage` events and the cost caps).
    pub prices: Prices,
    /// Default timeout of one `bash` call.
    pub bash_timeout: Duration,
    /// The server's hooks, run for every tool call after the write gate and before the repo's.
    pub hooks: Vec<Arc<dyn Hook>>,
    /// Cancelled when the server shuts down: a prompt stopped by it records nothing, and the
    /// next start marks it interrupted.
    pub shutdown: CancellationToken,
}

impl Agent {
    /// Runs `prompt` in `session` until it ends, and records how it ended. `cancel` stops it
    /// (someone pressed stop, or the server is shutting down).
    pub async fn run(&self, session: &dyn Session, prompt: PromptInfo, cancel: CancellationToken) {
        run::PromptRun::new(self, session, prompt, cancel)
            .run()
            .await
    }
}
