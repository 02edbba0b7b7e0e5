//! What a participant may do in a session. Authorization decisions live here, as pure functions
//! of a role, so the server and the engine cannot disagree about them.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A participant's role in one session. Ordered: owner > collaborator > viewer.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Sees everything.
    Viewer,
    /// Sees everything, sends prompts, stops the agent.
    Collaborator,
    /// Also shares the session and changes its settings.
    Owner,
}

impl Role {
    pub fn can_prompt(self) -> bool {
        self >= Role::Collaborator
    }

    pub fn can_stop(self) -> bool {
        self >= Role::Collaborator
    }

    /// Approving, editing or rejecting a plan the agent proposed (plan mode).
    pub fn can_decide_plans(self) -> bool {
        self >= Role::Collaborator
    }

    pub fn can_share(self) -> bool {
        self == Role::Owner
    }

    pub fn can_change_settings(self) -> bool {
        self == Role::Owner
    }

    /// Whether a share link may grant this role. Links travel (chat, email, browser history),
    /// so they never hand out ownership: an owner link would let anyone who sees it share the
    /// session further and change its settings.
    pub fn can_be_shared(self) -> bool {
        self <= Role::Collaborator
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Collaborator => "collaborator",
            Role::Owner => "owner",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "viewer" => Some(Role::Viewer),
            "collaborator" => Some(Role::Collaborator),
            "owner" => Some(Role::Owner),
            _ => None,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
