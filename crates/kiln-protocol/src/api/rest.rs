//! REST request and response bodies. Requests reject unknown fields so a typo is a 400 that
//! names the field, not a silently ignored setting.

use super::event::{DeliveryMode, EventEnvelope, PromptStatus, SandboxState, UserRef};
use super::people::User;
use super::starts::StartPhases;
use kiln_core::{PromptId, Role, SessionId, ShareId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa::ToSchema;

/// Every error response: a message saying what is wrong and, where it helps, what to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ApiError {
    pub error: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Repo {
    pub name: String,
    /// Where the repo is fetched from; credentials it was added with show as `****`
    /// (`https://****@host/x.git`) and are never returned.
    pub url: String,
    pub default_branch: String,
    pub description: String,
    /// Hooks of every session on this repo, after the server's own. Shown to admins only
    /// (empty for other users).
    #[serde(default)]
    pub hooks: Vec<HookSpec>,
    /// The environment definition (TOML, as in `.kiln/environment.toml`) set through the API;
    /// when present, image builds use it instead of the repo's file. Shown to admins only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
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
    #[schema(max_length = 256)]
    pub matcher: Option<String>,
    /// argv, not run through a shell; each argument at most 4,096 characters.
    #[schema(min_items = 1, max_items = 64)]
    pub command: Vec<String>,
    /// 1 to 600; default 60.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 600)]
    pub timeout_secs: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRepo {
    /// Short name used in commands: letters, digits, `-`, `_`, `.`.
    #[schema(
        min_length = 1,
        max_length = 64,
        pattern = "^[A-Za-z0-9_-][A-Za-z0-9._-]*$"
    )]
    pub name: String,
    /// Anything `git clone` takes: https, ssh, or a local path.
    #[schema(min_length = 1, max_length = 2048)]
    pub url: String,
    /// A branch name as git accepts it (`git check-ref-format --branch`); default `main`.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 200)]
    pub default_branch: Option<String>,
    #[serde(default)]
    #[schema(max_length = 2000)]
    pub description: Option<String>,
    #[serde(default)]
    #[schema(max_items = 32)]
    pub hooks: Vec<HookSpec>,
    /// An environment definition (TOML) that overrides the repo's `.kiln/environment.toml`.
    #[serde(default)]
    #[schema(max_length = 65536)]
    pub environment: Option<String>,
    /// Check first that the kiln host can read the url (`git ls-remote`, bounded in time) and
    /// refuse it with what is wrong (no such path, no such host, authentication required…);
    /// default true. `false` registers a remote the host cannot reach yet.
    #[serde(default = "yes")]
    #[schema(default = true)]
    pub check: bool,
}

fn yes() -> bool {
    true
}

/// Changes to a repo; absent fields stay as they are.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateRepo {
    /// A branch name as git accepts it (`git check-ref-format --branch`).
    #[serde(default)]
    #[schema(min_length = 1, max_length = 200)]
    pub default_branch: Option<String>,
    #[serde(default)]
    #[schema(max_length = 2000)]
    pub description: Option<String>,
    #[serde(default)]
    #[schema(max_items = 32)]
    pub hooks: Option<Vec<HookSpec>>,
    /// An environment definition (TOML) that overrides the repo's `.kiln/environment.toml`;
    /// the empty string removes the override.
    #[serde(default)]
    #[schema(max_length = 65536)]
    pub environment: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSession {
    #[schema(min_length = 1, max_length = 64)]
    pub repo: String,
    /// The first prompt; the session starts working on it at once.
    #[schema(min_length = 1, max_length = 100000)]
    pub prompt: String,
    /// Default: the prompt's first line, shortened.
    #[serde(default)]
    #[schema(max_length = 200)]
    pub title: Option<String>,
    /// Plan first: the agent explores read-only and proposes a plan to approve (plan mode).
    #[serde(default)]
    pub plan: bool,
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
    /// The caller's role; none when an admin lists every session (`?all=true`) and is not in
    /// this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    /// Archived by an owner: left out of the default listing (`?archived=true` lists it).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub archived: bool,
    /// The session's pull request, once it has one, as its forge last said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_request: Option<SessionPullRequest>,
    /// The session that spawned this one (a sub-session), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<SessionId>,
}

