//! A session's events: the one append-only log that is the truth about a session. Everything a
//! client shows — text, tool calls, file changes, the queue, who is here — is a fold of these.
//!
//! The enum is closed and versioned ([`EVENT_VERSION`]); adding a variant is a version bump for
//! clients that must understand every event, and old logs keep decoding.

use kiln_core::{PlanId, PromptId, Role, UserId};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Bumped when an event's meaning changes or a variant is added.
///
/// 6: spend — `model_usage`, `limit_reached`, `compacted`; `Usage` gains cache tokens and
/// `cost_usd`; the `cost_limit` outcome — sub-sessions — `session_spawned`, `child_finished` —
/// and mcp: the `mcp` error kind, for a repo's MCP server that failed.
/// Also plan mode: `plan_proposed`, `plan_approved`, `plan_rejected`; `plan` on
/// `prompt_queued`, `plan_mode` on `settings_changed`.
pub const EVENT_VERSION: u32 = 6;

/// One event as stored and as sent: its place in the log, when it happened, what happened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EventEnvelope {
    /// Position in the session's log, from 1, without gaps. Clients resume with `after_seq`.
    pub seq: u64,
    /// Unix time in milliseconds when the event was appended.
    pub at_ms: i64,
    pub event: Event,
}

/// Who did something, with the name they had then (names can change; the log keeps history).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct UserRef {
    pub id: UserId,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// The first event of every session.
    SessionCreated {
        repo: String,
        title: String,
        by: UserRef,
    },
    /// A prompt was accepted. It runs when the agent is free (`queue`) or joins the running
    /// prompt at its next model turn (`insert`).
    PromptQueued {
        prompt_id: PromptId,
        author: UserRef,
        text: String,
        delivery: DeliveryMode,
        /// A plan-first prompt: the agent explores read-only and proposes a plan. (Version 6.)
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        plan: bool,
    },
    /// The agent started working on a prompt.
    PromptStarted {
        prompt_id: PromptId,
        author: UserRef,
    },
    /// An `insert` prompt was handed to the model inside the running prompt `into`.
    PromptInserted {
        prompt_id: PromptId,
        into: PromptId,
    },
    PromptFinished {
        prompt_id: PromptId,
        outcome: PromptOutcome,
        usage: Usage,
    },
    /// Stopped by a participant, or removed from the queue before it ran.
    PromptCancelled {
        prompt_id: PromptId,
        by: UserRef,
    },
    /// The server stopped (crash, kill, restart) while this prompt ran. A request the model had
    /// not answered yet is dropped from the conversation; retry it with
    /// `POST /api/sessions/{id}/prompts/{prompt_id}/retry` (`kiln session retry`).
    PromptInterrupted {
        prompt_id: PromptId,
    },
    /// A request to the model went out (turn counts from 1 within a prompt).
    ModelRequest {
        prompt_id: PromptId,
        turn: u32,
        model: String,
    },
    /// Model output text, as it streams.
    TextDelta {
        prompt_id: PromptId,
        text: String,
    },
    ToolCallStarted {
        prompt_id: PromptId,
        call_id: String,
        tool: String,
        input: serde_json::Value,
    },
    /// Output of a running tool (bash), as it streams.
    ToolOutput {
        call_id: String,
        stream: ToolStream,
        chunk: String,
    },
    ToolCallFinished {
        call_id: String,
        outcome: ToolOutcome,
        /// What the model was given, possibly truncated.
        output: String,
        duration_ms: u64,
    },
    /// A file in the workspace changed because of a prompt (and so of its author).
    FileChanged {
        prompt_id: PromptId,
        author: UserRef,
        path: String,
        kind: FileChangeKind,
        added: u32,
        removed: u32,
    },
    SandboxStatus {
        state: SandboxState,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sandbox_id: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        detail: Option<String>,
    },
    /// Someone gained a role in the session (creator, share link, invitation).
    ParticipantJoined {
        user: UserRef,
        role: Role,
    },
    ParticipantLeft {
        user: UserRef,
    },
    /// Queued prompts removed at once.
    QueueCleared {
        by: UserRef,
        cancelled: Vec<PromptId>,
    },
    /// The session's settings as they are now, all of them.
    SettingsChanged {
        delivery: DeliveryMode,
        /// Every prompt asks for a plan first. (Version 6; absent before: off.)
        #[serde(default)]
        plan_mode: bool,
    },
    /// Connections the sandbox made through kiln's egress proxy, summed per host and outcome:
    /// those of a tool call (`call_id`) when it finishes, the rest (processes left running
    /// between calls) when the prompt ends. (Version 3.)
    Egress {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        prompt_id: Option<PromptId>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        call_id: Option<String>,
        host: String,
        port: u16,
        allowed: bool,
        /// Why it was let through or refused, in words.
        reason: String,
        connections: u64,
        bytes_up: u64,
        bytes_down: u64,
    },
    /// The session's branch was pushed to the repo's remote (by the agent's `push` tool or on
    /// someone's request): `remote_ref` now points at `commit`. (Version 4.)
    Pushed {
        /// `kiln/<session>`.
        branch: String,
        commit: String,
        /// `refs/heads/kiln/<session>`.
        remote_ref: String,
        /// Whose prompt or request caused the push.
        by: UserRef,
    },
    /// The session's pull request was opened or updated on its forge, by `by` (with their own
    /// forge account). (Version 4.)
    PullRequest {
        forge: String,
        number: u64,
        url: String,
        state: String,
        draft: bool,
        /// False when one already open for the branch was updated.
        created: bool,
        by: UserRef,
    },
    /// The forge said the session's pull request changed (its webhook): `action` is `opened`,
    /// `reopened`, `closed` (without merging), `merged` or `synchronized` (new commits on its
    /// branch); `actor` is the forge login of who did it. A merge may arrive before kiln
    /// recorded the PR: this event alone says it. (Version 5.)
    PullRequestChanged {
        forge: String,
        number: u64,
        url: String,
        action: String,
        /// `open` or `closed`.
        state: String,
        merged: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        merged_at_ms: Option<i64>,
        head_sha: String,
        actor: String,
    },
    /// A review was submitted on the session's pull request: `verdict` is `approved`,
    /// `changes_requested` or `commented`; `reviewer` a forge login. (Version 5.)
    PullRequestReviewed {
        forge: String,
        number: u64,
        verdict: String,
        reviewer: String,
    },
    /// New commits reached the session's pull request after its first review: revision
    /// `revision` (1 for the first push after a review). (Version 5.)
    PullRequestRevised {
        forge: String,
        number: u64,
        revision: u32,
        head_sha: String,
    },
    /// Something went wrong; `message` says what and what to do, `kind` lets a client act on
    /// it without reading the message (events of version 1 have none: `other`).
    Error {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        prompt_id: Option<PromptId>,
        #[serde(default)]
        kind: ErrorKind,
        message: String,
    },
    // --- spend (issue 15): usage, caps and budgets, compaction. (Version 6.) ---
    /// What one model response used, as the provider reported it, and what it cost by the
    /// server's price table (`[[prices]]` in kiln.toml; `null` when the model has no price).
    /// A compaction's summary request is reported under the turn it came before.
    ModelUsage {
        prompt_id: PromptId,
        turn: u32,
        model: String,
        /// The whole prompt, cached parts included.
        input_tokens: u64,
        output_tokens: u64,
        /// Part of `input_tokens` read from the provider's prompt cache.
        #[serde(default)]
        cache_read_tokens: u64,
        /// Part of `input_tokens` written to the provider's prompt cache.
        #[serde(default)]
        cache_write_tokens: u64,
        #[serde(default)]
        cost_usd: Option<f64>,
    },
    /// A cap or budget ended the prompt: `limit` is the kiln.toml `[limits]` key
    /// (`max_cost_usd_per_prompt`, `max_cost_usd_per_session`, `max_tokens`,
    /// `max_tokens_per_session`, `daily_budget_usd_per_user`, `daily_budget_usd_per_repo`),
    /// `value` its setting, `spent` what was used (dollars or tokens, like `value`); `message`
    /// says how to go on.
    LimitReached {
        prompt_id: PromptId,
        limit: String,
        value: f64,
        spent: f64,
        message: String,
    },
    /// The conversation neared the model's context window and was compacted: the oldest
    /// `messages_summarised` messages were replaced by a summary the model wrote, old tool
    /// outputs cut to their first and last lines. Estimated tokens before and after; the log
    /// keeps everything.
    Compacted {
        prompt_id: PromptId,
        before_tokens: u64,
        after_tokens: u64,
        messages_summarised: u64,
    },
    // Sub-sessions (issue 15, part "subs"; version 6).
    /// The agent spawned a sub-session `child` on `repo` from this session's prompt
    /// `prompt_id` (the `spawn_session` tool). (Version 6.)
    SessionSpawned {
        child: kiln_core::SessionId,
        repo: String,
        title: String,
        prompt_id: PromptId,
    },
    /// A prompt of the sub-session `child` ended (`status`: completed, failed, cancelled);
    /// `summary` is the end of what its agent said, `pull_request` its PR if it has one.
    /// (Version 6.)
    ChildFinished {
        child: kiln_core::SessionId,
        status: PromptStatus,
        summary: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pull_request: Option<crate::api::SessionPullRequest>,
    },
    // Plan mode (issue 15, part "plan"). Version 6.
    /// The agent, running the plan-first prompt `prompt_id` read-only, proposed a plan (Markdown).
    /// It waits for a participant with the collaborator role or above to approve or reject it;
    /// nothing writes until then. The prompt itself finishes `completed`.
    PlanProposed {
        prompt_id: PromptId,
        plan_id: PlanId,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        title: Option<String>,
        plan: String,
        /// Proposed by the agent (its `propose_plan` tool); always true today.
        by_agent: bool,
    },
    /// `by` approved the plan, possibly `edited`; `plan` is the text approved. The implementation
    /// is the queued prompt `prompt_id`, authored by the author of the prompt that asked for
    /// the plan, running with every tool.
    PlanApproved {
        plan_id: PlanId,
        by: UserRef,
        edited: bool,
        plan: String,
        prompt_id: PromptId,
    },
    /// `by` rejected the plan, or sent a new prompt while it was pending (`superseded`).
    /// Nothing runs for it.
    PlanRejected {
        plan_id: PlanId,
        by: UserRef,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        superseded: bool,
    },
}

