//! Who may start sessions on a repo: everyone signed in, or the repo's members only (admins
//! always). Access to a session itself is its roles; this decides who may begin one.

use super::UserRef;
use kiln_core::UserId;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Who may see a repo and start sessions on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AccessMode {
    /// Every user (the default).
    #[default]
    Everyone,
    /// The repo's members and admins; to anyone else the repo does not exist.
    Members,
}

/// A repo's access: its mode and its members (kept in either mode, so switching back and forth
/// loses nothing).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RepoAccess {
    pub mode: AccessMode,
    pub members: Vec<UserRef>,
}

/// `PUT /api/repos/{name}/access`: the whole access at once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetRepoAccess {
    pub mode: AccessMode,
    /// User ids; every one must exist. At most 10,000.
    #[serde(default)]
    #[schema(max_items = 10_000)]
    pub members: Vec<UserId>,
}