/// A session's pull request in listings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SessionPullRequest {
    pub number: u64,
    pub url: String,
    /// `open`, `closed` (without merging) or `merged`.
    pub state: String,
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
    /// In a session's detail, cut at [`PROMPT_PREVIEW_CHARS`] (see `text_truncated`); the
    /// whole text is in the session's `prompt_queued` event.
    pub text: String,
    /// Whether `text` was cut.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub text_truncated: bool,
    pub status: PromptStatus,
    pub created_at_ms: i64,
    /// A plan-first prompt (plan mode): it runs read-only and ends with a proposed plan.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub plan: bool,
}

/// Prompts a session's detail carries, newest first: the detail stays small however long the
/// session runs.
pub const DETAIL_PROMPTS: usize = 50;
/// Characters of each prompt's text in a session's detail.
pub const PROMPT_PREVIEW_CHARS: usize = 2_000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SessionDetail {
    #[serde(flatten)]
    pub summary: SessionSummary,
    pub participants: Vec<Participant>,
    /// The newest prompts (at most [`DETAIL_PROMPTS`]), oldest first, each text cut at
    /// [`PROMPT_PREVIEW_CHARS`] characters; the queue is those with status `queued`. Every
    /// prompt, in full, is in the event log (`prompt_queued` events, `GET …/events`).
    pub prompts: Vec<PromptInfo>,
    /// How many prompts the session has; more than `prompts` holds when older ones were left
    /// out.
    #[serde(default)]
    pub prompts_total: usize,
    pub delivery: DeliveryMode,
    /// Every prompt asks for a plan first (plan mode).
    #[serde(default)]
    pub plan_mode: bool,
    pub sandbox: Option<SandboxState>,
    /// The last event's seq; subscribe with `after_seq` = this to get only what comes next.
    pub head_seq: u64,
    /// How the session started.
    pub start: StartPhases,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SessionCreated {
    pub session: SessionSummary,
    pub prompt_id: PromptId,
    /// What the person starting it should know, in words: the repo's image is stale because its
    /// newest build failed (and why).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SendPrompt {
    #[schema(min_length = 1, max_length = 100000)]
    pub text: String,
    /// Plan first: the agent explores read-only and proposes a plan to approve (plan mode).
    /// A session in plan mode plans every prompt whatever this says.
    #[serde(default)]
    pub plan: bool,
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

/// What `POST /api/sessions/{id}/push` left on the repo's remote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SessionPushed {
    /// The session's branch, `kiln/<session>`: the only branch a session pushes.
    pub branch: String,
    /// The commit the remote branch points at now.
    pub commit: String,
    /// A page comparing the branch with the default branch, for remotes on a forge that has
    /// one (GitHub-like `https://host/owner/name`); none for other remotes (see
    /// `GET /api/sessions/{id}/diff`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compare_url: Option<String>,
}

/// What `POST /api/sessions/{id}/stop` did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct StopReport {
    /// The prompt that was running and is stopping; none: nothing was running.
    pub stopped_prompt: Option<PromptId>,
    /// Queued prompts cancelled (with `clear_queue`).
    pub cancelled: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateSession {
    #[serde(default)]
    pub delivery: Option<DeliveryMode>,
    /// Plan mode: every prompt from now on asks for a plan first.
    #[serde(default)]
    pub plan_mode: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateShare {
    /// `viewer` or `collaborator`: links never make owners.
    pub role: Role,
    /// The link stops working this many hours after it is made (1 to 8760); default
    /// `SHARE_TTL_HOURS` (7 days).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 8760)]
    pub expires_in_hours: Option<u32>,
    /// The link works once: the first person to redeem it uses it up.
    #[serde(default)]
    pub single_use: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ShareCreated {
    pub id: ShareId,
    pub role: Role,
    /// When the link stops working.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at_ms: Option<i64>,
    /// Whether the link works once.
    #[serde(default)]
    pub single_use: bool,
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
    /// The GitHub account the user signed in with or linked, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub github: Option<super::GitHubAccount>,
}

/// A single-use sign-in link for a browser (`POST /api/login-links`): opening it once, before
/// it expires, signs the browser in as the caller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LoginLink {
    /// `…/login?code=…`, on the server's public URL when one is configured, else on the
    /// address the request was sent to.
    pub url: String,
    pub expires_at_ms: i64,
}

/// How a browser can sign in to this server (`GET /api/auth/methods`, open to anyone), so a
/// sign-in page offers only what works: a sign-in link always; GitHub when the server has it
/// configured (`/api/auth/github/start`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SignInMethods {
    pub github: bool,
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
    /// What every sandbox made from the image gets: the environment's variables and limits.
    #[serde(default)]
    pub runtime: ImageRuntime,
    /// The repo secrets its setup, build and warm steps got, by name with a fingerprint of
    /// each value (changing one rebuilds the image and reruns setup).
    #[serde(default)]
    pub secrets: Vec<super::ImageSecret>,
    /// The build log; only when one image is asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ImageStatus {
    /// Being built now: its log grows until the build ends, then the image is ready or failed.
    Building,
    Ready,
    Failed,
    /// Garbage-collected: no sandbox, pool entry or snapshot used it and newer images were
    /// kept. The record stays; its files are gone.
    Collected,
}

/// What every sandbox made from a repo's image runs with, from its environment definition.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ImageRuntime {
    /// Variables every process in the sandbox sees.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub limits: ResourceLimits,
    /// What the agent's sandboxes (sessions, warm pools) may reach.
    #[serde(default)]
    pub network: AgentNetwork,
}