/// What kind of failure an [`Event::Error`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// No model is configured on the server: an admin must set one.
    NoModel,
    /// The model provider refused or failed the request, or its stream broke.
    Model,
    /// A hook refused the prompt, or the repo's hooks are invalid.
    Hook,
    /// The session's sandbox could not be made or restored, or went away mid-prompt.
    Sandbox,
    /// The checkout could not be synced with the default branch: writes wait.
    Sync,
    /// kiln could not read or write its own state.
    Storage,
    /// A bug in kiln: the server log has the details.
    Internal,
    /// A repo's MCP server failed to start, crashed or timed out (mcp, event version 6); the
    /// prompt goes on without it.
    Mcp,
    /// Anything else (and every error recorded before kinds existed).
    #[default]
    Other,
}

impl Event {
    /// The prompt an event belongs to, when it belongs to one.
    pub fn prompt_id(&self) -> Option<&PromptId> {
        match self {
            Event::PromptQueued { prompt_id, .. }
            | Event::PromptStarted { prompt_id, .. }
            | Event::PromptInserted { prompt_id, .. }
            | Event::PromptFinished { prompt_id, .. }
            | Event::PromptCancelled { prompt_id, .. }
            | Event::PromptInterrupted { prompt_id }
            | Event::ModelRequest { prompt_id, .. }
            | Event::TextDelta { prompt_id, .. }
            | Event::ToolCallStarted { prompt_id, .. }
            | Event::FileChanged { prompt_id, .. }
            | Event::ModelUsage { prompt_id, .. }
            | Event::LimitReached { prompt_id, .. }
            | Event::Compacted { prompt_id, .. }
            | Event::SessionSpawned { prompt_id, .. }
            | Event::PlanProposed { prompt_id, .. } => Some(prompt_id),
            Event::Error { prompt_id, .. } | Event::Egress { prompt_id, .. } => prompt_id.as_ref(),
            _ => None,
        }
    }
}

