//! Sub-sessions as the API shows them: a session's place in the tree of sessions that spawned
//! each other (`GET /api/sessions/{id}/tree`).

use super::{SessionPullRequest, SessionState};
use kiln_core::SessionId;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A session, the ids of the sessions above it and every session below it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SessionTree {
    pub id: SessionId,
    /// Its parent first, then the parent's parent, up to the session no one spawned.
    pub ancestors: Vec<SessionId>,
    /// The session itself first, then its descendants, each after its parent (depth first).
    pub nodes: Vec<SessionTreeNode>,
}

/// One session of a [`SessionTree`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SessionTreeNode {
    pub id: SessionId,
    /// `None` for the session the tree was asked about when it has no parent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<SessionId>,
    /// 0 for the session asked about, 1 for its children, and so on.
    pub depth: u32,
    pub repo: String,
    pub title: String,
    pub state: SessionState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_request: Option<SessionPullRequest>,
}
