//! The audit log: security-relevant actions, who did them and to what. Append-only; admins read
//! it through `GET /api/admin/audit` (pages of JSON, or JSON lines to export).

use crate::api::UserRef;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// One audited action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AuditEntry {
    /// Increasing; pass the last one seen as `after` for what came since.
    pub seq: i64,
    pub at_ms: i64,
    /// Who did it; none for kiln itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<UserRef>,
    pub action: AuditAction,
    /// What it was done to: a user, token, repo, session or secret, by id or name.
    pub target: String,
    /// What else matters (a role, a scope, the fields changed); never a secret's value.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub detail: serde_json::Value,
}

/// What was done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AuditAction {
    /// A browser signed in (a login code, or GitHub).
    SignIn,
    SignOut,
    LoginLinkCreated,
    TokenCreated,
    TokenRevoked,
    UserCreated,
    UserUpdated,
    UserDeactivated,
    GithubLinked,
    GithubUnlinked,
    /// A user linked their Slack member id (`PUT /api/me/slack`).
    SlackLinked,
    SlackUnlinked,
    RepoCreated,
    /// A repo's settings changed (see `detail.fields`).
    RepoUpdated,
    RepoDeleted,
    RepoAccessChanged,
    /// Its environment definition was set or removed through the API.
    EnvironmentChanged,
    HooksChanged,
    /// A repo secret was set (by name; never its value).
    SecretSet,
    SecretDeleted,
    ShareCreated,
    ShareRevoked,
    /// Someone joined a session through a share link.
    SessionJoined,
    RoleChanged,
    ParticipantRemoved,
    SessionArchived,
    SessionDeleted,
    /// An admin ran the garbage collector.
    GarbageCollected,
}

/// A page of the audit log, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AuditPage {
    pub entries: Vec<AuditEntry>,
    /// Pass as `after` for the next page; equals the request's when there was nothing new.
    pub next_after: i64,
}