/// Events that matter only while they happen and are not kept: presence and typing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Ephemeral {
    /// A client of this user connected to the session; also sent to a socket that just
    /// opened, once for each other user already there.
    Present {
        user: UserRef,
    },
    /// This user's last client disconnected.
    Away {
        user: UserRef,
    },
    Typing {
        user: UserRef,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryMode {
    /// Prompts sent while the agent works wait their turn, first in first out.
    #[default]
    Queue,
    /// Prompts sent while the agent works reach it at its next model turn.
    Insert,
}

impl DeliveryMode {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryMode::Queue => "queue",
            DeliveryMode::Insert => "insert",
        }
    }

    pub fn parse(s: &str) -> Option<DeliveryMode> {
        match s {
            "queue" => Some(DeliveryMode::Queue),
            "insert" => Some(DeliveryMode::Insert),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PromptOutcome {
    /// The model ended its turn.
    Completed,
    /// The model or a tool failed in a way the agent cannot go on from; an `error` event says why.
    Failed,
    /// The prompt used all the model turns it may.
    TurnLimit,
    /// The prompt used all the tokens it (or its session) may.
    TokenLimit,
    /// A cost cap or a daily budget was reached; a `limit_reached` event says which.
    /// (Version 6.)
    CostLimit,
}

/// Where a prompt is in its life; derived from the log, kept in the session DB for queries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PromptStatus {
    Queued,
    Running,
    /// Delivered into another running prompt (insert mode).
    Inserted,
    Completed,
    Failed,
    Cancelled,
    Interrupted,
}

impl PromptStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            PromptStatus::Queued => "queued",
            PromptStatus::Running => "running",
            PromptStatus::Inserted => "inserted",
            PromptStatus::Completed => "completed",
            PromptStatus::Failed => "failed",
            PromptStatus::Cancelled => "cancelled",
            PromptStatus::Interrupted => "interrupted",
        }
    }

    pub fn parse(s: &str) -> Option<PromptStatus> {
        [
            PromptStatus::Queued,
            PromptStatus::Running,
            PromptStatus::Inserted,
            PromptStatus::Completed,
            PromptStatus::Failed,
            PromptStatus::Cancelled,
            PromptStatus::Interrupted,
        ]
        .into_iter()
        .find(|status| status.as_str() == s)
    }
}

