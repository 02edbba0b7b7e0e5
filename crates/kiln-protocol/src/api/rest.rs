//! REST request and response bodies. Requests reject unknown fields so a typo is a 400 that
//! names the field, not a silently ignored setting.

use super::event::{DeliveryMode, EventEnvelope, PromptStatus, SandboxState, UserRef};
use kiln_core::{PromptId, Role, SessionId, ShareId, TokenId, UserId};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Every error response: a message saying what is wrong and, where it helps, what to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ApiError {
    pub error: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct User {
    pub id: UserId,
    pub name: String,
    pub admin: bool,
    pub created_at_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    pub name: String,
    #[serde(default)]
    pub admin: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    /// What the token is for ("laptop", "ci").
    pub name: String,
    /// The user the token acts as; defaults to the caller. Only admins may name another user.
    #[serde(default)]
    pub user_id: Option<UserId>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TokenInfo {
    pub id: TokenId,
    pub user_id: UserId,
    pub name: String,
    pub created_at_ms: i64,
}

/// The only time a token is shown; kiln keeps only its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TokenCreated {
    pub info: TokenInfo,
    pub token: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Repo {
    pub name: String,
    pub url: String,
    pub default_branch: String,
    pub description: String,
    /// Hooks of every session on this repo, after the server's own.
    #[serde(default)]
    pub hooks: Vec<HookSpec>,
    pub created_at_ms: i64,
}

/// When a hook runs, named as in the Claude Code hooks contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
pub enum HookEventKind {
    PreToolUse,
    PostToolUse,
    UserPromptSubmit,
    Stop,
}

impl HookEventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            HookEventKind::PreToolUse => "PreToolUse",
            HookEventKind::PostToolUse => "PostToolUse",
            HookEventKind::UserPromptSubmit => "UserPromptSubmit",
            HookEventKind::Stop => "Stop",
        }
    }
}

/// An external hook: a command on the kiln host, given the event as JSON on stdin; exit 2
/// blocks (stderr is the reason), or JSON on stdout decides (the Claude Code contract).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HookSpec {
    pub event: HookEventKind,
    /// Tool names this hook is for: `bash`, `write_file|edit_file`, `*` (default: all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matcher: Option<String>,
    /// argv, not run through a shell.
    pub command: Vec<String>,
    /// 1 to 600; default 60.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRepo {
    /// Short name used in commands: letters, digits, `-`, `_`, `.`.
    pub name: String,
    /// Anything `git clone` takes: https, ssh, or a local path.
    pub url: String,
    #[serde(default)]
    pub default_branch: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub hooks: Vec<HookSpec>,
}

/// Changes to a repo; absent fields stay as they are.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateRepo {
    #[serde(default)]
    pub default_branch: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub hooks: Option<Vec<HookSpec>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSession {
    pub repo: String,
    /// The first prompt; the session starts working on it at once.
    pub prompt: String,
    #[serde(default)]
    pub title: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SessionState {
    /// The agent is working on a prompt.
    Working,
    /// Nothing running, nothing queued.
    Idle,
    /// Stopped for good: its sandbox is gone and it takes no prompts.
    Closed,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SessionSummary {
    pub id: SessionId,
    pub repo: String,
    pub title: String,
    pub created_by: UserRef,
    pub created_at_ms: i64,
    pub state: SessionState,
    /// The caller's role.
    pub role: Role,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Participant {
    pub user: UserRef,
    pub role: Role,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PromptInfo {
    pub id: PromptId,
    pub author: UserRef,
    pub text: String,
    pub status: PromptStatus,
    pub created_at_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SessionDetail {
    #[serde(flatten)]
    pub summary: SessionSummary,
    pub participants: Vec<Participant>,
    /// Every prompt, oldest first; the queue is those with status `queued`.
    pub prompts: Vec<PromptInfo>,
    pub delivery: DeliveryMode,
    pub sandbox: Option<SandboxState>,
    /// The last event's seq; subscribe with `after_seq` = this to get only what comes next.
    pub head_seq: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SessionCreated {
    pub session: SessionSummary,
    pub prompt_id: PromptId,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SendPrompt {
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PromptAccepted {
    pub prompt_id: PromptId,
    /// The `prompt_queued` event, already durable.
    pub seq: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StopSession {
    /// Also cancel every queued prompt.
    #[serde(default)]
    pub clear_queue: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateSession {
    #[serde(default)]
    pub delivery: Option<DeliveryMode>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateShare {
    pub role: Role,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ShareCreated {
    pub id: ShareId,
    pub role: Role,
    /// Secret part of the link; whoever redeems it gets `role`.
    pub code: String,
    /// Path to open (web) or POST (API) with a token to join: `/api/join/{code}`.
    pub path: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EventsPage {
    pub events: Vec<EventEnvelope>,
    /// Pass as `after_seq` for the next page; equals the request's when there was nothing new.
    pub next_after_seq: u64,
    pub head_seq: u64,
}

/// What `GET /api/me` says about the caller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Me {
    pub user: User,
}

/// One image build of a repo, as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Image {
    pub id: String,
    pub repo: String,
    /// The commit the image's checkout is at.
    pub commit: String,
    /// The image this one was built on.
    pub parent: Option<String>,
    pub status: ImageStatus,
    /// Why the build failed.
    pub error: Option<String>,
    /// Whether setup ran (the dependency manifests changed, or a first build).
    pub setup_ran: bool,
    pub duration_ms: u64,
    pub size_bytes: u64,
    pub created_at_ms: i64,
    /// The build log; only when one image is asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ImageStatus {
    Ready,
    Failed,
}

/// What `POST /api/repos/{name}/warm` did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct WarmReply {
    /// A warm sandbox is held for the caller's next session on the repo.
    pub reserved: bool,
}