/// What a sandbox may reach over HTTP(S) through kiln's egress proxy: nothing, the package
/// registries' preset plus listed hosts, or any host. Never this host, loopback, private or
/// link-local addresses, whatever the mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum EgressMode {
    None,
    Allowlist,
    Open,
}

impl std::fmt::Display for EgressMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::None => "none",
            Self::Allowlist => "allowlist",
            Self::Open => "open",
        })
    }
}

/// The agent-time network policy of the sandboxes made from an image (the environment
/// definition's `[network] agent`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AgentNetwork {
    pub mode: EgressMode,
    /// Hosts added to the registry preset: the definition's `allow` and the repo's git host.
    #[serde(default)]
    pub allow: Vec<String>,
    /// Plain-HTTP requests other than GET, HEAD and OPTIONS are refused.
    #[serde(default)]
    pub read_only: bool,
}

impl Default for AgentNetwork {
    /// What a repo without a definition gets: the registry preset.
    fn default() -> Self {
        AgentNetwork {
            mode: EgressMode::Allowlist,
            allow: Vec::new(),
            read_only: false,
        }
    }
}

/// Resource limits of a repo's sandboxes; unset ones keep the server's defaults.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResourceLimits {
    /// Memory, page cache included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<u64>,
    /// Processes and threads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<u64>,
    /// Size of the writable layer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_mb: Option<u64>,
}

/// What `POST /api/repos/{name}/images` started: follow the build at
/// `GET /api/repos/{name}/images/{id}/log`; the image is in the registry when it ends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ImageBuildStarted {
    /// The id the image will have.
    pub id: String,
}

/// What `POST /api/repos/{name}/warm` did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct WarmReply {
    /// A warm sandbox is held for the caller's next session on the repo.
    pub reserved: bool,
}

/// What one garbage collection did (`POST /api/admin/gc`; it also runs every 10 minutes).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct GcReport {
    /// Images marked collected, by id.
    pub images_collected: Vec<String>,
    /// Snapshot layers deleted (of images and of sessions).
    pub snapshots_deleted: usize,
    /// Repo layers of image builds removed.
    pub repo_layers_removed: usize,
    /// Debian bases (root filesystems built for images) no image or snapshot used any more.
    #[serde(default)]
    pub bases_removed: usize,
}

/// A repo's warm pool right now (`GET /api/repos/{name}/pool`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PoolStatus {
    /// Running sandboxes waiting for a session.
    pub ready: usize,
    /// Sandboxes held for someone who is typing.
    pub reserved: usize,
    /// What the pool is being filled to: its size, or recent demand up to its maximum.
    pub target: usize,
    /// The image new entries are made from; `None` while the repo has no ready image.
    pub image: Option<String>,
}