/// Tokens (and their cost) summed over a prompt's model requests (or a session's).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize, ToSchema)]
pub struct Usage {
    /// Prompt tokens, cached parts included.
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// Part of `input_tokens` read from the provider's prompt cache. (Version 6.)
    #[serde(default)]
    pub cache_read_tokens: u64,
    /// Part of `input_tokens` written to the provider's prompt cache. (Version 6.)
    #[serde(default)]
    pub cache_write_tokens: u64,
    /// In US dollars by the server's price table; `null` when no request had a price (a
    /// request without one adds nothing). (Version 6.)
    #[serde(default)]
    pub cost_usd: Option<f64>,
}

impl Usage {
    /// Input plus output tokens.
    pub fn tokens(&self) -> u64 {
        self.input_tokens + self.output_tokens
    }

    /// The dollars spent, 0 when nothing had a price.
    pub fn cost(&self) -> f64 {
        self.cost_usd.unwrap_or(0.0)
    }

    /// Adds `other` to this sum.
    pub fn add(&mut self, other: &Usage) {
        self.input_tokens += other.input_tokens;
        self.output_tokens += other.output_tokens;
        self.cache_read_tokens += other.cache_read_tokens;
        self.cache_write_tokens += other.cache_write_tokens;
        self.cost_usd = match (self.cost_usd, other.cost_usd) {
            (None, None) => None,
            (a, b) => Some(a.unwrap_or(0.0) + b.unwrap_or(0.0)),
        };
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ToolStream {
    Stdout,
    Stderr,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum ToolOutcome {
    Ok,
    /// The tool ran and failed (bad arguments, no match, non-zero exit is still `ok` for bash).
    Error {
        message: String,
    },
    /// A hook refused the call; the model was told `reason`.
    Blocked {
        reason: String,
    },
    /// Stopped by a participant.
    Cancelled,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FileChangeKind {
    Added,
    Modified,
    Deleted,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SandboxState {
    Starting,
    /// Running from the repo's image and catching up with the default branch: reads work,
    /// writes wait until it is `ready`.
    Syncing,
    Ready,
    Failed,
    Stopped,
}

#[cfg(test)]
mod tests {

    #[test]
    fn errors_of_version_1_decode_without_a_kind() {
        let old = r#"{"type":"error","message":"the model request failed: 529"}"#;
        let event: Event = serde_json::from_str(old).unwrap();
        assert_eq!(
            event,
            Event::Error {
                prompt_id: None,
                kind: ErrorKind::Other,
                message: "the model request failed: 529".into(),
            }
        );
        let new = serde_json::to_value(Event::Error {
            prompt_id: None,
            kind: ErrorKind::NoModel,
            message: "set KILN_MODEL".into(),
        })
        .unwrap();
        assert_eq!(new["kind"], "no_model");
    }

    use super::*;

    #[test]
    fn settings_and_prompts_of_version_5_decode_without_plan_mode() {
        let old = r#"{"type":"settings_changed","delivery":"insert"}"#;
        assert_eq!(
            serde_json::from_str::<Event>(old).unwrap(),
            Event::SettingsChanged {
                delivery: DeliveryMode::Insert,
                plan_mode: false,
            }
        );
        let queued = Event::PromptQueued {
            prompt_id: PromptId::random(),
            author: UserRef {
                id: UserId::random(),
                name: "ada".into(),
            },
            text: "hi".into(),
            delivery: DeliveryMode::Queue,
            plan: false,
        };
        // Not plan-first: written as before version 6.
        let json = serde_json::to_value(&queued).unwrap();
        assert!(json.get("plan").is_none(), "{json}");
        assert_eq!(serde_json::from_value::<Event>(json).unwrap(), queued);
        let proposed = serde_json::to_value(Event::PlanProposed {
            prompt_id: PromptId::random(),
            plan_id: PlanId::random(),
            title: None,
            plan: "1. x".into(),
            by_agent: true,
        })
        .unwrap();
        assert_eq!(proposed["type"], "plan_proposed");
    }

    #[test]
    fn events_are_tagged_snake_case() {
        let prompt_id = PromptId::random();
        let envelope = EventEnvelope {
            seq: 7,
            at_ms: 1,
            event: Event::TextDelta {
                prompt_id: prompt_id.clone(),
                text: "hi".into(),
            },
        };
        let json = serde_json::to_value(&envelope).unwrap();
        assert_eq!(json["event"]["type"], "text_delta");
        assert_eq!(json["event"]["prompt_id"], prompt_id.as_str());
        let back: EventEnvelope = serde_json::from_value(json).unwrap();
        assert_eq!(back, envelope);
    }
}
